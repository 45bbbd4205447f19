//! The local delivery runner: takes due local recipients off the queue, hands them to a
//! [`LocalDelivery`], records the outcome, retries temporary failures with backoff, warns the
//! sender of long delays and reports permanent failures. It also keeps the queue size gauge
//! (`hermod_queue_size`) published and recounted.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::report::{DelayWarnings, Reporter, needs_report};
use super::{
    Attempt, AttemptsRecorded, Destination, Queue, QueueError, QueuedContent, QueuedMessage,
    RecipientStatus, unix_now,
};
use crate::delivery::LocalDelivery;
use crate::envelope::QueueId;
use crate::session::LocalDomains;
use hermod_common::metrics::{self, Counter};

/// How the runner behaves.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// Our host name, for the reports we send (`Reporting-MTA`).
    pub hostname: String,
    /// The domain reports come from (`MAILER-DAEMON@myorigin`).
    pub myorigin: String,
    /// Messages delivered at the same time (20, as Postfix's
    /// `default_destination_concurrency_limit`). A delivery mostly waits for fsync, so
    /// throughput is about concurrency / fsync latency: 8 kept local delivery at half the
    /// rate SMTP accepted mail (mta/examples/smtp_load.rs).
    pub concurrency: usize,
    /// After this long in the queue a temporary failure becomes a bounce (Postfix
    /// `maximal_queue_lifetime`, 5 days).
    pub max_lifetime: Duration,
    /// First retry delay after a temporary failure; it doubles with each failure...
    pub min_backoff: Duration,
    /// ...up to this (Postfix `minimal_backoff_time`, `maximal_backoff_time`).
    pub max_backoff: Duration,
    /// A message still deferred this long after arrival gets one delay warning (Postfix
    /// `delay_warning_time`); zero: never.
    pub delay_warning: Duration,
    /// How often the queue is looked at even when nothing happened in this process (changes
    /// made by `hermod queue flush`, retries coming due).
    pub poll_interval: Duration,
    /// When this process started (unix seconds): messages queued until then may have been
    /// filed by a process that crashed before it could record so.
    pub started_at: i64,
}

impl RunnerSettings {
    /// Defaults as Postfix's; reports come from `MAILER-DAEMON@<hostname>` until `myorigin`
    /// is set.
    pub fn new(hostname: impl Into<String>) -> Self {
        let hostname = hostname.into();
        RunnerSettings {
            myorigin: hostname.clone(),
            hostname,
            concurrency: 20,
            max_lifetime: Duration::from_secs(5 * 24 * 3600),
            min_backoff: Duration::from_secs(300),
            max_backoff: Duration::from_secs(3600),
            delay_warning: Duration::ZERO,
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
    /// Messages being delivered, and those finished since the last read of the queue.
    in_flight: Arc<Mutex<HashSet<QueueId>>>,
    /// Messages whose outcome is committed, to drop from `in_flight` before the next read
    /// (see [`LocalRunner::read_due`]).
    released: Arc<Mutex<Vec<QueueId>>>,
    permits: Arc<Semaphore>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
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
            released: Arc::new(Mutex::new(Vec::new())),
            permits,
        }
    }

