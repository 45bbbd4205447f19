//! COPY and MOVE (RFC 3501 section 6.4.7, RFC 6851), UID forms, COPYUID (RFC 4315).

use hermod_common::junk_feedback::JunkReport;
use hermod_common::store::{SpecialUse, StoreError};
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::sequence::SequenceSet;

use crate::output::Out;
use crate::sequence;
use crate::session::{Reply, Session, report_expunged};

impl Session {
    pub(crate) async fn copy(
        &mut self,
        set: &SequenceSet,
        mailbox: &Mailbox<'_>,
        uid: bool,
        is_move: bool,
        out: &mut Out<'_>,
    ) -> Reply {
        let dest = match self.mailbox_name(mailbox) {
            Ok(n) => n,
            Err(r) => return r,
        };
        let (Some(user), Some(sel)) = (self.user(), self.selected.as_ref()) else {
            return Reply::bad("No mailbox selected");
        };
        let verb = match (is_move, uid) {
            (true, true) => "UID MOVE",
            (true, false) => "MOVE",
            (false, true) => "UID COPY",
            (false, false) => "COPY",
        };
        if is_move && sel.read_only {
            return Reply::no("Mailbox is read-only").code("READ-ONLY");
        }
        let ranges = if uid {
            sequence::by_uid(set, &sel.msgs, |m| m.uid)
        } else {
            match sequence::by_seq(set, sel.msgs.len() as u32) {
                Ok(r) => r,
                Err(_) => return Reply::bad("Invalid message sequence number"),
            }
        };
        let mut bytes: u64 = 0;
        let uids: Vec<u32> = sequence::indices(&ranges)
            .map(|i| {
                bytes = bytes.saturating_add(sel.msgs[i].size);
                sel.msgs[i].uid
            })
            .collect();
        if uids.is_empty() {
            return Reply::ok(format!("{verb} completed"));
        }
        // COPY adds the copies to the user's usage, as APPEND and delivery do. A MOVE
        // within the account leaves the usage as it was, so it stays possible at the quota
        // (moving to Trash is how a full mailbox is cleaned up).
        let quota = self.account.as_ref().map_or(0, |a| a.quota_bytes);
        if !is_move
            && quota > 0
            && let Err(e) = user.check_quota(Some(quota), None, bytes).await
        {
            return e.into();
        }
        let source = sel.name.clone();
        let result = if is_move {
            user.move_messages(&source, &uids, &dest).await
        } else {
            user.copy(&source, &uids, &dest).await
        };
        let result = match result {
            Ok(r) => r,
            Err(StoreError::NoSuchMailbox(_)) => {
                return Reply::no("Mailbox does not exist").code("TRYCREATE");
            }
            Err(e) => return e.into(),
        };
        if result.pairs.is_empty() {
            return Reply::no("The messages were expunged").code("EXPUNGEISSUED");
        }
        let src: Vec<u32> = result.pairs.iter().map(|p| p.0).collect();
        let dst: Vec<u32> = result.pairs.iter().map(|p| p.1).collect();
        self.report_junk(&source, &dest, &dst);
        let copyuid = format!(
            "COPYUID {} {} {}",
            result.uidvalidity,
            sequence::format_ordered(&src),
            sequence::format_ordered(&dst)
        );
        if is_move {
            // RFC 6851: COPYUID goes in an untagged OK before the expunges.
            out.untagged(&format!("OK [{copyuid}] Moved"));
            if let Some(sel) = self.selected.as_mut() {
                report_expunged(sel, &src, self.enabled.vanished(), out);
            }
            Reply::ok(format!("{verb} completed"))
        } else {
            Reply::ok(format!("{verb} completed")).code(copyuid)
        }
    }
}

