//! FETCH and UID FETCH (RFC 3501 section 6.4.5), CHANGEDSINCE and VANISHED (RFC 7162).
//!
//! Metadata items (FLAGS, UID, RFC822.SIZE, INTERNALDATE, MODSEQ) come from the session's
//! view without touching the message; `UID FETCH 1:* (FLAGS)` streams straight from it.

use std::borrow::Cow;

use hermod_common::store::{Flag, Flags, MessageMeta, StoreError, StoreMode};
use imap_codec::imap_types::command::FetchModifier;
use imap_codec::imap_types::core::AString;
use imap_codec::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItemName, Part, Section,
};
use imap_codec::imap_types::sequence::SequenceSet;

use super::fetch_read::BatchedReads;
use crate::date;
use crate::mime::parsed::Parsed;
use crate::mime::{self, Entity, envelope, header, section, structure};
use crate::output::Out;
use crate::sequence;
use crate::session::{Reply, Session, Sync, announce_keywords, write_flags};
use crate::wire;

fn part_numbers(p: &Part) -> Vec<u32> {
    p.0.as_ref().iter().map(|n| n.get()).collect()
}

fn names(list: &[AString<'_>]) -> Vec<Vec<u8>> {
    list.iter()
        .map(|a| AsRef::<[u8]>::as_ref(a).to_vec())
        .collect()
}

/// imap-types' section as ours.
fn convert(s: &Option<Section<'_>>) -> section::Section {
    use section::Spec;
    let (part, spec) = match s {
        None => (vec![], Spec::Whole),
        Some(Section::Part(p)) => (part_numbers(p), Spec::Whole),
        Some(Section::Header(p)) => (
            p.as_ref().map(part_numbers).unwrap_or_default(),
            Spec::Header,
        ),
        Some(Section::HeaderFields(p, n)) => (
            p.as_ref().map(part_numbers).unwrap_or_default(),
            Spec::HeaderFields {
                names: names(n.as_ref()),
                not: false,
            },
        ),
        Some(Section::HeaderFieldsNot(p, n)) => (
            p.as_ref().map(part_numbers).unwrap_or_default(),
            Spec::HeaderFields {
                names: names(n.as_ref()),
                not: true,
            },
        ),
        Some(Section::Text(p)) => (p.as_ref().map(part_numbers).unwrap_or_default(), Spec::Text),
        Some(Section::Mime(p)) => (part_numbers(p), Spec::Mime),
    };
    section::Section { part, spec }
}

/// The section as echoed in the response: `1.2.HEADER.FIELDS (From To)`.
fn write_section(b: &mut Vec<u8>, s: &Option<Section<'_>>) {
    let prefix = |b: &mut Vec<u8>, p: &Option<Part>| {
        if let Some(p) = p {
            b.extend_from_slice(join(p).as_bytes());
            b.push(b'.');
        }
    };
    let fields = |b: &mut Vec<u8>, list: &[AString<'_>]| {
        b.extend_from_slice(b" (");
        for (i, n) in list.iter().enumerate() {
            if i > 0 {
                b.push(b' ');
            }
            wire::astring(b, n.as_ref());
        }
        b.push(b')');
    };
    match s {
        None => {}
        Some(Section::Part(p)) => b.extend_from_slice(join(p).as_bytes()),
        Some(Section::Header(p)) => {
            prefix(b, p);
            b.extend_from_slice(b"HEADER");
        }
        Some(Section::HeaderFields(p, n)) => {
            prefix(b, p);
            b.extend_from_slice(b"HEADER.FIELDS");
            fields(b, n.as_ref());
        }
        Some(Section::HeaderFieldsNot(p, n)) => {
            prefix(b, p);
            b.extend_from_slice(b"HEADER.FIELDS.NOT");
            fields(b, n.as_ref());
        }
        Some(Section::Text(p)) => {
            prefix(b, p);
            b.extend_from_slice(b"TEXT");
        }
        Some(Section::Mime(p)) => {
            prefix(b, &Some(p.clone()));
            b.extend_from_slice(b"MIME");
        }
    }
}

fn join(p: &Part) -> String {
    part_numbers(p)
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// Whether an item needs the message bytes.
fn needs_body(item: &MessageDataItemName<'_>) -> bool {
    use MessageDataItemName::*;
    !matches!(item, Flags | InternalDate | Rfc822Size | Uid | ModSeq)
}

/// Items served from the store's parse cache ([`Parsed`]) once computed.
fn from_parse_cache(item: &MessageDataItemName<'_>) -> bool {
    use MessageDataItemName::*;
    matches!(item, Envelope | Body | BodyStructure)
}

/// Whether an item sets `\Seen` (RFC 3501: BODY[...] without PEEK, RFC822, RFC822.TEXT).
fn sets_seen(item: &MessageDataItemName<'_>) -> bool {
    use MessageDataItemName::*;
    match item {
        BodyExt { peek, .. } | Binary { peek, .. } => !peek,
        Rfc822 | Rfc822Text => true,
        _ => false,
    }
}

impl Session {
    pub(crate) async fn fetch(
        &mut self,
        set: &SequenceSet,
        items: &MacroOrMessageDataItemNames<'_>,
        uid: bool,
        modifiers: &[FetchModifier],
        out: &mut Out<'_>,
    ) -> Reply {
        let sync = if uid { Sync::Full } else { Sync::NoExpunge };
        let mut items: Vec<MessageDataItemName<'_>> = match items {
            MacroOrMessageDataItemNames::Macro(m) => m.expand(),
            MacroOrMessageDataItemNames::MessageDataItemNames(v) => v.clone(),
        };
        // OBJECTID/SAVEDATE items: the `UID` in their place goes unless the client asked.
        let extra = self.objectid.fetch.take();
        if let Some((_, true)) = &extra {
            items.retain(|i| !matches!(i, MessageDataItemName::Uid));
        }
        let mut changed_since = None;
        let mut vanished = false;
        for m in modifiers {
            match m {
                FetchModifier::ChangedSince(n) => changed_since = Some(n.get()),
                FetchModifier::Vanished => vanished = true,
            }
        }
        if vanished && (!uid || !self.enabled.qresync || changed_since.is_none()) {
            return Reply::bad("VANISHED needs UID FETCH, QRESYNC and CHANGEDSINCE");
        }
        let want_modseq = changed_since.is_some()
            || items
                .iter()
                .any(|i| matches!(i, MessageDataItemName::ModSeq));
        if want_modseq {
            self.condstore_enabled_by_command(out);
        }
        let Some(user) = self.user() else {
            return Reply::bad("No mailbox selected");
        };
        let Some(sel) = self.selected.as_mut() else {
            return Reply::bad("No mailbox selected");
        };
        let ranges = if uid {
            sequence::by_uid(set, &sel.msgs, |m| m.uid)
        } else {
            match sequence::by_seq(set, sel.msgs.len() as u32) {
                Ok(r) => r,
                Err(_) => return Reply::bad("Invalid message sequence number"),
            }
        };
        let name = sel.name.clone();

        if vanished && let Some(since) = changed_since {
            match user.changes_since(&name, since).await {
                Ok(ch) => {
                    let max = sel.max_uid();
                    let gone: Vec<u32> = ch
                        .vanished
                        .into_iter()
                        .filter(|u| sequence::contains(set, *u, max))
                        .collect();
                    if !gone.is_empty() {
                        out.untagged(&format!("VANISHED (EARLIER) {}", sequence::format(&gone)));
                    }
                }
                Err(e) => return Reply::from(e).sync(sync),
            }
        }

        let selected_idx: Vec<usize> = sequence::indices(&ranges)
            .filter(|&i| changed_since.is_none_or(|c| sel.msgs[i].modseq > c))
            .collect();

        // Body fetches without PEEK mark the messages read, before their data is sent.
        let mut seen_now: Vec<u32> = Vec::new();
        if !sel.read_only && items.iter().any(sets_seen) {
            let unseen: Vec<u32> = selected_idx
                .iter()
                .map(|&i| &sel.msgs[i])
                .filter(|m| !m.flags.contains(Flag::Seen))
                .map(|m| m.uid)
                .collect();
            if !unseen.is_empty() {
                match user
                    .store(
                        &name,
                        &unseen,
                        StoreMode::Add,
                        Flags::from_flags(&[Flag::Seen]),
                        &[],
                        None,
                    )
                    .await
                {
                    Ok(r) => {
                        announce_keywords(sel, &r.messages, out);
                        for m in r.messages {
                            if let Some(i) = sel.index_of(m.uid) {
                                let recent = sel.msgs[i].recent;
                                sel.msgs[i] = MessageMeta { recent, ..m };
                            }
                        }
                        seen_now = r.changed;
                    }
                    Err(e) => return Reply::from(e).sync(sync),
                }
            }
        }

        // ENVELOPE/BODY/BODYSTRUCTURE come from the parse cache; the file is read only for
        // other body items, or to fill the cache.
        let body_needed = items.iter().any(|i| needs_body(i) && !from_parse_cache(i));
        let want_parsed = items.iter().any(from_parse_cache);
        let mut cached = if want_parsed {
            let uids: Vec<u32> = selected_idx.iter().map(|&i| sel.msgs[i].uid).collect();
            user.cached(&name, &uids).await.unwrap_or_else(|e| {
                tracing::debug!(error = %e, "parse cache unavailable");
                Default::default()
            })
        } else {
            Default::default()
        };
        let mut fresh: Vec<(u32, Vec<u8>)> = Vec::new();
        // A lone `BODY[]<offset.length>` (Thunderbird fetches large messages in chunks) reads
        // only that part of the file.
        let ranged = match items
            .iter()
            .filter(|i| needs_body(i))
            .collect::<Vec<_>>()
            .as_slice()
        {
            [
                MessageDataItemName::BodyExt {
                    section: None,
                    partial: Some((offset, length)),
                    ..
                },
            ] => Some(u64::from(*offset)..u64::from(*offset) + u64::from(length.get())),
            _ => None,
        };
        let objects = match &extra {
            Some(_) => {
                let uids: Vec<u32> = selected_idx.iter().map(|&i| sel.msgs[i].uid).collect();
                user.message_objects(&name, Some(&uids))
                    .await
                    .unwrap_or_default()
            }
            None => Default::default(),
        };
        let has_uid = items.iter().any(|i| matches!(i, MessageDataItemName::Uid));
        let has_flags = items
            .iter()
            .any(|i| matches!(i, MessageDataItemName::Flags));
        let has_modseq = items
            .iter()
            .any(|i| matches!(i, MessageDataItemName::ModSeq));
        let mut expunged = false;
        let mut reads = BatchedReads::new(if ranged.is_some() {
            Vec::new()
        } else {
            selected_idx
                .iter()
                .map(|&i| &sel.msgs[i])
                .filter(|m| body_needed || (want_parsed && !cached.contains_key(&m.uid)))
                .map(|m| (m.uid, m.size))
                .collect()
        });
        for i in selected_idx {
            let Some(sel) = self.selected.as_ref() else {
                break;
            };
            let Some(m) = sel.msgs.get(i).cloned() else {
                break;
            };
            let mut parsed = cached.remove(&m.uid).and_then(|v| Parsed::decode(&v));
            let raw = if body_needed || (want_parsed && parsed.is_none()) {
                let read = match &ranged {
                    Some(r) => user.read_range(&name, m.uid, r.clone()).await,
                    None => reads.read(&user, &name, m.uid).await,
                };
                match read {
                    Ok(r) => Some(r),
                    Err(StoreError::NoSuchMessage(_)) => {
                        expunged = true;
                        continue;
                    }
                    Err(e) => return Reply::from(e).sync(sync),
                }
            } else {
                None
            };
            if want_parsed && parsed.is_none() {
                let p = Parsed::compute(raw.as_deref().unwrap_or_default());
                fresh.push((m.uid, p.encode()));
                parsed = Some(p);
            }
            let mut tree: Option<Entity> = None;
            if items.iter().any(super::binary::is_binary)
                && let Err(reply) =
                    super::binary::check(&items, raw.as_deref().unwrap_or_default(), &mut tree)
            {
                return reply.sync(sync);
            }
            let b = out.buf();
            let numbered_by_uid =
                crate::uidonly::start_fetch(b, self.enabled.uidonly, i + 1, m.uid);
            let mut first = true;
            let mut sep = |b: &mut Vec<u8>| {
                if !first {
                    b.push(b' ');
                }
                first = false;
            };
            if uid && !has_uid && !numbered_by_uid {
                sep(b);
                b.extend_from_slice(b"UID ");
                wire::number(b, u64::from(m.uid));
            }
            for item in &items {
                sep(b);
                write_item(
                    b,
                    item,
                    &m,
                    raw.as_deref(),
                    ranged.is_some(),
                    parsed.as_ref(),
                    &mut tree,
                );
            }
            for x in extra.iter().flat_map(|(x, _)| x) {
                sep(b);
                crate::objectid::write_fetch(b, *x, objects.get(&m.uid));
            }
            if seen_now.contains(&m.uid) && !has_flags {
                sep(b);
                write_flags(b, &m);
            }
            if changed_since.is_some() && !has_modseq {
                sep(b);
                b.extend_from_slice(b"MODSEQ (");
                wire::number(b, m.modseq);
                b.push(b')');
            }
            b.extend_from_slice(b")\r\n");
            if let Err(e) = out.maybe_flush().await {
                tracing::debug!(error = %e, "client went away during FETCH");
                return Reply::no("Connection lost").sync(Sync::Skip);
            }
        }
        if let Err(e) = user.set_cached(&name, &fresh).await {
            tracing::debug!(error = %e, "parse cache not updated");
        }
        Reply::completed("FETCH", uid, expunged, sync)
    }
}

/// Writes one FETCH data item.
fn write_item(
    b: &mut Vec<u8>,
    item: &MessageDataItemName<'_>,
    m: &MessageMeta,
    raw: Option<&[u8]>,
    raw_is_partial: bool,
    cached: Option<&Parsed>,
    tree: &mut Option<Entity>,
) {
    use MessageDataItemName as I;
    let raw = raw.unwrap_or_default();
    let split = || header::body_start(raw);
    let parsed = |tree: &mut Option<Entity>| -> Entity {
        tree.get_or_insert_with(|| mime::parse(raw)).clone()
    };
    match item {
        I::Flags => write_flags(b, m),
        I::Uid => {
            b.extend_from_slice(b"UID ");
            wire::number(b, u64::from(m.uid));
        }
        I::Rfc822Size => {
            b.extend_from_slice(b"RFC822.SIZE ");
            wire::number(b, m.size);
        }
        I::InternalDate => {
            b.extend_from_slice(b"INTERNALDATE \"");
            b.extend_from_slice(date::format_internal_date(m.internal_date).as_bytes());
            b.push(b'"');
        }
        I::ModSeq => {
            b.extend_from_slice(b"MODSEQ (");
            wire::number(b, m.modseq);
            b.push(b')');
        }
        I::Envelope => {
            b.extend_from_slice(b"ENVELOPE ");
            match cached {
                Some(p) => b.extend_from_slice(&p.envelope),
                None => envelope::write(b, &raw[..split()]),
            }
        }
        I::Body | I::BodyStructure => {
            let extended = matches!(item, I::BodyStructure);
            b.extend_from_slice(if extended {
                b"BODYSTRUCTURE "
            } else {
                b"BODY "
            });
            match cached {
                Some(p) if extended => b.extend_from_slice(&p.bodystructure),
                Some(p) => b.extend_from_slice(&p.body),
                None => structure::write(b, raw, &parsed(tree), extended),
            }
        }
        I::Rfc822 => {
            b.extend_from_slice(b"RFC822 ");
            wire::literal(b, raw);
        }
        I::Rfc822Header => {
            b.extend_from_slice(b"RFC822.HEADER ");
            wire::literal(b, &raw[..split()]);
        }
        I::Rfc822Text => {
            b.extend_from_slice(b"RFC822.TEXT ");
            wire::literal(b, &raw[split()..]);
        }
        I::BodyExt {
            section: s,
            partial,
            ..
        } => {
            b.extend_from_slice(b"BODY[");
            write_section(b, s);
            b.push(b']');
            let spec = convert(s);
            let data: Option<Cow<'_, [u8]>> = if raw_is_partial {
                Some(Cow::Borrowed(raw))
            } else if spec.part.is_empty() {
                section::extract(raw, &spec)
            } else {
                let t = parsed(tree);
                section::extract_from(raw, &t, &spec).map(|c| Cow::Owned(c.into_owned()))
            };
            if let Some((offset, _)) = partial {
                b.push(b'<');
                wire::number(b, u64::from(*offset));
                b.push(b'>');
            }
            b.push(b' ');
            match data {
                Some(d) => {
                    let d: &[u8] = match partial {
                        Some((o, l)) if !raw_is_partial => section::partial(&d, *o, l.get()),
                        _ => &d,
                    };
                    wire::literal(b, d);
                }
                None => b.extend_from_slice(b"NIL"),
            }
        }
        I::Binary { .. } | I::BinarySize { .. } => super::binary::write_item(b, item, raw, tree),
    }
}

