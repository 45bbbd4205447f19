//! How the outbound runner behaves: the config's `[delivery]` values plus the limits of
//! Postfix's smtp client and queue manager, with the same defaults where they exist.

use std::time::Duration;

use hermod_common::Config;
use rustls::pki_types::CertificateDer;

use super::connection::{Credentials, Timeouts};

#[derive(Debug, Clone)]
pub struct OutboundSettings {
    /// Our name in EHLO and in reports (myhostname).
    pub hostname: String,
    /// The domain reports come from (`MAILER-DAEMON@myorigin`).
    pub myorigin: String,
    /// Demand STARTTLS with a verified certificate from every server.
    pub require_tls: bool,
    /// SASL credentials for the relay host.
    pub relay_credentials: Option<Credentials>,
    /// After this long in the queue a temporary failure becomes a bounce.
    pub max_lifetime: Duration,
    /// First retry delay; doubles with each failure up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// A message still deferred this long after arrival gets one delay warning (Postfix
    /// `delay_warning_time`); zero: never.
    pub delay_warning: Duration,
    /// How often the queue database is read for due mail (changes by `hermod queue` from
    /// another process, new mail, retries coming due).
    pub poll_interval: Duration,
    pub timeouts: Timeouts,
    /// Connections at once to one destination (Postfix `default_destination_concurrency_limit`).
    pub destination_concurrency: usize,
    /// Connections at once in all (Postfix `default_process_limit`).
    pub max_connections: usize,
    /// Recipients taken from the queue at once (Postfix's active queue).
    pub max_in_flight: usize,
    /// How long an idle connection waits for another message to its destination.
    pub connection_idle: Duration,
    /// Messages one connection carries before it is closed.
    pub max_messages_per_connection: usize,
    /// Server addresses tried per delivery attempt (Postfix `smtp_mx_address_limit`).
    pub max_addresses: usize,
    /// Servers that got as far as a mail transaction per attempt (`smtp_mx_session_limit`).
    pub max_sessions: usize,
    /// Roots trusted besides the system's (a private CA; tests).
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Honour recipient domains' MTA-STS policies (`[auth] mta_sts`).
    pub mta_sts: bool,
    /// Port of the policy hosts (443; tests use another).
    pub mta_sts_port: u16,
}

impl OutboundSettings {
    pub fn from_config(config: &Config) -> Self {
        let d = &config.delivery;
        let relay_credentials = match (&d.relayhost_username, &d.relayhost_password) {
            (Some(username), Some(password)) => Some(Credentials {
                username: username.clone(),
                password: password.clone(),
            }),
            _ => None,
        };
        OutboundSettings {
            hostname: config.myhostname.clone(),
            myorigin: config.myorigin.clone(),
            require_tls: d.require_tls,
            relay_credentials,
            max_lifetime: Duration::from_secs(d.maximal_queue_lifetime),
            min_backoff: Duration::from_secs(d.minimal_backoff_time),
            max_backoff: Duration::from_secs(d.maximal_backoff_time),
            delay_warning: Duration::from_secs(d.delay_warning_time),
            poll_interval: Duration::from_secs(1),
            timeouts: Timeouts {
                connect: Duration::from_secs(30),
                command: Duration::from_secs(300),
                data: Duration::from_secs(600),
            },
            destination_concurrency: 20,
            max_connections: 100,
            max_in_flight: 5000,
            connection_idle: Duration::from_secs(2),
            max_messages_per_connection: 1000,
            max_addresses: 5,
            max_sessions: 2,
            extra_roots: Vec::new(),
            mta_sts: config.mail_auth.mta_sts,
            mta_sts_port: 443,
        }
    }

    /// Seconds to wait after a temporary failure, given the attempts made before this one.
    pub fn retry_delay(&self, previous_attempts: u32) -> i64 {
        let min = self.min_backoff.as_secs().max(1);
        let max = self.max_backoff.as_secs().max(min);
        min.saturating_mul(1u64 << previous_attempts.min(20))
            .min(max) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_follow_the_config() {
        let mut config = Config::defaults(true);
        config.delivery.relayhost_username = Some("u".into());
        config.delivery.relayhost_password = Some("secret".into());
        config.delivery.minimal_backoff_time = 300;
        config.delivery.maximal_backoff_time = 3600;
        let s = OutboundSettings::from_config(&config);
        assert_eq!(s.relay_credentials.as_ref().unwrap().username, "u");
        assert!(!format!("{s:?}").contains("secret"));
        assert_eq!(s.max_lifetime, Duration::from_secs(5 * 24 * 3600));
        assert_eq!(
            s.delay_warning,
            Duration::ZERO,
            "no delay warnings by default"
        );
        assert_eq!(s.myorigin, config.myorigin);
        // 5 min doubling to 1 h.
        let delays: Vec<i64> = (0..6).map(|n| s.retry_delay(n)).collect();
        assert_eq!(delays, [300, 600, 1200, 2400, 3600, 3600]);
    }
}
