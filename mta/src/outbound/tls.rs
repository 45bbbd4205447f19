//! STARTTLS for outgoing connections.
//!
//! Opportunistic by default, as for any MX on the internet: the handshake accepts any
//! certificate (an encrypted channel beats a plain one), and the certificate is then checked
//! against the trusted roots only to log whether it was verified. With `require_tls` the
//! handshake itself demands a certificate that verifies for the host name we connected to.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Where Debian, Fedora and Alpine keep the bundle of trusted roots.
const SYSTEM_ROOT_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// How a TLS session to a server came out, for the delivery log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOutcome {
    /// `TLSv1_3`.
    pub version: String,
    /// `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// The certificate verified for the host name against the trusted roots.
    pub verified: bool,
    /// Why it did not verify.
    pub verify_error: Option<String>,
}

impl fmt::Display for TlsOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ", self.version, self.cipher)?;
        match &self.verify_error {
            None if self.verified => f.write_str("verified"),
            None => f.write_str("unverified"),
            Some(e) => write!(f, "unverified ({e})"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("TLS client setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The client side of TLS: one configuration for opportunistic TLS, one for verified TLS.
pub struct TlsClient {
    opportunistic: TlsConnector,
    verified: Option<TlsConnector>,
    verifier: Option<Arc<WebPkiServerVerifier>>,
}

impl TlsClient {
    /// Trusts the system's root bundle plus `extra_roots` (a private CA, tests).
    pub fn new(extra_roots: &[CertificateDer<'static>]) -> Result<Self, TlsSetupError> {
        let mut roots = RootCertStore::empty();
        if let Some(path) = SYSTEM_ROOT_BUNDLES
            .iter()
            .map(Path::new)
            .find(|p| p.exists())
        {
            match CertificateDer::pem_file_iter(path) {
                Ok(certs) => {
                    let (added, _) = roots.add_parsable_certificates(certs.filter_map(Result::ok));
                    tracing::debug!(path = %path.display(), added, "trusted roots loaded");
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read trusted roots")
                }
            }
        }
        roots.add_parsable_certificates(extra_roots.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = if roots.is_empty() {
            tracing::warn!(
                "no trusted root certificates: no server certificate can be verified \
                 (require_tls will defer all mail)"
            );
            None
        } else {
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| rustls::Error::General(e.to_string()))?,
            )
        };
        let builder = || {
            ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
        };
        let opportunistic = builder()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate {
                provider: provider.clone(),
            }))
            .with_no_client_auth();
        let verified = match &verifier {
            Some(v) => Some(TlsConnector::from(Arc::new(
                builder()?
                    .with_webpki_verifier(v.clone())
                    .with_no_client_auth(),
            ))),
            None => None,
        };
        Ok(TlsClient {
            opportunistic: TlsConnector::from(Arc::new(opportunistic)),
            verified,
            verifier,
        })
    }

    /// The connector that demands a certificate verifying against the trusted roots (None
    /// without roots): for HTTPS fetches such as MTA-STS policies.
    pub fn verified_connector(&self) -> Option<TlsConnector> {
        self.verified.clone()
    }

    /// Runs the handshake with `host` (the MX name we looked up, or an IP literal).
    pub async fn connect(
        &self,
        tcp: TcpStream,
        host: &str,
        ip: IpAddr,
        require_verified: bool,
    ) -> Result<(TlsStream<TcpStream>, TlsOutcome), String> {
        let name = server_name(host, ip);
        let connector = if require_verified {
            self.verified
                .as_ref()
                .ok_or("no trusted root certificates to verify the server with")?
        } else {
            &self.opportunistic
        };
        let stream = connector
            .connect(name.clone(), tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (_, conn) = stream.get_ref();
        let verify_error = if require_verified {
            None
        } else {
            match (&self.verifier, conn.peer_certificates()) {
                (Some(verifier), Some([end_entity, intermediates @ ..])) => verifier
                    .verify_server_cert(end_entity, intermediates, &name, &[], UnixTime::now())
                    .err()
                    .map(|e| e.to_string()),
                (None, _) => Some("no trusted roots".to_string()),
                (_, _) => Some("no certificate".to_string()),
            }
        };
        let outcome = TlsOutcome {
            version: conn
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default(),
            cipher: conn
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_default(),
            verified: verify_error.is_none(),
            verify_error,
        };
        Ok((stream, outcome))
    }
}

/// The name the certificate must be for: the host name, or the address when we have none.
fn server_name(host: &str, ip: IpAddr) -> ServerName<'static> {
    ServerName::try_from(host.trim_end_matches('.').to_string())
        .unwrap_or_else(|_| ServerName::IpAddress(ip.into()))
}

/// Accepts any certificate, but still checks the handshake signatures (so the session is
/// encrypted to whoever holds the certificate's key).
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_is_readable_in_logs() {
        let mut o = TlsOutcome {
            version: "TLSv1_3".into(),
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
            verified: true,
            verify_error: None,
        };
        assert_eq!(o.to_string(), "TLSv1_3 TLS13_AES_256_GCM_SHA384 verified");
        o.verified = false;
        o.verify_error = Some("invalid peer certificate: UnknownIssuer".into());
        assert_eq!(
            o.to_string(),
            "TLSv1_3 TLS13_AES_256_GCM_SHA384 unverified (invalid peer certificate: UnknownIssuer)"
        );
    }

    #[test]
    fn server_name_falls_back_to_the_address() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            server_name("mx.example.org.", ip),
            ServerName::try_from("mx.example.org").unwrap()
        );
        assert_eq!(server_name("", ip), ServerName::IpAddress(ip.into()));
    }
}
