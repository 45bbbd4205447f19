//! hermod's configuration: one TOML file, Postfix's parameter names where Postfix has one.
//!
//! Loading works in two layers: built-in defaults (production, or `--dev`), then the values of
//! the file on top. Every value of the file is optional, so a `--dev` run can take a small file
//! that only points the resolver elsewhere. Unknown keys and bad values are errors that name the
//! file, line and key (the `toml` crate reports the span; our value types validate in
//! `Deserialize` so their errors carry the span too).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

mod mail_auth;
mod screen;
mod sieve;
mod spam;
pub use mail_auth::{MailAuthConfig, StsMode};
pub use screen::{DnsblSite, ScreenConfig};
pub use sieve::SieveConfig;
pub use spam::{FilterFailure, MilterDefault, SpamConfig};

/// Default location of the config file outside `--dev`.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/hermod/hermod.toml";

/// Errors while loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// Which mailbox format new users get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailboxFormat {
    Maildir,
    Mbox,
}

/// An IP network in CIDR notation (`192.0.2.0/24`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in this network (IPv4-mapped IPv6 addresses match IPv4 networks).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim_matches(|c| c == '[' || c == ']')
            .parse()
            .map_err(|_| format!("invalid network address {s:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("invalid prefix length in {s:?}"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The Postfix-style relay host: `[host]:port` means no MX lookup, `host:port` means MX lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayHost {
    pub host: String,
    pub port: u16,
    /// True when written in brackets: connect to the host itself, no MX lookup.
    pub no_mx: bool,
}

impl FromStr for RelayHost {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (host, no_mx, rest) = if let Some(inner) = s.strip_prefix('[') {
            let (host, rest) = inner
                .split_once(']')
                .ok_or_else(|| format!("unclosed bracket in relayhost {s:?}"))?;
            (host, true, rest)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h, false, &s[h.len()..][..p.len() + 1]),
                None => (s, false, ""),
            }
        };
        let port = match rest.strip_prefix(':') {
            Some(p) => p
                .parse()
                .map_err(|_| format!("invalid port in relayhost {s:?}"))?,
            None if rest.is_empty() => 25,
            None => return Err(format!("invalid relayhost {s:?}")),
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(format!("invalid relayhost {s:?}"));
        }
        Ok(RelayHost {
            host: host.to_ascii_lowercase(),
            port,
            no_mx,
        })
    }
}

impl fmt::Display for RelayHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.no_mx {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A listen address: `ip:port`, `[v6]:port`, or `:port` / `*:port` meaning every address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub SocketAddr);

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(port) = s.strip_prefix(':').or_else(|| s.strip_prefix("*:")) {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("invalid port in listen address {s:?}"))?;
            return Ok(ListenAddr(SocketAddr::from(([0, 0, 0, 0], port))));
        }
        s.parse::<SocketAddr>()
            .map(ListenAddr)
            .map_err(|_| format!("invalid listen address {s:?} (want ip:port)"))
    }
}

macro_rules! deserialize_from_str {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
deserialize_from_str!(Cidr, RelayHost, ListenAddr);

/// One network service and the addresses it listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Smtp,
    Submission,
    Submissions,
    Imap,
    Imaps,
    Pop3,
    Pop3s,
    Lmtp,
    Http,
    ManageSieve,
}

impl Service {
    pub const ALL: [Service; 10] = [
        Service::Smtp,
        Service::Submission,
        Service::Submissions,
        Service::Imap,
        Service::Imaps,
        Service::Pop3,
        Service::Pop3s,
        Service::Lmtp,
        Service::Http,
        Service::ManageSieve,
    ];

    /// The service's name as used in the config file's section names and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Service::Smtp => "smtp",
            Service::Submission => "submission",
            Service::Submissions => "submissions",
            Service::Imap => "imap",
            Service::Imaps => "imaps",
            Service::Pop3 => "pop3",
            Service::Pop3s => "pop3s",
            Service::Lmtp => "lmtp",
            Service::Http => "http",
            Service::ManageSieve => "managesieve",
        }
    }

    /// Standard port, and the `--dev` port.
    pub fn ports(self) -> (u16, u16) {
        match self {
            Service::Smtp => (25, 2525),
            Service::Submission => (587, 2587),
            Service::Submissions => (465, 2465),
            Service::Imap => (143, 2143),
            Service::Imaps => (993, 2993),
            Service::Pop3 => (110, 2110),
            Service::Pop3s => (995, 2995),
            Service::Lmtp => (24, 2024),
            Service::Http => (8080, 2080),
            // RFC 5804 section 1.8.
            Service::ManageSieve => (4190, 2190),
        }
    }

    /// Whether the service speaks TLS from the first byte.
    pub fn implicit_tls(self) -> bool {
        matches!(self, Service::Submissions | Service::Imaps | Service::Pop3s)
    }
}

/// Resource limits shared by the listeners and protocol sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Open connections per service, all clients together.
    pub max_connections: usize,
    /// Open connections per service from one IP address.
    pub max_connections_per_ip: usize,
    /// Seconds a session may wait for a command before it is closed.
    pub idle_timeout: u64,
    /// Longest command line accepted, in bytes.
    pub max_line_length: usize,
    /// Recipients per message.
    pub max_recipients: usize,
    /// Protocol errors per session before it is closed.
    pub max_errors: usize,
    /// Failed logins from one IP or for one login before answers are delayed.
    pub auth_failures_before_delay: u32,
    /// Seconds a write to a client may wait (a client that stops reading) before the
    /// connection is dropped.
    pub write_timeout: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 2000,
            max_connections_per_ip: 50,
            idle_timeout: 300,
            max_line_length: 4096,
            max_recipients: 100,
            max_errors: 10,
            auth_failures_before_delay: 3,
            write_timeout: 300,
        }
    }
}

