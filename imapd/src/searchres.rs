//! SEARCHRES (RFC 5182, part of IMAP4rev2): `SEARCH RETURN (SAVE)` keeps the result in the
//! session, and `$` stands for it in later commands.
//!
//! imap-codec does not know `$`, so before a line is parsed each `$` in a place where a
//! sequence set may stand is replaced by the saved messages: sequence numbers, or UIDs in
//! UID commands and after the UID search key. An empty result becomes a UID set that
//! matches nothing (no UID is 4294967295 in practice), so `FETCH $` then returns nothing.

use std::borrow::Cow;

use crate::sequence;
use crate::session::Selected;

/// Stands for "no message" in a UID set.
const NO_UID: &str = "4294967295";

/// Commands whose first argument is a sequence set.
const SET_FIRST: [&[u8]; 5] = [b"FETCH", b"STORE", b"COPY", b"MOVE", b"EXPUNGE"];
/// Commands whose arguments hold search keys.
const SEARCHING: [&[u8]; 4] = [b"SEARCH", b"SORT", b"THREAD", b"ESORT"];

/// A token of a command line, as [`tokens`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tok {
    pub start: usize,
    pub end: usize,
    /// An atom-like word (not a quoted string, literal or parenthesis).
    pub word: bool,
}

/// The tokens of a line: words (a `[...]` part, as in `BODY[HEADER.FIELDS (A)]`, stays in
/// its word), quoted strings and literals (not words); parentheses only separate. One
/// pass, linear in the line.
pub(crate) fn tokens(line: &[u8]) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut word_start: Option<usize> = None;
    let mut brackets = 0usize;
    let end_word = |out: &mut Vec<Tok>, word_start: &mut Option<usize>, at: usize| {
        if let Some(s) = word_start.take()
            && s < at
        {
            out.push(Tok {
                start: s,
                end: at,
                word: true,
            });
        }
    };
    while i < line.len() {
        let c = line[i];
        if brackets > 0 {
            match c {
                b'[' => brackets += 1,
                b']' => brackets -= 1,
                b'\r' | b'\n' => brackets = 0,
                _ => {}
            }
            i += 1;
            continue;
        }
        match c {
            b'"' => {
                end_word(&mut out, &mut word_start, i);
                let start = i;
                i += 1;
                while i < line.len() && line[i] != b'"' {
                    if line[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i = (i + 1).min(line.len());
                out.push(Tok {
                    start,
                    end: i,
                    word: false,
                });
            }
            b'{' => {
                // `{n}`, `{n+}` or `~{n}` then CRLF and n bytes.
                let digits = line[i + 1..]
                    .iter()
                    .take(20)
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                let mut j = i + 1 + digits;
                if matches!(line.get(j), Some(b'+' | b'-')) {
                    j += 1;
                }
                let n = std::str::from_utf8(&line[i + 1..i + 1 + digits])
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok());
                match (line.get(j), n) {
                    (Some(b'}'), Some(n)) if line.get(j + 1..j + 3) == Some(b"\r\n") => {
                        let start = word_start.take().unwrap_or(i);
                        i = (j + 3).saturating_add(n).min(line.len());
                        out.push(Tok {
                            start,
                            end: i,
                            word: false,
                        });
                    }
                    _ => {
                        word_start.get_or_insert(i);
                        i += 1;
                    }
                }
            }
            b' ' | b'(' | b')' | b'\r' | b'\n' => {
                end_word(&mut out, &mut word_start, i);
                i += 1;
            }
            b'[' => {
                word_start.get_or_insert(i);
                brackets = 1;
                i += 1;
            }
            _ => {
                word_start.get_or_insert(i);
                i += 1;
            }
        }
    }
    end_word(&mut out, &mut word_start, line.len());
    out
}

/// The `$` words of a line, with the word before each (empty after a string).
fn dollars(line: &[u8]) -> Vec<(usize, &[u8])> {
    let toks = tokens(line);
    let mut out = Vec::new();
    for (k, t) in toks.iter().enumerate() {
        if t.word && &line[t.start..t.end] == b"$" {
            let prev = match k.checked_sub(1).map(|p| toks[p]) {
                Some(p) if p.word => &line[p.start..p.end],
                _ => b"".as_slice(),
            };
            out.push((t.start, prev));
        }
    }
    out
}

/// A command's name (upper case), whether UID came before it, and where it ends.
pub(crate) struct Head {
    pub uid: bool,
    pub name: Vec<u8>,
    pub name_end: usize,
}

/// Reads the tag and command name of a line.
pub(crate) fn head(line: &[u8]) -> Option<Head> {
    let mut words = line.split(|&b| b == b' ' || b == b'\r' || b == b'\n');
    let tag = words.next()?;
    let mut name = words.next().filter(|w| w.len() <= 16)?.to_ascii_uppercase();
    let mut uid = false;
    let mut name_end = (tag.len() + 1 + name.len()).min(line.len());
    if name == b"UID" {
        uid = true;
        name = words.next().filter(|w| w.len() <= 16)?.to_ascii_uppercase();
        name_end = (name_end + 1 + name.len()).min(line.len());
    }
    Some(Head {
        uid,
        name,
        name_end,
    })
}

