//! hermod-mta: the receiving side of hermod's mail transfer agent.
//!
//! - [`session`]: the sans-I/O SMTP server session (ports 25, 587, 465).
//! - [`queue`]: the durable queue (`<data_dir>/queue/`) and the local delivery runner.
//! - [`delivery`]: the [`LocalDelivery`] trait the queue runner calls: [`mda_delivery`]
//!   implements it with the MDA in-process, [`lmtp_client`] over LMTP.
//! - [`server`]: the daemon: listeners, the socket loop, [`serve`].
//! - [`auth`]: mail authentication: DKIM signing, SPF/DKIM/DMARC/ARC verification.
//! - [`filter`]: content filters at the end of DATA (rspamd).
//! - [`bounce`]: delivery status notifications (RFC 3464).
//! - [`envelope`]: the envelope of an accepted message and its queue id.

pub mod auth;
pub mod bounce;
pub mod delivery;
pub mod envelope;
pub mod filter;
pub mod forwarding;
#[doc(hidden)]
pub mod fuzzing;
pub mod ip_literal;
pub mod lmtp_client;
pub mod mda_delivery;
pub mod outbound;
pub mod queue;
pub mod server;
pub mod session;
pub mod sieve_actions;

pub use delivery::{DeliveryError, FailureKind, LocalDelivery};
pub use envelope::{Envelope, EnvelopeRecipient, QueueId};
pub use lmtp_client::{LmtpAddress, LmtpClient};
pub use mda_delivery::MdaDelivery;
pub use queue::Queue;
pub use queue::runner::{LocalRunner, RunnerSettings};
pub use server::{MtaError, queue_dir, serve, serve_with};
pub use session::{
    Action, AuthOutcome, BackendError, ConnectionInfo, LocalDomains, Role, Session, SessionBackend,
    SessionConfig,
};
