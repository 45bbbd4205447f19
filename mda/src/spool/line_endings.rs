//! Canonical CRLF line endings for message content, in one piece or in pieces (the spool
//! writes a big message as it arrives). Shared by the SMTP session and LMTP.

/// Copies `body` into `out` with every line ending as CRLF.
///
/// Only `<CRLF>.<CRLF>` ends DATA, so a bare LF or bare CR (`\n.\n`, `\r.\r`, `\n.\r\n`) is
/// message content, never an end of data. We normalise rather than refuse (the choice Postfix
/// made with `smtpd_forbid_bare_newline = normalize`): a bare LF or a bare CR becomes CRLF.
/// The smuggled-looking line then sits in the body as an ordinary `.` line, and whoever sends
/// the message on (outbound SMTP, LMTP) dot-stuffs it, so no later hop can read it as an end
/// of data either. The message also ends with CRLF afterwards (BDAT content may not).
pub fn normalize_line_endings(body: &[u8], out: &mut Vec<u8>) {
    out.reserve(body.len() + 2);
    normalize_chunk(body, out);
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
}

/// [`normalize_line_endings`] for one piece of a message (the spool writes a big message in
/// pieces): no CRLF is added at the end. A piece must not end in CR, which may be the first
/// half of a CRLF.
pub fn normalize_chunk(body: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                // A CR followed by LF is one line ending, not two.
                if body.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            byte => out.push(byte),
        }
        i += 1;
    }
}

/// True when `body` holds a CR or LF that is not part of a CRLF pair.
pub fn has_bare_line_ending(body: &[u8]) -> bool {
    let mut prev = 0u8;
    for (i, &byte) in body.iter().enumerate() {
        match byte {
            b'\n' if prev != b'\r' => return true,
            b'\r' if body.get(i + 1) != Some(&b'\n') => return true,
            _ => {}
        }
        prev = byte;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        normalize_line_endings(input, &mut out);
        out
    }

    #[test]
    fn bare_line_endings_become_crlf() {
        assert_eq!(normalized(b"a\nb\rc\r\nd"), b"a\r\nb\r\nc\r\nd\r\n");
        assert_eq!(normalized(b"x\n.\ny\r\n"), b"x\r\n.\r\ny\r\n");
        assert_eq!(normalized(b"\r\r\n"), b"\r\n\r\n");
        assert_eq!(normalized(b""), b"");
    }

    #[test]
    fn detects_bare_line_endings() {
        assert!(has_bare_line_ending(b"a\nb"));
        assert!(has_bare_line_ending(b"a\rb"));
        assert!(has_bare_line_ending(b"a\r"));
        assert!(!has_bare_line_ending(b"a\r\nb\r\n"));
    }
}
