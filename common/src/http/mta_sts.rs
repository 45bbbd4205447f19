//! The MTA-STS policy hermod publishes for its own domains (RFC 8461 3.2), served at
//! `https://mta-sts.<domain>/.well-known/mta-sts.txt`, and the id of its `_mta-sts` TXT
//! record, which `hermod dns` prints: the id is a hash of the policy text, so it changes
//! exactly when the policy does.

use crate::config::Config;

pub const POLICY_PATH: &str = "/.well-known/mta-sts.txt";

/// The policy file: the configured mode, MX patterns (default: this host) and max_age.
pub fn policy_text(config: &Config) -> String {
    let auth = &config.mail_auth;
    let mut text = format!("version: STSv1\r\nmode: {}\r\n", auth.mta_sts_mode.as_str());
    if auth.mta_sts_mx.is_empty() {
        text.push_str(&format!(
            "mx: {}\r\n",
            config.myhostname.trim_end_matches('.')
        ));
    }
    for mx in &auth.mta_sts_mx {
        text.push_str(&format!("mx: {}\r\n", mx.trim_end_matches('.')));
    }
    text.push_str(&format!("max_age: {}\r\n", auth.mta_sts_max_age));
    text
}

/// The `id=` of the `_mta-sts` record: 16 hex digits of FNV-1a over the policy text (stable
/// across hermod versions, unlike std's hasher).
pub fn policy_id(config: &Config) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in policy_text(config).bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The domain a request for the policy is about: `mta-sts.<domain>` (port stripped).
pub fn requested_domain(host: &str) -> Option<String> {
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    host.to_ascii_lowercase()
        .strip_prefix("mta-sts.")
        .map(|d| d.trim_end_matches('.').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StsMode;

    #[test]
    fn the_policy_follows_the_config_and_its_id_changes_with_it() {
        let mut config = Config::defaults(true);
        config.myhostname = "mx.example.org".into();
        let text = policy_text(&config);
        assert_eq!(
            text,
            "version: STSv1\r\nmode: testing\r\nmx: mx.example.org\r\nmax_age: 604800\r\n"
        );
        let id = policy_id(&config);
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
        config.mail_auth.mta_sts_mode = StsMode::Enforce;
        config.mail_auth.mta_sts_mx = vec!["*.example.org".into(), "backup.example.net".into()];
        assert!(
            policy_text(&config)
                .contains("mode: enforce\r\nmx: *.example.org\r\nmx: backup.example.net\r\n")
        );
        assert_ne!(policy_id(&config), id);
        assert_eq!(
            requested_domain("MTA-STS.Example.org:443").as_deref(),
            Some("example.org")
        );
        assert_eq!(requested_domain("example.org"), None);
    }
}
