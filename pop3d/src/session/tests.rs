//! Session tests with an in-memory backend: every command, wrong states, SASL, stuffing.

use std::sync::{Arc, Mutex};

use super::*;

const PLAIN_ALICE: &str = "AGFsaWNlQGV4YW1wbGUub3JnAHNlY3JldA=="; // \0alice@example.org\0secret

/// What the backend was asked to do, for assertions.
#[derive(Debug, Default)]
struct Calls {
    updates: Vec<(Vec<Uid>, Vec<Uid>)>,
    releases: Vec<Vec<Uid>>,
}

struct MockBackend {
    uidvalidity: u32,
    messages: Vec<(Uid, Vec<u8>)>,
    /// UIDs expunged by "another session" after login.
    expunged: Vec<Uid>,
    in_use: bool,
    fail_update: bool,
    calls: Arc<Mutex<Calls>>,
}

impl Backend for MockBackend {
    async fn login(&mut self, login: &str, password: &str) -> Result<LoginOutcome, BackendError> {
        if login == "broken@example.org" {
            return Err(BackendError {
                temporary: true,
                message: "index busy".into(),
            });
        }
        if login != "alice@example.org" || password != "secret" {
            return Ok(LoginOutcome::Rejected);
        }
        if self.in_use {
            return Ok(LoginOutcome::InUse);
        }
        Ok(LoginOutcome::Opened(Listing {
            user: login.to_string(),
            uidvalidity: self.uidvalidity,
            messages: self
                .messages
                .iter()
                .map(|(uid, m)| ListedMessage {
                    uid: *uid,
                    size: transfer::wire_size(m),
                })
                .collect(),
        }))
    }

    async fn retrieve(&mut self, uid: Uid) -> Result<Option<Vec<u8>>, BackendError> {
        if self.expunged.contains(&uid) {
            return Ok(None);
        }
        Ok(self
            .messages
            .iter()
            .find(|(u, _)| *u == uid)
            .map(|(_, m)| m.clone()))
    }

    async fn update(&mut self, retrieved: &[Uid], deleted: &[Uid]) -> Result<(), BackendError> {
        if self.fail_update {
            return Err(BackendError {
                temporary: true,
                message: "disk full".into(),
            });
        }
        let mut calls = self.calls.lock().unwrap();
        calls.updates.push((retrieved.to_vec(), deleted.to_vec()));
        Ok(())
    }

    async fn release(&mut self, retrieved: &[Uid]) {
        self.calls.lock().unwrap().releases.push(retrieved.to_vec());
    }
}

const MSG1: &[u8] = b"From: a@example.org\r\nSubject: one\r\n\r\nHello\r\n";
/// Bare LF line ends and lines starting with dots.
const MSG2: &[u8] = b"From: b@example.org\nSubject: two\n\n.\n..hidden\n.leading dot\nend\n";
/// A body of 8 lines.
const MSG3: &[u8] =
    b"From: c@example.org\r\nSubject: three\r\n\r\nl1\r\nl2\r\nl3\r\nl4\r\nl5\r\nl6\r\nl7\r\nl8\r\n";

struct Harness {
    session: Session<MockBackend>,
    calls: Arc<Mutex<Calls>>,
}

impl Harness {
    fn with(config: SessionConfig, tls: bool, tweak: impl FnOnce(&mut MockBackend)) -> Harness {
        let calls = Arc::new(Mutex::new(Calls::default()));
        let mut backend = MockBackend {
            uidvalidity: 0x5f00_1234,
            messages: vec![(3, MSG1.to_vec()), (7, MSG2.to_vec()), (12, MSG3.to_vec())],
            expunged: Vec::new(),
            in_use: false,
            fail_update: false,
            calls: calls.clone(),
        };
        tweak(&mut backend);
        Harness {
            session: Session::new(config, backend, tls),
            calls,
        }
    }

    /// A session over TLS (auth allowed).
    fn tls() -> Harness {
        Harness::with(config(), true, |_| {})
    }

