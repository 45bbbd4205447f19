//! Splits the client's byte stream into complete commands: lines plus the literals they
//! announce (`{n}` synchronizing, `{n+}` LITERAL+, `~{n}` literal8).
//!
//! Hand-written instead of imap-codec's Fragmentizer because IMAP needs two different
//! limits (a command line, and a literal such as an APPEND message) and must refuse a
//! too-large synchronizing literal before the client sends it.

/// A piece of client input, ready for the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete command, its CRLF and literal data included.
    Command(Vec<u8>),
    /// A synchronizing literal was announced and accepted: send a continuation request.
    Continue,
    /// A line in line mode (AUTHENTICATE responses, IDLE's DONE), without its line end.
    Line(Vec<u8>),
    /// A command line longer than the limit; it was skipped. The tag, if one was seen.
    LineTooLong(Option<Vec<u8>>),
    /// A literal larger than the limit. Synchronizing ones were refused before the client
    /// sent them; non-synchronizing ones were read and dropped. The command is skipped.
    LiteralTooLarge(Option<Vec<u8>>),
    /// A non-synchronizing literal larger than the limit while the framer is strict
    /// (before login): the client sends it anyway, so the connection is to be closed
    /// rather than read it. Everything buffered was dropped.
    LiteralRefused(Option<Vec<u8>>),
}

#[derive(Debug)]
enum State {
    /// Reading a line of the current command.
    Line,
    /// Reading `remaining` bytes of literal data (kept unless the command is poisoned).
    Literal { remaining: u64 },
    /// Skipping the rest of an overlong line (already reported as [`Frame::LineTooLong`]).
    SkipLine,
}

/// The command framer: bytes in, frames out.
#[derive(Debug)]
pub struct Framer {
    input: Vec<u8>,
    pos: usize,
    /// Bytes after `pos` already searched for a line end: a line arriving in small pieces
    /// is searched once, not once per piece.
    scanned: usize,
    command: Vec<u8>,
    state: State,
    /// Set when a literal was too large: the rest of the command is read and dropped.
    poisoned: bool,
    /// Whether the next frame is a plain line (no literal processing).
    line_mode: bool,
    max_line: usize,
    max_literal: u64,
    /// Close on an oversized non-synchronizing literal instead of reading it (before login).
    strict: bool,
    tag: Option<Vec<u8>>,
}

impl Framer {
    pub fn new(max_line: usize, max_literal: u64) -> Self {
        Framer {
            input: Vec::new(),
            pos: 0,
            scanned: 0,
            command: Vec::new(),
            state: State::Line,
            poisoned: false,
            line_mode: false,
            max_line,
            max_literal,
            strict: false,
            tag: None,
        }
    }

    /// Sets the limits for the frames still to come (they depend on the session state:
    /// small before login). `strict`: an oversized non-synchronizing literal ends the
    /// connection ([`Frame::LiteralRefused`]) instead of being read and dropped.
    pub fn set_limits(&mut self, max_line: usize, max_literal: u64, strict: bool) {
        self.max_line = max_line;
        self.max_literal = max_literal;
        self.strict = strict;
    }

    /// Adds bytes received from the client.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos == self.input.len() {
            self.input.clear();
            self.pos = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// Read the next frame as a plain line (after a continuation request for AUTHENTICATE,
    /// or while idling).
    pub fn set_line_mode(&mut self, on: bool) {
        self.line_mode = on;
    }

    /// Drops everything buffered (after STARTTLS nothing sent in the clear may be used).
    pub fn clear(&mut self) {
        self.input.clear();
        self.pos = 0;
        self.scanned = 0;
        self.command.clear();
        self.state = State::Line;
        self.poisoned = false;
        self.tag = None;
    }

    /// Takes the bytes not yet framed (COMPRESS: they are already compressed).
    pub fn take_unread(&mut self) -> Vec<u8> {
        let rest = self.input.split_off(self.pos);
        self.input.clear();
        self.pos = 0;
        self.scanned = 0;
        rest
    }

    /// Whether a command is partly received (for the idle timer: a client in the middle of
    /// sending a large APPEND is not idle).
    pub fn in_command(&self) -> bool {
        !self.command.is_empty() || !matches!(self.state, State::Line)
    }

