//! The message a delivery files: bytes in memory (most mail), or a file holding a big
//! message that the MTA queue or the LMTP session spooled to disk. A file is never read
//! whole: the delivery looks at a bounded head for the header checks and the store copies
//! the rest (issue 12: fifty 40 MB messages must not cost 2 GB).

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// How much of a file message is read for the header checks (`Delivered-To:` loop check,
/// the line ending of the trace headers). A header section bigger than this is only
/// checked in its first part.
pub const HEAD_MAX: usize = 256 * 1024;

/// A message in a file that the caller keeps in place while the delivery runs.
#[derive(Debug, Clone)]
pub struct FileContent {
    path: PathBuf,
    len: u64,
    head: Vec<u8>,
}

impl FileContent {
    /// Opens `path` and reads its first [`HEAD_MAX`] bytes (blocking: call from a blocking
    /// context or accept a short stall).
    pub fn open(path: &Path) -> io::Result<FileContent> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut head = Vec::with_capacity(HEAD_MAX.min(len as usize));
        file.take(HEAD_MAX as u64).read_to_end(&mut head)?;
        Ok(FileContent {
            path: path.to_path_buf(),
            len,
            head,
        })
    }

    /// [`FileContent::open`] on the blocking pool.
    pub async fn open_async(path: &Path) -> io::Result<FileContent> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || FileContent::open(&path))
            .await
            .map_err(io::Error::other)?
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first bytes of the message (the header section of any sane message).
    pub fn head(&self) -> &[u8] {
        &self.head
    }
}

/// The message to deliver.
#[derive(Debug, Clone, Copy)]
pub enum Content<'a> {
    Memory(&'a [u8]),
    File(&'a FileContent),
}

impl Content<'_> {
    pub fn len(&self) -> u64 {
        match self {
            Content::Memory(m) => m.len() as u64,
            Content::File(f) => f.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message, or its first [`HEAD_MAX`] bytes when it is a file.
    pub fn head(&self) -> &[u8] {
        match self {
            Content::Memory(m) => m,
            Content::File(f) => f.head(),
        }
    }
}
