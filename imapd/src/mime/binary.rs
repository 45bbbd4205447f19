//! BINARY[section] (RFC 3516): a part's content with its Content-Transfer-Encoding undone,
//! and the reverse for APPENDed messages whose parts are raw binary.
//!
//! The decoders are mail-parser's (lenient about whitespace in base64, soft line breaks in
//! quoted-printable); both are single passes over the part.

use std::borrow::Cow;

use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::quoted_printable::quoted_printable_decode;

use super::{Entity, Kind, header};

/// The part's Content-Transfer-Encoding is one this server cannot undo (RFC 3516:
/// `NO [UNKNOWN-CTE]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownCte;

/// A transfer encoding as BINARY sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cte {
    /// 7bit, 8bit, binary or none: the bytes are the content.
    Identity,
    Base64,
    QuotedPrintable,
}

fn cte_of(entity: &Entity) -> Result<Cte, UnknownCte> {
    let Some(raw) = &entity.fields.encoding else {
        return Ok(Cte::Identity);
    };
    let value = String::from_utf8_lossy(raw);
    // A comment after the token (`base64 (sent by X)`) is allowed by RFC 2045.
    let token = value
        .split(|c: char| c.is_ascii_whitespace() || c == '(')
        .find(|t| !t.is_empty())
        .unwrap_or("")
        .to_ascii_lowercase();
    match token.as_str() {
        "" | "7bit" | "8bit" | "binary" => Ok(Cte::Identity),
        "base64" => Ok(Cte::Base64),
        "quoted-printable" => Ok(Cte::QuotedPrintable),
        _ => Err(UnknownCte),
    }
}

/// The decoded content of the part `path` of the message `raw` (`tree` is its entity tree):
/// `Ok(None)` when there is no such part. An empty path is the whole message, as is.
pub fn decode<'a>(
    raw: &'a [u8],
    tree: &Entity,
    path: &[u32],
) -> Result<Option<Cow<'a, [u8]>>, UnknownCte> {
    if path.is_empty() {
        return Ok(Some(Cow::Borrowed(raw)));
    }
    let Some(entity) = tree.part(path) else {
        return Ok(None);
    };
    let Some(body) = raw.get(entity.body.clone()) else {
        return Ok(None);
    };
    Ok(Some(match cte_of(entity)? {
        Cte::Identity => Cow::Borrowed(body),
        // Undecodable content is served as it is rather than refused: the client asked
        // for what the part holds, and that is the nearest thing.
        Cte::Base64 => base64_decode(body).map_or(Cow::Borrowed(body), Cow::Owned),
        Cte::QuotedPrintable => {
            quoted_printable_decode(body).map_or(Cow::Borrowed(body), Cow::Owned)
        }
    }))
}

/// Whether BINARY data must go as a literal8 (`~{n}`): a literal cannot hold NUL.
pub fn needs_literal8(data: &[u8]) -> bool {
    data.contains(&0)
}

/// For an APPEND with a literal8 (RFC 3516 section 4.4): single parts sent with
/// `Content-Transfer-Encoding: binary` and holding NUL are re-encoded as base64, so
/// BODY[...] never returns NUL. `None` when nothing needs it.
pub fn encode_binary_parts(raw: &[u8]) -> Option<Vec<u8>> {
    if !raw.contains(&0) {
        return None;
    }
    let tree = super::parse(raw);
    let mut edits: Vec<(std::ops::Range<usize>, Vec<u8>)> = Vec::new();
    // Depth-first with an explicit stack (the tree's depth is bounded by mime::MAX_DEPTH).
    let mut stack = vec![&tree];
    while let Some(e) = stack.pop() {
        match &e.kind {
            Kind::Multipart(children) => stack.extend(children.iter().rev()),
            Kind::Message(inner) => stack.push(inner),
            Kind::Leaf => {
                let Some(body) = raw.get(e.body.clone()) else {
                    continue;
                };
                if !body.contains(&0) || cte_of(e) != Ok(Cte::Identity) {
                    continue;
                }
                let Some(head) = raw.get(e.header.clone()) else {
                    continue;
                };
                edits.push((e.header.clone(), header_with_base64(head)));
                edits.push((e.body.clone(), base64_lines(body)));
            }
        }
    }
    if edits.is_empty() {
        return None;
    }
    edits.sort_by_key(|(r, _)| r.start);
    let mut out = Vec::with_capacity(raw.len() * 4 / 3 + 64);
    let mut at = 0;
    for (range, replacement) in edits {
        if range.start < at {
            continue;
        }
        out.extend_from_slice(&raw[at..range.start]);
        out.extend_from_slice(&replacement);
        at = range.end;
    }
    out.extend_from_slice(&raw[at..]);
    Some(out)
}

