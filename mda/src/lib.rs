//! hermod-mda: local delivery into the mail store (Maildir or mbox).
//!
//! - [`delivery`]: [`Delivery`] / [`deliver`], the in-process API the MTA's queue calls:
//!   aliases, `Return-Path:`/`Delivered-To:`, quota, `+detail` folders, durable writes,
//!   one SMTP-style [`Reply`] per recipient.
//! - [`lda`]: `hermod deliver` for other MTAs, with sysexits codes.
//! - [`lmtp`]: the LMTP server (TCP and unix socket) for Postfix and for `hermod mta`
//!   running apart.
//! - [`managesieve`]: the ManageSieve server (RFC 5804) for users' Sieve scripts.
//! - [`srs`]: the Sender Rewriting Scheme for forwarded mail; [`vacation`]: RFC 3834
//!   auto-replies for the Sieve `vacation` action.

pub mod content;
pub mod delivery;
#[doc(hidden)]
pub mod fuzzing;
pub mod lda;
pub mod lmtp;
pub mod managesieve;
mod message;
mod reply;
pub mod sieve;
mod sieve_delivery;
pub mod spool;
pub mod srs;

use std::path::PathBuf;

pub use content::{Content, FileContent};
pub use delivery::{Delivery, Envelope, RecipientResult, TargetOutcome, TargetResult, deliver};
pub use lda::deliver_stdin;
pub use lmtp::serve;
pub use message::{QUARANTINE_FIELD, strip_mbox_from_line};
pub use reply::Reply;

/// Errors that stop the LMTP server.
#[derive(Debug, thiserror::Error)]
pub enum MdaError {
    #[error("LMTP has nothing to listen on: no [lmtp] listen address and no socket")]
    NoListeners,
    #[error("LMTP socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("LMTP socket {0} is in use by a running server")]
    SocketInUse(PathBuf),
    #[error("LMTP listener: {0}")]
    Io(#[from] std::io::Error),
}
