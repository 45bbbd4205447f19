//! Spam filtering at the end of DATA (`[spam]`): rspamd's verdicts refuse (550), defer (451),
//! file into Junk with rspamd's headers, or deliver to the INBOX; failures of the filter
//! accept (and log) or defer, as configured. A fake rspamd on loopback plays every verdict and
//! failure; Debian's rspamd plays the real one.

mod common;

use std::path::Path;
use std::time::Duration;

use common::fake_http::{Answer, FakeHttp};
use common::rspamd::{GTUBE_ADD_HEADER, GTUBE_REJECT, Rspamd};
use common::{LineClient, Setup, wait_until};

/// Every message file (new and cur) in one folder of a user's Maildir ("" is the INBOX).
fn folder(data_dir: &Path, local: &str, folder: &str) -> Vec<String> {
    let dir = data_dir.join(format!("mail/localhost/{local}/Maildir"));
    let dir = if folder.is_empty() {
        dir
    } else {
        dir.join(format!(".{folder}"))
    };
    ["new", "cur"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(dir.join(d))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| String::from_utf8_lossy(&std::fs::read(e.path()).unwrap_or_default()).to_string())
        .collect()
}

/// Waits (bounded) until hermod's log, read from its stderr by a thread, shows `text`.
fn log_shows(server: &common::Server, text: &str) {
    wait_until(text, Duration::from_secs(10), || {
        server.log().contains(text).then_some(())
    });
}

fn setup(spam: &str) -> Setup {
    let s = Setup::new("", &format!("[spam]\n{spam}\n"));
    s.add_user("bob@localhost", "builder");
    s.add_user("carol@localhost", "pw");
    s
}

/// One message on port 25 from alice@example.net to `rcpts`: the reply to the end of data.
fn send(port: u16, rcpts: &[&str], message: &str) -> (u16, String) {
    let mut c = LineClient::connect(port);
    c.reply().expect("greeting");
    c.command("EHLO client.example.net", 250);
    c.command("MAIL FROM:<alice@example.net>", 250);
    for rcpt in rcpts {
        c.command(&format!("RCPT TO:<{rcpt}>"), 250);
    }
    c.command("DATA", 354);
    c.send(format!("{message}\r\n.\r\n").as_bytes());
    let reply = c.reply().expect("reply to the message");
    c.command("QUIT", 221);
    reply
}

fn message(subject: &str, body: &str) -> String {
    format!(
        "From: alice@example.net\r\nTo: bob@localhost\r\nSubject: {subject}\r\nX-Spam: forged\r\n\r\n{body}\r\n"
    )
}

