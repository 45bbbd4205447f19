//! An SMTP sink on a loopback address: it answers as a configurable remote server would
//! (250, 4xx-then-250, 5xx, STARTTLS with a self-signed certificate, AUTH required, no EHLO)
//! and records what it received.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;

/// Decides the reply to `RCPT TO:<address>`.
pub type RcptPolicy = Arc<dyn Fn(&str) -> String + Send + Sync>;

#[derive(Clone)]
pub struct SinkOptions {
    pub name: String,
    /// Answers EHLO (else 502, so the client falls back to HELO).
    pub ehlo: bool,
    pub pipelining: bool,
    pub eight_bit_mime: bool,
    /// Offers STARTTLS with this server configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Requires AUTH PLAIN or LOGIN with these credentials before MAIL.
    pub auth: Option<(String, String)>,
    pub rcpt: RcptPolicy,
}

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            name: "sink.test".into(),
            ehlo: true,
            pipelining: true,
            eight_bit_mime: true,
            tls: None,
            auth: None,
            rcpt: Arc::new(|_| "250 2.1.5 Ok".to_string()),
        }
    }
}

/// One message as the sink received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// `EHLO name` or `HELO name`, as sent last.
    pub hello: String,
    /// The whole MAIL FROM line.
    pub mail_from: String,
    /// Recipients accepted.
    pub recipients: Vec<String>,
    /// The content, dot-unstuffed, without the final `.` line.
    pub content: Vec<u8>,
    pub tls: bool,
    pub auth_user: Option<String>,
    /// Number of the connection (1, 2, ...).
    pub connection: usize,
}

