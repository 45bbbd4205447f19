//! Save dates (SAVEDATE, RFC 8514) and object ids (OBJECTID, RFC 8474) of messages and
//! mailboxes.
//!
//! A table of its own beside `message`, filled by SQLite triggers: every message row
//! inserted, by any code path or any hermod version that opens this index, gets the time
//! it was saved and a random EMAILID; deleting the row deletes them. COPY and MOVE give
//! the copies their originals' EMAILID (RFC 8474 section 5.1). Indexes made before this
//! table existed get it at open, their messages an EMAILID and no save date (SAVEDATE NIL).
//! A MAILBOXID is the mailbox row's id with its UIDVALIDITY: stable across RENAME and
//! restarts, never the same for two mailboxes.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::{Connection, SqliteConnection};

use super::UserStore;
use super::error::Result;
use super::types::Uid;
use super::user::Core;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS message_object (
    mailbox_id INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    save_date INTEGER,
    email_id TEXT NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS message_object_saved AFTER INSERT ON message BEGIN
    INSERT OR REPLACE INTO message_object (mailbox_id, uid, save_date, email_id)
    VALUES (NEW.mailbox_id, NEW.uid, unixepoch(), 'E' || lower(hex(randomblob(12))));
END;
CREATE TRIGGER IF NOT EXISTS message_object_gone AFTER DELETE ON message BEGIN
    DELETE FROM message_object WHERE mailbox_id = OLD.mailbox_id AND uid = OLD.uid;
END;
"#;

/// Creates the table and triggers if this index has none yet, giving the messages already
/// there an EMAILID. Runs at open, in one transaction (other processes may open at once).
pub(super) async fn migrate(conn: &mut SqliteConnection) -> Result<()> {
    let present: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = 'message_object_gone'",
    )
    .fetch_optional(&mut *conn)
    .await?;
    if present.is_some() {
        return Ok(());
    }
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::raw_sql(SCHEMA).execute(&mut *tx).await?;
    sqlx::query(
        "INSERT OR IGNORE INTO message_object (mailbox_id, uid, save_date, email_id) \
         SELECT mailbox_id, uid, NULL, 'E' || lower(hex(randomblob(12))) FROM message",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// What OBJECTID and SAVEDATE report about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageObject {
    /// When the message was saved into this mailbox (Unix seconds); `None` for messages
    /// older than this record.
    pub save_date: Option<i64>,
    /// The EMAILID (RFC 8474), the same for a message and its copies.
    pub email_id: String,
}

impl Core {
    async fn message_objects(
        self: &Arc<Self>,
        mailbox: &str,
        uids: Option<&[Uid]>,
    ) -> Result<HashMap<Uid, MessageObject>> {
        let mb = self.resolve(mailbox).await?;
        let (lo, hi) = match uids {
            Some(u) => match (u.iter().min(), u.iter().max()) {
                (Some(lo), Some(hi)) => (*lo, *hi),
                _ => return Ok(HashMap::new()),
            },
            None => (0, Uid::MAX),
        };
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query_as::<_, (i64, Option<i64>, Option<String>)>(
            "SELECT m.uid, o.save_date, o.email_id FROM message m LEFT JOIN message_object o \
             ON o.mailbox_id = m.mailbox_id AND o.uid = m.uid \
             WHERE m.mailbox_id = ? AND m.uid BETWEEN ? AND ?",
        )
        .bind(mb.id)
        .bind(i64::from(lo))
        .bind(i64::from(hi))
        .fetch_all(&mut *conn)
        .await?;
        let wanted: Option<std::collections::HashSet<Uid>> =
            uids.map(|u| u.iter().copied().collect());
        let mut out = HashMap::with_capacity(rows.len());
        for (uid, save_date, email_id) in rows {
            let Ok(uid) = Uid::try_from(uid) else {
                continue;
            };
            if wanted.as_ref().is_some_and(|w| !w.contains(&uid)) {
                continue;
            }
            // A row written by a process without the trigger: an id from the place.
            let email_id = email_id.unwrap_or_else(|| format!("P{:x}u{:x}", mb.id, uid));
            out.insert(
                uid,
                MessageObject {
                    save_date,
                    email_id,
                },
            );
        }
        Ok(out)
    }

    /// The EMAILIDs of `uids` in the mailbox row `mailbox_id` (before a COPY or MOVE).
    pub(super) async fn email_ids(
        self: &Arc<Self>,
        mailbox_id: i64,
        uids: &[Uid],
    ) -> Result<HashMap<Uid, String>> {
        let (Some(lo), Some(hi)) = (uids.iter().min(), uids.iter().max()) else {
            return Ok(HashMap::new());
        };
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query_as::<_, (i64, String)>(
            "SELECT uid, email_id FROM message_object WHERE mailbox_id = ? AND uid BETWEEN ? AND ?",
        )
        .bind(mailbox_id)
        .bind(i64::from(*lo))
        .bind(i64::from(*hi))
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(u, id)| Uid::try_from(u).ok().map(|u| (u, id)))
            .collect())
    }

    /// Gives copies the EMAILID of their originals: `pairs` are (source UID, new UID).
    pub(super) async fn inherit_email_ids(
        self: &Arc<Self>,
        dst_mailbox_id: i64,
        ids: &HashMap<Uid, String>,
        pairs: &[(Uid, Uid)],
    ) -> Result<()> {
        if ids.is_empty() || pairs.is_empty() {
            return Ok(());
        }
        let mut w = self.writer.lock().await;
        let mut tx = w.begin().await?;
        for (src, dst) in pairs {
            if let Some(id) = ids.get(src) {
                sqlx::query(
                    "UPDATE message_object SET email_id = ? WHERE mailbox_id = ? AND uid = ?",
                )
                .bind(id)
                .bind(dst_mailbox_id)
                .bind(i64::from(*dst))
                .execute(tx.conn())
                .await?;
            }
        }
        tx.commit().await
    }
}

