//! One user's store: paths, opening the index, and mailbox management (LIST, CREATE,
//! DELETE, RENAME, subscriptions). Message operations are in `messages.rs`, reconciliation
//! with the disk in `sync.rs`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::ops::Deref;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::sqlite::SqlitePool;
use tokio::sync::mpsc;

use super::index::{self, Alloc, MailboxRow, Writer};
use super::lock::MboxLock;
use super::messages::PendingAppend;
use super::name::{self, INBOX};
use super::watch::{UserNotifier, WatchHub};
use super::{
    ChangeReceiver, MailboxFormat, MailboxInfo, Result, SpecialUse, StoreConfig, StoreError,
    maildir,
};

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(super) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Runs blocking file work on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Io(io::Error::other(e)))?
}

fn check_path_part(what: &str, s: &str) -> Result<()> {
    if s.is_empty()
        || s.len() > 255
        || s.starts_with('.')
        || s.contains('/')
        || s.chars().any(|c| c.is_control())
    {
        return Err(StoreError::InvalidName(format!("bad {what}: {s:?}")));
    }
    Ok(())
}

/// The cache key of a user; refuses parts that could leave the data directory.
pub(super) fn user_key(localpart: &str, domain: &str) -> Result<(String, String)> {
    check_path_part("local part", localpart)?;
    check_path_part("domain", domain)?;
    Ok((localpart.to_string(), domain.to_ascii_lowercase()))
}

/// A user's open store, shared by every [`super::UserStore`] clone.
pub(super) struct UserShared {
    core: Arc<Core>,
    pub(super) appends: mpsc::UnboundedSender<PendingAppend>,
}

impl Deref for UserShared {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

/// Everything the background tasks need too.
pub(super) struct Core {
    pub(super) cfg: StoreConfig,
    pub(super) dir: PathBuf,
    /// Maildir root (INBOX) or the mbox folder directory.
    pub(super) root: PathBuf,
    /// mbox INBOX file.
    pub(super) inbox_path: PathBuf,
    pub(super) pool: SqlitePool,
    pub(super) writer: tokio::sync::Mutex<Writer>,
    pub(super) notifier: Arc<UserNotifier>,
    /// Directory mtimes change on every change (see `maildir::fine_grained_mtimes`).
    pub(super) fine_mtimes: bool,
    /// When each mailbox's disk was last compared with the index (`open_mailbox`).
    pub(super) disk_checked: std::sync::Mutex<HashMap<String, std::time::Instant>>,
    /// The messages of big mailboxes as last read (SELECT reads only what changed since).
    pub(super) snapshots: super::snapshot_cache::SnapshotCache,
    /// Mailboxes whose messages a background task is adding to the full-text index.
    pub(super) text_indexing: std::sync::Mutex<std::collections::HashSet<String>>,
}

fn expand_template(t: &str, localpart: &str, domain: &str) -> String {
    t.replace("{localpart}", localpart)
        .replace("{user}", localpart)
        .replace("{domain}", domain)
}

impl UserShared {
    pub(super) async fn open(
        cfg: &StoreConfig,
        localpart: &str,
        domain: &str,
        hub: Arc<WatchHub>,
    ) -> Result<Self> {
        let dir = cfg.data_dir.join("mail").join(domain).join(localpart);
        let (root, inbox_path) = match cfg.format {
            MailboxFormat::Maildir => (dir.join("Maildir"), PathBuf::new()),
            MailboxFormat::Mbox => {
                let p = PathBuf::from(expand_template(&cfg.mbox_inbox_template, localpart, domain));
                let p = if p.is_absolute() {
                    p
                } else {
                    cfg.data_dir.join(p)
                };
                (dir.join("mbox"), p)
            }
        };
        {
            let (dir, root, inbox_path, format) =
                (dir.clone(), root.clone(), inbox_path.clone(), cfg.format);
            blocking(move || {
                let mut b = fs::DirBuilder::new();
                b.mode(0o700).recursive(true);
                b.create(&dir)?;
                match format {
                    MailboxFormat::Maildir => maildir::ensure_root(&root)?,
                    MailboxFormat::Mbox => {
                        b.create(&root)?;
                        if let Some(parent) = inbox_path.parent() {
                            b.create(parent)?;
                        }
                        fs::OpenOptions::new()
                            .append(true)
                            .create(true)
                            .mode(0o600)
                            .open(&inbox_path)?;
                    }
                }
                Ok(())
            })
            .await?;
        }
        let (pool, mut writer) = index::open(&dir.join("index.sqlite")).await?;
        Alloc::after_open(&mut writer).await?;
        let notifier = UserNotifier::new(hub, &dir, cfg.format, &root, &inbox_path)?;
        let d = dir.clone();
        let fine_mtimes = blocking(move || Ok(maildir::fine_grained_mtimes(&d))).await?;
        let core = Arc::new(Core {
            cfg: cfg.clone(),
            dir,
            root,
            inbox_path,
            pool,
            writer: tokio::sync::Mutex::new(writer),
            notifier,
            fine_mtimes,
            disk_checked: Default::default(),
            snapshots: Default::default(),
            text_indexing: Default::default(),
        });
        core.init_mailboxes().await?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(super::messages::committer(core.clone(), rx));
        Ok(UserShared { core, appends: tx })
    }

