//! The outbound runner: takes due remote recipients off the queue, groups them by
//! destination (recipient domain, or the relay host), delivers each destination's messages
//! over a few connections that each carry many messages, records every outcome, retries
//! temporary failures with backoff and bounces permanent ones.
//!
//! Like Postfix's queue manager it keeps an "active queue" in memory (at most
//! `max_in_flight` recipients) and reads the queue database every `poll_interval`, so mail
//! queued or flushed by another process (`hermod queue flush`) is seen within that time.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hermod_common::Context;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::OutboundError;
use super::body::{FileMessage, OutgoingContent};
use super::client::{OutgoingMessage, OutgoingRecipient};
use super::connection::{ConnectOptions, ConnectionFailure, SendOutcome, SmtpConnection, Target};
use super::reply::{RemoteReply, synthetic};
use super::route::{RouteFailure, RouteKey, Router, report_to_internal_literal};
use super::settings::OutboundSettings;
use super::sts;
use super::tls::TlsClient;
use crate::auth::mta_sts::{self, Fetcher, MtaSts};
use crate::auth::reports::{Reports, tls as tls_report};
use crate::bounce::status_of;
use crate::envelope::QueueId;
use crate::queue::report::{DelayWarnings, Reporter};
use crate::queue::{
    Attempt, AttemptsRecorded, Destination as QueueSide, Queue, QueueError, QueuedContent,
    QueuedMessage, QueuedRecipient, RecipientStatus, unix_now,
};
use hermod_common::metrics::{self, Counter};

/// A queued message's content as loaded for sending: small ones whole, big ones scanned and
/// sent from their file.
enum Loaded {
    Memory(Vec<u8>),
    File(FileMessage),
}

/// The queue is not read more often than this, however busy the runner is.
const MIN_POLL_GAP: Duration = Duration::from_millis(100);
/// Queued messages per connection before another connection to the same destination opens.
const JOBS_PER_CONNECTION: usize = 8;
/// When no server of a destination answered, the messages already queued for it are
/// deferred without new connection attempts (Postfix's dead destination), for at most this
/// long. Messages handed to it later (new mail, a flush) are tried again.
const SUSPENSION: Duration = Duration::from_secs(60);
/// How long a destination's servers, once looked up, are used without a new lookup.
const ROUTE_CACHE: Duration = Duration::from_secs(60);

/// Counters, for logs and the benchmark.
#[derive(Debug, Default)]
pub struct OutboundStats {
    /// Connections set up (greeting, EHLO, STARTTLS, AUTH done).
    pub connections: AtomicU64,
    /// Messages accepted by a server for at least one recipient.
    pub messages_sent: AtomicU64,
    pub recipients_sent: AtomicU64,
    pub recipients_deferred: AtomicU64,
    pub recipients_bounced: AtomicU64,
}

/// Delivers the remote recipients of the queue. Build it with [`OutboundRunner::new`], then
/// [`OutboundRunner::run`] it until shutdown.
pub struct OutboundRunner {
    shared: Arc<Shared>,
}

struct Shared {
    ctx: Arc<Context>,
    queue: Arc<Queue>,
    settings: OutboundSettings,
    router: Router,
    tls: TlsClient,
    /// Recipient domains' MTA-STS policies (None: `[auth] mta_sts` is off, or all mail goes
    /// to the relay host).
    mta_sts: Option<MtaSts>,
    /// Where TLS session outcomes go for TLS reports (the daemon's; None in most tests).
    reports: Option<Arc<Reports>>,
    /// `(message, recipient position)` of every recipient being delivered, and of those
    /// finished since the last read of the queue (see [`Shared::release`]).
    in_flight: Mutex<HashSet<(QueueId, u32)>>,
    /// Recipients whose outcome is committed, to drop from `in_flight` before the next read.
    released: Mutex<Vec<(QueueId, u32)>>,
    /// Recipients being delivered.
    active: AtomicUsize,
    destinations: Mutex<HashMap<RouteKey, Arc<DestinationQueue>>>,
    connections: Arc<Semaphore>,
    /// The last queue read returned as many recipients as allowed: more may be due.
    saturated: AtomicBool,
    /// Wakes the main loop (room in the active queue).
    wake: Notify,
    stats: Arc<OutboundStats>,
    workers: TaskTracker,
    shutdown: CancellationToken,
}

