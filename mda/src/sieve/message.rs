//! The message as scripts see it: a bounded view of its bytes ([`limits::MESSAGE_VIEW`]),
//! its header fields (editable by editheader), decoded values, addresses and body text.

use mail_parser::{HeaderValue, MessageParser, MimeHeaders, PartType};

use super::limits;

/// The message handed to [`super::execute`]: its first bytes (the whole of most mail) and
/// its full size (test `size`). A big message in a file is seen through its head only.
#[derive(Debug, Clone, Copy)]
pub struct SieveMessage<'a> {
    bytes: &'a [u8],
    size: u64,
}

impl<'a> SieveMessage<'a> {
    /// `bytes`: the message or its head; `size`: the whole message's size.
    pub fn new(bytes: &'a [u8], size: u64) -> SieveMessage<'a> {
        SieveMessage {
            bytes: &bytes[..bytes.len().min(limits::MESSAGE_VIEW)],
            size,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// One header field: its name as written and its raw value (after the colon, folded lines
/// kept, without the final line end).
#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub name: String,
    pub raw: String,
}

/// Splits the header section into fields; returns them and where the body starts.
pub(crate) fn parse_header(bytes: &[u8]) -> (Vec<Field>, usize) {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let end = bytes[pos..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| pos + i + 1);
        let line = &bytes[pos..end];
        let content = line
            .strip_suffix(b"\r\n")
            .or_else(|| line.strip_suffix(b"\n"))
            .unwrap_or(line);
        if content.is_empty() {
            return (fields, end);
        }
        if matches!(content[0], b' ' | b'\t') {
            if let Some(last) = fields.last_mut() {
                last.raw.push_str("\r\n");
                last.raw.push_str(&String::from_utf8_lossy(content));
            }
        } else if let Some(colon) = content.iter().position(|b| *b == b':') {
            let name = String::from_utf8_lossy(&content[..colon])
                .trim_end()
                .to_string();
            fields.push(Field {
                name,
                raw: String::from_utf8_lossy(&content[colon + 1..]).into_owned(),
            });
        }
        pos = end;
    }
    (fields, bytes.len())
}

/// The value of a field as Sieve compares it: unfolded, leading and trailing whitespace
/// removed, RFC 2047 encoded words decoded.
pub(crate) fn decoded_value(raw: &str) -> String {
    let unfolded: String = raw.replace("\r\n", "").replace('\n', "");
    let trimmed = unfolded.trim();
    if !trimmed.contains("=?") {
        return trimmed.to_string();
    }
    let input = format!("{trimmed}\n");
    match mail_parser::parsers::MessageStream::new(input.as_bytes()).parse_unstructured() {
        HeaderValue::Text(t) => t.trim().to_string(),
        _ => trimmed.to_string(),
    }
}

/// The addresses in a header value (group names dropped); an unparsable value gives none.
pub(crate) fn addresses(raw: &str) -> Vec<String> {
    let input = format!("{}\n", raw.replace("\r\n", ""));
    let value = mail_parser::parsers::MessageStream::new(input.as_bytes()).parse_address();
    let mut out = Vec::new();
    match value {
        HeaderValue::Address(mail_parser::Address::List(list)) => {
            out.extend(
                list.into_iter()
                    .filter_map(|a| a.address.map(|s| s.into_owned())),
            );
        }
        HeaderValue::Address(mail_parser::Address::Group(groups)) => {
            for g in groups {
                out.extend(
                    g.addresses
                        .into_iter()
                        .filter_map(|a| a.address.map(|s| s.into_owned())),
                );
            }
        }
        _ => {}
    }
    out
}

/// Which body parts the `body` test looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyTransform {
    /// `:raw`: the body as is, undecoded.
    Raw,
    /// `:content` types: decoded parts whose type matches one of these (`""` = all).
    Content(Vec<String>),
    /// `:text` (the default): decoded text parts.
    Text,
}

/// The texts the `body` test compares, for the given transform.
pub(crate) fn body_texts(
    message: &[u8],
    body_start: usize,
    transform: &BodyTransform,
) -> Vec<String> {
    if transform == &BodyTransform::Raw {
        return vec![
            String::from_utf8_lossy(&message[body_start.min(message.len())..]).into_owned(),
        ];
    }
    let Some(parsed) = MessageParser::default().parse(message) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for part in parsed.parts.iter() {
        let (ctype, csub) = match part.content_type() {
            Some(ct) => (
                ct.ctype().to_ascii_lowercase(),
                ct.subtype().unwrap_or("").to_ascii_lowercase(),
            ),
            None => ("text".to_string(), "plain".to_string()),
        };
        let wanted = match transform {
            BodyTransform::Text => ctype == "text",
            BodyTransform::Content(types) => types.iter().any(|t| {
                let t = t.to_ascii_lowercase();
                t.is_empty()
                    || match t.split_once('/') {
                        Some((a, b)) => a == ctype && b == csub,
                        None => t == ctype,
                    }
            }),
            BodyTransform::Raw => false,
        };
        if !wanted {
            continue;
        }
        match &part.body {
            PartType::Text(t) => out.push(t.to_string()),
            PartType::Html(h) => {
                if transform == &BodyTransform::Text {
                    out.push(mail_parser::decoders::html::html_to_text(h));
                } else {
                    out.push(h.to_string());
                }
            }
            PartType::Binary(b) | PartType::InlineBinary(b)
                if matches!(transform, BodyTransform::Content(_)) =>
            {
                out.push(String::from_utf8_lossy(b).into_owned());
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_fold_and_decode() {
        let m =
            b"Subject: =?utf-8?q?caf=C3=A9?=\r\n  au lait\r\nTo: A <a@x.org>, b@y.org\r\n\r\nbody";
        let (fields, body) = parse_header(m);
        assert_eq!(fields.len(), 2);
        assert_eq!(&m[body..], b"body");
        let subject = decoded_value(&fields[0].raw);
        assert!(
            subject.starts_with("café") && subject.ends_with("au lait"),
            "{subject}"
        );
        assert_eq!(addresses(&fields[1].raw), vec!["a@x.org", "b@y.org"]);
    }

    #[test]
    fn body_text_of_multipart() {
        let m = b"Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n\
Content-Type: text/plain\r\n\r\nhello plain\r\n--b\r\nContent-Type: image/png\r\n\r\nPNG\r\n--b--\r\n";
        let (_, start) = parse_header(m);
        let texts = body_texts(m, start, &BodyTransform::Text);
        assert!(texts.iter().any(|t| t.contains("hello plain")), "{texts:?}");
        assert!(!texts.iter().any(|t| t.contains("PNG")));
        let raw = body_texts(m, start, &BodyTransform::Raw);
        assert!(raw[0].contains("PNG"));
    }
}
