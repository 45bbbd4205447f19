//! CAPABILITY (RFC 3501 section 6.1.1): what this server offers, which depends on the state.

use crate::output::Out;
use crate::session::{Reply, Session};

impl Session {
    /// The capability list for the current state. Only what works is listed: LOGINDISABLED
    /// and no AUTH=PLAIN before TLS unless plaintext logins are allowed.
    pub(crate) fn capabilities(&self) -> String {
        let mut caps = vec![
            "IMAP4rev1",
            "IMAP4rev2",
            "SASL-IR",
            "LITERAL+",
            "ID",
            "ENABLE",
            "IDLE",
        ];
        let may_login = self.tls || self.shared.settings.allow_plaintext_auth;
        if self.account.is_none() {
            if !self.tls && self.shared.tls.is_some() {
                caps.push("STARTTLS");
            }
            if may_login {
                caps.push("AUTH=PLAIN");
            } else {
                caps.push("LOGINDISABLED");
            }
        } else {
            caps.extend([
                "NAMESPACE",
                "UIDPLUS",
                "MULTIAPPEND",
                "CATENATE",
                "MOVE",
                "UNSELECT",
                "CHILDREN",
                "SPECIAL-USE",
                "CREATE-SPECIAL-USE",
                "LIST-EXTENDED",
                "LIST-STATUS",
                "STATUS=SIZE",
                "CONDSTORE",
                "QRESYNC",
                "ESEARCH",
                "ESORT",
                "CONTEXT=SEARCH",
                "CONTEXT=SORT",
                "PARTIAL",
                "SORT",
                "SORT=DISPLAY",
                "THREAD=REFERENCES",
                "THREAD=ORDEREDSUBJECT",
                "QUOTA",
                "QUOTA=RES-STORAGE",
                "UTF8=ACCEPT",
                "BINARY",
                "SEARCHRES",
                "OBJECTID",
                "SAVEDATE",
                crate::uidonly::CAPABILITY,
            ]);
            if self.shared.settings.compress && !self.compressed {
                caps.push("COMPRESS=DEFLATE");
            }
        }
        caps.join(" ")
    }

    /// CAPABILITY.
    pub(crate) fn capability(&mut self, out: &mut Out<'_>) -> Reply {
        out.untagged(&format!("CAPABILITY {}", self.capabilities()));
        Reply::ok("CAPABILITY completed")
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::Harness;

    #[tokio::test]
    async fn plaintext_connection_disables_login() {
        let h = Harness::new().await;
        let mut s = h.session(false);
        let out = h.run(&mut s, "a CAPABILITY\r\n").await;
        assert!(out.contains("LOGINDISABLED"), "{out}");
        assert!(!out.contains("AUTH=PLAIN"), "{out}");
        assert!(out.contains("a OK"), "{out}");
    }

    #[tokio::test]
    async fn tls_connection_offers_plain_and_login_shows_more() {
        let h = Harness::new().await;
        let mut s = h.session(true);
        let out = h.run(&mut s, "a CAPABILITY\r\n").await;
        assert!(
            out.contains("AUTH=PLAIN") && !out.contains("LOGINDISABLED"),
            "{out}"
        );
        assert!(!out.contains("STARTTLS"), "{out}");
        let out = h.login(&mut s).await;
        assert!(
            out.contains("[CAPABILITY IMAP4rev1"),
            "login OK carries capabilities: {out}"
        );
        assert!(
            out.contains("UIDPLUS") && out.contains("MOVE") && out.contains("SPECIAL-USE"),
            "{out}"
        );
    }
}
