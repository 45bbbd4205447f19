//! Writing IMAP response syntax: strings, nstrings, astrings, lists.
//!
//! Responses are written by hand rather than through imap-types because several of them
//! (ESEARCH, LIST-EXTENDED, VANISHED) have no type there, and `UID FETCH 1:* (FLAGS)` on a
//! large mailbox must not build a typed value per message.

/// Longest string sent as a quoted string; longer ones go as literals.
const MAX_QUOTED: usize = 1024;

/// Whether `bytes` may be sent as a quoted string.
fn quotable(bytes: &[u8], utf8: bool) -> bool {
    bytes.len() <= MAX_QUOTED
        && bytes
            .iter()
            .all(|&b| b != 0 && b != b'\r' && b != b'\n' && (b < 0x80 || utf8))
        && (!utf8 || std::str::from_utf8(bytes).is_ok())
}

/// Appends `bytes` as a quoted string, or as a literal when it cannot be quoted.
pub fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    string_utf8(out, bytes, false)
}

/// Like [`string`]; with `utf8` (UTF8=ACCEPT enabled) UTF-8 may go in a quoted string.
pub fn string_utf8(out: &mut Vec<u8>, bytes: &[u8], utf8: bool) {
    if quotable(bytes, utf8) {
        out.push(b'"');
        for &b in bytes {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        literal(out, bytes);
    }
}

/// Appends `bytes` as a literal `{n}CRLF...`.
pub fn literal(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'{');
    number(out, bytes.len() as u64);
    out.extend_from_slice(b"}\r\n");
    out.extend_from_slice(bytes);
}

/// Appends a string, or NIL when absent.
pub fn nstring(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => string(out, b),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// Appends a number in decimal.
pub fn number(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Whether `b` is an ATOM-CHAR (RFC 3501), allowing `]` as in ASTRING-CHAR.
fn astring_char(b: u8) -> bool {
    b > 0x20 && b < 0x7f && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\')
}

/// Appends an astring: an atom when the bytes allow it, a string otherwise.
pub fn astring(out: &mut Vec<u8>, bytes: &[u8]) {
    astring_utf8(out, bytes, false)
}

/// Like [`astring`], with UTF-8 allowed in quoted strings after UTF8=ACCEPT.
pub fn astring_utf8(out: &mut Vec<u8>, bytes: &[u8], utf8: bool) {
    if !bytes.is_empty()
        && bytes.iter().all(|&b| astring_char(b))
        && !bytes.eq_ignore_ascii_case(b"NIL")
    {
        out.extend_from_slice(bytes);
    } else {
        string_utf8(out, bytes, utf8);
    }
}

/// Whether `text` can go into response text (`resp-text`): no CR, LF or NUL.
pub fn clean_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == '\r' || c == '\n' || c == '\0' {
                ' '
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl Fn(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn quotes_plain_text_and_escapes() {
        assert_eq!(s(|o| string(o, b"hello")), "\"hello\"");
        assert_eq!(s(|o| string(o, b"a\"b\\c")), "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn uses_literal_for_line_breaks_and_8bit() {
        assert_eq!(s(|o| string(o, b"a\r\nb")), "{4}\r\na\r\nb");
        assert_eq!(s(|o| string(o, "é".as_bytes())), "{2}\r\né");
        assert_eq!(s(|o| string_utf8(o, "é".as_bytes(), true)), "\"é\"");
    }

    #[test]
    fn nstring_nil() {
        assert_eq!(s(|o| nstring(o, None)), "NIL");
        assert_eq!(s(|o| nstring(o, Some(b""))), "\"\"");
    }

    #[test]
    fn astring_atoms_and_quotes() {
        assert_eq!(s(|o| astring(o, b"INBOX")), "INBOX");
        assert_eq!(s(|o| astring(o, b"My Folder")), "\"My Folder\"");
        assert_eq!(s(|o| astring(o, b"")), "\"\"");
        assert_eq!(s(|o| astring(o, b"nil")), "\"nil\"");
        assert_eq!(s(|o| astring(o, b"a*")), "\"a*\"");
    }

    #[test]
    fn numbers() {
        assert_eq!(s(|o| number(o, 0)), "0");
        assert_eq!(s(|o| number(o, 4294967295)), "4294967295");
    }
}