/// The TLS certificate. Without paths, a self-signed certificate is generated in the data dir.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Let's Encrypt's production ACME directory, the default of `[acme] directory_url`.
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory: untrusted certificates, generous rate limits.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// Certificates from an ACME CA (Let's Encrypt) by the TLS-ALPN-01 challenge. Off by default.
#[derive(Debug, Clone, PartialEq)]
pub struct AcmeConfig {
    pub enabled: bool,
    /// Names on the certificate; empty means `myhostname` (see [`Config::acme_domains`]).
    pub domains: Vec<String>,
    /// Account contacts, `mailto:` URLs.
    pub contact: Vec<String>,
    pub directory_url: String,
    /// Where the CA's TLS-ALPN-01 validation connects (port 443 for Let's Encrypt).
    pub listen: Vec<SocketAddr>,
    /// An extra PEM root to trust for the ACME server's HTTPS (a private or test CA).
    pub ca_file: Option<PathBuf>,
}

/// The `[acme]` section as written: every value optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AcmeSection {
    enabled: Option<bool>,
    domains: Option<Vec<String>>,
    contact: Option<Vec<String>>,
    directory_url: Option<String>,
    listen: Option<Vec<ListenAddr>>,
    ca_file: Option<PathBuf>,
}

/// The DNS resolver. No nameservers means the system's (`/etc/resolv.conf`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    pub nameservers: Vec<ListenAddrString>,
}

/// A `ip:port` kept as text so the effective config prints as written; validated on load.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct ListenAddrString(pub String);

impl<'de> Deserialize<'de> for ListenAddrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let addr = if s.parse::<IpAddr>().is_ok() {
            format!("{s}:53")
        } else {
            s
        };
        addr.parse::<SocketAddr>()
            .map_err(|_| serde::de::Error::custom(format!("invalid nameserver {addr:?}")))?;
        Ok(ListenAddrString(addr))
    }
}

impl ListenAddrString {
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.0.parse().ok()
    }
}

/// Outbound delivery settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// The port of remote MX hosts (25; tests point it at sinks on loopback).
    pub remote_port: u16,
    /// Require a verified certificate from MX hosts (otherwise STARTTLS is opportunistic).
    pub require_tls: bool,
    /// SASL credentials for the relay host.
    pub relayhost_username: Option<String>,
    pub relayhost_password: Option<String>,
    /// Seconds a message may stay queued before it bounces (Postfix: 5 days).
    pub maximal_queue_lifetime: u64,
    /// First retry delay in seconds; it doubles up to `maximal_backoff_time`.
    pub minimal_backoff_time: u64,
    pub maximal_backoff_time: u64,
    /// Send a warning to the sender after this many seconds of delay (0: never).
    pub delay_warning_time: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            remote_port: 25,
            require_tls: false,
            relayhost_username: None,
            relayhost_password: None,
            maximal_queue_lifetime: 5 * 24 * 3600,
            minimal_backoff_time: 300,
            maximal_backoff_time: 3600,
            delay_warning_time: 0,
        }
    }
}

/// The effective configuration of hermod.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// This host's name in SMTP greetings and `Received:` headers.
    pub myhostname: String,
    /// The domain of this host (default: myhostname minus its first label).
    pub mydomain: String,
    /// The domain appended to bare local names of locally posted mail.
    pub myorigin: String,
    /// Domains delivered locally, in addition to those in the directory.
    pub mydestination: Vec<String>,
    /// Addresses the services listen on when their section names none.
    pub inet_interfaces: Vec<String>,
    /// Clients that may relay through port 25 without authenticating.
    pub mynetworks: Vec<Cidr>,
    /// Send all outbound mail through this host (a null client).
    pub relayhost: Option<RelayHost>,
    /// Largest message accepted, in bytes.
    pub message_size_limit: u64,
    /// Where hermod keeps its database, mail, queue and generated certificate.
    pub data_dir: PathBuf,
    /// Mailbox format of local users.
    pub mailbox_format: MailboxFormat,
    /// Where mbox INBOXes live; `{localpart}` and `{domain}` are replaced.
    pub mbox_path: String,
    /// Folders that `user+folder@domain` may file into: names, or `*` for every folder
    /// without a special use. Sent, Drafts and Trash never; Junk and Archive only by name.
    pub plus_address_folders: Vec<String>,
    /// Allow passwords over unencrypted connections (off: the safe default).
    pub allow_plaintext_auth: bool,
    /// User (and group) to run as after binding the ports when started as root.
    pub run_as_user: Option<String>,
    pub run_as_group: Option<String>,
    /// Effective listen addresses per service (empty: the service is off).
    pub listen: Vec<(Service, Vec<SocketAddr>)>,
    /// Unix socket for LMTP, in addition to its TCP addresses.
    pub lmtp_socket: Option<PathBuf>,
    /// MTA to hand local mail to when `hermod mta` runs apart from `hermod mda`.
    pub lmtp_upstream: Option<SocketAddr>,
    pub tls: TlsConfig,
    pub dns: DnsConfig,
    pub delivery: DeliveryConfig,
    pub limits: Limits,
    pub acme: AcmeConfig,
    /// `[auth]`: mail authentication (DKIM, SPF, DMARC, ARC).
    pub mail_auth: MailAuthConfig,
    /// `[spam]`: content filtering (rspamd).
    pub spam: SpamConfig,
    /// `[screen]`: screening of port 25 clients at connect (DNSBL, pre-greeting).
    pub screen: ScreenConfig,
    /// `[sieve]`: users' filters, ManageSieve limits, vacation and SRS.
    pub sieve: SieveConfig,
    /// True in the zero-config `--dev` mode.
    pub dev: bool,
}

