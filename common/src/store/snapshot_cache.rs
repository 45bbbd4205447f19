//! The messages of a user's big mailboxes as last read from the index, so a SELECT reads
//! only what changed since (`index::changes_since`, by the modseq index) instead of every
//! row: reading 100,000 rows costs about a hundred milliseconds, a look for changes well
//! under one. Bounded: a few mailboxes per open user, and only big ones (small ones are
//! quick to read whole).

use std::sync::{Arc, Mutex};

use sqlx::Connection;

use super::index::{self, MailboxRow};
use super::types::{Changes, MessageMeta, ModSeq, Uid};
use super::user::Core;
use super::{Result, StoreError};

/// Mailboxes kept per user.
const ENTRIES: usize = 2;
/// Smaller mailboxes are read whole each time.
#[cfg(not(test))]
pub(super) const MIN_MESSAGES: usize = 1024;
/// Tests use the cache with a few messages.
#[cfg(test)]
pub(super) const MIN_MESSAGES: usize = 4;

/// One mailbox as the index had it at `highest_modseq`.
#[derive(Clone)]
pub(super) struct CachedMailbox {
    pub name: String,
    pub uidvalidity: u32,
    pub highest_modseq: ModSeq,
    /// Ascending UID; `recent` is always false here.
    pub messages: Arc<Vec<MessageMeta>>,
}

#[derive(Default)]
pub(super) struct SnapshotCache {
    /// Most recently used last.
    entries: Mutex<Vec<CachedMailbox>>,
}

impl SnapshotCache {
    pub(super) fn get(&self, name: &str) -> Option<CachedMailbox> {
        let e = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        e.iter().find(|c| c.name == name).cloned()
    }

    /// Keeps `m` (replacing an older entry for the same mailbox); big mailboxes only.
    pub(super) fn put(&self, m: CachedMailbox) {
        let mut e = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        e.retain(|c| c.name != m.name);
        if m.messages.len() < MIN_MESSAGES {
            return;
        }
        e.push(m);
        if e.len() > ENTRIES {
            e.remove(0);
        }
    }
}

impl Core {
    /// The mailbox row and every message of mailbox `name` (canonical), ascending UID, as
    /// of one moment of the index: from the cache plus what changed since, else read whole.
    pub(super) async fn current_messages(
        &self,
        name: &str,
    ) -> Result<(MailboxRow, Vec<MessageMeta>)> {
        let cached = self.snapshots.get(name);
        let mut conn = self.pool.acquire().await?;
        let mut rtx = conn.begin().await?;
        let mb = index::mailbox_by_name(&mut rtx, name)
            .await?
            .ok_or_else(|| StoreError::NoSuchMailbox(name.to_string()))?;
        if let Some(c) = cached.filter(|c| c.uidvalidity == mb.uidvalidity) {
            if c.highest_modseq == mb.highest_modseq {
                rtx.commit().await?;
                return Ok((mb, c.messages.as_ref().clone()));
            }
            if let Some(ch) = index::changes_since(&mut rtx, name, c.highest_modseq).await?
                && ch.uidvalidity == c.uidvalidity
            {
                rtx.commit().await?;
                let messages = apply(&c.messages, &ch);
                self.snapshots.put(CachedMailbox {
                    name: name.to_string(),
                    uidvalidity: ch.uidvalidity,
                    highest_modseq: ch.highest_modseq,
                    messages: Arc::new(messages.clone()),
                });
                return Ok((mb, messages));
            }
        }
        let messages = index::snapshot_messages(&mut rtx, mb.id).await?;
        rtx.commit().await?;
        if messages.len() >= MIN_MESSAGES {
            self.snapshots.put(CachedMailbox {
                name: name.to_string(),
                uidvalidity: mb.uidvalidity,
                highest_modseq: mb.highest_modseq,
                messages: Arc::new(messages.clone()),
            });
        }
        Ok((mb, messages))
    }
}

/// `old` (ascending UID) with `changes` applied: vanished UIDs removed, changed or new
/// messages put in their place. Linear in the mailbox plus the changes.
pub(super) fn apply(old: &[MessageMeta], changes: &Changes) -> Vec<MessageMeta> {
    let mut vanished: Vec<Uid> = changes.vanished.clone();
    vanished.sort_unstable();
    let mut changed: Vec<&MessageMeta> = changes.changed.iter().collect();
    changed.sort_by_key(|m| m.uid);
    changed.dedup_by_key(|m| m.uid);
    let gone = |uid: Uid| vanished.binary_search(&uid).is_ok();
    let mut out = Vec::with_capacity(old.len() + changed.len());
    let mut new = changed.into_iter().peekable();
    for m in old {
        while let Some(n) = new.next_if(|n| n.uid < m.uid) {
            if !gone(n.uid) {
                out.push(n.clone());
            }
        }
        if let Some(n) = new.next_if(|n| n.uid == m.uid) {
            if !gone(n.uid) {
                out.push(n.clone());
            }
        } else if !gone(m.uid) {
            out.push(m.clone());
        }
    }
    out.extend(new.filter(|n| !gone(n.uid)).cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Flags;

    fn meta(uid: Uid, modseq: ModSeq) -> MessageMeta {
        MessageMeta {
            uid,
            flags: Flags::EMPTY,
            keywords: Vec::new(),
            modseq,
            size: 10,
            internal_date: 0,
            recent: false,
        }
    }

    #[test]
    fn changes_apply_in_uid_order() {
        let old: Vec<MessageMeta> = [1, 3, 5, 7].iter().map(|&u| meta(u, 1)).collect();
        let changes = Changes {
            uidvalidity: 1,
            uidnext: 10,
            highest_modseq: 5,
            changed: vec![meta(9, 5), meta(3, 4), meta(4, 3)],
            vanished: vec![5, 8],
        };
        let got: Vec<(Uid, ModSeq)> = apply(&old, &changes)
            .iter()
            .map(|m| (m.uid, m.modseq))
            .collect();
        assert_eq!(got, vec![(1, 1), (3, 4), (4, 3), (7, 1), (9, 5)]);
    }
}