/// The messages waiting for one destination and the connections working on them.
struct DestinationQueue {
    key: RouteKey,
    state: Mutex<DestinationState>,
    /// New jobs for workers waiting on an idle connection.
    arrived: Notify,
    route: tokio::sync::Mutex<Option<(Instant, RouteResult)>>,
}

#[derive(Default)]
struct DestinationState {
    jobs: VecDeque<Job>,
    workers: usize,
    /// Since when, the reply, and the last job it applies to.
    suspended: Option<(Instant, RemoteReply, u64)>,
    /// Jobs handed to this destination so far (numbers the jobs).
    dispatched: u64,
}

/// The servers of a destination, or why there are none.
type RouteResult = Result<Arc<Vec<Target>>, RouteFailure>;

/// One message and its recipients for one destination.
struct Job {
    message: Arc<QueuedMessage>,
    recipients: Vec<QueuedRecipient>,
    /// Order of arrival at its destination.
    number: u64,
}

/// How one recipient's attempt ended.
#[derive(Debug, Clone)]
struct RecipientResult {
    class: Class,
    reply: RemoteReply,
    /// The server that gave the reply (`mx.example.org[192.0.2.1]:25`).
    server: Option<Target>,
    tls: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Sent,
    Temporary,
    Permanent,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl OutboundRunner {
    pub fn new(
        ctx: Arc<Context>,
        queue: Arc<Queue>,
        settings: OutboundSettings,
    ) -> Result<Self, OutboundError> {
        Self::with_reports(ctx, queue, settings, None)
    }

    /// [`OutboundRunner::new`], recording TLS session outcomes into `reports`.
    pub fn with_reports(
        ctx: Arc<Context>,
        queue: Arc<Queue>,
        settings: OutboundSettings,
        reports: Option<Arc<Reports>>,
    ) -> Result<Self, OutboundError> {
        let router = Router::new(&ctx.config, settings.max_addresses)?;
        let tls = TlsClient::new(&settings.extra_roots)?;
        let mta_sts = match (
            settings.mta_sts,
            router.relayhost(),
            tls.verified_connector(),
        ) {
            (true, None, Some(connector)) => Some(MtaSts::new(
                Fetcher {
                    resolver: super::route::resolver(&ctx.config)?,
                    tls: connector,
                    port: settings.mta_sts_port,
                    timeout: mta_sts::FETCH_TIMEOUT,
                },
                &ctx.config.data_dir.join("mta-sts"),
            )),
            _ => None,
        };
        let connections = Arc::new(Semaphore::new(settings.max_connections.max(1)));
        Ok(OutboundRunner {
            shared: Arc::new(Shared {
                ctx,
                queue,
                settings,
                router,
                tls,
                mta_sts,
                reports,
                in_flight: Mutex::new(HashSet::new()),
                released: Mutex::new(Vec::new()),
                active: AtomicUsize::new(0),
                destinations: Mutex::new(HashMap::new()),
                connections,
                saturated: AtomicBool::new(false),
                wake: Notify::new(),
                stats: Arc::new(OutboundStats::default()),
                workers: TaskTracker::new(),
                shutdown: CancellationToken::new(),
            }),
        })
    }

    pub fn stats(&self) -> Arc<OutboundStats> {
        self.shared.stats.clone()
    }

    /// Runs until `shutdown` is cancelled. Messages being sent are finished first; the
    /// others stay queued as they are.
    pub async fn run(self, shutdown: CancellationToken) {
        let shared = self.shared;
        if let Some(relay) = shared.router.relayhost() {
            tracing::info!(relayhost = %relay, "outbound delivery through the relay host");
        } else {
            tracing::info!("outbound delivery by MX lookup");
        }
        loop {
            let polled = Instant::now();
            if let Err(e) = shared.take_due().await {
                tracing::error!(error = %e, "cannot read the queue");
            }
            shared.forget_idle_destinations();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = shared.wake.notified() => {}
                _ = tokio::time::sleep(shared.settings.poll_interval) => {}
            }
            let since = polled.elapsed();
            if since < MIN_POLL_GAP {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(MIN_POLL_GAP - since) => {}
                }
            }
        }
        shared.shutdown.cancel();
        for destination in lock(&shared.destinations).values() {
            destination.arrived.notify_waiters();
        }
        shared.workers.close();
        shared.workers.wait().await;
    }
}

