//! Reading the maildrop ahead of the client, in batches.
//!
//! Clients download in order (RETR 1, RETR 2, ...; fetchmail's `TOP n 99999999` too). Each
//! read from the store costs an index query and a trip to the blocking pool; on a small
//! machine those thread hand-offs, not the file reads, bound a download. So the messages
//! after the one just asked for are read with [`UserStore::read_many`], a batch at a time in
//! a background task, while the session writes to the client: a hop per batch, not per
//! message, and the next message is usually in memory when its RETR arrives.
//!
//! Memory is bounded: a batch holds at most [`BATCH_MESSAGES`] messages and
//! [`BATCH_BYTES`] bytes, and a message above [`MAX_READ_AHEAD_SIZE`] is only read when it
//! is asked for.

use std::collections::VecDeque;

use hermod_common::store::{StoreError, Uid, UserStore};
use tokio::task::JoinHandle;

use crate::session::ListedMessage;

/// Most messages read in one batch.
pub const BATCH_MESSAGES: usize = 64;
/// Most bytes (by listed size) read in one batch; a single larger message may form a batch
/// alone if it is below [`MAX_READ_AHEAD_SIZE`].
pub const BATCH_BYTES: u64 = 512 * 1024;
/// Messages larger than this are not read ahead.
pub const MAX_READ_AHEAD_SIZE: u64 = 1024 * 1024;

/// One message read: its bytes, or None if it was expunged.
type Read = Option<Vec<u8>>;

/// A batch read running in the background.
type BatchRead = JoinHandle<Result<Vec<Read>, StoreError>>;

/// The read-ahead of one open maildrop.
pub struct ReadAhead {
    store: UserStore,
    mailbox: &'static str,
    /// The listing of the session (ascending UID, with POP3 sizes).
    listed: Vec<ListedMessage>,
    /// Messages read and not asked for yet: ascending UID, consecutive in `listed`.
    ready: VecDeque<(Uid, Read)>,
    /// Bytes held in `ready`.
    ready_bytes: u64,
    /// The batch being read in the background: its UIDs (ascending) and the task.
    running: Option<(Vec<Uid>, BatchRead)>,
}

impl ReadAhead {
    /// Read-ahead over `listed` (ascending UID) of `mailbox`.
    pub fn new(store: UserStore, mailbox: &'static str, listed: Vec<ListedMessage>) -> ReadAhead {
        ReadAhead {
            store,
            mailbox,
            listed,
            ready: VecDeque::new(),
            ready_bytes: 0,
            running: None,
        }
    }

    /// The message `uid` exactly as stored (None if it was expunged), from what was read
    /// ahead if it is there, else read now. Then the messages after it are kept being read.
    pub async fn read(&mut self, uid: Uid) -> Result<Read, StoreError> {
        let result = match self.take(uid).await {
            Some(m) => Ok(m),
            None => match self.store.read(self.mailbox, uid).await {
                Ok(m) => Ok(Some(m)),
                Err(StoreError::NoSuchMessage(_)) => Ok(None),
                Err(e) => Err(e),
            },
        };
        self.refill(uid);
        result
    }

    /// Drop what was read and stop the background read.
    pub fn clear(&mut self) {
        self.ready.clear();
        self.ready_bytes = 0;
        if let Some((_, task)) = self.running.take() {
            task.abort();
        }
    }

    /// Messages read and waiting, for tests.
    #[cfg(test)]
    fn ready_uids(&self) -> Vec<Uid> {
        self.ready.iter().map(|(u, _)| *u).collect()
    }

    /// `uid` from the read-ahead; None if it is not there (then nothing read is kept: the
    /// client went elsewhere).
    async fn take(&mut self, uid: Uid) -> Option<Read> {
        loop {
            // Messages before `uid` were skipped by the client.
            while let Some((first, m)) = self.ready.pop_front() {
                self.ready_bytes -= size_of(&m);
                match first.cmp(&uid) {
                    std::cmp::Ordering::Less => continue,
                    std::cmp::Ordering::Equal => return Some(m),
                    std::cmp::Ordering::Greater => {
                        self.clear();
                        return None;
                    }
                }
            }
            let (uids, task) = self.running.take()?;
            if uids.binary_search(&uid).is_err() {
                task.abort();
                return None;
            }
            match task.await {
                Ok(Ok(messages)) => {
                    for (u, m) in uids.into_iter().zip(messages) {
                        self.ready_bytes += size_of(&m);
                        self.ready.push_back((u, m));
                    }
                }
                // Read it alone: its error, if any, is then reported for it.
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "reading ahead failed");
                    return None;
                }
                Err(_) => return None,
            }
        }
    }

    /// Start reading the next batch after what is held, unless enough is held or a read is
    /// running already.
    fn refill(&mut self, just_read: Uid) {
        if self.running.is_some()
            || self.ready.len() >= BATCH_MESSAGES / 2
            || self.ready_bytes >= BATCH_BYTES / 2
        {
            return;
        }
        let after = self.ready.back().map_or(just_read, |(u, _)| *u);
        let start = self.listed.partition_point(|m| m.uid <= after);
        let mut uids = Vec::new();
        let mut bytes = 0;
        for m in &self.listed[start..] {
            if m.size > MAX_READ_AHEAD_SIZE
                || uids.len() == BATCH_MESSAGES
                || (!uids.is_empty() && bytes + m.size > BATCH_BYTES)
            {
                break;
            }
            uids.push(m.uid);
            bytes += m.size;
        }
        if uids.is_empty() {
            return;
        }
        let store = self.store.clone();
        let mailbox = self.mailbox;
        let batch = uids.clone();
        let task = tokio::spawn(async move { store.read_many(mailbox, &batch).await });
        self.running = Some((uids, task));
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.clear();
    }
}

