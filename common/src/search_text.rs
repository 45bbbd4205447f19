//! The text IMAP SEARCH matches in a message (RFC 3501 and RFC 9051 section 6.4.4): header
//! values with their RFC 2047 words decoded, addresses as parsed, and the decoded text of
//! the body parts, all in lower case. One definition serves both the search evaluator of
//! imapd (`cmd/search_eval.rs`) and the store's full-text index (`store/text_index.rs`), so
//! a search answered from the index finds exactly what reading the message would.

use mail_parser::{HeaderName, MessageParser, PartType};

/// The offset where the body starts: just past the empty line that ends the header block.
/// A message without an empty line is all header.
pub fn body_start(raw: &[u8]) -> usize {
    if raw.starts_with(b"\r\n") {
        return 2;
    }
    if raw.starts_with(b"\n") {
        return 1;
    }
    let mut i = 0;
    while let Some(p) = raw[i..].iter().position(|&b| b == b'\n') {
        let nl = i + p;
        let next = nl + 1;
        if raw[next..].starts_with(b"\r\n") {
            return next + 2;
        }
        if raw[next..].starts_with(b"\n") {
            return next + 1;
        }
        i = next;
    }
    raw.len()
}

/// Removes the line breaks of folded lines and trims surrounding white space.
pub fn unfold(value: &[u8]) -> Vec<u8> {
    let v: Vec<u8> = value
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |p| p + 1);
    v[start..end.max(start)].to_vec()
}

/// Top-level header fields: lower-case name, lower-case decoded value.
pub fn header_values(raw: &[u8]) -> Vec<(String, String)> {
    let block = &raw[..body_start(raw)];
    // A non-empty header map turns off the built-in parsers, so every field is read as
    // unstructured text with its RFC 2047 words decoded.
    let parser = MessageParser::new()
        .header_text(HeaderName::Subject)
        .default_header_text();
    let parsed = parser.parse_headers(block);
    let mut out = Vec::new();
    if let Some(part) = parsed.as_ref().and_then(|m| m.parts.first()) {
        for h in &part.headers {
            let value = match h.value.as_text() {
                Some(t) => t.to_string(),
                None => String::from_utf8_lossy(&unfold(
                    block
                        .get(h.offset_start as usize..h.offset_end as usize)
                        .unwrap_or_default(),
                ))
                .into_owned(),
            };
            out.push((h.name.as_str().to_lowercase(), value.to_lowercase()));
        }
    }
    out
}

/// Address fields as parsed: lower-case field name, `name <local@domain>` in lower case, so
/// comments, spaces and quoting in a field do not hide `user@domain.org`.
pub fn address_values(raw: &[u8]) -> Vec<(String, String)> {
    let block = &raw[..body_start(raw)];
    let mut out = Vec::new();
    let Some(parsed) = MessageParser::default().parse_headers(block) else {
        return out;
    };
    let Some(part) = parsed.parts.first() else {
        return out;
    };
    for h in &part.headers {
        let mail_parser::HeaderValue::Address(a) = &h.value else {
            continue;
        };
        let field = h.name.as_str().to_lowercase();
        let addrs: Vec<&mail_parser::Addr<'_>> = match a {
            mail_parser::Address::List(l) => l.iter().collect(),
            mail_parser::Address::Group(g) => g.iter().flat_map(|g| g.addresses.iter()).collect(),
        };
        for a in addrs {
            let text = format!(
                "{} <{}>",
                a.name.as_deref().unwrap_or_default(),
                a.address.as_deref().unwrap_or_default()
            );
            out.push((field.clone(), text.to_lowercase()));
        }
    }
    out
}

/// The decoded text of every text part (HTML as text), lower case.
pub fn body_text(raw: &[u8]) -> String {
    let mut text = String::new();
    if let Some(msg) = MessageParser::default().parse(raw) {
        collect_text(&msg, &mut text, 0);
    }
    text.to_lowercase()
}

fn collect_text(msg: &mail_parser::Message<'_>, out: &mut String, depth: usize) {
    for part in &msg.parts {
        match &part.body {
            PartType::Text(t) => {
                out.push_str(t);
                out.push('\n');
            }
            PartType::Html(h) => {
                out.push_str(&mail_parser::decoders::html::html_to_text(h));
                out.push('\n');
            }
            PartType::Message(inner) if depth < 8 => collect_text(inner, out, depth + 1),
            _ => {}
        }
    }
}

/// What the full-text index keeps of a message, one column per kind of search key: the
/// values a key compares with, joined by `\n`. A needle without `\n` is in a column exactly
/// when it is in one of the values (see [`usable_needle`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexedText {
    /// SUBJECT: the Subject fields.
    pub subject: String,
    /// FROM, TO, CC, BCC: the fields, and their addresses as parsed.
    pub from: String,
    pub to: String,
    pub cc: String,
    pub bcc: String,
    /// TEXT (with `body`) and a superset for HEADER: every field.
    pub headers: String,
    /// BODY and TEXT: the decoded text of the body parts.
    pub body: String,
}

impl IndexedText {
    pub fn of(raw: &[u8]) -> IndexedText {
        let headers = header_values(raw);
        let addresses = address_values(raw);
        let field = |name: &str, with_addresses: bool| {
            let mut parts: Vec<&str> = headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect();
            if with_addresses {
                parts.extend(
                    addresses
                        .iter()
                        .filter(|(n, _)| n == name)
                        .map(|(_, v)| v.as_str()),
                );
            }
            clean(parts.join("\n"))
        };
        IndexedText {
            subject: field("subject", false),
            from: field("from", true),
            to: field("to", true),
            cc: field("cc", true),
            bcc: field("bcc", true),
            headers: clean(
                headers
                    .iter()
                    .map(|(_, v)| v.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            body: clean(body_text(raw)),
        }
    }
}

/// NUL ends text for some SQLite paths: it becomes a separator (a needle with NUL or `\n`
/// is never looked up in the index).
fn clean(s: String) -> String {
    if s.contains('\0') {
        s.replace('\0', "\n")
    } else {
        s
    }
}

/// Whether the full-text index answers a search for `needle` (already in lower case)
/// exactly: its trigrams need three characters, and a needle with a separator could span
/// two values.
pub fn usable_needle(needle: &str) -> bool {
    let n = needle.chars().count();
    (3..=256).contains(&n) && !needle.contains(['\n', '\0'])
}
