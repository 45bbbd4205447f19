//! What users file as spam or as not spam, for a filter that learns (rspamd's controller):
//! the IMAP server reports moves into and out of Junk through [`JunkFeedback`]; the MTA's
//! filter module implements it. The trait lives here so the IMAP server needs no MTA.

use crate::store::UserStore;

/// Messages a user just filed into Junk (`spam`) or out of it.
pub struct JunkReport {
    /// The owner's store, to read the messages from.
    pub user: UserStore,
    /// The owner's login name, for the filter's per-user statistics and the logs.
    pub address: String,
    /// Where the messages are now, and their UIDs there.
    pub mailbox: String,
    pub uids: Vec<u32>,
    pub spam: bool,
}

/// Receives [`JunkReport`]s. `report` must return at once (the IMAP command waits for it):
/// implementations queue the work and drop it, with a log line, when the queue is full.
pub trait JunkFeedback: Send + Sync + 'static {
    fn report(&self, report: JunkReport);
}
