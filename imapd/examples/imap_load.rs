//! IMAP mixed load against a running server over implicit TLS (the IMAPS port), the client
//! of `imapd/examples/compare_dovecot.sh`: prints figures, asserts nothing.
//!
//! ```text
//! imap_load write-maildir DIR [--messages 1000]
//! imap_load --port PORT [--clients 20] [--secs 10] [--server-pid PID]
//! ```
//!
//! `write-maildir` writes a Maildir++ root at DIR (an empty INBOX and a folder `Load` of
//! MESSAGES messages of 1 to 20 KB, 80 % of them \Seen), to be copied into each user's
//! Maildir on the server under test before it starts: both servers get the same files.
//!
//! The load: CLIENTS connections, each its own user `loadK@example.org` (password
//! `secret`), each does a TLS handshake, LOGIN and SELECT Load (not timed: the first SELECT
//! builds the server's index), then, for SECS seconds once all are ready, repeats a round of
//! what a mail client does in an open folder:
//! APPEND a message; FETCH the headers, flags and sizes of the newest 50; `UID FETCH 1:*
//! (FLAGS)` (a resync); FETCH the whole of one message; STORE \Seen on it; SEARCH UNSEEN;
//! STORE \Deleted on the appended message and EXPUNGE it (the folder keeps its size).
//! Printed: commands/s, each command's mean latency, and with `--server-pid` the server's
//! CPU time in that window (see [`cpu_ticks`]: what counts as the server's CPU).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const FOLDER: &str = "Load";
const PASSWORD: &str = "secret";
/// Dovecot's processes that serve IMAP clients: the rest of its tree (the master, log,
/// config, anvil, stats) is bookkeeping that an idle Dovecot also has.
const DOVECOT_SERVING: [&str; 3] = ["imap", "imap-login", "auth"];

struct Options {
    port: u16,
    clients: usize,
    secs: u64,
    server_pid: Option<u32>,
}

fn options(args: &[String]) -> Res<Options> {
    let mut o = Options {
        port: 0,
        clients: 20,
        secs: 10,
        server_pid: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--port" => o.port = value.parse()?,
            "--clients" => o.clients = value.parse()?,
            "--secs" => o.secs = value.parse()?,
            "--server-pid" => o.server_pid = Some(value.parse()?),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    if o.port == 0 {
        return Err("--port PORT is needed".into());
    }
    Ok(o)
}

/// Message `i`: realistic headers and a body of 1 to 20 KB of 76-character lines.
fn message(i: usize) -> String {
    let mut m = format!(
        "Return-Path: <sender{s}@example.net>\r\nFrom: Sender {s} <sender{s}@example.net>\r\n\
         To: load@example.org\r\nSubject: Report number {i} on the state of things\r\n\
         Date: Tue, 25 Nov 2026 12:{:02}:00 +0000\r\nMessage-ID: <{i}.load@example.net>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
        i % 60,
        s = i % 37,
    );
    let size = 1024 + (i * 7919) % (19 * 1024);
    let mut line = 0;
    while m.len() < size {
        m.push_str(&format!(
            "{line:04} Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusm\r\n"
        ));
        line += 1;
    }
    m
}

fn write_maildir(dir: &str, messages: usize) -> Res<()> {
    let root = std::path::Path::new(dir);
    let folder = root.join(format!(".{FOLDER}"));
    for d in [root, folder.as_path()] {
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(d.join(sub))?;
        }
    }
    std::fs::write(folder.join("maildirfolder"), "")?;
    for i in 0..messages {
        let flags = if i % 5 == 0 { "" } else { "S" };
        let name = format!("{}.M{i}P1.load:2,{flags}", 1_700_000_000 + i);
        std::fs::write(folder.join("cur").join(name), message(i))?;
    }
    println!("wrote {messages} messages into {}", folder.display());
    Ok(())
}

struct Client {
    s: BufReader<TlsStream<TcpStream>>,
    n: u64,
}

