//! Where report data waits for its day to end: `<data_dir>/reports.db` (SQLite), one row per
//! day, domain and distinct result with a count. Rows are written in batches by the flusher
//! and deleted once their report is queued.

use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Row, Sqlite, Transaction};

/// The report kinds, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// DMARC aggregate (RFC 7489 7.2): `a` = rua and published policy (JSON), `b` = the
    /// record (JSON, without its count).
    Dmarc,
    /// TLS-RPT (RFC 8460): `a` = policy details (JSON), `b` = failure details (JSON) or ""
    /// for successful sessions.
    Tls,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Dmarc => "dmarc",
            Kind::Tls => "tls",
        }
    }
}

/// One aggregated row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RowKey {
    pub kind: Kind,
    /// Days since the Unix epoch (UTC).
    pub day: i64,
    pub domain: String,
    pub a: String,
    pub b: String,
}

pub struct ReportStore {
    pool: SqlitePool,
}

#[derive(Debug, thiserror::Error)]
#[error("report store: {0}")]
pub struct StoreError(#[from] sqlx::Error);

impl ReportStore {
    pub async fn open(path: &Path) -> Result<ReportStore, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS report_rows (
                kind TEXT NOT NULL, day INTEGER NOT NULL, domain TEXT NOT NULL,
                a TEXT NOT NULL, b TEXT NOT NULL, count INTEGER NOT NULL,
                PRIMARY KEY (kind, day, domain, a, b))",
        )
        .execute(&pool)
        .await?;
        Ok(ReportStore { pool })
    }

    /// Adds the counts (one transaction).
    pub async fn add(&self, rows: Vec<(RowKey, u64)>) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx: Transaction<'_, Sqlite> = self.pool.begin().await?;
        for (key, count) in rows {
            sqlx::query(
                "INSERT INTO report_rows (kind, day, domain, a, b, count) VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT (kind, day, domain, a, b) DO UPDATE SET count = count + excluded.count",
            )
            .bind(key.kind.as_str())
            .bind(key.day)
            .bind(&key.domain)
            .bind(&key.a)
            .bind(&key.b)
            .bind(count as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// (kind, day, domain) of every report whose day is before `today`.
    pub async fn due(&self, today: i64) -> Result<Vec<(Kind, i64, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT kind, day, domain FROM report_rows WHERE day < ? ORDER BY day, domain",
        )
        .bind(today)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let kind = match r.get::<String, _>(0).as_str() {
                    "dmarc" => Kind::Dmarc,
                    "tls" => Kind::Tls,
                    _ => return None,
                };
                Some((kind, r.get(1), r.get(2)))
            })
            .collect())
    }

    /// The rows of one report: (a, b, count).
    pub async fn rows(
        &self,
        kind: Kind,
        day: i64,
        domain: &str,
    ) -> Result<Vec<(String, String, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT a, b, count FROM report_rows WHERE kind = ? AND day = ? AND domain = ?",
        )
        .bind(kind.as_str())
        .bind(day)
        .bind(domain)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get::<i64, _>(2).max(0) as u64))
            .collect())
    }

    /// Forgets one report's rows (queued, or not wanted by the domain).
    pub async fn remove(&self, kind: Kind, day: i64, domain: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM report_rows WHERE kind = ? AND day = ? AND domain = ?")
            .bind(kind.as_str())
            .bind(day)
            .bind(domain)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_add_up_and_due_reports_are_those_of_past_days() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReportStore::open(&dir.path().join("reports.db"))
            .await
            .unwrap();
        let key = |day, domain: &str, b: &str| RowKey {
            kind: Kind::Tls,
            day,
            domain: domain.into(),
            a: "{}".into(),
            b: b.into(),
        };
        store
            .add(vec![
                (key(10, "x.test", ""), 3),
                (key(10, "x.test", "f"), 1),
            ])
            .await
            .unwrap();
        store.add(vec![(key(10, "x.test", ""), 2)]).await.unwrap();
        store.add(vec![(key(11, "y.test", ""), 1)]).await.unwrap();
        assert_eq!(
            store.due(11).await.unwrap(),
            vec![(Kind::Tls, 10, "x.test".to_string())]
        );
        let mut rows = store.rows(Kind::Tls, 10, "x.test").await.unwrap();
        rows.sort();
        assert_eq!(
            rows,
            vec![("{}".into(), "".into(), 5), ("{}".into(), "f".into(), 1)]
        );
        store.remove(Kind::Tls, 10, "x.test").await.unwrap();
        assert!(store.due(11).await.unwrap().is_empty());
        assert_eq!(store.due(12).await.unwrap().len(), 1);
    }
}