    pub(super) fn dir(&self) -> &Path {
        &self.core.dir
    }

    pub(super) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    pub(super) fn watch(&self) -> ChangeReceiver {
        self.notifier.subscribe(Arc::downgrade(&self.core))
    }
}

impl Core {
    /// The file or directory of a mailbox.
    pub(super) fn mailbox_path(&self, canonical: &str) -> PathBuf {
        match self.cfg.format {
            MailboxFormat::Maildir => {
                if canonical == INBOX {
                    self.root.clone()
                } else {
                    maildir::mailbox_dir(&self.root, Some(&name::disk_name(canonical)))
                }
            }
            MailboxFormat::Mbox => {
                if canonical == INBOX {
                    self.inbox_path.clone()
                } else {
                    self.root.join(name::disk_name(canonical))
                }
            }
        }
    }

    /// Validates and canonicalises a name; in mbox, the dotlock suffix is reserved.
    pub(super) fn canonical(&self, name: &str) -> Result<String> {
        let c = name::validate_mailbox_name(name)?;
        if self.cfg.format == MailboxFormat::Mbox && name::disk_name(&c).ends_with(".lock") {
            return Err(StoreError::InvalidName(
                "a last level named \"lock\" is reserved for mbox lock files".into(),
            ));
        }
        Ok(c)
    }

    /// Locks an mbox mailbox file (the INBOX is re-created if another tool removed it).
    pub(super) async fn lock_mbox(&self, canonical: &str) -> Result<Arc<MboxLock>> {
        let path = self.mailbox_path(canonical);
        let timeout = self.cfg.lock_timeout;
        let (is_inbox, name) = (canonical == INBOX, canonical.to_string());
        let lock = blocking(move || {
            if is_inbox {
                fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(&path)?;
            }
            match MboxLock::exclusive(&path, timeout) {
                Err(StoreError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                    Err(StoreError::NoSuchMailbox(name))
                }
                other => other,
            }
        })
        .await?;
        Ok(Arc::new(lock))
    }

    fn exists_on_disk(&self, canonical: &str) -> bool {
        let p = self.mailbox_path(canonical);
        match self.cfg.format {
            MailboxFormat::Maildir => maildir::is_maildir(&p),
            MailboxFormat::Mbox => p.is_file(),
        }
    }

