//! Message operations: delivery/APPEND with group commit, SELECT, STATUS, reading, STORE,
//! COPY/MOVE, EXPUNGE and change queries.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::index::{self, Location, MailboxRow, MessageRow};
use super::lock::{self, MboxLock};
use super::maildir::{self, rel_path};
use super::mbox;
use super::sync::record_own_change;
use super::text_index::{self, IndexedText};
use super::user::{Core, blocking, unix_now};
use super::{
    Appended, Changes, CopyResult, Flag, Flags, MailboxFormat, MailboxStatus, MessageMeta, ModSeq,
    QuotaUsage, Result, Snapshot, StoreError, StoreMode, StoreResult, Uid,
};

/// Most appends committed in one index transaction.
const MAX_BATCH: usize = 512;

/// Most message bytes an mbox COPY or MOVE reads before it appends them.
const COPY_BATCH_BYTES: u64 = 32 * 1024 * 1024;

/// An append waiting for the committer.
pub(super) struct PendingAppend {
    mailbox: String,
    flags: Flags,
    keywords: Vec<String>,
    date: i64,
    size: u64,
    data: PendingData,
    /// For the full-text index, made while the message was at hand (Maildir from memory).
    text: Option<IndexedText>,
    reply: oneshot::Sender<Result<Appended>>,
}

enum PendingData {
    /// Written and fsynced in `tmp/`; the committer renames it.
    Maildir { tmp: PathBuf, base: String },
    /// The committer appends it under the mbox lock (a file is copied there, never read
    /// whole).
    Mbox(mbox::NewMessage),
}

/// The bytes of a new message: in memory, or a header `prefix` followed by a file's content
/// (a big queued message, copied without reading it whole).
#[derive(Clone, Copy)]
pub(super) enum Source<'a> {
    Bytes(&'a [u8]),
    File { prefix: &'a [u8], body: &'a Path },
}

type Reply = (oneshot::Sender<Result<Appended>>, Result<Appended>);

/// Checks and de-duplicates (case-insensitively) IMAP keywords.
pub(super) fn check_keywords(kw: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for k in kw {
        let ok = !k.is_empty()
            && !k.starts_with('\\')
            && k.bytes()
                .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b));
        if !ok {
            return Err(StoreError::Cannot(format!("invalid keyword {k:?}")));
        }
        if !out.iter().any(|o| o.eq_ignore_ascii_case(k)) {
            out.push(k.clone());
        }
    }
    Ok(out)
}

fn apply_mode(
    mode: StoreMode,
    old: Flags,
    old_kw: &[String],
    flags: Flags,
    kw: &[String],
) -> (Flags, Vec<String>) {
    match mode {
        StoreMode::Add => {
            let mut k = old_kw.to_vec();
            for n in kw {
                if !k.iter().any(|o| o.eq_ignore_ascii_case(n)) {
                    k.push(n.clone());
                }
            }
            (old.union(flags), k)
        }
        StoreMode::Remove => {
            let k = old_kw
                .iter()
                .filter(|o| !kw.iter().any(|n| n.eq_ignore_ascii_case(o)))
                .cloned()
                .collect();
            (old.difference(flags), k)
        }
        StoreMode::Replace => (flags, kw.to_vec()),
    }
}

/// New messages with flags (or `$Forwarded`) go to `cur/`, others to `new/`.
fn goes_to_cur(flags: Flags, kw: &[String]) -> bool {
    !maildir::letters(flags, kw).is_empty()
}

/// The per-user committer: takes queued appends in batches, one index transaction each.
pub(super) async fn committer(core: Arc<Core>, mut rx: mpsc::UnboundedReceiver<PendingAppend>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (replies, syncs) = match core.cfg.format {
            MailboxFormat::Maildir => core.commit_maildir(batch).await,
            MailboxFormat::Mbox => (core.commit_mbox(batch).await, Vec::new()),
        };
        if replies.iter().any(|r| r.1.is_ok()) {
            core.notifier.touch();
        }
        // Answer once the directory fsyncs (started right after the renames) are done; the
        // next batch is committed meanwhile.
        tokio::spawn(async move {
            let mut synced: Result<()> = Ok(());
            for s in syncs {
                let r = s
                    .await
                    .map_err(|e| StoreError::Io(io::Error::other(e)))
                    .and_then(|r| r);
                if synced.is_ok() {
                    synced = r;
                }
            }
            for (reply, res) in replies {
                let res = match (&synced, res) {
                    (Err(e), Ok(_)) => Err(StoreError::Io(io::Error::other(format!(
                        "directory fsync failed: {e}"
                    )))),
                    (_, res) => res,
                };
                let _ = reply.send(res);
            }
        });
    }
}

/// A directory fsync running on the blocking pool.
type DirSync = tokio::task::JoinHandle<Result<()>>;

fn spawn_dir_sync(dirs: Vec<PathBuf>) -> DirSync {
    tokio::spawn(blocking(move || {
        for d in dirs {
            maildir::fsync_dir(&d)?;
        }
        Ok(())
    }))
}

fn group_by_mailbox(batch: Vec<PendingAppend>) -> Vec<(String, Vec<PendingAppend>)> {
    let mut groups: Vec<(String, Vec<PendingAppend>)> = Vec::new();
    for p in batch {
        match groups.iter_mut().find(|g| g.0 == p.mailbox) {
            Some(g) => g.1.push(p),
            None => groups.push((p.mailbox.clone(), vec![p])),
        }
    }
    groups
}

fn fail_all(batch: Vec<PendingAppend>, e: &StoreError) -> Vec<Reply> {
    batch
        .into_iter()
        .map(|p| {
            if let PendingData::Maildir { tmp, .. } = &p.data {
                let _ = std::fs::remove_file(tmp);
            }
            (p.reply, Err(same_error(e)))
        })
        .collect()
}

