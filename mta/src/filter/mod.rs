//! Filters against spam: rspamd over its HTTP protocol at the end of DATA (the `[spam]`
//! section) and the screening of port 25 clients at connect (`[screen]`).
//!
//! - [`rspamd`]: the `/checkv2` client and its verdicts.
//! - [`headers`]: the header edits a verdict asks for.
//! - [`screen`]: DNS lists, the pre-greeting test, the allow list ([`screen::Screen::admit`],
//!   called by the socket loop before the greeting).
//! - [`learn`]: Junk that learns: IMAP moves into and out of Junk, fed to rspamd's controller.
//! - [`http`]: the one HTTP exchange these need; [`milter`]: the milter wire format.
//!
//! The SMTP session reaches this module through its backend only:
//! [`SpamFilter::scans`] (must a spooled message be read back for the filter?) and
//! [`SpamFilter::check`] (the verdict, applied) at the end of DATA, after mail authentication.
//! Spam is not refused silently: a verdict that lets the message in marks it with the
//! quarantine field, so the MDA files it into the recipient's Junk (as for DMARC quarantine).

pub mod headers;
pub mod http;
pub mod learn;
pub mod milter;
pub mod rspamd;
pub mod screen;

use std::time::Duration;

use hermod_common::Config;
use hermod_common::config::{FilterFailure, MilterDefault, SpamConfig};
use hermod_common::log_escape;
use hyper::body::Bytes;

use crate::auth::results::QUARANTINE_FIELD;
use crate::auth::{MessageFacts, MessageOutcome};
use crate::session::Reply;
use rspamd::{Action, Verdict};

#[derive(Debug, thiserror::Error)]
#[error("spam filter setup: {0}")]
pub struct FilterSetupError(String);

/// The content filters of one daemon.
pub struct SpamFilter {
    config: SpamConfig,
    hostname: String,
    rspamd: Option<rspamd::Client>,
    milters: Vec<milter::client::MilterAddress>,
}

impl SpamFilter {
    pub fn new(config: &Config) -> Result<Self, FilterSetupError> {
        let spam = config.spam.clone();
        let rspamd = match &spam.rspamd_url {
            Some(url) => Some(
                rspamd::Client::new(url, Duration::from_secs(spam.rspamd_timeout.max(1)))
                    .map_err(FilterSetupError)?,
            ),
            None => None,
        };
        let milters = spam
            .smtpd_milters
            .iter()
            .map(|m| m.parse())
            .collect::<Result<Vec<_>, String>>()
            .map_err(FilterSetupError)?;
        Ok(SpamFilter {
            config: spam,
            hostname: config.myhostname.clone(),
            rspamd,
            milters,
        })
    }

    /// Whether [`SpamFilter::check`] sends this message to a filter.
    pub fn scans(&self, facts: &MessageFacts) -> bool {
        (self.rspamd.is_some() || !self.milters.is_empty())
            && (!facts.authenticated || self.config.scan_authenticated)
            && u64::try_from(facts.size).unwrap_or(u64::MAX) <= self.config.max_scan_size
    }

    /// The filters' verdicts on `message` (our trace fields first), applied: refused, or
    /// accepted with the filters' changes and, for spam, the quarantine mark. rspamd first,
    /// then each milter in order.
    pub async fn check(&self, facts: &MessageFacts, message: Vec<u8>) -> MessageOutcome {
        if !self.scans(facts) {
            if (self.rspamd.is_some() || !self.milters.is_empty())
                && (!facts.authenticated || self.config.scan_authenticated)
            {
                tracing::info!(queue_id = %facts.queue_id, size = facts.size,
                    "not scanned (bigger than max_scan_size)");
            }
            return MessageOutcome::Accept(message);
        }
        let mut message = message;
        if let Some(client) = &self.rspamd {
            match self.check_rspamd(client, facts, message).await {
                MessageOutcome::Accept(m) => message = m,
                other => return other,
            }
        }
        for address in &self.milters {
            match self.check_milter(address, facts, message).await {
                MessageOutcome::Accept(m) => message = m,
                other => return other,
            }
        }
        MessageOutcome::Accept(message)
    }

