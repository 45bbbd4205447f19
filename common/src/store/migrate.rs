//! Index layout versions after the first (`PRAGMA user_version`), applied at open.
//!
//! Version 2 keeps per-mailbox counters (messages, unseen, bytes, messages in the full-text
//! index) up to date by triggers on every insert, update and delete of a message row, so
//! SELECT, STATUS and quotas read them instead of counting 100,000 rows; and adds the
//! full-text index of `text_index.rs` (an FTS5 table with the trigram tokenizer), whose
//! rows go with their messages by trigger too. Triggers cover every writer: this process,
//! other hermod processes on the same data, and every code path that changes messages.

use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, Row};

use super::Result;

/// The layout this code writes.
pub(super) const VERSION: i64 = 2;

const TO_2: &str = r#"
ALTER TABLE mailbox ADD COLUMN msg_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE mailbox ADD COLUMN unseen_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE mailbox ADD COLUMN total_size INTEGER NOT NULL DEFAULT 0;
ALTER TABLE mailbox ADD COLUMN text_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE message ADD COLUMN text_indexed INTEGER NOT NULL DEFAULT 0;
UPDATE mailbox SET
    msg_count = (SELECT COUNT(*) FROM message m WHERE m.mailbox_id = mailbox.id),
    unseen_count = (SELECT COUNT(*) FROM message m
                    WHERE m.mailbox_id = mailbox.id AND (m.flags & 1) = 0),
    total_size = (SELECT COALESCE(SUM(m.size), 0) FROM message m
                  WHERE m.mailbox_id = mailbox.id);
CREATE INDEX IF NOT EXISTS message_unseen ON message (mailbox_id, uid) WHERE (flags & 1) = 0;
CREATE VIRTUAL TABLE IF NOT EXISTS message_text USING fts5(
    f_subject, f_from, f_to, f_cc, f_bcc, headers, body,
    tokenize = 'trigram case_sensitive 1', content = '', contentless_delete = 1
);
CREATE TRIGGER IF NOT EXISTS message_counted AFTER INSERT ON message BEGIN
    UPDATE mailbox SET msg_count = msg_count + 1,
        unseen_count = unseen_count + ((new.flags & 1) = 0),
        total_size = total_size + new.size,
        text_count = text_count + (new.text_indexed != 0)
    WHERE id = new.mailbox_id;
END;
CREATE TRIGGER IF NOT EXISTS message_uncounted AFTER DELETE ON message BEGIN
    UPDATE mailbox SET msg_count = msg_count - 1,
        unseen_count = unseen_count - ((old.flags & 1) = 0),
        total_size = total_size - old.size,
        text_count = text_count - (old.text_indexed != 0)
    WHERE id = old.mailbox_id;
END;
CREATE TRIGGER IF NOT EXISTS message_text_gone AFTER DELETE ON message
WHEN old.text_indexed != 0 BEGIN
    DELETE FROM message_text WHERE rowid = old.mailbox_id * 4294967296 + old.uid;
END;
CREATE TRIGGER IF NOT EXISTS message_recounted
AFTER UPDATE OF flags, size, text_indexed, mailbox_id ON message
WHEN (old.flags & 1) != (new.flags & 1) OR old.size != new.size
    OR old.text_indexed != new.text_indexed OR old.mailbox_id != new.mailbox_id BEGIN
    UPDATE mailbox SET msg_count = msg_count - 1,
        unseen_count = unseen_count - ((old.flags & 1) = 0),
        total_size = total_size - old.size,
        text_count = text_count - (old.text_indexed != 0)
    WHERE id = old.mailbox_id;
    UPDATE mailbox SET msg_count = msg_count + 1,
        unseen_count = unseen_count + ((new.flags & 1) = 0),
        total_size = total_size + new.size,
        text_count = text_count + (new.text_indexed != 0)
    WHERE id = new.mailbox_id;
END;
"#;

/// Brings the index at `conn` (made by `index::SCHEMA`) to [`VERSION`]. Safe against
/// another process doing the same at the same time (the check is under the write lock).
pub(super) async fn migrate(conn: &mut SqliteConnection) -> Result<()> {
    if user_version(conn).await? >= VERSION {
        return Ok(());
    }
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let v = user_version(&mut tx).await?;
    // An older hermod opening a newer index resets the version to 1 (its schema sets it)
    // but keeps the columns and triggers, which went on counting for it.
    if v < 2 && !has_column(&mut tx, "mailbox", "msg_count").await? {
        sqlx::raw_sql(TO_2).execute(&mut *tx).await?;
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "PRAGMA user_version = {VERSION}"
    )))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn user_version(c: &mut SqliteConnection) -> Result<i64> {
    Ok(sqlx::query_scalar::<_, i64>("PRAGMA user_version")
        .fetch_one(c)
        .await?)
}

async fn has_column(c: &mut SqliteConnection, table: &str, column: &str) -> Result<bool> {
    let rows = sqlx::query("SELECT name FROM pragma_table_info(?)")
        .bind(table)
        .fetch_all(c)
        .await?;
    Ok(rows
        .iter()
        .any(|r| r.try_get::<String, _>(0).is_ok_and(|n| n == column)))
}
