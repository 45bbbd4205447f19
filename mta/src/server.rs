//! The SMTP daemon: listeners on 25 (MX), 587 (submission) and 465 (submissions), the socket
//! loop around [`Session`], and the local delivery runner.
//!
//! The socket loop is small on purpose: read what the client sent, feed it to the session,
//! write the replies, and act on [`Action`] (upgrade to TLS, close). Timeouts: the idle timeout
//! of the config (5 minutes) between commands, 10 minutes while message content is read.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hermod_common::config::Service;
use hermod_common::metrics::{self, Counter};
use hermod_common::net::{ConnInfo, accept_loop};
use hermod_common::{Config, Context, Destination, Shutdown, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use crate::delivery::LocalDelivery;
use crate::envelope::{Envelope, EnvelopeRecipient, QueueId};
use crate::forwarding::Forwarding;
use crate::lmtp_client::{LmtpAddress, LmtpClient};
use crate::mda_delivery::MdaDelivery;
use crate::queue::runner::{LocalRunner, RunnerSettings};
use crate::queue::{Queue, QueueError};
use crate::session::spool::SpoolFile;
use crate::session::{
    Action, AuthOutcome, BackendError, ConnectionInfo, LocalDomains, Role, Session, SessionBackend,
    SessionConfig,
};

/// How long a client may take to send the next piece of message content.
pub const DATA_TIMEOUT: Duration = Duration::from_secs(600);

/// Bytes read from a socket at a time between commands: a pipelined batch of commands fits.
/// Small, because most connections spend most of their time here, idle.
const COMMAND_READ_BUFFER: usize = 4 * 1024;
/// Bytes read at a time while message content comes in (DATA, BDAT).
const DATA_READ_BUFFER: usize = 64 * 1024;

/// Sent to a client refused by the connection limits.
const BUSY_REPLY: &[u8] = b"421 4.7.0 Too many connections, try again later\r\n";

/// Errors that stop the MTA.
#[derive(Debug, thiserror::Error)]
pub enum MtaError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("cannot look up local domains: {0}")]
    Directory(#[from] hermod_common::directory::DirectoryError),
    #[error(transparent)]
    MailAuth(#[from] crate::auth::AuthSetupError),
    #[error(transparent)]
    Filter(#[from] crate::filter::FilterSetupError),
    #[error("SRS key: {0}")]
    Srs(std::io::Error),
}

/// The queue directory of a config: `<data_dir>/queue`.
pub fn queue_dir(config: &Config) -> PathBuf {
    config.data_dir.join("queue")
}

/// Runs the MTA until `shutdown`. Local mail is filed by the MDA in this process (the store
/// is shared with other processes, IMAP sees it at once), or handed over LMTP to
/// `lmtp_upstream` when that is set (an MDA on another host or under another user).
pub async fn serve(ctx: Arc<Context>, shutdown: Shutdown) -> Result<(), MtaError> {
    let queue = Arc::new(Queue::open(queue_dir(&ctx.config)).await?);
    match ctx.config.lmtp_upstream {
        Some(upstream) => {
            tracing::info!(lmtp = %upstream, "local delivery over LMTP");
            let delivery =
                LmtpClient::new(LmtpAddress::Tcp(upstream), ctx.config.myhostname.clone());
            run(ctx, shutdown, queue, Arc::new(delivery)).await
        }
        None => {
            let mda = hermod_mda::Delivery::from_context(&ctx);
            let forwarding = Forwarding::from_context(&ctx).map_err(MtaError::Srs)?;
            let delivery = MdaDelivery::new(mda, queue.clone()).with_forwarding(&ctx, forwarding);
            run(ctx, shutdown, queue, Arc::new(delivery)).await
        }
    }
}

/// Runs the MTA until `shutdown` with the given local delivery.
pub async fn serve_with<D: LocalDelivery>(
    ctx: Arc<Context>,
    shutdown: Shutdown,
    delivery: Arc<D>,
) -> Result<(), MtaError> {
    let queue = Arc::new(Queue::open(queue_dir(&ctx.config)).await?);
    run(ctx, shutdown, queue, delivery).await
}

async fn run<D: LocalDelivery>(
    ctx: Arc<Context>,
    shutdown: Shutdown,
    queue: Arc<Queue>,
    delivery: Arc<D>,
) -> Result<(), MtaError> {
    let recovery = queue.recover().await?;
    if recovery.partial_files + recovery.orphan_files > 0 || !recovery.missing_files.is_empty() {
        tracing::warn!(?recovery, "queue recovered after an unclean stop");
    }
    let backend = Arc::new(ServerBackend::new(ctx.clone(), queue.clone())?);

    let runner = LocalRunner::new(
        queue.clone(),
        delivery,
        backend.clone(),
        runner_settings(&ctx.config),
    );
    let token = shutdown.token().clone();
    shutdown.spawn(runner.run(token));

    // Remote recipients: the outbound engine (src/outbound) works on the same queue.
    let reports = backend.reports();
    let (outbound_ctx, outbound_queue, outbound_shutdown, outbound_reports) = (
        ctx.clone(),
        queue.clone(),
        shutdown.clone(),
        reports.clone(),
    );
    shutdown.spawn(async move {
        let result = crate::outbound::run_outbound(
            outbound_ctx,
            outbound_queue,
            outbound_shutdown,
            Some(outbound_reports),
        )
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "outbound delivery stopped");
        }
    });

    // DMARC and TLS reports (off by default): results flushed to disk, reports queued daily.
    shutdown.spawn(reports.run(ctx.clone(), queue.clone(), shutdown.token().clone()));

    let postmaster_domain = postmaster_domain(&ctx).await?;
    let screen = crate::filter::screen::Screen::new(&ctx.config)?;
    let screen = screen.active().then(|| Arc::new(screen));
    let mut loops = JoinSet::new();
    for (service, role) in [
        (Service::Smtp, Role::Mx),
        (Service::Submission, Role::Submission),
        (Service::Submissions, Role::Submissions),
    ] {
        let mut session_config = session_config(&ctx.config, role);
        session_config.postmaster_domain = postmaster_domain.clone();
        let listener_setup = Arc::new(ListenerSetup {
            session_config: Arc::new(session_config),
            screen: screen.clone().filter(|_| role == Role::Mx),
            backend: backend.clone(),
            ctx: ctx.clone(),
            shutdown: shutdown.clone(),
        });
        for listener in ctx.take_listeners(service) {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(service = service.name(), %addr, "SMTP listener ready");
            }
            let options = ctx.listener_options(service, BUSY_REPLY);
            let setup = listener_setup.clone();
            loops.spawn(accept_loop(
                listener,
                options,
                shutdown.clone(),
                move |stream, info| run_connection(stream, info, setup.clone()),
            ));
        }
    }
    while let Some(result) = loops.join_next().await {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "SMTP listener failed"),
            Err(e) => tracing::error!(error = %e, "SMTP listener task failed"),
        }
    }
    shutdown.triggered().await;
    Ok(())
}

