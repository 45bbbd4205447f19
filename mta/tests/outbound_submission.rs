//! The whole path: a local user submits on 587, the MTA queues the message for a remote
//! domain, and outbound delivery brings it to that domain's MX (a sink on loopback found
//! through the fake DNS server) with the body unchanged, byte for byte.

mod outbound_support;

use std::sync::Arc;
use std::time::Duration;

use hermod_common::Shutdown;
use hermod_common::config::Service;
use outbound_support::sink::{Sink, SinkOptions};
use outbound_support::{World, wait_for};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

async fn reply(conn: &mut BufReader<TcpStream>) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed after {all:?}");
        all.push_str(&line);
        if line.as_bytes().get(3) == Some(&b' ') {
            return all;
        }
    }
}

async fn cmd(conn: &mut BufReader<TcpStream>, line: &str) -> String {
    conn.get_mut()
        .write_all(format!("{line}\r\n").as_bytes())
        .await
        .unwrap();
    reply(conn).await
}

const BODY: &str = "Hello Bob,\r\n.a line with a leading dot\r\n\r\n  indented, trailing space \r\n-- \r\nAlice\r\n";

#[tokio::test]
async fn mail_submitted_on_587_reaches_the_remote_mx_byte_exact() {
    let w = World::new(|c, _, _| {
        c.listen = vec![(Service::Submission, vec!["127.0.0.1:0".parse().unwrap()])];
        // The test client speaks plain text; TLS is covered by the session's own tests.
        c.allow_plaintext_auth = true;
    })
    .await;
    w.dns.mx("remote.test", 10, "mx1.remote.test");
    w.dns.address("mx1.remote.test", "127.0.0.30");
    let sink = Sink::start(w.at("127.0.0.30"), SinkOptions::default()).await;
    w.ctx.bind(&[Service::Submission]).unwrap();
    let submission = w.ctx.bound_addrs()[0].1;
    let shutdown = Shutdown::new();
    let mailboxes = Arc::new(outbound_support::Mailbox::default());
    let daemon = tokio::spawn(hermod_mta::serve_with(
        w.ctx.clone(),
        shutdown.clone(),
        mailboxes,
    ));

    let mut c = BufReader::new(TcpStream::connect(submission).await.unwrap());
    assert!(reply(&mut c).await.starts_with("220 "));
    assert!(cmd(&mut c, "EHLO laptop").await.starts_with("250"));
    let token = hermod_common::sasl::encode_base64(b"\0alice@hermod.test\0secret");
    let auth = cmd(&mut c, &format!("AUTH PLAIN {token}")).await;
    assert!(auth.starts_with("235"), "{auth}");
    assert!(
        cmd(&mut c, "MAIL FROM:<alice@hermod.test>")
            .await
            .starts_with("250")
    );
    assert!(
        cmd(&mut c, "RCPT TO:<bob@remote.test>")
            .await
            .starts_with("250")
    );
    assert!(cmd(&mut c, "DATA").await.starts_with("354"));
    let stuffed = BODY.replace("\r\n.", "\r\n..");
    let data =
        format!("From: alice@hermod.test\r\nTo: bob@remote.test\r\nSubject: out\r\n\r\n{stuffed}.");
    let queued = cmd(&mut c, &data).await;
    assert!(queued.starts_with("250 "), "{queued}");
    cmd(&mut c, "QUIT").await;

    let got = wait_for("the remote delivery", async || sink.messages().pop()).await;
    assert_eq!(got.recipients, ["bob@remote.test"]);
    assert!(got.mail_from.starts_with("MAIL FROM:<alice@hermod.test>"));
    let content = String::from_utf8(got.content).unwrap();
    let (headers, body) = content.split_once("\r\n\r\n").unwrap();
    assert!(headers.contains("Subject: out"), "{headers}");
    assert_eq!(body, BODY, "the body arrives byte for byte");

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(20), daemon)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
