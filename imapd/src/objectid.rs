//! OBJECTID (RFC 8474) and SAVEDATE (RFC 8514): FETCH EMAILID, THREADID and SAVEDATE,
//! STATUS MAILBOXID, and the SEARCH keys EMAILID, THREADID, SAVEDBEFORE, SAVEDON,
//! SAVEDSINCE and SAVEDATESUPPORTED. The ids and dates are the store's (`MessageObject`).
//!
//! imap-codec knows none of these, so the line is rewritten before it parses it: a FETCH
//! item becomes `UID` (remembered in [`Pending`] and written by FETCH at the end of each
//! response), a STATUS item a placeholder item the client did not ask for, and a SEARCH
//! key `UID <the messages it matches>`, computed here from the store. THREADID is always
//! NIL: hermod keeps no thread ids (RFC 8474 section 5.2 allows that), so SEARCH THREADID
//! matches nothing.

use std::collections::HashMap;

use hermod_common::store::{MessageObject, Uid};
use imap_codec::imap_types::status::StatusDataItemName;

use crate::date;
use crate::searchres::{Tok, head, tokens};
use crate::session::Session;
use crate::wire;

/// An extra FETCH item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FetchItem {
    SaveDate,
    EmailId,
    ThreadId,
}

/// What the rewritten line asks for beyond what imap-codec parsed; reset for each command.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pending {
    /// FETCH: the extra items, and whether the `UID` put in their place is ours only.
    pub fetch: Option<(Vec<FetchItem>, bool)>,
    /// STATUS MAILBOXID: the item standing in for it (not to be reported), if any.
    pub status_placeholder: Option<StatusDataItemName>,
    /// STATUS or LIST-STATUS asked for MAILBOXID.
    pub status_mailboxid: bool,
}

/// Search keys taking a string argument: a word after them is their argument, not a key.
const STRING_KEYS: [&[u8]; 10] = [
    b"BCC",
    b"BODY",
    b"CC",
    b"FROM",
    b"SUBJECT",
    b"TEXT",
    b"TO",
    b"KEYWORD",
    b"UNKEYWORD",
    b"HEADER",
];

/// Stands for "no message" in a UID set.
const NO_UID: &str = "4294967295";

/// Whether `s` is an objectid (RFC 8474: 1 to 255 of ALPHA, DIGIT, `_` and `-`).
fn is_objectid(s: &[u8]) -> bool {
    (1..=255).contains(&s.len())
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A SEARCH date (`1-Feb-2024`, maybe quoted) as a day number.
fn search_day(arg: &[u8]) -> Option<i64> {
    let arg = arg
        .strip_prefix(b"\"")
        .and_then(|a| a.strip_suffix(b"\""))
        .unwrap_or(arg);
    let text = std::str::from_utf8(arg).ok()?;
    let mut parts = text.split('-');
    let day: u32 = parts.next()?.parse().ok()?;
    let month = parts.next()?;
    let year: i64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=31).contains(&day) || !(1..=9999).contains(&year) {
        return None;
    }
    let month = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ]
    .iter()
    .position(|m| m.eq_ignore_ascii_case(month))? as u32
        + 1;
    Some(date::days_from_civil(year, month, day))
}

/// Writes one extra FETCH item of a message.
pub(crate) fn write_fetch(b: &mut Vec<u8>, item: FetchItem, obj: Option<&MessageObject>) {
    match item {
        FetchItem::SaveDate => {
            b.extend_from_slice(b"SAVEDATE ");
            match obj.and_then(|o| o.save_date) {
                Some(t) => wire::string(b, date::format_internal_date(t).as_bytes()),
                None => b.extend_from_slice(b"NIL"),
            }
        }
        FetchItem::EmailId => {
            b.extend_from_slice(b"EMAILID (");
            if let Some(o) = obj {
                b.extend_from_slice(o.email_id.as_bytes());
            }
            b.push(b')');
        }
        FetchItem::ThreadId => b.extend_from_slice(b"THREADID NIL"),
    }
}

/// One replacement in a line.
struct Edit {
    start: usize,
    end: usize,
    text: String,
}

