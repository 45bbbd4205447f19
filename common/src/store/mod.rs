//! The mail store: Maildir++ or mbox on disk, with a per-user SQLite index.
//!
//! One API for both formats. The MDA writes with [`UserStore::deliver`]; IMAP and POP3 read
//! and change mailboxes with the other [`UserStore`] methods. Mailbox names in the API are
//! UTF-8 with `/` as the hierarchy separator (`INBOX` is case-insensitive); on disk they are
//! modified UTF-7 with `.` as separator (`Work/2024` is `Maildir/.Work.2024`).
//!
//! The index (`<data_dir>/mail/<domain>/<localpart>/index.sqlite`) is the authority for
//! UIDVALIDITY, UIDs, keywords, MODSEQ and expunge history; messages added or removed on disk
//! behind the store's back are reconciled on the next `select`/`status`/`list`, keeping the
//! UIDs of messages that stayed. See `/work/notes/STORE_API.md` for the contract.

mod cache;
mod error;
mod index;
mod lock;
mod maildir;
mod mbox;
mod mbox_fingerprint;
mod mbox_stream;
mod messages;
mod migrate;
mod name;
mod objectid;
mod snapshot_cache;
mod sync;
mod text_index;
mod types;
mod user;
mod watch;

#[cfg(test)]
mod counter_tests;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

pub use error::{Result, StoreError};
pub use name::{decode_mutf7, encode_mutf7, validate_mailbox_name};
pub use objectid::MessageObject;
pub use text_index::TextField;
pub use types::{
    Appended, Change, Changes, CopyResult, Flag, Flags, MailboxFormat, MailboxInfo, MailboxStatus,
    MessageMeta, ModSeq, QuotaUsage, Snapshot, SpecialUse, StoreMode, StoreResult, Uid,
};
pub use watch::{ChangeReceiver, ChangeToken};

/// The store's own configuration (independent of hermod's config file).
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// hermod's data directory; mail lives under `<data_dir>/mail/<domain>/<localpart>/`.
    pub data_dir: PathBuf,
    /// Maildir++ (default) or mbox.
    pub format: MailboxFormat,
    /// mbox only: the INBOX path, with `{localpart}` and `{domain}` replaced, e.g.
    /// `/var/spool/mail/{localpart}`. Relative paths are taken from `data_dir`.
    pub mbox_inbox_template: String,
    /// mbox only: how long to wait for the dotlock/fcntl lock before a temporary error.
    pub lock_timeout: Duration,
}

impl StoreConfig {
    /// Maildir++ store under `data_dir`.
    pub fn maildir(data_dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            data_dir: data_dir.into(),
            format: MailboxFormat::Maildir,
            mbox_inbox_template: "mail/{domain}/{localpart}/mbox-inbox".into(),
            lock_timeout: Duration::from_secs(10),
        }
    }

    /// mbox store under `data_dir` with the INBOX at `inbox_template`.
    pub fn mbox(data_dir: impl Into<PathBuf>, inbox_template: impl Into<String>) -> Self {
        StoreConfig {
            format: MailboxFormat::Mbox,
            mbox_inbox_template: inbox_template.into(),
            ..StoreConfig::maildir(data_dir)
        }
    }
}

/// How many recently used users keep their index open in a [`Store`].
const USER_CACHE: usize = 64;

/// The store of one process: cheap to clone, holds the open per-user indexes.
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    cfg: StoreConfig,
    users: Mutex<UserCache>,
    /// Serialises opening a user's index, so two tasks never open it twice.
    opening: tokio::sync::Mutex<()>,
    hub: Arc<watch::WatchHub>,
}

#[derive(Default)]
struct UserCache {
    open: HashMap<(String, String), Weak<user::UserShared>>,
    recent: VecDeque<Arc<user::UserShared>>,
}

impl Store {
    /// A store over `cfg.data_dir`; nothing is touched until [`Store::user`].
    pub fn new(cfg: StoreConfig) -> Self {
        Store {
            inner: Arc::new(StoreInner {
                cfg,
                users: Mutex::new(UserCache::default()),
                opening: tokio::sync::Mutex::new(()),
                hub: watch::WatchHub::new(),
            }),
        }
    }

