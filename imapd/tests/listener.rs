//! The IMAP server on real loopback listeners: plain with STARTTLS, implicit TLS, two
//! sessions seeing each other's changes, IDLE, COMPRESS, and bad input.

mod support;

use std::time::Duration;

use rustls_pki_types::ServerName;
use support::{Client, start, tls_client, tls_connector};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn starttls_then_login() {
    let server = start().await;
    let tcp = TcpStream::connect(server.imap).await.unwrap();
    let mut c = Client::new(tcp);
    let greeting = c.read_until("* OK").await;
    assert!(
        greeting.contains("STARTTLS") && greeting.contains("LOGINDISABLED"),
        "{greeting}"
    );
    assert!(!greeting.contains("AUTH=PLAIN"), "{greeting}");
    let out = c.cmd("a", "LOGIN alice@localhost secret").await;
    assert!(out.contains("a NO [PRIVACYREQUIRED]"), "{out}");
    // Pipelined after STARTTLS: must be dropped, not run after the handshake.
    c.send("b STARTTLS\r\nx LOGOUT\r\n").await;
    let out = c.read_until("b ").await;
    assert!(out.contains("b OK"), "{out}");
    let tls = tls_connector(&server)
        .connect(ServerName::try_from("localhost").unwrap(), c.io)
        .await
        .unwrap();
    let mut c = Client::new(tls);
    let out = c.cmd("c", "CAPABILITY").await;
    assert!(
        out.contains("AUTH=PLAIN") && !out.contains("STARTTLS"),
        "{out}"
    );
    let out = c.cmd("d", "LOGIN alice@localhost secret").await;
    assert!(out.contains("d OK [CAPABILITY"), "{out}");
    let out = c.cmd("e", "SELECT INBOX").await;
    assert!(out.contains("e OK [READ-WRITE]"), "{out}");
    server.shutdown.trigger();
}

#[tokio::test]
async fn two_sessions_see_each_others_changes_and_idle_hears_new_mail() {
    let server = start().await;
    let mut a = tls_client(&server).await;
    let mut b = tls_client(&server).await;
    a.cmd("1", "SELECT INBOX").await;
    b.cmd("1", "SELECT INBOX").await;
    a.send("2 IDLE\r\n").await;
    a.read_until("+ ").await;

    // Mail arriving by delivery (as the MDA does) shows in IDLE within a second.
    let user = server.ctx.store.user("alice", "localhost").await.unwrap();
    let started = tokio::time::Instant::now();
    user.deliver("INBOX", b"Subject: hi\r\n\r\nhello\r\n")
        .await
        .unwrap();
    let out = a.read_until("* 1 EXISTS").await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "IDLE took {:?}: {out}",
        started.elapsed()
    );

    // A flag change in session b shows in a's IDLE.
    let out = b.cmd("3", "NOOP").await;
    assert!(out.contains("* 1 EXISTS"), "{out}");
    b.cmd("4", "STORE 1 +FLAGS (\\Seen)").await;
    let out = a.read_until("* 1 FETCH").await;
    assert!(out.contains("\\Seen"), "{out}");

    // An expunge in b: a hears it after leaving IDLE at the latest.
    b.cmd("5", "STORE 1 +FLAGS (\\Deleted)").await;
    b.cmd("6", "EXPUNGE").await;
    a.send("DONE\r\n").await;
    let out = a.read_until("2 OK").await;
    let out = if out.contains("* 1 EXPUNGE") {
        out
    } else {
        a.cmd("7", "NOOP").await
    };
    assert!(out.contains("* 1 EXPUNGE"), "{out}");

    // EXPUNGE is held back during FETCH and sent at the next NOOP.
    let msg = "Subject: x\r\n\r\ny\r\n";
    a.cmd("8", &format!("APPEND INBOX {{{}+}}\r\n{msg}", msg.len()))
        .await;
    b.cmd("9", "NOOP").await;
    b.cmd("10", "STORE 1 +FLAGS (\\Deleted)").await;
    b.cmd("11", "EXPUNGE").await;
    let out = a.cmd("12", "FETCH 1 (FLAGS)").await;
    assert!(!out.contains("EXPUNGE"), "no EXPUNGE during FETCH: {out}");
    let out = a.cmd("13", "NOOP").await;
    assert!(out.contains("* 1 EXPUNGE"), "{out}");
    server.shutdown.trigger();
}

