//! A message's MIME structure as IMAP sees it: byte ranges of every entity's header and body,
//! the fields BODYSTRUCTURE reports, and part numbers (`1.2.3`).
//!
//! mail-parser does the MIME parsing; it does not build IMAP's ENVELOPE or BODYSTRUCTURE, so
//! this module turns its parts and offsets into the tree those responses and BODY[section]
//! need.

pub mod binary;
pub mod envelope;
pub mod header;
pub mod parsed;
pub mod section;
pub mod structure;
pub mod subject;
pub mod summary;

use std::ops::Range;

use mail_parser::{
    Encoding, HeaderName, HeaderValue, Message, MessageParser, MessagePart, PartType,
};

/// One MIME entity: a message, a part of a multipart, or the message inside message/rfc822.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    /// The header block, its ending empty line included.
    pub header: Range<usize>,
    /// The body, as raw (still transfer-encoded) bytes.
    pub body: Range<usize>,
    /// What the body holds.
    pub kind: Kind,
    /// The MIME fields of the header.
    pub fields: MimeFields,
}

/// The content of an entity's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A single part: text, image, application...
    Leaf,
    /// A multipart with its parts.
    Multipart(Vec<Entity>),
    /// message/rfc822 (or message/global): the encapsulated message.
    Message(Box<Entity>),
}

/// The MIME header fields that BODYSTRUCTURE reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MimeFields {
    /// Media type, lower case (`text`).
    pub media_type: String,
    /// Media subtype, lower case (`plain`).
    pub subtype: String,
    /// Content-Type parameters, decoded (RFC 2231 and RFC 2047) to UTF-8.
    pub params: Vec<(String, String)>,
    pub id: Option<Vec<u8>>,
    pub description: Option<Vec<u8>>,
    /// Content-Transfer-Encoding, or `None` for the default 7bit.
    pub encoding: Option<Vec<u8>>,
    pub md5: Option<Vec<u8>>,
    /// Content-Disposition value and parameters.
    pub disposition: Option<(String, Vec<(String, String)>)>,
    pub language: Vec<Vec<u8>>,
    pub location: Option<Vec<u8>>,
}

/// Parses a whole message with mail-parser.
pub fn parse_message(raw: &[u8]) -> Option<Message<'_>> {
    MessageParser::default().parse(raw)
}

/// Builds the entity tree of a message. Always succeeds: a message mail-parser cannot read
/// at all is one text/plain entity.
pub fn parse(raw: &[u8]) -> Entity {
    match parse_message(raw) {
        Some(msg) if !msg.parts.is_empty() => build(&msg, 0, raw, false, 0..raw.len()),
        _ => {
            let body = header::body_start(raw);
            Entity {
                header: 0..body,
                body: body..raw.len(),
                kind: Kind::Leaf,
                fields: MimeFields::text_plain(),
            }
        }
    }
}

/// Builds the tree from the tree mail-parser built.
pub fn from_message(msg: &Message<'_>, raw: &[u8]) -> Entity {
    if msg.parts.is_empty() {
        return parse(raw);
    }
    build(msg, 0, raw, false, 0..raw.len())
}

impl MimeFields {
    fn text_plain() -> Self {
        MimeFields {
            media_type: "text".into(),
            subtype: "plain".into(),
            params: vec![("charset".into(), "us-ascii".into())],
            ..Default::default()
        }
    }

    /// Whether this is a message/rfc822 (or message/global) entity.
    pub fn is_message(&self) -> bool {
        self.media_type == "message" && (self.subtype == "rfc822" || self.subtype == "global")
    }
}

fn clamp(r: Range<usize>, within: &Range<usize>) -> Range<usize> {
    let start = r.start.clamp(within.start, within.end);
    let end = r.end.clamp(start, within.end);
    start..end
}

/// Builds the entity for `msg.parts[id]`. `in_digest` says whether the parent is a
/// multipart/digest (where the default type is message/rfc822).
fn build(
    msg: &Message<'_>,
    id: usize,
    raw: &[u8],
    in_digest: bool,
    within: Range<usize>,
) -> Entity {
    build_depth(msg, id, raw, in_digest, within, 0)
}

/// Deeper nesting than this is flattened into leaves, to bound recursion on hostile input.
const MAX_DEPTH: usize = 64;

