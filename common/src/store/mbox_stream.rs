//! mboxrd `>From ` quoting and unquoting as streams: the input comes in pieces cut anywhere
//! (a big delivery is copied from its file a chunk at a time, a partial read unquotes only
//! what it needs), the work is linear and the state is a few bytes, whatever the line
//! lengths (a 40 MB line or a line of a million `>` included).

/// Decides, byte by byte from the start of a line, whether the line matches `^>*From `.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct FromMatch {
    /// `>` seen at the start of the line.
    pub gts: u64,
    /// Bytes of `From ` matched after them.
    matched: u8,
}

const FROM: &[u8; 5] = b"From ";

/// What a [`FromMatch`] knows after one more byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    More,
    Yes,
    No,
}

impl FromMatch {
    pub fn push(&mut self, byte: u8) -> Step {
        if self.matched == 0 && byte == b'>' {
            self.gts += 1;
            return Step::More;
        }
        if byte == FROM[self.matched as usize] {
            self.matched += 1;
            if self.matched as usize == FROM.len() {
                return Step::Yes;
            }
            return Step::More;
        }
        Step::No
    }

    /// The part of `From ` matched so far (held back until the line is decided).
    fn partial(&self) -> &'static [u8] {
        &FROM[..self.matched as usize]
    }
}

/// Streaming [`super::mbox::quote`]: every line matching `^>*From ` gets one more `>`.
///
/// The `>` of a line's leading run go out at once (one more `>` in front of the run or at its
/// end is the same bytes), so only up to four bytes of `From ` are ever held back.
#[derive(Debug)]
pub(super) struct Quoter {
    /// Deciding the current line (at its start); `None` in the middle of a line.
    deciding: Option<FromMatch>,
    /// The last byte of the input (the writer ends the message with a line end).
    pub last: Option<u8>,
    /// Bytes of input taken.
    pub taken: u64,
}

impl Default for Quoter {
    fn default() -> Self {
        Quoter {
            deciding: Some(FromMatch::default()),
            last: None,
            taken: 0,
        }
    }
}

impl Quoter {
    /// Quotes `input`, appending to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + 8);
        self.taken += input.len() as u64;
        if let Some(&b) = input.last() {
            self.last = Some(b);
        }
        let mut rest = input;
        while !rest.is_empty() {
            match self.deciding.as_mut() {
                None => {
                    // The middle of a line: copy through its end.
                    let n = rest
                        .iter()
                        .position(|b| *b == b'\n')
                        .map_or(rest.len(), |i| i + 1);
                    out.extend_from_slice(&rest[..n]);
                    if rest[n - 1] == b'\n' {
                        self.deciding = Some(FromMatch::default());
                    }
                    rest = &rest[n..];
                }
                Some(m) => {
                    let byte = rest[0];
                    rest = &rest[1..];
                    let held = m.partial();
                    match m.push(byte) {
                        Step::More if byte == b'>' => out.push(b'>'),
                        Step::More => {}
                        Step::Yes => {
                            out.push(b'>');
                            out.extend_from_slice(FROM);
                            self.deciding = None;
                        }
                        Step::No => {
                            out.extend_from_slice(held);
                            out.push(byte);
                            self.deciding = (byte == b'\n').then(FromMatch::default);
                        }
                    }
                }
            }
        }
    }

    /// The end of the input: what is held back goes out as it was.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(m) = self.deciding.take() {
            out.extend_from_slice(m.partial());
        }
    }
}

/// Streaming [`super::mbox::unquote`]: every line matching `^>+From ` loses one `>`.
///
/// The first `>` of a line is held back until the line is decided; the others go out at once.
#[derive(Debug)]
pub(super) struct Unquoter {
    deciding: Option<FromMatch>,
}

impl Default for Unquoter {
    fn default() -> Self {
        Unquoter {
            deciding: Some(FromMatch::default()),
        }
    }
}

impl Unquoter {
    /// Unquotes `input`, appending to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len());
        let mut rest = input;
        while !rest.is_empty() {
            match self.deciding.as_mut() {
                None => {
                    let n = rest
                        .iter()
                        .position(|b| *b == b'\n')
                        .map_or(rest.len(), |i| i + 1);
                    out.extend_from_slice(&rest[..n]);
                    if rest[n - 1] == b'\n' {
                        self.deciding = Some(FromMatch::default());
                    }
                    rest = &rest[n..];
                }
                Some(m) => {
                    let byte = rest[0];
                    rest = &rest[1..];
                    let held = m.partial();
                    match m.push(byte) {
                        // The first `>` waits; later ones go out.
                        Step::More if byte == b'>' && m.gts > 1 => out.push(b'>'),
                        Step::More => {}
                        Step::Yes => {
                            // With a `>` run: the held one is the one dropped.
                            out.extend_from_slice(FROM);
                            self.deciding = None;
                        }
                        Step::No => {
                            if m.gts > 0 {
                                out.push(b'>');
                            }
                            out.extend_from_slice(held);
                            out.push(byte);
                            self.deciding = (byte == b'\n').then(FromMatch::default);
                        }
                    }
                }
            }
        }
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(m) = self.deciding.take() {
            if m.gts > 0 {
                out.push(b'>');
            }
            out.extend_from_slice(m.partial());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::mbox::{quote, unquote};
    use super::*;

    fn samples() -> Vec<Vec<u8>> {
        let mut many_gts = vec![b'>'; 5000];
        many_gts.extend_from_slice(b"From x\n>>>Fro\nFrom");
        vec![
            b"Subject: x\r\n\r\nFrom here\r\n>From there\r\n>>From far\r\nFrom".to_vec(),
            b"From \nFrom\n>From\n>From \n>\n>>\nFr\nF".to_vec(),
            b">>>>".to_vec(),
            b"\n\n>From x".to_vec(),
            b"a From b\nxFrom c\n>xFrom d\n".to_vec(),
            b"".to_vec(),
            many_gts,
        ]
    }

    #[test]
    fn streaming_quote_and_unquote_match_the_whole_message_versions() {
        for msg in samples() {
            let mut whole = Vec::new();
            quote(&msg, &mut whole);
            for step in [1, 2, 3, 5, 7, 4096] {
                let mut q = Quoter::default();
                let mut out = Vec::new();
                for piece in msg.chunks(step) {
                    q.feed(piece, &mut out);
                }
                q.finish(&mut out);
                assert_eq!(out, whole, "quote, step {step}, {msg:?}");
                assert_eq!(q.taken, msg.len() as u64);

                let mut u = Unquoter::default();
                let mut back = Vec::new();
                for piece in whole.chunks(step) {
                    u.feed(piece, &mut back);
                }
                u.finish(&mut back);
                assert_eq!(back, unquote(&whole), "unquote, step {step}, {msg:?}");
                assert_eq!(back, msg, "round trip, step {step}");
            }
        }
    }
}
