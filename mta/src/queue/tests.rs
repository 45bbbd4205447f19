//! Queue and runner tests against a temporary directory.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::runner::{LocalRunner, RunnerSettings};
use super::*;
use crate::delivery::{DeliveryError, LocalDelivery};
use crate::envelope::{EnvelopeRecipient, Notify};
use crate::session::{BackendError, LocalDomains};

const CONTENT: &[u8] = b"Received: from x\r\nSubject: test\r\n\r\nHello\r\n";

/// A message too big to be stored in the queue database: it goes to a file.
fn big_content(tag: u8) -> Vec<u8> {
    let mut m = b"Subject: big\r\n\r\n".to_vec();
    while m.len() <= INLINE_MAX {
        m.extend_from_slice(&[b'a' + tag % 26; 78]);
        m.extend_from_slice(b"\r\n");
    }
    m
}

fn rcpt(address: &str, local: bool) -> EnvelopeRecipient {
    EnvelopeRecipient {
        address: address.into(),
        local,
        notify: Notify::default(),
        orcpt: None,
    }
}

fn envelope(sender: &str, recipients: Vec<EnvelopeRecipient>) -> Envelope {
    Envelope {
        sender: sender.into(),
        recipients,
        client: "[192.0.2.1] client".into(),
        ..Envelope::default()
    }
}

/// Queues `CONTENT` from `sender` to one recipient.
async fn enqueue_one(queue: &Queue, sender: &str, to: EnvelopeRecipient) -> QueueId {
    let id = QueueId::generate();
    queue
        .enqueue(&id, &envelope(sender, vec![to]), CONTENT)
        .await
        .unwrap();
    id
}

async fn open(dir: &tempfile::TempDir) -> Arc<Queue> {
    Arc::new(Queue::open(dir.path().join("queue")).await.unwrap())
}

#[tokio::test]
async fn enqueued_message_is_on_disk_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let id = QueueId::generate();
    let mut env = envelope(
        "a@example.net",
        vec![
            rcpt("alice@example.org", true),
            rcpt("x@remote.test", false),
        ],
    );
    env.ret = Some(DsnReturn::Headers);
    env.env_id = Some("ENV7".into());
    env.body = BodyType::EightBitMime;
    env.recipients[0].notify = Notify {
        success: true,
        ..Notify::default()
    };
    env.recipients[0].orcpt = Some("rfc822;Alice@example.org".into());
    queue.enqueue(&id, &env, CONTENT).await.unwrap();

    // Small: in the database, no file.
    assert!(!queue.message_path(&id).exists());
    assert_eq!(queue.read_message(&id).await.unwrap(), CONTENT);
    let list = queue.list().await.unwrap();
    assert_eq!(list.len(), 1);
    let m = &list[0];
    assert_eq!(m.id, id);
    assert_eq!(m.sender, "a@example.net");
    assert_eq!(m.ret, Some(DsnReturn::Headers));
    assert_eq!(m.env_id.as_deref(), Some("ENV7"));
    assert_eq!(m.body_type, BodyType::EightBitMime);
    assert_eq!(m.size, CONTENT.len() as u64);
    assert_eq!(m.recipients.len(), 2);
    assert_eq!(m.recipients[0].status, RecipientStatus::Pending);
    assert!(m.recipients[0].notify.success);
    assert_eq!(
        m.recipients[0].orcpt.as_deref(),
        Some("rfc822;Alice@example.org")
    );
    assert!(!m.recipients[1].local);
    assert_eq!(queue.show(&id).await.unwrap().as_ref(), Some(m));
}

#[tokio::test]
async fn queue_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let id = QueueId::generate();
    {
        let queue = open(&dir).await;
        queue
            .enqueue(
                &id,
                &envelope("a@example.net", vec![rcpt("alice@example.org", true)]),
                CONTENT,
            )
            .await
            .unwrap();
    }
    let queue = open(&dir).await;
    let recovery = queue.recover().await.unwrap();
    assert_eq!(recovery, Recovery::default());
    let due = queue.due(Destination::Local, unix_now(), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, id);
}