/// Session settings for one listener, from the config.
pub fn session_config(config: &Config, role: Role) -> SessionConfig {
    let mut session = SessionConfig::new(role, config.myhostname.clone());
    session.postmaster_domain = config.mydomain.clone();
    session.max_message_size = usize::try_from(config.message_size_limit).unwrap_or(usize::MAX);
    session.max_recipients = config.limits.max_recipients;
    session.max_errors = config.limits.max_errors;
    session.max_line_length = config.limits.max_line_length.max(512);
    session.allow_plaintext_auth = config.allow_plaintext_auth;
    session.tls_available = true;
    session.spool_dir = Some(queue_dir(config).join("tmp"));
    session
}

/// Runner settings from the config.
pub fn runner_settings(config: &Config) -> RunnerSettings {
    let mut settings = RunnerSettings::new(config.myhostname.clone());
    settings.myorigin = config.myorigin.clone();
    settings.delay_warning = Duration::from_secs(config.delivery.delay_warning_time);
    settings.max_lifetime = Duration::from_secs(config.delivery.maximal_queue_lifetime);
    settings.min_backoff = Duration::from_secs(config.delivery.minimal_backoff_time);
    settings.max_backoff = Duration::from_secs(config.delivery.maximal_backoff_time);
    settings
}

/// The domain that `RCPT TO:<postmaster>` means: the first of mydomain, myhostname, myorigin
/// that is local, else the first local domain.
async fn postmaster_domain(ctx: &Context) -> Result<String, MtaError> {
    let config = &ctx.config;
    for candidate in [&config.mydomain, &config.myhostname, &config.myorigin] {
        if ctx.directory.is_local_domain(candidate).await? {
            return Ok(candidate.clone());
        }
    }
    Ok(ctx
        .directory
        .list_domains()
        .await?
        .into_iter()
        .next()
        .unwrap_or_else(|| config.mydomain.clone()))
}

