//! STORE and UID STORE (RFC 3501 section 6.4.6), UNCHANGEDSINCE (CONDSTORE, RFC 7162).

use hermod_common::store::{Flag, Flags, StoreMode};
use imap_codec::imap_types::command::StoreModifier;
use imap_codec::imap_types::flag::{Flag as ImapFlag, StoreResponse, StoreType};
use imap_codec::imap_types::sequence::SequenceSet;

use crate::output::Out;
use crate::sequence;
use crate::session::{Reply, Session, Sync, announce_keywords, write_flags};
use crate::wire;

/// System flags and keywords of a flag list. `\Recent` and unknown `\` flags are dropped:
/// clients cannot set them.
pub(crate) fn split_flags(flags: &[ImapFlag<'_>]) -> (Flags, Vec<String>) {
    let mut system = Flags::EMPTY;
    let mut keywords: Vec<String> = Vec::new();
    for f in flags {
        match f {
            ImapFlag::Seen => system.insert(Flag::Seen),
            ImapFlag::Answered => system.insert(Flag::Answered),
            ImapFlag::Flagged => system.insert(Flag::Flagged),
            ImapFlag::Deleted => system.insert(Flag::Deleted),
            ImapFlag::Draft => system.insert(Flag::Draft),
            ImapFlag::Keyword(k) => {
                let k = k.inner().to_string();
                if !keywords.iter().any(|x| x.eq_ignore_ascii_case(&k)) {
                    keywords.push(k);
                }
            }
            ImapFlag::Extension(_) => {}
        }
    }
    (system, keywords)
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn store(
        &mut self,
        set: &SequenceSet,
        kind: &StoreType,
        response: &StoreResponse,
        flags: &[ImapFlag<'_>],
        uid: bool,
        modifiers: &[StoreModifier],
        out: &mut Out<'_>,
    ) -> Reply {
        let (Some(user), Some(sel)) = (self.user(), self.selected.as_ref()) else {
            return Reply::bad("No mailbox selected");
        };
        // Only the system flags RFC 3501 defines can be set; `\Recent` and unknown ones are
        // a client error (as Dovecot and imaptest's store test expect).
        if flags.iter().any(|f| matches!(f, ImapFlag::Extension(_))) {
            return Reply::bad("Unknown system flag");
        }
        if sel.read_only {
            return Reply::no("Mailbox is read-only").code("READ-ONLY");
        }
        let unchanged_since = modifiers
            .iter()
            .map(|m| match m {
                StoreModifier::UnchangedSince(n) => *n,
            })
            .next();
        if unchanged_since.is_some() {
            self.enabled.condstore = true;
        }
        let ranges = if uid {
            sequence::by_uid(set, &sel.msgs, |m| m.uid)
        } else {
            match sequence::by_seq(set, sel.msgs.len() as u32) {
                Ok(r) => r,
                Err(_) => return Reply::bad("Invalid message sequence number"),
            }
        };
        let uids: Vec<u32> = sequence::indices(&ranges)
            .map(|i| sel.msgs[i].uid)
            .collect();
        let done = if uid {
            "UID STORE completed"
        } else {
            "STORE completed"
        };
        let sync = if uid { Sync::Full } else { Sync::NoExpunge };
        if uids.is_empty() {
            return Reply::ok(done).sync(sync);
        }
        let (system, keywords) = split_flags(flags);
        let mode = match kind {
            StoreType::Add => StoreMode::Add,
            StoreType::Remove => StoreMode::Remove,
            StoreType::Replace => StoreMode::Replace,
        };
        let name = sel.name.clone();
        let result = match user
            .store(&name, &uids, mode, system, &keywords, unchanged_since)
            .await
        {
            Ok(r) => r,
            Err(e) => return Reply::from(e).sync(sync),
        };
        let silent = matches!(response, StoreResponse::Silent);
        let condstore = self.enabled.condstore;
        let uidonly = self.enabled.uidonly;
        let Some(sel) = self.selected.as_mut() else {
            return Reply::ok(done);
        };
        announce_keywords(sel, &result.messages, out);
        for m in result.messages {
            let Some(i) = sel.index_of(m.uid) else {
                continue;
            };
            let changed = result.changed.contains(&m.uid);
            let recent = sel.msgs[i].recent;
            sel.msgs[i] = hermod_common::store::MessageMeta { recent, ..m };
            let m = &sel.msgs[i];
            if silent && !(condstore && changed) {
                continue;
            }
            let b = out.buf();
            let numbered_by_uid = crate::uidonly::start_fetch(b, uidonly, i + 1, m.uid);
            if uid && !numbered_by_uid {
                b.extend_from_slice(b"UID ");
                wire::number(b, u64::from(m.uid));
                b.push(b' ');
            }
            if silent {
                // .SILENT with CONDSTORE: only the new MODSEQ (RFC 7162 section 3.2).
                b.extend_from_slice(b"MODSEQ (");
                wire::number(b, m.modseq);
                b.push(b')');
            } else {
                write_flags(b, m);
                if condstore {
                    b.extend_from_slice(b" MODSEQ (");
                    wire::number(b, m.modseq);
                    b.push(b')');
                }
            }
            b.extend_from_slice(b")\r\n");
        }
        if !result.failed.is_empty() {
            let numbers: Vec<u32> = if uid {
                result.failed.clone()
            } else {
                result
                    .failed
                    .iter()
                    .filter_map(|u| sel.index_of(*u).map(|i| (i + 1) as u32))
                    .collect()
            };
            return Reply::ok("Conditional STORE failed for some messages")
                .code(format!("MODIFIED {}", sequence::format(&numbers)))
                .sync(sync);
        }
        Reply::ok(done).sync(sync)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{Harness, message};

    async fn three(h: &Harness) -> crate::session::Session {
        for i in 1..=3 {
            h.deliver("INBOX", &message(&format!("m{i}"), "x")).await;
        }
        h.selected("INBOX").await
    }

    #[tokio::test]
    async fn add_remove_replace_and_silent() {
        let h = Harness::new().await;
        let mut s = three(&h).await;
        let out = h.run(&mut s, "a STORE 1:2 +FLAGS (\\Seen)\r\n").await;
        assert_eq!(
            out,
            "* 1 FETCH (FLAGS (\\Seen \\Recent))\r\n* 2 FETCH (FLAGS (\\Seen \\Recent))\r\na OK STORE completed\r\n"
        );
        let out = h.run(&mut s, "b STORE 1 -FLAGS.SILENT (\\Seen)\r\n").await;
        assert_eq!(out, "b OK STORE completed\r\n");
        let out = h
            .run(&mut s, "c UID STORE 3 FLAGS ($Important \\Flagged)\r\n")
            .await;
        assert!(
            out.contains("* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $Important)\r\n"),
            "{out}"
        );
        assert!(
            out.contains("* 3 FETCH (UID 3 FLAGS (\\Flagged $Important \\Recent))\r\n"),
            "{out}"
        );
        let out = h.run(&mut s, "d uid store 2 +Flags (\\Seen)\r\n").await;
        assert!(
            out.contains("* 2 FETCH (UID 2 FLAGS (\\Seen \\Recent))"),
            "thunderbird's form: {out}"
        );
        assert!(
            h.run(&mut s, "e STORE 9 +FLAGS (\\Seen)\r\n")
                .await
                .starts_with("e BAD")
        );
    }

    #[tokio::test]
    async fn unchangedsince_reports_modified() {
        let h = Harness::new().await;
        let mut s = three(&h).await;
        let out = h.run(&mut s, "a FETCH 1:3 (MODSEQ)\r\n").await;
        let modseq: u64 = out
            .split("MODSEQ (")
            .skip(1)
            .map(|s| s.split(')').next().unwrap().parse::<u64>().unwrap())
            .max()
            .unwrap();
        h.run(&mut s, "b STORE 2 +FLAGS (\\Answered)\r\n").await;
        let out = h
            .run(
                &mut s,
                &format!("c STORE 1:3 (UNCHANGEDSINCE {modseq}) +FLAGS (\\Seen)\r\n"),
            )
            .await;
        assert!(out.contains("c OK [MODIFIED 2]"), "{out}");
        assert!(
            out.contains("* 1 FETCH (FLAGS (\\Seen \\Recent) MODSEQ ("),
            "{out}"
        );
    }

    #[tokio::test]
    async fn read_only_refuses() {
        let h = Harness::new().await;
        h.deliver("INBOX", &message("m", "x")).await;
        let mut s = h.session(true);
        h.login(&mut s).await;
        h.run(&mut s, "a EXAMINE INBOX\r\n").await;
        assert!(
            h.run(&mut s, "b STORE 1 +FLAGS (\\Seen)\r\n")
                .await
                .starts_with("b NO")
        );
    }

    /// An unknown system flag is a client error, not silently dropped.
    #[tokio::test]
    async fn unknown_system_flag_is_bad() {
        let h = Harness::new().await;
        let mut s = three(&h).await;
        let out = h.run(&mut s, "a STORE 1 +FLAGS (\\Seen \\Bogus)\r\n").await;
        assert!(out.starts_with("a BAD"), "{out}");
        let out = h.run(&mut s, "b FETCH 1 FLAGS\r\n").await;
        assert!(!out.contains("\\Seen"), "nothing stored: {out}");
    }
}
