//! Message content while it arrives: the spool shared with LMTP, in the MDA crate.

pub use hermod_mda::spool::*;

// The queue keeps in its database exactly what the session keeps in memory.
const _: () = assert!(SPOOL_THRESHOLD == crate::queue::INLINE_MAX);
