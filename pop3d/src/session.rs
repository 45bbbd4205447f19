//! The POP3 session (RFC 1939 with RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH, RFC 3206
//! response codes), sans I/O: command lines in, response bytes out.
//!
//! The I/O loop hands every line to [`Session::handle_line`], which appends the response to
//! an output buffer and says what to do next ([`Control`]). Everything the session needs from
//! the rest of hermod (checking a password and opening the maildrop, reading a message,
//! applying the changes at QUIT) goes through the [`Backend`] trait, so tests drive the
//! session with an in-memory backend and no socket.
//!
//! The session keeps the maildrop as listed at login: message numbers, sizes and UIDLs do not
//! change during a session, whatever IMAP does meanwhile (RFC 1939 section 5).

#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::future::Future;

use hermod_common::log_escape::escape;
use hermod_common::sasl;
use hermod_common::store::Uid;

use crate::command::{self, Command, MessageNumber};
use crate::transfer;

/// Settings shared by all sessions of a server.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our name in the greeting and sign-off.
    pub hostname: String,
    /// Allow USER/PASS and AUTH without TLS (config `allow_plaintext_auth`).
    pub allow_plaintext_auth: bool,
    /// A certificate is loaded, so STLS can be offered.
    pub tls_available: bool,
    /// Protocol errors after which the session is closed.
    pub max_errors: usize,
}

impl SessionConfig {
    pub fn new(hostname: impl Into<String>) -> SessionConfig {
        SessionConfig {
            hostname: hostname.into(),
            allow_plaintext_auth: false,
            tls_available: true,
            max_errors: 10,
        }
    }
}

/// What the I/O loop does after a line was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Send the output and read the next line.
    Continue,
    /// Send the output, then run the TLS handshake and call [`Session::tls_started`]. Input
    /// already buffered must be discarded (it was sent in plain text after STLS).
    StartTls,
    /// Send the output and close the connection.
    Close,
}

/// One message of the maildrop as the backend lists it at login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedMessage {
    pub uid: Uid,
    /// The size RETR sends (see [`transfer::wire_size`]).
    pub size: u64,
}

/// The maildrop opened at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The canonical user address, for logs.
    pub user: String,
    /// The IMAP UIDVALIDITY of INBOX: part of every UIDL.
    pub uidvalidity: u32,
    /// Ascending UID.
    pub messages: Vec<ListedMessage>,
}

/// The result of a login attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    /// Credentials good, maildrop locked and listed.
    Opened(Listing),
    /// Wrong login or password, or a disabled account.
    Rejected,
    /// Credentials good but another POP3 session holds the maildrop.
    InUse,
}

/// A backend failure; the client gets `-ERR [SYS/TEMP]` or `-ERR [SYS/PERM]`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    /// Retrying later may work.
    pub temporary: bool,
    pub message: String,
}

impl BackendError {
    fn code(&self) -> &'static str {
        if self.temporary {
            "[SYS/TEMP]"
        } else {
            "[SYS/PERM]"
        }
    }
}

/// What the session asks of the rest of hermod.
pub trait Backend: Send {
    /// Check the credentials (throttling failures is the backend's business), then lock and
    /// list the user's INBOX.
    fn login(
        &mut self,
        login: &str,
        password: &str,
    ) -> impl Future<Output = Result<LoginOutcome, BackendError>> + Send;

    /// The message with this UID exactly as stored; None if it was expunged meanwhile.
    fn retrieve(
        &mut self,
        uid: Uid,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, BackendError>> + Send;

    /// QUIT in TRANSACTION state (the UPDATE state): mark `retrieved` \Seen and remove
    /// `deleted`, all of them or none; then release the maildrop.
    fn update(
        &mut self,
        retrieved: &[Uid],
        deleted: &[Uid],
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The session ended without QUIT (dropped, timed out, shut down): nothing is deleted;
    /// `retrieved` are still marked \Seen. Releases the maildrop.
    fn release(&mut self, retrieved: &[Uid]) -> impl Future<Output = ()> + Send;
}

/// What a session did, for the log line at its end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The logged-in user, if any.
    pub user: Option<String>,
    /// Distinct messages sent with RETR.
    pub retrieved: usize,
    /// Messages removed at QUIT.
    pub deleted: usize,
    /// The session ended with QUIT and its changes were applied.
    pub updated: bool,
}

#[derive(Debug)]
struct Entry {
    uid: Uid,
    size: u64,
    deleted: bool,
    retrieved: bool,
}

/// The maildrop during TRANSACTION state: message n is `messages[n-1]`.
#[derive(Debug)]
struct Maildrop {
    uidvalidity: u32,
    messages: Vec<Entry>,
}

impl Maildrop {
    fn from_listing(listing: Listing) -> Maildrop {
        Maildrop {
            uidvalidity: listing.uidvalidity,
            messages: listing
                .messages
                .into_iter()
                .map(|m| Entry {
                    uid: m.uid,
                    size: m.size,
                    deleted: false,
                    retrieved: false,
                })
                .collect(),
        }
    }

