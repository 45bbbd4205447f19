//! ENABLE (RFC 5161): CONDSTORE, QRESYNC (RFC 7162), UTF8=ACCEPT (RFC 6855), IMAP4rev2
//! (RFC 9051) and UIDONLY (RFC 9586).

use imap_codec::imap_types::extensions::enable::CapabilityEnable;

use crate::output::Out;
use crate::session::{Reply, Session};

impl Session {
    pub(crate) fn enable(&mut self, caps: &[CapabilityEnable<'_>], out: &mut Out<'_>) -> Reply {
        let mut enabled = Vec::new();
        for cap in caps {
            let name = cap.to_string().to_ascii_uppercase();
            match name.as_str() {
                "CONDSTORE" => self.enabled.condstore = true,
                "QRESYNC" => {
                    self.enabled.qresync = true;
                    self.enabled.condstore = true;
                }
                "UTF8=ACCEPT" => self.enabled.utf8 = true,
                crate::uidonly::CAPABILITY => self.enabled.uidonly = true,
                // RFC 9051 section 5.1: IMAP4rev2 names mailboxes in UTF-8, as UTF8=ACCEPT.
                "IMAP4REV2" => {
                    self.enabled.rev2 = true;
                    self.enabled.utf8 = true;
                }
                _ => continue,
            }
            let name = if name == "IMAP4REV2" {
                "IMAP4rev2".to_string()
            } else {
                name
            };
            if !enabled.contains(&name) {
                enabled.push(name);
            }
        }
        out.untagged(format!("ENABLED {}", enabled.join(" ")).trim_end());
        Reply::ok("ENABLE completed")
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::Harness;

    #[tokio::test]
    async fn enables_known_extensions_only() {
        let h = Harness::new().await;
        let mut s = h.session(true);
        h.login(&mut s).await;
        let out = h
            .run(&mut s, "e ENABLE QRESYNC X-UNKNOWN UTF8=ACCEPT\r\n")
            .await;
        assert_eq!(
            out,
            "* ENABLED QRESYNC UTF8=ACCEPT\r\ne OK ENABLE completed\r\n"
        );
        assert!(s.enabled.condstore && s.enabled.qresync && s.enabled.utf8);
    }

    #[tokio::test]
    async fn needs_login() {
        let h = Harness::new().await;
        let mut s = h.session(true);
        let out = h.run(&mut s, "e ENABLE CONDSTORE\r\n").await;
        assert!(out.starts_with("e NO"), "{out}");
    }
}
