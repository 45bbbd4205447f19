//! LOGOUT (RFC 3501 section 6.1.3).

use crate::output::Out;
use crate::session::{Next, Reply, Session, Sync};

impl Session {
    pub(crate) fn logout(&mut self, out: &mut Out<'_>) -> Reply {
        if let Some(a) = &self.account {
            tracing::info!(user = %a.address, "logged out");
        }
        out.untagged("BYE Logging out");
        self.selected = None;
        self.next = Next::Logout;
        Reply::ok("LOGOUT completed").sync(Sync::Skip)
    }
}

#[cfg(test)]
mod tests {
    use crate::session::Next;
    use crate::testing::Harness;

    #[tokio::test]
    async fn says_bye_then_ok() {
        let h = Harness::new().await;
        let mut s = h.session(false);
        let out = h.run(&mut s, "z LOGOUT\r\n").await;
        assert_eq!(out, "* BYE Logging out\r\nz OK LOGOUT completed\r\n");
        assert_eq!(s.next, Next::Logout);
    }
}