#[test]
fn rspamd_verdicts_refuse_defer_junk_or_deliver() {
    let rspamd = FakeHttp::start(Answer::Json(
        r#"{"action":"reject","score":20,"required_score":15,"messages":{"smtp_message":"Go away, spammer"}}"#.into(),
    ));
    let s = setup(&format!("rspamd_url = \"{}\"", rspamd.url()));
    let server = s.start("serve", s.ports.smtp);
    let data = s.data_dir();

    // reject: 550 5.7.1 with rspamd's text; the request carries the envelope.
    let (code, text) = send(
        s.ports.smtp,
        &["bob@localhost", "carol@localhost"],
        &message("buy", "now"),
    );
    assert_eq!(code, 550, "{text}");
    assert!(text.starts_with("550 5.7.1 Go away, spammer"), "{text}");
    let request = rspamd.requests().pop().expect("rspamd asked");
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/checkv2")
    );
    assert_eq!(request.header("ip"), Some("127.0.0.1"));
    assert_eq!(request.header("helo"), Some("client.example.net"));
    assert_eq!(request.header("from"), Some("alice@example.net"));
    assert_eq!(
        request.all("rcpt"),
        vec!["bob@localhost", "carol@localhost"]
    );
    assert_eq!(request.header("user"), None);
    let body = String::from_utf8_lossy(&request.body).to_string();
    assert!(
        body.starts_with("Received: from client.example.net"),
        "{body}"
    );
    assert!(
        body.contains("\r\nSubject: buy\r\nX-Spam: forged\r\n\r\nnow\r\n"),
        "{body}"
    );
    let queue_id = request.header("queue-id").expect("queue id").to_string();
    assert!(body.contains(&queue_id), "{body}");

    // soft reject and greylist: 451 4.7.1.
    rspamd.set(Answer::Json(r#"{"action":"soft reject","score":9}"#.into()));
    let (code, text) = send(s.ports.smtp, &["bob@localhost"], &message("later", "x"));
    assert!(code == 451 && text.starts_with("451 4.7.1"), "{text}");
    rspamd.set(Answer::Json(r#"{"action":"greylist","score":5}"#.into()));
    let (code, text) = send(s.ports.smtp, &["bob@localhost"], &message("grey", "x"));
    assert!(code == 451 && text.starts_with("451 4.7.1"), "{text}");

    // add header: rspamd's milter block edits the header; the message goes to Junk.
    rspamd.set(Answer::Json(
        r#"{"action":"add header","score":7.5,"required_score":15,
            "milter":{"add_headers":{"X-Spam":"Yes","X-Spamd-Bar":{"value":"+++++++","order":0}},
                      "remove_headers":{"X-Spam":0}}}"#
            .into(),
    ));
    let (code, text) = send(
        s.ports.smtp,
        &["bob@localhost"],
        &message("junk me", "spam"),
    );
    assert_eq!(code, 250, "{text}");
    let junk = wait_until("the message in Junk", Duration::from_secs(10), || {
        folder(&data, "bob", "Junk").pop()
    });
    assert!(junk.contains("\r\nX-Spam: Yes\r\n"), "{junk}");
    assert!(junk.contains("\r\nX-Spamd-Bar: +++++++\r\n"), "{junk}");
    assert!(!junk.contains("X-Spam: forged"), "{junk}");
    assert!(junk.contains("Subject: junk me"), "{junk}");

    // rewrite subject: Junk, with rspamd's subject.
    rspamd.set(Answer::Json(
        r#"{"action":"rewrite subject","score":8,"subject":"***SPAM*** rewritten"}"#.into(),
    ));
    let (code, text) = send(
        s.ports.smtp,
        &["carol@localhost"],
        &message("rewrite me", "x"),
    );
    assert_eq!(code, 250, "{text}");
    let junk = wait_until("carol's Junk", Duration::from_secs(10), || {
        folder(&data, "carol", "Junk").pop()
    });
    assert!(
        junk.contains("\r\nSubject: ***SPAM*** rewritten\r\n"),
        "{junk}"
    );
    assert!(!junk.contains("rewrite me"), "{junk}");

    // no action: the INBOX, unchanged but for our own fields.
    rspamd.set(Answer::Json(r#"{"action":"no action","score":0.5}"#.into()));
    let (code, text) = send(s.ports.smtp, &["bob@localhost"], &message("hello", "ham"));
    assert_eq!(code, 250, "{text}");
    let inbox = wait_until("the message in the INBOX", Duration::from_secs(10), || {
        folder(&data, "bob", "").pop()
    });
    assert!(
        inbox.contains("Subject: hello\r\nX-Spam: forged\r\n"),
        "{inbox}"
    );
    assert_eq!(folder(&data, "bob", "Junk").len(), 1);

    // Each decision is logged with the filter's name and action.
    log_shows(&server, "accepted as spam: Junk");
    let log = server.log();
    assert!(
        log.contains("filter=\"rspamd\"") || log.contains("filter=rspamd"),
        "{log}"
    );
    assert!(log.contains("refused: 550 5.7.1"), "{log}");
    assert!(log.contains("accepted as spam: Junk"), "{log}");
}

#[test]
fn rspamd_failures_accept_by_default_or_defer() {
    let rspamd = FakeHttp::start(Answer::Garbage);
    let s = setup(&format!(
        "rspamd_url = \"{}\"\nrspamd_timeout = 1",
        rspamd.url()
    ));
    let server = s.start("serve", s.ports.smtp);
    let data = s.data_dir();
    for (n, answer) in [
        Answer::Garbage,
        Answer::Status(500),
        Answer::Json("{\"score\":1}".into()),
        Answer::Silence,
    ]
    .into_iter()
    .enumerate()
    {
        rspamd.set(answer.clone());
        let (code, text) = send(s.ports.smtp, &["bob@localhost"], &message("x", "y"));
        assert_eq!(code, 250, "{answer:?}: {text}");
        wait_until("delivery", Duration::from_secs(10), || {
            (folder(&data, "bob", "").len() == n + 1).then_some(())
        });
    }
    log_shows(&server, "no answer within");
    let log = server.log();
    assert_eq!(
        log.matches("rspamd failed: message accepted unscanned")
            .count(),
        4,
        "{log}"
    );
    assert!(log.contains("no answer within"), "{log}");
    drop(server);

    // rspamd down, and `rspamd_fail = "tempfail"`: 451.
    let port = common::free_port();
    let s = setup(&format!(
        "rspamd_url = \"http://127.0.0.1:{port}\"\nrspamd_fail = \"tempfail\""
    ));
    let server = s.start("serve", s.ports.smtp);
    let (code, text) = send(s.ports.smtp, &["bob@localhost"], &message("x", "y"));
    assert!(code == 451 && text.starts_with("451 4.7.1"), "{text}");
    log_shows(&server, "cannot connect");
}

/// Authenticated submissions are not scanned unless `scan_authenticated` is set; then the
/// request names the user.
#[test]
fn authenticated_mail_is_scanned_only_when_asked() {
    let rspamd = FakeHttp::start(Answer::Json(r#"{"action":"no action"}"#.into()));
    for scan in [false, true] {
        let s = Setup::new(
            "allow_plaintext_auth = true",
            &format!(
                "[spam]\nrspamd_url = \"{}\"\nscan_authenticated = {scan}\n",
                rspamd.url()
            ),
        );
        s.add_user("bob@localhost", "builder");
        let _server = s.start("serve", s.ports.submission);
        let before = rspamd.requests().len();
        let mut c = LineClient::connect(s.ports.submission);
        c.reply().expect("greeting");
        c.command("EHLO laptop", 250);
        let plain = hermod_common::sasl::encode_base64(b"\0bob@localhost\0builder");
        c.command(&format!("AUTH PLAIN {plain}"), 235);
        c.command("MAIL FROM:<bob@localhost>", 250);
        c.command("RCPT TO:<bob@localhost>", 250);
        c.command("DATA", 354);
        c.send(b"Subject: mine\r\n\r\nhi\r\n.\r\n");
        assert_eq!(c.reply().expect("reply").0, 250);
        let requests = rspamd.requests();
        if scan {
            assert_eq!(requests.len(), before + 1);
            assert_eq!(requests[before].header("user"), Some("bob@localhost"));
        } else {
            assert_eq!(requests.len(), before);
        }
    }
}

#[test]
#[ignore = "needs rspamd (Debian package); .ci/run runs it with --ignored"]
fn real_rspamd_rejects_gtube_junks_add_header_and_delivers_ham() {
    common::need(&["rspamd"]);
    let rspamd = Rspamd::start();
    let s = setup(&format!("rspamd_url = \"{}\"", rspamd.url()));
    let server = s.start("serve", s.ports.smtp);
    let data = s.data_dir();

    let (code, text) = send(
        s.ports.smtp,
        &["bob@localhost"],
        &message("gtube", GTUBE_REJECT),
    );
    assert!(
        code == 550 && text.starts_with("550 5.7.1"),
        "{text}\n{}",
        rspamd.log()
    );

    let (code, text) = send(
        s.ports.smtp,
        &["bob@localhost"],
        &message("gtube add header", GTUBE_ADD_HEADER),
    );
    assert_eq!(code, 250, "{text}");
    // (rspamd stops at a GTUBE pattern: its header routines do not run for it.)
    let junk = wait_until("the message in Junk", Duration::from_secs(10), || {
        folder(&data, "bob", "Junk").pop()
    });
    assert!(junk.contains("Subject: gtube add header"), "{junk}");

    let (code, text) = send(
        s.ports.smtp,
        &["bob@localhost"],
        &message("lunch", "Shall we meet for lunch on Friday at noon?"),
    );
    assert_eq!(code, 250, "{text}");
    let inbox = wait_until("the message in the INBOX", Duration::from_secs(10), || {
        folder(&data, "bob", "").pop()
    });
    assert!(inbox.contains("X-Spamd-Result:"), "{inbox}");
    assert!(inbox.contains("Subject: lunch"), "{inbox}");
    assert_eq!(folder(&data, "bob", "Junk").len(), 1);
    let log = server.log();
    assert!(log.contains("refused: 550 5.7.1"), "{log}");

    // The same rspamd as a milter (its proxy worker in milter mode), as Postfix uses it.
    let m = setup(&format!(
        "smtpd_milters = [\"inet:127.0.0.1:{}\"]",
        rspamd.proxy
    ));
    let milter_server = m.start("serve", m.ports.smtp);
    let (code, text) = send(
        m.ports.smtp,
        &["bob@localhost"],
        &message("gtube", GTUBE_REJECT),
    );
    assert!(code >= 500, "{text}\n{}", milter_server.log());
    let (code, text) = send(
        m.ports.smtp,
        &["bob@localhost"],
        &message("lunch", "Shall we meet for lunch on Friday at noon?"),
    );
    assert_eq!(code, 250, "{text}\n{}", milter_server.log());
    let inbox = wait_until(
        "the milter-checked message",
        Duration::from_secs(10),
        || folder(&m.data_dir(), "bob", "").pop(),
    );
    assert!(inbox.contains("Subject: lunch"), "{inbox}");
    drop(milter_server);

    // rspamd down: accepted and logged.
    drop(rspamd);
    let (code, text) = send(s.ports.smtp, &["bob@localhost"], &message("down", "x"));
    assert_eq!(code, 250, "{text}");
    wait_until("the log line", Duration::from_secs(5), || {
        server
            .log()
            .contains("rspamd failed: message accepted unscanned")
            .then_some(())
    });
}

/// An IMAP command over a plain connection: every line up to the tagged reply.
fn imap(c: &mut LineClient, tag: &str, command: &str) -> String {
    c.send(format!("{tag} {command}\r\n").as_bytes());
    let mut all = String::new();
    for _ in 0..1000 {
        let line = c.line();
        assert!(!line.is_empty(), "connection closed after {all}");
        all.push_str(&line);
        if line.starts_with(&format!("{tag} ")) {
            assert!(line.starts_with(&format!("{tag} OK")), "{command}: {all}");
            return all;
        }
    }
    panic!("no tagged reply to {command}: {all}");
}

/// Moving into Junk over IMAP teaches rspamd's controller spam, out of Junk ham; a copy
/// elsewhere or deleting spam (Junk to Trash) teaches nothing.
#[test]
fn moving_into_and_out_of_junk_teaches_rspamd() {
    let controller = FakeHttp::start(Answer::Json(r#"{"success":true}"#.into()));
    let s = Setup::new(
        "allow_plaintext_auth = true",
        &format!(
            "[spam]\nrspamd_controller_url = \"{}\"\nrspamd_password = \"q1\"\n",
            controller.url()
        ),
    );
    s.add_user("bob@localhost", "builder");
    let server = s.start("serve", s.ports.imap);
    for subject in ["first", "second"] {
        let (code, text) = send(s.ports.smtp, &["bob@localhost"], &message(subject, "body"));
        assert_eq!(code, 250, "{text}");
    }
    let data = s.data_dir();
    wait_until("two messages in the INBOX", Duration::from_secs(10), || {
        (folder(&data, "bob", "").len() == 2).then_some(())
    });
    let learnt = |n: usize| {
        wait_until("the learn requests", Duration::from_secs(10), || {
            let requests = controller.requests();
            (requests.len() >= n).then_some(requests)
        })
    };

    let mut c = LineClient::connect(s.ports.imap);
    assert!(c.line().starts_with("* OK"));
    imap(&mut c, "a", "LOGIN bob@localhost builder");
    imap(&mut c, "b", "SELECT INBOX");
    imap(&mut c, "c", "COPY 1 Archive");
    imap(&mut c, "d", "MOVE 1:2 Junk");
    let requests = learnt(2);
    assert_eq!(requests.len(), 2, "the COPY to Archive taught nothing");
    for r in &requests {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/learnspam"));
        assert_eq!(r.header("password"), Some("q1"));
        assert_eq!(r.header("deliver-to"), Some("bob@localhost"));
    }
    let bodies: Vec<String> = requests
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).to_string())
        .collect();
    assert!(
        bodies.iter().any(|b| b.contains("Subject: first")),
        "{bodies:?}"
    );
    assert!(
        bodies.iter().any(|b| b.contains("Subject: second")),
        "{bodies:?}"
    );

    imap(&mut c, "e", "SELECT Junk");
    imap(&mut c, "f", "MOVE 1 Trash");
    imap(&mut c, "g", "MOVE 1 INBOX");
    let requests = learnt(3);
    assert_eq!(requests.len(), 3, "deleting spam taught nothing");
    assert_eq!(requests[2].path, "/learnham");
    // The one left in Junk (delivery order decides which): one of the two learnt as spam.
    assert!(
        requests[..2].iter().any(|r| r.body == requests[2].body),
        "{:?}",
        String::from_utf8_lossy(&requests[2].body)
    );
    imap(&mut c, "h", "LOGOUT");
    log_shows(&server, "learnt as ham");
}

/// Each milter reply through the real binary: header changes, quarantine (Junk), discard
/// (250, nothing delivered), a reject at RCPT, and a milter that is down (default tempfail).
#[test]
fn milter_replies_end_to_end() {
    use common::fake_milter::{FakeMilter, Script, packet};
    let milter = FakeMilter::start();
    let s = setup(&format!(
        "smtpd_milters = [\"inet:127.0.0.1:{}\"]",
        milter.port
    ));
    let server = s.start("serve", s.ports.smtp);
    let data = s.data_dir();

    milter.set(Script {
        at: None,
        eom: vec![
            packet(b'h', b"X-Milter\0checked\0"),
            packet(b'm', b"\0\0\0\x01X-Spam\0\0"),
            packet(b'a', b""),
        ],
    });
    let (code, text) = send(s.ports.smtp, &["bob@localhost"], &message("changed", "x"));
    assert_eq!(code, 250, "{text}");
    let inbox = wait_until("the changed message", Duration::from_secs(10), || {
        folder(&data, "bob", "").pop()
    });
    assert!(inbox.contains("\r\nX-Milter: checked\r\n"), "{inbox}");
    assert!(!inbox.contains("X-Spam: forged"), "{inbox}");

    milter.set(Script {
        at: None,
        eom: vec![packet(b'q', b"suspicious\0"), packet(b'c', b"")],
    });
    let (code, text) = send(s.ports.smtp, &["bob@localhost"], &message("held", "x"));
    assert_eq!(code, 250, "{text}");
    wait_until(
        "the quarantined message in Junk",
        Duration::from_secs(10),
        || folder(&data, "bob", "Junk").pop(),
    );

    milter.set(Script {
        at: None,
        eom: vec![packet(b'd', b"")],
    });
    let (code, text) = send(s.ports.smtp, &["bob@localhost"], &message("dropped", "x"));
    assert_eq!(code, 250, "{text}");
    log_shows(&server, "message discarded by a filter");

    milter.set(Script {
        at: Some((b'R', packet(b'y', b"550 5.1.1 No such user here\0"))),
        eom: vec![],
    });
    let (code, text) = send(s.ports.smtp, &["bob@localhost"], &message("nobody", "x"));
    assert!(
        code == 550 && text.starts_with("550 5.1.1 No such user here"),
        "{text}"
    );

    // Only the first message reached the INBOX (the discarded one never entered the queue).
    milter.set(Script::default());
    let (code, text) = send(s.ports.smtp, &["bob@localhost"], &message("last", "x"));
    assert_eq!(code, 250, "{text}");
    let inbox = wait_until("the last message", Duration::from_secs(10), || {
        let all = folder(&data, "bob", "");
        (all.len() >= 2).then_some(all)
    });
    assert_eq!(inbox.len(), 2, "{inbox:?}");
    assert!(!inbox.iter().any(|m| m.contains("Subject: dropped")));
    drop(server);

    // A milter that is down: Postfix's default action, tempfail.
    let port = common::free_port();
    let down = setup(&format!("smtpd_milters = [\"inet:127.0.0.1:{port}\"]"));
    let _server = down.start("serve", down.ports.smtp);
    let (code, text) = send(down.ports.smtp, &["bob@localhost"], &message("x", "y"));
    assert!(code == 451 && text.starts_with("451 4.7.1"), "{text}");
}