    /// A plain-text session with the default policy (auth refused before STLS).
    fn plain() -> Harness {
        Harness::with(config(), false, |_| {})
    }

    async fn send(&mut self, line: &str) -> (String, Control) {
        self.send_bytes(line.as_bytes()).await
    }

    async fn send_bytes(&mut self, line: &[u8]) -> (String, Control) {
        let mut out = Vec::new();
        let control = self.session.handle_line(line, &mut out).await;
        (
            String::from_utf8(out).expect("responses are UTF-8"),
            control,
        )
    }

    /// Send and return the response text only.
    async fn r(&mut self, line: &str) -> String {
        self.send(line).await.0
    }

    async fn logged_in() -> Harness {
        let mut h = Harness::tls();
        assert_eq!(
            h.r("USER alice@example.org").await,
            "+OK Send your password\r\n"
        );
        let reply = h.r("PASS secret").await;
        assert!(reply.starts_with("+OK Logged in"), "{reply}");
        h
    }
}

fn config() -> SessionConfig {
    SessionConfig::new("mail.example.org")
}

fn size(m: &[u8]) -> u64 {
    transfer::wire_size(m)
}

#[tokio::test]
async fn greeting_names_the_host() {
    let h = Harness::plain();
    let mut out = Vec::new();
    h.session.greeting(&mut out);
    assert_eq!(out, b"+OK mail.example.org POP3 server ready\r\n");
}

#[tokio::test]
async fn capa_depends_on_tls_and_state() {
    let mut h = Harness::plain();
    let capa = h.r("CAPA").await;
    assert!(capa.starts_with("+OK"));
    assert!(capa.ends_with("\r\n.\r\n"));
    for cap in [
        "TOP",
        "UIDL",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "PIPELINING",
        "STLS",
    ] {
        assert!(capa.contains(&format!("\r\n{cap}\r\n")), "{cap} in {capa}");
    }
    assert!(capa.contains("\r\nIMPLEMENTATION hermod\r\n"));
    assert!(!capa.contains("USER"), "no USER before TLS: {capa}");
    assert!(!capa.contains("SASL"), "no SASL before TLS: {capa}");

    let (reply, control) = h.send("STLS").await;
    assert_eq!(reply, "+OK Begin TLS negotiation\r\n");
    assert_eq!(control, Control::StartTls);
    h.session.tls_started();
    let capa = h.r("CAPA").await;
    assert!(capa.contains("\r\nUSER\r\n"), "{capa}");
    assert!(capa.contains("\r\nSASL PLAIN LOGIN\r\n"), "{capa}");
    assert!(!capa.contains("STLS"), "{capa}");
    assert!(h.r("STLS").await.starts_with("-ERR"));

    let mut h = Harness::logged_in().await;
    let capa = h.r("CAPA").await;
    assert!(capa.contains("\r\nUIDL\r\n"));
    assert!(!capa.contains("USER") && !capa.contains("SASL") && !capa.contains("STLS"));
}

#[tokio::test]
async fn plaintext_login_refused_unless_allowed() {
    let mut h = Harness::plain();
    assert!(
        h.r("USER alice@example.org")
            .await
            .starts_with("-ERR [AUTH] ")
    );
    assert!(h.r("PASS secret").await.starts_with("-ERR [AUTH] "));
    assert!(
        h.r(&format!("AUTH PLAIN {PLAIN_ALICE}"))
            .await
            .starts_with("-ERR [AUTH] ")
    );
    assert!(!h.session.is_logged_in());

    let mut config = config();
    config.allow_plaintext_auth = true;
    let mut h = Harness::with(config, false, |_| {});
    assert!(h.r("CAPA").await.contains("\r\nUSER\r\n"));
    assert!(h.r("USER alice@example.org").await.starts_with("+OK"));
    assert!(h.r("PASS secret").await.starts_with("+OK Logged in"));
}

