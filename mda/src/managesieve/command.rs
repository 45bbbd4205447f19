//! ManageSieve command framing (RFC 5804 section 4): lines of atoms and quoted strings, and
//! literals (`{n+}` as RFC 5804 has clients send them; `{n}` is taken the same way, without a
//! continuation) that carry a command on across lines.
//!
//! Sans I/O: the I/O loop hands over each line; when a line ends with a literal the framer
//! says how many bytes to read next, and the loop hands those over before the next line. Every
//! step is linear in its input, the number of arguments is bounded, and a literal's size is
//! checked against the limit of the session state before a byte of it is read.

/// One argument of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// A bare word: the command name, a number, `ACTIVE`.
    Atom(String),
    /// A quoted string or a literal: UTF-8 is checked where the command needs text.
    Str(Vec<u8>),
}

impl Arg {
    /// The argument as a string (quoted or literal), if it is one.
    pub fn as_str_bytes(&self) -> Option<&[u8]> {
        match self {
            Arg::Str(s) => Some(s),
            Arg::Atom(_) => None,
        }
    }
}

/// Most arguments of one command (PUTSCRIPT and RENAMESCRIPT have two).
pub const MAX_ARGS: usize = 8;

/// What the framer needs after a line.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    /// A complete command: its name first.
    Command(Vec<Arg>),
    /// Read exactly this many bytes and hand them to [`Framer::literal`].
    Literal(usize),
    /// A literal above the limit: the I/O loop either skips its bytes (then goes on reading
    /// the command, which ends in [`Framed::Error`]) or closes the connection.
    TooBig(usize),
    /// The command is malformed; it was dropped whole.
    Error(String),
}

/// Collects one command over its lines and literals.
#[derive(Debug, Default)]
pub struct Framer {
    args: Vec<Arg>,
    /// Set when a literal was too big: the rest of the command is read and dropped.
    failed: Option<String>,
}

impl Framer {
    pub fn new() -> Framer {
        Framer::default()
    }

    /// Whether a command is under way (a literal has been announced).
    pub fn in_command(&self) -> bool {
        !self.args.is_empty() || self.failed.is_some()
    }

    /// Forget the command under way.
    pub fn reset(&mut self) {
        self.args.clear();
        self.failed = None;
    }

    /// One line, without its CRLF. `max_literal` is the largest literal the session takes now.
    pub fn line(&mut self, line: &[u8], max_literal: usize) -> Framed {
        let mut i = 0;
        loop {
            while i < line.len() && line[i] == b' ' {
                i += 1;
            }
            if i >= line.len() {
                break;
            }
            let arg = match line[i] {
                b'"' => match quoted(line, i + 1) {
                    Ok((s, next)) => {
                        i = next;
                        Arg::Str(s)
                    }
                    Err(e) => return self.fail(e),
                },
                b'{' => {
                    return match literal_size(&line[i..]) {
                        Some(n) if n > max_literal => {
                            self.failed
                                .get_or_insert_with(|| format!("Literal of {n} bytes is too big"));
                            Framed::TooBig(n)
                        }
                        Some(n) => {
                            if self.args.len() >= MAX_ARGS {
                                // Read and drop it: the client sends it without waiting.
                                self.failed
                                    .get_or_insert_with(|| "Too many arguments".into());
                            }
                            Framed::Literal(n)
                        }
                        None => self.fail("Malformed literal".into()),
                    };
                }
                _ => {
                    let start = i;
                    while i < line.len() && line[i] != b' ' {
                        i += 1;
                    }
                    let word = &line[start..i];
                    if !word
                        .iter()
                        .all(|b| b.is_ascii_graphic() && !b"\"{}()".contains(b))
                    {
                        return self.fail("Invalid characters in an atom".into());
                    }
                    Arg::Atom(String::from_utf8_lossy(word).into_owned())
                }
            };
            if i < line.len() && line[i] != b' ' {
                return self.fail("Missing space between arguments".into());
            }
            if self.args.len() >= MAX_ARGS {
                return self.fail("Too many arguments".into());
            }
            self.args.push(arg);
        }
        if let Some(e) = self.failed.take() {
            self.args.clear();
            return Framed::Error(e);
        }
        Framed::Command(std::mem::take(&mut self.args))
    }

