//! The Sender Rewriting Scheme for forwarded mail, in the format of libsrs2 and postsrsd,
//! so SPF passes at the destination and bounces come back to us and on to the sender.
//!
//! ```text
//! SRS0=HHHH=TT=orig.example=alice@forwarder.example        we forward alice@orig.example
//! SRS1=HHHH=first.example==HHHH=TT=orig.example=alice@us    we forward first's SRS0 address
//! ```
//!
//! `HHHH` is the first four characters of the base64 HMAC-SHA1 (over the lower-cased parts)
//! under our secret, `TT` the day number modulo 1024 in base32. A bounce to an SRS0 address
//! of ours goes to the original sender if its hash is right and it is at most `max_age_days`
//! old; a bounce to an SRS1 address goes to the first forwarder's SRS0 address. A key shared
//! with postsrsd (its secret file's line as `srs_secret`) accepts each other's addresses.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use ring::hmac;

/// The base32 alphabet of timestamps (RFC 4648).
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Characters of the hash kept in an address.
const HASH_LENGTH: usize = 4;
/// Time slots: the timestamp is a day number modulo this.
const SLOTS: u64 = 1024;
/// The key file generated in the data dir when the config names no secret.
pub const KEY_FILE: &str = "srs.key";

/// Why an SRS address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SrsError {
    #[error("not an SRS address")]
    NotSrs,
    #[error("malformed SRS address")]
    Malformed,
    #[error("SRS hash does not verify")]
    BadHash,
    #[error("SRS address has expired")]
    Expired,
}

/// Rewrites and reverses addresses with one secret.
#[derive(Clone)]
pub struct Srs {
    key: hmac::Key,
    max_age_days: u64,
}

impl std::fmt::Debug for Srs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Srs")
            .field("max_age_days", &self.max_age_days)
            .finish_non_exhaustive()
    }
}

/// Whether a local part looks like an SRS address (`SRS0=`, `SRS1+`, ...).
pub fn is_srs_local_part(local: &str) -> bool {
    let b = local.as_bytes();
    b.len() > 5
        && (b[..4].eq_ignore_ascii_case(b"SRS0") || b[..4].eq_ignore_ascii_case(b"SRS1"))
        && matches!(b[4], b'=' | b'+' | b'-')
}

fn days(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) / 86_400
}

fn split_address(address: &str) -> Option<(&str, &str)> {
    let (local, domain) = address.rsplit_once('@')?;
    (!local.is_empty() && !domain.is_empty()).then_some((local, domain))
}

