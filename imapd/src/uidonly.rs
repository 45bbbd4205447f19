//! UIDONLY (RFC 9586): after `ENABLE UIDONLY` a session never sees a message sequence
//! number and may not send one.
//!
//! The rest of the session asks this module two things: whether a command must be refused
//! with `BAD [UIDREQUIRED]` (RFC 9586 section 3: any non-UID FETCH, STORE, COPY, MOVE,
//! SEARCH, SORT or THREAD, a sequence-set search key even in a UID command, QRESYNC's
//! sequence match data in SELECT), and how a message's fetch data starts
//! (`* <uid> UIDFETCH (`, section 3.3, instead of `* <seq> FETCH (`).
//! Expunges go out as `* VANISHED` as with QRESYNC (see `Enabled::vanished`).

use imap_codec::imap_types::command::{CommandBody, SelectParameter};
use imap_codec::imap_types::search::SearchKey;

use crate::session::Reply;
use crate::wire;

/// The capability and ENABLE name.
pub const CAPABILITY: &str = "UIDONLY";

/// The answer to a command that names messages by sequence number in a UIDONLY session,
/// or `None` when the command may run.
pub(crate) fn refusal(body: &CommandBody<'_>) -> Option<Reply> {
    use CommandBody as C;
    let (uid, criteria): (bool, Option<&[SearchKey<'_>]>) = match body {
        C::Fetch { uid, .. } | C::Store { uid, .. } | C::Copy { uid, .. } | C::Move { uid, .. } => {
            (*uid, None)
        }
        C::Search { uid, criteria, .. } => (*uid, Some(criteria.as_ref())),
        C::Sort {
            uid,
            search_criteria,
            ..
        }
        | C::Thread {
            uid,
            search_criteria,
            ..
        } => (*uid, Some(search_criteria.as_ref())),
        // QRESYNC's message sequence match data pairs sequence numbers with UIDs.
        C::Select { parameters, .. } | C::Examine { parameters, .. } => {
            let seq_match = parameters.iter().any(|p| {
                matches!(
                    p,
                    SelectParameter::QResync {
                        seq_match_data: Some(_),
                        ..
                    }
                )
            });
            return seq_match.then(|| refuse("QRESYNC sequence match data"));
        }
        _ => return None,
    };
    if !uid {
        return Some(refuse(body.name()));
    }
    if criteria.is_some_and(names_sequence_numbers) {
        return Some(refuse("A sequence-set search key"));
    }
    None
}

/// [`refusal`] for a line still holding SEARCHRES's `$`, read before the substitution
/// (which turns `FETCH $` with nothing saved into a UID FETCH that would go through).
pub(crate) fn refusal_of_line(line: &[u8]) -> Option<Reply> {
    if !line.contains(&b'$') {
        return None;
    }
    let head = crate::searchres::head(line)?;
    let by_sequence = [&b"FETCH"[..], b"STORE", b"COPY", b"MOVE"].contains(&head.name.as_slice());
    (by_sequence && !head.uid).then(|| refuse(&String::from_utf8_lossy(&head.name)))
}

fn refuse(what: &str) -> Reply {
    Reply::bad(format!(
        "{what} uses message sequence numbers, which UIDONLY does not allow: use UID commands"
    ))
    .code("UIDREQUIRED")
}

/// Whether any key, however deeply nested, is a message sequence set. A loop over an
/// explicit stack: the nesting depth is the client's choice.
fn names_sequence_numbers(keys: &[SearchKey<'_>]) -> bool {
    let mut stack: Vec<&SearchKey<'_>> = keys.iter().collect();
    while let Some(key) = stack.pop() {
        match key {
            SearchKey::SequenceSet(_) => return true,
            SearchKey::And(inner) => stack.extend(inner.as_ref().iter()),
            SearchKey::Or(a, b) => {
                stack.push(a);
                stack.push(b);
            }
            SearchKey::Not(inner) => stack.push(inner),
            _ => {}
        }
    }
    false
}

/// Starts one message's fetch data: `* <seq> FETCH (`, or `* <uid> UIDFETCH (` in a UIDONLY
/// session. Returns true when the UID is in the response's number already, so that an
/// implicit `UID` item (UID FETCH, UID STORE, unsolicited flag changes) is left out.
pub(crate) fn start_fetch(b: &mut Vec<u8>, uidonly: bool, seq: usize, uid: u32) -> bool {
    b.extend_from_slice(b"* ");
    if uidonly {
        wire::number(b, u64::from(uid));
        b.extend_from_slice(b" UIDFETCH (");
    } else {
        wire::number(b, seq as u64);
        b.extend_from_slice(b" FETCH (");
    }
    uidonly
}

#[cfg(test)]
mod tests {
    use imap_codec::CommandCodec;
    use imap_codec::decode::Decoder;

    use super::*;
    use crate::session::Status;
    use crate::testing::{Harness, message};

    fn check(line: &str) -> Option<Reply> {
        let (rest, cmd) = CommandCodec::default()
            .decode(line.as_bytes())
            .expect("valid command");
        assert!(rest.is_empty());
        refusal(&cmd.body)
    }

    #[test]
    fn sequence_number_commands_are_refused() {
        for line in [
            "a FETCH 1:* (FLAGS)\r\n",
            "a STORE 1 +FLAGS (\\Seen)\r\n",
            "a COPY 1 Trash\r\n",
            "a MOVE 1 Trash\r\n",
            "a SEARCH ALL\r\n",
            "a SORT (DATE) UTF-8 ALL\r\n",
            "a THREAD REFERENCES UTF-8 ALL\r\n",
            "a UID SEARCH 1:5\r\n",
            "a UID SEARCH OR SEEN NOT (ANSWERED 2)\r\n",
            "a UID SORT (DATE) UTF-8 NOT 3\r\n",
            "a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541 (1,3,5 41,45,50)))\r\n",
        ] {
            let reply = check(line).unwrap_or_else(|| panic!("{line} not refused"));
            assert_eq!(reply.status, Status::Bad, "{line}");
            assert_eq!(reply.code.as_deref(), Some("UIDREQUIRED"), "{line}");
        }
    }

    #[test]
    fn uid_commands_run() {
        for line in [
            "a UID FETCH 1:* (FLAGS)\r\n",
            "a UID STORE 1 +FLAGS (\\Seen)\r\n",
            "a UID COPY 1 Trash\r\n",
            "a UID MOVE 1 Trash\r\n",
            "a UID SEARCH UID 1:5 OR SEEN NOT ANSWERED\r\n",
            "a UID SORT (DATE) UTF-8 ALL\r\n",
            "a EXPUNGE\r\n",
            "a UID EXPUNGE 3\r\n",
            "a NOOP\r\n",
            "a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\r\n",
        ] {
            assert!(check(line).is_none(), "{line} refused");
        }
    }

    #[test]
    fn saved_result_in_a_sequence_command_is_refused() {
        let reply = refusal_of_line(b"a FETCH $ (FLAGS)\r\n").expect("refused");
        assert_eq!(reply.code.as_deref(), Some("UIDREQUIRED"));
        assert!(refusal_of_line(b"a UID FETCH $ (FLAGS)\r\n").is_none());
        assert!(refusal_of_line(b"a FETCH 1 (FLAGS)\r\n").is_none());
    }

    #[test]
    fn fetch_data_is_numbered_by_uid() {
        let mut b = Vec::new();
        assert!(start_fetch(&mut b, true, 2, 17));
        assert_eq!(b, b"* 17 UIDFETCH (");
        let mut b = Vec::new();
        assert!(!start_fetch(&mut b, false, 2, 17));
        assert_eq!(b, b"* 2 FETCH (");
    }

    /// A UIDONLY session beside a plain one on the same mailbox: the UIDONLY one hears of
    /// the other's flag change and expunge by UID only.
    #[tokio::test]
    async fn session_sees_uids_only() {
        let h = Harness::new().await;
        for i in 1..=4 {
            h.deliver("INBOX", &message(&format!("m{i}"), "x")).await;
        }
        let mut other = h.selected("INBOX").await;
        let mut s = h.session(true);
        h.login(&mut s).await;
        let out = h.run(&mut s, "a ENABLE UIDONLY\r\n").await;
        assert_eq!(out, "* ENABLED UIDONLY\r\na OK ENABLE completed\r\n");
        let out = h.run(&mut s, "b SELECT INBOX\r\n").await;
        assert!(
            !out.contains("UNSEEN"),
            "UNSEEN is a sequence number: {out}"
        );

        let out = h.run(&mut s, "c FETCH 1 (FLAGS)\r\n").await;
        assert!(out.starts_with("c BAD [UIDREQUIRED] "), "{out}");
        let out = h.run(&mut s, "d UID FETCH 2:3 (FLAGS)\r\n").await;
        assert_eq!(
            out,
            "* 2 UIDFETCH (FLAGS ())\r\n* 3 UIDFETCH (FLAGS ())\r\n\
             d OK UID FETCH completed\r\n"
        );
        let out = h.run(&mut s, "e UID STORE 3 +FLAGS (\\Seen)\r\n").await;
        assert_eq!(
            out,
            "* 3 UIDFETCH (FLAGS (\\Seen))\r\ne OK UID STORE completed\r\n"
        );

        h.run(&mut other, "f STORE 1 +FLAGS (\\Deleted)\r\ng EXPUNGE\r\n")
            .await;
        // Sequence number 3 is UID 4 once UID 1 is gone.
        h.run(&mut other, "h STORE 3 +FLAGS (\\Flagged)\r\n").await;
        let out = h.run(&mut s, "i NOOP\r\n").await;
        assert_eq!(
            out,
            "* 4 UIDFETCH (FLAGS (\\Flagged))\r\n* VANISHED 1\r\n\
             i OK NOOP completed\r\n"
        );
        let out = h.run(&mut s, "j UID SEARCH 1:2\r\n").await;
        assert!(out.starts_with("j BAD [UIDREQUIRED] "), "{out}");
        let out = h.run(&mut s, "k UID SEARCH SEEN\r\n").await;
        assert!(out.starts_with("* SEARCH 3\r\n"), "{out}");
    }

    /// CONDSTORE and CONTEXT=SEARCH in a UIDONLY session: MODSEQ in UIDFETCH, a UID
    /// search kept up to date with UIDs, expunges as VANISHED.
    #[tokio::test]
    async fn condstore_and_search_context_by_uid() {
        let h = Harness::new().await;
        for i in 1..=3 {
            h.deliver("INBOX", &message(&format!("m{i}"), "x")).await;
        }
        let mut s = h.session(true);
        h.login(&mut s).await;
        h.run(&mut s, "a ENABLE UIDONLY CONDSTORE\r\nb SELECT INBOX\r\n")
            .await;
        let out = h.run(&mut s, "c UID FETCH 2 (MODSEQ)\r\n").await;
        assert!(out.starts_with("* 2 UIDFETCH (MODSEQ ("), "{out}");
        let out = h
            .run(&mut s, "u UID SEARCH RETURN (ALL UPDATE) UNSEEN\r\n")
            .await;
        assert_eq!(
            out,
            "* ESEARCH (TAG \"u\") UID ALL 1:3\r\nu OK UID SEARCH completed\r\n"
        );
        let out = h
            .run(&mut s, "d UID STORE 2 +FLAGS.SILENT (\\Seen)\r\n")
            .await;
        assert!(
            out.starts_with("* 2 UIDFETCH (MODSEQ (")
                && out.contains("* ESEARCH (TAG \"u\") UID REMOVEFROM (0 2)\r\n"),
            "{out}"
        );
        h.run(&mut s, "e UID STORE 3 +FLAGS.SILENT (\\Deleted)\r\n")
            .await;
        let out = h.run(&mut s, "f EXPUNGE\r\n").await;
        assert!(
            out.starts_with("* ESEARCH (TAG \"u\") UID REMOVEFROM (0 3)\r\n* VANISHED 3\r\n"),
            "{out}"
        );
    }
}