#[tokio::test]
async fn due_separates_local_and_remote() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let id = QueueId::generate();
    queue
        .enqueue(
            &id,
            &envelope(
                "a@example.net",
                vec![
                    rcpt("alice@example.org", true),
                    rcpt("x@remote.test", false),
                ],
            ),
            CONTENT,
        )
        .await
        .unwrap();
    let now = unix_now();
    let local = queue.due(Destination::Local, now, 10).await.unwrap();
    assert_eq!(local[0].recipients.len(), 1);
    assert_eq!(local[0].recipients[0].address, "alice@example.org");
    let remote = queue.due(Destination::Remote, now, 10).await.unwrap();
    assert_eq!(remote[0].recipients[0].address, "x@remote.test");
    assert_eq!(remote[0].recipients[0].position, 1);
    // Nothing is due in the past.
    assert!(
        queue
            .due(Destination::Local, now - 100, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn attempts_flush_retry_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let id = enqueue_one(&queue, "a@example.net", rcpt("alice@example.org", true)).await;
    let later = unix_now() + 3600;
    queue
        .record_attempts(
            &id,
            &[(
                0,
                Attempt::Deferred {
                    reply: "450 4.2.0 mailbox busy".into(),
                    next_attempt: later,
                },
            )],
        )
        .await
        .unwrap();
    let m = queue.show(&id).await.unwrap().unwrap();
    assert_eq!(m.recipients[0].status, RecipientStatus::Deferred);
    assert_eq!(m.recipients[0].attempts, 1);
    assert_eq!(m.recipients[0].next_attempt, later);
    assert_eq!(
        m.recipients[0].last_reply.as_deref(),
        Some("450 4.2.0 mailbox busy")
    );
    assert!(
        queue
            .due(Destination::Local, unix_now(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(queue.retry(&id).await.unwrap());
    assert_eq!(
        queue
            .due(Destination::Local, unix_now(), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(queue.flush().await.unwrap(), 1);
    assert!(queue.finished().await.unwrap().is_empty());

    assert!(queue.delete(&id).await.unwrap());
    assert!(!queue.message_path(&id).exists());
    assert!(queue.show(&id).await.unwrap().is_none());
    assert!(!queue.delete(&id).await.unwrap());
    assert!(!queue.retry(&id).await.unwrap());
    assert!(queue.read_message(&id).await.is_err());
}

#[tokio::test]
async fn big_messages_are_files_small_ones_rows_and_both_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let env = envelope("a@example.net", vec![rcpt("alice@example.org", true)]);
    let at_limit = vec![b'x'; INLINE_MAX];
    let big = big_content(1);
    let (small_id, limit_id, big_id) = (
        QueueId::generate(),
        QueueId::generate(),
        QueueId::generate(),
    );
    queue.enqueue(&small_id, &env, CONTENT).await.unwrap();
    queue.enqueue(&limit_id, &env, &at_limit).await.unwrap();
    queue.enqueue(&big_id, &env, &big).await.unwrap();
    assert!(!queue.message_path(&small_id).exists());
    assert!(!queue.message_path(&limit_id).exists());
    assert_eq!(std::fs::read(queue.message_path(&big_id)).unwrap(), big);
    assert_eq!(queue.read_message(&small_id).await.unwrap(), CONTENT);
    assert_eq!(queue.read_message(&limit_id).await.unwrap(), at_limit);
    assert_eq!(queue.read_message(&big_id).await.unwrap(), big);
    // A small message with a taken id fails without touching the big one's file.
    assert!(queue.enqueue(&big_id, &env, CONTENT).await.is_err());
    assert_eq!(queue.read_message(&big_id).await.unwrap(), big);
    let sizes: Vec<u64> = queue.list().await.unwrap().iter().map(|m| m.size).collect();
    assert!(sizes.contains(&(big.len() as u64)));

    // After a restart everything is still there, and nothing counts as missing.
    drop(queue);
    let queue = open(&dir).await;
    let recovery = queue.recover().await.unwrap();
    assert_eq!(recovery, Recovery::default());
    assert_eq!(queue.read_message(&limit_id).await.unwrap(), at_limit);
    assert_eq!(queue.read_message(&big_id).await.unwrap(), big);
    assert!(queue.delete(&big_id).await.unwrap());
    assert!(!queue.message_path(&big_id).exists());
    assert!(queue.delete(&limit_id).await.unwrap());
    assert!(queue.read_message(&limit_id).await.is_err());
}

#[tokio::test]
async fn complete_swaps_the_message_for_its_report_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let id = enqueue_one(&queue, "a@example.net", rcpt("alice@example.org", true)).await;
    queue
        .record_attempts(
            &id,
            &[(
                0,
                Attempt::Bounced {
                    reply: "550 5.1.1 no".into(),
                },
            )],
        )
        .await
        .unwrap();
    assert_eq!(queue.finished().await.unwrap(), vec![id.clone()]);
    let report_id = QueueId::generate();
    let report_env = envelope("", vec![rcpt("a@example.net", false)]);
    queue
        .complete(
            &id,
            Some(NewMessage {
                id: &report_id,
                envelope: &report_env,
                content: b"report\r\n",
            }),
        )
        .await
        .unwrap();
    assert!(!queue.message_path(&id).exists());
    let list = queue.list().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, report_id);
    assert_eq!(list[0].sender, "");
}

#[tokio::test]
async fn recover_removes_unacknowledged_files() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let kept = QueueId::generate();
    queue
        .enqueue(
            &kept,
            &envelope("a@example.net", vec![rcpt("alice@example.org", true)]),
            &big_content(2),
        )
        .await
        .unwrap();
    let small = enqueue_one(&queue, "a@example.net", rcpt("alice@example.org", true)).await;
    std::fs::write(queue.dir().join("tmp").join("PARTIAL"), b"half").unwrap();
    std::fs::write(queue.dir().join("messages").join("ORPHAN"), b"x").unwrap();
    let lost = QueueId::generate();
    queue
        .enqueue(
            &lost,
            &envelope("a@example.net", vec![rcpt("alice@example.org", true)]),
            &big_content(3),
        )
        .await
        .unwrap();
    std::fs::remove_file(queue.message_path(&lost)).unwrap();

    let recovery = queue.recover().await.unwrap();
    assert_eq!(recovery.partial_files, 1);
    assert_eq!(recovery.orphan_files, 1);
    assert_eq!(recovery.missing_files, vec![lost]);
    assert!(queue.message_path(&kept).exists());
    assert_eq!(queue.read_message(&small).await.unwrap(), CONTENT);
}

// ---------------------------------------------------------------------------------------------
// The runner

#[derive(Default)]
struct MockDelivery {
    delivered: Mutex<Vec<(String, String, Vec<u8>)>>,
}

impl LocalDelivery for MockDelivery {
    async fn deliver(
        &self,
        sender: &str,
        recipient: &str,
        message: &[u8],
    ) -> Result<(), DeliveryError> {
        if recipient.starts_with("busy") {
            return Err(DeliveryError::temporary("450 4.2.0 mailbox busy"));
        }
        if recipient.starts_with("gone@") {
            return Err(DeliveryError::permanent("550 5.1.1 no such user"));
        }
        self.delivered.lock().unwrap().push((
            sender.to_string(),
            recipient.to_string(),
            message.to_vec(),
        ));
        Ok(())
    }
}

impl MockDelivery {
    fn delivered(&self) -> Vec<(String, String, Vec<u8>)> {
        self.delivered.lock().unwrap().clone()
    }
}

struct Domains;

impl LocalDomains for Domains {
    async fn is_local_domain(&self, domain: &str) -> Result<bool, BackendError> {
        Ok(domain == "example.org")
    }
}

fn settings() -> RunnerSettings {
    let mut settings = RunnerSettings::new("mx.example.org");
    settings.myorigin = "example.org".into();
    settings
}

fn runner(queue: &Arc<Queue>, delivery: &Arc<MockDelivery>) -> LocalRunner<MockDelivery, Domains> {
    runner_with(queue, delivery, settings())
}

fn runner_with(
    queue: &Arc<Queue>,
    delivery: &Arc<MockDelivery>,
    settings: RunnerSettings,
) -> LocalRunner<MockDelivery, Domains> {
    LocalRunner::new(queue.clone(), delivery.clone(), Arc::new(Domains), settings)
}

/// The From address of a message.
fn from_address(message: &[u8]) -> String {
    let parsed = mail_parser::MessageParser::default()
        .parse(message)
        .unwrap();
    let from = parsed.from().and_then(|a| a.first()).unwrap();
    from.address().unwrap().to_string()
}

#[tokio::test]
async fn runner_delivers_local_and_leaves_remote_pending() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let delivery = Arc::new(MockDelivery::default());
    let id = QueueId::generate();
    queue
        .enqueue(
            &id,
            &envelope(
                "a@example.net",
                vec![
                    rcpt("alice@example.org", true),
                    rcpt("bob@example.org", true),
                    rcpt("x@remote.test", false),
                ],
            ),
            CONTENT,
        )
        .await
        .unwrap();
    assert_eq!(runner(&queue, &delivery).run_once().await.unwrap(), 1);
    let delivered = delivery.delivered();
    assert_eq!(delivered.len(), 2);
    assert_eq!(delivered[0].0, "a@example.net");
    assert_eq!(delivered[0].1, "alice@example.org");
    assert_eq!(delivered[0].2, CONTENT);
    // The remote recipient keeps the message queued, visible in the list.
    let m = queue.show(&id).await.unwrap().unwrap();
    assert_eq!(m.recipients[0].status, RecipientStatus::Sent);
    assert_eq!(m.recipients[2].status, RecipientStatus::Pending);
    assert_eq!(m.recipients[2].attempts, 0);
}

#[tokio::test]
async fn runner_completes_fully_delivered_messages() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let delivery = Arc::new(MockDelivery::default());
    let id = enqueue_one(&queue, "a@example.net", rcpt("alice@example.org", true)).await;
    runner(&queue, &delivery).run_once().await.unwrap();
    assert!(queue.list().await.unwrap().is_empty());
    assert!(!queue.message_path(&id).exists());
}

