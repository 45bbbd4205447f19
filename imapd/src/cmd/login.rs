//! LOGIN (RFC 3501 section 6.2.3), and what AUTHENTICATE shares with it: checking the
//! password, opening the user's store, and the OK with the new capabilities.

use hermod_common::directory::User;

use crate::session::{Account, Reply, Session, Sync};

impl Session {
    /// Whether passwords may be sent on this connection.
    pub(crate) fn may_send_password(&self) -> bool {
        self.tls || self.shared.settings.allow_plaintext_auth
    }

    pub(crate) async fn login(&mut self, username: &[u8], password: &[u8]) -> Reply {
        if !self.may_send_password() {
            return Reply::no("Plaintext login is disabled: use STARTTLS or port 993")
                .code("PRIVACYREQUIRED");
        }
        let (Ok(login), Ok(password)) =
            (std::str::from_utf8(username), std::str::from_utf8(password))
        else {
            return Reply::no("Invalid credentials").code("AUTHENTICATIONFAILED");
        };
        self.log_in(login, password).await
    }

    /// Verifies the credentials and opens the user's mail store.
    pub(crate) async fn log_in(&mut self, login: &str, password: &str) -> Reply {
        let user: User = match self.shared.auth.verify(login, password, self.peer).await {
            Ok(Some(u)) => u,
            Ok(None) => {
                return Reply::no("Invalid credentials").code("AUTHENTICATIONFAILED");
            }
            Err(e) => {
                tracing::error!(error = %e, "directory lookup failed");
                return Reply::no("Temporary failure, try again").code("UNAVAILABLE");
            }
        };
        let store = match self.shared.store.user(&user.localpart, &user.domain).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, user = %user.address, "cannot open mail store");
                return Reply::no("Cannot open your mailbox, try again").code("UNAVAILABLE");
            }
        };
        tracing::info!(user = %user.address, tls = self.tls, "logged in");
        self.account = Some(Account {
            user: store,
            address: user.address,
            quota_bytes: user.quota_bytes,
        });
        Reply::ok("Logged in")
            .code(format!("CAPABILITY {}", self.capabilities()))
            .sync(Sync::Skip)
    }
}

#[cfg(test)]
mod tests {
    use crate::session::Settings;
    use crate::testing::{Harness, PASSWORD, USER};

    #[tokio::test]
    async fn refused_in_the_clear() {
        let h = Harness::new().await;
        let mut s = h.session(false);
        let out = h
            .run(&mut s, &format!("a LOGIN {USER} {PASSWORD}\r\n"))
            .await;
        assert!(out.starts_with("a NO [PRIVACYREQUIRED]"), "{out}");
        assert!(!s.is_authenticated());
    }

    #[tokio::test]
    async fn allowed_in_the_clear_by_config() {
        let h = Harness::with_settings(Settings {
            allow_plaintext_auth: true,
            ..Settings::default()
        })
        .await;
        let mut s = h.session(false);
        let out = h
            .run(&mut s, &format!("a LOGIN {USER} {PASSWORD}\r\n"))
            .await;
        assert!(out.starts_with("a OK [CAPABILITY "), "{out}");
    }

    #[tokio::test]
    async fn wrong_password_and_literal_login() {
        let h = Harness::new().await;
        let mut s = h.session(true);
        let out = h.run(&mut s, &format!("a LOGIN {USER} wrong\r\n")).await;
        assert_eq!(out, "a NO [AUTHENTICATIONFAILED] Invalid credentials\r\n");
        let out = h
            .run(
                &mut s,
                &format!("b LOGIN {{{}}}\r\n{USER} \"{PASSWORD}\"\r\n", USER.len()),
            )
            .await;
        assert!(out.starts_with("+ Ready"), "{out}");
        assert!(out.contains("b OK [CAPABILITY"), "{out}");
        let out = h.run(&mut s, "c LOGIN x y\r\n").await;
        assert!(out.starts_with("c BAD"), "{out}");
    }
}
