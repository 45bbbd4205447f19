//! Local delivery: from an envelope recipient to messages in users' mailboxes.
//!
//! For each recipient: resolve it through the directory (aliases, `+detail`, catch-all,
//! postmaster), and for every local user it reaches prepend `Return-Path:` and
//! `Delivered-To:`, check the user's quota, pick the folder (`alice+lists@` files into
//! `lists` when that folder exists) and write durably with [`UserStore::deliver`]. Remote
//! targets of aliases are returned as forwards for the MTA to queue.
//!
//! [`UserStore::deliver`]: hermod_common::store::UserStore::deliver

use hermod_common::store::{MailboxInfo, SpecialUse, Store, StoreError, Uid, UserStore};
use hermod_common::{Context, Destination, Directory, User};

use crate::content::{Content, FileContent};
use crate::message::{already_delivered_to, is_quarantined, trace_headers, with_trace_headers};
use crate::reply::Reply;
use crate::sieve::store::ScriptStore;
use crate::sieve::{Action as SieveAction, SieveEnvelope};
use crate::sieve_delivery;

/// The envelope of a message to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    /// The envelope sender (`MAIL FROM`); empty for the null sender of bounces.
    pub sender: String,
    /// The envelope recipients (`RCPT TO`), as given.
    pub recipients: Vec<String>,
}

/// What happened for one address an envelope recipient resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetOutcome {
    /// Filed into `mailbox` of the user with `uid`, durably (with Sieve: the first folder
    /// the scripts filed it into).
    Delivered { mailbox: String, uid: Uid },
    /// The user's Sieve scripts disposed of the message without filing it (discard,
    /// redirect, reject): a success; [`TargetResult::sieve`] says what to send.
    Filtered,
    /// A remote address (an alias pointing off-site): the MTA must queue it.
    Forward,
    /// Not delivered; the reply says why and whether to retry.
    Failed(Reply),
}

/// One target of a recipient: a local user's address, or a remote address to forward to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetResult {
    pub address: String,
    pub outcome: TargetOutcome,
    /// What the user's Sieve scripts ask the caller to send, in script order:
    /// [`SieveAction::Redirect`] (queue a copy to the address; the envelope sender is the
    /// caller's choice, e.g. SRS), [`SieveAction::Vacation`] (an RFC 3834 auto-reply, if
    /// the caller's checks allow), [`SieveAction::Reject`] / [`SieveAction::Ereject`] (a
    /// refusal notice; for ereject over LMTP a 550 may be answered instead). Empty without
    /// Sieve. Filing (keep, fileinto, flags, header edits) is already done.
    pub sieve: Vec<SieveAction>,
}

/// The result for one envelope recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientResult {
    /// The envelope recipient as given.
    pub recipient: String,
    /// The one reply for this recipient (LMTP sends it after DATA; the queue logs it):
    /// 2xx when every target was delivered or is to be forwarded, or when some were and the
    /// others failed permanently; 4xx when any target failed temporarily (retrying may
    /// deliver the others twice, which beats losing one); else the first 5xx.
    pub reply: Reply,
    /// Every local user and remote address the recipient reached, in directory order.
    pub targets: Vec<TargetResult>,
}

impl RecipientResult {
    fn failed(recipient: &str, reply: Reply) -> RecipientResult {
        RecipientResult {
            recipient: recipient.to_string(),
            reply,
            targets: Vec::new(),
        }
    }

    pub fn is_success(&self) -> bool {
        self.reply.is_success()
    }

    /// The MTA keeps the message queued for this recipient and retries.
    pub fn is_temporary(&self) -> bool {
        self.reply.is_temporary()
    }

    /// The MTA bounces the message for this recipient.
    pub fn is_permanent(&self) -> bool {
        self.reply.is_permanent()
    }

    /// Remote addresses the MTA must queue (alias targets off-site).
    pub fn forwards(&self) -> impl Iterator<Item = &str> {
        self.targets
            .iter()
            .filter(|t| t.outcome == TargetOutcome::Forward)
            .map(|t| t.address.as_str())
    }
}

