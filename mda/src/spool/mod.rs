//! Message content while it arrives: small messages stay in memory, bigger ones go to a file
//! as they come in, so a client never makes us hold a whole big message (issue 12: fifty
//! connections sending 40 MB each must not cost 2 GB).
//!
//! Line endings are made canonical as the content is written (the same rule as
//! [`line_endings::normalize_line_endings`]), so the file is the message as it will be
//! queued or delivered, minus the trace header the SMTP session puts in front of it.
//!
//! Used by the SMTP session (mta) and the LMTP session: one implementation for both.

pub mod line_endings;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use line_endings as message;

/// Content up to this size stays in memory; beyond it the session writes it to a spool file.
/// The MTA queue stores content up to the same size in its database, so a message that fits
/// there never touches a file twice.
pub const SPOOL_THRESHOLD: usize = 256 * 1024;

/// The content of the current message.
pub struct Body {
    /// Received content not written to the spool yet (all of it while in memory).
    buffer: Vec<u8>,
    /// Where spool files are created; `None` keeps every message in memory.
    spool_dir: Option<PathBuf>,
    spool: Option<SpoolFile>,
    /// Bytes received so far (as sent, before line endings are fixed), for the size limit.
    received: usize,
    /// Writing the spool failed: the message is refused with a temporary failure.
    failed: bool,
}

/// A message written to disk; the file is removed when this is dropped.
pub struct SpoolFile {
    file: File,
    path: PathBuf,
    written: u64,
    /// A copy of the first part written: the header section for the hop count and the
    /// Message-ID/Date checks.
    head: Vec<u8>,
    /// The content written so far ends with CRLF (or nothing is written).
    ends_with_crlf: bool,
}

/// What the session hands over at the end of the message.
pub enum Content {
    /// Canonical CRLF content, in memory.
    Memory(Vec<u8>),
    /// Canonical CRLF content, written and fsynced.
    Spooled(SpoolFile),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("received", &self.received)
            .field("spooled", &self.spool.as_ref().map(|s| &s.path))
            .finish()
    }
}

impl Body {
    pub fn new(spool_dir: Option<PathBuf>) -> Body {
        Body {
            buffer: Vec::new(),
            spool_dir,
            spool: None,
            received: 0,
            failed: false,
        }
    }

    /// The buffer the DATA or BDAT receiver appends to; call [`Body::ingested`] after.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buffer
    }

    /// Bytes received so far.
    pub fn len(&self) -> usize {
        self.received
    }

    pub fn is_empty(&self) -> bool {
        self.received == 0
    }

    /// Accounts for what the receiver appended since the last call (`before`: the buffer
    /// length then) and moves the buffer to the spool file once it passes the threshold.
    pub fn ingested(&mut self, before: usize) {
        self.received = self
            .received
            .saturating_add(self.buffer.len().saturating_sub(before));
        if self.failed {
            self.buffer.clear();
            return;
        }
        if self.buffer.len() < SPOOL_THRESHOLD {
            return;
        }
        if self.spool_dir.is_none() {
            return;
        }
        if let Err(e) = self.flush() {
            tracing::error!(error = %e, "cannot write spool file");
            self.failed = true;
            self.spool = None;
            self.buffer = Vec::new();
        }
    }

    /// The content went to a spool file (finishing it means an fsync).
    pub fn is_spooled(&self) -> bool {
        self.spool.is_some()
    }

    /// Drops the content read so far (the message is refused); memory is given back.
    pub fn discard(&mut self) {
        self.buffer = Vec::new();
        self.spool = None;
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.spool.is_none()
            && let Some(dir) = self.spool_dir.as_deref()
        {
            self.spool = Some(SpoolFile::create(dir)?);
        }
        let Some(spool) = self.spool.as_mut() else {
            return Ok(());
        };
        // A CR at the end may be the first half of a CRLF: it waits for the next bytes.
        let cut = if self.buffer.ends_with(b"\r") {
            self.buffer.len() - 1
        } else {
            self.buffer.len()
        };
        spool.append(&self.buffer[..cut])?;
        self.buffer.drain(..cut);
        Ok(())
    }

    /// The finished message, or `None` if the spool could not be written.
    pub fn finish(self) -> io::Result<Content> {
        if self.failed {
            return Err(io::Error::other("spool file could not be written"));
        }
        let Some(mut spool) = self.spool else {
            let body = self.buffer;
            return Ok(Content::Memory(
                if message::has_bare_line_ending(&body) || !body.ends_with(b"\r\n") {
                    let mut normalized = Vec::new();
                    message::normalize_line_endings(&body, &mut normalized);
                    normalized
                } else {
                    body
                },
            ));
        };
        if !self.buffer.is_empty() {
            let mut tail = Vec::new();
            message::normalize_line_endings(&self.buffer, &mut tail);
            spool.write_raw(&tail)?;
        } else if !spool.ends_with_crlf {
            spool.write_raw(b"\r\n")?;
        }
        spool.file.sync_all()?;
        Ok(Content::Spooled(spool))
    }
}

