//! The delivery status notifications the queue owes a sender, built with
//! [`crate::bounce::build_dsn`] and queued from the null sender to the sender (a local
//! mailbox or a remote one):
//!
//! - the final report, when no recipient of a message is left to try: bounces, and success
//!   reports asked for with `NOTIFY=SUCCESS`. It is queued and the message removed in one
//!   transaction ([`Queue::complete`]), so it is neither lost nor sent twice.
//! - one delay warning per message (Postfix `delay_warning_time`), when a recipient is still
//!   deferred that long after arrival. It is queued and the message marked warned in one
//!   transaction ([`Queue::queue_delay_warning`]).
//!
//! Both runners (local and outbound) use these, so there is one DSN policy.

use std::collections::HashMap;
use std::time::Duration;

use super::{NewMessage, Queue, QueueError, QueuedMessage, RecipientStatus, unix_now};
use crate::bounce::{DsnAction, DsnRecipient, DsnReport, build_dsn};
use crate::envelope::{Envelope, EnvelopeRecipient, Notify, QueueId};

/// The names a report is sent under.
#[derive(Debug, Clone, Copy)]
pub struct Reporter<'a> {
    /// myhostname: `Reporting-MTA` and the report's Message-ID.
    pub hostname: &'a str,
    /// myorigin: the report comes From `MAILER-DAEMON@<origin>`.
    pub origin: &'a str,
}

/// The recipients a final report must tell the sender about, with their positions:
/// failures (unless NOTIFY said otherwise) and local deliveries asked for with
/// NOTIFY=SUCCESS.
fn reported_recipients(message: &QueuedMessage) -> Vec<(u32, DsnRecipient)> {
    message
        .recipients
        .iter()
        .filter_map(|r| {
            let action = match r.status {
                RecipientStatus::Bounced if r.notify.wants_failure() => DsnAction::Failed,
                RecipientStatus::Sent if r.notify.success && r.local => DsnAction::Delivered,
                _ => return None,
            };
            Some((
                r.position,
                DsnRecipient {
                    address: r.address.clone(),
                    orcpt: r.orcpt.clone(),
                    action,
                    reply: r.last_reply.clone().unwrap_or_default(),
                    last_attempt: r.last_attempt,
                    remote_mta: None,
                    will_retry_until: None,
                },
            ))
        })
        .collect()
}

/// Whether a finished message calls for a DSN. A bounce is never bounced: nothing goes back
/// to the null sender.
pub(crate) fn needs_report(message: &QueuedMessage) -> bool {
    may_report_to(&message.sender) && !reported_recipients(message).is_empty()
}

/// Reports go to a sender, never to the null sender, and never to an internal address
/// literal (`x@[10.0.0.5]`, `x@[127.0.0.1]`): a forged sender must not make us connect
/// inside a network with a message carrying the attacker's text. The session refuses such
/// senders from the internet already; this holds whatever got into the queue.
pub(crate) fn may_report_to(sender: &str) -> bool {
    !sender.is_empty() && !crate::ip_literal::is_forbidden_literal_address(sender)
}

/// The recipients a delay warning tells about: those deferred (tried and failed
/// temporarily) whose NOTIFY asks for delays (the default does, RFC 3461 4.1), with their
/// positions.
fn delayed_recipients(message: &QueuedMessage, will_retry_until: i64) -> Vec<(u32, DsnRecipient)> {
    message
        .recipients
        .iter()
        .filter(|r| r.status == RecipientStatus::Deferred && r.notify.wants_delay())
        .map(|r| {
            (
                r.position,
                DsnRecipient {
                    address: r.address.clone(),
                    orcpt: r.orcpt.clone(),
                    action: DsnAction::Delayed,
                    reply: r.last_reply.clone().unwrap_or_default(),
                    last_attempt: r.last_attempt,
                    remote_mta: None,
                    will_retry_until: Some(will_retry_until),
                },
            )
        })
        .collect()
}

/// The report's recipients, each named with the remote server that gave its reply, if any.
fn with_remote_mtas(
    recipients: Vec<(u32, DsnRecipient)>,
    remote_mtas: &HashMap<u32, String>,
) -> Vec<DsnRecipient> {
    recipients
        .into_iter()
        .map(|(position, mut dsn)| {
            dsn.remote_mta = remote_mtas.get(&position).cloned();
            dsn
        })
        .collect()
}

/// When delay warnings are sent (Postfix `delay_warning_time`).
#[derive(Debug, Clone, Copy)]
pub struct DelayWarnings {
    /// A message still deferred this long after arrival gets one warning; zero: never.
    pub after: Duration,
    /// The queue lifetime, for `Will-Retry-Until`.
    pub max_lifetime: Duration,
}

impl DelayWarnings {
    /// Whether `message` may be owed its warning at `now`, from what is known without reading
    /// the queue: warnings are on, it has waited long enough, has a sender, was not warned.
    fn may_be_due(&self, message: &QueuedMessage, now: i64) -> bool {
        !self.after.is_zero()
            && !message.delay_warned
            && may_report_to(&message.sender)
            && now - message.arrival >= self.after.as_secs() as i64
    }

    /// Whether `message` (with all its recipients, as the queue has them now) is owed its
    /// warning at `now`: it may be, and a recipient is deferred that wants to hear of it.
    fn due(&self, message: &QueuedMessage, now: i64) -> bool {
        self.may_be_due(message, now)
            && message
                .recipients
                .iter()
                .any(|r| r.status == RecipientStatus::Deferred && r.notify.wants_delay())
    }
}

