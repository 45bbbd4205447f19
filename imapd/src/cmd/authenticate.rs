//! AUTHENTICATE PLAIN (RFC 3501 section 6.2.2, RFC 4616), with SASL-IR (RFC 4959).

use hermod_common::sasl::{self, SaslError};
use imap_codec::imap_types::auth::AuthMechanism;

use crate::output::Out;
use crate::session::{Next, Reply, Session, Waiting};

impl Session {
    pub(crate) async fn authenticate(
        &mut self,
        tag: &str,
        mechanism: &AuthMechanism<'_>,
        initial: Option<&[u8]>,
        out: &mut Out<'_>,
    ) -> Reply {
        if !matches!(mechanism, AuthMechanism::Plain) {
            return Reply::no("Only PLAIN is supported").code("CANNOT");
        }
        if !self.may_send_password() {
            return Reply::no("Plaintext authentication is disabled: use STARTTLS or port 993")
                .code("PRIVACYREQUIRED");
        }
        match initial {
            // imap-codec has decoded the base64 of the initial response already.
            Some(raw) => self.authenticate_plain(sasl::parse_plain(raw)).await,
            None => {
                out.put(b"+ \r\n");
                self.waiting = Waiting::Authenticate {
                    tag: tag.to_string(),
                };
                self.next = Next::Line;
                Reply::pending()
            }
        }
    }

    /// The client's line after the `+` continuation.
    pub(crate) async fn authenticate_response(&mut self, line: &[u8]) -> Reply {
        let Ok(text) = std::str::from_utf8(line) else {
            return Reply::bad("Invalid base64");
        };
        self.authenticate_plain(sasl::decode_plain(text)).await
    }

    async fn authenticate_plain(&mut self, creds: Result<sasl::Credentials, SaslError>) -> Reply {
        match creds {
            Ok(c) => self.log_in(&c.login, &c.password).await,
            Err(SaslError::Cancelled) => Reply::bad("Authentication cancelled"),
            Err(SaslError::AuthzidMismatch) => {
                Reply::no("Authorization identity differs from login").code("AUTHORIZATIONFAILED")
            }
            Err(e) => Reply::bad(format!("Invalid PLAIN response: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use hermod_common::sasl::encode_base64;

    use crate::testing::{Harness, PASSWORD, USER};

    fn plain() -> String {
        encode_base64(format!("\0{USER}\0{PASSWORD}").as_bytes())
    }

    #[tokio::test]
    async fn with_initial_response() {
        let h = Harness::new().await;
        let mut s = h.session(true);
        let out = h
            .run(&mut s, &format!("a AUTHENTICATE PLAIN {}\r\n", plain()))
            .await;
        assert!(out.starts_with("a OK [CAPABILITY IMAP4rev1"), "{out}");
        assert!(s.is_authenticated());
    }

    #[tokio::test]
    async fn thunderbird_style_continuation() {
        let h = Harness::new().await;
        let mut s = h.session(true);
        let out = h
            .run(&mut s, &format!("1 authenticate PLAIN\r\n{}\r\n", plain()))
            .await;
        assert!(out.starts_with("+ \r\n1 OK [CAPABILITY"), "{out}");
    }

    #[tokio::test]
    async fn cancel_and_bad_password() {
        let h = Harness::new().await;
        let mut s = h.session(true);
        let out = h.run(&mut s, "a AUTHENTICATE PLAIN\r\n*\r\n").await;
        assert_eq!(out, "+ \r\na BAD Authentication cancelled\r\n");
        let bad = encode_base64(format!("\0{USER}\0nope").as_bytes());
        let out = h
            .run(&mut s, &format!("b AUTHENTICATE PLAIN {bad}\r\n"))
            .await;
        assert_eq!(out, "b NO [AUTHENTICATIONFAILED] Invalid credentials\r\n");
    }

    #[tokio::test]
    async fn refused_before_tls() {
        let h = Harness::new().await;
        let mut s = h.session(false);
        let out = h
            .run(&mut s, &format!("a AUTHENTICATE PLAIN {}\r\n", plain()))
            .await;
        assert!(out.starts_with("a NO [PRIVACYREQUIRED]"), "{out}");
    }
}
