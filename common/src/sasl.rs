//! Server-side SASL decoding shared by SMTP, IMAP and POP3: PLAIN (RFC 4616) and LOGIN.
//!
//! Only decoding lives here; each protocol frames the challenges its own way.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Why a SASL response was refused (a protocol error, never a panic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("invalid base64")]
    Base64,
    #[error("malformed PLAIN response")]
    MalformedPlain,
    #[error("credentials are not valid UTF-8")]
    Utf8,
    #[error("authorization identity differs from the login")]
    AuthzidMismatch,
    #[error("authentication cancelled")]
    Cancelled,
}

/// Credentials carried by a SASL exchange.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The login (authentication identity).
    pub login: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password, not even in debug output.
        f.debug_struct("Credentials")
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}

/// Decode a base64 line of a SASL exchange. A lone `*` is the client cancelling; `=` is an
/// empty initial response (RFC 4954).
pub fn decode_base64(line: &str) -> Result<Vec<u8>, SaslError> {
    let line = line.trim();
    if line == "*" {
        return Err(SaslError::Cancelled);
    }
    if line == "=" {
        return Ok(Vec::new());
    }
    STANDARD.decode(line).map_err(|_| SaslError::Base64)
}

/// Encode a server challenge.
pub fn encode_base64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Decode a PLAIN response (`authzid NUL authcid NUL password`, base64). An authorization
/// identity other than empty or the login itself is refused: we do not support proxy login.
pub fn decode_plain(b64: &str) -> Result<Credentials, SaslError> {
    let raw = decode_base64(b64)?;
    parse_plain(&raw)
}

/// Parse a PLAIN message that is already decoded (IMAP's imap-codec hands it over raw).
pub fn parse_plain(raw: &[u8]) -> Result<Credentials, SaslError> {
    let mut parts = raw.split(|b| *b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::MalformedPlain);
    };
    let authzid = std::str::from_utf8(authzid).map_err(|_| SaslError::Utf8)?;
    let login = std::str::from_utf8(authcid).map_err(|_| SaslError::Utf8)?;
    let password = std::str::from_utf8(password).map_err(|_| SaslError::Utf8)?;
    if login.is_empty() {
        return Err(SaslError::MalformedPlain);
    }
    if !authzid.is_empty() && !authzid.eq_ignore_ascii_case(login) {
        return Err(SaslError::AuthzidMismatch);
    }
    Ok(Credentials {
        login: login.to_string(),
        password: password.to_string(),
    })
}

/// The LOGIN mechanism's two prompts, base64 of "Username:" and "Password:".
pub const LOGIN_USERNAME_CHALLENGE: &str = "VXNlcm5hbWU6";
pub const LOGIN_PASSWORD_CHALLENGE: &str = "UGFzc3dvcmQ6";

/// Decode one LOGIN response (a username or a password) to text.
pub fn decode_login_field(b64: &str) -> Result<String, SaslError> {
    String::from_utf8(decode_base64(b64)?).map_err(|_| SaslError::Utf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_variants() {
        let c = decode_plain(&encode_base64(b"\0alice@localhost\0pw")).unwrap();
        assert_eq!(c.login, "alice@localhost");
        assert_eq!(c.password, "pw");
        let c = decode_plain(&encode_base64(b"alice@localhost\0alice@localhost\0pw")).unwrap();
        assert_eq!(c.login, "alice@localhost");
        assert_eq!(
            decode_plain(&encode_base64(b"bob@localhost\0alice@localhost\0pw")),
            Err(SaslError::AuthzidMismatch)
        );
        assert_eq!(decode_plain("!!!"), Err(SaslError::Base64));
        assert_eq!(decode_plain("*"), Err(SaslError::Cancelled));
        assert_eq!(
            decode_plain(&encode_base64(b"no-nuls")),
            Err(SaslError::MalformedPlain)
        );
        assert_eq!(
            decode_plain(&encode_base64(b"\0\0pw")),
            Err(SaslError::MalformedPlain)
        );
        assert_eq!(
            decode_plain(&encode_base64(b"\0a\0b\0c")),
            Err(SaslError::MalformedPlain)
        );
        assert_eq!(
            decode_plain(&encode_base64(b"\0\xff\0pw")),
            Err(SaslError::Utf8)
        );
    }

    #[test]
    fn login_fields_and_debug_hides_password() {
        assert_eq!(
            decode_login_field(LOGIN_USERNAME_CHALLENGE).unwrap(),
            "Username:"
        );
        assert_eq!(
            decode_login_field(LOGIN_PASSWORD_CHALLENGE).unwrap(),
            "Password:"
        );
        let c = Credentials {
            login: "a".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
