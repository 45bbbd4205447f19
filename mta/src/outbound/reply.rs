//! Replies of a remote SMTP server: the byte stream is cut into complete (possibly multi-line)
//! replies here, and each reply is parsed with smtp-proto's response parser.

use smtp_proto::response::parser::ResponseReceiver;

/// A reply larger than this is a protocol error (RFC 5321 allows 512 bytes a line; EHLO
/// replies with many extensions are a few hundred bytes).
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// One complete reply of the remote server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteReply {
    pub code: u16,
    /// The enhanced status code (RFC 3463), when the server sent one.
    pub status: Option<[u8; 3]>,
    /// The text of every line, joined by spaces, without code and status.
    pub text: String,
    /// The reply as received (for the EHLO extension parser).
    raw: Vec<u8>,
}

impl RemoteReply {
    /// 2xx.
    pub fn is_positive(&self) -> bool {
        self.code / 100 == 2
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        self.code / 100 == 4
    }

    /// 5xx: will never work.
    pub fn is_permanent(&self) -> bool {
        self.code / 100 == 5
    }

    /// The reply on one line, as logged and stored in the queue: `550 5.1.1 No such user`.
    pub fn line(&self) -> String {
        match self.status {
            Some([a, b, c]) => format!("{} {a}.{b}.{c} {}", self.code, self.text),
            None => format!("{} {}", self.code, self.text),
        }
        .trim_end()
        .to_string()
    }

    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
}

/// A reply of our own making, for failures that have no server reply (connection refused,
/// timeouts, a server lacking what the message needs), in the same shape as a server's.
pub fn synthetic(code: u16, status: [u8; 3], text: &str) -> RemoteReply {
    let [a, b, c] = status;
    RemoteReply {
        code,
        status: Some(status),
        text: text.to_string(),
        raw: format!("{code} {a}.{b}.{c} {text}\r\n").into_bytes(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("malformed reply line from server: {0:?}")]
    Malformed(String),
    #[error("reply longer than {MAX_REPLY_BYTES} bytes")]
    TooLong,
}

/// Bytes read from the server and not yet consumed as replies.
#[derive(Debug, Default)]
pub struct ReplyBuffer {
    buf: Vec<u8>,
}

impl ReplyBuffer {
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Takes the next complete reply, if the buffer holds one.
    pub fn next_reply(&mut self) -> Result<Option<RemoteReply>, ReplyError> {
        let Some(end) = complete_reply_len(&self.buf)? else {
            if self.buf.len() > MAX_REPLY_BYTES {
                return Err(ReplyError::TooLong);
            }
            return Ok(None);
        };
        let raw: Vec<u8> = self.buf.drain(..end).collect();
        Ok(Some(parse(raw)))
    }

    /// True when bytes that are not a complete reply are waiting (a pipelining server may
    /// never send unasked replies).
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// The length of the first complete reply in `buf`: its lines up to and including the one
/// whose code is followed by a space (or nothing).
fn complete_reply_len(buf: &[u8]) -> Result<Option<usize>, ReplyError> {
    let mut start = 0;
    while let Some(lf) = buf[start..].iter().position(|&b| b == b'\n') {
        let line = &buf[start..start + lf + 1];
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.len() < 3 || !content[..3].iter().all(u8::is_ascii_digit) {
            return Err(ReplyError::Malformed(
                String::from_utf8_lossy(content).into_owned(),
            ));
        }
        start += lf + 1;
        match content.get(3) {
            None | Some(b' ') => return Ok(Some(start)),
            Some(b'-') => {}
            Some(_) => {
                return Err(ReplyError::Malformed(
                    String::from_utf8_lossy(content).into_owned(),
                ));
            }
        }
    }
    Ok(None)
}

fn parse(raw: Vec<u8>) -> RemoteReply {
    let parsed = ResponseReceiver::default().parse(&mut raw.iter());
    let (code, status, text) = match parsed {
        Ok(response) => (
            response.code,
            (response.esc[0] != 0).then_some(response.esc),
            response.message,
        ),
        // The framing above already checked the code; keep the text as sent.
        Err(_) => {
            let code = raw[..3]
                .iter()
                .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
            let text = String::from_utf8_lossy(&raw[4.min(raw.len())..]).into_owned();
            (code, None, text)
        }
    };
    let text = text
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    RemoteReply {
        code,
        status,
        text,
        raw,
    }
}

#[cfg(test)]
pub(crate) fn reply(raw: &str) -> RemoteReply {
    let mut buffer = ReplyBuffer::default();
    buffer.extend(raw.as_bytes());
    buffer.next_reply().unwrap().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_multi_line_replies() {
        let mut b = ReplyBuffer::default();
        b.extend(b"220 mx.example.org ESMTP ready\r\n250-mx.example.org\r\n250-PIPE");
        let greeting = b.next_reply().unwrap().unwrap();
        assert_eq!(greeting.code, 220);
        assert_eq!(greeting.line(), "220 mx.example.org ESMTP ready");
        assert_eq!(b.next_reply().unwrap(), None);
        b.extend(b"LINING\r\n250 SIZE 1000\r\n");
        let ehlo = b.next_reply().unwrap().unwrap();
        assert_eq!(ehlo.code, 250);
        assert_eq!(ehlo.text, "mx.example.org PIPELINING SIZE 1000");
        assert!(b.is_empty());
    }

    #[test]
    fn enhanced_status_is_parsed() {
        let r = reply("550 5.1.1 <x@example.org>: No such user\r\n");
        assert_eq!(r.status, Some([5, 1, 1]));
        assert!(r.is_permanent());
        assert_eq!(r.line(), "550 5.1.1 <x@example.org>: No such user");
        let r = reply("451-4.3.0 try\r\n451 4.3.0 later\r\n");
        assert!(r.is_transient());
        assert_eq!(r.line(), "451 4.3.0 try later");
        let r = reply("250\r\n");
        assert!(r.is_positive());
        assert_eq!(r.line(), "250");
    }

    #[test]
    fn garbage_is_an_error() {
        let mut b = ReplyBuffer::default();
        b.extend(b"HTTP/1.1 400 Bad Request\r\n");
        assert!(matches!(b.next_reply(), Err(ReplyError::Malformed(_))));
        let mut b = ReplyBuffer::default();
        b.extend(&vec![b'2'; MAX_REPLY_BYTES + 1]);
        assert_eq!(b.next_reply(), Err(ReplyError::TooLong));
    }
}
