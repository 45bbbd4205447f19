//! Reconciliation of a mailbox's messages with the disk: files added, removed or renamed
//! behind the store's back (another MDA, a shell user, mutt) are picked up, keeping the
//! UIDs of messages that stayed. Cheap when nothing changed: one or two `stat`s compared
//! with the state recorded in the index.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::index::{self, DiskState, Location, MailboxRow, MessageRow, WriteTx};
use super::lock::MboxLock;
use super::maildir::{self, FORWARDED};
use super::mbox;
use super::name::INBOX;
use super::user::{Core, blocking, now_ns};
use super::{MailboxFormat, MessageMeta, Result, StoreError};

const SETTLE_NS: i64 = 1_000_000_000;

/// How long a look at a mailbox's disk stands for `changes_since`: other tools' changes
/// show within this time; hermod's own are in the index at once.
pub(super) const DISK_FRESH: Duration = Duration::from_secs(1);

/// After seeing a disk state whose newest mtime is `newest`: if that is less than a second
/// ago, a later change could still share the mtime, so check again once it has settled.
/// Not needed where every change after a `stat` gets a new mtime (`fine`).
pub(super) fn recheck_after(newest: i64, fine: bool) -> i64 {
    let t = newest.saturating_add(SETTLE_NS);
    if !fine && now_ns() < t { t } else { 0 }
}

/// Does the index need a full scan to match this disk state?
pub(super) fn needs_scan(row: &MailboxRow, state: DiskState) -> bool {
    state != row.disk || (row.recheck_after != 0 && now_ns() >= row.recheck_after)
}

/// After our own change under the write lock: if the index matched the disk before it, it
/// matches after it too (other hermod writers wait for the lock; other tools are caught by
/// the settle re-check).
pub(super) fn record_own_change(
    row: &mut MailboxRow,
    before: DiskState,
    after: DiskState,
    fine: bool,
) {
    if before == row.disk {
        row.disk = after;
        let r = recheck_after(maildir::newest(after), fine);
        if r != 0 {
            row.recheck_after = row.recheck_after.max(r);
        }
    }
}

fn disk_state_of(format: MailboxFormat, path: &Path) -> io::Result<DiskState> {
    match format {
        MailboxFormat::Maildir => maildir::disk_state(path),
        MailboxFormat::Mbox => mbox::state(&std::fs::File::open(path)?),
    }
}

/// Keywords after the Maildir `P` letter was seen (or not) on disk.
fn with_forwarded(mut kw: Vec<String>, passed: bool) -> Vec<String> {
    let has = kw.iter().any(|k| k.eq_ignore_ascii_case(FORWARDED));
    if passed && !has {
        kw.push(FORWARDED.to_string());
    } else if !passed && has {
        kw.retain(|k| !k.eq_ignore_ascii_case(FORWARDED));
    }
    kw
}

impl Core {
    /// The mailbox row, after reconciling its messages with the disk if the disk changed.
    pub(super) async fn open_mailbox(self: &Arc<Self>, name: &str) -> Result<MailboxRow> {
        let row = self.resolve(name).await?;
        let path = self.mailbox_path(&row.name);
        let format = self.cfg.format;
        let is_inbox = row.name == INBOX;
        let state = blocking(move || match disk_state_of(format, &path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && is_inbox => {
                // The INBOX is always there; recreate what other tools removed.
                match format {
                    MailboxFormat::Maildir => maildir::ensure_root(&path)?,
                    MailboxFormat::Mbox => {
                        std::fs::OpenOptions::new()
                            .append(true)
                            .create(true)
                            .open(&path)?;
                    }
                }
                Ok(disk_state_of(format, &path)?)
            }
            other => Ok(other?),
        })
        .await;
        let state = match state {
            Ok(s) => s,
            Err(StoreError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                self.reconcile_mailboxes().await?;
                return Err(StoreError::NoSuchMailbox(row.name));
            }
            Err(e) => return Err(e),
        };
        let row = if needs_scan(&row, state) {
            match format {
                MailboxFormat::Maildir => self.sync_maildir(&row.name).await?,
                MailboxFormat::Mbox => self.sync_mbox(&row.name).await?,
            }
        } else {
            row
        };
        self.disk_checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(row.name.clone(), Instant::now());
        Ok(row)
    }

