//! Local delivery in-process, through the MDA crate (`hermod_mda::Delivery`).
//!
//! The MTA expands aliases when it queues a message, so the MDA normally gets mailbox
//! addresses only. If the directory changed since (an alias now points off-site), the MDA
//! returns remote targets as forwards: they are queued here as a new message from the same
//! sender, as Postfix's local(8) re-submits forwarded mail.

use std::path::Path;
use std::sync::Arc;

use hermod_common::Context;
use hermod_mda::sieve::Action as SieveAction;
use hermod_mda::{Content, Delivery, FileContent, TargetResult};

use crate::delivery::{DeliveryError, LocalDelivery};
use crate::envelope::{Envelope, EnvelopeRecipient, Notify, QueueId};
use crate::forwarding::Forwarding;
use crate::queue::Queue;
use crate::sieve_actions::vacation::VacationRequest;
use crate::sieve_actions::{ScriptRun, SieveSender};

/// [`LocalDelivery`] by the MDA in this process.
pub struct MdaDelivery {
    delivery: Delivery,
    /// The same delivery, checking for a copy filed before a crash.
    after_restart: Delivery,
    queue: Arc<Queue>,
    /// SRS for forwards; None: forwards keep their sender.
    forwarding: Option<Forwarding>,
    /// Sends what users' Sieve scripts ask for (redirect, vacation); None: they are logged
    /// and dropped.
    sieve: Option<SieveSender>,
}

impl MdaDelivery {
    /// `queue` receives forwards to remote alias targets.
    pub fn new(delivery: Delivery, queue: Arc<Queue>) -> Self {
        let after_restart = delivery.clone().checking_duplicates();
        MdaDelivery {
            delivery,
            after_restart,
            queue,
            forwarding: None,
            sieve: None,
        }
    }

    /// Forwards get an SRS sender when the sender's domain is not ours, and Sieve redirects
    /// and vacation replies are queued.
    pub fn with_forwarding(mut self, ctx: &Context, forwarding: Forwarding) -> Self {
        self.sieve = Some(SieveSender::new(
            ctx,
            self.queue.clone(),
            forwarding.clone(),
        ));
        self.forwarding = Some(forwarding);
        self
    }

    /// Queue `message` (sent to our SRS address `srs`) to the address it stands for.
    async fn send_back(
        &self,
        sender: &str,
        srs: &str,
        back: &str,
        message: Content<'_>,
    ) -> Result<(), DeliveryError> {
        let local = match &self.forwarding {
            Some(f) => f.is_local_address(back).await,
            None => false,
        };
        let id = QueueId::generate();
        let envelope = Envelope {
            sender: self.forward_sender(sender, srs).await,
            recipients: vec![EnvelopeRecipient {
                address: back.to_string(),
                local,
                notify: Notify::default(),
                orcpt: Some(format!("rfc822;{srs}")),
            }],
            client: format!("SRS return for <{srs}>"),
            ..Envelope::default()
        };
        let queued = match message {
            Content::Memory(m) => self.queue.enqueue(&id, &envelope, m).await,
            Content::File(f) => {
                self.queue
                    .enqueue_spooled(&id, &envelope, b"", f.path())
                    .await
            }
        };
        queued.map_err(|e| DeliveryError::temporary(format!("451 4.3.0 cannot queue: {e}")))?;
        tracing::info!(queue_id = %id, srs = %srs, to = %back, "SRS address reversed");
        Ok(())
    }

