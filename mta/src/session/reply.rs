//! SMTP replies: a code, an optional enhanced status code (RFC 3463) and a text.

use std::borrow::Cow;

/// One single-line SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Enhanced status code, e.g. `[5, 1, 1]`; absent on 220/221-style greetings, 334 and 354.
    pub status: Option<[u8; 3]>,
    pub text: Cow<'static, str>,
}

impl Reply {
    pub fn new(code: u16, status: [u8; 3], text: impl Into<Cow<'static, str>>) -> Self {
        Reply {
            code,
            status: Some(status),
            text: text.into(),
        }
    }

    pub fn bare(code: u16, text: impl Into<Cow<'static, str>>) -> Self {
        Reply {
            code,
            status: None,
            text: text.into(),
        }
    }

    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self.status {
            Some(esc) => {
                let response = smtp_proto::Response {
                    code: self.code,
                    esc,
                    message: &self.text,
                };
                // Writing into a Vec cannot fail.
                let _ = response.write(&mut *out);
            }
            None => {
                out.extend_from_slice(self.code.to_string().as_bytes());
                out.push(b' ');
                out.extend_from_slice(self.text.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// The reply as one line without CRLF, as stored in the queue's `last_reply`.
    pub fn to_line(&self) -> String {
        let mut out = Vec::new();
        self.write_to(&mut out);
        String::from_utf8_lossy(&out).trim_end().to_string()
    }
}

// The replies used in more than one place.

pub fn ok() -> Reply {
    Reply::new(250, [2, 0, 0], "OK")
}

pub fn bad_sequence(text: &'static str) -> Reply {
    Reply::new(503, [5, 5, 1], text)
}

pub fn syntax(text: impl Into<Cow<'static, str>>) -> Reply {
    Reply::new(501, [5, 5, 4], text)
}

pub fn line_too_long() -> Reply {
    Reply::new(500, [5, 5, 2], "Line too long")
}

pub fn too_big() -> Reply {
    Reply::new(
        552,
        [5, 3, 4],
        "Message size exceeds fixed maximum message size",
    )
}

pub fn too_many_errors() -> Reply {
    Reply::new(421, [4, 7, 0], "Too many errors, closing connection")
}

pub fn timeout() -> Reply {
    Reply::new(421, [4, 4, 2], "Timeout exceeded, closing connection")
}

pub fn relay_denied() -> Reply {
    Reply::new(554, [5, 7, 1], "Relay access denied")
}

pub fn temporary_failure() -> Reply {
    Reply::new(451, [4, 3, 0], "Temporary local problem, try again later")
}

/// Client-supplied text echoed in a reply: printable ASCII only, bounded, so a reply can never be
/// split or forged.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_enhanced_and_bare_replies() {
        let mut out = Vec::new();
        Reply::new(550, [5, 1, 1], "User unknown").write_to(&mut out);
        Reply::bare(354, "Go ahead").write_to(&mut out);
        assert_eq!(out, b"550 5.1.1 User unknown\r\n354 Go ahead\r\n");
    }

    #[test]
    fn sanitize_removes_line_breaks() {
        assert_eq!(sanitize("a\r\n250 ok"), "a??250 ok");
    }
}
