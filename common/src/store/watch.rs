//! Change notifications. Every writer touches the user's `changes` file after a commit;
//! one inotify watcher per process (the `notify` crate) sees those touches, whichever
//! process made them, plus changes other tools make to the INBOX. A per-user task then
//! compares each mailbox's (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ) with what it saw last and
//! broadcasts the names that moved.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use sqlx::Row;
use tokio::sync::{Notify, broadcast};

use super::name::INBOX;
use super::user::Core;
use super::{Change, MailboxFormat, Result};

/// How often a watching task re-checks even without an event (missed events, other
/// tools' changes in folders other than INBOX are then found by its INBOX check only).
const POLL: Duration = Duration::from_secs(10);
/// Events closer than this are handled together.
const DEBOUNCE: Duration = Duration::from_millis(5);

type Targets = Arc<Mutex<HashMap<PathBuf, Weak<UserNotifier>>>>;

/// The process's one file watcher, shared by all users of a [`super::Store`].
pub(crate) struct WatchHub {
    targets: Targets,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
}

impl WatchHub {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(WatchHub {
            targets: Arc::new(Mutex::new(HashMap::new())),
            watcher: Mutex::new(None),
        })
    }

    fn watch(&self, paths: &[PathBuf], n: &Arc<UserNotifier>) {
        let mut guard = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let targets = self.targets.clone();
            let w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let Ok(ev) = res else { return };
                if matches!(ev.kind, EventKind::Access(_)) {
                    return;
                }
                let t = targets.lock().unwrap_or_else(|e| e.into_inner());
                for p in &ev.paths {
                    let hit = t
                        .get(p)
                        .or_else(|| p.parent().and_then(|d| t.get(d)))
                        .and_then(Weak::upgrade);
                    if let Some(n) = hit {
                        n.kick.notify_one();
                    }
                }
            });
            match w {
                Ok(w) => *guard = Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "no file watcher: notifications only by polling");
                    return;
                }
            }
        }
        {
            let mut t = self.targets.lock().unwrap_or_else(|e| e.into_inner());
            for p in paths {
                t.insert(p.clone(), Arc::downgrade(n));
            }
        }
        // Not holding `targets`: the watcher's thread takes it in the callback while
        // `watch` waits for that thread.
        if let Some(w) = guard.as_mut() {
            for p in paths {
                if let Err(e) = w.watch(p, RecursiveMode::NonRecursive) {
                    tracing::warn!(path = %p.display(), error = %e, "cannot watch");
                }
            }
        }
    }

    /// Stops watching `paths` for `n` (not for a newer notifier of the same user).
    fn unwatch(&self, paths: &[PathBuf], n: &Arc<UserNotifier>) {
        let mut guard = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        let mine = Arc::downgrade(n);
        let mut removed = Vec::new();
        {
            let mut t = self.targets.lock().unwrap_or_else(|e| e.into_inner());
            for p in paths {
                if t.get(p).is_some_and(|w| w.ptr_eq(&mine)) {
                    t.remove(p);
                    removed.push(p);
                }
            }
        }
        if let Some(w) = guard.as_mut() {
            for p in removed {
                let _ = w.unwatch(p);
            }
        }
    }
}

/// One user's notification state.
pub(super) struct UserNotifier {
    hub: Arc<WatchHub>,
    changes: File,
    paths: Vec<PathBuf>,
    tx: broadcast::Sender<Change>,
    kick: Notify,
    running: Mutex<bool>,
}

impl UserNotifier {
    pub(super) fn new(
        hub: Arc<WatchHub>,
        dir: &Path,
        format: MailboxFormat,
        root: &Path,
        inbox: &Path,
    ) -> Result<Arc<Self>> {
        let changes_path = dir.join("changes");
        let changes = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&changes_path)?;
        let mut paths = vec![changes_path];
        match format {
            MailboxFormat::Maildir => {
                paths.push(root.join("new"));
                paths.push(root.join("cur"));
            }
            MailboxFormat::Mbox => paths.push(inbox.to_path_buf()),
        }
        let (tx, _) = broadcast::channel(1024);
        Ok(Arc::new(UserNotifier {
            hub,
            changes,
            paths,
            tx,
            kick: Notify::new(),
            running: Mutex::new(false),
        }))
    }

    /// Tells every watcher (this process and others) that something changed, and gives
    /// the changes file a token no writer wrote before (see [`UserNotifier::token`]).
    pub(super) fn touch(&self) {
        if let Err(e) = self.changes.write_at(&next_token().to_le_bytes(), 0) {
            tracing::warn!(error = %e, "cannot touch the changes file");
        }
        self.kick.notify_one();
    }

    /// The token of the last commit of any hermod process to this user's index: equal
    /// tokens read before and after a look at the index mean no commit came in between.
    /// One `pread` of the page cache, so cheap enough to call before every IMAP reply.
    pub(super) fn token(&self) -> ChangeToken {
        let mut b = [0u8; 8];
        match self.changes.read_at(&mut b, 0) {
            Ok(8) => ChangeToken(u64::from_le_bytes(b)),
            // Never touched yet (or unreadable): a token that matches nothing.
            _ => ChangeToken(0),
        }
    }

    pub(super) fn subscribe(self: &Arc<Self>, core: Weak<Core>) -> ChangeReceiver {
        let rx = self.tx.subscribe();
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if !*running {
            *running = true;
            self.hub.watch(&self.paths, self);
            tokio::spawn(run(self.clone(), core));
        }
        ChangeReceiver { rx }
    }
}

