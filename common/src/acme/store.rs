//! The ACME account key and certificate on disk, in `<data_dir>/acme/`, so a restart reuses
//! them instead of ordering again.
//!
//! - `account.key`: the ACME account's private key (PKCS#8 PEM, mode 0600).
//! - `key.pem` (0600) and `cert.pem` (the chain, leaf first): the certificate, in the same
//!   form as `[tls] cert`/`key`, so other software can use them too.
//! - `cert.for`: the CA directory and the names the certificate was ordered for. A certificate
//!   for other names or from another CA is not reused: changing `domains` or `directory_url`
//!   orders a new one.
//!
//! rustls-acme reads and writes through [`AcmeCache`], which keeps the last certificate in
//! memory so it can be installed even when the disk refuses to store it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::sign::CertifiedKey;
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;

use crate::config::Config;
use crate::tls::{TlsError, write_private};
use crate::tls_reload::{PemProblem, certified_key_from_pem, load_certified_key};

/// The end of the PEM private key that rustls-acme puts before the chain.
const KEY_END: &[u8] = b"-----END PRIVATE KEY-----";

/// The files of one ACME setup (one CA directory and one list of names).
#[derive(Debug)]
pub struct CertStore {
    dir: PathBuf,
    /// What `cert.for` holds for the configured CA and names.
    identity: String,
    /// The certificate (key PEM, then the chain PEM) last read or stored by rustls-acme.
    last: Mutex<Option<Vec<u8>>>,
}

/// `cert.for`: the CA directory and the names, one per line.
fn identity(directory_url: &str, domains: &[String]) -> String {
    let mut s = format!("directory {directory_url}\n");
    for d in domains {
        s.push_str(&format!("domain {d}\n"));
    }
    s
}

/// Split rustls-acme's certificate text into the key PEM and the chain PEM.
fn split_key_and_chain(pem: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = pem.windows(KEY_END.len()).position(|w| w == KEY_END)? + KEY_END.len();
    Some((&pem[..at], &pem[at..]))
}

/// The certificate and key of rustls-acme's certificate text.
pub fn certified_key(pem: &[u8]) -> Result<CertifiedKey, PemProblem> {
    let (key, chain) = split_key_and_chain(pem)
        .ok_or_else(|| PemProblem::Key("no PEM private key before the chain".into()))?;
    certified_key_from_pem(chain, key)
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, TlsError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TlsError::Certificate {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

impl CertStore {
    pub fn new(config: &Config) -> CertStore {
        CertStore {
            dir: config.data_dir.join("acme"),
            identity: identity(&config.acme.directory_url, &config.acme_domains()),
            last: Mutex::new(None),
        }
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    fn identity_path(&self) -> PathBuf {
        self.dir.join("cert.for")
    }

    fn account_path(&self) -> PathBuf {
        self.dir.join("account.key")
    }

    /// Whether the stored certificate was ordered from `directory_url` for `domains`.
    fn stored_for(&self, expected: &str) -> Result<bool, TlsError> {
        Ok(read_optional(&self.identity_path())?.is_some_and(|found| found == expected.as_bytes()))
    }

    /// The stored certificate if it is for the configured CA and names (None: order one).
    pub fn load(&self) -> Result<Option<CertifiedKey>, TlsError> {
        if !self.stored_for(&self.identity)? {
            return Ok(None);
        }
        load_certified_key(&self.cert_path(), &self.key_path()).map(Some)
    }

    /// When `cert.pem` last changed (to notice a renewal by another process).
    pub fn modified(&self) -> Option<std::time::SystemTime> {
        std::fs::metadata(self.cert_path())
            .and_then(|m| m.modified())
            .ok()
    }

    /// The certificate last read or stored by rustls-acme.
    pub fn last(&self) -> Option<Vec<u8>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn remember(&self, pem: &[u8]) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(pem.to_vec());
    }

    fn read_cert(&self, expected: &str) -> Result<Option<Vec<u8>>, TlsError> {
        if !self.stored_for(expected)? {
            return Ok(None);
        }
        let (Some(key), Some(chain)) = (
            read_optional(&self.key_path())?,
            read_optional(&self.cert_path())?,
        ) else {
            return Ok(None);
        };
        let pem = [key.as_slice(), b"\n", chain.as_slice()].concat();
        self.remember(&pem);
        Ok(Some(pem))
    }

    fn write_cert(&self, expected: &str, pem: &[u8]) -> Result<(), TlsError> {
        self.remember(pem);
        let (key, chain) = split_key_and_chain(pem).ok_or_else(|| TlsError::Key {
            path: self.key_path(),
            reason: "the CA's answer has no private key".into(),
        })?;
        self.create_dir()?;
        // Key first, the names last: a crash in between leaves a pair that does not load (or
        // does not match), and the next start orders again.
        write_private(&self.key_path(), key, 0o600)?;
        write_private(&self.cert_path(), chain.trim_ascii_start(), 0o644)?;
        write_private(&self.identity_path(), expected.as_bytes(), 0o644)
    }

    fn read_account(&self) -> Result<Option<Vec<u8>>, TlsError> {
        let Some(pem) = read_optional(&self.account_path())? else {
            return Ok(None);
        };
        let key = PrivatePkcs8KeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Key {
            path: self.account_path(),
            reason: e.to_string(),
        })?;
        Ok(Some(key.secret_pkcs8_der().to_vec()))
    }

    fn write_account(&self, pkcs8: &[u8]) -> Result<(), TlsError> {
        let path = self.account_path();
        let pem = rcgen::KeyPair::try_from(pkcs8)
            .map_err(|e| TlsError::Key {
                path: path.clone(),
                reason: e.to_string(),
            })?
            .serialize_pem();
        self.create_dir()?;
        write_private(&path, pem.as_bytes(), 0o600)
    }

    fn create_dir(&self) -> Result<(), TlsError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| TlsError::Write {
                path: self.dir.clone(),
                source,
            })
    }
}

