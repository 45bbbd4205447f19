//! The full-text index: for every message, the text IMAP SEARCH compares with
//! ([`IndexedText`]), in an SQLite FTS5 table with the trigram tokenizer. A phrase query
//! of a needle's trigrams finds exactly the messages whose text contains the needle as a
//! substring (the text is stored in lower case, the tokenizer is case-sensitive, so nothing
//! is folded twice), which is IMAP's substring semantics; needles it cannot answer
//! (`search_text::usable_needle`) are left to the caller's scan.
//!
//! Messages get their row at APPEND and delivery (in the transaction that adds them); older
//! ones (filed before the index existed, by other tools, copies) by a background task that
//! the first search needing them starts, a batch per transaction. The row goes with
//! its message (a trigger, `migrate.rs`), and `mailbox.text_count` counts the indexed
//! messages, so "is every message indexed" is one row read.

use std::sync::Arc;

use sqlx::sqlite::SqliteConnection;

use super::error::Result;
use super::index::WriteTx;
use super::types::Uid;
use super::user::Core;
pub use crate::search_text::IndexedText;

/// What a text search key compares with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextField {
    Subject,
    From,
    To,
    Cc,
    Bcc,
    /// Any header field (HEADER: the caller still checks the field name).
    Headers,
    Body,
    /// TEXT: any header field or the body.
    Text,
}

impl TextField {
    fn columns(self) -> &'static str {
        match self {
            TextField::Subject => "f_subject",
            TextField::From => "f_from",
            TextField::To => "f_to",
            TextField::Cc => "f_cc",
            TextField::Bcc => "f_bcc",
            TextField::Headers => "headers",
            TextField::Body => "body",
            TextField::Text => "{headers body}",
        }
    }
}

/// The FTS5 query for `needle` in `field`: one phrase, its double quotes doubled (inside a
/// phrase nothing else is syntax).
fn match_expr(field: TextField, needle: &str) -> String {
    format!("{} : \"{}\"", field.columns(), needle.replace('"', "\"\""))
}

