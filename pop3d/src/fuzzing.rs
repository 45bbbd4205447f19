//! Fuzz target: the POP3 session, driven without sockets from arbitrary bytes.
//!
//! The cargo-fuzz target in `fuzz/` calls it, and `tests/fuzz_corpus.rs` replays the
//! committed corpus and crash reproducers through it.

use hermod_common::fuzzing::block_on;
use hermod_common::store::Uid;

use crate::session::{
    Backend, BackendError, Control, ListedMessage, Listing, LoginOutcome, Session, SessionConfig,
};
use crate::transfer;

/// Longest line the connection loop hands to the session (as `max_line_length` would).
const MAX_LINE: usize = 255;

const MESSAGES: [&[u8]; 3] = [
    b"From: a@example.org\r\nSubject: one\r\n\r\nHello\r\n",
    b"From: b@example.org\nSubject: two\n\n.\n..hidden\n.leading dot\nend",
    b"From: c@example.org\r\nSubject: three\r\n\r\nl1\r\nl2\r\nl3\r\nl4\r\nl5\r\n",
];

/// An in-memory maildrop; `alice@example.org` logs in with `secret`.
struct Maildrop {
    messages: Vec<Vec<u8>>,
    in_use: bool,
}

impl Backend for Maildrop {
    async fn login(&mut self, login: &str, password: &str) -> Result<LoginOutcome, BackendError> {
        if login == "broken@example.org" {
            return Err(BackendError {
                temporary: true,
                message: "index busy".into(),
            });
        }
        if login != "alice@example.org" || password != "secret" {
            return Ok(LoginOutcome::Rejected);
        }
        if self.in_use {
            return Ok(LoginOutcome::InUse);
        }
        Ok(LoginOutcome::Opened(Listing {
            user: login.to_string(),
            uidvalidity: 0x5f00_1234,
            messages: self
                .messages
                .iter()
                .enumerate()
                .map(|(i, m)| ListedMessage {
                    uid: 3 * i as Uid + 1,
                    size: transfer::wire_size(m),
                })
                .collect(),
        }))
    }

    async fn retrieve(&mut self, uid: Uid) -> Result<Option<Vec<u8>>, BackendError> {
        Ok((uid as usize)
            .checked_sub(1)
            .and_then(|i| self.messages.get(i / 3))
            .cloned())
    }

    async fn update(&mut self, _retrieved: &[Uid], _deleted: &[Uid]) -> Result<(), BackendError> {
        Ok(())
    }

    async fn release(&mut self, _retrieved: &[Uid]) {}
}

/// The POP3 session. The first byte picks the connection: bit 0 TLS, bit 1 plain-text
/// logins allowed, bit 2 the maildrop is in use by another session. The input up to the
/// first NUL byte is what the client sends; after it come up to four messages for the
/// maildrop, separated by NUL bytes (three fixed ones when there are none).
pub fn session(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.split(|b| *b == 0);
    let input = parts.next().unwrap_or_default();
    let mut messages: Vec<Vec<u8>> = parts.take(4).map(<[u8]>::to_vec).collect();
    if messages.is_empty() {
        messages = MESSAGES.iter().map(|m| m.to_vec()).collect();
    }
    for m in &messages {
        // LIST promises what RETR sends.
        let mut out = Vec::new();
        assert_eq!(
            transfer::write_message(&mut out, m, None),
            transfer::wire_size(m)
        );
        let _ = transfer::write_message(&mut out, m, Some(2));
    }
    let config = SessionConfig {
        allow_plaintext_auth: mode & 2 != 0,
        ..SessionConfig::new("pop.example.org")
    };
    let backend = Maildrop {
        messages,
        in_use: mode & 4 != 0,
    };
    let mut session = Session::new(config, backend, mode & 1 != 0);
    block_on(async {
        let mut out = Vec::new();
        session.greeting(&mut out);
        for line in input.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            out.clear();
            let control = if line.len() > MAX_LINE {
                session.line_too_long(&mut out)
            } else {
                session.handle_line(line, &mut out).await
            };
            match control {
                Control::Continue => {}
                Control::StartTls => session.tls_started(),
                Control::Close => return,
            }
        }
    });
}
