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

#[test]
fn mbsync_both_ways() {
    if !common::have("mbsync") {
        eprintln!("mbsync not installed (.ci/run installs isync); skipped");
        return;
    }
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
