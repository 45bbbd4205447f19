//! The hand-off of queued mail to local mailboxes.
//!
//! The queue runner calls a [`LocalDelivery`] for every due local recipient. In `hermod serve`
//! the MDA implements it in-process; when `hermod mta` runs on its own, [`crate::LmtpClient`]
//! implements it by speaking LMTP to `hermod mda`.

use std::future::Future;
use std::path::Path;

/// Whether a failed delivery may succeed later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Stays queued and is retried with backoff (mailbox locked, disk full, MDA down).
    Temporary,
    /// Bounced to the sender at once (no such user, over quota for good, message refused).
    Permanent,
}

/// Why a delivery failed, with the SMTP-style reply that goes into the queue, the log and any
/// bounce (e.g. `550 5.1.1 No such user`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reply}")]
pub struct DeliveryError {
    pub kind: FailureKind,
    pub reply: String,
}

impl DeliveryError {
    pub fn temporary(reply: impl Into<String>) -> Self {
        DeliveryError {
            kind: FailureKind::Temporary,
            reply: reply.into(),
        }
    }

    pub fn permanent(reply: impl Into<String>) -> Self {
        DeliveryError {
            kind: FailureKind::Permanent,
            reply: reply.into(),
        }
    }

    pub fn is_permanent(&self) -> bool {
        self.kind == FailureKind::Permanent
    }
}

/// Delivers a message into a local mailbox.
pub trait LocalDelivery: Send + Sync + 'static {
    /// Delivers `message` (CRLF line endings, our Received header on top) to one local
    /// `recipient`. `sender` is the envelope sender, empty for bounces. Ok means the message is
    /// safely in the mailbox.
    fn deliver(
        &self,
        sender: &str,
        recipient: &str,
        message: &[u8],
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send;

    /// Delivers to several recipients of one message; one result per recipient, in order.
    /// The default calls [`LocalDelivery::deliver`] for each; LMTP overrides it to send the
    /// message once.
    fn deliver_many(
        &self,
        sender: &str,
        recipients: &[String],
        message: &[u8],
    ) -> impl Future<Output = Vec<Result<(), DeliveryError>>> + Send {
        async move {
            let mut results = Vec::with_capacity(recipients.len());
            for recipient in recipients {
                results.push(self.deliver(sender, recipient, message).await);
            }
            results
        }
    }

    /// Like [`LocalDelivery::deliver_many`], for a message that was already queued when this
    /// process started: a crash may have filed it without the queue hearing of it, so an
    /// implementation that can look (the in-process MDA) reports an identical copy found in
    /// the mailbox as delivered instead of filing it twice.
    fn deliver_many_after_restart(
        &self,
        sender: &str,
        recipients: &[String],
        message: &[u8],
    ) -> impl Future<Output = Vec<Result<(), DeliveryError>>> + Send {
        self.deliver_many(sender, recipients, message)
    }

    /// [`LocalDelivery::deliver_many`] (or `deliver_many_after_restart` with
    /// `after_restart`) of a message whose content is the file at `path` (a big queued
    /// message). The default reads the file whole; the in-process MDA overrides it to copy
    /// the file into the mailbox without holding it in memory.
    fn deliver_file_many(
        &self,
        sender: &str,
        recipients: &[String],
        path: &Path,
        after_restart: bool,
    ) -> impl Future<Output = Vec<Result<(), DeliveryError>>> + Send {
        async move {
            match tokio::fs::read(path).await {
                Ok(content) if after_restart => {
                    self.deliver_many_after_restart(sender, recipients, &content)
                        .await
                }
                Ok(content) => self.deliver_many(sender, recipients, &content).await,
                Err(e) => {
                    let reply = format!("451 4.3.0 cannot read the queued message: {e}");
                    recipients
                        .iter()
                        .map(|_| Err(DeliveryError::temporary(reply.clone())))
                        .collect()
                }
            }
        }
    }
}
