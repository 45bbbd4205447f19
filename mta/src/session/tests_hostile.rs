//! Session tests for hostile input: internal address literals, big messages spooled to disk.

use super::*;

/// smtp-proto refuses a bare `[` in a path, but takes a quoted domain and removes the quotes:
/// `x@"[10.0.0.5]"` reaches the session as `x@[10.0.0.5]`. Both spellings are tried.
fn spellings(address: &str) -> [String; 2] {
    let (local, domain) = address.rsplit_once('@').unwrap();
    [address.to_string(), format!("{local}@\"{domain}\"")]
}

#[tokio::test]
async fn internal_address_literal_senders_are_refused_from_outside() {
    for sender in [
        "x@[10.0.0.5]",
        "x@[127.0.0.1]",
        "x@[192.168.0.1]",
        "x@[169.254.169.254]",
        "x@[100.64.1.1]",
        "x@[IPv6:::1]",
        "x@[IPv6:fd00::1]",
        "x@[IPv6:::ffff:10.0.0.5]",
    ] {
        for sender in spellings(sender) {
            let mut c = Client::mx();
            c.ehlo().await;
            let out = c.send(format!("MAIL FROM:<{sender}> RET=FULL\r\n")).await;
            assert!(
                out.starts_with("553 5.1.8") || out.starts_with("501 5.1.7"),
                "{sender}: {out}"
            );
            // No transaction was opened: nothing can be queued, so no report can follow.
            assert_eq!(c.codes("RCPT TO:<postmaster>\r\n").await, [503]);
        }
        let mut c = Client::mx();
        c.ehlo().await;
        let quoted = &spellings(sender)[1];
        let out = c.send(format!("MAIL FROM:<{quoted}>\r\n")).await;
        assert!(out.starts_with("553 5.1.8"), "{quoted}: {out}");
    }
    // A public literal stays a valid sender (RFC 5321 4.1.3).
    let mut c = Client::mx();
    c.ehlo().await;
    assert_eq!(c.codes("MAIL FROM:<x@\"[192.0.43.8]\">\r\n").await, [250]);
}

#[tokio::test]
async fn internal_address_literal_recipients_are_refused_even_after_auth() {
    let mut c = Client::submission_tls();
    c.login("alice@example.org", "secret").await;
    c.send("MAIL FROM:<alice@example.org>\r\n").await;
    for rcpt in [
        "x@[10.0.0.5]",
        "x@[127.0.0.1]",
        "x@[IPv6:fe80::1]",
        "x@[0.0.0.0]",
    ] {
        let quoted = &spellings(rcpt)[1];
        let out = c
            .send(format!("RCPT TO:<{quoted}> NOTIFY=SUCCESS\r\n"))
            .await;
        assert!(out.starts_with("550 5.7.1"), "{quoted}: {out}");
    }
    assert_eq!(c.codes("RCPT TO:<x@\"[192.0.43.8]\">\r\n").await, [250]);
}

#[tokio::test]
async fn mynetworks_clients_may_use_internal_literals() {
    let mut c = Client::with(
        SessionConfig::new(Role::Mx, "mx.example.org"),
        "10.0.0.7",
        true,
        false,
    );
    c.ehlo().await;
    assert_eq!(c.codes("MAIL FROM:<app@\"[10.0.0.7]\">\r\n").await, [250]);
    assert_eq!(c.codes("RCPT TO:<ops@\"[10.0.0.5]\">\r\n").await, [250]);
}

fn spooling_mx(dir: &std::path::Path) -> Client {
    let mut config = SessionConfig::new(Role::Mx, "mx.example.org");
    config.spool_dir = Some(dir.to_path_buf());
    Client::with(config, "203.0.113.9", false, false)
}

fn big_message(lines: usize) -> String {
    let mut message = String::from("Subject: big\r\nFrom: x@example.net\r\n\r\n");
    for i in 0..lines {
        message.push_str(&format!("line {i:08} {}\r\n", "y".repeat(60)));
    }
    message
}

#[tokio::test]
async fn big_data_is_spooled_and_stored_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = spooling_mx(dir.path());
    c.send("EHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
        .await;
    let message = big_message(20_000);
    assert!(message.len() > 4 * spool::SPOOL_THRESHOLD);
    for chunk in message.as_bytes().chunks(64 * 1024) {
        assert_eq!(c.send(chunk).await, "");
    }
    // While the message arrives, most of it is on disk, not in the session.
    let spooled: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(spooled.len(), 1, "one spool file while the message arrives");
    let out = c.send(".\r\n").await;
    assert!(out.starts_with("250 2.0.0"), "{out}");
    let stored = c.backend.stored();
    let body = String::from_utf8(stored[0].1.clone()).unwrap();
    assert!(body.starts_with("Received: from c"), "{}", &body[..100]);
    assert!(body.ends_with(&message), "content changed");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "spool file removed once stored"
    );
}

#[tokio::test]
async fn big_bdat_is_spooled_and_a_refused_one_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = spooling_mx(dir.path());
    c.send("EHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\n")
        .await;
    let message = big_message(10_000);
    let (first, second) = message.as_bytes().split_at(message.len() / 2);
    let out = c
        .send([format!("BDAT {}\r\n", first.len()).as_bytes(), first].concat())
        .await;
    assert!(out.starts_with("250"), "{out}");
    let out = c
        .send([format!("BDAT {} LAST\r\n", second.len()).as_bytes(), second].concat())
        .await;
    assert!(out.starts_with("250 2.0.0"), "{out}");
    let body = String::from_utf8(c.backend.stored()[0].1.clone()).unwrap();
    assert!(body.ends_with(&message));
    // Over the size limit while spooling: refused, and the file is gone.
    let mut config = SessionConfig::new(Role::Mx, "mx.example.org");
    config.spool_dir = Some(dir.path().to_path_buf());
    config.max_message_size = 3 * spool::SPOOL_THRESHOLD;
    let mut c = Client::with(config, "203.0.113.9", false, false);
    c.send("EHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
        .await;
    let message = big_message(20_000);
    for chunk in message.as_bytes().chunks(64 * 1024) {
        c.send(chunk).await;
    }
    assert!(c.send(".\r\n").await.starts_with("552"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
