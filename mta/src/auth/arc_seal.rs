//! ARC sealing (RFC 8617 5.1) of mail hermod forwards: a message received from the internet
//! and sent on to a remote address (an alias) gets an ARC set with our verification results,
//! so the final receiver can trust what we saw even though forwarding broke SPF (and maybe
//! DKIM). Sealed with the RSA key of `mydomain` (ARC signs with RSA-SHA256 only).

use mail_auth::arc::ArcSealer;
use mail_auth::common::crypto::{RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::{ArcOutput, AuthenticatedMessage, AuthenticationResults};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::keys::{Algorithm, KeyStore, StoredKey};
use super::sign::SIGNED_FIELDS;

/// The key sealing is done with.
pub struct SealKey {
    key: StoredKey,
}

impl SealKey {
    /// The first active RSA key of `domain`, if it has one.
    pub fn find(store: &KeyStore, domain: &str) -> Option<SealKey> {
        let keys = store.active(domain).ok()?;
        keys.into_iter()
            .find(|k| k.algorithm == Algorithm::Rsa)
            .map(|key| SealKey { key })
    }

    /// The ARC set fields (`ARC-Seal`, `ARC-Message-Signature`,
    /// `ARC-Authentication-Results`) to put on top of the message; None when the chain
    /// already failed (RFC 8617 5.1.2: not sealed) or the key is unusable.
    pub fn seal(
        &self,
        message: &AuthenticatedMessage<'_>,
        results: &AuthenticationResults,
        arc: &ArcOutput,
    ) -> Option<String> {
        if !arc.can_be_sealed() {
            return None;
        }
        let key = RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            self.key.pkcs8.as_slice(),
        )))
        .ok()?;
        let set = ArcSealer::from_key(key)
            .domain(self.key.domain.clone())
            .selector(self.key.selector.clone())
            .headers(SIGNED_FIELDS.iter().copied())
            .seal(message, results, arc);
        match set {
            Ok(set) => Some(set.to_header()),
            Err(e) => {
                tracing::warn!(error = %e, "ARC sealing failed");
                None
            }
        }
    }
}
