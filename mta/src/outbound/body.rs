//! The content of an outgoing message: in memory (most mail) or, for a big queued message,
//! its queue file, sent a chunk at a time with the dot-stuffing done as it goes, so sending
//! a 40 MB message costs a few hundred KiB of memory, not 40 MB twice (issue 12).

use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// How much of a file is read and sent at a time.
pub const CHUNK: usize = 256 * 1024;

/// The content as the transaction sees it.
#[derive(Debug, Clone, Copy)]
pub enum OutgoingContent<'a> {
    Memory(&'a [u8]),
    File(&'a FileMessage),
}

impl OutgoingContent<'_> {
    pub fn len(&self) -> u64 {
        match self {
            OutgoingContent::Memory(m) => m.len() as u64,
            OutgoingContent::File(f) => f.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message, or its first [`CHUNK`] bytes for a file: enough for the header checks.
    pub fn head(&self) -> &[u8] {
        match self {
            OutgoingContent::Memory(m) => m,
            OutgoingContent::File(f) => &f.head,
        }
    }

    /// Some byte is not ASCII (the server must offer 8BITMIME).
    pub fn eight_bit(&self) -> bool {
        match self {
            OutgoingContent::Memory(m) => !m.is_ascii(),
            OutgoingContent::File(f) => f.eight_bit,
        }
    }
}

/// A queued message in a file, looked at once (a bounded pass) before it is sent.
#[derive(Debug, Clone)]
pub struct FileMessage {
    path: PathBuf,
    len: u64,
    head: Vec<u8>,
    eight_bit: bool,
}

impl FileMessage {
    /// Reads the file once in [`CHUNK`]s for its length, head and 8-bit content.
    pub fn scan(path: &Path) -> io::Result<FileMessage> {
        let mut file = std::fs::File::open(path)?;
        let mut buf = vec![0u8; CHUNK];
        let (mut len, mut head, mut eight_bit) = (0u64, Vec::new(), false);
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            if head.is_empty() {
                head = buf[..n].to_vec();
            }
            eight_bit |= !buf[..n].is_ascii();
            len += n as u64;
        }
        Ok(FileMessage {
            path: path.to_path_buf(),
            len,
            head,
            eight_bit,
        })
    }

    /// [`FileMessage::scan`] on the blocking pool.
    pub async fn scan_async(path: &Path) -> io::Result<FileMessage> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || FileMessage::scan(&path))
            .await
            .map_err(io::Error::other)?
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A message file as DATA content: read a [`CHUNK`] at a time and dot-stuffed as it goes,
/// ending with the `.` line. The SMTP client ([`super::connection`]) and the LMTP client
/// ([`crate::lmtp_client`]) both send big queued messages through it.
pub struct StuffedFile {
    file: tokio::fs::File,
    stuffer: DotStuffer,
    piece: Vec<u8>,
    finished: bool,
}

impl StuffedFile {
    pub async fn open(path: &Path) -> io::Result<StuffedFile> {
        Ok(StuffedFile {
            file: tokio::fs::File::open(path).await?,
            stuffer: DotStuffer::default(),
            piece: vec![0u8; CHUNK],
            finished: false,
        })
    }

    /// Puts the next part of the DATA content into `out` (emptied first); false once the
    /// whole content, end line included, was given.
    pub async fn next_part(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        use tokio::io::AsyncReadExt;
        out.clear();
        if self.finished {
            return Ok(false);
        }
        let n = self.file.read(&mut self.piece).await?;
        if n == 0 {
            self.stuffer.finish(out);
            self.finished = true;
        } else {
            self.stuffer.stuff(&self.piece[..n], out);
        }
        Ok(true)
    }
}

/// Dot-stuffing over pieces of a message (the same output as
/// [`crate::lmtp_client::dot_stuff`] on the whole): a `.` at the start of a line gets
/// another one, wherever the pieces are cut.
#[derive(Debug)]
pub struct DotStuffer {
    at_line_start: bool,
    /// The last two bytes seen, to end the data with CRLF.
    last: [u8; 2],
    empty: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer {
            at_line_start: true,
            last: [0, 0],
            empty: true,
        }
    }
}

impl DotStuffer {
    /// Appends `piece`, stuffed, to `out`.
    pub fn stuff(&mut self, piece: &[u8], out: &mut Vec<u8>) {
        out.reserve(piece.len() + piece.len() / 64);
        for &byte in piece {
            if self.at_line_start && byte == b'.' {
                out.push(b'.');
            }
            out.push(byte);
            self.at_line_start = byte == b'\n';
        }
        match piece {
            [] => {}
            [b] => self.last = [self.last[1], *b],
            [.., a, b] => self.last = [*a, *b],
        }
        self.empty &= piece.is_empty();
    }

    /// The end of the data: CRLF if the message did not end with one, then `.` CRLF.
    pub fn finish(&self, out: &mut Vec<u8>) {
        if !self.empty && self.last != *b"\r\n" {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lmtp_client::dot_stuff;

    #[test]
    fn stuffing_in_pieces_matches_stuffing_the_whole() {
        let mut message = Vec::new();
        for i in 0..5000 {
            message.extend_from_slice(if i % 3 == 0 { b".dot\r\n" } else { b"x.\r\n" });
        }
        message.extend_from_slice(b"..\r\n.");
        for end in [message.len(), message.len() - 1, 0, 1] {
            let whole = dot_stuff(&message[..end]);
            for step in [1, 2, 3, 7, 4096] {
                let mut stuffer = DotStuffer::default();
                let mut out = Vec::new();
                for piece in message[..end].chunks(step) {
                    stuffer.stuff(piece, &mut out);
                }
                stuffer.finish(&mut out);
                assert_eq!(out, whole, "end {end} step {step}");
            }
        }
    }

    #[tokio::test]
    async fn a_stuffed_file_gives_the_dot_stuffed_content_in_bounded_parts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let mut content = Vec::new();
        while content.len() < 3 * CHUNK {
            content.extend_from_slice(b".line\r\nx\r\n");
        }
        content.extend_from_slice(b"..end");
        std::fs::write(&path, &content).unwrap();
        let mut file = StuffedFile::open(&path).await.unwrap();
        let (mut all, mut part) = (Vec::new(), Vec::new());
        while file.next_part(&mut part).await.unwrap() {
            assert!(part.len() <= 2 * CHUNK, "part of {} bytes", part.len());
            all.extend_from_slice(&part);
        }
        assert_eq!(all, dot_stuff(&content));
    }

    #[test]
    fn a_scan_finds_length_head_and_eight_bit_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let mut content = b"Subject: x\r\n\r\n".to_vec();
        content.resize(3 * CHUNK, b'a');
        std::fs::write(&path, &content).unwrap();
        let scanned = FileMessage::scan(&path).unwrap();
        assert_eq!(scanned.len, content.len() as u64);
        assert!(scanned.head.starts_with(b"Subject: x"));
        assert!(!scanned.eight_bit);
        content.push(0xe9);
        std::fs::write(&path, &content).unwrap();
        assert!(FileMessage::scan(&path).unwrap().eight_bit);
    }
}
