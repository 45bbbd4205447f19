//! ManageSieve (RFC 5804): users upload, check, activate and manage their Sieve scripts,
//! as the Thunderbird Sieve add-on and Roundcube's managesieve plugin do. Port 4190
//! (`--dev`: 2190), STARTTLS then SASL PLAIN.
//!
//! - [`command`]: framing commands (atoms, quoted strings, literals), sans I/O.
//! - [`session`]: the protocol state machine and its [`Backend`].
//! - [`backend`]: the backend on the script store and the shared authenticator.
//! - [`server`]: the I/O loop of one connection; [`serve`] runs the listeners.

pub mod backend;
pub mod command;
#[doc(hidden)]
pub mod memory;
pub mod server;
pub mod session;

use std::sync::Arc;

use hermod_common::net::{ConnInfo, accept_loop};
use hermod_common::{Context, Service, Shutdown, Stream};

pub use server::ConnectionLimits;
pub use session::{Backend, BackendError, Control, ScriptEntry, Session, SessionConfig};

/// The Sieve extensions the interpreter implements: the `SIEVE` capability.
pub const SIEVE_EXTENSIONS: &str = "fileinto reject ereject envelope encoded-character imap4flags copy body variables vacation vacation-seconds relational comparator-i;ascii-numeric subaddress date index mailbox include duplicate editheader regex spamtest";

/// Written to clients refused by the connection limits.
const BUSY_REPLY: &[u8] = b"BYE (TRYLATER) \"Too many connections, try again later\"\r\n";

/// Why the ManageSieve server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ManageSieveError {
    #[error("ManageSieve listener failed: {0}")]
    Listener(#[from] std::io::Error),
    #[error("ManageSieve listener task failed: {0}")]
    Task(String),
}

/// The session settings of a config.
pub fn session_config(ctx: &Context) -> SessionConfig {
    let sieve = &ctx.config.sieve;
    SessionConfig {
        hostname: ctx.config.myhostname.clone(),
        allow_plaintext_auth: ctx.config.allow_plaintext_auth,
        tls_available: true,
        max_errors: ctx.config.limits.max_errors.max(1),
        max_scripts: sieve.max_scripts,
        max_script_size: sieve.max_script_size,
        max_redirects: sieve.max_redirects,
        extensions: SIEVE_EXTENSIONS.to_string(),
    }
}

/// Serve ManageSieve on the listeners bound in `ctx` until `shutdown`.
pub async fn serve(ctx: Arc<Context>, shutdown: Shutdown) -> Result<(), ManageSieveError> {
    let limits = ConnectionLimits::from_config(&ctx.config);
    serve_with(ctx, shutdown, limits).await
}

/// [`serve`] with explicit connection limits (tests use short timeouts).
pub async fn serve_with(
    ctx: Arc<Context>,
    shutdown: Shutdown,
    limits: ConnectionLimits,
) -> Result<(), ManageSieveError> {
    let server = Arc::new(Server {
        session: session_config(&ctx),
        limits,
        ctx: ctx.clone(),
        shutdown: shutdown.clone(),
    });
    let mut loops = tokio::task::JoinSet::new();
    for listener in ctx.take_listeners(Service::ManageSieve) {
        let options = ctx.listener_options(Service::ManageSieve, BUSY_REPLY);
        let server = server.clone();
        loops.spawn(accept_loop(
            listener,
            options,
            shutdown.clone(),
            move |stream, info| {
                hermod_common::panic_guard::contain_panics(server.clone().connection(stream, info))
            },
        ));
    }
    if loops.is_empty() {
        tracing::info!("no ManageSieve listener configured");
        shutdown.triggered().await;
        return Ok(());
    }
    while let Some(done) = loops.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ManageSieveError::Listener(e)),
            Err(e) => return Err(ManageSieveError::Task(e.to_string())),
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
        let backend = backend::StoreBackend::new(self.ctx.clone(), info.peer.ip());
        let session = Session::new(self.session.clone(), backend, stream.is_tls());
        let (user, ending) =
            server::run(stream, session, &self.limits, &self.ctx.tls, &self.shutdown).await;
        tracing::info!(
            user = %user.as_deref().unwrap_or("-"),
            ending = ending.as_str(),
            "session ended"
        );
    }
}