/// Delivers into the store. Cheap to clone (the directory and the store are handles).
///
/// `Delivery::new` returns remote alias targets as forwards (for the MTA, which queues
/// them); [`Delivery::local_only`] is for LMTP and the LDA, which cannot send mail on: there
/// a remote target is a permanent failure of that target (logged), and a recipient that
/// reaches only remote addresses is refused.
#[derive(Clone)]
pub struct Delivery {
    directory: Directory,
    store: Store,
    /// Largest message accepted, in bytes; 0 = no limit.
    size_limit: u64,
    forwarding: bool,
    /// Refuse a message that already has our `Delivered-To:` (a loop).
    loop_check: bool,
    /// Look for an identical copy among the newest messages before filing (see
    /// [`Delivery::checking_duplicates`]).
    duplicate_check: bool,
    /// Config `plus_address_folders`: where `user+folder@` may file (see [`plus_allowed`]).
    plus_folders: Vec<String>,
    /// Users' and admins' Sieve scripts (`<data_dir>/sieve`).
    scripts: ScriptStore,
}

/// How many of the newest messages of a mailbox are compared when looking for a copy that a
/// crash left delivered but unrecorded.
const DUPLICATE_WINDOW: u32 = 64;

/// The mailbox every user has and deliveries default to.
const INBOX: &str = "INBOX";
const JUNK: &str = "Junk";

fn temporary_directory_failure(recipient: &str, e: &dyn std::fmt::Display) -> Reply {
    tracing::error!(to = %recipient, error = %e, "directory lookup failed");
    Reply::new(
        451,
        [4, 3, 0],
        format!("<{recipient}>: temporary lookup failure, try again later"),
    )
}

fn no_such_user(recipient: &str) -> Reply {
    Reply::new(550, [5, 1, 1], format!("<{recipient}>: no such user here"))
}

/// The reply for a store error: temporary ones (lock wait, I/O, index) are 451 so the
/// sender retries; over quota is 552 5.2.2 as RFC 3463 says for a full mailbox.
fn store_failure(recipient: &str, e: &StoreError) -> Reply {
    match e {
        StoreError::OverQuota(_) => Reply::new(
            552,
            [5, 2, 2],
            format!("<{recipient}>: mailbox full (over quota)"),
        ),
        StoreError::Temporary(_) => Reply::new(
            451,
            [4, 2, 0],
            format!("<{recipient}>: mailbox busy, try again later"),
        ),
        e if e.is_temporary() => Reply::new(
            451,
            [4, 3, 0],
            format!("<{recipient}>: local delivery failed temporarily, try again later"),
        ),
        _ => Reply::new(
            554,
            [5, 2, 0],
            format!("<{recipient}>: mailbox unavailable"),
        ),
    }
}

impl Delivery {
    /// Delivery that returns remote alias targets as forwards (for the MTA).
    pub fn new(directory: Directory, store: Store, message_size_limit: u64) -> Delivery {
        let scripts = ScriptStore::new(&store.config().data_dir);
        Delivery {
            scripts,
            directory,
            store,
            size_limit: message_size_limit,
            forwarding: true,
            loop_check: true,
            duplicate_check: false,
            plus_folders: vec!["*".to_string()],
        }
    }

    /// Which folders `user+folder@` may file into (config `plus_address_folders`).
    pub fn with_plus_folders(mut self, folders: Vec<String>) -> Delivery {
        self.plus_folders = folders;
        self
    }

    /// Delivery over the context's directory and store, with its `message_size_limit`.
    pub fn from_context(ctx: &Context) -> Delivery {
        Delivery::new(
            ctx.directory.clone(),
            ctx.store.clone(),
            ctx.config.message_size_limit,
        )
        .with_plus_folders(ctx.config.plus_address_folders.clone())
    }

    /// The same, for a caller that cannot forward mail (LMTP, `hermod deliver`).
    pub fn local_only(mut self) -> Delivery {
        self.forwarding = false;
        self
    }

