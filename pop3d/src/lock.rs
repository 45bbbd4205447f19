//! The exclusive maildrop lock of a POP3 session (RFC 1939 section 4: "the POP3 server then
//! acquires an exclusive-access lock on the maildrop").
//!
//! Two layers: a table of the maildrops locked in this process, and an `flock` on
//! `pop3.lock` in the user's directory, so a session in another hermod process (`hermod
//! pop3d` run twice on one data dir) is refused too. Only POP3 takes this lock: IMAP and
//! deliveries never see it. The lock file is left in place; removing it would race with a
//! session that just opened it.

use std::collections::HashSet;
use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The lock file's name in the user's directory.
pub const LOCK_FILE: &str = "pop3.lock";

/// Maildrops (user directories) locked by sessions of this process.
fn held() -> &'static Mutex<HashSet<PathBuf>> {
    static HELD: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    HELD.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Why a maildrop could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another POP3 session (in this process or another) holds it.
    #[error("maildrop in use")]
    InUse,
    #[error("cannot lock {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// An exclusive lock on one user's maildrop, released on drop.
#[derive(Debug)]
pub struct MaildropLock {
    dir: PathBuf,
    file: File,
}

impl MaildropLock {
    /// Lock the maildrop whose user directory is `user_dir`, without waiting.
    pub fn acquire(user_dir: &Path) -> Result<MaildropLock, LockError> {
        let dir = user_dir.to_path_buf();
        if !held()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dir.clone())
        {
            return Err(LockError::InUse);
        }
        let forget = |dir: &Path| {
            held().lock().unwrap_or_else(|p| p.into_inner()).remove(dir);
        };
        let path = dir.join(LOCK_FILE);
        let file = match OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(source) => {
                forget(&dir);
                return Err(LockError::Io { path, source });
            }
        };
        match file.try_lock() {
            Ok(()) => Ok(MaildropLock { dir, file }),
            Err(TryLockError::WouldBlock) => {
                forget(&dir);
                Err(LockError::InUse)
            }
            Err(TryLockError::Error(source)) => {
                forget(&dir);
                Err(LockError::Io { path, source })
            }
        }
    }
}

impl Drop for MaildropLock {
    fn drop(&mut self) {
        // Unlock the file before leaving the table, so the next session of this process
        // never finds the table free but the file still locked.
        let _ = self.file.unlock();
        held()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let first = MaildropLock::acquire(tmp.path()).unwrap();
        assert!(matches!(
            MaildropLock::acquire(tmp.path()),
            Err(LockError::InUse)
        ));
        drop(first);
        let again = MaildropLock::acquire(tmp.path()).expect("free after drop");
        assert!(tmp.path().join(LOCK_FILE).exists());
        drop(again);
    }

    #[test]
    fn a_lock_held_elsewhere_is_seen() {
        // Another process's flock looks like this: the file locked through another
        // open file description, with the table of this process empty.
        let tmp = tempfile::tempdir().unwrap();
        let other = File::create(tmp.path().join(LOCK_FILE)).unwrap();
        other.lock().unwrap();
        assert!(matches!(
            MaildropLock::acquire(tmp.path()),
            Err(LockError::InUse)
        ));
        other.unlock().unwrap();
        assert!(MaildropLock::acquire(tmp.path()).is_ok());
    }

    #[test]
    fn different_users_do_not_block_each_other() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let _la = MaildropLock::acquire(a.path()).unwrap();
        let _lb = MaildropLock::acquire(b.path()).unwrap();
    }

    #[test]
    fn missing_directory_is_an_io_error() {
        let tmp = tempfile::tempdir().unwrap();
        let gone = tmp.path().join("nope");
        assert!(matches!(
            MaildropLock::acquire(&gone),
            Err(LockError::Io { .. })
        ));
        // The failed attempt left nothing behind in the table.
        std::fs::create_dir(&gone).unwrap();
        assert!(MaildropLock::acquire(&gone).is_ok());
    }
}
