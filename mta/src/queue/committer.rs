//! Group commit of queue writes.
//!
//! Every commit of the queue database waits for an fsync (a few milliseconds on a disk). With
//! many sessions accepting mail and the runner recording deliveries at once, one transaction
//! per write would cap the queue at a few hundred writes per second. So writes go to one task
//! that takes everything waiting, makes the names of new message files (big messages only)
//! durable with one fsync of the directory, applies all writes in one transaction, and answers
//! each writer after the commit. Nobody is answered before their write is on disk.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;

use sqlx::{Connection, Row, Sqlite, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::report::needs_report;
use super::{
    Attempt, AttemptsRecorded, NewRows, QueueError, QueuedMessage, insert_messages,
    message_from_row, recipient_from_row,
};
use crate::envelope::{Envelope, QueueId};

/// Writes taken into one transaction at most.
const MAX_BATCH: usize = 256;

pub(super) enum Write {
    /// Rows of a new message with its content (`Some`), or whose content file is already
    /// written, fsynced and renamed (`None`).
    Insert {
        id: QueueId,
        envelope: Envelope,
        size: usize,
        arrival: i64,
        content: Option<Vec<u8>>,
    },
    /// Outcomes of delivery attempts; a message left with only final recipients and nothing
    /// to report is removed in the same transaction.
    Attempts {
        id: QueueId,
        results: Vec<(u32, Attempt)>,
        now: i64,
    },
}

pub(super) enum Written {
    Inserted,
    Attempts(AttemptsRecorded),
}

pub(super) struct Request {
    pub write: Write,
    pub done: oneshot::Sender<Result<Written, QueueError>>,
}

/// Starts the committer; it ends when every sender is dropped.
/// `conn` is the committer's own connection (its `synchronous` setting changes with the
/// batch, which must not leak to other users of the database).
pub(super) fn spawn(conn: SqliteConnection, messages_dir: PathBuf) -> mpsc::Sender<Request> {
    let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
    tokio::spawn(run(conn, messages_dir, rx));
    tx
}

async fn run(conn: SqliteConnection, messages_dir: PathBuf, mut rx: mpsc::Receiver<Request>) {
    let mut db = Db {
        conn,
        durable: None,
    };
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        if batch
            .iter()
            .any(|r| matches!(r.write, Write::Insert { content: None, .. }))
        {
            let dir = messages_dir.clone();
            let synced = tokio::task::spawn_blocking(move || File::open(&dir)?.sync_all()).await;
            let failure = match synced {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(e.to_string()),
            };
            if let Some(failure) = failure {
                // The new names may not survive a crash: refuse those messages (4xx).
                let (inserts, rest): (Vec<_>, Vec<_>) = batch
                    .into_iter()
                    .partition(|r| matches!(r.write, Write::Insert { content: None, .. }));
                for request in inserts {
                    let _ = request.done.send(Err(QueueError::Io {
                        path: messages_dir.clone(),
                        source: std::io::Error::other(failure.clone()),
                    }));
                }
                batch = rest;
                if batch.is_empty() {
                    continue;
                }
            }
        }
        let writes: Vec<&Write> = batch.iter().map(|r| &r.write).collect();
        let results: Vec<Result<Written, QueueError>> = match apply(&mut db, &writes).await {
            Ok(written) => written.into_iter().map(Ok).collect(),
            // One bad write must not fail the others: retry them one by one.
            Err(e) if writes.len() == 1 => vec![Err(e)],
            Err(_) => {
                let mut results = Vec::with_capacity(writes.len());
                for write in &writes {
                    results.push(apply(&mut db, &[write]).await.and_then(|mut w| {
                        w.pop().ok_or_else(|| {
                            QueueError::Database(sqlx::Error::Protocol("empty batch".into()))
                        })
                    }));
                }
                results
            }
        };
        for (request, result) in batch.into_iter().zip(results) {
            if let Ok(Written::Attempts(AttemptsRecorded::Finished {
                message,
                removed: true,
            })) = &result
            {
                let path = messages_dir.join(message.id.as_str());
                if let Err(e) = std::fs::remove_file(&path)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::error!(path = %path.display(), error = %e, "cannot remove queue file");
                }
            }
            let _ = request.done.send(result);
        }
    }
}

/// The committer's connection and its current `synchronous` setting (`None`: unknown).
struct Db {
    conn: SqliteConnection,
    durable: Option<bool>,
}

impl Db {
    /// `durable`: commits wait for the WAL fsync (`synchronous=FULL`), else they do not
    /// (`NORMAL`: a process crash still keeps them, a power loss may undo the last ones).
    async fn set_durable(&mut self, durable: bool) -> Result<(), QueueError> {
        if self.durable != Some(durable) {
            self.durable = None;
            let sql = if durable {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            };
            sqlx::query(sql).execute(&mut self.conn).await?;
            self.durable = Some(durable);
        }
        Ok(())
    }
}