/// rustls-acme's view of the [`CertStore`].
pub struct AcmeCache(pub Arc<CertStore>);

#[async_trait::async_trait]
impl rustls_acme::CertCache for AcmeCache {
    type EC = TlsError;

    async fn load_cert(
        &self,
        domains: &[String],
        directory_url: &str,
    ) -> Result<Option<Vec<u8>>, TlsError> {
        self.0.read_cert(&identity(directory_url, domains))
    }

    async fn store_cert(
        &self,
        domains: &[String],
        directory_url: &str,
        cert: &[u8],
    ) -> Result<(), TlsError> {
        self.0.write_cert(&identity(directory_url, domains), cert)
    }
}

#[async_trait::async_trait]
impl rustls_acme::AccountCache for AcmeCache {
    type EA = TlsError;

    async fn load_account(
        &self,
        _contact: &[String],
        _directory_url: &str,
    ) -> Result<Option<Vec<u8>>, TlsError> {
        // One key for every CA: a new CA registers it as a new account.
        self.0.read_account()
    }

    async fn store_account(
        &self,
        _contact: &[String],
        _directory_url: &str,
        account: &[u8],
    ) -> Result<(), TlsError> {
        self.0.write_account(account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_acme::{AccountCache, CertCache};
    use std::os::unix::fs::PermissionsExt;

    fn config(dir: &Path, domains: &[&str]) -> Config {
        let mut c = Config::defaults(true);
        c.data_dir = dir.to_path_buf();
        c.acme.domains = domains.iter().map(|d| d.to_string()).collect();
        c
    }

    /// A certificate in rustls-acme's form: PKCS#8 key PEM, a blank line, the chain.
    fn issued(name: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        format!("{}\n{}", key.serialize_pem(), cert.pem()).into_bytes()
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn stored_certificate_is_reused_only_for_the_same_names_and_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path(), &["mail.example.org"]);
        let store = Arc::new(CertStore::new(&c));
        let cache = AcmeCache(store.clone());
        let domains = c.acme_domains();
        let url = c.acme.directory_url.clone();
        assert!(cache.load_cert(&domains, &url).await.unwrap().is_none());
        assert!(store.load().unwrap().is_none());

        let pem = issued("mail.example.org");
        cache.store_cert(&domains, &url, &pem).await.unwrap();
        assert_eq!(mode(&store.key_path()), 0o600);
        assert_eq!(mode(&tmp.path().join("acme")), 0o700);
        let loaded = store.load().unwrap().expect("stored certificate");
        assert_eq!(
            loaded.cert[0].as_ref(),
            certified_key(&pem).unwrap().cert[0].as_ref()
        );
        // The cert file is a plain chain, usable as `[tls] cert`.
        let chain = std::fs::read_to_string(store.cert_path()).unwrap();
        assert!(chain.starts_with("-----BEGIN CERTIFICATE-----"), "{chain}");
        // rustls-acme gets back a pair it parses.
        let again = cache.load_cert(&domains, &url).await.unwrap().unwrap();
        assert!(certified_key(&again).is_ok());

        // Other names or another CA: order a new certificate.
        let other = vec!["other.example.org".to_string()];
        assert!(cache.load_cert(&other, &url).await.unwrap().is_none());
        assert!(
            cache
                .load_cert(&domains, crate::config::LETS_ENCRYPT_STAGING)
                .await
                .unwrap()
                .is_none()
        );
        let changed = CertStore::new(&config(tmp.path(), &["other.example.org"]));
        assert!(changed.load().unwrap().is_none());
    }

    #[tokio::test]
    async fn account_key_round_trips_with_mode_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(CertStore::new(&config(tmp.path(), &[])));
        let cache = AcmeCache(store.clone());
        assert!(cache.load_account(&[], "x").await.unwrap().is_none());
        let key = rcgen::KeyPair::generate().unwrap().serialize_der();
        cache.store_account(&[], "x", &key).await.unwrap();
        assert_eq!(cache.load_account(&[], "y").await.unwrap(), Some(key));
        assert_eq!(mode(&tmp.path().join("acme/account.key")), 0o600);
    }

    #[test]
    fn a_pair_without_key_is_refused() {
        let err = certified_key(b"-----BEGIN CERTIFICATE-----\n").unwrap_err();
        assert!(err.to_string().contains("private key"), "{err}");
    }
}