impl Session {
    /// Into Junk: spam; out of Junk into another folder but Trash (deleting spam says
    /// nothing): not spam. Queued for the filter; the command does not wait.
    fn report_junk(&self, source: &str, dest: &str, dest_uids: &[u32]) {
        let (Some(feedback), Some(account)) = (&self.shared.junk_feedback, &self.account) else {
            return;
        };
        let is = |name: &str, usage: SpecialUse| name.eq_ignore_ascii_case(usage.default_name());
        let (from_junk, to_junk) = (is(source, SpecialUse::Junk), is(dest, SpecialUse::Junk));
        if from_junk == to_junk || (from_junk && is(dest, SpecialUse::Trash)) {
            return;
        }
        feedback.report(JunkReport {
            user: account.user.clone(),
            address: account.address.clone(),
            mailbox: dest.to_string(),
            uids: dest_uids.to_vec(),
            spam: to_junk,
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{Harness, message};

    #[tokio::test]
    async fn copy_gives_copyuid_and_keeps_source() {
        let h = Harness::new().await;
        for i in 1..=3 {
            h.deliver("INBOX", &message(&format!("m{i}"), "x")).await;
        }
        let mut s = h.selected("INBOX").await;
        let out = h.run(&mut s, "a COPY 2:3 Archive\r\n").await;
        assert!(out.starts_with("a OK [COPYUID "), "{out}");
        assert!(out.contains(" 2:3 1:2] COPY completed"), "{out}");
        let out = h.run(&mut s, "b UID COPY 1 Nope\r\n").await;
        assert_eq!(out, "b NO [TRYCREATE] Mailbox does not exist\r\n");
        let out = h.run(&mut s, "c STATUS Archive (MESSAGES)\r\n").await;
        assert!(out.contains("(MESSAGES 2)"), "{out}");
    }

    /// COPY counts against the quota like APPEND: a copy that would pass it is refused
    /// with OVERQUOTA and nothing is copied; MOVE, which adds nothing, still works.
    #[tokio::test]
    async fn copy_respects_the_quota() {
        let h = Harness::new().await; // alice's quota: 1,000,000 bytes
        let body = "x".repeat(400_000);
        h.deliver("INBOX", &message("big", &body)).await;
        h.deliver("INBOX", &message("small", "y")).await;
        let mut s = h.selected("INBOX").await;
        let out = h.run(&mut s, "a COPY 1 Archive\r\n").await;
        assert!(out.starts_with("a OK [COPYUID "), "{out}");
        let out = h.run(&mut s, "b COPY 1 Archive\r\n").await;
        assert_eq!(out, "b NO [OVERQUOTA] Over quota\r\n");
        let out = h.run(&mut s, "c UID COPY 1:2 Archive\r\n").await;
        assert_eq!(out, "c NO [OVERQUOTA] Over quota\r\n");
        let out = h.run(&mut s, "d STATUS Archive (MESSAGES)\r\n").await;
        assert!(out.contains("(MESSAGES 1)"), "{out}");
        let out = h.run(&mut s, "e COPY 2 Archive\r\n").await;
        assert!(
            out.starts_with("e OK [COPYUID "),
            "a small copy fits: {out}"
        );
        let out = h.run(&mut s, "f MOVE 1 Trash\r\n").await;
        assert!(out.ends_with("f OK MOVE completed\r\n"), "{out}");
    }

    #[tokio::test]
    async fn thunderbird_uid_move_to_trash() {
        let h = Harness::new().await;
        for i in 1..=3 {
            h.deliver("INBOX", &message(&format!("m{i}"), "x")).await;
        }
        let mut s = h.selected("INBOX").await;
        let out = h.run(&mut s, "12 uid move 2 \"Trash\"\r\n").await;
        assert!(out.starts_with("* OK [COPYUID "), "{out}");
        assert!(
            out.contains(" 2 1] Moved\r\n* 2 EXPUNGE\r\n12 OK UID MOVE completed\r\n"),
            "{out}"
        );
        let out = h.run(&mut s, "13 UID FETCH 1:* (UID)\r\n").await;
        assert_eq!(
            out,
            "* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 3)\r\n13 OK UID FETCH completed\r\n"
        );
    }
}