    /// The same, without the `Delivered-To:` loop check: for the LDA, because Postfix's
    /// local(8) prepends `Delivered-To: <recipient>` itself before it pipes to
    /// `mailbox_command` (and does its own loop detection).
    pub fn without_loop_check(mut self) -> Delivery {
        self.loop_check = false;
        self
    }

    /// Before filing a copy, look for the very same bytes among the newest messages of the
    /// target mailbox and report that one as delivered instead. The queue uses this for
    /// messages it held before a restart: a crash between the MDA's write and the queue's
    /// record of it must not deliver the message twice. (The MTA's `Received:` header carries
    /// the queue id and time, so two different submissions never have the same bytes.)
    pub fn checking_duplicates(mut self) -> Delivery {
        self.duplicate_check = true;
        self
    }

    /// The largest message accepted (0 = unlimited).
    pub fn size_limit(&self) -> u64 {
        self.size_limit
    }

    /// The check at `RCPT TO`: Ok when the address reaches at least one local mailbox (or,
    /// with forwarding, any address); else the refusal (550 5.1.1, or 451 on a directory
    /// failure).
    pub async fn check_recipient(&self, recipient: &str) -> Result<(), Reply> {
        let destinations = match self.directory.resolve(recipient).await {
            Ok(Some(d)) => d,
            Ok(None) => return Err(no_such_user(recipient)),
            Err(e) => return Err(temporary_directory_failure(recipient, &e)),
        };
        let any_local = destinations
            .iter()
            .any(|d| matches!(d, Destination::Local { .. }));
        if any_local || (self.forwarding && !is_self_remote(&destinations, recipient)) {
            return Ok(());
        }
        Err(not_local(recipient, &destinations))
    }

    /// Delivers `message` to every recipient of `envelope`; one result per recipient, in
    /// order. Each successful result means the message is durably in the mailbox(es).
    pub async fn deliver(&self, envelope: &Envelope, message: &[u8]) -> Vec<RecipientResult> {
        let mut results = Vec::with_capacity(envelope.recipients.len());
        for recipient in &envelope.recipients {
            results.push(self.deliver_one(&envelope.sender, recipient, message).await);
        }
        results
    }

    /// Delivers `message` from `sender` (empty: null sender) to one envelope recipient.
    pub async fn deliver_one(
        &self,
        sender: &str,
        recipient: &str,
        message: &[u8],
    ) -> RecipientResult {
        self.deliver_content(sender, recipient, Content::Memory(message))
            .await
    }

    /// [`Delivery::deliver_one`] for a message in memory or in a file; a file is copied into
    /// the mailbox without being read whole.
    pub async fn deliver_content(
        &self,
        sender: &str,
        recipient: &str,
        message: Content<'_>,
    ) -> RecipientResult {
        if self.size_limit > 0 && message.len() > self.size_limit {
            let reply = Reply::new(
                552,
                [5, 3, 4],
                format!(
                    "message too big: {} bytes, limit {} bytes",
                    message.len(),
                    self.size_limit
                ),
            );
            log_refusal(recipient, None, &reply);
            return RecipientResult::failed(recipient, reply);
        }
        let destinations = match self.directory.resolve(recipient).await {
            Ok(Some(d)) => d,
            Ok(None) => {
                let reply = no_such_user(recipient);
                log_refusal(recipient, None, &reply);
                return RecipientResult::failed(recipient, reply);
            }
            Err(e) => {
                let reply = temporary_directory_failure(recipient, &e);
                log_refusal(recipient, None, &reply);
                return RecipientResult::failed(recipient, reply);
            }
        };
        if is_self_remote(&destinations, recipient) {
            // Not one of our domains: the MTA should never have handed it to us.
            let reply = not_local(recipient, &destinations);
            log_refusal(recipient, None, &reply);
            return RecipientResult::failed(recipient, reply);
        }

        let mut targets = Vec::with_capacity(destinations.len());
        for destination in destinations {
            let target = match destination {
                Destination::Remote(address) => self.forward(recipient, address),
                Destination::Local { user, detail } => {
                    let outcome = self
                        .deliver_to_user(sender, recipient, &user, detail.as_deref(), message)
                        .await;
                    TargetResult {
                        address: user.address,
                        outcome: outcome.0,
                        sieve: outcome.1,
                    }
                }
            };
            targets.push(target);
        }
        RecipientResult {
            recipient: recipient.to_string(),
            reply: summary(recipient, &targets),
            targets,
        }
    }