impl Shared {
    /// Reads due remote recipients not yet in flight and hands them to their destinations.
    async fn take_due(self: &Arc<Self>) -> Result<(), crate::queue::QueueError> {
        let limit = self.settings.max_in_flight.max(1);
        {
            let released = std::mem::take(&mut *lock(&self.released));
            let mut in_flight = lock(&self.in_flight);
            for key in &released {
                in_flight.remove(key);
            }
        }
        if self.active.load(Ordering::Relaxed) >= limit {
            return Ok(());
        }
        let now = unix_now();
        match self.queue.next_due(QueueSide::Remote).await? {
            Some(at) if at <= now => {}
            _ => return Ok(()),
        }
        let due = self.queue.due(QueueSide::Remote, now, limit as u32).await?;
        let total: usize = due.iter().map(|m| m.recipients.len()).sum();
        self.saturated.store(total >= limit, Ordering::Relaxed);
        let relay = self.router.relayhost().is_some();
        let mut by_route: HashMap<RouteKey, Vec<Job>> = HashMap::new();
        for mut message in due {
            let recipients = std::mem::take(&mut message.recipients);
            let message = Arc::new(message);
            let mut groups: HashMap<RouteKey, Vec<QueuedRecipient>> = HashMap::new();
            {
                let mut in_flight = lock(&self.in_flight);
                for rcpt in recipients {
                    if !in_flight.insert((message.id.clone(), rcpt.position)) {
                        continue;
                    }
                    self.active.fetch_add(1, Ordering::Relaxed);
                    let key = RouteKey::for_recipient(&rcpt.address, relay)
                        .unwrap_or_else(|| RouteKey::Domain(String::new()));
                    groups.entry(key).or_default().push(rcpt);
                }
            }
            for (key, recipients) in groups {
                by_route.entry(key).or_default().push(Job {
                    message: message.clone(),
                    recipients,
                    number: 0,
                });
            }
        }
        for (key, jobs) in by_route {
            self.dispatch(key, jobs);
        }
        Ok(())
    }