impl SpoolFile {
    fn create(dir: &Path) -> io::Result<SpoolFile> {
        let path = dir.join(format!("spool-{:032x}", rand::random::<u128>()));
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        Ok(SpoolFile {
            file,
            path,
            written: 0,
            head: Vec::new(),
            ends_with_crlf: true,
        })
    }

    /// A spool file in `dir` for content stored exactly as given ([`SpoolFile::write_as_is`]):
    /// `hermod deliver` keeps line endings as they come.
    pub fn create_in(dir: &Path) -> io::Result<SpoolFile> {
        SpoolFile::create(dir)
    }

    /// Appends `bytes` unchanged.
    pub fn write_as_is(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_raw(bytes)
    }

    /// Makes what was written durable.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// Appends `chunk` (not ending in CR) with its line endings made canonical.
    fn append(&mut self, chunk: &[u8]) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        if message::has_bare_line_ending(chunk) {
            let mut normalized = Vec::with_capacity(chunk.len() + chunk.len() / 16);
            message::normalize_chunk(chunk, &mut normalized);
            self.write_raw(&normalized)
        } else {
            self.write_raw(chunk)
        }
    }

    fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.head.is_empty() {
            self.head = bytes[..bytes.len().min(SPOOL_THRESHOLD)].to_vec();
        }
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        self.ends_with_crlf = bytes.ends_with(b"\r\n");
        Ok(())
    }

    /// The first part of the message (at least the header section of any sane message).
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Length of the content in the file.
    pub fn len(&self) -> u64 {
        self.written
    }

    pub fn is_empty(&self) -> bool {
        self.written == 0
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove spool file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(body: &mut Body, input: &[u8], step: usize) {
        for chunk in input.chunks(step) {
            let before = body.buffer().len();
            body.buffer().extend_from_slice(chunk);
            body.ingested(before);
        }
    }

    fn content(c: Content) -> Vec<u8> {
        match c {
            Content::Memory(v) => v,
            Content::Spooled(s) => std::fs::read(s.path()).unwrap(),
        }
    }

    #[test]
    fn big_content_goes_to_a_file_and_memory_stays_small() {
        let dir = tempfile::tempdir().unwrap();
        let mut body = Body::new(Some(dir.path().to_path_buf()));
        let line = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n";
        let mut input = b"Subject: big\r\n\r\n".to_vec();
        while input.len() < 4 * SPOOL_THRESHOLD {
            input.extend_from_slice(line);
        }
        let mut peak = 0;
        for chunk in input.chunks(64 * 1024) {
            let before = body.buffer().len();
            body.buffer().extend_from_slice(chunk);
            body.ingested(before);
            peak = peak.max(body.buffer.capacity());
        }
        assert!(peak < SPOOL_THRESHOLD + 128 * 1024, "buffer grew to {peak}");
        assert_eq!(body.len(), input.len());
        let Content::Spooled(spool) = body.finish().unwrap() else {
            panic!("a big message must be spooled");
        };
        assert!(spool.head().starts_with(b"Subject: big"));
        let path = spool.path().to_path_buf();
        assert_eq!(std::fs::read(&path).unwrap(), input);
        drop(spool);
        assert!(!path.exists(), "the spool file is removed when dropped");
    }

    #[test]
    fn line_endings_are_fixed_across_chunk_boundaries() {
        // Bare LFs and CRs and CRLFs split at every possible point: the result must be what
        // the whole-message normalisation gives.
        let mut input = Vec::new();
        while input.len() < 3 * SPOOL_THRESHOLD {
            input.extend_from_slice(b"a\r\nb\nc\rd\r\r\n\n");
        }
        input.extend_from_slice(b"end");
        let mut expected = Vec::new();
        message::normalize_line_endings(&input, &mut expected);
        for step in [1000, 4093, 65536] {
            let dir = tempfile::tempdir().unwrap();
            let mut body = Body::new(Some(dir.path().to_path_buf()));
            feed(&mut body, &input, step);
            assert_eq!(content(body.finish().unwrap()), expected, "step {step}");
        }
    }

    #[test]
    fn small_content_stays_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut body = Body::new(Some(dir.path().to_path_buf()));
        feed(&mut body, b"Subject: x\n\nhello", 3);
        let Content::Memory(v) = body.finish().unwrap() else {
            panic!("small message spooled");
        };
        assert_eq!(v, b"Subject: x\r\n\r\nhello\r\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
