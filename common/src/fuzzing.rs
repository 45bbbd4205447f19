//! Fuzz targets for the parsers in this crate, and the scaffolding the other crates'
//! targets share (a scratch directory per input, a tokio runtime per thread).
//!
//! Each target takes arbitrary bytes and must neither panic nor hang. The cargo-fuzz
//! targets in `fuzz/` call these functions, and `tests/fuzz_corpus.rs` replays the committed
//! corpora and crash reproducers through them, so a regression shows in `cargo test`.

use std::cell::RefCell;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::address::Address;
use crate::config::Config;
use crate::sasl;
use crate::store::{Flag, Flags, Store, StoreConfig, StoreMode, decode_mutf7, encode_mutf7};
use crate::store::{UserStore, validate_mailbox_name};

thread_local! {
    static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

/// Runs `fut` to completion on this thread's single-threaded runtime (made on first use).
///
/// # Panics
/// If called from inside a tokio runtime.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    RUNTIME.with(|cell| {
        let mut slot = cell.borrow_mut();
        let rt = slot.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
        });
        rt.block_on(fut)
    })
}

/// The directory this process keeps its scratch files in: under /dev/shm when there is one
/// (fsync is free there), named after the process. Directories of processes that are gone
/// are removed when it is made, so crashed fuzz runs do not pile up.
pub fn process_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        if let Ok(entries) = std::fs::read_dir(&base) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = name
                    .to_str()
                    .and_then(|n| n.strip_prefix("hermod-fuzz-"))
                    .and_then(|p| p.parse::<u32>().ok())
                else {
                    continue;
                };
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = base.join(format!("hermod-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        dir
    })
}

/// A fresh directory for one input, removed when dropped (also when the target panics).
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new() -> ScratchDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = process_dir().join(format!("run-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        ScratchDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for ScratchDir {
    fn default() -> Self {
        ScratchDir::new()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// SASL: PLAIN (base64 and raw), LOGIN fields, base64 round trip.
pub fn sasl(data: &[u8]) {
    let _ = sasl::parse_plain(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sasl::decode_plain(text);
        let _ = sasl::decode_login_field(text);
        if let Ok(bytes) = sasl::decode_base64(text) {
            let again = sasl::encode_base64(&bytes);
            assert_eq!(sasl::decode_base64(&again).ok(), Some(bytes));
        }
    }
}

/// Modified UTF-7 mailbox names (RFC 3501 5.1.3) and mailbox name validation.
pub fn mutf7(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(decoded) = decode_mutf7(&text) {
        let _ = validate_mailbox_name(&decoded);
        // What decodes re-encodes to something that decodes to the same name.
        assert_eq!(
            decode_mutf7(&encode_mutf7(&decoded)).as_deref(),
            Some(&decoded[..])
        );
    }
    let encoded = encode_mutf7(&text);
    assert_eq!(decode_mutf7(&encoded).as_deref(), Some(&text[..]));
    let _ = validate_mailbox_name(&text);
}

/// Address parsing (`local@domain`), its key and `+detail` split.
pub fn address(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(a) = Address::parse(&text) {
        let _ = a.key();
        let _ = a.split_detail();
    }
}

/// The config file parser over the `--dev` defaults, then printing the result.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut config = Config::defaults(true);
    if config.apply_file(Path::new("fuzz.toml"), text).is_ok() {
        let _ = config.to_toml();
    }
}

/// Reads every message of every mailbox, flags the first one `\Deleted` and expunges it,
/// then reads again: what the IMAP and POP3 servers do with a mailbox found on disk.
async fn read_back(user: &UserStore) {
    let Ok(mailboxes) = user.list().await else {
        return;
    };
    for mailbox in mailboxes.iter().take(8) {
        let name = mailbox.name.clone();
        let Ok(snapshot) = user.select(&name, false).await else {
            continue;
        };
        let _ = user.status(&name).await;
        let uids: Vec<_> = snapshot.messages.iter().map(|m| m.uid).take(16).collect();
        let _ = user.read_many(&name, &uids).await;
        if let Some(first) = uids.first() {
            let _ = user.read_range(&name, *first, 0..64).await;
            let deleted = Flags::from_flags(&[Flag::Deleted]);
            let _ = user
                .store(&name, &[*first], StoreMode::Add, deleted, &[], None)
                .await;
            let _ = user.expunge(&name, None).await;
            if let Ok(after) = user.select(&name, false).await {
                let uids: Vec<_> = after.messages.iter().map(|m| m.uid).take(16).collect();
                let _ = user.read_many(&name, &uids).await;
            }
        }
    }
}

/// The mbox reader: the input is the user's INBOX file, as another MDA may have left it.
pub fn store_mbox(data: &[u8]) {
    let scratch = ScratchDir::new();
    let spool = scratch.path().join("spool");
    std::fs::create_dir_all(&spool).expect("spool dir");
    std::fs::write(spool.join("alice"), data).expect("mbox file");
    let template = format!("{}/{{localpart}}", spool.display());
    let store = Store::new(StoreConfig::mbox(scratch.path(), template));
    block_on(async {
        if let Ok(user) = store.user("alice", "example.org").await {
            read_back(&user).await;
        }
    });
}

/// The Maildir reader: the input is a list of files put in the user's Maildir behind the
/// server's back. Records are separated by NUL bytes; a record is a file name line and the
/// file's content. Names starting with `cur/` or `new/` go there (default `new/`); a name
/// starting with `.` and ending in `/` makes a folder (a directory with cur, new, tmp).
pub fn store_maildir(data: &[u8]) {
    let scratch = ScratchDir::new();
    let store = Store::new(StoreConfig::maildir(scratch.path()));
    block_on(async {
        let Ok(user) = store.user("alice", "example.org").await else {
            return;
        };
        let root = user.dir().join("Maildir");
        for record in data.split(|b| *b == 0).take(32) {
            let (name, content) = match record.iter().position(|b| *b == b'\n') {
                Some(i) => (&record[..i], &record[i + 1..]),
                None => (record, &[][..]),
            };
            let Ok(name) = std::str::from_utf8(name) else {
                continue;
            };
            if let Some(folder) = name.strip_suffix('/') {
                if folder.starts_with('.') && !folder.contains('/') && folder.len() > 1 {
                    for sub in ["cur", "new", "tmp"] {
                        let _ = std::fs::create_dir_all(root.join(folder).join(sub));
                    }
                }
                continue;
            }
            let (sub, file) = if let Some(f) = name.strip_prefix("cur/") {
                ("cur", f)
            } else {
                ("new", name.strip_prefix("new/").unwrap_or(name))
            };
            if file.is_empty() || file == "." || file == ".." || file.contains('/') {
                continue;
            }
            let _ = std::fs::write(root.join(sub).join(file), content);
        }
        read_back(&user).await;
    });
}
