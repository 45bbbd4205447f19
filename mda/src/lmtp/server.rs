//! The LMTP listeners (TCP and a unix socket) and the small I/O loop around [`Session`].

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hermod_common::net::{accept_loop, new_conn_id};
use hermod_common::{Context, Service, Shutdown};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::session::{Action, Session, SessionConfig, spool_dir};
use crate::MdaError;
use crate::content::{Content as CopyFrom, FileContent};
use crate::delivery::{Delivery, Envelope};
use crate::reply::Reply;
use crate::spool::{Body, Content};

/// Sent to a client refused for a connection limit.
const BUSY: &[u8] = b"421 4.7.0 Too many connections, try again later\r\n";

/// Runs one LMTP session over `stream` until QUIT, EOF, an I/O error, the idle timeout or
/// shutdown. Replies are written whenever the session needs more input, so pipelined
/// commands get their replies in one write.
pub async fn run_session<S>(
    mut stream: S,
    delivery: &Delivery,
    cfg: SessionConfig,
    idle: Duration,
    shutdown: &Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut session = Session::new(cfg);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match session.next_action() {
            Action::NeedInput => {
                if let Err(e) = write_out(&mut stream, &mut session, idle).await {
                    tracing::debug!(error = %e, "write failed");
                    return;
                }
                tokio::select! {
                    read = tokio::time::timeout(idle, stream.read(&mut buf)) => match read {
                        Err(_) => session.timed_out(),
                        Ok(Ok(0)) => return,
                        Ok(Ok(n)) => session.feed(&buf[..n]),
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "read failed");
                            return;
                        }
                    },
                    _ = shutdown.triggered() => session.shutting_down(),
                }
            }
            Action::CheckRecipient(address) => {
                let result = delivery.check_recipient(&address).await;
                session.recipient_checked(result);
            }
            Action::Deliver { envelope, message } => {
                hermod_common::metrics::inc(hermod_common::metrics::Counter::MessagesReceived);
                let replies = deliver(delivery, &envelope, message).await;
                session.delivered(replies);
            }
            Action::Close => {
                let _ = write_out(&mut stream, &mut session, idle).await;
                let _ = stream.shutdown().await;
                return;
            }
        }
    }
}

/// Finishes the received message and delivers it: from memory, or copied from its spool
/// file (removed afterwards) without reading it whole.
async fn deliver(delivery: &Delivery, envelope: &Envelope, message: Body) -> Vec<Reply> {
    let finished = if message.is_spooled() {
        tokio::task::spawn_blocking(move || message.finish())
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)))
    } else {
        message.finish()
    };
    let spooled = match finished {
        Ok(Content::Memory(m)) => {
            let results = delivery.deliver(envelope, &m).await;
            return results.into_iter().map(|r| r.reply).collect();
        }
        Ok(Content::Spooled(spool)) => FileContent::open_async(spool.path())
            .await
            .map(|file| (spool, file)),
        Err(e) => Err(e),
    };
    let (_spool, file) = match spooled {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot write the LMTP spool file");
            let reply = Reply::new(451, [4, 3, 0], "cannot store the message, try again later");
            return envelope.recipients.iter().map(|_| reply.clone()).collect();
        }
    };
    let mut replies = Vec::with_capacity(envelope.recipients.len());
    for recipient in &envelope.recipients {
        let result = delivery
            .deliver_content(&envelope.sender, recipient, CopyFrom::File(&file))
            .await;
        replies.push(result.reply);
    }
    replies
}

