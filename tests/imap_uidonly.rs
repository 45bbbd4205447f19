//! UIDONLY (RFC 9586) against the real server: a UIDONLY session beside a plain one sees
//! flag changes as UIDFETCH and expunges as VANISHED, and sequence numbers are refused.

mod common;

use common::{Setup, python};

#[test]
fn uidonly_session_beside_a_plain_one() {
    let s = Setup::new("", "");
    s.add_user("alice@localhost", "wonderland");
    let _server = s.start("serve", s.ports.imaps);
    let out = python(
        "imap_uidonly.py",
        &[
            s.ports.imaps.to_string(),
            "alice@localhost".into(),
            "wonderland".into(),
        ],
    );
    assert!(out.starts_with("imap uidonly ok"), "{out}");
}
