//! SMTP load benchmark: sends N messages over C connections to local recipients and prints
//! two rates, the accepted rate (messages / time until the last 250 after DATA) and the
//! delivered rate (messages / time until every message is a file in a Maildir), and the
//! per-message latency: from the moment the message was due to be sent, through MAIL FROM,
//! RCPT TO and DATA (sent pipelined), to the 250 after the end of DATA (which includes
//! writing the message durably to the queue).
//!
//! ```text
//! cargo run --release -p hermod-mta --example smtp_load -- \
//!     [--messages 10000] [--connections 20] [--size 5120] [--delivery store|null] \
//!     [--target 127.0.0.1:2525 --maildir DIR] [--rate MSGS_PER_SEC]
//! ```
//!
//! Without `--rate` every connection sends its next message as soon as the last one got its
//! 250 (a closed loop: the highest rate the server takes); a message is then due when the
//! previous one got its 250. With `--rate` (an open loop) each message has a fixed due time
//! in a schedule made in advance: the connections together start one message every
//! 1/rate s. A message whose connection is still busy with an earlier one waits, and that
//! wait counts in its latency (no coordinated omission), so the latencies of two servers
//! can be compared at the same offered load.
//!
//! `--auth verify` turns on mail authentication for the load (SPF of HELO and MAIL FROM,
//! DKIM, DMARC, iprev, against a fake DNS on loopback that publishes SPF, DMARC and a DKIM key
//! for the sender's domain; every message carries an RSA-2048 and an Ed25519 signature), to
//! compare with `--auth off` (the default). Either way it first prints what DKIM signing of
//! one message costs (RSA-2048 + Ed25519), the work `sign` adds to outgoing mail.
//!
//! `--delivery store` files each message into the recipient's Maildir through the mail store
//! (what the MDA does); `null` drops it, to measure the MTA alone.
//!
//! With `--target` it starts no server and loads the one at that address instead (a running
//! `hermod serve`, or Postfix, to compare), sending to `user0..user19@example.org`, which must
//! exist there. Delivery is then timed by counting the files in the Maildirs under
//! `--maildir` (every `new/` directory below it), polling every 20 ms until all N are
//! there. Without `--target` the MTA runs in this process and a message counts as delivered
//! when the store has filed it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hermod_common::config::Service;
use hermod_common::{Config, Context, Shutdown};
use hermod_mta::{DeliveryError, LocalDelivery};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const USERS: usize = 20;

struct Options {
    messages: usize,
    connections: usize,
    size: usize,
    store: bool,
    target: Option<SocketAddr>,
    maildir: Option<PathBuf>,
    rate: Option<f64>,
    verify: bool,
}

fn options() -> Options {
    let mut o = Options {
        messages: 10_000,
        connections: 20,
        size: 5 * 1024,
        store: true,
        target: None,
        maildir: None,
        rate: None,
        verify: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--messages" => o.messages = value.parse().expect("--messages N"),
            "--connections" => o.connections = value.parse().expect("--connections N"),
            "--size" => o.size = value.parse().expect("--size BYTES"),
            "--delivery" => o.store = value != "null",
            "--target" => o.target = Some(value.parse().expect("--target IP:PORT")),
            "--maildir" => o.maildir = Some(PathBuf::from(value)),
            "--rate" => o.rate = Some(value.parse().expect("--rate MSGS_PER_SEC")),
            "--auth" => o.verify = value == "verify",
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    o
}

/// Local delivery for the benchmark: into the store (as the MDA does), or nowhere.
struct BenchDelivery {
    ctx: Arc<Context>,
    store: bool,
    delivered: AtomicUsize,
}

impl LocalDelivery for BenchDelivery {
    async fn deliver(
        &self,
        _sender: &str,
        recipient: &str,
        message: &[u8],
    ) -> Result<(), DeliveryError> {
        if self.store {
            let (local, domain) = recipient
                .rsplit_once('@')
                .ok_or_else(|| DeliveryError::permanent("550 5.1.3 bad address"))?;
            let user = self
                .ctx
                .store
                .user(local, domain)
                .await
                .map_err(|e| DeliveryError::temporary(format!("451 4.3.0 {e}")))?;
            user.deliver("INBOX", message)
                .await
                .map_err(|e| DeliveryError::temporary(format!("451 4.3.0 {e}")))?;
        }
        self.delivered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Signs the load's messages (sender domain example.net) when set.
static SIGNER: std::sync::OnceLock<hermod_mta::auth::sign::DkimSigning> =
    std::sync::OnceLock::new();

fn message(size: usize, n: usize) -> Vec<u8> {
    let m = unsigned_message(size, n);
    let Some(signer) = SIGNER.get() else {
        return m;
    };
    let body_end = m.len() - 3; // without the final ".\r\n"
    let mut signed = signer.sign("example.net", &m[..body_end]);
    signed.extend_from_slice(&m);
    signed
}

fn unsigned_message(size: usize, n: usize) -> Vec<u8> {
    let mut m = format!(
        "From: load@example.net\r\nTo: user{}@example.org\r\nSubject: load test {n}\r\n\
         Message-ID: <{n}@load.example.net>\r\n\r\n",
        n % USERS
    )
    .into_bytes();
    let line =
        b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n";
    while m.len() + line.len() <= size {
        m.extend_from_slice(line);
    }
    m.extend_from_slice(b".\r\n");
    m
}

async fn read_reply(conn: &mut BufReader<TcpStream>) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line).await.expect("read") == 0 {
            panic!("server closed the connection after {all:?}");
        }
        all.push_str(&line);
        if line.as_bytes().get(3) == Some(&b' ') {
            return all;
        }
    }
}