    /// The configuration this store was made with.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.cfg
    }

    /// Opens (creating on first use) the mail store of `localpart@domain`.
    ///
    /// The first open of a user creates INBOX plus Sent, Drafts, Trash, Junk and Archive
    /// (with their SPECIAL-USE attribute), all subscribed. The domain is lowercased; the
    /// local part is used as given (the directory canonicalises it). Names that could leave
    /// the data directory are refused with [`StoreError::InvalidName`].
    pub async fn user(&self, localpart: &str, domain: &str) -> Result<UserStore> {
        let key = user::user_key(localpart, domain)?;
        if let Some(shared) = self.cached(&key) {
            return Ok(UserStore { shared });
        }
        let _guard = self.inner.opening.lock().await;
        if let Some(shared) = self.cached(&key) {
            return Ok(UserStore { shared });
        }
        let shared = Arc::new(
            user::UserShared::open(&self.inner.cfg, &key.0, &key.1, self.inner.hub.clone()).await?,
        );
        let mut cache = self.inner.users.lock().unwrap_or_else(|e| e.into_inner());
        cache.open.retain(|_, w| w.strong_count() > 0);
        cache.open.insert(key, Arc::downgrade(&shared));
        cache.recent.push_back(shared.clone());
        if cache.recent.len() > USER_CACHE {
            cache.recent.pop_front();
        }
        Ok(UserStore { shared })
    }

    fn cached(&self, key: &(String, String)) -> Option<Arc<user::UserShared>> {
        let cache = self.inner.users.lock().unwrap_or_else(|e| e.into_inner());
        cache.open.get(key).and_then(Weak::upgrade)
    }
}

/// One user's mail: cheap to clone, safe to share between tasks.
#[derive(Clone)]
pub struct UserStore {
    shared: Arc<user::UserShared>,
}

impl UserStore {
    /// The user's directory (`<data_dir>/mail/<domain>/<localpart>`).
    pub fn dir(&self) -> &std::path::Path {
        self.shared.dir()
    }

    /// Every mailbox (INBOX first, then by name), including `\Noselect` parents implied by
    /// children. Reconciles with the disk (folders made or removed by other tools).
    /// IMAP applies LIST patterns on the result.
    pub async fn list(&self) -> Result<Vec<MailboxInfo>> {
        self.shared.core().list().await
    }

    /// CREATE. Parents need not exist (they show as `\Noselect` until created).
    /// Errors: `InvalidName`, `AlreadyExists`.
    pub async fn create(&self, name: &str, special_use: Option<SpecialUse>) -> Result<()> {
        self.shared.core().create(name, special_use).await
    }

    /// DELETE: removes the mailbox and its messages. Children are kept: a mailbox with
    /// children then shows as a `\Noselect` parent (RFC 3501). INBOX cannot be deleted
    /// (`Cannot`); a `\Noselect` parent gives `NoSuchMailbox`. Subscriptions are kept.
    pub async fn delete(&self, name: &str) -> Result<()> {
        self.shared.core().delete(name).await
    }