#[tokio::test]
async fn user_pass_login_and_failures() {
    let mut h = Harness::tls();
    assert_eq!(h.r("PASS secret").await, "-ERR Give USER first\r\n");
    h.r("USER alice@example.org").await;
    assert_eq!(
        h.r("PASS wrong").await,
        "-ERR [AUTH] Authentication failed\r\n"
    );
    // After a failed PASS, USER must be given again.
    assert_eq!(h.r("PASS secret").await, "-ERR Give USER first\r\n");
    h.r("user alice@example.org").await;
    let total = size(MSG1) + size(MSG2) + size(MSG3);
    assert_eq!(
        h.r("pass secret").await,
        format!("+OK Logged in: alice@example.org has 3 messages ({total} octets)\r\n")
    );
    assert!(h.session.is_logged_in());
    assert_eq!(
        h.session.summary().user.as_deref(),
        Some("alice@example.org")
    );
}

#[tokio::test]
async fn in_use_and_backend_errors_keep_authorization_state() {
    let mut h = Harness::with(config(), true, |b| b.in_use = true);
    h.r("USER alice@example.org").await;
    assert_eq!(
        h.r("PASS secret").await,
        "-ERR [IN-USE] The maildrop is in use by another POP3 session\r\n"
    );
    assert!(!h.session.is_logged_in());
    assert_eq!(h.r("STAT").await, "-ERR Log in first\r\n");

    let mut h = Harness::tls();
    h.r("USER broken@example.org").await;
    assert_eq!(
        h.r("PASS x").await,
        "-ERR [SYS/TEMP] Cannot open the maildrop now\r\n"
    );
    let (reply, control) = h.send("QUIT").await;
    assert_eq!(reply, "+OK mail.example.org POP3 server signing off\r\n");
    assert_eq!(control, Control::Close);
}

#[tokio::test]
async fn transaction_commands_need_login_and_auth_commands_need_none() {
    let mut h = Harness::tls();
    for cmd in [
        "STAT", "LIST", "UIDL", "RETR 1", "TOP 1 0", "DELE 1", "NOOP", "RSET",
    ] {
        assert_eq!(h.r(cmd).await, "-ERR Log in first\r\n", "{cmd}");
    }
    let mut h = Harness::logged_in().await;
    for cmd in ["USER bob", "PASS x", "AUTH PLAIN", "STLS"] {
        assert_eq!(h.r(cmd).await, "-ERR Already logged in\r\n", "{cmd}");
    }
    assert!(h.session.is_logged_in());
}

#[tokio::test]
async fn stat_list_uidl() {
    let mut h = Harness::logged_in().await;
    let (s1, s2, s3) = (size(MSG1), size(MSG2), size(MSG3));
    assert_eq!(h.r("STAT").await, format!("+OK 3 {}\r\n", s1 + s2 + s3));
    assert_eq!(
        h.r("LIST").await,
        format!(
            "+OK 3 messages ({} octets)\r\n1 {s1}\r\n2 {s2}\r\n3 {s3}\r\n.\r\n",
            s1 + s2 + s3
        )
    );
    assert_eq!(h.r("LIST 2").await, format!("+OK 2 {s2}\r\n"));
    assert_eq!(h.r("LIST 0").await, "-ERR There is no message 0\r\n");
    assert_eq!(h.r("LIST 4").await, "-ERR There is no message 4\r\n");
    assert_eq!(
        h.r("UIDL").await,
        "+OK Unique-ID listing follows\r\n1 000000035F001234\r\n2 000000075F001234\r\n3 0000000C5F001234\r\n.\r\n"
    );
    assert_eq!(h.r("UIDL 3").await, "+OK 3 0000000C5F001234\r\n");
    assert_eq!(h.r("UIDL 9").await, "-ERR There is no message 9\r\n");
    assert_eq!(h.r("NOOP").await, "+OK\r\n");
}

