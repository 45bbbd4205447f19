//! The IMAP session state machine: complete commands in, responses out.
//!
//! No sockets here: the connection loop ([`crate::server`]) frames input with
//! [`crate::framer::Framer`], hands frames to [`Session::handle`] and writes what the session
//! put into [`Out`]. The store is the session's only other party. Each command lives in its
//! own file under `cmd/`.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hermod_common::auth::Authenticator;
use hermod_common::log_escape;
use hermod_common::store::{
    Change, ChangeReceiver, ChangeToken, Flag, MessageMeta, Store, StoreError, UserStore,
    decode_mutf7, encode_mutf7,
};
use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::mailbox::Mailbox;
use tokio_rustls::TlsAcceptor;

use crate::extended::{self, Extended};
use crate::framer::Frame;
use crate::output::Out;
use crate::wire;

/// Other tools' changes on disk are not in the store's change token: look anyway this often.
const RECHECK: Duration = Duration::from_secs(1);

/// The longest command line before login: enough for any LOGIN or AUTHENTICATE and for an ID
/// at RFC 2971's limits (30 pairs, 1,024-octet values: about 32 KiB, which clients may send
/// before login), and still little memory for a client nobody knows yet.
pub const PRE_LOGIN_MAX_LINE: usize = 36 * 1024;
/// The largest literal before login.
pub const PRE_LOGIN_MAX_LITERAL: u64 = 8 * 1024;

/// Session settings, from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Allow LOGIN and AUTHENTICATE PLAIN without TLS (off by default).
    pub allow_plaintext_auth: bool,
    /// Longest command line.
    pub max_line: usize,
    /// Largest literal (an APPENDed message).
    pub max_literal: u64,
    /// BAD answers in a row before the connection is closed.
    pub max_bad_commands: u32,
    /// Inactivity before an authenticated session is logged out (RFC 3501: at least 30 min).
    pub autologout: Duration,
    /// Inactivity before a session that has not logged in is closed.
    pub login_timeout: Duration,
    /// Advertise and allow COMPRESS=DEFLATE.
    pub compress: bool,
    /// How long a write may wait for a client that does not read.
    pub write_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            allow_plaintext_auth: false,
            max_line: 64 * 1024,
            max_literal: 50 * 1024 * 1024,
            max_bad_commands: 10,
            autologout: Duration::from_secs(30 * 60),
            login_timeout: Duration::from_secs(300),
            compress: true,
            write_timeout: Duration::from_secs(300),
        }
    }
}

/// What all sessions of a server share.
pub struct Shared {
    pub store: Store,
    pub auth: Authenticator,
    /// For STARTTLS; `None` when TLS is not available.
    pub tls: Option<TlsAcceptor>,
    pub settings: Settings,
    /// Told when a user moves or copies messages into or out of Junk (a learning filter).
    pub junk_feedback: Option<Arc<dyn hermod_common::junk_feedback::JunkFeedback>>,
}

/// What the connection loop does after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Read the next command.
    Command,
    /// Read the next input as a plain line (AUTHENTICATE response, IDLE's DONE).
    Line,
    /// The session is idling: also wait for store changes (see [`Session::idle_changed`]).
    Idle,
    /// Run the TLS handshake now (the OK was sent), then call [`Session::tls_started`].
    StartTls,
    /// Turn on deflate both ways now (the OK was sent).
    Compress,
    /// Close the connection.
    Logout,
}

/// The logged-in user.
pub(crate) struct Account {
    pub user: UserStore,
    pub address: String,
    /// Storage quota in bytes; 0 means none.
    pub quota_bytes: u64,
}

/// The selected mailbox as this session knows it.
pub(crate) struct Selected {
    /// Store name (UTF-8, `/` separator).
    pub name: String,
    pub read_only: bool,
    pub uidvalidity: u32,
    pub uidnext: u32,
    /// Changes up to here are reflected in `msgs`.
    pub highest_modseq: u64,
    /// The messages in sequence order (ascending UID).
    pub msgs: Vec<MessageMeta>,
    /// UIDs expunged by others that the client has not been told about yet.
    pub vanished: Vec<u32>,
    /// Keywords announced in FLAGS.
    pub keywords: BTreeSet<String>,
    /// The store's change token at the last look for changes, and when that was; `None`:
    /// the next look compares the disk with the index too.
    pub checked: Option<(ChangeToken, Instant)>,
    /// UIDs of the last `SEARCH RETURN (SAVE)` (SEARCHRES, RFC 5182): what `$` means.
    pub saved_search: Vec<u32>,
    /// Searches kept up to date (CONTEXT=SEARCH).
    pub contexts: crate::search_context::SearchContexts,
}

impl Selected {
    /// The index of a UID in `msgs`.
    pub fn index_of(&self, uid: u32) -> Option<usize> {
        self.msgs.binary_search_by_key(&uid, |m| m.uid).ok()
    }

    pub fn max_uid(&self) -> u32 {
        self.msgs.last().map_or(0, |m| m.uid)
    }
}

/// Extensions the client turned on.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Enabled {
    pub condstore: bool,
    pub qresync: bool,
    pub utf8: bool,
    /// IMAP4rev2 semantics (RFC 9051): no \Recent, ESEARCH answers, UTF-8 names.
    pub rev2: bool,
    /// UIDONLY (RFC 9586): no message sequence numbers either way.
    pub uidonly: bool,
}

impl Enabled {
    /// Expunges are reported as `* VANISHED` (QRESYNC, UIDONLY), not `* n EXPUNGE`.
    pub fn vanished(&self) -> bool {
        self.qresync || self.uidonly
    }
}

/// Input the session waits for instead of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Waiting {
    Nothing,
    /// The client's response to an AUTHENTICATE continuation.
    Authenticate {
        tag: String,
    },
    /// DONE, ending IDLE.
    Idle {
        tag: String,
    },
}

/// How a tagged response ends a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Ok,
    No,
    Bad,
    /// No tagged response yet (IDLE, AUTHENTICATE continuation).
    Pending,
}

/// Which updates of other sessions may be reported before the tagged response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sync {
    /// All, EXPUNGE included.
    Full,
    /// New messages and flag changes only (FETCH, STORE, SEARCH: RFC 3501 section 7.4.1).
    NoExpunge,
    /// None.
    Skip,
}

