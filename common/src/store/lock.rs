//! mbox locking as mutt, procmail and Postfix do it: a dotlock (`file.lock`, O_EXCL) plus
//! an fcntl lock. We use open-file-description (OFD) fcntl locks: they conflict with the
//! classic POSIX locks of other programs, but are not dropped when another fd of the same
//! file is closed elsewhere in this process.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::{Result, StoreError};

/// A dotlock older than this is stale (its holder died): liblockfile's rule.
const DOTLOCK_STALE: Duration = Duration::from_secs(300);

/// An mbox file held locked; unlocked on drop.
pub(super) struct MboxLock {
    file: File,
    path: PathBuf,
    dotlock: Option<PathBuf>,
    /// The file that replaced `file` at `path` (EXPUNGE writes a new file and renames it
    /// over the old one), held locked until this lock is dropped.
    successor: std::sync::Mutex<Option<File>>,
}

/// Whether `file` is still the file at `path`: an EXPUNGE elsewhere may have renamed a new
/// file over it while we waited for its lock.
fn is_current(file: &File, path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let open = file.metadata()?;
    match fs::metadata(path) {
        Ok(now) => Ok(open.dev() == now.dev() && open.ino() == now.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Opens `path` and takes an fcntl lock of `kind`, again and again while the locked file is
/// no longer the one at `path`.
fn open_locked(path: &Path, kind: libc::c_int, write: bool, deadline: Instant) -> Result<File> {
    loop {
        let file = OpenOptions::new().read(true).write(write).open(path)?;
        wait_for_ofd_lock(&file, kind, path, deadline)?;
        if is_current(&file, path)? {
            return Ok(file);
        }
        if Instant::now() >= deadline {
            return Err(StoreError::Temporary(format!(
                "mailbox keeps being replaced: {}",
                path.display()
            )));
        }
    }
}

/// Takes an exclusive fcntl lock on a file nobody else knows yet (a replacement being
/// written), so that it is locked the moment it appears at the mailbox's path.
pub(super) fn lock_new_file(file: &File) -> io::Result<()> {
    if ofd_lock(file, libc::F_WRLCK)? {
        Ok(())
    } else {
        Err(io::Error::other("a new file is locked by someone else"))
    }
}

fn pause(attempt: u32) {
    // Short, jittered waits: lock holders are usually done within milliseconds.
    let base = 5u64 << attempt.min(4);
    let jitter: u64 = rand::random::<u64>() % base.max(1);
    std::thread::sleep(Duration::from_millis(base + jitter));
}

fn ofd_lock(file: &File, kind: libc::c_int) -> io::Result<bool> {
    // SAFETY: flock is plain data; zeroed is a valid value (l_pid must be 0 for OFD locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: valid fd and a valid flock pointer.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

fn our_host() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf valid for its length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A dotlock is stale if it is old, or if we wrote it on this host for a dead process.
fn dotlock_is_stale(path: &Path) -> bool {
    let Ok(meta) = fs::metadata(path) else {
        return false;
    };
    let old = meta
        .modified()
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age > DOTLOCK_STALE);
    if old {
        return true;
    }
    let Ok(text) = fs::read_to_string(path) else {
        return false;
    };
    let mut parts = text.split_whitespace();
    let (Some(pid), Some(host)) = (parts.next(), parts.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<libc::pid_t>() else {
        return false;
    };
    if host != our_host() || pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

fn dotlock_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".lock");
    PathBuf::from(s)
}

/// Takes the dotlock; `None` if the directory does not let us (e.g. a root-owned spool
/// directory): the fcntl lock still protects us then. The lock is a hard link to a file
/// already holding our pid, so a lock never exists without its owner written in it.
fn take_dotlock(path: &Path, deadline: Instant) -> Result<Option<PathBuf>> {
    let lock = dotlock_path(path);
    let mut tmp = lock.clone().into_os_string();
    tmp.push(format!(
        ".{}.{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let tmp = PathBuf::from(tmp);
    let made = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .and_then(|mut f| writeln!(f, "{} {}", std::process::id(), our_host()));
    match made {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS)
            ) =>
        {
            tracing::debug!(lock = %lock.display(), "no dotlock permission; fcntl lock only");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    }
    let _cleanup = DotlockGuard(Some(tmp.clone()));
    let mut attempt = 0;
    loop {
        match fs::hard_link(&tmp, &lock) {
            Ok(()) => return Ok(Some(lock)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if dotlock_is_stale(&lock) {
                    tracing::warn!(lock = %lock.display(), "removing stale dotlock");
                    let _ = fs::remove_file(&lock);
                    continue;
                }
            }
            Err(e) => return Err(e.into()),
        }
        if Instant::now() >= deadline {
            return Err(StoreError::Temporary(format!(
                "mailbox is locked: {}",
                lock.display()
            )));
        }
        pause(attempt);
        attempt += 1;
    }
}

/// Take an fcntl lock of `kind` on `file`, retrying with backoff until `deadline`.
fn wait_for_ofd_lock(file: &File, kind: libc::c_int, path: &Path, deadline: Instant) -> Result<()> {
    let mut attempt = 0;
    while !ofd_lock(file, kind)? {
        if Instant::now() >= deadline {
            return Err(StoreError::Temporary(format!(
                "mailbox is locked (fcntl): {}",
                path.display()
            )));
        }
        pause(attempt);
        attempt += 1;
    }
    Ok(())
}

impl MboxLock {
    /// Dotlock + exclusive fcntl lock on the existing file `path`, waiting at most `timeout`,
    /// then `Temporary`. Blocking.
    pub(super) fn exclusive(path: &Path, timeout: Duration) -> Result<MboxLock> {
        let deadline = Instant::now() + timeout;
        let dotlock = take_dotlock(path, deadline)?;
        let guard = DotlockGuard(dotlock);
        let file = open_locked(path, libc::F_WRLCK, true, deadline)?;
        Ok(MboxLock {
            file,
            path: path.to_path_buf(),
            dotlock: guard.take(),
            successor: std::sync::Mutex::new(None),
        })
    }

    /// A shared fcntl lock for reading (no dotlock: readers do not take one). Blocking.
    pub(super) fn shared(path: &Path, timeout: Duration) -> Result<MboxLock> {
        let deadline = Instant::now() + timeout;
        let file = open_locked(path, libc::F_RDLCK, false, deadline)?;
        Ok(MboxLock {
            file,
            path: path.to_path_buf(),
            dotlock: None,
            successor: std::sync::Mutex::new(None),
        })
    }

    pub(super) fn file(&self) -> &File {
        &self.file
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// `file` (locked with [`lock_new_file`]) now stands at the path: keep it locked until
    /// this lock is dropped, so nobody sees it before the index agrees with it.
    pub(super) fn adopt(&self, file: File) {
        *self.successor.lock().unwrap_or_else(|p| p.into_inner()) = Some(file);
    }
}

impl Drop for MboxLock {
    fn drop(&mut self) {
        // Closing the successor releases its OFD lock.
        drop(self.successor.lock().map(|mut s| s.take()));
        let _ = ofd_lock(&self.file, libc::F_UNLCK);
        if let Some(p) = self.dotlock.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Removes a dotlock if acquisition fails after it was taken.
struct DotlockGuard(Option<PathBuf>);

impl DotlockGuard {
    fn take(mut self) -> Option<PathBuf> {
        self.0.take()
    }
}

impl Drop for DotlockGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_on_a_replaced_file_locks_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("box");
        fs::write(&mbox, b"old").unwrap();
        let held = MboxLock::exclusive(&mbox, Duration::from_secs(1)).unwrap();
        let path = mbox.clone();
        let waiter = std::thread::spawn(move || {
            let lock = MboxLock::shared(&path, Duration::from_secs(10)).unwrap();
            let mut text = String::new();
            io::Read::read_to_string(&mut lock.file(), &mut text).unwrap();
            text
        });
        // Let the waiter open the old file and start waiting on its lock.
        std::thread::sleep(Duration::from_millis(100));
        let tmp = dir.path().join(".box.new");
        fs::write(&tmp, b"new").unwrap();
        let new = File::options().read(true).write(true).open(&tmp).unwrap();
        lock_new_file(&new).unwrap();
        fs::rename(&tmp, &mbox).unwrap();
        held.adopt(new);
        drop(held);
        assert_eq!(waiter.join().unwrap(), "new");
    }

    #[test]
    fn second_lock_waits_then_fails_temporarily_and_stale_locks_are_broken() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("box");
        fs::write(&mbox, b"").unwrap();
        let held = MboxLock::exclusive(&mbox, Duration::from_secs(1)).unwrap();
        assert!(dir.path().join("box.lock").exists());
        let t = Instant::now();
        let err = MboxLock::exclusive(&mbox, Duration::from_millis(200))
            .err()
            .unwrap();
        assert!(err.is_temporary());
        assert!(t.elapsed() >= Duration::from_millis(200));
        drop(held);
        assert!(!dir.path().join("box.lock").exists());

        // A dotlock left by a dead process of this host is stale.
        fs::write(
            dir.path().join("box.lock"),
            format!("{} {}\n", i32::MAX - 7, our_host()),
        )
        .unwrap();
        let t = Instant::now();
        let again = MboxLock::exclusive(&mbox, Duration::from_secs(2)).unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "waited on a stale lock"
        );
        // The dead process's lock was replaced by ours, and ours goes with the lock.
        let owner = fs::read_to_string(dir.path().join("box.lock")).unwrap();
        assert_eq!(owner, format!("{} {}\n", std::process::id(), our_host()));
        drop(again);
        assert!(!dir.path().join("box.lock").exists());

        // A live process's dotlock is respected (ours, from another "client").
        fs::write(
            dir.path().join("box.lock"),
            format!("{} {}\n", std::process::id(), our_host()),
        )
        .unwrap();
        let err = MboxLock::exclusive(&mbox, Duration::from_millis(100))
            .err()
            .unwrap();
        assert!(err.is_temporary());
        fs::remove_file(dir.path().join("box.lock")).unwrap();

        // Readers share: two shared locks at once, and a writer waits for both to go.
        let r1 = MboxLock::shared(&mbox, Duration::from_millis(200)).unwrap();
        let r2 = MboxLock::shared(&mbox, Duration::from_millis(200)).unwrap();
        let err = MboxLock::exclusive(&mbox, Duration::from_millis(100))
            .err()
            .unwrap();
        assert!(err.is_temporary());
        drop(r1);
        assert!(MboxLock::exclusive(&mbox, Duration::from_millis(100)).is_err());
        drop(r2);
        let writer = MboxLock::exclusive(&mbox, Duration::from_millis(200)).unwrap();
        // ... and a reader waits for the writer.
        assert!(MboxLock::shared(&mbox, Duration::from_millis(100)).is_err());
        drop(writer);

        // fcntl alone (no dotlock) also excludes: an OFD lock from another open file.
        let f = File::options().read(true).write(true).open(&mbox).unwrap();
        assert!(ofd_lock(&f, libc::F_WRLCK).unwrap());
        let err = MboxLock::exclusive(&mbox, Duration::from_millis(100))
            .err()
            .unwrap();
        assert!(err.is_temporary());
        assert!(
            !dir.path().join("box.lock").exists(),
            "dotlock released on failure"
        );
    }
}
