//! The failed-login throttle shared by SMTP AUTH, IMAP and POP3.
//!
//! Failures are counted per account and per client network, and the next answer is delayed
//! by the larger count. The account is the normalised login (as the directory looks users
//! up: trimmed, lower-cased, trailing dot of the domain removed), so `ALICE@X.ORG`,
//! ` alice@x.org` and `alice@x.org.` are one account. The network is the IPv4 address or the
//! IPv6 /64, since one IPv6 client owns a whole /64.
//!
//! A success forgives only the failures that same account made from that same network (a
//! user's own typos): another account's success never resets anything, so an attacker cannot
//! clear its counters by logging in to an account of its own.
//!
//! Memory is bounded: every table is an LRU of fixed capacity, and stored account keys are
//! cut to [`MAX_KEY_LEN`] bytes, so failed logins with random or huge names cannot grow it.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hashlink::LruCache;

use crate::address::Address;

/// Failures older than this are forgotten.
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The longest delay a throttled client waits for its answer.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// Entries per table; the least recently failed entry is dropped first.
const DEFAULT_CAPACITY: usize = 20_000;
/// Longest account key stored (an address is at most 254 octets).
pub const MAX_KEY_LEN: usize = 256;

/// A client network: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Network {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl Network {
    pub fn of(ip: IpAddr) -> Network {
        match ip {
            IpAddr::V4(v4) => Network::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Network::V4(v4.octets()),
                None => {
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    Network::V6(prefix)
                }
            },
        }
    }
}

/// The account a login names, as the directory would look it up; unparsable logins are
/// trimmed, lower-cased and cut to [`MAX_KEY_LEN`] bytes.
pub fn account_key(login: &str) -> String {
    let key = match Address::parse(login) {
        Ok(address) => address.key(),
        Err(_) => login.trim().to_lowercase(),
    };
    let mut end = key.len().min(MAX_KEY_LEN);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    key[..end].to_string()
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    fn current(&self) -> u32 {
        if self.last.elapsed() < FAILURE_WINDOW {
            self.count
        } else {
            0
        }
    }
}

struct Tables {
    by_account: LruCache<String, Failures>,
    by_network: LruCache<Network, Failures>,
    /// Failures of one account from one network: what a success of that account there
    /// forgives.
    by_pair: LruCache<(String, Network), Failures>,
}

/// Counts failed logins and says how long to delay the next answer.
pub struct Throttle {
    tables: Mutex<Tables>,
    free_failures: u32,
}

fn bump<K: std::hash::Hash + Eq>(table: &mut LruCache<K, Failures>, key: K) {
    let now = Instant::now();
    match table.get_mut(&key) {
        Some(f) => {
            f.count = f.current().saturating_add(1);
            f.last = now;
        }
        None => {
            // LruCache drops the least recently used entry when full.
            table.insert(
                key,
                Failures {
                    count: 1,
                    last: now,
                },
            );
        }
    }
}

fn forgive<K: std::hash::Hash + Eq>(table: &mut LruCache<K, Failures>, key: &K, n: u32) {
    if let Some(f) = table.peek_mut(key) {
        f.count = f.count.saturating_sub(n);
        if f.count == 0 {
            table.remove(key);
        }
    }
}

impl Throttle {
    /// `free_failures`: how many failures pass before delays start.
    pub fn new(free_failures: u32) -> Throttle {
        Throttle::with_capacity(free_failures, DEFAULT_CAPACITY)
    }