#[tokio::test]
async fn runner_defers_temporary_failures() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let delivery = Arc::new(MockDelivery::default());
    let id = enqueue_one(&queue, "a@example.net", rcpt("busy@example.org", true)).await;
    let r = runner(&queue, &delivery);
    r.run_once().await.unwrap();
    let m = queue.show(&id).await.unwrap().unwrap();
    let busy = &m.recipients[0];
    assert_eq!(busy.status, RecipientStatus::Deferred);
    assert_eq!(busy.attempts, 1);
    assert_eq!(busy.last_reply.as_deref(), Some("450 4.2.0 mailbox busy"));
    assert!(busy.next_attempt >= unix_now() + 290);
    // Not due again yet.
    assert_eq!(r.run_once().await.unwrap(), 0);
    // After a flush it is tried again, and the backoff grows.
    queue.flush().await.unwrap();
    r.run_once().await.unwrap();
    let m = queue.show(&id).await.unwrap().unwrap();
    assert_eq!(m.recipients[0].attempts, 2);
    assert!(m.recipients[0].next_attempt >= unix_now() + 590);
}

#[tokio::test]
async fn permanent_failure_bounces_to_the_sender() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let delivery = Arc::new(MockDelivery::default());
    let id = QueueId::generate();
    // A local sender, so the bounce is delivered locally too.
    queue
        .enqueue(
            &id,
            &envelope(
                "alice@example.org",
                vec![
                    rcpt("gone@example.org", true),
                    rcpt("bob@example.org", true),
                ],
            ),
            CONTENT,
        )
        .await
        .unwrap();
    let r = runner(&queue, &delivery);
    r.run_once().await.unwrap();
    // Bob got the message, then Alice got the bounce in the same run.
    let delivered = delivery.delivered();
    assert_eq!(
        delivered.len(),
        2,
        "{:?}",
        delivered.iter().map(|d| &d.1).collect::<Vec<_>>()
    );
    assert_eq!(delivered[0].1, "bob@example.org");
    let (sender, to, bounce) = &delivered[1];
    assert_eq!(sender, "");
    assert_eq!(to, "alice@example.org");
    // From MAILER-DAEMON at myorigin, reported by myhostname.
    assert_eq!(from_address(bounce), "MAILER-DAEMON@example.org");
    let bounce = String::from_utf8_lossy(bounce);
    assert!(bounce.contains("Reporting-MTA: dns; mx.example.org\r\n"));
    assert!(bounce.contains("Final-Recipient: rfc822; gone@example.org"));
    assert!(bounce.contains("Status: 5.1.1"));
    assert!(bounce.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user"));
    assert!(!bounce.contains("bob@example.org"));
    assert!(queue.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn bounce_to_a_remote_sender_waits_for_outbound() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let delivery = Arc::new(MockDelivery::default());
    queue
        .enqueue(
            &QueueId::generate(),
            &envelope("a@remote.test", vec![rcpt("gone@example.org", true)]),
            CONTENT,
        )
        .await
        .unwrap();
    runner(&queue, &delivery).run_once().await.unwrap();
    let list = queue.list().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].sender, "");
    assert_eq!(list[0].recipients[0].address, "a@remote.test");
    assert!(!list[0].recipients[0].local);
    assert!(list[0].recipients[0].notify.never);
}

