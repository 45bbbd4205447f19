//! APPEND's `UTF8 (literal8)` message form (RFC 6855 section 4), which Thunderbird uses to
//! save sent mail once UTF8=ACCEPT is enabled: `APPEND "Sent" (\Seen) UTF8 (~{452+}...)`.
//!
//! imap-codec reads APPEND with a literal or a literal8 but not this wrapper, so the wrapper
//! is taken off before the command is parsed; what remains is the literal8 form of BINARY
//! (RFC 3516), which it reads. One linear pass; literals and quoted strings are copied
//! unchanged, so their content is never mistaken for the wrapper.

/// The command without its `UTF8 (` ... `)` wrappers, or `None` if it has none (or is not
/// an APPEND).
pub fn unwrap(cmd: &[u8]) -> Option<Vec<u8>> {
    let verb_at = cmd.iter().position(|&b| b == b' ')? + 1;
    let verb = cmd.get(verb_at..verb_at + 7)?;
    if !verb.eq_ignore_ascii_case(b"APPEND ") {
        return None;
    }
    let mut out = Vec::with_capacity(cmd.len());
    let mut changed = false;
    let mut i = 0;
    while i < cmd.len() {
        let rest = &cmd[i..];
        if let Some((header, len)) = literal_header(rest) {
            let end = (i + header).saturating_add(len).min(cmd.len());
            out.extend_from_slice(&cmd[i..end]);
            i = end;
            continue;
        }
        if rest.len() > 6
            && rest[..6].eq_ignore_ascii_case(b"UTF8 (")
            && i > 0
            && cmd[i - 1] == b' '
            && let Some((header, len)) = literal_header(&rest[6..])
            && rest[6] == b'~'
        {
            let data_end = (i + 6 + header).saturating_add(len);
            if cmd.get(data_end) == Some(&b')') {
                out.extend_from_slice(&cmd[i + 6..data_end]);
                i = data_end + 1;
                changed = true;
                continue;
            }
        }
        if cmd[i] == b'"' {
            let end = quoted_end(cmd, i);
            out.extend_from_slice(&cmd[i..end]);
            i = end;
            continue;
        }
        out.push(cmd[i]);
        i += 1;
    }
    changed.then_some(out)
}

/// A literal announcement at the start of `s` (`{n}`, `{n+}`, `~{n}`, `~{n+}`, then CRLF):
/// its length in bytes and the literal's length.
fn literal_header(s: &[u8]) -> Option<(usize, usize)> {
    let open = match s.first()? {
        b'{' => 1,
        b'~' if s.get(1) == Some(&b'{') => 2,
        _ => return None,
    };
    let digits = s[open..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let len: usize = std::str::from_utf8(&s[open..open + digits])
        .ok()?
        .parse()
        .ok()?;
    let mut j = open + digits;
    if s.get(j) == Some(&b'+') {
        j += 1;
    }
    if s.get(j..j + 3) != Some(b"}\r\n") {
        return None;
    }
    Some((j + 3, len))
}

/// The index just past the quoted string starting at `start` (or the end of the line).
fn quoted_end(cmd: &[u8], start: usize) -> usize {
    let mut j = start + 1;
    while j < cmd.len() {
        match cmd[j] {
            b'\\' => j += 2,
            b'"' => return j + 1,
            b'\r' | b'\n' => return j,
            _ => j += 1,
        }
    }
    cmd.len()
}

#[cfg(test)]
mod tests {
    use super::unwrap;

    #[test]
    fn wrapper_is_removed_and_the_literal8_kept() {
        let cmd = b"12 APPEND \"Sent\" (\\Seen) UTF8 (~{5+}\r\nab)cd)\r\n";
        assert_eq!(
            unwrap(cmd).unwrap(),
            b"12 APPEND \"Sent\" (\\Seen) ~{5+}\r\nab)cd\r\n"
        );
        // Several messages (MULTIAPPEND) each lose their wrapper.
        let cmd = b"a append x UTF8 (~{1}\r\nA) (\\Seen) utf8 (~{2+}\r\nBC)\r\n";
        assert_eq!(
            unwrap(cmd).unwrap(),
            b"a append x ~{1}\r\nA (\\Seen) ~{2+}\r\nBC\r\n"
        );
    }

    #[test]
    fn other_commands_and_look_alikes_are_left_alone() {
        assert_eq!(unwrap(b"a APPEND x {3+}\r\nabc\r\n"), None);
        assert_eq!(unwrap(b"a SEARCH UTF8 (~{1}\r\nx)\r\n"), None);
        // The wrapper's text inside a literal or a quoted name is data.
        assert_eq!(unwrap(b"a APPEND x {14+}\r\nUTF8 (~{1}\r\nx)\r\n"), None);
        assert_eq!(unwrap(b"a APPEND \"UTF8 (~{1}\" {1}\r\nx\r\n"), None);
        // A literal announcing more than there is: no panic.
        assert_eq!(unwrap(b"a APPEND x UTF8 (~{99}\r\nabc)\r\n"), None);
        assert_eq!(
            unwrap(b"a APPEND x UTF8 (~{18446744073709551615}\r\n"),
            None
        );
    }
}
