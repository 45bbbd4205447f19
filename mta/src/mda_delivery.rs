//! Local delivery in-process, through the MDA crate (`hermod_mda::Delivery`).
//!
//! The MTA expands aliases when it queues a message, so the MDA normally gets mailbox
//! addresses only. If the directory changed since (an alias now points off-site), the MDA
//! returns remote targets as forwards: they are queued here as a new message from the same
//! sender, as Postfix's local(8) re-submits forwarded mail.

use std::path::Path;
use std::sync::Arc;

use hermod_mda::{Content, Delivery, FileContent};

use crate::delivery::{DeliveryError, LocalDelivery};
use crate::envelope::{Envelope, EnvelopeRecipient, Notify, QueueId};
use crate::queue::Queue;

/// [`LocalDelivery`] by the MDA in this process.
pub struct MdaDelivery {
    delivery: Delivery,
    /// The same delivery, checking for a copy filed before a crash.
    after_restart: Delivery,
    queue: Arc<Queue>,
}

impl MdaDelivery {
    /// `queue` receives forwards to remote alias targets.
    pub fn new(delivery: Delivery, queue: Arc<Queue>) -> Self {
        let after_restart = delivery.clone().checking_duplicates();
        MdaDelivery {
            delivery,
            after_restart,
            queue,
        }
    }

    async fn deliver_with(
        &self,
        delivery: &Delivery,
        sender: &str,
        recipient: &str,
        message: Content<'_>,
    ) -> Result<(), DeliveryError> {
        let result = delivery.deliver_content(sender, recipient, message).await;

        let reply = result.reply.to_string();
        if result.is_temporary() {
            return Err(DeliveryError::temporary(reply));
        }
        if result.is_permanent() {
            return Err(DeliveryError::permanent(reply));
        }
        let forwards: Vec<EnvelopeRecipient> = result
            .forwards()
            .map(|address| EnvelopeRecipient {
                address: address.to_string(),
                local: false,
                notify: Notify::default(),
                orcpt: Some(format!("rfc822;{recipient}")),
            })
            .collect();
        if !forwards.is_empty() {
            let id = QueueId::generate();
            let envelope = Envelope {
                sender: sender.to_string(),
                recipients: forwards,
                client: format!("forward for <{recipient}>"),
                ..Envelope::default()
            };
            // Failing here retries the recipient: its local targets may get the message
            // twice, which beats losing the forward.
            let queued = match message {
                Content::Memory(m) => self.queue.enqueue(&id, &envelope, m).await,
                Content::File(f) => {
                    self.queue
                        .enqueue_spooled(&id, &envelope, b"", f.path())
                        .await
                }
            };
            queued.map_err(|e| {
                DeliveryError::temporary(format!("451 4.3.0 cannot queue forward: {e}"))
            })?;
            tracing::info!(queue_id = %id, to = %recipient, nrcpt = envelope.recipients.len(),
                "forward to remote alias targets queued");
        }
        Ok(())
    }
}

impl LocalDelivery for MdaDelivery {
    async fn deliver(
        &self,
        sender: &str,
        recipient: &str,
        message: &[u8],
    ) -> Result<(), DeliveryError> {
        self.deliver_with(&self.delivery, sender, recipient, Content::Memory(message))
            .await
    }

    async fn deliver_file_many(
        &self,
        sender: &str,
        recipients: &[String],
        path: &Path,
        after_restart: bool,
    ) -> Vec<Result<(), DeliveryError>> {
        let file = match FileContent::open_async(path).await {
            Ok(f) => f,
            Err(e) => {
                let reply = format!("451 4.3.0 cannot read the queued message: {e}");
                return recipients
                    .iter()
                    .map(|_| Err(DeliveryError::temporary(reply.clone())))
                    .collect();
            }
        };
        let delivery = if after_restart {
            &self.after_restart
        } else {
            &self.delivery
        };
        let mut results = Vec::with_capacity(recipients.len());
        for recipient in recipients {
            results.push(
                self.deliver_with(delivery, sender, recipient, Content::File(&file))
                    .await,
            );
        }
        results
    }

