//! How a message goes over the wire: CRLF line ends, byte-stuffing of lines that begin with
//! `.`, and the size clients are told in LIST/STAT (RFC 1939 section 3 and 11).
//!
//! Stored messages may have bare LF line ends (mbox, messages filed by other tools). Every
//! line is sent with CRLF, and a last line without a line end gets one, so a message always
//! arrives as whole lines before the terminating `.`. [`wire_size`] counts exactly the bytes
//! [`write_message`] sends, without the stuffing dots and the terminator, as RFC 1939 asks.

/// The size of a message as RETR sends it (CRLF line ends, final line end added).
pub fn wire_size(message: &[u8]) -> u64 {
    let bare_lfs = memchr::memchr_iter(b'\n', message)
        .filter(|&i| i == 0 || message[i - 1] != b'\r')
        .count();
    let mut size = (message.len() + bare_lfs) as u64;
    // A last line without LF gets CRLF; a CR already there becomes part of it.
    match message.last() {
        None | Some(b'\n') => {}
        Some(b'\r') => size += 1,
        Some(_) => size += 2,
    }
    size
}

/// Append `message` to `out` as a multi-line response body, without the terminator: CRLF
/// line ends and dot-stuffing. With `body_lines`, only the header, the blank line after it
/// and that many body lines are sent (TOP). Returns the unstuffed size written.
pub fn write_message(out: &mut Vec<u8>, message: &[u8], body_lines: Option<u64>) -> u64 {
    match body_lines {
        None => write_whole(out, message),
        Some(limit) => write_whole(out, &message[..top_end(message, limit)]),
    }
}

/// RETR: the whole message in one pass. Only line ends are looked at (found with memchr);
/// the text between the places that change is copied in one piece.
fn write_whole(out: &mut Vec<u8>, message: &[u8]) -> u64 {
    out.reserve(message.len() + message.len() / 64 + 16);
    let start = out.len();
    let mut stuffed = 0u64;
    // message[..copied] is in `out` already.
    let mut copied = 0;
    if message.first() == Some(&b'.') {
        out.push(b'.');
        stuffed += 1;
    }
    for lf in memchr::memchr_iter(b'\n', message) {
        if lf == 0 || message[lf - 1] != b'\r' {
            out.extend_from_slice(&message[copied..lf]);
            out.extend_from_slice(b"\r\n");
            copied = lf + 1;
        }
        if message.get(lf + 1) == Some(&b'.') {
            out.extend_from_slice(&message[copied..lf + 1]);
            out.push(b'.');
            stuffed += 1;
            copied = lf + 1;
        }
    }
    out.extend_from_slice(&message[copied..]);
    match message.last() {
        None | Some(b'\n') => {}
        Some(b'\r') => out.push(b'\n'),
        Some(_) => out.extend_from_slice(b"\r\n"),
    }
    (out.len() - start) as u64 - stuffed
}

