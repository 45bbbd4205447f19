//! The `[screen]` section: screening of port 25 clients at connect (Postfix postscreen's
//! ideas): DNSBL/DNSWL scores, the pre-greeting test, an allow list.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use super::Cidr;

/// One DNS list as Postfix writes it: `zone[=filter][*weight]`, e.g. `zen.example*2`,
/// `bl.example=127.0.0.[2..11]`, `wl.example=127.0.[0..255].[1..3]*-2` (negative: an allow
/// list). The filter restricts which A records count; without it any answer counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsblSite {
    pub zone: String,
    /// Per octet, the ranges that match (from `127.0.0.[2..11;20]`).
    pub filter: Option<[Vec<(u8, u8)>; 4]>,
    pub weight: i32,
    /// As written, for logs and `check-config`.
    pub text: String,
}

impl DnsblSite {
    /// Whether an answer of the list counts.
    pub fn matches(&self, answer: std::net::Ipv4Addr) -> bool {
        match &self.filter {
            None => true,
            Some(octets) => answer
                .octets()
                .iter()
                .zip(octets)
                .all(|(o, ranges)| ranges.iter().any(|(lo, hi)| (lo..=hi).contains(&o))),
        }
    }
}

impl FromStr for DnsblSite {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid DNS list {s:?}: {why}");
        let (rest, weight) = match s.rsplit_once('*') {
            Some((rest, w)) => (rest, w.parse::<i32>().map_err(|_| bad("weight"))?),
            None => (s, 1),
        };
        let (zone, filter) = match rest.split_once('=') {
            Some((zone, filter)) => (
                zone,
                Some(parse_filter(filter).ok_or_else(|| bad("filter"))?),
            ),
            None => (rest, None),
        };
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        if zone.is_empty()
            || !zone
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err(bad("zone"));
        }
        Ok(DnsblSite {
            zone,
            filter,
            weight,
            text: s.to_string(),
        })
    }
}

/// `d.d.d.d` where each `d` is a number or `[n..m;k;...]`.
fn parse_filter(text: &str) -> Option<[Vec<(u8, u8)>; 4]> {
    // Dots separate octets only outside brackets (`[2..11]` has its own).
    let mut parts: Vec<&str> = Vec::new();
    let (mut depth, mut start) = (0u8, 0);
    for (i, c) in text.char_indices() {
        match c {
            '[' if depth == 0 => depth = 1,
            ']' if depth == 1 => depth = 0,
            '[' | ']' => return None,
            '.' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    if parts.len() != 4 {
        return None;
    }
    let mut octets: [Vec<(u8, u8)>; 4] = Default::default();
    for (slot, part) in octets.iter_mut().zip(parts) {
        let inner = match part.strip_prefix('[') {
            Some(rest) => rest.strip_suffix(']')?,
            None => part,
        };
        for item in inner.split(';') {
            let range = match item.split_once("..") {
                Some((lo, hi)) => (lo.parse().ok()?, hi.parse().ok()?),
                None => {
                    let n = item.parse().ok()?;
                    (n, n)
                }
            };
            if range.0 > range.1 {
                return None;
            }
            slot.push(range);
        }
    }
    Some(octets)
}

impl fmt::Display for DnsblSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for DnsblSite {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for DnsblSite {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// Screening settings; with the defaults nothing is screened.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScreenConfig {
    /// DNS lists asked about each port 25 client (Postfix `postscreen_dnsbl_sites`).
    pub dnsbl_sites: Vec<DnsblSite>,
    /// A client whose summed weights reach this is refused (`postscreen_dnsbl_threshold`).
    pub dnsbl_threshold: i32,
    /// Milliseconds to wait for the lists' answers before the client is let in unscored.
    pub dnsbl_timeout_ms: u64,
    /// Milliseconds between the first line of the greeting (`220-`) and the last: a client
    /// that talks in between is refused (`postscreen_greet_wait`). 0: no pre-greeting test.
    pub pregreet_wait_ms: u64,
    /// Clients never screened (Postfix `postscreen_access_list` permit entries).
    pub allow: Vec<Cidr>,
    /// How long a client's score is remembered, in seconds, and for how many clients.
    pub cache_ttl: u64,
    pub cache_size: usize,
}

impl Default for ScreenConfig {
    fn default() -> Self {
        ScreenConfig {
            dnsbl_sites: Vec::new(),
            dnsbl_threshold: 1,
            dnsbl_timeout_ms: 5000,
            pregreet_wait_ms: 0,
            allow: Vec::new(),
            cache_ttl: 3600,
            cache_size: 10_000,
        }
    }
}

impl ScreenConfig {
    /// Whether any screening is configured.
    pub fn active(&self) -> bool {
        !self.dnsbl_sites.is_empty() || self.pregreet_wait_ms > 0
    }

    /// The section as `hermod check-config` prints it.
    pub fn render(&self) -> String {
        let q = |items: Vec<String>| {
            let quoted: Vec<String> = items
                .iter()
                .map(|i| format!("\"{}\"", i.escape_default()))
                .collect();
            format!("[{}]", quoted.join(", "))
        };
        format!(
            "\n[screen]\ndnsbl_sites = {}\ndnsbl_threshold = {}\ndnsbl_timeout_ms = {}\npregreet_wait_ms = {}\nallow = {}\ncache_ttl = {}\ncache_size = {}\n",
            q(self.dnsbl_sites.iter().map(|s| s.text.clone()).collect()),
            self.dnsbl_threshold,
            self.dnsbl_timeout_ms,
            self.pregreet_wait_ms,
            q(self.allow.iter().map(|c| c.to_string()).collect()),
            self.cache_ttl,
            self.cache_size
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postfix_list_syntax() {
        let plain: DnsblSite = "zen.example*2".parse().unwrap();
        assert_eq!((plain.zone.as_str(), plain.weight), ("zen.example", 2));
        assert!(plain.matches("127.0.0.2".parse().unwrap()));
        let filtered: DnsblSite = "bl.example=127.0.0.[2..11;20]".parse().unwrap();
        assert_eq!(filtered.weight, 1);
        assert!(filtered.matches("127.0.0.11".parse().unwrap()));
        assert!(filtered.matches("127.0.0.20".parse().unwrap()));
        assert!(!filtered.matches("127.0.0.12".parse().unwrap()));
        assert!(!filtered.matches("127.0.1.2".parse().unwrap()));
        let white: DnsblSite = "wl.example=127.0.[0..255].[1..3]*-2".parse().unwrap();
        assert_eq!(white.weight, -2);
        assert!(white.matches("127.0.9.3".parse().unwrap()));
        for bad in [
            "",
            "x*y",
            "bl.example=127.0.0",
            "bl.example=127.0.0.[5..2]",
            "b l.example",
        ] {
            assert!(bad.parse::<DnsblSite>().is_err(), "{bad}");
        }
        let c: ScreenConfig = toml::from_str(
            "dnsbl_sites = [\"zen.example*2\"]\ndnsbl_threshold = 2\nallow = [\"192.0.2.0/24\"]\n",
        )
        .unwrap();
        assert!(c.active());
        let again: ScreenConfig = toml::from_str(&c.render().replace("[screen]", "")).unwrap();
        assert_eq!(again, c);
        assert!(!ScreenConfig::default().active());
    }
}
