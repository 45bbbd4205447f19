//! Test harness: `serve` on ephemeral loopback ports with a temporary data dir, and a small
//! POP3 client over TCP or TLS (pinning the server's self-signed certificate).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hermod_common::config::MailboxFormat;
use hermod_common::store::{Snapshot, UserStore};
use hermod_common::{Config, Context, Service, Shutdown};
use hermod_pop3d::ConnectionLimits;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub const USER: &str = "alice@localhost";
pub const PASSWORD: &str = "correct horse";

/// Options of a test server.
#[derive(Clone)]
pub struct Options {
    pub allow_plaintext_auth: bool,
    pub format: MailboxFormat,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub max_line_length: usize,
    pub max_errors: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            allow_plaintext_auth: false,
            format: MailboxFormat::Maildir,
            idle_timeout: Duration::from_secs(600),
            write_timeout: Duration::from_secs(600),
            max_line_length: 1024,
            max_errors: 10,
        }
    }
}

/// A running POP3 server with one user, `alice@localhost`.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub ctx: Arc<Context>,
    pub pop3: SocketAddr,
    pub pop3s: SocketAddr,
    pub shutdown: Shutdown,
    pub task: tokio::task::JoinHandle<Result<(), hermod_pop3d::Pop3Error>>,
}

impl TestServer {
    pub async fn start(options: Options) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::defaults(true);
        config.data_dir = dir.path().join("data");
        config.allow_plaintext_auth = options.allow_plaintext_auth;
        config.mailbox_format = options.format;
        config.limits.max_errors = options.max_errors;
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        for (service, addrs) in config.listen.iter_mut() {
            *addrs = match service {
                Service::Pop3 | Service::Pop3s => vec![loopback],
                _ => Vec::new(),
            };
        }
        let ctx = Context::open(config).await.unwrap();
        ctx.directory.add_user(USER, PASSWORD, 0).await.unwrap();
        ctx.bind(&[Service::Pop3, Service::Pop3s]).unwrap();
        let bound = ctx.bound_addrs();
        let addr = |s: Service| bound.iter().find(|(b, _)| *b == s).unwrap().1;
        let (pop3, pop3s) = (addr(Service::Pop3), addr(Service::Pop3s));
        let shutdown = Shutdown::new();
        let limits = ConnectionLimits {
            idle_timeout: options.idle_timeout,
            write_timeout: options.write_timeout,
            max_line_length: options.max_line_length,
        };
        let task = tokio::spawn(hermod_pop3d::serve_with(
            ctx.clone(),
            shutdown.clone(),
            limits,
        ));
        TestServer {
            dir,
            ctx,
            pop3,
            pop3s,
            shutdown,
            task,
        }
    }

    pub async fn store(&self) -> UserStore {
        self.ctx.store.user("alice", "localhost").await.unwrap()
    }

    /// Deliver messages into alice's INBOX, returning their UIDs.
    pub async fn deliver(&self, messages: &[&[u8]]) -> Vec<u32> {
        let store = self.store().await;
        let mut uids = Vec::new();
        for m in messages {
            uids.push(store.deliver("INBOX", m).await.unwrap());
        }
        uids
    }

    /// INBOX as IMAP sees it.
    pub async fn inbox(&self) -> Snapshot {
        self.store().await.select("INBOX", true).await.unwrap()
    }

    pub async fn plain(&self) -> Client<TcpStream> {
        Client::connect(self.pop3).await
    }

    /// Port 995 style: TLS from the first byte.
    pub async fn implicit_tls(&self) -> Client<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.pop3s).await.unwrap();
        let tls = connector(&self.ctx.tls.fingerprint())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let mut c = Client::new(tls);
        let greeting = c.line().await;
        assert!(greeting.starts_with("+OK "), "{greeting}");
        c
    }

    /// Port 110, STLS, then logged in with USER/PASS.
    pub async fn logged_in(&self) -> Client<TlsStream<TcpStream>> {
        let mut c = self.plain().await.stls(&self.ctx.tls.fingerprint()).await;
        c.login(USER, PASSWORD).await;
        c
    }

    /// Log in, retrying while a session that just ended still holds the lock.
    pub async fn logged_in_when_free(&self) -> Client<TlsStream<TcpStream>> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut c = self.plain().await.stls(&self.ctx.tls.fingerprint()).await;
            assert!(c.cmd(&format!("USER {USER}")).await.starts_with("+OK"));
            let reply = c.cmd(&format!("PASS {PASSWORD}")).await;
            if reply.starts_with("+OK") {
                return c;
            }
            assert!(reply.starts_with("-ERR [IN-USE]"), "{reply}");
            assert!(Instant::now() < deadline, "maildrop never released");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A line-oriented POP3 client.
