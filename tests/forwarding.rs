//! Mail that users' Sieve scripts and aliases send on, end to end through an SMTP sink on
//! loopback: forwarding with an SRS sender and bounces routed back, vacation replies.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::dns::FakeDns;
use common::{LineClient, Setup, wait_until};

/// One message as an SMTP sink got it.
#[derive(Debug, Clone, Default)]
struct Received {
    mail_from: String,
    rcpt_to: Vec<String>,
    data: String,
}

/// An SMTP server on loopback that accepts every message, for as long as the test runs.
struct Sink {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Sink {
    fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind sink");
        let port = listener.local_addr().expect("addr").port();
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let store = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let store = store.clone();
                std::thread::spawn(move || sink_session(stream, &store));
            }
        });
        Sink { port, received }
    }

    fn messages(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Waits for the message whose envelope or content matches.
    fn wait_for(&self, what: &str, matches: impl Fn(&Received) -> bool) -> Received {
        wait_until(what, Duration::from_secs(30), || {
            self.messages().into_iter().find(|m| matches(m))
        })
    }
}

fn sink_session(stream: TcpStream, store: &Mutex<Vec<Received>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut w) = stream.try_clone() else {
        return;
    };
    let mut r = BufReader::new(stream);
    let mut current = Received::default();
    let _ = w.write_all(b"220 sink.test ESMTP\r\n");
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            b"250-sink.test\r\n250 8BITMIME\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            current = Received {
                mail_from: between_brackets(&line),
                ..Received::default()
            };
            b"250 ok\r\n"
        } else if upper.starts_with("RCPT TO:") {
            let rcpt = between_brackets(&line);
            if rcpt.starts_with("gone@") {
                b"550 5.1.1 no such user here\r\n"
            } else {
                current.rcpt_to.push(rcpt);
                b"250 ok\r\n"
            }
        } else if upper.starts_with("DATA") {
            let _ = w.write_all(b"354 go on\r\n");
            loop {
                let mut l = String::new();
                if r.read_line(&mut l).unwrap_or(0) == 0 {
                    return;
                }
                if l == ".\r\n" {
                    break;
                }
                current.data.push_str(&l);
            }
            if let Ok(mut s) = store.lock() {
                s.push(std::mem::take(&mut current));
            }
            b"250 2.0.0 taken\r\n"
        } else if upper.starts_with("QUIT") {
            let _ = w.write_all(b"221 bye\r\n");
            return;
        } else {
            b"250 ok\r\n"
        };
        if w.write_all(reply).is_err() {
            return;
        }
    }
}

fn between_brackets(line: &str) -> String {
    match (line.find('<'), line.find('>')) {
        (Some(a), Some(b)) if a < b => line[a + 1..b].to_string(),
        _ => String::new(),
    }
}

/// hermod with remote mail going to `sink` (every remote domain's MX is loopback).
fn with_sink(extra_sections: &str) -> (Setup, FakeDns, Sink) {
    let dns = FakeDns::start();
    let sink = Sink::start();
    for domain in ["remote.test", "sender.test", "phone.test"] {
        dns.mx(domain, 10, &format!("mx.{domain}"));
        dns.a(&format!("mx.{domain}"), std::net::Ipv4Addr::LOCALHOST);
    }
    let s = Setup::new(
        "",
        &format!(
            "[dns]\nnameservers = [\"{}\"]\n[delivery]\nremote_port = {}\nminimal_backoff_time = 1\nmaximal_backoff_time = 2\n{extra_sections}",
            dns.addr, sink.port
        ),
    );
    (s, dns, sink)
}

/// One message over SMTP (port 25 role) from `from` to `to`.
fn smtp_send(port: u16, from: &str, to: &str, data: &str) {
    let mut c = LineClient::connect(port);
    assert_eq!(c.reply().expect("greeting").0, 220);
    c.command("EHLO client.test", 250);
    c.command(&format!("MAIL FROM:<{from}>"), 250);
    c.command(&format!("RCPT TO:<{to}>"), 250);
    c.command("DATA", 354);
    c.send(data.replace('\n', "\r\n").as_bytes());
    c.command("\r\n.", 250);
    c.command("QUIT", 221);
}