    /// As [`Throttle::new`] with `capacity` entries per table.
    pub fn with_capacity(free_failures: u32, capacity: usize) -> Throttle {
        let capacity = capacity.max(1);
        Throttle {
            tables: Mutex::new(Tables {
                by_account: LruCache::new(capacity),
                by_network: LruCache::new(capacity),
                by_pair: LruCache::new(capacity),
            }),
            free_failures,
        }
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The delay before answering the next attempt from `ip` for `login`: none for the first
    /// few failures, then 1 s doubling up to 30 s.
    pub fn delay(&self, ip: IpAddr, login: &str) -> Duration {
        let account = account_key(login);
        let tables = self.tables();
        let count = |f: Option<&Failures>| f.map_or(0, Failures::current);
        let n = count(tables.by_account.peek(&account))
            .max(count(tables.by_network.peek(&Network::of(ip))));
        if n < self.free_failures {
            return Duration::ZERO;
        }
        let exp = (n - self.free_failures).min(5);
        Duration::from_secs(1 << exp).min(MAX_DELAY)
    }

    pub fn record_failure(&self, ip: IpAddr, login: &str) {
        let account = account_key(login);
        let network = Network::of(ip);
        let mut tables = self.tables();
        bump(&mut tables.by_network, network);
        bump(&mut tables.by_pair, (account.clone(), network));
        bump(&mut tables.by_account, account);
    }

    /// `login` proved its password from `ip`: its own failures from that network are
    /// forgiven, nothing else.
    pub fn record_success(&self, ip: IpAddr, login: &str) {
        let account = account_key(login);
        let network = Network::of(ip);
        let mut tables = self.tables();
        let Some(own) = tables.by_pair.remove(&(account.clone(), network)) else {
            return;
        };
        let n = own.current();
        forgive(&mut tables.by_account, &account, n);
        forgive(&mut tables.by_network, &network, n);
    }

    /// Entries held, over all tables (for tests and metrics).
    pub fn entries(&self) -> usize {
        let tables = self.tables();
        tables.by_account.len() + tables.by_network.len() + tables.by_pair.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn grows_and_a_success_forgives_its_own_failures() {
        let t = Throttle::new(3);
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(t.delay(a, "a@b.c"), Duration::ZERO);
            t.record_failure(a, "a@b.c");
        }
        assert_eq!(t.delay(a, "a@b.c"), Duration::from_secs(1));
        t.record_failure(a, "a@b.c");
        assert_eq!(t.delay(a, "a@b.c"), Duration::from_secs(2));
        // Another IP guessing the same login is throttled too.
        assert_eq!(t.delay(ip("192.0.2.9"), "A@B.C"), Duration::from_secs(2));
        for _ in 0..20 {
            t.record_failure(a, "a@b.c");
        }
        assert_eq!(t.delay(a, "a@b.c"), MAX_DELAY);
        t.record_success(a, "a@b.c");
        assert_eq!(t.delay(a, "a@b.c"), Duration::ZERO);
    }

    #[test]
    fn respelled_logins_are_one_account() {
        let t = Throttle::new(3);
        for (i, login) in ["alice@x.org.", " alice@x.org", "ALICE@X.ORG"]
            .iter()
            .enumerate()
        {
            // Each from its own network: only the account ties them together.
            t.record_failure(ip(&format!("198.51.100.{i}")), login);
        }
        for login in ["alice@x.org", "Alice@X.Org.", "  alice@x.org  "] {
            assert_eq!(
                t.delay(ip("203.0.113.7"), login),
                Duration::from_secs(1),
                "{login}"
            );
        }
    }

    #[test]
    fn another_accounts_success_resets_nothing() {
        let t = Throttle::new(3);
        let attacker = ip("192.0.2.66");
        for _ in 0..5 {
            t.record_failure(attacker, "victim@x.org");
        }
        let before = t.delay(attacker, "victim@x.org");
        assert!(before >= Duration::from_secs(4));
        // The attacker logs in to an account of its own from the same address.
        t.record_success(attacker, "mine@x.org");
        assert_eq!(t.delay(attacker, "victim@x.org"), before);
        assert_eq!(
            t.delay(attacker, "other@x.org"),
            before,
            "the network stays throttled"
        );
        // The victim's own success elsewhere does not wipe the attacker's network either.
        t.record_success(ip("192.0.2.1"), "victim@x.org");
        assert_eq!(t.delay(attacker, "other@x.org"), before);
    }

    #[test]
    fn an_ipv6_64_is_one_client() {
        let t = Throttle::new(3);
        for i in 1..=4 {
            t.record_failure(
                ip(&format!("2001:db8:1:2::{i:x}")),
                &format!("user{i}@x.org"),
            );
        }
        assert_eq!(
            t.delay(ip("2001:db8:1:2:ffff::1"), "fresh@x.org"),
            Duration::from_secs(2)
        );
        assert_eq!(
            t.delay(ip("2001:db8:1:3::1"), "fresh@x.org"),
            Duration::ZERO
        );
    }

    #[test]
    fn memory_is_bounded() {
        let t = Throttle::with_capacity(3, 100);
        let long = "x".repeat(100_000);
        for i in 0..10_000u32 {
            let login = format!("{long}{i}@nowhere.example");
            t.record_failure(IpAddr::from(i.to_be_bytes()), &login);
        }
        assert!(t.entries() <= 300, "{} entries", t.entries());
        let tables = t.tables();
        assert!(
            tables
                .by_account
                .iter()
                .all(|(k, _)| k.len() <= MAX_KEY_LEN)
        );
    }
}