/// What every connection of one listener shares.
struct ListenerSetup<B> {
    session_config: Arc<SessionConfig>,
    /// Screening at connect (port 25 only, when configured).
    screen: Option<Arc<crate::filter::screen::Screen>>,
    backend: Arc<B>,
    ctx: Arc<Context>,
    shutdown: Shutdown,
}

/// The socket loop of one SMTP connection.
async fn run_connection<B: SessionBackend>(
    mut stream: Stream,
    info: ConnInfo,
    setup: Arc<ListenerSetup<B>>,
) {
    let peer = info.peer.ip();
    let role = setup.session_config.role;
    let conn = ConnectionInfo {
        peer,
        relay_allowed: role == Role::Mx && setup.ctx.config.in_mynetworks(peer),
        tls: stream.tls_description(),
    };
    if let Some(screen) = &setup.screen
        && !screen.admit(&mut stream, peer).await
    {
        let _ = stream.shutdown().await;
        return;
    }
    let mut session = Session::new(setup.session_config.clone(), conn, setup.backend.clone());
    let command_timeout = Duration::from_secs(setup.ctx.config.limits.idle_timeout.max(1));
    let mut out = Vec::with_capacity(1024);
    session.greeting(&mut out);
    let mut buf = Vec::new();
    loop {
        if !out.is_empty() {
            if write_all(&mut stream, &out, command_timeout).await.is_err() {
                return;
            }
            out.clear();
        }
        let (limit, buffer_size) = if session.in_data() {
            (DATA_TIMEOUT, DATA_READ_BUFFER)
        } else {
            (command_timeout, COMMAND_READ_BUFFER)
        };
        // The large buffer is held only while a message is read: an idle connection keeps
        // a few KiB, not 64.
        if buf.len() != buffer_size {
            buf = vec![0u8; buffer_size];
        }
        // A message being received is finished first (within the shutdown grace time).
        let in_data = session.in_data();
        let read = tokio::select! {
            _ = setup.shutdown.triggered(), if !in_data => {
                let _ = write_all(
                    &mut stream,
                    b"421 4.3.2 Service shutting down, closing connection\r\n",
                    Duration::from_secs(5),
                )
                .await;
                return;
            }
            read = tokio::time::timeout(limit, stream.read(&mut buf)) => read,
        };
        let n = match read {
            Err(_) => {
                tracing::info!(in_data = session.in_data(), "client timed out");
                session.timeout(&mut out);
                let _ = write_all(&mut stream, &out, Duration::from_secs(5)).await;
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "read failed");
                return;
            }
            Ok(Ok(0)) => return,
            Ok(Ok(n)) => n,
        };
        match session.feed(&buf[..n], &mut out).await {
            Action::Continue => {}
            Action::Close => {
                let _ = write_all(&mut stream, &out, command_timeout).await;
                let _ = stream.shutdown().await;
                return;
            }
            Action::StartTls => {
                if write_all(&mut stream, &out, command_timeout).await.is_err() {
                    return;
                }
                out.clear();
                stream = match stream.upgrade(&setup.ctx.tls.acceptor).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        tracing::info!(error = %e, "STARTTLS handshake failed");
                        return;
                    }
                };
                session.tls_established(stream.tls_description().unwrap_or_default());
            }
        }
    }
}

