//! The SMTP server session (RFC 5321), sans I/O: bytes in, reply bytes out.
//!
//! [`Session::feed`] takes whatever the socket produced, processes every complete command
//! (so PIPELINING works naturally), appends the replies to an output buffer and tells the I/O
//! loop what to do next ([`Action`]). Every lookup the session needs (is this domain ours, does
//! this user exist, check a password, may this user send as that address, store the message)
//! goes through the [`SessionBackend`] trait, so tests drive the session with a mock backend and
//! no socket.
//!
//! Parsing of commands, the DATA receiver (ends only on `<CRLF>.<CRLF>`, dot-unstuffing) and
//! the BDAT receiver come from smtp-proto; line framing is ours because we need a hard bound on
//! line length and must never parse the tail of an overlong line as a command.

mod address;
mod check_budget;
pub(crate) mod message;
pub mod reply;
pub mod spool;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hermod_common::{log_escape, sasl};
use smtp_proto::request::receiver::{BdatReceiver, DataReceiver, DummyDataReceiver};
use smtp_proto::{EhloResponse, MailFrom, RcptTo, Request};

use crate::auth::{MessageFacts, MessageOutcome, SenderAuth};
use crate::envelope::{BodyType, DsnReturn, Envelope, EnvelopeRecipient, Notify, QueueId};
pub use reply::Reply;
use spool::{Body, Content, SpoolFile};

/// Default longest command line, CRLF included. RFC 5321 asks for at least 512; AUTH initial
/// responses and long parameter lists need more.
pub const MAX_COMMAND_LINE: usize = 4096;

/// Which listener the session serves; this decides the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Port 25: mail for local domains from anyone, relaying only for `mynetworks` clients,
    /// STARTTLS offered, AUTH not offered.
    Mx,
    /// Port 587: STARTTLS, then AUTH (PLAIN, LOGIN) before MAIL; the sender must be the user's
    /// own address or alias; mail may go anywhere.
    Submission,
    /// Port 465: as `Submission`, over implicit TLS.
    Submissions,
}

impl Role {
    fn is_submission(self) -> bool {
        matches!(self, Role::Submission | Role::Submissions)
    }
}

/// Settings of a session, shared by all sessions of one listener.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub role: Role,
    /// Our name in the greeting, EHLO and Received (Postfix `myhostname`).
    pub hostname: String,
    /// Domain for the unqualified `<postmaster>` recipient (Postfix `mydomain`).
    pub postmaster_domain: String,
    /// Largest message accepted, in octets (Postfix `message_size_limit`).
    pub max_message_size: usize,
    /// Recipients per transaction; more get 452 4.5.3.
    pub max_recipients: usize,
    /// Error replies after which the session is closed with 421.
    pub max_errors: usize,
    /// Received headers after which a message is refused as looping (Postfix `hopcount_limit`).
    pub max_hops: usize,
    /// A certificate is configured, so STARTTLS can be offered.
    pub tls_available: bool,
    /// Offer and accept AUTH without TLS (off: no password over an unencrypted channel).
    pub allow_plaintext_auth: bool,
    /// Longest command line accepted, CRLF included.
    pub max_line_length: usize,
    /// Where message content above [`spool::SPOOL_THRESHOLD`] is written while it arrives
    /// (the queue's `tmp/`, cleaned at start). `None` keeps every message in memory (tests).
    pub spool_dir: Option<PathBuf>,
}

impl SessionConfig {
    /// Defaults for a role: 25 MiB messages, 100 recipients, 10 errors, 50 hops.
    pub fn new(role: Role, hostname: impl Into<String>) -> Self {
        let hostname = hostname.into();
        SessionConfig {
            role,
            postmaster_domain: hostname.clone(),
            hostname,
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_errors: 10,
            max_hops: 50,
            tls_available: true,
            allow_plaintext_auth: false,
            max_line_length: MAX_COMMAND_LINE,
            spool_dir: None,
        }
    }
}

/// What the I/O loop knows about the connection.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub peer: IpAddr,
    /// The client is in `mynetworks`: it may relay without authenticating.
    pub relay_allowed: bool,
    /// Set when the connection is already TLS (port 465): protocol and cipher, for Received.
    pub tls: Option<String>,
}

/// A lookup that could not be answered now (database down...): the client gets a 4xx reply.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

/// Result of a password check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The credentials are valid; `user` is the canonical login name.
    Success {
        user: String,
    },
    Failure,
}

/// Knows which domains are ours (Postfix `mydestination` plus the directory's domains).
pub trait LocalDomains: Send + Sync + 'static {
    /// Is `domain` (lower-case, as given: no trailing dot removed) one of ours?
    fn is_local_domain(
        &self,
        domain: &str,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;
}