    /// Queues jobs for a destination and starts connections for them.
    fn dispatch(self: &Arc<Self>, key: RouteKey, jobs: Vec<Job>) {
        let destination = lock(&self.destinations)
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(DestinationQueue {
                    key,
                    state: Mutex::new(DestinationState::default()),
                    arrived: Notify::new(),
                    route: tokio::sync::Mutex::new(None),
                })
            })
            .clone();
        let start = {
            let mut state = lock(&destination.state);
            for mut job in jobs {
                state.dispatched += 1;
                job.number = state.dispatched;
                state.jobs.push_back(job);
            }
            let wanted = state
                .jobs
                .len()
                .div_ceil(JOBS_PER_CONNECTION)
                .clamp(1, self.settings.destination_concurrency.max(1));
            let start = wanted.saturating_sub(state.workers);
            state.workers += start;
            start
        };
        destination.arrived.notify_waiters();
        for _ in 0..start {
            let shared = self.clone();
            let destination = destination.clone();
            self.workers
                .spawn(async move { shared.work(destination).await });
        }
    }

    /// Drops destinations nobody works on, so their suspension and route are forgotten.
    fn forget_idle_destinations(&self) {
        lock(&self.destinations).retain(|_, d| {
            let state = lock(&d.state);
            state.workers > 0 || !state.jobs.is_empty()
        });
    }

    /// One connection's worth of work for a destination: takes its jobs one after the other,
    /// keeping the connection open between them, until none is left.
    async fn work(self: Arc<Self>, destination: Arc<DestinationQueue>) {
        let _permit = self.connections.clone().acquire_owned().await;
        let mut connection: Option<SmtpConnection> = None;
        loop {
            let Some(job) = self.next_job(&destination, connection.is_some()).await else {
                break;
            };
            if self.shutdown.is_cancelled() {
                self.release(&job);
                continue;
            }
            if connection
                .as_ref()
                .is_some_and(|c| c.transactions() >= self.settings.max_messages_per_connection)
                && let Some(c) = connection.take()
            {
                c.quit().await;
            }
            self.deliver(&destination, job, &mut connection).await;
        }
        if let Some(c) = connection {
            c.quit().await;
        }
    }

    /// The next job of the destination. With a connection open, waits up to
    /// `connection_idle` for one to arrive; None when the worker should stop.
    async fn next_job(&self, destination: &DestinationQueue, connected: bool) -> Option<Job> {
        let idle_until = tokio::time::Instant::now() + self.settings.connection_idle;
        loop {
            let arrived = destination.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            {
                let mut state = lock(&destination.state);
                if let Some(job) = state.jobs.pop_front() {
                    return Some(job);
                }
                if !connected
                    || self.shutdown.is_cancelled()
                    || tokio::time::Instant::now() >= idle_until
                {
                    state.workers -= 1;
                    return None;
                }
            }
            tokio::select! {
                _ = arrived => {}
                _ = tokio::time::sleep_until(idle_until) => {}
                _ = self.shutdown.cancelled() => {}
            }
        }
    }

    /// Marks a job's recipients as no longer in flight, once its outcome is committed (or
    /// when it was not attempted at shutdown). They leave `in_flight` only at the start of
    /// the next read of the queue: a read already under way may predate the commit and must
    /// not hand them out again.
    fn release(&self, job: &Job) {
        let mut released = lock(&self.released);
        for rcpt in &job.recipients {
            released.push((job.message.id.clone(), rcpt.position));
        }
        self.active
            .fetch_sub(job.recipients.len(), Ordering::Relaxed);
    }

    /// Attempts one job; its outcome is recorded by a task of its own, so the connection
    /// goes on to the next message while the queue commits (many outcomes share one fsync).
    async fn deliver(
        self: &Arc<Self>,
        destination: &DestinationQueue,
        job: Job,
        connection: &mut Option<SmtpConnection>,
    ) {
        let results = self.attempt(destination, &job, connection).await;
        let shared = self.clone();
        self.workers
            .spawn(async move { shared.record(&job, results).await });
    }

    async fn attempt(
        &self,
        destination: &DestinationQueue,
        job: &Job,
        connection: &mut Option<SmtpConnection>,
    ) -> Vec<RecipientResult> {
        let all = |class: Class, reply: RemoteReply| {
            vec![
                RecipientResult {
                    class,
                    reply,
                    server: None,
                    tls: None,
                };
                job.recipients.len()
            ]
        };
        if let Some(reply) = destination.suspended(job.number) {
            return all(Class::Temporary, reply);
        }
        if let Some(reply) = report_to_internal_literal(
            &job.message.sender,
            job.recipients.iter().map(|r| r.address.as_str()),
        ) {
            tracing::warn!(queue_id = %job.message.id, "report to an internal address literal refused");
            return all(Class::Permanent, reply);
        }
        let targets = match destination.targets(&self.router).await {
            Ok(targets) => targets,
            Err(failure) => {
                let class = if failure.permanent {
                    Class::Permanent
                } else {
                    Class::Temporary
                };
                return all(class, failure.reply);
            }
        };
        let reports = self.reports.as_deref();
        let policy =
            match sts::decide(self.mta_sts.as_ref(), reports, &destination.key, targets).await {
                Ok(decision) => decision,
                Err(reply) => return all(Class::Temporary, reply),
            };
        let content = match self.queue.content(&job.message.id).await {
            Ok(QueuedContent::Memory(m)) => Ok(Loaded::Memory(m)),
            Ok(QueuedContent::File(path)) => FileMessage::scan_async(&path)
                .await
                .map(Loaded::File)
                .map_err(|e| QueueError::Io {
                    path: path.clone(),
                    source: e,
                }),
            Err(e) => Err(e),
        };
        let content = match content {
            Ok(content) => content,
            Err(e) => {
                tracing::error!(queue_id = %job.message.id, error = %e, "cannot read queued message");
                return all(
                    Class::Temporary,
                    synthetic(451, [4, 3, 0], "queued message cannot be read"),
                );
            }
        };
        let message = OutgoingMessage {
            sender: &job.message.sender,
            body: job.message.body_type,
            smtputf8: job.message.smtputf8,
            ret: job.message.ret,
            env_id: job.message.env_id.as_deref(),
            content: match &content {
                Loaded::Memory(m) => OutgoingContent::Memory(m),
                Loaded::File(f) => OutgoingContent::File(f),
            },
        };
        let recipients: Vec<OutgoingRecipient<'_>> = job
            .recipients
            .iter()
            .map(|r| OutgoingRecipient {
                address: &r.address,
                notify: r.notify,
                orcpt: r.orcpt.as_deref(),
            })
            .collect();
        let (results, reached_a_server) = self
            .try_servers(&policy, &message, &recipients, connection)
            .await;
        if !reached_a_server
            && let Some(reply) = results
                .iter()
                .find_map(|r| (r.class == Class::Temporary).then(|| r.reply.clone()))
        {
            destination.suspend(reply);
        }
        results
    }

    /// Tries the servers in order (starting with the one already connected), each with the
    /// recipients no earlier server settled. Returns the results and whether any server got
    /// as far as a mail transaction.
    async fn try_servers(
        &self,
        policy: &sts::Decision,
        message: &OutgoingMessage<'_>,
        recipients: &[OutgoingRecipient<'_>],
        connection: &mut Option<SmtpConnection>,
    ) -> (Vec<RecipientResult>, bool) {
        let targets = &policy.targets[..];
        let mut results: Vec<RecipientResult> = vec![
            RecipientResult {
                class: Class::Temporary,
                reply: synthetic(451, [4, 4, 0], "no server could be tried"),
                server: None,
                tls: None,
            };
            recipients.len()
        ];
        let mut pending: Vec<usize> = (0..recipients.len()).collect();
        let start = match connection
            .as_ref()
            .and_then(|c| targets.iter().position(|t| t == c.target()))
        {
            Some(i) => i,
            None => {
                if let Some(c) = connection.take() {
                    c.quit().await;
                }
                0
            }
        };
        let mut sessions = 0;
        let mut reached = false;
        for target in &targets[start..] {
            let mut reached_this = false;
            // A connection kept open since the last message may have been closed by the
            // server meanwhile: one fresh connection is tried before giving up on it.
            for fresh_try in 0..2 {
                let reused = connection.as_ref().is_some_and(|c| {
                    c.target() == target
                            && c.reusable()
                            // A connection opened before an enforced policy was known.
                            && (!policy.require_tls || c.tls().is_some_and(|t| t.verified))
                });
                if !reused {
                    if let Some(c) = connection.take() {
                        c.quit().await;
                    }
                    let opened = self.open(target, policy.require_tls).await;
                    if let (Some(reports), Some(domain)) = (&self.reports, &policy.domain) {
                        let outcome = opened.as_ref().map(|c| c.tls());
                        tls_report::session(
                            reports,
                            domain,
                            policy.policy.as_deref(),
                            target,
                            outcome,
                        );
                    }
                    match opened {
                        Ok(c) => *connection = Some(c),
                        Err(failure) => {
                            for &i in &pending {
                                results[i] = RecipientResult {
                                    class: Class::Temporary,
                                    reply: failure.reply.clone(),
                                    server: Some(target.clone()),
                                    tls: None,
                                };
                            }
                            break;
                        }
                    }
                }
                let Some(c) = connection.as_mut() else {
                    break;
                };
                let now: Vec<OutgoingRecipient<'_>> =
                    pending.iter().map(|&i| recipients[i]).collect();
                let tls = c.tls().map(|t| t.to_string());
                match c.send(message, &now).await {
                    Ok(outcome) => {
                        reached_this = true;
                        let replies: Vec<(Class, RemoteReply)> = match outcome {
                            SendOutcome::Unsuitable(reply) => {
                                vec![(Class::Permanent, reply); now.len()]
                            }
                            SendOutcome::Replies(replies) => replies
                                .into_iter()
                                .map(|r| {
                                    let class = if r.delivered() {
                                        Class::Sent
                                    } else if r.reply.is_permanent() {
                                        Class::Permanent
                                    } else {
                                        Class::Temporary
                                    };
                                    (class, r.reply)
                                })
                                .collect(),
                        };
                        for (&i, (class, reply)) in pending.iter().zip(replies) {
                            results[i] = RecipientResult {
                                class,
                                reply,
                                server: Some(target.clone()),
                                tls: tls.clone(),
                            };
                        }
                        pending.retain(|&i| results[i].class == Class::Temporary);
                        if !c.reusable()
                            && let Some(c) = connection.take()
                        {
                            c.quit().await;
                        }
                        break;
                    }
                    Err(failure) => {
                        *connection = None;
                        for &i in &pending {
                            results[i] = RecipientResult {
                                class: Class::Temporary,
                                reply: failure.reply.clone(),
                                server: Some(target.clone()),
                                tls: tls.clone(),
                            };
                        }
                        if !(reused && fresh_try == 0) {
                            reached_this = true;
                            break;
                        }
                    }
                }
            }
            if reached_this {
                reached = true;
                sessions += 1;
            }
            if pending.is_empty() || sessions >= self.settings.max_sessions.max(1) {
                break;
            }
        }
        (results, reached)
    }

    /// Opens a connection; an opportunistic STARTTLS whose handshake fails is retried in plain
    /// text, as Postfix does.
    async fn open(
        &self,
        target: &Target,
        require_tls: bool,
    ) -> Result<SmtpConnection, ConnectionFailure> {
        let relay = self.router.relayhost().is_some();
        let mut options = ConnectOptions {
            helo_name: &self.settings.hostname,
            tls: &self.tls,
            starttls: true,
            require_tls: self.settings.require_tls || require_tls,
            credentials: if relay {
                self.settings.relay_credentials.as_ref()
            } else {
                None
            },
            timeouts: self.settings.timeouts,
        };
        let result = match SmtpConnection::open(target, &options).await {
            Err(failure) if failure.retry_without_tls => {
                tracing::info!(server = %target, reply = %failure.reply.line(),
                    "TLS failed; retrying without TLS");
                options.starttls = false;
                SmtpConnection::open(target, &options).await
            }
            other => other,
        };
        match &result {
            Ok(c) => {
                self.stats.connections.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(server = %target, tls = ?c.tls().map(|t| t.to_string()),
                    pipelining = c.capabilities().pipelining, "connected");
            }
            Err(failure) => {
                tracing::info!(server = %target, reply = %failure.reply.line(), "connection failed")
            }
        }
        result
    }

    /// Logs one line per recipient, records the outcomes in the queue and, when the message
    /// is finished, sends the report its sender is owed.
    async fn record(&self, job: &Job, results: Vec<RecipientResult>) {
        let message = &job.message;
        let id = &message.id;
        let now = unix_now();
        let expired = now - message.arrival >= self.settings.max_lifetime.as_secs() as i64;
        // Postfix's delay: seconds since the message arrived.
        let delay = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
            - message.arrival as f64;
        let mut attempts = Vec::with_capacity(results.len());
        let mut remote_mtas = HashMap::new();
        let mut any_sent = false;
        for (rcpt, result) in job.recipients.iter().zip(&results) {
            let line = result.reply.line();
            let (attempt, status) = match result.class {
                Class::Sent => (
                    Attempt::Sent {
                        reply: line.clone(),
                    },
                    "sent",
                ),
                Class::Permanent => (
                    Attempt::Bounced {
                        reply: line.clone(),
                    },
                    "bounced",
                ),
                Class::Temporary if expired => (
                    Attempt::Bounced {
                        reply: format!("{line} (gave up: message too old)"),
                    },
                    "expired",
                ),
                Class::Temporary => (
                    Attempt::Deferred {
                        reply: line.clone(),
                        next_attempt: now + self.settings.retry_delay(rcpt.attempts),
                    },
                    "deferred",
                ),
            };
            // The same counters as local deliveries: the MDA counts a local copy delivered,
            // here a remote server's acceptance is the delivery.
            let counter = match result.class {
                Class::Sent => {
                    metrics::inc(Counter::MessagesDelivered);
                    metrics::observe_delivery_latency(delay);
                    &self.stats.recipients_sent
                }
                Class::Temporary if !expired => {
                    metrics::inc(Counter::MessagesDeferred);
                    &self.stats.recipients_deferred
                }
                _ => {
                    metrics::inc(Counter::MessagesBounced);
                    &self.stats.recipients_bounced
                }
            };
            counter.fetch_add(1, Ordering::Relaxed);
            any_sent |= result.class == Class::Sent;
            let relay = result
                .server
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_else(|| "none".to_string());
            if let Some(server) = &result.server
                && result.class != Class::Sent
            {
                remote_mtas.insert(rcpt.position, server.host.clone());
            }
            tracing::info!(
                queue_id = %id,
                to = %rcpt.address,
                relay = %relay,
                delay = format_args!("{delay:.2}"),
                attempts = rcpt.attempts + 1,
                tls = result.tls.as_deref().unwrap_or("none"),
                dsn = %status_of(&line),
                status,
                reply = %line,
                "delivery attempt"
            );
            attempts.push((rcpt.position, attempt));
        }
        if any_sent {
            self.stats.messages_sent.fetch_add(1, Ordering::Relaxed);
        }
        let recorded = self.queue.record_attempts(id, &attempts).await;
        self.release(job);
        // Room in the active queue, and more mail may be due than the last read took.
        if self.active.load(Ordering::Relaxed) <= self.settings.max_in_flight / 2
            && self.saturated.load(Ordering::Relaxed)
        {
            self.wake.notify_one();
        }
        match recorded {
            Ok(AttemptsRecorded::Pending) => {
                if let Err(e) = self.warn_if_delayed(message, now, &remote_mtas).await {
                    tracing::error!(queue_id = %id, error = %e, "cannot queue the delay warning");
                }
            }
            Ok(AttemptsRecorded::Finished {
                message: finished,
                removed: true,
            }) => {
                let bounced = finished
                    .recipients
                    .iter()
                    .any(|r| r.status == RecipientStatus::Bounced);
                if bounced && finished.sender.is_empty() {
                    tracing::warn!(queue_id = %id,
                        "undeliverable delivery status notification dropped (never bounce a bounce)");
                }
                tracing::info!(queue_id = %id, "removed from queue: delivery finished");
            }
            Ok(AttemptsRecorded::Finished {
                message: finished,
                removed: false,
            }) => {
                if let Err(e) = self.report(&finished, &remote_mtas).await {
                    tracing::error!(queue_id = %id, error = %e, "cannot queue the report");
                }
            }
            Err(e) => {
                tracing::error!(queue_id = %id, error = %e, "cannot record delivery outcome");
            }
        }
    }

    fn reporter(&self) -> Reporter<'_> {
        Reporter {
            hostname: &self.settings.hostname,
            origin: &self.settings.myorigin,
        }
    }

    async fn sender_is_local(&self, message: &QueuedMessage) -> Result<bool, OutboundError> {
        Ok(match message.sender.rsplit_once('@') {
            Some((_, domain)) => {
                self.ctx
                    .directory
                    .is_local_domain(&domain.to_ascii_lowercase())
                    .await?
            }
            None => false,
        })
    }

    /// Queues the report a finished message's sender is owed and removes the message.
    async fn report(
        &self,
        message: &QueuedMessage,
        remote_mtas: &HashMap<u32, String>,
    ) -> Result<(), OutboundError> {
        let local = self.sender_is_local(message).await?;
        self.reporter()
            .queue_final_report(&self.queue, message, local, remote_mtas)
            .await?;
        Ok(())
    }

    /// After an attempt left `attempted` deferred: sends its one delay warning if it is due.
    async fn warn_if_delayed(
        &self,
        attempted: &QueuedMessage,
        now: i64,
        remote_mtas: &HashMap<u32, String>,
    ) -> Result<(), OutboundError> {
        let warnings = DelayWarnings {
            after: self.settings.delay_warning,
            max_lifetime: self.settings.max_lifetime,
        };
        self.reporter()
            .warn_if_delayed(
                &self.queue,
                warnings,
                attempted,
                now,
                remote_mtas,
                async |m: &QueuedMessage| self.sender_is_local(m).await,
            )
            .await?;
        Ok(())
    }
}

