//! The session backend on hermod's store: login through the shared authenticator (which
//! throttles failures), the exclusive maildrop lock, INBOX listed with POP3 sizes, messages
//! read exactly as stored, and the UPDATE state applied at QUIT.
//!
//! POP3 works on INBOX only, in Maildir or mbox alike (the store hides the format). The
//! messages marked with DELE get `\Deleted` and are expunged by UID in one step at QUIT; if
//! the expunge fails, the `\Deleted` flags this session added are taken back, so the maildrop
//! is as before and the client is told `-ERR`.

use std::collections::HashSet;
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

/// Messages up to this size are read ahead (see [`Prefetch`]).
const PREFETCH_MAX_SIZE: u64 = 1024 * 1024;

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
    prefetch: Option<Prefetch>,
    _lock: MaildropLock,
}

/// The message after the one just sent, read while the client is still receiving: clients
/// download in order (RETR 1, RETR 2, ...; fetchmail's `TOP n 99999999` too), so the store's
/// lookup and file read overlap with the network round trip instead of adding to it.
struct Prefetch {
    uid: Uid,
    task: tokio::task::JoinHandle<Result<Vec<u8>, StoreError>>,
}

impl OpenMaildrop {
    /// Start reading the message after `uid` in the listing, if it is small enough.
    fn prefetch_after(&mut self, uid: Uid) {
        let next = match self.listed.binary_search_by_key(&uid, |m| m.uid) {
            Ok(i) => self.listed.get(i + 1),
            Err(_) => None,
        };
        if let Some(next) = next.filter(|m| m.size <= PREFETCH_MAX_SIZE) {
            let store = self.store.clone();
            let next_uid = next.uid;
            self.prefetch = Some(Prefetch {
                uid: next_uid,
                task: tokio::spawn(async move { store.read(INBOX, next_uid).await }),
            });
        }
    }

    /// The message, from the read-ahead if it is the one, else read now.
    async fn read(&mut self, uid: Uid) -> Result<Vec<u8>, StoreError> {
        if let Some(p) = self.prefetch.take() {
            if p.uid == uid {
                if let Ok(result) = p.task.await {
                    return result;
                }
            } else {
                p.task.abort();
            }
        }
        self.store.read(INBOX, uid).await
    }
}

impl Drop for OpenMaildrop {
    fn drop(&mut self) {
        if let Some(p) = self.prefetch.take() {
            p.task.abort();
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
            prefetch: None,
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
        open.prefetch_after(uid);
        match result {
            Ok(m) => Ok(Some(m)),
            Err(StoreError::NoSuchMessage(_)) => Ok(None),
            Err(e) => Err(store_error(e)),
        }
    }

    async fn update(&mut self, retrieved: &[Uid], deleted: &[Uid]) -> Result<(), BackendError> {
        self.mark_seen(retrieved).await;
        let result = self.remove(deleted).await;
        self.open = None;
        result
    }

    async fn release(&mut self, retrieved: &[Uid]) {
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
