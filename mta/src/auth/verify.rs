//! Verification of mail arriving on port 25: SPF (RFC 7208) of MAIL FROM and HELO, every DKIM
//! signature (RFC 6376, 8463), the ARC chain (RFC 8617), iprev, and DMARC (RFC 7489) from
//! those. The DNS work is mail-auth's, on a resolver built from hermod's `[dns]` config.

use std::net::IpAddr;

use hermod_common::config::MailAuthConfig;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimError;
use mail_auth::dmarc::Policy;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcResult,
    MessageAuthenticator, SpfOutput,
};

/// The SPF results found at MAIL FROM, kept by the session until the end of DATA.
#[derive(Debug, Clone, Default)]
pub struct SenderAuth {
    pub helo: Option<SpfOutput>,
    pub mail_from: Option<SpfOutput>,
}

/// What the session knows of the client and the envelope.
#[derive(Debug, Clone)]
pub struct Client<'a> {
    pub ip: IpAddr,
    pub helo: &'a str,
    /// Envelope sender; empty for bounces.
    pub sender: &'a str,
}

/// DMARC as policy needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DmarcVerdict {
    /// No From domain, no record, or DMARC is off.
    None,
    Pass,
    /// Neither SPF nor DKIM aligned; `policy` is the domain's (p or sp), before pct.
    Fail {
        policy: Policy,
        pct: u8,
    },
    /// DNS failed: cannot tell.
    TempError,
}

/// The outcome of [`Verifier::verify_message`].
#[derive(Debug, Clone)]
pub struct Verification {
    /// `Authentication-Results: <hostname>; ...\r\n`.
    pub header: String,
    /// The RFC 5322 From domain (lower-case), if there is exactly one.
    pub from_domain: Option<String>,
    /// Every From domain (lower-case), for the spoofing check: a second address must not
    /// smuggle one of our domains past DMARC, which skips such messages.
    pub from_domains: Vec<String>,
    pub dmarc: DmarcVerdict,
    /// For the DMARC aggregate report, when reports are on and the domain asks for them.
    pub dmarc_report: Option<super::reports::DmarcReportRow>,
    /// The ARC set sealing these results, for a forwarded message.
    pub arc_set: Option<String>,
}

/// Runs the checks the config turns on.
#[derive(Clone)]
pub struct Verifier {
    authenticator: MessageAuthenticator,
    config: MailAuthConfig,
    hostname: String,
    caches: std::sync::Arc<super::dns_cache::DnsCaches>,
}

/// A HELO name SPF can check (not an address literal).
fn helo_domain(helo: &str) -> Option<&str> {
    let ok = helo.contains('.') && !helo.starts_with('[') && helo.parse::<IpAddr>().is_err();
    ok.then_some(helo)
}

impl Verifier {
    pub fn new(
        authenticator: MessageAuthenticator,
        config: MailAuthConfig,
        hostname: String,
    ) -> Self {
        Verifier {
            authenticator,
            config,
            hostname,
            caches: std::sync::Arc::new(super::dns_cache::DnsCaches::new(
                super::dns_cache::ENTRIES,
            )),
        }
    }

    /// The results when the checks could not finish: nothing known, DMARC a temporary error.
    pub fn unverified(&self) -> Verification {
        Verification {
            header: AuthenticationResults::new(&self.hostname).to_header(),
            from_domain: None,
            from_domains: Vec::new(),
            dmarc: DmarcVerdict::TempError,
            dmarc_report: None,
            arc_set: None,
        }
    }

    /// SPF of the HELO and MAIL FROM identities (RFC 7208 section 2.3 and 2.4).
    pub async fn verify_sender(&self, client: &Client<'_>) -> SenderAuth {
        if !self.config.spf {
            return SenderAuth::default();
        }
        let helo = helo_domain(client.helo).unwrap_or(client.helo);
        let helo_result = match helo_domain(client.helo) {
            Some(h) => Some(
                self.authenticator
                    .verify_spf(self.caches.with(SpfParameters::verify_ehlo(
                        client.ip,
                        h,
                        &self.hostname,
                    )))
                    .await,
            ),
            None => None,
        };
        let mail_from = if client.sender.is_empty() {
            // A bounce: the HELO identity stands for the sender (RFC 7208 section 2.4).
            helo_result.clone()
        } else {
            Some(
                self.authenticator
                    .verify_spf(self.caches.with(SpfParameters::verify_mail_from(
                        client.ip,
                        helo,
                        &self.hostname,
                        client.sender,
                    )))
                    .await,
            )
        };
        SenderAuth {
            helo: helo_result,
            mail_from,
        }
    }

