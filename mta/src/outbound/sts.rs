//! What a recipient domain's MTA-STS policy means for one delivery attempt: which of the MX
//! hosts may be tried, and whether TLS with a verified certificate is required.

use std::sync::Arc;

use super::connection::Target;
use super::reply::{RemoteReply, synthetic};
use super::route::RouteKey;
use crate::auth::mta_sts::{Lookup, Mode, MtaSts};

/// The servers to try under the policy.
pub struct Decision {
    pub targets: Arc<Vec<Target>>,
    /// The policy is enforced: STARTTLS with a certificate valid for the MX name, or nothing.
    pub require_tls: bool,
    /// The policy in force, for the log and TLS reports: (domain, mode).
    pub policy: Option<(String, Mode)>,
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
    key: &RouteKey,
    targets: Arc<Vec<Target>>,
) -> Result<Decision, RemoteReply> {
    let unchanged = |targets| Decision {
        targets,
        require_tls: false,
        policy: None,
    };
    let (Some(sts), Some(domain)) = (sts, policy_domain(key)) else {
        return Ok(unchanged(targets));
    };
    let Lookup { policy, .. } = sts.lookup(domain).await;
    let Some(policy) = policy else {
        return Ok(unchanged(targets));
    };
    match policy.mode {
        Mode::None => Ok(unchanged(targets)),
        Mode::Testing => {
            for t in targets.iter().filter(|t| !policy.allows(&t.host)) {
                tracing::info!(domain = %domain, server = %t,
                    "MTA-STS (testing): MX host not in the policy; delivering anyway");
            }
            Ok(Decision {
                targets,
                require_tls: false,
                policy: Some((domain.to_string(), Mode::Testing)),
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
                policy: Some((domain.to_string(), Mode::Enforce)),
            })
        }
    }
}
