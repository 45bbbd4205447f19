//! Session tests: a mock backend and the session driven with raw protocol bytes.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::envelope::{DsnReturn, Envelope, QueueId};

#[path = "tests_hostile.rs"]
mod hostile;

fn encode(text: &str) -> String {
    hermod_common::sasl::encode_base64(text.as_bytes())
}

struct MockBackend {
    domains: Vec<&'static str>,
    users: Vec<&'static str>,
    /// (login, password, addresses it may send as)
    accounts: Vec<(&'static str, &'static str, Vec<&'static str>)>,
    stored: Mutex<Vec<(Envelope, Vec<u8>)>>,
    fail_lookups: AtomicBool,
}

impl MockBackend {
    fn new() -> Self {
        MockBackend {
            domains: vec!["example.org", "example.net"],
            users: vec![
                "alice@example.org",
                "bob@example.org",
                "sales@example.org",
                "carol@example.net",
            ],
            accounts: vec![
                (
                    "alice@example.org",
                    "secret",
                    vec!["alice@example.org", "sales@example.org"],
                ),
                ("bob@example.org", "hunter2", vec!["bob@example.org"]),
            ],
            stored: Mutex::new(Vec::new()),
            fail_lookups: AtomicBool::new(false),
        }
    }

    fn stored(&self) -> Vec<(Envelope, Vec<u8>)> {
        self.stored.lock().unwrap().clone()
    }

    fn check(&self) -> Result<(), BackendError> {
        if self.fail_lookups.load(Ordering::SeqCst) {
            Err(BackendError("database is locked".into()))
        } else {
            Ok(())
        }
    }
}

impl LocalDomains for MockBackend {
    async fn is_local_domain(&self, domain: &str) -> Result<bool, BackendError> {
        self.check()?;
        Ok(self.domains.contains(&domain))
    }
}

impl SessionBackend for MockBackend {
    async fn local_recipient_exists(&self, address: &str) -> Result<bool, BackendError> {
        self.check()?;
        Ok(self.users.contains(&address))
    }

    async fn authenticate(
        &self,
        username: &str,
        password: &str,
        _peer: IpAddr,
    ) -> Result<AuthOutcome, BackendError> {
        self.check()?;
        let ok = self
            .accounts
            .iter()
            .any(|(login, pw, _)| *login == username && *pw == password);
        Ok(if ok {
            AuthOutcome::Success {
                user: username.to_string(),
            }
        } else {
            AuthOutcome::Failure
        })
    }

    async fn may_send_as(&self, user: &str, address: &str) -> Result<bool, BackendError> {
        self.check()?;
        Ok(self
            .accounts
            .iter()
            .any(|(login, _, addrs)| *login == user && addrs.contains(&address)))
    }

    async fn enqueue(
        &self,
        _id: &QueueId,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<(), BackendError> {
        self.check()?;
        self.stored
            .lock()
            .unwrap()
            .push((envelope.clone(), message.to_vec()));
        Ok(())
    }
}

struct Client {
    session: Session<MockBackend>,
    backend: Arc<MockBackend>,
    action: Action,
}

impl Client {
    fn with(config: SessionConfig, peer: &str, relay_allowed: bool, tls: bool) -> Self {
        let backend = Arc::new(MockBackend::new());
        let conn = ConnectionInfo {
            peer: peer.parse().unwrap(),
            relay_allowed,
            tls: tls.then(|| "TLSv1.3".to_string()),
        };
        Client {
            session: Session::new(Arc::new(config), conn, backend.clone()),
            backend,
            action: Action::Continue,
        }
    }

    /// An MX session from an outside address.
    fn mx() -> Self {
        Self::with(
            SessionConfig::new(Role::Mx, "mx.example.org"),
            "203.0.113.9",
            false,
            false,
        )
    }

    /// A submission session on 587, TLS already negotiated.
    fn submission_tls() -> Self {
        let mut c = Self::with(
            SessionConfig::new(Role::Submission, "mx.example.org"),
            "198.51.100.4",
            false,
            false,
        );
        c.session.tls_established("TLSv1.3");
        c
    }

    async fn send(&mut self, input: impl AsRef<[u8]>) -> String {
        let mut out = Vec::new();
        self.action = self.session.feed(input.as_ref(), &mut out).await;
        String::from_utf8(out).unwrap()
    }

    /// Sends and returns the reply codes, one per reply (continuation lines skipped).
    async fn codes(&mut self, input: impl AsRef<[u8]>) -> Vec<u16> {
        let out = self.send(input).await;
        reply_codes(&out)
    }

    async fn ehlo(&mut self) {
        let out = self.send("EHLO client.example.net\r\n").await;
        assert!(out.starts_with("250-"), "{out}");
    }

