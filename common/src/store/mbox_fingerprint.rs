//! The fingerprint that recognises an mbox message after other tools rewrote its file: FNV-1a
//! over its lines, streaming (fed the quoted bytes in pieces cut anywhere).

use super::mbox::Parsed;
use super::mbox_stream::{FromMatch, Step};

/// Headers other tools (mutt, Dovecot, UW) rewrite to store state; ignored when
/// recognising a message after its file was rewritten.
const VOLATILE_HEADERS: [&[u8]; 8] = [
    b"status:",
    b"x-status:",
    b"x-keywords:",
    b"x-uid:",
    b"x-imap:",
    b"x-imapbase:",
    b"content-length:",
    b"lines:",
];

/// 64-bit FNV-1a over the message lines (line ends as `\n`), skipping volatile header lines
/// and their continuations, so a message is still recognised after mutt rewrote it
/// (`Status:`, `Content-Length:`, `Lines:` added, header block with LF line ends).
///
/// Fed the quoted bytes in pieces cut anywhere: a line is never held whole (only its first
/// [`HEAD`] bytes while a header line is classified).
pub(super) struct Builder {
    from: u64,
    off: u64,
    len: u64,
    quoted_lines: u64,
    hash: u64,
    in_header: bool,
    /// The current header field is volatile (its continuation lines are skipped too).
    skipping: bool,
    date: Option<i64>,
    /// The first bytes of the current line while it is classified (in the header only).
    head: [u8; HEAD],
    head_len: usize,
    classifying: bool,
    /// The current line is left out of the hash.
    skip_line: bool,
    /// Deciding whether the current line is a quoted `>From ` line.
    from_like: Option<FromMatch>,
    /// A CR not hashed yet: before a LF it is left out.
    cr: bool,
}