/// A copy of an error for every message of a failed batch.
fn same_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::NoSuchMailbox(s) => StoreError::NoSuchMailbox(s.clone()),
        StoreError::Temporary(s) => StoreError::Temporary(s.clone()),
        StoreError::InvalidName(s) => StoreError::InvalidName(s.clone()),
        other => StoreError::Io(io::Error::other(other.to_string())),
    }
}

/// Bytes `range` of a file (fewer at its end), without reading the rest.
fn read_file_range(path: &std::path::Path, range: Range<u64>) -> io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(range.start))?;
    let mut out = Vec::new();
    file.take(range.end.saturating_sub(range.start))
        .read_to_end(&mut out)?;
    Ok(out)
}

/// Where a message asked for by [`Core::read_many`] is on disk.
enum Wanted {
    Maildir { base: String, rel: String },
    Mbox { off: u64, len: u64 },
}

/// Reads the messages of one mailbox at `path` (blocking). An mbox is read under one shared
/// lock; `None` if it changed since the index last saw it (`recorded`).
fn read_files(
    path: &std::path::Path,
    wanted: &[Option<Wanted>],
    range: Option<Range<u64>>,
    timeout: std::time::Duration,
    recorded: index::DiskState,
) -> Result<Option<Vec<Option<Vec<u8>>>>> {
    let read_maildir = |p: &std::path::Path| -> io::Result<Vec<u8>> {
        match &range {
            None => std::fs::read(p),
            Some(r) => read_file_range(p, r.clone()),
        }
    };
    let mut lock: Option<MboxLock> = None;
    let mut out = Vec::with_capacity(wanted.len());
    for w in wanted {
        let bytes = match w {
            None => None,
            Some(Wanted::Maildir { base, rel }) => match read_maildir(&path.join(rel)) {
                // Renamed by a flag change (here or by another tool) since the index query.
                Err(e) if e.kind() == io::ErrorKind::NotFound => match maildir::locate(path, base)?
                {
                    Some(p) => Some(read_maildir(&p)?),
                    None => None,
                },
                other => Some(other?),
            },
            Some(Wanted::Mbox { off, len }) => {
                let file = match &lock {
                    Some(l) => l.file(),
                    None => {
                        let l = MboxLock::shared(path, timeout)?;
                        if mbox::state(l.file())? != recorded {
                            return Ok(None);
                        }
                        lock.insert(l).file()
                    }
                };
                // mboxrd quoting shifts offsets: unquoted from the start, up to the range end.
                Some(match &range {
                    None => mbox::read(file, *off, *len)?,
                    Some(r) => mbox::read_range(file, *off, *len, r.clone())?,
                })
            }
        };
        out.push(bytes);
    }
    Ok(Some(out))
}

impl Core {
    pub(super) async fn append(
        self: &Arc<Self>,
        mailbox: &str,
        message: Source<'_>,
        flags: Flags,
        keywords: &[String],
        internal_date: Option<i64>,
        queue: &mpsc::UnboundedSender<PendingAppend>,
    ) -> Result<Appended> {
        let keywords = check_keywords(keywords)?;
        let canonical = self.canonical(mailbox)?;
        // Fast path without an index lookup: the committer checks the mailbox.
        match self
            .append_once(&canonical, message, flags, &keywords, internal_date, queue)
            .await
        {
            Err(StoreError::NoSuchMailbox(_)) => {
                // Perhaps made by another tool and not indexed yet.
                let row = self.resolve(&canonical).await?;
                self.append_once(&row.name, message, flags, &keywords, internal_date, queue)
                    .await
            }
            other => other,
        }
    }