/// The completion of a command.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub status: Status,
    pub code: Option<String>,
    pub text: String,
    pub sync: Sync,
}

impl Reply {
    /// The end of a command over a message set (FETCH, SEARCH, SORT, THREAD and their UID
    /// forms). Messages another session expunged, not yet reported to this one, are left
    /// out and the command still succeeds with what it could return, flagged
    /// OK [EXPUNGEISSUED] (RFC 2180 section 4.1, RFC 5530): a NO would make clients drop
    /// the data of every other message, and they retry such a NO in a loop.
    pub fn completed(command: &str, uid: bool, expunged: bool, sync: Sync) -> Reply {
        let reply = if expunged {
            Reply::ok("Some messages were expunged").code("EXPUNGEISSUED")
        } else if uid {
            Reply::ok(format!("UID {command} completed"))
        } else {
            Reply::ok(format!("{command} completed"))
        };
        reply.sync(sync)
    }

    pub fn ok(text: impl Into<String>) -> Reply {
        Reply {
            status: Status::Ok,
            code: None,
            text: text.into(),
            sync: Sync::Full,
        }
    }
    pub fn no(text: impl Into<String>) -> Reply {
        Reply {
            status: Status::No,
            code: None,
            text: text.into(),
            sync: Sync::Full,
        }
    }
    pub fn bad(text: impl Into<String>) -> Reply {
        Reply {
            status: Status::Bad,
            code: None,
            text: text.into(),
            sync: Sync::Skip,
        }
    }
    pub fn pending() -> Reply {
        Reply {
            status: Status::Pending,
            code: None,
            text: String::new(),
            sync: Sync::Skip,
        }
    }
    pub fn code(mut self, code: impl Into<String>) -> Reply {
        self.code = Some(code.into());
        self
    }
    pub fn sync(mut self, sync: Sync) -> Reply {
        self.sync = sync;
        self
    }
    /// Sets the sync of an OK or NO; a BAD reports nothing (see [`Reply::bad`]).
    pub fn sync_unless_bad(self, sync: Sync) -> Reply {
        if self.status == Status::Bad {
            self
        } else {
            self.sync(sync)
        }
    }
}

impl From<StoreError> for Reply {
    fn from(e: StoreError) -> Reply {
        match &e {
            StoreError::NoSuchMailbox(_) => Reply::no("Mailbox does not exist").code("NONEXISTENT"),
            StoreError::AlreadyExists(_) => {
                Reply::no("Mailbox already exists").code("ALREADYEXISTS")
            }
            StoreError::InvalidName(why) => {
                Reply::no(format!("Invalid mailbox name: {why}")).code("CANNOT")
            }
            StoreError::Cannot(why) => Reply::no(format!("Not possible: {why}")).code("CANNOT"),
            StoreError::NoSuchMessage(_) => {
                Reply::no("Some messages were expunged").code("EXPUNGEISSUED")
            }
            StoreError::OverQuota(_) => Reply::no("Over quota").code("OVERQUOTA"),
            StoreError::Temporary(_) => {
                tracing::warn!(error = %e, "temporary store failure");
                Reply::no("Temporary failure, try again").code("UNAVAILABLE")
            }
            StoreError::Io(_) | StoreError::Index(_) => {
                tracing::error!(error = %e, "store failure");
                Reply::no("Internal server error").code("SERVERBUG")
            }
        }
    }
}

/// An IMAP session.
pub struct Session {
    pub(crate) shared: Arc<Shared>,
    pub(crate) peer: IpAddr,
    pub(crate) tls: bool,
    pub(crate) compressed: bool,
    pub(crate) account: Option<Account>,
    pub(crate) selected: Option<Selected>,
    pub(crate) enabled: Enabled,
    pub(crate) waiting: Waiting,
    pub(crate) next: Next,
    /// OBJECTID/SAVEDATE items of the current command (see `objectid`).
    pub(crate) objectid: crate::objectid::Pending,
    bad_streak: u32,
}

impl Session {
    /// A new session for a client at `peer`; `tls` when the connection is TLS already.
    pub fn new(shared: Arc<Shared>, peer: IpAddr, tls: bool) -> Session {
        Session {
            shared,
            peer,
            tls,
            compressed: false,
            account: None,
            selected: None,
            enabled: Enabled::default(),
            waiting: Waiting::Nothing,
            next: Next::Command,
            objectid: Default::default(),
            bad_streak: 0,
        }
    }

    /// The greeting, with capabilities (Thunderbird reads them here instead of asking).
    pub fn greeting(&self, out: &mut Out<'_>) {
        out.untagged(&format!(
            "OK [CAPABILITY {}] hermod IMAP ready",
            self.capabilities()
        ));
    }

    /// The TLS handshake after STARTTLS succeeded.
    pub fn tls_started(&mut self) {
        self.tls = true;
    }

    /// Deflate is now on, both ways.
    pub fn compression_started(&mut self) {
        self.compressed = true;
    }

    /// Whether a user is logged in.
    pub fn is_authenticated(&self) -> bool {
        self.account.is_some()
    }

    /// The input limits for the next frame: (line, literal, strict). Before login they are
    /// small and a non-synchronizing literal over them closes the connection.
    pub fn input_limits(&self) -> (usize, u64, bool) {
        let s = &self.shared.settings;
        if self.account.is_some() {
            (s.max_line, s.max_literal, false)
        } else {
            (
                s.max_line.min(PRE_LOGIN_MAX_LINE),
                s.max_literal.min(PRE_LOGIN_MAX_LITERAL),
                true,
            )
        }
    }

    /// How long the session may stay silent before it is closed.
    pub fn autologout(&self) -> Duration {
        if self.account.is_some() {
            self.shared.settings.autologout
        } else {
            self.shared.settings.login_timeout
        }
    }

    /// A change receiver for IDLE (subscribe before the first check, so nothing is missed).
    pub fn watch(&self) -> Option<ChangeReceiver> {
        self.account.as_ref().map(|a| a.user.watch())
    }