impl Client {
    async fn connect(port: u16, tls: &tokio_rustls::TlsConnector) -> Res<Client> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from("localhost")?;
        let mut c = Client {
            s: BufReader::new(tls.connect(name, tcp).await?),
            n: 0,
        };
        c.line().await?;
        Ok(c)
    }

    /// One response line, with the literals (`{N}` then N bytes) it contains.
    async fn line(&mut self) -> Res<String> {
        let mut l = String::new();
        loop {
            if self.s.read_line(&mut l).await? == 0 {
                return Err("closed".into());
            }
            let Some(len) = literal_len(&l) else {
                return Ok(l);
            };
            let mut literal = vec![0; len];
            self.s.read_exact(&mut literal).await?;
            l.push_str(&String::from_utf8_lossy(&literal));
        }
    }

    /// Sends a command, reads to its tagged reply (which must be OK); returns the untagged
    /// responses.
    async fn cmd(&mut self, cmd: &str) -> Res<String> {
        self.n += 1;
        let tag = format!("t{}", self.n);
        let w = self.s.get_mut();
        w.write_all(format!("{tag} {cmd}\r\n").as_bytes()).await?;
        w.flush().await?;
        let mut untagged = String::new();
        loop {
            let l = self.line().await?;
            if let Some(rest) = l.strip_prefix(&tag) {
                if !rest.starts_with(" OK") {
                    return Err(format!("{cmd}: {l}").into());
                }
                return Ok(untagged);
            }
            untagged.push_str(&l);
        }
    }

    /// APPEND with a non-synchronising literal (LITERAL+, which both servers have).
    async fn append(&mut self, m: &str) -> Res<String> {
        self.cmd(&format!("APPEND {FOLDER} {{{}+}}\r\n{m}", m.len()))
            .await
    }
}

/// The length of the literal that ends this line (`... {123}\r\n`), if any.
fn literal_len(line: &str) -> Option<usize> {
    let inner = line.strip_suffix("}\r\n")?;
    let open = inner.rfind('{')?;
    inner[open + 1..].trim_end_matches('+').parse().ok()
}

const COMMANDS: [&str; 8] = [
    "APPEND",
    "FETCH newest 50 headers",
    "UID FETCH 1:* (FLAGS)",
    "FETCH one BODY.PEEK[]",
    "STORE +FLAGS (\\Seen)",
    "SEARCH UNSEEN",
    "STORE +FLAGS.SILENT (\\Deleted)",
    "EXPUNGE",
];

/// One client's rounds until `deadline`; returns the time spent in each command and the
/// number of rounds, and the connection (kept open until the server's CPU has been read).
async fn rounds(
    mut c: Client,
    k: usize,
    mut exists: usize,
    ready: Arc<tokio::sync::Barrier>,
    secs: u64,
) -> Res<([Duration; 8], u64, Client)> {
    ready.wait().await;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut spent = [Duration::ZERO; 8];
    let mut done = 0u64;
    let mut random = k as u64 + 1;
    while Instant::now() < deadline {
        random = random
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let one = 1 + (random >> 33) as usize % exists.max(1);
        let m = message(1_000_000 + done as usize);
        let first = exists.saturating_sub(49).max(1);
        let commands = [
            String::new(), // APPEND, below
            format!(
                "FETCH {first}:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From To Subject Date Message-ID)])"
            ),
            "UID FETCH 1:* (FLAGS)".to_string(),
            format!("FETCH {one} BODY.PEEK[]"),
            format!("STORE {one} +FLAGS (\\Seen)"),
            "SEARCH UNSEEN".to_string(),
            String::new(), // STORE \Deleted on the appended message, below
            "EXPUNGE".to_string(),
        ];
        for (n, cmd) in commands.iter().enumerate() {
            let t = Instant::now();
            match n {
                0 => {
                    c.append(&m).await?;
                    exists += 1;
                }
                6 => {
                    c.cmd(&format!("STORE {exists} +FLAGS.SILENT (\\Deleted)"))
                        .await?;
                }
                7 => {
                    c.cmd(cmd).await?;
                    exists -= 1;
                }
                _ => {
                    c.cmd(cmd).await?;
                }
            }
            spent[n] += t.elapsed();
        }
        done += 1;
    }
    Ok((spent, done, c))
}

/// The number of messages a SELECT's responses announce.
fn exists(select: &str) -> Res<usize> {
    select
        .lines()
        .find_map(|l| l.strip_prefix("* ")?.strip_suffix(" EXISTS")?.parse().ok())
        .ok_or_else(|| format!("no EXISTS in {select:?}").into())
}