    fn forward(&self, recipient: &str, address: String) -> TargetResult {
        let outcome = if self.forwarding {
            tracing::info!("forward to=<{address}> orig_to=<{recipient}>: left to the queue");
            TargetOutcome::Forward
        } else {
            let reply = Reply::new(
                550,
                [5, 1, 1],
                format!("<{address}>: remote alias target; local delivery cannot forward"),
            );
            log_refusal(&address, Some(recipient), &reply);
            TargetOutcome::Failed(reply)
        };
        TargetResult {
            address,
            outcome,
            sieve: Vec::new(),
        }
    }

    /// Files one copy into `user`'s store (as the user's Sieve scripts say, if any); returns
    /// the outcome and what the scripts ask the caller to send.
    async fn deliver_to_user(
        &self,
        sender: &str,
        recipient: &str,
        user: &User,
        detail: Option<&str>,
        message: Content<'_>,
    ) -> (TargetOutcome, Vec<SieveAction>) {
        let sieve = sieve_delivery::scripts_for(&self.scripts, user);
        let mut outbound = Vec::new();
        let outcome = self
            .file_for_user(
                sender,
                recipient,
                user,
                detail,
                message,
                sieve,
                &mut outbound,
            )
            .await;
        (outcome, outbound)
    }

    #[allow(clippy::too_many_arguments)]
    async fn file_for_user(
        &self,
        sender: &str,
        recipient: &str,
        user: &User,
        detail: Option<&str>,
        message: Content<'_>,
        sieve: Option<Vec<crate::sieve::NamedScript>>,
        outbound: &mut Vec<SieveAction>,
    ) -> TargetOutcome {
        let to = &user.address;
        let orig = (!recipient.eq_ignore_ascii_case(to)).then_some(recipient);
        let fail = |reply: Reply| {
            log_refusal(to, orig, &reply);
            TargetOutcome::Failed(reply)
        };
        if self.loop_check && already_delivered_to(message.head(), recipient) {
            return fail(Reply::new(
                554,
                [5, 4, 6],
                format!("<{recipient}>: mail forwarding loop (already delivered here)"),
            ));
        }
        let store = match self.store.user(&user.localpart, &user.domain).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(to = %to, error = %e, "cannot open the user's store");
                return fail(store_failure(recipient, &e));
            }
        };
        let copy = match message {
            Content::Memory(m) => Copy::Memory(with_trace_headers(sender, recipient, m)),
            Content::File(f) => Copy::File {
                prefix: trace_headers(sender, recipient, f.head(), 0),
                body: f,
            },
        };
        // Quarantined by the MTA (DMARC): the Junk folder, found like a `+detail` folder that
        // may always take it.
        let junk_only = [JUNK.to_string()];
        let (detail, plus_folders) = if is_quarantined(message.head()) {
            (Some(JUNK), &junk_only[..])
        } else {
            (detail, &self.plus_folders[..])
        };
        if self.duplicate_check
            && let Some((mailbox, uid)) = find_copy(&store, detail, &copy, plus_folders).await
        {
            tracing::info!(
                "delivered to=<{to}> mailbox={mailbox} uid={uid} size={}: already filed before a restart",
                copy.len()
            );
            return TargetOutcome::Delivered { mailbox, uid };
        }
        if user.quota_bytes > 0
            && let Err(e) = store
                .check_quota(Some(user.quota_bytes), None, copy.len())
                .await
        {
            if !matches!(e, StoreError::OverQuota(_)) {
                tracing::error!(to = %to, error = %e, "quota check failed");
            }
            return fail(store_failure(recipient, &e));
        }
        let mut mailbox = match detail {
            Some(d) if !d.is_empty() => detail_folder(&store, d, plus_folders).await,
            _ => INBOX.to_string(),
        };
        if let Some(scripts) = sieve {
            let envelope = SieveEnvelope {
                from: sender.to_string(),
                to: to.clone(),
                orig_to: recipient.to_string(),
                auth_user: None,
            };
            let outcome =
                sieve_delivery::run(&self.scripts, &scripts, user, envelope, message, &store).await;
            outbound.extend(outcome.outbound().cloned());
            let copy = sieve_delivery::edited_copy(copy, outcome.header.as_deref(), to);
            let mut first = None;
            for (target, flags, create) in sieve_delivery::filings(&outcome, &mailbox) {
                match sieve_delivery::file_into(&store, &copy, &target, &flags, create).await {
                    Ok((filed, uid)) => {
                        tracing::info!(
                            "delivered to=<{to}> mailbox={filed} uid={uid} size={} (sieve)",
                            copy.len()
                        );
                        hermod_common::metrics::inc(
                            hermod_common::metrics::Counter::MessagesDelivered,
                        );
                        first.get_or_insert(TargetOutcome::Delivered {
                            mailbox: filed,
                            uid,
                        });
                    }
                    Err(e) => {
                        tracing::error!(to = %to, mailbox = %target, error = %e, "store write failed");
                        return fail(store_failure(recipient, &e));
                    }
                }
            }
            return first.unwrap_or_else(|| {
                tracing::info!("filtered to=<{to}> by sieve: not filed");
                TargetOutcome::Filtered
            });
        }
        let mut result = copy.file_into(&store, &mailbox).await;
        if matches!(result, Err(StoreError::NoSuchMailbox(_))) && mailbox != INBOX {
            // The folder went away between the lookup and the write.
            mailbox = INBOX.to_string();
            result = copy.file_into(&store, &mailbox).await;
        }
        match result {
            Ok(uid) => {
                match orig {
                    Some(orig) => tracing::info!(
                        "delivered to=<{to}> orig_to=<{orig}> mailbox={mailbox} uid={uid} size={}",
                        copy.len()
                    ),
                    None => tracing::info!(
                        "delivered to=<{to}> mailbox={mailbox} uid={uid} size={}",
                        copy.len()
                    ),
                }
                hermod_common::metrics::inc(hermod_common::metrics::Counter::MessagesDelivered);
                TargetOutcome::Delivered { mailbox, uid }
            }
            Err(e) => {
                tracing::error!(to = %to, mailbox = %mailbox, error = %e, "store write failed");
                fail(store_failure(recipient, &e))
            }
        }
    }
}

