//! Milters (Sendmail's milter protocol, version 6) as Postfix runs them:
//! `[spam] smtpd_milters = ["inet:127.0.0.1:11332", "unix:/run/x.sock"]`, asked in order at
//! the end of DATA.
//!
//! - [`protocol`]: the wire format (sans I/O).
//! - [`client`]: one conversation per message through every stage.
//! - [`apply`]: the milter's header and body changes applied to the message.

pub mod apply;
pub mod client;
pub mod protocol;