    async fn append_once(
        &self,
        canonical: &str,
        message: Source<'_>,
        flags: Flags,
        keywords: &[String],
        internal_date: Option<i64>,
        queue: &mpsc::UnboundedSender<PendingAppend>,
    ) -> Result<Appended> {
        let date = internal_date.unwrap_or_else(|| unix_now() as i64);
        let mut text = None;
        let (size, data) = match (self.cfg.format, message) {
            (MailboxFormat::Maildir, Source::Bytes(message)) => {
                let size = message.len() as u64;
                let base = maildir::new_base(size);
                let dir = self.mailbox_path(canonical);
                let (b, bytes) = (base.clone(), message.to_vec());
                let name = canonical.to_string();
                let (tmp, t) = blocking(move || {
                    let tmp = match maildir::write_tmp(&dir, &b, &bytes, internal_date) {
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            return Err(StoreError::NoSuchMailbox(name));
                        }
                        other => other?,
                    };
                    Ok((tmp, IndexedText::of(&bytes)))
                })
                .await?;
                text = Some(t);
                (size, PendingData::Maildir { tmp, base })
            }
            (MailboxFormat::Maildir, Source::File { prefix, body }) => {
                let dir = self.mailbox_path(canonical);
                let (prefix, body) = (prefix.to_vec(), body.to_path_buf());
                let name = canonical.to_string();
                let (tmp, base, size) = blocking(move || {
                    let mut file = std::fs::File::open(&body)?;
                    let size = prefix.len() as u64 + file.metadata()?.len();
                    let base = maildir::new_base(size);
                    match maildir::write_tmp_from_file(&dir, &base, &prefix, &mut file) {
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            Err(StoreError::NoSuchMailbox(name))
                        }
                        Err(e) => Err(e.into()),
                        Ok(tmp) => Ok((tmp, base, size)),
                    }
                })
                .await?;
                (size, PendingData::Maildir { tmp, base })
            }
            (MailboxFormat::Mbox, Source::Bytes(message)) => (
                message.len() as u64,
                PendingData::Mbox(mbox::NewMessage::Bytes(message.to_vec())),
            ),
            (MailboxFormat::Mbox, Source::File { prefix, body }) => {
                // The committer copies the file, quoting as it goes; the caller keeps it in
                // place until the append is answered.
                let path = body.to_path_buf();
                let len = blocking(move || Ok(std::fs::metadata(&path)?.len())).await?;
                let data = mbox::NewMessage::File {
                    prefix: prefix.to_vec(),
                    body: body.to_path_buf(),
                };
                (prefix.len() as u64 + len, PendingData::Mbox(data))
            }
        };
        let (tx, rx) = oneshot::channel();
        let pending = PendingAppend {
            mailbox: canonical.to_string(),
            flags,
            keywords: keywords.to_vec(),
            date,
            size,
            data,
            text,
            reply: tx,
        };
        if let Err(mpsc::error::SendError(p)) = queue.send(pending) {
            let _ = fail_all(vec![p], &StoreError::Temporary("store is closing".into()));
            return Err(StoreError::Temporary("store is closing".into()));
        }
        rx.await
            .map_err(|_| StoreError::Temporary("delivery interrupted".into()))?
    }

    /// Renames a batch of tmp files into place and gives them UIDs in one transaction.
    /// Returns the replies and the directory fsyncs to wait for before answering.
    async fn commit_maildir(&self, batch: Vec<PendingAppend>) -> (Vec<Reply>, Vec<DirSync>) {
        let mut w = self.writer.lock().await;
        let mut tx = match w.begin().await {
            Ok(tx) => tx,
            Err(e) => return (fail_all(batch, &e), Vec::new()),
        };
        let mut replies: Vec<Reply> = Vec::new();
        let mut placed: Vec<PathBuf> = Vec::new();
        let mut syncs: Vec<DirSync> = Vec::new();
        let mut rows: Vec<MailboxRow> = Vec::new();
        let mut ok: Vec<(oneshot::Sender<Result<Appended>>, Appended)> = Vec::new();
        let result: Result<()> = async {
            for (name, group) in group_by_mailbox(batch) {
                let mut mb = match index::mailbox_by_name(tx.conn(), &name).await? {
                    Some(mb) => mb,
                    None => {
                        replies.extend(fail_all(group, &StoreError::NoSuchMailbox(name)));
                        continue;
                    }
                };
                let dir = self.mailbox_path(&name);
                let mut moves = Vec::new();
                for p in &group {
                    if let PendingData::Maildir { tmp, base } = &p.data {
                        let rel = rel_path(
                            base,
                            goes_to_cur(p.flags, &p.keywords),
                            p.flags,
                            &p.keywords,
                        );
                        moves.push((tmp.clone(), dir.join(rel)));
                    }
                }
                let d = dir.clone();
                let (before, results, after) = blocking(move || {
                    let before = maildir::disk_state(&d)?;
                    let results: Vec<io::Result<()>> = moves
                        .iter()
                        .map(|(t, dst)| std::fs::rename(t, dst))
                        .collect();
                    let after = maildir::disk_state(&d)?;
                    Ok((before, results, after))
                })
                .await?;
                let mut dirs = Vec::new();
                for (p, res) in group.iter().zip(&results) {
                    let d = dir.join(if goes_to_cur(p.flags, &p.keywords) {
                        "cur"
                    } else {
                        "new"
                    });
                    if res.is_ok() && !dirs.contains(&d) {
                        dirs.push(d);
                    }
                }
                // The renames become durable while the index is updated.
                syncs.push(spawn_dir_sync(dirs));
                let mut new_rows = Vec::with_capacity(group.len());
                let mut texts = Vec::with_capacity(group.len());
                for (p, res) in group.into_iter().zip(results) {
                    let PendingData::Maildir { tmp, base } = p.data else {
                        continue;
                    };
                    if let Err(e) = res {
                        let _ = std::fs::remove_file(&tmp);
                        replies.push((p.reply, Err(e.into())));
                        continue;
                    }
                    let in_cur = goes_to_cur(p.flags, &p.keywords);
                    placed.push(dir.join(rel_path(&base, in_cur, p.flags, &p.keywords)));
                    let uid = mb.next_uid(&mut tx);
                    let modseq = mb.next_modseq(&mut tx);
                    if let Some(t) = p.text {
                        texts.push((uid, t));
                    }
                    let row = MessageRow {
                        meta: MessageMeta {
                            uid,
                            flags: p.flags,
                            keywords: p.keywords,
                            modseq,
                            size: p.size,
                            internal_date: p.date,
                            recent: false,
                        },
                        loc: Location::Maildir { base, in_cur },
                    };
                    new_rows.push(row);
                    ok.push((
                        p.reply,
                        Appended {
                            uidvalidity: mb.uidvalidity,
                            uid,
                        },
                    ));
                }
                index::insert_messages(&mut tx, mb.id, &new_rows).await?;
                for (uid, t) in texts.drain(..) {
                    text_index::insert(&mut tx, mb.id, uid, &t).await?;
                }
                record_own_change(&mut mb, before, after, self.fine_mtimes);
                rows.push(mb);
            }
            for mb in &rows {
                index::save_mailbox(&mut tx, mb).await?;
            }
            Ok(())
        }
        .await;
        let result = match result {
            Ok(()) => tx.commit().await,
            Err(e) => {
                drop(tx);
                Err(e)
            }
        };
        drop(w);
        match result {
            Ok(()) => {
                replies.extend(ok.into_iter().map(|(r, a)| (r, Ok(a))));
            }
            Err(e) => {
                tracing::error!(error = %e, "delivery batch failed");
                // Nothing was indexed: remove the files so a retry does not duplicate them.
                for p in &placed {
                    let _ = std::fs::remove_file(p);
                }
                replies.extend(ok.into_iter().map(|(r, _)| (r, Err(same_error(&e)))));
            }
        }
        (replies, syncs)
    }

    /// Appends a batch to mbox files: per mailbox, under its lock, one write and fsync.
    async fn commit_mbox(&self, batch: Vec<PendingAppend>) -> Vec<Reply> {
        let mut replies = Vec::new();
        for (name, mut group) in group_by_mailbox(batch) {
            // Taken, not copied: a batch of big messages is not held twice.
            let msgs: Vec<(mbox::NewMessage, i64)> = group
                .iter_mut()
                .map(|p| {
                    let empty = PendingData::Mbox(mbox::NewMessage::Bytes(Vec::new()));
                    match std::mem::replace(&mut p.data, empty) {
                        PendingData::Mbox(m) => (m, p.date),
                        PendingData::Maildir { .. } => {
                            (mbox::NewMessage::Bytes(Vec::new()), p.date)
                        }
                    }
                })
                .collect();
            let meta: Vec<(Flags, Vec<String>)> = group
                .iter()
                .map(|p| (p.flags, p.keywords.clone()))
                .collect();
            match self.mbox_append(&name, msgs, meta).await {
                Ok(appended) => replies.extend(
                    group
                        .into_iter()
                        .zip(appended)
                        .map(|(p, a)| (p.reply, Ok(a))),
                ),
                Err(e) => replies.extend(fail_all(group, &e)),
            }
        }
        replies
    }

    /// Appends messages to an mbox mailbox (lock, sync if needed, write, index, unlock).
    async fn mbox_append(
        &self,
        name: &str,
        msgs: Vec<(mbox::NewMessage, i64)>,
        meta: Vec<(Flags, Vec<String>)>,
    ) -> Result<Vec<Appended>> {
        let mut w = self.writer.lock().await;
        let lock = self.lock_mbox(name).await?;
        let mut tx = w.begin().await?;
        let mut mb = index::mailbox_by_name(tx.conn(), name)
            .await?
            .ok_or_else(|| StoreError::NoSuchMailbox(name.to_string()))?;
        self.mbox_sync_locked(&mut tx, &mut mb, &lock).await?;
        let dates: Vec<i64> = msgs.iter().map(|m| m.1).collect();
        let l = lock.clone();
        let (placed, after, len_before) = blocking(move || {
            let len_before = l.file().metadata()?.len();
            let placed = mbox::append(l.file(), &msgs)?;
            Ok((placed, mbox::state(l.file())?, len_before))
        })
        .await?;
        let mut out = Vec::new();
        let mut rows = Vec::new();
        for ((p, (flags, keywords)), date) in placed.into_iter().zip(meta).zip(dates) {
            let uid = mb.next_uid(&mut tx);
            let modseq = mb.next_modseq(&mut tx);
            let row = MessageRow {
                meta: MessageMeta {
                    uid,
                    flags,
                    keywords,
                    modseq,
                    size: p.size,
                    internal_date: date,
                    recent: false,
                },
                loc: Location::Mbox {
                    from: p.from,
                    off: p.off,
                    len: p.len,
                    fingerprint: p.fingerprint,
                },
            };
            rows.push(row);
            out.push(Appended {
                uidvalidity: mb.uidvalidity,
                uid,
            });
        }
        index::insert_messages(&mut tx, mb.id, &rows).await?;
        mb.disk = after;
        mb.recheck_after = 0;
        index::save_mailbox(&mut tx, &mb).await?;
        if let Err(e) = tx.commit().await {
            // Not indexed: take the messages back out of the file, so a retry does not
            // duplicate them.
            let l = lock.clone();
            let _ = blocking(move || Ok(l.file().set_len(len_before)?)).await;
            return Err(e);
        }
        drop(lock);
        Ok(out)
    }

    pub(super) async fn select(self: &Arc<Self>, name: &str, read_only: bool) -> Result<Snapshot> {
        let row = self.open_mailbox(name).await?;
        let (mb, mut messages) = self.current_messages(&row.name).await?;
        let (lo, hi) = if read_only {
            (mb.recent_from, mb.uidnext)
        } else if mb.recent_from < mb.uidnext {
            let r = self.claim_recent_in(mb.id, mb.uidnext).await?;
            (r.start, r.end)
        } else {
            (0, 0)
        };
        if lo < hi {
            let start = messages.partition_point(|m| m.uid < lo);
            for m in &mut messages[start..] {
                if m.uid >= hi {
                    break;
                }
                m.recent = true;
            }
        }
        Ok(Snapshot {
            uidvalidity: mb.uidvalidity,
            uidnext: mb.uidnext,
            highest_modseq: mb.highest_modseq,
            messages,
        })
    }

    /// Claims \Recent for one session: of the UIDs below `upto`, those no session claimed
    /// yet. Only one session sees a message as recent (RFC 3501 section 2.3.2).
    async fn claim_recent_in(&self, mailbox_id: i64, upto: Uid) -> Result<Range<Uid>> {
        let mut w = self.writer.lock().await;
        let mut tx = w.begin().await?;
        let old: i64 = sqlx::query_scalar("SELECT recent_from FROM mailbox WHERE id = ?")
            .bind(mailbox_id)
            .fetch_one(tx.conn())
            .await?;
        let new = old.max(i64::from(upto));
        if new != old {
            sqlx::query("UPDATE mailbox SET recent_from = ? WHERE id = ?")
                .bind(new)
                .bind(mailbox_id)
                .execute(tx.conn())
                .await?;
        }
        tx.commit().await?;
        Ok(old as Uid..new as Uid)
    }

    /// [`Core::claim_recent_in`] by mailbox name, for messages that arrived while selected.
    pub(super) async fn claim_recent(
        self: &Arc<Self>,
        name: &str,
        upto: Uid,
    ) -> Result<Range<Uid>> {
        let row = self.resolve(name).await?;
        if row.recent_from >= upto {
            return Ok(0..0);
        }
        self.claim_recent_in(row.id, upto).await
    }

    pub(super) async fn status(self: &Arc<Self>, name: &str) -> Result<MailboxStatus> {
        let row = self.open_mailbox(name).await?;
        let mut conn = self.pool.acquire().await?;
        let mb = index::mailbox_by_name(&mut conn, &row.name)
            .await?
            .ok_or_else(|| StoreError::NoSuchMailbox(row.name.clone()))?;
        index::status(&mut conn, &mb).await
    }

    pub(super) async fn changes_since(
        self: &Arc<Self>,
        name: &str,
        modseq: ModSeq,
        look_at_disk: bool,
    ) -> Result<Changes> {
        let canonical = self.canonical(name)?;
        if !look_at_disk && self.disk_fresh(&canonical) {
            let mut conn = self.pool.acquire().await?;
            if let Some(c) = index::changes_since(&mut conn, &canonical, modseq).await? {
                return Ok(c);
            }
            // Not in the index (any more): `open_mailbox` reconciles or says it is gone.
        }
        let row = self.open_mailbox(&canonical).await?;
        let mut conn = self.pool.acquire().await?;
        index::changes_since(&mut conn, &row.name, modseq)
            .await?
            .ok_or(StoreError::NoSuchMailbox(row.name))
    }

    pub(super) async fn quota_usage(&self) -> Result<QuotaUsage> {
        index::quota(&mut *self.pool.acquire().await?).await
    }

    pub(super) async fn read(self: &Arc<Self>, name: &str, uid: Uid) -> Result<Vec<u8>> {
        self.read_many(name, &[uid])
            .await?
            .pop()
            .flatten()
            .ok_or(StoreError::NoSuchMessage(uid))
    }

    /// The messages `uids` exactly as delivered, in the order asked, `None` for those that
    /// are not there: one index query and one trip to the blocking pool for all of them.
    pub(super) async fn read_many(
        self: &Arc<Self>,
        name: &str,
        uids: &[Uid],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        self.read_parts(name, uids, None).await
    }

    /// Bytes `range` of one message (fewer past its end); a Maildir file is read only there.
    pub(super) async fn read_range(
        self: &Arc<Self>,
        name: &str,
        uid: Uid,
        range: Range<u64>,
    ) -> Result<Vec<u8>> {
        self.read_parts(name, &[uid], Some(range))
            .await?
            .pop()
            .flatten()
            .ok_or(StoreError::NoSuchMessage(uid))
    }

    /// [`Core::read_many`], of the whole messages or of the same byte range of each.
    async fn read_parts(
        self: &Arc<Self>,
        name: &str,
        uids: &[Uid],
        range: Option<Range<u64>>,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let mut mb = self.resolve(name).await?;
        for attempt in 0..2 {
            let rows =
                index::message_rows_in(&mut *self.pool.acquire().await?, mb.id, uids).await?;
            // `rows` is ascending and holds each UID once.
            let wanted: Vec<Option<Wanted>> = uids
                .iter()
                .map(|uid| {
                    let i = rows.binary_search_by_key(uid, |r| r.meta.uid).ok()?;
                    let r = &rows[i];
                    Some(match &r.loc {
                        Location::Maildir { base, in_cur } => Wanted::Maildir {
                            rel: rel_path(base, *in_cur, r.meta.flags, &r.meta.keywords),
                            base: base.clone(),
                        },
                        Location::Mbox { off, len, .. } => Wanted::Mbox {
                            off: *off,
                            len: *len,
                        },
                    })
                })
                .collect();
            let path = self.mailbox_path(&mb.name);
            let timeout = self.cfg.lock_timeout;
            let recorded = mb.disk;
            let r = range.clone();
            let got = blocking(move || read_files(&path, &wanted, r, timeout, recorded)).await?;
            if let Some(messages) = got {
                return Ok(messages);
            }
            if attempt == 0 {
                // The mbox changed behind our back: reconcile, then look again.
                mb = self.open_mailbox(name).await?;
            }
        }
        Err(StoreError::Temporary(
            "mailbox keeps changing under us".into(),
        ))
    }

    pub(super) async fn store(
        self: &Arc<Self>,
        name: &str,
        uids: &[Uid],
        mode: StoreMode,
        flags: Flags,
        keywords: &[String],
        unchanged_since: Option<ModSeq>,
    ) -> Result<StoreResult> {
        let keywords = check_keywords(keywords)?;
        let canonical = self.indexed_name(name).await?;
        let mut w = self.writer.lock().await;
        let mut tx = w.begin().await?;
        let mut mb = index::mailbox_by_name(tx.conn(), &canonical)
            .await?
            .ok_or_else(|| StoreError::NoSuchMailbox(canonical.clone()))?;
        let rows = index::message_rows_in(tx.conn(), mb.id, uids).await?;
        let mut result = StoreResult::default();
        // (row, new flags, new keywords, new location, file rename)
        let mut updates: Vec<(MessageRow, Option<(String, String)>)> = Vec::new();
        let mut unchanged: Vec<MessageMeta> = Vec::new();
        for r in rows {
            if unchanged_since.is_some_and(|u| r.meta.modseq > u) {
                result.failed.push(r.meta.uid);
                continue;
            }
            let (nf, nk) = apply_mode(mode, r.meta.flags, &r.meta.keywords, flags, &keywords);
            let same_kw = nk.len() == r.meta.keywords.len()
                && nk.iter().all(|k| r.meta.keywords.iter().any(|o| o == k));
            if nf == r.meta.flags && same_kw {
                unchanged.push(r.meta);
                continue;
            }
            let mut new = r.clone();
            new.meta.flags = nf;
            new.meta.keywords = nk;
            let mut rename = None;
            if let Location::Maildir { base, in_cur } = &r.loc {
                let cur = *in_cur || goes_to_cur(nf, &new.meta.keywords);
                let old_rel = rel_path(base, *in_cur, r.meta.flags, &r.meta.keywords);
                let new_rel = rel_path(base, cur, nf, &new.meta.keywords);
                if old_rel != new_rel {
                    rename = Some((old_rel, new_rel));
                }
                new.loc = Location::Maildir {
                    base: base.clone(),
                    in_cur: cur,
                };
            }
            updates.push((new, rename));
        }
        let dir = self.mailbox_path(&mb.name);
        let mut gone: Vec<bool> = vec![false; updates.len()];
        let mut states = None;
        if self.cfg.format == MailboxFormat::Maildir && updates.iter().any(|u| u.1.is_some()) {
            let plan: Vec<Option<(String, String, String)>> = updates
                .iter()
                .map(|(r, ren)| {
                    let base = match &r.loc {
                        Location::Maildir { base, .. } => base.clone(),
                        Location::Mbox { .. } => String::new(),
                    };
                    ren.clone().map(|(o, n)| (base, o, n))
                })
                .collect();
            let d = dir.clone();
            let (before, g, after) = blocking(move || {
                let before = maildir::disk_state(&d)?;
                let mut gone = Vec::with_capacity(plan.len());
                for p in &plan {
                    let Some((base, old, new)) = p else {
                        gone.push(false);
                        continue;
                    };
                    gone.push(!rename_message(&d, base, old, new)?);
                }
                Ok((before, gone, maildir::disk_state(&d)?))
            })
            .await?;
            gone = g;
            states = Some((before, after));
        }
        let modseq = if updates.is_empty() {
            0
        } else {
            mb.next_modseq(&mut tx)
        };
        let mut changed_meta = Vec::new();
        for ((mut new, _), gone) in updates.into_iter().zip(gone) {
            if gone {
                continue;
            }
            new.meta.modseq = modseq;
            index::update_message(&mut tx, mb.id, &new).await?;
            result.changed.push(new.meta.uid);
            changed_meta.push(new.meta);
        }
        if let Some((before, after)) = states {
            record_own_change(&mut mb, before, after, self.fine_mtimes);
        }
        index::save_mailbox(&mut tx, &mb).await?;
        tx.commit().await?;
        drop(w);
        if !result.changed.is_empty() {
            self.notifier.touch();
        }
        result.messages = unchanged;
        result.messages.extend(changed_meta);
        result.messages.sort_by_key(|m| m.uid);
        Ok(result)
    }

    pub(super) async fn expunge(
        self: &Arc<Self>,
        name: &str,
        uids: Option<&[Uid]>,
    ) -> Result<Vec<Uid>> {
        let canonical = self.indexed_name(name).await?;
        match self.cfg.format {
            MailboxFormat::Maildir => self.expunge_maildir(&canonical, uids, true).await,
            MailboxFormat::Mbox => self.expunge_mbox(&canonical, uids, true).await,
        }
    }

    /// Removes messages (only `\Deleted` ones if `deleted_only`) from a Maildir.
    async fn expunge_maildir(
        &self,
        name: &str,
        uids: Option<&[Uid]>,
        deleted_only: bool,
    ) -> Result<Vec<Uid>> {
        let mut w = self.writer.lock().await;
        let mut tx = w.begin().await?;
        let mut mb = index::mailbox_by_name(tx.conn(), name)
            .await?
            .ok_or_else(|| StoreError::NoSuchMailbox(name.to_string()))?;
        let rows = match uids {
            Some(u) => index::message_rows_in(tx.conn(), mb.id, u).await?,
            None => index::message_rows(tx.conn(), mb.id).await?,
        };
        let doomed: Vec<MessageRow> = rows
            .into_iter()
            .filter(|r| !deleted_only || r.meta.flags.contains(Flag::Deleted))
            .collect();
        if doomed.is_empty() {
            return Ok(Vec::new());
        }
        let dir = self.mailbox_path(name);
        let files: Vec<(String, String)> = doomed
            .iter()
            .filter_map(|r| match &r.loc {
                Location::Maildir { base, in_cur } => Some((
                    base.clone(),
                    rel_path(base, *in_cur, r.meta.flags, &r.meta.keywords),
                )),
                Location::Mbox { .. } => None,
            })
            .collect();
        let d = dir.clone();
        let (before, after) = blocking(move || {
            let before = maildir::disk_state(&d)?;
            for (base, rel) in &files {
                match std::fs::remove_file(d.join(rel)) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        if let Some(p) = maildir::locate(&d, base)? {
                            std::fs::remove_file(p)?;
                        }
                    }
                    other => other?,
                }
            }
            Ok((before, maildir::disk_state(&d)?))
        })
        .await?;
        let modseq = mb.next_modseq(&mut tx);
        let mut out = Vec::with_capacity(doomed.len());
        for r in &doomed {
            index::expunge_message(&mut tx, mb.id, r.meta.uid, modseq).await?;
            out.push(r.meta.uid);
        }
        record_own_change(&mut mb, before, after, self.fine_mtimes);
        index::save_mailbox(&mut tx, &mb).await?;
        tx.commit().await?;
        drop(w);
        self.notifier.touch();
        Ok(out)
    }

    /// Removes messages from an mbox by rewriting the file in place under its lock.
    async fn expunge_mbox(
        &self,
        name: &str,
        uids: Option<&[Uid]>,
        deleted_only: bool,
    ) -> Result<Vec<Uid>> {
        let mut w = self.writer.lock().await;
        let lock = self.lock_mbox(name).await?;
        let mut tx = w.begin().await?;
        let mut mb = index::mailbox_by_name(tx.conn(), name)
            .await?
            .ok_or_else(|| StoreError::NoSuchMailbox(name.to_string()))?;
        let reconciled = self.mbox_sync_locked(&mut tx, &mut mb, &lock).await?;
        let mut rows = index::message_rows(tx.conn(), mb.id).await?;
        let wanted: Option<std::collections::HashSet<Uid>> =
            uids.map(|u| u.iter().copied().collect());
        let doomed = |r: &MessageRow| {
            (!deleted_only || r.meta.flags.contains(Flag::Deleted))
                && wanted.as_ref().is_none_or(|w| w.contains(&r.meta.uid))
        };
        if !rows.iter().any(doomed) {
            index::save_mailbox(&mut tx, &mb).await?;
            tx.commit().await?;
            if reconciled {
                // Other tools' changes just entered the index: sessions must look.
                self.notifier.touch();
            }
            return Ok(Vec::new());
        }
        let from_of = |r: &MessageRow| match r.loc {
            Location::Mbox { from, .. } => from,
            Location::Maildir { .. } => 0,
        };
        rows.sort_by_key(from_of);
        let l = lock.clone();
        let total = blocking(move || Ok(l.file().metadata()?.len())).await?;
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            if doomed(r) {
                let end = rows.get(i + 1).map_or(total, from_of);
                ranges.push((from_of(r), end));
            }
        }
        let rg = ranges.clone();
        let l = lock.clone();
        let after = blocking(move || {
            let new = mbox::rewrite_without(l.path(), l.file(), &rg, lock::lock_new_file)?;
            let state = mbox::state(&new)?;
            l.adopt(new);
            Ok(state)
        })
        .await?;
        let shift = |off: u64| -> u64 {
            ranges
                .iter()
                .filter(|(s, _)| *s < off)
                .map(|(s, e)| e - s)
                .sum()
        };
        let modseq = mb.next_modseq(&mut tx);
        let mut out = Vec::new();
        for r in &rows {
            if doomed(r) {
                index::expunge_message(&mut tx, mb.id, r.meta.uid, modseq).await?;
                out.push(r.meta.uid);
            } else if let Location::Mbox {
                from,
                off,
                len,
                fingerprint,
            } = r.loc
            {
                let d = shift(from);
                if d > 0 {
                    let mut moved = r.clone();
                    moved.loc = Location::Mbox {
                        from: from - d,
                        off: off - d,
                        len,
                        fingerprint,
                    };
                    index::update_message(&mut tx, mb.id, &moved).await?;
                }
            }
        }
        mb.disk = after;
        mb.recheck_after = 0;
        index::save_mailbox(&mut tx, &mb).await?;
        tx.commit().await?;
        drop(lock);
        drop(w);
        out.sort_unstable();
        self.notifier.touch();
        Ok(out)
    }

    pub(super) async fn copy_or_move(
        self: &Arc<Self>,
        from: &str,
        uids: &[Uid],
        to: &str,
        is_move: bool,
    ) -> Result<CopyResult> {
        let src = self.resolve(from).await?;
        let dst = self.resolve(to).await?;
        let email_ids = self.email_ids(src.id, uids).await?;
        let copied = match self.cfg.format {
            MailboxFormat::Maildir => self.copy_maildir(&src.name, uids, &dst.name, is_move).await,
            MailboxFormat::Mbox => self.copy_mbox(&src.name, uids, &dst.name, is_move).await,
        }?;
        // Copies keep their originals' EMAILID (RFC 8474 section 5.1).
        self.inherit_email_ids(dst.id, &email_ids, &copied.pairs)
            .await?;
        Ok(copied)
    }

    async fn copy_maildir(
        &self,
        from: &str,
        uids: &[Uid],
        to: &str,
        is_move: bool,
    ) -> Result<CopyResult> {
        let same = from == to;
        let mut w = self.writer.lock().await;
        let mut tx = w.begin().await?;
        let mut src = index::mailbox_by_name(tx.conn(), from)
            .await?
            .ok_or_else(|| StoreError::NoSuchMailbox(from.to_string()))?;
        let mut dst = index::mailbox_by_name(tx.conn(), to)
            .await?
            .ok_or_else(|| StoreError::NoSuchMailbox(to.to_string()))?;
        let rows = index::message_rows_in(tx.conn(), src.id, uids).await?;
        let src_dir = self.mailbox_path(from);
        let dst_dir = self.mailbox_path(to);
        // (source base, source rel path, destination base, destination rel path, in_cur)
        let plan: Vec<(String, String, String, String, bool)> = rows
            .iter()
            .filter_map(|r| match &r.loc {
                Location::Maildir { base, in_cur } => {
                    let nb = maildir::new_base(r.meta.size);
                    let cur = goes_to_cur(r.meta.flags, &r.meta.keywords);
                    Some((
                        base.clone(),
                        rel_path(base, *in_cur, r.meta.flags, &r.meta.keywords),
                        nb.clone(),
                        rel_path(&nb, cur, r.meta.flags, &r.meta.keywords),
                        cur,
                    ))
                }
                Location::Mbox { .. } => None,
            })
            .collect();
        let (sd, dd, p) = (src_dir.clone(), dst_dir.clone(), plan.clone());
        let (src_before, dst_before, done, src_after, dst_after) = blocking(move || {
            let src_before = maildir::disk_state(&sd)?;
            let dst_before = maildir::disk_state(&dd)?;
            let mut done = Vec::with_capacity(p.len());
            for (base, rel, _, new_rel, _) in &p {
                done.push(place_copy(&sd, base, rel, &dd.join(new_rel), is_move)?);
            }
            for sub in ["new", "cur"] {
                maildir::fsync_dir(&dd.join(sub))?;
                if is_move {
                    maildir::fsync_dir(&sd.join(sub))?;
                }
            }
            Ok((
                src_before,
                dst_before,
                done,
                maildir::disk_state(&sd)?,
                maildir::disk_state(&dd)?,
            ))
        })
        .await?;
        let mut pairs = Vec::new();
        let dst_modseq = dst.next_modseq(&mut tx);
        let mut moved = Vec::new();
        for ((r, (_, _, nb, _, cur)), ok) in rows.iter().zip(plan).zip(done) {
            if !ok {
                continue;
            }
            let uid = dst.next_uid(&mut tx);
            let row = MessageRow {
                meta: MessageMeta {
                    uid,
                    modseq: dst_modseq,
                    recent: false,
                    ..r.meta.clone()
                },
                loc: Location::Maildir {
                    base: nb,
                    in_cur: cur,
                },
            };
            index::insert_message(&mut tx, dst.id, &row).await?;
            pairs.push((r.meta.uid, uid));
            moved.push(r.meta.uid);
        }
        if same {
            src.uidnext = dst.uidnext;
            src.highest_modseq = dst.highest_modseq;
        }
        if is_move && !moved.is_empty() {
            let ms = src.next_modseq(&mut tx);
            for uid in &moved {
                index::expunge_message(&mut tx, src.id, *uid, ms).await?;
            }
        }
        if same {
            record_own_change(&mut src, src_before, src_after, self.fine_mtimes);
            index::save_mailbox(&mut tx, &src).await?;
        } else {
            record_own_change(&mut src, src_before, src_after, self.fine_mtimes);
            record_own_change(&mut dst, dst_before, dst_after, self.fine_mtimes);
            index::save_mailbox(&mut tx, &src).await?;
            index::save_mailbox(&mut tx, &dst).await?;
        }
        tx.commit().await?;
        drop(w);
        self.notifier.touch();
        Ok(CopyResult {
            uidvalidity: dst.uidvalidity,
            pairs,
        })
    }

    async fn copy_mbox(
        self: &Arc<Self>,
        from: &str,
        uids: &[Uid],
        to: &str,
        is_move: bool,
    ) -> Result<CopyResult> {
        // Read the sources first (never two mbox locks at once), then append; a batch of
        // at most COPY_BATCH_BYTES at a time, so `COPY 1:*` of a big mailbox does not hold
        // the mailbox in memory.
        let src = self.open_mailbox(from).await?;
        let rows = index::message_rows_in(&mut *self.pool.acquire().await?, src.id, uids).await?;
        let mut pairs = Vec::with_capacity(rows.len());
        let mut uidvalidity = None;
        let mut rest = &rows[..];
        while !rest.is_empty() {
            let mut n = 1;
            let mut bytes = rest[0].meta.size;
            while n < rest.len() && bytes + rest[n].meta.size <= COPY_BATCH_BYTES {
                bytes += rest[n].meta.size;
                n += 1;
            }
            let (batch, later) = rest.split_at(n);
            rest = later;
            let mut msgs = Vec::with_capacity(batch.len());
            let mut meta = Vec::with_capacity(batch.len());
            let mut src_uids = Vec::with_capacity(batch.len());
            for r in batch {
                let bytes = match self.read(from, r.meta.uid).await {
                    Ok(b) => b,
                    Err(StoreError::NoSuchMessage(_)) => continue,
                    Err(e) => return Err(e),
                };
                msgs.push((mbox::NewMessage::Bytes(bytes), r.meta.internal_date));
                meta.push((r.meta.flags, r.meta.keywords.clone()));
                src_uids.push(r.meta.uid);
            }
            if msgs.is_empty() {
                continue;
            }
            let appended = self.mbox_append(to, msgs, meta).await?;
            uidvalidity = uidvalidity.or(appended.first().map(|a| a.uidvalidity));
            pairs.extend(
                src_uids
                    .into_iter()
                    .zip(appended.into_iter().map(|a| a.uid)),
            );
        }
        let uidvalidity = match uidvalidity {
            Some(v) => v,
            None => self.resolve(to).await?.uidvalidity,
        };
        if is_move && !pairs.is_empty() {
            let moved: Vec<Uid> = pairs.iter().map(|p| p.0).collect();
            self.expunge_mbox(from, Some(&moved), false).await?;
        }
        if !pairs.is_empty() {
            self.notifier.touch();
        }
        Ok(CopyResult { uidvalidity, pairs })
    }
}