    async fn deliver_many_after_restart(
        &self,
        sender: &str,
        recipients: &[String],
        message: &[u8],
    ) -> Vec<Result<(), DeliveryError>> {
        let mut results = Vec::with_capacity(recipients.len());
        for recipient in recipients {
            results.push(
                self.deliver_with(
                    &self.after_restart,
                    sender,
                    recipient,
                    Content::Memory(message),
                )
                .await,
            );
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermod_common::{Config, Context};

    /// A context in `tmp` with the user alice@example.org, and the queue beside it.
    async fn alice_and_queue(tmp: &tempfile::TempDir) -> (Arc<Context>, Arc<Queue>) {
        let mut config = Config::defaults(true);
        config.data_dir = tmp.path().to_path_buf();
        let ctx = Context::open(config).await.unwrap();
        ctx.directory.add_domain("example.org").await.unwrap();
        ctx.directory
            .add_user("alice@example.org", "pw", 0)
            .await
            .unwrap();
        let queue = Arc::new(Queue::open(tmp.path().join("queue")).await.unwrap());
        (ctx, queue)
    }

    #[tokio::test]
    async fn delivers_into_the_store_and_queues_forwards() {
        let tmp = tempfile::tempdir().unwrap();
        let (ctx, queue) = alice_and_queue(&tmp).await;
        ctx.directory
            .add_alias("team@example.org", "alice@example.org")
            .await
            .unwrap();
        ctx.directory
            .add_alias("team@example.org", "friend@remote.test")
            .await
            .unwrap();
        let mda = MdaDelivery::new(Delivery::from_context(&ctx), queue.clone());
        let message = b"Subject: hi\r\n\r\nhello\r\n";

        mda.deliver("s@example.net", "alice@example.org", message)
            .await
            .unwrap();
        let inbox = ctx.store.user("alice", "example.org").await.unwrap();
        assert_eq!(inbox.status("INBOX").await.unwrap().messages, 1);

        let err = mda
            .deliver("s@example.net", "ghost@example.org", message)
            .await
            .unwrap_err();
        assert!(err.is_permanent());
        assert!(err.reply.starts_with("550 5.1.1"), "{}", err.reply);

        // The alias changed after the message was queued: the remote part is forwarded.
        mda.deliver("s@example.net", "team@example.org", message)
            .await
            .unwrap();
        assert_eq!(inbox.status("INBOX").await.unwrap().messages, 2);
        let queued = queue.list().await.unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].sender, "s@example.net");
        assert_eq!(queued[0].recipients[0].address, "friend@remote.test");
        assert!(!queued[0].recipients[0].local);
    }

    /// A file-backed queued message is filed from its file byte for byte; after a restart
    /// the copy already filed is recognised (compared a chunk at a time) instead of being
    /// filed twice, and a different big message is not mistaken for it.
    #[tokio::test]
    async fn big_file_message_is_filed_once_and_found_after_a_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let (ctx, queue) = alice_and_queue(&tmp).await;
        let mda = MdaDelivery::new(Delivery::from_context(&ctx), queue);
        let mut big = b"Subject: big\r\n\r\n".to_vec();
        while big.len() < 3_000_000 {
            big.extend_from_slice(b"0123456789 the body of a big message\r\n");
        }
        let path = tmp.path().join("big");
        std::fs::write(&path, &big).unwrap();
        let rcpt = ["alice@example.org".to_string()];
        let results = mda
            .deliver_file_many("s@example.net", &rcpt, &path, false)
            .await;
        assert_eq!(results, vec![Ok(())]);
        let inbox = ctx.store.user("alice", "example.org").await.unwrap();
        let mut expected =
            b"Return-Path: <s@example.net>\r\nDelivered-To: alice@example.org\r\n".to_vec();
        expected.extend_from_slice(&big);
        assert!(inbox.read("INBOX", 1).await.unwrap() == expected);

        let results = mda
            .deliver_file_many("s@example.net", &rcpt, &path, true)
            .await;
        assert_eq!(results, vec![Ok(())]);
        assert_eq!(
            inbox.status("INBOX").await.unwrap().messages,
            1,
            "filed twice"
        );

        // Same length, one byte different near the end: a different message.
        let last = big.len() - 3;
        big[last] = b'X';
        std::fs::write(&path, &big).unwrap();
        let results = mda
            .deliver_file_many("s@example.net", &rcpt, &path, true)
            .await;
        assert_eq!(results, vec![Ok(())]);
        assert_eq!(inbox.status("INBOX").await.unwrap().messages, 2);
    }
}