#[tokio::test]
async fn bounces_are_never_bounced() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let delivery = Arc::new(MockDelivery::default());
    queue
        .enqueue(
            &QueueId::generate(),
            &envelope("", vec![rcpt("gone@example.org", true)]),
            CONTENT,
        )
        .await
        .unwrap();
    runner(&queue, &delivery).run_once().await.unwrap();
    assert!(queue.list().await.unwrap().is_empty());
    assert!(delivery.delivered().is_empty());
}

#[tokio::test]
async fn notify_never_suppresses_the_bounce_and_success_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let delivery = Arc::new(MockDelivery::default());
    let mut env = envelope(
        "alice@example.org",
        vec![
            rcpt("gone@example.org", true),
            rcpt("bob@example.org", true),
        ],
    );
    env.recipients[0].notify = Notify {
        never: true,
        ..Notify::default()
    };
    env.recipients[1].notify = Notify {
        success: true,
        ..Notify::default()
    };
    queue
        .enqueue(&QueueId::generate(), &env, CONTENT)
        .await
        .unwrap();
    runner(&queue, &delivery).run_once().await.unwrap();
    let delivered = delivery.delivered();
    assert_eq!(delivered.len(), 2);
    let report = String::from_utf8_lossy(&delivered[1].2);
    assert!(report.contains("Action: delivered"));
    assert!(!report.contains("gone@example.org"));
}

