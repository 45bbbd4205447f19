//! IDLE (RFC 2177): the loop waits for DONE and for store changes at the same time and
//! reports changes as they come (see `Session::idle_changed`).

use crate::output::Out;
use crate::session::{Next, Reply, Session, Waiting};

impl Session {
    pub(crate) async fn idle(&mut self, tag: &str, out: &mut Out<'_>) -> Reply {
        if self.account.is_none() {
            return Reply::no("IDLE needs a login first");
        }
        out.put(b"+ idling\r\n");
        self.waiting = Waiting::Idle {
            tag: tag.to_string(),
        };
        self.next = Next::Idle;
        Reply::pending()
    }
}

#[cfg(test)]
mod tests {
    use crate::output::Out;
    use crate::session::Next;
    use crate::testing::{Harness, message};

    #[tokio::test]
    async fn idle_reports_new_mail_and_ends_with_done() {
        let h = Harness::new().await;
        h.deliver("INBOX", &message("m1", "x")).await;
        let mut s = h.selected("INBOX").await;
        let out = h.run(&mut s, "i IDLE\r\n").await;
        assert_eq!(out, "+ idling\r\n");
        assert_eq!(s.next, Next::Idle);
        let mut rx = s.watch().unwrap();
        h.deliver("INBOX", &message("m2", "x")).await;
        let change = tokio::time::timeout(std::time::Duration::from_secs(2), rx.recv())
            .await
            .unwrap();
        let mut o = Out::buffer();
        s.idle_changed(change, &mut o).await.unwrap();
        assert_eq!(
            String::from_utf8(o.into_bytes()).unwrap(),
            "* 2 EXISTS\r\n* 2 RECENT\r\n"
        );
        let out = h.run(&mut s, "DONE\r\n").await;
        assert_eq!(out, "i OK IDLE terminated\r\n");
    }
}
