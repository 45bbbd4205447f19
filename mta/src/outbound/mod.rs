//! Outbound delivery: the queue's remote recipients go to their domain's MX hosts, or all
//! mail goes to the relay host (the null client), over SMTP with opportunistic STARTTLS;
//! temporary failures are retried with backoff, permanent ones bounce to the sender.
//!
//! - [`route`]: MX lookup with hickory-resolver (preference order, implicit MX, null MX,
//!   loops back to ourselves), the relay host.
//! - [`client`]: the sans-I/O SMTP client (capabilities, commands, the pipelined
//!   transaction); [`reply`]: the server's replies.
//! - [`body`]: the content, in memory or streamed from its queue file with dot-stuffing.
//! - [`connection`]: one connection (greeting, EHLO/HELO, STARTTLS, AUTH, messages).
//! - [`tls`]: opportunistic or verified TLS, with the outcome for the log.
//! - [`sts`]: what the recipient domain's MTA-STS policy allows (`crate::auth::mta_sts`).
//! - [`runner`]: the scheduler: destinations, connection reuse, retries, expiry, the log line
//!   per recipient and attempt. Reports to the sender (bounces, delay warnings) are built by
//!   [`crate::queue::report`], shared with the local runner.
//!
//! The daemon starts [`run_outbound`] beside the local runner. `hermod queue flush` and
//! `hermod queue retry ID` use [`flush`] and [`retry`]: they only change the queue database,
//! which the runner reads every [`OutboundSettings::poll_interval`], so they work from
//! another process while the daemon runs.

pub mod body;
pub mod client;
pub mod connection;
pub mod reply;
pub mod route;
pub mod runner;
pub mod settings;
pub mod sts;
pub mod tls;

use std::sync::Arc;

use hermod_common::{Context, Shutdown};

use crate::envelope::QueueId;
use crate::queue::{Queue, QueueError};
pub use runner::{OutboundRunner, OutboundStats};
pub use settings::OutboundSettings;

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error(transparent)]
    Resolver(#[from] route::ResolverError),
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("directory lookup: {0}")]
    Directory(#[from] hermod_common::directory::DirectoryError),
}

/// Delivers the queue's remote recipients until `shutdown`, with the settings of the config.
pub async fn run_outbound(
    ctx: Arc<Context>,
    queue: Arc<Queue>,
    shutdown: Shutdown,
    reports: Option<Arc<crate::auth::reports::Reports>>,
) -> Result<(), OutboundError> {
    let settings = OutboundSettings::from_config(&ctx.config);
    let runner = OutboundRunner::with_reports(ctx, queue, settings, reports)?;
    runner.run(shutdown.token().clone()).await;
    Ok(())
}

/// Makes every queued message due now (`hermod queue flush`). Returns how many recipients.
pub async fn flush(queue: &Queue) -> Result<u64, QueueError> {
    queue.flush().await
}

/// Makes one message due now (`hermod queue retry ID`). False if it has nothing to retry.
pub async fn retry(queue: &Queue, id: &QueueId) -> Result<bool, QueueError> {
    queue.retry(id).await
}