#[tokio::test]
async fn compress_deflate_both_ways() {
    use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
    let server = start().await;
    let mut c = tls_client(&server).await;
    let out = c.cmd("c", "COMPRESS DEFLATE").await;
    assert!(out.contains("c OK"), "{out}");
    let mut comp = Compress::new(Compression::default(), false);
    let mut decomp = Decompress::new(false);
    let mut send = |line: &str| {
        let mut out = Vec::with_capacity(line.len() + 64);
        comp.compress_vec(line.as_bytes(), &mut out, FlushCompress::Sync)
            .unwrap();
        out
    };
    let data = send("n NOOP\r\ns SELECT INBOX\r\n");
    c.io.write_all(&data).await.unwrap();
    let mut plain = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&plain).contains("s OK") {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, c.io.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        let mut out = Vec::with_capacity(65536);
        decomp
            .decompress_vec(&chunk[..n], &mut out, FlushDecompress::Sync)
            .unwrap();
        plain.extend(out);
    }
    let text = String::from_utf8_lossy(&plain);
    assert!(
        text.contains("n OK NOOP completed") && text.contains("s OK [READ-WRITE]"),
        "{text}"
    );
    server.shutdown.trigger();
}

#[tokio::test]
async fn garbage_gets_bad_and_too_much_closes() {
    let server = start().await;
    let mut c = tls_client(&server).await;
    let out = c.cmd("g1", "FROBNICATE now").await;
    assert!(out.contains("g1 BAD"), "{out}");
    let out = c.cmd("g2", "NOOP").await;
    assert!(out.contains("g2 OK"), "session survives: {out}");
    // A synchronizing literal above the limit is refused before it is sent.
    let out = c.cmd("g3", "APPEND INBOX {999999999999}").await;
    assert!(out.contains("g3 NO [TOOBIG]"), "{out}");
    let long = "x".repeat(70 * 1024);
    let out = c.cmd("g4", &format!("SEARCH TEXT {long}")).await;
    assert!(out.contains("g4 BAD"), "{out}");
    for i in 0..12 {
        c.send(&format!("z{i} garbage(\r\n")).await;
    }
    let out = c.read_until("* BYE").await;
    assert!(out.contains("BAD"), "{out}");
    let mut rest = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), c.io.read(&mut rest))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "connection closed after too many BADs");
    server.shutdown.trigger();
}

#[tokio::test]
async fn autologout_after_inactivity() {
    use hermod_imapd::session::{Settings, Shared};
    let server = start().await;
    let shared = std::sync::Arc::new(Shared {
        store: server.ctx.store.clone(),
        auth: server.ctx.auth.clone(),
        tls: None,
        junk_feedback: None,
        settings: Settings {
            allow_plaintext_auth: true,
            login_timeout: Duration::from_millis(300),
            autologout: Duration::from_millis(600),
            ..Settings::default()
        },
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = server.shutdown.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = listener.accept().await.unwrap();
            let (shared, shutdown) = (shared.clone(), shutdown.clone());
            tokio::spawn(hermod_imapd::server::run(
                shared,
                hermod_common::net::Stream::Plain(tcp),
                peer.ip(),
                shutdown,
            ));
        }
    });
    // Not logged in: the short login timeout applies.
    let mut c = Client::new(TcpStream::connect(addr).await.unwrap());
    c.read_until("* OK").await;
    let t = tokio::time::Instant::now();
    let out = c.read_until("* BYE").await;
    assert!(out.contains("Autologout"), "{out}");
    assert!(t.elapsed() < Duration::from_secs(2));
    // Logged in and active: commands keep the session alive past the timeout.
    let mut c = Client::new(TcpStream::connect(addr).await.unwrap());
    c.read_until("* OK").await;
    c.cmd("l", "LOGIN alice@localhost secret").await;
    for i in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let out = c.cmd(&format!("n{i}"), "NOOP").await;
        assert!(out.contains("OK"), "{out}");
    }
    let out = c.read_until("* BYE").await;
    assert!(out.contains("Autologout"), "{out}");
    server.shutdown.trigger();
}
