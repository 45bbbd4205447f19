//! EXPUNGE (RFC 3501 section 6.4.3) and UID EXPUNGE (UIDPLUS, RFC 4315).

use imap_codec::imap_types::sequence::SequenceSet;

use crate::output::Out;
use crate::sequence;
use crate::session::{Reply, Session, report_expunged};

impl Session {
    pub(crate) async fn expunge(&mut self, set: Option<&SequenceSet>, out: &mut Out<'_>) -> Reply {
        let (Some(user), Some(sel)) = (self.user(), self.selected.as_mut()) else {
            return Reply::bad("No mailbox selected");
        };
        if sel.read_only {
            return Reply::no("Mailbox is read-only").code("READ-ONLY");
        }
        let uids: Option<Vec<u32>> = set.map(|set| {
            let ranges = sequence::by_uid(set, &sel.msgs, |m| m.uid);
            sequence::indices(&ranges)
                .map(|i| sel.msgs[i].uid)
                .collect()
        });
        if uids.as_ref().is_some_and(Vec::is_empty) {
            return Reply::ok("UID EXPUNGE completed");
        }
        let gone = match user.expunge(&sel.name, uids.as_deref()).await {
            Ok(g) => g,
            Err(e) => return e.into(),
        };
        report_expunged(sel, &gone, self.enabled.vanished(), out);
        let mut reply = Reply::ok(if set.is_some() {
            "UID EXPUNGE completed"
        } else {
            "EXPUNGE completed"
        });
        if self.enabled.condstore
            && let Ok(st) = user.status(&sel.name).await
        {
            reply = reply.code(format!("HIGHESTMODSEQ {}", st.highest_modseq));
        }
        reply
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{Harness, message};

    async fn five(h: &Harness) -> crate::session::Session {
        for i in 1..=5 {
            h.deliver("INBOX", &message(&format!("m{i}"), "x")).await;
        }
        h.selected("INBOX").await
    }

    #[tokio::test]
    async fn expunge_numbers_shift_as_rfc_says() {
        let h = Harness::new().await;
        let mut s = five(&h).await;
        h.run(&mut s, "a STORE 2,4,5 +FLAGS.SILENT (\\Deleted)\r\n")
            .await;
        let out = h.run(&mut s, "b EXPUNGE\r\n").await;
        assert_eq!(
            out,
            "* 5 EXPUNGE\r\n* 4 EXPUNGE\r\n* 2 EXPUNGE\r\nb OK EXPUNGE completed\r\n"
        );
        let out = h.run(&mut s, "c FETCH 1:* (UID)\r\n").await;
        assert_eq!(
            out,
            "* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 3)\r\nc OK FETCH completed\r\n"
        );
    }

    #[tokio::test]
    async fn uid_expunge_only_named() {
        let h = Harness::new().await;
        let mut s = five(&h).await;
        h.run(&mut s, "a STORE 1:5 +FLAGS.SILENT (\\Deleted)\r\n")
            .await;
        let out = h.run(&mut s, "b UID EXPUNGE 4:5\r\n").await;
        assert_eq!(
            out,
            "* 5 EXPUNGE\r\n* 4 EXPUNGE\r\nb OK UID EXPUNGE completed\r\n"
        );
    }

    #[tokio::test]
    async fn qresync_sends_vanished() {
        let h = Harness::new().await;
        for i in 1..=3 {
            h.deliver("INBOX", &message(&format!("m{i}"), "x")).await;
        }
        let mut s = h.session(true);
        h.login(&mut s).await;
        h.run(&mut s, "a ENABLE QRESYNC\r\nb SELECT INBOX\r\n")
            .await;
        h.run(&mut s, "c STORE 1:2 +FLAGS.SILENT (\\Deleted)\r\n")
            .await;
        let out = h.run(&mut s, "d EXPUNGE\r\n").await;
        assert!(
            out.starts_with("* VANISHED 1:2\r\nd OK [HIGHESTMODSEQ "),
            "{out}"
        );
    }
}