/// Bytes of a header line looked at to recognise a volatile field.
const HEAD: usize = 16;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Builder {
    pub(super) fn new(from: u64, off: u64, date: Option<i64>) -> Self {
        Builder {
            from,
            off,
            len: 0,
            quoted_lines: 0,
            hash: FNV_OFFSET,
            in_header: true,
            skipping: false,
            date,
            head: [0; HEAD],
            head_len: 0,
            classifying: true,
            skip_line: false,
            from_like: Some(FromMatch::default()),
            cr: false,
        }
    }

    /// Line ends count as `\n`: mutt rewrites the header block with bare LFs.
    fn hash_byte(&mut self, b: u8) {
        if self.cr {
            self.cr = false;
            if b != b'\n' {
                self.hash = (self.hash ^ u64::from(b'\r')).wrapping_mul(FNV_PRIME);
            }
        }
        if b == b'\r' {
            self.cr = true;
            return;
        }
        self.hash = (self.hash ^ u64::from(b)).wrapping_mul(FNV_PRIME);
    }

    /// Whether the line whose first bytes are `head` is hashed (header lines of volatile
    /// fields are not).
    fn classify(&mut self) {
        let head = &self.head[..self.head_len];
        self.skip_line = if head == b"\n" || head == b"\r\n" {
            self.in_header = false;
            self.skipping = false;
            false
        } else if head.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            self.skipping
        } else {
            let lower: Vec<u8> = head.iter().map(u8::to_ascii_lowercase).collect();
            self.skipping = VOLATILE_HEADERS.iter().any(|h| lower.starts_with(h));
            self.skipping
        };
        self.classifying = false;
        if !self.skip_line {
            let head = self.head;
            for &b in &head[..self.head_len] {
                self.hash_byte(b);
            }
        }
    }

    pub(super) fn feed(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        for &b in bytes {
            if let Some(m) = self.from_like.as_mut() {
                match m.push(b) {
                    Step::More => {}
                    Step::Yes => {
                        if m.gts > 0 {
                            self.quoted_lines += 1;
                        }
                        self.from_like = None;
                    }
                    Step::No => self.from_like = None,
                }
            }
            if self.classifying {
                self.head[self.head_len] = b;
                self.head_len += 1;
                if b == b'\n' || self.head_len == HEAD {
                    self.classify();
                }
            } else if !self.skip_line {
                self.hash_byte(b);
            }
            if b == b'\n' {
                self.from_like = Some(FromMatch::default());
                self.classifying = self.in_header;
                self.head_len = 0;
                self.skip_line = false;
            }
        }
    }

    pub(super) fn finish(mut self) -> Parsed {
        if self.classifying && self.head_len > 0 {
            self.classify();
        }
        if self.cr {
            self.cr = false;
            self.hash = (self.hash ^ u64::from(b'\r')).wrapping_mul(FNV_PRIME);
        }
        Parsed {
            from: self.from,
            off: self.off,
            len: self.len,
            size: self.len - self.quoted_lines,
            fingerprint: self.hash,
            date: self.date,
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::store::mbox::{is_from_like, quote};

    const MBOX_CHUNK: usize = 1 << 16;

    /// The line-at-a-time fingerprint this module used before it streamed: indexes on disk
    /// hold its values, so the streaming [`Builder`] must give the same.
    fn reference_fingerprint(quoted: &[u8]) -> (u64, u64) {
        let (mut hash, mut quoted_lines) = (FNV_OFFSET, 0u64);
        let (mut in_header, mut skipping) = (true, false);
        for line in quoted.split_inclusive(|b| *b == b'\n') {
            if line.first() == Some(&b'>') && is_from_like(line) {
                quoted_lines += 1;
            }
            if in_header {
                if line == b"\n" || line == b"\r\n" {
                    in_header = false;
                    skipping = false;
                } else if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                    if skipping {
                        continue;
                    }
                } else {
                    let lower: Vec<u8> = line.iter().take(16).map(u8::to_ascii_lowercase).collect();
                    skipping = VOLATILE_HEADERS.iter().any(|h| lower.starts_with(h));
                    if skipping {
                        continue;
                    }
                }
            }
            let text = line
                .strip_suffix(b"\n")
                .map_or(line, |l| l.strip_suffix(b"\r").unwrap_or(l));
            for b in text.iter().chain(line.ends_with(b"\n").then_some(&b'\n')) {
                hash = (hash ^ u64::from(*b)).wrapping_mul(FNV_PRIME);
            }
        }
        (hash, quoted_lines)
    }

    /// Messages that probe every rule: volatile headers and their continuations, CRLF and LF,
    /// CRs alone, quoted lines, lines far longer than a chunk, a long `>` run.
    pub(in crate::store) fn tricky_messages() -> Vec<Vec<u8>> {
        let mut long_line = b"Subject: long\r\n\r\n".to_vec();
        long_line.resize(3 * MBOX_CHUNK + 17, b'x');
        long_line.extend_from_slice(b"\r\nFrom the end\r\n");
        let mut gts = b"Subject: gts\n\n".to_vec();
        gts.resize(gts.len() + MBOX_CHUNK + 3, b'>');
        gts.extend_from_slice(b"From x\n");
        gts.resize(gts.len() + 2 * MBOX_CHUNK, b'>');
        gts.extend_from_slice(b"Fro\n\n\nFrom y\n");
        let mut many = b"Subject: many lines\r\n\r\n".to_vec();
        while many.len() < 3 * MBOX_CHUNK {
            many.extend_from_slice(b"From a line\r\n>From b\r\nplain \r\r\n\n.\r\n");
        }
        vec![
            b"Subject: 1\n\nFrom me\nbody\n".to_vec(),
            b"Status: RO\r\nX-Keywords: a\r\n  cont\r\nSubject: 2\r\n\tc2\r\nContent-Length: 9\r\n\r\n>From you\r\n".to_vec(),
            b"X-UID: 12345678901234567890\nLines: 3\n\nbody with\rcr\r\n".to_vec(),
            b"\n\nFrom x\n\n".to_vec(),
            long_line,
            gts,
            many,
        ]
    }

    #[test]
    fn streaming_fingerprint_matches_the_line_at_a_time_one() {
        for msg in tricky_messages() {
            let mut quoted = Vec::new();
            quote(&msg, &mut quoted);
            let (hash, quoted_lines) = reference_fingerprint(&quoted);
            for step in [1, 3, 16, 17, 4096, quoted.len().max(1)] {
                let mut b = Builder::new(0, 0, None);
                for piece in quoted.chunks(step) {
                    b.feed(piece);
                }
                let p = b.finish();
                assert_eq!(p.fingerprint, hash, "step {step}");
                assert_eq!(p.len - p.size, quoted_lines, "step {step}");
            }
        }
    }
}
