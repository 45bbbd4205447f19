//! The per-user SQLite index: UIDVALIDITY, UIDs, flags, keywords, MODSEQ, expunge history,
//! subscriptions, SPECIAL-USE. WAL mode with `synchronous=NORMAL`; see [`Alloc`] for why
//! UIDs stay unique even if a power loss drops the last commits.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, Row, Sqlite, Transaction};

use super::{
    Changes, Flags, MailboxStatus, MessageMeta, ModSeq, QuotaUsage, Result, SpecialUse, Uid,
};

/// The first layout, created at open; `migrate.rs` brings it to the current one
/// (`user_version` says which layout a file has).
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY NOT NULL,
    ival INTEGER,
    tval TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mailbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL,
    highest_modseq INTEGER NOT NULL,
    recent_from INTEGER NOT NULL DEFAULT 1,
    special_use TEXT,
    disk_a INTEGER NOT NULL DEFAULT -1,
    disk_b INTEGER NOT NULL DEFAULT -1,
    recheck_after INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS message (
    mailbox_id INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    flags INTEGER NOT NULL,
    keywords TEXT NOT NULL DEFAULT '',
    modseq INTEGER NOT NULL,
    size INTEGER NOT NULL,
    internal_date INTEGER NOT NULL,
    file TEXT,
    in_cur INTEGER,
    mbox_from INTEGER,
    mbox_off INTEGER,
    mbox_len INTEGER,
    fingerprint INTEGER,
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS message_modseq ON message (mailbox_id, modseq);
CREATE TABLE IF NOT EXISTS expunged (
    mailbox_id INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS expunged_modseq ON expunged (mailbox_id, modseq);
CREATE TABLE IF NOT EXISTS message_cache (
    mailbox_id INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    size INTEGER NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscription (name TEXT PRIMARY KEY NOT NULL) WITHOUT ROWID;
"#;

/// At most this many UIDs/modseqs/UIDVALIDITYs are handed out between two fsyncs of the
/// index; after a reboot every counter skips this far (see [`Alloc`]).
const ALLOC_WINDOW: i64 = 10_000;

/// Opens (creating) the index: a pool for readers and one connection for writers.
pub(super) async fn open(path: &Path) -> Result<(SqlitePool, Writer)> {
    let opts = SqliteConnectOptions::from_str("sqlite://")?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(false);
    let mut conn = SqliteConnection::connect_with(&opts).await?;
    sqlx::raw_sql(SCHEMA).execute(&mut conn).await?;
    super::migrate::migrate(&mut conn).await?;
    super::objectid::migrate(&mut conn).await?;
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .min_connections(0)
        .idle_timeout(Some(Duration::from_secs(60)))
        .acquire_timeout(Duration::from_secs(15))
        .connect_with(opts)
        .await?;
    Ok((
        pool,
        Writer {
            conn,
            path: path.to_path_buf(),
        },
    ))
}

/// The one writing connection of a process for a user (behind a mutex).
pub(super) struct Writer {
    conn: SqliteConnection,
    path: std::path::PathBuf,
}

impl Writer {
    /// `BEGIN IMMEDIATE`: takes SQLite's write lock now (waiting up to the busy timeout), so
    /// values read in the transaction (uidnext, ...) stay valid until commit.
    pub(super) async fn begin(&mut self) -> Result<WriteTx<'_>> {
        let Writer { conn, path } = self;
        let tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTx {
            tx,
            allocs: 0,
            path,
        })
    }
}

/// fsyncs the index files: every commit so far becomes durable.
async fn fsync_index(path: &Path) -> Result<()> {
    let db = path.to_path_buf();
    super::user::blocking(move || {
        let mut wal = db.clone().into_os_string();
        wal.push("-wal");
        for p in [std::path::PathBuf::from(wal), db] {
            match std::fs::File::open(&p) {
                Ok(f) => f.sync_all()?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    })
    .await
}

/// A write transaction; dropped without `commit` it rolls back.
pub(super) struct WriteTx<'a> {
    tx: Transaction<'a, Sqlite>,
    /// UIDs, modseqs and UIDVALIDITYs handed out in this transaction.
    allocs: i64,
    path: &'a Path,
}

impl WriteTx<'_> {
    pub(super) fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }

    /// Commits; keeps the [`Alloc`] invariant (fsync before the window would overflow).
    pub(super) async fn commit(mut self) -> Result<()> {
        if self.allocs > 0 {
            let since: i64 = sqlx::query_scalar(
                "INSERT INTO meta (key, ival) VALUES ('allocs_since_sync', ?1) \
                 ON CONFLICT (key) DO UPDATE SET ival = ival + ?1 RETURNING ival",
            )
            .bind(self.allocs)
            .fetch_one(&mut *self.tx)
            .await?;
            if since > ALLOC_WINDOW {
                // Make every earlier commit durable before this one's values are visible.
                fsync_index(self.path).await?;
                set_meta_int(&mut self.tx, "allocs_since_sync", self.allocs).await?;
            }
        }
        let (big, path) = (self.allocs > ALLOC_WINDOW / 2, self.path);
        self.tx.commit().await?;
        if big {
            fsync_index(path).await?;
        }
        Ok(())
    }

    pub(super) fn count_alloc(&mut self) {
        self.allocs += 1;
    }
}