/// Renames a message file for new flags; false if it is gone.
fn rename_message(dir: &std::path::Path, base: &str, old: &str, new: &str) -> Result<bool> {
    match std::fs::rename(dir.join(old), dir.join(new)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => match maildir::locate(dir, base)? {
            Some(p) => {
                std::fs::rename(p, dir.join(new))?;
                Ok(true)
            }
            None => Ok(false),
        },
        Err(e) => Err(e.into()),
    }
}

/// Puts a copy (hard link, or a real copy where links fail) or the message itself (move)
/// at `dst`. False if the source is gone.
fn place_copy(
    src_dir: &std::path::Path,
    base: &str,
    rel: &str,
    dst: &std::path::Path,
    is_move: bool,
) -> Result<bool> {
    let mut src = src_dir.join(rel);
    if !src.exists() {
        match maildir::locate(src_dir, base)? {
            Some(p) => src = p,
            None => return Ok(false),
        }
    }
    let r = if is_move {
        std::fs::rename(&src, dst)
    } else {
        std::fs::hard_link(&src, dst)
    };
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(_) => {
            // Links not supported here: copy through tmp/ like a delivery.
            let bytes = std::fs::read(&src)?;
            let (_, mtime) = maildir::stat_file(&src)?;
            let dst_dir = dst
                .parent()
                .and_then(|p| p.parent())
                .ok_or_else(|| io::Error::other("bad destination"))?;
            let name = dst
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| io::Error::other("bad destination"))?;
            let tmp_name = name.split(":2,").next().unwrap_or(name);
            let tmp = maildir::write_tmp(dst_dir, tmp_name, &bytes, Some(mtime))?;
            std::fs::rename(tmp, dst)?;
            if is_move {
                std::fs::remove_file(&src)?;
            }
            Ok(true)
        }
    }
}
