//! Fuzz target: the LMTP server session, driven without sockets from arbitrary bytes.
//!
//! The cargo-fuzz target in `fuzz/` calls it, and `tests/fuzz_corpus.rs` replays the
//! committed corpus and crash reproducers through it.

use crate::lmtp::session::{Action, Session, SessionConfig};
use crate::reply::Reply;

/// The LMTP session. The first byte picks the limits: bit 0 small ones (1 KiB messages,
/// 3 recipients, 510-byte lines, 5 errors). The rest is what the client sends, in pieces;
/// recipients starting with `bad` are unknown, and delivery fails for every other
/// recipient of a message that contains `FAIL`.
pub fn lmtp_session(data: &[u8]) {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let cfg = if mode & 1 != 0 {
        SessionConfig {
            hostname: "mx.example.org".into(),
            size_limit: 1024,
            max_recipients: 3,
            max_line_length: 510,
            max_errors: 5,
            spool_dir: None,
        }
    } else {
        SessionConfig {
            hostname: "mx.example.org".into(),
            size_limit: 25 * 1024 * 1024,
            max_recipients: 100,
            max_line_length: 4096,
            max_errors: 10,
            spool_dir: None,
        }
    };
    let mut session = Session::new(cfg);
    for chunk in input.chunks(1000) {
        session.feed(chunk);
        loop {
            match session.next_action() {
                Action::NeedInput => break,
                Action::Close => return,
                Action::CheckRecipient(address) => {
                    let result = if address.starts_with("bad") {
                        Err(Reply::new(
                            550,
                            [5, 1, 1],
                            format!("<{address}>: no such user"),
                        ))
                    } else {
                        Ok(())
                    };
                    session.recipient_checked(result);
                }
                Action::Deliver {
                    envelope,
                    mut message,
                } => {
                    // No spool directory: the message is all in memory.
                    let fail = message.buffer().windows(4).any(|w| w == b"FAIL");
                    let replies = envelope
                        .recipients
                        .iter()
                        .enumerate()
                        .map(|(i, _)| {
                            if fail && i % 2 == 1 {
                                Reply::new(452, [4, 2, 2], "Mailbox full")
                            } else {
                                Reply::new(250, [2, 0, 0], "Delivered")
                            }
                        })
                        .collect();
                    session.delivered(replies);
                }
            }
            let _ = session.take_output();
        }
    }
    session.timed_out();
    let _ = session.take_output();
}
