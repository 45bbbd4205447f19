//! SMTP, authentication and outbound: hostile input on the MTA side.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{self, Setup};

/// A line-oriented SMTP client with timeouts on every read and write.
pub(crate) struct Smtp {
    pub(crate) reader: BufReader<TcpStream>,
    pub(crate) writer: TcpStream,
}

impl Smtp {
    pub(crate) fn connect(port: u16) -> Smtp {
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
    pub(crate) fn reply(&mut self) -> String {
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

    pub(crate) fn cmd(&mut self, line: &str) -> String {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("write command");
        self.reply()
    }
}

pub(crate) fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The 40 MB test message number `n`, as pieces: a head with distinctive first lines, one
/// block of `x` lines repeated, and a distinctive last line. Sender and checker build the
/// same pieces, so the check is byte-exact without holding a message.
struct BigMessage {
    head: Vec<u8>,
    block: Vec<u8>,
    blocks: usize,
    tail: Vec<u8>,
}

impl BigMessage {
    const SIZE: usize = 40_000_000;

    fn new(n: usize) -> BigMessage {
        let head = format!("Subject: big {n}\r\n\r\nfirst line of message {n}\r\n").into_bytes();
        let tail = format!("last line of message {n}\r\n").into_bytes();
        let mut block = Vec::with_capacity(1 << 20);
        while block.len() < (1 << 20) - 80 {
            block.extend_from_slice(&[b'x'; 78]);
            block.extend_from_slice(b"\r\n");
        }
        let blocks = (Self::SIZE - head.len() - tail.len()) / block.len();
        BigMessage {
            head,
            block,
            blocks,
            tail,
        }
    }

    fn len(&self) -> usize {
        self.head.len() + self.blocks * self.block.len() + self.tail.len()
    }

    fn send(&self, writer: &mut impl Write) {
        writer.write_all(&self.head).expect("send content");
        for _ in 0..self.blocks {
            writer.write_all(&self.block).expect("send content");
        }
        writer.write_all(&self.tail).expect("send content");
    }

    /// `reader` holds exactly the rest of this message after its first `skip` bytes (already
    /// read), compared a block at a time.
    fn check(&self, reader: &mut impl Read, skip: usize, what: &str) {
        let mut piece = vec![0u8; self.block.len()];
        let mut expect = |expected: &[u8], reader: &mut dyn Read| {
            let got = &mut piece[..expected.len()];
            reader
                .read_exact(got)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(got == expected, "{what}: content changed");
        };
        expect(&self.head[skip..], reader);
        for _ in 0..self.blocks {
            expect(&self.block, reader);
        }
        expect(&self.tail, reader);
        assert_eq!(
            reader.read(&mut [0u8; 1]).unwrap(),
            0,
            "{what}: longer than sent"
        );
    }
}

/// 50 connections each send a 40 MB message on port 25 at the same time, all accepted and
/// delivered: the content goes to spool files as it arrives, then into the queue's file
/// store and from there into the Maildir by file copies, so hermod's memory stays far below
/// the 2 GB it would take to hold them. Every message is checked byte for byte.
#[test]
fn fifty_big_messages_on_port_25_keep_memory_small() {
    big_messages_keep_memory_small::<50>("message_size_limit = 67108864", "");
}

/// The same with mail authentication checking every message (loopback is not in
/// `mynetworks` here), which needs each whole message in memory: the checks wait for their
/// share of a fixed budget instead of reading 20 messages back at once.
#[test]
fn big_messages_checked_by_mail_authentication_keep_memory_small() {
    big_messages_keep_memory_small::<20>(
        "message_size_limit = 67108864\nmynetworks = []",
        "[auth]\nverify = true\n",
    );
}

fn big_messages_keep_memory_small<const CONNECTIONS: usize>(config: &str, sections: &str) {
    let s = Setup::new(
        config,
        &format!("{sections}[limits]\nmax_connections_per_ip = 100"),
    );
    s.add_user("alice@localhost", "wonderland");
    let server = s.start("serve", s.ports.smtp);
    let pid = server.child.id();
    let start = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let port = s.ports.smtp;
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|n| {
            std::thread::spawn(move || {
                let mut c = Smtp::connect(port);
                assert!(c.cmd("EHLO big.example").starts_with("250"));
                assert!(c.cmd("MAIL FROM:<big@example.net>").starts_with("250"));
                assert!(c.cmd("RCPT TO:<alice@localhost>").starts_with("250"));
                assert!(c.cmd("DATA").starts_with("354"));
                let mut writer = std::io::BufWriter::with_capacity(1 << 20, &c.writer);
                BigMessage::new(n).send(&mut writer);
                writer.write_all(b".\r\n").expect("end of data");
                writer.flush().expect("end of data");
                drop(writer);
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
    for reply in &replies {
        assert!(reply.starts_with("250"), "{reply}");
    }
    let received = start.elapsed();
    let new = s.data_dir().join("mail/localhost/alice/Maildir/new");
    let files = common::wait_until(
        "all 50 messages delivered",
        Duration::from_secs(600),
        || {
            let files: Vec<_> = std::fs::read_dir(&new)
                .ok()?
                .filter_map(|e| Some(e.ok()?.path()))
                .collect();
            (files.len() == CONNECTIONS).then_some(files)
        },
    );
    done.store(true, Ordering::SeqCst);
    let peak_rss_kib = watcher.join().unwrap();
    let hwm_kib = status_field(pid, "VmHWM:").expect("VmHWM");
    eprintln!(
        "{CONNECTIONS} x {} bytes received in {received:?}, delivered in {:?}: peak VmRSS {} MiB, VmHWM {} MiB",
        BigMessage::SIZE,
        start.elapsed(),
        peak_rss_kib / 1024,
        hwm_kib / 1024
    );
    assert!(
        hwm_kib < 256 * 1024,
        "hermod used {} MiB for {CONNECTIONS} big messages",
        hwm_kib / 1024
    );
    // Each message arrived whole: after the trace headers, exactly the bytes sent.
    let mut seen = [false; CONNECTIONS];
    for path in &files {
        let mut reader = BufReader::with_capacity(1 << 20, std::fs::File::open(path).unwrap());
        let mut header = Vec::new();
        let n = loop {
            let mut line = Vec::new();
            reader.read_until(b'\n', &mut line).unwrap();
            assert!(
                !line.is_empty() && header.len() < 8192,
                "no Subject in {path:?}"
            );
            if let Some(n) = line.strip_prefix(b"Subject: big ") {
                break String::from_utf8_lossy(n).trim().parse::<usize>().unwrap();
            }
            header.extend_from_slice(&line);
        };
        let header = String::from_utf8_lossy(&header);
        assert!(
            header
                .starts_with("Return-Path: <big@example.net>\r\nDelivered-To: alice@localhost\r\n"),
            "{header}"
        );
        assert!(
            !std::mem::replace(&mut seen[n], true),
            "message {n} delivered twice"
        );
        let message = BigMessage::new(n);
        let subject = format!("Subject: big {n}\r\n");
        message.check(&mut reader, subject.len(), &format!("message {n}"));
        assert_eq!(
            std::fs::metadata(path).unwrap().len() as usize,
            header.len() + message.len(),
            "message {n} size"
        );
    }
    // The spool and queue files are gone once the messages are delivered.
    for dir in ["queue/tmp", "queue/messages"] {
        let left: Vec<_> = common::wait_until(dir, Duration::from_secs(30), || {
            let left: Vec<_> = std::fs::read_dir(s.data_dir().join(dir)).ok()?.collect();
            left.is_empty().then_some(left)
        });
        assert!(left.is_empty());
    }
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
        let ending: &[u8] = if n.is_multiple_of(7) { b"\n" } else { b"\r\n" };
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
}

/// A connection to `port` on 127.0.0.1 from the source address `source` (any 127.x.y.z: the
/// whole of 127/8 is this machine), so one test can be several client networks.
pub(crate) fn connect_from(source: [u8; 4], port: u16) -> TcpStream {
    use std::os::fd::FromRawFd;
    let sockaddr = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns; the sockaddr_in values
    // live across the calls that read them.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let stream = TcpStream::from_raw_fd(fd);
        let local = sockaddr(source, 0);
        let bound = libc::bind(fd, (&raw const local).cast(), len);
        assert_eq!(bound, 0, "bind {source:?}");
        let remote = sockaddr([127, 0, 0, 1], port);
        let connected = libc::connect(fd, (&raw const remote).cast(), len);
        assert_eq!(connected, 0, "connect from {source:?}");
        stream
    }
}

impl Smtp {
    pub(crate) fn connect_from(source: [u8; 4], port: u16) -> Smtp {
        let stream = connect_from(source, port);
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let writer = stream.try_clone().unwrap();
        let mut smtp = Smtp {
            reader: BufReader::new(stream),
            writer,
        };
        assert!(smtp.reply().starts_with("220"));
        assert!(smtp.cmd("EHLO client.example").starts_with("250"));
        smtp
    }

    /// AUTH PLAIN; the reply and how long it took.
    pub(crate) fn auth(&mut self, login: &str, password: &str) -> (String, Duration) {
        let token = plain_token(login, password);
        let start = Instant::now();
        let reply = self.cmd(&format!("AUTH PLAIN {token}"));
        (reply, start.elapsed())
    }
}

fn plain_token(login: &str, password: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("\0{login}\0{password}").into_bytes();
    let mut out = String::new();
    for chunk in raw.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Submission without TLS (allowed for the test), 3 free failures before delays start.
fn auth_setup() -> Setup {
    let s = Setup::new(
        "allow_plaintext_auth = true",
        "[limits]\nauth_failures_before_delay = 3",
    );
    s.add_user("alice@localhost", "wonderland");
    s.add_user("bob@localhost", "builder");
    s
}

/// A throttled answer waits at least a second.
const THROTTLED: Duration = Duration::from_millis(900);

/// The "throttling login" lines of the log that name `needle` (a client address).
fn throttle_lines(server: &common::Server, needle: &str) -> Vec<String> {
    server
        .log()
        .lines()
        .filter(|l| l.contains("throttling login") && l.contains(needle))
        .map(str::to_string)
        .collect()
}

#[test]
fn respelled_logins_share_one_throttle() {
    let s = auth_setup();
    let server = s.start("serve", s.ports.submission);
    let port = s.ports.submission;
    // Each spelling from its own address: only the account ties them together.
    for (i, login) in ["alice@localhost.", " alice@localhost", "ALICE@LOCALHOST"]
        .iter()
        .enumerate()
    {
        let mut c = Smtp::connect_from([127, 0, 0, 2 + i as u8], port);
        let (reply, took) = c.auth(login, "guess");
        assert!(reply.starts_with("535"), "{login}: {reply}");
        assert!(
            throttle_lines(&server, &format!("127.0.0.{}", 2 + i)).is_empty(),
            "{login} throttled already ({took:?})"
        );
    }
    // The next guess for the account, from yet another address, in yet another spelling.
    let mut c = Smtp::connect_from([127, 0, 0, 9], port);
    let (reply, took) = c.auth("alice@localhost", "guess");
    assert!(reply.starts_with("535"), "{reply}");
    assert!(
        !throttle_lines(&server, "127.0.0.9").is_empty(),
        "not throttled: answered in {took:?}"
    );
    assert!(took >= THROTTLED, "{took:?}");
}

#[test]
fn another_accounts_good_login_does_not_reset_the_throttle() {
    let s = auth_setup();
    let server = s.start("serve", s.ports.submission);
    let port = s.ports.submission;
    let attacker = [127, 0, 0, 20];
    // Spraying guesses over accounts from one address...
    for n in 1..=3 {
        let mut c = Smtp::connect_from(attacker, port);
        let (reply, _) = c.auth(&format!("ghost{n}@localhost"), "guess");
        assert!(reply.starts_with("535"), "{reply}");
    }
    // ...then logging in to an account of one's own from the same address...
    let mut c = Smtp::connect_from(attacker, port);
    let (reply, _) = c.auth("bob@localhost", "builder");
    assert!(reply.starts_with("235"), "{reply}");
    // ...leaves the address throttled.
    let mut c = Smtp::connect_from(attacker, port);
    let (reply, took) = c.auth("ghost4@localhost", "guess");
    assert!(reply.starts_with("535"), "{reply}");
    assert!(
        throttle_lines(&server, "127.0.0.20")
            .iter()
            .any(|l| l.contains("ghost4@localhost")),
        "throttle was reset: answered in {took:?}"
    );
    assert!(took >= THROTTLED, "{took:?}");
    // Someone else is not affected.
    let mut c = Smtp::connect_from([127, 0, 0, 21], port);
    let (reply, _) = c.auth("alice@localhost", "wonderland");
    assert!(reply.starts_with("235"), "{reply}");
    assert!(throttle_lines(&server, "127.0.0.21").is_empty());
}

/// `x@"[10.0.0.5]"` is how a client gets an address literal past the parser (it removes the
/// quotes); from outside mynetworks it is refused at MAIL FROM, so nothing is ever queued that
/// could send a report there.
#[test]
fn internal_address_literal_sender_is_refused() {
    let s = Setup::new("mynetworks = []", "");
    s.add_user("alice@localhost", "wonderland");
    let server = s.start("serve", s.ports.smtp);
    for sender in [
        "x@\"[10.0.0.5]\"",
        "x@\"[127.0.0.1]\"",
        "x@\"[IPv6:::1]\"",
        "x@[10.0.0.5]",
    ] {
        let mut c = Smtp::connect(s.ports.smtp);
        assert!(c.cmd("EHLO attacker.example").starts_with("250"));
        let reply = c.cmd(&format!("MAIL FROM:<{sender}> RET=FULL"));
        assert!(
            reply.starts_with("553 5.1.8") || reply.starts_with("501"),
            "{sender}: {reply}"
        );
        assert!(
            c.cmd("RCPT TO:<alice@localhost> NOTIFY=SUCCESS")
                .starts_with("503"),
            "{sender}: a transaction was opened"
        );
    }
    // The log reaches us through a pipe: wait for the line rather than race it.
    common::wait_until("the refusal in the log", Duration::from_secs(10), || {
        server
            .log()
            .contains("internal address literal refused")
            .then_some(())
    });
}

/// CR and LF in a SASL login cannot forge a log line.
#[test]
fn login_with_line_breaks_cannot_forge_log_lines() {
    let s = auth_setup();
    let server = s.start("serve", s.ports.submission);
    let mut c = Smtp::connect_from([127, 0, 0, 30], s.ports.submission);
    let (reply, _) = c.auth("x\r\nFORGED INFO login ok user=root", "guess");
    assert!(reply.starts_with("535"), "{reply}");
    let mut c = Smtp::connect_from([127, 0, 0, 30], s.ports.submission);
    assert!(c.cmd("QUIT").starts_with("221"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("FORGED") {
        assert!(Instant::now() < deadline, "the failure was not logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = server.log();
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED")),
        "a forged line: {log}"
    );
    assert!(log.contains("x\\r\\nFORGED"), "{log}");
}