/// Per-service section of the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceSection {
    listen: Option<Vec<ListenAddr>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LmtpSection {
    listen: Option<Vec<ListenAddr>>,
    socket: Option<PathBuf>,
    upstream: Option<ListenAddr>,
}

/// The file as written: every value optional, laid over the defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    myhostname: Option<String>,
    mydomain: Option<String>,
    myorigin: Option<String>,
    mydestination: Option<Vec<String>>,
    inet_interfaces: Option<Vec<String>>,
    mynetworks: Option<Vec<Cidr>>,
    relayhost: Option<String>,
    message_size_limit: Option<u64>,
    data_dir: Option<PathBuf>,
    mailbox_format: Option<MailboxFormat>,
    mbox_path: Option<String>,
    plus_address_folders: Option<Vec<String>>,
    allow_plaintext_auth: Option<bool>,
    run_as_user: Option<String>,
    run_as_group: Option<String>,
    tls: Option<TlsConfig>,
    dns: Option<DnsConfig>,
    delivery: Option<DeliveryConfig>,
    limits: Option<Limits>,
    acme: Option<AcmeSection>,
    auth: Option<MailAuthConfig>,
    spam: Option<SpamConfig>,
    screen: Option<ScreenConfig>,
    sieve: Option<SieveConfig>,
    smtp: Option<ServiceSection>,
    submission: Option<ServiceSection>,
    submissions: Option<ServiceSection>,
    imap: Option<ServiceSection>,
    imaps: Option<ServiceSection>,
    pop3: Option<ServiceSection>,
    pop3s: Option<ServiceSection>,
    lmtp: Option<LmtpSection>,
    http: Option<ServiceSection>,
    managesieve: Option<ServiceSection>,
}

/// How the command line asks for the configuration.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--config F`; None means the default path (or none at all in `--dev`).
    pub config_path: Option<PathBuf>,
    /// `--dev`: the zero-config mode.
    pub dev: bool,
    /// `--data-dir D`: overrides the data dir of the file.
    pub data_dir: Option<PathBuf>,
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

impl Config {
    /// The built-in defaults of production (`dev = false`) or of `--dev`.
    pub fn defaults(dev: bool) -> Config {
        let myhostname = if dev {
            "localhost".to_string()
        } else {
            system_hostname()
        };
        let mydomain = parent_domain(&myhostname);
        let interfaces = if dev {
            vec!["127.0.0.1".to_string()]
        } else {
            vec!["all".to_string()]
        };
        let mut config = Config {
            myorigin: mydomain.clone(),
            mydestination: if dev {
                vec!["localhost".to_string()]
            } else {
                vec![myhostname.clone(), "localhost".to_string()]
            },
            myhostname,
            mydomain,
            inet_interfaces: interfaces,
            mynetworks: vec![
                Cidr {
                    addr: IpAddr::from([127, 0, 0, 0]),
                    prefix: 8,
                },
                Cidr {
                    addr: IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
                    prefix: 128,
                },
            ],
            relayhost: None,
            message_size_limit: 50 * 1024 * 1024,
            data_dir: if dev {
                PathBuf::from("hermod-data")
            } else {
                PathBuf::from("/var/lib/hermod")
            },
            mailbox_format: MailboxFormat::Maildir,
            // Per domain, so alice@a.org and alice@b.org never share an INBOX.
            mbox_path: if dev {
                "spool/{domain}/{localpart}".to_string()
            } else {
                "/var/spool/mail/{domain}/{localpart}".to_string()
            },
            plus_address_folders: vec!["*".to_string()],
            allow_plaintext_auth: false,
            run_as_user: None,
            run_as_group: None,
            listen: Vec::new(),
            lmtp_socket: None,
            lmtp_upstream: None,
            tls: TlsConfig::default(),
            dns: DnsConfig::default(),
            delivery: DeliveryConfig::default(),
            limits: Limits::default(),
            acme: AcmeConfig {
                enabled: false,
                domains: Vec::new(),
                contact: Vec::new(),
                directory_url: LETS_ENCRYPT_PRODUCTION.to_string(),
                listen: Vec::new(),
                ca_file: None,
            },
            mail_auth: MailAuthConfig::default(),
            spam: SpamConfig::default(),
            screen: ScreenConfig::default(),
            sieve: SieveConfig::default(),
            dev,
        };
        config.listen = Service::ALL
            .iter()
            .map(|s| (*s, config.default_listen(*s)))
            .collect();
        config.acme.listen = config.default_acme_listen();
        config
    }

    fn default_listen(&self, service: Service) -> Vec<SocketAddr> {
        let (port, dev_port) = service.ports();
        let port = if self.dev { dev_port } else { port };
        // LMTP and HTTP (metrics) stay on loopback unless configured otherwise.
        let loopback_only = matches!(service, Service::Lmtp | Service::Http);
        let interfaces: Vec<String> = if loopback_only {
            vec!["127.0.0.1".to_string()]
        } else {
            self.inet_interfaces.clone()
        };
        interface_addrs(&interfaces, port)
    }

