//! DKIM keys on disk: `<data_dir>/dkim/<domain>/<selector>.key` (PKCS#8 PEM, mode 0600).
//! Retiring a key renames it to `<selector>.retired`: it no longer signs and is no longer
//! printed by `hermod dns`, but stays on disk until the admin deletes it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};

/// RSA modulus size of generated keys (RFC 8301 asks for at least 1024; 2048 is the norm).
pub const RSA_BITS: usize = 2048;
const ACTIVE_EXT: &str = "key";
const RETIRED_EXT: &str = "retired";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0:?} is not a valid domain name")]
    BadDomain(String),
    #[error("{0:?} is not a valid selector (letters, digits and hyphens)")]
    BadSelector(String),
    #[error("a key {selector} for {domain} exists already")]
    Exists { domain: String, selector: String },
    #[error("no active key {selector} for {domain}")]
    NotFound { domain: String, selector: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a usable RSA or Ed25519 private key")]
    BadKey { path: PathBuf },
    #[error("key generation failed: {0}")]
    Generate(String),
}

/// The two signature algorithms hermod signs with (RFC 6376 rsa-sha256, RFC 8463 ed25519-sha256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Rsa,
    Ed25519,
}

impl Algorithm {
    /// The `k=` tag of the DNS record.
    pub fn key_type(self) -> &'static str {
        match self {
            Algorithm::Rsa => "rsa",
            Algorithm::Ed25519 => "ed25519",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "rsa" => Some(Algorithm::Rsa),
            "ed25519" => Some(Algorithm::Ed25519),
            _ => None,
        }
    }

    /// Default selector for a key made today: `rsa20261203`, `ed20261203`.
    pub fn default_selector(self, date: &str) -> String {
        match self {
            Algorithm::Rsa => format!("rsa{date}"),
            Algorithm::Ed25519 => format!("ed{date}"),
        }
    }
}

/// A private key read from disk, with what the DNS record needs.
pub struct StoredKey {
    pub domain: String,
    pub selector: String,
    pub algorithm: Algorithm,
    pub retired: bool,
    /// PKCS#8 DER of the private key.
    pub pkcs8: Vec<u8>,
    /// The `p=` value: SubjectPublicKeyInfo for RSA, the raw 32 bytes for Ed25519 (RFC 8463).
    pub public_key_base64: String,
}

impl StoredKey {
    pub fn dns_record(&self) -> hermod_common::dns_records::DkimKey {
        hermod_common::dns_records::DkimKey {
            selector: self.selector.clone(),
            key_type: self.algorithm.key_type().to_string(),
            public_key_base64: self.public_key_base64.clone(),
        }
    }
}

/// The key directory of one data dir.
#[derive(Debug, Clone)]
pub struct KeyStore {
    root: PathBuf,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A domain as a safe directory name (lower-case, no path separators or dot segments).
pub fn check_domain(domain: &str) -> Result<String, KeyError> {
    hermod_common::config::check_domain(domain).map_err(|_| KeyError::BadDomain(domain.into()))
}

fn check_selector(selector: &str) -> Result<String, KeyError> {
    let s = selector.to_ascii_lowercase();
    let ok = !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(s)
    } else {
        Err(KeyError::BadSelector(selector.into()))
    }
}

impl KeyStore {
    pub fn new(data_dir: &Path) -> Self {
        KeyStore {
            root: data_dir.join("dkim"),
        }
    }

    /// `<data_dir>/dkim/<domain>`.
    pub fn domain_dir(&self, domain: &str) -> Result<PathBuf, KeyError> {
        Ok(self.root.join(check_domain(domain)?))
    }

    /// Makes a key and writes it with mode 0600; refuses to overwrite any key of that selector.
    pub fn generate(
        &self,
        domain: &str,
        selector: &str,
        algorithm: Algorithm,
    ) -> Result<StoredKey, KeyError> {
        let domain = check_domain(domain)?;
        let selector = check_selector(selector)?;
        let dir = self.root.join(&domain);
        for ext in [ACTIVE_EXT, RETIRED_EXT] {
            if dir.join(format!("{selector}.{ext}")).exists() {
                return Err(KeyError::Exists { domain, selector });
            }
        }
        let pkcs8 = match algorithm {
            Algorithm::Rsa => {
                let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_BITS)
                    .map_err(|e| KeyError::Generate(e.to_string()))?;
                key.to_pkcs8_der()
                    .map_err(|e| KeyError::Generate(e.to_string()))?
                    .as_bytes()
                    .to_vec()
            }
            Algorithm::Ed25519 => mail_auth::common::crypto::Ed25519Key::generate_pkcs8()
                .map_err(|e| KeyError::Generate(e.to_string()))?,
        };
        let pem = pem_encode(&pkcs8);
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let path = dir.join(format!("{selector}.{ACTIVE_EXT}"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_error(&path))?;
        file.write_all(pem.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io_error(&path))?;
        let public_key_base64 =
            public_key(algorithm, &pkcs8).ok_or_else(|| KeyError::BadKey { path: path.clone() })?;
        Ok(StoredKey {
            domain,
            selector,
            algorithm,
            retired: false,
            pkcs8,
            public_key_base64,
        })
    }

