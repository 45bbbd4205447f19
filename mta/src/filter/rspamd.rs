//! rspamd's HTTP protocol: `POST /checkv2` on the normal worker with the message as the body
//! and the envelope in request headers (`IP`, `Helo`, `From`, one `Rcpt` per recipient,
//! `User`, `Queue-Id`, `MTA-Name`); the JSON reply names an action, a score and, in its
//! `milter` block, header fields to add and remove.
//!
//! One connection per message (rspamd closes idle ones quickly, and a pool would hold sockets
//! for nothing between messages); the reply is read up to [`MAX_REPLY`] bytes.

use std::net::IpAddr;
use std::time::Duration;

use hyper::StatusCode;
use hyper::body::Bytes;
use serde_json::Value;

use super::headers::{HeaderEdits, MAX_EDITS};
use super::http::{Endpoint, HttpError};

/// Biggest reply body read: a verdict with every symbol is a few KiB.
pub const MAX_REPLY: usize = 1024 * 1024;
/// Longest text of rspamd's own that goes into an SMTP reply.
const MAX_MESSAGE: usize = 200;

/// What rspamd recommends.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    NoAction,
    Greylist,
    AddHeader,
    RewriteSubject,
    SoftReject,
    Reject,
    /// Newer rspamd's `discard` and `quarantine`, or a custom action: treated as spam.
    Other(String),
}

impl Action {
    fn parse(s: &str) -> Action {
        match s {
            "no action" => Action::NoAction,
            "greylist" => Action::Greylist,
            "add header" => Action::AddHeader,
            "rewrite subject" => Action::RewriteSubject,
            "soft reject" => Action::SoftReject,
            "reject" => Action::Reject,
            other => Action::Other(other.chars().take(40).collect()),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Action::NoAction => "no action",
            Action::Greylist => "greylist",
            Action::AddHeader => "add header",
            Action::RewriteSubject => "rewrite subject",
            Action::SoftReject => "soft reject",
            Action::Reject => "reject",
            Action::Other(name) => name,
        }
    }
}

/// rspamd's answer about one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub action: Action,
    pub score: f64,
    pub required_score: f64,
    /// `messages.smtp_message`: the text rspamd wants in the SMTP reply.
    pub smtp_message: Option<String>,
    pub edits: HeaderEdits,
}

/// The envelope of the message being scanned.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    pub ip: IpAddr,
    pub helo: &'a str,
    pub sender: &'a str,
    pub recipients: &'a [String],
    pub user: Option<&'a str>,
    pub queue_id: &'a str,
    /// Our own host name (`MTA-Name`).
    pub mta_name: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("HTTP status {0}")]
    Status(StatusCode),
    #[error("not a verdict: {0}")]
    Garbage(String),
}

/// A client of one rspamd normal worker.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    timeout: Duration,
}

impl Client {
    /// From `http://host[:port][/prefix]`; the port defaults to 11333.
    pub fn new(url: &str, timeout: Duration) -> Result<Client, String> {
        Ok(Client {
            endpoint: Endpoint::parse(url, 11333)?,
            timeout,
        })
    }

    /// Scans `message`, within the timeout (connection included).
    pub async fn scan(
        &self,
        envelope: &Envelope<'_>,
        message: Bytes,
    ) -> Result<Verdict, ScanError> {
        let ip = envelope.ip.to_string();
        let mut headers: Vec<(&'static str, &str)> = vec![
            ("ip", ip.as_str()),
            ("helo", envelope.helo),
            ("from", envelope.sender),
        ];
        for rcpt in envelope.recipients {
            headers.push(("rcpt", rcpt.as_str()));
        }
        if let Some(user) = envelope.user {
            headers.push(("user", user));
        }
        headers.push(("queue-id", envelope.queue_id));
        headers.push(("mta-name", envelope.mta_name));
        let (status, body) = self
            .endpoint
            .post("/checkv2", &headers, message, MAX_REPLY, self.timeout)
            .await?;
        if status != StatusCode::OK {
            return Err(ScanError::Status(status));
        }
        parse_verdict(&body)
    }
}

