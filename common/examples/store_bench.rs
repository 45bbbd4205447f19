//! Store benchmark: durable deliveries per second with concurrent writers, into Maildir and
//! mbox, and the time to select a big mailbox.
//!
//! `cargo run --release -p hermod-common --example store_bench -- [N] [WRITERS] [SIZE] [BIG]`
//! (defaults: 20000 messages, 8 writers, 5120 bytes, 100000 for the select test).
//! Set `STORE_BENCH_DIR` to run on another file system than the temp dir.

use std::time::{Duration, Instant};

use hermod_common::store::{Store, StoreConfig};

fn message(i: usize, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: bench@example.org\r\nTo: alice@example.org\r\nSubject: bench {i}\r\n\
         Message-ID: <{i}@bench>\r\n\r\n"
    )
    .into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog. 0123456789 abcdefghij\r\n";
    while m.len() + line.len() <= size {
        m.extend_from_slice(line);
    }
    m.resize(size - 2, b'x');
    m.extend_from_slice(b"\r\n");
    m
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn deliveries(store: Store, n: usize, writers: usize, size: usize) -> (f64, Vec<Duration>) {
    let user = store.user("alice", "example.org").await.expect("open user");
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let user = user.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = w;
            while i < n {
                let msg = message(i, size);
                let t = Instant::now();
                user.deliver("INBOX", &msg).await.expect("deliver");
                lat.push(t.elapsed());
                i += writers;
            }
            lat
        }));
    }
    let mut lat = Vec::with_capacity(n);
    for t in tasks {
        lat.extend(t.await.expect("writer task"));
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    lat.sort();
    let snap = user.select("INBOX", true).await.expect("select");
    assert_eq!(snap.messages.len(), n, "every delivery is in the mailbox");
    (rate, lat)
}

/// The file system alone: each writer creates a file in tmp/, fsyncs it, renames it into
/// new/ and fsyncs new/ (what a durable Maildir delivery costs without any index).
fn raw_baseline(dir: &tempfile::TempDir, n: usize, writers: usize, size: usize) -> (f64, Duration) {
    use std::io::Write;
    let (tmp, new) = (dir.path().join("tmp"), dir.path().join("new"));
    std::fs::create_dir_all(&tmp).expect("mkdir");
    std::fs::create_dir_all(&new).expect("mkdir");
    let start = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (tmp, new) = (tmp.clone(), new.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut i = w;
                while i < n {
                    let t = Instant::now();
                    let p = tmp.join(i.to_string());
                    let mut f = std::fs::File::create_new(&p).expect("create");
                    f.write_all(&message(i, size)).expect("write");
                    f.sync_all().expect("fsync");
                    std::fs::rename(&p, new.join(i.to_string())).expect("rename");
                    std::fs::File::open(&new)
                        .and_then(|d| d.sync_all())
                        .expect("fsync dir");
                    lat.push(t.elapsed());
                    i += writers;
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("thread"))
        .collect();
    let rate = n as f64 / start.elapsed().as_secs_f64();
    lat.sort();
    (rate, percentile(&lat, 0.99))
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(20_000);
    let writers = args.get(1).copied().unwrap_or(8);
    let size = args.get(2).copied().unwrap_or(5120);
    let big = args.get(3).copied().unwrap_or(100_000);
    let base = std::env::var("STORE_BENCH_DIR").map_or_else(|_| std::env::temp_dir(), Into::into);
    println!("store_bench: {n} deliveries of {size} bytes, {writers} concurrent writers");
    // Every directory is kept until the end: deleting 20,000 files (with `discard`) slows
    // the disk down for the next phase. Each phase starts on a synced, settled disk.
    let mut keep = Vec::new();
    let settle = || {
        // SAFETY: sync() has no preconditions.
        unsafe { libc::sync() };
        std::thread::sleep(Duration::from_secs(2));
    };
    let raw_dir = tempfile::tempdir_in(&base).expect("temp dir");
    settle();
    let (raw, raw_p99) = raw_baseline(&raw_dir, n, writers, size);
    keep.push(raw_dir);
    println!(
        "raw fs   {raw:8.0} files/s        (write+fsync+rename+fsync dir, no index; p99 {:6.2} ms)",
        raw_p99.as_secs_f64() * 1e3
    );
    for kind in ["maildir", "mbox"] {
        let dir = tempfile::tempdir_in(&base).expect("temp dir");
        let cfg = if kind == "maildir" {
            StoreConfig::maildir(dir.path())
        } else {
            StoreConfig::mbox(dir.path(), "spool/{localpart}")
        };
        settle();
        let (rate, lat) = deliveries(Store::new(cfg), n, writers, size).await;
        keep.push(dir);
        println!(
            "{kind:8} {rate:8.0} deliveries/s   latency p50 {:6.2} ms  p99 {:6.2} ms  max {:6.2} ms",
            percentile(&lat, 0.50).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
            percentile(&lat, 1.0).as_secs_f64() * 1e3,
        );
    }

    // A big mailbox: files dropped into cur/ by another tool, indexed on first select.
    let dir = tempfile::tempdir_in(&base).expect("temp dir");
    let store = Store::new(StoreConfig::maildir(dir.path()));
    let user = store.user("alice", "example.org").await.expect("open user");
    let cur = user.dir().join("Maildir/cur");
    let body = message(0, 1024);
    for i in 0..big {
        std::fs::write(
            cur.join(format!("{i}.M1P1.bench,S={}:2,S", body.len())),
            &body,
        )
        .expect("write");
    }
    let t = Instant::now();
    let snap = user.select("INBOX", true).await.expect("select");
    let first = t.elapsed();
    assert_eq!(snap.messages.len(), big);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The first select after the settle time re-checks the directory once.
    let t = Instant::now();
    let _ = user.select("INBOX", true).await.expect("select");
    let settled = t.elapsed();
    let t = Instant::now();
    let snap = user.select("INBOX", true).await.expect("select");
    let warm = t.elapsed();
    let t = Instant::now();
    let st = user.status("INBOX").await.expect("status");
    let status = t.elapsed();
    assert_eq!(st.messages as usize, big);
    println!(
        "select of {} messages: first (indexing) {:.0} ms, re-check {:.0} ms, indexed {:.0} ms; status {:.1} ms",
        snap.messages.len(),
        first.as_secs_f64() * 1e3,
        settled.as_secs_f64() * 1e3,
        warm.as_secs_f64() * 1e3,
        status.as_secs_f64() * 1e3
    );
}