#[cfg(test)]
mod tests {
    use crate::mime::parsed::Parsed;
    use crate::mime::tests::NESTED;
    use crate::testing::{Harness, message};

    /// RFC 2180 section 4.1: a FETCH that meets a message another session expunged still
    /// returns the others and succeeds; the EXPUNGE is reported at the next chance.
    #[tokio::test]
    async fn fetch_after_another_session_expunged_returns_the_rest() {
        let h = Harness::new().await;
        h.deliver("INBOX", &message("one", "body one")).await;
        h.deliver("INBOX", &message("two", "body two")).await;
        let mut a = h.selected("INBOX").await;
        let mut b = h.selected("INBOX").await;
        let out = h
            .run(&mut b, "x STORE 1 +FLAGS (\\Deleted)\r\ny EXPUNGE\r\n")
            .await;
        assert!(out.contains("* 1 EXPUNGE"), "{out}");
        let out = h.run(&mut a, "f FETCH 1:2 (BODY.PEEK[TEXT])\r\n").await;
        assert!(
            out.contains("* 2 FETCH (BODY[TEXT] {10}\r\nbody two\r\n)"),
            "{out}"
        );
        assert!(
            out.ends_with("f OK [EXPUNGEISSUED] Some messages were expunged\r\n"),
            "{out}"
        );
        let out = h.run(&mut a, "n NOOP\r\n").await;
        assert_eq!(out, "* 1 EXPUNGE\r\nn OK NOOP completed\r\n");
    }