/// Where the disk stood when the index last matched it: Maildir (mtime of new/, mtime of
/// cur/) in ns; mbox (size, mtime ns). `-1` = unknown (rescan).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DiskState {
    pub a: i64,
    pub b: i64,
}

/// One mailbox row.
#[derive(Debug, Clone)]
pub(super) struct MailboxRow {
    pub id: i64,
    pub name: String,
    pub uidvalidity: u32,
    pub uidnext: Uid,
    pub highest_modseq: ModSeq,
    pub recent_from: Uid,
    pub special_use: Option<SpecialUse>,
    pub disk: DiskState,
    /// Unix ns after which a matching `disk` must be re-checked by a full scan, because
    /// it was recorded so soon after a change that a later change might share its mtime;
    /// 0 = trusted.
    pub recheck_after: i64,
}

const MAILBOX_COLS: &str = "id, name, uidvalidity, uidnext, highest_modseq, recent_from, \
     special_use, disk_a, disk_b, recheck_after";

fn mailbox_from_row(r: &SqliteRow) -> Result<MailboxRow> {
    let su: Option<String> = r.try_get(6)?;
    Ok(MailboxRow {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        uidvalidity: r.try_get::<i64, _>(2)? as u32,
        uidnext: r.try_get::<i64, _>(3)? as u32,
        highest_modseq: r.try_get::<i64, _>(4)? as u64,
        recent_from: r.try_get::<i64, _>(5)? as u32,
        special_use: su.as_deref().and_then(SpecialUse::from_imap),
        disk: DiskState {
            a: r.try_get(7)?,
            b: r.try_get(8)?,
        },
        recheck_after: r.try_get(9)?,
    })
}

impl MailboxRow {
    /// A fresh UID.
    pub(super) fn next_uid(&mut self, tx: &mut WriteTx<'_>) -> Uid {
        let uid = self.uidnext;
        self.uidnext += 1;
        tx.count_alloc();
        uid
    }

    /// A fresh modseq for this mailbox (also its new HIGHESTMODSEQ).
    pub(super) fn next_modseq(&mut self, tx: &mut WriteTx<'_>) -> ModSeq {
        self.highest_modseq += 1;
        tx.count_alloc();
        self.highest_modseq
    }
}

/// UID/modseq allocation and power loss.
///
/// Commits use `synchronous=NORMAL`: a `kill -9` loses nothing, but a power loss may drop
/// the last commits, and with them UIDs that clients already saw. So the index counts
/// (across processes, in `meta.allocs_since_sync`) the values handed out since its files
/// were last fsynced, and fsyncs them before that count passes [`ALLOC_WINDOW`]. On the
/// first open after a reboot (the kernel's boot id changed) every UIDNEXT, HIGHESTMODSEQ
/// and the UIDVALIDITY counter skip by the window, above anything a lost commit handed out.
pub(super) struct Alloc;