/// The message as it goes into the mailbox: the trace headers and the message.
pub(crate) enum Copy<'a> {
    Memory(Vec<u8>),
    /// `prefix` then the file: the store copies the file, never holding it whole.
    File {
        prefix: Vec<u8>,
        body: &'a FileContent,
    },
}

/// How much of a stored message and a file message is compared at a time when looking for
/// a copy filed before a restart.
const COMPARE_CHUNK: u64 = 1024 * 1024;

impl Copy<'_> {
    pub(crate) fn len(&self) -> u64 {
        match self {
            Copy::Memory(m) => m.len() as u64,
            Copy::File { prefix, body } => prefix.len() as u64 + body.len(),
        }
    }

    pub(crate) async fn file_into(
        &self,
        store: &UserStore,
        mailbox: &str,
    ) -> Result<Uid, StoreError> {
        match self {
            Copy::Memory(m) => store.deliver(mailbox, m).await,
            Copy::File { prefix, body } => store.deliver_file(mailbox, prefix, body.path()).await,
        }
    }

    /// Whether message `uid` of `mailbox` has exactly these bytes; a file is compared a
    /// chunk at a time, so memory stays bounded and a different message is told at once.
    async fn is_stored_as(&self, store: &UserStore, mailbox: &str, uid: Uid) -> bool {
        let (prefix, body) = match self {
            Copy::Memory(m) => {
                // One byte more than ours tells a longer stored message without reading it all.
                let n = m.len() as u64;
                return matches!(store.read_range(mailbox, uid, 0..n + 1).await, Ok(stored) if stored == *m);
            }
            Copy::File { prefix, body } => (prefix, body),
        };
        let p = prefix.len() as u64;
        let total = self.len();
        // One byte past the end must be missing: the stored message is not longer.
        match store.read_range(mailbox, uid, total..total + 1).await {
            Ok(rest) if rest.is_empty() => {}
            _ => return false,
        }
        match store.read_range(mailbox, uid, 0..p).await {
            Ok(stored) if stored == *prefix => {}
            _ => return false,
        }
        let Ok(file) = std::fs::File::open(body.path()) else {
            return false;
        };
        // An mbox unquotes from the message's start for every range it reads: pieces of an
        // eighth of the message (at least COMPARE_CHUNK) bound that to eight passes.
        let chunk = COMPARE_CHUNK.max(body.len() / 8 + 1);
        let mut offset = 0;
        while offset < body.len() {
            let n = chunk.min(body.len() - offset);
            let Ok(stored) = store
                .read_range(mailbox, uid, p + offset..p + offset + n)
                .await
            else {
                return false;
            };
            let mut here = vec![0u8; n as usize];
            if std::os::unix::fs::FileExt::read_exact_at(&file, &mut here, offset).is_err()
                || stored != here
            {
                return false;
            }
            offset += n;
        }
        true
    }
}