    /// Names of the mailboxes on disk (INBOX always).
    fn disk_mailboxes(&self) -> io::Result<HashSet<String>> {
        let mut out = HashSet::new();
        out.insert(INBOX.to_string());
        match self.cfg.format {
            MailboxFormat::Maildir => {
                for d in maildir::list_folders(&self.root)? {
                    match name::from_disk_name(&d) {
                        Some(n) if n != INBOX => {
                            out.insert(n);
                        }
                        _ => tracing::debug!(dir = %d, "ignoring folder with a non-canonical name"),
                    }
                }
            }
            MailboxFormat::Mbox => {
                for de in fs::read_dir(&self.root)? {
                    let de = de?;
                    let Ok(f) = de.file_name().into_string() else {
                        continue;
                    };
                    if f.ends_with(".lock") || !de.file_type()?.is_file() {
                        continue;
                    }
                    if let Some(n) = name::from_disk_name(&f)
                        && n != INBOX
                    {
                        out.insert(n);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Creates a mailbox on disk; `AlreadyExists` if it is there.
    fn create_on_disk(&self, canonical: &str) -> Result<()> {
        let p = self.mailbox_path(canonical);
        let r = match self.cfg.format {
            MailboxFormat::Maildir => maildir::create(&p, true),
            MailboxFormat::Mbox => fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&p)
                .and_then(|f| f.sync_all())
                .and_then(|()| maildir::fsync_dir(&self.root)),
        };
        match r {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(StoreError::AlreadyExists(canonical.to_string()))
            }
            other => Ok(other?),
        }
    }

    /// First open: INBOX row, the SPECIAL-USE folders, subscriptions.
    async fn init_mailboxes(self: &Arc<Self>) -> Result<()> {
        let mut w = self.writer.lock().await;
        let mut tx = w.begin().await?;
        if index::mailbox_by_name(tx.conn(), INBOX).await?.is_none() {
            index::insert_mailbox(&mut tx, INBOX, None).await?;
        }
        if index::meta_int(tx.conn(), "initialized").await?.is_some() {
            return tx.commit().await;
        }
        for su in SpecialUse::ALL {
            let n = su.default_name();
            match index::mailbox_by_name(tx.conn(), n).await? {
                Some(row) => {
                    if row.special_use.is_none() {
                        index::set_special_use(&mut tx, row.id, Some(su)).await?;
                    }
                }
                None => {
                    let me = self.clone();
                    match blocking(move || me.create_on_disk(n)).await {
                        Ok(()) | Err(StoreError::AlreadyExists(_)) => {}
                        Err(e) => return Err(e),
                    }
                    index::insert_mailbox(&mut tx, n, Some(su)).await?;
                }
            }
            index::set_subscribed(&mut tx, n, true).await?;
        }
        index::set_subscribed(&mut tx, INBOX, true).await?;
        index::set_meta_int(tx.conn(), "initialized", 1).await?;
        tx.commit().await
    }

    /// Makes the index's mailbox list match the disk (folders made or removed by other
    /// tools); returns all rows.
    pub(super) async fn reconcile_mailboxes(self: &Arc<Self>) -> Result<Vec<MailboxRow>> {
        let me = self.clone();
        let disk = blocking(move || Ok(me.disk_mailboxes()?)).await?;
        let rows = index::all_mailboxes(&mut *self.pool.acquire().await?).await?;
        let indexed: HashSet<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        if indexed.len() == disk.len() && disk.iter().all(|d| indexed.contains(d.as_str())) {
            return Ok(rows);
        }
        let mut w = self.writer.lock().await;
        let mut tx = w.begin().await?;
        // Again under the write lock: our own CREATE/DELETE/RENAME happen under it.
        let me = self.clone();
        let disk = blocking(move || Ok(me.disk_mailboxes()?)).await?;
        let rows = index::all_mailboxes(tx.conn()).await?;
        let mut changed = false;
        for r in &rows {
            if !disk.contains(&r.name) && r.name != INBOX {
                tracing::info!(mailbox = %r.name, "mailbox removed behind our back");
                index::delete_mailbox(&mut tx, r.id).await?;
                changed = true;
            }
        }
        let indexed: HashSet<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        for d in &disk {
            if !indexed.contains(d.as_str()) {
                tracing::info!(mailbox = %d, "mailbox found on disk");
                index::insert_mailbox(&mut tx, d, None).await?;
                changed = true;
            }
        }
        let rows = index::all_mailboxes(tx.conn()).await?;
        tx.commit().await?;
        drop(w);
        if changed {
            self.notifier.touch();
        }
        Ok(rows)
    }

    /// The index row of a mailbox (no reconciliation of its messages).
    pub(super) async fn resolve(self: &Arc<Self>, name: &str) -> Result<MailboxRow> {
        let canonical = self.canonical(name)?;
        if let Some(row) =
            index::mailbox_by_name(&mut *self.pool.acquire().await?, &canonical).await?
        {
            return Ok(row);
        }
        if self.exists_on_disk(&canonical) {
            let rows = self.reconcile_mailboxes().await?;
            if let Some(row) = rows.into_iter().find(|r| r.name == canonical) {
                return Ok(row);
            }
        }
        Err(StoreError::NoSuchMailbox(canonical))
    }

    pub(super) async fn list(self: &Arc<Self>) -> Result<Vec<MailboxInfo>> {
        let rows = self.reconcile_mailboxes().await?;
        let subs: HashSet<String> = index::subscriptions(&mut *self.pool.acquire().await?)
            .await?
            .into_iter()
            .collect();
        let existing: HashSet<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        let mut all: BTreeSet<&str> = BTreeSet::new();
        for r in &rows {
            all.insert(&r.name);
            all.extend(name::parents(&r.name));
        }
        let mut out: Vec<MailboxInfo> = all
            .iter()
            .map(|n| {
                let prefix = format!("{n}/");
                let has_children = all
                    .range::<&str, _>(prefix.as_str()..)
                    .next()
                    .is_some_and(|c| c.starts_with(&prefix));
                MailboxInfo {
                    name: n.to_string(),
                    noselect: !existing.contains(n),
                    has_children,
                    subscribed: subs.contains(*n),
                    special_use: rows
                        .iter()
                        .find(|r| r.name == *n)
                        .and_then(|r| r.special_use),
                }
            })
            .collect();
        out.sort_by(|a, b| (a.name != INBOX, &a.name).cmp(&(b.name != INBOX, &b.name)));
        Ok(out)
    }

    pub(super) async fn create(
        self: &Arc<Self>,
        name: &str,
        special_use: Option<SpecialUse>,
    ) -> Result<()> {
        let canonical = self.canonical(name)?;
        if canonical == INBOX {
            return Err(StoreError::AlreadyExists(canonical));
        }
        let mut w = self.writer.lock().await;
        let mut tx = w.begin().await?;
        if index::mailbox_by_name(tx.conn(), &canonical)
            .await?
            .is_some()
        {
            return Err(StoreError::AlreadyExists(canonical));
        }
        let me = self.clone();
        let c = canonical.clone();
        blocking(move || me.create_on_disk(&c)).await?;
        index::insert_mailbox(&mut tx, &canonical, special_use).await?;
        tx.commit().await
    }

    pub(super) async fn delete(self: &Arc<Self>, name: &str) -> Result<()> {
        let canonical = self.canonical(name)?;
        if canonical == INBOX {
            return Err(StoreError::Cannot("INBOX cannot be deleted".into()));
        }
        let mut w = self.writer.lock().await;
        let mut tx = w.begin().await?;
        let row = index::mailbox_by_name(tx.conn(), &canonical).await?;
        if row.is_none() && !self.exists_on_disk(&canonical) {
            return Err(StoreError::NoSuchMailbox(canonical));
        }
        let path = self.mailbox_path(&canonical);
        let (root, format, timeout) = (self.root.clone(), self.cfg.format, self.cfg.lock_timeout);
        blocking(move || {
            match format {
                MailboxFormat::Maildir => maildir::delete_folder(&root, &path)?,
                MailboxFormat::Mbox => {
                    let lock = MboxLock::exclusive(&path, timeout)?;
                    fs::remove_file(&path)?;
                    drop(lock);
                    maildir::fsync_dir(&root)?;
                }
            }
            Ok(())
        })
        .await?;
        if let Some(row) = row {
            index::delete_mailbox(&mut tx, row.id).await?;
        }
        tx.commit().await?;
        drop(w);
        self.notifier.touch();
        Ok(())
    }

    pub(super) async fn rename(self: &Arc<Self>, from: &str, to: &str) -> Result<()> {
        let from_c = self.canonical(from)?;
        let to_c = self.canonical(to)?;
        if to_c == INBOX || to_c == from_c {
            return Err(StoreError::AlreadyExists(to_c));
        }
        if from_c == INBOX {
            return self.rename_inbox(&to_c).await;
        }
        if name::is_descendant(&to_c, &from_c) {
            return Err(StoreError::Cannot(
                "a mailbox cannot be moved into its own child".into(),
            ));
        }
        self.reconcile_mailboxes().await?;
        let mut w = self.writer.lock().await;
        let mut tx = w.begin().await?;
        let rows = index::all_mailboxes(tx.conn()).await?;
        let names: HashSet<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        let mut moves: Vec<(i64, String, String)> = Vec::new();
        for r in &rows {
            if r.name == from_c || name::is_descendant(&r.name, &from_c) {
                let new = format!("{to_c}{}", &r.name[from_c.len()..]);
                let new = self.canonical(&new)?;
                if names.contains(new.as_str()) {
                    return Err(StoreError::AlreadyExists(new));
                }
                moves.push((r.id, r.name.clone(), new));
            }
        }
        if moves.is_empty() {
            return Err(StoreError::NoSuchMailbox(from_c));
        }
        let paths: Vec<(PathBuf, PathBuf)> = moves
            .iter()
            .map(|(_, o, n)| (self.mailbox_path(o), self.mailbox_path(n)))
            .collect();
        let root = self.root.clone();
        blocking(move || {
            for (i, (o, n)) in paths.iter().enumerate() {
                if n.exists() {
                    return Err(StoreError::AlreadyExists(n.display().to_string()));
                }
                if let Err(e) = fs::rename(o, n) {
                    for (o2, n2) in paths[..i].iter().rev() {
                        let _ = fs::rename(n2, o2);
                    }
                    return Err(e.into());
                }
            }
            maildir::fsync_dir(&root)?;
            Ok(())
        })
        .await?;
        for (id, _, new) in &moves {
            index::rename_mailbox(&mut tx, *id, new).await?;
        }
        for sub in index::subscriptions(tx.conn()).await? {
            if sub == from_c || name::is_descendant(&sub, &from_c) {
                let new = format!("{to_c}{}", &sub[from_c.len()..]);
                index::set_subscribed(&mut tx, &sub, false).await?;
                index::set_subscribed(&mut tx, &new, true).await?;
            }
        }
        tx.commit().await?;
        drop(w);
        self.notifier.touch();
        Ok(())
    }

    /// RFC 3501: RENAME INBOX moves its messages to a new mailbox; INBOX stays, empty.
    async fn rename_inbox(self: &Arc<Self>, to: &str) -> Result<()> {
        self.create(to, None).await?;
        let snap = self.select(INBOX, true).await?;
        let uids: Vec<u32> = snap.messages.iter().map(|m| m.uid).collect();
        for chunk in uids.chunks(5000) {
            self.copy_or_move(INBOX, chunk, to, true).await?;
        }
        Ok(())
    }

    pub(super) async fn set_subscribed(self: &Arc<Self>, name: &str, on: bool) -> Result<()> {
        let canonical = name::validate_mailbox_name(name)?;
        let mut w = self.writer.lock().await;
        let mut tx = w.begin().await?;
        index::set_subscribed(&mut tx, &canonical, on).await?;
        tx.commit().await
    }

    pub(super) async fn subscriptions(&self) -> Result<Vec<String>> {
        index::subscriptions(&mut *self.pool.acquire().await?).await
    }

    pub(super) async fn set_special_use(
        self: &Arc<Self>,
        name: &str,
        su: Option<SpecialUse>,
    ) -> Result<()> {
        let row = self.resolve(name).await?;
        let mut w = self.writer.lock().await;
        let mut tx = w.begin().await?;
        index::set_special_use(&mut tx, row.id, su).await?;
        tx.commit().await
    }
}
