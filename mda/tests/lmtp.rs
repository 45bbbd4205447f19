//! LMTP over real sockets (TCP and unix), delivering into a real store.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::*;
use tokio::net::{TcpStream, UnixStream};

/// MAIL, RCPTs and DATA; returns the RCPT replies and the replies after the final dot
/// (one per accepted recipient).
async fn transaction<S>(
    c: &mut Client<S>,
    sender: &str,
    rcpts: &[&str],
    message: &[u8],
) -> (Vec<String>, Vec<String>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    assert!(
        c.cmd(&format!("MAIL FROM:<{sender}>"))
            .await
            .starts_with("250 2.1.0")
    );
    let mut rcpt_replies = Vec::new();
    for r in rcpts {
        rcpt_replies.push(c.cmd(&format!("RCPT TO:<{r}>")).await);
    }
    let accepted = rcpt_replies.iter().filter(|r| r.starts_with("250")).count();
    let data = c.cmd("DATA").await;
    if accepted == 0 {
        assert!(data.starts_with("503"), "{data}");
        assert!(c.cmd("RSET").await.starts_with("250"));
        return (rcpt_replies, Vec::new());
    }
    assert!(data.starts_with("354"), "{data}");
    c.send(std::str::from_utf8(&dot_stuffed(message)).unwrap())
        .await;
    let mut after = Vec::new();
    for _ in 0..accepted {
        after.push(c.reply().await);
    }
    (rcpt_replies, after)
}

async fn lhlo<S>(c: &mut Client<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let r = c.cmd("LHLO client.example").await;
    for ext in [
        "PIPELINING",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SIZE 52428800",
    ] {
        assert!(r.contains(ext), "{ext} missing in {r}");
    }
}

#[tokio::test]
async fn good_and_unknown_recipient_then_byte_exact_file_with_trace_headers() {
    let h = maildir().await;
    h.add_user("alice", 0).await;
    let (addr, shutdown, task) = h.serve();
    let mut c = Client::new(TcpStream::connect(addr).await.unwrap()).await;
    lhlo(&mut c).await;
    let mut msg = message("hello", 2000);
    msg.extend_from_slice(b".leading dot line\r\n..two dots\r\nFrom the start\r\n");
    let (rcpt, after) = transaction(
        &mut c,
        "sender@remote.example",
        &[
            "alice@example.org",
            "nobody@example.org",
            "x@elsewhere.example",
        ],
        &msg,
    )
    .await;
    assert!(rcpt[0].starts_with("250 2.1.5"), "{rcpt:?}");
    assert!(rcpt[1].starts_with("550 5.1.1"), "{rcpt:?}");
    assert!(
        rcpt[2].starts_with("550 5.1.1"),
        "remote domains refused: {rcpt:?}"
    );
    assert_eq!(after.len(), 1);
    assert!(after[0].starts_with("250 2.0.0"), "{after:?}");
    assert!(c.cmd("QUIT").await.starts_with("221 2.0.0"));

    let mut expected =
        b"Return-Path: <sender@remote.example>\r\nDelivered-To: alice@example.org\r\n".to_vec();
    expected.extend_from_slice(&msg);
    assert_eq!(h.messages("alice", "INBOX").await, vec![expected.clone()]);
    // The file on disk, as mutt would read it.
    let new = h.path("mail/example.org/alice/Maildir/new");
    let files: Vec<_> = std::fs::read_dir(&new)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(std::fs::read(&files[0]).unwrap(), expected);

    shutdown.trigger();
    task.await.unwrap();
}

#[tokio::test]
async fn two_recipients_get_two_replies_and_pipelining_works() {
    let h = maildir().await;
    h.add_user("alice", 0).await;
    h.add_user("bob", 0).await;
    let (addr, shutdown, task) = h.serve();
    let mut c = Client::new(TcpStream::connect(addr).await.unwrap()).await;
    let msg = message("pipelined", 500);
    // Everything up to DATA in one write, then the message and QUIT in another.
    c.send("LHLO client.example\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.org>\r\nRCPT TO:<Bob@Example.org>\r\nDATA\r\n")
        .await;
    assert!(c.reply().await.contains("PIPELINING"));
    assert!(c.reply().await.starts_with("250 2.1.0"));
    assert!(c.reply().await.starts_with("250 2.1.5"));
    assert!(c.reply().await.starts_with("250 2.1.5"));
    assert!(c.reply().await.starts_with("354"));
    let mut rest = dot_stuffed(&msg);
    rest.extend_from_slice(b"QUIT\r\n");
    c.send(std::str::from_utf8(&rest).unwrap()).await;
    let r1 = c.reply().await;
    let r2 = c.reply().await;
    assert!(r1.starts_with("250 2.0.0 <alice@example.org>"), "{r1}");
    assert!(r2.starts_with("250 2.0.0 <Bob@Example.org>"), "{r2}");
    assert!(c.reply().await.starts_with("221"));

    let bob = h.messages("bob", "INBOX").await;
    assert_eq!(bob.len(), 1);
    assert!(bob[0].starts_with(b"Return-Path: <>\r\nDelivered-To: Bob@Example.org\r\n"));
    assert!(bob[0].ends_with(&msg));
    assert_eq!(h.messages("alice", "INBOX").await.len(), 1);
    shutdown.trigger();
    task.await.unwrap();
}

