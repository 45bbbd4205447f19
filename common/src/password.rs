//! Argon2id password hashes in PHC string form (`$argon2id$v=19$...`).

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

/// Hashing failed (only on an internal error of the hasher).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// Hash a password with argon2id and a fresh random salt.
pub fn hash(password: &str) -> Result<String, HashError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Whether `password` matches the PHC hash. A malformed stored hash never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), phc)
        .is_ok()
}

/// A hash of a random password, verified against when the login is unknown so that the
/// answer takes as long as for a real user and timing does not reveal who exists.
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let random: [u8; 16] = rand::random();
        let pw: String = random.iter().map(|b| format!("{b:02x}")).collect();
        // If hashing ever failed, an unparsable hash still costs a verify call and never matches.
        hash(&pw).unwrap_or_else(|_| "$argon2id$invalid".to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse", &h));
        assert!(!verify("wrong horse", &h));
        assert!(!verify("correct horse", "not a hash"));
        // Salted: the same password hashes differently each time.
        assert_ne!(h, hash("correct horse").unwrap());
    }
}
