//! Vacation replies (RFC 5230, RFC 6131) by the rules of RFC 3834: never to the null sender,
//! to mailing lists, to bulk or automatically submitted mail, to the user's own addresses,
//! or to mail not addressed to the user; at most one reply per sender (and `:handle`) per
//! period, remembered per user in a bounded file; sent from `<>` with
//! `Auto-Submitted: auto-replied`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;

/// What a `vacation` action asks for (from the interpreter's action).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VacationRequest {
    pub reason: String,
    /// `reason` is a MIME entity (its own header fields, then its body).
    pub mime: bool,
    pub subject: Option<String>,
    pub from: Option<String>,
    /// `:addresses`: the user's other addresses.
    pub addresses: Vec<String>,
    pub handle: String,
    pub period_seconds: u64,
}

/// The message being answered.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The envelope sender: whom the reply goes to.
    pub sender: &'a str,
    /// The header section (or the start of the message).
    pub header: &'a [u8],
    /// The user's address, and the recipient as addressed (an alias of it, or the same).
    pub user: &'a str,
    pub orig_recipient: &'a str,
}

/// Why no reply is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    NullSender,
    SystemSender,
    AutoSubmitted,
    MailingList,
    Bulk,
    OwnAddress,
    NotAddressedToUser,
    AlreadyReplied,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::NullSender => "null sender",
            Skip::SystemSender => "sender is a list or system address",
            Skip::AutoSubmitted => "message is auto-submitted",
            Skip::MailingList => "message is from a mailing list",
            Skip::Bulk => "message has Precedence bulk, list or junk",
            Skip::OwnAddress => "sender is the user",
            Skip::NotAddressedToUser => "the user is not in To, Cc or Bcc",
            Skip::AlreadyReplied => "already replied to this sender within the period",
        }
    }
}

/// Unfolded header fields of a header section: (name, value), linear in the input.
fn fields(header: &[u8]) -> Vec<(String, String)> {
    let end = header
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .or_else(|| header.windows(2).position(|w| w == b"\n\n").map(|p| p + 1))
        .unwrap_or(header.len());
    let text = String::from_utf8_lossy(&header[..end]);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    out
}

fn same_address(a: &str, b: &str) -> bool {
    let a = a.trim().trim_start_matches('<').trim_end_matches('>');
    let b = b.trim().trim_start_matches('<').trim_end_matches('>');
    !a.is_empty() && a.eq_ignore_ascii_case(b)
}

/// The addresses in an address-list header value (`"Name" <a@b>, c@d`), roughly but linearly:
/// what is in angle brackets, else the words with an `@`.
fn addresses_in(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in value.split(',') {
        match (part.find('<'), part.rfind('>')) {
            (Some(a), Some(b)) if a < b => out.push(part[a + 1..b].trim().to_string()),
            _ => out.extend(
                part.split_whitespace()
                    .filter(|w| w.contains('@'))
                    .map(|w| {
                        w.trim_matches(|c| c == '"' || c == '(' || c == ')')
                            .to_string()
                    }),
            ),
        }
    }
    out
}

/// Whether RFC 3834 and RFC 5230 section 4 allow a reply to this message (the per-sender
/// record is checked apart, by [`VacationState::record`]).
pub fn check(request: &VacationRequest, incoming: &Incoming<'_>) -> Result<(), Skip> {
    let sender = incoming.sender.trim();
    if sender.is_empty() {
        return Err(Skip::NullSender);
    }
    let local = sender
        .rsplit_once('@')
        .map_or(sender, |(l, _)| l)
        .to_ascii_lowercase();
    if local.starts_with("owner-")
        || local.ends_with("-request")
        || local.ends_with("-owner")
        || matches!(
            local.as_str(),
            "mailer-daemon" | "listserv" | "majordomo" | "postmaster" | "noreply" | "no-reply"
        )
    {
        return Err(Skip::SystemSender);
    }
    let mut own: Vec<&str> = vec![incoming.user, incoming.orig_recipient];
    own.extend(request.addresses.iter().map(String::as_str));
    if own.iter().any(|a| same_address(a, sender)) {
        return Err(Skip::OwnAddress);
    }
    let mut addressed = false;
    for (name, value) in fields(incoming.header) {
        match name.as_str() {
            "auto-submitted" => {
                let kind = value.split(';').next().unwrap_or("").trim();
                if !kind.eq_ignore_ascii_case("no") {
                    return Err(Skip::AutoSubmitted);
                }
            }
            "list-id" | "list-help" | "list-subscribe" | "list-unsubscribe" | "list-post"
            | "list-owner" | "list-archive" => return Err(Skip::MailingList),
            "precedence" => {
                let v = value.to_ascii_lowercase();
                if matches!(v.trim(), "bulk" | "list" | "junk") {
                    return Err(Skip::Bulk);
                }
            }
            "to" | "cc" | "bcc" | "resent-to" | "resent-cc" | "resent-bcc" => {
                addressed |= addresses_in(&value)
                    .iter()
                    .any(|a| own.iter().any(|o| same_address(o, a)));
            }
            _ => {}
        }
    }
    if !addressed {
        return Err(Skip::NotAddressedToUser);
    }
    Ok(())
}

