//! The IMAP listeners (143 with STARTTLS, 993 with TLS) and the per-connection socket loop
//! around [`Session`]: read, decompress, frame, handle, write; STARTTLS and COMPRESS
//! switch the stream; IDLE also waits on the store's change notifications.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hermod_common::config::{Config, Service};
use hermod_common::context::Context;
use hermod_common::net::{self, Shutdown, Stream};
use hermod_common::store::{Change, ChangeReceiver};
use tokio::io::AsyncReadExt;

use crate::compress::{Deflate, Inflate};
use crate::framer::Framer;
use crate::output::Out;
use crate::session::{Next, Session, Settings, Shared};

/// Read buffer sizes: for commands and literals, and while idling.
const READ_BUFFER: usize = 8 * 1024;
const IDLE_READ_BUFFER: usize = 64;

/// The reply to a client refused for a connection limit.
const BUSY: &[u8] = b"* BYE Too many connections, try again later\r\n";

/// Errors that stop the IMAP server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("imap listener failed: {0}")]
    Listener(#[from] io::Error),
    #[error("imap listener task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl Settings {
    /// Session settings from hermod's config.
    pub fn from_config(config: &Config) -> Settings {
        let defaults = Settings::default();
        Settings {
            allow_plaintext_auth: config.allow_plaintext_auth,
            // IMAP lines carry long UID sets and header lists: never below 64 KiB.
            max_line: config.limits.max_line_length.max(defaults.max_line),
            max_literal: if config.message_size_limit == 0 {
                u64::MAX / 2
            } else {
                config.message_size_limit
            },
            max_bad_commands: config.limits.max_errors.max(1) as u32,
            autologout: defaults.autologout,
            login_timeout: Duration::from_secs(config.limits.idle_timeout.max(10)),
            compress: true,
            write_timeout: Duration::from_secs(config.limits.write_timeout.max(1)),
        }
    }
}

/// Runs the IMAP service on the listeners bound in `ctx` (IMAP and IMAPS) until shutdown.
pub async fn serve(ctx: Arc<Context>, shutdown: Shutdown) -> Result<(), ServeError> {
    serve_with(ctx, shutdown, None).await
}