#[tokio::test]
async fn temporary_failures_bounce_when_the_message_is_too_old() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let delivery = Arc::new(MockDelivery::default());
    enqueue_one(&queue, "alice@example.org", rcpt("busy@example.org", true)).await;
    sqlx::query("UPDATE messages SET arrival = arrival - 6 * 86400")
        .execute(&queue.pool)
        .await
        .unwrap();
    runner(&queue, &delivery).run_once().await.unwrap();
    let delivered = delivery.delivered();
    assert_eq!(delivered.len(), 1);
    let bounce = String::from_utf8_lossy(&delivered[0].2);
    assert!(
        bounce.contains("450 4.2.0 mailbox busy (gave up"),
        "{bounce}"
    );
}

#[tokio::test]
async fn running_runner_delivers_as_mail_arrives_and_stops_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let delivery = Arc::new(MockDelivery::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner(&queue, &delivery).run(shutdown.clone()));
    for _ in 0..20 {
        queue
            .enqueue(
                &QueueId::generate(),
                &envelope("a@example.net", vec![rcpt("alice@example.org", true)]),
                CONTENT,
            )
            .await
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while delivery.delivered().len() < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivery.delivered().len(), 20);
}

#[tokio::test]
async fn delivered_message_is_removed_when_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let id = enqueue_one(&queue, "a@example.net", rcpt("alice@example.org", true)).await;
    let recorded = queue
        .record_attempts(
            &id,
            &[(
                0,
                Attempt::Sent {
                    reply: "250 ok".into(),
                },
            )],
        )
        .await
        .unwrap();
    let AttemptsRecorded::Finished { message, removed } = recorded else {
        panic!("not finished: {recorded:?}");
    };
    assert!(removed);
    assert_eq!(message.recipients[0].status, RecipientStatus::Sent);
    assert!(!queue.message_path(&id).exists());
    assert!(queue.show(&id).await.unwrap().is_none());
}