/// When a paced connection starts its messages: the first at `start`, then one every
/// `interval`.
struct Pace {
    start: tokio::time::Instant,
    interval: Duration,
}

/// One client connection sending `count` messages; returns their latencies, each from the
/// message's due time to the 250 after its DATA.
async fn client(
    addr: std::net::SocketAddr,
    first: usize,
    count: usize,
    messages: Arc<Vec<Vec<u8>>>,
    pace: Option<Pace>,
) -> Vec<Duration> {
    let size = messages.first().map_or(0, Vec::len);
    let mut conn = BufReader::new(TcpStream::connect(addr).await.expect("connect"));
    conn.get_ref().set_nodelay(true).ok();
    read_reply(&mut conn).await;
    conn.get_mut()
        .write_all(b"EHLO load.example.net\r\n")
        .await
        .unwrap();
    read_reply(&mut conn).await;
    let mut latencies = Vec::with_capacity(count);
    for (k, n) in (first..first + count).enumerate() {
        // Open loop: due at its place in the schedule, sent then or, if the connection is
        // still busy, as soon as it is free. Closed loop: due now.
        let due = match &pace {
            Some(p) => {
                let due = p.start + p.interval * k as u32;
                tokio::time::sleep_until(due).await;
                due
            }
            None => tokio::time::Instant::now(),
        };
        let envelope = format!(
            "MAIL FROM:<load@example.net> SIZE={size}\r\nRCPT TO:<user{}@example.org>\r\nDATA\r\n",
            n % USERS
        );
        conn.get_mut().write_all(envelope.as_bytes()).await.unwrap();
        for expected in ["250", "250", "354"] {
            let reply = read_reply(&mut conn).await;
            assert!(reply.starts_with(expected), "{reply}");
        }
        conn.get_mut().write_all(&messages[n]).await.unwrap();
        let reply = read_reply(&mut conn).await;
        latencies.push(due.elapsed());
        assert!(reply.starts_with("250"), "{reply}");
    }
    conn.get_mut().write_all(b"QUIT\r\n").await.unwrap();
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Files delivered into the Maildirs below `root` (in any `new/`: nothing reads them).
fn count_maildir_files(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut n = 0;
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        if entry.file_name() == "new" {
            n += std::fs::read_dir(&path).map_or(0, |d| d.count());
        } else if !matches!(entry.file_name().to_str(), Some("tmp" | "cur")) {
            n += count_maildir_files(&path);
        }
    }
    n
}

/// The load's messages, made (and signed) before the clock starts, so the clients cost the
/// same with and without verification.
fn make_messages(o: &Options) -> Arc<Vec<Vec<u8>>> {
    Arc::new((0..o.messages).map(|n| message(o.size, n)).collect())
}

/// Sends the load over `connections` clients; returns when every message got its 250, with
/// the messages' latencies.
async fn send_load(addr: SocketAddr, o: &Options, messages: Arc<Vec<Vec<u8>>>) -> Vec<Duration> {
    let mut tasks = Vec::new();
    let per = o.messages / o.connections;
    let start = tokio::time::Instant::now();
    for c in 0..o.connections {
        // Connection c starts at c/rate; together they start one message every 1/rate.
        let pace = o.rate.map(|rate| Pace {
            start: start + Duration::from_secs_f64(c as f64 / rate),
            interval: Duration::from_secs_f64(o.connections as f64 / rate),
        });
        let count = if c == o.connections - 1 {
            o.messages - per * c
        } else {
            per
        };
        tasks.push(tokio::spawn(client(
            addr,
            c * per,
            count,
            messages.clone(),
            pace,
        )));
    }
    let mut latencies = Vec::with_capacity(o.messages);
    for t in tasks {
        latencies.extend(t.await.expect("client"));
    }
    latencies.sort();
    latencies
}

fn print_results(
    o: &Options,
    accepted_in: Duration,
    delivered_in: Option<Duration>,
    latencies: &[Duration],
) {
    let rate = |d: Duration| o.messages as f64 / d.as_secs_f64();
    println!(
        "accepted: {} messages in {:.2} s = {:.0} msg/s (until the last 250)",
        o.messages,
        accepted_in.as_secs_f64(),
        rate(accepted_in)
    );
    match delivered_in {
        Some(d) => println!(
            "delivered: {} messages in {:.2} s = {:.0} msg/s (until all are in the Maildirs)",
            o.messages,
            d.as_secs_f64(),
            rate(d)
        ),
        None => println!("delivered: not measured (no --maildir)"),
    }
    let load = match o.rate {
        Some(r) => format!("open loop, {r} msg/s offered; from the scheduled send time"),
        None => "closed loop; from MAIL FROM".to_string(),
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "latency ({load} to the 250 after DATA): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(latencies, 0.50)),
        ms(percentile(latencies, 0.99)),
        latencies.last().copied().map_or(0.0, ms)
    );
}

