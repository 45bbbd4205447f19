//! ID (RFC 2971): clients say who they are; we answer with our name only.

use hermod_common::log_escape::escape_max;
use imap_codec::imap_types::core::{IString, NString};

use crate::output::Out;
use crate::session::{Reply, Session};

impl Session {
    pub(crate) fn id(
        &mut self,
        params: Option<&[(IString<'_>, NString<'_>)]>,
        out: &mut Out<'_>,
    ) -> Reply {
        if let Some(params) = params {
            // Escaped and cut per value: CR/LF in a value must not forge log lines.
            let fields: Vec<String> = params
                .iter()
                .take(30)
                .map(|(k, v)| {
                    let key = escape_max(k.as_ref(), 64);
                    match &v.0 {
                        Some(v) => format!("{key}={}", escape_max(v.as_ref(), 128)),
                        None => format!("{key}=NIL"),
                    }
                })
                .collect();
            tracing::info!(client = %fields.join(", "), "client ID");
        }
        out.untagged("ID (\"name\" \"hermod\" \"vendor\" \"hermod\")");
        Reply::ok("ID completed")
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::Harness;

    #[tokio::test]
    async fn thunderbird_id() {
        let h = Harness::new().await;
        let mut s = h.session(false);
        let out = h
            .run(
                &mut s,
                "1 ID (\"name\" \"Thunderbird\" \"version\" \"153.7\")\r\n",
            )
            .await;
        assert!(out.starts_with("* ID (\"name\" \"hermod\""), "{out}");
        assert!(out.ends_with("1 OK ID completed\r\n"), "{out}");
        let out = h.run(&mut s, "2 ID NIL\r\n").await;
        assert!(out.contains("2 OK"), "{out}");
    }
}