/// A message with exactly the bytes of `copy` among the newest ones of the mailbox a delivery
/// goes to (the `detail` folder or INBOX).
async fn find_copy(
    store: &UserStore,
    detail: Option<&str>,
    copy: &Copy<'_>,
    plus_folders: &[String],
) -> Option<(String, Uid)> {
    let mailbox = match detail {
        Some(d) if !d.is_empty() => detail_folder(store, d, plus_folders).await,
        _ => INBOX.to_string(),
    };
    let status = store.status(&mailbox).await.ok()?;
    let newest = status.uidnext.saturating_sub(1);
    let oldest = status.uidnext.saturating_sub(DUPLICATE_WINDOW).max(1);
    for uid in (oldest..=newest).rev() {
        if copy.is_stored_as(store, &mailbox, uid).await {
            return Some((mailbox, uid));
        }
    }
    None
}

/// The existing folder named like `detail` (case-insensitively) if `+detail` may file
/// there, else INBOX.
async fn detail_folder(store: &UserStore, detail: &str, plus_folders: &[String]) -> String {
    match store.list().await {
        Ok(list) => list
            .into_iter()
            .find(|m| {
                !m.noselect && m.name.eq_ignore_ascii_case(detail) && plus_allowed(m, plus_folders)
            })
            .map_or_else(|| INBOX.to_string(), |m| m.name),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list folders for +detail; using INBOX");
            INBOX.to_string()
        }
    }
}

/// Whether anyone on the internet may file mail into `folder` by writing to `user+folder@`.
/// Never into Sent, Drafts or Trash (by special use or by name): mail there looks written or
/// deleted by the user. Junk and Archive only when `allowed` names them; `*` in `allowed`
/// stands for every folder without a special use.
pub fn plus_allowed(folder: &MailboxInfo, allowed: &[String]) -> bool {
    let leaf = folder.name.rsplit('/').next().unwrap_or(&folder.name);
    let named = |names: &[&str]| names.iter().any(|n| leaf.eq_ignore_ascii_case(n));
    if matches!(
        folder.special_use,
        Some(SpecialUse::Sent | SpecialUse::Drafts | SpecialUse::Trash)
    ) || named(&[
        "Sent",
        "Sent Messages",
        "Sent Items",
        "Drafts",
        "Trash",
        "Deleted Messages",
        "Deleted Items",
    ]) {
        return false;
    }
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(&folder.name)) {
        return true;
    }
    allowed.iter().any(|a| a == "*")
        && folder.special_use.is_none()
        && !named(&["Junk", "Spam", "Archive", "Archives"])
}

