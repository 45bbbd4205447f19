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
