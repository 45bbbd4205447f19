//! POP3 download benchmark: fill a maildrop with N messages (default 10,000 of 5 KB), then
//! download them all with RETR over one connection and print messages/s and MB/s.
//!
//! ```text
//! cargo run --release -p hermod-pop3d --example pop3_bench -- [--messages N] [--size BYTES]
//!     [--tls] [--pipeline DEPTH]
//! ```
//!
//! The server is hermod's `serve` in this process on a loopback port with a temporary data dir
//! (Maildir). `--tls` uses implicit TLS (port 995 style); `--pipeline` keeps DEPTH RETRs in
//! flight (RFC 2449 PIPELINING) instead of waiting for each answer as fetchmail does.
//!
//! Client and server apart, as when comparing with another server:
//! - `--serve-only HOST:PORT` fills hermod's maildrop and serves it there until Ctrl-C;
//! - `--server HOST:PORT --user U --password P [--tls]` is the client alone (USER/PASS, in
//!   plain TCP or, with `--tls`, implicit TLS), against a running `hermod serve` or another
//!   server: it logs in twice and downloads everything each time;
//! - `--write-maildir DIR` only writes the same messages into a Maildir for the other server.
//!
//! `pop3d/examples/compare_dovecot.sh [RUNS]` compares `hermod serve` with Dovecot (Debian's
//! dovecot-pop3d) on loopback, with this client, alternating runs, and prints the medians.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hermod_common::{Config, Context, Service, Shutdown};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const USER: &str = "bench@localhost";
const PASSWORD: &str = "bench password";

