//! STATUS (RFC 3501 section 6.3.10), also used by LIST RETURN (STATUS ...).

use hermod_common::store::{Flag, UserStore};
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::status::StatusDataItemName;

use crate::output::Out;
use crate::session::{Reply, Session};

impl Session {
    pub(crate) async fn status(
        &mut self,
        mailbox: &Mailbox<'_>,
        items: &[StatusDataItemName],
        out: &mut Out<'_>,
    ) -> Reply {
        let name = match self.mailbox_name(mailbox) {
            Ok(n) => n,
            Err(r) => return r,
        };
        let Some(user) = self.user() else {
            return Reply::no("Not logged in");
        };
        match self.write_status(&user, &name, items, out).await {
            Ok(()) => Reply::ok("STATUS completed"),
            Err(r) => r,
        }
    }

    /// Writes `* STATUS name (...)`.
    pub(crate) async fn write_status(
        &self,
        user: &UserStore,
        name: &str,
        items: &[StatusDataItemName],
        out: &mut Out<'_>,
    ) -> Result<(), Reply> {
        let st = user.status(name).await.map_err(Reply::from)?;
        let needs_scan = items.iter().any(|i| {
            matches!(
                i,
                StatusDataItemName::Deleted | StatusDataItemName::DeletedStorage
            )
        });
        let (deleted, deleted_bytes) = if needs_scan {
            let snap = user.select(name, true).await.map_err(Reply::from)?;
            let del = snap
                .messages
                .iter()
                .filter(|m| m.flags.contains(Flag::Deleted));
            del.fold((0u64, 0u64), |(n, b), m| (n + 1, b + m.size))
        } else {
            (0, 0)
        };
        let mut parts = Vec::new();
        // STATUS MAILBOXID (OBJECTID): the item standing in for it is not reported.
        let placeholder = self.objectid.status_placeholder.as_ref();
        for item in items.iter().filter(|i| Some(*i) != placeholder) {
            let (label, value) = match item {
                StatusDataItemName::Messages => ("MESSAGES", u64::from(st.messages)),
                StatusDataItemName::Recent => ("RECENT", u64::from(st.recent)),
                StatusDataItemName::UidNext => ("UIDNEXT", u64::from(st.uidnext)),
                StatusDataItemName::UidValidity => ("UIDVALIDITY", u64::from(st.uidvalidity)),
                StatusDataItemName::Unseen => ("UNSEEN", u64::from(st.unseen)),
                StatusDataItemName::Deleted => ("DELETED", deleted),
                StatusDataItemName::DeletedStorage => ("DELETED-STORAGE", deleted_bytes),
                StatusDataItemName::HighestModSeq => ("HIGHESTMODSEQ", st.highest_modseq),
                // STATUS=SIZE (RFC 8438): the mailbox's total size in octets.
                StatusDataItemName::Size => ("SIZE", st.size),
            };
            parts.push(format!("{label} {value}"));
        }
        if self.objectid.status_mailboxid {
            let id = user.mailbox_id(name).await.map_err(Reply::from)?;
            parts.push(format!("MAILBOXID ({id})"));
        }
        out.put(b"* STATUS ");
        self.write_name(out.buf(), name);
        out.put(format!(" ({})\r\n", parts.join(" ")).as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{Harness, message};

    #[tokio::test]
    async fn thunderbird_status_of_sent() {
        let h = Harness::new().await;
        h.deliver("Sent", &message("a", "b")).await;
        let mut s = h.session(true);
        h.login(&mut s).await;
        let out = h
            .run(
                &mut s,
                "7 STATUS \"Sent\" (UIDNEXT MESSAGES UNSEEN RECENT)\r\n",
            )
            .await;
        assert_eq!(
            out,
            "* STATUS Sent (UIDNEXT 2 MESSAGES 1 UNSEEN 1 RECENT 1)\r\n7 OK STATUS completed\r\n"
        );
        let out = h.run(&mut s, "8 STATUS Nope (MESSAGES)\r\n").await;
        assert!(out.starts_with("8 NO [NONEXISTENT]"), "{out}");
        let out = h
            .run(
                &mut s,
                "9 STATUS Sent (HIGHESTMODSEQ UIDVALIDITY DELETED)\r\n",
            )
            .await;
        assert!(out.contains("DELETED 0)"), "{out}");
        // STATUS=SIZE (RFC 8438).
        let size = message("a", "b").len();
        let out = h.run(&mut s, "10 STATUS Sent (MESSAGES SIZE)\r\n").await;
        assert!(out.contains(&format!("(MESSAGES 1 SIZE {size})")), "{out}");
        let out = h.run(&mut s, "11 CAPABILITY\r\n").await;
        assert!(out.contains(" STATUS=SIZE"), "{out}");
    }
}
