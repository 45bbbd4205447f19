//! Big-mailbox figures of one IMAP server over implicit TLS (the IMAPS port), the client of
//! `imapd/examples/compare_big_mailbox.sh`: prints figures, asserts nothing.
//!
//! ```text
//! big_mailbox write-maildir DIR --messages N
//! big_mailbox measure --port PORT [--user big@example.org] [--reps 5] [--append 500]
//!                     [--warm-until-ms MS]
//! ```
//!
//! `write-maildir` writes a Maildir++ root at DIR: an empty INBOX and a folder `Big` of N
//! messages of 1 to 8 KB, 80 % of them \Seen, to be copied into the user's Maildir of each
//! server under test before it starts (both servers get the same files). Every message has
//! a subject, sender, recipient, Message-ID and body token of its own, so each search below
//! has a known, small answer.
//!
//! `measure` logs in (password `secret`), SELECTs `Big` once untimed and runs one untimed
//! `SEARCH TEXT` (the first look builds each server's indexes: Dovecot's index files,
//! hermod's index and full-text index; with `--warm-until-ms` it repeats that search every
//! 5 s until it is that fast, for a server that indexes in the background), then times
//! each figure REPS times and prints the
//! median of each as `figure NAME VALUE UNIT`:
//! SELECT of `Big`; `UID FETCH 1:* (FLAGS)`; the headers of the last 50 messages
//! (`UID FETCH n:* (BODY.PEEK[HEADER.FIELDS (From To Subject Date Message-ID)])`); SEARCH
//! SUBJECT, FROM, TO and HEADER Message-ID; SEARCH TEXT and BODY of a word in one body; and
//! filling a new folder by APPEND (APPEND-many messages one after the other, one client;
//! msg/s), which is deleted again. Each time is client-side: from sending the command to
//! reading its tagged reply.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const FOLDER: &str = "Big";
const PASSWORD: &str = "secret";

/// Words of the message bodies.
const WORDS: [&str; 32] = [
    "state", "report", "figure", "quarter", "budget", "meeting", "window", "garden", "river",
    "coffee", "project", "station", "market", "winter", "summer", "letter", "answer", "number",
    "engine", "silver", "forest", "mountain", "harbour", "planet", "yellow", "orange", "purple",
    "question", "morning", "evening", "ticket", "journey",
];

