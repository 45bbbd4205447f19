//! The durable mail queue in `<data_dir>/queue/`.
//!
//! Each accepted message is rows in the SQLite database `queue.db` (WAL, `synchronous=FULL`):
//! the envelope, and per recipient its status (pending, deferred, sent, bounced), attempts,
//! next attempt and last reply. Its content is in the same database when it is at most
//! [`INLINE_MAX`] bytes (most mail), so one WAL fsync makes content and envelope durable
//! together; a bigger one is a file `messages/<id>` (written to `tmp/`, fsynced, linked into
//! `messages/`) that is durable before its rows are written. The commit of the rows (and
//! the directory fsync for new files) happen before [`Queue::enqueue`] returns, and the
//! session answers 250 only then, so an accepted message survives `kill -9` and power loss.
//! Writes from all sessions and the runners go through one committer task that batches them
//! (one commit per batch) on its own connection: see `committer.rs`. A batch of delivery
//! outcomes only is committed without waiting for the fsync (a power loss may then undo
//! the last outcomes, so those messages are delivered again: duplicated, never lost). A
//! file without rows is a message that was never acknowledged: [`Queue::recover`] removes
//! it at daemon start.
//!
//! Local recipients are delivered by [`runner::LocalRunner`]; remote recipients stay `pending`
//! for the outbound engine, which uses [`Queue::due`] and [`Queue::record_attempts`] the same
//! way. When no recipient of a message is pending or deferred any more, the message is
//! completed: the bounce or success report, if any, is queued and the message removed, in one
//! database transaction. A message still deferred after `delay_warning_time` gets one delay
//! warning ([`report`]). [`listing`] formats the queue for `hermod queue list|show`.

mod committer;
pub mod listing;
pub mod report;
pub mod runner;
mod size;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Connection, Row, Sqlite, SqliteConnection, Transaction};
use tokio::sync::Notify as WakeSignal;
use tokio::sync::{mpsc, oneshot};

use crate::envelope::{BodyType, DsnReturn, Envelope, EnvelopeRecipient, Notify, QueueId};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("queue database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("queue database migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("queue file write task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("directory lookup: {0}")]
    Lookup(#[from] crate::session::BackendError),
    #[error("the queue writer has stopped")]
    WriterGone,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> QueueError + '_ {
    move |source| QueueError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a recipient's mail goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// A mailbox of ours: delivered by [`crate::LocalDelivery`].
    Local,
    /// Another domain: delivered by the outbound engine.
    Remote,
}

/// Delivery state of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientStatus {
    /// Not tried yet.
    Pending,
    /// Tried, failed temporarily; retried at `next_attempt`.
    Deferred,
    /// Delivered (final).
    Sent,
    /// Failed for good; reported to the sender (final).
    Bounced,
}

impl RecipientStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientStatus::Pending => "pending",
            RecipientStatus::Deferred => "deferred",
            RecipientStatus::Sent => "sent",
            RecipientStatus::Bounced => "bounced",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "deferred" => RecipientStatus::Deferred,
            "sent" => RecipientStatus::Sent,
            "bounced" => RecipientStatus::Bounced,
            _ => RecipientStatus::Pending,
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, RecipientStatus::Sent | RecipientStatus::Bounced)
    }
}

/// One recipient as the queue knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRecipient {
    /// Index of the recipient within its message.
    pub position: u32,
    pub address: String,
    pub local: bool,
    pub notify: Notify,
    pub orcpt: Option<String>,
    pub status: RecipientStatus,
    pub attempts: u32,
    /// Unix seconds.
    pub next_attempt: i64,
    pub last_attempt: Option<i64>,
    /// The last reply for this recipient (`250 2.0.0 delivered`, `450 4.2.0 mailbox busy`).
    pub last_reply: Option<String>,
}

/// One queued message: its envelope, size, arrival and recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    pub id: QueueId,
    pub sender: String,
    pub ret: Option<DsnReturn>,
    pub env_id: Option<String>,
    pub body_type: BodyType,
    pub smtputf8: bool,
    pub auth_user: Option<String>,
    pub client: String,
    pub size: u64,
    /// Unix seconds.
    pub arrival: i64,
    /// The sender was warned that delivery is delayed (sent at most once).
    pub delay_warned: bool,
    pub recipients: Vec<QueuedRecipient>,
}