    /// Writes `* BYE` (autologout, shutdown).
    pub fn bye(&mut self, out: &mut Out<'_>, text: &str) {
        out.untagged(&format!("BYE {}", wire::clean_text(text)));
        self.next = Next::Logout;
    }

    /// Handles one frame of input.
    pub async fn handle(&mut self, frame: Frame, out: &mut Out<'_>) -> io::Result<Next> {
        self.next = Next::Command;
        match frame {
            Frame::Continue => {
                out.put(b"+ Ready for literal data\r\n");
            }
            Frame::Line(line) => match std::mem::replace(&mut self.waiting, Waiting::Nothing) {
                Waiting::Authenticate { tag } => {
                    let reply = self.authenticate_response(&line).await;
                    self.finish(&tag, reply, out).await?;
                }
                Waiting::Idle { tag } => {
                    let reply = if line.eq_ignore_ascii_case(b"DONE") {
                        Reply::ok("IDLE terminated")
                    } else {
                        Reply::bad("Expected DONE")
                    };
                    self.finish(&tag, reply, out).await?;
                }
                Waiting::Nothing => {
                    // Not expected: treat it as a command.
                    let mut cmd = line;
                    cmd.extend_from_slice(b"\r\n");
                    return Box::pin(self.handle(Frame::Command(cmd), out)).await;
                }
            },
            Frame::LineTooLong(tag) => {
                let tag = tag.map(|t| String::from_utf8_lossy(&t).into_owned());
                self.syntax_error(tag.as_deref(), "Command line too long", out);
            }
            Frame::LiteralTooLarge(tag) if !self.is_authenticated() => {
                let tag = tag.map(|t| String::from_utf8_lossy(&t).into_owned());
                self.syntax_error(tag.as_deref(), "Literal too large before login", out);
            }
            Frame::LiteralTooLarge(tag) => {
                let tag = tag.map_or_else(
                    || "*".to_string(),
                    |t| String::from_utf8_lossy(&t).into_owned(),
                );
                out.put(format!("{tag} NO [TOOBIG] Literal too large\r\n").as_bytes());
            }
            Frame::LiteralRefused(tag) => {
                let tag = tag.map(|t| String::from_utf8_lossy(&t).into_owned());
                out.put(
                    format!(
                        "{} BAD Literal too large\r\n",
                        tag.as_deref().unwrap_or("*")
                    )
                    .as_bytes(),
                );
                self.bye(out, "Literal too large before login");
            }
            Frame::Command(mut bytes) if self.waiting != Waiting::Nothing => {
                // A line the framer read as a command (it did not know the mode).
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                return Box::pin(self.handle(Frame::Line(bytes), out)).await;
            }
            Frame::Command(bytes) => self.command(&bytes, out).await?,
        }
        Ok(self.next)
    }

    /// Counts a BAD for garbage; too many in a row end the session.
    fn syntax_error(&mut self, tag: Option<&str>, text: &str, out: &mut Out<'_>) {
        self.bad_streak += 1;
        out.put(format!("{} BAD {}\r\n", tag.unwrap_or("*"), text).as_bytes());
        if self.bad_streak >= self.shared.settings.max_bad_commands {
            self.bye(out, "Too many invalid commands");
        }
    }

    async fn command(&mut self, bytes: &[u8], out: &mut Out<'_>) -> io::Result<()> {
        let unwrapped = crate::append_utf8::unwrap(bytes);
        let bytes = unwrapped.as_deref().unwrap_or(bytes);
        if self.enabled.uidonly
            && let (Some(tag), Some(refused)) =
                (tag_of(bytes), crate::uidonly::refusal_of_line(bytes))
        {
            return self.finish(&tag, refused, out).await;
        }
        let substituted = crate::searchres::substitute(bytes, self.selected.as_ref());
        let bytes = substituted.as_deref().unwrap_or(bytes);
        let objectid = self.rewrite_objectid(bytes).await;
        let bytes = objectid.as_deref().unwrap_or(bytes);
        let tag = tag_of(bytes);
        if let Some(parsed) = extended::parse(bytes) {
            let Some(tag) = tag else {
                self.syntax_error(None, "Missing tag", out);
                return Ok(());
            };
            let reply = match parsed {
                Ok(Extended::List(list)) => self.list(&list, out).await,
                Ok(Extended::Create { name, special_use }) => {
                    self.create_extended(&name, &special_use).await
                }
                Ok(Extended::MultiAppend { mailbox, messages }) => {
                    self.multiappend(&mailbox, messages).await
                }
                Ok(Extended::Sort { returns, rest }) => {
                    self.sort_returning(&returns, &rest, &tag, out).await
                }
                Ok(Extended::Catenate(append)) => self.catenate(append).await,
                Ok(Extended::CancelUpdate(tags)) => self.cancel_update(&tags),
                Ok(Extended::FetchPartial { range, rest }) => {
                    self.fetch_partial(range, &rest, out).await
                }
                Ok(Extended::Search { returns, rest }) => {
                    let rest = extended::quoted_8bit_to_literals(&rest);
                    match CommandCodec::default().decode(&rest) {
                        Ok(([], cmd)) => match cmd.body {
                            _ if let Some(refused) = self.uidonly_refusal(&cmd.body) => refused,
                            CommandBody::Search {
                                charset,
                                criteria,
                                uid,
                            } => {
                                self.search(
                                    charset.as_ref(),
                                    criteria.as_ref(),
                                    uid,
                                    Some(&returns),
                                    &tag,
                                    out,
                                )
                                .await
                            }
                            _ => Reply::bad("Invalid SEARCH"),
                        },
                        _ => Reply::bad("Invalid SEARCH arguments"),
                    }
                }
                Err(e) => {
                    self.syntax_error(Some(&tag), &format!("Invalid arguments: {e}"), out);
                    return Ok(());
                }
            };
            return self.finish(&tag, reply, out).await;
        }
        let rewritten = extended::quoted_8bit_to_literals(bytes);
        match CommandCodec::default().decode(&rewritten) {
            Ok(([], cmd)) => {
                let tag = cmd.tag.inner().to_string();
                let reply = self.dispatch(cmd, &tag, out).await;
                self.finish(&tag, reply, out).await
            }
            _ => {
                let text = match tag.as_deref() {
                    Some(_) => "Unknown command or invalid arguments",
                    None => "Missing tag",
                };
                tracing::debug!(line = %log_escape::escape(bytes), "bad command");
                self.syntax_error(tag.as_deref(), text, out);
                Ok(())
            }
        }
    }