impl UserStore {
    /// SAVEDATE and EMAILID of the messages `uids` of `mailbox` (all with `None`); absent
    /// UIDs are left out.
    pub async fn message_objects(
        &self,
        mailbox: &str,
        uids: Option<&[Uid]>,
    ) -> Result<HashMap<Uid, MessageObject>> {
        self.shared.core().message_objects(mailbox, uids).await
    }

    /// The MAILBOXID of `mailbox` (RFC 8474): the same across RENAME and restarts.
    pub async fn mailbox_id(&self, mailbox: &str) -> Result<String> {
        let mb = self.shared.core().resolve(mailbox).await?;
        Ok(format!("M{:x}-{:x}", mb.id, mb.uidvalidity))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Store, StoreConfig};

    fn message(subject: &str) -> Vec<u8> {
        format!("From: a@example.org\r\nSubject: {subject}\r\n\r\nbody\r\n").into_bytes()
    }

    /// Save dates and EMAILIDs: set on delivery, kept across a restart, inherited by
    /// copies and moves, distinct for distinct messages; MAILBOXID survives RENAME.
    #[tokio::test]
    async fn ids_are_stable_and_follow_copies() {
        let maildir = |d: &std::path::Path| StoreConfig::maildir(d);
        let mbox = |d: &std::path::Path| StoreConfig::mbox(d, "spool/{localpart}");
        for (kind, cfg) in [
            (
                "maildir",
                &maildir as &dyn Fn(&std::path::Path) -> StoreConfig,
            ),
            ("mbox", &mbox),
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let store = Store::new(cfg(tmp.path()));
            let u = store.user("alice", "example.org").await.unwrap();
            let before = super::super::user::unix_now() as i64;
            let a = u.deliver("INBOX", &message("a")).await.unwrap();
            let b = u.deliver("INBOX", &message("b")).await.unwrap();
            let objs = u.message_objects("INBOX", None).await.unwrap();
            let (oa, ob) = (&objs[&a], &objs[&b]);
            assert_ne!(oa.email_id, ob.email_id, "{kind}");
            assert!(oa.save_date.unwrap() >= before, "{kind}");
            u.create("Box", None).await.unwrap();
            let box_id = u.mailbox_id("Box").await.unwrap();
            assert_ne!(box_id, u.mailbox_id("INBOX").await.unwrap());
            let copied = u.copy("INBOX", &[a], "Box").await.unwrap();
            let moved = u.move_messages("INBOX", &[b], "Box").await.unwrap();
            let boxed = u.message_objects("Box", None).await.unwrap();
            assert_eq!(boxed[&copied.pairs[0].1].email_id, oa.email_id, "{kind}");
            assert_eq!(boxed[&moved.pairs[0].1].email_id, ob.email_id, "{kind}");
            u.rename("Box", "Renamed").await.unwrap();
            assert_eq!(u.mailbox_id("Renamed").await.unwrap(), box_id, "{kind}");
            drop(u);
            drop(store);
            let store = Store::new(cfg(tmp.path()));
            let u = store.user("alice", "example.org").await.unwrap();
            let again = u.message_objects("INBOX", Some(&[a])).await.unwrap();
            assert_eq!(&again[&a], oa, "{kind}: kept across a restart");
            assert_eq!(u.mailbox_id("Renamed").await.unwrap(), box_id, "{kind}");
        }
    }

    /// An index from before this table: its messages get an EMAILID and no save date.
    #[tokio::test]
    async fn old_indexes_get_ids_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(StoreConfig::maildir(tmp.path()));
        let u = store.user("alice", "example.org").await.unwrap();
        let uid = u.deliver("INBOX", &message("old")).await.unwrap();
        let index = u.dir().join("index.sqlite");
        drop(u);
        drop(store);
        // Make it look like an old index: no table, no triggers.
        {
            use sqlx::Connection;
            let url = format!("sqlite://{}", index.display());
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::raw_sql(
                "DROP TRIGGER message_object_saved; DROP TRIGGER message_object_gone; \
                 DROP TABLE message_object;",
            )
            .execute(&mut c)
            .await
            .unwrap();
            c.close().await.unwrap();
        }
        let store = Store::new(StoreConfig::maildir(tmp.path()));
        let u = store.user("alice", "example.org").await.unwrap();
        let objs = u.message_objects("INBOX", None).await.unwrap();
        assert_eq!(objs[&uid].save_date, None);
        assert!(objs[&uid].email_id.starts_with('E'), "{:?}", objs[&uid]);
        let new = u.deliver("INBOX", &message("new")).await.unwrap();
        let objs = u.message_objects("INBOX", None).await.unwrap();
        assert!(objs[&new].save_date.is_some());
    }
}
