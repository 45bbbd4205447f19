//! The ManageSieve session (RFC 5804), sans I/O: framed commands in, response bytes out.
//!
//! The I/O loop frames commands with [`crate::managesieve::command::Framer`] and hands each to
//! [`Session::handle`], which appends the response and says what to do next ([`Control`]).
//! Logins, the scripts and their compilation go through the [`Backend`] trait, so the whole
//! protocol is tested without a socket or a disk.

#[cfg(test)]
mod tests;

use std::future::Future;

use hermod_common::log_escape::escape;
use hermod_common::sasl;

use crate::managesieve::command::{Arg, write_string};

/// Settings shared by all sessions of a server.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our name in the greeting.
    pub hostname: String,
    /// Allow AUTHENTICATE without TLS (config `allow_plaintext_auth`).
    pub allow_plaintext_auth: bool,
    /// A certificate is loaded, so STARTTLS can be offered.
    pub tls_available: bool,
    /// Protocol errors after which the session is closed.
    pub max_errors: usize,
    /// Scripts per user and bytes per script (`[sieve]` max_scripts, max_script_size).
    pub max_scripts: usize,
    pub max_script_size: u64,
    /// The `MAXREDIRECTS` capability.
    pub max_redirects: usize,
    /// The `SIEVE` capability: the extensions the interpreter supports, space-separated.
    pub extensions: String,
}

/// Largest literal before login: an AUTHENTICATE response is a few hundred bytes.
pub const MAX_LITERAL_BEFORE_LOGIN: usize = 8 * 1024;

impl SessionConfig {
    pub fn new(hostname: impl Into<String>) -> SessionConfig {
        SessionConfig {
            hostname: hostname.into(),
            allow_plaintext_auth: false,
            tls_available: true,
            max_errors: 10,
            max_scripts: 32,
            max_script_size: 1024 * 1024,
            max_redirects: 4,
            extensions: "fileinto".into(),
        }
    }
}

/// What the I/O loop does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Send the output and read the next command.
    Continue,
    /// Send the output, run the TLS handshake (dropping input buffered before it), then call
    /// [`Session::tls_started`].
    StartTls,
    /// Send the output and close the connection.
    Close,
}

/// A script of the user's, as LISTSCRIPTS shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptEntry {
    pub name: String,
    pub active: bool,
}

/// A backend failure; the client gets `NO (TRYLATER)`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