    /// Reports changes as the reply allows, then writes the tagged response.
    pub(crate) async fn finish(
        &mut self,
        tag: &str,
        reply: Reply,
        out: &mut Out<'_>,
    ) -> io::Result<()> {
        match reply.status {
            Status::Pending => return Ok(()),
            Status::Bad => self.bad_streak += 1,
            _ => self.bad_streak = 0,
        }
        if reply.sync != Sync::Skip && self.selected.is_some() {
            self.sync(out, reply.sync == Sync::Full).await?;
            self.update_search_contexts(out).await;
        }
        let status = match reply.status {
            Status::Ok => "OK",
            Status::No => "NO",
            _ => "BAD",
        };
        let b = out.buf();
        b.extend_from_slice(tag.as_bytes());
        b.push(b' ');
        b.extend_from_slice(status.as_bytes());
        b.push(b' ');
        if let Some(code) = &reply.code {
            b.push(b'[');
            b.extend_from_slice(code.as_bytes());
            b.extend_from_slice(b"] ");
        }
        b.extend_from_slice(wire::clean_text(&reply.text).as_bytes());
        b.extend_from_slice(b"\r\n");
        if reply.status == Status::Bad && self.bad_streak >= self.shared.settings.max_bad_commands {
            self.bye(out, "Too many invalid commands");
        }
        Ok(())
    }

    async fn dispatch(&mut self, cmd: Command<'_>, tag: &str, out: &mut Out<'_>) -> Reply {
        use CommandBody as C;
        let authenticated = self.account.is_some();
        let selected = self.selected.is_some();
        let name = cmd.body.name();
        match (&cmd.body, authenticated, selected) {
            (C::Capability | C::Noop | C::Logout | C::Id { .. } | C::Idle, _, _) => {}
            (C::StartTLS | C::Login { .. } | C::Authenticate { .. }, false, _) => {}
            (C::StartTLS | C::Login { .. } | C::Authenticate { .. }, true, _) => {
                return Reply::bad("Already logged in");
            }
            (_, false, _) => return Reply::no(format!("{name} needs a login first")),
            (
                C::Check
                | C::Close
                | C::Unselect
                | C::Expunge
                | C::ExpungeUid { .. }
                | C::Search { .. }
                | C::Fetch { .. }
                | C::Store { .. }
                | C::Copy { .. }
                | C::Move { .. }
                | C::Sort { .. }
                | C::Thread { .. },
                true,
                false,
            ) => return Reply::bad(format!("{name} needs a selected mailbox")),
            _ => {}
        }
        if let Some(refused) = self.uidonly_refusal(&cmd.body) {
            return refused;
        }
        match cmd.body {
            C::Capability => self.capability(out),
            C::Noop | C::Check => Reply::ok(format!("{name} completed")),
            C::Logout => self.logout(out),
            C::Id { parameters } => self.id(parameters.as_deref(), out),
            C::StartTLS => self.starttls(),
            C::Login { username, password } => {
                self.login(username.as_ref(), password.declassify().as_ref())
                    .await
            }
            C::Authenticate {
                mechanism,
                initial_response,
            } => {
                self.authenticate(
                    tag,
                    &mechanism,
                    initial_response.as_ref().map(|r| r.declassify().as_ref()),
                    out,
                )
                .await
            }
            C::Enable { capabilities } => self.enable(capabilities.as_ref(), out),
            C::Namespace => self.namespace(out),
            C::Compress { .. } => self.compress(),
            C::Idle => self.idle(tag, out).await,
            C::Select {
                mailbox,
                parameters,
            } => self.select(&mailbox, false, &parameters, out).await,
            C::Examine {
                mailbox,
                parameters,
            } => self.select(&mailbox, true, &parameters, out).await,
            C::Unselect => self.unselect(out),
            C::Close => self.close().await,
            C::Create { mailbox } => self.create(&mailbox).await,
            C::Delete { mailbox } => self.delete(&mailbox).await,
            C::Rename { from, to } => self.rename(&from, &to).await,
            C::Subscribe { mailbox } => self.subscribe(&mailbox, true).await,
            C::Unsubscribe { mailbox } => self.subscribe(&mailbox, false).await,
            C::Lsub {
                reference,
                mailbox_wildcard,
            } => self.lsub(&reference, &mailbox_wildcard, out).await,
            // LIST is read by `extended` before imap-codec sees it.
            C::List { .. } => Reply::bad("Invalid LIST arguments"),
            C::Status {
                mailbox,
                item_names,
            } => self.status(&mailbox, &item_names, out).await,
            C::Append {
                mailbox,
                flags,
                date,
                message,
            } => {
                self.append(&mailbox, &flags, date.as_ref(), &message, out)
                    .await
            }
            C::Expunge => self.expunge(None, out).await,
            C::ExpungeUid { sequence_set } => self.expunge(Some(&sequence_set), out).await,
            C::Search {
                charset,
                criteria,
                uid,
            } => {
                self.search(charset.as_ref(), criteria.as_ref(), uid, None, tag, out)
                    .await
            }
            C::Sort {
                sort_criteria,
                charset,
                search_criteria,
                uid,
            } => {
                self.sort(
                    sort_criteria.as_ref(),
                    &charset,
                    search_criteria.as_ref(),
                    uid,
                    None,
                    out,
                )
                .await
            }
            C::Thread {
                algorithm,
                charset,
                search_criteria,
                uid,
            } => {
                self.thread(&algorithm, &charset, search_criteria.as_ref(), uid, out)
                    .await
            }
            C::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                modifiers,
            } => {
                self.fetch(&sequence_set, &macro_or_item_names, uid, &modifiers, out)
                    .await
            }
            C::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                modifiers,
            } => {
                self.store(
                    &sequence_set,
                    &kind,
                    &response,
                    &flags,
                    uid,
                    &modifiers,
                    out,
                )
                .await
            }
            C::Copy {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(&sequence_set, &mailbox, uid, false, out).await,
            C::Move {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(&sequence_set, &mailbox, uid, true, out).await,
            C::GetQuota { root } => self.get_quota(&root, out).await,
            C::GetQuotaRoot { mailbox } => self.get_quota_root(&mailbox, out).await,
            C::SetQuota { .. } => Reply::no("Quotas are set by the administrator").code("NOPERM"),
            _ => Reply::bad(format!("{name} is not supported")),
        }
    }