    /// The TLS-ALPN-01 listener: port 443 (2443 in `--dev`) on the public interfaces.
    fn default_acme_listen(&self) -> Vec<SocketAddr> {
        interface_addrs(&self.inet_interfaces, if self.dev { 2443 } else { 443 })
    }

    /// The names the ACME certificate is for: `[acme] domains`, or `myhostname`.
    pub fn acme_domains(&self) -> Vec<String> {
        if self.acme.domains.is_empty() {
            vec![self.myhostname.clone()]
        } else {
            self.acme.domains.clone()
        }
    }
    /// Load the configuration as the command line asks.
    pub fn load(opts: &LoadOptions) -> Result<Config, ConfigError> {
        let mut config = Config::defaults(opts.dev);
        let path = match &opts.config_path {
            Some(p) => Some(p.clone()),
            None if opts.dev => None,
            None => Some(PathBuf::from(DEFAULT_CONFIG_PATH)),
        };
        if let Some(path) = path {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            config.apply_file(&path, &text)?;
        }
        if let Some(d) = &opts.data_dir {
            config.data_dir = d.clone();
        }
        config.validate()?;
        Ok(config)
    }

    /// Parse a config file's text and lay its values over this config.
    pub fn apply_file(&mut self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: describe_toml_error(text, &e),
        })?;
        let invalid = |key: &str, msg: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message: format!("{}key `{key}`: {msg}", line_of_key(text, key)),
        };
        if let Some(v) = file.myhostname {
            self.myhostname = check_domain(&v).map_err(|m| invalid("myhostname", m))?;
            if file.mydomain.is_none() {
                self.mydomain = parent_domain(&self.myhostname);
            }
            if file.myorigin.is_none() && file.mydomain.is_none() {
                self.myorigin = self.mydomain.clone();
            }
            if file.mydestination.is_none() && !self.dev {
                self.mydestination = vec![self.myhostname.clone(), "localhost".to_string()];
            }
        }
        if let Some(v) = file.mydomain {
            self.mydomain = check_domain(&v).map_err(|m| invalid("mydomain", m))?;
            if file.myorigin.is_none() {
                self.myorigin = self.mydomain.clone();
            }
        }
        if let Some(v) = file.myorigin {
            self.myorigin = check_domain(&v).map_err(|m| invalid("myorigin", m))?;
        }
        if let Some(v) = file.mydestination {
            self.mydestination = v
                .iter()
                .map(|d| check_domain(d))
                .collect::<Result<_, _>>()
                .map_err(|m| invalid("mydestination", m))?;
        }
        let interfaces_changed = file.inet_interfaces.is_some();
        if let Some(v) = file.inet_interfaces {
            for iface in &v {
                let ok = matches!(iface.as_str(), "all" | "loopback-only" | "localhost")
                    || iface
                        .trim_matches(|c| c == '[' || c == ']')
                        .parse::<IpAddr>()
                        .is_ok();
                if !ok {
                    return Err(invalid(
                        "inet_interfaces",
                        format!("{iface:?} is not an IP address, \"all\" or \"loopback-only\""),
                    ));
                }
            }
            self.inet_interfaces = v;
        }
        if let Some(v) = file.mynetworks {
            self.mynetworks = v;
        }
        if let Some(v) = file.relayhost {
            self.relayhost = if v.trim().is_empty() {
                None
            } else {
                Some(v.parse().map_err(|m| invalid("relayhost", m))?)
            };
        }
        if let Some(v) = file.message_size_limit {
            if v < 1024 {
                return Err(invalid(
                    "message_size_limit",
                    "must be at least 1024 bytes".to_string(),
                ));
            }
            self.message_size_limit = v;
        }
        if let Some(v) = file.data_dir {
            self.data_dir = v;
        }
        if let Some(v) = file.mailbox_format {
            self.mailbox_format = v;
        }
        if let Some(v) = file.mbox_path {
            if !v.contains("{localpart}") {
                return Err(invalid("mbox_path", "must contain {localpart}".to_string()));
            }
            self.mbox_path = v;
        }
        if let Err(m) = self.check_mbox_domains(self.mydestination.len()) {
            return Err(invalid("mbox_path", m));
        }
        if let Some(v) = file.plus_address_folders {
            self.plus_address_folders = v;
        }
        if let Some(v) = file.allow_plaintext_auth {
            self.allow_plaintext_auth = v;
        }
        if file.run_as_user.is_some() {
            self.run_as_user = file.run_as_user;
        }
        if file.run_as_group.is_some() {
            self.run_as_group = file.run_as_group;
        }
        if let Some(v) = file.tls {
            if v.cert.is_some() != v.key.is_some() {
                return Err(invalid(
                    "tls",
                    "give both `cert` and `key`, or neither".to_string(),
                ));
            }
            self.tls = v;
        }
        if let Some(v) = file.dns {
            self.dns = v;
        }
        if let Some(v) = file.delivery {
            self.delivery = v;
        }
        if let Some(v) = file.limits {
            self.limits = v;
        }
        if let Some(v) = file.auth {
            // RFC 8461 3.2: max_age of at most a year, MX patterns as host names or `*.`.
            if v.mta_sts_max_age > 31_557_600 {
                return Err(invalid(
                    "mta_sts_max_age",
                    "must be at most 31557600 seconds (RFC 8461)".into(),
                ));
            }
            for mx in &v.mta_sts_mx {
                check_domain(mx.strip_prefix("*.").unwrap_or(mx))
                    .map_err(|m| invalid("mta_sts_mx", m))?;
            }
            self.mail_auth = v;
        }
        if let Some(v) = file.spam {
            v.validate().map_err(|e| invalid("spam", e))?;
            self.spam = v;
        }
        if let Some(v) = file.screen {
            self.screen = v;
        }
        if let Some(v) = file.sieve {
            v.validate().map_err(|m| invalid("sieve", m))?;
            self.sieve = v;
        }
        let sections = [
            (Service::Smtp, file.smtp.and_then(|s| s.listen)),
            (Service::Submission, file.submission.and_then(|s| s.listen)),
            (
                Service::Submissions,
                file.submissions.and_then(|s| s.listen),
            ),
            (Service::Imap, file.imap.and_then(|s| s.listen)),
            (Service::Imaps, file.imaps.and_then(|s| s.listen)),
            (Service::Pop3, file.pop3.and_then(|s| s.listen)),
            (Service::Pop3s, file.pop3s.and_then(|s| s.listen)),
            (Service::Http, file.http.and_then(|s| s.listen)),
            (
                Service::ManageSieve,
                file.managesieve.and_then(|s| s.listen),
            ),
        ];
        let mut lmtp_listen = None;
        if let Some(l) = file.lmtp {
            lmtp_listen = l.listen;
            if l.socket.is_some() {
                self.lmtp_socket = l.socket;
            }
            if let Some(u) = l.upstream {
                self.lmtp_upstream = Some(u.0);
            }
        }
        let explicit: Vec<(Service, Option<Vec<ListenAddr>>)> = sections
            .into_iter()
            .chain(std::iter::once((Service::Lmtp, lmtp_listen)))
            .collect();
        for (service, listen) in explicit {
            let addrs = match listen {
                Some(l) => l.into_iter().map(|a| a.0).collect(),
                None if interfaces_changed => self.default_listen(service),
                None => continue,
            };
            if let Some(entry) = self.listen.iter_mut().find(|(s, _)| *s == service) {
                entry.1 = addrs;
            }
        }
        let acme = file.acme.unwrap_or_default();
        if let Some(v) = acme.enabled {
            self.acme.enabled = v;
        }
        if let Some(v) = acme.domains {
            self.acme.domains = v
                .iter()
                .map(|d| check_domain(d))
                .collect::<Result<_, _>>()
                .map_err(|m| invalid("domains", m))?;
        }
        if let Some(v) = acme.contact {
            if let Some(bad) = v.iter().find(|c| {
                !c.strip_prefix("mailto:")
                    .is_some_and(|a| a.contains('@') && !a.contains(char::is_whitespace))
            }) {
                return Err(invalid(
                    "contact",
                    format!("{bad:?} is not a mailto: URL (\"mailto:postmaster@example.org\")"),
                ));
            }
            self.acme.contact = v;
        }
        if let Some(v) = acme.directory_url {
            if !v.starts_with("https://") {
                return Err(invalid(
                    "directory_url",
                    format!("{v:?} is not an https:// URL"),
                ));
            }
            self.acme.directory_url = v;
        }
        match acme.listen {
            Some(l) => self.acme.listen = l.into_iter().map(|a| a.0).collect(),
            None if interfaces_changed => self.acme.listen = self.default_acme_listen(),
            None => {}
        }
        if acme.ca_file.is_some() {
            self.acme.ca_file = acme.ca_file;
        }
        if self.acme.enabled {
            if self.acme.listen.is_empty() {
                return Err(invalid(
                    "acme",
                    "`listen` must name an address: the CA connects to it (port 443) to validate"
                        .to_string(),
                ));
            }
            if self.tls.cert.is_some() {
                return Err(invalid(
                    "acme",
                    "ACME is enabled and [tls] names a certificate: use one or the other"
                        .to_string(),
                ));
            }
        }
        Ok(())
    }

    /// With mbox, a path template without `{domain}` gives `alice@a.org` and `alice@b.org`
    /// one INBOX: allowed only while a single domain is local. `local_domains` counts
    /// `mydestination` and the directory's domains (`hermod domain add` asks too).
    pub fn check_mbox_domains(&self, local_domains: usize) -> Result<(), String> {
        if self.mailbox_format == MailboxFormat::Mbox
            && !self.mbox_path.contains("{domain}")
            && local_domains > 1
        {
            return Err(format!(
                "must contain {{domain}} when more than one domain is local ({local_domains} \
                 are): without it the same local part in two domains shares one INBOX"
            ));
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid("data_dir must not be empty".into()));
        }
        Ok(())
    }

    /// The addresses a service listens on (empty: off).
    pub fn listen_addrs(&self, service: Service) -> &[SocketAddr] {
        self.listen
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, a)| a.as_slice())
            .unwrap_or(&[])
    }

    /// Whether a client address may relay through port 25 without authenticating.
    pub fn in_mynetworks(&self, ip: IpAddr) -> bool {
        self.mynetworks.iter().any(|n| n.contains(ip))
    }

    /// The SQLite user directory.
    pub fn directory_path(&self) -> PathBuf {
        self.data_dir.join("directory.sqlite")
    }

    /// The effective config as TOML, for `hermod check-config`.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        let q = |s: &str| toml_quote(s);
        let list = |v: &[String]| {
            format!(
                "[{}]",
                v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
            )
        };
        out.push_str(&format!("myhostname = {}\n", q(&self.myhostname)));
        out.push_str(&format!("mydomain = {}\n", q(&self.mydomain)));
        out.push_str(&format!("myorigin = {}\n", q(&self.myorigin)));
        out.push_str(&format!("mydestination = {}\n", list(&self.mydestination)));
        out.push_str(&format!(
            "inet_interfaces = {}\n",
            list(&self.inet_interfaces)
        ));
        let nets: Vec<String> = self.mynetworks.iter().map(|n| n.to_string()).collect();
        out.push_str(&format!("mynetworks = {}\n", list(&nets)));
        out.push_str(&format!(
            "relayhost = {}\n",
            q(&self
                .relayhost
                .as_ref()
                .map(|r| r.to_string())
                .unwrap_or_default())
        ));
        out.push_str(&format!(
            "message_size_limit = {}\n",
            self.message_size_limit
        ));
        out.push_str(&format!(
            "data_dir = {}\n",
            q(&self.data_dir.display().to_string())
        ));
        out.push_str(&format!(
            "mailbox_format = {}\n",
            q(match self.mailbox_format {
                MailboxFormat::Maildir => "maildir",
                MailboxFormat::Mbox => "mbox",
            })
        ));
        out.push_str(&format!("mbox_path = {}\n", q(&self.mbox_path)));
        out.push_str(&format!(
            "plus_address_folders = [{}]\n",
            self.plus_address_folders
                .iter()
                .map(|f| q(f))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        out.push_str(&format!(
            "allow_plaintext_auth = {}\n",
            self.allow_plaintext_auth
        ));
        if let Some(u) = &self.run_as_user {
            out.push_str(&format!("run_as_user = {}\n", q(u)));
        }
        if let Some(g) = &self.run_as_group {
            out.push_str(&format!("run_as_group = {}\n", q(g)));
        }
        for (service, addrs) in &self.listen {
            let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
            out.push_str(&format!(
                "\n[{}]\nlisten = {}\n",
                service.name(),
                list(&addrs)
            ));
            if *service == Service::Lmtp {
                if let Some(s) = &self.lmtp_socket {
                    out.push_str(&format!("socket = {}\n", q(&s.display().to_string())));
                }
                if let Some(u) = &self.lmtp_upstream {
                    out.push_str(&format!("upstream = {}\n", q(&u.to_string())));
                }
            }
        }
        out.push_str("\n[tls]\n");
        match (&self.tls.cert, &self.tls.key) {
            (Some(c), Some(k)) => {
                out.push_str(&format!("cert = {}\n", q(&c.display().to_string())));
                out.push_str(&format!("key = {}\n", q(&k.display().to_string())));
            }
            _ => out.push_str("# self-signed certificate generated in data_dir/tls\n"),
        }
        let a = &self.acme;
        out.push_str(&format!(
            "\n[acme]\nenabled = {}\ndomains = {}\ncontact = {}\ndirectory_url = {}\n",
            a.enabled,
            list(&self.acme_domains()),
            list(&a.contact),
            q(&a.directory_url)
        ));
        let addrs: Vec<String> = a.listen.iter().map(|x| x.to_string()).collect();
        out.push_str(&format!("listen = {}\n", list(&addrs)));
        if let Some(c) = &a.ca_file {
            out.push_str(&format!("ca_file = {}\n", q(&c.display().to_string())));
        }
        let ns: Vec<String> = self.dns.nameservers.iter().map(|n| n.0.clone()).collect();
        out.push_str(&format!("\n[dns]\nnameservers = {}\n", list(&ns)));
        let d = &self.delivery;
        out.push_str(&format!(
            "\n[delivery]\nremote_port = {}\nrequire_tls = {}\n",
            d.remote_port, d.require_tls
        ));
        if let Some(u) = &d.relayhost_username {
            out.push_str(&format!("relayhost_username = {}\n", q(u)));
        }
        if d.relayhost_password.is_some() {
            out.push_str("# relayhost_password is set (not shown)\n");
        }
        out.push_str(&format!(
            "maximal_queue_lifetime = {}\nminimal_backoff_time = {}\nmaximal_backoff_time = {}\ndelay_warning_time = {}\n",
            d.maximal_queue_lifetime, d.minimal_backoff_time, d.maximal_backoff_time, d.delay_warning_time
        ));
        let l = &self.limits;
        out.push_str(&format!(
            "\n[limits]\nmax_connections = {}\nmax_connections_per_ip = {}\nidle_timeout = {}\nmax_line_length = {}\nmax_recipients = {}\nmax_errors = {}\nauth_failures_before_delay = {}\n",
            l.max_connections, l.max_connections_per_ip, l.idle_timeout, l.max_line_length, l.max_recipients, l.max_errors, l.auth_failures_before_delay
        ));
        out.push_str(&format!("write_timeout = {}\n", l.write_timeout));
        out.push_str(&self.mail_auth.render());
        out.push_str(&self.spam.render());
        out.push_str(&self.screen.render());
        out.push_str(&self.sieve.render());
        out
    }
}

