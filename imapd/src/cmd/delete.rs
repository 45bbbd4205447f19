//! DELETE (RFC 3501 section 6.3.4).

use imap_codec::imap_types::mailbox::Mailbox;

use crate::session::{Reply, Session};

impl Session {
    pub(crate) async fn delete(&mut self, mailbox: &Mailbox<'_>) -> Reply {
        let name = match self.mailbox_name(mailbox) {
            Ok(n) => n,
            Err(r) => return r,
        };
        let Some(user) = self.user() else {
            return Reply::no("Not logged in");
        };
        match user.delete(&name).await {
            Ok(()) => {
                if self.selected.as_ref().is_some_and(|s| s.name == name) {
                    self.selected = None;
                }
                Reply::ok("DELETE completed")
            }
            Err(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::Harness;

    #[tokio::test]
    async fn delete_and_refuse_inbox() {
        let h = Harness::new().await;
        let mut s = h.session(true);
        h.login(&mut s).await;
        h.run(&mut s, "a CREATE Tmp\r\n").await;
        assert_eq!(
            h.run(&mut s, "b DELETE Tmp\r\n").await,
            "b OK DELETE completed\r\n"
        );
        assert!(
            h.run(&mut s, "c DELETE Tmp\r\n")
                .await
                .starts_with("c NO [NONEXISTENT]")
        );
        assert!(
            h.run(&mut s, "d DELETE INBOX\r\n")
                .await
                .starts_with("d NO")
        );
    }
}