    /// Messages not marked deleted, and their total size.
    fn stat(&self) -> (usize, u64) {
        self.live()
            .fold((0, 0), |(n, s), (_, e)| (n + 1, s + e.size))
    }

    /// (message number, entry) of messages not marked deleted.
    fn live(&self) -> impl Iterator<Item = (usize, &Entry)> {
        self.messages
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.deleted)
            .map(|(i, e)| (i + 1, e))
    }

    /// The entry of message `n`, or the -ERR text.
    fn get(&mut self, n: MessageNumber) -> Result<&mut Entry, String> {
        let entry = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| self.messages.get_mut(i))
            .ok_or_else(|| format!("There is no message {n}"))?;
        if entry.deleted {
            return Err(format!("Message {n} is already deleted"));
        }
        Ok(entry)
    }

    fn uidl(&self, uid: Uid) -> String {
        uidl(uid, self.uidvalidity)
    }
}

/// The unique-id of a message: its IMAP UID and the mailbox's UIDVALIDITY, both as 8 hex
/// digits (Dovecot's default `%08Xu%08Xv`, so clients migrating from Dovecot with the same
/// UIDs keep their "leave on server" state). Stable as long as the IMAP UID is.
pub fn uidl(uid: Uid, uidvalidity: u32) -> String {
    format!("{uid:08X}{uidvalidity:08X}")
}

enum State {
    /// Before login; `user` after USER.
    Authorization {
        user: Option<String>,
    },
    /// AUTH PLAIN sent without initial response: waiting for it.
    SaslPlain,
    /// AUTH LOGIN: waiting for the user name, then the password.
    SaslLoginUser,
    SaslLoginPassword {
        login: String,
    },
    Transaction(Maildrop),
    /// After QUIT or the end: nothing more is accepted.
    Done,
}

/// One POP3 session.
pub struct Session<B: Backend> {
    config: SessionConfig,
    backend: B,
    tls: bool,
    state: State,
    errors: usize,
    summary: Summary,
}

impl<B: Backend> Session<B> {
    /// A new session; `tls` when the connection is already TLS (port 995).
    pub fn new(config: SessionConfig, backend: B, tls: bool) -> Session<B> {
        Session {
            config,
            backend,
            tls,
            state: State::Authorization { user: None },
            errors: 0,
            summary: Summary::default(),
        }
    }

    /// The greeting the server sends first.
    pub fn greeting(&self, out: &mut Vec<u8>) {
        ok(out, &format!("{} POP3 server ready", self.config.hostname));
    }

    /// The STLS handshake succeeded.
    pub fn tls_started(&mut self) {
        self.tls = true;
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Whether the session is logged in (TRANSACTION state).
    pub fn is_logged_in(&self) -> bool {
        matches!(self.state, State::Transaction(_))
    }

    /// What the session did so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// The I/O loop read a line longer than the limit (and discarded it).
    pub fn line_too_long(&mut self, out: &mut Vec<u8>) -> Control {
        if self.in_sasl() {
            self.state = State::Authorization { user: None };
        }
        self.error(out, "Line too long")
    }

    /// Handle one command line (without CRLF).
    pub async fn handle_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Control {
        if self.in_sasl() {
            return self.sasl_response(line, out).await;
        }
        let command = command::parse(line);
        match self.state {
            State::Authorization { .. } => self.authorization(command, out).await,
            State::Transaction(_) => self.transaction(command, out).await,
            _ => Control::Close,
        }
    }

    /// The connection ended (after QUIT or not). Without QUIT nothing is deleted; the
    /// maildrop is released either way. Returns what the session did.
    pub async fn end(&mut self) -> Summary {
        if let State::Transaction(drop) = std::mem::replace(&mut self.state, State::Done) {
            let retrieved: Vec<Uid> = drop
                .messages
                .iter()
                .filter(|e| e.retrieved)
                .map(|e| e.uid)
                .collect();
            self.backend.release(&retrieved).await;
        }
        self.summary.clone()
    }

    fn in_sasl(&self) -> bool {
        matches!(
            self.state,
            State::SaslPlain | State::SaslLoginUser | State::SaslLoginPassword { .. }
        )
    }

    fn auth_allowed(&self) -> bool {
        self.tls || self.config.allow_plaintext_auth
    }

    /// A protocol error: counted, and past the limit the session is closed.
    fn error(&mut self, out: &mut Vec<u8>, text: &str) -> Control {
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            // The state stays: `end` still releases an open maildrop.
            err(out, "Too many errors, closing the connection");
            return Control::Close;
        }
        err(out, text);
        Control::Continue
    }