    async fn check_milter(
        &self,
        address: &milter::client::MilterAddress,
        facts: &MessageFacts,
        message: Vec<u8>,
    ) -> MessageOutcome {
        use milter::client::{Change, Transaction, Verdict};
        let tx = Transaction {
            ip: facts.ip,
            client_name: "unknown",
            helo: &facts.helo,
            sender: &facts.sender,
            recipients: &facts.recipients,
            queue_id: &facts.queue_id,
            hostname: &self.hostname,
            message: &message,
        };
        let timeout = Duration::from_secs(self.config.milter_timeout.max(1));
        let from = log_escape::escape(&facts.sender);
        let name = address.to_string();
        let log = |outcome: &str| {
            tracing::info!(queue_id = %facts.queue_id, client = %facts.ip, %from,
                filter = %name, "milter: {outcome}");
        };
        match milter::client::check(address, timeout, &tx).await {
            Ok(Verdict::Accept { changes, body }) => {
                let mut quarantine = false;
                for change in &changes {
                    match change {
                        Change::Quarantine(reason) => {
                            log(&format!("quarantine ({}): Junk", reason.escape_debug()));
                            quarantine = true;
                        }
                        Change::ChangeFrom(_) | Change::AddRcpt(_) | Change::DeleteRcpt(_) => {
                            tracing::warn!(queue_id = %facts.queue_id, filter = %name, ?change,
                                "milter: envelope changes are not made (not supported yet)");
                        }
                        _ => {}
                    }
                }
                let mut changed = milter::apply::apply(&message, &changes, body.as_deref());
                if quarantine {
                    let mark = format!("{QUARANTINE_FIELD}: milter\r\n");
                    changed = headers::apply(
                        &changed,
                        facts.trace_len,
                        &headers::HeaderEdits::default(),
                        mark.as_bytes(),
                    );
                }
                MessageOutcome::Accept(changed)
            }
            Ok(Verdict::Reject(text)) => {
                let reply = milter_reply(text.as_deref(), 550, "Message rejected by a filter");
                log(&format!("refused: {}", reply.to_line()));
                MessageOutcome::Refuse(reply)
            }
            Ok(Verdict::Tempfail(text)) => {
                let reply = milter_reply(text.as_deref(), 451, "Try again later");
                log(&format!("deferred: {}", reply.to_line()));
                MessageOutcome::Refuse(reply)
            }
            Ok(Verdict::Discard) => {
                log("discard");
                MessageOutcome::Discard
            }
            Err(e) => {
                tracing::warn!(queue_id = %facts.queue_id, filter = %name, error = %e,
                    action = self.config.milter_default_action.name(), "milter failed");
                match self.config.milter_default_action {
                    MilterDefault::Accept => MessageOutcome::Accept(message),
                    MilterDefault::Tempfail => MessageOutcome::Refuse(Reply::new(
                        451,
                        [4, 7, 1],
                        "Service unavailable - try again later",
                    )),
                    MilterDefault::Reject => {
                        MessageOutcome::Refuse(Reply::new(550, [5, 7, 1], "Command rejected"))
                    }
                }
            }
        }
    }

    async fn check_rspamd(
        &self,
        client: &rspamd::Client,
        facts: &MessageFacts,
        message: Vec<u8>,
    ) -> MessageOutcome {
        let envelope = rspamd::Envelope {
            ip: facts.ip,
            helo: &facts.helo,
            sender: &facts.sender,
            recipients: &facts.recipients,
            user: facts.user.as_deref(),
            queue_id: &facts.queue_id,
            mta_name: &self.hostname,
        };
        // The body shares the buffer: after the scan it is the message again, uncopied.
        let body = Bytes::from(message);
        let result = client.scan(&envelope, body.clone()).await;
        let message = Vec::from(body);
        match result {
            Ok(verdict) => self.apply(facts, verdict, message),
            Err(e) => {
                let from = log_escape::escape(&facts.sender);
                match self.config.rspamd_fail {
                    FilterFailure::Accept => {
                        tracing::warn!(queue_id = %facts.queue_id, client = %facts.ip, %from,
                            error = %e, "rspamd failed: message accepted unscanned");
                        MessageOutcome::Accept(message)
                    }
                    FilterFailure::Tempfail => {
                        tracing::warn!(queue_id = %facts.queue_id, client = %facts.ip, %from,
                            error = %e, "rspamd failed: 451 4.7.1");
                        MessageOutcome::Refuse(Reply::new(
                            451,
                            [4, 7, 1],
                            "Spam filter unavailable, try again later",
                        ))
                    }
                }
            }
        }
    }

