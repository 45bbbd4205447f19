//! One SMTP connection to a remote server: the socket loop around [`super::client`].
//!
//! [`SmtpConnection::open`] connects, reads the greeting, says EHLO (HELO if EHLO is refused),
//! upgrades with STARTTLS when offered and authenticates to a relay host; then
//! [`SmtpConnection::send`] carries one message after the other over the same connection.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use super::body::{self, FileMessage, OutgoingContent, StuffedFile};
use super::client::{
    Capabilities, Needs, Next, OutgoingMessage, OutgoingRecipient, RecipientReply, Transaction,
    mail_command, rcpt_command, unsuitable_server,
};
use super::reply::{RemoteReply, ReplyBuffer, synthetic};
use super::tls::{TlsClient, TlsOutcome};

/// A server to connect to: the host name it was found under, one of its addresses, the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub ip: IpAddr,
    pub port: u16,
}

impl fmt::Display for Target {
    /// Postfix's `mx.example.org[192.0.2.1]:25`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]:{}", self.host, self.ip, self.port)
    }
}

/// SASL credentials for a relay host. Debug never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// How to set up a connection.
pub struct ConnectOptions<'a> {
    /// The name we give in EHLO (myhostname).
    pub helo_name: &'a str,
    pub tls: &'a TlsClient,
    /// Try STARTTLS when offered (false on the plain retry after a failed handshake).
    pub starttls: bool,
    /// Demand STARTTLS and a certificate that verifies.
    pub require_tls: bool,
    /// Authenticate (relay host only).
    pub credentials: Option<&'a Credentials>,
    pub timeouts: Timeouts,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// Each reply to a command.
    pub command: Duration,
    /// Sending the content and the reply to its end.
    pub data: Duration,
}

/// Why a connection could not be set up or broke down; every recipient in flight gets
/// `reply`. It is always temporary: another server or a later attempt may do better.
#[derive(Debug, Clone)]
pub struct ConnectionFailure {
    pub reply: RemoteReply,
    /// The TLS handshake failed on an opportunistic connection: a plain connection may work.
    pub retry_without_tls: bool,
}

impl ConnectionFailure {
    fn new(code: u16, status: [u8; 3], text: String) -> Self {
        ConnectionFailure {
            reply: synthetic(code, status, &text),
            retry_without_tls: false,
        }
    }

    fn server(reply: RemoteReply) -> Self {
        ConnectionFailure {
            reply,
            retry_without_tls: false,
        }
    }
}

/// What became of a message given to [`SmtpConnection::send`].
#[derive(Debug, Clone)]
pub enum SendOutcome {
    /// The server cannot take this message (size, 8BITMIME, SMTPUTF8): a permanent reply of
    /// ours, for every recipient.
    Unsuitable(RemoteReply),
    /// One reply per recipient, in order.
    Replies(Vec<RecipientReply>),
}

type ClientStream = Either<TcpStream, TlsStream<TcpStream>>;

/// Reads replies from and writes commands to the stream, with timeouts, turning failures
/// into the reply recorded for the recipients.
struct Wire {
    stream: ClientStream,
    replies: ReplyBuffer,
    target: String,
    buf: Vec<u8>,
}

