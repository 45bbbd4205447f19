//! The LMTP server (RFC 2033): a sans-I/O [`Session`] and the listeners around it.
//!
//! LMTP is for local delivery only: unknown users and addresses outside our domains are
//! refused at RCPT with 550 5.1.1, and after DATA each accepted recipient gets its own
//! reply. Postfix's `lmtp` transport and hermod's own MTA (when `hermod mta` runs apart
//! from `hermod mda`) speak it.

mod server;
pub(crate) mod session;

pub use server::{LmtpSocket, bind_socket, run_session, serve, serve_with_socket};
pub use session::{Action, Session, SessionConfig};