    /// `BAD [UIDREQUIRED]` for a command with sequence numbers in a UIDONLY session.
    pub(crate) fn uidonly_refusal(&self, body: &CommandBody<'_>) -> Option<Reply> {
        self.enabled
            .uidonly
            .then(|| crate::uidonly::refusal(body))
            .flatten()
    }

    /// The logged-in user's store (callers checked the state).
    pub(crate) fn user(&self) -> Option<UserStore> {
        self.account.as_ref().map(|a| a.user.clone())
    }

    /// A client's mailbox name as the store's UTF-8 name.
    pub(crate) fn mailbox_name(&self, mailbox: &Mailbox<'_>) -> Result<String, Reply> {
        match mailbox {
            Mailbox::Inbox => Ok("INBOX".into()),
            Mailbox::Other(other) => self.decode_name(other.as_ref()),
        }
    }

    /// Raw name bytes from the client (modified UTF-7, or UTF-8 after UTF8=ACCEPT).
    pub(crate) fn decode_name(&self, raw: &[u8]) -> Result<String, Reply> {
        let text = std::str::from_utf8(raw)
            .map_err(|_| Reply::no("Mailbox name is not valid UTF-8").code("CANNOT"))?;
        // After ENABLE UTF8=ACCEPT names are plain UTF-8, `&` included (RFC 6855).
        let name = if self.enabled.utf8 {
            text.to_string()
        } else {
            decode_mutf7(text).ok_or_else(|| {
                Reply::no("Mailbox name is not valid modified UTF-7").code("CANNOT")
            })?
        };
        if name.eq_ignore_ascii_case("INBOX") {
            return Ok("INBOX".into());
        }
        // INBOX's children are named with INBOX in any case.
        // Compared as bytes: the name is the client's, and byte 6 may be inside a character.
        if let Some(child) = name
            .as_bytes()
            .get(..6)
            .filter(|head| head.eq_ignore_ascii_case(b"INBOX/"))
            .and_then(|_| name.get(6..))
            .filter(|child| !child.is_empty())
        {
            return Ok(format!("INBOX/{child}"));
        }
        Ok(name)
    }

    /// A store name as sent to this client.
    pub(crate) fn encode_name(&self, name: &str) -> Vec<u8> {
        if self.enabled.utf8 {
            name.as_bytes().to_vec()
        } else {
            encode_mutf7(name).into_bytes()
        }
    }

    /// Writes a mailbox name as an astring.
    pub(crate) fn write_name(&self, buf: &mut Vec<u8>, name: &str) {
        wire::astring_utf8(buf, &self.encode_name(name), self.enabled.utf8);
    }

    /// A CONDSTORE-enabling command (FETCH MODSEQ, SEARCH MODSEQ, STORE UNCHANGEDSINCE)
    /// used first in a selected mailbox: the client learns HIGHESTMODSEQ now (RFC 7162
    /// section 3.1).
    pub(crate) fn condstore_enabled_by_command(&mut self, out: &mut Out<'_>) {
        if self.enabled.condstore {
            return;
        }
        self.enabled.condstore = true;
        if let Some(sel) = &self.selected {
            out.untagged(&format!(
                "OK [HIGHESTMODSEQ {}] Highest",
                sel.highest_modseq
            ));
        }
    }

