//! IMAP4rev2 (ENABLE IMAP4rev2) beside IMAP4rev1, with BINARY, SEARCHRES, OBJECTID and
//! SAVEDATE, from a raw client against the real server.

mod common;

use common::{Setup, python};

#[test]
fn imap4rev2_binary_searchres_objectid_savedate() {
    let s = Setup::new("", "");
    s.add_user("alice@localhost", "wonderland");
    let _server = s.start("serve", s.ports.imaps);
    let out = python(
        "imap_rev2.py",
        &[
            s.ports.imaps.to_string(),
            "alice@localhost".into(),
            "wonderland".into(),
        ],
    );
    assert!(out.starts_with("imap rev2 ok"), "{out}");
}
