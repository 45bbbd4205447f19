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

    assert_eq!(std::fs::read(queue.message_path(&id)).unwrap(), CONTENT);
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
    let id = QueueId::generate();
    queue
        .enqueue(
            &id,
            &envelope("a@example.net", vec![rcpt("alice@example.org", true)]),
            CONTENT,
        )
        .await
        .unwrap();
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
}

#[tokio::test]
async fn complete_swaps_the_message_for_its_report_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let id = QueueId::generate();
    queue
        .enqueue(
            &id,
            &envelope("a@example.net", vec![rcpt("alice@example.org", true)]),
            CONTENT,
        )
        .await
        .unwrap();
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
            CONTENT,
        )
        .await
        .unwrap();
    std::fs::write(queue.dir().join("tmp").join("PARTIAL"), b"half").unwrap();
    std::fs::write(queue.dir().join("messages").join("ORPHAN"), b"x").unwrap();
    let lost = QueueId::generate();
    queue
        .enqueue(
            &lost,
            &envelope("a@example.net", vec![rcpt("alice@example.org", true)]),
            CONTENT,
        )
        .await
        .unwrap();
    std::fs::remove_file(queue.message_path(&lost)).unwrap();

    let recovery = queue.recover().await.unwrap();
    assert_eq!(recovery.partial_files, 1);
    assert_eq!(recovery.orphan_files, 1);
    assert_eq!(recovery.missing_files, vec![lost]);
    assert!(queue.message_path(&kept).exists());
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
        if recipient.starts_with("busy@") {
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

fn runner(queue: &Arc<Queue>, delivery: &Arc<MockDelivery>) -> LocalRunner<MockDelivery, Domains> {
    LocalRunner::new(
        queue.clone(),
        delivery.clone(),
        Arc::new(Domains),
        RunnerSettings::new("mx.example.org"),
    )
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
    let id = QueueId::generate();
    queue
        .enqueue(
            &id,
            &envelope("a@example.net", vec![rcpt("alice@example.org", true)]),
            CONTENT,
        )
        .await
        .unwrap();
    runner(&queue, &delivery).run_once().await.unwrap();
    assert!(queue.list().await.unwrap().is_empty());
    assert!(!queue.message_path(&id).exists());
}

#[tokio::test]
async fn runner_defers_temporary_failures() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir).await;
    let delivery = Arc::new(MockDelivery::default());
    let id = QueueId::generate();
    queue
        .enqueue(
            &id,
            &envelope("a@example.net", vec![rcpt("busy@example.org", true)]),
            CONTENT,
        )
        .await
        .unwrap();
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
    let bounce = String::from_utf8_lossy(bounce);
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
    let id = QueueId::generate();
    queue
        .enqueue(
            &id,
            &envelope("alice@example.org", vec![rcpt("busy@example.org", true)]),
            CONTENT,
        )
        .await
        .unwrap();
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
    let id = QueueId::generate();
    queue
        .enqueue(
            &id,
            &envelope("a@example.net", vec![rcpt("alice@example.org", true)]),
            CONTENT,
        )
        .await
        .unwrap();
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
        assert!(queue.message_path(id).exists());
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
    let id = QueueId::generate();
    queue
        .enqueue(
            &id,
            &envelope("a@example.net", vec![rcpt("alice@example.org", true)]),
            CONTENT,
        )
        .await
        .unwrap();
    let report_env = envelope("", vec![rcpt("a@example.net", false)]);
    for _ in 0..2 {
        let report_id = QueueId::generate();
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
    }
    assert_eq!(queue.list().await.unwrap().len(), 1);
    let files = std::fs::read_dir(queue.dir().join("messages"))
        .unwrap()
        .count();
    assert_eq!(files, 1);
}