pub struct Sink {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sink {
    pub async fn start(addr: SocketAddr, options: SinkOptions) -> Sink {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let connections: Arc<AtomicUsize> = Arc::default();
        let (r, c) = (received.clone(), connections.clone());
        let options = Arc::new(options);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let number = c.fetch_add(1, Ordering::SeqCst) + 1;
                let (r, options) = (r.clone(), options.clone());
                tokio::spawn(async move {
                    let _ = session(stream, &options, &r, number).await;
                });
            }
        });
        Sink {
            addr,
            received,
            connections,
            task,
        }
    }

    pub fn messages(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Messages received so far.
    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

type SinkStream = Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>;

struct Conn {
    stream: SinkStream,
    buf: Vec<u8>,
}

impl Conn {
    /// One line with its line ending, or None at end of stream.
    async fn raw_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(lf) = self.buf.iter().position(|&b| b == b'\n') {
                return Ok(Some(self.buf.drain(..=lf).collect()));
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn line(&mut self) -> io::Result<Option<String>> {
        Ok(self
            .raw_line()
            .await?
            .map(|l| String::from_utf8_lossy(&l).trim_end().to_string()))
    }

    async fn send(&mut self, text: &str) -> io::Result<()> {
        self.stream
            .write_all(format!("{text}\r\n").as_bytes())
            .await?;
        self.stream.flush().await
    }
}

fn decode(b64: &str) -> String {
    String::from_utf8_lossy(&hermod_common::sasl::decode_base64(b64).unwrap_or_default())
        .into_owned()
}

fn address(line: &str) -> String {
    let start = line.find('<').map(|i| i + 1).unwrap_or(0);
    let end = line[start..]
        .find('>')
        .map(|i| start + i)
        .unwrap_or(line.len());
    line[start..end].to_string()
}

async fn session(
    stream: TcpStream,
    options: &SinkOptions,
    received: &Mutex<Vec<Received>>,
    number: usize,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut c = Conn {
        stream: Either::Left(stream),
        buf: Vec::new(),
    };
    let mut tls = false;
    let mut auth_user: Option<String> = None;
    let mut hello = String::new();
    let mut mail_from: Option<String> = None;
    let mut recipients: Vec<String> = Vec::new();
    c.send(&format!("220 {} ESMTP sink", options.name)).await?;
    while let Some(line) = c.line().await? {
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO ") && options.ehlo {
            hello = line.clone();
            let mut lines = vec![options.name.clone()];
            if options.pipelining {
                lines.push("PIPELINING".into());
            }
            if options.eight_bit_mime {
                lines.push("8BITMIME".into());
            }
            lines.push("SIZE 10000000".into());
            if options.tls.is_some() && !tls {
                lines.push("STARTTLS".into());
            }
            if options.auth.is_some() && (tls || options.tls.is_none()) {
                lines.push("AUTH PLAIN LOGIN".into());
            }
            lines.push("ENHANCEDSTATUSCODES".into());
            let last = lines.len() - 1;
            let text: Vec<String> = lines
                .iter()
                .enumerate()
                .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
                .collect();
            c.send(&text.join("\r\n")).await?;
        } else if upper.starts_with("HELO ") {
            hello = line.clone();
            c.send(&format!("250 {}", options.name)).await?;
        } else if upper == "STARTTLS" && options.tls.is_some() && !tls {
            c.send("220 2.0.0 Ready to start TLS").await?;
            let acceptor = TlsAcceptor::from(options.tls.clone().unwrap());
            let Either::Left(tcp) = c.stream else {
                return Ok(());
            };
            c = Conn {
                stream: Either::Right(acceptor.accept(tcp).await?),
                buf: Vec::new(),
            };
            tls = true;
        } else if upper.starts_with("AUTH ") && options.auth.is_some() {
            let (user, pass) = options.auth.clone().unwrap();
            let words: Vec<&str> = line.split_whitespace().collect();
            let given = if words[1].eq_ignore_ascii_case("PLAIN") {
                let decoded = decode(words.get(2).copied().unwrap_or(""));
                let parts: Vec<&str> = decoded.split('\0').collect();
                (
                    parts.get(1).unwrap_or(&"").to_string(),
                    parts.get(2).unwrap_or(&"").to_string(),
                )
            } else {
                c.send("334 VXNlcm5hbWU6").await?;
                let u = decode(&c.line().await?.unwrap_or_default());
                c.send("334 UGFzc3dvcmQ6").await?;
                let p = decode(&c.line().await?.unwrap_or_default());
                (u, p)
            };
            if given == (user.clone(), pass) {
                auth_user = Some(user);
                c.send("235 2.7.0 Authentication successful").await?;
            } else {
                c.send("535 5.7.8 Authentication credentials invalid")
                    .await?;
            }
        } else if upper.starts_with("MAIL FROM:") {
            if options.auth.is_some() && auth_user.is_none() {
                c.send("530 5.7.0 Authentication required").await?;
            } else {
                mail_from = Some(line.clone());
                recipients.clear();
                c.send("250 2.1.0 Ok").await?;
            }
        } else if upper.starts_with("RCPT TO:") {
            if mail_from.is_none() {
                c.send("503 5.5.1 Need MAIL").await?;
                continue;
            }
            let rcpt = address(&line);
            let reply = (options.rcpt)(&rcpt);
            if reply.starts_with('2') {
                recipients.push(rcpt);
            }
            c.send(&reply).await?;
        } else if upper == "DATA" {
            if mail_from.is_none() || recipients.is_empty() {
                c.send("554 5.5.1 No valid recipients").await?;
                continue;
            }
            c.send("354 End data with <CR><LF>.<CR><LF>").await?;
            let mut content = Vec::new();
            while let Some(raw) = c.raw_line().await? {
                if raw == b".\r\n" {
                    break;
                }
                let unstuffed = if raw.starts_with(b".") {
                    &raw[1..]
                } else {
                    &raw[..]
                };
                content.extend_from_slice(unstuffed);
            }
            let n = {
                let mut all = received.lock().unwrap();
                all.push(Received {
                    hello: hello.clone(),
                    mail_from: mail_from.take().unwrap_or_default(),
                    recipients: std::mem::take(&mut recipients),
                    content,
                    tls,
                    auth_user: auth_user.clone(),
                    connection: number,
                });
                all.len()
            };
            c.send(&format!("250 2.0.0 Ok: queued as SINK{n}")).await?;
        } else if upper == "RSET" {
            mail_from = None;
            recipients.clear();
            c.send("250 2.0.0 Ok").await?;
        } else if upper == "NOOP" {
            c.send("250 2.0.0 Ok").await?;
        } else if upper == "QUIT" {
            c.send("221 2.0.0 Bye").await?;
            return Ok(());
        } else {
            c.send("502 5.5.2 Command not recognized").await?;
        }
    }
    Ok(())
}