async fn write_out<S: AsyncWrite + Unpin>(
    stream: &mut S,
    session: &mut Session,
    idle: Duration,
) -> io::Result<()> {
    let out = session.take_output();
    if out.is_empty() {
        return Ok(());
    }
    tokio::time::timeout(idle, async {
        stream.write_all(&out).await?;
        stream.flush().await
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client does not read"))?
}

/// A bound LMTP unix socket; the socket file is removed when this is dropped.
pub struct LmtpSocket {
    listener: Option<std::os::unix::net::UnixListener>,
    path: PathBuf,
}

impl LmtpSocket {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LmtpSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the LMTP unix socket at `path` with mode 0660 (bind it before dropping
/// privileges). A stale socket file left by a dead server is removed first; a socket a
/// live server answers on, or a file that is not a socket, is an error.
pub fn bind_socket(path: &Path) -> Result<LmtpSocket, MdaError> {
    let err = |source| MdaError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(MdaError::SocketInUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(err)?;
    let socket = LmtpSocket {
        listener: Some(listener),
        path: path.to_path_buf(),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    Ok(socket)
}

/// Serves LMTP on the context's bound LMTP TCP listeners and, if `config.lmtp_socket` is
/// set, on that unix socket, until `shutdown` is triggered. Sessions run as tasks of
/// `shutdown`, so `shutdown.wait(grace)` waits for them.
pub async fn serve(ctx: Arc<Context>, shutdown: Shutdown) -> Result<(), MdaError> {
    let socket = match &ctx.config.lmtp_socket {
        Some(path) => Some(bind_socket(path)?),
        None => None,
    };
    serve_with_socket(ctx, shutdown, socket).await
}

/// Like [`serve`], with a unix socket bound earlier by [`bind_socket`] (or none).
pub async fn serve_with_socket(
    ctx: Arc<Context>,
    shutdown: Shutdown,
    socket: Option<LmtpSocket>,
) -> Result<(), MdaError> {
    let listeners = ctx.take_listeners(Service::Lmtp);
    if listeners.is_empty() && socket.is_none() {
        return Err(MdaError::NoListeners);
    }
    let delivery = Delivery::from_context(&ctx).local_only();
    let cfg = SessionConfig::from_config(&ctx.config);
    prepare_spool_dir(&spool_dir(&ctx.config))?;
    let idle = Duration::from_secs(ctx.config.limits.idle_timeout.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        let options = ctx.listener_options(Service::Lmtp, BUSY);
        let (delivery, cfg, sd) = (delivery.clone(), cfg.clone(), shutdown.clone());
        let handler = move |stream, _info| {
            let (delivery, cfg, sd) = (delivery.clone(), cfg.clone(), sd.clone());
            async move { run_session(stream, &delivery, cfg, idle, &sd).await }
        };
        tasks.spawn(accept_loop(listener, options, shutdown.clone(), handler));
    }
    if let Some(socket) = socket {
        tracing::info!(path = %socket.path.display(), "LMTP listening");
        let max = ctx.config.limits.max_connections.max(1);
        tasks.spawn(unix_accept_loop(
            socket,
            Arc::new(Semaphore::new(max)),
            delivery,
            cfg,
            idle,
            shutdown.clone(),
        ));
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(MdaError::Io(e)),
            Err(e) => return Err(MdaError::Io(io::Error::other(e))),
        }
    }
    Ok(())
}

/// Creates the spool directory (private to us) and removes files a crash left there: a
/// spooled message is only ever a message being received.
fn prepare_spool_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove old LMTP spool file");
        }
    }
    Ok(())
}

/// Accepts on the unix socket until shutdown (the TCP listeners use `net::accept_loop`,
/// which is TCP-only); the connection limit is the service's total, there being no
/// client address to count per.
async fn unix_accept_loop(
    mut socket: LmtpSocket,
    slots: Arc<Semaphore>,
    delivery: Delivery,
    cfg: SessionConfig,
    idle: Duration,
    shutdown: Shutdown,
) -> io::Result<()> {
    let Some(std_listener) = socket.listener.take() else {
        return Ok(());
    };
    std_listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(std_listener)?;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.triggered() => break,
            r = listener.accept() => r,
        };
        let mut stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "LMTP socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let id = new_conn_id();
        let span = tracing::info_span!("conn", service = "lmtp", peer = "unix", session = %id);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(
                async move {
                    tracing::warn!("connection limit reached; refusing");
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), stream.write_all(BUSY)).await;
                }
                .instrument(span),
            );
            continue;
        };
        let (delivery, cfg, sd) = (delivery.clone(), cfg.clone(), shutdown.clone());
        shutdown.spawn(
            async move {
                let _slot = slot;
                tracing::debug!("connected");
                run_session(stream, &delivery, cfg, idle, &sd).await;
                tracing::debug!("disconnected");
            }
            .instrument(span),
        );
    }
    drop(listener);
    drop(socket); // removes the socket file
    Ok(())
}
