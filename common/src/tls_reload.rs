//! A certificate that can be replaced while the server runs (SIGHUP after a renewal).
//!
//! rustls asks the config's certificate resolver for the key at every handshake, so swapping
//! what [`ReloadableCert`] hands out changes the certificate of new connections while sessions
//! already established keep theirs: nothing is dropped.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::tls::{TlsError, sha256_fingerprint};

/// The provider hermod's TLS uses everywhere (ring builds fastest here).
fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// What is wrong with a PEM certificate chain and key.
#[derive(Debug, thiserror::Error)]
pub enum PemProblem {
    #[error("{0}")]
    Certificate(String),
    #[error("{0}")]
    Key(String),
    #[error("certificate and key do not fit together: {0}")]
    Mismatch(rustls::Error),
}

fn chain_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemProblem> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| PemProblem::Certificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(PemProblem::Certificate(
            "no PEM certificate in the file".into(),
        ));
    }
    Ok(chain)
}

fn key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, PemProblem> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| PemProblem::Key(e.to_string()))
}

/// Parse a PEM certificate chain and its private key, and check that they belong together.
pub fn certified_key_from_pem(
    chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<CertifiedKey, PemProblem> {
    let chain = chain_from_pem(chain_pem)?;
    let key = key_from_pem(key_pem)?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(PemProblem::Mismatch)
}

/// Read a PEM certificate chain and its private key, and check that they belong together.
pub fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_err = |reason: String| TlsError::Certificate {
        path: cert_path.to_path_buf(),
        reason,
    };
    let key_err = |reason: String| TlsError::Key {
        path: key_path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(cert_path).map_err(|e| cert_err(e.to_string()))?;
    let chain = chain_from_pem(&pem).map_err(|p| cert_err(p.to_string()))?;
    let pem = std::fs::read(key_path).map_err(|e| key_err(e.to_string()))?;
    let key = key_from_pem(&pem).map_err(|p| key_err(p.to_string()))?;
    Ok(CertifiedKey::from_der(chain, key, &provider())?)
}

/// The current certificate and key, swapped atomically by [`ReloadableCert::reload`].
#[derive(Debug)]
pub struct ReloadableCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    pub fn new(key: CertifiedKey) -> Arc<ReloadableCert> {
        Arc::new(ReloadableCert {
            current: RwLock::new(Arc::new(key)),
        })
    }

    /// Load the first certificate from PEM files.
    pub fn from_files(cert_path: &Path, key_path: &Path) -> Result<Arc<ReloadableCert>, TlsError> {
        Ok(Self::new(load_certified_key(cert_path, key_path)?))
    }

    /// Read the files again and use them for new handshakes. On any error the certificate in
    /// use stays, so a half-written renewal never takes the service down.
    pub fn reload(&self, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
        self.install(load_certified_key(cert_path, key_path)?);
        Ok(())
    }

    /// Use `key` for new handshakes (one obtained in memory, e.g. by ACME).
    pub fn install(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
    }

    /// The certificate and key new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// SHA-256 of the current leaf certificate, as `Tls::fingerprint` shows it.
    pub fn fingerprint(&self) -> String {
        self.current()
            .cert
            .first()
            .map(|c| sha256_fingerprint(c.as_ref()))
            .unwrap_or_default()
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use rustls::ServerConfig;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn write_cert(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let generated =
            rcgen::generate_simple_self_signed(vec![format!("{name}.example.org")]).unwrap();
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    /// Accepts any server certificate: the test looks at which one it got.
    #[derive(Debug)]
    struct AnyCert(Arc<CryptoProvider>);

    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &rustls_pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    async fn connect(
        addr: std::net::SocketAddr,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let provider = Arc::new(provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect("a.example.org".try_into().unwrap(), tcp)
            .await
            .unwrap()
    }

    fn peer_fingerprint(s: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
        sha256_fingerprint(s.get_ref().1.peer_certificates().unwrap()[0].as_ref())
    }

    #[tokio::test]
    async fn reload_changes_new_handshakes_and_keeps_open_sessions() {
        let tmp = tempfile::tempdir().unwrap();
        let (cert_a, key_a) = write_cert(tmp.path(), "a");
        let (cert_b, key_b) = write_cert(tmp.path(), "b");
        let resolver = ReloadableCert::from_files(&cert_a, &key_a).unwrap();
        let fp_a = resolver.fingerprint();
        let config = ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // An echo server: each session echoes until EOF.
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let mut tls = acceptor.accept(tcp).await.unwrap();
                    let mut buf = [0u8; 64];
                    loop {
                        let n = tls.read(&mut buf).await.unwrap_or(0);
                        if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });

        let mut old = connect(addr).await;
        assert_eq!(peer_fingerprint(&old), fp_a);

        // A broken renewal is refused and the old certificate stays.
        let err = resolver.reload(&cert_b, &key_a).unwrap_err().to_string();
        assert!(err.contains("do not fit"), "{err}");
        assert_eq!(resolver.fingerprint(), fp_a);

        resolver.reload(&cert_b, &key_b).unwrap();
        let fp_b = resolver.fingerprint();
        assert_ne!(fp_a, fp_b);
        let new = connect(addr).await;
        assert_eq!(peer_fingerprint(&new), fp_b);

        // The session opened before the reload still works.
        old.write_all(b"still here").await.unwrap();
        let mut buf = [0u8; 10];
        old.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"still here");
    }

    #[test]
    fn missing_files_name_the_path() {
        let err = ReloadableCert::from_files(Path::new("/nonexistent/c.pem"), Path::new("/x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/c.pem"), "{err}");
    }
}
