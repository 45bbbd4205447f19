//! The local delivery runner: takes due local recipients off the queue, hands them to a
//! [`LocalDelivery`], records the outcome, retries temporary failures with backoff and reports
//! permanent ones to the sender.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{
    Attempt, AttemptsRecorded, Destination, NewMessage, Queue, QueueError, QueuedMessage,
    RecipientStatus, unix_now,
};
use crate::bounce::{DsnAction, DsnRecipient, DsnReport, build_dsn};
use crate::delivery::LocalDelivery;
use crate::envelope::{Envelope, EnvelopeRecipient, Notify, QueueId};
use crate::session::LocalDomains;
use hermod_common::metrics::{self, Counter};

/// How the runner behaves.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// Our host name, for the reports we send.
    pub hostname: String,
    /// Messages delivered at the same time.
    pub concurrency: usize,
    /// After this long in the queue a temporary failure becomes a bounce (Postfix
    /// `maximal_queue_lifetime`, 5 days).
    pub max_lifetime: Duration,
    /// First retry delay after a temporary failure; it doubles with each failure...
    pub min_backoff: Duration,
    /// ...up to this (Postfix `minimal_backoff_time`, `maximal_backoff_time`).
    pub max_backoff: Duration,
    /// How often the queue is looked at even when nothing happened in this process (changes
    /// made by `hermod queue flush`, retries coming due).
    pub poll_interval: Duration,
    /// When this process started (unix seconds): messages queued until then may have been
    /// filed by a process that crashed before it could record so.
    pub started_at: i64,
}

impl RunnerSettings {
    pub fn new(hostname: impl Into<String>) -> Self {
        RunnerSettings {
            hostname: hostname.into(),
            concurrency: 8,
            max_lifetime: Duration::from_secs(5 * 24 * 3600),
            min_backoff: Duration::from_secs(300),
            max_backoff: Duration::from_secs(3600),
            poll_interval: Duration::from_secs(10),
            started_at: unix_now(),
        }
    }
}

/// Delivers the local recipients of the queue.
pub struct LocalRunner<D, L> {
    queue: Arc<Queue>,
    delivery: Arc<D>,
    domains: Arc<L>,
    settings: Arc<RunnerSettings>,
    in_flight: Arc<Mutex<HashSet<QueueId>>>,
    permits: Arc<Semaphore>,
}

impl<D: LocalDelivery, L: LocalDomains> LocalRunner<D, L> {
    /// `domains` tells whether a bounce goes to a local sender.
    pub fn new(
        queue: Arc<Queue>,
        delivery: Arc<D>,
        domains: Arc<L>,
        settings: RunnerSettings,
    ) -> Self {
        let permits = Arc::new(Semaphore::new(settings.concurrency.max(1)));
        LocalRunner {
            queue,
            delivery,
            domains,
            settings: Arc::new(settings),
            in_flight: Arc::new(Mutex::new(HashSet::new())),
            permits,
        }
    }