async fn write_all(stream: &mut Stream, bytes: &[u8], limit: Duration) -> std::io::Result<()> {
    tokio::time::timeout(limit, async {
        stream.write_all(bytes).await?;
        stream.flush().await
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))?
}

/// The session backend of the daemon: the directory, the authenticator and the queue.
pub struct ServerBackend {
    ctx: Arc<Context>,
    queue: Arc<Queue>,
    mail_auth: crate::auth::MailAuth,
    spam: crate::filter::SpamFilter,
    forwarding: Forwarding,
}

/// A recipient after alias expansion, with the local address it was forwarded for when it
/// is a remote target of one of our addresses (an alias, or an SRS address we reverse).
type Expanded = (EnvelopeRecipient, Option<String>);

impl ServerBackend {
    pub fn new(ctx: Arc<Context>, queue: Arc<Queue>) -> Result<Self, MtaError> {
        let mail_auth = crate::auth::MailAuth::new(&ctx.config)?;
        let spam = crate::filter::SpamFilter::new(&ctx.config)?;
        let forwarding = Forwarding::from_context(&ctx).map_err(MtaError::Srs)?;
        Ok(ServerBackend {
            ctx,
            queue,
            mail_auth,
            spam,
            forwarding,
        })
    }

    /// The mail authentication reports this backend records into.
    pub fn reports(&self) -> Arc<crate::auth::reports::Reports> {
        self.mail_auth.reports()
    }

    /// Whether an alias sends mail for one of `recipients` to a remote address.
    async fn forwards_remotely(&self, recipients: &[String]) -> bool {
        for address in recipients {
            if let Ok(Some(destinations)) = self.ctx.directory.resolve(address).await
                && destinations
                    .iter()
                    .any(|d| matches!(d, Destination::Remote(_)))
            {
                return true;
            }
        }
        false
    }

    /// The envelopes to queue for one accepted message: the recipients as expanded under the
    /// original sender, and forwarded ones under their SRS sender (one envelope per sender).
    /// The first envelope keeps the session's queue id.
    async fn envelopes(
        &self,
        id: &QueueId,
        envelope: &Envelope,
    ) -> Result<Vec<(QueueId, Envelope)>, BackendError> {
        let expanded = self.expand(&envelope.recipients).await?;
        let mut groups: Vec<(String, Vec<EnvelopeRecipient>)> =
            vec![(envelope.sender.clone(), Vec::new())];
        for (rcpt, via) in expanded {
            let sender = match &via {
                Some(via) if !rcpt.local => self.forwarding.sender_for(&envelope.sender, via).await,
                _ => envelope.sender.clone(),
            };
            match groups.iter_mut().find(|(s, _)| *s == sender) {
                Some((_, list)) => list.push(rcpt),
                None => groups.push((sender, vec![rcpt])),
            }
        }
        let mut out = Vec::with_capacity(groups.len());
        for (sender, recipients) in groups {
            if recipients.is_empty() {
                continue;
            }
            let queue_id = if out.is_empty() {
                id.clone()
            } else {
                QueueId::generate()
            };
            if sender != envelope.sender {
                tracing::info!(queue_id = %queue_id, orig_from = %envelope.sender, from = %sender,
                    nrcpt = recipients.len(), "forward with SRS sender");
            }
            let mut e = envelope.clone();
            e.sender = sender;
            e.recipients = recipients;
            out.push((queue_id, e));
        }
        Ok(out)
    }