fn build_depth(
    msg: &Message<'_>,
    id: usize,
    raw: &[u8],
    in_digest: bool,
    within: Range<usize>,
    depth: usize,
) -> Entity {
    let Some(part) = msg.parts.get(id) else {
        return Entity {
            header: within.start..within.start,
            body: within.clone(),
            kind: Kind::Leaf,
            fields: MimeFields::text_plain(),
        };
    };
    let header = clamp(
        part.offset_header as usize..part.offset_body as usize,
        &within,
    );
    let body = clamp(part.offset_body as usize..part.offset_end as usize, &within);
    let body = body.start.max(header.end)..body.end.max(header.end);
    let mut fields = mime_fields(part, raw, in_digest);
    let kind = match &part.body {
        PartType::Multipart(ids)
            if fields.media_type == "multipart" && !ids.is_empty() && depth < MAX_DEPTH =>
        {
            let digest = fields.subtype == "digest";
            Kind::Multipart(
                ids.iter()
                    .map(|&c| build_depth(msg, c as usize, raw, digest, body.clone(), depth + 1))
                    .collect(),
            )
        }
        PartType::Message(inner)
            if part.encoding == Encoding::None
                && !inner.parts.is_empty()
                && fields.is_message()
                && depth < MAX_DEPTH =>
        {
            // Unencoded message/rfc822 is parsed in place, so the inner offsets are
            // offsets into `raw` (an encoded one would be parsed from decoded bytes).
            Kind::Message(Box::new(build_depth(
                inner,
                0,
                raw,
                false,
                body.clone(),
                depth + 1,
            )))
        }
        _ => {
            if fields.media_type == "multipart" || fields.is_message() {
                // A multipart without parts or a message that cannot be read as one:
                // report it as what it is, a piece of text.
                let encoding = fields.encoding.take();
                fields = MimeFields {
                    encoding,
                    ..MimeFields::text_plain()
                };
            }
            Kind::Leaf
        }
    };
    Entity {
        header,
        body,
        kind,
        fields,
    }
}

fn raw_value(raw: &[u8], h: &mail_parser::Header<'_>) -> Option<Vec<u8>> {
    let r = raw.get(h.offset_start as usize..h.offset_end as usize)?;
    Some(header::unfold(r))
}

fn mime_fields(part: &MessagePart<'_>, raw: &[u8], in_digest: bool) -> MimeFields {
    let mut f = MimeFields::default();
    let mut have_type = false;
    for h in &part.headers {
        match &h.name {
            HeaderName::ContentType if !have_type => {
                if let HeaderValue::ContentType(ct) = &h.value {
                    have_type = true;
                    f.media_type = ct.c_type.to_ascii_lowercase();
                    f.subtype = ct.c_subtype.as_deref().unwrap_or("").to_ascii_lowercase();
                    f.params = attributes(ct);
                }
            }
            HeaderName::ContentDisposition if f.disposition.is_none() => {
                if let HeaderValue::ContentType(ct) = &h.value {
                    f.disposition = Some((ct.c_type.to_string(), attributes(ct)));
                }
            }
            HeaderName::ContentId if f.id.is_none() => f.id = raw_value(raw, h),
            HeaderName::ContentDescription if f.description.is_none() => {
                f.description = raw_value(raw, h)
            }
            HeaderName::ContentTransferEncoding if f.encoding.is_none() => {
                f.encoding = raw_value(raw, h).filter(|v| !v.is_empty())
            }
            HeaderName::ContentLanguage if f.language.is_empty() => {
                if let Some(v) = raw_value(raw, h) {
                    f.language = v
                        .split(|&b| b == b',')
                        .map(header::unfold)
                        .filter(|l| !l.is_empty())
                        .collect();
                }
            }
            HeaderName::ContentLocation if f.location.is_none() => f.location = raw_value(raw, h),
            HeaderName::Other(name)
                if name.eq_ignore_ascii_case("Content-MD5") && f.md5.is_none() =>
            {
                f.md5 = raw_value(raw, h)
            }
            _ => {}
        }
    }
    if !have_type || f.media_type.is_empty() || f.subtype.is_empty() {
        if in_digest && !have_type {
            f.media_type = "message".into();
            f.subtype = "rfc822".into();
        } else {
            f.media_type = "text".into();
            f.subtype = "plain".into();
            if f.params.is_empty() {
                f.params = vec![("charset".into(), "us-ascii".into())];
            }
        }
    }
    f
}

fn attributes(ct: &mail_parser::ContentType<'_>) -> Vec<(String, String)> {
    ct.attributes
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|a| (a.name.to_string(), a.value.to_string()))
        .collect()
}

