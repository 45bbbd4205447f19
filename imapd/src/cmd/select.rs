//! SELECT and EXAMINE (RFC 3501 sections 6.3.1-2, CONDSTORE/QRESYNC parameters of RFC 7162),
//! UNSELECT (RFC 3691) and CLOSE (RFC 3501 section 6.4.2).

use std::collections::BTreeSet;

use hermod_common::store::Flag;
use imap_codec::imap_types::command::SelectParameter;
use imap_codec::imap_types::mailbox::Mailbox;

use crate::output::Out;
use crate::sequence;
use crate::session::{Reply, Selected, Session, Sync, flag_list, write_flags};
use crate::wire;

impl Session {
    pub(crate) async fn select(
        &mut self,
        mailbox: &Mailbox<'_>,
        read_only: bool,
        params: &[SelectParameter],
        out: &mut Out<'_>,
    ) -> Reply {
        // Any SELECT leaves the previous mailbox, even when it fails (RFC 3501).
        if self.selected.take().is_some() && (self.enabled.qresync || self.enabled.rev2) {
            out.untagged("OK [CLOSED] Previous mailbox closed");
        }
        let name = match self.mailbox_name(mailbox) {
            Ok(n) => n,
            Err(r) => return r.sync(Sync::Skip),
        };
        let mut qresync = None;
        for p in params {
            match p {
                SelectParameter::CondStore => self.enabled.condstore = true,
                SelectParameter::QResync {
                    uid_validity,
                    mod_sequence_value,
                    known_uids,
                    ..
                } => {
                    if !self.enabled.qresync {
                        return Reply::bad("QRESYNC must be enabled first");
                    }
                    qresync = Some((
                        uid_validity.get(),
                        mod_sequence_value.get(),
                        known_uids.clone(),
                    ));
                }
            }
        }
        let Some(user) = self.user() else {
            return Reply::no("Not logged in");
        };
        let mut snap = match user.select(&name, read_only).await {
            Ok(s) => s,
            Err(e) => return Reply::from(e).sync(Sync::Skip),
        };
        let rev2 = self.enabled.rev2;
        if rev2 {
            // IMAP4rev2 has no \Recent (RFC 9051 appendix E).
            for m in &mut snap.messages {
                m.recent = false;
            }
        }
        let keywords: BTreeSet<String> = snap
            .messages
            .iter()
            .flat_map(|m| m.keywords.iter().cloned())
            .collect();
        let flags = flag_list(&keywords);
        out.untagged(&format!("FLAGS ({flags})"));
        if read_only {
            out.untagged("OK [PERMANENTFLAGS ()] Read-only mailbox");
        } else {
            out.untagged(&format!(
                "OK [PERMANENTFLAGS ({flags} \\*)] Flags permitted"
            ));
        }
        out.untagged(&format!("{} EXISTS", snap.messages.len()));
        if rev2 {
            // RFC 9051 section 6.3.2: a LIST response with the name instead of RECENT and
            // UNSEEN.
            out.put(b"* LIST () \"/\" ");
            self.write_name(out.buf(), &name);
            out.put(b"\r\n");
        } else {
            out.untagged(&format!(
                "{} RECENT",
                snap.messages.iter().filter(|m| m.recent).count()
            ));
        }
        // UNSEEN is a sequence number: not for UIDONLY (RFC 9586 section 3).
        if !rev2
            && !self.enabled.uidonly
            && let Some(i) = snap
                .messages
                .iter()
                .position(|m| !m.flags.contains(Flag::Seen))
        {
            out.untagged(&format!("OK [UNSEEN {}] First unseen", i + 1));
        }
        out.untagged(&format!("OK [UIDVALIDITY {}] UIDs valid", snap.uidvalidity));
        out.untagged(&format!("OK [UIDNEXT {}] Predicted next UID", snap.uidnext));
        // OBJECTID (RFC 8474 section 4.2).
        if let Ok(id) = user.mailbox_id(&name).await {
            out.untagged(&format!("OK [MAILBOXID ({id})] Ok"));
        }
        out.untagged(&format!(
            "OK [HIGHESTMODSEQ {}] Highest",
            snap.highest_modseq.max(1)
        ));

        if let Some((uidvalidity, modseq, known)) = qresync
            && uidvalidity == snap.uidvalidity
        {
            // Resynchronisation: what vanished and what changed since the client's modseq.
            match user.changes_since(&name, modseq).await {
                Ok(changes) => {
                    let vanished: Vec<u32> = changes
                        .vanished
                        .iter()
                        .copied()
                        .filter(|u| {
                            known
                                .as_ref()
                                .is_none_or(|k| sequence::contains(k, *u, u32::MAX))
                        })
                        .collect();
                    if !vanished.is_empty() {
                        out.untagged(&format!(
                            "VANISHED (EARLIER) {}",
                            sequence::format(&vanished)
                        ));
                    }
                }
                Err(e) => return Reply::from(e),
            }
            for (i, m) in snap
                .messages
                .iter()
                .enumerate()
                .filter(|(_, m)| m.modseq > modseq)
            {
                let b = out.buf();
                if !crate::uidonly::start_fetch(b, self.enabled.uidonly, i + 1, m.uid) {
                    b.extend_from_slice(b"UID ");
                    wire::number(b, u64::from(m.uid));
                    b.push(b' ');
                }
                write_flags(b, m);
                b.extend_from_slice(b" MODSEQ (");
                wire::number(b, m.modseq);
                b.extend_from_slice(b"))\r\n");
            }
        }

        self.selected = Some(Selected {
            name,
            read_only,
            uidvalidity: snap.uidvalidity,
            uidnext: snap.uidnext,
            highest_modseq: snap.highest_modseq,
            msgs: snap.messages,
            vanished: Vec::new(),
            keywords,
            checked: None,
            saved_search: Vec::new(),
            contexts: Default::default(),
        });
        let (code, cmd) = if read_only {
            ("READ-ONLY", "EXAMINE")
        } else {
            ("READ-WRITE", "SELECT")
        };
        Reply::ok(format!("{cmd} completed"))
            .code(code)
            .sync(Sync::Skip)
    }

