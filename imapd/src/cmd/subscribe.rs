//! SUBSCRIBE and UNSUBSCRIBE (RFC 3501 sections 6.3.6-7).

use imap_codec::imap_types::mailbox::Mailbox;

use crate::session::{Reply, Session};

impl Session {
    pub(crate) async fn subscribe(&mut self, mailbox: &Mailbox<'_>, on: bool) -> Reply {
        let name = match self.mailbox_name(mailbox) {
            Ok(n) => n,
            Err(r) => return r,
        };
        let Some(user) = self.user() else {
            return Reply::no("Not logged in");
        };
        let result = if on {
            user.subscribe(&name).await
        } else {
            user.unsubscribe(&name).await
        };
        match result {
            Ok(()) if on => Reply::ok("SUBSCRIBE completed"),
            Ok(()) => Reply::ok("UNSUBSCRIBE completed"),
            Err(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::Harness;

    #[tokio::test]
    async fn subscriptions_show_in_lsub() {
        let h = Harness::new().await;
        let mut s = h.session(true);
        h.login(&mut s).await;
        h.run(&mut s, "a CREATE News\r\n").await;
        assert_eq!(
            h.run(&mut s, "b SUBSCRIBE News\r\n").await,
            "b OK SUBSCRIBE completed\r\n"
        );
        assert!(
            h.run(&mut s, "c LSUB \"\" News\r\n")
                .await
                .contains("* LSUB () \"/\" News\r\n")
        );
        assert_eq!(
            h.run(&mut s, "d UNSUBSCRIBE News\r\n").await,
            "d OK UNSUBSCRIBE completed\r\n"
        );
        assert_eq!(
            h.run(&mut s, "e LSUB \"\" News\r\n").await,
            "e OK LSUB completed\r\n"
        );
    }
}