/// Header text without line breaks (values from scripts and messages go into our header).
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// RFC 2047 for a non-ASCII header text.
fn encode_text(s: &str) -> String {
    if s.is_ascii() {
        s.to_string()
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
        )
    }
}

/// The reply message (RFC 5230 section 5, RFC 3834 section 3).
pub fn compose(
    request: &VacationRequest,
    incoming: &Incoming<'_>,
    hostname: &str,
    now: i64,
) -> Vec<u8> {
    let parsed = mail_parser::MessageParser::new().parse_headers(incoming.header);
    let original_subject = parsed
        .as_ref()
        .and_then(|m| m.subject())
        .map(one_line)
        .unwrap_or_default();
    let message_id = parsed.as_ref().and_then(|m| m.message_id()).map(one_line);
    let references: Vec<String> = parsed
        .as_ref()
        .and_then(|m| {
            m.references()
                .as_text_list()
                .map(|l| l.iter().map(|r| one_line(r)).collect())
        })
        .or_else(|| {
            parsed
                .as_ref()
                .and_then(|m| m.references().as_text())
                .map(|r| vec![one_line(r)])
        })
        .unwrap_or_default();
    let subject = match &request.subject {
        Some(s) => one_line(s),
        None => format!("Auto: {original_subject}"),
    };
    let from = match &request.from {
        Some(f) if !one_line(f).is_empty() => one_line(f),
        _ => incoming.user.to_string(),
    };
    let mut out = String::new();
    out.push_str(&format!("From: {from}\r\n"));
    out.push_str(&format!("To: <{}>\r\n", one_line(incoming.sender)));
    out.push_str(&format!("Subject: {}\r\n", encode_text(&subject)));
    out.push_str(&format!(
        "Date: {}\r\n",
        crate::session::message::rfc5322_date(now)
    ));
    out.push_str(&format!(
        "Message-ID: <{:032x}@{hostname}>\r\n",
        rand::random::<u128>()
    ));
    if let Some(id) = &message_id {
        out.push_str(&format!("In-Reply-To: <{id}>\r\n"));
        let mut refs: Vec<String> = references.iter().map(|r| format!("<{r}>")).collect();
        refs.push(format!("<{id}>"));
        out.push_str(&format!("References: {}\r\n", refs.join(" ")));
    }
    out.push_str("Auto-Submitted: auto-replied (vacation)\r\n");
    out.push_str("MIME-Version: 1.0\r\n");
    let reason = request.reason.replace("\r\n", "\n").replace('\n', "\r\n");
    if request.mime {
        // The reason carries its own Content-Type and the rest.
        out.push_str(&reason);
    } else {
        out.push_str("Content-Type: text/plain; charset=utf-8\r\n");
        out.push_str("Content-Transfer-Encoding: 8bit\r\n\r\n");
        out.push_str(&reason);
    }
    if !out.ends_with("\r\n") {
        out.push_str("\r\n");
    }
    out.into_bytes()
}

/// Serialises the read-modify-write of state files in this process.
static STATE_LOCK: Mutex<()> = Mutex::new(());

/// The per-user record of replies: `<data_dir>/sieve/<domain>/<localpart>/.vacation`, one
/// line per (sender, handle) with the time its period ends.
pub struct VacationState {
    path: PathBuf,
    max_entries: usize,
}

impl VacationState {
    pub fn new(
        data_dir: &Path,
        localpart: &str,
        domain: &str,
        max_entries: usize,
    ) -> VacationState {
        VacationState {
            path: data_dir
                .join("sieve")
                .join(domain.to_ascii_lowercase())
                .join(localpart)
                .join(".vacation"),
            max_entries: max_entries.max(1),
        }
    }

    fn key(sender: &str, handle: &str) -> String {
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            format!("{}\0{handle}", sender.to_ascii_lowercase()).as_bytes(),
        );
        digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// If no reply went to `sender` for `handle` within the period, record one now (until
    /// `now + period`) and return true; else false. The file keeps at most `max_entries`
    /// records: expired ones go first, then those ending soonest.
    pub fn record(
        &self,
        sender: &str,
        handle: &str,
        period: u64,
        now: SystemTime,
    ) -> std::io::Result<bool> {
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let key = Self::key(sender, handle);
        let _guard = STATE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut entries: Vec<(u64, String)> = text
            .lines()
            .filter_map(|l| {
                let (t, k) = l.split_once(' ')?;
                Some((t.parse().ok()?, k.to_string()))
            })
            .filter(|(until, _)| *until > now)
            .collect();
        if entries.iter().any(|(_, k)| *k == key) {
            return Ok(false);
        }
        entries.push((now.saturating_add(period), key));
        if entries.len() > self.max_entries {
            entries.sort_by_key(|(until, _)| std::cmp::Reverse(*until));
            entries.truncate(self.max_entries);
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".vacation.{}.tmp", std::process::id()));
        let body: String = entries.iter().map(|(t, k)| format!("{t} {k}\n")).collect();
        std::fs::write(&tmp, body)?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn incoming<'a>(sender: &'a str, header: &'a [u8]) -> Incoming<'a> {
        Incoming {
            sender,
            header,
            user: "alice@example.org",
            orig_recipient: "alice@example.org",
        }
    }