    /// Runs until `shutdown` is cancelled; deliveries under way are finished first.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tasks = JoinSet::new();
        let mut last_sweep: Option<Instant> = None;
        loop {
            while tasks.try_join_next().is_some() {}
            if last_sweep.is_none_or(|t| t.elapsed() >= self.settings.poll_interval) {
                if let Err(e) = self.complete_finished().await {
                    tracing::error!(error = %e, "queue sweep failed");
                }
                last_sweep = Some(Instant::now());
            }
            if let Err(e) = self.start_due(&mut tasks).await {
                tracing::error!(error = %e, "cannot read the queue");
            }
            let wait = match self.queue.next_due(Destination::Local).await {
                Ok(Some(at)) => Duration::from_secs((at - unix_now()).clamp(0, 3600) as u64)
                    .min(self.settings.poll_interval),
                _ => self.settings.poll_interval,
            };
            let wait = if wait.is_zero() && !tasks.is_empty() {
                // Everything due is already being delivered: wait for a task to finish.
                self.settings.poll_interval
            } else {
                wait.max(Duration::from_millis(50))
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.queue.changed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Delivers everything due now and waits for it (tests, `hermod queue flush` offline).
    /// Returns how many messages were attempted.
    pub async fn run_once(&self) -> Result<usize, QueueError> {
        let mut tasks = JoinSet::new();
        let mut started = 0;
        loop {
            let n = self.start_due(&mut tasks).await?;
            if n == 0 && tasks.is_empty() {
                break;
            }
            started += n;
            if tasks.join_next().await.is_none() {
                break;
            }
        }
        self.complete_finished().await?;
        Ok(started)
    }

    /// Spawns a delivery task for each due message not already being delivered.
    async fn start_due(&self, tasks: &mut JoinSet<()>) -> Result<usize, QueueError> {
        let limit = (self.settings.concurrency * 4).max(16) as u32;
        let due = self
            .queue
            .due(Destination::Local, unix_now(), limit)
            .await?;
        let mut started = 0;
        for message in due {
            {
                let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
                if !in_flight.insert(message.id.clone()) {
                    continue;
                }
            }
            started += 1;
            let job = DeliveryJob {
                queue: self.queue.clone(),
                delivery: self.delivery.clone(),
                domains: self.domains.clone(),
                settings: self.settings.clone(),
            };
            let in_flight = self.in_flight.clone();
            let permits = self.permits.clone();
            tasks.spawn(async move {
                let id = message.id.clone();
                if let Ok(_permit) = permits.acquire_owned().await {
                    job.deliver(message).await;
                }
                in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                job.queue.notify();
            });
        }
        Ok(started)
    }

    /// Completes messages left with only final recipients (finished by another process, or
    /// before a crash).
    async fn complete_finished(&self) -> Result<(), QueueError> {
        let job = DeliveryJob {
            queue: self.queue.clone(),
            delivery: self.delivery.clone(),
            domains: self.domains.clone(),
            settings: self.settings.clone(),
        };
        for id in self.queue.finished().await? {
            if self
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&id)
            {
                continue;
            }
            job.complete_if_finished(&id).await?;
        }
        Ok(())
    }
}

struct DeliveryJob<D, L> {
    queue: Arc<Queue>,
    delivery: Arc<D>,
    domains: Arc<L>,
    settings: Arc<RunnerSettings>,
}

impl<D: LocalDelivery, L: LocalDomains> DeliveryJob<D, L> {
    async fn deliver(&self, message: QueuedMessage) {
        let id = message.id.clone();
        let started = Instant::now();
        let results = match self.queue.read_message(&id).await {
            Ok(content) => {
                let addresses: Vec<String> = message
                    .recipients
                    .iter()
                    .map(|r| r.address.clone())
                    .collect();
                // `<=`: the clock has whole seconds, and a restart can happen within one.
                if message.arrival <= self.settings.started_at {
                    self.delivery
                        .deliver_many_after_restart(&message.sender, &addresses, &content)
                        .await
                } else {
                    self.delivery
                        .deliver_many(&message.sender, &addresses, &content)
                        .await
                }
            }
            Err(e) => {
                tracing::error!(queue_id = %id, error = %e, "cannot read queued message");
                Vec::new()
            }
        };
        let now = unix_now();
        let delay = started.elapsed().as_secs_f64();
        let expired = now - message.arrival >= self.settings.max_lifetime.as_secs() as i64;
        let mut attempts = Vec::with_capacity(message.recipients.len());
        for (i, rcpt) in message.recipients.iter().enumerate() {
            let attempt = match results.get(i) {
                Some(Ok(())) => Attempt::Sent {
                    reply: "250 2.0.0 delivered".into(),
                },
                Some(Err(e)) if e.is_permanent() => Attempt::Bounced {
                    reply: e.reply.clone(),
                },
                Some(Err(e)) if expired => Attempt::Bounced {
                    reply: format!("{} (gave up: message too old)", e.reply),
                },
                Some(Err(e)) => Attempt::Deferred {
                    reply: e.reply.clone(),
                    next_attempt: now + self.retry_delay(rcpt.attempts),
                },
                None => Attempt::Deferred {
                    reply: "451 4.3.0 local delivery did not answer".into(),
                    next_attempt: now + self.retry_delay(rcpt.attempts),
                },
            };
            let (status, reply) = match &attempt {
                Attempt::Sent { reply } => {
                    // Delivered copies are counted by the MDA; the latency is the queue's.
                    metrics::observe_delivery_latency((now - message.arrival).max(0) as f64);
                    ("sent", reply)
                }
                Attempt::Deferred { reply, .. } => {
                    metrics::inc(Counter::MessagesDeferred);
                    ("deferred", reply)
                }
                Attempt::Bounced { reply } => {
                    metrics::inc(Counter::MessagesBounced);
                    ("bounced", reply)
                }
            };
            tracing::info!(queue_id = %id, to = %rcpt.address, relay = "local",
                delay = format_args!("{delay:.3}"), attempts = rcpt.attempts + 1, status,
                reply = %reply, "delivery attempt");
            attempts.push((rcpt.position, attempt));
        }
        let finished = match self.queue.record_attempts(&id, &attempts).await {
            Ok(AttemptsRecorded::Pending) => return,
            Ok(AttemptsRecorded::Finished { message, removed }) => (message, removed),
            Err(e) => {
                tracing::error!(queue_id = %id, error = %e, "cannot record delivery outcome");
                return;
            }
        };
        let result = match finished {
            (message, true) => {
                log_removed(&message);
                Ok(())
            }
            (message, false) => self.send_report(message).await,
        };
        if let Err(e) = result {
            tracing::error!(queue_id = %id, error = %e, "cannot complete message");
        }
    }