/// `--target`: loads a server running elsewhere.
async fn load_external(o: &Options, addr: SocketAddr) {
    let before = o.maildir.as_deref().map(count_maildir_files);
    println!(
        "sending {} messages of {} bytes over {} connections to {addr}",
        o.messages, o.size, o.connections
    );
    let messages = make_messages(o);
    let started = Instant::now();
    let latencies = send_load(addr, o, messages).await;
    let accepted_in = started.elapsed();
    let delivered_in = match (&o.maildir, before) {
        (Some(root), Some(before)) => {
            let deadline = Instant::now() + Duration::from_secs(600);
            while count_maildir_files(root) < before + o.messages {
                assert!(Instant::now() < deadline, "not all delivered in 10 minutes");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Some(started.elapsed())
        }
        _ => None,
    };
    print_results(o, accepted_in, delivered_in, &latencies);
}

// The tests' fake DNS; the benchmark uses only its TXT records.
#[allow(dead_code)]
#[path = "../tests/outbound_support/dns.rs"]
mod fake_dns;

/// Keys for the sender's domain (published in the fake DNS) and the time one signing takes.
fn prepare_signing(dir: &Path, dns: &fake_dns::FakeDns, size: usize) -> Duration {
    use hermod_mta::auth::keys::{Algorithm, KeyStore};
    let store = KeyStore::new(dir);
    for (selector, algorithm) in [("rsa1", Algorithm::Rsa), ("ed1", Algorithm::Ed25519)] {
        let key = store
            .generate("example.net", selector, algorithm)
            .expect("key");
        dns.txt(
            &format!("{selector}._domainkey.example.net"),
            &format!(
                "v=DKIM1; k={}; p={}",
                algorithm.key_type(),
                key.public_key_base64
            ),
        );
    }
    let signer = hermod_mta::auth::sign::DkimSigning::new(store);
    let m = unsigned_message(size, 0);
    let rounds = 200;
    let started = Instant::now();
    for _ in 0..rounds {
        assert!(!signer.sign("example.net", &m).is_empty());
    }
    let cost = started.elapsed() / rounds;
    let _ = SIGNER.set(signer);
    cost
}

#[tokio::main]
async fn main() {
    let o = options();
    if let Some(addr) = o.target {
        load_external(&o, addr).await;
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut config = Config::defaults(true);
    config.data_dir = tmp.path().to_path_buf();
    config.listen = vec![(Service::Smtp, vec!["127.0.0.1:0".parse().unwrap()])];
    config.limits.max_connections_per_ip = o.connections + 10;
    // Never the system's resolver: a fake DNS on loopback, or a dead loopback port.
    let dns = fake_dns::FakeDns::start().await;
    config.dns.nameservers = vec![hermod_common::config::ListenAddrString(
        dns.addr.to_string(),
    )];
    config.mail_auth.verify = o.verify;
    config.mail_auth.verify_mynetworks = o.verify;
    let signing_cost = prepare_signing(&tmp.path().join("sender-keys"), &dns, o.size);
    println!(
        "DKIM signing of one {} byte message with RSA-2048 + Ed25519: {:.0} us",
        o.size,
        signing_cost.as_secs_f64() * 1e6
    );
    if o.verify {
        dns.txt("example.net", "v=spf1 ip4:127.0.0.1 -all");
        dns.txt("load.example.net", "v=spf1 ip4:127.0.0.1 -all");
        dns.txt("_dmarc.example.net", "v=DMARC1; p=reject");
    }
    let ctx = Context::open(config).await.expect("context");
    ctx.directory.add_domain("example.org").await.unwrap();
    for u in 0..USERS {
        ctx.directory
            .add_user(&format!("user{u}@example.org"), "pw", 0)
            .await
            .unwrap();
    }
    ctx.bind(&[Service::Smtp]).unwrap();
    let addr = ctx.bound_addrs()[0].1;
    let shutdown = Shutdown::new();
    let delivery = Arc::new(BenchDelivery {
        ctx: ctx.clone(),
        store: o.store,
        delivered: AtomicUsize::new(0),
    });
    let server = tokio::spawn(hermod_mta::serve_with(
        ctx.clone(),
        shutdown.clone(),
        delivery.clone(),
    ));

    println!(
        "sending {} messages of {} bytes over {} connections (delivery: {}, data dir {})",
        o.messages,
        o.size,
        o.connections,
        if o.store { "Maildir store" } else { "null" },
        tmp.path().display()
    );
    let messages = make_messages(&o);
    let started = Instant::now();
    let latencies = send_load(addr, &o, messages).await;
    let accepted_in = started.elapsed();
    while delivery.delivered.load(Ordering::Relaxed) < o.messages {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let delivered_in = started.elapsed();
    print_results(&o, accepted_in, Some(delivered_in), &latencies);
    shutdown.trigger();
    let _ = server.await;
}
