//! Per-message parse results cached in the index (for IMAP: ENVELOPE, BODY and
//! BODYSTRUCTURE), so a client listing a large folder does not make the server read and
//! parse every file again. The store treats a value as opaque bytes; the reader that made it
//! owns its format (and should put a version in it). A value is dropped with its message,
//! and ignored if the message's size no longer matches (a file rewritten behind our back).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::error::Result;
use super::index;
use super::types::Uid;
use super::user::Core;

impl Core {
    pub(super) async fn cached(
        self: &Arc<Self>,
        mailbox: &str,
        uids: &[Uid],
    ) -> Result<HashMap<Uid, Vec<u8>>> {
        let mb = self.resolve(mailbox).await?;
        let (Some(lo), Some(hi)) = (uids.iter().min(), uids.iter().max()) else {
            return Ok(HashMap::new());
        };
        let wanted: HashSet<Uid> = uids.iter().copied().collect();
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query_as::<_, (i64, Vec<u8>)>(
            "SELECT c.uid, c.value FROM message_cache c JOIN message m \
             ON m.mailbox_id = c.mailbox_id AND m.uid = c.uid AND m.size = c.size \
             WHERE c.mailbox_id = ? AND c.uid BETWEEN ? AND ?",
        )
        .bind(mb.id)
        .bind(i64::from(*lo))
        .bind(i64::from(*hi))
        .fetch_all(&mut *conn)
        .await?;
        let mut out = HashMap::with_capacity(wanted.len());
        for (uid, value) in rows {
            if let Ok(uid) = Uid::try_from(uid)
                && wanted.contains(&uid)
            {
                out.insert(uid, value);
            }
        }
        Ok(out)
    }

    pub(super) async fn set_cached(
        self: &Arc<Self>,
        mailbox: &str,
        values: &[(Uid, Vec<u8>)],
    ) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let mb = self.resolve(mailbox).await?;
        let mut w = self.writer.lock().await;
        let mut tx = w.begin().await?;
        for (uid, value) in values {
            // Only for a message that is still there, stamped with its current size.
            sqlx::query(
                "INSERT OR REPLACE INTO message_cache (mailbox_id, uid, size, value) \
                 SELECT mailbox_id, uid, size, ? FROM message WHERE mailbox_id = ? AND uid = ?",
            )
            .bind(value.as_slice())
            .bind(mb.id)
            .bind(i64::from(*uid))
            .execute(tx.conn())
            .await?;
        }
        tx.commit().await?;
        drop(w);
        Ok(())
    }
}

/// Drops the cached values of expunged messages or of a deleted mailbox.
pub(super) async fn forget(
    tx: &mut index::WriteTx<'_>,
    mailbox_id: i64,
    uid: Option<Uid>,
) -> Result<()> {
    match uid {
        Some(uid) => {
            sqlx::query("DELETE FROM message_cache WHERE mailbox_id = ? AND uid = ?")
                .bind(mailbox_id)
                .bind(i64::from(uid))
                .execute(tx.conn())
                .await?
        }
        None => {
            sqlx::query("DELETE FROM message_cache WHERE mailbox_id = ?")
                .bind(mailbox_id)
                .execute(tx.conn())
                .await?
        }
    };
    Ok(())
}
