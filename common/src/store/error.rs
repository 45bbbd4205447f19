//! The store's error type: callers map each kind to a protocol answer.

use super::Uid;

/// What went wrong in a store operation.
///
/// IMAP maps these to `NO [NONEXISTENT]`, `NO [ALREADYEXISTS]`, `NO [CANNOT]`,
/// `NO [OVERQUOTA]`, `NO [UNAVAILABLE]` (temporary) and `NO [SERVERBUG]` (I/O, index);
/// the MDA maps `Temporary`/`Io`/`Index` to a 4xx and `OverQuota`/`InvalidName` to a 5xx.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named mailbox does not exist (or is a `\Noselect` parent).
    #[error("mailbox does not exist: {0}")]
    NoSuchMailbox(String),
    /// CREATE/RENAME target already exists.
    #[error("mailbox already exists: {0}")]
    AlreadyExists(String),
    /// The mailbox name (or user name) is refused; the text says why.
    #[error("invalid mailbox name: {0}")]
    InvalidName(String),
    /// The message with this UID is gone (expunged, maybe by another session).
    #[error("no such message: uid {0}")]
    NoSuchMessage(Uid),
    /// The operation is not allowed (delete INBOX, rename into itself, ...).
    #[error("cannot: {0}")]
    Cannot(String),
    /// The user is over quota (returned by `UserStore::check_quota`).
    #[error("over quota: {0}")]
    OverQuota(String),
    /// A lock could not be had in time (mbox dotlock/fcntl, busy index): retry later.
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// A file system error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// An index (SQLite) error.
    #[error("index error: {0}")]
    Index(String),
}

impl StoreError {
    /// True when retrying later may succeed (MDA: 4xx, not 5xx).
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            StoreError::Temporary(_) | StoreError::Io(_) | StoreError::Index(_)
        )
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            // SQLITE_BUSY (5) / SQLITE_LOCKED (6): another writer held the index too long.
            if matches!(db.code().as_deref(), Some("5") | Some("6") | Some("517")) {
                return StoreError::Temporary(format!("index busy: {db}"));
            }
        }
        if let sqlx::Error::PoolTimedOut = e {
            return StoreError::Temporary("index pool timed out".into());
        }
        StoreError::Index(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Index(e.to_string())
    }
}

/// Shorthand for store results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