/// `port` on each of `interfaces` (IPs, "all", "loopback-only").
fn interface_addrs(interfaces: &[String], port: u16) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for iface in interfaces {
        match iface.as_str() {
            "all" => {
                out.push(SocketAddr::from(([0, 0, 0, 0], port)));
            }
            "loopback-only" | "localhost" => out.push(SocketAddr::from(([127, 0, 0, 1], port))),
            other => {
                if let Ok(ip) = other
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<IpAddr>()
                {
                    out.push(SocketAddr::new(ip, port));
                }
            }
        }
    }
    out
}

fn toml_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// "mail.example.org" -> "example.org"; a single label stays itself.
fn parent_domain(host: &str) -> String {
    match host.split_once('.') {
        Some((_, rest)) if rest.contains('.') || !rest.is_empty() => rest.to_string(),
        _ => host.to_string(),
    }
}

/// A host or domain name: letters, digits, hyphens, dots; lower-cased.
pub fn check_domain(d: &str) -> Result<String, String> {
    let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(d)
    } else {
        Err(format!("{d:?} is not a valid domain name"))
    }
}

/// "line N: " for the first line where `key` is assigned, to place semantic errors.
fn line_of_key(text: &str, key: &str) -> String {
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with(key) && t[key.len()..].trim_start().starts_with('=') {
            return format!("line {}: ", i + 1);
        }
        if t.starts_with('[') && t.trim_matches(|c| c == '[' || c == ']').trim() == key {
            return format!("line {}: ", i + 1);
        }
    }
    String::new()
}