pub struct Client<S> {
    stream: BufReader<S>,
}

impl Client<TcpStream> {
    /// Connect and read the greeting.
    pub async fn connect(addr: SocketAddr) -> Client<TcpStream> {
        let mut c = Client::new(TcpStream::connect(addr).await.unwrap());
        let greeting = c.line().await;
        assert!(greeting.starts_with("+OK "), "{greeting}");
        c
    }

    /// The TCP stream, for a handshake of the test's own.
    pub fn into_tcp(self) -> TcpStream {
        self.stream.into_inner()
    }

    /// STLS and the TLS handshake, pinning the server certificate's fingerprint.
    pub async fn stls(mut self, fingerprint: &str) -> Client<TlsStream<TcpStream>> {
        assert_eq!(self.cmd("STLS").await, "+OK Begin TLS negotiation");
        assert!(self.stream.buffer().is_empty());
        let tcp = self.stream.into_inner();
        let tls = connector(fingerprint)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        Client::new(tls)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub fn new(stream: S) -> Client<S> {
        Client {
            stream: BufReader::new(stream),
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).await.unwrap();
        self.stream.get_mut().flush().await.unwrap();
    }

    pub async fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
    }

    /// One response line without CRLF; panics on EOF.
    pub async fn line(&mut self) -> String {
        self.try_line().await.expect("connection closed")
    }

    /// One response line, or None at EOF.
    pub async fn try_line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(
            Duration::from_secs(10),
            self.stream.read_until(b'\n', &mut buf),
        )
        .await
        .expect("server answers within 10 s")
        .ok()?;
        if n == 0 {
            return None;
        }
        assert!(buf.ends_with(b"\r\n"), "line without CRLF: {buf:?}");
        buf.truncate(buf.len() - 2);
        Some(String::from_utf8(buf).expect("UTF-8 response"))
    }

    /// A command and its status line.
    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(line).await;
        self.line().await
    }

    /// The body of a multi-line response as sent (still dot-stuffed), terminator excluded.
    pub async fn multi_raw(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let mut buf = Vec::new();
            let n = self.stream.read_until(b'\n', &mut buf).await.unwrap();
            assert!(n > 0, "connection closed in a multi-line response");
            if buf == b".\r\n" {
                return body;
            }
            body.extend_from_slice(&buf);
        }
    }

    /// A multi-line command: status line, then the body with dot-stuffing undone.
    pub async fn cmd_multi(&mut self, line: &str) -> (String, Vec<u8>) {
        let status = self.cmd(line).await;
        if !status.starts_with("+OK") {
            return (status, Vec::new());
        }
        (status, unstuff(&self.multi_raw().await))
    }

    pub async fn login(&mut self, user: &str, password: &str) {
        assert!(self.cmd(&format!("USER {user}")).await.starts_with("+OK"));
        let reply = self.cmd(&format!("PASS {password}")).await;
        assert!(reply.starts_with("+OK Logged in"), "{reply}");
    }

    /// LIST: the size of each message, in message-number order.
    pub async fn list_sizes(&mut self) -> Vec<usize> {
        let (status, body) = self.cmd_multi("LIST").await;
        assert!(status.starts_with("+OK"), "{status}");
        String::from_utf8(body)
            .unwrap()
            .lines()
            .map(|l| l.split_once(' ').unwrap().1.parse().unwrap())
            .collect()
    }

    /// UIDL listing as (number, unique-id) pairs.
    pub async fn uidl(&mut self) -> Vec<(u32, String)> {
        let (status, body) = self.cmd_multi("UIDL").await;
        assert!(status.starts_with("+OK"), "{status}");
        String::from_utf8(body)
            .unwrap()
            .lines()
            .map(|l| {
                let (n, id) = l.split_once(' ').unwrap();
                (n.parse().unwrap(), id.to_string())
            })
            .collect()
    }

    /// Wait for the server to close the connection (reading what is left).
    pub async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(
                Duration::from_secs(10),
                tokio::io::AsyncReadExt::read_to_end(&mut self.stream, &mut rest),
            )
            .await,
            Ok(Ok(_)) | Ok(Err(_))
        )
    }
}

/// Undo byte-stuffing of a multi-line body.
pub fn unstuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|b| *b == b'\n') {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    out
}

/// A TLS connector that accepts exactly the certificate with this SHA-256 fingerprint.
pub fn connector(fingerprint: &str) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCert {
            fingerprint: fingerprint.to_string(),
            provider,
        }))
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

#[derive(Debug)]
struct PinnedCert {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if hermod_common::tls::sha256_fingerprint(end_entity.as_ref()) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("unexpected certificate".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
