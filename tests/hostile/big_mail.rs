//! Big messages where they are not Maildir's plain file copies: into an mbox (quoted as they
//! are copied), out of an mbox (a partial IMAP fetch), and through `hermod deliver`'s stdin.
//! Each is checked byte for byte, and hermod's peak memory must not grow by the message.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::{self, Setup};
use crate::smtp::{Smtp, status_field};

/// A 40 MB message whose body is full of lines mboxrd must quote (`From `, `>From `,
/// `>>From `) among plain ones. Sender and checkers make the same lines, so nothing holds
/// the whole message.
struct FromyMessage;

impl FromyMessage {
    const LINES: usize = 600_000;
    const SUBJECT: &'static [u8] = b"Subject: mbox big\r\n";

    fn line(i: usize) -> Vec<u8> {
        match i {
            0 => Self::SUBJECT.to_vec(),
            1 => b"\r\n".to_vec(),
            _ => match i % 13 {
                0 => format!("From line {i} of the body\r\n").into_bytes(),
                5 => format!(">From quoted {i}\r\n").into_bytes(),
                9 => format!(">>From twice {i}\r\n").into_bytes(),
                _ => {
                    let mut l = format!("{i:08} ").into_bytes();
                    l.resize(78, b'x');
                    l.extend_from_slice(b"\r\n");
                    l
                }
            },
        }
    }

    fn lines() -> impl Iterator<Item = Vec<u8>> {
        (0..Self::LINES).map(Self::line)
    }

    fn len() -> u64 {
        Self::lines().map(|l| l.len() as u64).sum()
    }

    fn send(writer: &mut impl Write) {
        for line in Self::lines() {
            writer.write_all(&line).expect("send content");
        }
    }
}

/// mboxrd quoting of one line.
fn quoted(line: &[u8]) -> Vec<u8> {
    let rest = &line[line.iter().take_while(|b| **b == b'>').count()..];
    if rest.starts_with(b"From ") {
        [b">", line].concat()
    } else {
        line.to_vec()
    }
}

/// A plain-text IMAP session logged in as alice, INBOX selected.
fn imap_login(port: u16) -> (TcpStream, BufReader<TcpStream>) {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut session = (stream.try_clone().unwrap(), BufReader::new(stream));
    let mut line = String::new();
    session.1.read_line(&mut line).unwrap();
    assert!(line.starts_with("* OK"), "{line}");
    imap_ok(&mut session, "a LOGIN alice@localhost wonderland");
    imap_ok(&mut session, "b SELECT INBOX");
    session
}

fn imap_ok(session: &mut (TcpStream, BufReader<TcpStream>), command: &str) {
    session
        .0
        .write_all(format!("{command}\r\n").as_bytes())
        .unwrap();
    let tag = command.split(' ').next().unwrap();
    loop {
        let mut line = String::new();
        assert!(session.1.read_line(&mut line).unwrap() > 0, "closed");
        if line.starts_with(&format!("{tag} ")) {
            assert!(line.starts_with(&format!("{tag} OK")), "{command}: {line}");
            return;
        }
    }
}