/// What the session asks of the rest of hermod. `user` is the address the login returned.
pub trait Backend: Send {
    /// Check the credentials (throttling is the backend's business): the user's address.
    fn login(
        &mut self,
        login: &str,
        password: &str,
    ) -> impl Future<Output = Result<Option<String>, BackendError>> + Send;
    /// The user's scripts, in name order.
    fn list(
        &mut self,
        user: &str,
    ) -> impl Future<Output = Result<Vec<ScriptEntry>, BackendError>> + Send;
    /// A script's source; None if there is no such script.
    fn get(
        &mut self,
        user: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<String>, BackendError>> + Send;
    /// Store a script (replacing one of that name), already checked by [`Backend::compile`].
    fn put(
        &mut self,
        user: &str,
        name: &str,
        source: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
    /// Delete a script; false if there is none of that name.
    fn delete(
        &mut self,
        user: &str,
        name: &str,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;
    /// Rename a script (the active one stays active under its new name).
    fn rename(
        &mut self,
        user: &str,
        old: &str,
        new: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
    /// Make `name` the active script, or none.
    fn set_active(
        &mut self,
        user: &str,
        name: Option<&str>,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
    /// Compile a script: the error a client sees (with its line and column) if it is invalid.
    fn compile(&self, source: &str) -> Result<(), String>;
}

enum State {
    NotAuthenticated,
    /// AUTHENTICATE PLAIN without an initial response: waiting for it.
    SaslPlain,
    Authenticated {
        user: String,
    },
    Done,
}

/// One ManageSieve session.
pub struct Session<B: Backend> {
    config: SessionConfig,
    backend: B,
    tls: bool,
    state: State,
    errors: usize,
}

/// Why a script name is refused (RFC 5804 section 1.6, plus what a file name can be).
fn check_name(name: &[u8]) -> Result<&str, &'static str> {
    let name = std::str::from_utf8(name).map_err(|_| "Script names must be UTF-8")?;
    if name.is_empty() || name.chars().count() > 128 {
        return Err("Script names have 1 to 128 characters");
    }
    if name
        .chars()
        .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '/' | '\\') || c == '\0')
        || name.starts_with('.')
    {
        return Err(
            "Script names must not contain control characters or slashes, nor start with a dot",
        );
    }
    Ok(name)
}

impl<B: Backend> Session<B> {
    /// A new session; `tls` when the connection is already TLS.
    pub fn new(config: SessionConfig, backend: B, tls: bool) -> Session<B> {
        Session {
            config,
            backend,
            tls,
            state: State::NotAuthenticated,
            errors: 0,
        }
    }

    /// RFC 5804 section 1.7: the capabilities, then OK.
    pub fn greeting(&self, out: &mut Vec<u8>) {
        self.capabilities(out);
        ok(
            out,
            None,
            &format!("{} ManageSieve ready", self.config.hostname),
        );
    }

    /// The STARTTLS handshake succeeded: the capabilities are sent again (section 2.2).
    pub fn tls_started(&mut self, out: &mut Vec<u8>) {
        self.tls = true;
        self.capabilities(out);
        ok(out, None, "TLS negotiation successful");
    }

    /// The logged-in user, if any.
    pub fn user(&self) -> Option<&str> {
        match &self.state {
            State::Authenticated { user } => Some(user),
            _ => None,
        }
    }

    /// The largest literal taken now.
    pub fn max_literal(&self) -> usize {
        match self.state {
            State::Authenticated { .. } => {
                usize::try_from(self.config.max_script_size).unwrap_or(usize::MAX)
            }
            _ => MAX_LITERAL_BEFORE_LOGIN,
        }
    }

    /// Whether a too-big literal may be skipped (after login) or ends the connection.
    pub fn may_skip_literals(&self) -> bool {
        matches!(self.state, State::Authenticated { .. })
    }

    fn auth_allowed(&self) -> bool {
        self.tls || self.config.allow_plaintext_auth
    }

    /// A malformed command (the framer's error), or a too-long line.
    pub fn bad_command(&mut self, message: &str, out: &mut Vec<u8>) -> Control {
        if matches!(self.state, State::SaslPlain) {
            self.state = State::NotAuthenticated;
        }
        self.error(out, None, message)
    }

    /// A protocol error: counted, and past the limit the session ends with BYE.
    fn error(&mut self, out: &mut Vec<u8>, code: Option<&str>, text: &str) -> Control {
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            bye(out, "Too many errors");
            return Control::Close;
        }
        no(out, code, text);
        Control::Continue
    }

    /// One framed command.
    pub async fn handle(&mut self, args: Vec<Arg>, out: &mut Vec<u8>) -> Control {
        if matches!(self.state, State::SaslPlain) {
            self.state = State::NotAuthenticated;
            return match args.as_slice() {
                [Arg::Str(response)] => self.auth_plain(response, out).await,
                _ => self.error(out, None, "Expected a SASL response string"),
            };
        }
        let mut args = args.into_iter();
        let Some(Arg::Atom(name)) = args.next() else {
            return self.error(out, None, "Expected a command name");
        };
        let args: Vec<Arg> = args.collect();
        let command = name.to_ascii_uppercase();
        let authenticated = matches!(self.state, State::Authenticated { .. });
        match command.as_str() {
            "CAPABILITY" => {
                if !args.is_empty() {
                    return self.error(out, None, "CAPABILITY takes no arguments");
                }
                self.capabilities(out);
                ok(out, None, "Capability completed");
                Control::Continue
            }
            "NOOP" => match args.as_slice() {
                [] => {
                    ok(out, None, "Done");
                    Control::Continue
                }
                [Arg::Str(tag)] => {
                    let mut code = b"TAG ".to_vec();
                    write_string(&mut code, tag);
                    ok_raw(out, Some(&code), "Done");
                    Control::Continue
                }
                _ => self.error(out, None, "NOOP takes an optional string"),
            },
            "LOGOUT" => {
                ok(out, None, "Logout completed");
                self.state = State::Done;
                Control::Close
            }
            "STARTTLS" => {
                if self.tls {
                    return self.error(out, None, "TLS is already active");
                }
                if authenticated {
                    return self.error(out, None, "STARTTLS is only allowed before login");
                }
                if !self.config.tls_available {
                    return self.error(out, None, "TLS is not available");
                }
                ok(out, None, "Begin TLS negotiation now");
                Control::StartTls
            }
            "AUTHENTICATE" => {
                if authenticated {
                    return self.error(out, None, "Already authenticated");
                }
                self.authenticate(&args, out).await
            }
            _ if !authenticated => {
                let known = [
                    "LISTSCRIPTS",
                    "GETSCRIPT",
                    "PUTSCRIPT",
                    "CHECKSCRIPT",
                    "SETACTIVE",
                    "DELETESCRIPT",
                    "RENAMESCRIPT",
                    "HAVESPACE",
                    "UNAUTHENTICATE",
                ];
                if known.contains(&command.as_str()) {
                    self.error(out, None, "Authenticate first")
                } else {
                    self.error(out, None, "Unknown command")
                }
            }
            _ => match self.scripts_command(&command, &args, out).await {
                Ok(control) => control,
                Err(e) => {
                    tracing::warn!(error = %e, command = %command, "ManageSieve backend error");
                    no(out, Some("TRYLATER"), "The scripts cannot be reached now");
                    Control::Continue
                }
            },
        }
    }

    /// The commands of the authenticated state.
    async fn scripts_command(
        &mut self,
        command: &str,
        args: &[Arg],
        out: &mut Vec<u8>,
    ) -> Result<Control, BackendError> {
        let State::Authenticated { user } = &self.state else {
            return Ok(Control::Close);
        };
        let user = user.clone();
        let strings: Option<Vec<&[u8]>> = args.iter().map(Arg::as_str_bytes).collect();
        let control = match (command, args, strings.as_deref()) {
            ("LISTSCRIPTS", [], _) => {
                for script in self.backend.list(&user).await? {
                    write_string(out, script.name.as_bytes());
                    if script.active {
                        out.extend_from_slice(b" ACTIVE");
                    }
                    out.extend_from_slice(b"\r\n");
                }
                ok(out, None, "Listscripts completed");
                Control::Continue
            }
            ("GETSCRIPT", _, Some([name])) => {
                let Ok(name) = check_name(name) else {
                    no(out, Some("NONEXISTENT"), "There is no such script");
                    return Ok(Control::Continue);
                };
                match self.backend.get(&user, name).await? {
                    Some(source) => {
                        out.extend_from_slice(format!("{{{}}}\r\n", source.len()).as_bytes());
                        out.extend_from_slice(source.as_bytes());
                        out.extend_from_slice(b"\r\n");
                        ok(out, None, "Getscript completed");
                    }
                    None => no(out, Some("NONEXISTENT"), "There is no such script"),
                }
                Control::Continue
            }
            ("PUTSCRIPT", _, Some([name, source])) => {
                let name = match check_name(name) {
                    Ok(n) => n,
                    Err(e) => return Ok(self.error(out, None, e)),
                };
                let Some(source) = self.checked_source(source, out) else {
                    return Ok(Control::Continue);
                };
                if !self
                    .has_space(&user, name, source.len() as u64, out)
                    .await?
                {
                    return Ok(Control::Continue);
                }
                self.backend.put(&user, name, source).await?;
                tracing::info!(user = %user, script = %escape(name), size = source.len(), "script stored");
                ok(out, None, "Putscript completed");
                Control::Continue
            }
            ("CHECKSCRIPT", _, Some([source])) => {
                if self.checked_source(source, out).is_some() {
                    ok(out, None, "Script is valid");
                }
                Control::Continue
            }
            ("HAVESPACE", [Arg::Str(name), Arg::Atom(size)], _) => {
                let name = match check_name(name) {
                    Ok(n) => n,
                    Err(e) => return Ok(self.error(out, None, e)),
                };
                let Ok(size) = size.parse::<u64>() else {
                    return Ok(self.error(out, None, "The size must be a number"));
                };
                if self.has_space(&user, name, size, out).await? {
                    ok(out, None, "Putscript would succeed");
                }
                Control::Continue
            }
            ("SETACTIVE", _, Some([name])) => {
                if name.is_empty() {
                    self.backend.set_active(&user, None).await?;
                    ok(out, None, "No script is active now");
                    return Ok(Control::Continue);
                }
                let exists = match check_name(name) {
                    Ok(n) => self.find(&user, n).await?,
                    Err(_) => None,
                };
                match exists {
                    Some(script) => {
                        self.backend.set_active(&user, Some(&script.name)).await?;
                        tracing::info!(user = %user, script = %escape(&script.name), "script activated");
                        ok(out, None, "Setactive completed");
                    }
                    None => no(out, Some("NONEXISTENT"), "There is no such script"),
                }
                Control::Continue
            }
            ("DELETESCRIPT", _, Some([name])) => {
                let exists = match check_name(name) {
                    Ok(n) => self.find(&user, n).await?,
                    Err(_) => None,
                };
                match exists {
                    None => no(out, Some("NONEXISTENT"), "There is no such script"),
                    Some(s) if s.active => {
                        no(out, Some("ACTIVE"), "The active script cannot be deleted")
                    }
                    Some(s) => {
                        if self.backend.delete(&user, &s.name).await? {
                            ok(out, None, "Deletescript completed");
                        } else {
                            no(out, Some("NONEXISTENT"), "There is no such script");
                        }
                    }
                }
                Control::Continue
            }
            ("RENAMESCRIPT", _, Some([old, new])) => {
                let new = match check_name(new) {
                    Ok(n) => n,
                    Err(e) => return Ok(self.error(out, None, e)),
                };
                let exists = match check_name(old) {
                    Ok(o) => self.find(&user, o).await?,
                    Err(_) => None,
                };
                let Some(old) = exists else {
                    no(out, Some("NONEXISTENT"), "There is no such script");
                    return Ok(Control::Continue);
                };
                if old.name != new && self.find(&user, new).await?.is_some() {
                    no(out, Some("ALREADYEXISTS"), "A script of that name exists");
                    return Ok(Control::Continue);
                }
                self.backend.rename(&user, &old.name, new).await?;
                ok(out, None, "Renamescript completed");
                Control::Continue
            }
            ("UNAUTHENTICATE", [], _) => {
                tracing::info!(user = %user, "unauthenticated");
                self.state = State::NotAuthenticated;
                ok(out, None, "Unauthenticate completed");
                Control::Continue
            }
            (
                "LISTSCRIPTS" | "GETSCRIPT" | "PUTSCRIPT" | "CHECKSCRIPT" | "HAVESPACE"
                | "SETACTIVE" | "DELETESCRIPT" | "RENAMESCRIPT" | "UNAUTHENTICATE",
                _,
                _,
            ) => self.error(out, None, &format!("Wrong arguments for {command}")),
            _ => self.error(out, None, "Unknown command"),
        };
        Ok(control)
    }

    /// The script named so (names are compared exactly, as the files are named).
    async fn find(&mut self, user: &str, name: &str) -> Result<Option<ScriptEntry>, BackendError> {
        Ok(self
            .backend
            .list(user)
            .await?
            .into_iter()
            .find(|s| s.name == name))
    }

    /// Whether `name` of `size` bytes fits the user's limits; otherwise the NO is written.
    async fn has_space(
        &mut self,
        user: &str,
        name: &str,
        size: u64,
        out: &mut Vec<u8>,
    ) -> Result<bool, BackendError> {
        if size > self.config.max_script_size {
            no(
                out,
                Some("QUOTA/MAXSIZE"),
                &format!(
                    "Scripts are limited to {} bytes",
                    self.config.max_script_size
                ),
            );
            return Ok(false);
        }
        let scripts = self.backend.list(user).await?;
        if !scripts.iter().any(|s| s.name == name) && scripts.len() >= self.config.max_scripts {
            no(
                out,
                Some("QUOTA/MAXSCRIPTS"),
                &format!("Users may keep at most {} scripts", self.config.max_scripts),
            );
            return Ok(false);
        }
        Ok(true)
    }

    /// The script's source if it is UTF-8, within the size limit, and compiles; otherwise
    /// the NO (with the compiler's line and column) is written.
    fn checked_source<'a>(&self, source: &'a [u8], out: &mut Vec<u8>) -> Option<&'a str> {
        if source.len() as u64 > self.config.max_script_size {
            no(
                out,
                Some("QUOTA/MAXSIZE"),
                &format!(
                    "Scripts are limited to {} bytes",
                    self.config.max_script_size
                ),
            );
            return None;
        }
        let Ok(text) = std::str::from_utf8(source) else {
            no(out, None, "The script is not valid UTF-8");
            return None;
        };
        match self.backend.compile(text) {
            Ok(()) => Some(text),
            Err(e) => {
                no(out, None, &e);
                None
            }
        }
    }

    async fn authenticate(&mut self, args: &[Arg], out: &mut Vec<u8>) -> Control {
        if !self.auth_allowed() {
            return self.error(
                out,
                Some("ENCRYPT-NEEDED"),
                "Authentication needs TLS: use STARTTLS",
            );
        }
        let (mechanism, initial) = match args {
            [Arg::Str(m)] => (m, None),
            [Arg::Str(m), Arg::Str(ir)] => (m, Some(ir)),
            _ => return self.error(out, None, "AUTHENTICATE takes a mechanism and a response"),
        };
        if !mechanism.eq_ignore_ascii_case(b"PLAIN") {
            return self.error(out, None, "Unsupported authentication mechanism");
        }
        match initial {
            Some(ir) => self.auth_plain(ir, out).await,
            None => {
                // An empty challenge; the response comes as a string (section 2.1).
                out.extend_from_slice(b"\"\"\r\n");
                self.state = State::SaslPlain;
                Control::Continue
            }
        }
    }

    async fn auth_plain(&mut self, response: &[u8], out: &mut Vec<u8>) -> Control {
        let creds = std::str::from_utf8(response)
            .map_err(|_| sasl::SaslError::Base64)
            .and_then(sasl::decode_plain);
        let creds = match creds {
            Ok(c) => c,
            Err(sasl::SaslError::Cancelled) => {
                no(out, None, "Authentication cancelled");
                return Control::Continue;
            }
            Err(e) => return self.error(out, None, &format!("Invalid SASL response: {e}")),
        };
        match self.backend.login(&creds.login, &creds.password).await {
            Ok(Some(user)) => {
                tracing::info!(user = %user, mechanism = "PLAIN", "login ok");
                self.state = State::Authenticated { user };
                ok(out, None, "Logged in");
                Control::Continue
            }
            Ok(None) => {
                tracing::info!(login = %escape(&creds.login), "login failed");
                self.error(out, None, "Authentication failed")
            }
            Err(e) => {
                tracing::warn!(login = %escape(&creds.login), error = %e, "login failed: backend error");
                no(out, Some("TRYLATER"), "Authentication is not possible now");
                Control::Continue
            }
        }
    }

    /// The capability lines (section 1.7): SASL only where it can be used, STARTTLS only
    /// before TLS and login, OWNER after login.
    fn capabilities(&self, out: &mut Vec<u8>) {
        let mut line = |key: &str, value: Option<&str>| {
            write_string(out, key.as_bytes());
            if let Some(v) = value {
                out.push(b' ');
                write_string(out, v.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        };
        line("IMPLEMENTATION", Some("hermod"));
        line("SIEVE", Some(self.config.extensions.as_str()));
        let authenticated = matches!(self.state, State::Authenticated { .. });
        let sasl = if self.auth_allowed() && !authenticated {
            "PLAIN"
        } else {
            ""
        };
        line("SASL", Some(sasl));
        if !self.tls && self.config.tls_available && !authenticated {
            line("STARTTLS", None);
        }
        line(
            "MAXREDIRECTS",
            Some(self.config.max_redirects.to_string().as_str()),
        );
        // RFC 5804 section 2.14.1.
        line("UNAUTHENTICATE", None);
        if let State::Authenticated { user } = &self.state {
            line("OWNER", Some(user.as_str()));
        }
        line("VERSION", Some("1.0"));
    }
}

fn ok(out: &mut Vec<u8>, code: Option<&str>, text: &str) {
    ok_raw(out, code.map(str::as_bytes), text);
}

fn ok_raw(out: &mut Vec<u8>, code: Option<&[u8]>, text: &str) {
    response(out, b"OK", code, text);
}

fn no(out: &mut Vec<u8>, code: Option<&str>, text: &str) {
    response(out, b"NO", code.map(str::as_bytes), text);
}

/// BYE: the server closes the connection.
pub fn bye(out: &mut Vec<u8>, text: &str) {
    response(out, b"BYE", None, text);
}

fn response(out: &mut Vec<u8>, kind: &[u8], code: Option<&[u8]>, text: &str) {
    out.extend_from_slice(kind);
    if let Some(code) = code {
        out.extend_from_slice(b" (");
        out.extend_from_slice(code);
        out.push(b')');
    }
    out.push(b' ');
    write_string(out, text.as_bytes());
    out.extend_from_slice(b"\r\n");
}
