//! Fuzz target: the SMTP server session, driven without sockets from arbitrary bytes.
//!
//! The cargo-fuzz target in `fuzz/` calls it, and `tests/fuzz_corpus.rs` replays the
//! committed corpus and crash reproducers through it.

use std::net::IpAddr;
use std::sync::Arc;

use hermod_common::fuzzing::block_on;

use crate::envelope::{Envelope, QueueId};
use crate::session::{
    Action, AuthOutcome, BackendError, ConnectionInfo, LocalDomains, Role, Session, SessionBackend,
    SessionConfig,
};

/// A backend with two local domains, two users (alice can log in with `secret`) and a queue
/// that keeps nothing.
struct Backend;

impl LocalDomains for Backend {
    async fn is_local_domain(&self, domain: &str) -> Result<bool, BackendError> {
        Ok(domain == "example.org" || domain == "example.net")
    }
}

impl SessionBackend for Backend {
    async fn local_recipient_exists(&self, address: &str) -> Result<bool, BackendError> {
        if address.starts_with("broken@") {
            return Err(BackendError("database is locked".into()));
        }
        Ok(address == "alice@example.org" || address == "bob@example.net")
    }

    async fn authenticate(
        &self,
        username: &str,
        password: &str,
        _peer: IpAddr,
    ) -> Result<AuthOutcome, BackendError> {
        Ok(if username == "alice@example.org" && password == "secret" {
            AuthOutcome::Success {
                user: username.to_string(),
            }
        } else {
            AuthOutcome::Failure
        })
    }

    async fn may_send_as(&self, user: &str, address: &str) -> Result<bool, BackendError> {
        Ok(user == address)
    }

    async fn enqueue(
        &self,
        _id: &QueueId,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<(), BackendError> {
        if envelope.sender.starts_with("full@") {
            return Err(BackendError(format!("disk full ({} bytes)", message.len())));
        }
        Ok(())
    }
}

/// The SMTP session. The first byte picks the listener and connection: bits 0-1 the role
/// (port 25, 587, 465), bit 2 a client in `mynetworks`, bit 3 TLS already up, bit 4 small
/// limits (1 KiB messages, 3 recipients, 256-byte lines). The rest is what the client
/// sends; a `STARTTLS` that succeeds is followed by the TLS handshake, as if it had worked.
pub fn session(data: &[u8]) {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let role = match mode & 3 {
        0 | 3 => Role::Mx,
        1 => Role::Submission,
        _ => Role::Submissions,
    };
    let mut config = SessionConfig::new(role, "mx.example.org");
    if mode & 16 != 0 {
        config.max_message_size = 1024;
        config.max_recipients = 3;
        config.max_line_length = 256;
    }
    let conn = ConnectionInfo {
        peer: "203.0.113.9".parse().expect("an address"),
        relay_allowed: mode & 4 != 0,
        tls: (mode & 8 != 0 || role == Role::Submissions).then(|| "TLSv1.3".to_string()),
    };
    let mut session = Session::new(Arc::new(config), conn, Arc::new(Backend));
    block_on(async {
        let mut out = Vec::new();
        session.greeting(&mut out);
        for chunk in input.chunks(1500) {
            out.clear();
            match session.feed(chunk, &mut out).await {
                Action::Continue => {}
                Action::StartTls => session.tls_established("TLSv1.3"),
                Action::Close => return,
            }
        }
        out.clear();
        session.timeout(&mut out);
    });
}
