//! The split daemons as three processes on one data dir: `hermod mta` takes mail over SMTP
//! and hands local mail over LMTP to `hermod mda`, which files it; `hermod imapd` tells an
//! IMAP client in IDLE (Python's imaplib) about it.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{LineClient, Setup, wait_until};

#[test]
fn mta_hands_over_lmtp_to_mda_and_imapd_idle_hears_it() {
    let s = Setup::new("", "");
    // The MTA's local delivery goes to the MDA's LMTP listener, not into the store itself.
    let lmtp = s.ports.lmtp;
    s.edit_config(|text| {
        let section = format!("[lmtp]\nlisten = [\"127.0.0.1:{lmtp}\"]\n");
        assert!(text.contains(&section), "{text}");
        text.replace(
            &section,
            &format!("{section}upstream = \"127.0.0.1:{lmtp}\"\n"),
        )
    });
    s.add_user("alice@localhost", "wonderland");
    let mda = s.start("mda", s.ports.lmtp);
    let imapd = s.start("imapd", s.ports.imaps);
    let mta = s.start("mta", s.ports.smtp);
    let pids = [mda.child.id(), imapd.child.id(), mta.child.id()];
    assert!(pids[0] != pids[1] && pids[1] != pids[2] && pids[0] != pids[2]);
    // Each process serves only its own role.
    assert!(std::net::TcpStream::connect(("127.0.0.1", s.ports.smtp)).is_ok());
    for (server, foreign) in [(&mda, s.ports.smtp), (&mta, s.ports.imaps), (&imapd, lmtp)] {
        assert!(
            !server.log().contains(&format!("127.0.0.1:{foreign}")),
            "{}",
            server.log()
        );
    }
    wait_until(
        "the MTA's LMTP hand-over line",
        Duration::from_secs(10),
        || {
            mta.log()
                .contains(&format!("local delivery over LMTP lmtp=127.0.0.1:{lmtp}"))
                .then_some(())
        },
    );

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/idle_wait.py");
    let mut idle = Command::new("python3")
        .arg(&script)
        .args([
            &s.ports.imaps.to_string(),
            "alice@localhost",
            "wonderland",
            "split delivery",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut out = BufReader::new(idle.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("read");
    assert_eq!(first, "idling\n", "the IDLE client did not start");

    let mut c = LineClient::connect(s.ports.smtp);
    assert_eq!(c.reply().expect("greeting").0, 220);
    c.command("EHLO client.test", 250);
    c.command("MAIL FROM:<bob@example.org>", 250);
    c.command("RCPT TO:<alice@localhost>", 250);
    c.command("DATA", 354);
    c.send(b"Subject: split delivery\r\n\r\nthrough three processes\r\n.\r\n");
    assert_eq!(c.reply().expect("reply").0, 250);
    c.command("QUIT", 221);

    let status = wait_until("the IDLE client", Duration::from_secs(30), || {
        idle.try_wait().expect("try_wait")
    });
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("read");
    let mut err = String::new();
    if let Some(mut e) = idle.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut err).expect("read");
    }
    assert!(status.success(), "IDLE client failed: {rest}\n{err}");
    assert_eq!(rest, "heard split delivery\n");
    // The MDA process filed it (the MTA has no store writer of its own here).
    let mda_log = mda.log();
    assert!(
        mda_log.contains("delivered to=<alice@localhost> mailbox=INBOX"),
        "{mda_log}"
    );
    assert!(
        !mta.log().contains("delivered to=<alice@localhost>"),
        "{}",
        mta.log()
    );
}

/// Peak memory (VmHWM, KiB) of a running process.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Line `i` of a 40 MB message with lines that DATA must dot-stuff (`.x`, `..x`).
fn dotty_line(i: usize) -> Vec<u8> {
    match i {
        0 => b"Subject: big over LMTP\r\n".to_vec(),
        1 => b"\r\n".to_vec(),
        _ if i.is_multiple_of(11) => format!(".dot line {i}\r\n").into_bytes(),
        _ if i.is_multiple_of(17) => format!("..two dots {i}\r\n").into_bytes(),
        _ => {
            let mut l = format!("{i:08} ").into_bytes();
            l.resize(78, b'y');
            l.extend_from_slice(b"\r\n");
            l
        }
    }
}

const DOTTY_LINES: usize = 500_000;

/// A 40 MB message through the split daemons: the MTA queues it as a file and sends it to the
/// MDA over LMTP from that file, a chunk at a time with the dot-stuffing done as it goes.
/// The Maildir copy is byte-exact, and the MTA's peak memory does not grow by the message.
#[test]
fn a_big_message_goes_over_lmtp_from_its_queue_file() {
    let s = Setup::new("message_size_limit = 67108864", "");
    let lmtp = s.ports.lmtp;
    s.edit_config(|text| {
        let section = format!("[lmtp]\nlisten = [\"127.0.0.1:{lmtp}\"]\n");
        text.replace(
            &section,
            &format!("{section}upstream = \"127.0.0.1:{lmtp}\"\n"),
        )
    });
    s.add_user("alice@localhost", "wonderland");
    let mda = s.start("mda", s.ports.lmtp);
    let mta = s.start("mta", s.ports.smtp);
    let pid = mta.child.id();
    let mut c = LineClient::connect(s.ports.smtp);
    assert_eq!(c.reply().expect("greeting").0, 220);
    c.command("EHLO client.test", 250);
    // A small message first, so the baseline has the LMTP path set up.
    c.command("MAIL FROM:<bob@example.org>", 250);
    c.command("RCPT TO:<alice@localhost>", 250);
    c.command("DATA", 354);
    c.send(b"Subject: small\r\n\r\nhi\r\n.\r\n");
    assert_eq!(c.reply().expect("reply").0, 250);
    wait_until("the small message", Duration::from_secs(20), || {
        mda.log().contains("mailbox=INBOX uid=1").then_some(())
    });
    let baseline = peak_kib(pid);

    c.command("MAIL FROM:<bob@example.org>", 250);
    c.command("RCPT TO:<alice@localhost>", 250);
    c.command("DATA", 354);
    let mut content = Vec::with_capacity(1 << 20);
    for i in 0..DOTTY_LINES {
        let line = dotty_line(i);
        if line.starts_with(b".") {
            content.push(b'.');
        }
        content.extend_from_slice(&line);
        if content.len() >= 1 << 20 {
            c.send(&content);
            content.clear();
        }
    }
    content.extend_from_slice(b".\r\n");
    c.send(&content);
    drop(content);
    assert_eq!(c.reply().expect("reply").0, 250);
    wait_until("the big message", Duration::from_secs(300), || {
        mda.log().contains("mailbox=INBOX uid=2").then_some(())
    });
    let after = peak_kib(pid);
    eprintln!(
        "mta VmHWM {} MiB before, {} MiB after a 40 MB LMTP hand-over",
        baseline / 1024,
        after / 1024
    );
    assert!(
        after - baseline < 24 * 1024,
        "the MTA took {} MiB more to send 40 MB over LMTP",
        (after - baseline) / 1024
    );

    let new = s.data_dir().join("mail/localhost/alice/Maildir/new");
    let path = std::fs::read_dir(&new)
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 1 << 20))
        .expect("the big message in the Maildir");
    let mut reader = BufReader::with_capacity(1 << 20, std::fs::File::open(&path).unwrap());
    let mut line = Vec::new();
    let mut header = 0;
    loop {
        line.clear();
        assert!(reader.read_until(b'\n', &mut line).unwrap() > 0);
        if line == dotty_line(0) {
            break;
        }
        header += line.len();
        assert!(header < 8192, "no Subject line");
    }
    for i in 1..DOTTY_LINES {
        line.clear();
        reader.read_until(b'\n', &mut line).unwrap();
        assert!(
            line == dotty_line(i),
            "line {i}: {:?}",
            String::from_utf8_lossy(&line)
        );
    }
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut rest).unwrap();
    assert!(
        rest.is_empty(),
        "longer than sent: {} more bytes",
        rest.len()
    );
}