/// The result of one delivery attempt to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Sent { reply: String },
    Deferred { reply: String, next_attempt: i64 },
    Bounced { reply: String },
}

impl Attempt {
    fn status(&self) -> RecipientStatus {
        match self {
            Attempt::Sent { .. } => RecipientStatus::Sent,
            Attempt::Deferred { .. } => RecipientStatus::Deferred,
            Attempt::Bounced { .. } => RecipientStatus::Bounced,
        }
    }

    fn reply(&self) -> &str {
        match self {
            Attempt::Sent { reply }
            | Attempt::Deferred { reply, .. }
            | Attempt::Bounced { reply } => reply,
        }
    }
}

/// What recording delivery attempts left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptsRecorded {
    /// Some recipient is still pending or deferred.
    Pending,
    /// Every recipient is final. `removed`: the message had nothing to report and is gone;
    /// otherwise the caller sends the report with [`Queue::complete`].
    Finished {
        message: QueuedMessage,
        removed: bool,
    },
}

/// A report (bounce) to queue while completing a message.
pub struct NewMessage<'a> {
    pub id: &'a QueueId,
    pub envelope: &'a Envelope,
    pub content: &'a [u8],
}

/// What [`Queue::recover`] cleaned up.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Half-written files removed from `tmp/`.
    pub partial_files: usize,
    /// Message files without database rows (never acknowledged) removed.
    pub orphan_files: usize,
    /// Messages whose rows exist but whose file is missing (reported, left for the admin).
    pub missing_files: Vec<QueueId>,
}

/// The content of a queued message, from [`Queue::content`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueuedContent {
    Memory(Vec<u8>),
    /// A file under `queue/messages/`; it stays while the message is queued.
    File(PathBuf),
}

/// Contents up to this size are stored in the queue database, bigger ones in files. Most
/// mail is far smaller; for big messages the transfer takes longer than the extra fsyncs.
pub const INLINE_MAX: usize = 256 * 1024;

/// The queue. Cheap to share behind an `Arc`; safe to open from several processes (the CLI
/// reads and changes it while the daemon runs).
pub struct Queue {
    dir: PathBuf,
    pool: SqlitePool,
    wake: Arc<WakeSignal>,
    writer: mpsc::Sender<committer::Request>,
    size: size::QueueSize,
}