    /// RENAME, children included; UIDVALIDITY and UIDs are kept. Renaming INBOX moves all
    /// its messages into a new mailbox `to` and leaves INBOX empty (its children stay).
    /// Subscriptions follow the rename. Errors: `NoSuchMailbox`, `AlreadyExists`, `Cannot`
    /// (into its own child), `InvalidName`.
    pub async fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.shared.core().rename(from, to).await
    }

    /// SUBSCRIBE (the mailbox need not exist).
    pub async fn subscribe(&self, name: &str) -> Result<()> {
        self.shared.core().set_subscribed(name, true).await
    }

    /// UNSUBSCRIBE.
    pub async fn unsubscribe(&self, name: &str) -> Result<()> {
        self.shared.core().set_subscribed(name, false).await
    }

    /// LSUB / `LIST (SUBSCRIBED)`: subscribed names, existing or not, sorted.
    pub async fn subscriptions(&self) -> Result<Vec<String>> {
        self.shared.core().subscriptions().await
    }

    /// Sets or clears the SPECIAL-USE attribute of a mailbox (METADATA-less admin helper).
    pub async fn set_special_use(&self, name: &str, special_use: Option<SpecialUse>) -> Result<()> {
        self.shared.core().set_special_use(name, special_use).await
    }

    /// MDA delivery: no flags, into `new/` (Maildir) or appended (mbox); durable (file and
    /// directory fsynced) before it returns. Returns the new UID.
    pub async fn deliver(&self, mailbox: &str, message: &[u8]) -> Result<Uid> {
        let a = self
            .append(mailbox, message, Flags::EMPTY, &[], None)
            .await?;
        Ok(a.uid)
    }

    /// [`UserStore::deliver`] of `prefix` (the trace headers) followed by the content of the
    /// file `body` (a big queued message): into Maildir the file is copied, never held whole
    /// in memory.
    pub async fn deliver_file(
        &self,
        mailbox: &str,
        prefix: &[u8],
        body: &std::path::Path,
    ) -> Result<Uid> {
        let queue = &self.shared.appends;
        let source = messages::Source::File { prefix, body };
        let a = self
            .shared
            .core()
            .append(mailbox, source, Flags::EMPTY, &[], None, queue)
            .await?;
        Ok(a.uid)
    }

    /// [`UserStore::deliver_file`] with flags and keywords (a Sieve `:flags` delivery).
    pub async fn deliver_file_flagged(
        &self,
        mailbox: &str,
        prefix: &[u8],
        body: &std::path::Path,
        flags: Flags,
        keywords: &[String],
    ) -> Result<Uid> {
        let queue = &self.shared.appends;
        let source = messages::Source::File { prefix, body };
        let a = self
            .shared
            .core()
            .append(mailbox, source, flags, keywords, None, queue)
            .await?;
        Ok(a.uid)
    }

    /// APPEND with flags, keywords and INTERNALDATE (Unix seconds; `None` = now). Durable
    /// before it returns.
    pub async fn append(
        &self,
        mailbox: &str,
        message: &[u8],
        flags: Flags,
        keywords: &[String],
        internal_date: Option<i64>,
    ) -> Result<Appended> {
        let queue = &self.shared.appends;
        self.shared
            .core()
            .append(
                mailbox,
                messages::Source::Bytes(message),
                flags,
                keywords,
                internal_date,
                queue,
            )
            .await
    }

    /// SELECT (`read_only = false`: this session claims `\Recent` for new messages) or
    /// EXAMINE (`read_only = true`). Reconciles with the disk first; one indexed query.
    pub async fn select(&self, mailbox: &str, read_only: bool) -> Result<Snapshot> {
        self.shared.core().select(mailbox, read_only).await
    }

    /// STATUS counts (reconciles with the disk first).
    pub async fn status(&self, mailbox: &str) -> Result<MailboxStatus> {
        self.shared.core().status(mailbox).await
    }

    /// The message exactly as delivered. `NoSuchMessage` if it was expunged.
    pub async fn read(&self, mailbox: &str, uid: Uid) -> Result<Vec<u8>> {
        self.shared.core().read(mailbox, uid).await
    }

    /// Bytes `range` of a message as delivered (fewer, or none, past its end): IMAP partial
    /// fetches of a large message read only the part they send, from Maildir.
    pub async fn read_range(
        &self,
        mailbox: &str,
        uid: Uid,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<u8>> {
        self.shared.core().read_range(mailbox, uid, range).await
    }

    /// Several messages exactly as delivered, in the order of `uids`; `None` for a UID that
    /// is not there (expunged). One index query and one trip to the blocking pool for all of
    /// them (an mbox is read under one shared lock), so a reader going through many messages
    /// (POP3 downloads, size computations) pays those once per batch instead of per message.
    /// Every message is held in memory at once: callers bound the batch by size.
    pub async fn read_many(&self, mailbox: &str, uids: &[Uid]) -> Result<Vec<Option<Vec<u8>>>> {
        self.shared.core().read_many(mailbox, uids).await
    }

    /// Values cached for messages of `mailbox` by [`UserStore::set_cached`] (IMAP keeps its
    /// parsed ENVELOPE/BODYSTRUCTURE there). Messages without one, or whose size changed
    /// since, are absent from the map.
    pub async fn cached(&self, mailbox: &str, uids: &[Uid]) -> Result<HashMap<Uid, Vec<u8>>> {
        self.shared.core().cached(mailbox, uids).await
    }

    /// Caches an opaque value per message (replacing an older one); expunged messages are
    /// skipped. The value goes when the message does.
    pub async fn set_cached(&self, mailbox: &str, values: &[(Uid, Vec<u8>)]) -> Result<()> {
        self.shared.core().set_cached(mailbox, values).await
    }

    /// STORE flags and keywords on `uids` (missing UIDs are skipped). With
    /// `unchanged_since`, messages whose modseq is higher are left alone and reported in
    /// `failed`. Changed messages get a new modseq; Maildir file names follow the flags.
    pub async fn store(
        &self,
        mailbox: &str,
        uids: &[Uid],
        mode: StoreMode,
        flags: Flags,
        keywords: &[String],
        unchanged_since: Option<ModSeq>,
    ) -> Result<StoreResult> {
        self.shared
            .core()
            .store(mailbox, uids, mode, flags, keywords, unchanged_since)
            .await
    }

    /// COPY `uids` (missing ones skipped) with flags, keywords and internal date.
    pub async fn copy(&self, from: &str, uids: &[Uid], to: &str) -> Result<CopyResult> {
        self.shared.core().copy_or_move(from, uids, to, false).await
    }

    /// MOVE: like copy, then the source messages are expunged (their UIDs vanish).
    pub async fn move_messages(&self, from: &str, uids: &[Uid], to: &str) -> Result<CopyResult> {
        self.shared.core().copy_or_move(from, uids, to, true).await
    }

    /// EXPUNGE every `\Deleted` message, or (UID EXPUNGE) only the `\Deleted` ones among
    /// `uids`. Returns the expunged UIDs, ascending.
    pub async fn expunge(&self, mailbox: &str, uids: Option<&[Uid]>) -> Result<Vec<Uid>> {
        self.shared.core().expunge(mailbox, uids).await
    }

    /// Claims \Recent for messages that arrived in a selected mailbox: returns the UIDs
    /// below `upto` that no other session has seen as recent (each message is recent in
    /// one session only), and marks them seen.
    pub async fn claim_recent(&self, mailbox: &str, upto: Uid) -> Result<std::ops::Range<Uid>> {
        self.shared.core().claim_recent(mailbox, upto).await
    }

    /// Changes the index as of now: if a later `change_token()` is [`ChangeToken::same_as`]
    /// this one, no hermod process committed a change to messages of this user in between
    /// (every such commit writes a new token after it), so a `changes_since` would find
    /// nothing new in the index. Other tools' changes on disk are not counted: look with
    /// `changes_since` anyway every second or so (they then show within about two seconds,
    /// as `changes_since` trusts a look at the disk for a second).
    pub fn change_token(&self) -> ChangeToken {
        self.shared.core().notifier.token()
    }

    /// Messages changed (or added) and UIDs expunged after `modseq`. Reconciles with the
    /// disk first, unless this mailbox's disk was looked at less than a second ago.
    /// `changes_since(m, 0)` lists every message.
    pub async fn changes_since(&self, mailbox: &str, modseq: ModSeq) -> Result<Changes> {
        self.shared
            .core()
            .changes_since(mailbox, modseq, false)
            .await
    }

    /// [`UserStore::changes_since`], always comparing the disk with the index first (for
    /// a look that must see other tools' latest changes: IMAP IDLE's).
    pub async fn changes_since_on_disk(&self, mailbox: &str, modseq: ModSeq) -> Result<Changes> {
        self.shared
            .core()
            .changes_since(mailbox, modseq, true)
            .await
    }

    /// UIDs (ascending) of the messages of `mailbox` that the full-text index does not
    /// cover yet (messages filed before it existed, or by other tools); usually none, and
    /// then found without looking at messages.
    pub async fn text_unindexed(&self, mailbox: &str) -> Result<Vec<Uid>> {
        self.shared.core().text_unindexed(mailbox).await
    }

    /// UIDs (ascending) of the indexed messages of `mailbox` whose `field` contains `needle`
    /// (lower case; only for needles where [`crate::search_text::usable_needle`] holds):
    /// exactly those for which IMAP SEARCH's substring match on
    /// [`crate::search_text::IndexedText`] holds.
    pub async fn text_search(
        &self,
        mailbox: &str,
        field: TextField,
        needle: &str,
    ) -> Result<Vec<Uid>> {
        self.shared.core().text_search(mailbox, field, needle).await
    }

    /// Adds messages to the full-text index (a reader that had them at hand); messages
    /// already indexed or expunged are skipped.
    pub async fn add_text(
        &self,
        mailbox: &str,
        texts: &[(Uid, crate::search_text::IndexedText)],
    ) -> Result<()> {
        self.shared.core().add_text(mailbox, texts).await
    }

    /// Bytes and messages of the user over all mailboxes (from the index).
    pub async fn quota_usage(&self) -> Result<QuotaUsage> {
        self.shared.core().quota_usage().await
    }

    /// `OverQuota` if adding `incoming_bytes` (one message) would pass a limit (`None` = no
    /// limit). For the MDA before delivering.
    pub async fn check_quota(
        &self,
        max_bytes: Option<u64>,
        max_messages: Option<u64>,
        incoming_bytes: u64,
    ) -> Result<()> {
        let u = self.quota_usage().await?;
        if let Some(max) = max_bytes
            && u.bytes.saturating_add(incoming_bytes) > max
        {
            return Err(StoreError::OverQuota(format!(
                "{} + {} bytes > {} bytes",
                u.bytes, incoming_bytes, max
            )));
        }
        if let Some(max) = max_messages
            && u.messages.saturating_add(1) > max
        {
            return Err(StoreError::OverQuota(format!(
                "{} messages, limit {}",
                u.messages, max
            )));
        }
        Ok(())
    }

    /// Subscribes to change notifications for all the user's mailboxes: new, flag-changed
    /// and expunged messages, from this process or another one on the same data dir,
    /// within a second.
    pub fn watch(&self) -> ChangeReceiver {
        self.shared.watch()
    }
}