impl Entity {
    /// The entity a part number (`[2, 1]` for `2.1`) names, counted from this message.
    pub fn part(&self, path: &[u32]) -> Option<&Entity> {
        let (&first, rest) = path.split_first()?;
        let mut cur = self.child_of_message(first)?;
        for &n in rest {
            cur = match &cur.kind {
                Kind::Multipart(children) => children.get((n as usize).checked_sub(1)?)?,
                Kind::Message(inner) => inner.child_of_message(n)?,
                Kind::Leaf => return None,
            };
        }
        Some(cur)
    }

    /// Part `n` of a message whose root entity is `self`: a child of a multipart body, or
    /// (only `1`) the single body itself.
    fn child_of_message(&self, n: u32) -> Option<&Entity> {
        match &self.kind {
            Kind::Multipart(children) => children.get((n as usize).checked_sub(1)?),
            _ if n == 1 => Some(self),
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A multipart/mixed with a text part, a forwarded multipart/alternative message and an
    /// attachment.
    pub const NESTED: &[u8] = b"From: a@b.example\r\nSubject: outer\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n\r\n--XX\r\nContent-Type: message/rfc822\r\n\r\nFrom: c@d.example\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=YY\r\n\r\n--YY\r\n\r\ninner text\r\n--YY\r\nContent-Type: text/html\r\n\r\n<b>x</b>\r\n--YY--\r\n\r\n--XX\r\nContent-Type: application/octet-stream; name=\"a.bin\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"a.bin\"\r\n\r\nAAAA\r\n--XX--\r\nepilogue\r\n";

    fn text<'a>(raw: &'a [u8], r: &Range<usize>) -> &'a str {
        std::str::from_utf8(&raw[r.clone()]).unwrap()
    }

    #[test]
    fn nested_tree_has_exact_ranges() {
        let e = parse(NESTED);
        assert_eq!(e.fields.media_type, "multipart");
        let Kind::Multipart(parts) = &e.kind else {
            panic!("not multipart")
        };
        assert_eq!(parts.len(), 3);
        assert_eq!(text(NESTED, &parts[0].body), "hello\r\n");
        assert_eq!(
            text(NESTED, &parts[0].header),
            "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        );
        assert!(parts[1].fields.is_message());
        assert!(text(NESTED, &parts[1].body).starts_with("From: c@d.example"));
        assert!(text(NESTED, &parts[1].body).ends_with("--YY--\r\n"));
        assert_eq!(text(NESTED, &parts[2].body), "AAAA");
        assert_eq!(parts[2].fields.encoding.as_deref(), Some(&b"base64"[..]));
        assert_eq!(
            parts[2].fields.disposition.as_ref().unwrap().0,
            "attachment"
        );
    }

    #[test]
    fn part_numbers_follow_rfc3501() {
        let e = parse(NESTED);
        assert_eq!(text(NESTED, &e.part(&[1]).unwrap().body), "hello\r\n");
        assert_eq!(text(NESTED, &e.part(&[2, 1]).unwrap().body), "inner text");
        assert_eq!(text(NESTED, &e.part(&[2, 2]).unwrap().body), "<b>x</b>");
        assert_eq!(e.part(&[2, 3]), None);
        assert_eq!(e.part(&[4]), None);
        assert_eq!(e.part(&[1, 1]), None);
        let single = parse(b"Subject: x\r\n\r\nbody\r\n");
        assert_eq!(
            text(
                b"Subject: x\r\n\r\nbody\r\n",
                &single.part(&[1]).unwrap().body
            ),
            "body\r\n"
        );
        assert_eq!(single.part(&[2]), None);
    }

    #[test]
    fn defaults_to_text_plain() {
        let e = parse(b"Subject: x\r\n\r\nbody\r\n");
        assert_eq!(
            (e.fields.media_type.as_str(), e.fields.subtype.as_str()),
            ("text", "plain")
        );
        assert_eq!(
            e.fields.params,
            vec![("charset".to_string(), "us-ascii".to_string())]
        );
    }

    #[test]
    fn digest_parts_default_to_message() {
        let raw = b"Content-Type: multipart/digest; boundary=D\r\n\r\n--D\r\n\r\nSubject: one\r\n\r\nfirst\r\n--D--\r\n";
        let e = parse(raw);
        let Kind::Multipart(parts) = &e.kind else {
            panic!("not multipart")
        };
        assert!(parts[0].fields.is_message());
    }
}
