//! What the outbound runner records for TLS reports (RFC 8460 4.3): per recipient domain and
//! policy, the sessions that negotiated TLS as the policy requires, and the failures by
//! result type.

use mail_auth::report::tlsrpt::{FailureDetails, PolicyDetails, PolicyType, ResultType};

use super::Reports;
use crate::auth::mta_sts::Policy;
use crate::outbound::connection::{ConnectionFailure, Target};
use crate::outbound::tls::TlsOutcome;

/// The `policy` object of a report: the MTA-STS policy in force, or none.
pub fn policy_details(domain: &str, policy: Option<&Policy>) -> PolicyDetails {
    match policy {
        Some(p) => PolicyDetails {
            policy_type: PolicyType::Sts,
            policy_string: p.to_string().lines().map(str::to_string).collect(),
            policy_domain: domain.to_string(),
            mx_host: p.mx.clone(),
        },
        None => PolicyDetails {
            policy_type: PolicyType::NoPolicyFound,
            policy_string: Vec::new(),
            policy_domain: domain.to_string(),
            mx_host: Vec::new(),
        },
    }
}

/// The policy of a domain could not be fetched or was invalid.
pub fn policy_failure(reports: &Reports, domain: &str, result_type: &str, detail: &str) {
    let result = match result_type {
        "sts-policy-invalid" => ResultType::StsPolicyInvalid,
        "sts-webpki-invalid" => ResultType::StsWebpkiInvalid,
        _ => ResultType::StsPolicyFetchError,
    };
    let mut details = policy_details(domain, None);
    details.policy_type = PolicyType::Sts;
    let failure = FailureDetails::new(result).with_failure_reason_code(truncate(detail));
    reports.tls(domain, &details, Some(&failure));
}

/// An MX host of the domain is not in its policy.
pub fn mx_mismatch(reports: &Reports, domain: &str, policy: &Policy, host: &str) {
    let failure = FailureDetails::new(ResultType::ValidationFailure)
        .with_receiving_mx_hostname(host.trim_end_matches('.'))
        .with_failure_reason_code("mx-not-in-policy");
    reports.tls(
        domain,
        &policy_details(domain, Some(policy)),
        Some(&failure),
    );
}

/// One connection attempt to `target`: `Ok(tls)` connected (with TLS or not), `Err` failed.
/// Failures that are not about TLS (refused, timed out) are no TLS session and not counted.
pub fn session(
    reports: &Reports,
    domain: &str,
    policy: Option<&Policy>,
    target: &Target,
    outcome: Result<Option<&TlsOutcome>, &ConnectionFailure>,
) {
    if !reports.tls_enabled() {
        return;
    }
    let details = policy_details(domain, policy);
    let failure = |result: ResultType, reason: &str| {
        let mut f = FailureDetails::new(result)
            .with_receiving_mx_hostname(target.host.trim_end_matches('.'))
            .with_receiving_ip(target.ip);
        if !reason.is_empty() {
            f = f.with_failure_reason_code(truncate(reason));
        }
        f
    };
    let failed = match outcome {
        Ok(Some(tls)) if tls.verified || policy.is_none() => None,
        Ok(Some(tls)) => {
            let reason = tls.verify_error.as_deref().unwrap_or("");
            Some(failure(certificate_result(reason), reason))
        }
        Ok(None) => Some(failure(ResultType::StartTlsNotSupported, "")),
        Err(f) => {
            let text = f.reply.line();
            if let Some((_, reason)) = text.split_once(" failed: ")
                && text.contains("TLS handshake")
            {
                Some(failure(certificate_result(reason), reason))
            } else if text.contains("TLS is required") {
                Some(failure(ResultType::StartTlsNotSupported, ""))
            } else {
                return;
            }
        }
    };
    reports.tls(domain, &details, failed.as_ref());
}

/// The result type of a certificate that did not verify, from rustls's error text.
fn certificate_result(reason: &str) -> ResultType {
    if reason.contains("NotValidForName") {
        ResultType::CertificateHostMismatch
    } else if reason.contains("Expired") {
        ResultType::CertificateExpired
    } else if reason.contains("certificate") || reason.contains("Certificate") {
        ResultType::CertificateNotTrusted
    } else {
        ResultType::ValidationFailure
    }
}

/// Reason codes are free text from the network or rustls: bounded.
fn truncate(text: &str) -> String {
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_errors_map_to_result_types() {
        assert_eq!(
            certificate_result("invalid peer certificate: NotValidForName"),
            ResultType::CertificateHostMismatch
        );
        assert_eq!(
            certificate_result("invalid peer certificate: Expired"),
            ResultType::CertificateExpired
        );
        assert_eq!(
            certificate_result("invalid peer certificate: UnknownIssuer"),
            ResultType::CertificateNotTrusted
        );
        assert_eq!(
            certificate_result("timed out"),
            ResultType::ValidationFailure
        );
    }
}
