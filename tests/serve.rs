//! `hermod serve --dev`: starts fast, logs listeners and the certificate fingerprint, reuses
//! its certificate, refuses a busy port clearly, and exits 0 on SIGTERM and SIGINT.

mod common;

use std::time::Duration;

use common::Setup;

fn fingerprint(log: &str) -> String {
    let line = log
        .lines()
        .find(|l| l.contains("TLS certificate (SHA-256)"))
        .unwrap_or_else(|| panic!("no fingerprint line in log:\n{log}"));
    let start = line.find("fingerprint=").expect("fingerprint field") + "fingerprint=".len();
    line[start..]
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn serve_dev_starts_logs_and_stops_cleanly() {
    let s = Setup::new("", "");
    let mut server = s.start("serve", s.ports.imap);
    // `start` waited for "hermod started", which is logged after the listeners and the
    // certificate: those lines are in the log already.
    let log = server.log();
    for port in [
        s.ports.smtp,
        s.ports.submission,
        s.ports.submissions,
        s.ports.imap,
        s.ports.imaps,
        s.ports.pop3,
        s.ports.pop3s,
        s.ports.lmtp,
    ] {
        assert!(
            log.contains(&format!("127.0.0.1:{port}")),
            "port {port} not logged:\n{log}"
        );
    }
    let fp = fingerprint(&log);
    assert_eq!(fp.len(), 95, "SHA-256 as colon hex: {fp}");
    let startup_ms: u64 = log
        .lines()
        .find(|l| l.contains("hermod started"))
        .and_then(|l| l.split("startup_ms=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no startup_ms in log:\n{log}"));
    assert!(startup_ms < 1000, "start-up took {startup_ms} ms");
    let status = server.signal_and_wait("TERM");
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(s.data_dir().join("tls/cert.pem").exists());

    // A second start reuses the certificate; SIGINT also exits 0.
    let mut again = s.start("serve", s.ports.imap);
    assert_eq!(fingerprint(&again.log()), fp);
    let status = again.signal_and_wait("INT");
    assert!(status.success(), "exit status after SIGINT: {status}");
}

#[test]
fn busy_port_is_one_clear_error() {
    let s = Setup::new("", "");
    let _holder = std::net::TcpListener::bind(("127.0.0.1", s.ports.pop3)).expect("hold port");
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--dev", "--config"])
        .arg(&s.config)
        .arg("--data-dir")
        .arg(s.data_dir())
        .output()
        .expect("run hermod");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "pop3: cannot listen on 127.0.0.1:{}",
            s.ports.pop3
        )),
        "{err}"
    );
}

#[test]
fn sighup_reloads_the_certificate_without_stopping() {
    let s = Setup::new("", "");
    let mut server = s.start("serve", s.ports.imaps);
    let pid = server.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !server.log().contains("certificate reloaded") {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload logged:\n{}",
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "hermod exited on SIGHUP"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", s.ports.imaps)).is_ok());
    assert!(server.signal_and_wait("TERM").success());
}

/// SIGTERM in the middle of an SMTP transaction: hermod stops accepting at once, lets the
/// open session finish its message (250) and QUIT, then exits 0; the message is kept.
#[test]
fn sigterm_lets_a_session_in_progress_finish() {
    let s = Setup::new("", "");
    s.add_user("bob@localhost", "builder");
    let mut server = s.start("serve", s.ports.smtp);
    let mut c = common::LineClient::connect(s.ports.smtp);
    assert_eq!(c.reply().expect("greeting").0, 220);
    c.command("EHLO client.test", 250);
    c.command("MAIL FROM:<alice@example.org>", 250);
    c.command("RCPT TO:<bob@localhost>", 250);
    c.command("DATA", 354);
    c.send(b"Subject: finished after SIGTERM\r\n\r\nfirst half\r\n");
    let pid = server.child.id().to_string();
    let signalled = std::time::Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    common::wait_until("the SIGTERM log line", Duration::from_secs(10), || {
        server
            .log()
            .contains("SIGTERM: shutting down")
            .then_some(())
    });
    // No new sessions while the old one finishes.
    common::wait_until("the listener to close", Duration::from_secs(5), || {
        std::net::TcpStream::connect(("127.0.0.1", s.ports.smtp))
            .is_err()
            .then_some(())
    });
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "exited before the session ended"
    );
    c.send(b"second half\r\n.\r\n");
    let (code, text) = c.reply().expect("reply to the data");
    assert_eq!(code, 250, "{text}");
    c.send(b"QUIT\r\n");
    let _ = c.reply();
    let status = common::wait_until("hermod to exit", Duration::from_secs(15), || {
        server.child.try_wait().unwrap()
    });
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "waited for the whole grace time"
    );
    // The acknowledged message is delivered (now, or by the next start from the queue).
    let _again = s.start("serve", s.ports.smtp);
    let stored = common::wait_until(
        "the message in bob's INBOX",
        Duration::from_secs(15),
        || {
            common::maildir_messages(&s.data_dir(), "localhost", "bob")
                .into_iter()
                .find(|m| m.contains("Subject: finished after SIGTERM"))
        },
    );
    assert!(
        stored.ends_with("first half\r\nsecond half\r\n"),
        "{stored:?}"
    );
}
