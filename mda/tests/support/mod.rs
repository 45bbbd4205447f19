//! Test helpers: a Context on a temporary data dir and a tiny LMTP client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hermod_common::config::MailboxFormat;
use hermod_common::store::UserStore;
use hermod_common::{Config, Context, Service, Shutdown};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

pub const DOMAIN: &str = "example.org";

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub ctx: Arc<Context>,
}

/// A context over a fresh data dir with LMTP on a free loopback port and the local domain
/// example.org. `tweak` adjusts the config (format, socket, limits).
pub async fn harness(tweak: impl FnOnce(&mut Config, &std::path::Path)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::defaults(true);
    config.data_dir = dir.path().to_path_buf();
    config.listen = vec![(Service::Lmtp, vec!["127.0.0.1:0".parse().unwrap()])];
    tweak(&mut config, dir.path());
    let ctx = Context::open(config).await.unwrap();
    ctx.directory.add_domain(DOMAIN).await.unwrap();
    Harness { dir, ctx }
}

pub async fn maildir() -> Harness {
    harness(|_, _| {}).await
}

pub async fn mbox() -> Harness {
    harness(|c, _| c.mailbox_format = MailboxFormat::Mbox).await
}

impl Harness {
    pub async fn add_user(&self, localpart: &str, quota: u64) {
        self.ctx
            .directory
            .add_user(&format!("{localpart}@{DOMAIN}"), "secret", quota)
            .await
            .unwrap();
    }

    pub async fn store(&self, localpart: &str) -> UserStore {
        self.ctx.store.user(localpart, DOMAIN).await.unwrap()
    }

    /// Every message of a mailbox, oldest first.
    pub async fn messages(&self, localpart: &str, mailbox: &str) -> Vec<Vec<u8>> {
        let store = self.store(localpart).await;
        let snap = store.select(mailbox, true).await.unwrap();
        let mut out = Vec::new();
        for m in snap.messages {
            out.push(store.read(mailbox, m.uid).await.unwrap());
        }
        out
    }

    /// Binds LMTP and serves it in the background; returns the TCP address.
    pub fn serve(&self) -> (SocketAddr, Shutdown, tokio::task::JoinHandle<()>) {
        self.ctx.bind(&[Service::Lmtp]).unwrap();
        let addr = self
            .ctx
            .bound_addrs()
            .into_iter()
            .find(|(s, _)| *s == Service::Lmtp)
            .unwrap()
            .1;
        let shutdown = Shutdown::new();
        let ctx = self.ctx.clone();
        let sd = shutdown.clone();
        let task = tokio::spawn(async move {
            hermod_mda::serve(ctx, sd).await.unwrap();
        });
        (addr, shutdown, task)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

/// A line-based LMTP client.
pub struct Client<S> {
    stream: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Connects and reads the greeting.
    pub async fn new(stream: S) -> Self {
        let mut c = Client {
            stream: BufReader::new(stream),
        };
        let greeting = c.reply().await;
        assert!(greeting.starts_with("220 "), "{greeting}");
        c
    }

    /// One (possibly multi-line) reply, lines joined with '\n', without CRLFs.
    pub async fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.stream.read_line(&mut line).await.unwrap();
            assert!(n > 0, "connection closed; got so far: {lines:?}");
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            let line = line.trim_end().to_string();
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line);
            if !more {
                return lines.join("\n");
            }
        }
    }

    pub async fn send(&mut self, text: &str) {
        self.stream
            .get_mut()
            .write_all(text.as_bytes())
            .await
            .unwrap();
    }

    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r\n")).await;
        self.reply().await
    }
}

/// A test message of about `size` bytes with CRLF line ends.
pub fn message(subject: &str, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Sender <sender@remote.example>\r\nTo: someone@example.org\r\nSubject: {subject}\r\nMessage-ID: <{subject}@remote.example>\r\n\r\n"
    )
    .into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghij\r\n";
    while m.len() + line.len() <= size {
        m.extend_from_slice(line);
    }
    m
}

/// Dot-stuffs a CRLF message for DATA and appends the final dot.
pub fn dot_stuffed(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 8);
    for line in message.split_inclusive(|b| *b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b".\r\n");
    out
}
