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

/// The ManageSieve framer and session, driven without sockets: the first byte picks the
/// state (bit 0: the connection is TLS, bit 1: logged in first); the rest is what the client
/// sends, cut into lines and literals as the connection loop does.
pub fn managesieve_session(data: &[u8]) {
    use crate::managesieve::command::{Framed, Framer};
    use crate::managesieve::memory::MemoryBackend;
    use crate::managesieve::session::{Control, Session, SessionConfig};
    let Some((&mode, mut input)) = data.split_first() else {
        return;
    };
    let mut config = SessionConfig::new("mx.example.org");
    config.max_script_size = 300;
    config.max_scripts = 3;
    let mut session = Session::new(config, MemoryBackend::default(), mode & 1 != 0);
    let mut framer = Framer::new();
    let mut out = Vec::new();
    hermod_common::fuzzing::block_on(async {
        session.greeting(&mut out);
        if mode & 2 != 0 {
            let login = b"AUTHENTICATE \"PLAIN\" \"AGFsaWNlQGV4YW1wbGUub3JnAHB3\"";
            if let Framed::Command(args) = framer.line(login, 8192) {
                session.handle(args, &mut out).await;
            }
        }
        while !input.is_empty() {
            let end = input
                .iter()
                .position(|b| *b == b'\n')
                .unwrap_or(input.len());
            let mut line = &input[..end];
            input = input.get(end + 1..).unwrap_or(&[]);
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let control = if line.len() > 1024 {
                framer.reset();
                session.bad_command("Line too long", &mut out)
            } else {
                match framer.line(line, session.max_literal()) {
                    Framed::Command(args) => session.handle(args, &mut out).await,
                    Framed::Error(e) => session.bad_command(&e, &mut out),
                    Framed::Literal(n) | Framed::TooBig(n) => {
                        let n = n.min(input.len());
                        framer.literal(input[..n].to_vec());
                        input = &input[n..];
                        Control::Continue
                    }
                }
            };
            if control == Control::StartTls {
                framer.reset();
                session.tls_started(&mut out);
            }
            if control == Control::Close {
                break;
            }
            out.clear();
        }
    });
}

/// Sieve: the script compiler on arbitrary text, and every script that compiles run on a
/// message (the input's bytes after the first NUL, else a fixed one), with a host that has
/// INBOX and Junk, includes nothing and never saw a duplicate.
pub fn sieve(data: &[u8]) {
    use crate::sieve::{NamedScript, SieveEnvelope, SieveHost, SieveMessage, compile, execute};

    struct Host;
    impl SieveHost for Host {
        fn include(&mut self, name: &str, _global: bool) -> Result<crate::sieve::Script, String> {
            Err(format!("no script {name}"))
        }
        fn mailbox_exists(&self, name: &str) -> bool {
            name == "INBOX" || name == "Junk"
        }
        fn duplicate(&mut self, _id: &str, _period: u64, _last: bool) -> bool {
            false
        }
        fn now(&self) -> i64 {
            1_764_720_000
        }
    }

    let (script, message) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (
            data,
            &b"From: a@example.org\r\nTo: b@example.net\r\nSubject: Hi =?utf-8?q?there?=\r\nX-Spam-Score: 7.5\r\n\r\nbody text\r\n"[..],
        ),
    };
    let Ok(source) = std::str::from_utf8(script) else {
        return;
    };
    let Ok(compiled) = compile(source) else {
        return;
    };
    let scripts = [NamedScript {
        name: "fuzz".into(),
        script: compiled,
    }];
    let envelope = SieveEnvelope {
        from: "a+tag@example.org".into(),
        to: "b@example.net".into(),
        orig_to: "b+x@example.net".into(),
        auth_user: None,
    };
    let _ = execute(
        &scripts,
        &SieveMessage::new(message, message.len() as u64),
        &envelope,
        &mut Host,
    );
}
