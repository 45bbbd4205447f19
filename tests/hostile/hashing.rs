//! A flood of wrong-password logins against the cap on concurrent password checks: every
//! argon2id check costs ~19 MiB and tens of milliseconds of a core, so 200 at once would take
//! close to 4 GB and starve the blocking pool that local delivery shares.

use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::common::{self, Setup};
use crate::smtp::{Smtp, connect_from, status_field};

/// What one argon2id check with the default parameters allocates (19456 KiB).
const HASH_KIB: u64 = 19 * 1024;

/// One IMAP `LOGIN` with a wrong password from `source`: the tagged reply.
fn imap_login(source: [u8; 4], port: u16, barrier: &Barrier) -> String {
    let stream = connect_from(source, port);
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut greeting = String::new();
    reader.read_line(&mut greeting).expect("greeting");
    assert!(greeting.starts_with("* OK"), "{greeting}");
    barrier.wait();
    writer
        .write_all(b"a LOGIN alice@localhost not-the-password\r\n")
        .expect("send LOGIN");
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).expect("LOGIN reply");
        assert!(n > 0, "connection closed before the tagged reply");
        if line.starts_with("a ") {
            return line;
        }
    }
}

/// 200 wrong-password logins at once (half SMTP AUTH, half IMAP LOGIN, from 200 client
/// addresses so no per-address limit spreads them out) while a message comes in on port 25:
/// the message is in the Maildir within 10 s, every login is refused (or told to come back:
/// 454 / NO [UNAVAILABLE] for a busy check), and hermod's peak memory stays far below what
/// 200 checks at once take.
#[test]
fn a_login_flood_neither_starves_delivery_nor_takes_the_memory_of_all_its_hashes() {
    const LOGINS: usize = 200;
    let s = Setup::new(
        "allow_plaintext_auth = true",
        "[limits]\nauth_failures_before_delay = 100000\nmax_connections_per_ip = 1000\nmax_connections = 4000",
    );
    s.add_user("alice@localhost", "wonderland");
    let server = s.start("serve", s.ports.smtp);
    let pid = server.child.id();
    // One check first, so the baseline includes a hash's worth of allocator state.
    let mut warm = Smtp::connect_from([127, 0, 0, 1], s.ports.submission);
    let (reply, _) = warm.auth("alice@localhost", "wrong");
    assert!(reply.starts_with("535"), "{reply}");
    drop(warm);
    let baseline_kib = status_field(pid, "VmHWM:").expect("VmHWM");

    let barrier = Arc::new(Barrier::new(LOGINS + 1));
    let (submission, imap) = (s.ports.submission, s.ports.imap);
    let logins: Vec<_> = (0..LOGINS)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let source = [127, 0, 1 + (i / 250) as u8, (i % 250 + 1) as u8];
                if i % 2 == 0 {
                    let mut c = Smtp::connect_from(source, submission);
                    barrier.wait();
                    c.auth("alice@localhost", "not-the-password").0
                } else {
                    imap_login(source, imap, &barrier)
                }
            })
        })
        .collect();
    barrier.wait();

    // The flood is under way: a message for alice comes in on port 25.
    let mut c = Smtp::connect(s.ports.smtp);
    assert!(c.cmd("EHLO mx.example").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<sender@example.net>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<alice@localhost>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.writer
        .write_all(b"Subject: during the flood\r\n\r\nstill delivered\r\n")
        .unwrap();
    let accepted = Instant::now();
    let reply = c.cmd(".");
    assert!(reply.starts_with("250"), "{reply}");
    let new = s.data_dir().join("mail/localhost/alice/Maildir/new");
    common::wait_until(
        "the message delivered during the login flood",
        Duration::from_secs(10),
        || std::fs::read_dir(&new).ok()?.next().map(|_| ()),
    );
    let delivered_in = accepted.elapsed();

    let mut kinds = std::collections::BTreeMap::new();
    for login in logins {
        let reply = login.join().expect("login thread");
        let refused = reply.starts_with("535") || reply.starts_with("a NO");
        let try_later = reply.starts_with("454");
        assert!(refused || try_later, "a wrong password got {reply:?}");
        let kind: String = reply.chars().take(28).collect();
        *kinds.entry(kind).or_insert(0) += 1;
    }
    let replies = format!("{kinds:?}");
    let peak_kib = status_field(pid, "VmHWM:").expect("VmHWM");
    let grown_kib = peak_kib.saturating_sub(baseline_kib);
    // 200 checks at once take 200 x 19 MiB (3.6 GiB measured without the cap). With the cap
    // (two checks per core) the checks themselves need a few times 19 MiB, but the allocator
    // keeps some of the memory freed by earlier checks (about 600 MiB measured on 2 cores):
    // the bound is a third of the uncapped figure.
    let allowed_kib = LOGINS as u64 * HASH_KIB / 3;
    eprintln!(
        "{LOGINS} logins: delivery took {delivered_in:?}, replies {replies}; VmHWM {} MiB -> {} MiB (allowed growth {} MiB)",
        baseline_kib / 1024,
        peak_kib / 1024,
        allowed_kib / 1024
    );
    assert!(
        grown_kib < allowed_kib,
        "hermod's peak memory grew by {} MiB during {LOGINS} password checks",
        grown_kib / 1024
    );
}
