//! Screening of port 25 clients at connect (the `[screen]` section, Postfix postscreen's
//! ideas): the client IP's score in DNS lists (DNSBL with positive weights, DNSWL with
//! negative ones) against a threshold, and the pre-greeting test (a client that talks before
//! our greeting is done is a spam bot that does not wait for the server). Allow-listed
//! clients skip both. Scores are cached, in a bounded map with a time to live.
//!
//! The socket loop calls [`Screen::admit`] once per port 25 connection, before the session
//! greets; nothing else.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hashlink::LruCache;
use hermod_common::Config;
use hermod_common::config::ScreenConfig;
use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::{RData, RecordType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::FilterSetupError;

/// Longest time spent writing the first greeting line or a refusal.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A client's score in the DNS lists, and the lists that counted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Score {
    pub total: i32,
    pub listed_by: Vec<String>,
}

struct Cached {
    score: Score,
    expires: Instant,
}

pub struct Screen {
    config: ScreenConfig,
    hostname: String,
    resolver: Option<TokioResolver>,
    cache: Mutex<LruCache<IpAddr, Cached>>,
}

impl Screen {
    pub fn new(config: &Config) -> Result<Self, FilterSetupError> {
        let screen = config.screen.clone();
        let resolver = if screen.dnsbl_sites.is_empty() {
            None
        } else {
            Some(
                crate::outbound::route::resolver(config)
                    .map_err(|e| FilterSetupError(e.to_string()))?,
            )
        };
        Ok(Screen {
            cache: Mutex::new(LruCache::new(screen.cache_size.max(1))),
            config: screen,
            hostname: config.myhostname.clone(),
            resolver,
        })
    }

    /// Whether connections are screened at all.
    pub fn active(&self) -> bool {
        self.config.active()
    }

    /// Screens a new connection before the session greets: false when the client was refused
    /// (the refusal is written: the caller closes). With the pre-greeting test on, the first
    /// line of the greeting (`220-`) is written here and the session's greeting ends it.
    pub async fn admit<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        ip: IpAddr,
    ) -> bool {
        if self.config.allow.iter().any(|net| net.contains(ip)) {
            return true;
        }
        let wait = Duration::from_millis(self.config.pregreet_wait_ms);
        if !wait.is_zero() {
            let first = format!("220-{} ESMTP hermod\r\n", self.hostname);
            if write(stream, first.as_bytes()).await.is_err() {
                return false;
            }
        }
        let pregreet = async {
            if wait.is_zero() {
                return Ok(());
            }
            let mut byte = [0u8; 1];
            match tokio::time::timeout(wait, stream.read(&mut byte)).await {
                Err(_) => Ok(()),
                Ok(Ok(0)) | Ok(Err(_)) => Err(false),
                Ok(Ok(_)) => Err(true),
            }
        };
        let (pregreet, score) = tokio::join!(pregreet, self.score(ip));
        match pregreet {
            Ok(()) => {}
            Err(talked) => {
                if talked {
                    tracing::info!(client = %ip, filter = "screen", "refused: talked before the greeting");
                    let _ = write(
                        stream,
                        b"554 5.5.1 Protocol error: talked before the greeting\r\n",
                    )
                    .await;
                }
                return false;
            }
        }
        if !self.config.dnsbl_sites.is_empty() && score.total >= self.config.dnsbl_threshold {
            let lists = score.listed_by.join(", ");
            tracing::info!(client = %ip, filter = "screen", score = score.total, lists = %lists,
                "refused: DNS list score over the threshold");
            let reply =
                format!("554 5.7.1 Service unavailable; client [{ip}] blocked using {lists}\r\n");
            let _ = write(stream, reply.as_bytes()).await;
            return false;
        }
        true
    }

    /// The client's score, from the cache or the DNS lists (all asked at once, each answer
    /// awaited at most `dnsbl_timeout_ms`; a list that does not answer does not count).
    pub async fn score(&self, ip: IpAddr) -> Score {
        let Some(resolver) = &self.resolver else {
            return Score::default();
        };
        let now = Instant::now();
        if let Ok(mut cache) = self.cache.lock()
            && let Some(cached) = cache.get(&ip)
        {
            if cached.expires > now {
                return cached.score.clone();
            }
            cache.remove(&ip);
        }
        let timeout = Duration::from_millis(self.config.dnsbl_timeout_ms.max(1));
        let reversed = reversed_name(ip);
        let mut lookups = tokio::task::JoinSet::new();
        for site in &self.config.dnsbl_sites {
            let (resolver, site) = (resolver.clone(), Arc::new(site.clone()));
            let name = format!("{reversed}.{}.", site.zone);
            lookups.spawn(async move {
                let answers = tokio::time::timeout(timeout, lookup_a(&resolver, &name)).await;
                let listed = match answers {
                    Ok(Ok(answers)) => answers.iter().any(|a| site.matches(*a)),
                    Ok(Err(())) => false,
                    Err(_) => {
                        tracing::warn!(list = %site.zone, "DNS list did not answer in time");
                        false
                    }
                };
                (site, listed)
            });
        }
        let mut score = Score::default();
        while let Some(result) = lookups.join_next().await {
            if let Ok((site, true)) = result {
                score.total = score.total.saturating_add(site.weight);
                score.listed_by.push(site.zone.clone());
            }
        }
        score.listed_by.sort();
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(
                ip,
                Cached {
                    score: score.clone(),
                    expires: now + Duration::from_secs(self.config.cache_ttl),
                },
            );
        }
        score
    }
}