/// A 40 MB message for an mbox user goes from the queue's file into the mbox without being
/// held in memory: every line arrives, `From ` lines quoted (mboxrd), nothing else changed.
/// Then a partial IMAP fetch of its last bytes reads (and unquotes) only up to them.
#[test]
fn a_big_message_streams_into_an_mbox_quoted_and_a_partial_fetch_reads_it_back() {
    let s = Setup::new(
        "mailbox_format = \"mbox\"\nmessage_size_limit = 67108864\nallow_plaintext_auth = true",
        "",
    );
    s.add_user("alice@localhost", "wonderland");
    let server = s.start("serve", s.ports.smtp);
    let pid = server.child.id();
    let mbox = s.data_dir().join("spool/localhost/alice");
    let mbox_len = || std::fs::metadata(&mbox).map_or(0, |m| m.len());
    // A small message first: the mbox, its index and the delivery path are set up.
    let mut c = Smtp::connect(s.ports.smtp);
    assert!(c.cmd("EHLO mx.example").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<warm@example.net>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<alice@localhost>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.writer.write_all(b"Subject: small\r\n\r\nhi\r\n").unwrap();
    assert!(c.cmd(".").starts_with("250"));
    common::wait_until("the small message", Duration::from_secs(20), || {
        (mbox_len() > 0).then_some(())
    });
    let before = mbox_len();
    let baseline_kib = status_field(pid, "VmHWM:").expect("VmHWM");

    assert!(c.cmd("MAIL FROM:<big@example.net>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<alice@localhost>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    {
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, &c.writer);
        FromyMessage::send(&mut writer);
        writer.flush().unwrap();
    }
    assert!(c.cmd(".").starts_with("250"));
    let delivered = "delivered to=<alice@localhost> mailbox=INBOX uid=2";
    common::wait_until("the big message", Duration::from_secs(300), || {
        server.log().contains(delivered).then_some(())
    });
    let delivered_kib = status_field(pid, "VmHWM:").expect("VmHWM");

    // The mbox holds the From_ line, our trace headers, then each line quoted.
    let mut file = std::fs::File::open(&mbox).unwrap();
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(before)).unwrap();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    let next = |reader: &mut BufReader<std::fs::File>, line: &mut Vec<u8>| {
        line.clear();
        reader.read_until(b'\n', line).unwrap()
    };
    next(&mut reader, &mut line);
    assert!(
        line.starts_with(b"From "),
        "{:?}",
        String::from_utf8_lossy(&line)
    );
    let mut trace_len = 0u64;
    loop {
        assert!(next(&mut reader, &mut line) > 0, "no Subject line");
        if line == FromyMessage::SUBJECT {
            break;
        }
        trace_len += line.len() as u64;
        assert!(trace_len < 4096, "no Subject line in the header");
    }
    for (i, expected) in FromyMessage::lines().enumerate().skip(1) {
        next(&mut reader, &mut line);
        assert!(
            line == quoted(&expected),
            "line {i}: {:?}",
            String::from_utf8_lossy(&line)
        );
    }
    // Then only the separating empty line.
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"\n");

    // The message's last 100 bytes over IMAP, at their unquoted offset.
    let message_len = FromyMessage::len();
    let offset = trace_len + message_len - 100;
    // Logged in first: the login's password check has its own memory cost.
    let mut session = imap_login(s.ports.imap);
    let logged_in_kib = status_field(pid, "VmHWM:").expect("VmHWM");
    session
        .0
        .write_all(format!("f FETCH 2 (BODY.PEEK[]<{offset}.100>)\r\n").as_bytes())
        .unwrap();
    let mut first = String::new();
    session.1.read_line(&mut first).unwrap();
    assert!(
        first.starts_with("* 2 FETCH") && first.ends_with("{100}\r\n"),
        "{first}"
    );
    let mut tail = [0u8; 100];
    session.1.read_exact(&mut tail).unwrap();
    let expected: Vec<u8> = FromyMessage::lines()
        .skip(FromyMessage::LINES - 5)
        .flatten()
        .collect();
    assert_eq!(tail[..], expected[expected.len() - 100..]);
    imap_ok(&mut session, "g NOOP");
    let fetched_kib = status_field(pid, "VmHWM:").expect("VmHWM");
    eprintln!(
        "mbox: {message_len} bytes delivered; VmHWM {} MiB before, {} MiB after the delivery, {} MiB after the IMAP login, {} MiB after the fetch",
        baseline_kib / 1024,
        delivered_kib / 1024,
        logged_in_kib / 1024,
        fetched_kib / 1024
    );
    // Holding the message once would be 40 MB.
    assert!(
        delivered_kib - baseline_kib < 24 * 1024,
        "the delivery took {} MiB more",
        (delivered_kib - baseline_kib) / 1024
    );
    assert!(
        fetched_kib - logged_in_kib < 24 * 1024,
        "the partial fetch took {} MiB more",
        (fetched_kib - logged_in_kib) / 1024
    );
}

/// `hermod deliver` with a 40 MB message on stdin (a Postfix `mailbox_command` with its
/// leading `From ` line) spools it and copies it into the Maildir: the file holds exactly the
/// message after our trace headers, and the process's peak memory stays far below the size.
#[test]
fn hermod_deliver_spools_a_big_message_from_stdin() {
    let s = Setup::new("message_size_limit = 67108864", "");
    s.add_user("alice@localhost", "wonderland");
    // Reaped by wait4 below, which also gives its peak memory.
    #[allow(clippy::zombie_processes)]
    let mut child = std::process::Command::new(common::BIN)
        .args(["deliver", "--recipient", "alice@localhost"])
        .args([
            "--dev",
            "--config",
            &s.config.display().to_string(),
            "--data-dir",
            &s.data_dir().display().to_string(),
        ])
        .env("TMPDIR", s.dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn hermod deliver");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, &mut stdin);
        writer
            .write_all(b"From postmaster@example.net Thu Jan  1 00:00:00 1970\n")
            .unwrap();
        FromyMessage::send(&mut writer);
        writer.flush().unwrap();
    });
    let mut stderr = child.stderr.take().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for the child spawned above, which nothing else waits for.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4");
    feeder.join().unwrap();
    let mut err = String::new();
    stderr.read_to_string(&mut err).unwrap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "hermod deliver failed: {err}"
    );
    let peak_mib = usage.ru_maxrss / 1024;
    eprintln!("hermod deliver: peak RSS {peak_mib} MiB for a 40 MB message");
    assert!(peak_mib < 40, "hermod deliver used {peak_mib} MiB");
    // Nothing is left in the spool directory.
    let left: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("spool-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    let new = s.data_dir().join("mail/localhost/alice/Maildir/new");
    let path = std::fs::read_dir(&new)
        .unwrap()
        .next()
        .expect("delivered")
        .unwrap()
        .path();
    let mut reader = BufReader::with_capacity(1 << 20, std::fs::File::open(&path).unwrap());
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).unwrap();
    assert_eq!(line, b"Return-Path: <postmaster@example.net>\r\n");
    line.clear();
    reader.read_until(b'\n', &mut line).unwrap();
    assert_eq!(line, b"Delivered-To: alice@localhost\r\n");
    for (i, expected) in FromyMessage::lines().enumerate() {
        line.clear();
        reader.read_until(b'\n', &mut line).unwrap();
        assert!(
            line == expected,
            "line {i}: {:?}",
            String::from_utf8_lossy(&line)
        );
    }
    assert_eq!(reader.read(&mut [0u8; 1]).unwrap(), 0, "longer than sent");
}
