//! IMAP benchmark: prints figures, asserts nothing.
//!
//! `cargo run --release -p hermod-imapd --example bench -- [MESSAGES] [IDLE_CONNS]`
//! (defaults 100000, 10000). The server runs in a child process (this program with
//! `server DIR PORT`), so its resident memory can be read from /proc.
//!
//! 1. A mailbox of MESSAGES messages (files put into Maildir/new, indexed on first SELECT):
//!    time of the first SELECT (index build), a second SELECT, `UID FETCH 1:* (FLAGS)`, and
//!    SEARCH TEXT, SORT and THREAD, which read every message.
//! 2. IDLE_CONNS logged-in connections idling on a small folder: server memory per connection
//!    (on a freshly started server).
//!
//! Both run the imapd library in a child process over plain TCP: they measure the store and
//! the IMAP code alone. The mixed load against a real `hermod serve` over TLS, side by side
//! with Dovecot, is `imap_load` (run by `imapd/examples/compare_dovecot.sh`).

use std::time::{Duration, Instant};

use hermod_common::config::{Config, Service};
use hermod_common::context::Context;
use hermod_common::net::Shutdown;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn config(dir: &str, port: u16) -> Res<Config> {
    let mut c = Config::defaults(true);
    c.data_dir = dir.into();
    c.allow_plaintext_auth = true;
    c.limits.max_connections = 30_000;
    c.limits.max_connections_per_ip = 30_000;
    c.listen = vec![(Service::Imap, vec![format!("127.0.0.1:{port}").parse()?])];
    Ok(c)
}

async fn server(dir: &str, port: u16) -> Res<()> {
    let ctx = Context::open(config(dir, port)?).await?;
    ctx.bind(&[Service::Imap])?;
    hermod_imapd::serve(ctx, Shutdown::new()).await?;
    Ok(())
}

struct Client {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
    n: u64,
}