    /// DKIM, ARC, iprev and DMARC of a received message; `message` as received (CRLF).
    /// With `seal` (the message is forwarded), the results are also sealed into an ARC set.
    pub async fn verify_message(
        &self,
        client: &Client<'_>,
        sender_auth: &SenderAuth,
        message: &[u8],
        seal: Option<&super::arc_seal::SealKey>,
    ) -> Verification {
        let config = &self.config;
        let mut results = AuthenticationResults::new(&self.hostname);
        let Some(parsed) = AuthenticatedMessage::parse(message) else {
            return Verification {
                header: results.to_header(),
                from_domain: None,
                from_domains: Vec::new(),
                dmarc: DmarcVerdict::None,
                dmarc_report: None,
                arc_set: None,
            };
        };
        let from = parsed.from().to_string();
        let from_domain = single_from_domain(parsed.froms());
        let from_domains: Vec<String> = parsed
            .froms()
            .iter()
            .filter_map(|f| f.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()))
            .collect();

        let dkim = if config.dkim || config.dmarc {
            let outputs = self
                .authenticator
                .verify_dkim(self.caches.with(&parsed))
                .await;
            outputs
                .into_iter()
                .map(|o| permfail_as_fail(&parsed, o))
                .collect()
        } else {
            Vec::new()
        };
        if config.dkim {
            results = results.with_dkim_results(&dkim, &from);
        }
        if let Some(spf) = &sender_auth.helo {
            results = results.with_spf_ehlo_result(spf, client.ip, client.helo);
        }
        if let Some(spf) = &sender_auth.mail_from {
            results = results.with_spf_mailfrom_result(spf, client.ip, client.sender, client.helo);
        }
        // Sealing needs the chain verified even when ARC results are not reported.
        let arc = if (config.arc && !parsed.as_headers.is_empty()) || seal.is_some() {
            let arc = self
                .authenticator
                .verify_arc(self.caches.with(&parsed))
                .await;
            if config.arc && !parsed.as_headers.is_empty() {
                results = results.with_arc_result(&arc, client.ip);
            }
            Some(arc)
        } else {
            None
        };
        if config.iprev {
            let iprev = self
                .authenticator
                .verify_iprev(self.caches.with(client.ip))
                .await;
            results = results.with_iprev_result(&iprev, client.ip);
        }
        let mut dmarc_verdict = DmarcVerdict::None;
        let mut dmarc_report = None;
        if config.dmarc && from_domain.is_some() {
            let spf = sender_auth
                .mail_from
                .clone()
                .unwrap_or_else(|| SpfOutput::new(String::new()));
            let mail_from_domain = match client.sender.rsplit_once('@') {
                Some((_, d)) => d,
                None => helo_domain(client.helo).unwrap_or_default(),
            };
            let dmarc = self
                .authenticator
                .verify_dmarc(
                    self.caches
                        .with(mail_auth::dmarc::verify::DmarcParameters::new(
                            &parsed,
                            &dkim,
                            mail_from_domain,
                            &spf,
                        )),
                )
                .await;
            let passed = [dmarc.spf_result(), dmarc.dkim_result()]
                .iter()
                .any(|r| **r == DmarcResult::Pass);
            let temp = [dmarc.spf_result(), dmarc.dkim_result()]
                .iter()
                .any(|r| matches!(r, DmarcResult::TempError(_)));
            dmarc_verdict = if dmarc.dmarc_record().is_none() && !temp {
                DmarcVerdict::None
            } else if passed {
                DmarcVerdict::Pass
            } else if temp {
                DmarcVerdict::TempError
            } else {
                let pct = match dmarc.policy() {
                    Policy::None | Policy::Unspecified => 100,
                    _ => self.pct(dmarc.domain()).await,
                };
                DmarcVerdict::Fail {
                    policy: dmarc.policy(),
                    pct,
                }
            };
            if dmarc.dmarc_record().is_some() || temp {
                results = results.with_dmarc_result(&dmarc);
            }
            if config.dmarc_reports
                && let (Some(record), Some(header_from)) = (dmarc.dmarc_record(), &from_domain)
                && !record.rua.is_empty()
            {
                use mail_auth::report::{PolicyPublished, Record, SPFDomainScope};
                dmarc_report = Some(super::reports::DmarcReportRow {
                    domain: dmarc.domain().to_ascii_lowercase(),
                    target: super::reports::DmarcTarget {
                        rua: record.rua.iter().map(|u| u.uri.clone()).collect(),
                        policy: PolicyPublished::from_record(dmarc.domain(), record),
                    },
                    record: Record::new()
                        .with_dkim_output(&dkim)
                        .with_spf_output(&spf, SPFDomainScope::MailFrom)
                        .with_dmarc_output(&dmarc)
                        .with_source_ip(client.ip)
                        .with_header_from(header_from.as_str())
                        .with_envelope_from(mail_from_domain),
                });
            }
        }
        let arc_set = match (seal, &arc) {
            (Some(key), Some(arc)) => key.seal(&parsed, &results, arc),
            _ => None,
        };
        Verification {
            header: results.to_header(),
            from_domain,
            from_domains,
            dmarc: dmarc_verdict,
            dmarc_report,
            arc_set,
        }
    }

    /// The `pct=` of a DMARC record (RFC 7489 6.3; dropped by DMARCbis, which mail-auth
    /// follows, so it is read here). 100 when absent or unreadable.
    async fn pct(&self, domain: &str) -> u8 {
        let raw = self
            .authenticator
            .txt_raw_lookup(format!("_dmarc.{domain}."))
            .await
            .unwrap_or_default();
        parse_pct(&String::from_utf8_lossy(&raw))
    }
}

