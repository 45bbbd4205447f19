//! `hermod dns DOMAIN`: the DNS records a domain needs to receive and send mail through this
//! host, as a zone-file fragment, and `--check`, which looks each one up and says what to fix.
//!
//! The records: MX, the host's A/AAAA, SPF, DMARC, DKIM (when a key exists), the SRV records
//! of RFC 6186 and RFC 8314, the autoconfig/autodiscover names Thunderbird and Outlook try,
//! and the reverse DNS (PTR) advice, which is set by whoever owns the IP address.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};

use crate::config::{Config, Service};

/// TTL written on every record: an hour, short enough to fix mistakes quickly.
pub const TTL: u32 = 3600;
/// MX preference of this host (lower is preferred; a backup MX would get 20).
pub const MX_PREFERENCE: u16 = 10;

/// A DKIM public key to publish (the signing keys live under `<data_dir>/dkim/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimKey {
    /// The selector: the record goes to `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// `rsa` or `ed25519`.
    pub key_type: String,
    /// The public key, base64 (the `p=` tag).
    pub public_key_base64: String,
}

/// What a record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// The host's public address is not in the config (it listens on all addresses or behind
    /// NAT): the admin fills it in.
    AddressUnknown,
    Mx {
        preference: u16,
        exchange: String,
    },
    /// One text value; long values are split into 255-byte strings when rendered.
    Txt(String),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        /// "." says the service is not offered (RFC 6186 section 4).
        target: String,
    },
    Cname(String),
    /// Reverse DNS of `ip` (None: unknown), published by the owner of the address, not in the
    /// domain's zone.
    Ptr {
        ip: Option<IpAddr>,
        target: String,
    },
}

/// One record to publish, with an absolute owner name ending in a dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub data: RecordData,
    /// Why the record exists, shown as a comment above it.
    pub note: String,
}

impl Record {
    fn new(name: &str, data: RecordData, note: impl Into<String>) -> Record {
        Record {
            name: fqdn(name),
            data,
            note: note.into(),
        }
    }

    /// The record type as written in a zone file.
    pub fn rtype(&self) -> &'static str {
        match &self.data {
            RecordData::A(_) | RecordData::AddressUnknown => "A",
            RecordData::Aaaa(_) => "AAAA",
            RecordData::Mx { .. } => "MX",
            RecordData::Txt(_) => "TXT",
            RecordData::Srv { .. } => "SRV",
            RecordData::Cname(_) => "CNAME",
            RecordData::Ptr { .. } => "PTR",
        }
    }

    /// Whether the line belongs in the domain's zone (the others are printed as comments).
    pub fn in_zone(&self) -> bool {
        !matches!(
            self.data,
            RecordData::AddressUnknown | RecordData::Ptr { .. }
        )
    }

    /// The record data in zone-file presentation format.
    pub fn rdata(&self) -> String {
        match &self.data {
            RecordData::A(ip) => ip.to_string(),
            RecordData::Aaaa(ip) => ip.to_string(),
            RecordData::AddressUnknown => "<public IP address of this host>".to_string(),
            RecordData::Mx {
                preference,
                exchange,
            } => format!("{preference} {exchange}"),
            RecordData::Txt(text) => quote_txt(text),
            RecordData::Srv {
                priority,
                weight,
                port,
                target,
            } => format!("{priority} {weight} {port} {target}"),
            RecordData::Cname(target) => target.clone(),
            RecordData::Ptr { target, .. } => target.clone(),
        }
    }

    /// `name TTL IN TYPE rdata`, as it goes in a zone file.
    pub fn zone_line(&self) -> String {
        format!(
            "{:<32} {TTL} IN {:<5} {}",
            self.name,
            self.rtype(),
            self.rdata()
        )
    }
}

/// "Example.org" -> "example.org."
fn fqdn(name: &str) -> String {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    format!("{name}.")
}

/// A TXT value as quoted strings of at most 255 bytes each (RFC 1035 character-strings).
fn quote_txt(text: &str) -> String {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() || parts.is_empty() {
        let mut end = rest.len().min(255);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let chunk = &rest[..end];
        rest = &rest[end..];
        let escaped = chunk.replace('\\', "\\\\").replace('"', "\\\"");
        parts.push(format!("\"{escaped}\""));
    }
    parts.join(" ")
}