    /// The bytes of the literal announced by the last line (ignored if the command failed).
    pub fn literal(&mut self, data: Vec<u8>) {
        if self.failed.is_none() {
            self.args.push(Arg::Str(data));
        }
    }

    fn fail(&mut self, message: String) -> Framed {
        self.args.clear();
        // A literal of this command may still be announced on this line: it was dropped with
        // the command, and the client's bytes after it are read as new lines (RFC 5804 has no
        // way to resynchronise a non-synchronising literal we did not ask for).
        let message = self.failed.take().unwrap_or(message);
        Framed::Error(message)
    }
}

/// A quoted string starting after its opening quote: the string and the index after the
/// closing quote. Only `\"` and `\\` are escapes (RFC 5804 `quoted`).
fn quoted(line: &[u8], mut i: usize) -> Result<(Vec<u8>, usize), String> {
    let mut out = Vec::new();
    while i < line.len() {
        match line[i] {
            b'"' => return Ok((out, i + 1)),
            b'\\' => match line.get(i + 1) {
                Some(c @ (b'"' | b'\\')) => {
                    out.push(*c);
                    i += 2;
                }
                _ => return Err("Invalid escape in a quoted string".into()),
            },
            b'\r' | b'\n' | 0 => return Err("Invalid character in a quoted string".into()),
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Err("Unterminated quoted string".into())
}

/// `{123+}` or `{123}` ending the line: the size.
fn literal_size(rest: &[u8]) -> Option<usize> {
    let inner = rest.strip_prefix(b"{")?.strip_suffix(b"}")?;
    let digits = inner.strip_suffix(b"+").unwrap_or(inner);
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A string for a response: quoted when it can be, else a literal (`{n}` CRLF bytes).
pub fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    if s.len() <= 1024 && !s.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
        out.extend_from_slice(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Arg {
        Arg::Str(x.as_bytes().to_vec())
    }

    #[test]
    fn atoms_quoted_strings_and_literals() {
        let mut f = Framer::new();
        assert_eq!(
            f.line(br#"HAVESPACE "my \"script\"" 1234"#, 100),
            Framed::Command(vec![
                Arg::Atom("HAVESPACE".into()),
                s("my \"script\""),
                Arg::Atom("1234".into())
            ])
        );
        assert_eq!(f.line(b"PUTSCRIPT \"a\" {5+}", 100), Framed::Literal(5));
        f.literal(b"keep;".to_vec());
        assert_eq!(
            f.line(b"", 100),
            Framed::Command(vec![Arg::Atom("PUTSCRIPT".into()), s("a"), s("keep;")])
        );
        // A literal in the middle of a command, and the synchronising form.
        assert_eq!(f.line(b"RENAMESCRIPT {1}", 100), Framed::Literal(1));
        f.literal(b"x".to_vec());
        assert_eq!(
            f.line(b" \"y\"", 100),
            Framed::Command(vec![Arg::Atom("RENAMESCRIPT".into()), s("x"), s("y")])
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let mut f = Framer::new();
        for bad in [
            &b"PUTSCRIPT \"unterminated"[..],
            b"X \"bad \\n escape\"",
            b"X {12x}",
            b"X {99999999999}",
            b"X \"a\"\"b\"",
            b"X (list)",
        ] {
            assert!(matches!(f.line(bad, 100), Framed::Error(_)), "{bad:?}");
            assert!(!f.in_command());
        }
        let many = b"X a b c d e f g h i";
        assert!(matches!(f.line(many, 100), Framed::Error(_)));
    }

    #[test]
    fn a_big_literal_is_announced_then_the_command_fails() {
        let mut f = Framer::new();
        assert_eq!(f.line(b"PUTSCRIPT \"a\" {500+}", 100), Framed::TooBig(500));
        f.literal(Vec::new());
        assert!(matches!(f.line(b"", 100), Framed::Error(e) if e.contains("500")));
        assert!(!f.in_command());
    }

    #[test]
    fn strings_are_quoted_or_sent_as_literals() {
        let mut out = Vec::new();
        write_string(&mut out, b"a \"b\" \\");
        assert_eq!(out, b"\"a \\\"b\\\" \\\\\"");
        out.clear();
        write_string(&mut out, b"two\r\nlines");
        assert_eq!(out, b"{10}\r\ntwo\r\nlines");
    }
}
