//! DKIM signing (RFC 6376, RFC 8463) of mail leaving for remote domains: with every active key
//! of the From domain (normally one RSA-2048 and one Ed25519), relaxed/relaxed, From
//! oversigned.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::keys::{Algorithm, KeyStore};

/// Header fields signed. From appears twice so that a second From cannot be added (oversigning,
/// RFC 6376 8.15); mail-auth also lists every absent field of this set, so none can be added.
pub const SIGNED_FIELDS: &[&str] = &[
    "From",
    "From",
    "Sender",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "In-Reply-To",
    "References",
];

enum Signer {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

struct Cached {
    /// Modification time of the domain's key directory when it was read.
    stamp: Option<SystemTime>,
    signers: Arc<Vec<Signer>>,
}

/// The signing keys of our domains, read from disk and re-read when their directory changes
/// (so `hermod dkim generate` and `retire` need no restart). Entries exist only for domains
/// with a key directory: the cache is as big as our domain list.
pub struct DkimSigning {
    store: KeyStore,
    cache: Mutex<HashMap<String, Cached>>,
}

fn signer_for(key: &super::keys::StoredKey) -> Option<Signer> {
    Some(match key.algorithm {
        Algorithm::Rsa => Signer::Rsa(
            DkimSigner::from_key(
                RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                    key.pkcs8.as_slice(),
                )))
                .ok()?,
            )
            .domain(key.domain.clone())
            .selector(key.selector.clone())
            .headers(SIGNED_FIELDS.iter().copied())
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed),
        ),
        Algorithm::Ed25519 => Signer::Ed25519(
            DkimSigner::from_key(Ed25519Key::from_pkcs8_maybe_unchecked_der(&key.pkcs8).ok()?)
                .domain(key.domain.clone())
                .selector(key.selector.clone())
                .headers(SIGNED_FIELDS.iter().copied())
                .header_canonicalization(Canonicalization::Relaxed)
                .body_canonicalization(Canonicalization::Relaxed),
        ),
    })
}

impl DkimSigning {
    pub fn new(store: KeyStore) -> Self {
        DkimSigning {
            store,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn signers(&self, domain: &str) -> Option<Arc<Vec<Signer>>> {
        let dir = self.store.domain_dir(domain).ok()?;
        let stamp = std::fs::metadata(&dir).and_then(|m| m.modified()).ok();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if stamp.is_none() {
            cache.remove(domain);
            return None;
        }
        if let Some(c) = cache.get(domain)
            && c.stamp == stamp
        {
            return Some(c.signers.clone());
        }
        let keys = match self.store.active(domain) {
            Ok(keys) => keys,
            Err(e) => {
                tracing::error!(domain, error = %e, "cannot read the DKIM keys");
                return None;
            }
        };
        let signers: Vec<Signer> = keys
            .iter()
            .filter_map(|k| {
                let s = signer_for(k);
                if s.is_none() {
                    tracing::error!(domain, selector = %k.selector, "unusable DKIM key");
                }
                s
            })
            .collect();
        let signers = Arc::new(signers);
        cache.insert(
            domain.to_string(),
            Cached {
                stamp,
                signers: signers.clone(),
            },
        );
        Some(signers)
    }

    /// The `DKIM-Signature` fields for `message` (CRLF, header and body), one per active key
    /// of `domain`; empty when the domain has no key. CPU work: call off the async workers.
    pub fn sign(&self, domain: &str, message: &[u8]) -> Vec<u8> {
        let Some(signers) = self.signers(domain) else {
            return Vec::new();
        };
        let mut fields = Vec::new();
        for signer in signers.iter() {
            let signature = match signer {
                Signer::Rsa(s) => s.sign(message),
                Signer::Ed25519(s) => s.sign(message),
            };
            match signature {
                Ok(sig) => fields.extend_from_slice(sig.to_header().as_bytes()),
                Err(e) => tracing::error!(domain, error = %e, "DKIM signing failed"),
            }
        }
        fields
    }
}

/// The domain of the first address of the From field, lower-case.
pub fn from_domain(message: &[u8]) -> Option<String> {
    let parsed = mail_parser::MessageParser::new().parse_headers(message)?;
    let address = parsed.from()?.first()?.address()?;
    let domain = address.rsplit_once('@')?.1;
    Some(domain.trim_end_matches('>').to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_with_every_active_key_of_the_from_domain() {
        let tmp = tempfile::tempdir().unwrap();
        let store = KeyStore::new(tmp.path());
        store
            .generate("example.org", "ed1", Algorithm::Ed25519)
            .unwrap();
        let signing = DkimSigning::new(store.clone());
        let msg = b"From: Alice <alice@Example.org>\r\nTo: bob@remote.test\r\nSubject: hi\r\n\r\nhello\r\n";
        assert_eq!(from_domain(msg).as_deref(), Some("example.org"));
        let fields = String::from_utf8(signing.sign("example.org", msg)).unwrap();
        assert_eq!(fields.matches("DKIM-Signature:").count(), 1);
        assert!(fields.contains("a=ed25519-sha256"), "{fields}");
        assert!(fields.contains("c=relaxed/relaxed"), "{fields}");
        assert!(fields.contains("s=ed1"), "{fields}");
        assert!(signing.sign("other.test", msg).is_empty());

        // A key added later is picked up (the directory changed).
        std::thread::sleep(std::time::Duration::from_millis(20));
        store
            .generate("example.org", "rsa1", Algorithm::Rsa)
            .unwrap();
        let fields = String::from_utf8(signing.sign("example.org", msg)).unwrap();
        assert_eq!(fields.matches("DKIM-Signature:").count(), 2);
        assert!(fields.contains("a=rsa-sha256"), "{fields}");
    }
}
