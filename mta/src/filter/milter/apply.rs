//! The changes of a milter applied to the message: header fields added, inserted, changed or
//! deleted (by occurrence, as libmilter counts them) and the body replaced. Values are checked
//! and re-folded like every filter's ([`crate::filter::headers::field`]).

use super::client::Change;
use crate::auth::results::header_fields;
use crate::filter::headers::{MAX_EDITS, field};

/// `message` with the header changes of `changes` and, if given, the new body.
pub fn apply(message: &[u8], changes: &[Change], new_body: Option<&[u8]>) -> Vec<u8> {
    let located = header_fields(message);
    let body_start = located.last().map_or(0, |f| f.end).min(message.len());
    let mut fields: Vec<Vec<u8>> = located
        .iter()
        .map(|f| message[f.start..f.end].to_vec())
        .collect();
    let name_is = |field: &[u8], name: &str| {
        field.len() > name.len()
            && field[..name.len()].eq_ignore_ascii_case(name.as_bytes())
            && field[name.len()] == b':'
    };
    for change in changes.iter().take(MAX_EDITS) {
        match change {
            Change::AddHeader { name, value } => fields.extend(field(name, value)),
            Change::InsertHeader { index, name, value } => {
                if let Some(f) = field(name, value) {
                    let at = usize::try_from(*index)
                        .unwrap_or(usize::MAX)
                        .min(fields.len());
                    fields.insert(at, f);
                }
            }
            Change::ChangeHeader { index, name, value } => {
                // The index-th field of that name (1-based); an empty value deletes it.
                let position = fields
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| name_is(f, name))
                    .nth(usize::try_from(*index).unwrap_or(usize::MAX).max(1) - 1)
                    .map(|(i, _)| i);
                if let Some(i) = position {
                    match field(name, value) {
                        Some(f) if !value.trim().is_empty() => fields[i] = f,
                        _ => {
                            fields.remove(i);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let rest = &message[body_start..];
    let mut out: Vec<u8> = fields.concat();
    match new_body {
        Some(body) => {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(body);
        }
        None => out.extend_from_slice(rest),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_changes_count_occurrences_and_the_body_can_be_replaced() {
        let msg = b"Received: a\r\nSubject: one\r\nX-Tag: 1\r\nX-Tag: 2\r\n\r\nbody\r\n";
        let changes = vec![
            Change::AddHeader {
                name: "X-Added".into(),
                value: "yes".into(),
            },
            Change::InsertHeader {
                index: 0,
                name: "X-First".into(),
                value: "top".into(),
            },
            Change::ChangeHeader {
                index: 2,
                name: "x-tag".into(),
                value: "two".into(),
            },
            Change::ChangeHeader {
                index: 1,
                name: "Subject".into(),
                value: "".into(),
            },
            Change::ChangeHeader {
                index: 9,
                name: "X-Tag".into(),
                value: "none".into(),
            },
        ];
        let out = String::from_utf8(apply(msg, &changes, None)).unwrap();
        assert_eq!(
            out,
            "X-First: top\r\nReceived: a\r\nX-Tag: 1\r\nx-tag: two\r\nX-Added: yes\r\n\r\nbody\r\n"
        );
        let out = apply(msg, &[], Some(b"new body\r\n"));
        assert_eq!(
            out,
            b"Received: a\r\nSubject: one\r\nX-Tag: 1\r\nX-Tag: 2\r\n\r\nnew body\r\n".to_vec()
        );
    }
}