/// Everything the session asks of the rest of the system.
pub trait SessionBackend: LocalDomains {
    /// Does a mailbox or alias exist for `address` (`local@domain`, domain local and
    /// lower-cased)?
    fn local_recipient_exists(
        &self,
        address: &str,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// Checks a password (throttling failed attempts is the backend's business).
    fn authenticate(
        &self,
        username: &str,
        password: &str,
        peer: IpAddr,
    ) -> impl Future<Output = Result<AuthOutcome, BackendError>> + Send;

    /// May `user` use `address` as envelope sender (its own address or one of its aliases)?
    fn may_send_as(
        &self,
        user: &str,
        address: &str,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// Mail authentication at MAIL FROM (SPF, [`crate::auth::MailAuth::check_sender`]);
    /// Err refuses the sender. The default checks nothing.
    fn check_sender(
        &self,
        peer: IpAddr,
        helo: &str,
        sender: &str,
        authenticated: bool,
        relay_allowed: bool,
    ) -> impl Future<Output = Result<SenderAuth, Reply>> + Send {
        let _ = (peer, helo, sender, authenticated, relay_allowed);
        async { Ok(SenderAuth::default()) }
    }

    /// Whether [`SessionBackend::check_message`] will look at this message: a spooled message
    /// is then read back into memory for it. The default checks nothing.
    fn checks_content(&self, facts: &MessageFacts) -> bool {
        let _ = facts;
        false
    }

    /// Mail authentication of a complete message ([`crate::auth::MailAuth::check_message`]):
    /// verification and policy for mail from outside, DKIM signing for ours. The default
    /// accepts the message unchanged.
    fn check_message(
        &self,
        facts: MessageFacts,
        message: Vec<u8>,
    ) -> impl Future<Output = MessageOutcome> + Send {
        let _ = facts;
        async { MessageOutcome::Accept(message) }
    }

    /// Stores the message durably. Ok means it is on disk: the client is told 250.
    fn enqueue(
        &self,
        id: &QueueId,
        envelope: &Envelope,
        message: &[u8],
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Stores a message that was spooled to disk as it arrived: `prefix` (the trace header)
    /// followed by the content of `body` (fsynced). The default reads the file back and calls
    /// [`SessionBackend::enqueue`], for backends that never see big messages.
    fn enqueue_spooled(
        &self,
        id: &QueueId,
        envelope: &Envelope,
        prefix: &[u8],
        body: &SpoolFile,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        async move {
            let mut message = prefix.to_vec();
            let content =
                std::fs::read(body.path()).map_err(|e| BackendError(format!("spool: {e}")))?;
            message.extend_from_slice(&content);
            self.enqueue(id, envelope, &message).await
        }
    }
}

/// What the I/O loop must do after [`Session::feed`] once it has written the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read more input.
    Continue,
    /// Upgrade the connection to TLS, then call [`Session::tls_established`]. Input that was
    /// pipelined after STARTTLS has been discarded (no plaintext command injection).
    StartTls,
    /// Close the connection.
    Close,
}

enum Flow {
    Continue,
    StartTls,
    Close,
}

enum AuthStep {
    /// AUTH PLAIN sent without initial response: waiting for the credentials.
    Plain,
    LoginUsername,
    LoginPassword(String),
}

enum State {
    Command,
    Auth(AuthStep),
    Data(DataReceiver),
    /// The message outgrew the size limit: read on to the end of data, then refuse.
    DataDiscard(DummyDataReceiver),
    Bdat {
        receiver: BdatReceiver,
        size: usize,
    },
    /// A BDAT chunk that will be refused: it must still be read off the wire.
    BdatDiscard {
        receiver: DummyDataReceiver,
        reply: Reply,
    },
}

struct Transaction {
    sender: String,
    ret: Option<DsnReturn>,
    env_id: Option<String>,
    body_type: BodyType,
    smtputf8: bool,
    recipients: Vec<EnvelopeRecipient>,
    /// Message content received so far (dot-unstuffed), in memory or spooled.
    body: Body,
    /// A BDAT chunk was accepted: DATA is no longer allowed.
    bdat_started: bool,
    /// SPF results of MAIL FROM, for the checks at the end of DATA.
    sender_auth: SenderAuth,
}

/// One SMTP server session.
pub struct Session<B> {
    config: Arc<SessionConfig>,
    conn: ConnectionInfo,
    backend: Arc<B>,
    state: State,
    /// Partial command line carried over between reads.
    line: Vec<u8>,
    /// The current line already went past the line limit: skip to its end.
    line_overflow: bool,
    helo: Option<String>,
    esmtp: bool,
    tls: Option<String>,
    user: Option<String>,
    txn: Option<Transaction>,
    errors: usize,
    closed: bool,
}

impl<B: SessionBackend> Session<B> {
    pub fn new(config: Arc<SessionConfig>, conn: ConnectionInfo, backend: Arc<B>) -> Self {
        let tls = conn.tls.clone();
        Session {
            config,
            conn,
            backend,
            state: State::Command,
            line: Vec::new(),
            line_overflow: false,
            helo: None,
            esmtp: false,
            tls,
            user: None,
            txn: None,
            errors: 0,
            closed: false,
        }
    }

    /// The 220 greeting to send when the connection opens.
    pub fn greeting(&self, out: &mut Vec<u8>) {
        Reply::bare(220, format!("{} ESMTP hermod", self.config.hostname)).write_to(out);
    }

    /// The 421 reply to send before closing an idle connection.
    pub fn timeout(&mut self, out: &mut Vec<u8>) {
        self.closed = true;
        reply::timeout().write_to(out);
    }

    /// True while message content is being read (the I/O loop uses the longer data timeout).
    pub fn in_data(&self) -> bool {
        matches!(
            self.state,
            State::Data(_) | State::DataDiscard(_) | State::Bdat { .. } | State::BdatDiscard { .. }
        )
    }

    /// The SASL identity once AUTH succeeded.
    pub fn authenticated_user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Called by the I/O loop once the STARTTLS handshake is done. The client must start over
    /// with EHLO (RFC 3207 4.2): everything learnt before TLS is forgotten.
    pub fn tls_established(&mut self, description: impl Into<String>) {
        self.tls = Some(description.into());
        self.helo = None;
        self.esmtp = false;
        self.user = None;
        self.txn = None;
        self.state = State::Command;
        self.line.clear();
        self.line_overflow = false;
    }

    /// Processes `input`, appending replies to `out`.
    pub async fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Action {
        let mut rest = input;
        while !rest.is_empty() {
            if self.closed {
                return Action::Close;
            }
            match std::mem::replace(&mut self.state, State::Command) {
                State::Data(mut receiver) => {
                    let Some(txn) = self.txn.as_mut() else {
                        continue;
                    };
                    let mut bytes = rest.iter();
                    let before = txn.body.buffer().len();
                    let done = receiver.ingest(&mut bytes, txn.body.buffer());
                    txn.body.ingested(before);
                    rest = bytes.as_slice();
                    let too_big = txn.body.len() > self.config.max_message_size;
                    match (done, too_big) {
                        (true, false) => self.finish_message(out).await,
                        (true, true) => {
                            self.txn = None;
                            self.send(out, reply::too_big());
                        }
                        (false, true) => {
                            txn.body.discard();
                            self.state = State::DataDiscard(DummyDataReceiver::new_data(&receiver));
                        }
                        (false, false) => self.state = State::Data(receiver),
                    }
                }
                State::DataDiscard(mut receiver) => {
                    let mut bytes = rest.iter();
                    let done = receiver.ingest(&mut bytes);
                    rest = bytes.as_slice();
                    if done {
                        self.txn = None;
                        self.send(out, reply::too_big());
                    } else {
                        self.state = State::DataDiscard(receiver);
                    }
                }
                State::Bdat { mut receiver, size } => {
                    let Some(txn) = self.txn.as_mut() else {
                        continue;
                    };
                    let mut bytes = rest.iter();
                    let before = txn.body.buffer().len();
                    let done = receiver.ingest(&mut bytes, txn.body.buffer());
                    txn.body.ingested(before);
                    rest = bytes.as_slice();
                    if done {
                        self.bdat_chunk_done(receiver.is_last, size, out).await;
                    } else {
                        self.state = State::Bdat { receiver, size };
                    }
                }
                State::BdatDiscard {
                    mut receiver,
                    reply,
                } => {
                    let mut bytes = rest.iter();
                    let done = receiver.ingest(&mut bytes);
                    rest = bytes.as_slice();
                    if done {
                        self.txn = None;
                        self.send(out, reply);
                    } else {
                        self.state = State::BdatDiscard { receiver, reply };
                    }
                }
                line_state @ (State::Command | State::Auth(_)) => {
                    self.state = line_state;
                    let Some(pos) = rest.iter().position(|&b| b == b'\n') else {
                        self.buffer_partial_line(rest);
                        break;
                    };
                    let (head, tail) = rest.split_at(pos + 1);
                    rest = tail;
                    let flow = self.complete_line(head, out).await;
                    if self.errors >= self.config.max_errors && !self.closed {
                        self.send(out, reply::too_many_errors());
                        self.closed = true;
                        return Action::Close;
                    }
                    match flow {
                        Flow::Continue => {}
                        Flow::StartTls => {
                            self.line.clear();
                            return Action::StartTls;
                        }
                        Flow::Close => {
                            self.closed = true;
                            return Action::Close;
                        }
                    }
                }
            }
        }
        if self.closed {
            Action::Close
        } else {
            Action::Continue
        }
    }

    fn buffer_partial_line(&mut self, bytes: &[u8]) {
        if self.line_overflow {
            return;
        }
        if self.line.len() + bytes.len() > self.config.max_line_length {
            self.line.clear();
            self.line_overflow = true;
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    /// `head` is the rest of a line, LF included.
    async fn complete_line(&mut self, head: &[u8], out: &mut Vec<u8>) -> Flow {
        if self.line_overflow || self.line.len() + head.len() > self.config.max_line_length {
            self.line.clear();
            self.line_overflow = false;
            self.state = State::Command;
            self.send(out, reply::line_too_long());
            return Flow::Continue;
        }
        if self.line.is_empty() {
            return self.handle_line(head, out).await;
        }
        let mut line = std::mem::take(&mut self.line);
        line.extend_from_slice(head);
        let flow = self.handle_line(&line, out).await;
        line.clear();
        self.line = line;
        flow
    }

    /// One complete line (ending in LF, CRLF or bare LF) in command or AUTH state.
    async fn handle_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Flow {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.iter().any(|&b| b == b'\r' || b == 0) {
            self.state = State::Command;
            self.send(
                out,
                Reply::new(501, [5, 5, 2], "Invalid character in command line"),
            );
            return Flow::Continue;
        }
        match std::mem::replace(&mut self.state, State::Command) {
            State::Auth(step) => {
                let text = String::from_utf8_lossy(content);
                self.auth_continue(step, &text, out).await;
                Flow::Continue
            }
            _ => self.handle_command(line, out).await,
        }
    }

    async fn handle_command(&mut self, line: &[u8], out: &mut Vec<u8>) -> Flow {
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request,
            Err(error) => {
                self.send(out, parse_error_reply(error));
                return Flow::Continue;
            }
        };
        match request {
            Request::Ehlo { host } => self.helo(&host, true, out),
            Request::Helo { host } => self.helo(&host, false, out),
            Request::Mail { from } => self.mail(from, line, out).await,
            Request::Rcpt { to } => self.rcpt(to, line, out).await,
            Request::Data => self.data(out),
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(chunk_size, is_last, out).await,
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, &initial_response, out).await,
            Request::StartTls => return self.starttls(out),
            Request::Rset => {
                self.txn = None;
                self.send(out, reply::ok());
            }
            Request::Noop { .. } => self.send(out, reply::ok()),
            Request::Quit => {
                self.send(out, Reply::new(221, [2, 0, 0], "Bye"));
                return Flow::Close;
            }
            Request::Vrfy { .. } => self.send(
                out,
                Reply::new(
                    252,
                    [2, 5, 0],
                    "Cannot VRFY user, but will accept message and attempt delivery",
                ),
            ),
            Request::Help { .. } => self.send(
                out,
                Reply::new(
                    214,
                    [2, 0, 0],
                    "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS \
                     AUTH; see RFC 5321",
                ),
            ),
            Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => {
                self.send(out, Reply::new(502, [5, 5, 1], "Command not implemented"))
            }
            Request::Lhlo { .. } => {
                self.send(out, Reply::new(500, [5, 5, 2], "Command unrecognized"))
            }
        }
        Flow::Continue
    }

    fn helo(&mut self, host: &str, esmtp: bool, out: &mut Vec<u8>) {
        // A new greeting resets any transaction (RFC 5321 4.1.4).
        self.txn = None;
        self.helo = Some(host.to_string());
        self.esmtp = esmtp;
        if !esmtp {
            self.send(out, Reply::bare(250, self.config.hostname.clone()));
            return;
        }
        let mut ehlo = EhloResponse::new(self.config.hostname.as_str());
        ehlo.capabilities = smtp_proto::EXT_PIPELINING
            | smtp_proto::EXT_SIZE
            | smtp_proto::EXT_8BIT_MIME
            | smtp_proto::EXT_ENHANCED_STATUS_CODES
            | smtp_proto::EXT_SMTP_UTF8
            | smtp_proto::EXT_CHUNKING
            | smtp_proto::EXT_DSN;
        ehlo.size = self.config.max_message_size;
        if self.config.tls_available && self.tls.is_none() {
            ehlo.capabilities |= smtp_proto::EXT_START_TLS;
        }
        // No password over an unencrypted channel: AUTH appears only once TLS is up.
        if self.config.role.is_submission() && self.auth_allowed() {
            ehlo.capabilities |= smtp_proto::EXT_AUTH;
            ehlo.auth_mechanisms = smtp_proto::AUTH_PLAIN | smtp_proto::AUTH_LOGIN;
        }
        let mut body = Vec::new();
        let _ = ehlo.write(&mut body);
        // smtp-proto's first line carries a joke; ours names the host and the client.
        let first_line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(0, |pos| pos + 2);
        out.extend_from_slice(
            format!(
                "250-{} Hello {}\r\n",
                self.config.hostname,
                reply::sanitize(host)
            )
            .as_bytes(),
        );
        out.extend_from_slice(&body[first_line_end..]);
    }

    async fn mail(&mut self, from: MailFrom<Cow<'_, str>>, line: &[u8], out: &mut Vec<u8>) {
        if self.helo.is_none() {
            return self.send(out, reply::bad_sequence("Send HELO/EHLO first"));
        }
        if self.txn.is_some() {
            return self.send(out, reply::bad_sequence("Nested MAIL command"));
        }
        if self.config.role.is_submission() {
            if !self.auth_allowed() {
                return self.send(
                    out,
                    Reply::new(530, [5, 7, 0], "Must issue a STARTTLS command first"),
                );
            }
            if self.user.is_none() {
                return self.send(out, Reply::new(530, [5, 7, 0], "Authentication required"));
            }
        }
        const UNADVERTISED_FLAGS: u64 = smtp_proto::MAIL_BODY_BINARYMIME
            | smtp_proto::MAIL_REQUIRETLS
            | smtp_proto::MAIL_CONPERM
            | smtp_proto::MAIL_BY_NOTIFY
            | smtp_proto::MAIL_BY_RETURN
            | smtp_proto::MAIL_BY_TRACE;
        if from.flags & UNADVERTISED_FLAGS != 0
            || from.hold_for != 0
            || from.hold_until != 0
            || from.by != 0
            || from.mt_priority != 0
            || from.mtrk.is_some()
            || from.trans_id.is_some()
            || from.solicit.is_some()
        {
            return self.send(out, Reply::new(555, [5, 5, 4], "Unsupported parameter"));
        }
        if from.size > self.config.max_message_size {
            return self.send(out, reply::too_big());
        }
        let smtputf8 = from.flags & smtp_proto::MAIL_SMTPUTF8 != 0;
        let sender = if from.address.is_empty() {
            // smtp-proto turns both `<>` and `<postmaster>` into "": only `<>` is a valid
            // reverse-path.
            if !contains_ignore_case(line, b"<>") {
                return self.send(out, bad_sender());
            }
            if self.config.role.is_submission() {
                return self.send(out, sender_not_owned());
            }
            String::new()
        } else {
            match self.check_address_syntax(&from.address, smtputf8) {
                Err(r) => return self.send(out, r.unwrap_or_else(bad_sender)),
                // Reports to this sender would go inside a network: see crate::ip_literal.
                Ok((_, domain))
                    if !self.conn.relay_allowed
                        && crate::ip_literal::is_forbidden_literal_domain(domain) =>
                {
                    tracing::info!(peer = %self.conn.peer,
                        sender = %log_escape::escape(&*from.address),
                        "internal address literal refused as sender");
                    return self.send(
                        out,
                        Reply::new(553, [5, 1, 8], "Sender address literal not accepted"),
                    );
                }
                Ok((local, domain)) => address::normalize(local, domain),
            }
        };
        if let Some(user) = self
            .user
            .clone()
            .filter(|_| self.config.role.is_submission())
        {
            match self.backend.may_send_as(&user, &sender).await {
                Ok(true) => {}
                Ok(false) => return self.send(out, sender_not_owned()),
                Err(e) => return self.backend_failed(out, e),
            }
        }
        let sender_auth = match self
            .backend
            .check_sender(
                self.conn.peer,
                self.helo.as_deref().unwrap_or_default(),
                &sender,
                self.user.is_some() && self.config.role.is_submission(),
                self.conn.relay_allowed,
            )
            .await
        {
            Ok(auth) => auth,
            Err(reply) => return self.send(out, reply),
        };
        let ret = if from.flags & smtp_proto::MAIL_RET_FULL != 0 {
            Some(DsnReturn::Full)
        } else if from.flags & smtp_proto::MAIL_RET_HDRS != 0 {
            Some(DsnReturn::Headers)
        } else {
            None
        };
        let body_type = if from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0 {
            BodyType::EightBitMime
        } else if from.flags & smtp_proto::MAIL_BODY_7BIT != 0 {
            BodyType::SevenBit
        } else {
            BodyType::Unspecified
        };
        self.txn = Some(Transaction {
            sender,
            ret,
            env_id: from.env_id.map(|e| printable(&e)),
            body_type,
            smtputf8,
            recipients: Vec::new(),
            body: Body::new(self.config.spool_dir.clone()),
            bdat_started: false,
            sender_auth,
        });
        self.send(out, Reply::new(250, [2, 1, 0], "Sender OK"));
    }

    /// Common address checks; `Err(None)` means "bad syntax" with the caller's own reply.
    fn check_address_syntax<'a>(
        &self,
        address: &'a str,
        smtputf8: bool,
    ) -> Result<(&'a str, &'a str), Option<Reply>> {
        if address.len() > address::MAX_ADDRESS_LEN || address::has_forbidden_chars(address) {
            return Err(None);
        }
        if !address.is_ascii() && !smtputf8 {
            return Err(Some(Reply::new(
                553,
                [5, 6, 7],
                "Non-ASCII address requires SMTPUTF8",
            )));
        }
        let (local, domain) = address::split(address).ok_or(None)?;
        if !address::valid_domain(domain, smtputf8) {
            return Err(None);
        }
        Ok((local, domain))
    }

    async fn rcpt(&mut self, to: RcptTo<Cow<'_, str>>, line: &[u8], out: &mut Vec<u8>) {
        let Some(txn) = self.txn.as_ref() else {
            return self.send(out, reply::bad_sequence("Need MAIL command"));
        };
        if txn.bdat_started {
            return self.send(out, reply::bad_sequence("RCPT after BDAT"));
        }
        if txn.recipients.len() >= self.config.max_recipients {
            return self.send(out, Reply::new(452, [4, 5, 3], "Too many recipients"));
        }
        if to.flags & (smtp_proto::RCPT_CONNEG | smtp_proto::RCPT_RRVS_REJECT) != 0
            || to.flags & smtp_proto::RCPT_RRVS_CONTINUE != 0
        {
            return self.send(out, Reply::new(555, [5, 5, 4], "Unsupported parameter"));
        }
        let smtputf8 = txn.smtputf8;
        let (address, local) = match self.classify_recipient(&to.address, line, smtputf8).await {
            Ok(found) => found,
            Err(r) => return self.send(out, r),
        };
        let notify = Notify {
            never: to.flags & smtp_proto::RCPT_NOTIFY_NEVER != 0,
            success: to.flags & smtp_proto::RCPT_NOTIFY_SUCCESS != 0,
            failure: to.flags & smtp_proto::RCPT_NOTIFY_FAILURE != 0,
            delay: to.flags & smtp_proto::RCPT_NOTIFY_DELAY != 0,
        };
        let orcpt = to.orcpt.map(|o| format!("rfc822;{}", printable(&o)));
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        if !txn.recipients.iter().any(|r| r.address == address) {
            txn.recipients.push(EnvelopeRecipient {
                address,
                local,
                notify,
                orcpt,
            });
        }
        self.send(out, Reply::new(250, [2, 1, 5], "Recipient OK"));
    }

    /// Decides whether a recipient is accepted: `(address, is_local)`, or the refusal.
    ///
    /// Relay policy: a local domain is matched exactly (case-insensitive) as the backend knows
    /// it; anything else (trailing dot, subdomain, IP literal) is remote and needs an
    /// authenticated client or a `mynetworks` client. A local-domain address with routing
    /// syntax in its local part (`%`, `!`, `@`, `:`) that is not a known user is refused as a
    /// relay attempt.
    async fn classify_recipient(
        &self,
        raw: &str,
        line: &[u8],
        smtputf8: bool,
    ) -> Result<(String, bool), Reply> {
        let bad_syntax = || Reply::new(501, [5, 1, 3], "Bad recipient address syntax");
        if raw.is_empty() {
            // smtp-proto maps `<postmaster>` (always accepted, RFC 5321 4.5.1) to "".
            return if contains_ignore_case(line, b"<postmaster>") {
                Ok((
                    format!("postmaster@{}", self.config.postmaster_domain),
                    true,
                ))
            } else {
                Err(bad_syntax())
            };
        }
        let (local, domain) = self
            .check_address_syntax(raw, smtputf8)
            .map_err(|r| r.unwrap_or_else(bad_syntax))?;
        if !self.conn.relay_allowed && crate::ip_literal::is_forbidden_literal_domain(domain) {
            return Err(Reply::new(
                550,
                [5, 7, 1],
                "Recipient address literal not accepted",
            ));
        }
        let domain_lc = domain.to_lowercase();
        let is_local = !address::is_address_literal(domain)
            && self
                .backend
                .is_local_domain(&domain_lc)
                .await
                .map_err(|e| self.log_backend_error(e))?;
        let address = address::normalize(local, domain);
        if is_local {
            if local.eq_ignore_ascii_case("postmaster") {
                return Ok((format!("postmaster@{domain_lc}"), true));
            }
            let exists = self
                .backend
                .local_recipient_exists(&address)
                .await
                .map_err(|e| self.log_backend_error(e))?;
            if exists {
                return Ok((address, true));
            }
            if address::has_routing_syntax(local) {
                return Err(reply::relay_denied());
            }
            return Err(Reply::new(
                550,
                [5, 1, 1],
                "User unknown in local recipient table",
            ));
        }
        if !(self.user.is_some() || self.conn.relay_allowed) {
            return Err(reply::relay_denied());
        }
        Ok((address, false))
    }

    fn data(&mut self, out: &mut Vec<u8>) {
        let Some(txn) = self.txn.as_ref() else {
            return self.send(out, reply::bad_sequence("Need MAIL command"));
        };
        if txn.bdat_started {
            return self.send(out, reply::bad_sequence("DATA after BDAT"));
        }
        if txn.recipients.is_empty() {
            return self.send(out, Reply::new(554, [5, 5, 1], "No valid recipients"));
        }
        self.state = State::Data(primed_data_receiver());
        self.send(out, Reply::bare(354, "End data with <CR><LF>.<CR><LF>"));
    }

    async fn bdat(&mut self, size: usize, is_last: bool, out: &mut Vec<u8>) {
        let refusal = match self.txn.as_ref() {
            None => Some(reply::bad_sequence("Need MAIL command")),
            Some(txn) if txn.recipients.is_empty() => {
                Some(Reply::new(554, [5, 5, 1], "No valid recipients"))
            }
            Some(txn) if txn.body.len().saturating_add(size) > self.config.max_message_size => {
                Some(reply::too_big())
            }
            Some(_) => None,
        };
        if let Some(reply) = refusal {
            // The chunk follows the command whatever we answer: read it off the wire first.
            if size == 0 {
                self.txn = None;
                self.send(out, reply);
            } else {
                self.state = State::BdatDiscard {
                    receiver: DummyDataReceiver::new_bdat(size),
                    reply,
                };
            }
            return;
        }
        if let Some(txn) = self.txn.as_mut() {
            txn.bdat_started = true;
        }
        if size == 0 {
            self.bdat_chunk_done(is_last, 0, out).await;
        } else {
            self.state = State::Bdat {
                receiver: BdatReceiver::new(size, is_last),
                size,
            };
        }
    }

    async fn bdat_chunk_done(&mut self, is_last: bool, size: usize, out: &mut Vec<u8>) {
        if is_last {
            self.finish_message(out).await;
        } else {
            self.send(
                out,
                Reply::new(250, [2, 0, 0], format!("{size} octets received")),
            );
        }
    }

    fn starttls(&mut self, out: &mut Vec<u8>) -> Flow {
        if self.tls.is_some() {
            self.send(out, reply::bad_sequence("TLS already active"));
            return Flow::Continue;
        }
        if !self.config.tls_available {
            self.send(out, Reply::new(454, [4, 7, 0], "TLS not available"));
            return Flow::Continue;
        }
        self.send(out, Reply::new(220, [2, 0, 0], "Ready to start TLS"));
        Flow::StartTls
    }

    async fn auth(&mut self, mechanism: u64, initial: &str, out: &mut Vec<u8>) {
        if !self.config.role.is_submission() {
            return self.send(out, reply::bad_sequence("Authentication not enabled"));
        }
        if self.helo.is_none() {
            return self.send(out, reply::bad_sequence("Send EHLO first"));
        }
        if !self.auth_allowed() {
            return self.send(
                out,
                Reply::new(
                    538,
                    [5, 7, 11],
                    "Encryption required for requested authentication mechanism",
                ),
            );
        }
        if self.user.is_some() {
            return self.send(out, reply::bad_sequence("Already authenticated"));
        }
        if self.txn.is_some() {
            return self.send(
                out,
                reply::bad_sequence("AUTH not permitted during a mail transaction"),
            );
        }
        match mechanism {
            smtp_proto::AUTH_PLAIN if initial.is_empty() => {
                self.state = State::Auth(AuthStep::Plain);
                self.send(out, Reply::bare(334, ""));
            }
            smtp_proto::AUTH_PLAIN => self.auth_continue(AuthStep::Plain, initial, out).await,
            smtp_proto::AUTH_LOGIN if initial.is_empty() => {
                self.state = State::Auth(AuthStep::LoginUsername);
                self.send(out, Reply::bare(334, sasl::LOGIN_USERNAME_CHALLENGE));
            }
            smtp_proto::AUTH_LOGIN => {
                self.auth_continue(AuthStep::LoginUsername, initial, out)
                    .await
            }
            _ => self.send(
                out,
                Reply::new(504, [5, 5, 4], "Unrecognized authentication type"),
            ),
        }
    }

    async fn auth_continue(&mut self, step: AuthStep, text: &str, out: &mut Vec<u8>) {
        let credentials = match step {
            AuthStep::Plain => sasl::decode_plain(text),
            AuthStep::LoginUsername => match sasl::decode_login_field(text) {
                Ok(username) => {
                    self.state = State::Auth(AuthStep::LoginPassword(username));
                    return self.send(out, Reply::bare(334, sasl::LOGIN_PASSWORD_CHALLENGE));
                }
                Err(e) => Err(e),
            },
            AuthStep::LoginPassword(login) => {
                sasl::decode_login_field(text).map(|password| sasl::Credentials { login, password })
            }
        };
        let credentials = match credentials {
            Ok(c) => c,
            Err(sasl::SaslError::Cancelled) => {
                return self.send(out, Reply::new(501, [5, 0, 0], "Authentication cancelled"));
            }
            // Someone else's identity as authorization identity: refused like a bad password.
            Err(sasl::SaslError::AuthzidMismatch) => return self.send(out, bad_credentials()),
            Err(_) => {
                return self.send(out, Reply::new(501, [5, 5, 2], "Malformed SASL response"));
            }
        };
        match self
            .backend
            .authenticate(&credentials.login, &credentials.password, self.conn.peer)
            .await
        {
            Ok(AuthOutcome::Success { user }) => {
                tracing::info!(peer = %self.conn.peer, %user, "smtp auth succeeded");
                self.user = Some(user);
                self.send(out, Reply::new(235, [2, 7, 0], "Authentication successful"));
            }
            Ok(AuthOutcome::Failure) => {
                tracing::warn!(peer = %self.conn.peer,
                    login = %log_escape::escape(&credentials.login),
                    "smtp auth failed");
                self.send(out, bad_credentials());
            }
            Err(e) => {
                tracing::error!(error = %e, "authentication backend failed");
                self.send(
                    out,
                    Reply::new(454, [4, 7, 0], "Temporary authentication failure"),
                );
            }
        }
    }

    /// End of DATA or of the last BDAT chunk: build the queued form and store it.
    async fn finish_message(&mut self, out: &mut Vec<u8>) {
        let Some(txn) = self.txn.take() else {
            return self.send(out, reply::bad_sequence("Need MAIL command"));
        };
        let Transaction {
            sender,
            ret,
            env_id,
            body_type,
            smtputf8,
            recipients,
            body,
            sender_auth,
            ..
        } = txn;
        // Finishing a spooled message fsyncs a big file: not on a runtime thread.
        let finished = if body.is_spooled() {
            tokio::task::spawn_blocking(move || body.finish())
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
        } else {
            body.finish()
        };
        let content = match finished {
            Ok(content) => content,
            Err(e) => {
                tracing::error!(error = %e, "could not spool message");
                return self.send(out, reply::temporary_failure());
            }
        };
        let headers = message::header_section(match &content {
            Content::Memory(body) => body,
            Content::Spooled(spool) => spool.head(),
        });
        if message::count_fields(headers, "Received") >= self.config.max_hops {
            return self.send(
                out,
                Reply::new(554, [5, 4, 6], "Too many hops: mail forwarding loop"),
            );
        }
        let id = QueueId::generate();
        let now = unix_now();
        let single_recipient = match recipients.as_slice() {
            [only] => Some(only.address.as_str()),
            _ => None,
        };
        let helo = self.helo.as_deref().unwrap_or("unknown");
        let mut queued = message::received_header(&message::TraceInfo {
            helo,
            peer: self.conn.peer,
            hostname: &self.config.hostname,
            protocol: message::protocol_name(self.esmtp, self.tls.is_some(), self.user.is_some()),
            tls: self.tls.as_deref(),
            queue_id: id.as_str(),
            single_recipient,
            date: now,
        })
        .into_bytes();
        let trace_len = queued.len();
        if self.config.role.is_submission() {
            if message::count_fields(headers, "Message-ID") == 0 {
                queued.extend_from_slice(
                    format!("Message-ID: <{id}@{}>\r\n", self.config.hostname).as_bytes(),
                );
            }
            if message::count_fields(headers, "Date") == 0 {
                queued.extend_from_slice(
                    format!("Date: {}\r\n", message::rfc5322_date(now)).as_bytes(),
                );
            }
        }
        let facts = MessageFacts {
            ip: self.conn.peer,
            helo: helo.to_string(),
            sender: sender.clone(),
            authenticated: self.user.is_some() && self.config.role.is_submission(),
            relay_allowed: self.conn.relay_allowed,
            remote_recipients: recipients.iter().any(|r| !r.local),
            forwarded: false,
            sender_auth,
            trace_len,
            queue_id: id.to_string(),
            recipients: recipients.iter().map(|r| r.address.clone()).collect(),
            user: self.user.clone(),
            size: queued.len()
                + match &content {
                    Content::Memory(body) => body.len(),
                    Content::Spooled(spool) => usize::try_from(spool.len()).unwrap_or(usize::MAX),
                },
        };
        // Mail authentication needs the whole message: a spooled one is read back first,
        // within the process-wide budget for checks in flight (held until it is queued).
        let mut _budget = None;
        let content = match content {
            Content::Spooled(spool) if self.backend.checks_content(&facts) => {
                let path = spool.path().to_path_buf();
                let len = std::fs::metadata(&path).map_or(0, |m| m.len());
                match check_budget::reserve(len).await {
                    Some(permit) => _budget = Some(permit),
                    None => {
                        tracing::warn!(queue_id = %id, size = len,
                            "content checks busy: message deferred");
                        return self.send(out, reply::temporary_failure());
                    }
                }
                match tokio::task::spawn_blocking(move || std::fs::read(path)).await {
                    Ok(Ok(bytes)) => Content::Memory(bytes),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "could not read the spooled message");
                        return self.send(out, reply::temporary_failure());
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "could not read the spooled message");
                        return self.send(out, reply::temporary_failure());
                    }
                }
            }
            other => other,
        };
        let content = match content {
            Content::Memory(body) => {
                queued.reserve_exact(body.len());
                queued.extend_from_slice(&body);
                drop(body);
                queued = match self.backend.check_message(facts, queued).await {
                    MessageOutcome::Accept(message) => message,
                    MessageOutcome::Refuse(reply) => return self.send(out, reply),
                    MessageOutcome::Discard => {
                        tracing::info!(queue_id = %id, from = %log_escape::escape(&sender),
                            "message discarded by a filter");
                        return self.send(
                            out,
                            Reply::new(250, [2, 0, 0], format!("Ok: queued as {id}")),
                        );
                    }
                };
                None
            }
            Content::Spooled(spool) => Some(spool),
        };
        let envelope = Envelope {
            sender,
            recipients,
            ret,
            env_id,
            body: body_type,
            smtputf8,
            auth_user: self.user.clone(),
            client: format!("[{}] {}", self.conn.peer, helo),
        };
        let size = queued.len()
            + content.as_ref().map_or(0, |spool| {
                usize::try_from(spool.len()).unwrap_or(usize::MAX)
            });
        let stored = match content {
            None => self.backend.enqueue(&id, &envelope, &queued).await,
            Some(spool) => {
                self.backend
                    .enqueue_spooled(&id, &envelope, &queued, &spool)
                    .await
            }
        };
        match stored {
            Ok(()) => {
                tracing::info!(queue_id = %id, from = %log_escape::escape(&envelope.sender),
                    nrcpt = envelope.recipients.len(), size,
                    client = %log_escape::escape(&envelope.client), "message accepted");
                self.send(
                    out,
                    Reply::new(250, [2, 0, 0], format!("Ok: queued as {id}")),
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "could not queue message");
                self.send(out, reply::temporary_failure());
            }
        }
    }

    /// Passwords only over TLS, unless the admin allowed plaintext AUTH.
    fn auth_allowed(&self) -> bool {
        self.tls.is_some() || self.config.allow_plaintext_auth
    }

    fn log_backend_error(&self, error: BackendError) -> Reply {
        tracing::error!(error = %error, "directory lookup failed");
        reply::temporary_failure()
    }

    fn backend_failed(&mut self, out: &mut Vec<u8>, error: BackendError) {
        let reply = self.log_backend_error(error);
        self.send(out, reply);
    }

    fn send(&mut self, out: &mut Vec<u8>, reply: Reply) {
        if reply.is_error() {
            self.errors += 1;
        }
        reply.write_to(out);
    }
}

