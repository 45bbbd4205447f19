//! MULTIAPPEND (RFC 3502), CATENATE (RFC 4469), ESORT and CONTEXT=SEARCH (RFC 5267) and
//! PARTIAL (RFC 9394) against the real server, driven by a Python client over IMAPS.

mod common;

use common::{Setup, python};

#[test]
fn multiappend_catenate_esort_context_partial() {
    let s = Setup::new("", "");
    s.add_user("alice@localhost", "wonderland");
    let _server = s.start("serve", s.ports.imaps);
    let out = python(
        "imap_append_search_ext.py",
        &[
            s.ports.imaps.to_string(),
            "alice@localhost".into(),
            "wonderland".into(),
        ],
    );
    assert!(out.starts_with("append search ext ok"), "{out}");
}
