//! MTA-STS (RFC 8461) for outbound mail: which policy a recipient domain publishes, cached by
//! its id and `max_age` (in memory and under `<data_dir>/mta-sts/`, so a restart does not
//! forget an enforced policy), and what it means for the servers to try.
//!
//! - [`policy`]: the TXT record, the policy file, MX patterns (pure).
//! - [`fetch`]: the HTTPS fetch of the policy file.
//!
//! The outbound runner asks [`MtaSts::lookup`] for each attempt at a domain (not for the relay
//! host or address literals): `enforce` keeps only matching MX hosts and demands TLS with a
//! verified certificate, `testing` only reports. Serving hermod's own policy is the HTTP
//! listener's (`hermod_common::http`).

pub mod fetch;
pub mod policy;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::proto::rr::RData;

pub use fetch::{FetchError, Fetcher};
pub use policy::{Mode, Policy};

/// Policies kept in memory at once; more are read back from disk when needed.
const MAX_CACHED: usize = 10_000;
/// After a failed fetch, how long the domain goes without a new try (the TXT record is still
/// looked up, so a new id is fetched at once).
const FETCH_RETRY: i64 = 300;

/// The answer for one domain.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    /// The policy in force (from the cache or just fetched); None: the domain has none.
    pub policy: Option<Arc<Policy>>,
    /// A fetch that failed now, for the log and TLS-RPT: (result type, detail).
    pub failure: Option<(&'static str, String)>,
}

#[derive(Debug, Clone)]
struct Cached {
    id: String,
    policy: Arc<Policy>,
    /// Unix time the policy stops being valid (fetch time + max_age).
    expires: i64,
}

/// The MTA-STS state of one daemon.
pub struct MtaSts {
    fetcher: Fetcher,
    dir: PathBuf,
    cache: Mutex<HashMap<String, Cached>>,
    /// Domain → (policy id, unix time before which a failed fetch is not retried).
    failed: Mutex<HashMap<String, (String, i64)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A domain fit to be a file name and a DNS name: lowercase LDH labels.
fn valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

impl MtaSts {
    /// `dir`: where policies are kept across restarts (created when first needed).
    pub fn new(fetcher: Fetcher, dir: &Path) -> MtaSts {
        MtaSts {
            fetcher,
            dir: dir.to_path_buf(),
            cache: Mutex::default(),
            failed: Mutex::default(),
        }
    }

    /// The policy in force for mail to `domain`.
    pub async fn lookup(&self, domain: &str) -> Lookup {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if !valid_domain(&domain) {
            return Lookup::default();
        }
        let now = unix_now();
        let cached = self.cached(&domain, now);
        let Some(id) = self.record_id(&domain).await else {
            // No record (or DNS trouble): a policy still within its max_age stays in force
            // (RFC 8461 5.1), which is what keeps an attacker from stripping it via DNS.
            return Lookup {
                policy: cached.map(|c| c.policy),
                failure: None,
            };
        };
        if let Some(c) = &cached
            && c.id == id
        {
            return Lookup {
                policy: Some(c.policy.clone()),
                failure: None,
            };
        }
        if let Some((failed_id, until)) = lock(&self.failed).get(&domain)
            && *failed_id == id
            && now < *until
        {
            return Lookup {
                policy: cached.map(|c| c.policy),
                failure: None,
            };
        }
        match self.fetcher.fetch(&domain).await {
            Ok(policy) => {
                let entry = Cached {
                    id,
                    expires: now + policy.max_age as i64,
                    policy: Arc::new(policy),
                };
                tracing::info!(domain = %domain, id = %entry.id, mode = entry.policy.mode.as_str(),
                    max_age = entry.policy.max_age, "MTA-STS policy fetched");
                lock(&self.failed).remove(&domain);
                self.store(&domain, entry.clone());
                Lookup {
                    policy: Some(entry.policy),
                    failure: None,
                }
            }
            Err(e) => {
                tracing::warn!(domain = %domain, id = %id, error = %e,
                    "MTA-STS policy fetch failed");
                {
                    let mut failed = lock(&self.failed);
                    if failed.len() >= MAX_CACHED {
                        failed.clear();
                    }
                    failed.insert(domain.clone(), (id, now + FETCH_RETRY));
                }
                Lookup {
                    policy: cached.map(|c| c.policy),
                    failure: Some((e.result_type(), e.to_string())),
                }
            }
        }
    }