    /// Seconds to wait after a temporary failure, given the attempts made before this one.
    fn retry_delay(&self, previous_attempts: u32) -> i64 {
        let min = self.settings.min_backoff.as_secs().max(1);
        let max = self.settings.max_backoff.as_secs().max(min);
        min.saturating_mul(1u64 << previous_attempts.min(20))
            .min(max) as i64
    }

    /// If no recipient of `id` is pending or deferred, sends the DSN it calls for (bounces,
    /// and success reports asked for with NOTIFY=SUCCESS) and removes it from the queue.
    async fn complete_if_finished(&self, id: &QueueId) -> Result<(), QueueError> {
        let Some(message) = self.queue.show(id).await? else {
            return Ok(());
        };
        if message.recipients.iter().any(|r| !r.status.is_final()) {
            return Ok(());
        }
        if !needs_report(&message) {
            log_removed(&message);
            return self.queue.complete(id, None).await;
        }
        self.send_report(message).await
    }

    /// Queues the DSN for a finished message and removes the message, in one transaction.
    async fn send_report(&self, message: QueuedMessage) -> Result<(), QueueError> {
        let id = &message.id;
        let reported = reported_recipients(&message);
        let original = match self.queue.read_message(id).await {
            Ok(content) => content,
            Err(e) => {
                tracing::error!(queue_id = %id, error = %e, "original missing for the bounce");
                Vec::new()
            }
        };
        let report_id = QueueId::generate();
        let message_id = format!("{report_id}@{}", self.settings.hostname);
        let content = build_dsn(&DsnReport {
            reporting_mta: &self.settings.hostname,
            original_sender: &message.sender,
            env_id: message.env_id.as_deref(),
            arrival: message.arrival,
            ret: message.ret,
            recipients: &reported,
            original: &original,
            message_id: &message_id,
            now: unix_now(),
        });
        let local = match message.sender.rsplit_once('@') {
            Some((_, domain)) => self.domains.is_local_domain(&domain.to_lowercase()).await?,
            None => false,
        };
        let envelope = Envelope {
            sender: String::new(),
            recipients: vec![EnvelopeRecipient {
                address: message.sender.clone(),
                local,
                notify: Notify {
                    never: true,
                    ..Notify::default()
                },
                orcpt: None,
            }],
            client: format!("bounce of {id}"),
            ..Envelope::default()
        };
        tracing::info!(queue_id = %id, report_id = %report_id, to = %message.sender,
            "delivery status notification queued");
        self.queue
            .complete(
                id,
                Some(NewMessage {
                    id: &report_id,
                    envelope: &envelope,
                    content: &content,
                }),
            )
            .await
    }
}

/// The recipients a DSN must tell the sender about: failures (unless NOTIFY said otherwise)
/// and local deliveries asked for with NOTIFY=SUCCESS.
pub(crate) fn reported_recipients(message: &QueuedMessage) -> Vec<DsnRecipient> {
    message
        .recipients
        .iter()
        .filter_map(|r| {
            let action = match r.status {
                RecipientStatus::Bounced if r.notify.wants_failure() => DsnAction::Failed,
                RecipientStatus::Sent if r.notify.success && r.local => DsnAction::Delivered,
                _ => return None,
            };
            Some(DsnRecipient {
                address: r.address.clone(),
                orcpt: r.orcpt.clone(),
                action,
                reply: r.last_reply.clone().unwrap_or_default(),
                last_attempt: r.last_attempt,
            })
        })
        .collect()
}

/// Whether a finished message calls for a DSN. A bounce is never bounced: nothing goes back
/// to the null sender.
pub(crate) fn needs_report(message: &QueuedMessage) -> bool {
    !message.sender.is_empty() && !reported_recipients(message).is_empty()
}

fn log_removed(message: &QueuedMessage) {
    let bounced = message
        .recipients
        .iter()
        .any(|r| r.status == RecipientStatus::Bounced);
    if bounced && message.sender.is_empty() {
        tracing::warn!(queue_id = %message.id, "undeliverable message from the null sender dropped");
    }
    tracing::info!(queue_id = %message.id, "removed from queue: delivery finished");
}