impl Wire {
    async fn read_reply(
        &mut self,
        limit: Duration,
        stage: &str,
    ) -> Result<RemoteReply, ConnectionFailure> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match self.replies.next_reply() {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => {}
                Err(e) => {
                    return Err(ConnectionFailure::new(
                        451,
                        [4, 5, 0],
                        format!("{} sent a bad reply while {stage}: {e}", self.target),
                    ));
                }
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut self.buf)).await;
            match read {
                Err(_) => return Err(self.timed_out(stage)),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(self.lost(stage)),
                Ok(Ok(n)) => self.replies.extend(&self.buf[..n]),
            }
        }
    }

    async fn write(
        &mut self,
        bytes: &[u8],
        limit: Duration,
        stage: &str,
    ) -> Result<(), ConnectionFailure> {
        let written = tokio::time::timeout(limit, async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        })
        .await;
        match written {
            Err(_) => Err(self.timed_out(stage)),
            Ok(Err(_)) => Err(self.lost(stage)),
            Ok(Ok(())) => Ok(()),
        }
    }

    async fn command(
        &mut self,
        line: &str,
        limit: Duration,
        stage: &str,
    ) -> Result<RemoteReply, ConnectionFailure> {
        self.write(line.as_bytes(), limit, stage).await?;
        self.read_reply(limit, stage).await
    }

    fn lost(&self, stage: &str) -> ConnectionFailure {
        ConnectionFailure::new(
            451,
            [4, 4, 2],
            format!("lost connection with {} while {stage}", self.target),
        )
    }

    fn timed_out(&self, stage: &str) -> ConnectionFailure {
        ConnectionFailure::new(
            451,
            [4, 4, 2],
            format!("conversation with {} timed out while {stage}", self.target),
        )
    }

    /// EHLO, or HELO when the server does not know EHLO.
    async fn hello(
        &mut self,
        name: &str,
        limit: Duration,
    ) -> Result<Capabilities, ConnectionFailure> {
        let ehlo = self
            .command(&format!("EHLO {name}\r\n"), limit, "sending EHLO")
            .await?;
        if ehlo.is_positive() {
            return Ok(Capabilities::from_ehlo(&ehlo));
        }
        if !ehlo.is_permanent() {
            return Err(ConnectionFailure::server(ehlo));
        }
        let helo = self
            .command(&format!("HELO {name}\r\n"), limit, "sending HELO")
            .await?;
        if helo.is_positive() {
            Ok(Capabilities::default())
        } else {
            Err(ConnectionFailure::server(helo))
        }
    }

    /// AUTH PLAIN, else AUTH LOGIN (RFC 4954), whichever the server offers.
    async fn authenticate(
        &mut self,
        credentials: &Credentials,
        capabilities: &Capabilities,
        limit: Duration,
    ) -> Result<(), ConnectionFailure> {
        use hermod_common::sasl::encode_base64;
        let stage = "sending AUTH";
        let reply = if capabilities.auth_plain {
            let token = encode_base64(
                format!("\0{}\0{}", credentials.username, credentials.password).as_bytes(),
            );
            self.command(&format!("AUTH PLAIN {token}\r\n"), limit, stage)
                .await?
        } else {
            let mut reply = self.command("AUTH LOGIN\r\n", limit, stage).await?;
            for secret in [&credentials.username, &credentials.password] {
                if reply.code != 334 {
                    break;
                }
                let line = format!("{}\r\n", encode_base64(secret.as_bytes()));
                reply = self.command(&line, limit, stage).await?;
            }
            reply
        };
        if reply.code == 235 {
            Ok(())
        } else {
            tracing::warn!(server = %self.target, reply = %reply.line(),
                "SASL authentication to the relay host failed");
            Err(ConnectionFailure::server(reply))
        }
    }
}

/// An open SMTP connection, ready for a mail transaction.
pub struct SmtpConnection {
    wire: Wire,
    target: Target,
    capabilities: Capabilities,
    tls: Option<TlsOutcome>,
    timeouts: Timeouts,
    /// A transaction was left open on the server: RSET before the next one.
    needs_reset: bool,
    /// The server said 421 (closing): no further use.
    closing: bool,
    transactions: usize,
}

