//! hermod-pop3d: the POP3 server (RFC 1939 with CAPA, STLS, AUTH PLAIN/LOGIN, RESP-CODES)
//! on ports 110 (STLS) and 995 (implicit TLS), serving each user's INBOX from the store.
//!
//! - [`command`]: parsing a command line.
//! - [`session`]: the sans-I/O session state machine and its [`Backend`].
//! - [`transfer`]: CRLF line ends, byte-stuffing and the sizes clients are told.
//! - [`maildrop`]: the backend on hermod's store; [`lock`] its exclusive maildrop lock;
//!   [`sizes`] the cache of POP3 sizes; [`read_ahead`] reading messages in batches ahead
//!   of the client.
//! - [`server`]: the I/O loop of one connection; [`serve`] runs the listeners.

pub mod command;
#[doc(hidden)]
pub mod fuzzing;
pub mod lock;
pub mod maildrop;
pub mod read_ahead;
pub mod server;
pub mod session;
pub mod sizes;
pub mod transfer;

use std::sync::Arc;

use hermod_common::net::{ConnInfo, accept_loop};
use hermod_common::{Context, Service, Shutdown, Stream};

pub use server::ConnectionLimits;
pub use session::{
    Backend, BackendError, Control, Listing, LoginOutcome, Session, SessionConfig, Summary,
};

/// Written to clients refused by the connection limits.
const BUSY_REPLY: &[u8] = b"-ERR [SYS/TEMP] Too many connections, try again later\r\n";

/// Why the POP3 server stopped.
#[derive(Debug, thiserror::Error)]
pub enum Pop3Error {
    #[error("POP3 listener failed: {0}")]
    Listener(#[from] std::io::Error),
    #[error("POP3 listener task failed: {0}")]
    Task(String),
}

/// Serve POP3 (STLS) and POP3S (implicit TLS) on the listeners bound in `ctx`, until
/// `shutdown` is triggered. Sessions still open then are told `-ERR [SYS/TEMP]` and closed
/// without deleting anything.
pub async fn serve(ctx: Arc<Context>, shutdown: Shutdown) -> Result<(), Pop3Error> {
    let limits = ConnectionLimits::from_config(&ctx.config);
    serve_with(ctx, shutdown, limits).await
}

/// [`serve`] with explicit connection limits (tests use a short idle timeout).
pub async fn serve_with(
    ctx: Arc<Context>,
    shutdown: Shutdown,
    limits: ConnectionLimits,
) -> Result<(), Pop3Error> {
    let server = Arc::new(Server {
        session: SessionConfig {
            hostname: ctx.config.myhostname.clone(),
            allow_plaintext_auth: ctx.config.allow_plaintext_auth,
            tls_available: true,
            max_errors: ctx.config.limits.max_errors.max(1),
        },
        limits,
        ctx: ctx.clone(),
        shutdown: shutdown.clone(),
    });
    let mut loops = tokio::task::JoinSet::new();
    for service in [Service::Pop3, Service::Pop3s] {
        for listener in ctx.take_listeners(service) {
            let options = ctx.listener_options(service, BUSY_REPLY);
            let server = server.clone();
            loops.spawn(accept_loop(
                listener,
                options,
                shutdown.clone(),
                move |stream, info| {
                    hermod_common::panic_guard::contain_panics(
                        server.clone().connection(stream, info),
                    )
                },
            ));
        }
    }
    if loops.is_empty() {
        tracing::info!("no POP3 listener configured");
        shutdown.triggered().await;
        return Ok(());
    }
    while let Some(done) = loops.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Pop3Error::Listener(e)),
            Err(e) => return Err(Pop3Error::Task(e.to_string())),
        }
    }
    Ok(())
}

/// What every connection shares.
struct Server {
    ctx: Arc<Context>,
    session: SessionConfig,
    limits: ConnectionLimits,
    shutdown: Shutdown,
}

impl Server {
    async fn connection(self: Arc<Self>, stream: Stream, info: ConnInfo) {
        let backend = maildrop::StoreBackend::new(self.ctx.clone(), info.peer.ip());
        let session = Session::new(self.session.clone(), backend, stream.is_tls());
        let (summary, ending) =
            server::run(stream, session, &self.limits, &self.ctx.tls, &self.shutdown).await;
        tracing::info!(
            user = %summary.user.as_deref().unwrap_or("-"),
            retrieved = summary.retrieved,
            deleted = summary.deleted,
            updated = summary.updated,
            ending = ending.as_str(),
            "session ended"
        );
    }
}
