//! Replays every committed fuzz input (fuzz/corpus/<target>/ and the crash reproducers in
//! fuzz/regressions/<target>/) through the same functions the fuzz targets call, so a
//! regression of something a fuzzer once found fails `cargo test` without a fuzzer.

use std::path::Path;

/// A fuzz target's function: arbitrary bytes in, no panic, no hang.
type Target = fn(&[u8]);

/// Every fuzz target, by its name in fuzz/Cargo.toml, and the function it calls.
const TARGETS: &[(&str, Target)] = &[
    ("smtp_session", hermod_mta::fuzzing::session),
    ("lmtp_session", hermod_mda::fuzzing::lmtp_session),
    (
        "managesieve_session",
        hermod_mda::fuzzing::managesieve_session,
    ),
    ("sieve", hermod_mda::fuzzing::sieve),
    ("imap_session", hermod_imapd::fuzzing::session),
    ("imap_search", hermod_imapd::fuzzing::search),
    ("imap_framer", hermod_imapd::fuzzing::framer),
    ("imap_extended", hermod_imapd::fuzzing::extended),
    ("imap_mime", hermod_imapd::fuzzing::mime),
    ("pop3_session", hermod_pop3d::fuzzing::session),
    ("sasl", hermod_common::fuzzing::sasl),
    ("mutf7", hermod_common::fuzzing::mutf7),
    ("address", hermod_common::fuzzing::address),
    ("config", hermod_common::fuzzing::config),
    ("store_mbox", hermod_common::fuzzing::store_mbox),
    ("store_maildir", hermod_common::fuzzing::store_maildir),
];

fn fuzz_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz"))
}

/// The files of `dir`, sorted (none if it does not exist).
fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn replay(name: &str) -> usize {
    let (_, target) = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a known target");
    let mut count = 0;
    for sub in ["corpus", "regressions"] {
        for file in inputs(&fuzz_dir().join(sub).join(name)) {
            let data = std::fs::read(&file).expect("a readable input");
            let result = std::panic::catch_unwind(|| target(&data));
            assert!(result.is_ok(), "{name} fails on {}", file.display());
            count += 1;
        }
    }
    count
}

#[test]
fn every_fuzz_target_is_replayed_and_has_a_seed_corpus() {
    let mut declared: Vec<String> = inputs(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_string()))
        .collect();
    declared.sort();
    let mut known: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    known.sort();
    assert_eq!(declared, known, "fuzz/fuzz_targets and TARGETS differ");
    for (name, _) in TARGETS {
        assert!(
            !inputs(&fuzz_dir().join("corpus").join(name)).is_empty(),
            "no corpus for {name}"
        );
    }
}

#[test]
fn replay_smtp_session() {
    assert!(replay("smtp_session") > 0);
}

#[test]
fn replay_lmtp_session() {
    assert!(replay("lmtp_session") > 0);
}

#[test]
fn replay_imap_session() {
    assert!(replay("imap_session") > 0);
}

#[test]
fn replay_imap_search() {
    assert!(replay("imap_search") > 0);
}

#[test]
fn replay_imap_framer() {
    assert!(replay("imap_framer") > 0);
}

#[test]
fn replay_imap_extended() {
    assert!(replay("imap_extended") > 0);
}

#[test]
fn replay_imap_mime() {
    assert!(replay("imap_mime") > 0);
}

#[test]
fn replay_pop3_session() {
    assert!(replay("pop3_session") > 0);
}

#[test]
fn replay_sasl() {
    assert!(replay("sasl") > 0);
}

#[test]
fn replay_mutf7() {
    assert!(replay("mutf7") > 0);
}

#[test]
fn replay_address() {
    assert!(replay("address") > 0);
}

#[test]
fn replay_config() {
    assert!(replay("config") > 0);
}

#[test]
fn replay_store_mbox() {
    assert!(replay("store_mbox") > 0);
}

#[test]
fn replay_store_maildir() {
    assert!(replay("store_maildir") > 0);
}

#[test]
fn replay_sieve() {
    assert!(replay("sieve") > 0);
}

#[test]
fn replay_managesieve_session() {
    assert!(replay("managesieve_session") > 0);
}