/// Where TOP stops: after the header, the blank line that ends it, and `limit` body lines.
/// The part before it is sent like a whole message.
fn top_end(message: &[u8], limit: u64) -> usize {
    let mut in_header = true;
    let mut body_lines = 0u64;
    let mut line_start = 0;
    for lf in memchr::memchr_iter(b'\n', message) {
        if !in_header {
            if body_lines >= limit {
                return line_start;
            }
            body_lines += 1;
        }
        let line = &message[line_start..lf];
        if in_header && line.strip_suffix(b"\r").unwrap_or(line).is_empty() {
            in_header = false;
        }
        line_start = lf + 1;
    }
    // A last line without a line end is a body line too.
    if !in_header && body_lines >= limit {
        line_start
    } else {
        message.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(message: &[u8], body_lines: Option<u64>) -> (Vec<u8>, u64) {
        let mut out = Vec::new();
        let n = write_message(&mut out, message, body_lines);
        (out, n)
    }

    #[test]
    fn crlf_message_is_sent_unchanged() {
        let m = b"Subject: x\r\n\r\nhello\r\nworld\r\n";
        let (out, n) = sent(m, None);
        assert_eq!(out, m);
        assert_eq!(n, m.len() as u64);
        assert_eq!(wire_size(m), m.len() as u64);
    }

    #[test]
    fn bare_lf_becomes_crlf_and_size_counts_it() {
        let m = b"Subject: x\n\nhello\nworld\n";
        let (out, n) = sent(m, None);
        assert_eq!(out, b"Subject: x\r\n\r\nhello\r\nworld\r\n");
        assert_eq!(n, out.len() as u64);
        assert_eq!(wire_size(m), out.len() as u64);
    }

    #[test]
    fn missing_final_line_end_is_added() {
        let m = b"Subject: x\r\n\r\nno newline";
        let (out, _) = sent(m, None);
        assert_eq!(out, b"Subject: x\r\n\r\nno newline\r\n");
        assert_eq!(wire_size(m), out.len() as u64);
    }

    #[test]
    fn dots_are_stuffed_but_not_counted() {
        let m = b"A: b\r\n\r\n.\r\n..two\r\n.x\r\nmid.dle\r\n";
        let (out, n) = sent(m, None);
        assert_eq!(out, b"A: b\r\n\r\n..\r\n...two\r\n..x\r\nmid.dle\r\n");
        assert_eq!(n, m.len() as u64);
        assert_eq!(wire_size(m), m.len() as u64);
    }

    #[test]
    fn empty_and_odd_messages() {
        assert_eq!(sent(b"", None).0, b"");
        assert_eq!(wire_size(b""), 0);
        assert_eq!(sent(b"\n", None).0, b"\r\n");
        assert_eq!(wire_size(b"\n"), 2);
        // A CR not before LF is data; only one CR before LF belongs to the line end.
        let m = b"a\rb\r\r\n";
        assert_eq!(sent(m, None).0, b"a\rb\r\r\n");
        assert_eq!(wire_size(m), 6);
        let m = b"a: b\r\n\r\nends in CR\r";
        assert_eq!(sent(m, None).0, b"a: b\r\n\r\nends in CR\r\n");
        assert_eq!(wire_size(m), m.len() as u64 + 1);
    }

    /// RETR's one-pass writer sends exactly what sending line by line does, and
    /// `wire_size` counts it, on many messages made of the bytes that matter.
    #[test]
    fn one_pass_writer_matches_line_by_line_on_tricky_messages() {
        let alphabet = [b'\r', b'\n', b'.', b'a', b'\r', b'\n'];
        for message in random_messages(alphabet, 0x2545_f491_4f6c_dd1d) {
            let mut by_lines = Vec::new();
            write_line_by_line(&mut by_lines, &message, u64::MAX);
            let (out, n) = sent(&message, None);
            assert_eq!(out, by_lines, "{message:?}");
            let dots = out.len() as u64 - n;
            assert_eq!(wire_size(&message), n, "{message:?} ({dots} stuffed)");
            // Appending to a non-empty buffer works the same.
            let mut after = b"+OK\r\n".to_vec();
            write_message(&mut after, &message, None);
            assert_eq!(&after[5..], &out[..]);
        }
    }

    /// RETR and TOP as first written, line by line (a `limit` of `u64::MAX` sends every
    /// body line): the oracle for the one-pass writer and [`top_end`].
    fn write_line_by_line(out: &mut Vec<u8>, message: &[u8], limit: u64) -> u64 {
        let start = out.len();
        let mut stuffed = 0u64;
        let mut in_header = true;
        let mut body_sent = 0u64;
        for line in lines(message) {
            if !in_header {
                if body_sent >= limit {
                    break;
                }
                body_sent += 1;
            }
            if line.first() == Some(&b'.') {
                out.push(b'.');
                stuffed += 1;
            }
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
            if in_header && line.is_empty() {
                in_header = false;
            }
        }
        (out.len() - start) as u64 - stuffed
    }

    /// The lines of a message without their line ends (LF, or CRLF: one CR is removed).
    fn lines(message: &[u8]) -> impl Iterator<Item = &[u8]> {
        let body = message.strip_suffix(b"\n").unwrap_or(message);
        let empty = message.is_empty();
        body.split(|b| *b == b'\n')
            .filter(move |_| !empty)
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
    }

    /// 2,000 messages of up to 39 bytes drawn from `alphabet` (a fixed-seed generator).
    fn random_messages(alphabet: [u8; 6], mut seed: u64) -> impl Iterator<Item = Vec<u8>> {
        (0..2000).map(move |len| {
            (0..len % 40)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect()
        })
    }

    #[test]
    fn top_matches_line_by_line_on_tricky_messages() {
        let alphabet = [b'\r', b'\n', b'.', b'a', b'\n', b'\n'];
        for message in random_messages(alphabet, 0x9e37_79b9_7f4a_7c15) {
            for limit in [0, 1, 2, 5, u64::MAX] {
                let mut want = Vec::new();
                let want_n = write_line_by_line(&mut want, &message, limit);
                let (out, n) = sent(&message, Some(limit));
                assert_eq!((out, n), (want, want_n), "{message:?} TOP {limit}");
            }
        }
    }

    #[test]
    fn top_sends_header_blank_line_and_n_body_lines() {
        let m = b"From: a\r\nSubject: s\r\n\r\n1\r\n2\r\n.3\r\n4\r\n5\r\n6\r\n";
        assert_eq!(sent(m, Some(0)).0, b"From: a\r\nSubject: s\r\n\r\n");
        assert_eq!(
            sent(m, Some(5)).0,
            b"From: a\r\nSubject: s\r\n\r\n1\r\n2\r\n..3\r\n4\r\n5\r\n"
        );
        assert_eq!(sent(m, Some(100)).0, sent(m, None).0);
        // No body at all: the whole header.
        assert_eq!(sent(b"From: a\nX: y\n", Some(0)).0, b"From: a\r\nX: y\r\n");
    }
}