#[tokio::test]
async fn plus_addressing_quota_alias_and_catch_all() {
    let h = maildir().await;
    h.add_user("alice", 0).await;
    h.add_user("bob", 0).await;
    h.add_user("carol", 1000).await;
    h.store("alice").await.create("Lists", None).await.unwrap();
    let d = &h.ctx.directory;
    d.add_alias("team@example.org", "alice@example.org")
        .await
        .unwrap();
    d.add_alias("team@example.org", "bob@example.org")
        .await
        .unwrap();
    let (addr, shutdown, task) = h.serve();
    let mut c = Client::new(TcpStream::connect(addr).await.unwrap()).await;
    lhlo(&mut c).await;

    // +detail into an existing folder (case-insensitive), else INBOX.
    let (_, after) = transaction(
        &mut c,
        "s@remote.example",
        &["alice+lists@example.org"],
        &message("list", 300),
    )
    .await;
    assert!(after[0].starts_with("250"), "{after:?}");
    let (_, after) = transaction(
        &mut c,
        "s@remote.example",
        &["alice+nothere@example.org"],
        &message("nf", 300),
    )
    .await;
    assert!(after[0].starts_with("250"), "{after:?}");
    let lists = h.messages("alice", "Lists").await;
    assert_eq!(lists.len(), 1);
    assert!(lists[0].starts_with(
        b"Return-Path: <s@remote.example>\r\nDelivered-To: alice+lists@example.org\r\n"
    ));
    let inbox = h.messages("alice", "INBOX").await;
    assert_eq!(inbox.len(), 1);
    assert!(String::from_utf8_lossy(&inbox[0]).contains("Subject: nf\r\n"));

    // Over quota: 552 5.2.2 after DATA, nothing stored.
    let (rcpt, after) = transaction(
        &mut c,
        "s@remote.example",
        &["carol@example.org"],
        &message("big", 2000),
    )
    .await;
    assert!(rcpt[0].starts_with("250"), "{rcpt:?}");
    assert!(after[0].starts_with("552 5.2.2"), "{after:?}");
    assert!(h.messages("carol", "INBOX").await.is_empty());
    // A small one still fits.
    let (_, after) = transaction(
        &mut c,
        "s@remote.example",
        &["carol@example.org"],
        &message("small", 300),
    )
    .await;
    assert!(after[0].starts_with("250"), "{after:?}");

    // Alias fan-out: one RCPT, one reply, a copy for each member.
    let (_, after) = transaction(
        &mut c,
        "s@remote.example",
        &["team@example.org"],
        &message("team", 300),
    )
    .await;
    assert_eq!(after.len(), 1);
    assert!(after[0].starts_with("250"), "{after:?}");
    for user in ["alice", "bob"] {
        let inbox = h.messages(user, "INBOX").await;
        let last = String::from_utf8_lossy(inbox.last().unwrap()).into_owned();
        assert!(
            last.starts_with(
                "Return-Path: <s@remote.example>\r\nDelivered-To: team@example.org\r\n"
            ),
            "{last}"
        );
        assert!(last.contains("Subject: team\r\n"));
    }

    // Unknown before the catch-all exists, delivered to bob after.
    let (rcpt, _) = transaction(
        &mut c,
        "s@remote.example",
        &["random@example.org"],
        &message("x", 300),
    )
    .await;
    assert!(rcpt[0].starts_with("550 5.1.1"), "{rcpt:?}");
    d.add_alias("@example.org", "bob@example.org")
        .await
        .unwrap();
    let (rcpt, after) = transaction(
        &mut c,
        "s@remote.example",
        &["random@example.org"],
        &message("catch", 300),
    )
    .await;
    assert!(rcpt[0].starts_with("250"), "{rcpt:?}");
    assert!(after[0].starts_with("250"), "{after:?}");
    let bob = h.messages("bob", "INBOX").await;
    let last = String::from_utf8_lossy(bob.last().unwrap()).into_owned();
    assert!(
        last.contains("Delivered-To: random@example.org\r\n") && last.contains("Subject: catch")
    );

    c.cmd("QUIT").await;
    shutdown.trigger();
    task.await.unwrap();
}

