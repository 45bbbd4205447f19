//! Reading the messages a FETCH needs a batch at a time: one index query and one trip to
//! the blocking pool per batch instead of per message (a client listing the headers of
//! the newest 50 messages otherwise pays 50 of each).

use std::collections::HashMap;

use hermod_common::store::{StoreError, Uid, UserStore};

/// Messages read at once, at most...
const BATCH_MESSAGES: usize = 64;
/// ...and about this many bytes (every message of a batch is in memory together).
const BATCH_BYTES: u64 = 4 * 1024 * 1024;

/// The messages a FETCH will read, in the order it reads them.
pub(crate) struct BatchedReads {
    /// UID and size of each message to read.
    upcoming: Vec<(Uid, u64)>,
    /// Where the next batch starts in `upcoming`.
    next: usize,
    /// Read ahead, not handed out yet: `None` if expunged.
    ready: HashMap<Uid, Option<Vec<u8>>>,
}

impl BatchedReads {
    pub(crate) fn new(upcoming: Vec<(Uid, u64)>) -> Self {
        BatchedReads {
            upcoming,
            next: 0,
            ready: HashMap::new(),
        }
    }

    /// The message `uid` as delivered: from the batch read ahead, reading the next batch
    /// when it is one of the upcoming messages, else alone.
    pub(crate) async fn read(
        &mut self,
        user: &UserStore,
        mailbox: &str,
        uid: Uid,
    ) -> Result<Vec<u8>, StoreError> {
        if !self.ready.contains_key(&uid) {
            let Some(pos) = self.upcoming[self.next..].iter().position(|u| u.0 == uid) else {
                return user.read(mailbox, uid).await;
            };
            let start = self.next + pos;
            let mut end = start;
            let mut bytes = 0;
            while end < self.upcoming.len()
                && end - start < BATCH_MESSAGES
                && (end == start || bytes + self.upcoming[end].1 <= BATCH_BYTES)
            {
                bytes += self.upcoming[end].1;
                end += 1;
            }
            let uids: Vec<Uid> = self.upcoming[start..end].iter().map(|u| u.0).collect();
            let raws = user.read_many(mailbox, &uids).await?;
            self.ready = uids.into_iter().zip(raws).collect();
            self.next = end;
        }
        self.ready
            .remove(&uid)
            .flatten()
            .ok_or(StoreError::NoSuchMessage(uid))
    }
}