    /// Applies other sessions' changes to the selected mailbox and reports them.
    pub(crate) async fn sync(&mut self, out: &mut Out<'_>, expunge: bool) -> io::Result<()> {
        let (Some(user), Some(sel)) = (self.user(), self.selected.as_mut()) else {
            return Ok(());
        };
        // Read before looking, so a commit during the look makes the next check look again.
        let token = user.change_token();
        let now = Instant::now();
        if sel
            .checked
            .is_some_and(|(t, at)| t.same_as(token) && now.duration_since(at) < RECHECK)
        {
            // No hermod process committed anything for this user since the last look.
            if expunge && !sel.vanished.is_empty() {
                let mut gone = std::mem::take(&mut sel.vanished);
                gone.sort_unstable();
                report_expunged(sel, &gone, self.enabled.vanished(), out);
            }
            return Ok(());
        }
        // No look since SELECT, or one forced (IDLE): other tools' latest changes too.
        let changes = if sel.checked.is_none() {
            user.changes_since_on_disk(&sel.name, sel.highest_modseq)
                .await
        } else {
            user.changes_since(&sel.name, sel.highest_modseq).await
        };
        let changes = match changes {
            Ok(c) => c,
            Err(StoreError::NoSuchMailbox(_)) => {
                // Deleted or renamed under us: nothing more can be reported.
                self.selected = None;
                self.bye(out, "Selected mailbox was deleted");
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot check for mailbox changes");
                return Ok(());
            }
        };
        if changes.uidvalidity != sel.uidvalidity {
            self.selected = None;
            self.bye(out, "UIDVALIDITY changed, please reconnect");
            return Ok(());
        }
        sel.checked = Some((token, now));
        let condstore = self.enabled.condstore;
        let uidonly = self.enabled.uidonly;
        for uid in &changes.vanished {
            if sel.index_of(*uid).is_some() && !sel.vanished.contains(uid) {
                sel.vanished.push(*uid);
            }
        }
        let mut added = false;
        // Keywords first, so `* FLAGS` can precede the FETCH lines that use them (RFC 3501
        // section 7.2.6).
        let gone = sel.vanished.clone();
        announce_keywords(
            sel,
            changes.changed.iter().filter(|m| !gone.contains(&m.uid)),
            out,
        );
        for m in changes.changed {
            match sel.index_of(m.uid) {
                Some(i) => {
                    if sel.vanished.contains(&m.uid) {
                        continue;
                    }
                    let old = &mut sel.msgs[i];
                    // Our own STOREs are in the view already: only report what differs.
                    let differs = old.flags != m.flags
                        || old.keywords != m.keywords
                        || (condstore && old.modseq != m.modseq);
                    let recent = old.recent;
                    *old = MessageMeta { recent, ..m };
                    if differs {
                        let b = out.buf();
                        if !crate::uidonly::start_fetch(b, uidonly, i + 1, old.uid) {
                            b.extend_from_slice(b"UID ");
                            wire::number(b, u64::from(old.uid));
                            b.push(b' ');
                        }
                        write_flags(b, old);
                        if condstore {
                            b.extend_from_slice(b" MODSEQ (");
                            wire::number(b, old.modseq);
                            b.push(b')');
                        }
                        b.extend_from_slice(b")\r\n");
                    }
                }
                None if m.uid > sel.max_uid() => {
                    sel.msgs.push(m);
                    added = true;
                }
                None => {}
            }
        }
        sel.uidnext = sel.uidnext.max(changes.uidnext);
        sel.highest_modseq = sel.highest_modseq.max(changes.highest_modseq);
        if expunge && !sel.vanished.is_empty() {
            let mut gone = std::mem::take(&mut sel.vanished);
            gone.sort_unstable();
            report_expunged(sel, &gone, self.enabled.vanished(), out);
        }
        if added {
            // New messages are \Recent in the first session that hears of them; IMAP4rev2
            // has no \Recent, and such a session leaves them to others.
            let rev2 = self.enabled.rev2;
            if !sel.read_only && !rev2 {
                match user.claim_recent(&sel.name, sel.max_uid() + 1).await {
                    Ok(claimed) if !claimed.is_empty() => {
                        let start = sel.msgs.partition_point(|m| m.uid < claimed.start);
                        for m in sel.msgs[start..].iter_mut() {
                            m.recent |= claimed.contains(&m.uid);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot claim \\Recent"),
                }
            }
            out.untagged(&format!("{} EXISTS", sel.msgs.len()));
            if !rev2 {
                let recent = sel.msgs.iter().filter(|m| m.recent).count();
                out.untagged(&format!("{recent} RECENT"));
            }
        }
        Ok(())
    }

    /// During IDLE: a change notification arrived (or `None`: a periodic check).
    pub async fn idle_changed(
        &mut self,
        change: Option<Change>,
        out: &mut Out<'_>,
    ) -> io::Result<()> {
        let relevant = match (&change, &self.selected) {
            (_, None) => false,
            (Some(Change::Mailbox(name)), Some(sel)) => *name == sel.name,
            _ => true,
        };
        if relevant {
            // Always look, at the disk too: a notification can come from a commit whose
            // token is not written yet, and a skipped look would not be repeated by another
            // one; on entering IDLE, the client waits for what other tools did just before.
            if let Some(sel) = self.selected.as_mut() {
                sel.checked = None;
            }
            self.sync(out, true).await?;
            self.update_search_contexts(out).await;
        }
        Ok(())
    }
}

/// Adds the keywords of `msgs` to those the client knows; if some are new, sends `* FLAGS`
/// and PERMANENTFLAGS now, before any FETCH that shows them (RFC 3501 section 7.2.6).
pub(crate) fn announce_keywords<'a>(
    sel: &mut Selected,
    msgs: impl IntoIterator<Item = &'a MessageMeta>,
    out: &mut Out<'_>,
) {
    let mut new_keywords = false;
    for m in msgs {
        for k in &m.keywords {
            if !sel.keywords.contains(k) {
                new_keywords |= sel.keywords.insert(k.clone());
            }
        }
    }
    if new_keywords {
        let flags = flag_list(&sel.keywords);
        out.untagged(&format!("FLAGS ({flags})"));
        if !sel.read_only {
            out.untagged(&format!(
                "OK [PERMANENTFLAGS ({flags} \\*)] Flags permitted"
            ));
        }
    }
}

/// Removes expunged UIDs from the view and tells the client: `* n EXPUNGE` for each, or one
/// `* VANISHED` with QRESYNC or UIDONLY (`qresync` is `Enabled::vanished`).
pub(crate) fn report_expunged(sel: &mut Selected, uids: &[u32], qresync: bool, out: &mut Out<'_>) {
    crate::search_context::report_removed(sel, uids, out);
    let mut removed = Vec::new();
    // Walk downwards so each sequence number is valid when it is sent.
    for &uid in uids.iter().rev() {
        if let Some(i) = sel.index_of(uid) {
            sel.msgs.remove(i);
            if !qresync {
                out.untagged(&format!("{} EXPUNGE", i + 1));
            }
            removed.push(uid);
        }
    }
    sel.vanished.retain(|u| !removed.contains(u));
    if qresync && !removed.is_empty() {
        out.untagged(&format!("VANISHED {}", crate::sequence::format(&removed)));
    }
}

/// `FLAGS (\Seen $Forwarded)`, with `\Recent` when the message is recent to this session.
pub(crate) fn write_flags(b: &mut Vec<u8>, m: &MessageMeta) {
    b.extend_from_slice(b"FLAGS (");
    let mut first = true;
    let mut sep = |b: &mut Vec<u8>| {
        if !first {
            b.push(b' ');
        }
        first = false;
    };
    for f in m.flags.iter() {
        sep(b);
        b.extend_from_slice(f.imap_name().as_bytes());
    }
    for k in &m.keywords {
        sep(b);
        b.extend_from_slice(k.as_bytes());
    }
    if m.recent {
        sep(b);
        b.extend_from_slice(b"\\Recent");
    }
    b.push(b')');
}

/// The system flags and the given keywords, space separated.
pub(crate) fn flag_list(keywords: &BTreeSet<String>) -> String {
    let mut s: Vec<&str> = Flag::ALL.iter().map(|f| f.imap_name()).collect();
    s.extend(keywords.iter().map(String::as_str));
    s.join(" ")
}

/// The tag at the start of a command line, if it is a valid tag.
fn tag_of(bytes: &[u8]) -> Option<String> {
    let end = bytes
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')?;
    let tag = &bytes[..end];
    let valid = !tag.is_empty()
        && tag.len() <= 64
        && tag
            .iter()
            .all(|&b| b.is_ascii_graphic() && !b"(){%*\"\\+".contains(&b));
    valid.then(|| String::from_utf8_lossy(tag).into_owned())
}

#[cfg(test)]
mod tests {
    use crate::testing::{Harness, message};