    #[test]
    fn rfc3834_rules_decide_who_gets_a_reply() {
        let r = VacationRequest::default();
        let plain = b"From: Bob <bob@remote.test>\r\nTo: Alice <alice@example.org>\r\nSubject: hi\r\n\r\nbody\r\n";
        assert_eq!(check(&r, &incoming("bob@remote.test", plain)), Ok(()));
        assert_eq!(check(&r, &incoming("", plain)), Err(Skip::NullSender));
        assert_eq!(
            check(&r, &incoming("owner-list@remote.test", plain)),
            Err(Skip::SystemSender)
        );
        assert_eq!(
            check(&r, &incoming("MAILER-DAEMON@remote.test", plain)),
            Err(Skip::SystemSender)
        );
        assert_eq!(
            check(&r, &incoming("alice@example.org", plain)),
            Err(Skip::OwnAddress)
        );
        let with = |extra: &str| {
            format!("To: alice@example.org\r\n{extra}\r\nSubject: x\r\n\r\nbody\r\n").into_bytes()
        };
        let list = with("List-Id: <dev.lists.test>");
        assert_eq!(
            check(&r, &incoming("bob@remote.test", &list)),
            Err(Skip::MailingList)
        );
        let bulk = with("Precedence: bulk");
        assert_eq!(
            check(&r, &incoming("bob@remote.test", &bulk)),
            Err(Skip::Bulk)
        );
        let auto = with("Auto-Submitted: auto-replied");
        assert_eq!(
            check(&r, &incoming("bob@remote.test", &auto)),
            Err(Skip::AutoSubmitted)
        );
        let not_auto = with("Auto-Submitted: no");
        assert_eq!(check(&r, &incoming("bob@remote.test", &not_auto)), Ok(()));
        let bcc = b"To: someone@else.test\r\n\r\n";
        assert_eq!(
            check(&r, &incoming("bob@remote.test", bcc)),
            Err(Skip::NotAddressedToUser)
        );
        let other = VacationRequest {
            addresses: vec!["someone@else.test".into()],
            ..VacationRequest::default()
        };
        assert_eq!(check(&other, &incoming("bob@remote.test", bcc)), Ok(()));
    }

    #[test]
    fn the_reply_answers_the_message() {
        let r = VacationRequest {
            reason: "I am away.\nBack soon.".into(),
            ..VacationRequest::default()
        };
        let header = b"From: bob@remote.test\r\nTo: alice@example.org\r\nSubject: Lunch?\r\nMessage-ID: <m1@remote.test>\r\nReferences: <m0@remote.test>\r\n\r\n";
        let reply = compose(
            &r,
            &incoming("bob@remote.test", header),
            "mx.example.org",
            1_700_000_000,
        );
        let text = String::from_utf8(reply).unwrap();
        for expected in [
            "From: alice@example.org\r\n",
            "To: <bob@remote.test>\r\n",
            "Subject: Auto: Lunch?\r\n",
            "In-Reply-To: <m1@remote.test>\r\n",
            "References: <m0@remote.test> <m1@remote.test>\r\n",
            "Auto-Submitted: auto-replied (vacation)\r\n",
            "\r\n\r\nI am away.\r\nBack soon.\r\n",
        ] {
            assert!(text.contains(expected), "{expected:?} in {text}");
        }
        let custom = VacationRequest {
            subject: Some("Out of office\r\nBcc: evil@x".into()),
            from: Some("Alice <alice@example.org>".into()),
            ..r
        };
        let text = String::from_utf8(compose(
            &custom,
            &incoming("bob@remote.test", header),
            "h",
            0,
        ))
        .unwrap();
        assert!(
            text.contains("Subject: Out of office  Bcc: evil@x\r\n"),
            "{text}"
        );
        assert!(text.contains("From: Alice <alice@example.org>\r\n"));
    }

    #[test]
    fn one_reply_per_sender_per_period_with_bounded_state() {
        let tmp = tempfile::tempdir().unwrap();
        let state = VacationState::new(tmp.path(), "alice", "example.org", 3);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = 86_400;
        assert!(state.record("bob@remote.test", "h", day, t0).unwrap());
        assert!(
            !state
                .record("BOB@remote.test", "h", day, t0 + Duration::from_secs(60))
                .unwrap()
        );
        // Another handle (another vacation script) is another reply.
        assert!(state.record("bob@remote.test", "other", day, t0).unwrap());
        // After the period, a new reply.
        assert!(
            state
                .record(
                    "bob@remote.test",
                    "h",
                    day,
                    t0 + Duration::from_secs(day + 1)
                )
                .unwrap()
        );
        for i in 0..10 {
            assert!(
                state
                    .record(&format!("s{i}@remote.test"), "h", day, t0)
                    .unwrap()
            );
        }
        let lines = std::fs::read_to_string(&state.path)
            .unwrap()
            .lines()
            .count();
        assert!(lines <= 3, "{lines} records kept");
    }
}