/// mail-auth reports a body hash mismatch and an expired signature as `neutral`; RFC 6376
/// (6.1.1, 6.1.3) calls both PERMFAIL, which RFC 8601 (2.7.1) reports as `dkim=fail`.
fn permfail_as_fail<'x>(
    parsed: &'x AuthenticatedMessage<'x>,
    output: DkimOutput<'x>,
) -> DkimOutput<'x> {
    let DkimResult::Neutral(
        error
        @ mail_auth::Error::Dkim(DkimError::FailedBodyHashMatch | DkimError::SignatureExpired),
    ) = output.result()
    else {
        return output;
    };
    let Some(signature) = output.signature() else {
        return output;
    };
    match parsed
        .dkim_headers
        .iter()
        .find(|h| std::ptr::eq(&h.header, signature))
    {
        Some(h) => DkimOutput::fail(error.clone()).with_signature(&h.header),
        None => output,
    }
}

fn parse_pct(record: &str) -> u8 {
    record
        .split(';')
        .filter_map(|tag| tag.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("pct"))
        .and_then(|(_, v)| v.trim().parse::<u8>().ok())
        .map_or(100, |p| p.min(100))
}

/// The From domain when every From address has the same one (DMARC skips the others).
fn single_from_domain(froms: &[String]) -> Option<String> {
    let mut domain: Option<String> = None;
    for from in froms {
        let d = from.rsplit_once('@')?.1.to_ascii_lowercase();
        match &domain {
            Some(seen) if *seen != d => return None,
            _ => domain = Some(d),
        }
    }
    domain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pct_tag() {
        assert_eq!(parse_pct("v=DMARC1; p=reject; pct=20"), 20);
        assert_eq!(parse_pct("v=DMARC1; p=reject"), 100);
        assert_eq!(parse_pct("v=DMARC1; pct=500"), 100);
    }

    #[test]
    fn from_domain_only_when_single() {
        assert_eq!(
            single_from_domain(&["a@X.test".into(), "b@x.test".into()]).as_deref(),
            Some("x.test")
        );
        assert_eq!(
            single_from_domain(&["a@x.test".into(), "b@y.test".into()]),
            None
        );
    }
}