/// Message `i`: realistic headers and a body of 1 to 8 KB of lines of words, with the token
/// `ref-{i:07}-q` on one line.
fn message(i: usize) -> String {
    let mut m = format!(
        "Return-Path: <sender{s}@example.net>\r\nFrom: Sender {s} <sender{s}@example.net>\r\n\
         To: Team {t} <team{t}@example.org>\r\nSubject: Report number {i} on the state of things\r\n\
         Date: Tue, 25 Nov 2026 12:{:02}:00 +0000\r\nMessage-ID: <{i}.big@example.net>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
        i % 60,
        s = i % 997,
        t = i % 5003,
    );
    let size = 1024 + (i * 7919) % (7 * 1024);
    let mut random = i as u64 * 2654435761 + 1;
    let mut line = 0;
    while m.len() < size {
        if line == 3 {
            m.push_str(&format!("Reference ref-{i:07}-q for the records.\r\n"));
        }
        for w in 0..10 {
            random = random
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            m.push_str(if w == 0 { "" } else { " " });
            m.push_str(WORDS[(random >> 59) as usize]);
        }
        m.push_str("\r\n");
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
        let name = format!("{}.M{i}P1.big:2,{flags}", 1_700_000_000 + i);
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
            s: BufReader::with_capacity(64 * 1024, tls.connect(name, tcp).await?),
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

    /// `cmd`, timed.
    async fn timed(&mut self, cmd: &str) -> Res<(Duration, String)> {
        let t = Instant::now();
        let out = self.cmd(cmd).await?;
        Ok((t.elapsed(), out))
    }
}

/// The length of the literal that ends this line (`... {123}\r\n`), if any.
fn literal_len(line: &str) -> Option<usize> {
    let inner = line.strip_suffix("}\r\n")?;
    let open = inner.rfind('{')?;
    inner[open + 1..].trim_end_matches('+').parse().ok()
}

/// The number in `* OK [NAME n]` or `* n NAME` of a SELECT's responses.
fn select_number(select: &str, name: &str) -> Res<u64> {
    select
        .lines()
        .find_map(|l| {
            let l = l.strip_prefix("* ")?;
            match l.strip_suffix(&format!(" {name}")) {
                Some(n) => n.parse().ok(),
                None => l
                    .strip_prefix(&format!("OK [{name} "))?
                    .split(']')
                    .next()?
                    .parse()
                    .ok(),
            }
        })
        .ok_or_else(|| format!("no {name} in {select:?}").into())
}

/// How many numbers a `* SEARCH` response lists.
fn search_count(out: &str) -> usize {
    out.lines()
        .filter_map(|l| l.strip_prefix("* SEARCH"))
        .map(|l| l.split_whitespace().count())
        .sum()
}

struct Options {
    port: u16,
    user: String,
    reps: usize,
    append: usize,
    warm_until: Option<Duration>,
}

fn options(args: &[String]) -> Res<Options> {
    let mut o = Options {
        port: 0,
        user: "big@example.org".into(),
        reps: 5,
        append: 500,
        warm_until: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--port" => o.port = value.parse()?,
            "--user" => o.user = value.clone(),
            "--reps" => o.reps = value.parse::<usize>()?.max(1),
            "--append" => o.append = value.parse()?,
            "--warm-until-ms" => {
                o.warm_until = Some(Duration::from_millis(value.parse()?));
            }
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    if o.port == 0 {
        return Err("--port PORT is needed".into());
    }
    Ok(o)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

async fn measure(o: Options) -> Res<()> {
    let tls = tls_connector();
    let mut c = Client::connect(o.port, &tls).await?;
    c.cmd(&format!("LOGIN {} {PASSWORD}", o.user)).await?;
    let t = Instant::now();
    let select = c.cmd(&format!("SELECT {FOLDER}")).await?;
    let exists = select_number(&select, "EXISTS")? as usize;
    let uidnext = select_number(&select, "UIDNEXT")?;
    let mid = exists / 2;
    println!("{exists} messages; first SELECT {} ms", ms(t.elapsed()));
    let t = Instant::now();
    c.cmd(&format!("SEARCH TEXT \"ref-{mid:07}-q\"")).await?;
    println!("first SEARCH TEXT {} ms (untimed warm-up)", ms(t.elapsed()));
    if let Some(limit) = o.warm_until {
        // A server that indexes in the background: wait until its search is that fast.
        let deadline = Instant::now() + Duration::from_secs(1800);
        loop {
            let (d, _) = c.timed(&format!("SEARCH TEXT \"ref-{mid:07}-q\"")).await?;
            if d <= limit || Instant::now() > deadline {
                println!(
                    "warm after {} s (SEARCH TEXT {} ms)",
                    t.elapsed().as_secs(),
                    ms(d)
                );
                break;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }

    let first_of_last_50 = uidnext.saturating_sub(50).max(1);
    // (figure, command, expected number of search results)
    let searches: Vec<(&str, String, usize)> = vec![
        (
            "search_subject",
            format!("SEARCH SUBJECT \"number {mid} on\""),
            1,
        ),
        (
            "search_from",
            format!("SEARCH FROM \"sender{}@example.net\"", mid % 997),
            (0..exists).filter(|i| i % 997 == mid % 997).count(),
        ),
        (
            "search_to",
            format!("SEARCH TO \"team{}@example.org\"", mid % 5003),
            (0..exists).filter(|i| i % 5003 == mid % 5003).count(),
        ),
        (
            "search_header",
            format!("SEARCH HEADER Message-ID \"<{mid}.big@\""),
            1,
        ),
        ("search_text", format!("SEARCH TEXT \"ref-{mid:07}-q\""), 1),
        ("search_body", format!("SEARCH BODY \"ref-{mid:07}-q\""), 1),
    ];
    let mut figures: Vec<(&str, Vec<Duration>)> = vec![
        ("select", Vec::new()),
        ("fetch_flags", Vec::new()),
        ("fetch_headers_last_50", Vec::new()),
    ];
    figures.extend(searches.iter().map(|s| (s.0, Vec::new())));
    for _ in 0..o.reps {
        c.cmd("SELECT INBOX").await?;
        let (d, out) = c.timed(&format!("SELECT {FOLDER}")).await?;
        if select_number(&out, "EXISTS")? as usize != exists {
            return Err(format!("SELECT {FOLDER}: {out}").into());
        }
        figures[0].1.push(d);
        let (d, out) = c.timed("UID FETCH 1:* (FLAGS)").await?;
        let n = out.lines().filter(|l| l.contains(" FETCH ")).count();
        if n != exists {
            return Err(format!("UID FETCH 1:* (FLAGS): {n} messages, not {exists}").into());
        }
        figures[1].1.push(d);
        let (d, out) = c
            .timed(&format!(
                "UID FETCH {first_of_last_50}:* (BODY.PEEK[HEADER.FIELDS (From To Subject Date Message-ID)])"
            ))
            .await?;
        let n = out.lines().filter(|l| l.contains(" FETCH ")).count();
        if n != 50.min(exists) {
            return Err(format!("headers of the last 50: {n} messages").into());
        }
        figures[2].1.push(d);
        for (k, (name, cmd, want)) in searches.iter().enumerate() {
            let (d, out) = c.timed(cmd).await?;
            let got = search_count(&out);
            if got != *want {
                return Err(format!("{name}: {cmd}: {got} results, not {want}").into());
            }
            figures[3 + k].1.push(d);
        }
    }
    for (name, times) in figures {
        println!("figure {name} {} ms", ms(median(times)));
    }

    if o.append > 0 {
        let fill = format!("Fill{}", std::process::id());
        c.cmd(&format!("CREATE {fill}")).await?;
        let msgs: Vec<String> = (0..o.append).map(|i| message(2_000_000 + i)).collect();
        let t = Instant::now();
        for m in &msgs {
            c.cmd(&format!("APPEND {fill} {{{}+}}\r\n{m}", m.len()))
                .await?;
        }
        let secs = t.elapsed().as_secs_f64();
        println!("figure append_fill {:.0} msg/s", o.append as f64 / secs);
        c.cmd(&format!("DELETE {fill}")).await?;
    }
    c.cmd("LOGOUT").await.ok();
    Ok(())
}

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("write-maildir") => {
            let dir = args.get(1).ok_or("write-maildir DIR --messages N")?;
            let messages = match args.get(2).map(String::as_str) {
                Some("--messages") => args.get(3).ok_or("--messages N")?.parse()?,
                _ => 1000,
            };
            write_maildir(dir, messages)
        }
        Some("measure") => measure(options(&args[1..])?).await,
        _ => Err("big_mailbox write-maildir DIR --messages N | measure --port PORT ...".into()),
    }
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