    fn apply(&self, facts: &MessageFacts, verdict: Verdict, message: Vec<u8>) -> MessageOutcome {
        let from = log_escape::escape(&facts.sender);
        let text = verdict
            .smtp_message
            .as_deref()
            .map(crate::session::reply::sanitize)
            .filter(|t| !t.trim().is_empty());
        // Postfix's `milter-reject` lines: who decided, what, about which message.
        let log = |outcome: &str| {
            tracing::info!(queue_id = %facts.queue_id, client = %facts.ip, %from,
                filter = "rspamd", action = verdict.action.name(), score = verdict.score,
                required = verdict.required_score, "{outcome}");
        };
        match verdict.action {
            Action::Reject => {
                log("refused: 550 5.7.1");
                MessageOutcome::Refuse(Reply::new(
                    550,
                    [5, 7, 1],
                    text.unwrap_or_else(|| "Spam message rejected".to_string()),
                ))
            }
            Action::SoftReject | Action::Greylist => {
                log("deferred: 451 4.7.1");
                MessageOutcome::Refuse(Reply::new(
                    451,
                    [4, 7, 1],
                    text.unwrap_or_else(|| "Try again later".to_string()),
                ))
            }
            Action::AddHeader | Action::RewriteSubject | Action::Other(_) => {
                log("accepted as spam: Junk");
                let mark = format!("{QUARANTINE_FIELD}: spam\r\n");
                MessageOutcome::Accept(headers::apply(
                    &message,
                    facts.trace_len,
                    &verdict.edits,
                    mark.as_bytes(),
                ))
            }
            Action::NoAction => {
                log("accepted");
                if verdict.edits.is_empty() {
                    return MessageOutcome::Accept(message);
                }
                MessageOutcome::Accept(headers::apply(
                    &message,
                    facts.trace_len,
                    &verdict.edits,
                    b"",
                ))
            }
        }
    }
}

/// A milter's own reply text (`550 5.7.1 text`) as our reply: its code when it is of the
/// right class (4xx for a tempfail, 5xx for a reject), else `default` with 4.7.1 or 5.7.1.
fn milter_reply(text: Option<&str>, default: u16, default_text: &'static str) -> Reply {
    let class = [if default >= 500 { 5 } else { 4 }, 7, 1];
    let Some(text) = text else {
        return Reply::new(default, class, default_text);
    };
    let mut words = text.splitn(3, ' ');
    let code = words
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| c / 100 == default / 100);
    let Some(code) = code else {
        return Reply::new(default, class, default_text);
    };
    let (status, rest) = match words.next() {
        Some(word) => match parse_status(word, code) {
            Some(status) => (status, words.next().unwrap_or("").to_string()),
            None => (
                class,
                text.split_once(' ')
                    .map_or("", |(_, rest)| rest)
                    .to_string(),
            ),
        },
        None => (class, String::new()),
    };
    let rest = crate::session::reply::sanitize(&rest);
    Reply::new(
        code,
        status,
        if rest.trim().is_empty() {
            default_text.to_string()
        } else {
            rest
        },
    )
}

/// `5.7.1` of the class of `code`.
fn parse_status(word: &str, code: u16) -> Option<[u8; 3]> {
    let mut parts = word.split('.').map(|p| p.parse::<u8>().ok());
    let status = [parts.next()??, parts.next()??, parts.next()??];
    (parts.next().is_none() && u16::from(status[0]) == code / 100).then_some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milter_reply_texts() {
        let r = milter_reply(Some("554 5.7.1 Go away"), 550, "x");
        assert_eq!(r.to_line(), "554 5.7.1 Go away");
        let r = milter_reply(Some("450 4.2.0 Busy"), 550, "Rejected");
        assert_eq!(r.to_line(), "550 5.7.1 Rejected");
        let r = milter_reply(Some("421 busy now"), 451, "x");
        assert_eq!(r.to_line(), "421 4.7.1 busy now");
        assert_eq!(
            milter_reply(None, 451, "Later").to_line(),
            "451 4.7.1 Later"
        );
    }
}