    /// A keyword set by another session since this one looked is announced in `* FLAGS`
    /// before the FETCH that shows it (RFC 3501 section 7.2.6).
    #[tokio::test]
    async fn new_keyword_is_announced_before_a_fetch_shows_it() {
        let h = Harness::new().await;
        h.deliver("INBOX", &message("one", "body one")).await;
        let mut a = h.selected("INBOX").await;
        let mut b = h.selected("INBOX").await;
        h.run(&mut b, "x STORE 1 +FLAGS ($Label1)\r\n").await;
        // Not PEEK: setting \Seen returns the message's current flags, $Label1 included.
        let out = h.run(&mut a, "f FETCH 1 (BODY[TEXT])\r\n").await;
        let flags = out.find("* FLAGS (").expect(&out);
        let fetch = out.find("$Label1)").expect(&out);
        assert!(flags < fetch, "{out}");
        assert!(out.contains("[PERMANENTFLAGS ("), "{out}");
    }

    #[tokio::test]
    async fn thunderbird_flag_sync_and_header_fetch() {
        let h = Harness::new().await;
        h.deliver("INBOX", &message("one", "body one")).await;
        h.deliver("INBOX", &message("two", "body two")).await;
        let mut s = h.selected("INBOX").await;
        let out = h.run(&mut s, "4 UID fetch 1:* (FLAGS)\r\n").await;
        assert_eq!(
            out,
            "* 1 FETCH (UID 1 FLAGS (\\Recent))\r\n* 2 FETCH (UID 2 FLAGS (\\Recent))\r\n4 OK UID FETCH completed\r\n"
        );
        let out = h
            .run(&mut s, "5 UID fetch 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])\r\n")
            .await;
        let size = message("one", "body one").len();
        assert!(
            out.starts_with(&format!("* 1 FETCH (UID 1 RFC822.SIZE {size} FLAGS (\\Recent) BODY[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)] {{")),
            "{out}"
        );
        assert!(
            out.contains(
                "From: Bob <bob@example.net>\r\nTo: alice@example.org\r\nSubject: one\r\n"
            ),
            "{out}"
        );
        assert!(!out.contains("\\Seen"), "PEEK must not set \\Seen: {out}");
        // n:* past the last UID still returns the last message.
        let out = h.run(&mut s, "6 UID fetch 3:* (FLAGS)\r\n").await;
        assert_eq!(
            out,
            "* 2 FETCH (UID 2 FLAGS (\\Recent))\r\n6 OK UID FETCH completed\r\n"
        );
    }