fn apply(line: &[u8], mut edits: Vec<Edit>) -> Vec<u8> {
    edits.sort_by_key(|e| e.start);
    let mut out = Vec::with_capacity(line.len() + 64);
    let mut pos = 0;
    for e in edits {
        if e.start < pos {
            continue;
        }
        out.extend_from_slice(&line[pos..e.start]);
        out.extend_from_slice(e.text.as_bytes());
        pos = e.end;
    }
    out.extend_from_slice(&line[pos..]);
    out
}

fn word<'a>(line: &'a [u8], t: &Tok) -> &'a [u8] {
    &line[t.start..t.end]
}

impl Session {
    /// Rewrites a command using OBJECTID or SAVEDATE syntax for imap-codec, noting what it
    /// took out in `self.objectid`. `None`: nothing to rewrite.
    pub(crate) async fn rewrite_objectid(&mut self, line: &[u8]) -> Option<Vec<u8>> {
        self.objectid = Pending::default();
        let h = head(line)?;
        match h.name.as_slice() {
            b"FETCH" => self.rewrite_fetch(line, h.name_end),
            b"STATUS" if !h.uid => self.rewrite_status(line, h.name_end),
            b"SEARCH" | b"SORT" | b"THREAD" | b"ESORT" => {
                self.rewrite_search(line, h.name_end).await
            }
            _ => None,
        }
    }

    fn rewrite_fetch(&mut self, line: &[u8], name_end: usize) -> Option<Vec<u8>> {
        let toks: Vec<Tok> = tokens(line)
            .into_iter()
            .filter(|t| t.start > name_end)
            .skip(1)
            .collect();
        let mut items = Vec::new();
        let mut edits = Vec::new();
        let mut asked_uid = false;
        for t in toks.iter().filter(|t| t.word) {
            let w = word(line, t).to_ascii_uppercase();
            let item = match w.as_slice() {
                b"SAVEDATE" => FetchItem::SaveDate,
                b"EMAILID" => FetchItem::EmailId,
                b"THREADID" => FetchItem::ThreadId,
                b"UID" => {
                    asked_uid = true;
                    continue;
                }
                _ => continue,
            };
            items.push(item);
            edits.push(Edit {
                start: t.start,
                end: t.end,
                text: "UID".into(),
            });
        }
        if items.is_empty() {
            return None;
        }
        self.objectid.fetch = Some((items, !asked_uid));
        Some(apply(line, edits))
    }

    fn rewrite_status(&mut self, line: &[u8], name_end: usize) -> Option<Vec<u8>> {
        let toks: Vec<Tok> = tokens(line)
            .into_iter()
            .filter(|t| t.start > name_end)
            .skip(1)
            .collect();
        let asked: Vec<Vec<u8>> = toks
            .iter()
            .filter(|t| t.word)
            .map(|t| word(line, t).to_ascii_uppercase())
            .collect();
        let at = toks
            .iter()
            .find(|t| t.word && word(line, t).eq_ignore_ascii_case(b"MAILBOXID"))?;
        let (placeholder, name) = [
            (StatusDataItemName::UidValidity, "UIDVALIDITY"),
            (StatusDataItemName::Messages, "MESSAGES"),
            (StatusDataItemName::UidNext, "UIDNEXT"),
            (StatusDataItemName::Unseen, "UNSEEN"),
            (StatusDataItemName::Size, "SIZE"),
            (StatusDataItemName::Deleted, "DELETED"),
            (StatusDataItemName::Recent, "RECENT"),
        ]
        .into_iter()
        .find(|(_, n)| !asked.iter().any(|a| a == n.as_bytes()))?;
        let mut edits = vec![Edit {
            start: at.start,
            end: at.end,
            text: name.into(),
        }];
        // A second MAILBOXID adds nothing.
        for t in toks.iter().filter(|t| {
            t.word && t.start != at.start && word(line, t).eq_ignore_ascii_case(b"MAILBOXID")
        }) {
            edits.push(Edit {
                start: t.start,
                end: t.end,
                text: name.into(),
            });
        }
        self.objectid.status_placeholder = Some(placeholder);
        self.objectid.status_mailboxid = true;
        Some(apply(line, edits))
    }