/// The envelope of a report: from `<>` to the original sender, asking for no DSN itself.
fn report_envelope(message: &QueuedMessage, sender_is_local: bool, what: &str) -> Envelope {
    Envelope {
        sender: String::new(),
        recipients: vec![EnvelopeRecipient {
            address: message.sender.clone(),
            local: sender_is_local,
            notify: Notify {
                never: true,
                ..Notify::default()
            },
            orcpt: None,
        }],
        client: format!("{what} of {}", message.id),
        ..Envelope::default()
    }
}

impl Reporter<'_> {
    /// Queues the final report for a finished `message` and removes the message, in one
    /// transaction. `remote_mtas` names the server that gave a recipient's final reply, by
    /// position, for `Remote-MTA:`.
    pub async fn queue_final_report(
        &self,
        queue: &Queue,
        message: &QueuedMessage,
        sender_is_local: bool,
        remote_mtas: &HashMap<u32, String>,
    ) -> Result<QueueId, QueueError> {
        let recipients = with_remote_mtas(reported_recipients(message), remote_mtas);
        let report_id = QueueId::generate();
        let content = self.build(queue, message, &recipients, &report_id).await;
        let envelope = report_envelope(message, sender_is_local, "report");
        queue
            .complete(
                &message.id,
                Some(NewMessage {
                    id: &report_id,
                    envelope: &envelope,
                    content: &content,
                }),
            )
            .await?;
        tracing::info!(queue_id = %message.id, report_id = %report_id, to = %message.sender,
            "delivery status notification queued");
        Ok(report_id)
    }

    /// After an attempt left `attempted` waiting (`attempted` as read before the attempt):
    /// queues its one delay warning if it is due. The queue is read again only when the
    /// warning may be due; `sender_is_local` is asked only when it is. Returns the warning's
    /// id if one was queued.
    pub async fn warn_if_delayed<E: From<QueueError>>(
        &self,
        queue: &Queue,
        warnings: DelayWarnings,
        attempted: &QueuedMessage,
        now: i64,
        remote_mtas: &HashMap<u32, String>,
        sender_is_local: impl AsyncFnOnce(&QueuedMessage) -> Result<bool, E>,
    ) -> Result<Option<QueueId>, E> {
        if !warnings.may_be_due(attempted, now) {
            return Ok(None);
        }
        let Some(message) = queue.show(&attempted.id).await? else {
            return Ok(None);
        };
        if !warnings.due(&message, now) {
            return Ok(None);
        }
        let local = sender_is_local(&message).await?;
        let until = message.arrival + warnings.max_lifetime.as_secs() as i64;
        Ok(self
            .queue_delay_warning(queue, &message, local, remote_mtas, until)
            .await?)
    }

    /// Queues the delay warning for `message` (read after its last attempt was recorded):
    /// one DSN with `Action: delayed` for its deferred recipients. None if it was warned
    /// already (by another runner, or before a restart). `will_retry_until`: when the
    /// message expires (unix seconds).
    pub async fn queue_delay_warning(
        &self,
        queue: &Queue,
        message: &QueuedMessage,
        sender_is_local: bool,
        remote_mtas: &HashMap<u32, String>,
        will_retry_until: i64,
    ) -> Result<Option<QueueId>, QueueError> {
        let recipients = delayed_recipients(message, will_retry_until);
        if recipients.is_empty() || !may_report_to(&message.sender) {
            return Ok(None);
        }
        let recipients = with_remote_mtas(recipients, remote_mtas);
        let warning_id = QueueId::generate();
        let content = self.build(queue, message, &recipients, &warning_id).await;
        let envelope = report_envelope(message, sender_is_local, "delay warning");
        let queued = queue
            .queue_delay_warning(
                &message.id,
                NewMessage {
                    id: &warning_id,
                    envelope: &envelope,
                    content: &content,
                },
            )
            .await?;
        if !queued {
            return Ok(None);
        }
        tracing::info!(queue_id = %message.id, report_id = %warning_id, to = %message.sender,
            "delay warning queued");
        Ok(Some(warning_id))
    }

    async fn build(
        &self,
        queue: &Queue,
        message: &QueuedMessage,
        recipients: &[DsnRecipient],
        report_id: &QueueId,
    ) -> Vec<u8> {
        let original = match queue.read_message(&message.id).await {
            Ok(content) => content,
            Err(e) => {
                tracing::error!(queue_id = %message.id, error = %e,
                    "original missing for the report");
                Vec::new()
            }
        };
        let message_id = format!("{report_id}@{}", self.hostname);
        build_dsn(&DsnReport {
            reporting_mta: self.hostname,
            from_domain: self.origin,
            original_sender: &message.sender,
            env_id: message.env_id.as_deref(),
            arrival: message.arrival,
            ret: message.ret,
            recipients,
            original: &original,
            message_id: &message_id,
            now: unix_now(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_report_to_the_null_sender_or_an_internal_literal() {
        assert!(may_report_to("alice@example.org"));
        assert!(may_report_to("x@[192.0.43.8]"));
        for sender in [
            "",
            "x@[10.0.0.5]",
            "x@[127.0.0.1]",
            "x@[IPv6:::1]",
            "x@[IPv6:fd00::5]",
            "x@[junk]",
        ] {
            assert!(!may_report_to(sender), "{sender:?}");
        }
    }
}