    #[tokio::test]
    async fn body_fetch_sets_seen_and_is_byte_identical() {
        let h = Harness::new().await;
        let msg = message("one", "body one");
        h.deliver("INBOX", &msg).await;
        let mut s = h.selected("INBOX").await;
        let out = h.run(&mut s, "a FETCH 1 (BODY[])\r\n").await;
        assert_eq!(
            out,
            format!(
                "* 1 FETCH (BODY[] {{{}}}\r\n{msg} FLAGS (\\Seen \\Recent))\r\na OK FETCH completed\r\n",
                msg.len()
            )
        );
        let out = h
            .run(&mut s, "b FETCH 1 (BODY.PEEK[TEXT]<0.4> RFC822.SIZE)\r\n")
            .await;
        assert_eq!(
            out,
            format!(
                "* 1 FETCH (BODY[TEXT]<0> {{4}}\r\nbody RFC822.SIZE {})\r\nb OK FETCH completed\r\n",
                msg.len()
            )
        );
    }

    #[tokio::test]
    async fn nested_parts_and_bodystructure() {
        let h = Harness::new().await;
        h.deliver("INBOX", std::str::from_utf8(NESTED).unwrap())
            .await;
        let mut s = h.selected("INBOX").await;
        let out = h.run(&mut s, "a FETCH 1 (BODY.PEEK[2.1] BODY.PEEK[2.HEADER.FIELDS (Subject)] BODY.PEEK[3.MIME] BODY.PEEK[9])\r\n").await;
        assert!(out.contains("BODY[2.1] {10}\r\ninner text"), "{out}");
        assert!(
            out.contains("BODY[2.HEADER.FIELDS (Subject)] {18}\r\nSubject: inner\r\n\r\n"),
            "{out}"
        );
        assert!(out.contains("BODY[3.MIME] {"), "{out}");
        assert!(out.contains("BODY[9] NIL"), "{out}");
        let out = h
            .run(&mut s, "b FETCH 1 (BODYSTRUCTURE ENVELOPE)\r\n")
            .await;
        assert!(out.contains("BODYSTRUCTURE ((\"TEXT\" \"PLAIN\""), "{out}");
        assert!(
            out.contains("\"MIXED\" (\"BOUNDARY\" \"XX\") NIL NIL NIL) ENVELOPE (NIL \"outer\""),
            "{out}"
        );
    }

