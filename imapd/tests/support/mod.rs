//! Shared by the integration tests: a server on loopback ports and a minimal client.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hermod_common::config::{Config, Service};
use hermod_common::context::Context;
use hermod_common::net::Shutdown;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Server {
    pub ctx: Arc<Context>,
    pub imap: SocketAddr,
    pub imaps: SocketAddr,
    pub shutdown: Shutdown,
    _tmp: tempfile::TempDir,
}

pub async fn start() -> Server {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config::defaults(true);
    config.data_dir = tmp.path().to_path_buf();
    config.listen = vec![
        (Service::Imap, vec!["127.0.0.1:0".parse().unwrap()]),
        (Service::Imaps, vec!["127.0.0.1:0".parse().unwrap()]),
    ];
    let ctx = Context::open(config).await.unwrap();
    ctx.directory
        .add_user("alice@localhost", "secret", 0)
        .await
        .unwrap();
    ctx.bind(&[Service::Imap, Service::Imaps]).unwrap();
    let addrs = ctx.bound_addrs();
    let find = |s: Service| addrs.iter().find(|(x, _)| *x == s).unwrap().1;
    let (imap, imaps) = (find(Service::Imap), find(Service::Imaps));
    let shutdown = Shutdown::new();
    tokio::spawn(hermod_imapd::serve(ctx.clone(), shutdown.clone()));
    Server {
        ctx,
        imap,
        imaps,
        shutdown,
        _tmp: tmp,
    }
}

pub fn tls_connector(server: &Server) -> tokio_rustls::TlsConnector {
    let pem = std::fs::read(&server.ctx.tls.cert_path).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A minimal IMAP client: send lines, read until a tagged line.
pub struct Client<S> {
    pub io: S,
    buf: Vec<u8>,
    /// Raw deflate both ways after COMPRESS DEFLATE, as Thunderbird does.
    deflate: Option<(flate2::Compress, flate2::Decompress)>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub fn new(io: S) -> Self {
        Client {
            io,
            buf: Vec::new(),
            deflate: None,
        }
    }

    /// Sends COMPRESS DEFLATE and compresses everything after the OK.
    pub async fn compress(&mut self) {
        let out = self.cmd("z", "COMPRESS DEFLATE").await;
        assert!(out.contains("z OK"), "{out}");
        self.deflate = Some((
            flate2::Compress::new(flate2::Compression::default(), false),
            flate2::Decompress::new(false),
        ));
    }

    pub async fn send(&mut self, line: &str) {
        match self.deflate.as_mut() {
            Some((comp, _)) => {
                let mut out = Vec::with_capacity(line.len() + 1024);
                comp.compress_vec(line.as_bytes(), &mut out, flate2::FlushCompress::Sync)
                    .unwrap();
                self.io.write_all(&out).await.unwrap();
            }
            None => self.io.write_all(line.as_bytes()).await.unwrap(),
        }
        self.io.flush().await.unwrap();
    }

    /// Reads until a line starting with `prefix` has arrived; returns all text read.
    pub async fn read_until(&mut self, prefix: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let text = String::from_utf8_lossy(&self.buf).into_owned();
            let mut start = 0;
            for line in text.split_inclusive("\r\n") {
                start += line.len();
                if line.starts_with(prefix) && line.ends_with("\r\n") {
                    let got = text[..start].to_string();
                    self.buf.drain(..start);
                    return got;
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.io.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {prefix:?}; got {text:?}"))
                .unwrap();
            assert!(
                n > 0,
                "connection closed waiting for {prefix:?}; got {text:?}"
            );
            match self.deflate.as_mut() {
                Some((_, decomp)) => {
                    let mut input = &chunk[..n];
                    loop {
                        let mut out = Vec::with_capacity(64 * 1024);
                        let before = decomp.total_in();
                        decomp
                            .decompress_vec(input, &mut out, flate2::FlushDecompress::Sync)
                            .unwrap();
                        input = &input[(decomp.total_in() - before) as usize..];
                        let full = out.len() == out.capacity();
                        self.buf.extend_from_slice(&out);
                        if input.is_empty() && !full {
                            break;
                        }
                    }
                }
                None => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    pub async fn cmd(&mut self, tag: &str, command: &str) -> String {
        self.send(&format!("{tag} {command}\r\n")).await;
        self.read_until(&format!("{tag} ")).await
    }
}

pub async fn tls_client(server: &Server) -> Client<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(server.imaps).await.unwrap();
    let tls = tls_connector(server)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let mut c = Client::new(tls);
    let greeting = c.read_until("* OK").await;
    assert!(greeting.contains("AUTH=PLAIN"), "{greeting}");
    let out = c.cmd("L", "LOGIN alice@localhost secret").await;
    assert!(out.contains("L OK [CAPABILITY"), "{out}");
    c
}
