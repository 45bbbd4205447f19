//! The session backend on hermod's store: login through the shared authenticator (which
//! throttles failures), the exclusive maildrop lock, INBOX listed with POP3 sizes, messages
//! read exactly as stored, and the UPDATE state applied at QUIT.
//!
//! POP3 works on INBOX only, in Maildir or mbox alike (the store hides the format). The
//! messages marked with DELE get `\Deleted` and are expunged by UID in one step at QUIT; if
//! the expunge fails, the `\Deleted` flags this session added are taken back, so the maildrop
//! is as before and the client is told `-ERR`.

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use hermod_common::Context;
use hermod_common::directory::User;
use hermod_common::store::{Flag, Flags, StoreError, StoreMode, Uid, UserStore};

use crate::lock::{LockError, MaildropLock};
use crate::session::{Backend, BackendError, ListedMessage, Listing, LoginOutcome};
use crate::sizes::SizeCache;
use crate::transfer;

/// The mailbox POP3 serves.
pub const INBOX: &str = "INBOX";

/// How many tasks read messages at once to learn their sizes on a first login.
const SIZE_READERS: usize = 4;

/// Messages up to this size are read ahead (see [`ReadAhead`]).
const READ_AHEAD_MAX_SIZE: u64 = 1024 * 1024;
/// How many messages are read ahead.
const READ_AHEAD: usize = 4;

/// A [`Backend`] on the real store, one per connection.
pub struct StoreBackend {
    ctx: Arc<Context>,
    peer: IpAddr,
    open: Option<OpenMaildrop>,
}

/// A locked maildrop; dropping it releases the lock.
struct OpenMaildrop {
    store: UserStore,
    /// The listing as sent to the session: (uid, size), ascending UID.
    listed: Vec<ListedMessage>,
    ahead: ReadAhead,
    _lock: MaildropLock,
}

/// Reads of the next few messages after the one just sent, running while the client is
/// still receiving. Clients download in order (RETR 1, RETR 2, ...; fetchmail's
/// `TOP n 99999999` too), so the store's index lookup and file read overlap with the network
/// round trip and with each other instead of adding up.
#[derive(Default)]
struct ReadAhead {
    reads: VecDeque<(Uid, MessageRead)>,
}

/// A running read of one message.
type MessageRead = tokio::task::JoinHandle<Result<Vec<u8>, StoreError>>;

impl ReadAhead {
    /// The read of `uid` if one is running; reads of messages before it are dropped (the
    /// client skipped them), and all of them if `uid` is not in the window.
    fn take(&mut self, uid: Uid) -> Option<MessageRead> {
        while let Some((first, task)) = self.reads.pop_front() {
            if first == uid {
                return Some(task);
            }
            task.abort();
            if first > uid {
                self.clear();
                return None;
            }
        }
        None
    }

    fn clear(&mut self) {
        for (_, task) in self.reads.drain(..) {
            task.abort();
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.clear();
    }
}

impl OpenMaildrop {
    /// The message, from the read-ahead if it is there, else read now.
    async fn read(&mut self, uid: Uid) -> Result<Vec<u8>, StoreError> {
        if let Some(task) = self.ahead.take(uid)
            && let Ok(result) = task.await
        {
            return result;
        }
        self.store.read(INBOX, uid).await
    }

    /// Keep the next [`READ_AHEAD`] small messages after `uid` being read.
    fn read_ahead_after(&mut self, uid: Uid) {
        let Ok(i) = self.listed.binary_search_by_key(&uid, |m| m.uid) else {
            return;
        };
        let last_started = self.ahead.reads.back().map(|(u, _)| *u);
        for next in self.listed[i + 1..].iter().take(READ_AHEAD) {
            if next.size > READ_AHEAD_MAX_SIZE {
                break;
            }
            if last_started.is_some_and(|u| next.uid <= u) {
                continue;
            }
            let store = self.store.clone();
            let next_uid = next.uid;
            let task = tokio::spawn(async move { store.read(INBOX, next_uid).await });
            self.ahead.reads.push_back((next_uid, task));
        }
    }
}

impl StoreBackend {
    pub fn new(ctx: Arc<Context>, peer: IpAddr) -> StoreBackend {
        StoreBackend {
            ctx,
            peer,
            open: None,
        }
    }

