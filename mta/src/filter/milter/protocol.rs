//! The Sendmail milter protocol, version 6, as the MTA side speaks it: commands encoded into
//! packets, replies decoded from them (sans I/O). A packet is a 4-byte big-endian length
//! (the command byte included), one command byte, and its data; strings end with NUL.
//!
//! Written here because the one milter client crate (miltr-client) is not in this build's
//! registry cache; the protocol is small and fixed.

use std::net::IpAddr;

/// The protocol version we speak.
pub const VERSION: u32 = 6;
/// Largest reply packet accepted (a replaced body arrives in chunks of at most 64 KiB).
pub const MAX_PACKET: usize = 1024 * 1024;
/// Largest body chunk sent at a time (libmilter's MILTER_CHUNK_SIZE).
pub const BODY_CHUNK: usize = 65535;

/// Actions the MTA allows the milter (SMFIF_*): all of them.
pub mod actions {
    pub const ADD_HEADERS: u32 = 0x01;
    pub const CHANGE_BODY: u32 = 0x02;
    pub const ADD_RCPT: u32 = 0x04;
    pub const DELETE_RCPT: u32 = 0x08;
    pub const CHANGE_HEADERS: u32 = 0x10;
    pub const QUARANTINE: u32 = 0x20;
    pub const CHANGE_FROM: u32 = 0x40;
    pub const ADD_RCPT_PAR: u32 = 0x80;
    pub const ALL: u32 = 0x1ff;
}

/// Protocol steps the milter may ask to skip or to answer without reply (SMFIP_*).
pub mod steps {
    pub const NO_CONNECT: u32 = 0x01;
    pub const NO_HELO: u32 = 0x02;
    pub const NO_MAIL: u32 = 0x04;
    pub const NO_RCPT: u32 = 0x08;
    pub const NO_BODY: u32 = 0x10;
    pub const NO_HEADERS: u32 = 0x20;
    pub const NO_EOH: u32 = 0x40;
    pub const NR_HEADER: u32 = 0x80;
    pub const NO_UNKNOWN: u32 = 0x100;
    pub const NO_DATA: u32 = 0x200;
    pub const SKIP: u32 = 0x400;
    pub const NR_CONNECT: u32 = 0x1000;
    pub const NR_HELO: u32 = 0x2000;
    pub const NR_MAIL: u32 = 0x4000;
    pub const NR_RCPT: u32 = 0x8000;
    pub const NR_DATA: u32 = 0x10000;
    pub const NR_EOH: u32 = 0x40000;
    pub const NR_BODY: u32 = 0x80000;
    pub const HEADER_LEADING_SPACE: u32 = 0x100000;
    /// What we offer: every step may be skipped or left unanswered.
    pub const OFFERED: u32 = 0x1fffff;
}

/// A command of the MTA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    Negotiate {
        actions: u32,
        steps: u32,
    },
    /// Macros for the next command (`code` is that command's byte).
    Macros {
        code: u8,
        pairs: &'a [(&'a str, &'a str)],
    },
    Connect {
        hostname: &'a str,
        ip: IpAddr,
        port: u16,
    },
    Helo(&'a str),
    /// `<address>` and the ESMTP parameters.
    Mail(&'a [&'a str]),
    Rcpt(&'a [&'a str]),
    Data,
    Header {
        name: &'a str,
        value: &'a str,
    },
    EndOfHeaders,
    Body(&'a [u8]),
    EndOfMessage,
    Abort,
    Quit,
}

impl Command<'_> {
    /// The packet for this command.
    pub fn encode(&self) -> Vec<u8> {
        let mut data = Vec::new();
        let code = match self {
            Command::Negotiate { actions, steps } => {
                data.extend_from_slice(&VERSION.to_be_bytes());
                data.extend_from_slice(&actions.to_be_bytes());
                data.extend_from_slice(&steps.to_be_bytes());
                b'O'
            }
            Command::Macros { code, pairs } => {
                data.push(*code);
                for (name, value) in *pairs {
                    cstr(&mut data, name);
                    cstr(&mut data, value);
                }
                b'D'
            }
            Command::Connect { hostname, ip, port } => {
                cstr(&mut data, hostname);
                data.push(if ip.is_ipv4() { b'4' } else { b'6' });
                data.extend_from_slice(&port.to_be_bytes());
                cstr(&mut data, &ip.to_string());
                b'C'
            }
            Command::Helo(helo) => {
                cstr(&mut data, helo);
                b'H'
            }
            Command::Mail(args) | Command::Rcpt(args) => {
                for arg in *args {
                    cstr(&mut data, arg);
                }
                if matches!(self, Command::Mail(_)) {
                    b'M'
                } else {
                    b'R'
                }
            }
            Command::Data => b'T',
            Command::Header { name, value } => {
                cstr(&mut data, name);
                cstr(&mut data, value);
                b'L'
            }
            Command::EndOfHeaders => b'N',
            Command::Body(chunk) => {
                data.extend_from_slice(chunk);
                b'B'
            }
            Command::EndOfMessage => b'E',
            Command::Abort => b'A',
            Command::Quit => b'Q',
        };
        let len = u32::try_from(data.len() + 1).unwrap_or(u32::MAX);
        let mut packet = Vec::with_capacity(data.len() + 5);
        packet.extend_from_slice(&len.to_be_bytes());
        packet.push(code);
        packet.extend_from_slice(&data);
        packet
    }
}

