//! BODY[section]: the bytes a section specification names (RFC 3501 section 6.4.5).

use std::borrow::Cow;

use super::{Entity, Kind, header};

/// What of a part a section asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// The whole part (`BODY[]`, `BODY[1.2]`).
    Whole,
    /// `HEADER`: the header block with its ending empty line.
    Header,
    /// `HEADER.FIELDS (...)` or, with `not`, `HEADER.FIELDS.NOT (...)`.
    HeaderFields { names: Vec<Vec<u8>>, not: bool },
    /// `TEXT`: the body of a message.
    Text,
    /// `MIME`: the MIME header of a part.
    Mime,
}

/// A section: a part number (empty for the message itself) and what of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub part: Vec<u32>,
    pub spec: Spec,
}

/// The bytes of `section` in the message `raw`, or `None` when the part does not exist.
pub fn extract<'a>(raw: &'a [u8], section: &Section) -> Option<Cow<'a, [u8]>> {
    if section.part.is_empty() {
        // The common cases (Thunderbird's header fetch, BODY[], previews) need no MIME parse.
        let split = header::body_start(raw);
        return Some(match &section.spec {
            Spec::Whole => Cow::Borrowed(raw),
            Spec::Header | Spec::Mime => Cow::Borrowed(&raw[..split]),
            Spec::HeaderFields { names, not } => {
                Cow::Owned(header::select_fields(&raw[..split], names, *not))
            }
            Spec::Text => Cow::Borrowed(&raw[split..]),
        });
    }
    let tree = super::parse(raw);
    extract_from(raw, &tree, section)
}

/// Like [`extract`], with the message's entity tree already built.
pub fn extract_from<'a>(raw: &'a [u8], tree: &Entity, section: &Section) -> Option<Cow<'a, [u8]>> {
    let entity = if section.part.is_empty() {
        tree
    } else {
        tree.part(&section.part)?
    };
    let get = |r: &std::ops::Range<usize>| raw.get(r.clone()).map(Cow::Borrowed);
    // HEADER, HEADER.FIELDS and TEXT of a part apply to the message inside message/rfc822;
    // for other parts they fall back to the part itself.
    let message = match (&entity.kind, section.part.is_empty()) {
        (_, true) => entity,
        (Kind::Message(inner), false) => inner.as_ref(),
        _ => entity,
    };
    match &section.spec {
        Spec::Whole if section.part.is_empty() => Some(Cow::Borrowed(raw)),
        Spec::Whole => get(&entity.body),
        Spec::Mime => get(&entity.header),
        Spec::Header => get(&message.header),
        Spec::HeaderFields { names, not } => Some(Cow::Owned(header::select_fields(
            raw.get(message.header.clone())?,
            names,
            *not,
        ))),
        // The inner message's text runs to the end of the part: a multipart's epilogue
        // is text too, though the parsed body stops at the closing delimiter.
        Spec::Text if !std::ptr::eq(message, entity) => {
            get(&(message.body.start..entity.body.end.max(message.body.start)))
        }
        Spec::Text => get(&message.body),
    }
}

/// Applies a partial `<offset.length>`: the bytes from `offset`, at most `length` of them.
pub fn partial(data: &[u8], offset: u32, length: u32) -> &[u8] {
    let start = (offset as usize).min(data.len());
    let end = start.saturating_add(length as usize).min(data.len());
    &data[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mime::tests::NESTED;

    fn get(part: &[u32], spec: Spec) -> Option<String> {
        extract(
            NESTED,
            &Section {
                part: part.to_vec(),
                spec,
            },
        )
        .map(|c| String::from_utf8(c.into_owned()).unwrap())
    }

    #[test]
    fn whole_header_text() {
        assert_eq!(get(&[], Spec::Whole).unwrap().as_bytes(), NESTED);
        assert!(
            get(&[], Spec::Header)
                .unwrap()
                .ends_with("boundary=\"XX\"\r\n\r\n")
        );
        assert!(
            get(&[], Spec::Text)
                .unwrap()
                .starts_with("preamble\r\n--XX")
        );
    }

    #[test]
    fn numbered_parts() {
        assert_eq!(get(&[1], Spec::Whole).unwrap(), "hello\r\n");
        assert_eq!(
            get(&[1], Spec::Mime).unwrap(),
            "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        );
        assert_eq!(get(&[2, 1], Spec::Whole).unwrap(), "inner text");
        assert_eq!(
            get(&[2, 2], Spec::Mime).unwrap(),
            "Content-Type: text/html\r\n\r\n"
        );
        assert_eq!(get(&[3], Spec::Whole).unwrap(), "AAAA");
        assert_eq!(get(&[9], Spec::Whole), None);
    }

    /// imaptest's fetch-body-message-rfc822-mime: the TEXT of a message/rfc822 part is
    /// everything after the inner header, a multipart's epilogue included.
    #[test]
    fn text_of_inner_multipart_keeps_its_epilogue() {
        let raw = b"From: user@domain.org\r\nMime-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\nFrom: sub@domain.org\r\nContent-Type: multipart/digest; boundary=\"foo\"\r\n\r\nprologue\r\n\r\n--foo\r\n\r\nFrom: m1@example.com\r\n\r\nm1 body\r\n\r\n--foo--\r\n\r\nepilogue\r\n";
        let text = extract(
            raw,
            &Section {
                part: vec![1],
                spec: Spec::Text,
            },
        )
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&text),
            "prologue\r\n\r\n--foo\r\n\r\nFrom: m1@example.com\r\n\r\nm1 body\r\n\r\n--foo--\r\n\r\nepilogue\r\n"
        );
    }

    #[test]
    fn forwarded_message_sections() {
        assert_eq!(
            get(&[2], Spec::Header).unwrap(),
            "From: c@d.example\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=YY\r\n\r\n"
        );
        assert!(get(&[2], Spec::Text).unwrap().starts_with("--YY\r\n"));
        assert!(
            get(&[2], Spec::Whole)
                .unwrap()
                .starts_with("From: c@d.example\r\n")
        );
        assert_eq!(
            get(&[2], Spec::Mime).unwrap(),
            "Content-Type: message/rfc822\r\n\r\n"
        );
        assert_eq!(
            get(
                &[2],
                Spec::HeaderFields {
                    names: vec![b"subject".to_vec()],
                    not: false
                }
            )
            .unwrap(),
            "Subject: inner\r\n\r\n"
        );
    }

    #[test]
    fn header_fields_of_message() {
        let got = get(
            &[],
            Spec::HeaderFields {
                names: vec![b"From".to_vec(), b"Subject".to_vec()],
                not: false,
            },
        )
        .unwrap();
        assert_eq!(got, "From: a@b.example\r\nSubject: outer\r\n\r\n");
    }

    #[test]
    fn partial_ranges() {
        assert_eq!(partial(b"0123456789", 2, 3), b"234");
        assert_eq!(partial(b"0123456789", 8, 100), b"89");
        assert_eq!(partial(b"0123456789", 20, 5), b"");
    }
}
