//! The I/O loop around a ManageSieve [`Session`]: bounded lines and literals through the
//! [`Framer`], the STARTTLS handshake, a timeout on every read and write, and shutdown.

use std::time::Duration;

use hermod_common::net::{Line, Stream, read_line};
use hermod_common::{Config, Shutdown, Tls};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

use crate::managesieve::command::{Framed, Framer};
use crate::managesieve::session::{Backend, Control, Session, bye};

const READ_BUFFER: usize = 16 * 1024;

/// A literal over the session's limit but under this is read and dropped, and the command
/// refused; a bigger one (or any too-big one before login) ends the connection.
pub const MAX_SKIPPED_LITERAL: usize = 16 * 1024 * 1024;

/// Limits of a connection.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// A client silent this long (between commands, or within a literal) is disconnected.
    pub idle_timeout: Duration,
    /// How long a write may wait for a client that stopped reading.
    pub write_timeout: Duration,
    /// Longest line of a command (literals are counted apart).
    pub max_line_length: usize,
}

impl ConnectionLimits {
    pub fn from_config(config: &Config) -> ConnectionLimits {
        ConnectionLimits {
            idle_timeout: Duration::from_secs(config.limits.idle_timeout.max(1)),
            write_timeout: Duration::from_secs(config.limits.write_timeout.max(1)),
            max_line_length: config.limits.max_line_length,
        }
    }
}

/// How the connection ended, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Closed,
    Dropped,
    IdleTimeout,
    WriteTimeout,
    Shutdown,
    TlsFailed,
    LiteralTooBig,
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
            Ending::LiteralTooBig => "literal too big",
        }
    }
}

/// What one read step produced.
enum Input {
    Framed(Framed),
    LineTooLong,
    Eof,
    Timeout,
    Failed,
}

/// Run a session on a connection until it ends. Returns the user (if one logged in) and how
/// the connection ended.
pub async fn run<B: Backend>(
    stream: Stream,
    mut session: Session<B>,
    limits: &ConnectionLimits,
    tls: &Tls,
    shutdown: &Shutdown,
) -> (Option<String>, Ending) {
    let mut reader = BufReader::with_capacity(READ_BUFFER, stream);
    let mut out = Vec::with_capacity(1024);
    let mut framer = Framer::new();
    let mut line = Vec::with_capacity(256);
    let mut last_user = None;
    session.greeting(&mut out);
    let ending = loop {
        if !out.is_empty()
            && !framer.in_command()
            && let Err(e) = send(&mut reader, &mut out, limits).await
        {
            break write_failed(&e);
        }
        let input = tokio::select! {
            _ = shutdown.triggered() => {
                bye(&mut out, "Server shutting down");
                break Ending::Shutdown;
            }
            i = next_input(&mut reader, &mut line, &mut framer, &session, limits) => i,
        };
        let control = match input {
            Input::Eof | Input::Failed => break Ending::Dropped,
            Input::Timeout => {
                bye(&mut out, "Idle for too long");
                break Ending::IdleTimeout;
            }
            Input::LineTooLong => {
                framer.reset();
                session.bad_command("Line too long", &mut out)
            }
            Input::Framed(Framed::Command(args)) => session.handle(args, &mut out).await,
            Input::Framed(Framed::Error(e)) => session.bad_command(&e, &mut out),
            Input::Framed(Framed::TooBig(n)) => {
                if !session.may_skip_literals() || n > MAX_SKIPPED_LITERAL {
                    tracing::info!(size = n, "literal too big; closing");
                    bye(&mut out, "Literal too big");
                    break Ending::LiteralTooBig;
                }
                match skip(&mut reader, n, limits).await {
                    Ok(()) => {
                        framer.literal(Vec::new());
                        Control::Continue
                    }
                    Err(_) => break Ending::Dropped,
                }
            }
            Input::Framed(Framed::Literal(n)) => {
                let mut data = vec![0u8; n];
                match tokio::time::timeout(limits.idle_timeout, reader.read_exact(&mut data)).await
                {
                    Ok(Ok(_)) => {
                        framer.literal(data);
                        Control::Continue
                    }
                    Ok(Err(_)) => break Ending::Dropped,
                    Err(_) => {
                        bye(&mut out, "Idle for too long");
                        break Ending::IdleTimeout;
                    }
                }
            }
        };
        if let Some(user) = session.user() {
            last_user = Some(user.to_string());
        }
        match control {
            Control::Continue => {}
            Control::Close => break Ending::Closed,
            Control::StartTls => {
                if let Err(e) = send(&mut reader, &mut out, limits).await {
                    break write_failed(&e);
                }
                // Input buffered before the handshake came in plain text: it is dropped.
                match reader.into_inner().upgrade(&tls.acceptor).await {
                    Ok(tls) => {
                        reader = BufReader::with_capacity(READ_BUFFER, tls);
                        framer.reset();
                        session.tls_started(&mut out);
                    }
                    Err(e) => {
                        tracing::info!(error = %e, "STARTTLS handshake failed");
                        return (last_user, Ending::TlsFailed);
                    }
                }
            }
        }
    };
    if !out.is_empty()
        && !matches!(ending, Ending::WriteTimeout | Ending::Dropped)
        && send(&mut reader, &mut out, limits).await.is_ok()
    {
        let _ = tokio::time::timeout(limits.write_timeout, reader.get_mut().shutdown()).await;
    }
    (last_user, ending)
}

/// Read the next line and frame it.
async fn next_input<B: Backend>(
    reader: &mut BufReader<Stream>,
    line: &mut Vec<u8>,
    framer: &mut Framer,
    session: &Session<B>,
    limits: &ConnectionLimits,
) -> Input {
    match tokio::time::timeout(
        limits.idle_timeout,
        read_line(reader, line, limits.max_line_length),
    )
    .await
    {
        Err(_) => Input::Timeout,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "read failed");
            Input::Failed
        }
        Ok(Ok(Line::Eof)) => Input::Eof,
        Ok(Ok(Line::TooLong)) => Input::LineTooLong,
        Ok(Ok(Line::Complete)) => Input::Framed(framer.line(line, session.max_literal())),
    }
}

/// Read and drop `n` bytes, a buffer at a time, each read within the idle timeout.
async fn skip(
    reader: &mut BufReader<Stream>,
    mut n: usize,
    limits: &ConnectionLimits,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; READ_BUFFER];
    while n > 0 {
        let want = n.min(buf.len());
        let got = tokio::time::timeout(limits.idle_timeout, reader.read(&mut buf[..want]))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out"))??;
        if got == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        n -= got;
    }
    Ok(())
}

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
