//! Sieve at delivery: which scripts run for a user (admin `before.d`, the user's active
//! script, admin `after.d`), the host the interpreter asks (mailboxes, includes, duplicate
//! records), and filing by the outcome: keep / fileinto with flags, `:create`, header edits.
//!
//! A user without scripts costs one failed open of `.active` (the admin listings are cached).
//! A script that does not compile, or fails at run time, never loses mail: the message goes
//! where it would have gone without Sieve, and one error line names the user and the script.

use hermod_common::User;
use hermod_common::store::{Flag, Flags, StoreError, Uid, UserStore};

use crate::content::Content;
use crate::delivery::Copy;
use crate::sieve::store::{Phase, ScriptStore};
use crate::sieve::{
    Action, NamedScript, Outcome, Script, SieveEnvelope, SieveHost, SieveMessage, execute,
};

/// The scripts to run for `user`, in order; `None` when there are none (the plain path).
pub(crate) fn scripts_for(scripts: &ScriptStore, user: &User) -> Option<Vec<NamedScript>> {
    let mut list = scripts.admin_scripts(Phase::Before);
    match scripts.active_script(&user.localpart, &user.domain) {
        Ok(Some(s)) => list.push(s),
        Ok(None) => {}
        Err(e) => {
            let name = scripts
                .active(&user.localpart, &user.domain)
                .ok()
                .flatten()
                .unwrap_or_default();
            tracing::error!(
                "sieve: to=<{}> script {name}: not run, mail goes to INBOX: {e}",
                user.address
            );
        }
    }
    list.extend(scripts.admin_scripts(Phase::After));
    (!list.is_empty()).then_some(list)
}

struct DeliveryHost<'a> {
    scripts: &'a ScriptStore,
    user: &'a User,
    mailboxes: Vec<String>,
}

impl SieveHost for DeliveryHost<'_> {
    fn include(&mut self, name: &str, global: bool) -> Result<Script, String> {
        let r = if global {
            self.scripts.global_script(name)
        } else {
            self.scripts
                .personal_script(&self.user.localpart, &self.user.domain, name)
        };
        r.map_err(|e| e.to_string())
    }

    fn mailbox_exists(&self, name: &str) -> bool {
        self.mailboxes.iter().any(|m| {
            m == name || (m.eq_ignore_ascii_case("INBOX") && name.eq_ignore_ascii_case("INBOX"))
        })
    }

    fn duplicate(&mut self, id: &str, period: u64, last: bool) -> bool {
        let now = now();
        match self.scripts.duplicate(
            &self.user.localpart,
            &self.user.domain,
            id,
            period,
            last,
            now,
        ) {
            Ok(seen) => seen,
            Err(e) => {
                tracing::error!("sieve: to=<{}> duplicate record: {e}", self.user.address);
                false
            }
        }
    }

    fn now(&self) -> i64 {
        now()
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Runs `scripts` on the message for `user` and logs the runtime errors.
pub(crate) async fn run(
    scripts_store: &ScriptStore,
    scripts: &[NamedScript],
    user: &User,
    envelope: SieveEnvelope,
    message: Content<'_>,
    store: &UserStore,
) -> Outcome {
    // The folder list only for scripts that can ask about folders (it costs an index query).
    let asks = scripts.iter().any(|s| {
        s.script
            .requires()
            .iter()
            .any(|r| r == "mailbox" || r == "include")
    });
    let mailboxes = if asks {
        match store.list().await {
            Ok(list) => list.into_iter().map(|m| m.name).collect(),
            Err(e) => {
                tracing::warn!("sieve: to=<{}> cannot list folders: {e}", user.address);
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    let mut host = DeliveryHost {
        scripts: scripts_store,
        user,
        mailboxes,
    };
    let view = SieveMessage::new(message.head(), message.len());
    let outcome = execute(scripts, &view, &envelope, &mut host);
    for e in &outcome.errors {
        tracing::error!(
            "sieve: to=<{}> {}",
            user.address,
            e.replace(['\r', '\n'], " ")
        );
    }
    outcome
}

/// The copy with the header section edited by the scripts. A message in a file keeps its
/// header (it is never read whole); that is logged.
pub(crate) fn edited_copy<'a>(copy: Copy<'a>, header: Option<&[u8]>, to: &str) -> Copy<'a> {
    let Some(header) = header else { return copy };
    match copy {
        Copy::Memory(bytes) => {
            // The trace headers were prepended to the message: the edited header replaces
            // the original one after them.
            let (prefix_len, body_start) = trace_and_body(&bytes);
            let mut out = Vec::with_capacity(bytes.len() + header.len());
            out.extend_from_slice(&bytes[..prefix_len]);
            out.extend_from_slice(header);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&bytes[body_start..]);
            Copy::Memory(out)
        }
        file @ Copy::File { .. } => {
            tracing::warn!("sieve: to=<{to}> header edits not applied to a spooled message");
            file
        }
    }
}

/// In a copy that starts with `Return-Path:` and `Delivered-To:`: where the message's own
/// header starts and where its body starts.
fn trace_and_body(bytes: &[u8]) -> (usize, usize) {
    let mut pos = 0;
    for _ in 0..2 {
        match bytes[pos..].iter().position(|b| *b == b'\n') {
            Some(i) => pos += i + 1,
            None => return (bytes.len(), bytes.len()),
        }
    }
    (pos, pos + crate::sieve::body_start(&bytes[pos..]))
}

/// System flags and keywords of a Sieve flag list; keywords that IMAP could not show are
/// dropped.
fn store_flags(flags: &[String]) -> (Flags, Vec<String>) {
    let mut system = Flags::EMPTY;
    let mut keywords = Vec::new();
    for f in flags {
        if let Some(flag) = Flag::from_imap(f) {
            system.insert(flag);
        } else if !f.starts_with('\\')
            && f.len() <= 64
            && f.bytes()
                .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b))
        {
            keywords.push(f.clone());
        }
    }
    (system, keywords)
}