    #[tokio::test]
    async fn parse_results_are_cached_and_served_identically() {
        let h = Harness::new().await;
        let uid = h
            .deliver("INBOX", std::str::from_utf8(NESTED).unwrap())
            .await;
        let mut s = h.selected("INBOX").await;
        let user = h.user().await;
        assert!(user.cached("INBOX", &[uid]).await.unwrap().is_empty());
        let cmd = "a FETCH 1 (ENVELOPE BODY BODYSTRUCTURE)\r\n";
        let first = h.run(&mut s, cmd).await;
        let value = user.cached("INBOX", &[uid]).await.unwrap();
        let parsed = Parsed::decode(&value[&uid]).unwrap();
        assert_eq!(parsed, Parsed::compute(NESTED));
        let second = h.run(&mut s, cmd).await;
        assert_eq!(first, second);
        // Mixed with items that need the file, the answer is the same as well.
        let out = h
            .run(&mut s, "b FETCH 1 (BODYSTRUCTURE BODY.PEEK[2.1])\r\n")
            .await;
        assert!(out.contains("BODY[2.1] {10}\r\ninner text"), "{out}");
        assert!(
            first.contains(std::str::from_utf8(&parsed.bodystructure).unwrap())
                && out.contains(std::str::from_utf8(&parsed.bodystructure).unwrap()),
            "{out}"
        );
    }