struct Args {
    messages: usize,
    size: usize,
    tls: bool,
    pipeline: usize,
    user: String,
    password: String,
    /// Benchmark this server instead of hermod's.
    server: Option<SocketAddr>,
    /// Only write the messages into this Maildir.
    write_maildir: Option<std::path::PathBuf>,
    /// Fill hermod's maildrop and serve it on this address until interrupted.
    serve_only: Option<SocketAddr>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        messages: 10_000,
        size: 5 * 1024,
        tls: false,
        pipeline: 1,
        user: USER.to_string(),
        password: PASSWORD.to_string(),
        server: None,
        write_maildir: None,
        serve_only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut text = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |name: &str, v: String| {
            v.parse::<usize>()
                .map_err(|_| format!("{name} needs a number"))
        };
        match a.as_str() {
            "--messages" => args.messages = number(&a, text(&a)?)?,
            "--size" => args.size = number(&a, text(&a)?)?,
            "--pipeline" => args.pipeline = number(&a, text(&a)?)?.max(1),
            "--tls" => args.tls = true,
            "--user" => args.user = text(&a)?,
            "--password" => args.password = text(&a)?,
            "--server" => {
                args.server = Some(
                    text(&a)?
                        .parse()
                        .map_err(|_| "--server needs HOST:PORT".to_string())?,
                )
            }
            "--write-maildir" => args.write_maildir = Some(text(&a)?.into()),
            "--serve-only" => {
                args.serve_only = Some(
                    text(&a)?
                        .parse()
                        .map_err(|_| "--serve-only needs HOST:PORT".to_string())?,
                )
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// A message of about `size` bytes: headers, then 72-character lines, some starting with a
/// dot so that byte-stuffing is part of the work.
fn message(i: usize, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: sender{i}@example.org\r\nTo: {USER}\r\nSubject: benchmark message {i}\r\n\
         Message-ID: <{i}.bench@example.org>\r\nDate: Tue, 25 Nov 2026 12:00:00 +0000\r\n\r\n"
    )
    .into_bytes();
    let mut line = 0;
    while m.len() + 74 <= size {
        let lead = if line % 10 == 9 { "." } else { "x" };
        m.extend_from_slice(format!("{lead}{:071}\r\n", line).as_bytes());
        line += 1;
    }
    while m.len() + 2 < size {
        m.push(b'y');
    }
    m.extend_from_slice(b"\r\n");
    m
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    if let Some(dir) = &args.write_maildir {
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        for i in 0..args.messages {
            std::fs::write(
                dir.join("cur")
                    .join(format!("{}.{i}.bench:2,", 1_700_000_000 + i)),
                message(i, args.size),
            )?;
        }
        println!("wrote {} messages into {}", args.messages, dir.display());
        return Ok(());
    }
    if let Some(addr) = args.server {
        for round in ["first login", "second login"] {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            if args.tls {
                let tls = tls_connector()
                    .connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp)
                    .await?;
                download(BufReader::with_capacity(64 * 1024, tls), &args, round).await?;
            } else {
                download(BufReader::with_capacity(64 * 1024, tcp), &args, round).await?;
            }
        }
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let mut config = Config::defaults(true);
    config.data_dir = tmp.path().join("data");
    config.allow_plaintext_auth = true;
    let loopback: SocketAddr = match args.serve_only {
        Some(addr) => addr,
        None => "127.0.0.1:0".parse()?,
    };
    for (service, addrs) in config.listen.iter_mut() {
        *addrs = match service {
            Service::Pop3 => vec![loopback],
            Service::Pop3s => vec![SocketAddr::new(loopback.ip(), 0)],
            _ => Vec::new(),
        };
    }
    let ctx = Context::open(config).await?;
    ctx.directory.add_user(USER, PASSWORD, 0).await?;
    ctx.bind(&[Service::Pop3, Service::Pop3s])?;
    let service = if args.tls {
        Service::Pop3s
    } else {
        Service::Pop3
    };
    let addr = ctx
        .bound_addrs()
        .into_iter()
        .find(|(s, _)| *s == service)
        .map(|(_, a)| a)
        .ok_or("no listener")?;

    // Fill the maildrop.
    let started = Instant::now();
    let store = ctx.store.user("bench", "localhost").await?;
    let fillers = 4;
    let mut tasks = tokio::task::JoinSet::new();
    for f in 0..fillers {
        let store = store.clone();
        let (n, size) = (args.messages, args.size);
        tasks.spawn(async move {
            for i in (f..n).step_by(fillers) {
                store.deliver("INBOX", &message(i, size)).await?;
            }
            Ok::<_, hermod_common::store::StoreError>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    println!(
        "filled {} messages of {} bytes in {:.1} s",
        args.messages,
        args.size,
        started.elapsed().as_secs_f64()
    );

    let shutdown = Shutdown::new();
    let server = tokio::spawn(hermod_pop3d::serve(ctx.clone(), shutdown.clone()));
    if args.serve_only.is_some() {
        println!("serving on {addr} as {USER} / {PASSWORD:?} until interrupted");
        tokio::signal::ctrl_c().await?;
        shutdown.trigger();
        shutdown.wait(Duration::from_secs(5)).await;
        server.await??;
        return Ok(());
    }

    for round in [
        "first login (sizes computed)",
        "second login (sizes cached)",
    ] {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        if args.tls {
            let tls = tls_connector()
                .connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp)
                .await?;
            download(BufReader::with_capacity(64 * 1024, tls), &args, round).await?;
        } else {
            download(BufReader::with_capacity(64 * 1024, tcp), &args, round).await?;
        }
    }
    shutdown.trigger();
    shutdown.wait(Duration::from_secs(5)).await;
    server.await??;
    Ok(())
}

async fn download<S: AsyncRead + AsyncWrite + Unpin>(
    mut c: BufReader<S>,
    args: &Args,
    round: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut line = Vec::new();
    read_status(&mut c, &mut line).await?;
    let login = Instant::now();
    command(&mut c, &format!("USER {}", args.user)).await?;
    read_status(&mut c, &mut line).await?;
    command(&mut c, &format!("PASS {}", args.password)).await?;
    read_status(&mut c, &mut line).await?;
    let login_time = login.elapsed();
    command(&mut c, "STAT").await?;
    let stat = read_status(&mut c, &mut line).await?;
    let mut fields = stat.split_whitespace().skip(1);
    let count: usize = fields
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or("bad STAT")?;
    let octets: u64 = fields
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or("bad STAT")?;

    let started = Instant::now();
    let cpu_before = process_cpu_seconds();
    let mut received = 0u64;
    let mut sent = 0;
    let mut done = 0;
    while done < count {
        while sent < count && sent - done < args.pipeline {
            sent += 1;
            command(&mut c, &format!("RETR {sent}")).await?;
        }
        read_status(&mut c, &mut line).await?;
        loop {
            line.clear();
            if c.read_until(b'\n', &mut line).await? == 0 {
                return Err("connection closed".into());
            }
            if line == b".\r\n" {
                break;
            }
            let unstuffed = if line.first() == Some(&b'.') { 1 } else { 0 };
            received += (line.len() - unstuffed) as u64;
        }
        done += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds().zip(cpu_before).map(|(a, b)| a - b);
    command(&mut c, "QUIT").await?;
    read_status(&mut c, &mut line).await?;
    if received != octets {
        return Err(format!("received {received} octets, STAT said {octets}").into());
    }
    println!(
        "{round}: login {:.0} ms; RETR x {count} in {elapsed:.2} s: {:.0} messages/s, {:.1} MB/s{}{}{}",
        login_time.as_secs_f64() * 1000.0,
        count as f64 / elapsed,
        received as f64 / elapsed / 1e6,
        if args.tls { ", TLS" } else { ", plain TCP" },
        if args.pipeline > 1 {
            format!(", pipeline {}", args.pipeline)
        } else {
            String::new()
        },
        // With --server this process is the client alone: its CPU says nothing of the server.
        cpu.filter(|_| args.server.is_none())
            .map(|c| format!(" (CPU of this process, server and client: {c:.2} s)"))
            .unwrap_or_default(),
    );
    Ok(())
}

/// User + system CPU time of this process (server and client together), from /proc.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut BufReader<S>,
    line: &str,
) -> std::io::Result<()> {
    c.get_mut()
        .write_all(format!("{line}\r\n").as_bytes())
        .await?;
    c.get_mut().flush().await
}

async fn read_status<S: AsyncRead + Unpin>(
    c: &mut BufReader<S>,
    line: &mut Vec<u8>,
) -> Result<String, Box<dyn std::error::Error>> {
    line.clear();
    c.read_until(b'\n', line).await?;
    let text = String::from_utf8_lossy(line).trim_end().to_string();
    if !text.starts_with("+OK") {
        return Err(format!("server said: {text}").into());
    }
    Ok(text)
}

/// The benchmark talks to its own self-signed server: accept any certificate.
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
