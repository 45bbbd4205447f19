//! The `[spam]` section: content filtering at the end of DATA (rspamd over its HTTP protocol).

use serde::{Deserialize, Serialize};

/// What to do with a message when the filter cannot give a verdict (timeout, error, garbage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FilterFailure {
    /// Accept the message as if the filter had said nothing, and log it.
    #[default]
    Accept,
    /// Answer `451 4.7.1`: the client tries again later.
    Tempfail,
}

impl FilterFailure {
    pub fn name(self) -> &'static str {
        match self {
            FilterFailure::Accept => "accept",
            FilterFailure::Tempfail => "tempfail",
        }
    }
}

/// What to do when a milter cannot be reached or breaks the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MilterDefault {
    Accept,
    /// Postfix's default: `451 4.7.1`, the client tries again later.
    #[default]
    Tempfail,
    Reject,
}

impl MilterDefault {
    pub fn name(self) -> &'static str {
        match self {
            MilterDefault::Accept => "accept",
            MilterDefault::Tempfail => "tempfail",
            MilterDefault::Reject => "reject",
        }
    }
}

/// Spam filter settings. Nothing is scanned unless `rspamd_url` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpamConfig {
    /// rspamd's normal worker, e.g. `http://127.0.0.1:11333` (`/checkv2` is appended).
    pub rspamd_url: Option<String>,
    /// Seconds to wait for rspamd's verdict, connection included.
    pub rspamd_timeout: u64,
    /// When rspamd does not answer in time or answers nonsense.
    pub rspamd_fail: FilterFailure,
    /// Scan mail from authenticated users too (outbound spam from a stolen account).
    pub scan_authenticated: bool,
    /// Messages bigger than this (bytes) are not scanned: spam is small, and a huge message
    /// would be held in memory while rspamd reads it.
    pub max_scan_size: u64,
    /// rspamd's controller (`http://127.0.0.1:11334`): messages users move into Junk over
    /// IMAP are learnt as spam (`/learnspam`), out of Junk as ham (`/learnham`). Unset: off.
    pub rspamd_controller_url: Option<String>,
    /// The controller's password (its `enable_password`), sent as the `Password` header.
    pub rspamd_password: Option<String>,
    /// Milters asked at the end of DATA, in order (Postfix `smtpd_milters`):
    /// `inet:host:port` or `unix:/path`.
    pub smtpd_milters: Vec<String>,
    /// A milter that does not answer or breaks the protocol (Postfix
    /// `milter_default_action`): `accept`, `tempfail` or `reject`.
    pub milter_default_action: MilterDefault,
    /// Seconds for one milter's whole conversation about a message.
    pub milter_timeout: u64,
}

impl Default for SpamConfig {
    fn default() -> Self {
        SpamConfig {
            rspamd_url: None,
            rspamd_timeout: 15,
            rspamd_fail: FilterFailure::Accept,
            scan_authenticated: false,
            max_scan_size: 20 * 1024 * 1024,
            rspamd_controller_url: None,
            rspamd_password: None,
            smtpd_milters: Vec::new(),
            milter_default_action: MilterDefault::Tempfail,
            milter_timeout: 30,
        }
    }
}

impl SpamConfig {
    /// Checks what serde cannot: the URL's form.
    pub fn validate(&self) -> Result<(), String> {
        for (key, url) in [
            ("rspamd_url", &self.rspamd_url),
            ("rspamd_controller_url", &self.rspamd_controller_url),
        ] {
            if let Some(url) = url
                && !url.starts_with("http://")
            {
                return Err(format!("{key} must be an http:// URL, not {url:?}"));
            }
        }
        for milter in &self.smtpd_milters {
            let ok = milter
                .strip_prefix("inet:")
                .is_some_and(|rest| rest.contains(':') || rest.contains('@'))
                || milter.strip_prefix("unix:").is_some_and(|p| !p.is_empty());
            if !ok {
                return Err(format!(
                    "smtpd_milters: {milter:?} is neither inet:host:port nor unix:/path"
                ));
            }
        }
        if self.rspamd_timeout == 0 || self.milter_timeout == 0 {
            return Err("rspamd_timeout and milter_timeout must be at least 1 second".to_string());
        }
        Ok(())
    }

    /// The section as `hermod check-config` prints it.
    pub fn render(&self) -> String {
        let url = match &self.rspamd_url {
            Some(url) => format!("rspamd_url = \"{}\"\n", url.escape_default()),
            None => "# rspamd_url is not set: no spam filtering\n".to_string(),
        };
        let controller = match &self.rspamd_controller_url {
            Some(url) => format!("rspamd_controller_url = \"{}\"\n", url.escape_default()),
            None => "# rspamd_controller_url is not set: no learning from Junk\n".to_string(),
        };
        let password = if self.rspamd_password.is_some() {
            "# rspamd_password is set (not shown)\n"
        } else {
            ""
        };
        format!(
            "\n[spam]\n{url}{controller}{password}rspamd_timeout = {}\nrspamd_fail = \"{}\"\nscan_authenticated = {}\nmax_scan_size = {}\nsmtpd_milters = [{}]\nmilter_default_action = \"{}\"\nmilter_timeout = {}\n",
            self.rspamd_timeout,
            self.rspamd_fail.name(),
            self.scan_authenticated,
            self.max_scan_size,
            self.smtpd_milters
                .iter()
                .map(|m| format!("\"{}\"", m.escape_default()))
                .collect::<Vec<_>>()
                .join(", "),
            self.milter_default_action.name(),
            self.milter_timeout
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_defaults_failure_modes_and_mistakes() {
        let c: SpamConfig =
            toml::from_str("rspamd_url = \"http://127.0.0.1:11333\"\nrspamd_fail = \"tempfail\"\n")
                .unwrap();
        assert_eq!(c.rspamd_url.as_deref(), Some("http://127.0.0.1:11333"));
        assert_eq!(c.rspamd_fail, FilterFailure::Tempfail);
        assert!(!c.scan_authenticated);
        assert!(c.validate().is_ok());
        assert!(toml::from_str::<SpamConfig>("rspamd_fail = \"maybe\"\n").is_err());
        assert!(toml::from_str::<SpamConfig>("rspamd = 1\n").is_err());
        let https: SpamConfig = toml::from_str("rspamd_url = \"https://x\"\n").unwrap();
        assert!(https.validate().is_err());
        let again: SpamConfig = toml::from_str(&c.render().replace("[spam]", "")).unwrap();
        assert_eq!(again, c);
    }
}