    #[tokio::test]
    async fn whole_message_chunks_read_only_their_part() {
        let h = Harness::new().await;
        let msg = message("chunks", "0123456789abcdefghij");
        h.deliver("INBOX", &msg).await;
        let n = msg.len();
        let mut s = h.selected("INBOX").await;
        let out = h.run(&mut s, "a FETCH 1 (UID BODY.PEEK[]<0.10>)\r\n").await;
        assert!(
            out.contains(&format!("BODY[]<0> {{10}}\r\n{}", &msg[..10])),
            "{out}"
        );
        let tail = n - 8;
        let out = h
            .run(&mut s, &format!("b FETCH 1 (BODY.PEEK[]<{tail}.100>)\r\n"))
            .await;
        assert!(
            out.contains(&format!("BODY[]<{tail}> {{8}}\r\n{}", &msg[tail..])),
            "{out}"
        );
        let out = h
            .run(
                &mut s,
                &format!("c FETCH 1 (BODY.PEEK[]<{}.5>)\r\n", n + 10),
            )
            .await;
        assert!(
            out.contains(&format!("BODY[]<{}> {{0}}\r\n", n + 10)),
            "{out}"
        );
        assert!(!out.contains("\\Seen"), "{out}");
        // Without PEEK the chunk marks the message read, as a whole fetch does.
        let out = h.run(&mut s, "d FETCH 1 (BODY[]<4.6>)\r\n").await;
        assert!(out.contains("\\Seen"), "{out}");
        assert!(
            out.contains(&format!("BODY[]<4> {{6}}\r\n{}", &msg[4..10])),
            "{out}"
        );
    }

