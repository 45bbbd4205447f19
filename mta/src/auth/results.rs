//! RFC 8601 `Authentication-Results`: removing the incoming fields that claim our authserv-id
//! (so nobody outside can forge our verdict), and our own quarantine mark.

/// Header field that tells the MDA to file the message into Junk. Only hermod's own session
/// adds it; any copy arriving from outside is removed with the forged results.
pub use hermod_mda::QUARANTINE_FIELD;

/// The message without the `Authentication-Results` fields whose authserv-id is
/// `authserv_id` and without any [`QUARANTINE_FIELD`]; None when there was nothing to remove
/// (the common case: no copy is made). Linear in the header section.
pub fn strip_claimed(message: &[u8], authserv_id: &str) -> Option<Vec<u8>> {
    let fields = header_fields(message);
    let doomed: Vec<&Field> = fields
        .iter()
        .filter(|f| {
            let name = &message[f.start..f.name_end];
            if name.eq_ignore_ascii_case(QUARANTINE_FIELD.as_bytes()) {
                return true;
            }
            name.eq_ignore_ascii_case(b"Authentication-Results")
                && authserv_id_of(&message[f.name_end + 1..f.end])
                    .is_some_and(|id| id.eq_ignore_ascii_case(authserv_id.as_bytes()))
        })
        .collect();
    if doomed.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(message.len());
    let mut pos = 0;
    for field in doomed {
        out.extend_from_slice(&message[pos..field.start]);
        pos = field.end;
    }
    out.extend_from_slice(&message[pos..]);
    Some(out)
}

/// One header field: `start..end` covers the whole field with its folded lines and CRLF;
/// the name ends at `name_end` (the colon).
pub(crate) struct Field {
    pub(crate) start: usize,
    pub(crate) name_end: usize,
    pub(crate) end: usize,
}

/// The fields of the header section, in order. Linear in the header section.
pub(crate) fn header_fields(message: &[u8]) -> Vec<Field> {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = 0;
    while pos < message.len() {
        let line_end = memchr_newline(&message[pos..]).map_or(message.len(), |i| pos + i + 1);
        let line = &message[pos..line_end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            // A continuation line belongs to the field above.
            if let Some(last) = fields.last_mut() {
                last.end = line_end;
            }
        } else if let Some(colon) = line.iter().position(|&b| b == b':') {
            fields.push(Field {
                start: pos,
                name_end: pos + colon,
                end: line_end,
            });
        }
        pos = line_end;
    }
    fields
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// The authserv-id of an `Authentication-Results` value: the first token, after comments and
/// whitespace, up to `;` or whitespace.
fn authserv_id_of(value: &[u8]) -> Option<&[u8]> {
    let mut i = 0;
    let mut depth = 0usize;
    while i < value.len() {
        match value[i] {
            b'(' => depth += 1,
            b')' if depth > 0 => depth -= 1,
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ if depth > 0 => {}
            _ => break,
        }
        i += 1;
    }
    let start = i;
    while i < value.len() && !matches!(value[i], b';' | b' ' | b'\t' | b'\r' | b'\n' | b'(') {
        i += 1;
    }
    (i > start).then(|| &value[start..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_results_claiming_our_id() {
        let msg = b"Received: from x\r\n\
Authentication-Results: MX.Example.org;\r\n\tdkim=pass header.d=bank.test\r\n\
Authentication-Results: (comment) mx.example.org; spf=pass\r\n\
Authentication-Results: other.test; dmarc=fail\r\n\
X-Hermod-Quarantine: no\r\n\
Subject: Authentication-Results: mx.example.org\r\n\
\r\n\
Authentication-Results: mx.example.org; body stays\r\n";
        let out = strip_claimed(msg, "mx.example.org").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "Received: from x\r\n\
Authentication-Results: other.test; dmarc=fail\r\n\
Subject: Authentication-Results: mx.example.org\r\n\
\r\n\
Authentication-Results: mx.example.org; body stays\r\n"
        );
        assert!(strip_claimed(text.as_bytes(), "mx.example.org").is_none());
    }
}