async fn apply(db: &mut Db, writes: &[&Write]) -> Result<Vec<Written>, QueueError> {
    let new: Vec<NewRows<'_>> = writes
        .iter()
        .filter_map(|w| match w {
            Write::Insert {
                id,
                envelope,
                size,
                arrival,
                content,
            } => Some(NewRows {
                id,
                envelope,
                size: *size,
                inline: content.as_deref(),
                arrival: *arrival,
            }),
            Write::Attempts { .. } => None,
        })
        .collect();
    let attempts: Vec<Attempts<'_>> = writes
        .iter()
        .filter_map(|w| match w {
            Write::Attempts { id, results, now } => Some((id, results.as_slice(), *now)),
            Write::Insert { .. } => None,
        })
        .collect();
    // New messages must survive a power loss before their 250, so their commit waits for
    // the fsync. Delivery outcomes alone need not: a power loss can at worst undo the last
    // ones, and those messages are then delivered once more, never lost, because each
    // delivery (into the store, or a remote server's 250) was durable before its outcome
    // came here. Their fsync would only delay the next batch of new messages.
    db.set_durable(!new.is_empty()).await?;
    let mut tx = db.conn.begin().await?;
    if !new.is_empty() {
        insert_messages(&mut tx, &new).await?;
    }
    let finished = if attempts.is_empty() {
        HashMap::new()
    } else {
        record(&mut tx, &attempts).await?
    };
    tx.commit().await?;
    // A message finished by this batch is reported to the last write about it only, so it
    // is completed once.
    let mut last_write: HashMap<&str, usize> = HashMap::new();
    for (i, w) in writes.iter().enumerate() {
        if let Write::Attempts { id, .. } = w {
            last_write.insert(id.as_str(), i);
        }
    }
    Ok(writes
        .iter()
        .enumerate()
        .map(|(i, w)| match w {
            Write::Insert { .. } => Written::Inserted,
            Write::Attempts { id, .. } => Written::Attempts(match finished.get(id.as_str()) {
                Some((message, removed)) if last_write.get(id.as_str()) == Some(&i) => {
                    AttemptsRecorded::Finished {
                        message: message.clone(),
                        removed: *removed,
                    }
                }
                _ => AttemptsRecorded::Pending,
            }),
        })
        .collect())
}

/// The outcomes of one write: message, (recipient position, outcome) pairs, time.
type Attempts<'a> = (&'a QueueId, &'a [(u32, Attempt)], i64);

/// Rows per statement below (bound values stay far under SQLite's limit).
const ROWS: usize = 1000;

/// Records outcomes; returns the messages of `attempts` that no recipient is pending or
/// deferred for any more, with whether each was removed (nothing to report). A few
/// statements for the whole batch, not a few per recipient.
async fn record(
    conn: &mut SqliteConnection,
    attempts: &[Attempts<'_>],
) -> Result<HashMap<String, (QueuedMessage, bool)>, QueueError> {
    let updates: Vec<(&QueueId, u32, &Attempt, i64)> = attempts
        .iter()
        .flat_map(|(id, results, now)| results.iter().map(move |(p, a)| (*id, *p, a, *now)))
        .collect();
    let mut seen = HashSet::new();
    if updates
        .iter()
        .all(|(id, p, ..)| seen.insert((id.as_str(), *p)))
    {
        for chunk in updates.chunks(ROWS) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "WITH v (message_id, position, status, reply, next_attempt, last_attempt) AS (",
            );
            q.push_values(chunk, |mut b, (id, position, attempt, now)| {
                b.push_bind(id.as_str())
                    .push_bind(*position)
                    .push_bind(attempt.status().as_str())
                    .push_bind(attempt.reply())
                    .push_bind(next_attempt(attempt, *now))
                    .push_bind(*now);
            });
            q.push(
                ") UPDATE recipients SET status = v.status, attempts = attempts + 1, \
                 last_attempt = v.last_attempt, last_reply = v.reply, \
                 next_attempt = v.next_attempt FROM v \
                 WHERE recipients.message_id = v.message_id AND recipients.position = v.position",
            );
            q.build().execute(&mut *conn).await?;
        }
    } else {
        // The same recipient twice in one batch: in order, so each attempt counts.
        for (id, position, attempt, now) in &updates {
            sqlx::query(
                "UPDATE recipients SET status = ?, attempts = attempts + 1, last_attempt = ?, \
                 last_reply = ?, next_attempt = ? WHERE message_id = ? AND position = ?",
            )
            .bind(attempt.status().as_str())
            .bind(now)
            .bind(attempt.reply())
            .bind(next_attempt(attempt, *now))
            .bind(id.as_str())
            .bind(*position)
            .execute(&mut *conn)
            .await?;
        }
    }
    let ids: Vec<&str> = attempts
        .iter()
        .map(|(id, ..)| id.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut finished: HashMap<String, (QueuedMessage, bool)> = HashMap::new();
    for chunk in ids.chunks(ROWS) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "SELECT m.*, r.* FROM messages m JOIN recipients r ON r.message_id = m.id \
             WHERE NOT EXISTS (SELECT 1 FROM recipients p WHERE p.message_id = m.id \
             AND p.status IN ('pending', 'deferred')) AND m.id IN (",
        );
        let mut list = q.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        q.push(") ORDER BY m.id, r.position");
        for row in q.build().fetch_all(&mut *conn).await? {
            let id: String = row.try_get("id")?;
            let recipient = recipient_from_row(&row)?;
            match finished.get_mut(&id) {
                Some((message, _)) => message.recipients.push(recipient),
                None => {
                    let mut message = message_from_row(&row)?;
                    message.recipients.push(recipient);
                    finished.insert(id, (message, false));
                }
            }
        }
    }
    let mut removed: Vec<&str> = Vec::new();
    for (id, (message, gone)) in finished.iter_mut() {
        *gone = !needs_report(message);
        if *gone {
            removed.push(id);
        }
    }
    for chunk in removed.chunks(ROWS) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new("DELETE FROM messages WHERE id IN (");
        let mut list = q.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        q.push(")");
        q.build().execute(&mut *conn).await?;
    }
    Ok(finished)
}

/// When a recipient is tried next after `attempt` (now, unless deferred: it is then final
/// or already due).
fn next_attempt(attempt: &Attempt, now: i64) -> i64 {
    match attempt {
        Attempt::Deferred { next_attempt, .. } => *next_attempt,
        _ => now,
    }
}