    /// Gives back memory after a large command (an APPEND) when nothing is buffered, so
    /// thousands of idle connections stay small.
    pub fn shrink(&mut self) {
        self.shrink_to(16 * 1024);
    }

    /// Like [`Framer::shrink`], keeping at most `keep` bytes of each buffer (0 while idling:
    /// the next read allocates again).
    pub fn shrink_to(&mut self, keep: usize) {
        if self.pos >= self.input.len() && self.command.is_empty() {
            self.input.clear();
            self.pos = 0;
            if self.input.capacity() > keep {
                self.input = Vec::new();
            }
            if self.command.capacity() > keep {
                self.command = Vec::new();
            }
        }
    }

    /// The next complete frame, or `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            match self.state {
                State::Literal { remaining } => {
                    let available = (self.input.len() - self.pos) as u64;
                    let take = available.min(remaining) as usize;
                    if !self.poisoned {
                        self.command
                            .extend_from_slice(&self.input[self.pos..self.pos + take]);
                    }
                    self.pos += take;
                    let remaining = remaining - take as u64;
                    if remaining > 0 {
                        self.state = State::Literal { remaining };
                        self.compact();
                        return None;
                    }
                    self.state = State::Line;
                }
                State::SkipLine => {
                    let nl = self.input[self.pos..].iter().position(|&b| b == b'\n');
                    match nl {
                        Some(p) => {
                            // Reported when the limit was passed; go on with the next line.
                            self.pos += p + 1;
                            self.state = State::Line;
                            self.command.clear();
                            self.poisoned = false;
                            self.tag = None;
                        }
                        None => {
                            self.pos = self.input.len();
                            self.compact();
                            return None;
                        }
                    }
                }
                State::Line => {
                    let from = self.pos + self.scanned;
                    let nl = self.input[from..].iter().position(|&b| b == b'\n');
                    let Some(p) = nl.map(|p| p + self.scanned) else {
                        self.scanned = self.input.len() - self.pos;
                        if self.input.len() - self.pos > self.max_line {
                            // Refused at once, not when (if ever) the line ends.
                            let head = self.head();
                            self.note_tag(&head);
                            self.pos = self.input.len();
                            self.scanned = 0;
                            self.state = State::SkipLine;
                            self.command.clear();
                            self.poisoned = false;
                            self.compact();
                            return Some(Frame::LineTooLong(self.tag.take()));
                        }
                        self.compact();
                        return None;
                    };
                    self.scanned = 0;
                    if p + 1 > self.max_line + 2 {
                        let head = self.head();
                        self.note_tag(&head);
                        self.pos += p + 1;
                        self.command.clear();
                        self.poisoned = false;
                        return Some(Frame::LineTooLong(self.tag.take()));
                    }
                    let line = self.input[self.pos..=self.pos + p].to_vec();
                    self.pos += p + 1;
                    if self.line_mode && self.command.is_empty() {
                        let mut l = line;
                        l.pop();
                        if l.last() == Some(&b'\r') {
                            l.pop();
                        }
                        return Some(Frame::Line(l));
                    }
                    if self.command.is_empty() {
                        self.note_tag(&line);
                    }
                    if !self.poisoned {
                        self.command.extend_from_slice(&line);
                    }
                    match literal_announcement(&line) {
                        None => {
                            let cmd = std::mem::take(&mut self.command);
                            let tag = self.tag.take();
                            if self.poisoned {
                                self.poisoned = false;
                                return Some(Frame::LiteralTooLarge(tag));
                            }
                            return Some(Frame::Command(cmd));
                        }
                        Some((n, sync)) => {
                            let total = self.command.len() as u64 + n;
                            let too_large = n > self.max_literal
                                || total > self.max_literal + 4 * self.max_line as u64;
                            if too_large && sync {
                                // Refused before the client sends it; the command ends here.
                                self.command.clear();
                                self.poisoned = false;
                                return Some(Frame::LiteralTooLarge(self.tag.take()));
                            }
                            if too_large && self.strict {
                                let tag = self.tag.take();
                                self.clear();
                                return Some(Frame::LiteralRefused(tag));
                            }
                            if too_large {
                                self.poisoned = true;
                                self.command.clear();
                            }
                            self.state = State::Literal { remaining: n };
                            if sync && !self.poisoned {
                                return Some(Frame::Continue);
                            }
                        }
                    }
                }
            }
        }
    }

    fn note_tag(&mut self, line: &[u8]) {
        if self.tag.is_none() {
            let end = line
                .iter()
                .position(|&b| b == b' ' || b == b'\r' || b == b'\n')
                .unwrap_or(line.len());
            let tag = &line[..end.min(64)];
            if !tag.is_empty()
                && tag
                    .iter()
                    .all(|&b| b.is_ascii_graphic() && !b"(){%*\"\\+".contains(&b))
            {
                self.tag = Some(tag.to_vec());
            }
        }
    }

    /// The start of the unread input, enough to find a tag in.
    fn head(&self) -> Vec<u8> {
        self.input[self.pos..self.input.len().min(self.pos + 80)].to_vec()
    }

    fn compact(&mut self) {
        if self.pos > 0 && self.pos >= self.input.len() / 2 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
    }
}

