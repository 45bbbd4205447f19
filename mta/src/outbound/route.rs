//! Where mail for a domain goes: the relay host, or the domain's MX hosts (RFC 5321 5.1) in
//! preference order with their addresses, found with hickory-resolver.
//!
//! - No MX record: the domain itself is the mail host (implicit MX).
//! - A null MX (`MX 0 .`, RFC 7505): the domain takes no mail; bounce at once.
//! - An MX host that is this server: it and every host of equal or worse preference are
//!   dropped; if none is left the mail would loop, and bounces with a clear reason.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hermod_common::Config;
use hermod_common::config::{RelayHost, Service};
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};
use rand::seq::SliceRandom;

use super::connection::Target;
use super::reply::{RemoteReply, synthetic};

/// What the outbound runner groups recipients by: all mail shares one route to the relay
/// host, otherwise each recipient domain has its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteKey {
    Relay,
    /// Lower-cased; may be an address literal (`[192.0.2.1]`).
    Domain(String),
}

impl RouteKey {
    /// The key for a recipient address, or None when it has no domain.
    pub fn for_recipient(address: &str, relayhost: bool) -> Option<RouteKey> {
        let (_, domain) = address.rsplit_once('@')?;
        if domain.is_empty() {
            return None;
        }
        Some(if relayhost {
            RouteKey::Relay
        } else {
            RouteKey::Domain(domain.to_ascii_lowercase())
        })
    }
}

/// Why there is no server to try: the reply recorded for every recipient of the route.
#[derive(Debug, Clone)]
pub struct RouteFailure {
    pub reply: RemoteReply,
    pub permanent: bool,
}

impl RouteFailure {
    fn temporary(status: [u8; 3], text: String) -> Self {
        RouteFailure {
            reply: synthetic(451, status, &text),
            permanent: false,
        }
    }

    fn permanent(code: u16, status: [u8; 3], text: String) -> Self {
        RouteFailure {
            reply: synthetic(code, status, &text),
            permanent: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("DNS resolver setup: {0}")]
pub struct ResolverError(#[from] NetError);

/// The DNS resolver of the config: `[dns] nameservers`, or the system's when empty.
pub fn resolver(config: &Config) -> Result<TokioResolver, ResolverError> {
    let servers: Vec<SocketAddr> = config
        .dns
        .nameservers
        .iter()
        .filter_map(|n| n.socket_addr())
        .collect();
    let mut builder = if servers.is_empty() {
        Resolver::builder_tokio()?
    } else {
        let name_servers = servers
            .iter()
            .map(|addr| {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                server
            })
            .collect();
        let mut builder = Resolver::builder_with_config(
            ResolverConfig::from_name_servers(name_servers),
            TokioRuntimeProvider::default(),
        );
        // Only the configured servers answer (tests point them at a fake DNS server).
        builder.options_mut().use_hosts_file = ResolveHosts::Never;
        builder
    };
    let options: &mut ResolverOpts = builder.options_mut();
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.timeout = Duration::from_secs(5);
    options.attempts = 2;
    Ok(builder.build()?)
}

/// One MX record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    pub preference: u16,
    /// Lower-case, without the trailing dot.
    pub name: String,
}

/// What the MX lookup of a domain said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    Hosts(Vec<MxHost>),
    /// RFC 7505: the domain accepts no mail.
    Null,
    /// No MX record: the domain itself is its mail host.
    Implicit,
}

/// Classifies MX records and orders them: lower preference first, equal preferences in
/// random order (to spread load as RFC 5321 5.1 asks).
pub fn mx_answer(records: &[(u16, String)]) -> MxAnswer {
    let name = |n: &str| n.trim_end_matches('.').to_ascii_lowercase();
    if let [(_, only)] = records
        && name(only).is_empty()
    {
        return MxAnswer::Null;
    }
    let mut hosts: Vec<MxHost> = records
        .iter()
        .filter(|(_, n)| !name(n).is_empty())
        .map(|(preference, n)| MxHost {
            preference: *preference,
            name: name(n),
        })
        .collect();
    if hosts.is_empty() {
        return if records.is_empty() {
            MxAnswer::Implicit
        } else {
            MxAnswer::Null
        };
    }
    hosts.shuffle(&mut rand::rng());
    hosts.sort_by_key(|h| h.preference);
    MxAnswer::Hosts(hosts)
}

/// Finds the servers for a route.
pub struct Router {
    resolver: TokioResolver,
    relayhost: Option<RelayHost>,
    remote_port: u16,
    myhostname: String,
    /// Our own SMTP listeners: an MX pointing at one of them is ourselves.
    own_listeners: Vec<SocketAddr>,
    max_addresses: usize,
}

impl Router {
    pub fn new(config: &Config, max_addresses: usize) -> Result<Router, ResolverError> {
        Ok(Router {
            resolver: resolver(config)?,
            relayhost: config.relayhost.clone(),
            remote_port: config.delivery.remote_port,
            myhostname: config.myhostname.trim_end_matches('.').to_ascii_lowercase(),
            own_listeners: config.listen_addrs(Service::Smtp).to_vec(),
            max_addresses: max_addresses.max(1),
        })
    }