impl SmtpConnection {
    /// Connects to `target` and brings the session to the point where MAIL FROM can be sent.
    pub async fn open(
        target: &Target,
        options: &ConnectOptions<'_>,
    ) -> Result<SmtpConnection, ConnectionFailure> {
        let t = options.timeouts;
        let addr = SocketAddr::new(target.ip, target.port);
        let tcp = match tokio::time::timeout(t.connect, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                return Err(ConnectionFailure::new(
                    451,
                    [4, 4, 1],
                    format!("connect to {target}: {e}"),
                ));
            }
            Err(_) => {
                return Err(ConnectionFailure::new(
                    451,
                    [4, 4, 1],
                    format!("connect to {target}: timed out"),
                ));
            }
        };
        let _ = tcp.set_nodelay(true);
        let mut wire = Wire {
            stream: Either::Left(tcp),
            replies: ReplyBuffer::default(),
            target: target.to_string(),
            buf: vec![0; 16 * 1024],
        };
        let greeting = wire
            .read_reply(t.command, "receiving the initial server greeting")
            .await?;
        if !greeting.is_positive() {
            // Postfix's "host refused to talk to me": another server may be willing.
            return Err(ConnectionFailure::server(greeting));
        }
        let mut capabilities = wire.hello(options.helo_name, t.command).await?;

        let mut tls = None;
        if capabilities.starttls && options.starttls {
            let reply = wire
                .command("STARTTLS\r\n", t.command, "sending STARTTLS")
                .await?;
            if reply.code == 220 {
                let Wire {
                    stream,
                    target: name,
                    buf,
                    ..
                } = wire;
                let Either::Left(tcp) = stream else {
                    return Err(ConnectionFailure::new(
                        451,
                        [4, 7, 5],
                        format!("STARTTLS inside TLS with {target}"),
                    ));
                };
                let handshake = tokio::time::timeout(
                    t.command,
                    options
                        .tls
                        .connect(tcp, &target.host, target.ip, options.require_tls),
                )
                .await
                .unwrap_or_else(|_| Err("timed out".into()));
                let (tls_stream, outcome) = handshake.map_err(|e| ConnectionFailure {
                    reply: synthetic(
                        451,
                        [4, 7, 5],
                        &format!("TLS handshake with {target} failed: {e}"),
                    ),
                    retry_without_tls: !options.require_tls,
                })?;
                tracing::info!(server = %target, tls = %outcome, "TLS connection established");
                tls = Some(outcome);
                // Whatever the server sent before the handshake is dropped with the old
                // buffer (RFC 3207 5): nothing injected in plain text counts as a reply.
                wire = Wire {
                    stream: Either::Right(tls_stream),
                    replies: ReplyBuffer::default(),
                    target: name,
                    buf,
                };
                capabilities = wire.hello(options.helo_name, t.command).await?;
            } else if options.require_tls {
                return Err(ConnectionFailure::new(
                    451,
                    [4, 7, 4],
                    format!(
                        "TLS is required, but {target} refused STARTTLS: {}",
                        reply.line()
                    ),
                ));
            }
        } else if options.require_tls {
            return Err(ConnectionFailure::new(
                451,
                [4, 7, 4],
                format!("TLS is required, but was not offered by {target}"),
            ));
        }

        if let Some(credentials) = options.credentials {
            let offered = capabilities.auth_plain || capabilities.auth_login;
            if offered && tls.is_some() {
                wire.authenticate(credentials, &capabilities, t.command)
                    .await?;
            } else if offered {
                // Without the credentials the relay would refuse the mail for good (530):
                // better to wait until it offers TLS, with the reason in the queue.
                return Err(ConnectionFailure::new(
                    451,
                    [4, 7, 0],
                    format!("{target} offers AUTH only without TLS: credentials not sent in clear"),
                ));
            } else {
                // Some relays authenticate by address; try without.
                tracing::warn!(server = %target, "relay host does not offer AUTH PLAIN or LOGIN");
            }
        }

