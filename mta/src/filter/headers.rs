//! Header edits a filter asks for: fields to add (below our own trace fields), fields to
//! remove, a new Subject. The filter is a separate program and its words are checked like a
//! client's: names must be field names, values lose control characters and are re-folded.

use crate::auth::results::header_fields;

/// Longest field name and value taken from a filter; more fields than [`MAX_EDITS`] are
/// dropped (rspamd adds a handful).
const MAX_NAME: usize = 76;
const MAX_VALUE: usize = 8 * 1024;
pub const MAX_EDITS: usize = 64;

/// The edits of one verdict.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HeaderEdits {
    /// Fields to add, in order: name and value (unfolded, possibly with line breaks).
    pub add: Vec<(String, String)>,
    /// Fields to remove: name and which occurrence (0 all, 1 the first, -1 the last).
    pub remove: Vec<(String, i64)>,
    /// The new Subject (rspamd's `rewrite subject`).
    pub subject: Option<String>,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty() && self.subject.is_none()
    }
}

/// A field name as RFC 5322 allows it (printable ASCII but colon), not too long.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// `Name: value\r\n` with the value's line breaks turned into folds and control characters
/// dropped, or None for a bad name or an empty value.
pub fn field(name: &str, value: &str) -> Option<Vec<u8>> {
    if !valid_name(name) {
        return None;
    }
    let mut out = format!("{name}:").into_bytes();
    let mut any = false;
    for line in value.split('\n') {
        let line = line.trim_matches(|c: char| c.is_whitespace());
        if line.is_empty() {
            continue;
        }
        out.extend_from_slice(if any { &b"\r\n\t"[..] } else { &b" "[..] });
        out.extend(
            line.bytes()
                .filter(|&b| b == b'\t' || b >= 0x20 && b != 0x7f)
                .take(MAX_VALUE),
        );
        any = true;
    }
    if !any {
        return None;
    }
    out.extend_from_slice(b"\r\n");
    Some(out)
}

/// Applies `edits` to `message`; `added` (already formatted fields, e.g. our quarantine
/// mark) goes in with the filter's own fields, just below the first `trace_len` bytes.
/// Linear in the header section.
pub fn apply(message: &[u8], trace_len: usize, edits: &HeaderEdits, added: &[u8]) -> Vec<u8> {
    let trace_len = trace_len.min(message.len());
    let fields = header_fields(message);
    let name_of = |f: &crate::auth::results::Field| &message[f.start..f.name_end];
    // Which fields go: removals name an occurrence, counted among the fields of that name.
    let mut doomed = vec![false; fields.len()];
    let mut removals = edits.remove.clone();
    if edits.subject.is_some() {
        removals.push(("Subject".to_string(), 0));
    }
    for (name, index) in removals.iter().take(MAX_EDITS) {
        let matching: Vec<usize> = (0..fields.len())
            .filter(|&i| fields[i].start >= trace_len)
            .filter(|&i| name_of(&fields[i]).eq_ignore_ascii_case(name.as_bytes()))
            .collect();
        let chosen: Vec<usize> = match *index {
            0 => matching,
            n if n > 0 => usize::try_from(n - 1)
                .ok()
                .and_then(|i| matching.get(i).copied())
                .into_iter()
                .collect(),
            n => usize::try_from(n.unsigned_abs())
                .ok()
                .and_then(|back| matching.len().checked_sub(back))
                .and_then(|i| matching.get(i).copied())
                .into_iter()
                .collect(),
        };
        for i in chosen {
            doomed[i] = true;
        }
    }
    let mut new_fields: Vec<u8> = Vec::new();
    for (name, value) in edits.add.iter().take(MAX_EDITS) {
        match field(name, value) {
            Some(f) => new_fields.extend_from_slice(&f),
            None => tracing::debug!(name = %name.escape_debug(), "filter header not added"),
        }
    }
    if let Some(subject) = &edits.subject
        && let Some(f) = field("Subject", subject)
    {
        new_fields.extend_from_slice(&f);
    }
    new_fields.extend_from_slice(added);

    let mut out = Vec::with_capacity(message.len() + new_fields.len());
    out.extend_from_slice(&message[..trace_len]);
    out.extend_from_slice(&new_fields);
    let mut pos = trace_len;
    for (field, _) in fields.iter().zip(&doomed).filter(|(_, d)| **d) {
        out.extend_from_slice(&message[pos..field.start]);
        pos = field.end;
    }
    out.extend_from_slice(&message[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Received: ours\r\nX-Spam: yes\r\nSubject: hello\r\nX-Spam: again\r\n\tfolded\r\nX-Spam: third\r\n\r\nX-Spam: body\r\n";

    fn edits(remove: &[(&str, i64)]) -> HeaderEdits {
        HeaderEdits {
            remove: remove.iter().map(|(n, i)| (n.to_string(), *i)).collect(),
            ..HeaderEdits::default()
        }
    }

    #[test]
    fn removes_all_or_one_occurrence_in_the_header_only() {
        let trace = b"Received: ours\r\n".len();
        let all = apply(MSG, trace, &edits(&[("x-spam", 0)]), b"");
        assert_eq!(
            all,
            b"Received: ours\r\nSubject: hello\r\n\r\nX-Spam: body\r\n".to_vec()
        );
        let second = apply(MSG, trace, &edits(&[("X-Spam", 2)]), b"");
        assert_eq!(
            String::from_utf8(second).unwrap(),
            "Received: ours\r\nX-Spam: yes\r\nSubject: hello\r\nX-Spam: third\r\n\r\nX-Spam: body\r\n"
        );
        let last = apply(MSG, trace, &edits(&[("X-Spam", -1)]), b"");
        assert!(!String::from_utf8(last).unwrap().contains("third"));
        let none = apply(MSG, trace, &edits(&[("X-Spam", 9), ("X-Spam", -9)]), b"");
        assert_eq!(none, MSG.to_vec());
    }

    #[test]
    fn adds_below_the_trace_and_rewrites_the_subject() {
        let trace = b"Received: ours\r\n".len();
        let e = HeaderEdits {
            add: vec![
                (
                    "X-Spamd-Result".into(),
                    "default: False\n SYMBOL(1.0)\r\n".into(),
                ),
                ("Bad Name".into(), "x".into()),
                ("X-Empty".into(), " \n ".into()),
                ("X-Ctl".into(), "a\u{7}b\r\n\r\nInjected: yes".into()),
            ],
            remove: vec![],
            subject: Some("***SPAM*** hello".into()),
        };
        let out =
            String::from_utf8(apply(MSG, trace, &e, b"X-Hermod-Quarantine: spam\r\n")).unwrap();
        assert!(
            out.starts_with(
                "Received: ours\r\nX-Spamd-Result: default: False\r\n\tSYMBOL(1.0)\r\nX-Ctl: ab\r\n\tInjected: yes\r\nSubject: ***SPAM*** hello\r\nX-Hermod-Quarantine: spam\r\nX-Spam: yes\r\nX-Spam: again"
            ),
            "{out}"
        );
        assert_eq!(out.matches("Subject:").count(), 1, "{out}");
    }
}