    fn plaintext_refused(&mut self, out: &mut Vec<u8>) -> Control {
        self.error(
            out,
            "[AUTH] Plaintext authentication disallowed on non-secure connections: use STLS",
        )
    }

    async fn authorization(&mut self, command: Command, out: &mut Vec<u8>) -> Control {
        match command {
            Command::Capa => {
                self.capa(out);
                Control::Continue
            }
            Command::Stls => {
                if self.tls {
                    return self.error(out, "TLS is already active");
                }
                if !self.config.tls_available {
                    return self.error(out, "TLS is not available");
                }
                // Forget anything said before TLS (RFC 2595 section 4).
                self.state = State::Authorization { user: None };
                ok(out, "Begin TLS negotiation");
                Control::StartTls
            }
            Command::User(name) => {
                if !self.auth_allowed() {
                    return self.plaintext_refused(out);
                }
                self.state = State::Authorization { user: Some(name) };
                ok(out, "Send your password");
                Control::Continue
            }
            Command::Pass(password) => {
                if !self.auth_allowed() {
                    return self.plaintext_refused(out);
                }
                let user =
                    match std::mem::replace(&mut self.state, State::Authorization { user: None }) {
                        State::Authorization { user: Some(u) } => u,
                        _ => return self.error(out, "Give USER first"),
                    };
                self.login(&user, &password, "USER", out).await
            }
            Command::Auth {
                mechanism,
                initial_response,
            } => {
                if !self.auth_allowed() {
                    return self.plaintext_refused(out);
                }
                self.state = State::Authorization { user: None };
                match (mechanism.as_deref(), initial_response) {
                    (None, _) => {
                        ok(out, "Supported SASL mechanisms follow");
                        out.extend_from_slice(b"PLAIN\r\nLOGIN\r\n.\r\n");
                        Control::Continue
                    }
                    (Some("PLAIN"), Some(ir)) => self.auth_plain(&ir, out).await,
                    (Some("PLAIN"), None) => {
                        self.state = State::SaslPlain;
                        out.extend_from_slice(b"+ \r\n");
                        Control::Continue
                    }
                    (Some("LOGIN"), None) => {
                        self.state = State::SaslLoginUser;
                        continuation(out, sasl::LOGIN_USERNAME_CHALLENGE);
                        Control::Continue
                    }
                    (Some("LOGIN"), Some(ir)) => match sasl::decode_login_field(&ir) {
                        Ok(login) => {
                            self.state = State::SaslLoginPassword { login };
                            continuation(out, sasl::LOGIN_PASSWORD_CHALLENGE);
                            Control::Continue
                        }
                        Err(e) => self.sasl_error(e, out),
                    },
                    (Some(_), _) => self.error(out, "Unsupported authentication mechanism"),
                }
            }
            Command::Quit => self.sign_off(out, None),
            Command::Stat
            | Command::List(_)
            | Command::Uidl(_)
            | Command::Retr(_)
            | Command::Top(..)
            | Command::Dele(_)
            | Command::Noop
            | Command::Rset => self.error(out, "Log in first"),
            Command::Unknown(_) => self.error(out, "Unknown command"),
            Command::Invalid(reason) => self.error(out, reason),
        }
    }

    /// A line during a SASL exchange.
    async fn sasl_response(&mut self, line: &[u8], out: &mut Vec<u8>) -> Control {
        let state = std::mem::replace(&mut self.state, State::Authorization { user: None });
        let Ok(line) = std::str::from_utf8(line) else {
            return self.sasl_error(sasl::SaslError::Base64, out);
        };
        match state {
            State::SaslPlain => self.auth_plain(line, out).await,
            State::SaslLoginUser => match sasl::decode_login_field(line) {
                Ok(login) => {
                    self.state = State::SaslLoginPassword { login };
                    continuation(out, sasl::LOGIN_PASSWORD_CHALLENGE);
                    Control::Continue
                }
                Err(e) => self.sasl_error(e, out),
            },
            State::SaslLoginPassword { login } => match sasl::decode_login_field(line) {
                Ok(password) => self.login(&login, &password, "LOGIN", out).await,
                Err(e) => self.sasl_error(e, out),
            },
            other => {
                self.state = other;
                Control::Close
            }
        }
    }