/// The header block with every Content-Transfer-Encoding field replaced by one saying
/// base64 (added if there was none).
fn header_with_base64(head: &[u8]) -> Vec<u8> {
    let split = header::body_start(head).min(head.len());
    let mut out = Vec::with_capacity(head.len() + 40);
    let mut pos = 0;
    // Field by field: a line starting with space or tab continues the previous field.
    let fields = &head[..split];
    let mut skipping = false;
    while pos < fields.len() {
        let end = fields[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(fields.len(), |i| pos + i + 1);
        let line = &fields[pos..end];
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        let is_blank = line == b"\r\n" || line == b"\n";
        if !continuation {
            skipping =
                line.len() >= 26 && line[..26].eq_ignore_ascii_case(b"content-transfer-encoding:");
        }
        if is_blank {
            break;
        }
        if !skipping {
            out.extend_from_slice(line);
        }
        pos = end;
    }
    out.extend_from_slice(b"Content-Transfer-Encoding: base64\r\n");
    out.extend_from_slice(&head[pos..]);
    out
}

/// Base64 in lines of 76 characters, each ending in CRLF.
fn base64_lines(data: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = Vec::with_capacity(text.len() + text.len() / 38 + 2);
    for chunk in text.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const QP: &[u8] = b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\r\nhello  \r\nbar=\r\n\r\nfoo\t=\r\nbar\r\n\
foo =\r\n=62\r\n\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\n  aGVs    \r\n bG8g  \r\n\
   d29y  \t \r\n    bGQ= \r\n\r\n--b\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n\
--b--\r\n";

    fn get(path: &[u32]) -> Result<Option<Vec<u8>>, UnknownCte> {
        let tree = crate::mime::parse(QP);
        decode(QP, &tree, path).map(|o| o.map(Cow::into_owned))
    }

    #[test]
    fn decodes_quoted_printable_and_spaced_base64() {
        assert_eq!(
            get(&[1]).unwrap().unwrap(),
            b"hello\r\nbar\r\nfoo\tbar\r\nfoo b\r\n"
        );
        assert_eq!(get(&[2]).unwrap().unwrap(), b"hello world");
        assert_eq!(get(&[3]), Err(UnknownCte));
        assert_eq!(get(&[9]), Ok(None));
        assert_eq!(get(&[]).unwrap().unwrap(), QP);
    }

    #[test]
    fn binary_parts_with_nul_become_base64() {
        let raw = b"From: a@b\r\nContent-Type: application/octet-stream\r\n\
Content-Transfer-Encoding: binary\r\n\r\n\x00-\xff\r\n\r\n";
        let out = encode_binary_parts(raw).expect("converted");
        assert!(!out.contains(&0));
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("Content-Transfer-Encoding: base64\r\n\r\n") && !text.contains("binary"),
            "{text}"
        );
        let tree = crate::mime::parse(&out);
        assert_eq!(
            decode(&out, &tree, &[1]).unwrap().unwrap().as_ref(),
            b"\x00-\xff\r\n\r\n"
        );
        assert_eq!(encode_binary_parts(b"Subject: x\r\n\r\ntext\r\n"), None);
    }
}
