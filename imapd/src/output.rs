//! Where a session writes its responses: a buffer, flushed to the connection (through
//! COMPRESS=DEFLATE when active) when it grows large and after each command.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::compress::Deflate;

/// Flush when this much output is buffered (a FETCH of a whole mailbox streams).
const FLUSH_AT: usize = 64 * 1024;

/// A session's output.
pub struct Out<'a> {
    buf: Vec<u8>,
    writer: Option<&'a mut (dyn AsyncWrite + Unpin + Send)>,
    deflate: Option<&'a mut Deflate>,
    /// How long one flush may wait for a client that does not read.
    write_timeout: Duration,
    /// Set when a write failed or timed out: the connection is unusable, so later flushes
    /// fail at once instead of waiting again.
    failed: Option<io::ErrorKind>,
}

impl Out<'static> {
    /// Output that only collects (tests, and sessions driven without a socket).
    pub fn buffer() -> Self {
        Out {
            buf: Vec::new(),
            writer: None,
            deflate: None,
            write_timeout: Duration::MAX,
            failed: None,
        }
    }
}

impl<'a> Out<'a> {
    /// Output to a connection, compressed when `deflate` is given; each flush fails with
    /// `TimedOut` if the client does not take the bytes within `write_timeout`.
    pub fn new(
        writer: &'a mut (dyn AsyncWrite + Unpin + Send),
        deflate: Option<&'a mut Deflate>,
        write_timeout: Duration,
    ) -> Self {
        Out {
            buf: Vec::with_capacity(4096),
            writer: Some(writer),
            deflate,
            write_timeout,
            failed: None,
        }
    }

    /// The pending bytes, to append to.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Appends bytes.
    pub fn put(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Appends an untagged response line: `* text`.
    pub fn untagged(&mut self, text: &str) {
        self.buf.extend_from_slice(b"* ");
        self.buf.extend_from_slice(text.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    /// Flushes when enough is buffered.
    pub async fn maybe_flush(&mut self) -> io::Result<()> {
        if self.buf.len() >= FLUSH_AT && self.writer.is_some() {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes everything buffered to the connection.
    pub async fn flush(&mut self) -> io::Result<()> {
        if let Some(kind) = self.failed {
            return Err(io::Error::new(kind, "connection failed earlier"));
        }
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        if self.buf.is_empty() {
            return Ok(());
        }
        let compressed;
        let data = match self.deflate.as_mut() {
            Some(d) => {
                compressed = d.compress(&self.buf)?;
                &compressed
            }
            None => &self.buf,
        };
        let written = tokio::time::timeout(self.write_timeout, async {
            w.write_all(data).await?;
            w.flush().await
        })
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "write timed out: the client does not read",
            ))
        });
        if let Err(e) = &written {
            self.failed = Some(e.kind());
        }
        written?;
        self.buf.clear();
        Ok(())
    }

    /// The collected bytes (of a buffer-only output).
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Takes the collected bytes, leaving the buffer empty.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}