impl DestinationQueue {
    /// The reply for job `number` if the destination was suspended after it arrived.
    fn suspended(&self, number: u64) -> Option<RemoteReply> {
        let mut state = lock(&self.state);
        match &state.suspended {
            Some((since, reply, last)) if since.elapsed() < SUSPENSION && number <= *last => {
                let text = format!("delivery temporarily suspended: {}", reply.text);
                Some(synthetic(
                    reply.code,
                    reply.status.unwrap_or([4, 4, 1]),
                    &text,
                ))
            }
            Some((since, ..)) if since.elapsed() >= SUSPENSION => {
                state.suspended = None;
                None
            }
            _ => None,
        }
    }

    fn suspend(&self, reply: RemoteReply) {
        tracing::info!(destination = ?self.key, reply = %reply.line(),
            "no server answered: destination suspended");
        let mut state = lock(&self.state);
        state.suspended = Some((Instant::now(), reply, state.dispatched));
    }

    /// The destination's servers, looked up once for all its queued messages.
    async fn targets(&self, router: &Router) -> Result<Arc<Vec<Target>>, RouteFailure> {
        let mut route = self.route.lock().await;
        if let Some((at, result)) = route.as_ref()
            && at.elapsed() < ROUTE_CACHE
        {
            return result.clone();
        }
        let result = router.targets(&self.key).await.map(Arc::new);
        *route = Some((Instant::now(), result.clone()));
        result
    }
}