    async fn open(&mut self, user: User) -> Result<LoginOutcome, BackendError> {
        let store = self
            .ctx
            .store
            .user(&user.localpart, &user.domain)
            .await
            .map_err(store_error)?;
        let lock = match MaildropLock::acquire(store.dir()) {
            Ok(l) => l,
            Err(LockError::InUse) => return Ok(LoginOutcome::InUse),
            Err(e) => {
                return Err(BackendError {
                    temporary: true,
                    message: e.to_string(),
                });
            }
        };
        let snapshot = store.select(INBOX, false).await.map_err(store_error)?;
        let messages = listed_sizes(&store, snapshot.uidvalidity, &snapshot.messages).await?;
        self.open = Some(OpenMaildrop {
            store,
            listed: messages.clone(),
            ahead: ReadAhead::default(),
            _lock: lock,
        });
        Ok(LoginOutcome::Opened(Listing {
            user: user.address,
            uidvalidity: snapshot.uidvalidity,
            messages,
        }))
    }

    fn store(&self) -> Result<&UserStore, BackendError> {
        self.open.as_ref().map(|o| &o.store).ok_or(BackendError {
            temporary: false,
            message: "no maildrop is open".into(),
        })
    }

    fn stop_reading_ahead(&mut self) {
        if let Some(open) = self.open.as_mut() {
            open.ahead.clear();
        }
    }

    /// Mark messages \Seen; a failure is logged, not fatal (the mail itself is safe).
    async fn mark_seen(&self, uids: &[Uid]) {
        if uids.is_empty() {
            return;
        }
        if let Ok(store) = self.store()
            && let Err(e) = store
                .store(
                    INBOX,
                    uids,
                    StoreMode::Add,
                    Flags::from_flags(&[Flag::Seen]),
                    &[],
                    None,
                )
                .await
        {
            tracing::warn!(error = %e, "cannot mark retrieved messages \\Seen");
        }
    }

    async fn remove(&self, uids: &[Uid]) -> Result<(), BackendError> {
        if uids.is_empty() {
            return Ok(());
        }
        let store = self.store()?;
        let deleted = Flags::from_flags(&[Flag::Deleted]);
        let marked = store
            .store(INBOX, uids, StoreMode::Add, deleted, &[], None)
            .await
            .map_err(store_error)?;
        match store.expunge(INBOX, Some(uids)).await {
            Ok(gone) => {
                if gone.len() != uids.len() {
                    // The others were expunged meanwhile (by IMAP): gone all the same.
                    tracing::debug!(
                        asked = uids.len(),
                        expunged = gone.len(),
                        "some deleted messages were already gone"
                    );
                }
                Ok(())
            }
            Err(e) => {
                // Take back our \Deleted flags so the maildrop is as it was.
                if !marked.changed.is_empty()
                    && let Err(undo) = store
                        .store(
                            INBOX,
                            &marked.changed,
                            StoreMode::Remove,
                            deleted,
                            &[],
                            None,
                        )
                        .await
                {
                    tracing::error!(error = %undo, "cannot take back \\Deleted after a failed expunge");
                }
                Err(store_error(e))
            }
        }
    }
}

impl Backend for StoreBackend {
    async fn login(&mut self, login: &str, password: &str) -> Result<LoginOutcome, BackendError> {
        let user = match self.ctx.auth.verify(login, password, self.peer).await {
            Ok(Some(user)) => user,
            Ok(None) => return Ok(LoginOutcome::Rejected),
            Err(e) => {
                return Err(BackendError {
                    temporary: true,
                    message: format!("directory: {e}"),
                });
            }
        };
        self.open(user).await
    }