    async fn auth_plain(&mut self, response: &str, out: &mut Vec<u8>) -> Control {
        match sasl::decode_plain(response) {
            Ok(creds) => {
                self.login(&creds.login, &creds.password, "PLAIN", out)
                    .await
            }
            Err(e) => self.sasl_error(e, out),
        }
    }

    fn sasl_error(&mut self, e: sasl::SaslError, out: &mut Vec<u8>) -> Control {
        self.state = State::Authorization { user: None };
        if e == sasl::SaslError::Cancelled {
            err(out, "Authentication cancelled");
            return Control::Continue;
        }
        self.error(out, &format!("Invalid SASL response: {e}"))
    }

    async fn login(
        &mut self,
        login: &str,
        password: &str,
        mechanism: &str,
        out: &mut Vec<u8>,
    ) -> Control {
        self.state = State::Authorization { user: None };
        match self.backend.login(login, password).await {
            Ok(LoginOutcome::Opened(listing)) => {
                tracing::info!(user = %listing.user, mechanism, messages = listing.messages.len(), "login ok");
                let user = listing.user.clone();
                let drop = Maildrop::from_listing(listing);
                let (n, size) = drop.stat();
                ok(
                    out,
                    &format!("Logged in: {user} has {n} messages ({size} octets)"),
                );
                self.summary.user = Some(user);
                self.state = State::Transaction(drop);
                Control::Continue
            }
            Ok(LoginOutcome::Rejected) => {
                tracing::info!(login = %escape(login), mechanism, "login failed");
                self.error(out, "[AUTH] Authentication failed")
            }
            Ok(LoginOutcome::InUse) => {
                tracing::info!(login = %escape(login), mechanism, "login refused: maildrop in use");
                err(
                    out,
                    "[IN-USE] The maildrop is in use by another POP3 session",
                );
                Control::Continue
            }
            Err(e) => {
                tracing::warn!(login = %escape(login), mechanism, error = %e, "login failed: backend error");
                err(out, &format!("{} Cannot open the maildrop now", e.code()));
                Control::Continue
            }
        }
    }

    async fn transaction(&mut self, command: Command, out: &mut Vec<u8>) -> Control {
        let State::Transaction(drop) = &mut self.state else {
            return Control::Close;
        };
        match command {
            Command::Stat => {
                let (n, size) = drop.stat();
                ok(out, &format!("{n} {size}"));
            }
            Command::List(None) => {
                let (n, size) = drop.stat();
                ok(out, &format!("{n} messages ({size} octets)"));
                let mut text = String::with_capacity(n * 12 + 3);
                for (i, e) in drop.live() {
                    let _ = write!(text, "{i} {}\r\n", e.size);
                }
                text.push_str(".\r\n");
                out.extend_from_slice(text.as_bytes());
            }
            Command::List(Some(n)) => match drop.get(n) {
                Ok(e) => ok(out, &format!("{n} {}", e.size)),
                Err(text) => err(out, &text),
            },
            Command::Uidl(None) => {
                ok(out, "Unique-ID listing follows");
                let mut text = String::with_capacity(drop.messages.len() * 24 + 3);
                for (i, e) in drop.live() {
                    let _ = write!(text, "{i} {}\r\n", drop.uidl(e.uid));
                }
                text.push_str(".\r\n");
                out.extend_from_slice(text.as_bytes());
            }
            Command::Uidl(Some(n)) => match drop.get(n) {
                Ok(e) => {
                    let uid = e.uid;
                    ok(out, &format!("{n} {}", drop.uidl(uid)));
                }
                Err(text) => err(out, &text),
            },
            Command::Retr(n) => return self.send_message(n, None, out).await,
            Command::Top(n, lines) => return self.send_message(n, Some(lines), out).await,
            Command::Dele(n) => match drop.get(n) {
                Ok(e) => {
                    e.deleted = true;
                    ok(out, &format!("Message {n} deleted"));
                }
                Err(text) => err(out, &text),
            },
            Command::Noop => ok(out, ""),
            Command::Rset => {
                for e in &mut drop.messages {
                    e.deleted = false;
                }
                let (n, size) = drop.stat();
                ok(out, &format!("Maildrop has {n} messages ({size} octets)"));
            }
            Command::Capa => self.capa(out),
            Command::Quit => return self.update(out).await,
            Command::User(_) | Command::Pass(_) | Command::Auth { .. } | Command::Stls => {
                return self.error(out, "Already logged in");
            }
            Command::Unknown(_) => return self.error(out, "Unknown command"),
            Command::Invalid(reason) => return self.error(out, reason),
        }
        Control::Continue
    }

