//! SMTP-style replies (RFC 5321 code, RFC 3463 enhanced status, text): what a delivery
//! result carries to the MTA's queue, to LMTP clients and to the log.

use std::fmt;

/// One reply, e.g. `550 5.1.1 <bob@example.org>: no such user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code (250, 451, 550, ...).
    pub code: u16,
    /// The enhanced status code (`[5, 1, 1]` is `5.1.1`).
    pub status: [u16; 3],
    /// Human-readable text, a single line without CR or LF.
    pub text: String,
}

impl Reply {
    /// A reply; CR, LF and other control characters in `text` become spaces, so a reply is
    /// always one protocol line.
    pub fn new(code: u16, status: [u16; 3], text: impl Into<String>) -> Reply {
        let text: String = text
            .into()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        Reply { code, status, text }
    }

    /// 2xx: the message was delivered (or the command accepted).
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_temporary(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: do not retry; bounce.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The enhanced status as text, `5.1.1`.
    pub fn status_text(&self) -> String {
        format!("{}.{}.{}", self.status[0], self.status[1], self.status[2])
    }

    /// The reply as sent on the wire, with its CRLF.
    pub fn to_line(&self) -> String {
        format!("{self}\r\n")
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}.{}.{} {}",
            self.code, self.status[0], self.status[1], self.status[2], self.text
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_one_line_with_class() {
        let r = Reply::new(550, [5, 1, 1], "<bob@x>: no such user\r\nINJECTED");
        assert_eq!(r.to_string(), "550 5.1.1 <bob@x>: no such user  INJECTED");
        assert!(r.is_permanent() && !r.is_temporary() && !r.is_success());
        assert!(Reply::new(451, [4, 3, 0], "later").is_temporary());
        assert!(Reply::new(250, [2, 0, 0], "ok").is_success());
        assert_eq!(Reply::new(552, [5, 2, 2], "full").status_text(), "5.2.2");
    }
}
