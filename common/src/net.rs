//! Listener plumbing shared by every daemon: binding, the accept loop with connection limits,
//! one tracing span per connection, a stream that can be upgraded by STARTTLS, bounded line
//! reading, and graceful shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Service;

/// How long a TLS handshake may take.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection's byte stream: plain TCP, or TLS (implicit or after STARTTLS).
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Run the server side of a TLS handshake on a plain stream (STARTTLS, or implicit TLS).
    pub async fn upgrade(self, acceptor: &TlsAcceptor) -> io::Result<Stream> {
        match self {
            Stream::Plain(tcp) => {
                let tls = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                    .await
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                    })??;
                let stream = Stream::Tls(Box::new(tls));
                if let Some(desc) = stream.tls_description() {
                    tracing::debug!(tls = %desc, "TLS established");
                }
                Ok(stream)
            }
            Stream::Tls(_) => Err(io::Error::other("TLS already active")),
        }
    }

    /// "TLSv1_3 TLS13_AES_256_GCM_SHA384", for logs and `Received:` headers.
    pub fn tls_description(&self) -> Option<String> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(tls) => {
                let (_, conn) = tls.get_ref();
                let version = conn
                    .protocol_version()
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default();
                let suite = conn
                    .negotiated_cipher_suite()
                    .map(|s| format!("{:?}", s.suite()))
                    .unwrap_or_default();
                Some(format!("{version} {suite}"))
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// What a connection handler learns about its connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// A short unique id for logs (`s1a2b3c`).
    pub id: String,
    pub service: Service,
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// Graceful shutdown: a token that says "stop accepting" and a tracker of running sessions.
#[derive(Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Ask every listener and session to stop.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown has been asked for.
    pub async fn triggered(&self) {
        self.token.cancelled().await
    }

    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Run a task that shutdown waits for (a session, a queue runner).
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(fut)
    }

    /// After `trigger`, wait up to `grace` for tracked tasks to finish. Returns whether all did.
    pub async fn wait(&self, grace: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// Counts open connections per service, in total and per client IP.
#[derive(Debug)]
pub struct ConnLimiter {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Holds a connection's place in the limiter; released on drop.
#[derive(Debug)]
pub struct ConnSlot {
    limiter: Arc<ConnLimiter>,
    ip: IpAddr,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut open = self.limiter.open.lock().unwrap_or_else(|p| p.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

impl ConnLimiter {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnLimiter> {
        Arc::new(ConnLimiter {
            max_total,
            max_per_ip,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// A slot for a new connection from `ip`, or None when a limit is reached.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let per_ip = open.1.get(&ip).copied().unwrap_or(0);
        if open.0 >= self.max_total || per_ip >= self.max_per_ip {
            return None;
        }
        open.0 += 1;
        *open.1.entry(ip).or_insert(0) += 1;
        Some(ConnSlot {
            limiter: self.clone(),
            ip,
        })
    }

    /// Open connections right now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

/// A port that could not be bound, named clearly.
#[derive(Debug, thiserror::Error)]
#[error("{service}: cannot listen on {addr}: {source}")]
pub struct BindError {
    pub service: &'static str,
    pub addr: SocketAddr,
    pub source: io::Error,
}

/// Bind every address of a service (before privileges are dropped).
pub fn bind(
    service: Service,
    addrs: &[SocketAddr],
) -> Result<Vec<std::net::TcpListener>, BindError> {
    addrs
        .iter()
        .map(|addr| {
            let err = |source| BindError {
                service: service.name(),
                addr: *addr,
                source,
            };
            let socket = match addr {
                SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
                SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
            }
            .map_err(err)?;
            socket.set_reuseaddr(true).map_err(err)?;
            socket.bind(*addr).map_err(err)?;
            let listener = socket.listen(1024).map_err(err)?;
            listener.into_std().map_err(err)
        })
        .collect()
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// A new connection id: process-unique, short, and different across restarts.
pub fn new_conn_id() -> String {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| u64::from(rand::random::<u16>()) << 32);
    format!("{:x}", base + NEXT_CONN.fetch_add(1, Ordering::Relaxed))
}

/// How a listener runs.
#[derive(Clone)]
pub struct ListenerOptions {
    pub service: Service,
    pub limiter: Arc<ConnLimiter>,
    /// Some for implicit-TLS services: the handshake happens before the handler runs.
    pub implicit_tls: Option<TlsAcceptor>,
    /// Written to a client refused for a connection limit, before closing.
    pub busy_reply: &'static [u8],
}

/// Accept connections until shutdown, running `handler` for each in its own span and task.
pub async fn accept_loop<H, F>(
    listener: std::net::TcpListener,
    options: ListenerOptions,
    shutdown: Shutdown,
    handler: H,
) -> io::Result<()>
where
    H: Fn(Stream, ConnInfo) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let local = listener.local_addr()?;
    let handler = Arc::new(handler);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.triggered() => break,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: wait a moment instead of spinning.
                tracing::warn!(service = options.service.name(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let info = ConnInfo {
            id: new_conn_id(),
            service: options.service,
            peer,
            local,
        };
        let span = tracing::info_span!("conn", service = options.service.name(), peer = %peer, session = %info.id);
        let Some(slot) = options.limiter.acquire(peer.ip()) else {
            let busy = options.busy_reply;
            let mut tcp = tcp;
            tokio::spawn(
                async move {
                    tracing::warn!("connection limit reached; refusing");
                    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.write_all(busy)).await;
                }
                .instrument(span),
            );
            continue;
        };
        crate::metrics::connection_accepted(options.service);
        let handler = handler.clone();
        let tls = options.implicit_tls.clone();
        shutdown.spawn(
            async move {
                let _slot = slot;
                tracing::debug!("connected");
                let mut stream = Stream::Plain(tcp);
                if let Some(acceptor) = tls {
                    stream = match stream.upgrade(&acceptor).await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::info!(error = %e, "TLS handshake failed");
                            return;
                        }
                    };
                }
                handler(stream, info).await;
                tracing::debug!("disconnected");
            }
            .instrument(span),
        );
    }
    Ok(())
}

/// The outcome of reading one line.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line, without its line end (CRLF or a bare LF).
    Complete,
    /// The line was longer than the limit; it was read to its end and discarded.
    TooLong,
    /// The peer closed the connection (a partial last line is discarded).
    Eof,
}

/// Read one line of at most `max` bytes into `buf` (cleared first). A line ends at LF; a CR
/// before it is removed. Overlong lines are consumed to their end so the session can go on.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(Line::Eof);
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let n = chunk.len();
        if !too_long {
            if buf.len() + n > max + 2 {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        reader.consume(n);
        if done {
            if too_long {
                return Ok(Line::TooLong);
            }
            buf.pop(); // LF
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            if buf.len() > max {
                buf.clear();
                return Ok(Line::TooLong);
            }
            return Ok(Line::Complete);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn read_line_bounds_and_line_ends() {
        let data: &[u8] = b"EHLO x\r\nNOOP\nxxxxxxxxxxxxxxxxxxxx\r\nQUIT\r\npartial";
        let mut r = tokio::io::BufReader::with_capacity(4, data);
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut r, &mut buf, 10).await.unwrap(),
            Line::Complete
        );
        assert_eq!(buf, b"EHLO x");
        assert_eq!(
            read_line(&mut r, &mut buf, 10).await.unwrap(),
            Line::Complete
        );
        assert_eq!(buf, b"NOOP");
        assert_eq!(
            read_line(&mut r, &mut buf, 10).await.unwrap(),
            Line::TooLong
        );
        assert_eq!(
            read_line(&mut r, &mut buf, 10).await.unwrap(),
            Line::Complete
        );
        assert_eq!(buf, b"QUIT");
        assert_eq!(read_line(&mut r, &mut buf, 10).await.unwrap(), Line::Eof);
    }

    #[test]
    fn limiter_counts_per_ip_and_total() {
        let l = ConnLimiter::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = l.acquire(a).unwrap();
        let _s2 = l.acquire(a).unwrap();
        assert!(l.acquire(a).is_none(), "per-IP limit");
        let _s3 = l.acquire(b).unwrap();
        assert!(l.acquire(b).is_none(), "total limit");
        drop(s1);
        let _s4 = l.acquire(a).expect("slot freed by drop");
        assert_eq!(l.open(), 3);
    }

    #[tokio::test]
    async fn bind_conflict_names_service_and_address() {
        let first = bind(Service::Smtp, &["127.0.0.1:0".parse().unwrap()]).unwrap();
        let addr = first[0].local_addr().unwrap();
        // SO_REUSEADDR does not allow two listeners on one port.
        let err = bind(Service::Imap, &[addr]).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("imap: cannot listen on {addr}")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn accept_loop_runs_handlers_and_stops() {
        let listeners = bind(Service::Pop3, &["127.0.0.1:0".parse().unwrap()]).unwrap();
        let addr = listeners[0].local_addr().unwrap();
        let shutdown = Shutdown::new();
        let opts = ListenerOptions {
            service: Service::Pop3,
            limiter: ConnLimiter::new(10, 1),
            implicit_tls: None,
            busy_reply: b"-ERR busy\r\n",
        };
        let listener = listeners.into_iter().next().unwrap();
        let task = tokio::spawn(accept_loop(
            listener,
            opts,
            shutdown.clone(),
            |mut s, _info| async move {
                let _ = s.write_all(b"+OK hello\r\n").await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            },
        ));
        use tokio::io::AsyncReadExt;
        let mut c1 = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 32];
        let n = c1.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"+OK hello\r\n");
        // A second connection from the same IP exceeds the per-IP limit of 1.
        let mut c2 = TcpStream::connect(addr).await.unwrap();
        let n = c2.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"-ERR busy\r\n");
        shutdown.trigger();
        task.await.unwrap().unwrap();
        assert!(shutdown.wait(Duration::from_secs(2)).await);
    }
}