    pub fn relayhost(&self) -> Option<&RelayHost> {
        self.relayhost.as_ref()
    }

    /// The servers to try, best first, at most `max_addresses` of them.
    pub async fn targets(&self, key: &RouteKey) -> Result<Vec<Target>, RouteFailure> {
        match (key, &self.relayhost) {
            (RouteKey::Relay, Some(relay)) => {
                let hosts = if relay.no_mx {
                    vec![MxHost {
                        preference: 0,
                        name: relay.host.clone(),
                    }]
                } else {
                    match self.mx(&relay.host).await {
                        Ok(MxAnswer::Hosts(hosts)) => hosts,
                        Ok(MxAnswer::Implicit) => vec![MxHost {
                            preference: 0,
                            name: relay.host.clone(),
                        }],
                        Ok(MxAnswer::Null) => {
                            return Err(RouteFailure::temporary(
                                [4, 3, 5],
                                format!("relay host {} has a null MX", relay.host),
                            ));
                        }
                        Err(failure) => return Err(temporary(failure)),
                    }
                };
                // A broken relay host is the admin's to fix: mail waits instead of bouncing.
                self.addresses(&relay.host, hosts, relay.port)
                    .await
                    .map_err(temporary)
            }
            (RouteKey::Relay, None) => Err(RouteFailure::temporary(
                [4, 3, 5],
                "no relay host configured".into(),
            )),
            (RouteKey::Domain(domain), _) if domain.is_empty() => Err(RouteFailure::permanent(
                550,
                [5, 1, 3],
                "recipient address has no domain".into(),
            )),
            (RouteKey::Domain(domain), _) => {
                if let Some(literal) = domain.strip_prefix('[') {
                    return self.literal(domain, literal);
                }
                let hosts = match self.mx(domain).await? {
                    MxAnswer::Hosts(hosts) => hosts,
                    MxAnswer::Implicit => vec![MxHost {
                        preference: 0,
                        name: domain.clone(),
                    }],
                    MxAnswer::Null => {
                        return Err(RouteFailure::permanent(
                            556,
                            [5, 1, 10],
                            format!("Domain {domain} does not accept mail (null MX)"),
                        ));
                    }
                };
                self.addresses(domain, hosts, self.remote_port).await
            }
        }
    }

    /// `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
    fn literal(&self, domain: &str, literal: &str) -> Result<Vec<Target>, RouteFailure> {
        let inner = literal.trim_end_matches(']');
        let inner = inner
            .strip_prefix("IPv6:")
            .or_else(|| inner.strip_prefix("ipv6:"))
            .unwrap_or(inner);
        match inner.parse::<IpAddr>() {
            Ok(ip) => Ok(vec![Target {
                host: domain.to_string(),
                ip,
                port: self.remote_port,
            }]),
            Err(_) => Err(RouteFailure::permanent(
                550,
                [5, 1, 2],
                format!("bad address literal {domain}"),
            )),
        }
    }