/// Adds the row of message `uid` unless it has one; false if the message is not there.
pub(super) async fn insert(
    tx: &mut WriteTx<'_>,
    mailbox_id: i64,
    uid: Uid,
    text: &IndexedText,
) -> Result<bool> {
    let marked = sqlx::query(
        "UPDATE message SET text_indexed = 1 \
         WHERE mailbox_id = ? AND uid = ? AND text_indexed = 0",
    )
    .bind(mailbox_id)
    .bind(i64::from(uid))
    .execute(tx.conn())
    .await?
    .rows_affected();
    if marked == 0 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO message_text (rowid, f_subject, f_from, f_to, f_cc, f_bcc, headers, body) \
         VALUES (? * 4294967296 + ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(mailbox_id)
    .bind(i64::from(uid))
    .bind(&text.subject)
    .bind(&text.from)
    .bind(&text.to)
    .bind(&text.cc)
    .bind(&text.bcc)
    .bind(&text.headers)
    .bind(&text.body)
    .execute(tx.conn())
    .await?;
    Ok(true)
}

/// UIDs (ascending) of the indexed messages of a mailbox whose `field` contains `needle`.
pub(super) async fn search(
    c: &mut SqliteConnection,
    mailbox_id: i64,
    field: TextField,
    needle: &str,
) -> Result<Vec<Uid>> {
    let base = mailbox_id * (1 << 32);
    let rows: Vec<i64> = sqlx::query_scalar(
        "SELECT rowid FROM message_text WHERE message_text MATCH ? \
         AND rowid BETWEEN ? AND ? ORDER BY rowid",
    )
    .bind(match_expr(field, needle))
    .bind(base)
    .bind(base + i64::from(u32::MAX))
    .fetch_all(c)
    .await?;
    Ok(rows.into_iter().map(|r| (r - base) as Uid).collect())
}

/// Messages indexed per transaction by the background indexer, at most... (it holds the
/// index's write lock meanwhile: with 256 per transaction, APPENDs to a 100,000-message
/// mailbox being indexed waited so long that only 6 went through per second)
const BATCH_MESSAGES: i64 = 32;
/// ...and about this many bytes of them in memory.
const BATCH_BYTES: u64 = 2 * 1024 * 1024;

impl Core {
    /// UIDs (ascending) of the messages of `mailbox` not in the full-text index yet: none
    /// without looking at messages when the counters say every one is in. If there are
    /// some, a background task indexes them (one per mailbox at a time).
    pub(super) async fn text_unindexed(self: &Arc<Self>, mailbox: &str) -> Result<Vec<Uid>> {
        let mb = self.resolve(mailbox).await?;
        let mut conn = self.pool.acquire().await?;
        let (count, indexed): (i64, i64) =
            sqlx::query_as("SELECT msg_count, text_count FROM mailbox WHERE id = ?")
                .bind(mb.id)
                .fetch_one(&mut *conn)
                .await?;
        if count == indexed {
            return Ok(Vec::new());
        }
        let uids: Vec<i64> = sqlx::query_scalar(
            "SELECT uid FROM message WHERE mailbox_id = ? AND text_indexed = 0 ORDER BY uid",
        )
        .bind(mb.id)
        .fetch_all(&mut *conn)
        .await?;
        drop(conn);
        self.index_in_background(&mb.name);
        Ok(uids.into_iter().map(|u| u as Uid).collect())
    }

    fn index_in_background(self: &Arc<Self>, name: &str) {
        {
            let mut busy = self.text_indexing.lock().unwrap_or_else(|e| e.into_inner());
            if !busy.insert(name.to_string()) {
                return;
            }
        }
        let (core, name) = (self.clone(), name.to_string());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            match core.index_unindexed(&name).await {
                Ok(n) => tracing::debug!(
                    mailbox = %crate::log_escape::escape(&name),
                    messages = n,
                    ms = started.elapsed().as_millis() as u64,
                    "full-text index caught up"
                ),
                Err(e) => tracing::warn!(
                    mailbox = %crate::log_escape::escape(&name),
                    error = %e,
                    "full-text indexing stopped"
                ),
            }
            core.text_indexing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name);
        });
    }

    /// Indexes every message of mailbox `name` that the index lacks, a batch per
    /// transaction (deliveries and sessions go on in between). Returns how many.
    async fn index_unindexed(self: &Arc<Self>, name: &str) -> Result<usize> {
        let mut after: i64 = 0;
        let mut done = 0;
        loop {
            let mb = self.resolve(name).await?;
            let rows: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT uid, size FROM message WHERE mailbox_id = ? AND text_indexed = 0 \
                 AND uid > ? ORDER BY uid LIMIT ?",
            )
            .bind(mb.id)
            .bind(after)
            .bind(BATCH_MESSAGES)
            .fetch_all(&mut *self.pool.acquire().await?)
            .await?;
            if rows.is_empty() {
                return Ok(done);
            }
            let mut bytes = 0;
            let uids: Vec<Uid> = rows
                .iter()
                .take_while(|(_, size)| {
                    let first = bytes == 0;
                    bytes += *size as u64;
                    first || bytes <= BATCH_BYTES
                })
                .map(|(uid, _)| *uid as Uid)
                .collect();
            after = i64::from(*uids.last().unwrap_or(&0));
            let raws = self.read_many(name, &uids).await?;
            let texts = super::user::blocking(move || {
                Ok(uids
                    .into_iter()
                    .zip(raws)
                    .filter_map(|(uid, raw)| Some((uid, IndexedText::of(&raw?))))
                    .collect::<Vec<_>>())
            })
            .await?;
            done += texts.len();
            self.add_text(name, &texts).await?;
        }
    }

    pub(super) async fn text_search(
        self: &Arc<Self>,
        mailbox: &str,
        field: TextField,
        needle: &str,
    ) -> Result<Vec<Uid>> {
        let mb = self.resolve(mailbox).await?;
        search(&mut *self.pool.acquire().await?, mb.id, field, needle).await
    }

    /// Indexes messages that a reader has at hand (expunged ones are skipped).
    pub(super) async fn add_text(
        self: &Arc<Self>,
        mailbox: &str,
        texts: &[(Uid, IndexedText)],
    ) -> Result<()> {
        if texts.is_empty() {
            return Ok(());
        }
        let mb = self.resolve(mailbox).await?;
        let mut w = self.writer.lock().await;
        let mut tx = w.begin().await?;
        for (uid, text) in texts {
            insert(&mut tx, mb.id, *uid, text).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// For tests: whether the index of `mailbox_id` matches the messages (every indexed
/// message has a row and the counter is right).
#[cfg(test)]
pub(super) async fn consistent(c: &mut SqliteConnection, mailbox_id: i64) -> Result<bool> {
    let (count, indexed): (i64, i64) =
        sqlx::query_as("SELECT msg_count, text_count FROM mailbox WHERE id = ?")
            .bind(mailbox_id)
            .fetch_one(&mut *c)
            .await?;
    let real: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM message WHERE mailbox_id = ? AND text_indexed != 0",
    )
    .bind(mailbox_id)
    .fetch_one(&mut *c)
    .await?;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM message WHERE mailbox_id = ?")
        .bind(mailbox_id)
        .fetch_one(&mut *c)
        .await?;
    Ok(real == indexed && total == count)
}