#[tokio::test]
async fn retr_is_byte_exact_with_crlf_and_stuffing() {
    let mut h = Harness::logged_in().await;
    assert_eq!(
        h.r("RETR 1").await,
        format!(
            "+OK {} octets\r\n{}.\r\n",
            MSG1.len(),
            std::str::from_utf8(MSG1).unwrap()
        )
    );
    let expected_body =
        "From: b@example.org\r\nSubject: two\r\n\r\n..\r\n...hidden\r\n..leading dot\r\nend\r\n";
    assert_eq!(
        h.r("RETR 2").await,
        format!("+OK {} octets\r\n{expected_body}.\r\n", size(MSG2))
    );
    // The size told equals the unstuffed CRLF text the client reconstructs.
    let unstuffed =
        "From: b@example.org\r\nSubject: two\r\n\r\n.\r\n..hidden\r\n.leading dot\r\nend\r\n";
    assert_eq!(size(MSG2), unstuffed.len() as u64);
    assert_eq!(h.session.summary().retrieved, 2);
    h.r("RETR 2").await;
    assert_eq!(h.session.summary().retrieved, 2, "counted once per message");
}

#[tokio::test]
async fn top_zero_and_five_lines() {
    let mut h = Harness::logged_in().await;
    assert_eq!(
        h.r("TOP 3 0").await,
        "+OK Top of message follows\r\nFrom: c@example.org\r\nSubject: three\r\n\r\n.\r\n"
    );
    assert_eq!(
        h.r("TOP 3 5").await,
        "+OK Top of message follows\r\nFrom: c@example.org\r\nSubject: three\r\n\r\nl1\r\nl2\r\nl3\r\nl4\r\nl5\r\n.\r\n"
    );
    assert_eq!(
        h.r("TOP 2 1").await,
        "+OK Top of message follows\r\nFrom: b@example.org\r\nSubject: two\r\n\r\n..\r\n.\r\n"
    );
    assert_eq!(h.r("TOP 4 1").await, "-ERR There is no message 4\r\n");
    assert!(h.r("TOP 1").await.starts_with("-ERR"));
    assert_eq!(h.session.summary().retrieved, 0, "TOP is not a retrieval");
}

#[tokio::test]
async fn dele_rset_and_quit_apply_deletions() {
    let mut h = Harness::logged_in().await;
    let (s1, s2, s3) = (size(MSG1), size(MSG2), size(MSG3));
    assert_eq!(h.r("DELE 2").await, "+OK Message 2 deleted\r\n");
    assert_eq!(h.r("DELE 2").await, "-ERR Message 2 is already deleted\r\n");
    assert_eq!(h.r("RETR 2").await, "-ERR Message 2 is already deleted\r\n");
    assert_eq!(h.r("LIST 2").await, "-ERR Message 2 is already deleted\r\n");
    assert_eq!(h.r("STAT").await, format!("+OK 2 {}\r\n", s1 + s3));
    assert_eq!(
        h.r("LIST").await,
        format!(
            "+OK 2 messages ({} octets)\r\n1 {s1}\r\n3 {s3}\r\n.\r\n",
            s1 + s3
        )
    );
    assert!(!h.r("UIDL").await.contains("\r\n2 "));
    assert_eq!(
        h.r("RSET").await,
        format!("+OK Maildrop has 3 messages ({} octets)\r\n", s1 + s2 + s3)
    );
    assert_eq!(h.r("STAT").await, format!("+OK 3 {}\r\n", s1 + s2 + s3));
    assert!(
        h.calls.lock().unwrap().updates.is_empty(),
        "nothing applied before QUIT"
    );

    h.r("RETR 1").await;
    h.r("RETR 3").await;
    h.r("DELE 3").await;
    h.r("DELE 2").await;
    let (reply, control) = h.send("QUIT").await;
    assert_eq!(
        reply,
        "+OK mail.example.org POP3 server signing off (1 messages left)\r\n"
    );
    assert_eq!(control, Control::Close);
    let summary = h.session.end().await;
    assert_eq!(summary.deleted, 2);
    assert_eq!(summary.retrieved, 2);
    assert!(summary.updated);
    let calls = h.calls.lock().unwrap();
    // Seen only for the retrieved message that stays; deletions in one call.
    assert_eq!(calls.updates, vec![(vec![3], vec![7, 12])]);
    assert!(calls.releases.is_empty());
}