#[tokio::test]
async fn concurrent_enqueues_are_all_stored() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            let id = QueueId::generate();
            let env = envelope(
                &format!("s{i}@example.net"),
                vec![rcpt("a@example.org", true)],
            );
            queue.enqueue(&id, &env, CONTENT).await.map(|()| id)
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap());
    }
    let list = queue.list().await.unwrap();
    assert_eq!(list.len(), 64);
    for id in &ids {
        assert_eq!(queue.read_message(id).await.unwrap(), CONTENT);
    }
    // A duplicate id fails alone, without failing the writes batched with it.
    let dup = queue
        .enqueue(&ids[0], &envelope("x@example.net", vec![]), b"other")
        .await;
    assert!(dup.is_err());
    assert_eq!(queue.list().await.unwrap().len(), 64);
    assert_eq!(queue.read_message(&ids[0]).await.unwrap(), CONTENT);
    assert!(
        std::fs::read_dir(queue.dir().join("tmp"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[tokio::test]
async fn completing_a_message_twice_sends_one_report() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let id = enqueue_one(&queue, "a@example.net", rcpt("alice@example.org", true)).await;
    let report_env = envelope("", vec![rcpt("a@example.net", false)]);
    // A report big enough to be a file, so a refused one would leave a file behind.
    let report = big_content(4);
    for _ in 0..2 {
        let report_id = QueueId::generate();
        queue
            .complete(
                &id,
                Some(NewMessage {
                    id: &report_id,
                    envelope: &report_env,
                    content: &report,
                }),
            )
            .await
            .unwrap();
    }
    let list = queue.list().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(queue.read_message(&list[0].id).await.unwrap(), report);
    let files = std::fs::read_dir(queue.dir().join("messages"))
        .unwrap()
        .count();
    assert_eq!(files, 1);
}

// ---------------------------------------------------------------------------------------------
// Delay warnings

/// Settings that warn after an hour.
fn warning_settings() -> RunnerSettings {
    let mut settings = settings();
    settings.delay_warning = Duration::from_secs(3600);
    settings
}

/// Queues a message that arrived two hours ago.
async fn enqueue_old(queue: &Queue, env: &Envelope) -> QueueId {
    let id = QueueId::generate();
    queue.enqueue(&id, env, CONTENT).await.unwrap();
    sqlx::query("UPDATE messages SET arrival = arrival - 7200 WHERE id = ?")
        .bind(id.as_str())
        .execute(&queue.pool)
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn a_long_deferred_message_warns_its_sender_once() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let delivery = Arc::new(MockDelivery::default());
    let id = enqueue_old(
        &queue,
        &envelope("alice@example.org", vec![rcpt("busy@example.org", true)]),
    )
    .await;
    let r = runner_with(&queue, &delivery, warning_settings());
    r.run_once().await.unwrap();

    let delivered = delivery.delivered();
    assert_eq!(delivered.len(), 1, "one warning");
    let (sender, to, warning) = &delivered[0];
    assert_eq!(sender, "", "from the null sender");
    assert_eq!(to, "alice@example.org");
    assert_eq!(from_address(warning), "MAILER-DAEMON@example.org");
    let text = String::from_utf8_lossy(warning);
    for field in [
        "Subject: Delayed Mail (still being retried)\r\n",
        "Reporting-MTA: dns; mx.example.org\r\n",
        "Final-Recipient: rfc822; busy@example.org\r\n",
        "Action: delayed\r\n",
        "Status: 4.2.0\r\n",
        "Diagnostic-Code: smtp; 450 4.2.0 mailbox busy\r\n",
        "Will-Retry-Until: ",
    ] {
        assert!(text.contains(field), "missing {field:?} in {text}");
    }
    // The message itself stays queued, marked as warned.
    let m = queue.show(&id).await.unwrap().unwrap();
    assert!(m.delay_warned);
    assert_eq!(m.recipients[0].status, RecipientStatus::Deferred);

    // More failed attempts, and a restart: no second warning.
    queue.flush().await.unwrap();
    r.run_once().await.unwrap();
    drop(r);
    let queue = open(&dir).await;
    assert!(queue.show(&id).await.unwrap().unwrap().delay_warned);
    queue.flush().await.unwrap();
    let r = runner_with(&queue, &delivery, warning_settings());
    r.run_once().await.unwrap();
    assert_eq!(
        queue.show(&id).await.unwrap().unwrap().recipients[0].attempts,
        3
    );
    assert_eq!(delivery.delivered().len(), 1, "still one warning");
}

#[tokio::test]
async fn no_warning_before_the_time_when_off_or_when_not_wanted() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let delivery = Arc::new(MockDelivery::default());
    // Too young.
    let young = enqueue_one(&queue, "alice@example.org", rcpt("busy@example.org", true)).await;
    // The null sender is never warned (nor bounced).
    let null = enqueue_old(&queue, &envelope("", vec![rcpt("busy@example.org", true)])).await;
    // NOTIFY=NEVER, and NOTIFY without DELAY.
    let mut env = envelope(
        "alice@example.org",
        vec![
            rcpt("busy@example.org", true),
            rcpt("busy2@example.org", true),
        ],
    );
    env.recipients[0].notify = Notify::from_param("NEVER");
    env.recipients[1].notify = Notify::from_param("SUCCESS,FAILURE");
    let unwanted = enqueue_old(&queue, &env).await;
    runner_with(&queue, &delivery, warning_settings())
        .run_once()
        .await
        .unwrap();
    // Warnings off (delay_warning_time = 0, the default).
    let off = enqueue_old(
        &queue,
        &envelope("alice@example.org", vec![rcpt("busy@example.org", true)]),
    )
    .await;
    runner(&queue, &delivery).run_once().await.unwrap();

    assert!(delivery.delivered().is_empty(), "no warning at all");
    for id in [&young, &null, &unwanted, &off] {
        let m = queue.show(id).await.unwrap().unwrap();
        assert!(!m.delay_warned);
        assert!(
            m.recipients
                .iter()
                .all(|r| r.status == RecipientStatus::Deferred)
        );
    }
}

#[tokio::test]
async fn a_warning_lists_only_the_deferred_recipients_that_want_it() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let delivery = Arc::new(MockDelivery::default());
    let mut env = envelope(
        "alice@example.org",
        vec![
            rcpt("busy@example.org", true),
            rcpt("busy2@example.org", true),
            rcpt("bob@example.org", true),
            rcpt("x@remote.test", false),
        ],
    );
    env.recipients[0].notify = Notify::from_param("FAILURE,DELAY");
    env.recipients[1].notify = Notify::from_param("FAILURE");
    enqueue_old(&queue, &env).await;
    runner_with(&queue, &delivery, warning_settings())
        .run_once()
        .await
        .unwrap();
    let delivered = delivery.delivered();
    assert_eq!(delivered.len(), 2, "bob's copy and the warning");
    let warning = String::from_utf8_lossy(&delivered[1].2);
    assert!(warning.contains("Final-Recipient: rfc822; busy@example.org\r\n"));
    assert!(
        !warning.contains("busy2@example.org"),
        "NOTIFY=FAILURE: not told"
    );
    assert!(
        !warning.contains("Final-Recipient: rfc822; bob@"),
        "delivered"
    );
    assert!(!warning.contains("x@remote.test"), "not tried yet");
}