    /// Random IMAP-looking input (a fixed-seed generator) never panics the session, and
    /// the session still answers afterwards.
    #[tokio::test]
    async fn random_input_gets_answers_not_panics() {
        let h = Harness::with_settings(crate::session::Settings {
            max_bad_commands: u32::MAX,
            ..Default::default()
        })
        .await;
        h.deliver("INBOX", &message("m", "body")).await;
        let mut s = h.selected("INBOX").await;
        let words: &[&[u8]] = &[
            b"FETCH",
            b"UID",
            b"STORE",
            b"SEARCH",
            b"SORT",
            b"(REVERSE",
            b"SUBJECT)",
            b"THREAD",
            b"REFERENCES",
            b"UTF-8",
            b"LIST",
            b"SELECT",
            b"1:*",
            b"*",
            b"(",
            b")",
            b"BODY[",
            b"]",
            b"<0.5>",
            b"\"",
            b"{3}\r\n",
            b"{2+}\r\n",
            b"\\Seen",
            b"RETURN",
            b"INBOX",
            b"HEADER.FIELDS",
            b"&",
            b"\xc3\xa9",
            b"~{1}\r\n",
            b"CHARSET",
            b"NOT",
            b"OR",
            b"2.1.MIME",
            b"APPEND",
            b"CREATE",
            b"(USE",
            b"\\Sent))",
            b"%",
            b"0",
            b"4294967296",
            b"\t",
            b"\x00",
        ];
        let mut seed: u64 = 0x9e3779b97f4a7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for i in 0..1500 {
            let mut line = format!("r{i}").into_bytes();
            for _ in 0..(next() % 8) {
                line.push(b' ');
                line.extend_from_slice(words[(next() % words.len() as u64) as usize]);
            }
            line.extend_from_slice(b"\r\n");
            h.run_bytes(&mut s, &line).await;
        }
        let out = h.run(&mut s, "z NOOP\r\n").await;
        assert!(out.ends_with("z OK NOOP completed\r\n"), "{out}");
    }

    /// \Recent belongs to one session: the first that hears of a new message (RFC 3501
    /// section 2.3.2); STATUS of the others counts it no more.
    #[tokio::test]
    async fn new_messages_are_recent_in_one_session() {
        let h = Harness::new().await;
        let mut a = h.selected("INBOX").await;
        let mut b = h.selected("INBOX").await;
        let msg = message("new", "body");
        let out = h
            .run(
                &mut a,
                &format!("x APPEND INBOX {{{}+}}\r\n{msg}\r\n", msg.len()),
            )
            .await;
        assert!(out.contains("* 1 EXISTS\r\n* 1 RECENT\r\n"), "{out}");
        let out = h.run(&mut a, "f FETCH 1 FLAGS\r\n").await;
        assert!(out.contains("FLAGS (\\Recent)"), "{out}");
        let out = h.run(&mut b, "n NOOP\r\nf FETCH 1 FLAGS\r\n").await;
        assert!(out.contains("* 1 EXISTS\r\n* 0 RECENT\r\n"), "{out}");
        assert!(out.contains("* 1 FETCH (FLAGS ())"), "{out}");
        let mut c = h.session(true);
        h.login(&mut c).await;
        let out = h.run(&mut c, "s STATUS INBOX (MESSAGES RECENT)\r\n").await;
        assert!(out.contains("(MESSAGES 1 RECENT 0)"), "{out}");
    }

    /// Another session's new keyword: `* FLAGS` comes before the FETCH that uses it.
    #[tokio::test]
    async fn keyword_of_another_session_is_announced_before_its_fetch() {
        let h = Harness::new().await;
        h.deliver("INBOX", &message("one", "body")).await;
        let mut a = h.selected("INBOX").await;
        let mut b = h.selected("INBOX").await;
        h.run(&mut b, "x STORE 1 +FLAGS ($Label2)\r\n").await;
        let out = h.run(&mut a, "n NOOP\r\n").await;
        let flags = out.find("* FLAGS (").expect(&out);
        let fetch = out.find("* 1 FETCH").expect(&out);
        assert!(flags < fetch, "{out}");
        assert!(out.contains("$Label2"), "{out}");
    }

    /// A name whose 6th byte is inside a character (`INBOXé`) is an ordinary name, not a
    /// panic; INBOX's children still take INBOX in any case.
    #[tokio::test]
    async fn multibyte_names_near_the_inbox_prefix() {
        let h = Harness::new().await;
        let mut s = h.session(true);
        h.login(&mut s).await;
        let out = h.run(&mut s, "a SELECT \"INBOX&AOk-\"\r\n").await;
        assert_eq!(out, "a NO [NONEXISTENT] Mailbox does not exist\r\n");
        let out = h.run(&mut s, "b CREATE \"INBOX&AOk-\"\r\n").await;
        assert!(out.starts_with("b OK"), "{out}");
        let out = h.run(&mut s, "c SELECT \"INBOX&AOk-\"\r\n").await;
        assert!(out.contains("c OK"), "{out}");
        let out = h.run(&mut s, "d CREATE inbox/&AOk-\r\n").await;
        assert!(out.starts_with("d OK"), "{out}");
        let out = h.run(&mut s, "e LIST \"\" INBOX/*\r\n").await;
        assert!(out.contains("\"/\" INBOX/&AOk-\r\n"), "{out}");
        let out = h.run(&mut s, "f SELECT \"&AOk-&AOk-&AOk-\"\r\n").await;
        assert!(out.starts_with("f NO"), "{out}");
    }