#[test]
fn forwarding_rewrites_the_sender_with_srs_and_a_bounce_goes_back() {
    let (s, _dns, sink) = with_sink("");
    s.add_user("alice@localhost", "pw");
    let out = s.cli(
        &["alias", "add", "fwd@localhost", "friend@remote.test"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _server = s.start("serve", s.ports.smtp);

    smtp_send(
        s.ports.smtp,
        "bob@sender.test",
        "fwd@localhost",
        "From: bob@sender.test\nTo: fwd@localhost\nSubject: forward me\n\nhello\n",
    );
    let forwarded = sink.wait_for("the forwarded copy", |m| {
        m.rcpt_to.contains(&"friend@remote.test".to_string())
    });
    // The sender is ours now: SRS0=hash=stamp=sender.test=bob@localhost.
    let srs = forwarded.mail_from.clone();
    assert!(srs.starts_with("SRS0="), "{srs}");
    assert!(srs.ends_with("=sender.test=bob@localhost"), "{srs}");
    assert!(forwarded.data.contains("Subject: forward me"));

    // The destination bounces it: to the SRS address, which goes back to bob.
    smtp_send(
        s.ports.smtp,
        "",
        &srs,
        "From: MAILER-DAEMON@remote.test\nTo: SRS\nSubject: Undelivered Mail\n\nfriend is gone\n",
    );
    let bounce = sink.wait_for("the bounce at the original sender", |m| {
        m.rcpt_to.contains(&"bob@sender.test".to_string())
    });
    assert_eq!(bounce.mail_from, "", "a bounce keeps the null sender");
    assert!(bounce.data.contains("friend is gone"));

    // The destination refuses the forward at RCPT: hermod's own bounce goes to the SRS
    // address, and from there to bob.
    let out = s.cli(&["alias", "add", "old@localhost", "gone@remote.test"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    smtp_send(
        s.ports.smtp,
        "bob@sender.test",
        "old@localhost",
        "From: bob@sender.test\nTo: old@localhost\nSubject: to a gone address\n\nhello\n",
    );
    let dsn = sink.wait_for("hermod's bounce at the original sender", |m| {
        m.rcpt_to.contains(&"bob@sender.test".to_string()) && m.data.contains("gone@remote.test")
    });
    assert_eq!(dsn.mail_from, "");

    // A forged or mangled SRS address is refused at RCPT.
    let mut c = LineClient::connect(s.ports.smtp);
    assert_eq!(c.reply().expect("greeting").0, 220);
    c.command("EHLO client.test", 250);
    c.command("MAIL FROM:<>", 250);
    let forged = srs.replace("=bob@", "=mallory@");
    c.command(&format!("RCPT TO:<{forged}>"), 550);
    c.command("RCPT TO:<SRS0=xxxx=AA=sender.test=bob@localhost>", 550);
    c.command("QUIT", 221);
}

/// A message to alice from `from` with an optional extra header line.
fn to_alice(from: &str, subject: &str, extra: &str) -> String {
    format!(
        "From: {from}\nTo: Alice <alice@localhost>\nSubject: {subject}\nMessage-ID: <{subject}@sender.test>\n{extra}\nbody of {subject}\n"
    )
}

fn put_script(s: &Setup, script: &str) {
    let out = s.cli(
        &["sieve", "put", "alice@localhost", "main", "--activate"],
        Some(script),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn vacation_replies_once_per_sender_and_never_to_lists_or_bounces() {
    let (s, _dns, sink) = with_sink("");
    s.add_user("alice@localhost", "pw");
    put_script(
        &s,
        "require \"vacation\";\nvacation :days 1 :subject \"Away\" \"I am away until Monday.\";\n",
    );
    let server = s.start("serve", s.ports.smtp);
    let port = s.ports.smtp;
    let replies_to = |who: &str| {
        sink.messages()
            .into_iter()
            .filter(|m| m.rcpt_to.iter().any(|r| r == who))
            .count()
    };

    smtp_send(
        port,
        "bob@sender.test",
        "alice@localhost",
        &to_alice("bob@sender.test", "first", ""),
    );
    let reply = sink.wait_for("the vacation reply", |m| {
        m.rcpt_to == ["bob@sender.test".to_string()]
    });
    assert_eq!(reply.mail_from, "", "auto-replies come from <>");
    for expected in [
        "Auto-Submitted: auto-replied",
        "Subject: Away",
        "In-Reply-To: <first@sender.test>",
        "From: alice@localhost",
        "I am away until Monday.",
    ] {
        assert!(
            reply.data.contains(expected),
            "{expected:?} in {}",
            reply.data
        );
    }

    // The same sender again: no second reply within the period.
    smtp_send(
        port,
        "bob@sender.test",
        "alice@localhost",
        &to_alice("bob@sender.test", "second", ""),
    );
    wait_until(
        "the second message skipped",
        Duration::from_secs(30),
        || server.log().contains("already replied").then_some(()),
    );
    // A mailing list, a bulk message, an auto-reply and a bounce get none either.
    let cases = [
        (
            "list@sender.test",
            "List-Id: <news.sender.test>",
            "mailing list",
        ),
        ("bulk@sender.test", "Precedence: bulk", "Precedence"),
        (
            "robot@sender.test",
            "Auto-Submitted: auto-replied",
            "auto-submitted",
        ),
        ("", "", "null sender"),
    ];
    for (i, (from, header, logged)) in cases.iter().enumerate() {
        smtp_send(
            port,
            from,
            "alice@localhost",
            &to_alice("x@sender.test", &format!("case{i}"), header),
        );
        wait_until(
            &format!("no reply: {logged}"),
            Duration::from_secs(30),
            || server.log().contains(logged).then_some(()),
        );
    }
    // A new sender after all of them gets a reply: the queue has passed them all.
    smtp_send(
        port,
        "dave@sender.test",
        "alice@localhost",
        &to_alice("dave@sender.test", "third", ""),
    );
    sink.wait_for("the reply to dave", |m| {
        m.rcpt_to == ["dave@sender.test".to_string()]
    });
    assert_eq!(replies_to("bob@sender.test"), 1);
    for who in [
        "list@sender.test",
        "bulk@sender.test",
        "robot@sender.test",
        "x@sender.test",
    ] {
        assert_eq!(replies_to(who), 0, "{who}");
    }
}

#[test]
fn sieve_redirect_goes_out_with_an_srs_sender_and_a_loop_marker() {
    let (s, _dns, sink) = with_sink("");
    s.add_user("alice@localhost", "pw");
    put_script(&s, "require \"copy\";\nredirect :copy \"me@phone.test\";\n");
    let _server = s.start("serve", s.ports.smtp);
    smtp_send(
        s.ports.smtp,
        "bob@sender.test",
        "alice@localhost",
        &to_alice("bob@sender.test", "redirected", ""),
    );
    let copy = sink.wait_for("the redirected copy", |m| {
        m.rcpt_to == ["me@phone.test".to_string()]
    });
    assert!(copy.mail_from.starts_with("SRS0="), "{}", copy.mail_from);
    assert!(
        copy.mail_from.ends_with("=sender.test=bob@localhost"),
        "{}",
        copy.mail_from
    );
    assert!(
        copy.data.starts_with("Delivered-To: alice@localhost\r\n"),
        "{}",
        copy.data
    );
    assert!(copy.data.contains("Subject: redirected"));
    // :copy keeps the message in INBOX too.
    wait_until("the kept copy", Duration::from_secs(30), || {
        (common::maildir_messages(&s.data_dir(), "localhost", "alice").len() == 1).then_some(())
    });
}
