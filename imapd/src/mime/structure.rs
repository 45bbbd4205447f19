//! FETCH BODY and BODYSTRUCTURE (RFC 3501 section 7.4.2, RFC 9051 section 7.5.2).

use super::{Entity, Kind, envelope};
use crate::wire;

/// Writes BODYSTRUCTURE (`extended`) or BODY (not extended) of `entity`, a message or part of
/// the message `raw`.
pub fn write(out: &mut Vec<u8>, raw: &[u8], entity: &Entity, extended: bool) {
    out.push(b'(');
    match &entity.kind {
        Kind::Multipart(children) => {
            for child in children {
                write(out, raw, child, extended);
            }
            out.push(b' ');
            wire::string(out, entity.fields.subtype.to_ascii_uppercase().as_bytes());
            if extended {
                out.push(b' ');
                write_params(out, &entity.fields.params);
                write_tail(out, entity);
            }
        }
        Kind::Leaf | Kind::Message(_) => {
            let f = &entity.fields;
            wire::string(out, f.media_type.to_ascii_uppercase().as_bytes());
            out.push(b' ');
            wire::string(out, f.subtype.to_ascii_uppercase().as_bytes());
            out.push(b' ');
            write_params(out, &f.params);
            out.push(b' ');
            wire::nstring(out, f.id.as_deref());
            out.push(b' ');
            wire::nstring(out, f.description.as_deref());
            out.push(b' ');
            match &f.encoding {
                Some(e) => wire::string(out, e.to_ascii_uppercase().as_slice()),
                None => out.extend_from_slice(b"\"7BIT\""),
            }
            out.push(b' ');
            let body = raw.get(entity.body.clone()).unwrap_or_default();
            wire::number(out, body.len() as u64);
            if let Kind::Message(inner) = &entity.kind {
                out.push(b' ');
                envelope::write(out, raw.get(inner.header.clone()).unwrap_or_default());
                out.push(b' ');
                write(out, raw, inner, extended);
            }
            if f.media_type == "text" || matches!(entity.kind, Kind::Message(_)) {
                out.push(b' ');
                wire::number(out, lines(body));
            }
            if extended {
                out.push(b' ');
                wire::nstring(out, f.md5.as_deref());
                write_tail(out, entity);
            }
        }
    }
    out.push(b')');
}

/// Disposition, language and location: the extension data shared by both forms.
fn write_tail(out: &mut Vec<u8>, entity: &Entity) {
    let f = &entity.fields;
    out.push(b' ');
    match &f.disposition {
        Some((value, params)) => {
            out.push(b'(');
            wire::string(out, value.to_ascii_uppercase().as_bytes());
            out.push(b' ');
            write_params(out, params);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    match f.language.as_slice() {
        [] => out.extend_from_slice(b"NIL"),
        [one] => wire::string(out, one),
        many => {
            out.push(b'(');
            for (i, l) in many.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                wire::string(out, l);
            }
            out.push(b')');
        }
    }
    out.push(b' ');
    wire::nstring(out, f.location.as_deref());
}

fn write_params(out: &mut Vec<u8>, params: &[(String, String)]) {
    if params.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (name, value)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        wire::string(out, name.to_ascii_uppercase().as_bytes());
        out.push(b' ');
        wire::string(out, envelope::encode_word(value).as_bytes());
    }
    out.push(b')');
}

/// Lines of a body, counted as line feeds like other servers do.
fn lines(body: &[u8]) -> u64 {
    body.iter().filter(|&&b| b == b'\n').count() as u64
}

/// The BODYSTRUCTURE (or BODY) of a whole message.
pub fn of_message(raw: &[u8], extended: bool) -> Vec<u8> {
    let entity = super::parse(raw);
    let mut out = Vec::new();
    write(&mut out, raw, &entity, extended);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mime::tests::NESTED;

    fn bs(raw: &[u8], ext: bool) -> String {
        String::from_utf8(of_message(raw, ext)).unwrap()
    }

    #[test]
    fn simple_text_message() {
        let raw = b"Subject: x\r\nContent-Type: text/plain; charset=UTF-8; format=flowed\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nline one\r\nline two\r\n";
        assert_eq!(
            bs(raw, false),
            "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"UTF-8\" \"FORMAT\" \"flowed\") NIL NIL \"QUOTED-PRINTABLE\" 20 2)"
        );
        assert_eq!(
            bs(raw, true),
            "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"UTF-8\" \"FORMAT\" \"flowed\") NIL NIL \"QUOTED-PRINTABLE\" 20 2 NIL NIL NIL NIL)"
        );
    }

    #[test]
    fn default_type_without_content_type() {
        assert_eq!(
            bs(b"Subject: x\r\n\r\nhi\r\n", false),
            "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 4 1)"
        );
    }

    #[test]
    fn nested_multipart_with_forwarded_message() {
        let got = bs(NESTED, true);
        let expected = concat!(
            "(",
            "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"7BIT\" 7 1 NIL NIL NIL NIL)",
            "(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 158 ",
            "(NIL \"inner\" ((NIL NIL \"c\" \"d.example\")) ((NIL NIL \"c\" \"d.example\")) ((NIL NIL \"c\" \"d.example\")) NIL NIL NIL NIL NIL) ",
            "((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 10 0 NIL NIL NIL NIL)",
            "(\"TEXT\" \"HTML\" NIL NIL NIL \"7BIT\" 8 0 NIL NIL NIL NIL) \"ALTERNATIVE\" (\"BOUNDARY\" \"YY\") NIL NIL NIL) ",
            "12 NIL NIL NIL NIL)",
            "(\"APPLICATION\" \"OCTET-STREAM\" (\"NAME\" \"a.bin\") NIL NIL \"BASE64\" 4 NIL (\"ATTACHMENT\" (\"FILENAME\" \"a.bin\")) NIL NIL)",
            " \"MIXED\" (\"BOUNDARY\" \"XX\") NIL NIL NIL)"
        );
        assert_eq!(got, expected);
        let body = bs(NESTED, false);
        assert!(body.ends_with("\"BASE64\" 4) \"MIXED\")"), "{body}");
    }

    #[test]
    fn disposition_language_and_utf8_filename() {
        let raw = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: application/pdf; name*=utf-8''R%C3%A9sum%C3%A9.pdf\r\nContent-Disposition: attachment; filename*=utf-8''R%C3%A9sum%C3%A9.pdf\r\nContent-Language: de, en\r\nContent-ID: <id1@x>\r\nContent-Description: CV\r\nContent-Location: http://x/cv.pdf\r\n\r\nJVBERi0=\r\n--b--\r\n";
        let got = bs(raw.as_bytes(), true);
        assert!(got.starts_with("((\"APPLICATION\" \"PDF\" (\"NAME\" \"=?utf-8?b?UsOpc3Vtw6kucGRm?=\") \"<id1@x>\" \"CV\" \"7BIT\" 8 NIL (\"ATTACHMENT\" (\"FILENAME\" \"=?utf-8?b?UsOpc3Vtw6kucGRm?=\")) (\"de\" \"en\") \"http://x/cv.pdf\")"), "{got}");
    }
}