    /// Every key of `domain` (all domains when None), active and retired, sorted.
    pub fn list(&self, domain: Option<&str>) -> Result<Vec<StoredKey>, KeyError> {
        let domains = match domain {
            Some(d) => vec![check_domain(d)?],
            None => match std::fs::read_dir(&self.root) {
                Ok(entries) => entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .filter(|d| check_domain(d).is_ok_and(|c| &c == d))
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(io_error(&self.root)(e)),
            },
        };
        let mut keys = Vec::new();
        for domain in domains {
            let dir = self.root.join(&domain);
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(&dir)(e)),
            };
            for entry in entries.filter_map(|e| e.ok()) {
                let path = entry.path();
                let (Some(stem), Some(ext)) = (
                    path.file_stem().and_then(|s| s.to_str()),
                    path.extension().and_then(|s| s.to_str()),
                ) else {
                    continue;
                };
                let retired = match ext {
                    ACTIVE_EXT => false,
                    RETIRED_EXT => true,
                    _ => continue,
                };
                if check_selector(stem).is_err() {
                    continue;
                }
                let text = std::fs::read_to_string(&path).map_err(io_error(&path))?;
                let pkcs8 =
                    pem_decode(&text).ok_or_else(|| KeyError::BadKey { path: path.clone() })?;
                let (algorithm, public_key_base64) = [Algorithm::Ed25519, Algorithm::Rsa]
                    .into_iter()
                    .find_map(|a| public_key(a, &pkcs8).map(|p| (a, p)))
                    .ok_or_else(|| KeyError::BadKey { path: path.clone() })?;
                keys.push(StoredKey {
                    domain: domain.clone(),
                    selector: stem.to_string(),
                    algorithm,
                    retired,
                    pkcs8,
                    public_key_base64,
                });
            }
        }
        keys.sort_by(|a, b| (&a.domain, &a.selector).cmp(&(&b.domain, &b.selector)));
        Ok(keys)
    }

    /// The keys that sign for `domain` now.
    pub fn active(&self, domain: &str) -> Result<Vec<StoredKey>, KeyError> {
        let mut keys = self.list(Some(domain))?;
        keys.retain(|k| !k.retired);
        Ok(keys)
    }

    /// Stops signing with a key (renamed to `<selector>.retired`).
    pub fn retire(&self, domain: &str, selector: &str) -> Result<(), KeyError> {
        let domain = check_domain(domain)?;
        let selector = check_selector(selector)?;
        let dir = self.root.join(&domain);
        let from = dir.join(format!("{selector}.{ACTIVE_EXT}"));
        if !from.exists() {
            return Err(KeyError::NotFound { domain, selector });
        }
        let to = dir.join(format!("{selector}.{RETIRED_EXT}"));
        std::fs::rename(&from, &to).map_err(io_error(&from))
    }
}

/// The `p=` value for a PKCS#8 key of `algorithm`, or None if the key is not of that kind.
fn public_key(algorithm: Algorithm, pkcs8: &[u8]) -> Option<String> {
    match algorithm {
        Algorithm::Rsa => {
            let key = rsa::RsaPrivateKey::from_pkcs8_der(pkcs8).ok()?;
            let spki = key.to_public_key().to_public_key_der().ok()?;
            Some(BASE64.encode(spki.as_bytes()))
        }
        Algorithm::Ed25519 => {
            let key = mail_auth::common::crypto::Ed25519Key::from_pkcs8_maybe_unchecked_der(pkcs8)
                .ok()?;
            Some(BASE64.encode(key.public_key()))
        }
    }
}

fn pem_encode(der: &[u8]) -> String {
    let b64 = BASE64.encode(der);
    let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

fn pem_decode(text: &str) -> Option<Vec<u8>> {
    let body: String = text
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "-----BEGIN PRIVATE KEY-----")
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    BASE64.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generate_list_retire() {
        let tmp = tempfile::tempdir().unwrap();
        let store = KeyStore::new(tmp.path());
        let ed = store
            .generate("Example.ORG", "ed1", Algorithm::Ed25519)
            .unwrap();
        assert_eq!(ed.domain, "example.org");
        let rsa = store
            .generate("example.org", "rsa1", Algorithm::Rsa)
            .unwrap();
        let path = tmp.path().join("dkim/example.org/rsa1.key");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            store.generate("example.org", "rsa1", Algorithm::Ed25519),
            Err(KeyError::Exists { .. })
        ));
        assert!(store.generate("../etc", "x", Algorithm::Ed25519).is_err());
        assert!(
            store
                .generate("example.org", "../x", Algorithm::Ed25519)
                .is_err()
        );

        let listed = store.list(None).unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].selector, "ed1");
        assert_eq!(listed[0].algorithm, Algorithm::Ed25519);
        assert_eq!(listed[0].public_key_base64, ed.public_key_base64);
        assert_eq!(listed[1].algorithm, Algorithm::Rsa);
        assert_eq!(listed[1].public_key_base64, rsa.public_key_base64);
        // SubjectPublicKeyInfo of rsaEncryption starts with this prefix.
        assert!(
            rsa.public_key_base64
                .starts_with("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A")
        );

        store.retire("example.org", "rsa1").unwrap();
        let active = store.active("example.org").unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].selector, "ed1");
        assert!(store.retire("example.org", "rsa1").is_err());
        assert!(store.list(None).unwrap()[1].retired);
    }
}
