//! Fetching a domain's MTA-STS policy (RFC 8461 3.3): `GET /.well-known/mta-sts.txt` from
//! `mta-sts.<domain>` over HTTPS with a certificate that verifies for that name, no
//! redirects, a 200 with `text/plain`, a bounded body, a bounded time.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::policy::{MAX_POLICY_BYTES, Policy, PolicyError};

pub const POLICY_PATH: &str = "/.well-known/mta-sts.txt";
/// Addresses of the policy host tried before giving up.
const MAX_ADDRESSES: usize = 3;

/// Why a policy could not be had (a TLS-RPT `sts-policy-fetch-error` or
/// `sts-policy-invalid`).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no address for {0}")]
    NoAddress(String),
    #[error("{0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS with {0}: {1}")]
    Tls(String, std::io::Error),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("HTTP status {0} (redirects are not followed)")]
    Status(u16),
    #[error("content type {0:?} is not text/plain")]
    ContentType(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("invalid policy: {0}")]
    Invalid(#[from] PolicyError),
}

impl FetchError {
    /// The TLS-RPT result type (RFC 8460 4.3.2.2).
    pub fn result_type(&self) -> &'static str {
        match self {
            FetchError::Invalid(_) => "sts-policy-invalid",
            FetchError::Tls(..) => "sts-webpki-invalid",
            _ => "sts-policy-fetch-error",
        }
    }
}

/// How to reach policy hosts.
#[derive(Clone)]
pub struct Fetcher {
    pub resolver: TokioResolver,
    /// Verifies against the trusted roots (the system's plus `extra_roots`).
    pub tls: TlsConnector,
    /// 443; tests use another.
    pub port: u16,
    pub timeout: Duration,
}

impl Fetcher {
    /// The policy of `domain`, fetched now.
    pub async fn fetch(&self, domain: &str) -> Result<Policy, FetchError> {
        tokio::time::timeout(self.timeout, self.fetch_unbounded(domain))
            .await
            .unwrap_or(Err(FetchError::Timeout(self.timeout)))
    }

    async fn fetch_unbounded(&self, domain: &str) -> Result<Policy, FetchError> {
        let host = format!("mta-sts.{}", domain.trim_end_matches('.'));
        let addresses: Vec<SocketAddr> = match self.resolver.lookup_ip(format!("{host}.")).await {
            Ok(ips) => ips
                .iter()
                .take(MAX_ADDRESSES)
                .map(|ip| SocketAddr::new(ip, self.port))
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut last = FetchError::NoAddress(host.clone());
        for addr in addresses {
            match self.fetch_from(&host, addr).await {
                Ok(policy) => return Ok(policy),
                // Only a failure to reach that address makes another one worth trying.
                Err(e @ FetchError::Connect(..)) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    async fn fetch_from(&self, host: &str, addr: SocketAddr) -> Result<Policy, FetchError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| FetchError::Connect(addr.to_string(), e))?;
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| FetchError::NoAddress(host.to_string()))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| FetchError::Tls(host.to_string(), e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?;
        let driver = tokio::spawn(connection);
        let request = Request::get(POLICY_PATH)
            .header(HOST, host)
            .header(USER_AGENT, "hermod")
            .body(Empty::<Bytes>::new())
            .map_err(|e| FetchError::Http(e.to_string()))?;
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| FetchError::Http(e.to_string()))?;
            if response.status() != StatusCode::OK {
                return Err(FetchError::Status(response.status().as_u16()));
            }
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            if !content_type
                .to_ascii_lowercase()
                .trim_start()
                .starts_with("text/plain")
            {
                return Err(FetchError::ContentType(content_type));
            }
            let body = Limited::new(response.into_body(), MAX_POLICY_BYTES)
                .collect()
                .await
                .map_err(|_| FetchError::Invalid(PolicyError::TooLarge))?
                .to_bytes();
            Ok(Policy::parse(&body)?)
        }
        .await;
        driver.abort();
        result
    }
}
