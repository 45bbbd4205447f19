//! Authentication for the daemons: argon2id verification with a dummy check for unknown
//! logins (equal timing), the failed-login [`Throttle`], and a cap on concurrent password
//! checks.
//!
//! Each argon2id check costs about 19 MiB and a core for tens of milliseconds; without a cap,
//! enough parallel attempts take GiBs and fill tokio's blocking pool that local delivery
//! needs too. At most [`Authenticator::max_concurrent`] checks run at once (a few per core);
//! the others wait up to a bounded time and then get a temporary failure.
//!
//! A login whose password was checked correct a short while ago (the [`LoginCache`]) skips
//! argon2id and the cap; wrong passwords never do.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::directory::{Directory, DirectoryError, User};
use crate::log_escape;
use crate::login_cache::LoginCache;
pub use crate::login_throttle::Throttle;
use crate::password;

/// Password checks running at once per core.
const CHECKS_PER_CORE: usize = 2;
/// How long a login waits for a free check slot before it gets a temporary failure.
const DEFAULT_CHECK_WAIT: Duration = Duration::from_secs(10);

/// Verifies logins against the directory. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Authenticator {
    directory: Directory,
    throttle: Arc<Throttle>,
    checks: Arc<Semaphore>,
    verified: Arc<LoginCache>,
    max_concurrent: usize,
    check_wait: Duration,
}

impl Authenticator {
    pub fn new(directory: Directory, free_failures: u32) -> Authenticator {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Authenticator::with_limits(
            directory,
            free_failures,
            CHECKS_PER_CORE * cores,
            DEFAULT_CHECK_WAIT,
        )
    }

    /// `max_concurrent` password checks at once; a login waits at most `check_wait` for one.
    pub fn with_limits(
        directory: Directory,
        free_failures: u32,
        max_concurrent: usize,
        check_wait: Duration,
    ) -> Authenticator {
        let max_concurrent = max_concurrent.max(1);
        Authenticator {
            directory,
            throttle: Arc::new(Throttle::new(free_failures)),
            checks: Arc::new(Semaphore::new(max_concurrent)),
            verified: Arc::new(LoginCache::default()),
            max_concurrent,
            check_wait,
        }
    }

    /// How many password checks may run at once.
    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Check `login`/`password` from `ip`. Returns the user on success, `None` on a wrong
    /// login, wrong password or disabled account (callers answer alike for all three).
    /// A throttled client's answer is delayed; the delay applies to successes too, so a
    /// guesser cannot tell a hit by its speed.
    pub async fn verify(
        &self,
        login: &str,
        password: &str,
        ip: IpAddr,
    ) -> Result<Option<User>, DirectoryError> {
        let shown = log_escape::escape(login);
        let delay = self.throttle.delay(ip, login);
        if !delay.is_zero() {
            tracing::info!(%ip, login = %shown, delay_ms = delay.as_millis() as u64,
                "throttling login");
            tokio::time::sleep(delay).await;
        }
        let creds = self.directory.credentials(login).await?;
        if let Some((user, hash)) = &creds
            && self.verified.is_verified(&user.address, hash, password)
        {
            self.throttle.record_success(ip, login);
            return Ok(Some(user.clone()));
        }
        let (user, hash) = match creds {
            Some((u, h)) => (Some(u), h),
            None => (None, password::dummy_hash().to_string()),
        };
        // The dummy check for unknown logins takes a slot too: same cost, same timing.
        let permit = match tokio::time::timeout(
            self.check_wait,
            self.checks.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(%ip, login = %shown, "too many password checks at once");
                return Err(DirectoryError::AuthBusy);
            }
        };
        let pw = password.to_string();
        let (ok, hash) = tokio::task::spawn_blocking(move || {
            let ok = password::verify(&pw, &hash);
            drop(permit);
            (ok, hash)
        })
        .await
        .map_err(|e| DirectoryError::Join(e.to_string()))?;
        match user {
            Some(u) if ok => {
                self.verified.remember(&u.address, &hash, password);
                self.throttle.record_success(ip, login);
                Ok(Some(u))
            }
            _ => {
                self.throttle.record_failure(ip, login);
                crate::metrics::inc(crate::metrics::Counter::AuthFailures);
                tracing::info!(%ip, login = %shown, "authentication failed");
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn password_checks_are_capped_and_the_excess_gets_a_temporary_failure() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(&tmp.path().join("d.sqlite"), &["localhost".into()])
            .await
            .unwrap();
        dir.add_user("alice@localhost", "secret", 0).await.unwrap();
        let auth = Authenticator::with_limits(dir, 3, 1, Duration::from_millis(200));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        // Another login's check holds the only slot.
        let busy = auth.checks.clone().acquire_owned().await.unwrap();
        for login in ["alice@localhost", "ghost@localhost"] {
            let started = std::time::Instant::now();
            let result = auth.verify(login, "secret", ip).await;
            assert!(matches!(result, Err(DirectoryError::AuthBusy)), "{login}");
            assert!(started.elapsed() >= Duration::from_millis(200));
        }
        drop(busy);
        let u = auth.verify("alice@localhost", "secret", ip).await.unwrap();
        assert_eq!(u.unwrap().address, "alice@localhost");
        assert_eq!(auth.checks.available_permits(), 1, "the slot is given back");
    }

    #[tokio::test]
    async fn a_recent_success_skips_the_hashing_slot_but_a_wrong_password_does_not() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(&tmp.path().join("d.sqlite"), &["localhost".into()])
            .await
            .unwrap();
        dir.add_user("alice@localhost", "secret", 0).await.unwrap();
        let auth = Authenticator::with_limits(dir.clone(), 3, 1, Duration::from_millis(200));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let u = auth.verify("alice@localhost", "secret", ip).await.unwrap();
        assert_eq!(u.unwrap().address, "alice@localhost");
        // Every slot is taken: the remembered success still logs in, at once.
        let busy = auth.checks.clone().acquire_owned().await.unwrap();
        let started = std::time::Instant::now();
        let u = auth.verify("Alice@localhost", "secret", ip).await.unwrap();
        assert_eq!(u.unwrap().address, "alice@localhost");
        assert!(started.elapsed() < Duration::from_millis(200));
        // A wrong password is not in the cache: it waits for a slot like any check.
        let wrong = auth.verify("alice@localhost", "guess", ip).await;
        assert!(matches!(wrong, Err(DirectoryError::AuthBusy)));
        drop(busy);
        assert!(
            auth.verify("alice@localhost", "guess", ip)
                .await
                .unwrap()
                .is_none()
        );
        // A changed password takes effect at once: the old one fails, the new one works.
        dir.set_password("alice@localhost", "changed")
            .await
            .unwrap();
        assert!(
            auth.verify("alice@localhost", "secret", ip)
                .await
                .unwrap()
                .is_none()
        );
        let u = auth.verify("alice@localhost", "changed", ip).await.unwrap();
        assert_eq!(u.unwrap().address, "alice@localhost");
    }

    #[tokio::test]
    async fn verify_users() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(&tmp.path().join("d.sqlite"), &["localhost".into()])
            .await
            .unwrap();
        dir.add_user("alice@localhost", "secret", 0).await.unwrap();
        let auth = Authenticator::new(dir, 3);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let u = auth.verify("Alice@localhost", "secret", ip).await.unwrap();
        assert_eq!(u.unwrap().address, "alice@localhost");
        assert!(
            auth.verify("alice@localhost", "nope", ip)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            auth.verify("ghost@localhost", "secret", ip)
                .await
                .unwrap()
                .is_none()
        );
        assert!(auth.verify("", "", ip).await.unwrap().is_none());
    }
}
