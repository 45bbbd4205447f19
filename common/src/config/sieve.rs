//! The `[sieve]` section: users' Sieve filters, the ManageSieve limits, vacation replies
//! and the Sender Rewriting Scheme (SRS) of forwarded mail.

use serde::{Deserialize, Serialize};

/// Sieve, ManageSieve, vacation and SRS settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SieveConfig {
    /// Scripts one user may store (ManageSieve `QUOTA/MAXSCRIPTS`).
    pub max_scripts: usize,
    /// Largest script one user may store, in bytes (`QUOTA/MAXSIZE`).
    pub max_script_size: u64,
    /// `redirect`s one delivery may perform (the ManageSieve `MAXREDIRECTS` capability).
    pub max_redirects: usize,
    /// Shortest vacation period accepted from a script, in seconds (`:seconds` or `:days`
    /// below it are raised to it; RFC 6131 section 2 lets the site choose).
    pub vacation_min_period: u64,
    /// Longest vacation period, in seconds.
    pub vacation_max_period: u64,
    /// Senders remembered per user for "one reply per period"; the oldest are forgotten.
    pub vacation_max_senders: usize,
    /// Rewrite the envelope sender of forwarded mail with SRS so SPF passes at the target.
    pub srs: bool,
    /// The domain of SRS addresses; empty: the domain of the address being forwarded.
    pub srs_domain: String,
    /// The HMAC key of SRS addresses; empty: a key generated once in `<data_dir>/srs.key`.
    /// Several hermod hosts that accept each other's bounces share one key.
    pub srs_secret: String,
    /// Days an SRS address stays valid for bounces (postsrsd: 21).
    pub srs_max_age_days: u32,
}

impl Default for SieveConfig {
    fn default() -> Self {
        SieveConfig {
            max_scripts: 32,
            max_script_size: 1024 * 1024,
            max_redirects: 4,
            vacation_min_period: 24 * 3600,
            vacation_max_period: 90 * 24 * 3600,
            vacation_max_senders: 10_000,
            srs: true,
            srs_domain: String::new(),
            srs_secret: String::new(),
            srs_max_age_days: 21,
        }
    }
}

impl SieveConfig {
    /// Values that make no sense, as a message for the config error.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_scripts == 0 {
            return Err("max_scripts must be at least 1".into());
        }
        if !(64..=16 * 1024 * 1024).contains(&self.max_script_size) {
            return Err("max_script_size must be between 64 bytes and 16 MiB".into());
        }
        if self.max_redirects > 32 {
            return Err("max_redirects must be at most 32".into());
        }
        if self.vacation_min_period > self.vacation_max_period {
            return Err("vacation_min_period must not exceed vacation_max_period".into());
        }
        if self.vacation_max_senders == 0 {
            return Err("vacation_max_senders must be at least 1".into());
        }
        if !(1..=1000).contains(&self.srs_max_age_days) {
            return Err("srs_max_age_days must be between 1 and 1000".into());
        }
        if !self.srs_domain.is_empty() {
            super::check_domain(&self.srs_domain).map_err(|m| format!("srs_domain: {m}"))?;
        }
        Ok(())
    }

    /// The section as `hermod check-config` prints it (never the SRS secret).
    pub fn render(&self) -> String {
        let mut out = format!(
            "\n[sieve]\nmax_scripts = {}\nmax_script_size = {}\nmax_redirects = {}\nvacation_min_period = {}\nvacation_max_period = {}\nvacation_max_senders = {}\nsrs = {}\nsrs_domain = \"{}\"\nsrs_max_age_days = {}\n",
            self.max_scripts,
            self.max_script_size,
            self.max_redirects,
            self.vacation_min_period,
            self.vacation_max_period,
            self.vacation_max_senders,
            self.srs,
            self.srs_domain,
            self.srs_max_age_days,
        );
        if !self.srs_secret.is_empty() {
            out.push_str("# srs_secret is set (not shown)\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_nonsense_is_refused() {
        assert!(SieveConfig::default().validate().is_ok());
        let bad = SieveConfig {
            max_script_size: 10,
            ..SieveConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("max_script_size"));
        let bad = SieveConfig {
            srs_domain: "not a domain".into(),
            ..SieveConfig::default()
        };
        assert!(bad.validate().is_err());
        let secret = SieveConfig {
            srs_secret: "hunter2".into(),
            ..SieveConfig::default()
        };
        assert!(!secret.render().contains("hunter2"));
    }
}
