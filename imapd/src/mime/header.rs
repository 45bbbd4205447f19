//! Raw header blocks: where the header ends, and its fields as the exact bytes sent.
//!
//! BODY[HEADER.FIELDS (...)] must return the original bytes of each field, folding and all,
//! and Thunderbird asks for it on every new message; scanning the header block directly is
//! exact and avoids a full MIME parse.

// Shared with the store's full-text index, which must split messages the same way.
pub use hermod_common::search_text::{body_start, unfold};

/// One header field as it appears in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// The field name, without the colon.
    pub name: &'a [u8],
    /// The field's value: the bytes after the colon up to the final line break.
    pub value: &'a [u8],
    /// The whole field, continuation lines and final line break included.
    pub raw: &'a [u8],
}

/// Iterates over the fields of a header block (which may include its ending empty line).
pub fn fields(header: &[u8]) -> Fields<'_> {
    Fields { rest: header }
}

/// Iterator returned by [`fields`].
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        loop {
            let rest = self.rest;
            if rest.is_empty() || rest.starts_with(b"\r\n") || rest.starts_with(b"\n") {
                return None;
            }
            // The field runs to the first line break not followed by white space.
            let mut end = rest.len();
            let mut i = 0;
            while let Some(p) = rest[i..].iter().position(|&b| b == b'\n') {
                let nl = i + p + 1;
                if nl >= rest.len() || !matches!(rest[nl], b' ' | b'\t') {
                    end = nl;
                    break;
                }
                i = nl;
            }
            let raw = &rest[..end];
            self.rest = &rest[end..];
            let Some(colon) = raw.iter().position(|&b| b == b':') else {
                // A line that is no field (no colon): skip it, as other servers do.
                continue;
            };
            let name = trim_end(&raw[..colon]);
            let mut value = &raw[colon + 1..];
            value = value.strip_suffix(b"\n").unwrap_or(value);
            value = value.strip_suffix(b"\r").unwrap_or(value);
            return Some(Field { name, value, raw });
        }
    }
}

fn trim_end(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .rposition(|c| !matches!(c, b' ' | b'\t'))
        .map_or(0, |p| p + 1);
    &b[..n]
}

/// The value of the first field called `name` (case-insensitive), unfolded and trimmed.
pub fn first_value(header: &[u8], name: &str) -> Option<Vec<u8>> {
    fields(header)
        .find(|f| f.name.eq_ignore_ascii_case(name.as_bytes()))
        .map(|f| unfold(f.value))
}

/// BODY[HEADER.FIELDS (names)] or, with `not`, BODY[HEADER.FIELDS.NOT (names)]: the chosen
/// fields in their original order and form, then the empty line.
pub fn select_fields(header: &[u8], names: &[Vec<u8>], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields(header) {
        let listed = names.iter().any(|n| n.eq_ignore_ascii_case(f.name));
        if listed != not {
            out.extend_from_slice(f.raw);
            if !f.raw.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"From: Alice <a@example.org>\r\nSubject: a long\r\n  folded subject\r\nTo: b@example.org\r\nX-Empty:\r\n\r\nBody\r\n";

    #[test]
    fn finds_the_body() {
        assert_eq!(&MSG[body_start(MSG)..], b"Body\r\n");
        assert_eq!(body_start(b"\r\nonly body"), 2);
        assert_eq!(body_start(b"Subject: x\r\n"), 12);
        assert_eq!(body_start(b"Subject: x\n\nbody"), 12);
    }

    #[test]
    fn splits_fields_with_folding() {
        let names: Vec<_> = fields(MSG).map(|f| f.name.to_vec()).collect();
        assert_eq!(
            names,
            vec![
                b"From".to_vec(),
                b"Subject".to_vec(),
                b"To".to_vec(),
                b"X-Empty".to_vec()
            ]
        );
        let subject = fields(MSG).nth(1).unwrap();
        assert_eq!(subject.raw, b"Subject: a long\r\n  folded subject\r\n");
        assert_eq!(
            first_value(MSG, "subject").unwrap(),
            b"a long  folded subject"
        );
        assert_eq!(first_value(MSG, "x-empty").unwrap(), b"");
        assert_eq!(first_value(MSG, "cc"), None);
    }

    #[test]
    fn header_fields_keep_order_and_bytes() {
        let got = select_fields(MSG, &[b"to".to_vec(), b"SUBJECT".to_vec()], false);
        assert_eq!(
            got,
            b"Subject: a long\r\n  folded subject\r\nTo: b@example.org\r\n\r\n"
        );
        let got = select_fields(MSG, &[b"subject".to_vec(), b"x-empty".to_vec()], true);
        assert_eq!(
            got,
            b"From: Alice <a@example.org>\r\nTo: b@example.org\r\n\r\n"
        );
        assert_eq!(select_fields(MSG, &[b"cc".to_vec()], false), b"\r\n");
    }
}