/// Strings go out NUL-terminated; a NUL inside one would cut it, so it becomes a space.
fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend(s.bytes().map(|b| if b == 0 { b' ' } else { b }));
    out.push(0);
}

/// A reply of the milter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The milter's answer to [`Command::Negotiate`].
    Negotiate {
        version: u32,
        actions: u32,
        steps: u32,
    },
    /// Accept this message (or connection) without further filtering.
    Accept,
    Continue,
    /// Accept, then throw the message away.
    Discard,
    Reject,
    Tempfail,
    /// A reply of the milter's own: `550 5.7.1 text`.
    ReplyCode(String),
    /// Skip the rest of this step's kind (body chunks).
    Skip,
    /// Still working: wait on.
    Progress,
    /// Hold the message in the queue.
    Quarantine(String),
    AddHeader {
        name: String,
        value: String,
    },
    /// Change the `index`th (1-based) field of that name; an empty value deletes it.
    ChangeHeader {
        index: u32,
        name: String,
        value: String,
    },
    /// Insert at position `index` (0: first).
    InsertHeader {
        index: u32,
        name: String,
        value: String,
    },
    ChangeFrom {
        address: String,
        args: Option<String>,
    },
    AddRcpt {
        address: String,
        args: Option<String>,
    },
    DeleteRcpt(String),
    /// A piece of the new body (the pieces of one end of message join up).
    ReplaceBody(Vec<u8>),
    /// Something this client does not know: treated as a protocol error.
    Unknown(u8),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("packet of {0} bytes is too big")]
    TooBig(usize),
    #[error("empty packet")]
    Empty,
    #[error("malformed {0:?} reply")]
    Malformed(char),
}

/// Takes one reply off the front of `buf` when a whole packet is there: `Ok(None)` means
/// more bytes are needed.
pub fn decode(buf: &mut Vec<u8>) -> Result<Option<Reply>, DecodeError> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len == 0 {
        return Err(DecodeError::Empty);
    }
    if len > MAX_PACKET {
        return Err(DecodeError::TooBig(len));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let packet: Vec<u8> = buf.drain(..4 + len).skip(4).collect();
    let (code, data) = (packet[0], &packet[1..]);
    let bad = || DecodeError::Malformed(char::from(code));
    let reply = match code {
        b'O' => {
            let word = |i: usize| {
                data.get(i * 4..i * 4 + 4)
                    .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
            };
            Reply::Negotiate {
                version: word(0).ok_or_else(bad)?,
                actions: word(1).ok_or_else(bad)?,
                steps: word(2).ok_or_else(bad)?,
            }
        }
        b'a' => Reply::Accept,
        b'c' => Reply::Continue,
        b'd' => Reply::Discard,
        b'r' => Reply::Reject,
        b't' => Reply::Tempfail,
        b's' => Reply::Skip,
        b'p' => Reply::Progress,
        b'y' => Reply::ReplyCode(strings(data).next().ok_or_else(bad)?),
        b'q' => Reply::Quarantine(strings(data).next().unwrap_or_default()),
        b'h' => {
            let mut s = strings(data);
            Reply::AddHeader {
                name: s.next().ok_or_else(bad)?,
                value: s.next().unwrap_or_default(),
            }
        }
        b'm' | b'i' => {
            let index = data
                .get(..4)
                .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
                .ok_or_else(bad)?;
            let mut s = strings(&data[4..]);
            let name = s.next().ok_or_else(bad)?;
            let value = s.next().unwrap_or_default();
            if code == b'm' {
                Reply::ChangeHeader { index, name, value }
            } else {
                Reply::InsertHeader { index, name, value }
            }
        }
        b'e' | b'+' | b'2' => {
            let mut s = strings(data);
            let address = s.next().ok_or_else(bad)?;
            let args = s.next().filter(|a| !a.is_empty());
            if code == b'e' {
                Reply::ChangeFrom { address, args }
            } else {
                Reply::AddRcpt { address, args }
            }
        }
        b'-' => Reply::DeleteRcpt(strings(data).next().ok_or_else(bad)?),
        b'b' => Reply::ReplaceBody(data.to_vec()),
        other => Reply::Unknown(other),
    };
    Ok(Some(reply))
}