    /// The canonical name of a mailbox that is in the index, for callers that look it up
    /// again in their transaction anyway: no query if it was seen there a moment ago.
    pub(super) async fn indexed_name(self: &Arc<Self>, name: &str) -> Result<String> {
        let canonical = self.canonical(name)?;
        if self.disk_fresh(&canonical) {
            return Ok(canonical);
        }
        Ok(self.resolve(&canonical).await?.name)
    }

    /// Was this mailbox's disk compared with the index less than [`DISK_FRESH`] ago?
    pub(super) fn disk_fresh(&self, canonical: &str) -> bool {
        self.disk_checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(canonical)
            .is_some_and(|t| t.elapsed() < DISK_FRESH)
    }

    async fn sync_maildir(self: &Arc<Self>, canonical: &str) -> Result<MailboxRow> {
        let mut w = self.writer.lock().await;
        let mut tx = w.begin().await?;
        let mut mb = index::mailbox_by_name(tx.conn(), canonical)
            .await?
            .ok_or_else(|| StoreError::NoSuchMailbox(canonical.to_string()))?;
        let dir = self.mailbox_path(canonical);
        let d = dir.clone();
        let (state, entries) = blocking(move || {
            maildir::clean_tmp(&d);
            Ok(maildir::scan(&d)?)
        })
        .await?;
        if !needs_scan(&mb, state) {
            return Ok(mb);
        }
        let rows = index::message_rows(tx.conn(), mb.id).await?;
        let mut on_disk: HashMap<String, maildir::Entry> =
            entries.into_iter().map(|e| (e.base.clone(), e)).collect();
        let mut modseq = None;
        let mut changed = false;
        for row in rows {
            let Location::Maildir { base, in_cur } = &row.loc else {
                continue;
            };
            match on_disk.remove(base) {
                None => {
                    let ms = *modseq.get_or_insert_with(|| mb.next_modseq(&mut tx));
                    index::expunge_message(&mut tx, mb.id, row.meta.uid, ms).await?;
                    changed = true;
                }
                Some(e) => {
                    let kw = with_forwarded(row.meta.keywords.clone(), e.passed);
                    let flags_changed = e.flags != row.meta.flags || kw != row.meta.keywords;
                    if flags_changed || e.in_cur != *in_cur {
                        let mut updated = row.clone();
                        if flags_changed {
                            updated.meta.modseq =
                                *modseq.get_or_insert_with(|| mb.next_modseq(&mut tx));
                            changed = true;
                        }
                        updated.meta.flags = e.flags;
                        updated.meta.keywords = kw;
                        updated.loc = Location::Maildir {
                            base: base.clone(),
                            in_cur: e.in_cur,
                        };
                        index::update_message(&mut tx, mb.id, &updated).await?;
                    }
                }
            }
        }
        // Files nobody indexed: another MDA, a shell user, or a crash after rename.
        let fresh: Vec<maildir::Entry> = on_disk.into_values().collect();
        if !fresh.is_empty() {
            let d = dir.clone();
            let mut found: Vec<(maildir::Entry, u64, i64)> = blocking(move || {
                let mut out = Vec::new();
                for e in fresh {
                    let sub = if e.in_cur { "cur" } else { "new" };
                    match maildir::stat_file(&d.join(sub).join(&e.file_name)) {
                        Ok((size, mtime)) => out.push((e, size, mtime)),
                        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                        Err(err) => return Err(err.into()),
                    }
                }
                Ok(out)
            })
            .await?;
            found.sort_by(|a, b| (a.2, &a.0.base).cmp(&(b.2, &b.0.base)));
            for (e, size, mtime) in found {
                let ms = *modseq.get_or_insert_with(|| mb.next_modseq(&mut tx));
                let uid = mb.next_uid(&mut tx);
                let keywords = with_forwarded(Vec::new(), e.passed);
                let row = MessageRow {
                    meta: MessageMeta {
                        uid,
                        flags: e.flags,
                        keywords,
                        modseq: ms,
                        size,
                        internal_date: mtime,
                        recent: false,
                    },
                    loc: Location::Maildir {
                        base: e.base,
                        in_cur: e.in_cur,
                    },
                };
                index::insert_message(&mut tx, mb.id, &row).await?;
                changed = true;
            }
        }
        mb.disk = state;
        mb.recheck_after = recheck_after(maildir::newest(state), self.fine_mtimes);
        index::save_mailbox(&mut tx, &mb).await?;
        tx.commit().await?;
        drop(w);
        if changed {
            tracing::debug!(mailbox = canonical, "reconciled with disk");
            self.notifier.touch();
        }
        Ok(mb)
    }