async fn load(o: Options) -> Res<()> {
    let tls = tls_connector();
    let ready = Arc::new(tokio::sync::Barrier::new(o.clients + 1));
    let mut tasks = Vec::new();
    let setup = Instant::now();
    let port = o.port;
    for k in 0..o.clients {
        let (ready, tls) = (ready.clone(), tls.clone());
        let secs = o.secs;
        tasks.push(tokio::spawn(async move {
            let setup = async {
                let mut c = Client::connect(port, &tls).await?;
                c.cmd(&format!("LOGIN load{k}@example.org {PASSWORD}"))
                    .await?;
                let n = exists(&c.cmd(&format!("SELECT {FOLDER}")).await?)?;
                if k == 0 {
                    println!("{FOLDER} holds {n} messages");
                }
                Res::Ok((c, n))
            };
            match setup.await {
                Ok((c, n)) => rounds(c, k, n, ready, secs).await,
                Err(e) => {
                    // The others wait for every client at the barrier.
                    ready.wait().await;
                    Err(format!("client {k}: {e}").into())
                }
            }
        }));
    }
    ready.wait().await;
    println!(
        "{} clients connected over TLS, logged in and selected {FOLDER} in {:.2} s",
        o.clients,
        setup.elapsed().as_secs_f64()
    );
    let cpu_before = o.server_pid.map(cpu_ticks);
    let started = Instant::now();
    let mut spent = [Duration::ZERO; 8];
    let mut rounds = 0u64;
    let mut open = Vec::new();
    for t in tasks {
        let (s, n, c) = t.await??;
        for (a, b) in spent.iter_mut().zip(s) {
            *a += b;
        }
        rounds += n;
        open.push(c);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = o.server_pid.map(cpu_ticks);
    drop(open);
    for (name, s) in COMMANDS.iter().zip(spent) {
        println!(
            "  {name}: {:.2} ms mean",
            s.as_secs_f64() * 1e3 / rounds.max(1) as f64
        );
    }
    let commands = rounds * COMMANDS.len() as u64;
    println!(
        "mixed load: {} clients, {elapsed:.1} s, {commands} commands, {:.0} commands/s",
        o.clients,
        commands as f64 / elapsed
    );
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        let per = |ticks: u64| ticks as f64 * 10_000.0 / commands.max(1) as f64;
        let serving = after.serving.saturating_sub(before.serving);
        let tree = after.tree.saturating_sub(before.tree);
        println!(
            "server CPU: {:.2} s, {:.0} µs per command (serving processes); \
             whole process tree {:.2} s, {:.0} µs per command",
            serving as f64 / 100.0,
            per(serving),
            tree as f64 / 100.0,
            per(tree)
        );
    }
    Ok(())
}

/// CPU time (user + system, in clock ticks of 10 ms) of a server's processes.
struct Ticks {
    /// The processes that serve clients: for a single-process server (hermod) that process;
    /// for Dovecot its `imap`, `imap-login` and `auth` processes (all of them stay alive
    /// while the measured connections are open).
    serving: u64,
    /// Every process in the tree under `pid`, `pid` included, plus the children it has
    /// reaped (their time is in the parents' cutime and cstime).
    tree: u64,
}

fn cpu_ticks(pid: u32) -> Ticks {
    // (pid, ppid, command name, own ticks, reaped children's ticks)
    let mut procs: Vec<(u32, u32, String, u64, u64)> = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: the name may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        procs.push((p, num(1) as u32, name, num(11) + num(12), num(13) + num(14)));
    }
    let mut ticks = Ticks {
        serving: 0,
        tree: 0,
    };
    let single = procs.iter().all(|&(_, parent, ..)| parent != pid);
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for (child, parent, name, own, reaped) in &procs {
            if *child == p {
                ticks.tree += own + reaped;
                if single || DOVECOT_SERVING.contains(&name.as_str()) {
                    ticks.serving += own;
                }
            }
            if *parent == p {
                todo.push(*child);
            }
        }
    }
    ticks
}

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("write-maildir") {
        let dir = args.get(1).ok_or("write-maildir DIR")?;
        let messages = match args.get(2).map(String::as_str) {
            Some("--messages") => args.get(3).ok_or("--messages N")?.parse()?,
            _ => 1000,
        };
        return write_maildir(dir, messages);
    }
    load(options(&args)?).await
}

/// The benchmark talks to servers with a throw-away self-signed certificate: accept any.
fn tls_connector() -> tokio_rustls::TlsConnector {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);
    impl ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}
