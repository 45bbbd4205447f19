//! The user directory: local domains, users (argon2id hashes, quota, enabled) and aliases,
//! in one SQLite database shared by every daemon and the admin commands.
//!
//! WAL mode and a busy timeout let `hermod user add` run while the daemons read.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::address::{Address, AddressError};
use crate::config::check_domain;
use crate::password;

/// Errors of the directory.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Every password-check slot stayed taken for the bounded wait: the client should retry
    /// (SMTP 454 4.7.0, IMAP NO [UNAVAILABLE], POP3 -ERR [SYS/TEMP]).
    #[error("too many logins being checked at once, try again")]
    AuthBusy,
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("{0}")]
    InvalidDomain(String),
    #[error("domain {0} is not a local domain (add it with `hermod domain add {0}`)")]
    NotLocalDomain(String),
    #[error("user {0} already exists")]
    UserExists(String),
    #[error("no such user: {0}")]
    NoSuchUser(String),
    #[error("domain {0} already exists")]
    DomainExists(String),
    #[error("no such domain: {0}")]
    NoSuchDomain(String),
    #[error("domain {0} still has users; delete them first")]
    DomainInUse(String),
    #[error("alias {0} -> {1} already exists")]
    AliasExists(String, String),
    #[error("no such alias: {0}")]
    NoSuchAlias(String),
    #[error("{0} is a user; an alias cannot have the same address")]
    AliasShadowsUser(String),
    #[error("password must not be empty")]
    EmptyPassword,
    #[error("{0}")]
    Hash(#[from] password::HashError),
    #[error("password check failed: {0}")]
    Join(String),
}

/// A user of the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// `localpart@domain`, lower-cased.
    pub address: String,
    pub localpart: String,
    pub domain: String,
    /// Mailbox quota in bytes; 0 means unlimited.
    pub quota_bytes: u64,
    pub enabled: bool,
}

/// Where mail for an address goes after alias expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A local user's mailbox; `detail` is the `+detail` of the address it was sent to.
    Local { user: User, detail: Option<String> },
    /// An address elsewhere (an alias pointing off-site).
    Remote(String),
}

/// An alias: mail to `source` goes to every target. A source `@domain` is a catch-all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub source: String,
    pub targets: Vec<String>,
}

/// Alias chains deeper than this are configuration loops.
const MAX_ALIAS_DEPTH: usize = 10;

