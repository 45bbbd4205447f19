//! The I/O loop around a [`Session`]: read bounded lines, hand them over, write the answers,
//! run the STLS handshake, and enforce the idle timeout and shutdown.
//!
//! Answers are written when no further complete command is waiting in the input buffer, so
//! a pipelining client (RFC 2449 PIPELINING) gets a batch of answers in few writes.

use std::time::Duration;

use hermod_common::net::{Line, Stream, read_line};
use hermod_common::{Config, Shutdown, Tls};
use tokio::io::{AsyncWriteExt, BufReader};

use crate::session::{Backend, Control, Session, Summary};

/// RFC 1939 section 3: the inactivity autologout timer must be at least 10 minutes.
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Output waiting beyond this is written even if more commands are queued.
const FLUSH_AT: usize = 256 * 1024;
const READ_BUFFER: usize = 16 * 1024;

/// Limits of a connection.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// A client silent this long is logged out (nothing is deleted).
    pub idle_timeout: Duration,
    /// How long a write may wait for a client that stopped reading; then the connection is
    /// dropped (and the maildrop released).
    pub write_timeout: Duration,
    /// Longest command line; longer ones get `-ERR Line too long`.
    pub max_line_length: usize,
}

impl ConnectionLimits {
    /// From the config: its idle timeout, but never below RFC 1939's ten minutes.
    pub fn from_config(config: &Config) -> ConnectionLimits {
        ConnectionLimits {
            idle_timeout: Duration::from_secs(config.limits.idle_timeout).max(MIN_IDLE_TIMEOUT),
            write_timeout: Duration::from_secs(config.limits.write_timeout.max(1)),
            max_line_length: config.limits.max_line_length,
        }
    }
}

/// How the connection ended, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// QUIT, or the session closed it (too many errors, failed update).
    Closed,
    /// The client went away.
    Dropped,
    IdleTimeout,
    /// The client stopped reading: a write timed out.
    WriteTimeout,
    Shutdown,
    TlsFailed,
}

impl Ending {
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Closed => "closed",
            Ending::Dropped => "dropped",
            Ending::IdleTimeout => "idle timeout",
            Ending::WriteTimeout => "write timeout",
            Ending::Shutdown => "shutdown",
            Ending::TlsFailed => "TLS handshake failed",
        }
    }
}

/// Run a session on a connection until it ends; the maildrop is released before returning.
pub async fn run<B: Backend>(
    stream: Stream,
    mut session: Session<B>,
    limits: &ConnectionLimits,
    tls: &Tls,
    shutdown: &Shutdown,
) -> (Summary, Ending) {
    let mut reader = BufReader::with_capacity(READ_BUFFER, stream);
    let mut out = Vec::with_capacity(4096);
    let mut line = Vec::with_capacity(256);
    session.greeting(&mut out);
    let ending = loop {
        let batch_done = !reader.buffer().contains(&b'\n');
        if !out.is_empty()
            && (batch_done || out.len() >= FLUSH_AT)
            && let Err(e) = send(&mut reader, &mut out, limits).await
        {
            break write_failed(&e);
        }
        let read = tokio::select! {
            _ = shutdown.triggered() => {
                out.extend_from_slice(b"-ERR [SYS/TEMP] Server shutting down\r\n");
                break Ending::Shutdown;
            }
            r = tokio::time::timeout(
                limits.idle_timeout,
                read_line(&mut reader, &mut line, limits.max_line_length),
            ) => r,
        };
        let control = match read {
            Err(_) => {
                out.extend_from_slice(b"-ERR Autologout: idle for too long\r\n");
                break Ending::IdleTimeout;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "read failed");
                break Ending::Dropped;
            }
            Ok(Ok(Line::Eof)) => break Ending::Dropped,
            Ok(Ok(Line::TooLong)) => session.line_too_long(&mut out),
            Ok(Ok(Line::Complete)) => session.handle_line(&line, &mut out).await,
        };
        match control {
            Control::Continue => {}
            Control::Close => break Ending::Closed,
            Control::StartTls => {
                if let Err(e) = send(&mut reader, &mut out, limits).await {
                    break write_failed(&e);
                }
                // into_inner drops input buffered after STLS: it came in plain text and
                // must not be taken as if it had come over TLS.
                match reader.into_inner().upgrade(&tls.acceptor).await {
                    Ok(tls) => {
                        reader = BufReader::with_capacity(READ_BUFFER, tls);
                        session.tls_started();
                    }
                    Err(e) => {
                        tracing::info!(error = %e, "STLS handshake failed");
                        return (session.end().await, Ending::TlsFailed);
                    }
                }
            }
        }
    };
    // Release the maildrop (and apply nothing) before the last words: a client reconnecting
    // right after our answer must find it free.
    let summary = session.end().await;
    // No last words to a client whose write already failed: that would wait again.
    if !out.is_empty()
        && !matches!(ending, Ending::WriteTimeout | Ending::Dropped)
        && send(&mut reader, &mut out, limits).await.is_ok()
    {
        let _ = tokio::time::timeout(limits.write_timeout, reader.get_mut().shutdown()).await;
    }
    (summary, ending)
}

/// How a connection whose write failed ends.
fn write_failed(e: &std::io::Error) -> Ending {
    if e.kind() == std::io::ErrorKind::TimedOut {
        Ending::WriteTimeout
    } else {
        Ending::Dropped
    }
}

/// Write and flush the pending output, within the write timeout.
async fn send(
    reader: &mut BufReader<Stream>,
    out: &mut Vec<u8>,
    limits: &ConnectionLimits,
) -> std::io::Result<()> {
    let stream = reader.get_mut();
    let result = tokio::time::timeout(limits.write_timeout, async {
        stream.write_all(out).await?;
        stream.flush().await
    })
    .await
    .unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "write timed out",
        ))
    });
    out.clear();
    result
}