/// The line with every `$` replaced, or `None` when it has none to replace.
pub(crate) fn substitute<'a>(line: &'a [u8], sel: Option<&Selected>) -> Option<Cow<'a, [u8]>> {
    if !line.contains(&b'$') {
        return None;
    }
    let sel = sel?;
    let Head {
        uid,
        name,
        name_end,
    } = head(line)?;
    let first_arg = name_end + 1;
    let searching = SEARCHING.contains(&name.as_slice());
    let set_first = SET_FIRST.contains(&name.as_slice());
    if !searching && !set_first {
        return None;
    }
    let uids: Vec<u32> = sel
        .saved_search
        .iter()
        .copied()
        .filter(|u| sel.index_of(*u).is_some())
        .collect();
    let uid_set = if uids.is_empty() {
        NO_UID.to_string()
    } else {
        sequence::format(&uids)
    };
    let mut edits: Vec<(usize, String)> = Vec::new();
    let mut to_uid_command = false;
    for (at, prev) in dollars(line) {
        if set_first && at == first_arg {
            if uid {
                edits.push((at, uid_set.clone()));
            } else if uids.is_empty() {
                to_uid_command = true;
                edits.push((at, NO_UID.to_string()));
            } else {
                let seqs: Vec<u32> = uids
                    .iter()
                    .filter_map(|u| sel.index_of(*u).map(|i| i as u32 + 1))
                    .collect();
                edits.push((at, sequence::format(&seqs)));
            }
        } else if searching
            && !prev.eq_ignore_ascii_case(b"KEYWORD")
            && !prev.eq_ignore_ascii_case(b"UNKEYWORD")
        {
            if prev.eq_ignore_ascii_case(b"UID") {
                edits.push((at, uid_set.clone()));
            } else {
                edits.push((at, format!("UID {uid_set}")));
            }
        }
    }
    if edits.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(line.len() + 64);
    let mut pos = 0;
    for (at, text) in edits {
        if to_uid_command && pos == 0 {
            // `FETCH $` with nothing saved: `UID FETCH <no uid>`.
            let cmd_at = name_end - name.len();
            out.extend_from_slice(&line[..cmd_at]);
            out.extend_from_slice(b"UID ");
            pos = cmd_at;
        }
        out.extend_from_slice(&line[pos..at]);
        out.extend_from_slice(text.as_bytes());
        pos = at + 1;
    }
    out.extend_from_slice(&line[pos..]);
    Some(Cow::Owned(out))
}

/// What `SEARCH RETURN (SAVE ...)` keeps: with only MIN and/or MAX beside SAVE, just those
/// messages; otherwise every match (RFC 5182 section 2.4). `found` is ascending.
pub(crate) fn to_save(found_uids: &[u32], min: bool, max: bool, all_or_count: bool) -> Vec<u32> {
    if all_or_count || (!min && !max) {
        return found_uids.to_vec();
    }
    let mut v = Vec::new();
    if min && let Some(&u) = found_uids.first() {
        v.push(u);
    }
    if max
        && let Some(&u) = found_uids.last()
        && !v.contains(&u)
    {
        v.push(u);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selected(uids: &[u32], saved: &[u32]) -> Selected {
        Selected {
            name: "INBOX".into(),
            read_only: false,
            uidvalidity: 1,
            uidnext: 100,
            highest_modseq: 1,
            msgs: uids
                .iter()
                .map(|&uid| hermod_common::store::MessageMeta {
                    uid,
                    flags: Default::default(),
                    keywords: Vec::new(),
                    modseq: 1,
                    size: 1,
                    internal_date: 0,
                    recent: false,
                })
                .collect(),
            vanished: Vec::new(),
            keywords: Default::default(),
            checked: None,
            saved_search: saved.to_vec(),
            contexts: Default::default(),
        }
    }

    fn sub(line: &str, sel: &Selected) -> Option<String> {
        substitute(line.as_bytes(), Some(sel)).map(|c| String::from_utf8(c.into_owned()).unwrap())
    }

    #[test]
    fn dollar_becomes_the_saved_messages() {
        let sel = selected(&[3, 5, 8, 9], &[5, 8, 9, 12]);
        assert_eq!(
            sub("a FETCH $ (FLAGS)\r\n", &sel).unwrap(),
            "a FETCH 2:4 (FLAGS)\r\n"
        );
        assert_eq!(
            sub("a UID fetch $ FLAGS\r\n", &sel).unwrap(),
            "a UID fetch 5,8:9 FLAGS\r\n"
        );
        assert_eq!(
            sub("a SEARCH OR $ (UID $) KEYWORD $\r\n", &sel).unwrap(),
            "a SEARCH OR UID 5,8:9 (UID 5,8:9) KEYWORD $\r\n"
        );
        assert_eq!(sub("a STORE 1 +FLAGS ($)\r\n", &sel), None);
        assert_eq!(sub("a SEARCH SUBJECT \"$\"\r\n", &sel), None);
        assert_eq!(sub("a SEARCH SUBJECT {1}\r\n$\r\n", &sel), None);
        assert_eq!(sub("a SEARCH $Forwarded\r\n", &sel), None);
    }

    #[test]
    fn empty_result_matches_nothing() {
        let sel = selected(&[3], &[]);
        assert_eq!(
            sub("a FETCH $ (FLAGS)\r\n", &sel).unwrap(),
            "a UID FETCH 4294967295 (FLAGS)\r\n"
        );
        assert_eq!(
            sub("a MOVE $ Trash\r\n", &sel).unwrap(),
            "a UID MOVE 4294967295 Trash\r\n"
        );
        assert_eq!(
            sub("a SEARCH $\r\n", &sel).unwrap(),
            "a SEARCH UID 4294967295\r\n"
        );
    }

    #[test]
    fn hostile_literals_are_linear_and_safe() {
        let sel = selected(&[1], &[1]);
        // Not a literal (too long a number): read as words, without a panic.
        assert!(sub("a SEARCH {99999999999999999999}\r\n$", &sel).is_some());
        assert_eq!(sub("a SEARCH {5}\r\n$", &sel), None);
        let long = format!("a SEARCH {}$\r\n", "{1".repeat(10_000));
        assert_eq!(sub(&long, &sel), None);
    }
}