/// Files one copy into `mailbox` with `flags`; a mailbox that does not exist is created
/// with `create`, else the copy goes to INBOX. Returns where it went.
pub(crate) async fn file_into(
    store: &UserStore,
    copy: &Copy<'_>,
    mailbox: &str,
    flags: &[String],
    create: bool,
) -> Result<(String, Uid), StoreError> {
    let (system, keywords) = store_flags(flags);
    let first = write(store, copy, mailbox, system, &keywords).await;
    match first {
        Err(StoreError::NoSuchMailbox(_)) if create => {
            match store.create(mailbox, None).await {
                Ok(()) | Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => {
                    tracing::warn!("sieve: cannot create folder {mailbox:?}: {e}; using INBOX");
                    return write(store, copy, "INBOX", system, &keywords)
                        .await
                        .map(|uid| ("INBOX".to_string(), uid));
                }
            }
            match write(store, copy, mailbox, system, &keywords).await {
                Ok(uid) => Ok((mailbox.to_string(), uid)),
                Err(StoreError::NoSuchMailbox(_) | StoreError::InvalidName(_)) => {
                    write(store, copy, "INBOX", system, &keywords)
                        .await
                        .map(|uid| ("INBOX".to_string(), uid))
                }
                Err(e) => Err(e),
            }
        }
        Err(StoreError::NoSuchMailbox(_) | StoreError::InvalidName(_) | StoreError::Cannot(_))
            if !mailbox.eq_ignore_ascii_case("INBOX") =>
        {
            tracing::info!("sieve: folder {mailbox:?} does not exist; filing into INBOX");
            write(store, copy, "INBOX", system, &keywords)
                .await
                .map(|uid| ("INBOX".to_string(), uid))
        }
        Ok(uid) => Ok((mailbox.to_string(), uid)),
        Err(e) => Err(e),
    }
}

async fn write(
    store: &UserStore,
    copy: &Copy<'_>,
    mailbox: &str,
    flags: Flags,
    keywords: &[String],
) -> Result<Uid, StoreError> {
    if flags.is_empty() && keywords.is_empty() {
        return copy.file_into(store, mailbox).await;
    }
    match copy {
        Copy::Memory(m) => store
            .append(mailbox, m, flags, keywords, None)
            .await
            .map(|a| a.uid),
        Copy::File { prefix, body } => {
            store
                .deliver_file_flagged(mailbox, prefix, body.path(), flags, keywords)
                .await
        }
    }
}

/// Where each filing action of the outcome goes: (mailbox, flags, create). `Keep` files
/// into `default_mailbox` (INBOX, the `+detail` folder or Junk, as without Sieve).
pub(crate) fn filings(
    outcome: &Outcome,
    default_mailbox: &str,
) -> Vec<(String, Vec<String>, bool)> {
    outcome
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Keep { flags } => Some((default_mailbox.to_string(), flags.clone(), false)),
            Action::FileInto {
                mailbox,
                flags,
                create,
            } => Some((mailbox.clone(), flags.clone(), *create)),
            _ => None,
        })
        .collect()
}