impl Srs {
    pub fn new(secret: &[u8], max_age_days: u32) -> Srs {
        Srs {
            key: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret),
            max_age_days: u64::from(max_age_days),
        }
    }

    /// The secret of the config, or the one in `<data_dir>/srs.key` (made on first use,
    /// readable by hermod only).
    pub fn load(secret: &str, data_dir: &Path, max_age_days: u32) -> std::io::Result<Srs> {
        if !secret.is_empty() {
            return Ok(Srs::new(secret.as_bytes(), max_age_days));
        }
        let path = data_dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => {
                return Ok(Srs::new(s.trim().as_bytes(), max_age_days));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut bytes = [0u8; 24];
        rand::fill(&mut bytes);
        let fresh = base64::engine::general_purpose::STANDARD.encode(bytes);
        let tmp = data_dir.join(format!(".{KEY_FILE}.{}", std::process::id()));
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(fresh.as_bytes())?;
            f.sync_all()?;
        }
        // Another process may have made one meanwhile: the first one stays.
        match std::fs::hard_link(&tmp, &path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        }
        let _ = std::fs::remove_file(&tmp);
        let s = std::fs::read_to_string(&path)?;
        Ok(Srs::new(s.trim().as_bytes(), max_age_days))
    }

    fn hash(&self, parts: &[&str]) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        for p in parts {
            ctx.update(p.to_ascii_lowercase().as_bytes());
        }
        let digest = ctx.sign();
        let mut b64 = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
        b64.truncate(HASH_LENGTH);
        b64
    }

    fn check_hash(&self, given: &str, parts: &[&str]) -> Result<(), SrsError> {
        if given.eq_ignore_ascii_case(&self.hash(parts)) {
            Ok(())
        } else {
            Err(SrsError::BadHash)
        }
    }

    /// The envelope sender for forwarding mail from `sender` through `domain` (one of ours).
    /// The null sender stays null; an SRS address becomes SRS1; a sender in `domain` itself
    /// stays as it is.
    pub fn forward(&self, sender: &str, domain: &str, now: SystemTime) -> String {
        let Some((local, host)) = split_address(sender) else {
            return sender.to_string();
        };
        if host.eq_ignore_ascii_case(domain) {
            return sender.to_string();
        }
        if is_srs_local_part(local) {
            let sep = &local[4..5];
            if local[..4].eq_ignore_ascii_case("SRS0") {
                let rest = &local[4..];
                let hash = self.hash(&[host, rest]);
                return format!("SRS1{sep}{hash}={host}={rest}@{domain}");
            }
            // SRS1=hash=host=rest: re-sign host and rest under our key.
            let mut parts = local[5..].splitn(3, '=');
            if let (Some(_), Some(first), Some(rest)) = (parts.next(), parts.next(), parts.next())
                && !first.is_empty()
                && !rest.is_empty()
            {
                let hash = self.hash(&[first, rest]);
                return format!("SRS1{sep}{hash}={first}={rest}@{domain}");
            }
        }
        let day = days(now) % SLOTS;
        let stamp: String = [
            BASE32[((day >> 5) & 31) as usize] as char,
            BASE32[(day & 31) as usize] as char,
        ]
        .iter()
        .collect();
        let hash = self.hash(&[&stamp, host, local]);
        format!("SRS0={hash}={stamp}={host}={local}@{domain}")
    }

    /// Where mail to the SRS address `address` goes: the original sender (SRS0), or the first
    /// forwarder's SRS0 address (SRS1). Refused if the hash is wrong or the address expired.
    pub fn reverse(&self, address: &str, now: SystemTime) -> Result<String, SrsError> {
        let (local, _) = split_address(address).ok_or(SrsError::NotSrs)?;
        if !is_srs_local_part(local) {
            return Err(SrsError::NotSrs);
        }
        let body = &local[5..];
        if local[..4].eq_ignore_ascii_case("SRS0") {
            let mut parts = body.splitn(4, '=');
            let (Some(hash), Some(stamp), Some(host), Some(user)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(SrsError::Malformed);
            };
            if host.is_empty() || user.is_empty() {
                return Err(SrsError::Malformed);
            }
            self.check_hash(hash, &[stamp, host, user])?;
            self.check_stamp(stamp, now)?;
            return Ok(format!("{user}@{host}"));
        }
        let mut parts = body.splitn(3, '=');
        let (Some(hash), Some(host), Some(rest)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SrsError::Malformed);
        };
        if host.is_empty() || rest.is_empty() {
            return Err(SrsError::Malformed);
        }
        self.check_hash(hash, &[host, rest])?;
        Ok(format!("SRS0{rest}@{host}"))
    }

    fn check_stamp(&self, stamp: &str, now: SystemTime) -> Result<(), SrsError> {
        let value = |c: u8| {
            BASE32
                .iter()
                .position(|b| *b == c.to_ascii_uppercase())
                .map(|p| p as u64)
        };
        let b = stamp.as_bytes();
        let (Some(hi), Some(lo)) = (
            b.first().copied().and_then(value),
            b.get(1).copied().and_then(value),
        ) else {
            return Err(SrsError::Malformed);
        };
        if b.len() != 2 {
            return Err(SrsError::Malformed);
        }
        let then = (hi << 5) | lo;
        let mut today = days(now) % SLOTS;
        while today < then {
            today += SLOTS;
        }
        if today <= then + self.max_age_days {
            Ok(())
        } else {
            Err(SrsError::Expired)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(day: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(day * 86_400 + 3600)
    }

    #[test]
    fn forward_and_reverse_round_trip() {
        let srs = Srs::new(b"secret", 21);
        let now = at(20_000);
        let a = srs.forward("alice@orig.example", "fwd.example", now);
        assert!(a.starts_with("SRS0="), "{a}");
        assert!(a.ends_with("=orig.example=alice@fwd.example"), "{a}");
        assert_eq!(srs.reverse(&a, now).unwrap(), "alice@orig.example");
        // Case does not matter (some MTAs change it).
        assert_eq!(
            srs.reverse(&a.to_ascii_lowercase(), now).unwrap(),
            "alice@orig.example"
        );
        // Valid for max_age days, then refused.
        assert!(srs.reverse(&a, at(20_021)).is_ok());
        assert_eq!(srs.reverse(&a, at(20_022)), Err(SrsError::Expired));
        // Another key, or a changed part: refused.
        assert_eq!(
            Srs::new(b"other", 21).reverse(&a, now),
            Err(SrsError::BadHash)
        );
        let forged = a.replace("alice", "mallory");
        assert_eq!(srs.reverse(&forged, now), Err(SrsError::BadHash));
        assert_eq!(srs.reverse("bob@fwd.example", now), Err(SrsError::NotSrs));
        assert_eq!(
            srs.reverse("SRS0=x@fwd.example", now),
            Err(SrsError::Malformed)
        );
        // The null sender and our own domain are left alone.
        assert_eq!(srs.forward("", "fwd.example", now), "");
        assert_eq!(
            srs.forward("bob@fwd.example", "fwd.example", now),
            "bob@fwd.example"
        );
    }

    #[test]
    fn an_srs0_address_forwarded_again_becomes_srs1_and_goes_back_to_the_first_forwarder() {
        let first = Srs::new(b"first", 21);
        let second = Srs::new(b"second", 21);
        let now = at(20_000);
        let srs0 = first.forward("alice@orig.example", "one.example", now);
        let srs1 = second.forward(&srs0, "two.example", now);
        assert!(srs1.starts_with("SRS1="), "{srs1}");
        assert!(
            srs1.contains("=one.example==") && srs1.ends_with("@two.example"),
            "{srs1}"
        );
        let back = second.reverse(&srs1, now).unwrap();
        assert_eq!(back, srs0);
        assert_eq!(first.reverse(&back, now).unwrap(), "alice@orig.example");
        // Forwarding the SRS1 address again re-signs it, keeping the first forwarder.
        let third = Srs::new(b"third", 21).forward(&srs1, "three.example", now);
        assert!(
            third.starts_with("SRS1=") && third.contains("=one.example=="),
            "{third}"
        );
    }

    #[test]
    fn timestamps_wrap_around_the_1024_day_cycle() {
        let srs = Srs::new(b"k", 21);
        let a = srs.forward("a@b.example", "f.example", at(1023));
        assert!(srs.reverse(&a, at(1024 + 5)).is_ok());
        assert_eq!(srs.reverse(&a, at(1024 + 30)), Err(SrsError::Expired));
    }

    #[test]
    fn the_key_is_generated_once_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let now = at(20_000);
        let a = Srs::load("", tmp.path(), 21)
            .unwrap()
            .forward("a@b.example", "f.example", now);
        let again = Srs::load("", tmp.path(), 21).unwrap();
        assert_eq!(again.reverse(&a, now).unwrap(), "a@b.example");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(tmp.path().join(KEY_FILE))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o077, 0, "the key is private");
    }
}