impl Alloc {
    fn boot_id() -> String {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }

    /// Runs at open: after a reboot, skip past anything lost commits may have handed out.
    pub(super) async fn after_open(w: &mut Writer) -> Result<()> {
        let boot = Alloc::boot_id();
        let mut tx = w.begin().await?;
        let stored: Option<String> =
            sqlx::query_scalar("SELECT tval FROM meta WHERE key = 'boot_id'")
                .fetch_optional(tx.conn())
                .await?
                .flatten();
        if stored.as_deref() == Some(boot.as_str()) {
            return Ok(());
        }
        if stored.is_some() {
            tracing::info!("first index open since a reboot: UIDs and modseqs skip ahead");
            sqlx::query(
                "UPDATE mailbox SET uidnext = uidnext + ?1, highest_modseq = highest_modseq + ?1",
            )
            .bind(ALLOC_WINDOW)
            .execute(tx.conn())
            .await?;
            sqlx::query("UPDATE meta SET ival = ival + ? WHERE key = 'last_uidvalidity'")
                .bind(ALLOC_WINDOW)
                .execute(tx.conn())
                .await?;
        }
        sqlx::query("INSERT OR REPLACE INTO meta (key, tval) VALUES ('boot_id', ?)")
            .bind(&boot)
            .execute(tx.conn())
            .await?;
        set_meta_int(tx.conn(), "allocs_since_sync", 0).await?;
        let path = tx.path;
        tx.commit().await?;
        fsync_index(path).await
    }
}

pub(super) async fn meta_int(c: &mut SqliteConnection, key: &str) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar::<_, Option<i64>>("SELECT ival FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(c)
            .await?
            .flatten(),
    )
}

pub(super) async fn set_meta_int(c: &mut SqliteConnection, key: &str, v: i64) -> Result<()> {
    sqlx::query("INSERT OR REPLACE INTO meta (key, ival) VALUES (?, ?)")
        .bind(key)
        .bind(v)
        .execute(c)
        .await?;
    Ok(())
}

pub(super) async fn mailbox_by_name(
    c: &mut SqliteConnection,
    name: &str,
) -> Result<Option<MailboxRow>> {
    let sql = format!("SELECT {MAILBOX_COLS} FROM mailbox WHERE name = ?");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(name)
        .fetch_optional(c)
        .await?;
    row.as_ref().map(mailbox_from_row).transpose()
}

pub(super) async fn all_mailboxes(c: &mut SqliteConnection) -> Result<Vec<MailboxRow>> {
    let sql = format!("SELECT {MAILBOX_COLS} FROM mailbox ORDER BY name");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(c).await?;
    rows.iter().map(mailbox_from_row).collect()
}

/// Adds a mailbox with a fresh UIDVALIDITY: the current time, but always above every
/// earlier one of this user, so a re-created name never repeats one.
pub(super) async fn insert_mailbox(
    tx: &mut WriteTx<'_>,
    name: &str,
    special_use: Option<SpecialUse>,
) -> Result<MailboxRow> {
    let now = super::user::unix_now() as i64;
    let last = meta_int(tx.conn(), "last_uidvalidity").await?.unwrap_or(0);
    let uidvalidity = now.max(last + 1).clamp(1, i64::from(u32::MAX));
    set_meta_int(tx.conn(), "last_uidvalidity", uidvalidity).await?;
    tx.count_alloc();
    sqlx::query(
        "INSERT INTO mailbox (name, uidvalidity, uidnext, highest_modseq, recent_from, \
         special_use) VALUES (?, ?, 1, 1, 1, ?)",
    )
    .bind(name)
    .bind(uidvalidity)
    .bind(special_use.map(|s| s.imap_attr()))
    .execute(tx.conn())
    .await?;
    mailbox_by_name(tx.conn(), name)
        .await?
        .ok_or_else(|| super::StoreError::Index("inserted mailbox row vanished".into()))
}