#[tokio::test]
async fn ending_without_quit_deletes_nothing() {
    let mut h = Harness::logged_in().await;
    h.r("RETR 1").await;
    h.r("DELE 1").await;
    h.r("DELE 2").await;
    let summary = h.session.end().await;
    assert_eq!(summary.deleted, 0);
    assert!(!summary.updated);
    let calls = h.calls.lock().unwrap();
    assert!(calls.updates.is_empty());
    assert_eq!(calls.releases, vec![vec![3]], "retrieved still marked seen");
}

#[tokio::test]
async fn failed_update_is_reported() {
    let mut h = Harness::with(config(), true, |b| b.fail_update = true);
    h.r("USER alice@example.org").await;
    h.r("PASS secret").await;
    h.r("DELE 1").await;
    let (reply, control) = h.send("QUIT").await;
    assert_eq!(
        reply,
        "-ERR [SYS/TEMP] Deleted messages were not removed; try again later\r\n"
    );
    assert_eq!(control, Control::Close);
    assert_eq!(h.session.end().await.deleted, 0);
}

#[tokio::test]
async fn message_expunged_by_another_session() {
    let mut h = Harness::with(config(), true, |b| b.expunged = vec![7]);
    h.r("USER alice@example.org").await;
    h.r("PASS secret").await;
    assert_eq!(
        h.r("RETR 2").await,
        "-ERR Message 2 was removed by another session\r\n"
    );
    // Numbers stay stable: message 3 is still message 3.
    assert!(h.r("RETR 3").await.starts_with("+OK"));
}

#[tokio::test]
async fn auth_plain_with_initial_response() {
    let mut h = Harness::tls();
    let reply = h.r(&format!("AUTH PLAIN {PLAIN_ALICE}")).await;
    assert!(reply.starts_with("+OK Logged in"), "{reply}");
    assert!(h.session.is_logged_in());
}

#[tokio::test]
async fn auth_plain_with_continuation() {
    let mut h = Harness::tls();
    assert_eq!(h.r("AUTH PLAIN").await, "+ \r\n");
    let reply = h.r(PLAIN_ALICE).await;
    assert!(reply.starts_with("+OK Logged in"), "{reply}");

    let mut h = Harness::tls();
    assert_eq!(h.r("AUTH PLAIN").await, "+ \r\n");
    assert_eq!(h.r("*").await, "-ERR Authentication cancelled\r\n");
    assert_eq!(h.r("AUTH PLAIN").await, "+ \r\n");
    assert!(
        h.r("!!notbase64")
            .await
            .starts_with("-ERR Invalid SASL response")
    );
    // Wrong password over SASL.
    let wrong = sasl::encode_base64(b"\0alice@example.org\0nope");
    assert_eq!(
        h.r(&format!("AUTH PLAIN {wrong}")).await,
        "-ERR [AUTH] Authentication failed\r\n"
    );
    // An empty initial response ("=") is a malformed PLAIN message.
    assert!(
        h.r("AUTH PLAIN =")
            .await
            .starts_with("-ERR Invalid SASL response")
    );
    assert!(!h.session.is_logged_in());
}

#[tokio::test]
async fn auth_login_and_mechanism_list() {
    let mut h = Harness::tls();
    assert_eq!(
        h.r("AUTH").await,
        "+OK Supported SASL mechanisms follow\r\nPLAIN\r\nLOGIN\r\n.\r\n"
    );
    assert_eq!(
        h.r("AUTH CRAM-MD5").await,
        "-ERR Unsupported authentication mechanism\r\n"
    );
    assert_eq!(h.r("AUTH LOGIN").await, "+ VXNlcm5hbWU6\r\n");
    assert_eq!(
        h.r(&sasl::encode_base64(b"alice@example.org")).await,
        "+ UGFzc3dvcmQ6\r\n"
    );
    let reply = h.r(&sasl::encode_base64(b"secret")).await;
    assert!(reply.starts_with("+OK Logged in"), "{reply}");
}