    async fn mx(&self, domain: &str) -> Result<MxAnswer, RouteFailure> {
        match self.resolver.mx_lookup(fqdn(domain)).await {
            Ok(lookup) => {
                let records: Vec<(u16, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                        _ => None,
                    })
                    .collect();
                Ok(mx_answer(&records))
            }
            Err(e) if e.is_nx_domain() => Err(RouteFailure::permanent(
                550,
                [5, 4, 4],
                format!(
                    "Host or domain name not found. Name service error for name={domain} \
                     type=MX: Host not found"
                ),
            )),
            Err(e) if e.is_no_records_found() => Ok(MxAnswer::Implicit),
            Err(e) => Err(RouteFailure::temporary(
                [4, 4, 3],
                format!(
                    "Host or domain name not found. Name service error for name={domain} \
                     type=MX: {e}"
                ),
            )),
        }
    }

    /// The addresses of `hosts` in order, without ourselves and what ranks below us.
    async fn addresses(
        &self,
        domain: &str,
        hosts: Vec<MxHost>,
        port: u16,
    ) -> Result<Vec<Target>, RouteFailure> {
        let mut targets: Vec<(u16, Target)> = Vec::new();
        let mut temporary_error: Option<String> = None;
        let mut loops_back = false;
        for host in hosts {
            if loops_back || targets.len() >= self.max_addresses {
                break;
            }
            let ips: Vec<IpAddr> = match host.name.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => match self.resolver.lookup_ip(fqdn(&host.name)).await {
                    Ok(lookup) => lookup.iter().collect(),
                    Err(e) if e.is_nx_domain() || e.is_no_records_found() => Vec::new(),
                    Err(e) => {
                        temporary_error = Some(format!(
                            "Name service error for name={} type=A: {e}",
                            host.name
                        ));
                        Vec::new()
                    }
                },
            };
            let is_self = host.name == self.myhostname
                || ips.iter().any(|ip| self.is_own_listener(*ip, port));
            if is_self {
                // RFC 5321 5.1: drop ourselves and every host not preferred over us.
                loops_back = true;
                targets.retain(|(preference, _)| *preference < host.preference);
                continue;
            }
            for ip in ips {
                targets.push((
                    host.preference,
                    Target {
                        host: host.name.clone(),
                        ip,
                        port,
                    },
                ));
            }
        }
        if !targets.is_empty() {
            targets.truncate(self.max_addresses);
            return Ok(targets.into_iter().map(|(_, t)| t).collect());
        }
        if loops_back {
            return Err(RouteFailure::permanent(
                554,
                [5, 4, 6],
                format!(
                    "mail for {domain} loops back to myself: its best MX host is this server \
                     ({}); check the domain's MX records or add it to the local domains",
                    self.myhostname
                ),
            ));
        }
        match temporary_error {
            Some(e) => Err(RouteFailure::temporary([4, 4, 3], e)),
            None => Err(RouteFailure::permanent(
                550,
                [5, 4, 4],
                format!("Host or domain name not found: no address for the mail host of {domain}"),
            )),
        }
    }

    fn is_own_listener(&self, ip: IpAddr, port: u16) -> bool {
        self.own_listeners.iter().any(|own| {
            own.port() == port
                && (own.ip() == ip || (own.ip().is_unspecified() && ip.is_loopback()))
        })
    }
}

fn temporary(failure: RouteFailure) -> RouteFailure {
    let mut reply = failure.reply;
    if !reply.is_transient() {
        reply = synthetic(451, [4, 4, 3], &reply.text);
    }
    RouteFailure {
        reply,
        permanent: false,
    }
}