    /// RETR (`body_lines` None) or TOP.
    async fn send_message(
        &mut self,
        n: MessageNumber,
        body_lines: Option<u64>,
        out: &mut Vec<u8>,
    ) -> Control {
        let State::Transaction(drop) = &mut self.state else {
            return Control::Close;
        };
        let (uid, listed_size) = match drop.get(n) {
            Ok(e) => (e.uid, e.size),
            Err(text) => {
                err(out, &text);
                return Control::Continue;
            }
        };
        let message = match self.backend.retrieve(uid).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                err(out, &format!("Message {n} was removed by another session"));
                return Control::Continue;
            }
            Err(e) => {
                tracing::warn!(uid, error = %e, "cannot read message");
                err(out, &format!("{} Cannot read message {n} now", e.code()));
                return Control::Continue;
            }
        };
        match body_lines {
            None => {
                let size = transfer::wire_size(&message);
                if size != listed_size {
                    tracing::warn!(uid, listed_size, size, "message size differs from LIST");
                }
                ok(out, &format!("{size} octets"));
                transfer::write_message(out, &message, None);
                if let State::Transaction(drop) = &mut self.state
                    && let Ok(e) = drop.get(n)
                    && !e.retrieved
                {
                    e.retrieved = true;
                    self.summary.retrieved += 1;
                }
            }
            Some(lines) => {
                ok(out, "Top of message follows");
                transfer::write_message(out, &message, Some(lines));
            }
        }
        out.extend_from_slice(b".\r\n");
        Control::Continue
    }

    /// QUIT in TRANSACTION state: the UPDATE state.
    async fn update(&mut self, out: &mut Vec<u8>) -> Control {
        let State::Transaction(drop) = std::mem::replace(&mut self.state, State::Done) else {
            return Control::Close;
        };
        let deleted: Vec<Uid> = drop
            .messages
            .iter()
            .filter(|e| e.deleted)
            .map(|e| e.uid)
            .collect();
        let retrieved: Vec<Uid> = drop
            .messages
            .iter()
            .filter(|e| e.retrieved && !e.deleted)
            .map(|e| e.uid)
            .collect();
        let (left, _) = drop.stat();
        match self.backend.update(&retrieved, &deleted).await {
            Ok(()) => {
                self.summary.deleted = deleted.len();
                self.summary.updated = true;
                self.sign_off(out, Some(left))
            }
            Err(e) => {
                tracing::warn!(error = %e, "QUIT: could not remove the deleted messages");
                err(
                    out,
                    &format!(
                        "{} Deleted messages were not removed; try again later",
                        e.code()
                    ),
                );
                Control::Close
            }
        }
    }

    fn sign_off(&mut self, out: &mut Vec<u8>, left: Option<usize>) -> Control {
        self.state = State::Done;
        let host = &self.config.hostname;
        match left {
            Some(n) => ok(
                out,
                &format!("{host} POP3 server signing off ({n} messages left)"),
            ),
            None => ok(out, &format!("{host} POP3 server signing off")),
        }
        Control::Close
    }

    /// RFC 2449 CAPA. USER, SASL and STLS only where they can be used.
    fn capa(&self, out: &mut Vec<u8>) {
        ok(out, "Capability list follows");
        let mut caps =
            String::from("CAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n");
        if matches!(self.state, State::Authorization { .. }) {
            if self.auth_allowed() {
                caps.push_str("USER\r\nSASL PLAIN LOGIN\r\n");
            }
            if !self.tls && self.config.tls_available {
                caps.push_str("STLS\r\n");
            }
        }
        caps.push_str("IMPLEMENTATION hermod\r\n.\r\n");
        out.extend_from_slice(caps.as_bytes());
    }
}

fn ok(out: &mut Vec<u8>, text: &str) {
    if text.is_empty() {
        out.extend_from_slice(b"+OK\r\n");
    } else {
        out.extend_from_slice(b"+OK ");
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

fn err(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"-ERR ");
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn continuation(out: &mut Vec<u8>, challenge: &str) {
    out.extend_from_slice(b"+ ");
    out.extend_from_slice(challenge.as_bytes());
    out.extend_from_slice(b"\r\n");
}
