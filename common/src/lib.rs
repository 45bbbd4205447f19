//! hermod-common: the base every hermod daemon stands on.
//!
//! Config, the user directory, password hashing and login throttling, TLS, SASL decoding,
//! listener plumbing and the mail store.

pub mod acme;
pub mod address;
pub mod auth;
pub mod config;
pub mod context;
pub mod directory;
pub mod dns_records;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod junk_feedback;
pub mod log_escape;
pub mod login_cache;
pub mod login_throttle;
pub mod memory;
pub mod metrics;
pub mod net;
pub mod panic_guard;
pub mod password;
pub mod sasl;
pub mod search_text;
pub mod store;
pub mod tls;
pub mod tls_reload;

pub use address::Address;
pub use auth::Authenticator;
pub use config::{Config, Service};
pub use context::Context;
pub use directory::{Destination, Directory, User};
pub use net::{Shutdown, Stream};
pub use tls::Tls;
