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

    /// A log sink for one test (the test runs on one thread, so a thread default works).
    #[derive(Clone, Default)]
    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// CR/LF in an ID value (sent as a literal) cannot forge a log line, and a huge value
    /// is cut.
    #[tokio::test]
    async fn id_values_are_escaped_in_the_log() {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let h = Harness::new().await;
        // Another test thread may have met the ID log call first, while no subscriber was
        // set, and cached "never log" for it: recompute with this thread's sink in place.
        tracing::callsite::rebuild_interest_cache();
        let mut s = h.session(false);
        let forged = "x\r\n1999-01-01T00:00:00Z  INFO forged: logged in user=root";
        let huge = "z".repeat(5000);
        let out = h
            .run(
                &mut s,
                &format!(
                    "1 ID (\"name\" {{{}}}\r\n{forged} \"version\" \"{huge}\")\r\n",
                    forged.len()
                ),
            )
            .await;
        assert!(out.ends_with("1 OK ID completed\r\n"), "{out}");
        let log = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let id_lines: Vec<&str> = log.lines().filter(|l| l.contains("client ID")).collect();
        assert_eq!(id_lines.len(), 1, "{log}");
        assert!(!log.lines().any(|l| l.starts_with("1999-01-01")), "{log}");
        assert!(id_lines[0].contains("name=x\\r\\n1999-01-01"), "{log}");
        assert!(id_lines[0].len() < 1000, "{log}");
    }
}
