//! hermod-imapd: the IMAP server (IMAP4rev1 with the extensions clients use).
//!
//! Layers, outside in: [`server`] accepts connections and runs the socket loop (TLS,
//! STARTTLS, COMPRESS, timeouts); [`framer`] cuts the byte stream into commands;
//! [`session`] is the state machine, with one file per command under `cmd/`; [`mime`]
//! builds ENVELOPE, BODYSTRUCTURE and BODY[section] from message bytes.

pub mod append_utf8;
pub mod cmd;
pub mod compress;
pub mod date;
pub mod extended;
pub mod framer;
#[doc(hidden)]
pub mod fuzzing;
pub mod imap_url;
pub mod mime;
pub mod objectid;
pub mod output;
pub mod rev2;
pub(crate) mod search_context;
pub mod search_return;
pub mod searchres;
pub mod sequence;
pub mod server;
pub mod session;
pub(crate) mod uidonly;
pub mod wire;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
pub(crate) mod testing;
pub use server::{ServeError, serve, serve_with};
