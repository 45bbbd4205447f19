//! Delivery benchmark: N messages of SIZE bytes by W concurrent writers through
//! `Delivery::deliver_one` (directory lookup, trace headers, durable store write), into
//! Maildir and then into mbox. Prints deliveries per second and latency percentiles.
//!
//! cargo run --release -p hermod-mda --example deliver_bench -- [--n 20000] [--writers 8]
//!     [--size 5120] [--users W] [--dir PATH] [--sieve-rules R]
//!
//! `--users` is how many mailboxes the writers share (default: one per writer; 1 = all
//! into one mailbox). `--dir` is where the temporary data dirs go (default: the system temp
//! dir); use a real disk, as fsync on tmpfs costs nothing. `--sieve-rules R` gives every
//! user an active Sieve script of R rules (header, address, envelope-free tests that do not
//! match, so each message goes through all of them and is kept).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hermod_common::config::MailboxFormat;
use hermod_common::{Config, Context};
use hermod_mda::Delivery;

struct Options {
    n: usize,
    writers: usize,
    size: usize,
    users: usize,
    dir: Option<std::path::PathBuf>,
    sieve_rules: usize,
}

fn options() -> Options {
    let mut o = Options {
        n: 20_000,
        writers: 8,
        size: 5 * 1024,
        users: 0,
        dir: None,
        sieve_rules: 0,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        let number = || value.parse::<usize>().unwrap_or_else(|_| usage());
        match args[i].as_str() {
            "--n" => o.n = number(),
            "--writers" => o.writers = number().max(1),
            "--size" => o.size = number(),
            "--users" => o.users = number(),
            "--dir" => o.dir = Some(value.clone().into()),
            "--sieve-rules" => o.sieve_rules = number(),
            _ => usage(),
        }
        i += 2;
    }
    if o.users == 0 {
        o.users = o.writers;
    }
    o
}

fn usage() -> ! {
    eprintln!(
        "usage: deliver_bench [--n N] [--writers W] [--size BYTES] [--users U] [--dir PATH] \
         [--sieve-rules R]"
    );
    std::process::exit(2)
}

fn message(size: usize, i: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Bench <bench@remote.example>\r\nTo: user@example.org\r\nSubject: message {i}\r\nMessage-ID: <{i}@bench.example>\r\n\r\n"
    )
    .into_bytes();
    let line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n";
    while m.len() < size {
        let take = line.len().min(size - m.len());
        m.extend_from_slice(&line[..take]);
    }
    m
}

/// A script of `rules` rules that never match (so all are evaluated).
fn sieve_script(rules: usize) -> String {
    let mut s = String::from("require [\"fileinto\", \"imap4flags\", \"regex\"];\n");
    for i in 0..rules {
        let test = match i % 5 {
            0 => format!("header :contains \"subject\" \"never-{i}\""),
            1 => format!("address :domain :is \"from\" \"never{i}.example\""),
            2 => format!("header :matches \"list-id\" \"*<list{i}.*>\""),
            3 => format!("header :regex \"subject\" \"^\\\\[never{i}\\\\]\""),
            _ => format!("allof (exists \"x-never-{i}\", true)"),
        };
        s.push_str(&format!(
            "if {test} {{ addflag \"$r{i}\"; fileinto \"F{i}\"; stop; }}\n"
        ));
    }
    s
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

async fn run(format: MailboxFormat, o: &Options) -> Result<(), Box<dyn std::error::Error>> {
    let tmp = match &o.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let mut config = Config::defaults(true);
    config.data_dir = tmp.path().to_path_buf();
    config.mailbox_format = format;
    config.listen = Vec::new();
    let ctx = Context::open(config).await?;
    ctx.directory.add_domain("example.org").await?;
    let mut users = Vec::new();
    for u in 0..o.users {
        let address = format!("user{u}@example.org");
        ctx.directory
            .add_user(&address, "bench-password", 0)
            .await?;
        // Open each store once before timing (creates the default folders).
        ctx.store.user(&format!("user{u}"), "example.org").await?;
        if o.sieve_rules > 0 {
            let scripts = hermod_mda::sieve::store::ScriptStore::new(tmp.path());
            let local = format!("user{u}");
            scripts.put(&local, "example.org", "bench", &sieve_script(o.sieve_rules))?;
            scripts.activate(&local, "example.org", "bench")?;
        }
        users.push(address);
    }
    let users = Arc::new(users);
    let delivery = Delivery::from_context(&ctx);
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..o.writers {
        let (delivery, users, next, failures) = (
            delivery.clone(),
            users.clone(),
            next.clone(),
            failures.clone(),
        );
        let (n, size) = (o.n, o.size);
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(n / 8 + 1);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let msg = message(size, i);
                let rcpt = &users[(w + i) % users.len()];
                let t = Instant::now();
                let r = delivery
                    .deliver_one("bench@remote.example", rcpt, &msg)
                    .await;
                latencies.push(t.elapsed());
                if !r.is_success() && failures.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("delivery failed: {}", r.reply);
                }
            }
            latencies
        });
    }
    let mut latencies = Vec::with_capacity(o.n);
    while let Some(r) = tasks.join_next().await {
        latencies.extend(r?);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let name = match format {
        MailboxFormat::Maildir => "maildir",
        MailboxFormat::Mbox => "mbox",
    };
    println!(
        "{name:8} n={} writers={} users={} size={}B sieve_rules={}: {:.0} deliveries/s in {:.2}s, latency p50={:.2}ms p99={:.2}ms max={:.2}ms, failures={}",
        o.n,
        o.writers,
        o.users,
        o.size,
        o.sieve_rules,
        o.n as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        failures.load(Ordering::Relaxed),
    );
    Ok(())
}

#[tokio::main]
async fn main() {
    let o = options();
    for format in [MailboxFormat::Maildir, MailboxFormat::Mbox] {
        if let Err(e) = run(format, &o).await {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}
