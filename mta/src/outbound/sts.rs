//! What a recipient domain's MTA-STS policy means for one delivery attempt: which of the MX
//! hosts may be tried, and whether TLS with a verified certificate is required.

use std::sync::Arc;

use super::connection::Target;
use super::reply::{RemoteReply, synthetic};
use super::route::RouteKey;
use crate::auth::mta_sts::{Lookup, Mode, MtaSts, Policy};
use crate::auth::reports::Reports;
use crate::auth::reports::tls as report;

/// The servers to try under the policy.
pub struct Decision {
    pub targets: Arc<Vec<Target>>,
    /// The policy is enforced: STARTTLS with a certificate valid for the MX name, or nothing.
    pub require_tls: bool,
    /// The recipient domain (when MTA-STS applies to it) and its policy, for the log and
    /// TLS reports.
    pub domain: Option<String>,
    pub policy: Option<Arc<Policy>>,
}

/// The domain whose policy applies: mail routed by MX to a domain name (not the relay host,
/// not an address literal).
pub fn policy_domain(key: &RouteKey) -> Option<&str> {
    match key {
        RouteKey::Domain(d) if !d.is_empty() && !d.starts_with('[') => Some(d),
        _ => None,
    }
}

/// Applies the policy of `key`'s domain to `targets`. Err: nothing may be tried now (the
/// attempt is deferred with that reply).
pub async fn decide(
    sts: Option<&MtaSts>,
    reports: Option<&Reports>,
    key: &RouteKey,
    targets: Arc<Vec<Target>>,
) -> Result<Decision, RemoteReply> {
    let domain = policy_domain(key).map(str::to_string);
    let unchanged = |targets| Decision {
        targets,
        require_tls: false,
        domain: domain.clone(),
        policy: None,
    };
    let (Some(sts), Some(domain)) = (sts, policy_domain(key)) else {
        return Ok(unchanged(targets));
    };
    let Lookup { policy, failure } = sts.lookup(domain).await;
    if let (Some(reports), Some((result_type, detail))) = (reports, &failure) {
        report::policy_failure(reports, domain, result_type, detail);
    }
    let Some(policy) = policy else {
        return Ok(unchanged(targets));
    };
    match policy.mode {
        Mode::None => Ok(unchanged(targets)),
        Mode::Testing => {
            for t in targets.iter().filter(|t| !policy.allows(&t.host)) {
                tracing::info!(domain = %domain, server = %t,
                    "MTA-STS (testing): MX host not in the policy; delivering anyway");
                if let Some(reports) = reports {
                    report::mx_mismatch(reports, domain, &policy, &t.host);
                }
            }
            Ok(Decision {
                targets,
                require_tls: false,
                domain: Some(domain.to_string()),
                policy: Some(policy),
            })
        }
        Mode::Enforce => {
            let allowed: Vec<Target> = targets
                .iter()
                .filter(|t| policy.allows(&t.host))
                .cloned()
                .collect();
            if allowed.is_empty() {
                let hosts: Vec<&str> = targets.iter().map(|t| t.host.as_str()).collect();
                tracing::warn!(domain = %domain, mx = ?hosts,
                    "MTA-STS (enforce): no MX host matches the policy; deferred");
                if let Some(reports) = reports {
                    for host in &hosts {
                        report::mx_mismatch(reports, domain, &policy, host);
                    }
                }
                // RFC 3463 X.7.5: cryptographic failure, as Postfix's MTA-STS resolvers say.
                return Err(synthetic(
                    451,
                    [4, 7, 5],
                    &format!("MTA-STS policy of {domain}: no MX host matches the policy"),
                ));
            }
            Ok(Decision {
                targets: Arc::new(allowed),
                require_tls: true,
                domain: Some(domain.to_string()),
                policy: Some(policy),
            })
        }
    }
}