fn size_of(m: &Read) -> u64 {
    m.as_ref().map_or(0, |m| m.len() as u64)
}

#[cfg(test)]
mod tests {
    use hermod_common::store::{Flag, Flags, Store, StoreConfig, StoreMode};

    use super::*;

    fn message(i: usize, size: usize) -> Vec<u8> {
        let mut m = format!("Subject: {i}\r\n\r\n").into_bytes();
        m.resize(size.max(m.len() + 2) - 2, b'x');
        m.extend_from_slice(b"\r\n");
        m
    }

    async fn maildrop(sizes: &[usize]) -> (tempfile::TempDir, UserStore, Vec<ListedMessage>) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(StoreConfig::maildir(tmp.path()));
        let user = store.user("alice", "example.org").await.unwrap();
        let mut listed = Vec::new();
        for (i, size) in sizes.iter().enumerate() {
            let uid = user.deliver("INBOX", &message(i, *size)).await.unwrap();
            listed.push(ListedMessage {
                uid,
                size: *size as u64,
            });
        }
        (tmp, user, listed)
    }

    #[tokio::test]
    async fn in_order_download_gets_every_message_from_batches() {
        let n = BATCH_MESSAGES * 2 + 5;
        let (_tmp, user, listed) = maildrop(&vec![300; n]).await;
        let mut ahead = ReadAhead::new(user, "INBOX", listed.clone());
        for (i, m) in listed.iter().enumerate() {
            assert_eq!(ahead.read(m.uid).await.unwrap(), Some(message(i, 300)));
            if i + 1 < n {
                // The next message is held or being read.
                let next = listed[i + 1].uid;
                let running = ahead.running.as_ref().map(|(u, _)| u.contains(&next));
                assert!(ahead.ready_uids().contains(&next) || running == Some(true));
            }
        }
        assert!(ahead.ready.is_empty());
        assert!(ahead.read(9999).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn skipping_and_going_back_still_give_the_right_message() {
        let (_tmp, user, listed) = maildrop(&[200; 20]).await;
        let mut ahead = ReadAhead::new(user, "INBOX", listed.clone());
        for i in [0, 1, 7, 3, 19, 0, 5, 5] {
            let got = ahead.read(listed[i].uid).await.unwrap();
            assert_eq!(got, Some(message(i, 200)), "message {i}");
        }
    }

    #[tokio::test]
    async fn expunged_message_reads_as_none_and_the_rest_still_come() {
        let (_tmp, user, listed) = maildrop(&[200; 6]).await;
        // IMAP expunges message 4 after the POP3 listing was made.
        let deleted = Flags::from_flags(&[Flag::Deleted]);
        user.store(
            "INBOX",
            &[listed[4].uid],
            StoreMode::Add,
            deleted,
            &[],
            None,
        )
        .await
        .unwrap();
        user.expunge("INBOX", None).await.unwrap();
        let mut ahead = ReadAhead::new(user, "INBOX", listed.clone());
        for (i, m) in listed.iter().enumerate() {
            let expected = (i != 4).then(|| message(i, 200));
            assert_eq!(ahead.read(m.uid).await.unwrap(), expected, "{i}");
        }
        // Read alone (nothing ahead), too.
        ahead.clear();
        assert_eq!(ahead.read(listed[4].uid).await.unwrap(), None);
    }

    #[tokio::test]
    async fn batches_stay_within_the_byte_bound_and_large_messages_are_read_alone() {
        let big = MAX_READ_AHEAD_SIZE as usize + 10;
        let sizes = [
            100_000, 100_000, 100_000, 100_000, 100_000, 100_000, big, 50,
        ];
        let (_tmp, user, listed) = maildrop(&sizes).await;
        let mut ahead = ReadAhead::new(user, "INBOX", listed.clone());
        ahead.read(listed[0].uid).await.unwrap();
        let (batch, _) = ahead.running.as_ref().unwrap();
        let batch_bytes: u64 = batch.len() as u64 * 100_000;
        assert!(batch_bytes <= BATCH_BYTES, "{batch:?}");
        for (i, size) in sizes.iter().enumerate() {
            assert_eq!(
                ahead.read(listed[i].uid).await.unwrap(),
                Some(message(i, *size)),
                "message {i}"
            );
            assert!(!ahead.ready_uids().contains(&listed[6].uid));
            if let Some((uids, _)) = &ahead.running {
                assert!(!uids.contains(&listed[6].uid), "large message read ahead");
            }
        }
    }
}