/// A DataReceiver that has already seen the CRLF ending the DATA command line, so that a
/// first line of `.` ends the (empty) message and a first line of `..x` is unstuffed like any
/// other line. smtp-proto's receiver otherwise only recognises a dot after a CRLF it saw itself.
fn primed_data_receiver() -> DataReceiver {
    let mut receiver = DataReceiver::new();
    let mut scratch = Vec::new();
    receiver.ingest(&mut b"\r\n".iter(), &mut scratch);
    receiver
}

fn parse_error_reply(error: smtp_proto::Error) -> Reply {
    use smtp_proto::Error;
    match error {
        Error::UnknownCommand => Reply::new(500, [5, 5, 2], "Command unrecognized"),
        Error::InvalidSenderAddress => bad_sender(),
        Error::InvalidRecipientAddress => {
            Reply::new(501, [5, 1, 3], "Bad recipient address syntax")
        }
        Error::SyntaxError { syntax } => reply::syntax(format!("Syntax: {syntax}")),
        Error::InvalidParameter { param } => {
            reply::syntax(format!("Invalid value for parameter {param}"))
        }
        Error::UnsupportedParameter { param } => Reply::new(
            555,
            [5, 5, 4],
            format!("Unsupported parameter {}", reply::sanitize(&param)),
        ),
        Error::ResponseTooLong => reply::line_too_long(),
        Error::NeedsMoreData { .. } | Error::InvalidResponse { .. } => {
            reply::syntax("Syntax error")
        }
    }
}

fn bad_sender() -> Reply {
    Reply::new(501, [5, 1, 7], "Bad sender address syntax")
}

fn sender_not_owned() -> Reply {
    Reply::new(553, [5, 7, 1], "Sender address rejected: not owned by user")
}

fn bad_credentials() -> Reply {
    Reply::new(535, [5, 7, 8], "Authentication credentials invalid")
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Client text stored in the envelope and later written into DSNs: printable ASCII only.
fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(256)
        .collect()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