/// A fully qualified name, so no search domain of resolv.conf is ever appended.
fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// Defence in depth against backscatter into internal networks: a report (null sender)
/// addressed to an internal address literal (`x@[10.0.0.5]`, `x@[127.0.0.1]`) fails for good
/// here, before any route is looked up or any connection opened. The session and the report
/// path refuse such addresses earlier; this catches whatever reached the queue anyway.
pub fn report_to_internal_literal<'a>(
    sender: &str,
    mut recipients: impl Iterator<Item = &'a str>,
) -> Option<RemoteReply> {
    (sender.is_empty() && recipients.any(crate::ip_literal::is_forbidden_literal_address)).then(
        || {
            synthetic(
                550,
                [5, 7, 1],
                "no reports are sent to internal address literals",
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_report_goes_to_an_internal_literal() {
        // Pure: decided from the envelope, before any lookup or connection.
        for rcpt in [
            "x@[10.0.0.5]",
            "x@[127.0.0.1]",
            "x@[IPv6:::1]",
            "x@[IPv6:fe80::1]",
        ] {
            let reply = report_to_internal_literal("", [rcpt].into_iter()).expect(rcpt);
            assert_eq!((reply.code, reply.status), (550, Some([5, 7, 1])));
        }
        // Ordinary mail and reports to public places are not this check's business.
        assert!(
            report_to_internal_literal("a@example.org", ["x@[10.0.0.5]"].into_iter()).is_none()
        );
        assert!(
            report_to_internal_literal("", ["x@example.org", "y@[8.8.8.8]"].into_iter()).is_none()
        );
    }

    fn records(list: &[(u16, &str)]) -> Vec<(u16, String)> {
        list.iter().map(|(p, n)| (*p, n.to_string())).collect()
    }

    #[test]
    fn mx_hosts_in_preference_order() {
        let MxAnswer::Hosts(hosts) = mx_answer(&records(&[
            (20, "MX2.example.org."),
            (10, "mx1.example.org."),
            (30, "mx3.example.org"),
        ])) else {
            panic!("no hosts");
        };
        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            ["mx1.example.org", "mx2.example.org", "mx3.example.org"]
        );
    }

    #[test]
    fn equal_preferences_are_shuffled() {
        let list = records(&[(10, "a."), (10, "b."), (10, "c."), (5, "first.")]);
        let mut firsts_after_best = std::collections::HashSet::new();
        for _ in 0..200 {
            let MxAnswer::Hosts(hosts) = mx_answer(&list) else {
                panic!()
            };
            assert_eq!(hosts[0].name, "first");
            firsts_after_best.insert(hosts[1].name.clone());
        }
        assert_eq!(firsts_after_best.len(), 3);
    }

    #[test]
    fn null_and_missing_mx() {
        assert_eq!(mx_answer(&records(&[(0, ".")])), MxAnswer::Null);
        assert_eq!(mx_answer(&records(&[(0, "")])), MxAnswer::Null);
        assert_eq!(mx_answer(&[]), MxAnswer::Implicit);
    }

    #[test]
    fn route_keys() {
        assert_eq!(
            RouteKey::for_recipient("a@Example.ORG", false),
            Some(RouteKey::Domain("example.org".into()))
        );
        assert_eq!(
            RouteKey::for_recipient("a@example.org", true),
            Some(RouteKey::Relay)
        );
        assert_eq!(RouteKey::for_recipient("nodomain", false), None);
        assert_eq!(RouteKey::for_recipient("a@", false), None);
    }

    fn router(config: &Config) -> Router {
        Router::new(config, 5).unwrap()
    }

    #[tokio::test]
    async fn address_literals_need_no_dns() {
        let mut config = Config::defaults(true);
        config.dns.nameservers = vec![hermod_common::config::ListenAddrString(
            "127.0.0.1:9".into(),
        )];
        config.delivery.remote_port = 2525;
        let r = router(&config);
        let targets = r
            .targets(&RouteKey::Domain("[192.0.2.7]".into()))
            .await
            .unwrap();
        assert_eq!(targets[0].to_string(), "[192.0.2.7][192.0.2.7]:2525");
        let targets = r
            .targets(&RouteKey::Domain("[ipv6:2001:db8::1]".into()))
            .await
            .unwrap();
        assert_eq!(targets[0].ip, "2001:db8::1".parse::<IpAddr>().unwrap());
        let bad = r.targets(&RouteKey::Domain("[nope]".into())).await;
        assert!(bad.unwrap_err().permanent);
    }

    #[tokio::test]
    async fn relay_host_in_brackets_is_used_as_is() {
        let mut config = Config::defaults(true);
        config.dns.nameservers = vec![hermod_common::config::ListenAddrString(
            "127.0.0.1:9".into(),
        )];
        config.relayhost = Some("[127.0.0.9]:587".parse().unwrap());
        let r = router(&config);
        let targets = r.targets(&RouteKey::Relay).await.unwrap();
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].to_string(), "127.0.0.9[127.0.0.9]:587");
    }
}
