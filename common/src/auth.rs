//! Authentication for the daemons: argon2id verification with a dummy check for unknown
//! logins (equal timing), and a throttle of failed attempts per remote IP and per login.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::directory::{Directory, DirectoryError, User};
use crate::password;

/// Failures older than this are forgotten.
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The longest delay a throttled client waits for its answer.
const MAX_DELAY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Counts failed logins and says how long to delay the next answer.
#[derive(Debug, Default)]
pub struct Throttle {
    by_ip: Mutex<HashMap<IpAddr, Failures>>,
    by_login: Mutex<HashMap<String, Failures>>,
    free_failures: u32,
}

impl Throttle {
    /// `free_failures`: how many failures pass before delays start.
    pub fn new(free_failures: u32) -> Throttle {
        Throttle {
            free_failures,
            ..Throttle::default()
        }
    }

    fn count<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, Failures>>, key: &K) -> u32 {
        let map = map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key)
            .filter(|f| f.last.elapsed() < FAILURE_WINDOW)
            .map_or(0, |f| f.count)
    }

    fn bump<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, Failures>>, key: K) {
        let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
        // Keep the table bounded: drop stale entries when it grows.
        if map.len() > 100_000 {
            map.retain(|_, f| f.last.elapsed() < FAILURE_WINDOW);
        }
        let entry = map.entry(key).or_insert(Failures {
            count: 0,
            last: Instant::now(),
        });
        if entry.last.elapsed() >= FAILURE_WINDOW {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = Instant::now();
    }

    /// The delay before answering the next attempt from `ip` for `login`: none for the first
    /// few failures, then 1 s doubling up to 30 s.
    pub fn delay(&self, ip: IpAddr, login: &str) -> Duration {
        let n =
            Self::count(&self.by_ip, &ip).max(Self::count(&self.by_login, &login.to_lowercase()));
        if n < self.free_failures {
            return Duration::ZERO;
        }
        let exp = (n - self.free_failures).min(5);
        Duration::from_secs(1 << exp).min(MAX_DELAY)
    }

    pub fn record_failure(&self, ip: IpAddr, login: &str) {
        Self::bump(&self.by_ip, ip);
        Self::bump(&self.by_login, login.to_lowercase());
    }

    pub fn record_success(&self, ip: IpAddr, login: &str) {
        self.by_login
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&login.to_lowercase());
        self.by_ip
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ip);
    }
}

/// Verifies logins against the directory. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Authenticator {
    directory: Directory,
    throttle: Arc<Throttle>,
}

impl Authenticator {
    pub fn new(directory: Directory, free_failures: u32) -> Authenticator {
        Authenticator {
            directory,
            throttle: Arc::new(Throttle::new(free_failures)),
        }
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
        let delay = self.throttle.delay(ip, login);
        if !delay.is_zero() {
            tracing::info!(%ip, login, delay_ms = delay.as_millis() as u64, "throttling login");
            tokio::time::sleep(delay).await;
        }
        let creds = self.directory.credentials(login).await?;
        let (user, hash) = match creds {
            Some((u, h)) => (Some(u), h),
            None => (None, password::dummy_hash().to_string()),
        };
        let pw = password.to_string();
        let ok = tokio::task::spawn_blocking(move || password::verify(&pw, &hash))
            .await
            .map_err(|e| DirectoryError::Join(e.to_string()))?;
        match user {
            Some(u) if ok => {
                self.throttle.record_success(ip, login);
                Ok(Some(u))
            }
            _ => {
                self.throttle.record_failure(ip, login);
                crate::metrics::inc(crate::metrics::Counter::AuthFailures);
                tracing::info!(%ip, login, "authentication failed");
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_grows_and_resets() {
        let t = Throttle::new(3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(t.delay(ip, "a@b.c"), Duration::ZERO);
            t.record_failure(ip, "a@b.c");
        }
        assert_eq!(t.delay(ip, "a@b.c"), Duration::from_secs(1));
        t.record_failure(ip, "a@b.c");
        assert_eq!(t.delay(ip, "a@b.c"), Duration::from_secs(2));
        // Another IP guessing the same login is throttled too.
        assert_eq!(
            t.delay("192.0.2.9".parse().unwrap(), "A@B.C"),
            Duration::from_secs(2)
        );
        for _ in 0..20 {
            t.record_failure(ip, "a@b.c");
        }
        assert_eq!(t.delay(ip, "a@b.c"), MAX_DELAY);
        t.record_success(ip, "a@b.c");
        assert_eq!(t.delay(ip, "a@b.c"), Duration::ZERO);
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