    /// Before login, a literal over a few KiB is refused at once: no continuation, and a
    /// non-synchronizing one closes the connection. After login, APPENDs get the
    /// configured size.
    #[tokio::test]
    async fn small_input_limits_before_login() {
        let h = Harness::new().await;
        let mut s = h.session(true);
        let out = h.run(&mut s, "a LOGIN {52428800}\r\n").await;
        assert_eq!(out, "a BAD Literal too large before login\r\n");
        let long = format!(
            "b LOGIN {} x\r\n",
            "u".repeat(super::PRE_LOGIN_MAX_LINE + 1000)
        );
        let out = h.run(&mut s, &long).await;
        assert_eq!(out, "b BAD Command line too long\r\n");
        // An ID at RFC 2971's limits (30 pairs, 1,024-octet values) fits before login.
        let pairs: Vec<String> = (0..30)
            .map(|i| format!("\"field{i:02}\" \"{}\"", "v".repeat(1024)))
            .collect();
        let id = format!("i ID ({})\r\n", pairs.join(" "));
        let out = h.run(&mut s, &id).await;
        assert!(
            out.starts_with("* ID ") && out.contains("\r\ni OK "),
            "{out}"
        );
        let out = h.run(&mut s, "c LOGIN {5}\r\n").await;
        assert_eq!(out, "+ Ready for literal data\r\n");
        let out = h.run(&mut s, "d LOGIN {52428800+}\r\nxxxx").await;
        assert_eq!(
            out,
            "d BAD Literal too large\r\n* BYE Literal too large before login\r\n"
        );
        let mut s = h.session(true);
        h.login(&mut s).await;
        let out = h.run(&mut s, "e APPEND INBOX {52428800}\r\n").await;
        assert_eq!(out, "+ Ready for literal data\r\n");
        let out = h.run(&mut s, "f APPEND INBOX {52428801}\r\n").await;
        assert_eq!(out, "f NO [TOOBIG] Literal too large\r\n");
    }

    /// The skipped look after a command (nothing committed since the last one) never
    /// hides a change: another process's commits show at the very next command.
    #[tokio::test]
    async fn changes_of_another_process_show_at_the_next_command() {
        use hermod_common::store::{Flag, Flags, Store, StoreMode, UserStore};
        async fn add_flags(u: &UserStore, uids: &[u32], flags: &[Flag]) {
            u.store(
                "INBOX",
                uids,
                StoreMode::Add,
                Flags::from_flags(flags),
                &[],
                None,
            )
            .await
            .unwrap();
        }
        let h = Harness::new().await;
        h.deliver("INBOX", &message("one", "body")).await;
        let mut s = h.selected("INBOX").await;
        // Two quiet commands: the second one skips the store.
        h.run(&mut s, "a NOOP\r\n").await;
        let out = h.run(&mut s, "b NOOP\r\n").await;
        assert_eq!(out, "b OK NOOP completed\r\n");

        let other = Store::new(h.store.config().clone());
        let u = other.user("alice", "example.org").await.unwrap();
        let uid = u
            .deliver("INBOX", message("two", "body").as_bytes())
            .await
            .unwrap();
        let out = h.run(&mut s, "c NOOP\r\n").await;
        assert!(out.contains("* 2 EXISTS\r\n"), "{out}");
        add_flags(&u, &[uid], &[Flag::Flagged]).await;
        let out = h.run(&mut s, "d NOOP\r\n").await;
        assert!(
            out.contains("* 2 FETCH (UID 2 FLAGS (\\Flagged \\Recent))"),
            "{out}"
        );
        u.expunge("INBOX", Some(&[uid])).await.unwrap();
        let out = h.run(&mut s, "e NOOP\r\n").await;
        assert!(!out.contains("EXPUNGE"), "not \\Deleted, so kept: {out}");
        add_flags(&u, &[uid], &[Flag::Deleted]).await;
        u.expunge("INBOX", None).await.unwrap();
        let out = h.run(&mut s, "f NOOP\r\n").await;
        assert!(out.contains("* 2 EXPUNGE\r\n"), "{out}");
    }

    /// IDLE always looks, at the disk too: another tool's delivery a moment before shows
    /// at once, even right after a command's look.
    #[tokio::test]
    async fn idle_looks_at_the_disk_even_right_after_a_command() {
        let h = Harness::new().await;
        h.deliver("INBOX", &message("one", "body")).await;
        let mut s = h.selected("INBOX").await;
        h.run(&mut s, "a NOOP\r\n").await;
        let new = h
            .store
            .config()
            .data_dir
            .join("mail/example.org/alice/Maildir/new/1.other-tool.host");
        std::fs::write(new, message("two", "body")).unwrap();
        let mut out = crate::output::Out::buffer();
        s.idle_changed(None, &mut out).await.unwrap();
        let out = String::from_utf8_lossy(&out.into_bytes()).into_owned();
        assert!(out.contains("* 2 EXISTS\r\n"), "{out}");
    }
}
#[cfg(test)]
mod deep_tests {
    use crate::testing::{Harness, message};

    /// Nesting the client controls (parentheses, NOT chains, section parts) is refused
    /// with BAD by the parsers' depth limits, never a stack overflow.
    #[tokio::test]
    async fn deeply_nested_arguments_get_bad() {
        let h = Harness::new().await;
        h.deliver("INBOX", &message("m", "body")).await;
        let mut s = h.selected("INBOX").await;
        let deep =
            |open: &str, close: &str| format!("{}ALL{}", open.repeat(20_000), close.repeat(20_000));
        for (tag, args) in [
            ("a", format!("SEARCH {}", deep("(", ")"))),
            ("b", format!("SEARCH {}", deep("NOT ", ""))),
            ("c", format!("SEARCH {} ALL", deep("OR ALL ", ""))),
            ("d", format!("FETCH 1 BODY[{}]", "1.".repeat(20_000))),
            ("e", format!("SEARCH RETURN (ALL) {}", deep("(", ")"))),
            ("f", format!("THREAD REFERENCES UTF-8 {}", deep("(", ")"))),
            ("g", format!("LIST {} \"\" *", "(".repeat(20_000))),
        ] {
            let out = h.run(&mut s, &format!("{tag} {args}\r\n")).await;
            assert!(out.starts_with(&format!("{tag} BAD ")), "{tag}: {out}");
        }
        let out = h.run(&mut s, "z NOOP\r\n").await;
        assert!(out.ends_with("z OK NOOP completed\r\n"), "{out}");
    }
}