    async fn login(&mut self, user: &str, password: &str) {
        self.ehlo().await;
        let creds = encode(&format!("\0{user}\0{password}"));
        let out = self.send(format!("AUTH PLAIN {creds}\r\n")).await;
        assert!(out.starts_with("235 2.7.0"), "{out}");
    }
}

fn reply_codes(out: &str) -> Vec<u16> {
    out.split("\r\n")
        .filter(|l| l.len() >= 4 && l.as_bytes()[3] == b' ')
        .map(|l| l[..3].parse().unwrap())
        .collect()
}

const MESSAGE: &str = "Subject: hi\r\nFrom: x@example.net\r\n\r\nHello\r\n";

// ---------------------------------------------------------------------------------------------
// Greeting, EHLO, HELO and the simple commands

#[tokio::test]
async fn greeting_names_the_host() {
    let c = Client::mx();
    let mut out = Vec::new();
    c.session.greeting(&mut out);
    assert_eq!(out, b"220 mx.example.org ESMTP hermod\r\n");
}

#[tokio::test]
async fn ehlo_on_mx_offers_starttls_but_not_auth() {
    let mut c = Client::mx();
    let out = c.send("EHLO client.example.net\r\n").await;
    assert!(out.starts_with("250-mx.example.org Hello client.example.net\r\n"));
    for ext in [
        "PIPELINING",
        "SIZE 26214400",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
        "SMTPUTF8",
        "CHUNKING",
        "DSN",
    ] {
        assert!(out.contains(ext), "missing {ext} in {out}");
    }
    assert!(!out.contains("AUTH"));
    assert!(out.ends_with("\r\n") && out.lines().last().unwrap().starts_with("250 "));
}

#[tokio::test]
async fn submission_offers_auth_only_after_tls() {
    let mut c = Client::with(
        SessionConfig::new(Role::Submission, "mx.example.org"),
        "198.51.100.4",
        false,
        false,
    );
    let out = c.send("EHLO me\r\n").await;
    assert!(out.contains("STARTTLS") && !out.contains("AUTH"), "{out}");
    c.session.tls_established("TLSv1.3");
    let out = c.send("EHLO me\r\n").await;
    assert!(out.contains("AUTH PLAIN LOGIN") || out.contains("AUTH LOGIN PLAIN"));
    assert!(!out.contains("STARTTLS"), "{out}");
}

#[tokio::test]
async fn submissions_on_implicit_tls_offers_auth_at_once() {
    let mut c = Client::with(
        SessionConfig::new(Role::Submissions, "mx.example.org"),
        "198.51.100.4",
        false,
        true,
    );
    let out = c.send("EHLO me\r\n").await;
    assert!(out.contains("AUTH ") && !out.contains("STARTTLS"), "{out}");
}

#[tokio::test]
async fn helo_gives_a_plain_greeting() {
    let mut c = Client::mx();
    assert_eq!(c.send("HELO client\r\n").await, "250 mx.example.org\r\n");
    assert_eq!(
        c.codes("MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\n")
            .await,
        [250, 250]
    );
}

#[tokio::test]
async fn simple_commands() {
    let mut c = Client::mx();
    assert_eq!(c.send("NOOP\r\n").await, "250 2.0.0 OK\r\n");
    assert_eq!(c.send("NOOP anything\r\n").await, "250 2.0.0 OK\r\n");
    assert!(c.send("HELP\r\n").await.starts_with("214 2.0.0 "));
    assert!(
        c.send("VRFY alice\r\n")
            .await
            .starts_with("252 2.5.0 Cannot VRFY")
    );
    // VRFY reveals nothing: the same answer for a user that does not exist.
    assert!(
        c.send("VRFY nobody@example.org\r\n")
            .await
            .starts_with("252 2.5.0 Cannot VRFY")
    );
    assert!(c.send("EXPN staff\r\n").await.starts_with("502 5.5.1"));
    assert!(
        c.send("ETRN example.org\r\n")
            .await
            .starts_with("502 5.5.1")
    );
    assert!(c.send("XYZZY\r\n").await.starts_with("500 5.5.2"));
    assert!(c.send("EHLO\r\n").await.starts_with("501 5.5.4"));
    assert_eq!(c.send("QUIT\r\n").await, "221 2.0.0 Bye\r\n");
    assert_eq!(c.action, Action::Close);
}

#[tokio::test]
async fn input_after_quit_is_ignored() {
    let mut c = Client::mx();
    assert_eq!(c.codes("QUIT\r\nNOOP\r\n").await, [221]);
    assert_eq!(c.action, Action::Close);
    assert_eq!(c.send("NOOP\r\n").await, "");
}

#[tokio::test]
async fn timeout_replies_421() {
    let mut c = Client::mx();
    let mut out = Vec::new();
    c.session.timeout(&mut out);
    assert_eq!(out, b"421 4.4.2 Timeout exceeded, closing connection\r\n");
}

// ---------------------------------------------------------------------------------------------
// A whole transaction

#[tokio::test]
async fn mx_accepts_mail_for_a_local_user() {
    let mut c = Client::mx();
    c.ehlo().await;
    assert_eq!(
        c.send("MAIL FROM:<sender@example.net>\r\n").await,
        "250 2.1.0 Sender OK\r\n"
    );
    assert_eq!(
        c.send("RCPT TO:<alice@example.org>\r\n").await,
        "250 2.1.5 Recipient OK\r\n"
    );
    assert_eq!(
        c.send("DATA\r\n").await,
        "354 End data with <CR><LF>.<CR><LF>\r\n"
    );
    assert!(c.session.in_data());
    let out = c.send(format!("{MESSAGE}.\r\n")).await;
    assert!(out.starts_with("250 2.0.0 Ok: queued as "), "{out}");
    assert!(!c.session.in_data());

    let stored = c.backend.stored();
    assert_eq!(stored.len(), 1);
    let (env, msg) = &stored[0];
    assert_eq!(env.sender, "sender@example.net");
    assert_eq!(env.recipients.len(), 1);
    assert_eq!(env.recipients[0].address, "alice@example.org");
    assert!(env.recipients[0].local);
    let msg = String::from_utf8(msg.clone()).unwrap();
    let queue_id = out.trim_end().rsplit(' ').next().unwrap();
    assert!(
        msg.starts_with(
            "Received: from client.example.net ([203.0.113.9])\r\n\tby mx.example.org (hermod) \
             with ESMTP\r\n"
        ),
        "{msg}"
    );
    assert!(msg.contains(&format!("\tid {queue_id}\r\n\tfor <alice@example.org>; ")));
    assert!(msg.ends_with(MESSAGE), "{msg}");
    // The MX adds no Message-ID or Date: only submission does.
    assert!(!msg.contains("Message-ID:") && !msg.contains("\r\nDate:"));
}

#[tokio::test]
async fn a_second_transaction_on_the_same_connection() {
    let mut c = Client::mx();
    c.ehlo().await;
    for _ in 0..2 {
        let codes = c
            .codes(format!(
                "MAIL FROM:<s@example.net>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n{MESSAGE}.\r\n"
            ))
            .await;
        assert_eq!(codes, [250, 250, 354, 250]);
    }
    assert_eq!(c.backend.stored().len(), 2);
}

#[tokio::test]
async fn null_sender_is_accepted_on_mx() {
    let mut c = Client::mx();
    c.ehlo().await;
    assert_eq!(c.codes("MAIL FROM:<>\r\n").await, [250]);
    assert_eq!(c.codes("RCPT TO:<alice@example.org>\r\n").await, [250]);
    c.send(format!("DATA\r\n{MESSAGE}.\r\n")).await;
    assert_eq!(c.backend.stored()[0].0.sender, "");
}

#[tokio::test]
async fn mail_from_postmaster_without_domain_is_not_the_null_sender() {
    let mut c = Client::mx();
    c.ehlo().await;
    assert!(
        c.send("MAIL FROM:<postmaster>\r\n")
            .await
            .starts_with("501 5.1.7")
    );
}

#[tokio::test]
async fn duplicate_recipients_are_stored_once() {
    let mut c = Client::mx();
    c.ehlo().await;
    c.send("MAIL FROM:<s@example.net>\r\nRCPT TO:<alice@example.org>\r\nRCPT TO:<alice@EXAMPLE.org>\r\n")
        .await;
    c.send(format!("DATA\r\n{MESSAGE}.\r\n")).await;
    let stored = c.backend.stored();
    assert_eq!(stored[0].0.recipients.len(), 1);
    // With several recipients the Received header names none of them.
    assert!(String::from_utf8_lossy(&stored[0].1).contains("\tfor <alice@example.org>"));
}

#[tokio::test]
async fn received_header_omits_recipients_when_several() {
    let mut c = Client::mx();
    c.ehlo().await;
    c.send(format!(
        "MAIL FROM:<s@example.net>\r\nRCPT TO:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\n\
         DATA\r\n{MESSAGE}.\r\n"
    ))
    .await;
    let msg = String::from_utf8(c.backend.stored()[0].1.clone()).unwrap();
    assert!(!msg.contains("for <"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// Sequence and syntax errors

#[tokio::test]
async fn sequence_errors_get_503() {
    let mut c = Client::mx();
    assert!(
        c.send("MAIL FROM:<a@example.net>\r\n")
            .await
            .starts_with("503 5.5.1 Send HELO/EHLO first")
    );
    c.ehlo().await;
    assert!(
        c.send("RCPT TO:<alice@example.org>\r\n")
            .await
            .starts_with("503 5.5.1")
    );
    assert!(c.send("DATA\r\n").await.starts_with("503 5.5.1"));
    assert!(c.send("BDAT 0 LAST\r\n").await.starts_with("503 5.5.1"));
    assert_eq!(c.codes("MAIL FROM:<a@example.net>\r\n").await, [250]);
    assert!(
        c.send("MAIL FROM:<a@example.net>\r\n")
            .await
            .starts_with("503 5.5.1 Nested MAIL")
    );
    assert!(
        c.send("DATA\r\n")
            .await
            .starts_with("554 5.5.1 No valid recipients")
    );
    assert!(
        c.send("AUTH PLAIN\r\n")
            .await
            .starts_with("503 5.5.1 Authentication not enabled")
    );
}

#[tokio::test]
async fn rset_ends_the_transaction() {
    let mut c = Client::mx();
    c.ehlo().await;
    c.send("MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\n")
        .await;
    assert_eq!(c.send("RSET\r\n").await, "250 2.0.0 OK\r\n");
    assert!(c.send("DATA\r\n").await.starts_with("503"));
    assert_eq!(c.codes("MAIL FROM:<a@example.net>\r\n").await, [250]);
}

#[tokio::test]
async fn ehlo_resets_the_transaction() {
    let mut c = Client::mx();
    c.ehlo().await;
    c.send("MAIL FROM:<a@example.net>\r\n").await;
    c.ehlo().await;
    assert!(
        c.send("RCPT TO:<alice@example.org>\r\n")
            .await
            .starts_with("503")
    );
}

#[tokio::test]
async fn syntax_errors_get_501() {
    let mut c = Client::mx();
    c.ehlo().await;
    assert!(
        c.send("MAIL FROM:a@example.net\r\n")
            .await
            .starts_with("501 5.5.4 Syntax")
    );
    assert!(c.send("MAIL FROM:<a@>\r\n").await.starts_with("501 5.1.7"));
    assert!(
        c.send("MAIL FROM:<a@example.net.>\r\n")
            .await
            .starts_with("501 5.1.7")
    );
    assert!(
        c.send("MAIL FROM:<a@example.net> SIZE=abc\r\n")
            .await
            .starts_with("501 5.5.4")
    );
    assert!(
        c.send("MAIL FROM:<a@example.net> FOO=BAR\r\n")
            .await
            .starts_with("555 5.5.4 Unsupported parameter FOO=BAR")
    );
    assert!(
        c.send("MAIL FROM:<a@example.net> BODY=BINARYMIME\r\n")
            .await
            .starts_with("555 5.5.4")
    );
    assert_eq!(c.codes("MAIL FROM:<a@example.net>\r\n").await, [250]);
    assert!(c.send("RCPT TO:<>\r\n").await.starts_with("501 5.1.3"));
    assert!(c.send("RCPT TO:alice\r\n").await.starts_with("501 5.5.4"));
    assert!(
        c.send("RCPT TO:<alice@example.org> NOTIFY=SOMETIMES\r\n")
            .await
            .starts_with("501 5.5.4")
    );
}

#[tokio::test]
async fn control_characters_in_a_command_are_refused() {
    let mut c = Client::mx();
    c.ehlo().await;
    assert!(
        c.send("MAIL FROM:<a@example.net>\rRCPT TO:<x@y>\r\n")
            .await
            .starts_with("501 5.5.2")
    );
    assert!(c.send("NOOP \0\r\n").await.starts_with("501 5.5.2"));
}

// ---------------------------------------------------------------------------------------------
// Line handling

#[tokio::test]
async fn bare_lf_command_lines_are_accepted() {
    let mut c = Client::mx();
    let out = c
        .send("EHLO nc\nMAIL FROM:<a@example.net>\nRCPT TO:<alice@example.org>\nDATA\n")
        .await;
    assert_eq!(reply_codes(&out), [250, 250, 250, 354]);
    let out = c.send("Subject: by hand\r\n\r\nhi\r\n.\r\n").await;
    assert!(out.starts_with("250 2.0.0 Ok: queued"), "{out}");
}

#[tokio::test]
async fn commands_split_across_reads_are_reassembled() {
    let mut c = Client::mx();
    assert_eq!(c.send("EH").await, "");
    assert_eq!(c.send("LO cli").await, "");
    assert!(c.send("ent\r\n").await.starts_with("250-"));
    assert_eq!(c.send("NOOP\r").await, "");
    assert_eq!(c.send("\n").await, "250 2.0.0 OK\r\n");
}

#[tokio::test]
async fn overlong_command_line_is_refused_and_its_tail_ignored() {
    let mut c = Client::mx();
    c.ehlo().await;
    // The tail of the long line looks like a command: it must not be executed.
    let long = format!("NOOP {}QUIT\r\n", "A".repeat(MAX_COMMAND_LINE));
    assert_eq!(c.send(long).await, "500 5.5.2 Line too long\r\n");
    assert_eq!(c.action, Action::Continue);
    // The same, split over several reads.
    c.send(format!("NOOP {}", "B".repeat(3000))).await;
    c.send("C".repeat(3000)).await;
    assert_eq!(
        c.send("QUIT\r\nNOOP\r\n").await,
        "500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n"
    );
    // A line of 1000 octets (above RFC 5321's 512 minimum) is fine.
    let ok = format!("NOOP {}\r\n", "D".repeat(1000));
    assert_eq!(c.send(ok).await, "250 2.0.0 OK\r\n");
}

#[tokio::test]
async fn too_many_errors_close_the_session() {
    let mut c = Client::mx();
    let out = c.send("BOGUS\r\n".repeat(12)).await;
    let codes = reply_codes(&out);
    assert_eq!(codes.len(), 11);
    assert!(codes[..10].iter().all(|&c| c == 500));
    assert!(out.ends_with("421 4.7.0 Too many errors, closing connection\r\n"));
    assert_eq!(c.action, Action::Close);
}

// ---------------------------------------------------------------------------------------------
// PIPELINING

#[tokio::test]
async fn pipelined_transaction_in_one_read() {
    let mut c = Client::mx();
    let out = c
        .send(format!(
            "EHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\n\
             RCPT TO:<nobody@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n{MESSAGE}.\r\n\
             QUIT\r\n"
        ))
        .await;
    assert_eq!(reply_codes(&out), [250, 250, 250, 550, 250, 354, 250, 221]);
    assert_eq!(c.action, Action::Close);
    let stored = c.backend.stored();
    assert_eq!(stored[0].0.recipients.len(), 2);
}

#[tokio::test]
async fn pipelined_data_with_no_valid_recipient_is_refused() {
    let mut c = Client::mx();
    c.ehlo().await;
    let out = c
        .send("MAIL FROM:<a@example.net>\r\nRCPT TO:<nobody@example.org>\r\nDATA\r\n")
        .await;
    assert_eq!(reply_codes(&out), [250, 550, 554]);
    assert!(!c.session.in_data());
}

#[tokio::test]
async fn message_split_into_single_bytes() {
    let mut c = Client::mx();
    c.ehlo().await;
    c.send("MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
        .await;
    let body = "Subject: x\r\n\r\n..dot\r\nline\r\n.\r\n";
    let mut out = String::new();
    for b in body.bytes() {
        out.push_str(&c.send([b]).await);
    }
    assert!(out.starts_with("250 2.0.0"), "{out}");
    let msg = String::from_utf8(c.backend.stored()[0].1.clone()).unwrap();
    assert!(msg.ends_with("Subject: x\r\n\r\n.dot\r\nline\r\n"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// DATA: end of data, dot-unstuffing, smuggling

async fn deliver_raw(data: &str) -> (String, Vec<(Envelope, Vec<u8>)>) {
    let mut c = Client::mx();
    c.ehlo().await;
    c.send("MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
        .await;
    let out = c.send(data).await;
    (out, c.backend.stored())
}

/// The stored message without our Received header.
fn body_of(stored: &[(Envelope, Vec<u8>)]) -> String {
    let msg = String::from_utf8(stored[0].1.clone()).unwrap();
    let pos = msg.find("+0000\r\n").unwrap() + 7;
    msg[pos..].to_string()
}

#[tokio::test]
async fn dot_unstuffing_is_exact() {
    let (out, stored) = deliver_raw("..first\r\nmid\r\n...\r\n. x\r\n..\r\n.\r\n").await;
    assert!(out.starts_with("250"), "{out}");
    assert_eq!(body_of(&stored), ".first\r\nmid\r\n..\r\n x\r\n.\r\n");
}

#[tokio::test]
async fn empty_message_ends_at_once() {
    let (out, stored) = deliver_raw(".\r\n").await;
    assert!(out.starts_with("250"), "{out}");
    assert_eq!(body_of(&stored), "");
}

#[tokio::test]
async fn smuggling_with_bare_lf_dot_does_not_end_data() {
    for probe in ["\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n", "\r.\r\n"] {
        let smuggled = format!(
            "Subject: x\r\n\r\nhello{probe}MAIL FROM:<evil@example.net>\r\n\
             RCPT TO:<bob@example.org>\r\nDATA\r\nevil\r\n.\r\n"
        );
        let (out, stored) = deliver_raw(&smuggled).await;
        // Exactly one reply and one message: the smuggled commands stay message text.
        assert_eq!(reply_codes(&out), [250], "probe {probe:?}: {out}");
        assert_eq!(stored.len(), 1, "probe {probe:?}");
        assert_eq!(stored[0].0.recipients.len(), 1);
        let body = body_of(&stored);
        assert!(
            body.contains("MAIL FROM:<evil@example.net>\r\n"),
            "{probe:?}: {body:?}"
        );
        // No bare CR or LF is left in what we queued: later hops cannot be confused either.
        assert!(
            !hermod_mda::spool::line_endings::has_bare_line_ending(&stored[0].1),
            "{probe:?}"
        );
    }
}

#[tokio::test]
async fn bare_line_endings_in_data_are_normalised() {
    let (_, stored) = deliver_raw("Subject: x\n\nline1\nline2\rline3\r\n.\r\n").await;
    assert_eq!(
        body_of(&stored),
        "Subject: x\r\n\r\nline1\r\nline2\r\nline3\r\n"
    );
}

// ---------------------------------------------------------------------------------------------
// SIZE

fn small_mx() -> Client {
    let mut config = SessionConfig::new(Role::Mx, "mx.example.org");
    config.max_message_size = 1000;
    config.max_recipients = 3;
    Client::with(config, "203.0.113.9", false, false)
}

#[tokio::test]
async fn size_is_checked_at_mail() {
    let mut c = small_mx();
    let out = c.send("EHLO c\r\n").await;
    assert!(out.contains("SIZE 1000"));
    assert!(
        c.send("MAIL FROM:<a@example.net> SIZE=1001\r\n")
            .await
            .starts_with("552 5.3.4")
    );
    assert_eq!(
        c.codes("MAIL FROM:<a@example.net> SIZE=1000\r\n").await,
        [250]
    );
}

#[tokio::test]
async fn size_is_checked_during_data_and_the_session_goes_on() {
    let mut c = small_mx();
    c.send("EHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
        .await;
    let big = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(70)).repeat(30);
    assert_eq!(c.send(&big).await, "");
    assert!(c.session.in_data());
    let out = c.send(".\r\n").await;
    assert!(out.starts_with("552 5.3.4"), "{out}");
    assert!(c.backend.stored().is_empty());
    // The transaction is over; a new one works.
    assert_eq!(
        c.codes(format!(
            "MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n{MESSAGE}.\r\n"
        ))
        .await,
        [250, 250, 354, 250]
    );
}

#[tokio::test]
async fn too_many_recipients_get_452() {
    let mut c = small_mx();
    c.send("EHLO c\r\nMAIL FROM:<a@example.net>\r\n").await;
    let out = c
        .send(
            "RCPT TO:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\n\
             RCPT TO:<sales@example.org>\r\nRCPT TO:<carol@example.net>\r\n",
        )
        .await;
    assert_eq!(reply_codes(&out), [250, 250, 250, 452]);
    assert!(out.contains("452 4.5.3 Too many recipients"));
}

// ---------------------------------------------------------------------------------------------
// BDAT (CHUNKING)

#[tokio::test]
async fn bdat_in_chunks() {
    let mut c = Client::mx();
    c.ehlo().await;
    c.send("MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\n")
        .await;
    let first = "Subject: chunked\r\n\r\n";
    let out = c.send(format!("BDAT {}\r\n{first}", first.len())).await;
    assert_eq!(
        out,
        format!("250 2.0.0 {} octets received\r\n", first.len())
    );
    // Content is binary-exact: a line with a lone dot does not end anything.
    let second = ".\r\nrest\r\n";
    let out = c
        .send(format!("BDAT {} LAST\r\n{second}", second.len()))
        .await;
    assert!(out.starts_with("250 2.0.0 Ok: queued"), "{out}");
    assert_eq!(
        body_of(&c.backend.stored()),
        "Subject: chunked\r\n\r\n.\r\nrest\r\n"
    );
}

#[tokio::test]
async fn bdat_chunk_split_across_reads_and_pipelined_commands_after_it() {
    let mut c = Client::mx();
    c.ehlo().await;
    c.send(
        "MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\nBDAT 20 LAST\r\n0123456789",
    )
    .await;
    assert!(c.session.in_data());
    let out = c.send("abcdefghijNOOP\r\n").await;
    assert_eq!(reply_codes(&out), [250, 250]);
    // BDAT content without a final CRLF gets one.
    assert_eq!(body_of(&c.backend.stored()), "0123456789abcdefghij\r\n");
}

#[tokio::test]
async fn bdat_zero_last_ends_the_message() {
    let mut c = Client::mx();
    c.ehlo().await;
    let out = c
        .send(format!(
            "MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\nBDAT {} \r\n{MESSAGE}BDAT 0 LAST\r\n",
            MESSAGE.len()
        ))
        .await;
    assert_eq!(reply_codes(&out), [250, 250, 250, 250]);
    assert!(out.contains("Ok: queued"));
    assert_eq!(body_of(&c.backend.stored()), MESSAGE);
}

#[tokio::test]
async fn refused_bdat_chunk_is_still_consumed() {
    let mut c = Client::mx();
    c.ehlo().await;
    // No MAIL: the 10 octets must be read and dropped, not parsed as commands.
    let out = c.send("BDAT 10 LAST\r\nQUIT\r\nQUITNOOP\r\n").await;
    assert_eq!(reply_codes(&out), [503, 250]);
    assert_eq!(c.action, Action::Continue);
}

#[tokio::test]
async fn bdat_over_the_size_limit() {
    let mut c = small_mx();
    c.send("EHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\n")
        .await;
    let out = c
        .send(format!("BDAT 1200 LAST\r\n{}NOOP\r\n", "y".repeat(1200)))
        .await;
    assert_eq!(reply_codes(&out), [552, 250]);
    assert!(c.backend.stored().is_empty());
    // The refused transaction is gone.
    assert!(c.send("BDAT 0 LAST\r\n").await.starts_with("503"));
}

#[tokio::test]
async fn data_after_bdat_is_a_sequence_error() {
    let mut c = Client::mx();
    c.ehlo().await;
    c.send("MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\nBDAT 3\r\nabc")
        .await;
    assert!(c.send("DATA\r\n").await.starts_with("503 5.5.1"));
}

// ---------------------------------------------------------------------------------------------
// Relay policy

/// Recipients an outside client must never get accepted on port 25 (open relay tricks).
const RELAY_PROBES: &[&str] = &[
    "victim@other.com",
    "victim%other.com@example.org",
    "other.com!victim@example.org",
    "@example.org:victim@other.com",
    "@example.org,@mx.example.org:victim@other.com",
    "\"victim@other.com\"@example.org",
    "\"victim%other.com\"@example.org",
    "victim@other.com@example.org",
    "victim@[192.0.2.1]",
    "victim@[IPv6:2001:db8::1]",
    "alice@example.org.",
    "victim@other.com.",
    "alice@mx.example.org",
    "alice@sub.example.org",
    "alice@example.org.other.com",
    "victim@localhost",
    "victim@127.0.0.1",
    "victim%other.com@EXAMPLE.ORG",
    "victim%other.com",
    "other.com!victim",
    "victim@other.com%example.org",
    "\"other.com!victim\"@example.org",
    "victim:@example.org",
    "alice@[203.0.113.1]",
    "victim@exaMple.org.",
];

#[tokio::test]
async fn mx_refuses_every_relay_trick() {
    assert!(RELAY_PROBES.len() >= 20);
    for probe in RELAY_PROBES {
        let mut c = Client::mx();
        c.ehlo().await;
        c.send("MAIL FROM:<spammer@other.com>\r\n").await;
        let out = c.send(format!("RCPT TO:<{probe}>\r\n")).await;
        let code = reply_codes(&out)[0];
        assert!(code >= 500, "{probe} got {out}");
        let out = c.send("DATA\r\n").await;
        assert!(out.starts_with("554"), "{probe}: DATA got {out}");
    }
}

#[tokio::test]
async fn relay_probe_replies_are_specific() {
    let mut c = Client::mx();
    c.ehlo().await;
    c.send("MAIL FROM:<s@other.com>\r\n").await;
    assert_eq!(
        c.send("RCPT TO:<victim@other.com>\r\n").await,
        "554 5.7.1 Relay access denied\r\n"
    );
    assert_eq!(
        c.send("RCPT TO:<victim%other.com@example.org>\r\n").await,
        "554 5.7.1 Relay access denied\r\n"
    );
    assert_eq!(
        c.send("RCPT TO:<nobody@example.org>\r\n").await,
        "550 5.1.1 User unknown in local recipient table\r\n"
    );
}

#[tokio::test]
async fn mx_accepts_local_users_postmaster_and_domain_case_variants() {
    let mut c = Client::mx();
    c.ehlo().await;
    c.send("MAIL FROM:<s@other.com>\r\n").await;
    for rcpt in [
        "alice@example.org",
        "alice@EXAMPLE.ORG",
        "carol@Example.Net",
        "postmaster@example.org",
        "PostMaster@example.net",
        "postmaster",
        "sales@example.org",
    ] {
        assert_eq!(
            c.codes(format!("RCPT TO:<{rcpt}>\r\n")).await,
            [250],
            "{rcpt}"
        );
    }
    c.send(format!("DATA\r\n{MESSAGE}.\r\n")).await;
    let addrs: Vec<String> = c.backend.stored()[0]
        .0
        .recipients
        .iter()
        .map(|r| r.address.clone())
        .collect();
    assert_eq!(
        addrs,
        [
            "alice@example.org",
            "carol@example.net",
            "postmaster@example.org",
            "postmaster@example.net",
            "postmaster@mx.example.org",
            "sales@example.org"
        ]
    );
}

#[tokio::test]
async fn mynetworks_clients_may_relay() {
    let mut c = Client::with(
        SessionConfig::new(Role::Mx, "mx.example.org"),
        "10.0.0.5",
        true,
        false,
    );
    c.ehlo().await;
    c.send("MAIL FROM:<app@example.org>\r\n").await;
    assert_eq!(c.codes("RCPT TO:<someone@other.com>\r\n").await, [250]);
    assert_eq!(c.codes("RCPT TO:<alice@example.org>\r\n").await, [250]);
    // Still no routing tricks into local domains, and still valid syntax only.
    assert_eq!(
        c.codes("RCPT TO:<victim%other.com@example.org>\r\n").await,
        [554]
    );
    assert_eq!(c.codes("RCPT TO:<x@other.com.>\r\n").await, [501]);
    c.send(format!("DATA\r\n{MESSAGE}.\r\n")).await;
    let env = &c.backend.stored()[0].0;
    assert!(!env.recipients[0].local);
    assert!(env.recipients[1].local);
}

#[tokio::test]
async fn smtputf8_addresses() {
    let mut c = Client::mx();
    c.ehlo().await;
    assert!(
        c.send("MAIL FROM:<jörg@example.net>\r\n")
            .await
            .starts_with("553 5.6.7")
    );
    assert_eq!(
        c.codes("MAIL FROM:<jörg@bücher.example> SMTPUTF8\r\n")
            .await,
        [250]
    );
    assert_eq!(c.codes("RCPT TO:<alice@example.org>\r\n").await, [250]);
    c.send(format!("DATA\r\n{MESSAGE}.\r\n")).await;
    let env = &c.backend.stored()[0].0;
    assert!(env.smtputf8);
    assert_eq!(env.sender, "jörg@bücher.example");
}

#[tokio::test]
async fn dsn_parameters_are_recorded() {
    let mut c = Client::mx();
    c.ehlo().await;
    let out = c
        .send(
            "MAIL FROM:<a@example.net> RET=HDRS ENVID=QQ314159 BODY=8BITMIME\r\n\
             RCPT TO:<alice@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Alice+40example.org\r\n\
             RCPT TO:<bob@example.org> NOTIFY=NEVER\r\n",
        )
        .await;
    assert_eq!(reply_codes(&out), [250, 250, 250]);
    c.send(format!("DATA\r\n{MESSAGE}.\r\n")).await;
    let env = &c.backend.stored()[0].0;
    assert_eq!(env.ret, Some(DsnReturn::Headers));
    assert_eq!(env.env_id.as_deref(), Some("QQ314159"));
    assert_eq!(env.body, BodyType::EightBitMime);
    let alice = &env.recipients[0];
    assert!(alice.notify.success && alice.notify.failure && !alice.notify.delay);
    assert_eq!(alice.orcpt.as_deref(), Some("rfc822;Alice@example.org"));
    assert!(env.recipients[1].notify.never);
}

#[tokio::test]
async fn backend_failures_are_temporary() {
    let mut c = Client::mx();
    c.ehlo().await;
    c.send("MAIL FROM:<a@example.net>\r\n").await;
    c.backend.fail_lookups.store(true, Ordering::SeqCst);
    assert!(
        c.send("RCPT TO:<alice@example.org>\r\n")
            .await
            .starts_with("451 4.3.0")
    );
    c.backend.fail_lookups.store(false, Ordering::SeqCst);
    c.send("RCPT TO:<alice@example.org>\r\nDATA\r\n").await;
    c.backend.fail_lookups.store(true, Ordering::SeqCst);
    assert!(
        c.send(format!("{MESSAGE}.\r\n"))
            .await
            .starts_with("451 4.3.0")
    );
}

#[tokio::test]
async fn mail_loops_are_refused() {
    let mut c = Client::mx();
    c.ehlo().await;
    c.send("MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
        .await;
    let looping = format!(
        "{}Subject: loop\r\n\r\nx\r\n.\r\n",
        "Received: x\r\n".repeat(50)
    );
    assert!(c.send(looping).await.starts_with("554 5.4.6"));
}

// ---------------------------------------------------------------------------------------------
// STARTTLS

#[tokio::test]
async fn starttls_discards_pipelined_plaintext_and_resets() {
    let mut c = Client::mx();
    c.ehlo().await;
    c.send("MAIL FROM:<a@example.net>\r\n").await;
    let out = c
        .send("STARTTLS\r\nRCPT TO:<victim@other.com>\r\nDATA\r\n")
        .await;
    assert_eq!(out, "220 2.0.0 Ready to start TLS\r\n");
    assert_eq!(c.action, Action::StartTls);
    c.session.tls_established("TLSv1.3");
    // Nothing from before TLS survives: no greeting, no transaction.
    assert!(
        c.send("RCPT TO:<alice@example.org>\r\n")
            .await
            .starts_with("503")
    );
    assert!(
        c.send("MAIL FROM:<a@example.net>\r\n")
            .await
            .starts_with("503 5.5.1 Send HELO/EHLO first")
    );
    let out = c.send("EHLO c\r\n").await;
    assert!(!out.contains("STARTTLS"));
    assert!(c.send("STARTTLS\r\n").await.starts_with("503 5.5.1"));
    c.send("MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\n")
        .await;
    c.send(format!("DATA\r\n{MESSAGE}.\r\n")).await;
    let msg = String::from_utf8(c.backend.stored()[0].1.clone()).unwrap();
    assert!(msg.contains("with ESMTPS (TLSv1.3)"), "{msg}");
}

#[tokio::test]
async fn starttls_without_certificate() {
    let mut config = SessionConfig::new(Role::Mx, "mx.example.org");
    config.tls_available = false;
    let mut c = Client::with(config, "203.0.113.9", false, false);
    let out = c.send("EHLO c\r\n").await;
    assert!(!out.contains("STARTTLS"));
    assert!(c.send("STARTTLS\r\n").await.starts_with("454 4.7.0"));
}

// ---------------------------------------------------------------------------------------------
// Submission and AUTH

#[tokio::test]
async fn submission_requires_tls_then_auth_before_mail() {
    let mut c = Client::with(
        SessionConfig::new(Role::Submission, "mx.example.org"),
        "198.51.100.4",
        false,
        false,
    );
    c.ehlo().await;
    assert_eq!(
        c.send("MAIL FROM:<alice@example.org>\r\n").await,
        "530 5.7.0 Must issue a STARTTLS command first\r\n"
    );
    let creds = encode("\0alice@example.org\0secret");
    assert!(
        c.send(format!("AUTH PLAIN {creds}\r\n"))
            .await
            .starts_with("538 5.7.11")
    );
    c.session.tls_established("TLSv1.3");
    c.ehlo().await;
    assert_eq!(
        c.send("MAIL FROM:<alice@example.org>\r\n").await,
        "530 5.7.0 Authentication required\r\n"
    );
}

#[tokio::test]
async fn auth_plain_with_initial_response() {
    let mut c = Client::submission_tls();
    c.ehlo().await;
    let creds = encode("\0alice@example.org\0secret");
    assert_eq!(
        c.send(format!("AUTH PLAIN {creds}\r\n")).await,
        "235 2.7.0 Authentication successful\r\n"
    );
    assert_eq!(c.session.authenticated_user(), Some("alice@example.org"));
    assert!(
        c.send(format!("AUTH PLAIN {creds}\r\n"))
            .await
            .starts_with("503 5.5.1 Already")
    );
}

#[tokio::test]
async fn auth_plain_with_challenge() {
    let mut c = Client::submission_tls();
    c.ehlo().await;
    assert_eq!(c.send("AUTH PLAIN\r\n").await, "334 \r\n");
    let creds = encode("\0bob@example.org\0hunter2");
    assert!(
        c.send(format!("{creds}\r\n"))
            .await
            .starts_with("235 2.7.0")
    );
}

#[tokio::test]
async fn auth_login() {
    let mut c = Client::submission_tls();
    c.ehlo().await;
    assert_eq!(c.send("AUTH LOGIN\r\n").await, "334 VXNlcm5hbWU6\r\n");
    assert_eq!(
        c.send(format!("{}\r\n", encode("alice@example.org"))).await,
        "334 UGFzc3dvcmQ6\r\n"
    );
    assert!(
        c.send(format!("{}\r\n", encode("secret")))
            .await
            .starts_with("235 2.7.0")
    );
}

#[tokio::test]
async fn auth_login_with_initial_username() {
    let mut c = Client::submission_tls();
    c.ehlo().await;
    let user = encode("bob@example.org");
    assert_eq!(
        c.send(format!("AUTH LOGIN {user}\r\n")).await,
        "334 UGFzc3dvcmQ6\r\n"
    );
    assert!(
        c.send(format!("{}\r\n", encode("hunter2")))
            .await
            .starts_with("235")
    );
}

#[tokio::test]
async fn auth_failures() {
    let mut c = Client::submission_tls();
    c.ehlo().await;
    let wrong = encode("\0alice@example.org\0wrong");
    assert_eq!(
        c.send(format!("AUTH PLAIN {wrong}\r\n")).await,
        "535 5.7.8 Authentication credentials invalid\r\n"
    );
    // Someone else's identity as authzid.
    let proxy = encode("bob@example.org\0alice@example.org\0secret");
    assert!(
        c.send(format!("AUTH PLAIN {proxy}\r\n"))
            .await
            .starts_with("535 5.7.8")
    );
    assert_eq!(c.send("AUTH PLAIN\r\n").await, "334 \r\n");
    assert_eq!(
        c.send("*\r\n").await,
        "501 5.0.0 Authentication cancelled\r\n"
    );
    assert!(
        c.send("AUTH PLAIN !!notbase64\r\n")
            .await
            .starts_with("501 5.5.2")
    );
    assert!(c.send("AUTH CRAM-MD5\r\n").await.starts_with("504 5.5.4"));
    assert_eq!(c.session.authenticated_user(), None);
    assert!(
        c.send("MAIL FROM:<alice@example.org>\r\n")
            .await
            .starts_with("530")
    );
    // After the cancelled exchange the session is back to commands.
    assert_eq!(c.send("NOOP\r\n").await, "250 2.0.0 OK\r\n");
}

#[tokio::test]
async fn auth_backend_failure_is_temporary() {
    let mut c = Client::submission_tls();
    c.ehlo().await;
    c.backend.fail_lookups.store(true, Ordering::SeqCst);
    let creds = encode("\0alice@example.org\0secret");
    assert!(
        c.send(format!("AUTH PLAIN {creds}\r\n"))
            .await
            .starts_with("454 4.7.0")
    );
}

#[tokio::test]
async fn repeated_auth_failures_close_the_session() {
    let mut c = Client::submission_tls();
    c.ehlo().await;
    let wrong = encode("\0alice@example.org\0wrong");
    let out = c.send(format!("AUTH PLAIN {wrong}\r\n").repeat(10)).await;
    assert!(out.ends_with("421 4.7.0 Too many errors, closing connection\r\n"));
    assert_eq!(c.action, Action::Close);
}

#[tokio::test]
async fn submission_sender_must_belong_to_the_user() {
    let mut c = Client::submission_tls();
    c.login("alice@example.org", "secret").await;
    assert_eq!(
        c.send("MAIL FROM:<bob@example.org>\r\n").await,
        "553 5.7.1 Sender address rejected: not owned by user\r\n"
    );
    assert!(c.send("MAIL FROM:<>\r\n").await.starts_with("553 5.7.1"));
    assert!(
        c.send("MAIL FROM:<alice@other.com>\r\n")
            .await
            .starts_with("553 5.7.1")
    );
    // Her alias is fine, and so is her own address with the domain in capitals.
    assert_eq!(c.codes("MAIL FROM:<sales@example.org>\r\n").await, [250]);
    c.send("RSET\r\n").await;
    assert_eq!(c.codes("MAIL FROM:<alice@EXAMPLE.ORG>\r\n").await, [250]);
}

#[tokio::test]
async fn submission_may_send_anywhere_but_not_to_unknown_local_users() {
    let mut c = Client::submission_tls();
    c.login("alice@example.org", "secret").await;
    let out = c
        .send(
            "MAIL FROM:<alice@example.org>\r\nRCPT TO:<friend@other.com>\r\n\
             RCPT TO:<nobody@example.org>\r\nRCPT TO:<bob@example.org>\r\n",
        )
        .await;
    assert_eq!(reply_codes(&out), [250, 250, 550, 250]);
    let out = c.send("DATA\r\nSubject: no id\r\n\r\nhi\r\n.\r\n").await;
    assert!(out.contains("250 2.0.0 Ok: queued"), "{out}");
    let (env, msg) = &c.backend.stored()[0];
    assert_eq!(env.auth_user.as_deref(), Some("alice@example.org"));
    assert!(!env.recipients[0].local && env.recipients[1].local);
    let msg = String::from_utf8(msg.clone()).unwrap();
    assert!(msg.contains("with ESMTPSA"), "{msg}");
    assert!(msg.contains("\r\nMessage-ID: <"), "{msg}");
    assert!(msg.contains("@mx.example.org>\r\n"));
    assert!(msg.contains("\r\nDate: "));
}

#[tokio::test]
async fn submission_keeps_existing_message_id_and_date() {
    let mut c = Client::submission_tls();
    c.login("alice@example.org", "secret").await;
    c.send("MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\n")
        .await;
    c.send(
        "DATA\r\nMessage-ID: <own@example.org>\r\nDATE: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nhi\r\n.\r\n",
    )
    .await;
    let msg = String::from_utf8(c.backend.stored()[0].1.clone()).unwrap();
    assert_eq!(msg.matches("Message-ID:").count(), 1);
    assert_eq!(msg.to_ascii_lowercase().matches("\ndate:").count(), 1);
}

#[tokio::test]
async fn auth_is_refused_during_a_transaction() {
    let mut c = Client::submission_tls();
    c.login("alice@example.org", "secret").await;
    c.send("MAIL FROM:<alice@example.org>\r\n").await;
    // Already authenticated wins, but either way it is a 503.
    assert!(c.send("AUTH LOGIN\r\n").await.starts_with("503 5.5.1"));
}

#[tokio::test]
async fn plaintext_auth_only_when_the_admin_allows_it() {
    let mut config = SessionConfig::new(Role::Submission, "mx.example.org");
    config.allow_plaintext_auth = true;
    let mut c = Client::with(config, "198.51.100.4", false, false);
    let out = c.send("EHLO me\r\n").await;
    assert!(out.contains("AUTH ") && out.contains("STARTTLS"), "{out}");
    c.login("bob@example.org", "hunter2").await;
    assert_eq!(c.codes("MAIL FROM:<bob@example.org>\r\n").await, [250]);
}

#[tokio::test]
async fn line_limit_is_configurable() {
    let mut config = SessionConfig::new(Role::Mx, "mx.example.org");
    config.max_line_length = 512;
    let mut c = Client::with(config, "203.0.113.9", false, false);
    assert_eq!(
        c.send(format!("NOOP {}\r\n", "x".repeat(505))).await,
        "250 2.0.0 OK\r\n"
    );
    assert!(
        c.send(format!("NOOP {}\r\n", "x".repeat(506)))
            .await
            .starts_with("500 5.5.2")
    );
}
