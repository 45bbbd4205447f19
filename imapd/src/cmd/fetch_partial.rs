//! The PARTIAL FETCH modifier (RFC 9394 section 3.2): `UID FETCH 1:* (FLAGS) (PARTIAL
//! -1:-50)` returns only the messages at those positions of the set (counted from the
//! end when negative), so a client pages through a large mailbox.
//!
//! imap-codec does not know the modifier: it is taken off here, the set is narrowed to
//! the page, and the command goes on as an ordinary FETCH.

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::{CommandBody, FetchModifier};
use imap_codec::imap_types::sequence::SequenceSet;

use crate::extended::{Extended, Malformed, Token, tokenize};
use crate::output::Out;
use crate::search_return::PartialRange;
use crate::sequence;
use crate::session::{Reply, Session, Sync};

/// `tag [UID] FETCH set items (... PARTIAL range ...)`: the range and the command without
/// it. `None` for a FETCH without the modifier.
pub fn parse(line: &[u8], uid: bool) -> Option<Result<Extended, Malformed>> {
    if !line.windows(7).any(|w| w.eq_ignore_ascii_case(b"PARTIAL")) {
        return None;
    }
    let toks = tokenize(line).ok()?;
    let skip = if uid { 3 } else { 2 };
    // The modifiers are the last list, after the set and at least one item token.
    if toks.len() < skip + 3 {
        return None;
    }
    let (mods_at, Token::List(mods)) = toks.last()? else {
        return None;
    };
    let mut range = None;
    let mut kept = Vec::new();
    let mut it = mods.iter();
    while let Some(m) = it.next() {
        let Token::Atom(name) = m else {
            return Some(Err(Malformed("bad FETCH modifier")));
        };
        if name.eq_ignore_ascii_case(b"PARTIAL") {
            let parsed = match it.next() {
                Some(Token::Atom(r)) => PartialRange::parse(r),
                _ => None,
            };
            match parsed {
                Some(r) if range.is_none() => range = Some(r),
                _ => return Some(Err(Malformed("bad PARTIAL range"))),
            }
        } else {
            kept.push(name.clone());
        }
    }
    let range = range?;
    let mut rest = line[..*mods_at].to_vec();
    while rest.last() == Some(&b' ') {
        rest.pop();
    }
    if !kept.is_empty() {
        rest.extend_from_slice(b" (");
        rest.extend_from_slice(&kept.join(&b' '));
        rest.push(b')');
    }
    rest.extend_from_slice(b"\r\n");
    Some(Ok(Extended::FetchPartial { range, rest }))
}

impl Session {
    /// FETCH with PARTIAL: the page of the set, fetched as usual.
    pub(crate) async fn fetch_partial(
        &mut self,
        range: PartialRange,
        rest: &[u8],
        out: &mut Out<'_>,
    ) -> Reply {
        let Some(sel) = self.selected.as_ref() else {
            return Reply::bad("FETCH needs a selected mailbox");
        };
        let rest = crate::extended::quoted_8bit_to_literals(rest);
        let Ok(([], cmd)) = CommandCodec::default().decode(&rest) else {
            return Reply::bad("Invalid FETCH arguments");
        };
        if let Some(refused) = self.uidonly_refusal(&cmd.body) {
            return refused;
        }
        let CommandBody::Fetch {
            sequence_set,
            macro_or_item_names,
            uid,
            modifiers,
        } = cmd.body
        else {
            return Reply::bad("Invalid FETCH");
        };
        let ranges = if uid {
            sequence::by_uid(&sequence_set, &sel.msgs, |m| m.uid)
        } else {
            match sequence::by_seq(&sequence_set, sel.msgs.len() as u32) {
                Ok(r) => r,
                Err(_) => return Reply::bad("Invalid message sequence number"),
            }
        };
        let changed_since = modifiers.iter().find_map(|m| match m {
            FetchModifier::ChangedSince(n) => Some(n.get()),
            _ => None,
        });
        let matched: Vec<usize> = sequence::indices(&ranges)
            .filter(|&i| changed_since.is_none_or(|c| sel.msgs[i].modseq > c))
            .collect();
        let page = &matched[range.indexes(matched.len())];
        if page.is_empty() {
            let sync = if uid { Sync::Full } else { Sync::NoExpunge };
            return Reply::completed("FETCH", uid, false, sync);
        }
        let numbers: Vec<u32> = page
            .iter()
            .map(|&i| if uid { sel.msgs[i].uid } else { (i + 1) as u32 })
            .collect();
        let Ok(set) = SequenceSet::try_from(sequence::format(&numbers).as_str()) else {
            return Reply::bad("Invalid message set");
        };
        self.fetch(&set, &macro_or_item_names, uid, &modifiers, out)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Harness, message};