/// The directory, cheap to clone.
#[derive(Clone)]
pub struct Directory {
    pool: SqlitePool,
    /// `mydestination`: local even when not in the domains table.
    static_domains: Vec<String>,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn user_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<User, sqlx::Error> {
    Ok(User {
        address: row.try_get("address")?,
        localpart: row.try_get("localpart")?,
        domain: row.try_get("domain")?,
        quota_bytes: row.try_get::<i64, _>("quota_bytes")?.max(0) as u64,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
    })
}

/// Normalise an alias source: `@domain` (catch-all) or an address.
fn alias_source(source: &str) -> Result<String, DirectoryError> {
    match source.trim().strip_prefix('@') {
        Some(domain) => Ok(format!(
            "@{}",
            check_domain(domain).map_err(DirectoryError::InvalidDomain)?
        )),
        None => Ok(Address::parse(source)?.key()),
    }
}

impl Directory {
    /// Open (creating if needed) the directory database and apply its migrations.
    pub async fn open(path: &Path, mydestination: &[String]) -> Result<Directory, DirectoryError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(sqlx::Error::Io)?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Directory {
            pool,
            static_domains: mydestination.to_vec(),
        })
    }

    /// Whether mail for `domain` is delivered here.
    pub async fn is_local_domain(&self, domain: &str) -> Result<bool, DirectoryError> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if self.static_domains.contains(&domain) {
            return Ok(true);
        }
        let row = sqlx::query("SELECT 1 FROM domains WHERE name = ?")
            .bind(&domain)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Every local domain: `mydestination` and the domains table.
    pub async fn list_domains(&self) -> Result<Vec<String>, DirectoryError> {
        let rows = sqlx::query("SELECT name FROM domains ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        let mut out: Vec<String> = self.static_domains.clone();
        for row in rows {
            let name: String = row.try_get("name")?;
            if !out.contains(&name) {
                out.push(name);
            }
        }
        Ok(out)
    }

    pub async fn add_domain(&self, domain: &str) -> Result<String, DirectoryError> {
        let domain = check_domain(domain).map_err(DirectoryError::InvalidDomain)?;
        let result = sqlx::query("INSERT OR IGNORE INTO domains (name, created_at) VALUES (?, ?)")
            .bind(&domain)
            .bind(now())
            .execute(&self.pool)
            .await?;
        if result.rows_affected() == 0 {
            return Err(DirectoryError::DomainExists(domain));
        }
        Ok(domain)
    }

    /// Delete a domain without users; its aliases go with it.
    pub async fn del_domain(&self, domain: &str) -> Result<(), DirectoryError> {
        let domain = check_domain(domain).map_err(DirectoryError::InvalidDomain)?;
        let mut tx = self.pool.begin().await?;
        let users = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE domain = ?")
            .bind(&domain)
            .fetch_one(&mut *tx)
            .await?;
        if users.try_get::<i64, _>("n")? > 0 {
            return Err(DirectoryError::DomainInUse(domain));
        }
        let deleted = sqlx::query("DELETE FROM domains WHERE name = ?")
            .bind(&domain)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(DirectoryError::NoSuchDomain(domain));
        }
        sqlx::query("DELETE FROM aliases WHERE source = ? OR source LIKE ?")
            .bind(format!("@{domain}"))
            .bind(format!("%@{domain}"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Add a user of a local domain. The password is hashed with argon2id.
    pub async fn add_user(
        &self,
        address: &str,
        password: &str,
        quota_bytes: u64,
    ) -> Result<User, DirectoryError> {
        let addr = Address::parse(address)?;
        if password.is_empty() {
            return Err(DirectoryError::EmptyPassword);
        }
        if !self.is_local_domain(&addr.domain).await? {
            return Err(DirectoryError::NotLocalDomain(addr.domain));
        }
        let key = addr.key();
        let hash = hash_blocking(password).await?;
        let mut tx = self.pool.begin().await?;
        // mydestination domains live in the config; give them a row for the foreign key.
        sqlx::query("INSERT OR IGNORE INTO domains (name, created_at) VALUES (?, ?)")
            .bind(&addr.domain)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT OR IGNORE INTO users (address, localpart, domain, password, quota_bytes, enabled, created_at)
             VALUES (?, ?, ?, ?, ?, 1, ?)",
        )
        .bind(&key)
        .bind(addr.localpart.to_lowercase())
        .bind(&addr.domain)
        .bind(&hash)
        .bind(quota_bytes.min(i64::MAX as u64) as i64)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(DirectoryError::UserExists(key));
        }
        tx.commit().await?;
        self.user(&key)
            .await?
            .ok_or(DirectoryError::NoSuchUser(key))
    }

    pub async fn set_password(&self, address: &str, password: &str) -> Result<(), DirectoryError> {
        let key = Address::parse(address)?.key();
        if password.is_empty() {
            return Err(DirectoryError::EmptyPassword);
        }
        let hash = hash_blocking(password).await?;
        let r = sqlx::query("UPDATE users SET password = ? WHERE address = ?")
            .bind(&hash)
            .bind(&key)
            .execute(&self.pool)
            .await?;
        user_changed(r.rows_affected(), key)
    }

    pub async fn set_quota(&self, address: &str, quota_bytes: u64) -> Result<(), DirectoryError> {
        let key = Address::parse(address)?.key();
        let r = sqlx::query("UPDATE users SET quota_bytes = ? WHERE address = ?")
            .bind(quota_bytes.min(i64::MAX as u64) as i64)
            .bind(&key)
            .execute(&self.pool)
            .await?;
        user_changed(r.rows_affected(), key)
    }

    pub async fn set_enabled(&self, address: &str, enabled: bool) -> Result<(), DirectoryError> {
        let key = Address::parse(address)?.key();
        let r = sqlx::query("UPDATE users SET enabled = ? WHERE address = ?")
            .bind(i64::from(enabled))
            .bind(&key)
            .execute(&self.pool)
            .await?;
        user_changed(r.rows_affected(), key)
    }

    /// Delete a user from the directory. Their mail stays on disk for the admin to remove.
    pub async fn del_user(&self, address: &str) -> Result<(), DirectoryError> {
        let key = Address::parse(address)?.key();
        let r = sqlx::query("DELETE FROM users WHERE address = ?")
            .bind(&key)
            .execute(&self.pool)
            .await?;
        user_changed(r.rows_affected(), key)
    }

    pub async fn list_users(&self) -> Result<Vec<User>, DirectoryError> {
        let rows = sqlx::query(
            "SELECT address, localpart, domain, quota_bytes, enabled FROM users ORDER BY domain, localpart",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
    }

    /// The user with this exact address (case-insensitive), if any.
    pub async fn user(&self, address: &str) -> Result<Option<User>, DirectoryError> {
        let key = match Address::parse(address) {
            Ok(a) => a.key(),
            Err(_) => return Ok(None),
        };
        let row = sqlx::query(
            "SELECT address, localpart, domain, quota_bytes, enabled FROM users WHERE address = ?",
        )
        .bind(&key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// The stored hash of an enabled user, for authentication.
    pub(crate) async fn credentials(
        &self,
        login: &str,
    ) -> Result<Option<(User, String)>, DirectoryError> {
        let key = match Address::parse(login) {
            Ok(a) => a.key(),
            Err(_) => return Ok(None),
        };
        let row = sqlx::query(
            "SELECT address, localpart, domain, quota_bytes, enabled, password FROM users WHERE address = ? AND enabled = 1",
        )
        .bind(&key)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(Some((user_from_row(&row)?, row.try_get("password")?))),
            None => Ok(None),
        }
    }

    /// Add `source -> target` (one row per target). The source must be in a local domain.
    pub async fn add_alias(&self, source: &str, target: &str) -> Result<(), DirectoryError> {
        let source = alias_source(source)?;
        let domain = source.rsplit('@').next().unwrap_or_default().to_string();
        if !self.is_local_domain(&domain).await? {
            return Err(DirectoryError::NotLocalDomain(domain));
        }
        if self.user(&source).await?.is_some() {
            return Err(DirectoryError::AliasShadowsUser(source));
        }
        let target = Address::parse(target)?.key();
        let r = sqlx::query(
            "INSERT OR IGNORE INTO aliases (source, target, created_at) VALUES (?, ?, ?)",
        )
        .bind(&source)
        .bind(&target)
        .bind(now())
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(DirectoryError::AliasExists(source, target));
        }
        Ok(())
    }

    /// Delete one target of an alias, or the whole alias when `target` is None.
    pub async fn del_alias(
        &self,
        source: &str,
        target: Option<&str>,
    ) -> Result<(), DirectoryError> {
        let source = alias_source(source)?;
        let r = match target {
            Some(t) => {
                sqlx::query("DELETE FROM aliases WHERE source = ? AND target = ?")
                    .bind(&source)
                    .bind(Address::parse(t)?.key())
                    .execute(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("DELETE FROM aliases WHERE source = ?")
                    .bind(&source)
                    .execute(&self.pool)
                    .await?
            }
        };
        if r.rows_affected() == 0 {
            return Err(DirectoryError::NoSuchAlias(source));
        }
        Ok(())
    }

    pub async fn list_aliases(&self) -> Result<Vec<Alias>, DirectoryError> {
        let rows = sqlx::query("SELECT source, target FROM aliases ORDER BY source, target")
            .fetch_all(&self.pool)
            .await?;
        let mut out: Vec<Alias> = Vec::new();
        for row in rows {
            let source: String = row.try_get("source")?;
            let target: String = row.try_get("target")?;
            match out.last_mut() {
                Some(a) if a.source == source => a.targets.push(target),
                _ => out.push(Alias {
                    source,
                    targets: vec![target],
                }),
            }
        }
        Ok(out)
    }

    async fn alias_targets(&self, source: &str) -> Result<Vec<String>, DirectoryError> {
        let rows = sqlx::query("SELECT target FROM aliases WHERE source = ? ORDER BY target")
            .bind(source)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("target"))
            .collect::<Result<_, _>>()?)
    }

    /// The first user of a domain (by creation), who receives its postmaster mail by default.
    async fn first_user_of(&self, domain: &str) -> Result<Option<User>, DirectoryError> {
        let row = sqlx::query(
            "SELECT address, localpart, domain, quota_bytes, enabled FROM users WHERE domain = ? ORDER BY created_at, address LIMIT 1",
        )
        .bind(domain)
        .fetch_optional(&self.pool)
        .await?;
        let user = row.as_ref().map(user_from_row).transpose()?;
        if user.is_some() {
            return Ok(user);
        }
        // A domain without users: the site's first user at all.
        let row = sqlx::query(
            "SELECT address, localpart, domain, quota_bytes, enabled FROM users ORDER BY created_at, address LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// Where mail to `address` goes: local mailboxes (after aliases, `+detail`, catch-all and
    /// the postmaster rule) and remote addresses. `None` when the address is in a local
    /// domain but nobody receives it (refuse at RCPT with 550 5.1.1). A remote domain's
    /// address resolves to itself as `Remote`.
    pub async fn resolve(&self, address: &str) -> Result<Option<Vec<Destination>>, DirectoryError> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let found = self.resolve_into(address, 0, &mut out, &mut seen).await?;
        Ok(if found && !out.is_empty() {
            Some(out)
        } else {
            None
        })
    }

    async fn resolve_into(
        &self,
        address: &str,
        depth: usize,
        out: &mut Vec<Destination>,
        seen: &mut HashSet<String>,
    ) -> Result<bool, DirectoryError> {
        let addr = match Address::parse(address) {
            Ok(a) => a,
            Err(_) => return Ok(false),
        };
        let key = addr.key();
        if !seen.insert(key.clone()) {
            return Ok(true); // already expanded through another path
        }
        if !self.is_local_domain(&addr.domain).await? {
            out.push(Destination::Remote(addr.to_string()));
            return Ok(true);
        }
        if depth > MAX_ALIAS_DEPTH {
            tracing::warn!(address = %key, "alias chain too deep; treating as unknown");
            return Ok(false);
        }
        if let Some(user) = self.user(&key).await? {
            if user.enabled {
                out.push(Destination::Local { user, detail: None });
                return Ok(true);
            }
            return Ok(false);
        }
        let (base, detail) = addr.split_detail();
        let base_key = format!("{}@{}", base.to_lowercase(), addr.domain);
        for source in [&key, &base_key] {
            let targets = self.alias_targets(source).await?;
            if !targets.is_empty() {
                let mut any = false;
                for t in targets {
                    any |= Box::pin(self.resolve_into(&t, depth + 1, out, seen)).await?;
                }
                return Ok(any);
            }
        }
        if detail.is_some()
            && let Some(user) = self.user(&base_key).await?.filter(|u| u.enabled)
        {
            out.push(Destination::Local {
                user,
                detail: detail.map(str::to_string),
            });
            return Ok(true);
        }
        let catch_all = self.alias_targets(&format!("@{}", addr.domain)).await?;
        if !catch_all.is_empty() {
            let mut any = false;
            for t in catch_all {
                any |= Box::pin(self.resolve_into(&t, depth + 1, out, seen)).await?;
            }
            return Ok(any);
        }
        if base.eq_ignore_ascii_case("postmaster")
            && let Some(user) = self.first_user_of(&addr.domain).await?
        {
            out.push(Destination::Local { user, detail: None });
            return Ok(true);
        }
        Ok(false)
    }

    /// Whether the authenticated `user` may use `sender` as envelope sender: their own
    /// address (with or without `+detail`) or an alias that delivers to them.
    pub async fn may_send_as(&self, user: &User, sender: &str) -> Result<bool, DirectoryError> {
        let addr = match Address::parse(sender) {
            Ok(a) => a,
            Err(_) => return Ok(false),
        };
        let key = addr.key();
        let (base, _) = addr.split_detail();
        let base_key = format!("{}@{}", base.to_lowercase(), addr.domain);
        if key == user.address || base_key == user.address {
            return Ok(true);
        }
        for source in [&key, &base_key] {
            if self.alias_targets(source).await?.contains(&user.address) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

async fn hash_blocking(password: &str) -> Result<String, DirectoryError> {
    let pw = password.to_string();
    tokio::task::spawn_blocking(move || password::hash(&pw))
        .await
        .map_err(|e| DirectoryError::Join(e.to_string()))?
        .map_err(DirectoryError::from)
}

/// An UPDATE or DELETE of one user: no row touched means there is no such user.
fn user_changed(rows: u64, key: String) -> Result<(), DirectoryError> {
    if rows == 0 {
        Err(DirectoryError::NoSuchUser(key))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn dir() -> (tempfile::TempDir, Directory) {
        let tmp = tempfile::tempdir().unwrap();
        let d = Directory::open(&tmp.path().join("dir.sqlite"), &["localhost".to_string()])
            .await
            .unwrap();
        (tmp, d)
    }

    fn local_users(dests: &[Destination]) -> Vec<(String, Option<String>)> {
        dests
            .iter()
            .filter_map(|d| match d {
                Destination::Local { user, detail } => Some((user.address.clone(), detail.clone())),
                Destination::Remote(_) => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn users_domains_and_errors() {
        let (_t, d) = dir().await;
        d.add_user("Alice@LocalHost", "pw", 0).await.unwrap();
        assert!(matches!(
            d.add_user("alice@localhost", "pw", 0).await,
            Err(DirectoryError::UserExists(_))
        ));
        assert!(matches!(
            d.add_user("bob@example.org", "pw", 0).await,
            Err(DirectoryError::NotLocalDomain(_))
        ));
        assert!(matches!(
            d.add_user("not an address", "pw", 0).await,
            Err(DirectoryError::Address(_))
        ));
        d.add_domain("Example.org").await.unwrap();
        assert!(matches!(
            d.add_domain("example.org").await,
            Err(DirectoryError::DomainExists(_))
        ));
        d.add_user("bob@example.org", "pw", 1000).await.unwrap();
        let users = d.list_users().await.unwrap();
        let names: Vec<_> = users.iter().map(|u| u.address.as_str()).collect();
        assert_eq!(names, ["bob@example.org", "alice@localhost"]);
        assert!(matches!(
            d.del_domain("example.org").await,
            Err(DirectoryError::DomainInUse(_))
        ));
        d.del_user("bob@example.org").await.unwrap();
        d.del_domain("example.org").await.unwrap();
        assert!(!d.is_local_domain("example.org").await.unwrap());
        assert!(d.is_local_domain("LOCALHOST").await.unwrap());
    }

    #[tokio::test]
    async fn resolution_aliases_detail_catchall_postmaster() {
        let (_t, d) = dir().await;
        d.add_user("alice@localhost", "pw", 0).await.unwrap();
        d.add_user("bob@localhost", "pw", 0).await.unwrap();
        d.add_alias("team@localhost", "alice@localhost")
            .await
            .unwrap();
        d.add_alias("team@localhost", "bob@localhost")
            .await
            .unwrap();
        d.add_alias("team@localhost", "carol@remote.example")
            .await
            .unwrap();
        let r = d.resolve("Team@localhost").await.unwrap().unwrap();
        assert_eq!(r.len(), 3);
        assert!(r.contains(&Destination::Remote("carol@remote.example".into())));
        let r = d.resolve("alice+lists@localhost").await.unwrap().unwrap();
        assert_eq!(
            local_users(&r),
            vec![("alice@localhost".into(), Some("lists".into()))]
        );
        assert_eq!(d.resolve("nobody@localhost").await.unwrap(), None);
        // Postmaster reaches the first user when no alias is set.
        let r = d.resolve("postmaster@localhost").await.unwrap().unwrap();
        assert_eq!(local_users(&r), vec![("alice@localhost".into(), None)]);
        // A catch-all takes unknown addresses.
        d.add_alias("@localhost", "bob@localhost").await.unwrap();
        let r = d.resolve("nobody@localhost").await.unwrap().unwrap();
        assert_eq!(local_users(&r), vec![("bob@localhost".into(), None)]);
        // A remote address resolves to itself.
        let r = d.resolve("x@elsewhere.example").await.unwrap().unwrap();
        assert_eq!(r, vec![Destination::Remote("x@elsewhere.example".into())]);
    }

    #[tokio::test]
    async fn alias_loops_terminate() {
        let (_t, d) = dir().await;
        d.add_alias("a@localhost", "b@localhost").await.unwrap();
        d.add_alias("b@localhost", "a@localhost").await.unwrap();
        assert_eq!(d.resolve("a@localhost").await.unwrap(), None);
    }

    #[tokio::test]
    async fn sender_ownership() {
        let (_t, d) = dir().await;
        let alice = d.add_user("alice@localhost", "pw", 0).await.unwrap();
        d.add_user("bob@localhost", "pw", 0).await.unwrap();
        d.add_alias("sales@localhost", "alice@localhost")
            .await
            .unwrap();
        assert!(d.may_send_as(&alice, "alice@localhost").await.unwrap());
        assert!(d.may_send_as(&alice, "ALICE+x@localhost").await.unwrap());
        assert!(d.may_send_as(&alice, "sales@localhost").await.unwrap());
        assert!(!d.may_send_as(&alice, "bob@localhost").await.unwrap());
        assert!(!d.may_send_as(&alice, "alice@evil.example").await.unwrap());
    }

    #[tokio::test]
    async fn passwords_are_argon2id() {
        let (_t, d) = dir().await;
        d.add_user("alice@localhost", "s3cret", 0).await.unwrap();
        let (_, hash) = d.credentials("alice@localhost").await.unwrap().unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(password::verify("s3cret", &hash));
        d.set_password("alice@localhost", "other").await.unwrap();
        let (_, hash) = d.credentials("alice@localhost").await.unwrap().unwrap();
        assert!(password::verify("other", &hash));
        d.set_enabled("alice@localhost", false).await.unwrap();
        assert!(d.credentials("alice@localhost").await.unwrap().is_none());
    }
}
