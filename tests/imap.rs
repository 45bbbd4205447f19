//! IMAP end to end with Python's imaplib (and mbsync when installed), mail arriving over SMTP.

mod common;

use common::{Setup, python};

#[test]
fn imap_with_imaplib() {
    let s = Setup::new("", "");
    s.add_user("alice@localhost", "wonderland");
    let _server = s.start("serve", s.ports.imaps);
    let out = python(
        "imap_flow.py",
        &[
            s.ports.imap.to_string(),
            s.ports.imaps.to_string(),
            s.ports.smtp.to_string(),
            "alice@localhost".into(),
            "wonderland".into(),
        ],
    );
    assert!(out.starts_with("imap ok"), "{out}");
}

/// CONDSTORE, QRESYNC, ESEARCH, LIST-EXTENDED and QUOTA from imaplib with raw commands; the
/// quota is the one `hermod user quota` set.
#[test]
fn imap_extensions_with_imaplib() {
    let s = Setup::new("", "");
    s.add_user("alice@localhost", "wonderland");
    let out = s.cli(&["user", "quota", "alice@localhost", "1M"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _server = s.start("serve", s.ports.imaps);
    let out = python(
        "imap_extensions.py",
        &[
            s.ports.imaps.to_string(),
            "alice@localhost".into(),
            "wonderland".into(),
            "1024".into(),
        ],
    );
    assert!(out.starts_with("imap-ext ok"), "{out}");
}

#[test]
#[ignore = "needs mbsync (Debian package isync); .ci/run runs it with --ignored"]
fn mbsync_both_ways() {
    common::need(&["mbsync"]);
    let s = Setup::new("", "");
    s.add_user("alice@localhost", "wonderland");
    let _server = s.start("serve", s.ports.imaps);
    let work = s.dir.path().join("mbsync");
    std::fs::create_dir_all(&work).unwrap();
    let cert = s.data_dir().join("tls/cert.pem");
    let out = python(
        "mbsync_flow.py",
        &[
            s.ports.imaps.to_string(),
            s.ports.lmtp.to_string(),
            "alice@localhost".into(),
            "wonderland".into(),
            cert.display().to_string(),
            work.display().to_string(),
        ],
    );
    assert!(out.starts_with("mbsync ok"), "{out}");
}

/// Thunderbird saves sent mail with `APPEND "Sent" (\Seen) UTF8 (~{n+}...)` once
/// UTF8=ACCEPT is on; the copy must land in Sent byte for byte.
#[test]
fn thunderbird_utf8_append_saves_sent_mail() {
    let s = Setup::new("", "");
    s.add_user("alice@localhost", "wonderland");
    let _server = s.start("serve", s.ports.imaps);
    let out = python(
        "imap_utf8_append.py",
        &[
            s.ports.imaps.to_string(),
            "alice@localhost".into(),
            "wonderland".into(),
        ],
    );
    assert!(out.starts_with("utf8 append ok"), "{out}");
}