/// What the changes file held at some moment; see [`super::UserStore::change_token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeToken(u64);

impl ChangeToken {
    /// Whether `self` and `other` are the same known token (an unknown one never matches).
    pub fn same_as(self, other: ChangeToken) -> bool {
        self.0 != 0 && self.0 == other.0
    }
}

/// A process-unique start (pid and clock) plus a counter: two writes, by this process or
/// another, leave different tokens.
fn next_token() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        // The pid in the top bits, the clock below: unique across live processes and
        // (almost surely) across restarts that reuse a pid.
        (u64::from(std::process::id()) << 40) | (nanos & ((1 << 40) - 1))
    });
    let t = base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
    if t == 0 { 1 } else { t }
}

type Seen = HashMap<String, (i64, i64, i64)>;

async fn mailbox_states(core: &Core) -> Result<Seen> {
    let rows = sqlx::query("SELECT name, uidvalidity, uidnext, highest_modseq FROM mailbox")
        .fetch_all(&mut *core.pool.acquire().await?)
        .await?;
    let mut out = HashMap::new();
    for r in rows {
        out.insert(r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?, r.try_get(3)?));
    }
    Ok(out)
}

async fn run(n: Arc<UserNotifier>, core: Weak<Core>) {
    let mut seen: Option<Seen> = None;
    if let Some(c) = core.upgrade() {
        seen = mailbox_states(&c).await.ok();
    }
    // Changes made between `watch()` and this first look were not compared: receivers
    // re-check once.
    let _ = n.tx.send(Change::Resync);
    loop {
        tokio::select! {
            _ = n.kick.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
        if n.tx.receiver_count() == 0 {
            let mut running = n.running.lock().unwrap_or_else(|e| e.into_inner());
            if n.tx.receiver_count() == 0 {
                *running = false;
                n.hub.unwatch(&n.paths, &n);
                return;
            }
        }
        tokio::time::sleep(DEBOUNCE).await;
        let Some(c) = core.upgrade() else {
            let mut running = n.running.lock().unwrap_or_else(|e| e.into_inner());
            *running = false;
            n.hub.unwatch(&n.paths, &n);
            return;
        };
        // Other tools' changes to the INBOX only show once reconciled.
        if let Err(e) = c.open_mailbox(INBOX).await {
            tracing::debug!(error = %e, "INBOX check failed");
        }
        let now = match mailbox_states(&c).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read mailbox states");
                continue;
            }
        };
        drop(c);
        if let Some(old) = &seen {
            for (name, st) in &now {
                if old.get(name) != Some(st) {
                    let _ = n.tx.send(Change::Mailbox(name.clone()));
                }
            }
            for name in old.keys() {
                if !now.contains_key(name) {
                    let _ = n.tx.send(Change::Mailbox(name.clone()));
                }
            }
        } else {
            let _ = n.tx.send(Change::Resync);
        }
        seen = Some(now);
    }
}

/// Receives change notifications of one user (see [`super::UserStore::watch`]).
pub struct ChangeReceiver {
    rx: broadcast::Receiver<Change>,
}

impl ChangeReceiver {
    /// The next change; `None` once the store is gone.
    pub async fn recv(&mut self) -> Option<Change> {
        use tokio::sync::broadcast::error::RecvError;
        match self.rx.recv().await {
            Ok(c) => Some(c),
            Err(RecvError::Lagged(_)) => Some(Change::Resync),
            Err(RecvError::Closed) => None,
        }
    }
}