/// An address others can reach: not loopback, private, link-local, CGNAT or unspecified.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// The public addresses the config names, SMTP's first (they are what the MX leads to).
fn public_addresses(config: &Config) -> Vec<IpAddr> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let smtp_first = std::iter::once(Service::Smtp).chain(Service::ALL);
    for service in smtp_first {
        for addr in config.listen_addrs(service) {
            let ip = addr.ip();
            if is_public(ip) && seen.insert(ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// `192.0.2.7` -> `7.2.0.192.in-addr.arpa.`; IPv6 by nibbles under `ip6.arpa.`.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut out = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                out.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            out.push_str("ip6.arpa.");
            out
        }
    }
}

/// The first port a service listens on, if it is on.
fn port_of(config: &Config, service: Service) -> Option<u16> {
    config.listen_addrs(service).first().map(|a| a.port())
}

/// The records `domain` needs for mail through this host (`config.myhostname`).
pub fn records(config: &Config, domain: &str, dkim: &[DkimKey]) -> Vec<Record> {
    let domain = fqdn(domain);
    let bare = domain.trim_end_matches('.');
    let host = fqdn(&config.myhostname);
    let mut out = Vec::new();
    let sub = |label: &str| format!("{label}.{domain}");

    out.push(Record::new(
        &domain,
        RecordData::Mx {
            preference: MX_PREFERENCE,
            exchange: host.clone(),
        },
        format!("Mail for {bare} goes to this host."),
    ));

    let addresses = public_addresses(config);
    if addresses.is_empty() {
        out.push(Record::new(
            &host,
            RecordData::AddressUnknown,
            "The config listens on no public address (all interfaces, or NAT): publish an A \
             record (and an AAAA if the host has IPv6) with this host's public address.",
        ));
    }
    for ip in &addresses {
        let data = match ip {
            IpAddr::V4(v4) => RecordData::A(*v4),
            IpAddr::V6(v6) => RecordData::Aaaa(*v6),
        };
        out.push(Record::new(&host, data, "This host's address."));
    }

    out.push(Record::new(
        &domain,
        RecordData::Txt("v=spf1 mx -all".into()),
        "SPF: only the domain's MX hosts send its mail.",
    ));
    if host.ends_with(&format!(".{domain}")) {
        out.push(Record::new(
            &host,
            RecordData::Txt("v=spf1 a -all".into()),
            "SPF for the host name itself (checked for bounces, which have an empty sender).",
        ));
    }
    out.push(Record::new(
        &sub("_dmarc"),
        RecordData::Txt(format!("v=DMARC1; p=none; rua=mailto:postmaster@{bare}")),
        "DMARC: start with p=none and read the reports sent to postmaster; move to \
         p=quarantine once they show only your own mail passing.",
    ));
    for key in dkim {
        out.push(Record::new(
            &format!("{}._domainkey.{domain}", key.selector),
            RecordData::Txt(format!(
                "v=DKIM1; k={}; p={}",
                key.key_type, key.public_key_base64
            )),
            "DKIM: the public key receivers verify signatures with.",
        ));
    }

    out.push(Record::new(
        &sub("_mta-sts"),
        RecordData::Txt(format!(
            "v=STSv1; id={}",
            crate::http::mta_sts::policy_id(config)
        )),
        format!(
            "MTA-STS (RFC 8461): senders fetch the policy (mode {}) from \
             https://mta-sts.{bare}/.well-known/mta-sts.txt, served by hermod's HTTP listener \
             (its certificate must name mta-sts.{bare}); the id changes with the policy.",
            config.mail_auth.mta_sts_mode.as_str()
        ),
    ));
    if fqdn(&sub("mta-sts")) != host {
        out.push(Record::new(
            &sub("mta-sts"),
            RecordData::Cname(host.clone()),
            "MTA-STS: the policy host is this host.",
        ));
    }
    let rua = if config.mail_auth.tls_rpt_rua.is_empty() {
        format!("mailto:postmaster@{bare}")
    } else {
        config.mail_auth.tls_rpt_rua.join(",")
    };
    out.push(Record::new(
        &sub("_smtp._tls"),
        RecordData::Txt(format!("v=TLSRPTv1; rua={rua}")),
        "TLS reporting (RFC 8460): where other servers send daily reports of their TLS \
         connections to this domain.",
    ));

    // RFC 6186 (and 8314 for the implicit-TLS names): clients may find the servers by SRV;
    // ManageSieve clients by `_sieve._tcp` (RFC 5804 section 1.8).
    let srv = [
        (
            "_submissions._tcp",
            Service::Submissions,
            "SMTP submission over TLS",
            "RFC 6186",
        ),
        (
            "_submission._tcp",
            Service::Submission,
            "SMTP submission with STARTTLS",
            "RFC 6186",
        ),
        ("_imaps._tcp", Service::Imaps, "IMAP over TLS", "RFC 6186"),
        (
            "_imap._tcp",
            Service::Imap,
            "IMAP with STARTTLS",
            "RFC 6186",
        ),
        ("_pop3s._tcp", Service::Pop3s, "POP3 over TLS", "RFC 6186"),
        ("_pop3._tcp", Service::Pop3, "POP3 with STLS", "RFC 6186"),
        (
            "_sieve._tcp",
            Service::ManageSieve,
            "ManageSieve (Sieve filters) with STARTTLS",
            "RFC 5804",
        ),
    ];
    for (label, service, what, rfc) in srv {
        let data = match port_of(config, service) {
            Some(port) => RecordData::Srv {
                priority: 0,
                weight: 1,
                port,
                target: host.clone(),
            },
            None => RecordData::Srv {
                priority: 0,
                weight: 0,
                port: 0,
                target: ".".into(),
            },
        };
        let note = if port_of(config, service).is_some() {
            format!("{what} ({rfc}).")
        } else {
            format!("{what} is off: \".\" tells clients it is not offered ({rfc}).")
        };
        out.push(Record::new(&sub(label), data, note));
    }

    for label in ["autoconfig", "autodiscover"] {
        if fqdn(&sub(label)) != host {
            out.push(Record::new(
                &sub(label),
                RecordData::Cname(host.clone()),
                format!(
                    "Account setup: clients fetch http(s)://{label}.{bare}/..., served by \
                     hermod's HTTP listener."
                ),
            ));
        }
    }

    let ptr_note = "Reverse DNS: set by whoever owns the IP address (your hosting provider's \
                    panel), not in this zone. Many receivers refuse mail from an address whose \
                    PTR does not name this host.";
    if addresses.is_empty() {
        out.push(Record {
            name: "<reverse name of the public IP>".into(),
            data: RecordData::Ptr {
                ip: None,
                target: host.clone(),
            },
            note: ptr_note.into(),
        });
    }
    for ip in &addresses {
        out.push(Record {
            name: reverse_name(*ip),
            data: RecordData::Ptr {
                ip: Some(*ip),
                target: host.clone(),
            },
            note: ptr_note.into(),
        });
    }
    out
}

