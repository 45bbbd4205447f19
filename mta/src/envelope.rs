//! The SMTP envelope of an accepted message, shared by the session (which builds it) and the
//! queue (which stores it).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Queue identifier of one accepted message: 20 upper-case hex digits (microseconds since the
/// epoch, then 32 random bits), so ids sort by arrival and are safe as file names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(String);

impl QueueId {
    /// A fresh, unique id.
    pub fn generate() -> Self {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        QueueId(format!(
            "{:012X}{:08X}",
            micros & 0xFFFF_FFFF_FFFF,
            rand::random::<u32>()
        ))
    }

    /// Accepts an id typed by an admin (`hermod queue show ID`): hex digits only, so it can never
    /// name a path outside the queue directory.
    pub fn parse(text: &str) -> Option<Self> {
        let valid = (1..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then(|| QueueId(text.to_ascii_uppercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a DSN should return of the original message (RFC 3461 `RET=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnReturn {
    Full,
    Headers,
}

impl DsnReturn {
    pub fn as_str(self) -> &'static str {
        match self {
            DsnReturn::Full => "FULL",
            DsnReturn::Headers => "HDRS",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "FULL" => Some(DsnReturn::Full),
            "HDRS" => Some(DsnReturn::Headers),
            _ => None,
        }
    }
}

/// The body type declared with `BODY=` on MAIL FROM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyType {
    #[default]
    Unspecified,
    SevenBit,
    EightBitMime,
}

impl BodyType {
    pub fn as_str(self) -> &'static str {
        match self {
            BodyType::Unspecified => "",
            BodyType::SevenBit => "7BIT",
            BodyType::EightBitMime => "8BITMIME",
        }
    }

    pub fn parse(text: &str) -> Self {
        match text {
            "7BIT" => BodyType::SevenBit,
            "8BITMIME" => BodyType::EightBitMime,
            _ => BodyType::Unspecified,
        }
    }
}

/// When the sender asked for delivery status notifications (RFC 3461 `NOTIFY=`). All false means
/// the parameter was absent: the default is to report failures (and delays).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Notify {
    pub never: bool,
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

impl Notify {
    /// Was `NOTIFY=` given at all?
    pub fn is_default(&self) -> bool {
        !(self.never || self.success || self.failure || self.delay)
    }

    /// Should a failure be reported to the sender?
    pub fn wants_failure(&self) -> bool {
        self.failure || self.is_default()
    }

    /// Should a delay be reported to the sender? Without NOTIFY, yes (RFC 3461 4.1: the
    /// default is FAILURE,DELAY); with it, only if it lists DELAY.
    pub fn wants_delay(&self) -> bool {
        !self.never && (self.delay || self.is_default())
    }

    /// The `NOTIFY=` value as written on RCPT TO, or "" when absent.
    pub fn to_param(&self) -> String {
        if self.never {
            return "NEVER".into();
        }
        let mut parts = Vec::new();
        if self.success {
            parts.push("SUCCESS");
        }
        if self.failure {
            parts.push("FAILURE");
        }
        if self.delay {
            parts.push("DELAY");
        }
        parts.join(",")
    }

    /// Parses what [`Notify::to_param`] wrote.
    pub fn from_param(text: &str) -> Self {
        let mut notify = Notify::default();
        for part in text.split(',') {
            match part {
                "NEVER" => notify.never = true,
                "SUCCESS" => notify.success = true,
                "FAILURE" => notify.failure = true,
                "DELAY" => notify.delay = true,
                _ => {}
            }
        }
        notify
    }
}

/// One accepted recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeRecipient {
    /// `local@domain`, domain lower-cased.
    pub address: String,
    /// True when the domain is one of ours: delivered through [`crate::LocalDelivery`].
    pub local: bool,
    pub notify: Notify,
    /// `ORCPT=` as given, with its address type (`rfc822;user@example.org`).
    pub orcpt: Option<String>,
}

/// The envelope of one accepted message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    /// The reverse-path; empty for the null sender `<>` (bounces).
    pub sender: String,
    pub recipients: Vec<EnvelopeRecipient>,
    pub ret: Option<DsnReturn>,
    pub env_id: Option<String>,
    pub body: BodyType,
    pub smtputf8: bool,
    /// The SASL identity that submitted the message, if any.
    pub auth_user: Option<String>,
    /// Client address and HELO name, for logs (`[192.0.2.1] mail.example.net`).
    pub client: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ids_are_unique_hex_and_parse_back() {
        let a = QueueId::generate();
        let b = QueueId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 20);
        assert_eq!(QueueId::parse(a.as_str()), Some(a.clone()));
        assert_eq!(QueueId::parse(&a.as_str().to_lowercase()), Some(a));
        assert_eq!(QueueId::parse("../etc/passwd"), None);
        assert_eq!(QueueId::parse(""), None);
    }

    #[test]
    fn notify_round_trips() {
        let n = Notify {
            success: true,
            failure: true,
            ..Notify::default()
        };
        assert_eq!(n.to_param(), "SUCCESS,FAILURE");
        assert_eq!(Notify::from_param(&n.to_param()), n);
        assert!(Notify::default().wants_failure());
        assert!(
            !Notify {
                never: true,
                ..Notify::default()
            }
            .wants_failure()
        );
    }

    #[test]
    fn delays_are_reported_by_default_or_when_asked() {
        assert!(Notify::default().wants_delay());
        assert!(Notify::from_param("DELAY").wants_delay());
        assert!(Notify::from_param("FAILURE,DELAY").wants_delay());
        assert!(!Notify::from_param("FAILURE").wants_delay());
        assert!(!Notify::from_param("SUCCESS,FAILURE").wants_delay());
        assert!(!Notify::from_param("NEVER").wants_delay());
    }
}
