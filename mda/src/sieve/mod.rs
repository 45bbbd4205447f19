//! Sieve mail filtering (RFC 5228) at delivery, written for hermod (sieve-rs is AGPL).
//!
//! - [`compile`] turns a script into a [`Script`] (line/column errors, nesting limited,
//!   `require` checked), cheap to share: an `Arc` inside.
//! - [`execute`] runs a sequence of scripts (admin `before.d`, the user's active one,
//!   `after.d`) on one message and returns the [`Outcome`]: the [`Action`]s to perform and
//!   the runtime errors met (a runtime error ends that script with an implicit keep).
//! - [`store`]: the scripts of users and admins on disk, with a bounded compiled cache.
//!
//! Sending (redirect, vacation, reject notices) is not done here: the MDA returns those
//! actions to its caller ([`crate::TargetResult::sieve`]), which queues them.
//!
//! Extensions: fileinto, reject, ereject, envelope, encoded-character, imap4flags, copy,
//! body, variables, vacation, vacation-seconds, relational, comparator-i;ascii-numeric,
//! subaddress, date, index, mailbox, include, duplicate, editheader, regex, spamtest.

mod args;
mod ast;
mod commands;
mod dates;
mod eval;
mod interp;
mod lexer;
mod matching;
mod message;
mod parser;
pub mod store;
#[cfg(test)]
mod tests;
mod variables;

use std::fmt;
use std::sync::Arc;

pub use message::SieveMessage;

/// Limits on scripts and their execution; no script can loop, run long or grow memory
/// without bound.
pub mod limits {
    /// Largest script source accepted by [`super::compile`].
    pub const SCRIPT_SIZE: usize = 1024 * 1024;
    /// Deepest nesting of blocks and test lists.
    pub const NESTING: usize = 32;
    /// Longest string literal or variable value (bytes).
    pub const STRING: usize = 64 * 1024;
    /// Most actions one delivery can produce.
    pub const ACTIONS: usize = 64;
    /// Most `redirect`s one delivery can produce.
    pub const REDIRECTS: usize = 4;
    /// Deepest chain of `include`s.
    pub const INCLUDE_DEPTH: usize = 10;
    /// Most scripts included in one delivery.
    pub const INCLUDES: usize = 32;
    /// Most variables of one script.
    pub const VARIABLES: usize = 256;
    /// Largest compiled regex (bytes of the automaton).
    pub const REGEX_SIZE: usize = 1 << 20;
    /// Commands and tests evaluated in one delivery, over all scripts.
    pub const STEPS: u64 = 100_000;
    /// Bytes of bodies and headers compared in one delivery.
    pub const WORK_BYTES: u64 = 64 * 1024 * 1024;
    /// Shortest and longest vacation period (seconds), as Pigeonhole's defaults.
    pub const VACATION_MIN_PERIOD: u64 = 86_400;
    pub const VACATION_MAX_PERIOD: u64 = 60 * 86_400;
    /// How much of the message a script looks at (header and body tests).
    pub const MESSAGE_VIEW: usize = 1024 * 1024;
}

/// A script that failed to compile: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct CompileError {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl CompileError {
    pub(crate) fn new(line: u32, column: u32, message: impl Into<String>) -> CompileError {
        CompileError {
            line,
            column,
            message: message.into(),
        }
    }
}

/// A compiled script: immutable, `Send + Sync`, cloned by reference count.
#[derive(Clone)]
pub struct Script(Arc<ast::Program>);

impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Script")
            .field("requires", &self.0.requires)
            .finish_non_exhaustive()
    }
}

impl Script {
    /// The extensions the script requires (lowercase, as written).
    pub fn requires(&self) -> &[String] {
        &self.0.requires
    }
}

/// Compiles Sieve source: syntax, command and test names, argument shapes and `require`.
pub fn compile(source: &str) -> Result<Script, CompileError> {
    if source.len() > limits::SCRIPT_SIZE {
        return Err(CompileError::new(
            1,
            1,
            format!("script too large (limit {} bytes)", limits::SCRIPT_SIZE),
        ));
    }
    let program = parser::parse(source)?;
    Ok(Script(Arc::new(program)))
}

/// The SMTP envelope as the script sees it (test `envelope`, vacation, duplicate).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SieveEnvelope {
    /// `MAIL FROM`; empty for the null sender.
    pub from: String,
    /// The address being delivered to (the user's own address after aliases).
    pub to: String,
    /// The `RCPT TO` as given (before alias expansion).
    pub orig_to: String,
    /// The authenticated submitter, when known.
    pub auth_user: Option<String>,
}