/// The NUL-terminated strings of a reply (a last one without NUL counts too), lossily UTF-8.
fn strings(data: &[u8]) -> impl Iterator<Item = String> + '_ {
    let data = data.strip_suffix(&[0]).unwrap_or(data);
    data.split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: u8, data: &[u8]) -> Vec<u8> {
        let mut p = u32::try_from(data.len() + 1)
            .unwrap()
            .to_be_bytes()
            .to_vec();
        p.push(code);
        p.extend_from_slice(data);
        p
    }

    #[test]
    fn commands_encode_as_libmilter_expects() {
        assert_eq!(
            Command::Negotiate {
                actions: actions::ALL,
                steps: 0
            }
            .encode(),
            packet(b'O', &[0, 0, 0, 6, 0, 0, 1, 0xff, 0, 0, 0, 0])
        );
        assert_eq!(
            Command::Connect {
                hostname: "client.example",
                ip: "192.0.2.1".parse().unwrap(),
                port: 25
            }
            .encode(),
            packet(b'C', b"client.example\x004\x00\x19192.0.2.1\x00")
        );
        assert_eq!(
            Command::Mail(&["<a@b>", "SIZE=10"]).encode(),
            packet(b'M', b"<a@b>\0SIZE=10\0")
        );
        assert_eq!(
            Command::Header {
                name: "Subject",
                value: " hi\0there"
            }
            .encode(),
            packet(b'L', b"Subject\0 hi there\0")
        );
        assert_eq!(
            Command::Macros {
                code: b'C',
                pairs: &[("j", "mx.example")]
            }
            .encode(),
            packet(b'D', b"Cj\0mx.example\0")
        );
        assert_eq!(Command::EndOfMessage.encode(), packet(b'E', b""));
    }

    #[test]
    fn replies_decode_in_pieces() {
        let mut buf = Vec::new();
        let whole = [
            packet(b'O', &[0, 0, 0, 6, 0, 0, 0, 0x21, 0, 0, 0, 0x10]),
            packet(b'h', b"X-Spam\0Yes\0"),
            packet(b'm', b"\0\0\0\x02Subject\0new\0"),
            packet(b'i', b"\0\0\0\0X-First\0v\0"),
            packet(b'e', b"<new@example>\0"),
            packet(b'+', b"<extra@example>\0"),
            packet(b'-', b"<gone@example>\0"),
            packet(b'b', b"new body"),
            packet(b'y', b"550 5.7.1 No thanks\0"),
            packet(b'q', b"held for review\0"),
            packet(b'c', b""),
        ]
        .concat();
        let mut got = Vec::new();
        // One byte at a time: nothing is decoded from a partial packet.
        for byte in whole {
            buf.push(byte);
            while let Some(reply) = decode(&mut buf).unwrap() {
                got.push(reply);
            }
        }
        assert_eq!(
            got,
            vec![
                Reply::Negotiate {
                    version: 6,
                    actions: 0x21,
                    steps: 0x10
                },
                Reply::AddHeader {
                    name: "X-Spam".into(),
                    value: "Yes".into()
                },
                Reply::ChangeHeader {
                    index: 2,
                    name: "Subject".into(),
                    value: "new".into()
                },
                Reply::InsertHeader {
                    index: 0,
                    name: "X-First".into(),
                    value: "v".into()
                },
                Reply::ChangeFrom {
                    address: "<new@example>".into(),
                    args: None
                },
                Reply::AddRcpt {
                    address: "<extra@example>".into(),
                    args: None
                },
                Reply::DeleteRcpt("<gone@example>".into()),
                Reply::ReplaceBody(b"new body".to_vec()),
                Reply::ReplyCode("550 5.7.1 No thanks".into()),
                Reply::Quarantine("held for review".into()),
                Reply::Continue,
            ]
        );
    }

    #[test]
    fn hostile_replies_are_errors() {
        let mut huge = (u32::try_from(MAX_PACKET).unwrap() + 1)
            .to_be_bytes()
            .to_vec();
        assert_eq!(decode(&mut huge), Err(DecodeError::TooBig(MAX_PACKET + 1)));
        assert_eq!(decode(&mut vec![0, 0, 0, 0]), Err(DecodeError::Empty));
        assert_eq!(
            decode(&mut packet(b'O', &[0, 0, 0, 6])),
            Err(DecodeError::Malformed('O'))
        );
        assert_eq!(
            decode(&mut packet(b'm', b"\0\0")),
            Err(DecodeError::Malformed('m'))
        );
        assert_eq!(
            decode(&mut packet(b'Z', b"")),
            Ok(Some(Reply::Unknown(b'Z')))
        );
    }
}