impl Client {
    async fn connect(port: u16) -> Res<Client> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        let (r, w) = tcp.into_split();
        let mut c = Client {
            r: BufReader::new(r),
            w,
            n: 0,
        };
        c.line().await?;
        Ok(c)
    }

    async fn line(&mut self) -> Res<String> {
        let mut l = String::new();
        if self.r.read_line(&mut l).await? == 0 {
            return Err("closed".into());
        }
        Ok(l)
    }

    /// Sends a command and reads to its tagged reply; returns the number of response bytes.
    async fn cmd(&mut self, cmd: &str) -> Res<usize> {
        self.n += 1;
        let tag = format!("t{}", self.n);
        self.w
            .write_all(format!("{tag} {cmd}\r\n").as_bytes())
            .await?;
        let mut bytes = 0;
        loop {
            let l = self.line().await?;
            bytes += l.len();
            if l.starts_with(&tag) {
                if !l[tag.len()..].starts_with(" OK") {
                    return Err(format!("{cmd}: {l}").into());
                }
                return Ok(bytes);
            }
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("server") {
        return server(&args[1], args[2].parse()?).await;
    }
    let messages: usize = args
        .first()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let idle: usize = args
        .get(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().to_str().ok_or("path")?.to_string();
    let port = 20_000 + (std::process::id() % 20_000) as u16;

    // The user and the mailbox files, written before the server starts.
    {
        let ctx = Context::open(config(&dir, port)?).await?;
        ctx.directory
            .add_user("alice@localhost", "secret", 0)
            .await?;
        let user = ctx.store.user("alice", "localhost").await?;
        let new = user.dir().join("Maildir").join("new");
        let t = Instant::now();
        for i in 0..messages {
            let body = format!(
                "From: Bob <bob@example.net>\r\nTo: alice@localhost\r\nSubject: message {i}\r\nMessage-ID: <{i}@bench>\r\n\r\nBody of message {i}.\r\n"
            );
            std::fs::write(new.join(format!("{}.M{i}.bench", 1_700_000_000 + i)), body)?;
        }
        println!("wrote {messages} message files in {:.2?}", t.elapsed());
    }
    let mut child = spawn_server(&dir, port).await?;
    let mut c = Client::connect(port).await?;
    c.cmd("LOGIN alice@localhost secret").await?;
    let t = Instant::now();
    c.cmd("SELECT INBOX").await?;
    println!(
        "first SELECT of {messages} messages (builds the index): {:.2?}",
        t.elapsed()
    );
    c.cmd("UNSELECT").await?;
    let t = Instant::now();
    c.cmd("SELECT INBOX").await?;
    println!("SELECT of {messages} messages: {:.2?}", t.elapsed());
    let t = Instant::now();
    let bytes = c.cmd("UID FETCH 1:* (FLAGS)").await?;
    println!(
        "UID FETCH 1:* (FLAGS): {:.2?} ({} KiB of responses)",
        t.elapsed(),
        bytes / 1024
    );
    let t = Instant::now();
    c.cmd("UID FETCH 1:* (FLAGS)").await?;
    println!("UID FETCH 1:* (FLAGS) again: {:.2?}", t.elapsed());
    let t = Instant::now();
    c.cmd("NOOP").await?;
    println!("NOOP in the big mailbox: {:.2?}", t.elapsed());
    // Commands that read every message.
    for cmd in [
        "SEARCH TEXT nowhere",
        "SORT (SUBJECT) UTF-8 ALL",
        "THREAD REFERENCES UTF-8 ALL",
    ] {
        let t = Instant::now();
        c.cmd(cmd).await?;
        println!("{cmd}: {:.2?}", t.elapsed());
    }
    c.cmd("LOGOUT").await.ok();

    // Idle connections on a small mailbox, on a fresh server process: the heap the big
    // mailbox left behind would otherwise absorb part of the connections' memory. Each
    // LOGIN's argon2 check takes 19 MiB; with glibc's adaptive mmap threshold that memory
    // stays in whichever thread's malloc arena ran it and shows up as "connection" memory
    // in 19 MiB steps. A fixed threshold returns it to the system after every login.
    let _ = child.kill();
    let _ = child.wait();
    let mut child = spawn_server_with(&dir, port, &[("MALLOC_MMAP_THRESHOLD_", "131072")]).await?;
    let pid = child.id();
    {
        let mut setup = Client::connect(port).await?;
        setup.cmd("LOGIN alice@localhost secret").await?;
        setup.cmd("CREATE Small").await?;
        for i in 0..20 {
            let m = format!("Subject: s{i}\r\n\r\nsmall\r\n");
            setup
                .cmd(&format!("APPEND Small {{{}+}}\r\n{m}", m.len()))
                .await?;
        }
    }
    // Logins run argon2 on blocking threads whose allocator arenas stay: warm up first so
    // the figure is the connections' own memory.
    let warm = (idle / 10).clamp(1, 500);
    let mut idlers = Vec::with_capacity(idle + warm);
    for _ in 0..warm {
        let mut c = Client::connect(port).await?;
        c.cmd("LOGIN alice@localhost secret").await?;
        c.cmd("SELECT Small").await?;
        c.w.write_all(b"i IDLE\r\n").await?;
        c.line().await?;
        idlers.push(c);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(pid);
    let t = Instant::now();
    for i in 0..idle {
        let mut c = match Client::connect(port).await {
            Ok(c) => c,
            Err(e) => {
                println!("stopped at {i} connections: {e}");
                break;
            }
        };
        c.cmd("LOGIN alice@localhost secret").await?;
        c.cmd("SELECT Small").await?;
        c.w.write_all(b"i IDLE\r\n").await?;
        c.line().await?;
        idlers.push(c);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid);
    let n = (idlers.len() - warm).max(1) as u64;
    println!(
        "{} more idle connections in {:.2?}: server RSS {} MiB -> {} MiB, {} KiB per connection",
        n,
        t.elapsed(),
        before / 1024,
        after / 1024,
        after.saturating_sub(before) / n
    );
    drop(idlers);
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

/// Starts the server (this program with `server DIR PORT`) and waits until it accepts.
async fn spawn_server(dir: &str, port: u16) -> Res<std::process::Child> {
    spawn_server_with(dir, port, &[]).await
}

/// [`spawn_server`] with extra environment variables.
async fn spawn_server_with(dir: &str, port: u16, env: &[(&str, &str)]) -> Res<std::process::Child> {
    let child = std::process::Command::new(std::env::current_exe()?)
        .args(["server", dir, &port.to_string()])
        .envs(env.iter().copied())
        .spawn()?;
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(child)
}