    #[tokio::test]
    async fn macros_and_rfc822_items() {
        let h = Harness::new().await;
        let msg = message("one", "body");
        h.deliver("INBOX", &msg).await;
        let mut s = h.selected("INBOX").await;
        let out = h.run(&mut s, "a FETCH 1 ALL\r\n").await;
        assert!(
            out.starts_with("* 1 FETCH (FLAGS (\\Recent) INTERNALDATE \""),
            "{out}"
        );
        assert!(
            out.contains(" ENVELOPE (\"Mon, 1 Jun 2020 10:00:00 +0000\" \"one\""),
            "{out}"
        );
        let out = h.run(&mut s, "b FETCH 1 (RFC822.HEADER)\r\n").await;
        assert!(!out.contains("\\Seen"), "{out}");
        let out = h.run(&mut s, "c FETCH 1 (RFC822.TEXT)\r\n").await;
        assert!(
            out.contains("RFC822.TEXT {6}\r\nbody\r\n FLAGS (\\Seen \\Recent)"),
            "{out}"
        );
        assert!(
            h.run(&mut s, "d FETCH 2 FLAGS\r\n")
                .await
                .starts_with("d BAD")
        );
    }

    #[tokio::test]
    async fn changedsince_and_vanished() {
        let h = Harness::new().await;
        for i in 1..=3 {
            h.deliver("INBOX", &message(&format!("m{i}"), "x")).await;
        }
        let mut s = h.session(true);
        h.login(&mut s).await;
        h.run(&mut s, "a ENABLE QRESYNC\r\n").await;
        let out = h.run(&mut s, "b SELECT INBOX\r\n").await;
        let modseq: u64 = out
            .split("HIGHESTMODSEQ ")
            .nth(1)
            .unwrap()
            .split(']')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        h.run(&mut s, "c STORE 1 +FLAGS.SILENT (\\Deleted)\r\nd EXPUNGE\r\ne STORE 2 +FLAGS.SILENT (\\Seen)\r\n").await;
        let out = h
            .run(
                &mut s,
                &format!("f UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)\r\n"),
            )
            .await;
        assert!(out.starts_with("* VANISHED (EARLIER) 1\r\n"), "{out}");
        assert!(
            out.contains("* 2 FETCH (UID 3 FLAGS (\\Seen \\Recent) MODSEQ ("),
            "{out}"
        );
        assert!(!out.contains("UID 2 FLAGS"), "{out}");
    }
}