/// Writes back the counters and disk state of a mailbox row.
pub(super) async fn save_mailbox(tx: &mut WriteTx<'_>, m: &MailboxRow) -> Result<()> {
    sqlx::query(
        "UPDATE mailbox SET uidnext = ?, highest_modseq = ?, disk_a = ?, disk_b = ?, \
         recheck_after = ? WHERE id = ?",
    )
    .bind(i64::from(m.uidnext))
    .bind(m.highest_modseq as i64)
    .bind(m.disk.a)
    .bind(m.disk.b)
    .bind(m.recheck_after)
    .bind(m.id)
    .execute(tx.conn())
    .await?;
    Ok(())
}

pub(super) async fn set_special_use(
    tx: &mut WriteTx<'_>,
    id: i64,
    su: Option<SpecialUse>,
) -> Result<()> {
    sqlx::query("UPDATE mailbox SET special_use = ? WHERE id = ?")
        .bind(su.map(|s| s.imap_attr()))
        .bind(id)
        .execute(tx.conn())
        .await?;
    Ok(())
}

pub(super) async fn delete_mailbox(tx: &mut WriteTx<'_>, id: i64) -> Result<()> {
    for sql in [
        "DELETE FROM message WHERE mailbox_id = ?",
        "DELETE FROM message_cache WHERE mailbox_id = ?",
        "DELETE FROM expunged WHERE mailbox_id = ?",
        "DELETE FROM mailbox WHERE id = ?",
    ] {
        sqlx::query(sql).bind(id).execute(tx.conn()).await?;
    }
    Ok(())
}

pub(super) async fn rename_mailbox(tx: &mut WriteTx<'_>, id: i64, name: &str) -> Result<()> {
    sqlx::query("UPDATE mailbox SET name = ? WHERE id = ?")
        .bind(name)
        .bind(id)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Where a message's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Location {
    /// Maildir: base name (without `:2,...`), in `cur/` (true) or `new/`.
    Maildir { base: String, in_cur: bool },
    /// mbox: offset of the `From ` line, offset and length of the (quoted) message, and
    /// a fingerprint to recognise it after other tools rewrote the file.
    Mbox {
        from: u64,
        off: u64,
        len: u64,
        fingerprint: u64,
    },
}

/// A message row with its location.
#[derive(Debug, Clone)]
pub(super) struct MessageRow {
    pub meta: MessageMeta,
    pub loc: Location,
}

pub(super) fn keywords_to_db(k: &[String]) -> String {
    k.join(" ")
}

pub(super) fn keywords_from_db(s: &str) -> Vec<String> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split(' ').map(str::to_string).collect()
    }
}

pub(super) async fn insert_message(
    tx: &mut WriteTx<'_>,
    mailbox_id: i64,
    m: &MessageRow,
) -> Result<()> {
    insert_messages(tx, mailbox_id, std::slice::from_ref(m)).await
}

/// Inserts messages with one statement per 256 (a delivery batch is one round trip).
pub(super) async fn insert_messages(
    tx: &mut WriteTx<'_>,
    mailbox_id: i64,
    msgs: &[MessageRow],
) -> Result<()> {
    for chunk in msgs.chunks(256) {
        let mut sql = String::from(
            "INSERT INTO message (mailbox_id, uid, flags, keywords, modseq, size, \
             internal_date, file, in_cur, mbox_from, mbox_off, mbox_len, fingerprint) VALUES ",
        );
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 { "" } else { ", " });
            sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
        }
        // Only placeholders are spliced in: no data in the SQL text.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for m in chunk {
            let (file, in_cur, from, off, len, fp) = match &m.loc {
                Location::Maildir { base, in_cur } => (
                    Some(base.clone()),
                    Some(*in_cur as i64),
                    None,
                    None,
                    None,
                    None,
                ),
                Location::Mbox {
                    from,
                    off,
                    len,
                    fingerprint,
                } => (
                    None,
                    None,
                    Some(*from as i64),
                    Some(*off as i64),
                    Some(*len as i64),
                    Some(*fingerprint as i64),
                ),
            };
            q = q
                .bind(mailbox_id)
                .bind(i64::from(m.meta.uid))
                .bind(i64::from(m.meta.flags.bits()))
                .bind(keywords_to_db(&m.meta.keywords))
                .bind(m.meta.modseq as i64)
                .bind(m.meta.size as i64)
                .bind(m.meta.internal_date)
                .bind(file)
                .bind(in_cur)
                .bind(from)
                .bind(off)
                .bind(len)
                .bind(fp);
        }
        q.execute(tx.conn()).await?;
    }
    Ok(())
}