    async fn rewrite_search(&mut self, line: &[u8], name_end: usize) -> Option<Vec<u8>> {
        let toks: Vec<Tok> = tokens(line)
            .into_iter()
            .filter(|t| t.start > name_end)
            .collect();
        // (token index, key) of each key found; the argument is the next token.
        let mut found = Vec::new();
        for (k, t) in toks.iter().enumerate() {
            if !t.word {
                continue;
            }
            let prev = |n: usize| {
                k.checked_sub(n)
                    .map(|p| toks[p])
                    .filter(|p| p.word)
                    .map(|p| word(line, &p).to_ascii_uppercase())
            };
            if prev(1).is_some_and(|p| STRING_KEYS.contains(&p.as_slice()))
                || prev(2).is_some_and(|p| p == b"HEADER")
            {
                continue;
            }
            let w = word(line, t).to_ascii_uppercase();
            if matches!(
                w.as_slice(),
                b"SAVEDBEFORE"
                    | b"SAVEDON"
                    | b"SAVEDSINCE"
                    | b"SAVEDATESUPPORTED"
                    | b"EMAILID"
                    | b"THREADID"
            ) {
                found.push((k, w));
            }
        }
        if found.is_empty() {
            return None;
        }
        let (user, sel) = (self.user()?, self.selected.as_ref()?);
        let objects: HashMap<Uid, MessageObject> = match user.message_objects(&sel.name, None).await
        {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "message objects unavailable for SEARCH");
                HashMap::new()
            }
        };
        let mut edits = Vec::new();
        for (k, key) in found {
            let t = toks[k];
            if key == b"SAVEDATESUPPORTED" {
                // Every mailbox keeps save dates.
                edits.push(Edit {
                    start: t.start,
                    end: t.end,
                    text: "ALL".into(),
                });
                continue;
            }
            let Some(arg) = toks.get(k + 1) else {
                continue;
            };
            let value = word(line, arg);
            let matching: Vec<Uid> = match key.as_slice() {
                b"EMAILID" if is_objectid(value) => sel
                    .msgs
                    .iter()
                    .filter(|m| {
                        objects
                            .get(&m.uid)
                            .is_some_and(|o| o.email_id.as_bytes() == value)
                    })
                    .map(|m| m.uid)
                    .collect(),
                b"THREADID" if is_objectid(value) => Vec::new(),
                b"SAVEDBEFORE" | b"SAVEDON" | b"SAVEDSINCE" => {
                    let Some(want) = search_day(value) else {
                        continue;
                    };
                    sel.msgs
                        .iter()
                        .filter(|m| {
                            // No save date (older than the record): the internal date.
                            let saved = objects
                                .get(&m.uid)
                                .and_then(|o| o.save_date)
                                .unwrap_or(m.internal_date);
                            let day = date::utc_day(saved);
                            match key.as_slice() {
                                b"SAVEDBEFORE" => day < want,
                                b"SAVEDON" => day == want,
                                _ => day >= want,
                            }
                        })
                        .map(|m| m.uid)
                        .collect()
                }
                // Not an objectid: left for imap-codec to refuse.
                _ => continue,
            };
            let set = if matching.is_empty() {
                NO_UID.to_string()
            } else {
                crate::sequence::format(&matching)
            };
            edits.push(Edit {
                start: t.start,
                end: arg.end,
                text: format!("UID {set}"),
            });
        }
        if edits.is_empty() {
            return None;
        }
        Some(apply(line, edits))
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{Harness, message};

    fn between<'a>(out: &'a str, start: &str, end: char) -> &'a str {
        let from = out
            .find(start)
            .unwrap_or_else(|| panic!("{start} in {out}"))
            + start.len();
        let rest = &out[from..];
        &rest[..rest.find(end).unwrap()]
    }

    #[tokio::test]
    async fn fetch_ids_and_save_date() {
        let h = Harness::new().await;
        h.deliver("INBOX", &message("one", "1")).await;
        h.deliver("INBOX", &message("two", "2")).await;
        let mut s = h.selected("INBOX").await;
        let out = h
            .run(&mut s, "a FETCH 1:2 (FLAGS EMAILID THREADID SAVEDATE)\r\n")
            .await;
        assert!(
            out.contains("* 1 FETCH (FLAGS (\\Recent) EMAILID (E"),
            "{out}"
        );
        assert!(out.contains(" THREADID NIL SAVEDATE \""), "{out}");
        assert!(!out.contains("UID"), "UID was not asked for: {out}");
        let first = between(&out, "EMAILID (", ')').to_string();
        let out = h.run(&mut s, "b UID FETCH 1 EMAILID\r\n").await;
        assert_eq!(
            out,
            format!("* 1 FETCH (UID 1 EMAILID ({first}))\r\nb OK UID FETCH completed\r\n")
        );
        // COPY keeps the EMAILID; the copy has its own MAILBOXID in STATUS.
        h.run(&mut s, "c CREATE Other\r\nd COPY 1 Other\r\n").await;
        let out = h
            .run(&mut s, "e STATUS Other (MESSAGES MAILBOXID)\r\n")
            .await;
        assert!(
            out.starts_with("* STATUS Other (MESSAGES 1 MAILBOXID (M"),
            "{out}"
        );
        let other_id = between(&out, "MAILBOXID (", ')').to_string();
        let out = h.run(&mut s, "f SELECT Other\r\n").await;
        assert!(
            out.contains(&format!("* OK [MAILBOXID ({other_id})]")),
            "{out}"
        );
        let out = h.run(&mut s, "g FETCH 1 (EMAILID)\r\n").await;
        assert!(out.contains(&format!("EMAILID ({first})")), "{out}");
        let out = h.run(&mut s, "h CREATE Third\r\n").await;
        assert!(out.starts_with("h OK [MAILBOXID (M"), "{out}");
        // LIST-STATUS with MAILBOXID, alone or with other items.
        let out = h
            .run(&mut s, "i LIST \"\" Other RETURN (STATUS (MAILBOXID))\r\n")
            .await;
        assert!(
            out.contains(&format!("* STATUS Other (MAILBOXID ({other_id}))\r\n")),
            "{out}"
        );
        let out = h
            .run(
                &mut s,
                "j LIST \"\" Other RETURN (STATUS (MAILBOXID UIDVALIDITY))\r\n",
            )
            .await;
        assert!(out.contains("* STATUS Other (UIDVALIDITY "), "{out}");
        assert!(
            out.contains(&format!(" MAILBOXID ({other_id}))\r\n")),
            "{out}"
        );
    }

    #[tokio::test]
    async fn search_by_ids_and_save_date() {
        let h = Harness::new().await;
        h.deliver("INBOX", &message("one", "1")).await;
        h.deliver("INBOX", &message("two", "2")).await;
        let mut s = h.selected("INBOX").await;
        let out = h.run(&mut s, "a FETCH 2 EMAILID\r\n").await;
        let id = between(&out, "EMAILID (", ')').to_string();
        let out = h.run(&mut s, &format!("b SEARCH EMAILID {id}\r\n")).await;
        assert_eq!(out, "* SEARCH 2\r\nb OK SEARCH completed\r\n");
        let out = h.run(&mut s, "c SEARCH THREADID T1\r\n").await;
        assert_eq!(out, "* SEARCH\r\nc OK SEARCH completed\r\n");
        let out = h
            .run(
                &mut s,
                "d SEARCH SAVEDATESUPPORTED SAVEDSINCE 1-Jan-2000\r\n",
            )
            .await;
        assert_eq!(out, "* SEARCH 1 2\r\nd OK SEARCH completed\r\n");
        let out = h
            .run(&mut s, "e SEARCH SAVEDBEFORE \"1-Jan-2000\"\r\n")
            .await;
        assert_eq!(out, "* SEARCH\r\ne OK SEARCH completed\r\n");
        let today = crate::date::format_internal_date(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64,
        );
        let day = today.split(' ').next().unwrap();
        let out = h
            .run(&mut s, &format!("f UID SEARCH NOT SAVEDON {day}\r\n"))
            .await;
        assert_eq!(out, "* SEARCH\r\nf OK UID SEARCH completed\r\n");
        // A key's name as a string argument is not a key.
        let out = h.run(&mut s, "g SEARCH SUBJECT EMAILID\r\n").await;
        assert_eq!(out, "* SEARCH\r\ng OK SEARCH completed\r\n");
        let out = h.run(&mut s, "h SEARCH EMAILID a.b\r\n").await;
        assert!(out.starts_with("h BAD"), "{out}");
    }
}