    #[test]
    fn modifier_is_taken_off() {
        let Some(Ok(Extended::FetchPartial { range, rest })) =
            parse(b"a UID FETCH 1:* (FLAGS) (PARTIAL -1:-2)\r\n", true)
        else {
            panic!()
        };
        assert_eq!(range, PartialRange::Last(1, 2));
        assert_eq!(rest, b"a UID FETCH 1:* (FLAGS)\r\n");
        let Some(Ok(Extended::FetchPartial { rest, .. })) =
            parse(b"a FETCH 1:* FLAGS (CHANGEDSINCE 5 PARTIAL 1:2)\r\n", false)
        else {
            panic!()
        };
        assert_eq!(rest, b"a FETCH 1:* FLAGS (CHANGEDSINCE 5)\r\n");
        assert_eq!(
            parse(b"a FETCH 1 BODY[HEADER.FIELDS (PARTIAL)]\r\n", false),
            None
        );
        let Some(Ok(Extended::FetchPartial { rest, .. })) = parse(
            b"a UID FETCH 1:* BODY.PEEK[HEADER.FIELDS (SUBJECT)] (PARTIAL 1:2)\r\n",
            true,
        ) else {
            panic!()
        };
        assert_eq!(
            rest,
            b"a UID FETCH 1:* BODY.PEEK[HEADER.FIELDS (SUBJECT)]\r\n"
        );
        assert!(matches!(
            parse(b"a FETCH 1:* FLAGS (PARTIAL 1:*)\r\n", false),
            Some(Err(_))
        ));
    }

    #[tokio::test]
    async fn pages_of_the_set() {
        let h = Harness::new().await;
        for i in 1..=6 {
            h.deliver("INBOX", &message(&format!("m{i}"), "x")).await;
        }
        let mut s = h.selected("INBOX").await;
        h.run(
            &mut s,
            "d STORE 2 +FLAGS.SILENT (\\Deleted)\r\ne EXPUNGE\r\n",
        )
        .await;
        let out = h
            .run(&mut s, "a UID FETCH 1:* (UID) (PARTIAL -1:-2)\r\n")
            .await;
        assert_eq!(
            out,
            "* 4 FETCH (UID 5)\r\n* 5 FETCH (UID 6)\r\na OK UID FETCH completed\r\n"
        );
        let out = h
            .run(&mut s, "b UID FETCH 1:* (UID) (PARTIAL 2:3)\r\n")
            .await;
        assert_eq!(
            out,
            "* 2 FETCH (UID 3)\r\n* 3 FETCH (UID 4)\r\nb OK UID FETCH completed\r\n"
        );
        let out = h.run(&mut s, "c FETCH 1:* (UID) (PARTIAL 9:10)\r\n").await;
        assert_eq!(out, "c OK FETCH completed\r\n");
        let out = h.run(&mut s, "f FETCH 1:* (UID) (PARTIAL 0:1)\r\n").await;
        assert!(out.starts_with("f BAD"), "{out}");
    }
}