/// Updates flags, keywords, modseq and location of one message.
pub(super) async fn update_message(
    tx: &mut WriteTx<'_>,
    mailbox_id: i64,
    m: &MessageRow,
) -> Result<()> {
    match &m.loc {
        Location::Maildir { base, in_cur } => {
            sqlx::query(
                "UPDATE message SET flags = ?, keywords = ?, modseq = ?, file = ?, in_cur = ? \
                 WHERE mailbox_id = ? AND uid = ?",
            )
            .bind(i64::from(m.meta.flags.bits()))
            .bind(keywords_to_db(&m.meta.keywords))
            .bind(m.meta.modseq as i64)
            .bind(base)
            .bind(*in_cur as i64)
            .bind(mailbox_id)
            .bind(i64::from(m.meta.uid))
            .execute(tx.conn())
            .await?;
        }
        Location::Mbox {
            from,
            off,
            len,
            fingerprint,
        } => {
            sqlx::query(
                "UPDATE message SET flags = ?, keywords = ?, modseq = ?, size = ?, mbox_from = ?, \
                 mbox_off = ?, mbox_len = ?, fingerprint = ? WHERE mailbox_id = ? AND uid = ?",
            )
            .bind(i64::from(m.meta.flags.bits()))
            .bind(keywords_to_db(&m.meta.keywords))
            .bind(m.meta.modseq as i64)
            .bind(m.meta.size as i64)
            .bind(*from as i64)
            .bind(*off as i64)
            .bind(*len as i64)
            .bind(*fingerprint as i64)
            .bind(mailbox_id)
            .bind(i64::from(m.meta.uid))
            .execute(tx.conn())
            .await?;
        }
    }
    Ok(())
}

/// Removes a message and records its expunge (for VANISHED).
pub(super) async fn expunge_message(
    tx: &mut WriteTx<'_>,
    mailbox_id: i64,
    uid: Uid,
    modseq: ModSeq,
) -> Result<()> {
    sqlx::query("DELETE FROM message WHERE mailbox_id = ? AND uid = ?")
        .bind(mailbox_id)
        .bind(i64::from(uid))
        .execute(tx.conn())
        .await?;
    super::cache::forget(tx, mailbox_id, Some(uid)).await?;
    sqlx::query("INSERT OR REPLACE INTO expunged (mailbox_id, uid, modseq) VALUES (?, ?, ?)")
        .bind(mailbox_id)
        .bind(i64::from(uid))
        .bind(modseq as i64)
        .execute(tx.conn())
        .await?;
    Ok(())
}

const MESSAGE_COLS: &str = "uid, flags, keywords, modseq, size, internal_date, file, in_cur, \
     mbox_from, mbox_off, mbox_len, fingerprint";

