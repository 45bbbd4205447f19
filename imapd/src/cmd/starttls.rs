//! STARTTLS (RFC 3501 section 6.2.1). The loop runs the handshake after the OK and drops
//! anything the client pipelined after the command (RFC 7817: no plaintext injection).

use crate::session::{Next, Reply, Session, Sync};

impl Session {
    pub(crate) fn starttls(&mut self) -> Reply {
        if self.tls {
            return Reply::bad("TLS is already active");
        }
        if self.shared.tls.is_none() {
            return Reply::no("TLS is not available");
        }
        self.next = Next::StartTls;
        Reply::ok("Begin TLS negotiation now").sync(Sync::Skip)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::Harness;

    #[tokio::test]
    async fn refused_without_certificate_or_on_tls() {
        let h = Harness::new().await;
        let mut s = h.session(false);
        assert!(h.run(&mut s, "t STARTTLS\r\n").await.starts_with("t NO"));
        let mut s = h.session(true);
        assert!(h.run(&mut s, "t STARTTLS\r\n").await.starts_with("t BAD"));
    }
}