        Ok(SmtpConnection {
            wire,
            target: target.clone(),
            capabilities,
            tls,
            timeouts: t,
            needs_reset: false,
            closing: false,
            transactions: 0,
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn tls(&self) -> Option<&TlsOutcome> {
        self.tls.as_ref()
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Transactions carried so far.
    pub fn transactions(&self) -> usize {
        self.transactions
    }

    /// Whether the connection can carry another message.
    pub fn reusable(&self) -> bool {
        !self.closing
    }

    /// Sends one message to `recipients`. An error means the connection broke: the caller
    /// drops it, and recipients without a final reply get the error's reply.
    pub async fn send(
        &mut self,
        message: &OutgoingMessage<'_>,
        recipients: &[OutgoingRecipient<'_>],
    ) -> Result<SendOutcome, ConnectionFailure> {
        let t = self.timeouts;
        let needs = Needs::of(message, recipients);
        let server = format!("{}[{}]", self.target.host, self.target.ip);
        if let Some(reason) = unsuitable_server(message, needs, &self.capabilities, &server) {
            return Ok(SendOutcome::Unsuitable(reason));
        }
        if self.needs_reset {
            let reply = self
                .wire
                .command("RSET\r\n", t.command, "sending RSET")
                .await?;
            if !reply.is_positive() {
                self.closing = true;
                return Err(ConnectionFailure::server(reply));
            }
            self.needs_reset = false;
        }
        let mail = mail_command(message, needs, &self.capabilities);
        let rcpts = recipients
            .iter()
            .map(|r| rcpt_command(r, &self.capabilities))
            .collect();
        let (mut transaction, first) = Transaction::new(mail, rcpts, self.capabilities.pipelining);
        self.wire
            .write(&first, t.command, "sending MAIL FROM")
            .await?;
        let mut limit = t.command;
        loop {
            let stage = format!("waiting for the reply to {}", transaction.waiting_for());
            let reply = self.wire.read_reply(limit, &stage).await?;
            if reply.code == 421 {
                self.closing = true;
            }
            match transaction.on_reply(reply) {
                Next::Read => {}
                Next::Write(bytes) => {
                    let stage = format!("sending {}", transaction.waiting_for());
                    self.wire.write(&bytes, t.command, &stage).await?
                }
                Next::WriteContent => {
                    match message.content {
                        OutgoingContent::Memory(m) => {
                            let content = crate::lmtp_client::dot_stuff(m);
                            self.wire
                                .write(&content, t.data, "sending message body")
                                .await?;
                        }
                        OutgoingContent::File(f) => self.write_file(f, t.data).await?,
                    }
                    limit = t.data;
                }
                Next::Done { results, reset } => {
                    self.needs_reset = reset;
                    self.transactions += 1;
                    return Ok(SendOutcome::Replies(results));
                }
            }
        }
    }

    /// Sends a message from its file, a [`body::CHUNK`] at a time, dot-stuffed as it goes;
    /// each write has the data timeout.
    async fn write_file(
        &mut self,
        message: &FileMessage,
        limit: Duration,
    ) -> Result<(), ConnectionFailure> {
        let stage = "sending message body";
        let mut file = match StuffedFile::open(message.path()).await {
            Ok(f) => f,
            Err(e) => {
                // Nothing sent yet would end the data cleanly: drop the connection, the
                // server discards the transaction; the recipients are retried.
                tracing::error!(path = %message.path().display(), error = %e, "cannot open queued message");
                self.closing = true;
                return Err(self.wire.lost(stage));
            }
        };
        let mut out = Vec::with_capacity(body::CHUNK + body::CHUNK / 8);
        loop {
            match file.next_part(&mut out).await {
                Ok(true) => self.wire.write(&out, limit, stage).await?,
                Ok(false) => return Ok(()),
                Err(e) => {
                    tracing::error!(path = %message.path().display(), error = %e, "cannot read queued message");
                    self.closing = true;
                    return Err(self.wire.lost(stage));
                }
            }
        }
    }

    /// Says goodbye; errors do not matter any more.
    pub async fn quit(mut self) {
        let limit = Duration::from_secs(5).min(self.timeouts.command);
        if !self.closing {
            let _ = self.wire.command("QUIT\r\n", limit, "sending QUIT").await;
        }
        let _ = tokio::time::timeout(limit, self.wire.stream.shutdown()).await;
    }
}