fn message_from_row(r: &SqliteRow) -> Result<MessageRow> {
    let kw: String = r.try_get(2)?;
    let meta = MessageMeta {
        uid: r.try_get::<i64, _>(0)? as u32,
        flags: Flags::from_bits(r.try_get::<i64, _>(1)? as u8),
        keywords: keywords_from_db(&kw),
        modseq: r.try_get::<i64, _>(3)? as u64,
        size: r.try_get::<i64, _>(4)? as u64,
        internal_date: r.try_get(5)?,
        recent: false,
    };
    let file: Option<String> = r.try_get(6)?;
    let loc = match file {
        Some(base) => Location::Maildir {
            base,
            in_cur: r.try_get::<Option<i64>, _>(7)?.unwrap_or(0) != 0,
        },
        None => Location::Mbox {
            from: r.try_get::<Option<i64>, _>(8)?.unwrap_or(0) as u64,
            off: r.try_get::<Option<i64>, _>(9)?.unwrap_or(0) as u64,
            len: r.try_get::<Option<i64>, _>(10)?.unwrap_or(0) as u64,
            fingerprint: r.try_get::<Option<i64>, _>(11)?.unwrap_or(0) as u64,
        },
    };
    Ok(MessageRow { meta, loc })
}

/// Every message of a mailbox with its location, ascending UID.
pub(super) async fn message_rows(
    c: &mut SqliteConnection,
    mailbox_id: i64,
) -> Result<Vec<MessageRow>> {
    let sql = format!("SELECT {MESSAGE_COLS} FROM message WHERE mailbox_id = ? ORDER BY uid");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(mailbox_id)
        .fetch_all(c)
        .await?;
    rows.iter().map(message_from_row).collect()
}

