//! End-to-end: `serve` on loopback with a real store, driven over TCP and TLS.

mod support;

use std::time::Duration;

use hermod_common::config::MailboxFormat;
use hermod_common::store::Flag;
use support::{Options, PASSWORD, TestServer, USER};

const PLAIN: &[u8] =
    b"From: a@example.org\r\nTo: alice@localhost\r\nSubject: plain\r\n\r\nHello Alice.\r\n";
/// Lines that start with dots: they must be stuffed on the wire and come back exactly.
const DOTS: &[u8] = b"From: b@example.org\r\nSubject: dots\r\n\r\n.\r\n..two dots\r\n.leading\r\n.\r\ntrailing.\r\n";
/// Bare LF line ends, as mbox and other tools store them.
const BARE_LF: &[u8] = b"From: c@example.org\nSubject: lf\n\nline one\n.dot line\nline three\n";
/// Ten body lines, for TOP.
const LONG: &[u8] = b"From: d@example.org\r\nSubject: long\r\n\r\n1\r\n2\r\n3\r\n4\r\n5\r\n6\r\n7\r\n8\r\n9\r\n10\r\n";

/// The message as the client must receive it: CRLF line ends.
fn crlf(m: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in m.split_inclusive(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[tokio::test]
async fn stls_then_every_command() {
    let server = TestServer::start(Options::default()).await;
    let uids = server.deliver(&[PLAIN, DOTS, BARE_LF, LONG]).await;
    let uidvalidity = server.inbox().await.uidvalidity;

    let mut c = server.plain().await;
    let (status, capa) = c.cmd_multi("CAPA").await;
    assert!(status.starts_with("+OK"));
    let capa = String::from_utf8(capa).unwrap();
    assert!(capa.contains("STLS\r\n") && capa.contains("UIDL\r\n") && capa.contains("TOP\r\n"));
    assert!(!capa.contains("USER"), "no USER offered before TLS: {capa}");
    // No password before TLS.
    assert!(
        c.cmd(&format!("USER {USER}"))
            .await
            .starts_with("-ERR [AUTH]")
    );
    assert!(c.cmd("STAT").await.starts_with("-ERR"));

    let mut c = c.stls(&server.ctx.tls.fingerprint()).await;
    let (_, capa) = c.cmd_multi("CAPA").await;
    let capa = String::from_utf8(capa).unwrap();
    assert!(
        capa.contains("USER\r\n") && capa.contains("SASL PLAIN"),
        "{capa}"
    );
    assert!(!capa.contains("STLS"), "{capa}");
    assert!(c.cmd(&format!("USER {USER}")).await.starts_with("+OK"));
    assert_eq!(
        c.cmd("PASS wrong").await,
        "-ERR [AUTH] Authentication failed"
    );
    c.login(USER, PASSWORD).await;

    let sizes: Vec<usize> = [PLAIN, DOTS, BARE_LF, LONG]
        .iter()
        .map(|m| crlf(m).len())
        .collect();
    let total: usize = sizes.iter().sum();
    assert_eq!(c.cmd("STAT").await, format!("+OK 4 {total}"));
    let (_, list) = c.cmd_multi("LIST").await;
    let expected: String = sizes
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{} {s}\r\n", i + 1))
        .collect();
    assert_eq!(String::from_utf8(list).unwrap(), expected);
    assert_eq!(c.cmd("LIST 3").await, format!("+OK 3 {}", sizes[2]));
    assert!(c.cmd("LIST 5").await.starts_with("-ERR"));

    // UIDL is the IMAP UID and UIDVALIDITY.
    let uidl = c.uidl().await;
    for (i, uid) in uids.iter().enumerate() {
        assert_eq!(
            uidl[i],
            (i as u32 + 1, format!("{uid:08X}{uidvalidity:08X}"))
        );
    }
    assert_eq!(c.cmd("UIDL 2").await, format!("+OK 2 {}", uidl[1].1));

    // RETR is byte-exact: CRLF line ends, stuffing undone by the client.
    for (n, m) in [PLAIN, DOTS, BARE_LF, LONG].iter().enumerate() {
        let (status, body) = c.cmd_multi(&format!("RETR {}", n + 1)).await;
        assert_eq!(status, format!("+OK {} octets", sizes[n]));
        assert_eq!(body, crlf(m), "message {}", n + 1);
        assert_eq!(body.len(), sizes[n], "RETR sends the LIST size");
    }
    c.send("RETR 2").await;
    c.line().await;
    let raw = c.multi_raw().await;
    assert!(raw.ends_with(b"\r\n...two dots\r\n..leading\r\n..\r\ntrailing.\r\n"));

    // TOP n 0 and n 5.
    let (status, top) = c.cmd_multi("TOP 4 0").await;
    assert!(status.starts_with("+OK"));
    assert_eq!(top, b"From: d@example.org\r\nSubject: long\r\n\r\n");
    let (_, top) = c.cmd_multi("TOP 4 5").await;
    assert_eq!(
        top,
        b"From: d@example.org\r\nSubject: long\r\n\r\n1\r\n2\r\n3\r\n4\r\n5\r\n"
    );
    let (_, top) = c.cmd_multi("TOP 3 1").await;
    assert_eq!(
        top,
        b"From: c@example.org\r\nSubject: lf\r\n\r\nline one\r\n"
    );

    // DELE + RSET, NOOP, wrong-state commands.
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    assert!(c.cmd("DELE 1").await.starts_with("-ERR"));
    assert_eq!(c.cmd("STAT").await, format!("+OK 3 {}", total - sizes[0]));
    assert!(c.cmd("RSET").await.starts_with("+OK"));
    assert_eq!(c.cmd("STAT").await, format!("+OK 4 {total}"));
    assert_eq!(c.cmd("NOOP").await, "+OK");
    assert!(c.cmd("USER bob@localhost").await.starts_with("-ERR"));
    assert!(c.cmd("STLS").await.starts_with("-ERR"));
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    assert!(c.closed().await);

    // Nothing was deleted; RETRed messages are \Seen for IMAP.
    let inbox = server.inbox().await;
    assert_eq!(inbox.messages.len(), 4);
    assert!(inbox.messages.iter().all(|m| m.flags.contains(Flag::Seen)));
}

#[tokio::test]
async fn dele_and_quit_remove_messages_from_the_store() {
    let server = TestServer::start(Options::default()).await;
    let uids = server.deliver(&[PLAIN, DOTS, LONG]).await;
    let mut c = server.logged_in().await;
    c.cmd_multi("RETR 3").await;
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    assert!(c.cmd("DELE 2").await.starts_with("+OK"));
    // Not yet: deletions wait for QUIT.
    assert_eq!(server.inbox().await.messages.len(), 3);
    assert_eq!(
        c.cmd("QUIT").await,
        "+OK localhost POP3 server signing off (1 messages left)"
    );
    let inbox = server.inbox().await;
    let left: Vec<u32> = inbox.messages.iter().map(|m| m.uid).collect();
    assert_eq!(left, vec![uids[2]]);
    assert!(inbox.messages[0].flags.contains(Flag::Seen));
    assert!(!inbox.messages[0].flags.contains(Flag::Deleted));

    let mut c = server.logged_in_when_free().await;
    assert_eq!(c.cmd("STAT").await, format!("+OK 1 {}", LONG.len()));
}

#[tokio::test]
async fn dropped_connection_deletes_nothing() {
    let server = TestServer::start(Options::default()).await;
    server.deliver(&[PLAIN, DOTS]).await;
    let mut c = server.logged_in().await;
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    assert!(c.cmd("DELE 2").await.starts_with("+OK"));
    drop(c);

    let mut c = server.logged_in_when_free().await;
    assert!(c.cmd("STAT").await.starts_with("+OK 2 "));
    let inbox = server.inbox().await;
    assert_eq!(inbox.messages.len(), 2);
    assert!(
        inbox
            .messages
            .iter()
            .all(|m| !m.flags.contains(Flag::Deleted)),
        "no \\Deleted flag left behind"
    );
}

#[tokio::test]
async fn second_session_gets_in_use_and_imap_keeps_working() {
    let server = TestServer::start(Options::default()).await;
    server.deliver(&[PLAIN]).await;
    let mut first = server.logged_in().await;

    let mut second = server
        .plain()
        .await
        .stls(&server.ctx.tls.fingerprint())
        .await;
    assert!(second.cmd(&format!("USER {USER}")).await.starts_with("+OK"));
    let reply = second.cmd(&format!("PASS {PASSWORD}")).await;
    assert!(reply.starts_with("-ERR [IN-USE]"), "{reply}");
    // Still in AUTHORIZATION state: it may try again later.
    assert!(second.cmd("STAT").await.starts_with("-ERR"));

    // The store (IMAP, deliveries) is not blocked by the POP3 lock.
    server.deliver(&[DOTS]).await;
    assert_eq!(server.inbox().await.messages.len(), 2);
    // The POP3 session keeps its view of the maildrop (RFC 1939: numbers are stable).
    assert!(first.cmd("STAT").await.starts_with("+OK 1 "));

    assert!(first.cmd("QUIT").await.starts_with("+OK"));
    let mut again = server.logged_in_when_free().await;
    assert!(again.cmd("STAT").await.starts_with("+OK 2 "));
}

#[tokio::test]
async fn uidl_is_stable_across_sessions() {
    let server = TestServer::start(Options::default()).await;
    server.deliver(&[PLAIN, DOTS, LONG]).await;
    let mut c = server.logged_in().await;
    let first = c.uidl().await;
    assert_eq!(first.len(), 3);
    for (_, id) in &first {
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    assert!(c.cmd("DELE 2").await.starts_with("+OK"));
    assert!(c.cmd("QUIT").await.starts_with("+OK"));

    server.deliver(&[BARE_LF]).await;
    let mut c = server.logged_in_when_free().await;
    let second = c.uidl().await;
    let ids: Vec<&str> = second.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[0], first[0].1);
    assert_eq!(ids[1], first[2].1, "message 3 became message 2, same UIDL");
    assert!(
        !first.iter().any(|(_, id)| id == ids[2]),
        "a new message, a new UIDL"
    );
    c.cmd("QUIT").await;

    let mut c = server.logged_in_when_free().await;
    assert_eq!(c.uidl().await, second);
}

#[tokio::test]
async fn implicit_tls_and_auth_plain() {
    let server = TestServer::start(Options::default()).await;
    server.deliver(&[PLAIN]).await;
    let mut c = server.implicit_tls().await;
    let (_, capa) = c.cmd_multi("CAPA").await;
    let capa = String::from_utf8(capa).unwrap();
    assert!(
        capa.contains("SASL PLAIN") && !capa.contains("STLS"),
        "{capa}"
    );
    let ir = plain_response(USER, PASSWORD);
    let reply = c.cmd(&format!("AUTH PLAIN {ir}")).await;
    assert!(reply.starts_with("+OK Logged in"), "{reply}");
    assert_eq!(c.cmd("STAT").await, format!("+OK 1 {}", PLAIN.len()));
    assert!(c.cmd("QUIT").await.starts_with("+OK"));

    // AUTH PLAIN with the credentials after the continuation.
    let mut c = server.implicit_tls().await;
    assert_eq!(c.cmd("AUTH PLAIN").await, "+ ");
    let reply = c.cmd(&plain_response(USER, PASSWORD)).await;
    assert!(reply.starts_with("+OK Logged in"), "{reply}");
}

#[tokio::test]
async fn plaintext_auth_when_allowed() {
    let server = TestServer::start(Options {
        allow_plaintext_auth: true,
        ..Options::default()
    })
    .await;
    let mut c = server.plain().await;
    c.login(USER, PASSWORD).await;
    assert_eq!(c.cmd("STAT").await, "+OK 0 0");
}

#[tokio::test]
async fn commands_after_stls_in_the_same_packet_are_discarded() {
    let server = TestServer::start(Options::default()).await;
    let mut c = server.plain().await;
    // A man in the middle appends a command after STLS: it must not survive into TLS.
    c.send_raw(format!("STLS\r\nUSER {USER}\r\n").as_bytes())
        .await;
    assert_eq!(c.line().await, "+OK Begin TLS negotiation");
    // Give the server time to have read the injected line before the handshake.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let tcp = c.into_tcp();
    let tls = support::connector(&server.ctx.tls.fingerprint())
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let mut c = support::Client::new(tls);
    assert_eq!(
        c.cmd(&format!("PASS {PASSWORD}")).await,
        "-ERR Give USER first"
    );
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let server = TestServer::start(Options::default()).await;
    server.deliver(&[PLAIN, DOTS]).await;
    let mut c = server.logged_in().await;
    c.send_raw(b"STAT\r\nLIST 1\r\nRETR 2\r\nUIDL 1\r\nNOOP\r\n")
        .await;
    assert!(c.line().await.starts_with("+OK 2 "));
    assert_eq!(c.line().await, format!("+OK 1 {}", PLAIN.len()));
    assert!(c.line().await.starts_with("+OK"));
    assert_eq!(support::unstuff(&c.multi_raw().await), DOTS);
    assert!(c.line().await.starts_with("+OK 1 "));
    assert_eq!(c.line().await, "+OK");
}

#[tokio::test]
async fn garbage_overlong_lines_and_too_many_errors() {
    let server = TestServer::start(Options {
        max_errors: 5,
        ..Options::default()
    })
    .await;
    let mut c = server.plain().await;
    c.send_raw(&[b'A'; 5000]).await;
    c.send_raw(b"\r\n").await;
    assert_eq!(c.line().await, "-ERR Line too long");
    c.send_raw(b"\x00\xff\xfe garbage\r\n").await;
    assert_eq!(c.line().await, "-ERR Unknown command");
    // The session still works.
    let (status, _) = c.cmd_multi("CAPA").await;
    assert!(status.starts_with("+OK"));
    assert_eq!(c.cmd("RETR 1").await, "-ERR Log in first");
    assert_eq!(c.cmd("HELO x").await, "-ERR Unknown command");
    assert_eq!(
        c.cmd("EHLO x").await,
        "-ERR Too many errors, closing the connection"
    );
    assert!(c.closed().await);
}

#[tokio::test]
async fn idle_session_is_logged_out_without_deleting() {
    let server = TestServer::start(Options {
        idle_timeout: Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    server.deliver(&[PLAIN]).await;
    let mut c = server.logged_in().await;
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    assert_eq!(c.line().await, "-ERR Autologout: idle for too long");
    assert!(c.closed().await);
    assert_eq!(server.inbox().await.messages.len(), 1);
}

#[tokio::test]
async fn shutdown_closes_sessions_and_serve_returns() {
    let server = TestServer::start(Options::default()).await;
    server.deliver(&[PLAIN]).await;
    let mut c = server.logged_in().await;
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    server.shutdown.trigger();
    assert_eq!(c.line().await, "-ERR [SYS/TEMP] Server shutting down");
    assert!(server.shutdown.wait(Duration::from_secs(5)).await);
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        server
            .ctx
            .store
            .user("alice", "localhost")
            .await
            .unwrap()
            .select("INBOX", true)
            .await
            .unwrap()
            .messages
            .len(),
        1
    );
}

#[tokio::test]
async fn mbox_inbox_works_the_same() {
    let server = TestServer::start(Options {
        format: MailboxFormat::Mbox,
        ..Options::default()
    })
    .await;
    // "From " at the start of a body line is quoted in mbox and must come back unquoted.
    let from_line: &[u8] =
        b"From: e@example.org\r\nSubject: mbox\r\n\r\nFrom the start\r\n>From quoted\r\n.dot\r\n";
    server.deliver(&[PLAIN, from_line, BARE_LF]).await;
    let spool = std::fs::read(server.ctx.config.data_dir.join("spool/localhost/alice")).unwrap();
    assert!(spool.starts_with(b"From "), "INBOX is an mbox file");
    let mut c = server.logged_in().await;
    let sizes = c.list_sizes().await;
    for (n, m) in [PLAIN, from_line, BARE_LF].iter().enumerate() {
        let (status, body) = c.cmd_multi(&format!("RETR {}", n + 1)).await;
        assert!(status.starts_with("+OK"), "{status}");
        assert_eq!(body, crlf(m), "message {}", n + 1);
        assert_eq!(body.len(), sizes[n]);
    }
    let first = c.uidl().await;
    assert!(c.cmd("DELE 2").await.starts_with("+OK"));
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    assert_eq!(server.inbox().await.messages.len(), 2);
    let mut c = server.logged_in_when_free().await;
    let second = c.uidl().await;
    assert_eq!(second[0].1, first[0].1);
    assert_eq!(second[1].1, first[2].1);
    assert_eq!(c.cmd_multi("RETR 2").await.1, crlf(BARE_LF));
}

fn plain_response(user: &str, password: &str) -> String {
    hermod_common::sasl::encode_base64(format!("\0{user}\0{password}").as_bytes())
}

#[tokio::test]
async fn imap_changes_during_a_session() {
    use hermod_common::store::{Flags, StoreMode};
    let server = TestServer::start(Options::default()).await;
    let uids = server.deliver(&[PLAIN, DOTS, LONG]).await;
    let store = server.store().await;
    let deleted = Flags::from_flags(&[Flag::Deleted]);
    // An IMAP client marked message 3 \Deleted but did not expunge it.
    store
        .store("INBOX", &[uids[2]], StoreMode::Add, deleted, &[], None)
        .await
        .unwrap();
    let mut c = server.logged_in().await;
    assert!(c.cmd("STAT").await.starts_with("+OK 3 "));
    // Now IMAP expunges message 1 while POP3 has it listed.
    store
        .store("INBOX", &[uids[0]], StoreMode::Add, deleted, &[], None)
        .await
        .unwrap();
    store.expunge("INBOX", Some(&[uids[0]])).await.unwrap();
    assert_eq!(
        c.cmd("RETR 1").await,
        "-ERR Message 1 was removed by another session"
    );
    assert!(c.cmd("RETR 2").await.starts_with("+OK"));
    c.multi_raw().await;
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    assert!(c.cmd("DELE 2").await.starts_with("+OK"));
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    // Only what POP3 deleted is gone: IMAP's \Deleted message waits for IMAP's EXPUNGE.
    let inbox = server.inbox().await;
    let left: Vec<u32> = inbox.messages.iter().map(|m| m.uid).collect();
    assert_eq!(left, vec![uids[2]]);
}

#[tokio::test]
async fn messages_come_back_right_in_any_order() {
    // The backend reads ahead in listing order; jumping around must still give each
    // message its own bytes.
    let server = TestServer::start(Options::default()).await;
    let messages: Vec<Vec<u8>> = (1..=8)
        .map(|i| format!("From: n{i}@example.org\r\nSubject: {i}\r\n\r\nbody {i}\r\n").into_bytes())
        .collect();
    let refs: Vec<&[u8]> = messages.iter().map(|m| m.as_slice()).collect();
    server.deliver(&refs).await;
    let mut c = server.logged_in().await;
    for n in [1, 2, 5, 3, 8, 7, 1, 6, 4, 2] {
        let (status, body) = c.cmd_multi(&format!("RETR {n}")).await;
        assert!(status.starts_with("+OK"), "{status}");
        assert_eq!(body, messages[n - 1], "RETR {n}");
        let (_, top) = c.cmd_multi(&format!("TOP {} 0", n % 8 + 1)).await;
        assert!(top.starts_with(format!("From: n{}@", n % 8 + 1).as_bytes()));
    }
}

#[tokio::test]
async fn long_download_is_byte_exact_across_read_ahead_batches() {
    // More messages than several read-ahead batches, of every shape, in both formats:
    // each RETR must send the message's own bytes, as large as LIST said, and all of them
    // are \Seen for IMAP afterwards.
    for format in [MailboxFormat::Maildir, MailboxFormat::Mbox] {
        let server = TestServer::start(Options {
            format,
            ..Options::default()
        })
        .await;
        let messages: Vec<Vec<u8>> = (0..150)
            .map(|i| {
                let body = match i % 5 {
                    0 => format!(".{i} starts with a dot\r\n..two\r\n"),
                    1 => format!("bare LF {i}\n.dot\nFrom the start\n"),
                    2 => format!("From {i} quoted in mbox\r\n>From kept\r\nno final line end"),
                    3 => "x".repeat(i * 300) + "\r\n",
                    _ => format!("plain {i}\r\n"),
                };
                format!("From: n{i}@example.org\r\nSubject: {i}\r\n\r\n{body}").into_bytes()
            })
            .collect();
        let refs: Vec<&[u8]> = messages.iter().map(|m| m.as_slice()).collect();
        server.deliver(&refs).await;
        let mut c = server.logged_in().await;
        let sizes = c.list_sizes().await;
        assert_eq!(sizes.len(), messages.len());
        for (n, m) in messages.iter().enumerate() {
            let (status, body) = c.cmd_multi(&format!("RETR {}", n + 1)).await;
            assert_eq!(status, format!("+OK {} octets", sizes[n]), "{format:?}");
            assert_eq!(body, crlf(m), "{format:?} message {}", n + 1);
        }
        assert!(c.cmd("QUIT").await.starts_with("+OK"));
        let inbox = server.inbox().await;
        assert_eq!(inbox.messages.len(), messages.len());
        assert!(
            inbox.messages.iter().all(|m| m.flags.contains(Flag::Seen)),
            "{format:?}"
        );
    }
}

/// A client that asks for a big message and never reads is dropped after the write
/// timeout (not the ten-minute idle timeout), and its maildrop lock is released.
#[tokio::test]
async fn client_that_stops_reading_is_dropped_after_the_write_timeout() {
    let server = TestServer::start(Options {
        write_timeout: Duration::from_secs(1),
        ..Options::default()
    })
    .await;
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    for _ in 0..40_000 {
        big.extend_from_slice(&[b'x'; 98]);
        big.extend_from_slice(b"\r\n");
    }
    server.deliver(&[&big]).await;
    let mut stalled = server.logged_in().await;
    for _ in 0..10 {
        stalled.send_raw(b"RETR 1\r\n").await;
    }
    // The stalled client is still connected (and not reading) while another logs in.
    let started = std::time::Instant::now();
    let mut c = server.logged_in_when_free().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(c.cmd("STAT").await.starts_with("+OK 1 "));
    drop(stalled);
}