/// The literal a line announces at its end: (length, synchronizing).
fn literal_announcement(line: &[u8]) -> Option<(u64, bool)> {
    let l = line.strip_suffix(b"\n")?;
    let l = l.strip_suffix(b"\r").unwrap_or(l);
    let l = l.strip_suffix(b"}")?;
    // At most 19 digits and a `+` or `-`: no need to look further back for the `{`.
    let l = &l[l.len().saturating_sub(21)..];
    let open = l.iter().rposition(|&b| b == b'{')?;
    let mut digits = &l[open + 1..];
    let sync = match digits
        .strip_suffix(b"+")
        .or_else(|| digits.strip_suffix(b"-"))
    {
        Some(d) => {
            digits = d;
            false
        }
        None => true,
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits)
        .ok()?
        .parse()
        .ok()
        .map(|n| (n, sync))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(f: &mut Framer) -> Vec<Frame> {
        std::iter::from_fn(|| f.next_frame()).collect()
    }

    #[test]
    fn plain_commands_in_pieces() {
        let mut f = Framer::new(100, 1000);
        f.push(b"a1 NOOP\r\na2 CAPA");
        assert_eq!(
            frames(&mut f),
            vec![Frame::Command(b"a1 NOOP\r\n".to_vec())]
        );
        f.push(b"BILITY\r\n");
        assert_eq!(
            frames(&mut f),
            vec![Frame::Command(b"a2 CAPABILITY\r\n".to_vec())]
        );
    }

    #[test]
    fn synchronizing_literal_asks_for_continuation() {
        let mut f = Framer::new(100, 1000);
        f.push(b"a LOGIN {5}\r\n");
        assert_eq!(frames(&mut f), vec![Frame::Continue]);
        f.push(b"alice {6}\r\n");
        assert_eq!(frames(&mut f), vec![Frame::Continue]);
        f.push(b"secret\r\n");
        assert_eq!(
            frames(&mut f),
            vec![Frame::Command(
                b"a LOGIN {5}\r\nalice {6}\r\nsecret\r\n".to_vec()
            )]
        );
    }

    #[test]
    fn literal_plus_needs_no_continuation() {
        let mut f = Framer::new(100, 1000);
        f.push(b"a APPEND Sent (\\Seen) {8+}\r\nab\r\ncd\r\n\r\nb NOOP\r\n");
        assert_eq!(
            frames(&mut f),
            vec![
                Frame::Command(b"a APPEND Sent (\\Seen) {8+}\r\nab\r\ncd\r\n\r\n".to_vec()),
                Frame::Command(b"b NOOP\r\n".to_vec())
            ]
        );
    }

    #[test]
    fn too_large_literals() {
        let mut f = Framer::new(100, 10);
        f.push(b"a APPEND x {11}\r\nb NOOP\r\n");
        assert_eq!(
            frames(&mut f),
            vec![
                Frame::LiteralTooLarge(Some(b"a".to_vec())),
                Frame::Command(b"b NOOP\r\n".to_vec())
            ]
        );
        // A non-synchronizing one is read and dropped, and the session goes on.
        f.push(b"c APPEND x {11+}\r\n0123456789A\r\nd NOOP\r\n");
        assert_eq!(
            frames(&mut f),
            vec![
                Frame::LiteralTooLarge(Some(b"c".to_vec())),
                Frame::Command(b"d NOOP\r\n".to_vec())
            ]
        );
    }

    #[test]
    fn overlong_line_is_skipped() {
        let mut f = Framer::new(20, 10);
        f.push(b"a1 SEARCH ");
        assert_eq!(frames(&mut f), vec![]);
        // Refused as soon as the limit is passed, before the line ends.
        f.push(&[b'x'; 50]);
        assert_eq!(
            frames(&mut f),
            vec![Frame::LineTooLong(Some(b"a1".to_vec()))]
        );
        f.push(&[b'x'; 5000]);
        assert_eq!(frames(&mut f), vec![]);
        assert!(f.input.len() - f.pos == 0, "skipped bytes are not kept");
        f.push(b"xxx\r\na2 NOOP\r\n");
        assert_eq!(
            frames(&mut f),
            vec![Frame::Command(b"a2 NOOP\r\n".to_vec())]
        );
        // A complete overlong line in one piece.
        f.push(b"y ");
        f.push(&[b'y'; 30]);
        f.push(b"\r\na3 NOOP\r\n");
        assert_eq!(
            frames(&mut f),
            vec![
                Frame::LineTooLong(Some(b"y".to_vec())),
                Frame::Command(b"a3 NOOP\r\n".to_vec())
            ]
        );
    }

    /// Before login the limits are small, and a non-synchronizing literal over them is
    /// not read: the connection is to be closed.
    #[test]
    fn strict_limits_before_login() {
        let mut f = Framer::new(64 * 1024, 50 * 1024 * 1024);
        f.set_limits(8192, 8192, true);
        f.push(b"a LOGIN {52428800}\r\n");
        assert_eq!(
            frames(&mut f),
            vec![Frame::LiteralTooLarge(Some(b"a".to_vec()))]
        );
        f.push(b"b LOGIN {52428800+}\r\nxxxxxxxx");
        assert_eq!(
            frames(&mut f),
            vec![Frame::LiteralRefused(Some(b"b".to_vec()))]
        );
        assert!(!f.in_command());
        f.push(b"c LOGIN {8}\r\n");
        assert_eq!(frames(&mut f), vec![Frame::Continue]);
        f.push(b"alice@ex secret\r\n");
        assert_eq!(
            frames(&mut f),
            vec![Frame::Command(
                b"c LOGIN {8}\r\nalice@ex secret\r\n".to_vec()
            )]
        );
        // After login the configured limits apply again.
        f.set_limits(64 * 1024, 50 * 1024 * 1024, false);
        f.push(b"d APPEND INBOX {52428800}\r\n");
        assert_eq!(frames(&mut f), vec![Frame::Continue]);
    }

    /// A line that arrives a byte at a time is searched for its end once, not once per
    /// byte (which was quadratic in the line length).
    #[test]
    fn line_in_tiny_pieces_is_linear() {
        let mut f = Framer::new(64 * 1024, 10);
        let started = std::time::Instant::now();
        f.push(b"a ");
        for _ in 0..60_000 {
            f.push(b"x");
            assert_eq!(f.next_frame(), None);
        }
        f.push(b"\r\n");
        assert!(matches!(f.next_frame(), Some(Frame::Command(c)) if c.len() == 60_004));
        let took = started.elapsed();
        assert!(
            took < std::time::Duration::from_millis(300),
            "took {took:?}"
        );
    }

    #[test]
    fn line_mode_for_idle_and_authenticate() {
        let mut f = Framer::new(100, 10);
        f.set_line_mode(true);
        f.push(b"DONE\r\n");
        assert_eq!(frames(&mut f), vec![Frame::Line(b"DONE".to_vec())]);
    }

    #[test]
    fn braces_inside_text_are_not_literals() {
        assert_eq!(literal_announcement(b"a LOGIN \"x{3}\"\r\n"), None);
        assert_eq!(literal_announcement(b"a X {3}\r\n"), Some((3, true)));
        assert_eq!(literal_announcement(b"a X ~{3+}\r\n"), Some((3, false)));
        assert_eq!(literal_announcement(b"a X {}\r\n"), None);
        assert_eq!(
            literal_announcement(b"a X {18446744073709551615}\r\n"),
            None
        );
        assert_eq!(
            literal_announcement(b"a X {9999999999999999999+}\r\n"),
            Some((9_999_999_999_999_999_999, false))
        );
        let mut hostile = vec![b'}'; 64 * 1024];
        hostile.extend_from_slice(b"\r\n");
        assert_eq!(literal_announcement(&hostile), None);
    }
}