/// The messages among `uids` (sorted or not) that exist, ascending UID.
pub(super) async fn message_rows_in(
    c: &mut SqliteConnection,
    mailbox_id: i64,
    uids: &[Uid],
) -> Result<Vec<MessageRow>> {
    let (Some(lo), Some(hi)) = (uids.iter().min(), uids.iter().max()) else {
        return Ok(Vec::new());
    };
    let mut wanted: Vec<Uid> = uids.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let sql = format!(
        "SELECT {MESSAGE_COLS} FROM message WHERE mailbox_id = ? AND uid BETWEEN ? AND ? ORDER BY uid"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(mailbox_id)
        .bind(i64::from(*lo))
        .bind(i64::from(*hi))
        .fetch_all(c)
        .await?;
    let mut out = Vec::new();
    for r in &rows {
        let m = message_from_row(r)?;
        if wanted.binary_search(&m.meta.uid).is_ok() {
            out.push(m);
        }
    }
    Ok(out)
}

/// The snapshot query: metadata of every message, ascending UID.
pub(super) async fn snapshot_messages(
    c: &mut SqliteConnection,
    mailbox_id: i64,
) -> Result<Vec<MessageMeta>> {
    let rows = sqlx::query(
        "SELECT uid, flags, keywords, modseq, size, internal_date FROM message \
         WHERE mailbox_id = ? ORDER BY uid",
    )
    .bind(mailbox_id)
    .fetch_all(c)
    .await?;
    rows.iter().map(meta_from_row).collect()
}

fn meta_from_row(r: &SqliteRow) -> Result<MessageMeta> {
    meta_at(r, 0)
}

/// A message's metadata from columns uid, flags, keywords, modseq, size and internal_date
/// starting at column `at`.
fn meta_at(r: &SqliteRow, at: usize) -> Result<MessageMeta> {
    let kw: String = r.try_get(at + 2)?;
    Ok(MessageMeta {
        uid: r.try_get::<i64, _>(at)? as u32,
        flags: Flags::from_bits(r.try_get::<i64, _>(at + 1)? as u8),
        keywords: keywords_from_db(&kw),
        modseq: r.try_get::<i64, _>(at + 3)? as u64,
        size: r.try_get::<i64, _>(at + 4)? as u64,
        internal_date: r.try_get(at + 5)?,
        recent: false,
    })
}

/// The mailbox's counters, its messages with modseq > `since` and the UIDs expunged after
/// it, or `None` if there is no such mailbox. One statement, so one consistent snapshot
/// and one trip to the database thread: this runs after nearly every IMAP command.
pub(super) async fn changes_since(
    c: &mut SqliteConnection,
    mailbox: &str,
    since: ModSeq,
) -> Result<Option<Changes>> {
    // Rows: (0, uidvalidity, uidnext, highest_modseq) for the mailbox, (1, uid, flags,
    // keywords, modseq, size, internal_date) per changed message, (2, uid) per expunge.
    let rows = sqlx::query(
        "SELECT 0, uidvalidity, uidnext, highest_modseq, NULL, NULL, NULL \
           FROM mailbox WHERE name = ?1 \
         UNION ALL \
         SELECT 1, uid, flags, keywords, modseq, size, internal_date FROM message \
           WHERE mailbox_id = (SELECT id FROM mailbox WHERE name = ?1) AND modseq > ?2 \
         UNION ALL \
         SELECT 2, uid, NULL, NULL, NULL, NULL, NULL FROM expunged \
           WHERE mailbox_id = (SELECT id FROM mailbox WHERE name = ?1) AND modseq > ?2 \
         ORDER BY 1, 2",
    )
    .bind(mailbox)
    .bind(since as i64)
    .fetch_all(c)
    .await?;
    let mut out: Option<Changes> = None;
    for r in &rows {
        let kind: i64 = r.try_get(0)?;
        match (kind, out.as_mut()) {
            (0, _) => {
                out = Some(Changes {
                    uidvalidity: r.try_get::<i64, _>(1)? as u32,
                    uidnext: r.try_get::<i64, _>(2)? as u32,
                    highest_modseq: r.try_get::<i64, _>(3)? as u64,
                    changed: Vec::new(),
                    vanished: Vec::new(),
                })
            }
            (1, Some(ch)) => ch.changed.push(meta_at(r, 1)?),
            (2, Some(ch)) => ch.vanished.push(r.try_get::<i64, _>(1)? as Uid),
            _ => {}
        }
    }
    Ok(out)
}

/// STATUS from the counters the triggers of `migrate.rs` keep; only \Recent is counted
/// (a range of the primary key, usually short).
pub(super) async fn status(c: &mut SqliteConnection, m: &MailboxRow) -> Result<MailboxStatus> {
    let r = sqlx::query(
        "SELECT msg_count, unseen_count, total_size, \
         (SELECT COUNT(*) FROM message WHERE mailbox_id = ?1 AND uid >= ?2) \
         FROM mailbox WHERE id = ?1",
    )
    .bind(m.id)
    .bind(i64::from(m.recent_from))
    .fetch_optional(c)
    .await?
    .ok_or_else(|| super::StoreError::NoSuchMailbox(m.name.clone()))?;
    Ok(MailboxStatus {
        messages: r.try_get::<i64, _>(0)? as u32,
        unseen: r.try_get::<i64, _>(1)? as u32,
        size: r.try_get::<i64, _>(2)? as u64,
        recent: r.try_get::<i64, _>(3)? as u32,
        uidnext: m.uidnext,
        uidvalidity: m.uidvalidity,
        highest_modseq: m.highest_modseq,
    })
}

pub(super) async fn quota(c: &mut SqliteConnection) -> Result<QuotaUsage> {
    let r = sqlx::query(
        "SELECT COALESCE(SUM(msg_count), 0), COALESCE(SUM(total_size), 0) FROM mailbox",
    )
    .fetch_one(c)
    .await?;
    Ok(QuotaUsage {
        messages: r.try_get::<i64, _>(0)? as u64,
        bytes: r.try_get::<i64, _>(1)? as u64,
    })
}

pub(super) async fn subscriptions(c: &mut SqliteConnection) -> Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT name FROM subscription ORDER BY name")
            .fetch_all(c)
            .await?,
    )
}

pub(super) async fn set_subscribed(tx: &mut WriteTx<'_>, name: &str, on: bool) -> Result<()> {
    let sql = if on {
        "INSERT OR IGNORE INTO subscription (name) VALUES (?)"
    } else {
        "DELETE FROM subscription WHERE name = ?"
    };
    sqlx::query(sql).bind(name).execute(tx.conn()).await?;
    Ok(())
}