/// An IMAP flag or keyword set by imap4flags, as written (`\Seen`, `$Label1`).
pub type FlagName = String;

/// What a delivery does because of the scripts. Redirect, Vacation, Reject and Ereject are
/// for the caller to send; the others the MDA performs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// File into INBOX (explicit `keep`, or the implicit keep).
    Keep { flags: Vec<FlagName> },
    /// `fileinto`; `create` (RFC 5490 `:create`) makes the mailbox if missing. A missing
    /// mailbox without it means INBOX.
    FileInto {
        mailbox: String,
        flags: Vec<FlagName>,
        create: bool,
    },
    /// `discard`: cancels the implicit keep, files nothing.
    Discard,
    /// `redirect` to `address`; `copy` (RFC 3894) keeps the implicit keep.
    Redirect { address: String, copy: bool },
    /// `reject` (RFC 5429): refuse with a notice (MDN) to the sender.
    Reject { reason: String },
    /// `ereject`: refuse in protocol when possible (LMTP 550), else as `reject`.
    Ereject { reason: String },
    /// `vacation` (RFC 5230/6131): an auto-reply; the caller checks RFC 3834 rules and the
    /// once-per-period record.
    Vacation(Vacation),
    /// `addheader` (RFC 5293): already applied to [`Outcome::header`].
    AddHeader {
        name: String,
        value: String,
        last: bool,
    },
    /// `deleteheader`: already applied to [`Outcome::header`].
    DeleteHeader { name: String },
}

/// The parameters of a `vacation` action, from the script.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Vacation {
    /// The reply body (`reason`); a MIME entity when `mime`.
    pub reason: String,
    pub mime: bool,
    /// `:subject`, else the caller uses "Auto: " + the original subject.
    pub subject: Option<String>,
    /// `:from`, else the recipient's address.
    pub from: Option<String>,
    /// `:addresses`: other addresses of the user (no reply if none is in To/Cc).
    pub addresses: Vec<String>,
    /// `:handle`, else one made from the reason, subject, from and mime (RFC 5230 4.2).
    pub handle: String,
    /// At most one reply per sender per this many seconds (`:days` * 86400 or `:seconds`;
    /// default 7 days).
    pub period_seconds: u64,
    /// Whom to reply to: the envelope sender.
    pub to: String,
}

/// The result of running the scripts on one message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Every action, in order; the implicit keep (if still in effect) is the last one.
    pub actions: Vec<Action>,
    /// Runtime errors, each naming its script (logged by the MDA).
    pub errors: Vec<String>,
    /// The header section after `addheader`/`deleteheader`, if they changed it (with its
    /// line ends, without the empty line that ends it).
    pub header: Option<Vec<u8>>,
}

impl Outcome {
    /// The actions the caller must send (redirect, vacation, reject, ereject).
    pub fn outbound(&self) -> impl Iterator<Item = &Action> {
        self.actions.iter().filter(|a| {
            matches!(
                a,
                Action::Redirect { .. }
                    | Action::Vacation(_)
                    | Action::Reject { .. }
                    | Action::Ereject { .. }
            )
        })
    }
}

/// What the interpreter asks of the delivery around it.
pub trait SieveHost {
    /// The script `name` for `include` (`global`: an admin script, else the user's own).
    fn include(&mut self, name: &str, global: bool) -> Result<Script, String>;
    /// Whether the user has a mailbox `name` (RFC 5490 `mailboxexists`, `fileinto` target).
    fn mailbox_exists(&self, name: &str) -> bool;
    /// RFC 7352: whether `id` was seen within `period` seconds, recording it. With `last`
    /// the period runs from the latest sighting, else from the first.
    fn duplicate(&mut self, id: &str, period: u64, last: bool) -> bool;
    /// Seconds since the Unix epoch (`currentdate`).
    fn now(&self) -> i64;
}

/// Where the body of `message` starts (after the empty line ending the header).
pub(crate) fn body_start(message: &[u8]) -> usize {
    message::parse_header(message).1
}

/// One script of the sequence run at delivery, with the name used in error messages.
#[derive(Debug, Clone)]
pub struct NamedScript {
    pub name: String,
    pub script: Script,
}

/// Runs `scripts` in order on `message`: a script runs only while the implicit keep of the
/// ones before it is still in effect (as Pigeonhole's sieve_before/sieve_after do). A
/// runtime error ends that script; the implicit keep then stays, so no mail is lost.
pub fn execute(
    scripts: &[NamedScript],
    message: &SieveMessage<'_>,
    envelope: &SieveEnvelope,
    host: &mut dyn SieveHost,
) -> Outcome {
    interp::run(scripts, message, envelope, host)
}