    async fn retrieve(&mut self, uid: Uid) -> Result<Option<Vec<u8>>, BackendError> {
        let open = self.open.as_mut().ok_or(BackendError {
            temporary: false,
            message: "no maildrop is open".into(),
        })?;
        let result = open.read(uid).await;
        open.read_ahead_after(uid);
        match result {
            Ok(m) => Ok(Some(m)),
            Err(StoreError::NoSuchMessage(_)) => Ok(None),
            Err(e) => Err(store_error(e)),
        }
    }

    async fn update(&mut self, retrieved: &[Uid], deleted: &[Uid]) -> Result<(), BackendError> {
        self.stop_reading_ahead();
        self.mark_seen(retrieved).await;
        let result = self.remove(deleted).await;
        self.open = None;
        result
    }

    async fn release(&mut self, retrieved: &[Uid]) {
        self.stop_reading_ahead();
        self.mark_seen(retrieved).await;
        self.open = None;
    }
}

/// The POP3 size of every message, from the cache or by reading the message. Messages
/// expunged while we read are left out of the listing.
async fn listed_sizes(
    store: &UserStore,
    uidvalidity: u32,
    messages: &[hermod_common::store::MessageMeta],
) -> Result<Vec<ListedMessage>, BackendError> {
    let dir = store.dir().to_path_buf();
    let mut cache = tokio::task::spawn_blocking(move || SizeCache::load(&dir, uidvalidity))
        .await
        .map_err(|e| BackendError {
            temporary: true,
            message: format!("size cache: {e}"),
        })?;
    let missing: Vec<Uid> = messages
        .iter()
        .map(|m| m.uid)
        .filter(|uid| cache.get(*uid).is_none())
        .collect();
    if !missing.is_empty() {
        tracing::debug!(messages = missing.len(), "computing POP3 sizes");
        for (uid, size) in compute_sizes(store, missing).await? {
            cache.insert(uid, size);
        }
    }
    let mut listed = Vec::with_capacity(messages.len());
    let mut present = HashSet::with_capacity(messages.len());
    for m in messages {
        if let Some(size) = cache.get(m.uid) {
            listed.push(ListedMessage { uid: m.uid, size });
            present.insert(m.uid);
        }
    }
    cache.retain(|uid| present.contains(&uid));
    let saved = tokio::task::spawn_blocking(move || cache.save()).await;
    if let Ok(Err(e)) = saved {
        tracing::warn!(error = %e, "cannot write the POP3 size cache");
    }
    Ok(listed)
}

/// Read the messages (a few at a time) and compute their POP3 sizes. Expunged ones are
/// left out.
async fn compute_sizes(store: &UserStore, uids: Vec<Uid>) -> Result<Vec<(Uid, u64)>, BackendError> {
    let chunk = uids.len().div_ceil(SIZE_READERS).max(1);
    let mut readers = tokio::task::JoinSet::new();
    for part in uids.chunks(chunk) {
        let store = store.clone();
        let part = part.to_vec();
        readers.spawn(async move {
            let mut sizes = Vec::with_capacity(part.len());
            for uid in part {
                match store.read(INBOX, uid).await {
                    Ok(m) => sizes.push((uid, transfer::wire_size(&m))),
                    Err(StoreError::NoSuchMessage(_)) => {}
                    Err(e) => return Err(store_error(e)),
                }
            }
            Ok(sizes)
        });
    }
    let mut all = Vec::with_capacity(uids.len());
    while let Some(done) = readers.join_next().await {
        let sizes = done.map_err(|e| BackendError {
            temporary: true,
            message: format!("size reader: {e}"),
        })??;
        all.extend(sizes);
    }
    Ok(all)
}

fn store_error(e: StoreError) -> BackendError {
    BackendError {
        temporary: e.is_temporary(),
        message: e.to_string(),
    }
}