/// One line naming the line and the problem, instead of toml's multi-line report.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let snippet = text.lines().nth(line - 1).unwrap_or("").trim();
            format!("line {line}: {msg} (at `{snippet}`)")
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(dev: bool, text: &str) -> Result<Config, ConfigError> {
        let mut c = Config::defaults(dev);
        c.apply_file(Path::new("test.toml"), text)?;
        Ok(c)
    }

    #[test]
    fn mbox_path_must_name_the_domain_when_several_are_local() {
        let err = load_text(
            false,
            "mailbox_format = \"mbox\"\nmydestination = [\"a.org\", \"b.org\"]\nmbox_path = \"/var/spool/mail/{localpart}\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("mbox_path") && err.contains("{domain}"),
            "{err}"
        );
        // One local domain: the classic path is fine.
        let one = load_text(
            false,
            "mailbox_format = \"mbox\"\nmydestination = [\"a.org\"]\nmbox_path = \"/var/spool/mail/{localpart}\"\n",
        )
        .unwrap();
        assert!(one.check_mbox_domains(1).is_ok());
        // ...until a second domain is added to the directory.
        assert!(one.check_mbox_domains(2).is_err());
        // The defaults are domain-safe.
        for dev in [false, true] {
            let c = load_text(dev, "mailbox_format = \"mbox\"\n").unwrap();
            assert!(c.mbox_path.contains("{domain}"), "{}", c.mbox_path);
            assert!(c.check_mbox_domains(5).is_ok());
        }
    }

    #[test]
    fn dev_defaults_listen_on_loopback_dev_ports() {
        let c = Config::defaults(true);
        assert_eq!(
            c.listen_addrs(Service::Smtp),
            &[SocketAddr::from(([127, 0, 0, 1], 2525))]
        );
        assert_eq!(
            c.listen_addrs(Service::Pop3s),
            &[SocketAddr::from(([127, 0, 0, 1], 2995))]
        );
        assert_eq!(c.data_dir, PathBuf::from("hermod-data"));
        assert!(c.mydestination.contains(&"localhost".to_string()));
    }

    #[test]
    fn file_overrides_dev_defaults() {
        let c = load_text(
            true,
            "[dns]\nnameservers = [\"127.0.0.1:10053\"]\n[smtp]\nlisten = [\"127.0.0.1:3025\"]\n[delivery]\nremote_port = 2600\n",
        )
        .unwrap();
        assert_eq!(c.dns.nameservers[0].0, "127.0.0.1:10053");
        assert_eq!(
            c.listen_addrs(Service::Smtp),
            &[SocketAddr::from(([127, 0, 0, 1], 3025))]
        );
        assert_eq!(c.delivery.remote_port, 2600);
        // Untouched services keep their dev ports.
        assert_eq!(
            c.listen_addrs(Service::Imap),
            &[SocketAddr::from(([127, 0, 0, 1], 2143))]
        );
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = load_text(false, "myhostname = \"mx.example.org\"\nbogus_key = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("test.toml: line 2:"), "{err}");
        assert!(err.contains("bogus_key"), "{err}");
    }

    #[test]
    fn bad_values_name_line_and_key() {
        let err = load_text(false, "\nmynetworks = [\"10.0.0.0/99\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("prefix"), "{err}");
        let err = load_text(false, "relayhost = \"[smtp.example.com:587\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1") && err.contains("relayhost"), "{err}");
        let err = load_text(false, "message_size_limit = \"big\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");
        let err = load_text(false, "[smtp]\nlisten = [\"nowhere\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("nowhere"), "{err}");
    }

    #[test]
    fn postfix_names_derive_each_other() {
        let c = load_text(false, "myhostname = \"mail.example.org\"\n").unwrap();
        assert_eq!(c.mydomain, "example.org");
        assert_eq!(c.myorigin, "example.org");
        assert_eq!(c.mydestination, vec!["mail.example.org", "localhost"]);
    }

    #[test]
    fn relayhost_brackets_mean_no_mx() {
        let r: RelayHost = "[smtp.example.com]:587".parse().unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.no_mx),
            ("smtp.example.com", 587, true)
        );
        let r: RelayHost = "relay.example.com".parse().unwrap();
        assert_eq!((r.port, r.no_mx), (25, false));
        let r: RelayHost = "relay.example.com:2525".parse().unwrap();
        assert_eq!((r.host.as_str(), r.port), ("relay.example.com", 2525));
    }

    #[test]
    fn cidr_matching() {
        let n: Cidr = "192.0.2.0/24".parse().unwrap();
        assert!(n.contains("192.0.2.77".parse().unwrap()));
        assert!(!n.contains("192.0.3.1".parse().unwrap()));
        assert!(n.contains("::ffff:192.0.2.1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let c = load_text(false, "mynetworks = []\n").unwrap();
        assert!(!c.in_mynetworks("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn deploy_example_is_valid() {
        let text = include_str!("../../deploy/hermod.toml");
        let c = load_text(false, text).unwrap();
        assert_eq!(c.myhostname, "mail.example.org");
        assert_eq!(
            c.listen_addrs(Service::Smtp),
            &[SocketAddr::from(([0, 0, 0, 0], 25))]
        );
        assert_eq!(c.run_as_user.as_deref(), Some("hermod"));
        // ACME is documented there but stays off.
        assert!(!c.acme.enabled);
        assert_eq!(c.acme_domains(), vec!["mail.example.org"]);
        assert_eq!(c.acme.directory_url, LETS_ENCRYPT_PRODUCTION);
        assert_eq!(c.acme.listen, vec![SocketAddr::from(([0, 0, 0, 0], 443))]);
    }

    #[test]
    fn acme_is_off_by_default_and_names_myhostname() {
        let c = load_text(false, "myhostname = \"mail.example.org\"\n").unwrap();
        assert!(!c.acme.enabled);
        assert_eq!(c.acme_domains(), vec!["mail.example.org"]);
        assert_eq!(c.acme.directory_url, LETS_ENCRYPT_PRODUCTION);
        assert_eq!(c.acme.listen, vec![SocketAddr::from(([0, 0, 0, 0], 443))]);
        let c = load_text(false, "inet_interfaces = [\"192.0.2.7\"]\n").unwrap();
        assert_eq!(c.acme.listen, vec!["192.0.2.7:443".parse().unwrap()]);
    }

    #[test]
    fn acme_section_is_read() {
        let c = load_text(
            false,
            "[acme]\nenabled = true\ndomains = [\"Mail.Example.org\", \"autoconfig.example.org\"]\ncontact = [\"mailto:postmaster@example.org\"]\ndirectory_url = \"https://acme-staging-v02.api.letsencrypt.org/directory\"\nlisten = [\"127.0.0.1:5001\"]\nca_file = \"/etc/hermod/acme-ca.pem\"\n",
        )
        .unwrap();
        assert!(c.acme.enabled);
        assert_eq!(
            c.acme_domains(),
            vec!["mail.example.org", "autoconfig.example.org"]
        );
        assert_eq!(c.acme.contact, vec!["mailto:postmaster@example.org"]);
        assert_eq!(c.acme.directory_url, LETS_ENCRYPT_STAGING);
        assert_eq!(c.acme.listen, vec!["127.0.0.1:5001".parse().unwrap()]);
        assert_eq!(
            c.acme.ca_file.as_deref(),
            Some(Path::new("/etc/hermod/acme-ca.pem"))
        );
        let again = load_text(false, &c.to_toml()).unwrap();
        assert_eq!(again.acme, c.acme);
    }

    #[test]
    fn acme_mistakes_name_line_and_key() {
        let err = load_text(false, "[acme]\nenabled = true\nrenew_days = 30\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("test.toml: line 3:"), "{err}");
        assert!(err.contains("renew_days"), "{err}");
        let err = load_text(false, "[acme]\ncontact = [\"postmaster@example.org\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("mailto:"), "{err}");
        let err = load_text(false, "[acme]\ndirectory_url = \"http://ca.example\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("https://"), "{err}");
        let err = load_text(false, "[acme]\ndomains = [\"*.example.org\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("domains"), "{err}");
        let err = load_text(
            false,
            "[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n[acme]\nenabled = true\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 4") && err.contains("[tls]"), "{err}");
    }

    #[test]
    fn mta_sts_settings_are_checked() {
        let c = load_text(
            false,
            "[auth]\nmta_sts_mode = \"enforce\"\nmta_sts_mx = [\"*.example.org\"]\n",
        )
        .unwrap();
        assert_eq!(c.mail_auth.mta_sts_mode, StsMode::Enforce);
        assert_eq!(c.mail_auth.mta_sts_mx, ["*.example.org"]);
        let err = load_text(false, "[auth]\nmta_sts_max_age = 99999999\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("31557600"), "{err}");
        let err = load_text(false, "[auth]\nmta_sts_mx = [\"bad name\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mta_sts_mx"), "{err}");
        let err = load_text(false, "[auth]\nmta_sts_mode = \"strict\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("strict"), "{err}");
    }

    #[test]
    fn effective_config_round_trips() {
        let c = load_text(
            true,
            "myhostname = \"mx.example.net\"\nrelayhost = \"[relay.example.net]:587\"\n",
        )
        .unwrap();
        let text = c.to_toml();
        let again = load_text(true, &text).unwrap();
        assert_eq!(again.myhostname, "mx.example.net");
        assert_eq!(again.relayhost, c.relayhost);
        assert_eq!(again.listen, c.listen);
    }
}