/// The verdict in a `/checkv2` reply body.
pub fn parse_verdict(body: &[u8]) -> Result<Verdict, ScanError> {
    let json: Value =
        serde_json::from_slice(body).map_err(|e| ScanError::Garbage(e.to_string()))?;
    let action = json
        .get("action")
        .and_then(Value::as_str)
        .ok_or_else(|| ScanError::Garbage("no action".to_string()))?;
    let number = |key: &str| json.get(key).and_then(Value::as_f64).unwrap_or(0.0);
    let smtp_message = json
        .get("messages")
        .and_then(|m| m.get("smtp_message"))
        .and_then(Value::as_str)
        .map(|m| m.chars().take(MAX_MESSAGE).collect());
    let mut edits = HeaderEdits {
        subject: json
            .get("subject")
            .and_then(Value::as_str)
            .map(str::to_string),
        ..HeaderEdits::default()
    };
    if let Some(milter) = json.get("milter") {
        if let Some(add) = milter.get("add_headers").and_then(Value::as_object) {
            for (name, spec) in add.iter().take(MAX_EDITS) {
                // A value is a string, {"value": ..., "order": n}, or a list of those.
                let values: Vec<&Value> = match spec {
                    Value::Array(items) => items.iter().take(MAX_EDITS).collect(),
                    other => vec![other],
                };
                for value in values {
                    let text = match value {
                        Value::String(s) => Some(s.as_str()),
                        Value::Object(o) => o.get("value").and_then(Value::as_str),
                        _ => None,
                    };
                    if let Some(text) = text {
                        edits.add.push((name.clone(), text.to_string()));
                    }
                }
            }
        }
        if let Some(remove) = milter.get("remove_headers").and_then(Value::as_object) {
            for (name, index) in remove.iter().take(MAX_EDITS) {
                edits
                    .remove
                    .push((name.clone(), index.as_i64().unwrap_or(0)));
            }
        }
    }
    Ok(Verdict {
        action: Action::parse(action),
        score: number("score"),
        required_score: number("required_score"),
        smtp_message,
        edits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_actions_messages_and_the_milter_block() {
        let v = parse_verdict(
            br#"{"action":"add header","score":7.5,"required_score":15,
                "messages":{"smtp_message":"Spam!"},
                "milter":{"add_headers":{"X-Spam":"Yes","X-Spamd-Bar":{"value":"+++++++","order":0},
                          "X-Multi":[{"value":"a"},{"value":"b"}]},
                          "remove_headers":{"X-Spam":1,"X-Old":0}},
                "symbols":{}}"#,
        )
        .unwrap();
        assert_eq!(v.action, Action::AddHeader);
        assert_eq!(v.score, 7.5);
        assert_eq!(v.required_score, 15.0);
        assert_eq!(v.smtp_message.as_deref(), Some("Spam!"));
        let mut added = v.edits.add.clone();
        added.sort();
        assert_eq!(
            added,
            vec![
                ("X-Multi".to_string(), "a".to_string()),
                ("X-Multi".to_string(), "b".to_string()),
                ("X-Spam".to_string(), "Yes".to_string()),
                ("X-Spamd-Bar".to_string(), "+++++++".to_string()),
            ]
        );
        assert!(v.edits.remove.contains(&("X-Spam".to_string(), 1)));
        assert!(v.edits.remove.contains(&("X-Old".to_string(), 0)));

        let r = parse_verdict(br#"{"action":"rewrite subject","subject":"[SPAM] hi"}"#).unwrap();
        assert_eq!(r.action, Action::RewriteSubject);
        assert_eq!(r.edits.subject.as_deref(), Some("[SPAM] hi"));
        assert_eq!(
            parse_verdict(br#"{"action":"discard"}"#).unwrap().action,
            Action::Other("discard".into())
        );
    }

    #[test]
    fn garbage_is_an_error() {
        for body in [&b"not json"[..], b"{}", b"{\"action\": 5}", b"[1,2]", b""] {
            assert!(matches!(parse_verdict(body), Err(ScanError::Garbage(_))));
        }
    }
}