#[tokio::test]
async fn queue_delay_warning_is_taken_once() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let id = enqueue_one(&queue, "a@example.net", rcpt("x@remote.test", false)).await;
    let warning_env = envelope("", vec![rcpt("a@example.net", false)]);
    // Big enough to be a file, so a refused one would leave a file behind.
    let warning = big_content(5);
    let mut queued = Vec::new();
    for _ in 0..2 {
        let warning_id = QueueId::generate();
        let taken = queue
            .queue_delay_warning(
                &id,
                NewMessage {
                    id: &warning_id,
                    envelope: &warning_env,
                    content: &warning,
                },
            )
            .await
            .unwrap();
        queued.push(taken);
    }
    assert_eq!(queued, [true, false]);
    assert_eq!(queue.list().await.unwrap().len(), 2);
    let files = std::fs::read_dir(queue.dir().join("messages"))
        .unwrap()
        .count();
    // The message itself is small, so in the database: the one file is the warning.
    assert_eq!(files, 1, "the refused warning left no file");
    assert_eq!(queue.size(), 2);
}

// ---------------------------------------------------------------------------------------------
// The queue size (hermod_queue_size)

#[tokio::test]
async fn queue_size_follows_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let env = envelope("a@example.net", vec![rcpt("alice@example.org", true)]);
    let (a, b, c) = (
        QueueId::generate(),
        QueueId::generate(),
        QueueId::generate(),
    );
    for id in [&a, &b, &c] {
        queue.enqueue(id, &env, CONTENT).await.unwrap();
    }
    assert_eq!(queue.size(), 3);
    // Delivered: removed when recorded.
    let sent = Attempt::Sent {
        reply: "250 ok".into(),
    };
    queue.record_attempts(&a, &[(0, sent)]).await.unwrap();
    assert_eq!(queue.size(), 2);
    // Bounced: the message is swapped for its report.
    let bounced = Attempt::Bounced {
        reply: "550 no".into(),
    };
    queue.record_attempts(&b, &[(0, bounced)]).await.unwrap();
    assert_eq!(queue.size(), 2);
    let report_env = envelope("", vec![rcpt("a@example.net", false)]);
    let report = QueueId::generate();
    let new = NewMessage {
        id: &report,
        envelope: &report_env,
        content: b"report\r\n",
    };
    queue.complete(&b, Some(new)).await.unwrap();
    assert_eq!(queue.size(), 2);
    // Deleted by the admin.
    assert!(queue.delete(&report).await.unwrap());
    assert_eq!(queue.size(), 1);
    assert!(!queue.delete(&report).await.unwrap());
    assert_eq!(queue.size(), 1);

    // Another process (`hermod queue delete`) removes a message; a recount sees it, and a
    // queue opened later (the daemon starting) counts what is there.
    let cli = open(&dir).await;
    assert!(cli.delete(&c).await.unwrap());
    assert_eq!(queue.size(), 1);
    queue.refresh_size().await.unwrap();
    assert_eq!(queue.size(), 0);
    queue
        .enqueue(&QueueId::generate(), &env, CONTENT)
        .await
        .unwrap();
    let reopened = open(&dir).await;
    assert_eq!(reopened.size(), 0, "not counted before publish_size");
    reopened.refresh_size().await.unwrap();
    assert_eq!(reopened.size(), 1);
}

// ---------------------------------------------------------------------------------------------
// The runner delivers each message once

/// Counts deliveries per recipient, taking a little time like a real mailbox.
#[derive(Default)]
struct CountingDelivery {
    copies: Mutex<std::collections::HashMap<String, usize>>,
}

