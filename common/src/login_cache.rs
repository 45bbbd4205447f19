//! A short-lived memory of successful password checks, so a client that logs in again and
//! again (imaptest, a phone polling every minute, Thunderbird's five connections) costs one
//! argon2id check per few minutes instead of one per login, the way Dovecot deployments use
//! an auth cache.
//!
//! What is kept per user is only an HMAC-SHA256 tag, under a random key made when the process
//! starts, over the user's stored hash string and the password: never the password, and a
//! tag useless outside this process. The stored hash is read from the directory at every
//! login and is part of the tag, so a password changed by `hermod user passwd` (in any
//! process) misses at once. A wrong password never matches a tag and goes through argon2id,
//! the throttle and the cap on concurrent checks as before; only successes are remembered.
//! Bounded: at most `capacity` users (least recently used dropped first), each for `ttl`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hashlink::LruCache;
use ring::hmac;
use ring::rand::SystemRandom;

/// How many users' last successful login are remembered.
pub const DEFAULT_CAPACITY: usize = 10_000;
/// How long a successful check is trusted.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);

struct Verified {
    tag: hmac::Tag,
    at: Instant,
}

/// Successful password checks, keyed by user address. Share one per process.
pub struct LoginCache {
    key: hmac::Key,
    ttl: Duration,
    entries: Mutex<LruCache<String, Verified>>,
}

impl LoginCache {
    pub fn new(capacity: usize, ttl: Duration) -> LoginCache {
        // A fresh random key per process. If the system RNG ever failed, a key from `rand`
        // still keeps tags unguessable.
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .unwrap_or_else(|_| hmac::Key::new(hmac::HMAC_SHA256, &rand::random::<[u8; 32]>()));
        LoginCache {
            key,
            ttl,
            entries: Mutex::new(LruCache::new(capacity.max(1))),
        }
    }

    /// Whether `password` was checked correct against `stored_hash` for `address` within the
    /// TTL.
    pub fn is_verified(&self, address: &str, stored_hash: &str, password: &str) -> bool {
        self.is_verified_at(address, stored_hash, password, Instant::now())
    }

    /// Remembers that `password` matched `stored_hash` for `address`.
    pub fn remember(&self, address: &str, stored_hash: &str, password: &str) {
        self.remember_at(address, stored_hash, password, Instant::now());
    }

    /// Drops what is remembered of `address`.
    pub fn forget(&self, address: &str) {
        self.entries().remove(address);
    }

    /// How many users are remembered (expired entries included until they are looked at or
    /// pushed out).
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, LruCache<String, Verified>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tag's input, each part length-prefixed so no two triples give the same bytes.
    fn message(address: &str, stored_hash: &str, password: &str) -> Vec<u8> {
        let mut m = Vec::with_capacity(24 + address.len() + stored_hash.len() + password.len());
        for part in [address, stored_hash, password] {
            m.extend_from_slice(&(part.len() as u64).to_be_bytes());
            m.extend_from_slice(part.as_bytes());
        }
        m
    }

    fn is_verified_at(
        &self,
        address: &str,
        stored_hash: &str,
        password: &str,
        now: Instant,
    ) -> bool {
        let mut entries = self.entries();
        let Some(v) = entries.get(address) else {
            return false;
        };
        if now.saturating_duration_since(v.at) >= self.ttl {
            entries.remove(address);
            return false;
        }
        let message = Self::message(address, stored_hash, password);
        // Constant-time comparison of the tags.
        hmac::verify(&self.key, &message, v.tag.as_ref()).is_ok()
    }

    fn remember_at(&self, address: &str, stored_hash: &str, password: &str, now: Instant) {
        let tag = hmac::sign(&self.key, &Self::message(address, stored_hash, password));
        self.entries()
            .insert(address.to_string(), Verified { tag, at: now });
    }
}

impl Default for LoginCache {
    fn default() -> Self {
        LoginCache::new(DEFAULT_CAPACITY, DEFAULT_TTL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";

    #[test]
    fn a_remembered_password_hits() {
        let c = LoginCache::default();
        assert!(!c.is_verified("alice@localhost", HASH, "secret"));
        c.remember("alice@localhost", HASH, "secret");
        assert!(c.is_verified("alice@localhost", HASH, "secret"));
    }

    #[test]
    fn a_wrong_password_or_another_user_misses() {
        let c = LoginCache::default();
        c.remember("alice@localhost", HASH, "secret");
        assert!(!c.is_verified("alice@localhost", HASH, "secreT"));
        assert!(!c.is_verified("alice@localhost", HASH, ""));
        assert!(!c.is_verified("bob@localhost", HASH, "secret"));
        // Length prefixes: moving bytes between the parts gives another tag.
        assert!(!c.is_verified(
            "alice@localhost",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaAs",
            "ecret"
        ));
        // The hit still works after the misses.
        assert!(c.is_verified("alice@localhost", HASH, "secret"));
    }

    #[test]
    fn a_changed_stored_hash_misses() {
        let c = LoginCache::default();
        c.remember("alice@localhost", HASH, "secret");
        // `hermod user passwd` wrote a new hash (even for the same password: a new salt).
        let new_hash = "$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdA$bmV3aGFzaA";
        assert!(!c.is_verified("alice@localhost", new_hash, "secret"));
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let c = LoginCache::new(10, Duration::from_secs(60));
        let t0 = Instant::now();
        c.remember_at("alice@localhost", HASH, "secret", t0);
        assert!(c.is_verified_at(
            "alice@localhost",
            HASH,
            "secret",
            t0 + Duration::from_secs(59)
        ));
        assert!(!c.is_verified_at(
            "alice@localhost",
            HASH,
            "secret",
            t0 + Duration::from_secs(60)
        ));
        assert!(c.is_empty(), "an expired entry is dropped when looked at");
    }

    #[test]
    fn size_is_bounded_and_the_least_recently_used_goes_first() {
        let c = LoginCache::new(3, DEFAULT_TTL);
        for u in ["a@l", "b@l", "c@l"] {
            c.remember(u, HASH, "pw");
        }
        assert!(c.is_verified("a@l", HASH, "pw")); // a is now the most recently used
        c.remember("d@l", HASH, "pw");
        assert_eq!(c.len(), 3);
        assert!(
            !c.is_verified("b@l", HASH, "pw"),
            "b was the least recently used"
        );
        for u in ["a@l", "c@l", "d@l"] {
            assert!(c.is_verified(u, HASH, "pw"), "{u}");
        }
        for i in 0..1000 {
            c.remember(&format!("u{i}@l"), HASH, "pw");
        }
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn forget_drops_a_user() {
        let c = LoginCache::default();
        c.remember("alice@localhost", HASH, "secret");
        c.forget("alice@localhost");
        assert!(!c.is_verified("alice@localhost", HASH, "secret"));
    }

    #[test]
    fn two_processes_do_not_share_tags() {
        let (a, b) = (LoginCache::default(), LoginCache::default());
        let m = LoginCache::message("alice@localhost", HASH, "secret");
        assert_ne!(
            hmac::sign(&a.key, &m).as_ref(),
            hmac::sign(&b.key, &m).as_ref()
        );
    }
}