async fn lookup_a(resolver: &TokioResolver, name: &str) -> Result<Vec<Ipv4Addr>, ()> {
    match resolver.lookup(name, RecordType::A).await {
        Ok(lookup) => Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()),
        // Not listed (NXDOMAIN) or the list failed: either way it does not count.
        Err(e) => {
            if !e.is_nx_domain() && !e.is_no_records_found() {
                tracing::debug!(query = name, error = %e, "DNS list lookup failed");
            }
            Err(())
        }
    }
}

/// The DNS list form of an address: IPv4 octets reversed (`2.0.0.127`), IPv6 nibbles
/// reversed (`1.0.0.0.….8.b.d.0.1.0.0.2`). IPv4-mapped IPv6 addresses are asked as IPv4.
pub fn reversed_name(ip: IpAddr) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}")
        }
        IpAddr::V6(v6) => {
            let mut parts = Vec::with_capacity(32);
            for byte in v6.octets().iter().rev() {
                parts.push(format!("{:x}", byte & 0x0f));
                parts.push(format!("{:x}", byte >> 4));
            }
            parts.join(".")
        }
    }
}

async fn write<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(bytes).await?;
        stream.flush().await
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reversed_names() {
        assert_eq!(reversed_name("192.0.2.10".parse().unwrap()), "10.2.0.192");
        assert_eq!(
            reversed_name("::ffff:192.0.2.10".parse().unwrap()),
            "10.2.0.192"
        );
        assert_eq!(
            reversed_name("2001:db8::1".parse().unwrap()),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
        );
    }

    fn screen(pregreet_ms: u64) -> Screen {
        let mut config = Config::defaults(true);
        config.screen.pregreet_wait_ms = pregreet_ms;
        config.screen.allow = vec!["192.0.2.0/24".parse().unwrap()];
        Screen::new(&config).unwrap()
    }

    #[tokio::test]
    async fn a_client_talking_before_the_greeting_is_refused() {
        let s = screen(200);
        let (mut server, mut client) = tokio::io::duplex(1024);
        client.write_all(b"EHLO bot\r\n").await.unwrap();
        assert!(!s.admit(&mut server, "198.51.100.1".parse().unwrap()).await);
        drop(server);
        let mut seen = String::new();
        client.read_to_string(&mut seen).await.unwrap();
        assert_eq!(
            seen,
            "220-localhost ESMTP hermod\r\n554 5.5.1 Protocol error: talked before the greeting\r\n"
        );

        // A patient client is let in after the first line; the allow list skips the test.
        let (mut server, mut client) = tokio::io::duplex(1024);
        assert!(s.admit(&mut server, "198.51.100.1".parse().unwrap()).await);
        let mut line = [0u8; 28];
        client.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"220-localhost ESMTP hermod\r\n");
        let (mut server, mut client) = tokio::io::duplex(1024);
        client.write_all(b"EHLO early\r\n").await.unwrap();
        assert!(s.admit(&mut server, "192.0.2.7".parse().unwrap()).await);
    }
}