    async fn sync_mbox(self: &Arc<Self>, canonical: &str) -> Result<MailboxRow> {
        let mut w = self.writer.lock().await;
        let lock = self.lock_mbox(canonical).await?;
        let mut tx = w.begin().await?;
        let mut mb = index::mailbox_by_name(tx.conn(), canonical)
            .await?
            .ok_or_else(|| StoreError::NoSuchMailbox(canonical.to_string()))?;
        let changed = self.mbox_sync_locked(&mut tx, &mut mb, &lock).await?;
        index::save_mailbox(&mut tx, &mb).await?;
        tx.commit().await?;
        drop(lock);
        drop(w);
        if changed {
            self.notifier.touch();
        }
        Ok(mb)
    }

    /// Re-reads a locked mbox if it changed since the index last matched it, matching
    /// messages by fingerprint (in file order) so that those that stayed keep their UIDs.
    /// Updates `mb.disk` (the caller saves `mb`). Returns true if messages were added or
    /// expunged.
    pub(super) async fn mbox_sync_locked(
        &self,
        tx: &mut WriteTx<'_>,
        mb: &mut MailboxRow,
        lock: &Arc<MboxLock>,
    ) -> Result<bool> {
        let l = lock.clone();
        let state = blocking(move || Ok(mbox::state(l.file())?)).await?;
        if !needs_scan(mb, state) {
            return Ok(false);
        }
        let l = lock.clone();
        let (parsed, mtime) = blocking(move || {
            let parsed = mbox::parse(l.file())?;
            Ok((parsed, l.file().metadata()?.modified().ok()))
        })
        .await?;
        let fallback_date = mtime
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        let rows = index::message_rows(tx.conn(), mb.id).await?;
        let mut by_fp: HashMap<u64, VecDeque<MessageRow>> = HashMap::new();
        for r in rows {
            if let Location::Mbox { fingerprint, .. } = r.loc {
                by_fp.entry(fingerprint).or_default().push_back(r);
            }
        }
        let mut modseq = None;
        let mut changed = false;
        for p in parsed {
            let loc = Location::Mbox {
                from: p.from,
                off: p.off,
                len: p.len,
                fingerprint: p.fingerprint,
            };
            match by_fp.get_mut(&p.fingerprint).and_then(VecDeque::pop_front) {
                Some(mut r) => {
                    if r.loc != loc || r.meta.size != p.size {
                        r.loc = loc;
                        r.meta.size = p.size;
                        index::update_message(tx, mb.id, &r).await?;
                    }
                }
                None => {
                    let ms = *modseq.get_or_insert_with(|| mb.next_modseq(tx));
                    let uid = mb.next_uid(tx);
                    let r = MessageRow {
                        meta: MessageMeta {
                            uid,
                            flags: super::Flags::EMPTY,
                            keywords: Vec::new(),
                            modseq: ms,
                            size: p.size,
                            internal_date: p.date.unwrap_or(fallback_date),
                            recent: false,
                        },
                        loc,
                    };
                    index::insert_message(tx, mb.id, &r).await?;
                    changed = true;
                }
            }
        }
        for r in by_fp.into_values().flatten() {
            let ms = *modseq.get_or_insert_with(|| mb.next_modseq(tx));
            index::expunge_message(tx, mb.id, r.meta.uid, ms).await?;
            changed = true;
        }
        mb.disk = state;
        mb.recheck_after = 0;
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_states_are_rechecked_only_with_coarse_mtimes() {
        let now = now_ns();
        assert!(recheck_after(now, false) > now);
        assert_eq!(recheck_after(now, true), 0);
        assert_eq!(recheck_after(now - 5 * SETTLE_NS, false), 0);
        let dir = tempfile::tempdir().unwrap();
        // Whatever the kernel offers, the probe leaves nothing behind.
        let _ = maildir::fine_grained_mtimes(dir.path());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
