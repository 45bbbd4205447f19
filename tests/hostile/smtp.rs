//! SMTP, authentication and outbound: hostile input on the MTA side.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{self, Setup};

/// A line-oriented SMTP client with timeouts on every read and write.
struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Smtp {
    fn connect(port: u16) -> Smtp {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let writer = stream.try_clone().unwrap();
        let mut smtp = Smtp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = smtp.reply();
        assert!(greeting.starts_with("220"), "{greeting}");
        smtp
    }

    /// A whole (possibly multi-line) reply.
    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read reply");
            assert!(n > 0, "connection closed; so far: {all}");
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("write command");
        self.reply()
    }
}

fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// 50 connections each send a 40 MB message on port 25 at the same time: the content goes to
/// spool files as it arrives, so hermod's memory stays far below the 2 GB it would take to
/// hold them. (The size limit here is 32 MiB, so each message is refused once read: local
/// delivery of 2 GB is not what this test measures; a big accepted message is checked
/// below.)
#[test]
fn fifty_big_messages_on_port_25_keep_memory_small() {
    const CONNECTIONS: usize = 50;
    const MESSAGE: usize = 40_000_000;
    let s = Setup::new(
        "message_size_limit = 33554432",
        "[limits]\nmax_connections_per_ip = 100",
    );
    s.add_user("alice@localhost", "wonderland");
    let server = s.start("serve", s.ports.smtp);
    let pid = server.child.id();
    let start = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let port = s.ports.smtp;
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Smtp::connect(port);
                assert!(c.cmd("EHLO big.example").starts_with("250"));
                assert!(c.cmd("MAIL FROM:<>").starts_with("250"));
                assert!(c.cmd("RCPT TO:<postmaster>").starts_with("250"));
                assert!(c.cmd("DATA").starts_with("354"));
                let line = [b'x'; 78];
                let mut chunk = Vec::with_capacity(64 * 1024);
                chunk.extend_from_slice(b"Subject: big\r\n\r\n");
                let mut sent = 0;
                while sent < MESSAGE {
                    while chunk.len() < 64 * 1024 - 80 {
                        chunk.extend_from_slice(&line);
                        chunk.extend_from_slice(b"\r\n");
                    }
                    c.writer.write_all(&chunk).expect("send content");
                    sent += chunk.len();
                    chunk.clear();
                }
                c.writer.write_all(b".\r\n").expect("end of data");
                c.reply()
            })
        })
        .collect();
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak_rss = 0;
            while !done.load(Ordering::SeqCst) {
                peak_rss = peak_rss.max(status_field(pid, "VmRSS:").unwrap_or(0));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak_rss
        })
    };
    let replies: Vec<String> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    done.store(true, Ordering::SeqCst);
    let peak_rss_kib = watcher.join().unwrap();
    let hwm_kib = status_field(pid, "VmHWM:").expect("VmHWM");
    eprintln!(
        "{CONNECTIONS} x {MESSAGE} bytes in {:?}: peak VmRSS {} MiB, VmHWM {} MiB",
        start.elapsed(),
        peak_rss_kib / 1024,
        hwm_kib / 1024
    );
    for reply in &replies {
        assert!(reply.starts_with("552"), "{reply}");
    }
    assert!(
        hwm_kib < 256 * 1024,
        "hermod used {} MiB for {CONNECTIONS} big messages",
        hwm_kib / 1024
    );
    // The spool files are gone once the messages are refused.
    let tmp = s.data_dir().join("queue/tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "spool files left: {left:?}");
    // And the server still serves.
    let mut c = Smtp::connect(port);
    assert!(c.cmd("EHLO after.example").starts_with("250"));
}

/// A message above the spool threshold is accepted and delivered intact (its content went
/// through a spool file and the queue's file store).
#[test]
fn big_message_is_spooled_and_delivered_intact() {
    let s = Setup::new("", "");
    s.add_user("alice@localhost", "wonderland");
    let _server = s.start("serve", s.ports.smtp);
    let mut c = Smtp::connect(s.ports.smtp);
    assert!(c.cmd("EHLO big.example").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<sender@example.net>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<alice@localhost>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    let mut body = b"Subject: spooled\r\n\r\n".to_vec();
    let mut n = 0u64;
    while body.len() < 3_000_000 {
        // Bare LFs now and then: they are made CRLF across the spool's pieces too.
        let ending: &[u8] = if n % 7 == 0 { b"\n" } else { b"\r\n" };
        body.extend_from_slice(format!("line {n:08} of the big message").as_bytes());
        body.extend_from_slice(ending);
        n += 1;
    }
    c.writer.write_all(&body).unwrap();
    let reply = c.cmd(".");
    assert!(reply.starts_with("250"), "{reply}");
    let expected: Vec<u8> = {
        let mut out = Vec::new();
        for line in body.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        out.truncate(out.len() - 2);
        out
    };
    let new = s.data_dir().join("mail/localhost/alice/Maildir/new");
    let deadline = Instant::now() + Duration::from_secs(20);
    let file = loop {
        if let Some(entry) = std::fs::read_dir(&new)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(Result::ok)
        {
            break entry.path();
        }
        assert!(Instant::now() < deadline, "message not delivered");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut delivered = Vec::new();
    std::fs::File::open(&file)
        .unwrap()
        .read_to_end(&mut delivered)
        .unwrap();
    let delivered = String::from_utf8_lossy(&delivered).replace("\r\n", "\n");
    let expected = String::from_utf8_lossy(&expected).replace("\r\n", "\n");
    let pos = delivered
        .find("Subject: spooled")
        .expect("the message's header");
    assert_eq!(delivered[pos..].len(), expected.len());
    assert!(delivered[pos..] == expected, "content changed on the way");
    let _ = common::BIN;
}
