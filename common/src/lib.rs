//! hermod-common: the base every hermod daemon stands on.
//!
//! Config, the user directory, password hashing and login throttling, TLS, SASL decoding,
//! listener plumbing and the mail store.

pub mod store;