    /// Queue what the Sieve scripts of each target asked for. A redirect that cannot be
    /// queued fails the recipient temporarily (it is retried); a vacation reply that cannot
    /// be sent is only logged. A `reject` refuses the message for the recipient: the queue
    /// then sends the sender a bounce with the script's reason.
    async fn sieve_actions(
        &self,
        sender: &str,
        recipient: &str,
        targets: &[TargetResult],
        message: Content<'_>,
    ) -> Result<(), DeliveryError> {
        let mut rejection = None;
        for target in targets.iter().filter(|t| !t.sieve.is_empty()) {
            let Some((localpart, domain)) = target.address.rsplit_once('@') else {
                continue;
            };
            let run = ScriptRun {
                sender,
                user: &target.address,
                localpart,
                domain,
                orig_recipient: recipient,
                message,
            };
            let mut redirects = 0;
            for action in &target.sieve {
                let Some(sieve) = &self.sieve else {
                    tracing::warn!(user = %target.address, ?action,
                        "sieve action dropped: this delivery cannot send mail");
                    continue;
                };
                match action {
                    SieveAction::Redirect { address, .. } => {
                        if redirects >= sieve.max_redirects() {
                            tracing::warn!(user = %target.address, to = %address,
                                limit = sieve.max_redirects(), "sieve redirect over the limit: dropped");
                            continue;
                        }
                        redirects += 1;
                        sieve.redirect(&run, address).await.map_err(|e| {
                            DeliveryError::temporary(format!(
                                "451 4.3.0 cannot queue a redirect: {e}"
                            ))
                        })?;
                    }
                    SieveAction::Vacation(v) => {
                        let request = VacationRequest {
                            reason: v.reason.clone(),
                            mime: v.mime,
                            subject: v.subject.clone(),
                            from: v.from.clone(),
                            addresses: v.addresses.clone(),
                            handle: v.handle.clone(),
                            period_seconds: v.period_seconds,
                        };
                        if let Err(e) = sieve.vacation(&run, &request).await {
                            tracing::warn!(user = %target.address, error = %e, "vacation reply not sent");
                        }
                    }
                    SieveAction::Reject { reason } | SieveAction::Ereject { reason } => {
                        tracing::info!(user = %target.address, from = %sender, "rejected by sieve");
                        rejection.get_or_insert_with(|| reason.clone());
                    }
                    _ => {}
                }
            }
        }
        match rejection {
            Some(reason) => {
                let reason: String = reason
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .take(200)
                    .collect();
                Err(DeliveryError::permanent(format!(
                    "550 5.7.1 <{recipient}>: rejected by the recipient's filter: {}",
                    reason.trim()
                )))
            }
            None => Ok(()),
        }
    }

    /// The envelope sender of mail from `sender` forwarded for our address `via`.
    async fn forward_sender(&self, sender: &str, via: &str) -> String {
        match &self.forwarding {
            Some(f) => f.sender_for(sender, via).await,
            None => sender.to_string(),
        }
    }

    async fn deliver_with(
        &self,
        delivery: &Delivery,
        sender: &str,
        recipient: &str,
        message: Content<'_>,
    ) -> Result<(), DeliveryError> {
        // An SRS address of ours (our own bounce of a forward lands here): the message goes
        // back to the address it stands for.
        if let Some(reversed) = self.forwarding.as_ref().and_then(|f| f.reverse(recipient)) {
            return match reversed {
                Ok(back) => self.send_back(sender, recipient, &back, message).await,
                Err(e) => Err(DeliveryError::permanent(format!(
                    "550 5.1.1 <{recipient}>: {e}"
                ))),
            };
        }
        let result = delivery.deliver_content(sender, recipient, message).await;

        let reply = result.reply.to_string();
        if result.is_temporary() {
            return Err(DeliveryError::temporary(reply));
        }
        if result.is_permanent() {
            return Err(DeliveryError::permanent(reply));
        }
        self.sieve_actions(sender, recipient, &result.targets, message)
            .await?;
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
                sender: self.forward_sender(sender, recipient).await,
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

    /// With forwarding set up, a forward from another domain's sender leaves from an SRS
    /// address of the alias's domain, which reverses to the sender; a local sender stays.
    #[tokio::test]
    async fn forwards_from_other_domains_get_an_srs_sender() {
        let tmp = tempfile::tempdir().unwrap();
        let (ctx, queue) = alice_and_queue(&tmp).await;
        ctx.directory
            .add_alias("team@example.org", "friend@remote.test")
            .await
            .unwrap();
        let forwarding = Forwarding::from_context(&ctx).unwrap();
        let mda = MdaDelivery::new(Delivery::from_context(&ctx), queue.clone())
            .with_forwarding(&ctx, forwarding.clone());
        let message = b"Subject: hi\r\n\r\nhello\r\n";
        mda.deliver("s@example.net", "team@example.org", message)
            .await
            .unwrap();
        mda.deliver("alice@example.org", "team@example.org", message)
            .await
            .unwrap();
        let mut senders: Vec<String> = queue
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.sender)
            .collect();
        senders.sort();
        assert_eq!(senders.len(), 2);
        assert!(senders[0].starts_with("SRS0="), "{senders:?}");
        assert!(
            senders[0].ends_with("=example.net=s@example.org"),
            "{senders:?}"
        );
        assert_eq!(
            forwarding.reverse(&senders[0]),
            Some(Ok("s@example.net".to_string()))
        );
        assert_eq!(senders[1], "alice@example.org");
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