impl LocalDelivery for CountingDelivery {
    async fn deliver(&self, _: &str, recipient: &str, _: &[u8]) -> Result<(), DeliveryError> {
        tokio::task::yield_now().await;
        *self
            .copies
            .lock()
            .unwrap()
            .entry(recipient.to_string())
            .or_default() += 1;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_delivered_exactly_once_under_load() {
    const MESSAGES: usize = 600;
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let delivery = Arc::new(CountingDelivery::default());
    let shutdown = CancellationToken::new();
    let mut settings = settings();
    settings.concurrency = 16;
    let runner = LocalRunner::new(queue.clone(), delivery.clone(), Arc::new(Domains), settings);
    let task = tokio::spawn(runner.run(shutdown.clone()));
    let mut senders = Vec::new();
    for worker in 0..8 {
        let queue = queue.clone();
        senders.push(tokio::spawn(async move {
            for i in (worker..MESSAGES).step_by(8) {
                let env = envelope(
                    "a@example.net",
                    vec![rcpt(&format!("u{i}@example.org"), true)],
                );
                queue
                    .enqueue(&QueueId::generate(), &env, CONTENT)
                    .await
                    .unwrap();
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !queue.list().await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    task.await.unwrap();
    let copies = delivery.copies.lock().unwrap().clone();
    assert_eq!(copies.len(), MESSAGES);
    let twice: Vec<_> = copies.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
}

#[tokio::test]
async fn batched_attempts_finish_each_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let env = envelope(
        "a@example.net",
        vec![
            rcpt("alice@example.org", true),
            rcpt("bob@example.org", true),
        ],
    );
    let mut ids = Vec::new();
    for _ in 0..50 {
        let id = QueueId::generate();
        queue.enqueue(&id, &env, CONTENT).await.unwrap();
        ids.push(id);
    }
    // One write per recipient, all at once: the committer takes many into one batch.
    let mut tasks = Vec::new();
    for id in &ids {
        for position in 0..2u32 {
            let (queue, id) = (queue.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                let sent = Attempt::Sent {
                    reply: format!("250 ok {position}"),
                };
                queue.record_attempts(&id, &[(position, sent)]).await
            }));
        }
    }
    let mut finished = Vec::new();
    for t in tasks {
        if let AttemptsRecorded::Finished { message, removed } = t.await.unwrap().unwrap() {
            assert!(removed, "nothing to report");
            assert!(
                message
                    .recipients
                    .iter()
                    .all(|r| r.status == RecipientStatus::Sent && r.attempts == 1),
                "{message:?}"
            );
            finished.push(message.id);
        }
    }
    finished.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    let mut expected = ids.clone();
    expected.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    assert_eq!(finished, expected, "each message finished exactly once");
    assert!(queue.list().await.unwrap().is_empty());
    assert_eq!(queue.size(), 0);

    // The same recipient twice in one batch: both attempts count.
    let id = QueueId::generate();
    queue.enqueue(&id, &env, CONTENT).await.unwrap();
    let deferred = || Attempt::Deferred {
        reply: "451 later".into(),
        next_attempt: unix_now() + 60,
    };
    let (first, second) = ([(0, deferred())], [(0, deferred())]);
    let (a, b) = tokio::join!(
        queue.record_attempts(&id, &first),
        queue.record_attempts(&id, &second),
    );
    assert_eq!(a.unwrap(), AttemptsRecorded::Pending);
    assert_eq!(b.unwrap(), AttemptsRecorded::Pending);
    let m = queue.show(&id).await.unwrap().unwrap();
    assert_eq!(m.recipients[0].attempts, 2);
    assert_eq!(m.recipients[0].status, RecipientStatus::Deferred);
    assert_eq!(m.recipients[1].status, RecipientStatus::Pending);
}

#[tokio::test]
async fn only_new_messages_wait_for_the_fsync_and_other_writers_keep_it() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let id = QueueId::generate();
    let env = envelope("a@example.net", vec![rcpt("alice@example.org", true)]);
    queue.enqueue(&id, &env, CONTENT).await.unwrap();
    let sent = [(
        0,
        Attempt::Sent {
            reply: "250 ok".into(),
        },
    )];
    // An outcome alone is committed without waiting for the fsync, on the committer's own
    // connection: the pool's connections (reports, the CLI) still wait for it (2 = FULL).
    assert!(matches!(
        queue.record_attempts(&id, &sent).await.unwrap(),
        AttemptsRecorded::Finished { removed: true, .. }
    ));
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut conn = queue.pool.acquire().await.unwrap();
        let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(level, 2);
        held.push(conn);
    }
    drop(held);
    // And the next new message is stored (and read back) as before.
    let next = QueueId::generate();
    queue.enqueue(&next, &env, CONTENT).await.unwrap();
    drop(queue);
    let queue = open(&dir).await;
    assert_eq!(queue.read_message(&next).await.unwrap(), CONTENT);
    assert!(queue.show(&id).await.unwrap().is_none());
}