    /// Expands the local recipients through the directory (aliases, `+detail`, catch-all,
    /// postmaster) so the queue holds mailboxes to deliver to and remote addresses to send to.
    /// The address as given is kept as ORCPT for DSNs.
    async fn expand(
        &self,
        recipients: &[EnvelopeRecipient],
    ) -> Result<Vec<Expanded>, BackendError> {
        let mut expanded: Vec<Expanded> = Vec::with_capacity(recipients.len());
        for rcpt in recipients {
            // A bounce (or reply) to an SRS address of ours goes back to the sender it stands for.
            if rcpt.local
                && let Some(Ok(back)) = self.forwarding.reverse(&rcpt.address)
            {
                if !expanded.iter().any(|(e, _)| e.address == back) {
                    let local = self.forwarding.is_local_address(&back).await;
                    tracing::info!(srs = %rcpt.address, to = %back, "SRS address reversed");
                    expanded.push((
                        EnvelopeRecipient {
                            address: back,
                            local,
                            notify: rcpt.notify,
                            orcpt: rcpt.orcpt.clone(),
                        },
                        Some(rcpt.address.clone()),
                    ));
                }
                continue;
            }
            let destinations = if rcpt.local {
                self.ctx
                    .directory
                    .resolve(&rcpt.address)
                    .await
                    .map_err(directory_error)?
            } else {
                None
            };
            let targets: Vec<(String, bool)> = match destinations {
                Some(destinations) => destinations
                    .into_iter()
                    .map(|d| match d {
                        Destination::Local {
                            user,
                            detail: Some(detail),
                        } => (
                            format!("{}+{}@{}", user.localpart, detail, user.domain),
                            true,
                        ),
                        Destination::Local { user, detail: None } => (user.address, true),
                        Destination::Remote(address) => (address, false),
                    })
                    .collect(),
                // Remote, or local but gone since RCPT: the delivery attempt will tell.
                None => vec![(rcpt.address.clone(), rcpt.local)],
            };
            for (address, local) in targets {
                if expanded.iter().any(|(e, _)| e.address == address) {
                    continue;
                }
                let orcpt = rcpt.orcpt.clone().or_else(|| {
                    (address != rcpt.address).then(|| format!("rfc822;{}", rcpt.address))
                });
                // A remote target of one of our addresses: mail forwarded on its behalf.
                let via = (rcpt.local && !local).then(|| rcpt.address.clone());
                expanded.push((
                    EnvelopeRecipient {
                        address,
                        local,
                        notify: rcpt.notify,
                        orcpt,
                    },
                    via,
                ));
            }
        }
        Ok(expanded)
    }
}

fn directory_error(e: hermod_common::directory::DirectoryError) -> BackendError {
    BackendError(e.to_string())
}

impl LocalDomains for ServerBackend {
    async fn is_local_domain(&self, domain: &str) -> Result<bool, BackendError> {
        self.ctx
            .directory
            .is_local_domain(domain)
            .await
            .map_err(directory_error)
    }
}

impl SessionBackend for ServerBackend {
    async fn local_recipient_exists(&self, address: &str) -> Result<bool, BackendError> {
        if let Some(reversed) = self.forwarding.reverse(address) {
            return Ok(match reversed {
                Ok(_) => true,
                Err(e) => {
                    tracing::info!(rcpt = %hermod_common::log_escape::escape(address), error = %e,
                        "SRS address refused");
                    false
                }
            });
        }
        Ok(self
            .ctx
            .directory
            .resolve(address)
            .await
            .map_err(directory_error)?
            .is_some())
    }

    async fn authenticate(
        &self,
        username: &str,
        password: &str,
        peer: std::net::IpAddr,
    ) -> Result<AuthOutcome, BackendError> {
        Ok(
            match self
                .ctx
                .auth
                .verify(username, password, peer)
                .await
                .map_err(directory_error)?
            {
                Some(user) => AuthOutcome::Success { user: user.address },
                None => AuthOutcome::Failure,
            },
        )
    }

    async fn may_send_as(&self, user: &str, address: &str) -> Result<bool, BackendError> {
        let directory = &self.ctx.directory;
        match directory.user(user).await.map_err(directory_error)? {
            Some(user) => directory
                .may_send_as(&user, address)
                .await
                .map_err(directory_error),
            None => Ok(false),
        }
    }

    async fn check_sender(
        &self,
        peer: std::net::IpAddr,
        helo: &str,
        sender: &str,
        authenticated: bool,
        relay_allowed: bool,
    ) -> Result<crate::auth::SenderAuth, crate::session::Reply> {
        self.mail_auth
            .check_sender(peer, helo, sender, authenticated, relay_allowed)
            .await
    }