/// The records as a zone-file fragment: comments start with `;`, names are absolute.
/// Records that do not belong in the domain's zone (PTR, an unknown address) are comments.
pub fn render_zone(records: &[Record]) -> String {
    let mut out = String::new();
    out.push_str("; DNS records for mail through hermod. Add them to the zone of the domain\n");
    out.push_str("; (names are absolute), then check them with `hermod dns --check DOMAIN`.\n");
    if let Some(mx) = records.iter().find_map(|r| match &r.data {
        RecordData::Mx { exchange, .. } => Some(exchange),
        _ => None,
    }) && !mx.trim_end_matches('.').contains('.')
    {
        out.push_str(&format!(
            "; WARNING: myhostname is {mx:?}, not a public name: set myhostname in hermod.toml.\n"
        ));
    }
    for r in records {
        out.push('\n');
        for line in wrap(&r.note, 92) {
            out.push_str(&format!("; {line}\n"));
        }
        if r.in_zone() {
            out.push_str(&r.zone_line());
        } else {
            out.push_str("; ");
            out.push_str(&r.zone_line());
        }
        out.push('\n');
    }
    out
}

/// Split text into lines of at most `width` characters at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// Errors that stop `--check` as a whole.
#[derive(Debug, thiserror::Error)]
pub enum DnsCheckError {
    #[error("cannot set up the DNS resolver: {0}")]
    Resolver(#[from] NetError),
}

/// How a published record compares with what hermod needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckStatus {
    Ok,
    Missing,
    /// Something else is published: what was found.
    Wrong(String),
    /// The lookup itself failed (timeout, server failure): nothing can be said.
    Failed(String),
}

/// The verdict on one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub record: Record,
    pub status: CheckStatus,
    /// What to do about it (empty when the record is fine).
    pub fix: String,
}