    /// Runs until `shutdown` is cancelled; deliveries under way are finished first. From
    /// the start the `hermod_queue_size` gauge follows this queue.
    pub async fn run(self, shutdown: CancellationToken) {
        if let Err(e) = self.queue.publish_size().await {
            tracing::error!(error = %e, "cannot count the queue");
        }
        let mut tasks = JoinSet::new();
        let mut last_sweep: Option<Instant> = None;
        loop {
            while tasks.try_join_next().is_some() {}
            if last_sweep.is_none_or(|t| t.elapsed() >= self.settings.poll_interval) {
                if let Err(e) = self.complete_finished().await {
                    tracing::error!(error = %e, "queue sweep failed");
                }
                // Changes by other processes (`hermod queue delete`) show in the count.
                if let Err(e) = self.queue.refresh_size().await {
                    tracing::error!(error = %e, "cannot count the queue");
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
        let due = self.read_due().await?;
        Ok(self.spawn_deliveries(due, tasks))
    }

    /// The due local recipients, by message.
    ///
    /// A finished task does not take its message out of `in_flight` itself: it leaves it in
    /// `released`, applied here before the queue is read. Otherwise a read that began before
    /// the task committed its outcome (so still sees the recipients pending) could find the
    /// message gone from `in_flight` and deliver it a second time.
    async fn read_due(&self) -> Result<Vec<QueuedMessage>, QueueError> {
        self.apply_released();
        let limit = (self.settings.concurrency * 4).max(16) as u32;
        self.queue.due(Destination::Local, unix_now(), limit).await
    }

    /// Starts a delivery task for each message of `due` not in flight; returns how many.
    fn spawn_deliveries(&self, due: Vec<QueuedMessage>, tasks: &mut JoinSet<()>) -> usize {
        let mut started = 0;
        for message in due {
            if !lock(&self.in_flight).insert(message.id.clone()) {
                continue;
            }
            started += 1;
            let job = DeliveryJob {
                queue: self.queue.clone(),
                delivery: self.delivery.clone(),
                domains: self.domains.clone(),
                settings: self.settings.clone(),
            };
            let released = self.released.clone();
            let permits = self.permits.clone();
            tasks.spawn(async move {
                let id = message.id.clone();
                if let Ok(_permit) = permits.acquire_owned().await {
                    job.deliver(message).await;
                }
                lock(&released).push(id);
                job.queue.notify();
            });
        }
        started
    }

    /// Drops the messages of finished tasks from `in_flight`; only call before reading the
    /// queue afresh.
    fn apply_released(&self) {
        let released = std::mem::take(&mut *lock(&self.released));
        let mut in_flight = lock(&self.in_flight);
        for id in &released {
            in_flight.remove(id);
        }
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
            if lock(&self.in_flight).contains(&id) {
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
        let results = match self.queue.content(&id).await {
            Ok(QueuedContent::File(path)) => {
                let addresses: Vec<String> = message
                    .recipients
                    .iter()
                    .map(|r| r.address.clone())
                    .collect();
                let after_restart = message.arrival <= self.settings.started_at;
                self.delivery
                    .deliver_file_many(&message.sender, &addresses, &path, after_restart)
                    .await
            }
            Ok(QueuedContent::Memory(content)) => {
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
            Ok(AttemptsRecorded::Pending) => {
                if let Err(e) = self.warn_if_delayed(&message, now).await {
                    tracing::error!(queue_id = %id, error = %e, "cannot queue the delay warning");
                }
                return;
            }
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

    fn reporter(&self) -> Reporter<'_> {
        Reporter {
            hostname: &self.settings.hostname,
            origin: &self.settings.myorigin,
        }
    }

    async fn sender_is_local(&self, message: &QueuedMessage) -> Result<bool, QueueError> {
        Ok(match message.sender.rsplit_once('@') {
            Some((_, domain)) => self.domains.is_local_domain(&domain.to_lowercase()).await?,
            None => false,
        })
    }

    /// Queues the DSN for a finished message and removes the message, in one transaction.
    async fn send_report(&self, message: QueuedMessage) -> Result<(), QueueError> {
        let local = self.sender_is_local(&message).await?;
        self.reporter()
            .queue_final_report(&self.queue, &message, local, &HashMap::new())
            .await?;
        Ok(())
    }

    /// After an attempt left `attempted` waiting: sends its one delay warning if it is due.
    async fn warn_if_delayed(&self, attempted: &QueuedMessage, now: i64) -> Result<(), QueueError> {
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
                &HashMap::new(),
                async |m: &QueuedMessage| self.sender_is_local(m).await,
            )
            .await?;
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use tokio::sync::Notify;

    use super::*;
    use crate::delivery::DeliveryError;
    use crate::envelope::{Envelope, EnvelopeRecipient};
    use crate::session::BackendError;

    /// Delivers once `open` is signalled, counting copies.
    #[derive(Default)]
    struct GatedDelivery {
        open: Notify,
        copies: Mutex<usize>,
    }

    impl LocalDelivery for GatedDelivery {
        async fn deliver(&self, _: &str, _: &str, _: &[u8]) -> Result<(), DeliveryError> {
            self.open.notified().await;
            *lock(&self.copies) += 1;
            Ok(())
        }
    }

    struct NoDomains;

    impl LocalDomains for NoDomains {
        async fn is_local_domain(&self, _: &str) -> Result<bool, BackendError> {
            Ok(false)
        }
    }

    /// The interleaving that delivered a message twice: the queue is read while a delivery
    /// is under way (so the message still looks due), then the delivery finishes, then the
    /// read's messages are started.
    #[tokio::test]
    async fn a_read_older_than_a_finished_delivery_does_not_start_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Arc::new(Queue::open(dir.path().join("queue")).await.unwrap());
        let envelope = Envelope {
            sender: "a@example.net".into(),
            recipients: vec![EnvelopeRecipient {
                address: "alice@example.org".into(),
                local: true,
                notify: Default::default(),
                orcpt: None,
            }],
            ..Envelope::default()
        };
        queue
            .enqueue(&QueueId::generate(), &envelope, b"Subject: x\r\n\r\nx\r\n")
            .await
            .unwrap();
        let delivery = Arc::new(GatedDelivery::default());
        let runner = LocalRunner::new(
            queue.clone(),
            delivery.clone(),
            Arc::new(NoDomains),
            RunnerSettings::new("mx.example.org"),
        );
        let mut tasks = JoinSet::new();
        assert_eq!(runner.start_due(&mut tasks).await.unwrap(), 1);

        let stale = runner.read_due().await.unwrap();
        assert_eq!(stale.len(), 1, "still pending while being delivered");
        delivery.open.notify_one();
        tasks.join_next().await.unwrap().unwrap();
        assert_eq!(*lock(&delivery.copies), 1);
        assert!(
            queue.list().await.unwrap().is_empty(),
            "delivered and removed"
        );

        assert_eq!(runner.spawn_deliveries(stale, &mut tasks), 0);
        // The next read no longer sees it, and forgets it was in flight.
        assert_eq!(runner.start_due(&mut tasks).await.unwrap(), 0);
        assert!(lock(&runner.in_flight).is_empty());
        assert_eq!(*lock(&delivery.copies), 1);
    }
}