impl Queue {
    /// Opens (creating if needed) the queue in `dir` (normally `<data_dir>/queue`).
    pub async fn open(dir: impl Into<PathBuf>) -> Result<Self, QueueError> {
        let dir = dir.into();
        for sub in [dir.clone(), dir.join("messages"), dir.join("tmp")] {
            fs::create_dir_all(&sub).map_err(io_error(&sub))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(dir.join("queue.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: the WAL is fsynced at every commit, so a committed row survives power loss.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let writer = committer::spawn(
            SqliteConnection::connect_with(&options).await?,
            dir.join("messages"),
        );
        Ok(Queue {
            dir,
            pool,
            wake: Arc::new(WakeSignal::new()),
            writer,
            size: size::QueueSize::default(),
        })
    }

    /// The directory of the queue.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the content of message `id` is stored if it is bigger than [`INLINE_MAX`].
    pub fn message_path(&self, id: &QueueId) -> PathBuf {
        self.dir.join("messages").join(id.as_str())
    }

    /// Cleans up after a crash. Call once when the daemon starts, before accepting mail (not
    /// from the CLI: a message being written by a running daemon would look orphaned).
    pub async fn recover(&self) -> Result<Recovery, QueueError> {
        let mut recovery = Recovery::default();
        let tmp = self.dir.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(io_error(&tmp))? {
            let path = entry.map_err(io_error(&tmp))?.path();
            fs::remove_file(&path).map_err(io_error(&path))?;
            recovery.partial_files += 1;
        }
        // Every queued message, and whether its content is in the database (no file).
        let known: HashMap<String, bool> = sqlx::query_as::<_, (String, bool)>(
            "SELECT m.id, c.message_id IS NOT NULL FROM messages m \
             LEFT JOIN contents c ON c.message_id = m.id",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .collect();
        let messages = self.dir.join("messages");
        let mut on_disk = std::collections::HashSet::new();
        for entry in fs::read_dir(&messages).map_err(io_error(&messages))? {
            let entry = entry.map_err(io_error(&messages))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if known.contains_key(&name) {
                on_disk.insert(name);
            } else {
                let path = entry.path();
                tracing::warn!(path = %path.display(), "removing unacknowledged queue file");
                fs::remove_file(&path).map_err(io_error(&path))?;
                recovery.orphan_files += 1;
            }
        }
        for (id, _) in known
            .iter()
            .filter(|(id, inline)| !**inline && !on_disk.contains(*id))
        {
            tracing::error!(queue_id = %id, "queued message has no content file");
            if let Some(id) = QueueId::parse(id) {
                recovery.missing_files.push(id);
            }
        }
        Ok(recovery)
    }

    /// Stores a message durably; when this returns Ok the message survives a crash.
    pub async fn enqueue(
        &self,
        id: &QueueId,
        envelope: &Envelope,
        content: &[u8],
    ) -> Result<(), QueueError> {
        let inline = content.len() <= INLINE_MAX;
        if !inline {
            // The directory fsync that makes the new name durable is done by the committer,
            // once for all messages of its batch, before the rows are committed.
            self.write_content(id, content, false).await?;
        }
        let write = committer::Write::Insert {
            id: id.clone(),
            envelope: envelope.clone(),
            size: content.len(),
            arrival: unix_now(),
            content: inline.then(|| content.to_vec()),
        };
        let change = self.size.change();
        if let Err(e) = self.write(write).await {
            // Only the file this call wrote: with a duplicate id, another message's is there.
            if !inline {
                self.remove_content(id);
            }
            return Err(e);
        }
        change.apply(1);
        self.wake.notify_one();
        Ok(())
    }

    /// Stores a message whose content was spooled to `body` (a file in this queue's `tmp/`,
    /// fsynced): `prefix` (the trace header) then the file. The content is copied in the
    /// kernel (`copy_file_range`), never read into memory.
    pub async fn enqueue_spooled(
        &self,
        id: &QueueId,
        envelope: &Envelope,
        prefix: &[u8],
        body: &Path,
    ) -> Result<(), QueueError> {
        let tmp = self.dir.join("tmp").join(id.as_str());
        let dir = self.dir.join("messages");
        let path = dir.join(id.as_str());
        let (prefix, body) = (prefix.to_vec(), body.to_path_buf());
        let size =
            tokio::task::spawn_blocking(move || write_spooled_durably(&tmp, &path, &prefix, &body))
                .await??;
        let write = committer::Write::Insert {
            id: id.clone(),
            envelope: envelope.clone(),
            size,
            arrival: unix_now(),
            content: None,
        };
        let change = self.size.change();
        if let Err(e) = self.write(write).await {
            self.remove_content(id);
            return Err(e);
        }
        change.apply(1);
        self.wake.notify_one();
        Ok(())
    }

    async fn write(&self, write: committer::Write) -> Result<committer::Written, QueueError> {
        let (done, answer) = oneshot::channel();
        self.writer
            .send(committer::Request { write, done })
            .await
            .map_err(|_| QueueError::WriterGone)?;
        answer.await.map_err(|_| QueueError::WriterGone)?
    }

    async fn write_content(
        &self,
        id: &QueueId,
        content: &[u8],
        sync_dir: bool,
    ) -> Result<(), QueueError> {
        let tmp = self.dir.join("tmp").join(id.as_str());
        let dir = self.dir.join("messages");
        let path = dir.join(id.as_str());
        let content = content.to_vec();
        tokio::task::spawn_blocking(move || write_durably(&tmp, &path, &dir, &content, sync_dir))
            .await?
    }

    fn remove_content(&self, id: &QueueId) {
        let path = self.message_path(id);
        if let Err(e) = fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::error!(path = %path.display(), error = %e, "cannot remove queue file");
        }
    }

    /// Where the content of a queued message is: in memory (read from the database), or
    /// the path of its file, for a big message that is not to be read whole.
    pub async fn content(&self, id: &QueueId) -> Result<QueuedContent, QueueError> {
        let inline: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT data FROM contents WHERE message_id = ?")
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?;
        if let Some(content) = inline {
            return Ok(QueuedContent::Memory(content));
        }
        let path = self.message_path(id);
        tokio::fs::metadata(&path).await.map_err(io_error(&path))?;
        Ok(QueuedContent::File(path))
    }

    /// The content of a queued message.
    pub async fn read_message(&self, id: &QueueId) -> Result<Vec<u8>, QueueError> {
        let inline: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT data FROM contents WHERE message_id = ?")
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?;
        if let Some(content) = inline {
            return Ok(content);
        }
        let path = self.message_path(id);
        tokio::fs::read(&path).await.map_err(io_error(&path))
    }

    /// Every queued message, oldest first.
    pub async fn list(&self) -> Result<Vec<QueuedMessage>, QueueError> {
        let rows = sqlx::query("SELECT * FROM messages ORDER BY arrival, id")
            .fetch_all(&self.pool)
            .await?;
        let mut messages: Vec<QueuedMessage> = rows
            .iter()
            .map(message_from_row)
            .collect::<Result<_, _>>()?;
        let rows = sqlx::query("SELECT * FROM recipients ORDER BY message_id, position")
            .fetch_all(&self.pool)
            .await?;
        let mut by_id: HashMap<String, Vec<QueuedRecipient>> = HashMap::new();
        for row in &rows {
            let id: String = row.try_get("message_id")?;
            by_id.entry(id).or_default().push(recipient_from_row(row)?);
        }
        for message in &mut messages {
            message.recipients = by_id.remove(message.id.as_str()).unwrap_or_default();
        }
        Ok(messages)
    }

    /// One message with all its recipients.
    pub async fn show(&self, id: &QueueId) -> Result<Option<QueuedMessage>, QueueError> {
        let mut conn = self.pool.acquire().await?;
        load_message(&mut conn, id).await
    }

    /// Removes a message without delivering it or telling anyone. False if unknown.
    pub async fn delete(&self, id: &QueueId) -> Result<bool, QueueError> {
        let change = self.size.change();
        let done = sqlx::query("DELETE FROM messages WHERE id = ?")
            .bind(id.as_str())
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0;
        if done {
            change.apply(-1);
            self.remove_content(id);
            tracing::info!(queue_id = %id, "removed from queue by admin");
        }
        Ok(done)
    }

    /// Makes every pending or deferred recipient due now. Returns how many.
    pub async fn flush(&self) -> Result<u64, QueueError> {
        let n = sqlx::query(
            "UPDATE recipients SET next_attempt = ? WHERE status IN ('pending', 'deferred')",
        )
        .bind(unix_now())
        .execute(&self.pool)
        .await?
        .rows_affected();
        self.wake.notify_one();
        Ok(n)
    }

    /// Makes the pending or deferred recipients of one message due now. False if the message
    /// has none (or is unknown).
    pub async fn retry(&self, id: &QueueId) -> Result<bool, QueueError> {
        let n = sqlx::query(
            "UPDATE recipients SET next_attempt = ? \
             WHERE message_id = ? AND status IN ('pending', 'deferred')",
        )
        .bind(unix_now())
        .bind(id.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        self.wake.notify_one();
        Ok(n > 0)
    }

    /// Messages with recipients for `destination` due at `now`; each message lists only those
    /// due recipients. At most `limit` recipients in all, earliest first.
    pub async fn due(
        &self,
        destination: Destination,
        now: i64,
        limit: u32,
    ) -> Result<Vec<QueuedMessage>, QueueError> {
        let rows = sqlx::query(
            "SELECT m.*, r.* FROM recipients r JOIN messages m ON m.id = r.message_id \
             WHERE r.local = ? AND r.status IN ('pending', 'deferred') AND r.next_attempt <= ? \
             ORDER BY r.next_attempt, m.arrival, r.message_id, r.position LIMIT ?",
        )
        .bind(destination == Destination::Local)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut messages: Vec<QueuedMessage> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for row in &rows {
            let id: String = row.try_get("id")?;
            let slot = match index.get(&id) {
                Some(&slot) => slot,
                None => {
                    messages.push(message_from_row(row)?);
                    index.insert(id, messages.len() - 1);
                    messages.len() - 1
                }
            };
            messages[slot].recipients.push(recipient_from_row(row)?);
        }
        Ok(messages)
    }

    /// The earliest `next_attempt` of any pending or deferred recipient for `destination`.
    pub async fn next_due(&self, destination: Destination) -> Result<Option<i64>, QueueError> {
        Ok(sqlx::query_scalar::<_, Option<i64>>(
            "SELECT MIN(next_attempt) FROM recipients \
             WHERE local = ? AND status IN ('pending', 'deferred')",
        )
        .bind(destination == Destination::Local)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Records the outcome of delivery attempts to recipients of one message. `results` pairs
    /// recipient positions with outcomes. When no recipient is left pending or deferred and
    /// there is nothing to report to the sender, the message is removed in the same
    /// transaction.
    pub async fn record_attempts(
        &self,
        id: &QueueId,
        results: &[(u32, Attempt)],
    ) -> Result<AttemptsRecorded, QueueError> {
        let write = committer::Write::Attempts {
            id: id.clone(),
            results: results.to_vec(),
            now: unix_now(),
        };
        let change = self.size.change();
        match self.write(write).await? {
            committer::Written::Attempts(recorded) => {
                if matches!(recorded, AttemptsRecorded::Finished { removed: true, .. }) {
                    change.apply(-1);
                }
                Ok(recorded)
            }
            committer::Written::Inserted => Ok(AttemptsRecorded::Pending),
        }
    }

    /// Ids of messages none of whose recipients is pending or deferred any more.
    pub async fn finished(&self) -> Result<Vec<QueueId>, QueueError> {
        let ids = sqlx::query_scalar::<_, String>(
            "SELECT id FROM messages m WHERE NOT EXISTS (SELECT 1 FROM recipients r \
             WHERE r.message_id = m.id AND r.status IN ('pending', 'deferred'))",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.iter().filter_map(|id| QueueId::parse(id)).collect())
    }

    /// Removes a finished message, queueing `report` (a DSN) in the same transaction, so a
    /// crash can neither lose the report nor send it twice. If the message is already gone
    /// (completed or deleted meanwhile), nothing is queued.
    pub async fn complete(
        &self,
        id: &QueueId,
        report: Option<NewMessage<'_>>,
    ) -> Result<(), QueueError> {
        if let Some(report) = report.as_ref().filter(|r| r.content.len() > INLINE_MAX) {
            self.write_content(report.id, report.content, true).await?;
        }
        let change = self.size.change();
        let result = self.complete_rows(id, report.as_ref()).await;
        let removed = matches!(result, Ok(true));
        if removed {
            change.apply(if report.is_some() { 0 } else { -1 });
        } else {
            drop(change);
        }
        if let Some(report) = &report {
            if removed {
                self.wake.notify_one();
            } else if inline(report.content).is_none() {
                self.remove_content(report.id);
            }
        }
        if removed {
            self.remove_content(id);
        }
        result.map(|_| ())
    }

    /// The database half of [`Queue::complete`]; true when the message was removed.
    async fn complete_rows(
        &self,
        id: &QueueId,
        report: Option<&NewMessage<'_>>,
    ) -> Result<bool, QueueError> {
        let mut tx = self.pool.begin().await?;
        let removed = sqlx::query("DELETE FROM messages WHERE id = ?")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if !removed {
            return Ok(false);
        }
        if let Some(report) = report {
            insert_message(
                &mut tx,
                report.id,
                report.envelope,
                report.content.len(),
                inline(report.content),
                unix_now(),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Queues `warning` (a delay DSN) for message `id` and marks the message warned, in one
    /// transaction. False, with nothing queued, if the message was warned already or is gone:
    /// a sender gets at most one warning per message, across restarts too.
    pub async fn queue_delay_warning(
        &self,
        id: &QueueId,
        warning: NewMessage<'_>,
    ) -> Result<bool, QueueError> {
        if warning.content.len() > INLINE_MAX {
            self.write_content(warning.id, warning.content, true)
                .await?;
        }
        let change = self.size.change();
        let result = self.delay_warning_rows(id, &warning).await;
        if matches!(result, Ok(true)) {
            change.apply(1);
            self.wake.notify_one();
        } else {
            drop(change);
            if inline(warning.content).is_none() {
                self.remove_content(warning.id);
            }
        }
        result
    }

    async fn delay_warning_rows(
        &self,
        id: &QueueId,
        warning: &NewMessage<'_>,
    ) -> Result<bool, QueueError> {
        let mut tx = self.pool.begin().await?;
        let marked =
            sqlx::query("UPDATE messages SET delay_warned = 1 WHERE id = ? AND delay_warned = 0")
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected()
                > 0;
        if !marked {
            return Ok(false);
        }
        insert_message(
            &mut tx,
            warning.id,
            warning.envelope,
            warning.content.len(),
            inline(warning.content),
            unix_now(),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Messages in the queue, as this process counts them (see [`Queue::refresh_size`]).
    pub fn size(&self) -> i64 {
        self.size.get()
    }

    /// Counts the messages in the database and from now on keeps the `hermod_queue_size`
    /// gauge equal to the count. The daemon's queue runner calls this when it starts.
    pub async fn publish_size(&self) -> Result<(), QueueError> {
        self.refresh_size().await?;
        self.size.start_publishing();
        Ok(())
    }

    /// Recounts the messages in the database: picks up changes made by another process
    /// (`hermod queue delete`). Skipped, harmlessly, while this process is changing the queue.
    pub async fn refresh_size(&self) -> Result<(), QueueError> {
        let count = async {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM messages")
                .fetch_one(&self.pool)
                .await
        };
        self.size.recount(count).await?;
        Ok(())
    }

    /// Resolves when something was queued or made due (in this process).
    pub async fn changed(&self) {
        self.wake.notified().await
    }

    /// Wakes whoever waits in [`Queue::changed`].
    pub fn notify(&self) {
        self.wake.notify_one();
    }
}

/// A new message as [`insert_messages`] stores it.
pub(super) struct NewRows<'a> {
    pub id: &'a QueueId,
    pub envelope: &'a Envelope,
    pub size: usize,
    /// The content, stored in the database (see [`INLINE_MAX`]); `None` when it is a file.
    pub inline: Option<&'a [u8]>,
    pub arrival: i64,
}

/// Rows per multi-row INSERT: far below SQLite's limit of 32766 bound values.
const ROWS_PER_INSERT: usize = 1000;

/// The rows of new messages: one INSERT per table (per [`ROWS_PER_INSERT`] rows), not one per
/// row, since every statement is a round trip to the database thread.
pub(super) async fn insert_messages(
    conn: &mut SqliteConnection,
    new: &[NewRows<'_>],
) -> Result<(), QueueError> {
    for chunk in new.chunks(ROWS_PER_INSERT) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO messages (id, sender, ret, env_id, body_type, smtputf8, auth_user, \
             client, size, arrival) ",
        );
        q.push_values(chunk, |mut b, m| {
            b.push_bind(m.id.as_str())
                .push_bind(&m.envelope.sender)
                .push_bind(m.envelope.ret.map(DsnReturn::as_str))
                .push_bind(&m.envelope.env_id)
                .push_bind(m.envelope.body.as_str())
                .push_bind(m.envelope.smtputf8)
                .push_bind(&m.envelope.auth_user)
                .push_bind(&m.envelope.client)
                .push_bind(m.size as i64)
                .push_bind(m.arrival);
        });
        q.build().execute(&mut *conn).await?;
    }
    let recipients: Vec<(&NewRows<'_>, usize, &EnvelopeRecipient)> = new
        .iter()
        .flat_map(|m| {
            m.envelope
                .recipients
                .iter()
                .enumerate()
                .map(move |(i, r)| (m, i, r))
        })
        .collect();
    for chunk in recipients.chunks(ROWS_PER_INSERT) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO recipients (message_id, position, address, local, notify, orcpt, \
             next_attempt) ",
        );
        q.push_values(chunk, |mut b, (m, position, rcpt)| {
            b.push_bind(m.id.as_str())
                .push_bind(*position as i64)
                .push_bind(&rcpt.address)
                .push_bind(rcpt.local)
                .push_bind(rcpt.notify.to_param())
                .push_bind(&rcpt.orcpt)
                .push_bind(m.arrival);
        });
        q.build().execute(&mut *conn).await?;
    }
    let contents: Vec<(&QueueId, &[u8])> = new
        .iter()
        .filter_map(|m| m.inline.map(|c| (m.id, c)))
        .collect();
    // Contents are big: fewer per statement.
    for chunk in contents.chunks(64) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new("INSERT INTO contents (message_id, data) ");
        q.push_values(chunk, |mut b, (id, content)| {
            b.push_bind(id.as_str()).push_bind(*content);
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// The rows of one new message (see [`insert_messages`]).
async fn insert_message(
    tx: &mut Transaction<'static, Sqlite>,
    id: &QueueId,
    envelope: &Envelope,
    size: usize,
    inline: Option<&[u8]>,
    now: i64,
) -> Result<(), QueueError> {
    let rows = NewRows {
        id,
        envelope,
        size,
        inline,
        arrival: now,
    };
    insert_messages(tx, &[rows]).await
}

/// A report's content as [`insert_message`] takes it.
fn inline(content: &[u8]) -> Option<&[u8]> {
    (content.len() <= INLINE_MAX).then_some(content)
}

/// Writes `content` to `tmp`, fsyncs it and moves it to `path` (never replacing a file); with
/// `sync_dir` fsyncs `dir` too, so that once this returns the file and its name are on stable
/// storage.
fn write_durably(
    tmp: &Path,
    path: &Path,
    dir: &Path,
    content: &[u8],
    sync_dir: bool,
) -> Result<(), QueueError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(io_error(tmp))?;
    let written = file.write_all(content).and_then(|()| file.sync_all());
    drop(file);
    // A link instead of a rename: it fails rather than replace another message's file.
    let placed = written.and_then(|()| fs::hard_link(tmp, path));
    let _ = fs::remove_file(tmp);
    placed.map_err(io_error(path))?;
    if sync_dir {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(dir))?;
    }
    Ok(())
}

/// [`write_durably`] for `prefix` followed by the content of the file `body`; returns the
/// size written. The directory fsync is left to the committer, as for [`Queue::enqueue`].
fn write_spooled_durably(
    tmp: &Path,
    path: &Path,
    prefix: &[u8],
    body: &Path,
) -> Result<usize, QueueError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(io_error(tmp))?;
    let written = File::open(body)
        .and_then(|mut source| {
            file.write_all(prefix)?;
            io::copy(&mut source, &mut file)
        })
        .and_then(|copied| file.sync_all().map(|()| copied));
    drop(file);
    let placed = written.and_then(|copied| fs::hard_link(tmp, path).map(|()| copied));
    let _ = fs::remove_file(tmp);
    let copied = placed.map_err(io_error(path))?;
    Ok(prefix.len() + usize::try_from(copied).unwrap_or(usize::MAX))
}

/// A message and all its recipients, read through `conn` (a transaction or a connection).
async fn load_message(
    conn: &mut SqliteConnection,
    id: &QueueId,
) -> Result<Option<QueuedMessage>, QueueError> {
    let Some(row) = sqlx::query("SELECT * FROM messages WHERE id = ?")
        .bind(id.as_str())
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let mut message = message_from_row(&row)?;
    message.recipients =
        sqlx::query("SELECT * FROM recipients WHERE message_id = ? ORDER BY position")
            .bind(id.as_str())
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(recipient_from_row)
            .collect::<Result<_, _>>()?;
    Ok(Some(message))
}

fn message_from_row(row: &SqliteRow) -> Result<QueuedMessage, QueueError> {
    let id: String = row.try_get("id")?;
    let ret: Option<String> = row.try_get("ret")?;
    let body_type: String = row.try_get("body_type")?;
    Ok(QueuedMessage {
        id: QueueId::parse(&id).ok_or_else(|| {
            sqlx::Error::Decode(format!("bad queue id {id:?} in queue database").into())
        })?,
        sender: row.try_get("sender")?,
        ret: ret.as_deref().and_then(DsnReturn::parse),
        env_id: row.try_get("env_id")?,
        body_type: BodyType::parse(&body_type),
        smtputf8: row.try_get("smtputf8")?,
        auth_user: row.try_get("auth_user")?,
        client: row.try_get("client")?,
        size: row.try_get::<i64, _>("size")?.max(0) as u64,
        arrival: row.try_get("arrival")?,
        delay_warned: row.try_get("delay_warned")?,
        recipients: Vec::new(),
    })
}

fn recipient_from_row(row: &SqliteRow) -> Result<QueuedRecipient, QueueError> {
    let notify: String = row.try_get("notify")?;
    let status: String = row.try_get("status")?;
    Ok(QueuedRecipient {
        position: row.try_get::<i64, _>("position")?.max(0) as u32,
        address: row.try_get("address")?,
        local: row.try_get("local")?,
        notify: Notify::from_param(&notify),
        orcpt: row.try_get("orcpt")?,
        status: RecipientStatus::parse(&status),
        attempts: row.try_get::<i64, _>("attempts")?.max(0) as u32,
        next_attempt: row.try_get("next_attempt")?,
        last_attempt: row.try_get("last_attempt")?,
        last_reply: row.try_get("last_reply")?,
    })
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
