//! TLS for every listener: rustls server configs from PEM files, or a self-signed certificate
//! generated on first start (rcgen) and reused after. TLS 1.2 and 1.3 only.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::tls_reload::ReloadableCert;

/// Errors while setting up TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("cannot read private key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Generate(String),
    #[error("certificate and key do not fit together: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The TLS state shared by all listeners.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    pub server_config: Arc<ServerConfig>,
    /// The certificate handed out, replaced by [`Tls::reload`].
    pub cert: Arc<ReloadableCert>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// True when hermod generated the certificate itself.
    pub self_signed: bool,
}

/// Colon-separated uppercase hex SHA-256 of a DER certificate.
pub fn sha256_fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A rustls server config for TLS 1.2 and 1.3 with the ring provider, whose certificate
/// comes from `cert` at every handshake (so a reload takes effect without a restart).
pub fn server_config(cert: Arc<ReloadableCert>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    Ok(Arc::new(config))
}

/// Write a file atomically (temporary file, fsync, rename) with `mode`.
pub(crate) fn write_private(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Generate a self-signed certificate naming `hostname`, localhost, 127.0.0.1 and ::1.
fn generate(hostname: &str, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let mut names = vec![hostname.to_string()];
    for n in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|x| x == n) {
            names.push(n.to_string());
        }
    }
    let generated =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    if let Some(dir) = cert_path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    // Key first: a certificate without its key would be taken as complete on next start.
    write_private(
        key_path,
        generated.signing_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_private(cert_path, generated.cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

impl Tls {
    /// Load the configured certificate, or the generated one in `data_dir/tls`, creating it
    /// on first start.
    pub fn load(config: &Config) -> Result<Tls, TlsError> {
        let (cert_path, key_path, self_signed) = match (&config.tls.cert, &config.tls.key) {
            (Some(c), Some(k)) => (c.clone(), k.clone(), false),
            _ => {
                let dir = config.data_dir.join("tls");
                let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
                if !c.exists() || !k.exists() {
                    generate(&config.myhostname, &c, &k)?;
                    tracing::info!(cert = %c.display(), "generated a self-signed certificate");
                }
                (c, k, true)
            }
        };
        Self::from_files(&cert_path, &key_path, self_signed)
    }

    /// Build the TLS state from a PEM certificate chain and key.
    pub fn from_files(
        cert_path: &Path,
        key_path: &Path,
        self_signed: bool,
    ) -> Result<Tls, TlsError> {
        let cert = ReloadableCert::from_files(cert_path, key_path)?;
        let server_config = server_config(cert.clone())?;
        Ok(Tls {
            acceptor: TlsAcceptor::from(server_config.clone()),
            server_config,
            cert,
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            self_signed,
        })
    }

    /// SHA-256 of the current leaf certificate (DER), as colon-separated hex: what users pin.
    pub fn fingerprint(&self) -> String {
        self.cert.fingerprint()
    }

    /// Read the certificate files again (SIGHUP after a renewal). New connections get the new
    /// certificate; open sessions keep theirs. On error the old certificate stays.
    pub fn reload(&self) -> Result<String, TlsError> {
        self.cert.reload(&self.cert_path, &self.key_path)?;
        Ok(self.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = Config::defaults(true);
        config.data_dir = tmp.path().to_path_buf();
        let a = Tls::load(&config).unwrap();
        let b = Tls::load(&config).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 32 * 3 - 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tmp.path().join("tls/key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn unreadable_certificate_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let cert = tmp.path().join("cert.pem");
        std::fs::write(&cert, "not a pem").unwrap();
        let err = Tls::from_files(&cert, &tmp.path().join("missing.pem"), false)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cert.pem"), "{err}");
    }
}
