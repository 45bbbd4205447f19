//! Group commit of queue writes.
//!
//! Every commit of the queue database waits for an fsync (a few milliseconds on a disk). With
//! many sessions accepting mail and the runner recording deliveries at once, one transaction
//! per write would cap the queue at a few hundred writes per second. So writes go to one task
//! that takes everything waiting, makes the new message files' names durable with one fsync
//! of the directory, applies all writes in one transaction, and answers each writer after the
//! commit. Nobody is answered before their write is on disk.

use std::fs::File;
use std::path::PathBuf;

use sqlx::SqliteConnection;
use sqlx::sqlite::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::report::needs_report;
use super::{Attempt, AttemptsRecorded, QueueError, insert_message, load_message};
use crate::envelope::{Envelope, QueueId};

/// Writes taken into one transaction at most.
const MAX_BATCH: usize = 256;

pub(super) enum Write {
    /// Rows of a new message whose file is already written, fsynced and renamed.
    Insert {
        id: QueueId,
        envelope: Envelope,
        size: usize,
        arrival: i64,
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
pub(super) fn spawn(pool: SqlitePool, messages_dir: PathBuf) -> mpsc::Sender<Request> {
    let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
    tokio::spawn(run(pool, messages_dir, rx));
    tx
}

async fn run(pool: SqlitePool, messages_dir: PathBuf, mut rx: mpsc::Receiver<Request>) {
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
            .any(|r| matches!(r.write, Write::Insert { .. }))
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
                    .partition(|r| matches!(r.write, Write::Insert { .. }));
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
        let results: Vec<Result<Written, QueueError>> = match apply(&pool, &writes).await {
            Ok(written) => written.into_iter().map(Ok).collect(),
            // One bad write must not fail the others: retry them one by one.
            Err(e) if writes.len() == 1 => vec![Err(e)],
            Err(_) => {
                let mut results = Vec::with_capacity(writes.len());
                for write in &writes {
                    results.push(apply(&pool, &[write]).await.and_then(|mut w| {
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
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::error!(path = %path.display(), error = %e, "cannot remove queue file");
                }
            }
            let _ = request.done.send(result);
        }
    }
}

async fn apply(pool: &SqlitePool, writes: &[&Write]) -> Result<Vec<Written>, QueueError> {
    let mut tx = pool.begin().await?;
    let mut written = Vec::with_capacity(writes.len());
    for write in writes {
        written.push(match write {
            Write::Insert {
                id,
                envelope,
                size,
                arrival,
            } => {
                insert_message(&mut tx, id, envelope, *size, *arrival).await?;
                Written::Inserted
            }
            Write::Attempts { id, results, now } => {
                Written::Attempts(record(&mut tx, id, results, *now).await?)
            }
        });
    }
    tx.commit().await?;
    Ok(written)
}

async fn record(
    conn: &mut SqliteConnection,
    id: &QueueId,
    results: &[(u32, Attempt)],
    now: i64,
) -> Result<AttemptsRecorded, QueueError> {
    for (position, attempt) in results {
        let next = match attempt {
            Attempt::Deferred { next_attempt, .. } => *next_attempt,
            _ => now,
        };
        sqlx::query(
            "UPDATE recipients SET status = ?, attempts = attempts + 1, last_attempt = ?, \
             last_reply = ?, next_attempt = ? WHERE message_id = ? AND position = ?",
        )
        .bind(attempt.status().as_str())
        .bind(now)
        .bind(attempt.reply())
        .bind(next)
        .bind(id.as_str())
        .bind(*position)
        .execute(&mut *conn)
        .await?;
    }
    let Some(message) = load_message(conn, id).await? else {
        return Ok(AttemptsRecorded::Pending);
    };
    if message.recipients.iter().any(|r| !r.status.is_final()) {
        return Ok(AttemptsRecorded::Pending);
    }
    let removed = !needs_report(&message);
    if removed {
        sqlx::query("DELETE FROM messages WHERE id = ?")
            .bind(id.as_str())
            .execute(&mut *conn)
            .await?;
    }
    Ok(AttemptsRecorded::Finished { message, removed })
}