/// True when the directory says the address is simply not in a local domain.
fn is_self_remote(destinations: &[Destination], recipient: &str) -> bool {
    matches!(destinations, [Destination::Remote(a)] if a.eq_ignore_ascii_case(recipient.trim()))
}

fn not_local(recipient: &str, destinations: &[Destination]) -> Reply {
    if is_self_remote(destinations, recipient) {
        Reply::new(
            550,
            [5, 1, 1],
            format!("<{recipient}>: not a local address; this server only delivers locally"),
        )
    } else {
        Reply::new(
            550,
            [5, 1, 1],
            format!("<{recipient}>: forwards off-site only; this server only delivers locally"),
        )
    }
}

/// One reply for the recipient out of its targets' outcomes (see [`RecipientResult::reply`]).
fn summary(recipient: &str, targets: &[TargetResult]) -> Reply {
    let failures: Vec<&Reply> = targets
        .iter()
        .filter_map(|t| match &t.outcome {
            TargetOutcome::Failed(r) => Some(r),
            _ => None,
        })
        .collect();
    if let Some(temporary) = failures.iter().find(|r| r.is_temporary()) {
        return (*temporary).clone();
    }
    let delivered = targets.len() - failures.len();
    match (delivered, failures.first()) {
        (0, Some(first)) => (*first).clone(),
        (0, None) => no_such_user(recipient),
        (_, None) => Reply::new(250, [2, 0, 0], format!("<{recipient}> delivered")),
        (n, Some(_)) => Reply::new(
            250,
            [2, 0, 0],
            format!(
                "<{recipient}> delivered to {n} of {} targets",
                targets.len()
            ),
        ),
    }
}

fn log_refusal(to: &str, orig: Option<&str>, reply: &Reply) {
    let status = if reply.is_temporary() {
        "deferred"
    } else {
        "refused"
    };
    match orig {
        Some(orig) => tracing::warn!("{status} to=<{to}> orig_to=<{orig}> reply=\"{reply}\""),
        None => tracing::warn!("{status} to=<{to}> reply=\"{reply}\""),
    }
}

/// Delivers with the context's directory and store: the in-process entry point of the MTA.
/// Remote alias targets come back as [`TargetOutcome::Forward`] for the queue.
pub async fn deliver(ctx: &Context, envelope: &Envelope, message: &[u8]) -> Vec<RecipientResult> {
    Delivery::from_context(ctx).deliver(envelope, message).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(outcome: TargetOutcome) -> TargetResult {
        TargetResult {
            address: "a@x".into(),
            outcome,
            sieve: Vec::new(),
        }
    }

    #[test]
    fn summary_prefers_retry_over_loss_and_success_over_partial_bounce() {
        let ok = || {
            target(TargetOutcome::Delivered {
                mailbox: "INBOX".into(),
                uid: 1,
            })
        };
        let temp = || target(TargetOutcome::Failed(Reply::new(451, [4, 2, 0], "busy")));
        let full = || target(TargetOutcome::Failed(Reply::new(552, [5, 2, 2], "full")));
        assert_eq!(summary("t@x", &[ok(), ok()]).code, 250);
        assert_eq!(summary("t@x", &[ok(), temp()]).code, 451);
        assert_eq!(summary("t@x", &[full(), temp()]).code, 451);
        assert_eq!(summary("t@x", &[ok(), full()]).code, 250);
        assert_eq!(summary("t@x", &[full()]).status, [5, 2, 2]);
        assert_eq!(summary("t@x", &[target(TargetOutcome::Forward)]).code, 250);
    }
}
