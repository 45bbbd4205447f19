//! RENAME (RFC 3501 section 6.3.5), INBOX included (its messages move, INBOX stays).

use imap_codec::imap_types::mailbox::Mailbox;

use crate::session::{Reply, Session};

impl Session {
    pub(crate) async fn rename(&mut self, from: &Mailbox<'_>, to: &Mailbox<'_>) -> Reply {
        let (from, to) = match (self.mailbox_name(from), self.mailbox_name(to)) {
            (Ok(f), Ok(t)) => (f, t),
            (Err(r), _) | (_, Err(r)) => return r,
        };
        let Some(user) = self.user() else {
            return Reply::no("Not logged in");
        };
        match user.rename(&from, &to).await {
            Ok(()) => {
                // The selected mailbox (or one inside it) keeps its UIDs under the new name.
                if from != "INBOX"
                    && let Some(sel) = self.selected.as_mut()
                {
                    if sel.name == from {
                        sel.name = to.clone();
                    } else if let Some(rest) = sel.name.strip_prefix(&format!("{from}/")) {
                        sel.name = format!("{to}/{rest}");
                    }
                }
                Reply::ok("RENAME completed")
            }
            Err(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{Harness, message};

    #[tokio::test]
    async fn rename_with_children_and_inbox() {
        let h = Harness::new().await;
        let mut s = h.session(true);
        h.login(&mut s).await;
        h.run(&mut s, "a CREATE Projects/A\r\n").await;
        assert_eq!(
            h.run(&mut s, "b RENAME Projects Work\r\n").await,
            "b OK RENAME completed\r\n"
        );
        let out = h.run(&mut s, "c LIST \"\" Work/*\r\n").await;
        assert!(out.contains("\"/\" Work/A\r\n"), "{out}");
        h.deliver("INBOX", &message("x", "y")).await;
        assert_eq!(
            h.run(&mut s, "d RENAME INBOX Saved\r\n").await,
            "d OK RENAME completed\r\n"
        );
        let out = h.run(&mut s, "e STATUS Saved (MESSAGES)\r\n").await;
        assert!(out.contains("(MESSAGES 1)"), "{out}");
        let out = h.run(&mut s, "f STATUS INBOX (MESSAGES)\r\n").await;
        assert!(out.contains("(MESSAGES 0)"), "{out}");
        assert!(
            h.run(&mut s, "g RENAME Nope X\r\n")
                .await
                .starts_with("g NO [NONEXISTENT]")
        );
    }
}