/// [`serve`], telling `junk_feedback` what users file into and out of Junk.
pub async fn serve_with(
    ctx: Arc<Context>,
    shutdown: Shutdown,
    junk_feedback: Option<Arc<dyn hermod_common::junk_feedback::JunkFeedback>>,
) -> Result<(), ServeError> {
    let shared = Arc::new(Shared {
        store: ctx.store.clone(),
        auth: ctx.auth.clone(),
        tls: Some(ctx.tls.acceptor.clone()),
        settings: Settings::from_config(&ctx.config),
        junk_feedback,
    });
    let mut tasks = Vec::new();
    for service in [Service::Imap, Service::Imaps] {
        for listener in ctx.take_listeners(service) {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(service = service.name(), %addr, "listening");
            }
            let options = ctx.listener_options(service, BUSY);
            let shared = shared.clone();
            let conn_shutdown = shutdown.clone();
            tasks.push(tokio::spawn(net::accept_loop(
                listener,
                options,
                shutdown.clone(),
                move |stream, info| {
                    let shared = shared.clone();
                    let shutdown = conn_shutdown.clone();
                    hermod_common::panic_guard::contain_panics(async move {
                        run(shared, stream, info.peer.ip(), shutdown).await
                    })
                },
            )));
        }
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Serves one connection to its end.
pub async fn run(shared: Arc<Shared>, stream: Stream, peer: IpAddr, shutdown: Shutdown) {
    match Connection::new(shared, stream, peer).serve(&shutdown).await {
        Ok(()) => {}
        Err(e) if is_disconnect(&e) => tracing::debug!(error = %e, "client disconnected"),
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            tracing::info!(error = %e, "write timed out; connection dropped");
        }
        Err(e) => tracing::info!(error = %e, "connection ended"),
    }
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

/// Input, or something else worth waking up for.
enum Event {
    Read(io::Result<usize>),
    Change(Option<Change>),
    TimedOut,
    Shutdown,
}

/// One client connection.
struct Connection {
    shared: Arc<Shared>,
    stream: Option<Stream>,
    session: Session,
    framer: Framer,
    deflate: Option<Deflate>,
    inflate: Option<Inflate>,
    watch: Option<ChangeReceiver>,
}

impl Connection {
    fn new(shared: Arc<Shared>, stream: Stream, peer: IpAddr) -> Connection {
        let session = Session::new(shared.clone(), peer, stream.is_tls());
        let framer = Framer::new(shared.settings.max_line, shared.settings.max_literal);
        Connection {
            shared,
            stream: Some(stream),
            session,
            framer,
            deflate: None,
            inflate: None,
            watch: None,
        }
    }

    fn stream(&mut self) -> io::Result<&mut Stream> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::other("stream lost"))
    }

    /// Runs `f` with an output to the connection and flushes it.
    async fn write(
        &mut self,
        f: impl AsyncFnOnce(&mut Session, &mut Out<'_>) -> io::Result<Next>,
    ) -> io::Result<Next> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(io::Error::other("stream lost"));
        };
        let mut out = Out::new(
            stream,
            self.deflate.as_mut(),
            self.shared.settings.write_timeout,
        );
        // Boxed: the command futures are several KiB, and inline they would make every
        // connection's task that much bigger for its whole life, idle or not.
        let next = Box::pin(f(&mut self.session, &mut out)).await?;
        out.flush().await?;
        Ok(next)
    }

    async fn serve(mut self, shutdown: &Shutdown) -> io::Result<()> {
        self.write(async |s, out| {
            s.greeting(out);
            Ok(Next::Command)
        })
        .await?;
        let mut buf = Vec::new();
        loop {
            loop {
                // The limits depend on the session state: small until login.
                let (line, literal, strict) = self.session.input_limits();
                self.framer.set_limits(line, literal, strict);
                let Some(frame) = self.framer.next_frame() else {
                    break;
                };
                let next = self
                    .write(async |s, out| s.handle(frame, out).await)
                    .await?;
                if !self.after(next).await? {
                    return Ok(());
                }
            }
            let timeout = self.session.autologout();
            // An idling client sends only DONE: small buffers then keep thousands of IDLE
            // connections small; commands and literals get larger ones.
            let size = if self.watch.is_some() {
                self.framer.shrink_to(0);
                IDLE_READ_BUFFER
            } else {
                self.framer.shrink();
                READ_BUFFER
            };
            if buf.len() != size {
                buf = vec![0u8; size];
            }
            let event = {
                let Some(stream) = self.stream.as_mut() else {
                    return Ok(());
                };
                let watch = &mut self.watch;
                tokio::select! {
                    r = tokio::time::timeout(timeout, stream.read(&mut buf)) => match r {
                        Ok(r) => Event::Read(r),
                        Err(_) => Event::TimedOut,
                    },
                    c = async {
                        match watch.as_mut() {
                            Some(w) => w.recv().await,
                            None => std::future::pending().await,
                        }
                    } => Event::Change(c),
                    _ = shutdown.triggered() => Event::Shutdown,
                }
            };
            match event {
                Event::Read(Ok(0)) => return Ok(()),
                Event::Read(Ok(n)) => match self.inflate.as_mut() {
                    Some(inf) => {
                        let plain = inf.decompress(&buf[..n])?;
                        self.framer.push(&plain);
                    }
                    None => self.framer.push(&buf[..n]),
                },
                Event::Read(Err(e)) => return Err(e),
                Event::Change(change) => {
                    if change.is_none() {
                        // The notifier went away; IDLE falls back to NOOP-style checks.
                        self.watch = None;
                    }
                    let next = self
                        .write(async |s, out| {
                            s.idle_changed(change, out).await?;
                            Ok(if s.next == Next::Logout {
                                Next::Logout
                            } else {
                                Next::Idle
                            })
                        })
                        .await?;
                    if next == Next::Logout {
                        return Ok(());
                    }
                }
                Event::TimedOut => {
                    if self.framer.in_command() {
                        // A client that stopped in the middle of a command.
                        tracing::info!("client stalled mid-command; closing");
                    }
                    self.write(async |s, out| {
                        s.bye(out, "Autologout; idle for too long");
                        Ok(Next::Logout)
                    })
                    .await?;
                    return Ok(());
                }
                Event::Shutdown => {
                    self.write(async |s, out| {
                        s.bye(out, "Server shutting down");
                        Ok(Next::Logout)
                    })
                    .await?;
                    return Ok(());
                }
            }
        }
    }

    /// Acts on what the session asked for. Returns false when the connection should close.
    async fn after(&mut self, next: Next) -> io::Result<bool> {
        match next {
            Next::Command => {
                self.framer.set_line_mode(false);
                self.watch = None;
            }
            Next::Line => self.framer.set_line_mode(true),
            Next::Idle => {
                self.framer.set_line_mode(true);
                if self.watch.is_none() {
                    // Subscribe first, then look: nothing that happens in between is lost.
                    self.watch = self.session.watch();
                    let next = self
                        .write(async |s, out| {
                            s.idle_changed(None, out).await?;
                            Ok(s.next)
                        })
                        .await?;
                    if next == Next::Logout {
                        return Ok(false);
                    }
                }
            }
            Next::StartTls => {
                // Whatever the client pipelined after STARTTLS was sent in the clear: drop it.
                self.framer.clear();
                let Some(acceptor) = self.shared.tls.clone() else {
                    return Ok(false);
                };
                let Some(stream) = self.stream.take() else {
                    return Ok(false);
                };
                match Box::pin(stream.upgrade(&acceptor)).await {
                    Ok(s) => {
                        self.stream = Some(s);
                        self.session.tls_started();
                    }
                    Err(e) => {
                        tracing::info!(error = %e, "STARTTLS handshake failed");
                        return Ok(false);
                    }
                }
            }
            Next::Compress => {
                // Bytes already received after the command are compressed.
                let rest = self.framer.take_unread();
                let mut inflate = Inflate::new();
                let plain = inflate.decompress(&rest)?;
                self.framer.push(&plain);
                self.inflate = Some(inflate);
                self.deflate = Some(Deflate::new());
                self.session.compression_started();
            }
            Next::Logout => {
                let timeout = self.shared.settings.write_timeout;
                let stream = self.stream()?;
                let _ =
                    tokio::time::timeout(timeout, tokio::io::AsyncWriteExt::shutdown(stream)).await;
                return Ok(false);
            }
        }
        Ok(true)
    }
}
