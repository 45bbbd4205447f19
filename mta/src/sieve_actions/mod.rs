//! Sending what users' Sieve scripts ask for at delivery: `redirect` (with an SRS sender and
//! a `Delivered-To:` line that stops loops) and `vacation` replies (RFC 3834 rules, one per
//! sender per period). The MDA returns these actions; the MTA queues the mail they make.

pub mod vacation;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hermod_common::Context;
use hermod_common::config::SieveConfig;
use hermod_mda::Content;

use crate::envelope::{Envelope, EnvelopeRecipient, Notify, QueueId};
use crate::forwarding::Forwarding;
use crate::queue::{Queue, QueueError};
use vacation::{Incoming, VacationRequest, VacationState};

/// The message a script ran on, and for whom.
#[derive(Debug, Clone, Copy)]
pub struct ScriptRun<'a> {
    /// The envelope sender (empty for `<>`).
    pub sender: &'a str,
    /// The user whose script it was, and the recipient as addressed.
    pub user: &'a str,
    pub localpart: &'a str,
    pub domain: &'a str,
    pub orig_recipient: &'a str,
    pub message: Content<'a>,
}

/// Queues redirects and vacation replies.
#[derive(Clone)]
pub struct SieveSender {
    queue: Arc<Queue>,
    forwarding: Forwarding,
    config: SieveConfig,
    hostname: String,
    data_dir: std::path::PathBuf,
}

/// Why a redirect or a vacation reply could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("vacation record: {0}")]
    State(std::io::Error),
}

/// What a vacation action came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VacationOutcome {
    Sent(QueueId),
    Skipped(vacation::Skip),
}

impl SieveSender {
    pub fn new(ctx: &Context, queue: Arc<Queue>, forwarding: Forwarding) -> SieveSender {
        SieveSender {
            queue,
            forwarding,
            config: ctx.config.sieve.clone(),
            hostname: ctx.config.myhostname.clone(),
            data_dir: ctx.config.data_dir.clone(),
        }
    }

    /// Redirects at most this many times per delivery (`[sieve] max_redirects`).
    pub fn max_redirects(&self) -> usize {
        self.config.max_redirects
    }

    async fn recipient(&self, address: &str) -> EnvelopeRecipient {
        EnvelopeRecipient {
            address: address.to_string(),
            local: self.forwarding.is_local_address(address).await,
            notify: Notify::default(),
            orcpt: None,
        }
    }

    /// Queue a copy of the message to `address`, from the SRS form of the sender, with
    /// `Delivered-To: <user>` on top: if it comes back to the user, delivery refuses it as a
    /// loop.
    pub async fn redirect(
        &self,
        run: &ScriptRun<'_>,
        address: &str,
    ) -> Result<QueueId, QueueError> {
        let id = QueueId::generate();
        let envelope = Envelope {
            sender: self.forwarding.sender_for(run.sender, run.user).await,
            recipients: vec![self.recipient(address).await],
            smtputf8: !address.is_ascii() || !run.sender.is_ascii(),
            client: format!("sieve redirect for <{}>", run.user),
            ..Envelope::default()
        };
        let prefix = format!("Delivered-To: {}\r\n", run.user);
        match run.message {
            Content::Memory(m) => {
                let mut copy = Vec::with_capacity(prefix.len() + m.len());
                copy.extend_from_slice(prefix.as_bytes());
                copy.extend_from_slice(m);
                self.queue.enqueue(&id, &envelope, &copy).await?;
            }
            Content::File(f) => {
                self.queue
                    .enqueue_spooled(&id, &envelope, prefix.as_bytes(), f.path())
                    .await?;
            }
        }
        tracing::info!(queue_id = %id, user = %run.user, to = %address, from = %envelope.sender,
            "sieve redirect queued");
        Ok(id)
    }

    /// Send a vacation reply if RFC 3834 and the once-per-period record allow it.
    pub async fn vacation(
        &self,
        run: &ScriptRun<'_>,
        request: &VacationRequest,
    ) -> Result<VacationOutcome, SendError> {
        let incoming = Incoming {
            sender: run.sender,
            header: run.message.head(),
            user: run.user,
            orig_recipient: run.orig_recipient,
        };
        if let Err(skip) = vacation::check(request, &incoming) {
            tracing::info!(user = %run.user, sender = %run.sender, reason = skip.as_str(),
                "vacation: no reply");
            return Ok(VacationOutcome::Skipped(skip));
        }
        let period = request.period_seconds.clamp(
            self.config.vacation_min_period,
            self.config.vacation_max_period,
        );
        let state = VacationState::new(
            &self.data_dir,
            run.localpart,
            run.domain,
            self.config.vacation_max_senders,
        );
        let (sender, handle) = (run.sender.to_string(), request.handle.clone());
        let first = tokio::task::spawn_blocking(move || {
            state.record(&sender, &handle, period, SystemTime::now())
        })
        .await
        .map_err(|e| SendError::State(std::io::Error::other(e.to_string())))?
        .map_err(SendError::State)?;
        if !first {
            tracing::info!(user = %run.user, sender = %run.sender,
                reason = vacation::Skip::AlreadyReplied.as_str(), "vacation: no reply");
            return Ok(VacationOutcome::Skipped(vacation::Skip::AlreadyReplied));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let reply = vacation::compose(request, &incoming, &self.hostname, now);
        let id = QueueId::generate();
        let envelope = Envelope {
            // RFC 3834 section 3.3: auto-replies go from the null sender.
            sender: String::new(),
            recipients: vec![self.recipient(run.sender).await],
            smtputf8: !run.sender.is_ascii(),
            client: format!("sieve vacation for <{}>", run.user),
            ..Envelope::default()
        };
        self.queue.enqueue(&id, &envelope, &reply).await?;
        tracing::info!(queue_id = %id, user = %run.user, to = %run.sender, "vacation reply queued");
        Ok(VacationOutcome::Sent(id))
    }
}
