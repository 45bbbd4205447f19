//! What hermod does with the verification results: pure decisions, no I/O.

use hermod_common::config::MailAuthConfig;
use mail_auth::SpfResult;
use mail_auth::dmarc::Policy;

use super::verify::{DmarcVerdict, SenderAuth, Verification};
use crate::session::Reply;

/// The fate of a verified message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    Deliver,
    /// Deliver into the recipients' Junk folder.
    Quarantine,
    Refuse(Reply),
}

/// A domain from the message, fit for a reply line (nothing a client could inject).
fn printable_domain(domain: &str) -> String {
    let ok = !domain.is_empty()
        && domain.len() <= 255
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if ok {
        domain.to_string()
    } else {
        "the sender's domain".to_string()
    }
}

/// At MAIL FROM: refuse an SPF `fail` of the sender's domain when the admin asked for it.
pub fn sender(config: &MailAuthConfig, auth: &SenderAuth, sender: &str) -> Option<Reply> {
    let failed = auth
        .mail_from
        .as_ref()
        .is_some_and(|spf| spf.result() == SpfResult::Fail);
    (config.spf_refuse_fail && failed).then(|| {
        let domain = printable_domain(sender.rsplit_once('@').map_or(sender, |(_, d)| d));
        // RFC 7372: 5.7.23 "SPF validation failed".
        Reply::new(
            550,
            [5, 7, 23],
            format!("SPF of {domain} does not allow this client to send its mail"),
        )
    })
}

/// At the end of DATA. `from_is_local`: the From domain is one of ours. `roll` is a number in
/// 0..100 drawn per message, for DMARC `pct` (RFC 7489 6.6.4: outside the percentage, the
/// next weaker policy applies).
pub fn message(
    config: &MailAuthConfig,
    verification: &Verification,
    from_is_local: bool,
    roll: u8,
) -> Disposition {
    let from = printable_domain(verification.from_domain.as_deref().unwrap_or(""));
    if from_is_local && config.refuse_local_spoofing {
        match verification.dmarc {
            DmarcVerdict::Pass => {}
            DmarcVerdict::TempError => {
                return Disposition::Refuse(Reply::new(
                    451,
                    [4, 7, 5],
                    format!("Cannot verify mail from {from} now; try again later"),
                ));
            }
            _ => {
                return Disposition::Refuse(Reply::new(
                    550,
                    [5, 7, 1],
                    format!("Mail from {from} must come from its own servers (DMARC did not pass)"),
                ));
            }
        }
    }
    let DmarcVerdict::Fail { policy, pct } = verification.dmarc else {
        return Disposition::Deliver;
    };
    let policy = if roll >= pct {
        match policy {
            Policy::Reject => Policy::Quarantine,
            _ => Policy::None,
        }
    } else {
        policy
    };
    match policy {
        Policy::Reject if config.dmarc_reject => Disposition::Refuse(Reply::new(
            550,
            [5, 7, 1],
            format!("Refused by the DMARC policy of {from}"),
        )),
        Policy::Reject | Policy::Quarantine if config.dmarc_quarantine => Disposition::Quarantine,
        _ => Disposition::Deliver,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verification(dmarc: DmarcVerdict) -> Verification {
        Verification {
            header: String::new(),
            from_domain: Some("bank.test".into()),
            from_domains: vec!["bank.test".into()],
            dmarc,
            dmarc_report: None,
            arc_set: None,
        }
    }

    fn fail(policy: Policy, pct: u8) -> Verification {
        verification(DmarcVerdict::Fail { policy, pct })
    }

    #[test]
    fn dmarc_policies() {
        let c = MailAuthConfig::default();
        let refused = |d: Disposition| matches!(d, Disposition::Refuse(r) if r.to_line().starts_with("550 5.7.1"));
        assert!(refused(message(&c, &fail(Policy::Reject, 100), false, 0)));
        assert_eq!(
            message(&c, &fail(Policy::Quarantine, 100), false, 99),
            Disposition::Quarantine
        );
        assert_eq!(
            message(&c, &fail(Policy::None, 100), false, 0),
            Disposition::Deliver
        );
        // pct=50: a roll of 70 is outside, so reject weakens to quarantine.
        assert_eq!(
            message(&c, &fail(Policy::Reject, 50), false, 70),
            Disposition::Quarantine
        );
        assert!(refused(message(&c, &fail(Policy::Reject, 50), false, 20)));
        let lenient = MailAuthConfig {
            dmarc_reject: false,
            ..MailAuthConfig::default()
        };
        assert_eq!(
            message(&lenient, &fail(Policy::Reject, 100), false, 0),
            Disposition::Quarantine
        );
    }

    #[test]
    fn our_domain_from_outside_needs_dmarc_pass() {
        let c = MailAuthConfig::default();
        assert!(matches!(
            message(&c, &verification(DmarcVerdict::None), true, 0),
            Disposition::Refuse(r) if r.to_line().starts_with("550 5.7.1")
        ));
        assert_eq!(
            message(&c, &verification(DmarcVerdict::Pass), true, 0),
            Disposition::Deliver
        );
        assert_eq!(
            message(&c, &verification(DmarcVerdict::None), false, 0),
            Disposition::Deliver
        );
    }
}