/// A resolver from `[dns] nameservers` (the system's when empty). `/etc/hosts` is not
/// consulted: on a mail host it often names the host itself, which hides DNS mistakes.
pub fn resolver(config: &Config) -> Result<TokioResolver, NetError> {
    let mut opts = ResolverOpts::default();
    opts.use_hosts_file = ResolveHosts::Never;
    opts.timeout = Duration::from_secs(3);
    opts.attempts = 2;
    let servers: Vec<NameServerConfig> = config
        .dns
        .nameservers
        .iter()
        .filter_map(|n| n.socket_addr())
        .map(|addr| {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
        })
        .collect();
    let builder = if servers.is_empty() {
        TokioResolver::builder_tokio()?
    } else {
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    builder.with_options(opts).build()
}

const DNS_DOWN_FIX: &str =
    "check that the DNS servers answer (`[dns] nameservers`), then try again";

/// What a lookup gave.
enum Answer {
    Found(Vec<RData>),
    Nothing,
    Failed(String),
}

async fn query(resolver: &TokioResolver, name: &str, rtype: RecordType) -> Answer {
    match resolver.lookup(name, rtype).await {
        Ok(lookup) => {
            let data: Vec<RData> = lookup
                .answers()
                .iter()
                .filter(|r| r.record_type() == rtype)
                .map(|r| r.data.clone())
                .collect();
            if data.is_empty() {
                Answer::Nothing
            } else {
                Answer::Found(data)
            }
        }
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => Answer::Nothing,
        Err(e) => Answer::Failed(e.to_string()),
    }
}

fn name_of(n: &hickory_resolver::proto::rr::Name) -> String {
    fqdn(&n.to_ascii())
}

/// The text of a TXT record: its strings joined (how SPF and DKIM read them).
fn txt_text(txt: &hickory_resolver::proto::rr::rdata::TXT) -> String {
    txt.txt_data
        .iter()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// One verdict from the lookup of one record.
fn verdict(record: &Record, answer: Answer) -> (CheckStatus, String) {
    let add = format!("add: {}", record.zone_line());
    let replace = |found: &str| {
        (
            CheckStatus::Wrong(found.to_string()),
            format!("replace it with: {}", record.zone_line()),
        )
    };
    let found = match answer {
        Answer::Failed(e) => return (CheckStatus::Failed(e), DNS_DOWN_FIX.into()),
        Answer::Nothing => return (CheckStatus::Missing, add),
        Answer::Found(found) => found,
    };
    let ok = (CheckStatus::Ok, String::new());
    match &record.data {
        RecordData::A(want) => {
            let got: Vec<String> = found.iter().map(rdata_text).collect();
            if found
                .iter()
                .any(|d| matches!(d, RData::A(a) if a.0 == *want))
            {
                ok
            } else {
                replace(&got.join(", "))
            }
        }
        RecordData::Aaaa(want) => {
            let got: Vec<String> = found.iter().map(rdata_text).collect();
            if found
                .iter()
                .any(|d| matches!(d, RData::AAAA(a) if a.0 == *want))
            {
                ok
            } else {
                replace(&got.join(", "))
            }
        }
        RecordData::AddressUnknown => ok,
        RecordData::Mx { exchange, .. } => {
            let got: Vec<String> = found.iter().map(rdata_text).collect();
            let here = found
                .iter()
                .any(|d| matches!(d, RData::MX(mx) if name_of(&mx.exchange) == *exchange));
            if here {
                ok
            } else {
                (
                    CheckStatus::Wrong(got.join(", ")),
                    format!(
                        "no MX names this host: add {} (and remove the others unless they are \
                         backups that relay to it)",
                        record.zone_line()
                    ),
                )
            }
        }
        RecordData::Txt(want) => {
            let texts: Vec<String> = found
                .iter()
                .filter_map(|d| match d {
                    RData::TXT(t) => Some(txt_text(t)),
                    _ => None,
                })
                .collect();
            txt_verdict(record, want, &texts)
        }
        RecordData::Srv { port, target, .. } => {
            let got: Vec<String> = found.iter().map(rdata_text).collect();
            let matches = found.iter().any(
                |d| matches!(d, RData::SRV(s) if s.port == *port && name_of(&s.target) == *target),
            );
            if matches {
                ok
            } else {
                replace(&got.join(", "))
            }
        }
        RecordData::Cname(target) => {
            let got: Vec<String> = found.iter().map(rdata_text).collect();
            let matches = found
                .iter()
                .any(|d| matches!(d, RData::CNAME(c) if name_of(&c.0) == *target));
            if matches {
                ok
            } else {
                replace(&got.join(", "))
            }
        }
        RecordData::Ptr { ip, target } => {
            let got: Vec<String> = found.iter().map(rdata_text).collect();
            let matches = found
                .iter()
                .any(|d| matches!(d, RData::PTR(p) if name_of(&p.0) == *target));
            if matches {
                ok
            } else {
                (CheckStatus::Wrong(got.join(", ")), ptr_fix(*ip, target))
            }
        }
    }
}

fn ptr_fix(ip: Option<IpAddr>, target: &str) -> String {
    match ip {
        Some(ip) => format!(
            "ask the owner of {ip} (your hosting provider) to set its reverse DNS to {target}"
        ),
        None => "publish the host's A record first, then have its reverse DNS set".into(),
    }
}

/// The policy records are judged by kind: SPF by its mechanisms, DMARC and DKIM by their tag.
fn txt_verdict(record: &Record, want: &str, texts: &[String]) -> (CheckStatus, String) {
    let ok = (CheckStatus::Ok, String::new());
    let add = format!("add: {}", record.zone_line());
    let prefix = want
        .split([' ', ';'])
        .next()
        .unwrap_or(want)
        .to_ascii_lowercase();
    let same_kind: Vec<&String> = texts
        .iter()
        .filter(|t| {
            t.split([' ', ';'])
                .next()
                .is_some_and(|p| p.eq_ignore_ascii_case(&prefix))
        })
        .collect();
    match same_kind.as_slice() {
        [] => (CheckStatus::Missing, add),
        [one] => {
            let fine = match prefix.as_str() {
                // Every mechanism hermod needs (`mx`, `a`) is there, whatever else is.
                "v=spf1" => want
                    .split_whitespace()
                    .skip(1)
                    .filter(|m| !m.ends_with("all"))
                    .all(|m| {
                        one.split_whitespace().any(|x| {
                            x.eq_ignore_ascii_case(m) || x.eq_ignore_ascii_case(&format!("+{m}"))
                        })
                    }),
                "v=dkim1" => {
                    let key = want.split("p=").nth(1).unwrap_or_default();
                    one.replace(' ', "").contains(&format!("p={key}"))
                }
                _ => true,
            };
            if fine {
                ok
            } else {
                (
                    CheckStatus::Wrong((*one).clone()),
                    format!("replace it with: {}", record.zone_line()),
                )
            }
        }
        many => (
            CheckStatus::Wrong(
                many.iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            format!(
                "keep only one {} record: {}",
                prefix.trim_start_matches("v="),
                record.zone_line()
            ),
        ),
    }
}

/// Compact text of a looked-up record, for "found: ...".
fn rdata_text(d: &RData) -> String {
    match d {
        RData::MX(mx) => format!("{} {}", mx.preference, name_of(&mx.exchange)),
        RData::SRV(s) => format!(
            "{} {} {} {}",
            s.priority,
            s.weight,
            s.port,
            name_of(&s.target)
        ),
        RData::CNAME(c) => name_of(&c.0),
        RData::PTR(p) => name_of(&p.0),
        RData::TXT(t) => format!("{:?}", txt_text(t)),
        other => other.to_string(),
    }
}

/// Look up one record and judge it.
async fn check_one(resolver: &TokioResolver, record: Record, host_addrs: &[IpAddr]) -> CheckResult {
    let (status, fix) = match &record.data {
        RecordData::AddressUnknown => {
            if host_addrs.is_empty() {
                (
                    CheckStatus::Missing,
                    format!(
                        "add: {} {TTL} IN A <this host's public IPv4> (and AAAA for IPv6)",
                        record.name
                    ),
                )
            } else {
                (CheckStatus::Ok, String::new())
            }
        }
        RecordData::Ptr { ip: Some(ip), .. } => {
            let answer = query(resolver, &reverse_name(*ip), RecordType::PTR).await;
            match answer {
                Answer::Nothing => (CheckStatus::Missing, ptr_fix(Some(*ip), &record.rdata())),
                other => verdict(&record, other),
            }
        }
        RecordData::Ptr { ip: None, target } => (CheckStatus::Missing, ptr_fix(None, target)),
        RecordData::Srv { target, .. } if target == "." => {
            // Not publishing a service that is off is as good as saying so.
            match query(resolver, &record.name, RecordType::SRV).await {
                Answer::Nothing => (CheckStatus::Ok, String::new()),
                other => verdict(&record, other),
            }
        }
        RecordData::Cname(_) => {
            match query(resolver, &record.name, RecordType::CNAME).await {
                // A and AAAA records of this host instead of a CNAME do as well.
                Answer::Nothing => {
                    let mut addrs = Vec::new();
                    for rtype in [RecordType::A, RecordType::AAAA] {
                        if let Answer::Found(found) = query(resolver, &record.name, rtype).await {
                            addrs.extend(found.iter().filter_map(rdata_ip));
                        }
                    }
                    if addrs.is_empty() {
                        (CheckStatus::Missing, format!("add: {}", record.zone_line()))
                    } else if addrs.iter().any(|a| host_addrs.contains(a)) {
                        (CheckStatus::Ok, String::new())
                    } else {
                        let found: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                        (
                            CheckStatus::Wrong(found.join(", ")),
                            format!("replace them with: {}", record.zone_line()),
                        )
                    }
                }
                other => verdict(&record, other),
            }
        }
        _ => {
            let rtype = match record.data {
                RecordData::A(_) => RecordType::A,
                RecordData::Aaaa(_) => RecordType::AAAA,
                RecordData::Mx { .. } => RecordType::MX,
                RecordData::Srv { .. } => RecordType::SRV,
                _ => RecordType::TXT,
            };
            verdict(&record, query(resolver, &record.name, rtype).await)
        }
    };
    CheckResult {
        record,
        status,
        fix,
    }
}

fn rdata_ip(d: &RData) -> Option<IpAddr> {
    match d {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    }
}

/// Look up every record of [`records`] and say for each whether it is published right.
/// The PTR check uses the host's addresses as DNS has them when the config names none.
pub async fn check(
    config: &Config,
    domain: &str,
    dkim: &[DkimKey],
) -> Result<Vec<CheckResult>, DnsCheckError> {
    let resolver = Arc::new(resolver(config)?);
    let wanted = records(config, domain, dkim);
    let host = fqdn(&config.myhostname);
    let mut host_addrs = Vec::new();
    for rtype in [RecordType::A, RecordType::AAAA] {
        match query(&resolver, &host, rtype).await {
            Answer::Found(found) => host_addrs.extend(found.iter().filter_map(rdata_ip)),
            Answer::Nothing => {}
            // DNS does not answer: say so once instead of waiting out a timeout per record.
            Answer::Failed(e) => {
                return Ok(wanted
                    .into_iter()
                    .map(|record| CheckResult {
                        record,
                        status: CheckStatus::Failed(e.clone()),
                        fix: DNS_DOWN_FIX.into(),
                    })
                    .collect());
            }
        }
    }
    // With no address in the config, check the reverse DNS of the addresses DNS gives.
    let mut expanded = Vec::new();
    for record in wanted {
        match &record.data {
            RecordData::Ptr { ip: None, target } if !host_addrs.is_empty() => {
                for ip in &host_addrs {
                    expanded.push(Record {
                        name: reverse_name(*ip),
                        data: RecordData::Ptr {
                            ip: Some(*ip),
                            target: target.clone(),
                        },
                        note: record.note.clone(),
                    });
                }
            }
            _ => expanded.push(record),
        }
    }
    // Look up concurrently: a dead resolver costs one timeout, not one per record.
    let host_addrs = Arc::new(host_addrs);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, record) in expanded.iter().cloned().enumerate() {
        let (resolver, host_addrs) = (resolver.clone(), host_addrs.clone());
        tasks.spawn(async move { (i, check_one(&resolver, record, &host_addrs).await) });
    }
    let mut results: Vec<Option<CheckResult>> = vec![None; expanded.len()];
    while let Some(joined) = tasks.join_next().await {
        if let Ok((i, result)) = joined {
            results[i] = Some(result);
        }
    }
    Ok(results
        .into_iter()
        .zip(expanded)
        .map(|(r, record)| {
            r.unwrap_or(CheckResult {
                record,
                status: CheckStatus::Failed("the lookup task failed".into()),
                fix: String::new(),
            })
        })
        .collect())
}

/// The check results for a terminal: one line per record, the fix below each problem, and a
/// summary.
pub fn render_check(results: &[CheckResult]) -> String {
    let mut out = String::new();
    let (mut ok, mut missing, mut wrong, mut failed) = (0, 0, 0, 0);
    for r in results {
        let (word, found) = match &r.status {
            CheckStatus::Ok => {
                ok += 1;
                ("ok", String::new())
            }
            CheckStatus::Missing => {
                missing += 1;
                ("MISSING", String::new())
            }
            CheckStatus::Wrong(f) => {
                wrong += 1;
                ("WRONG", format!("  (found: {f})"))
            }
            CheckStatus::Failed(e) => {
                failed += 1;
                ("FAILED", format!("  ({e})"))
            }
        };
        out.push_str(&format!(
            "{word:<8} {:<5} {}{found}\n",
            r.record.rtype(),
            r.record.name
        ));
        if !r.fix.is_empty() {
            out.push_str(&format!("         fix: {}\n", r.fix));
        }
    }
    out.push_str(&format!(
        "\n{ok} ok, {missing} missing, {wrong} wrong, {failed} not checked\n"
    ));
    out
}

/// Whether every record checked out.
pub fn all_ok(results: &[CheckResult]) -> bool {
    results.iter().all(|r| r.status == CheckStatus::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn config(smtp: &str) -> Config {
        let mut c = Config::defaults(false);
        c.myhostname = "mail.example.org".into();
        for (service, addrs) in c.listen.iter_mut() {
            if *service == Service::Smtp {
                *addrs = vec![smtp.parse::<SocketAddr>().unwrap()];
            }
            if *service == Service::Pop3 {
                addrs.clear();
            }
        }
        c
    }

    /// Every record line is `owner TTL IN TYPE rdata` with an absolute owner.
    pub(crate) fn assert_valid_zone(zone: &str) {
        let types = ["A", "AAAA", "MX", "TXT", "SRV", "CNAME", "PTR"];
        let mut records = 0;
        for line in zone.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with(';') {
                continue;
            }
            records += 1;
            let t: Vec<&str> = line.split_whitespace().collect();
            assert!(t.len() >= 5, "short line: {line}");
            assert!(t[0].ends_with('.'), "relative owner: {line}");
            assert!(t[1].parse::<u32>().is_ok(), "no TTL: {line}");
            assert_eq!(t[2], "IN", "{line}");
            assert!(types.contains(&t[3]), "type: {line}");
            match t[3] {
                "MX" => {
                    assert!(t[4].parse::<u16>().is_ok(), "{line}");
                    assert!(t[5].ends_with('.'), "{line}");
                }
                "SRV" => {
                    assert_eq!(t.len(), 8, "{line}");
                    assert!(t[7].ends_with('.'), "{line}");
                }
                "CNAME" => assert!(t[4].ends_with('.'), "{line}"),
                "TXT" => assert!(t[4].starts_with('"') && line.ends_with('"'), "{line}"),
                "A" => assert!(t[4].parse::<Ipv4Addr>().is_ok(), "{line}"),
                "AAAA" => assert!(t[4].parse::<Ipv6Addr>().is_ok(), "{line}"),
                _ => {}
            }
        }
        assert!(records > 0, "no records in\n{zone}");
    }

    #[test]
    fn zone_for_public_host() {
        let c = config("198.51.100.7:25");
        let zone = render_zone(&records(&c, "Example.org.", &[]));
        assert_valid_zone(&zone);
        let has = |s: &str| {
            assert!(
                zone.lines()
                    .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == s),
                "missing `{s}` in\n{zone}"
            )
        };
        has("example.org. 3600 IN MX 10 mail.example.org.");
        has("mail.example.org. 3600 IN A 198.51.100.7");
        has("example.org. 3600 IN TXT \"v=spf1 mx -all\"");
        has("mail.example.org. 3600 IN TXT \"v=spf1 a -all\"");
        has(
            "_dmarc.example.org. 3600 IN TXT \"v=DMARC1; p=none; rua=mailto:postmaster@example.org\"",
        );
        has("_submission._tcp.example.org. 3600 IN SRV 0 1 587 mail.example.org.");
        has("_submissions._tcp.example.org. 3600 IN SRV 0 1 465 mail.example.org.");
        has("_imap._tcp.example.org. 3600 IN SRV 0 1 143 mail.example.org.");
        has("_imaps._tcp.example.org. 3600 IN SRV 0 1 993 mail.example.org.");
        has("_pop3s._tcp.example.org. 3600 IN SRV 0 1 995 mail.example.org.");
        has("_sieve._tcp.example.org. 3600 IN SRV 0 1 4190 mail.example.org.");
        // POP3 on 110 is off in this config: "." says so.
        has("_pop3._tcp.example.org. 3600 IN SRV 0 0 0 .");
        has("autoconfig.example.org. 3600 IN CNAME mail.example.org.");
        has("autodiscover.example.org. 3600 IN CNAME mail.example.org.");
        // PTR advice is a comment naming the reverse name.
        assert!(
            zone.contains("; 7.100.51.198.in-addr.arpa."),
            "no PTR advice in\n{zone}"
        );
        assert!(!zone.contains("_domainkey"), "no DKIM without a key");
    }

    #[test]
    fn unknown_address_is_a_placeholder_comment() {
        let c = config("0.0.0.0:25");
        let zone = render_zone(&records(&c, "example.org", &[]));
        assert_valid_zone(&zone);
        assert!(
            zone.lines()
                .any(|l| l.starts_with("; mail.example.org.") && l.contains("<public IP")),
            "{zone}"
        );
        assert!(
            !zone
                .lines()
                .any(|l| !l.starts_with(';') && l.contains(" IN A "))
        );
    }

    #[test]
    fn dkim_key_is_published_in_255_byte_strings() {
        let c = config("198.51.100.7:25");
        let key = DkimKey {
            selector: "hermod1".into(),
            key_type: "rsa".into(),
            public_key_base64: "A".repeat(400),
        };
        let recs = records(&c, "example.org", std::slice::from_ref(&key));
        let zone = render_zone(&recs);
        assert_valid_zone(&zone);
        let line = zone
            .lines()
            .find(|l| l.starts_with("hermod1._domainkey.example.org."))
            .unwrap();
        let strings: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        assert_eq!(strings.len(), 2, "{line}");
        assert!(strings.iter().all(|s| s.len() <= 255));
        assert_eq!(
            strings.concat(),
            format!("v=DKIM1; k=rsa; p={}", "A".repeat(400))
        );
    }

    #[test]
    fn a_published_dkim_key_that_differs_is_wrong() {
        let c = config("198.51.100.7:25");
        let key = DkimKey {
            selector: "ed1".into(),
            key_type: "ed25519".into(),
            public_key_base64: "NEWKEY".into(),
        };
        let record = records(&c, "example.org", std::slice::from_ref(&key))
            .into_iter()
            .find(|r| r.name.starts_with("ed1._domainkey."))
            .unwrap();
        let want = "v=DKIM1; k=ed25519; p=NEWKEY";
        let (status, fix) = txt_verdict(&record, want, &["v=DKIM1; k=ed25519; p=OLDKEY".into()]);
        assert!(matches!(status, CheckStatus::Wrong(_)), "{status:?}");
        assert!(fix.contains("p=NEWKEY"), "{fix}");
        let (status, _) = txt_verdict(&record, want, &["v=DKIM1; k=ed25519; p=NEWKEY".into()]);
        assert_eq!(status, CheckStatus::Ok);
    }

    #[test]
    fn public_addresses_skip_private_ranges() {
        for ip in [
            "10.1.2.3",
            "192.168.0.1",
            "100.64.0.1",
            "127.0.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "0.0.0.0",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["198.51.100.7", "2001:db8::25", "8.8.8.8"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("192.0.2.7".parse().unwrap()),
            "7.2.0.192.in-addr.arpa."
        );
        let v6 = reverse_name("2001:db8::1".parse().unwrap());
        assert!(v6.starts_with("1.0.0.0.0.0.0.0."), "{v6}");
        assert!(v6.ends_with(".8.b.d.0.1.0.0.2.ip6.arpa."), "{v6}");
        assert_eq!(v6.split('.').count(), 32 + 3);
    }

    #[test]
    fn spf_with_extra_mechanisms_is_fine() {
        let c = config("198.51.100.7:25");
        let spf = records(&c, "example.org", &[])
            .into_iter()
            .find(|r| r.data == RecordData::Txt("v=spf1 mx -all".into()))
            .unwrap();
        let (s, _) = txt_verdict(
            &spf,
            "v=spf1 mx -all",
            &[
                "v=spf1 +mx include:_spf.example.net ~all".into(),
                "google-site-verification=x".into(),
            ],
        );
        assert_eq!(s, CheckStatus::Ok);
        let (s, fix) = txt_verdict(&spf, "v=spf1 mx -all", &["v=spf1 a -all".into()]);
        assert_eq!(s, CheckStatus::Wrong("v=spf1 a -all".into()));
        assert!(fix.contains("\"v=spf1 mx -all\""), "{fix}");
        let (s, _) = txt_verdict(
            &spf,
            "v=spf1 mx -all",
            &["v=spf1 mx -all".into(), "v=spf1 -all".into()],
        );
        assert!(
            matches!(s, CheckStatus::Wrong(_)),
            "two SPF records are an error"
        );
        let (s, _) = txt_verdict(&spf, "v=spf1 mx -all", &["other".into()]);
        assert_eq!(s, CheckStatus::Missing);
    }
}