    fn checks_content(&self, facts: &crate::auth::MessageFacts) -> bool {
        self.mail_auth.checks(facts) || self.spam.scans(facts)
    }

    async fn check_message(
        &self,
        mut facts: crate::auth::MessageFacts,
        message: Vec<u8>,
    ) -> crate::auth::MessageOutcome {
        if self.mail_auth.seals(&facts) {
            facts.forwarded = self.forwards_remotely(&facts.recipients).await;
        }
        // Mail authentication first: the filter sees (and may weigh) its results.
        match self
            .mail_auth
            .check_message(facts.clone(), message, self)
            .await
        {
            crate::auth::MessageOutcome::Accept(message) => self.spam.check(&facts, message).await,
            refused => refused,
        }
    }

    async fn enqueue(
        &self,
        id: &QueueId,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<(), BackendError> {
        // A failure after the first envelope was queued makes the client retry: the queued
        // recipients may get the message twice, which beats losing the others.
        for (queue_id, envelope) in self.envelopes(id, envelope).await? {
            self.queue
                .enqueue(&queue_id, &envelope, message)
                .await
                .map_err(|e| BackendError(e.to_string()))?;
        }
        metrics::inc(Counter::MessagesReceived);
        Ok(())
    }

    async fn enqueue_spooled(
        &self,
        id: &QueueId,
        envelope: &Envelope,
        prefix: &[u8],
        body: &SpoolFile,
    ) -> Result<(), BackendError> {
        for (queue_id, envelope) in self.envelopes(id, envelope).await? {
            self.queue
                .enqueue_spooled(&queue_id, &envelope, prefix, body.path())
                .await
                .map_err(|e| BackendError(e.to_string()))?;
        }
        metrics::inc(Counter::MessagesReceived);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
    use tokio::net::TcpStream;

    use super::*;
    use crate::delivery::DeliveryError;

    #[derive(Default)]
    struct Mailboxes {
        delivered: Mutex<Vec<(String, String, Vec<u8>)>>,
    }

    impl LocalDelivery for Mailboxes {
        async fn deliver(
            &self,
            sender: &str,
            recipient: &str,
            message: &[u8],
        ) -> Result<(), DeliveryError> {
            self.delivered.lock().unwrap().push((
                sender.into(),
                recipient.into(),
                message.to_vec(),
            ));
            Ok(())
        }
    }

    struct Daemon {
        _tmp: tempfile::TempDir,
        ctx: Arc<Context>,
        shutdown: Shutdown,
        task: tokio::task::JoinHandle<Result<(), MtaError>>,
        mailboxes: Arc<Mailboxes>,
        smtp: std::net::SocketAddr,
        submission: std::net::SocketAddr,
        submissions: std::net::SocketAddr,
    }

    async fn start() -> Daemon {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = Config::defaults(true);
        config.data_dir = tmp.path().to_path_buf();
        // Loopback would be in mynetworks: the tests play an outside client.
        config.mynetworks = Vec::new();
        // No DNS here: mail authentication has its own tests (tests/mail_auth.rs).
        config.mail_auth.verify = false;
        let local: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        config.listen = vec![
            (Service::Smtp, vec![local]),
            (Service::Submission, vec![local]),
            (Service::Submissions, vec![local]),
        ];
        let ctx = Context::open(config).await.unwrap();
        ctx.directory.add_domain("example.org").await.unwrap();
        ctx.directory
            .add_user("alice@example.org", "secret", 0)
            .await
            .unwrap();
        ctx.directory
            .add_alias("sales@example.org", "alice@example.org")
            .await
            .unwrap();
        ctx.bind(&[Service::Smtp, Service::Submission, Service::Submissions])
            .unwrap();
        let addr = |s| {
            ctx.bound_addrs()
                .into_iter()
                .find(|(service, _)| *service == s)
                .unwrap()
                .1
        };
        let (smtp, submission, submissions) = (
            addr(Service::Smtp),
            addr(Service::Submission),
            addr(Service::Submissions),
        );
        let shutdown = Shutdown::new();
        let mailboxes = Arc::new(Mailboxes::default());
        let task = tokio::spawn(serve_with(ctx.clone(), shutdown.clone(), mailboxes.clone()));
        Daemon {
            _tmp: tmp,
            ctx,
            shutdown,
            task,
            mailboxes,
            smtp,
            submission,
            submissions,
        }
    }

    impl Daemon {
        async fn delivered(&self, n: usize) -> Vec<(String, String, Vec<u8>)> {
            for _ in 0..500 {
                let got = self.mailboxes.delivered.lock().unwrap().clone();
                if got.len() >= n {
                    return got;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("messages not delivered");
        }

        async fn stop(self) {
            self.shutdown.trigger();
            let result = tokio::time::timeout(Duration::from_secs(10), self.task)
                .await
                .unwrap();
            result.unwrap().unwrap();
            assert!(self.shutdown.wait(Duration::from_secs(10)).await);
        }
    }

    struct Client<S> {
        conn: BufReader<S>,
    }

    impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
        /// Reads one (possibly multi-line) reply.
        async fn reply(&mut self) -> String {
            let mut all = String::new();
            loop {
                let mut line = String::new();
                let n =
                    tokio::time::timeout(Duration::from_secs(10), self.conn.read_line(&mut line))
                        .await
                        .unwrap()
                        .unwrap();
                assert!(n > 0, "connection closed after {all:?}");
                all.push_str(&line);
                if line.as_bytes().get(3) == Some(&b' ') {
                    return all;
                }
            }
        }

        async fn cmd(&mut self, line: &str) -> String {
            self.conn
                .get_mut()
                .write_all(format!("{line}\r\n").as_bytes())
                .await
                .unwrap();
            self.reply().await
        }
    }

    async fn connect(addr: std::net::SocketAddr) -> Client<TcpStream> {
        let mut c = Client {
            conn: BufReader::new(TcpStream::connect(addr).await.unwrap()),
        };
        assert!(c.reply().await.starts_with("220 localhost ESMTP"));
        c
    }

    fn tls_connector(ctx: &Context) -> tokio_rustls::TlsConnector {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&ctx.tls.cert_path).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    fn plain_auth(user: &str, password: &str) -> String {
        hermod_common::sasl::encode_base64(format!("\0{user}\0{password}").as_bytes())
    }

    #[tokio::test]
    async fn mx_accepts_expands_aliases_and_delivers() {
        let d = start().await;
        let mut c = connect(d.smtp).await;
        let ehlo = c.cmd("EHLO client.example.net").await;
        assert!(
            ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
            "{ehlo}"
        );
        assert!(c.cmd("MAIL FROM:<s@example.net>").await.starts_with("250"));
        assert!(
            c.cmd("RCPT TO:<alice@example.org>")
                .await
                .starts_with("250")
        );
        assert!(
            c.cmd("RCPT TO:<sales@example.org>")
                .await
                .starts_with("250")
        );
        assert!(
            c.cmd("RCPT TO:<nobody@example.org>")
                .await
                .starts_with("550 5.1.1")
        );
        assert!(
            c.cmd("RCPT TO:<victim@other.test>")
                .await
                .starts_with("554 5.7.1")
        );
        assert!(c.cmd("DATA").await.starts_with("354"));
        let reply = c.cmd("Subject: hi\r\n\r\nhello\r\n.").await;
        assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
        assert!(c.cmd("QUIT").await.starts_with("221"));

        let delivered = d.delivered(1).await;
        // alice and the alias that points to her: one delivery.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(d.mailboxes.delivered.lock().unwrap().len(), 1);
        let (sender, rcpt, msg) = &delivered[0];
        assert_eq!(sender, "s@example.net");
        assert_eq!(rcpt, "alice@example.org");
        let msg = String::from_utf8_lossy(msg);
        assert!(msg.starts_with("Received: from client.example.net ([127.0.0.1])"));
        assert!(msg.ends_with("Subject: hi\r\n\r\nhello\r\n"));
        d.stop().await;
    }

    #[tokio::test]
    async fn submission_with_starttls_and_auth_queues_remote_mail() {
        let d = start().await;
        let mut c = connect(d.submission).await;
        let ehlo = c.cmd("EHLO laptop").await;
        assert!(!ehlo.contains("AUTH"), "{ehlo}");
        assert!(
            c.cmd("MAIL FROM:<alice@example.org>")
                .await
                .starts_with("530")
        );
        assert!(c.cmd("STARTTLS").await.starts_with("220 2.0.0"));
        let tcp = c.conn.into_inner();
        let tls = tls_connector(&d.ctx)
            .connect(
                rustls_pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        let mut c = Client {
            conn: BufReader::new(tls),
        };
        let ehlo = c.cmd("EHLO laptop").await;
        assert!(ehlo.contains("AUTH PLAIN LOGIN") || ehlo.contains("AUTH LOGIN PLAIN"));
        let bad = c
            .cmd(&format!(
                "AUTH PLAIN {}",
                plain_auth("alice@example.org", "nope")
            ))
            .await;
        assert!(bad.starts_with("535 5.7.8"), "{bad}");
        let ok = c
            .cmd(&format!(
                "AUTH PLAIN {}",
                plain_auth("alice@example.org", "secret")
            ))
            .await;
        assert!(ok.starts_with("235"), "{ok}");
        assert!(
            c.cmd("MAIL FROM:<bob@example.org>")
                .await
                .starts_with("553 5.7.1")
        );
        assert!(
            c.cmd("MAIL FROM:<sales@example.org>")
                .await
                .starts_with("250")
        );
        assert!(
            c.cmd("RCPT TO:<friend@remote.test>")
                .await
                .starts_with("250")
        );
        assert!(c.cmd("DATA").await.starts_with("354"));
        let reply = c.cmd("Subject: out\r\n\r\nbye\r\n.").await;
        assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
        let id = QueueId::parse(reply.trim_end().rsplit(' ').next().unwrap()).unwrap();

        // Remote mail waits in the queue for the outbound engine, visible to `queue list`.
        let queue = Queue::open(queue_dir(&d.ctx.config)).await.unwrap();
        let queued = queue.show(&id).await.unwrap().unwrap();
        assert_eq!(queued.sender, "sales@example.org");
        assert_eq!(queued.auth_user.as_deref(), Some("alice@example.org"));
        assert_eq!(queued.recipients[0].address, "friend@remote.test");
        assert!(!queued.recipients[0].local);
        let content = String::from_utf8(queue.read_message(&id).await.unwrap()).unwrap();
        assert!(content.contains("with ESMTPSA (TLSv1_3"), "{content}");
        assert!(content.contains("\r\nMessage-ID: <"));
        d.stop().await;
    }

    #[tokio::test]
    async fn submissions_speaks_tls_from_the_start() {
        let d = start().await;
        let tcp = TcpStream::connect(d.submissions).await.unwrap();
        let tls = tls_connector(&d.ctx)
            .connect(
                rustls_pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        let mut c = Client {
            conn: BufReader::new(tls),
        };
        assert!(c.reply().await.starts_with("220 "));
        let ehlo = c.cmd("EHLO laptop").await;
        assert!(
            ehlo.contains("AUTH ") && !ehlo.contains("STARTTLS"),
            "{ehlo}"
        );
        assert!(c.cmd("AUTH LOGIN").await.starts_with("334 VXNlcm5hbWU6"));
        assert!(
            c.cmd(&hermod_common::sasl::encode_base64(b"alice@example.org"))
                .await
                .starts_with("334 UGFzc3dvcmQ6")
        );
        assert!(
            c.cmd(&hermod_common::sasl::encode_base64(b"secret"))
                .await
                .starts_with("235")
        );
        d.stop().await;
    }

    #[tokio::test]
    async fn shutdown_tells_idle_clients() {
        let d = start().await;
        let mut c = connect(d.smtp).await;
        c.cmd("EHLO x").await;
        d.shutdown.trigger();
        assert!(c.reply().await.starts_with("421 4.3.2"));
        d.stop().await;
    }
}
