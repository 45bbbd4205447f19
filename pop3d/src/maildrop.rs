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
use crate::read_ahead::ReadAhead;
use crate::session::{Backend, BackendError, ListedMessage, Listing, LoginOutcome};
use crate::sizes::SizeCache;
use crate::transfer;

/// The mailbox POP3 serves.
pub const INBOX: &str = "INBOX";

/// How many tasks read messages at once to learn their sizes on a first login.
const SIZE_READERS: usize = 4;

/// Most messages, and most bytes (stored size), read at once to learn sizes.
const SIZE_BATCH_MESSAGES: usize = 64;
const SIZE_BATCH_BYTES: u64 = 1024 * 1024;

/// A [`Backend`] on the real store, one per connection.
pub struct StoreBackend {
    ctx: Arc<Context>,
    peer: IpAddr,
    open: Option<OpenMaildrop>,
}

/// A locked maildrop; dropping it releases the lock.
struct OpenMaildrop {
    store: UserStore,
    ahead: ReadAhead,
    _lock: MaildropLock,
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
            ahead: ReadAhead::new(store.clone(), INBOX, messages.clone()),
            store,
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
        open.ahead.read(uid).await.map_err(store_error)
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
    let missing: Vec<(Uid, u64)> = messages
        .iter()
        .filter(|m| cache.get(m.uid).is_none())
        .map(|m| (m.uid, m.size))
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

/// Read the messages (in batches, a few batches at a time) and compute their POP3 sizes.
/// Expunged ones are left out.
async fn compute_sizes(
    store: &UserStore,
    missing: Vec<(Uid, u64)>,
) -> Result<Vec<(Uid, u64)>, BackendError> {
    let mut batches: Vec<Vec<Uid>> = Vec::new();
    let mut bytes = 0;
    for (uid, stored_size) in missing {
        match batches.last_mut() {
            Some(b) if b.len() < SIZE_BATCH_MESSAGES && bytes + stored_size <= SIZE_BATCH_BYTES => {
                b.push(uid);
                bytes += stored_size;
            }
            _ => {
                batches.push(vec![uid]);
                bytes = stored_size;
            }
        }
    }
    let per_reader = batches.len().div_ceil(SIZE_READERS).max(1);
    let mut readers = tokio::task::JoinSet::new();
    let mut batches = batches.into_iter().peekable();
    while batches.peek().is_some() {
        let part: Vec<Vec<Uid>> = batches.by_ref().take(per_reader).collect();
        let store = store.clone();
        readers.spawn(async move {
            let mut sizes = Vec::new();
            for uids in part {
                let messages = store.read_many(INBOX, &uids).await.map_err(store_error)?;
                for (uid, m) in uids.into_iter().zip(messages) {
                    if let Some(m) = m {
                        sizes.push((uid, transfer::wire_size(&m)));
                    }
                }
            }
            Ok(sizes)
        });
    }
    let mut all = Vec::new();
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