#[tokio::test]
async fn unix_socket_serves_lmtp_and_is_removed_at_shutdown() {
    let h = harness(|c, dir| c.lmtp_socket = Some(dir.join("run/lmtp.sock"))).await;
    h.add_user("alice", 0).await;
    let sock = h.path("run/lmtp.sock");
    // A stale socket file from a dead server is replaced.
    std::fs::create_dir_all(h.path("run")).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let (_addr, shutdown, task) = h.serve();
    let mut c = None;
    for _ in 0..100 {
        if let Ok(s) = UnixStream::connect(&sock).await {
            c = Some(Client::new(s).await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut c = c.expect("socket up");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    lhlo(&mut c).await;
    let msg = message("unix", 400);
    let (_, after) = transaction(&mut c, "s@remote.example", &["alice@example.org"], &msg).await;
    assert!(after[0].starts_with("250 2.0.0"), "{after:?}");
    assert!(c.cmd("QUIT").await.starts_with("221"));
    assert_eq!(h.messages("alice", "INBOX").await.len(), 1);

    // A second server on the same socket refuses to start while the first runs.
    let err = hermod_mda::lmtp::bind_socket(&sock).err().unwrap();
    assert!(err.to_string().contains("in use"), "{err}");

    shutdown.trigger();
    task.await.unwrap();
    assert!(!sock.exists(), "socket file removed at shutdown");
}

#[tokio::test]
async fn shutdown_closes_idle_sessions_with_421() {
    let h = maildir().await;
    let (addr, shutdown, task) = h.serve();
    let mut c = Client::new(TcpStream::connect(addr).await.unwrap()).await;
    lhlo(&mut c).await;
    shutdown.trigger();
    assert!(c.reply().await.starts_with("421 4.3.2"));
    task.await.unwrap();
    assert!(shutdown.wait(Duration::from_secs(5)).await);
}

/// A message far above the spool threshold goes to a file in `lmtp/spool` while it arrives
/// (seen there half-way through), is filed byte for byte for each recipient from that file,
/// and the file is gone afterwards.
#[tokio::test]
async fn big_message_is_spooled_then_delivered_byte_exact_to_each_recipient() {
    let h = maildir().await;
    h.add_user("alice", 0).await;
    h.add_user("bob", 0).await;
    let (addr, shutdown, task) = h.serve();
    let mut c = Client::new(TcpStream::connect(addr).await.unwrap()).await;
    lhlo(&mut c).await;
    let mut msg = b"Subject: big\r\n\r\n".to_vec();
    let mut n = 0;
    while msg.len() < 4_000_000 {
        msg.extend_from_slice(format!("line {n} .of the big message\r\n").as_bytes());
        if n % 50 == 0 {
            msg.extend_from_slice(b".a dot line\r\n");
        }
        n += 1;
    }
    assert!(
        c.cmd("MAIL FROM:<s@remote.example>")
            .await
            .starts_with("250")
    );
    assert!(
        c.cmd("RCPT TO:<alice@example.org>")
            .await
            .starts_with("250")
    );
    assert!(c.cmd("RCPT TO:<bob@example.org>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    let stuffed = String::from_utf8(dot_stuffed(&msg)).unwrap();
    let (first, second) = stuffed.split_at(stuffed.len() / 2);
    c.send(first).await;
    let spool = h.path("lmtp/spool");
    let mut spooled = false;
    for _ in 0..200 {
        if std::fs::read_dir(&spool).unwrap().count() == 1 {
            spooled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(spooled, "no spool file while the message arrives");
    c.send(second).await;
    for _ in 0..2 {
        let reply = c.reply().await;
        assert!(reply.starts_with("250 2.0.0"), "{reply}");
    }
    for user in ["alice", "bob"] {
        let mut expected =
            format!("Return-Path: <s@remote.example>\r\nDelivered-To: {user}@example.org\r\n")
                .into_bytes();
        expected.extend_from_slice(&msg);
        let got = h.messages(user, "INBOX").await;
        assert_eq!(got.len(), 1);
        assert!(got[0] == expected, "{user}: content changed");
    }
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "spool file left"
    );
    assert!(c.cmd("QUIT").await.starts_with("221"));
    shutdown.trigger();
    task.await.unwrap();
}