#[tokio::test]
async fn garbage_and_overlong_lines_then_too_many_errors() {
    let mut h = Harness::tls();
    assert_eq!(h.r("").await, "-ERR Unknown command\r\n");
    assert_eq!(
        h.send_bytes(b"\x16\x03\x01\x02\x00\x01").await.0,
        "-ERR Unknown command\r\n"
    );
    assert_eq!(h.r("HELO there").await, "-ERR Unknown command\r\n");
    assert_eq!(h.r("RETR").await, "-ERR a message number is required\r\n");
    let mut out = Vec::new();
    assert_eq!(h.session.line_too_long(&mut out), Control::Continue);
    assert_eq!(out, b"-ERR Line too long\r\n");
    // The session still works.
    assert!(h.r("CAPA").await.starts_with("+OK"));
    for _ in 0..4 {
        assert_eq!(h.send("XYZZY").await.1, Control::Continue);
    }
    let (reply, control) = h.send("XYZZY").await;
    assert_eq!(reply, "-ERR Too many errors, closing the connection\r\n");
    assert_eq!(control, Control::Close);
}

#[tokio::test]
async fn bad_arguments_in_transaction() {
    let mut h = Harness::logged_in().await;
    assert_eq!(h.r("RETR x").await, "-ERR invalid message number\r\n");
    assert_eq!(h.r("DELE").await, "-ERR a message number is required\r\n");
    assert_eq!(
        h.r("STAT now").await,
        "-ERR this command takes no arguments\r\n"
    );
    assert_eq!(
        h.r("RETR 9999999999").await,
        "-ERR There is no message 9999999999\r\n"
    );
    assert_eq!(
        h.r("RETR 99999999999999999999").await,
        "-ERR invalid message number\r\n"
    );
    assert!(h.session.is_logged_in());
}

#[tokio::test]
async fn too_many_errors_after_login_still_release_the_maildrop() {
    let mut h = Harness::logged_in().await;
    h.r("RETR 1").await;
    h.r("DELE 2").await;
    let mut control = Control::Continue;
    for _ in 0..10 {
        control = h.send("BOGUS").await.1;
        if control == Control::Close {
            break;
        }
    }
    assert_eq!(control, Control::Close);
    let summary = h.session.end().await;
    assert_eq!(summary.deleted, 0);
    let calls = h.calls.lock().unwrap();
    assert!(calls.updates.is_empty(), "no deletion without QUIT");
    assert_eq!(calls.releases, vec![vec![3]]);
}

#[tokio::test]
async fn random_lines_never_break_the_session() {
    // A small deterministic generator: no new dependency for a smoke fuzz.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let words: [&[u8]; 16] = [
        b"USER", b"PASS", b"AUTH", b"STLS", b"CAPA", b"STAT", b"LIST", b"UIDL", b"RETR", b"TOP",
        b"DELE", b"NOOP", b"RSET", b"1", b"0", b"*",
    ];
    for round in 0..200 {
        let mut config = config();
        config.max_errors = usize::MAX;
        let mut h = Harness::with(config, round % 2 == 0, |_| {});
        if round % 3 == 0 {
            h.r("USER alice@example.org").await;
            h.r("PASS secret").await;
        }
        for _ in 0..50 {
            let mut line = Vec::new();
            for _ in 0..(next() % 4) {
                if next() % 3 == 0 {
                    line.extend((0..next() % 8).map(|_| next() as u8));
                } else {
                    line.extend_from_slice(words[(next() % 16) as usize]);
                }
                line.push(b' ');
            }
            if line.starts_with(b"QUIT") {
                continue;
            }
            let mut out = Vec::new();
            let control = h.session.handle_line(&line, &mut out).await;
            assert!(out.ends_with(b"\r\n"), "{line:?} -> {out:?}");
            assert!(
                out.starts_with(b"+OK") || out.starts_with(b"-ERR") || out.starts_with(b"+ "),
                "{line:?} -> {out:?}"
            );
            if control == Control::StartTls {
                h.session.tls_started();
            }
        }
        h.session.end().await;
        assert!(
            h.calls.lock().unwrap().updates.is_empty(),
            "no QUIT, no update"
        );
    }
}