    pub(crate) fn unselect(&mut self, _out: &mut Out<'_>) -> Reply {
        self.selected = None;
        Reply::ok("UNSELECT completed").sync(Sync::Skip)
    }

    /// CLOSE: expunges `\Deleted` messages silently (unless read-only), then deselects.
    pub(crate) async fn close(&mut self) -> Reply {
        let Some(sel) = self.selected.take() else {
            return Reply::bad("No mailbox selected");
        };
        if !sel.read_only
            && let Some(user) = self.user()
            && let Err(e) = user.expunge(&sel.name, None).await
        {
            return Reply::from(e).sync(Sync::Skip);
        }
        Reply::ok("CLOSE completed").sync(Sync::Skip)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{Harness, message};

    #[tokio::test]
    async fn select_reports_the_mailbox() {
        let h = Harness::new().await;
        h.deliver("INBOX", &message("one", "1")).await;
        h.deliver("INBOX", &message("two", "2")).await;
        let mut s = h.session(true);
        h.login(&mut s).await;
        let out = h.run(&mut s, "a SELECT INBOX\r\n").await;
        assert!(
            out.contains("* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft)"),
            "{out}"
        );
        assert!(out.contains("* 2 EXISTS\r\n"), "{out}");
        assert!(out.contains("* 2 RECENT\r\n"), "{out}");
        assert!(out.contains("* OK [UNSEEN 1]"), "{out}");
        assert!(out.contains("* OK [UIDVALIDITY "), "{out}");
        assert!(out.contains("* OK [UIDNEXT 3]"), "{out}");
        assert!(
            out.contains("[PERMANENTFLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft \\*)]"),
            "{out}"
        );
        assert!(
            out.ends_with("a OK [READ-WRITE] SELECT completed\r\n"),
            "{out}"
        );
        let out = h.run(&mut s, "b EXAMINE inbox\r\n").await;
        assert!(
            out.contains("* 0 RECENT"),
            "recent was claimed by SELECT: {out}"
        );
        assert!(
            out.ends_with("b OK [READ-ONLY] EXAMINE completed\r\n"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn missing_mailbox_deselects() {
        let h = Harness::new().await;
        let mut s = h.selected("INBOX").await;
        let out = h.run(&mut s, "a SELECT Nope\r\n").await;
        assert_eq!(out, "a NO [NONEXISTENT] Mailbox does not exist\r\n");
        assert!(s.selected.is_none());
        let out = h.run(&mut s, "b FETCH 1 FLAGS\r\n").await;
        assert!(out.starts_with("b BAD"), "{out}");
    }

    #[tokio::test]
    async fn close_expunges_silently_unselect_does_not() {
        let h = Harness::new().await;
        h.deliver("INBOX", &message("one", "1")).await;
        h.deliver("INBOX", &message("two", "2")).await;
        let mut s = h.selected("INBOX").await;
        h.run(&mut s, "a STORE 1 +FLAGS (\\Deleted)\r\n").await;
        let out = h.run(&mut s, "b UNSELECT\r\n").await;
        assert_eq!(out, "b OK UNSELECT completed\r\n");
        h.run(&mut s, "c SELECT INBOX\r\n").await;
        let out = h.run(&mut s, "d CLOSE\r\n").await;
        assert_eq!(out, "d OK CLOSE completed\r\n");
        let out = h.run(&mut s, "e SELECT INBOX\r\n").await;
        assert!(out.contains("* 1 EXISTS"), "{out}");
    }

    #[tokio::test]
    async fn qresync_select_reports_vanished_and_changed() {
        let h = Harness::new().await;
        for i in 0..4 {
            h.deliver("INBOX", &message(&format!("m{i}"), "x")).await;
        }
        let mut s = h.session(true);
        h.login(&mut s).await;
        h.run(&mut s, "a ENABLE QRESYNC\r\n").await;
        let out = h.run(&mut s, "b SELECT INBOX\r\n").await;
        let uidvalidity: u32 = out
            .split("UIDVALIDITY ")
            .nth(1)
            .unwrap()
            .split(']')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let modseq: u64 = out
            .split("HIGHESTMODSEQ ")
            .nth(1)
            .unwrap()
            .split(']')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        h.run(&mut s, "c STORE 2 +FLAGS (\\Deleted \\Seen)\r\n")
            .await;
        h.run(&mut s, "d STORE 3 +FLAGS (\\Flagged)\r\n").await;
        h.run(&mut s, "e EXPUNGE\r\n").await;
        let out = h
            .run(
                &mut s,
                &format!("f SELECT INBOX (QRESYNC ({uidvalidity} {modseq}))\r\n"),
            )
            .await;
        assert!(out.starts_with("* OK [CLOSED]"), "{out}");
        assert!(out.contains("* VANISHED (EARLIER) 2\r\n"), "{out}");
        assert!(
            out.contains("* 2 FETCH (UID 3 FLAGS (\\Flagged) MODSEQ ("),
            "{out}"
        );
        assert!(
            !out.contains("UID 1 FLAGS"),
            "unchanged message reported: {out}"
        );
    }
}