    /// The id of the domain's STSv1 record; None if it has none or DNS fails.
    async fn record_id(&self, domain: &str) -> Option<String> {
        let texts = txt_records(&self.fetcher.resolver, &format!("_mta-sts.{domain}")).await?;
        policy::policy_id(texts.iter().map(String::as_str))
    }

    /// A valid cached policy, from memory or from disk.
    fn cached(&self, domain: &str, now: i64) -> Option<Cached> {
        if let Some(c) = lock(&self.cache).get(domain) {
            return (c.expires > now).then(|| c.clone());
        }
        let entry = read_entry(&self.dir.join(domain))?;
        if entry.expires <= now {
            return None;
        }
        self.remember(domain, entry.clone());
        Some(entry)
    }

    fn remember(&self, domain: &str, entry: Cached) {
        let mut cache = lock(&self.cache);
        if cache.len() >= MAX_CACHED && !cache.contains_key(domain) {
            // Everything is on disk too: forgetting only costs a file read.
            let now = unix_now();
            cache.retain(|_, c| c.expires > now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(domain.to_string(), entry);
    }

    fn store(&self, domain: &str, entry: Cached) {
        if let Err(e) = write_entry(&self.dir, domain, &entry) {
            tracing::warn!(domain = %domain, error = %e, "cannot keep the MTA-STS policy on disk");
        }
        self.remember(domain, entry);
    }
}

/// The TXT records at `name`, each record's strings joined; None when DNS fails or the name
/// has none (the TLS-RPT and DMARC-report lookups use it too).
pub async fn txt_records(
    resolver: &hickory_resolver::TokioResolver,
    name: &str,
) -> Option<Vec<String>> {
    let lookup = resolver.txt_lookup(format!("{name}.")).await.ok()?;
    Some(
        lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s))
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect(),
    )
}

/// `<id>\n<expires>\n<policy file>`.
fn read_entry(path: &Path) -> Option<Cached> {
    let text = std::fs::read(path).ok()?;
    if text.len() > policy::MAX_POLICY_BYTES + 128 {
        return None;
    }
    let text = String::from_utf8(text).ok()?;
    let mut parts = text.splitn(3, '\n');
    let id = parts.next()?.to_string();
    let expires = parts.next()?.parse().ok()?;
    let policy = Policy::parse(parts.next()?.as_bytes()).ok()?;
    Some(Cached {
        id,
        policy: Arc::new(policy),
        expires,
    })
}

fn write_entry(dir: &Path, domain: &str, entry: &Cached) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{domain}.tmp"));
    std::fs::write(
        &tmp,
        format!("{}\n{}\n{}", entry.id, entry.expires, entry.policy),
    )?;
    std::fs::rename(&tmp, dir.join(domain))
}

/// The fetch timeout of the outbound runner (RFC 8461 leaves it to the sender).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_files_round_trip_and_garbage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let entry = Cached {
            id: "abc1".into(),
            policy: Arc::new(
                Policy::parse(b"version: STSv1\nmode: enforce\nmx: *.x.test\nmax_age: 100\n")
                    .unwrap(),
            ),
            expires: 12345,
        };
        write_entry(dir.path(), "x.test", &entry).unwrap();
        let back = read_entry(&dir.path().join("x.test")).unwrap();
        assert_eq!(back.id, "abc1");
        assert_eq!(back.expires, 12345);
        assert_eq!(back.policy, entry.policy);
        std::fs::write(dir.path().join("y.test"), "garbage").unwrap();
        assert!(read_entry(&dir.path().join("y.test")).is_none());
    }

    #[test]
    fn domains_that_could_escape_the_directory_are_not_looked_up() {
        assert!(valid_domain("example.org"));
        for bad in ["", "..", "a/b", "a..b", ".hidden", "UPPER.case", "x y"] {
            assert!(!valid_domain(bad), "{bad}");
        }
    }
}
