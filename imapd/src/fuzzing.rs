//! Fuzz targets: the session, the framer, the pre-parser, the MIME builder and
//! SEARCH/SORT/THREAD, each driven without sockets from arbitrary bytes.
//!
//! The cargo-fuzz targets in `fuzz/` call these functions, and `tests/fuzz_corpus.rs`
//! replays the committed corpora and crash reproducers through them.

use std::cell::RefCell;
use std::sync::Arc;

use hermod_common::auth::Authenticator;
use hermod_common::directory::Directory;
use hermod_common::fuzzing::{ScratchDir, block_on, process_dir};
use hermod_common::store::{Store, StoreConfig};

use crate::framer::{Frame, Framer};
use crate::mime::section::{self, Section, Spec};
use crate::mime::{self, envelope, header, parsed::Parsed, structure, subject, summary};
use crate::output::Out;
use crate::session::{Account, Next, Session, Settings, Shared};
use crate::{date, extended};

const USER: &str = "alice@example.org";
const PASSWORD: &str = "secret";

/// Messages every session's INBOX starts with: a plain one and a multipart with an
/// attached message, so FETCH, SEARCH, SORT and THREAD have something to work on.
const PLAIN: &[u8] = b"From: Bob <bob@example.net>\r\nTo: alice@example.org\r\nSubject: Re: lunch\r\nDate: Mon, 1 Jun 2020 10:00:00 +0000\r\nMessage-ID: <1@example.net>\r\nIn-Reply-To: <0@example.net>\r\n\r\nSee you at noon.\r\n";
const MULTIPART: &[u8] = b"From: =?utf-8?q?Ren=C3=A9?= <rene@example.com>\r\nTo: alice@example.org, \"Carol\" <carol@example.org>\r\nSubject: report\r\nDate: Tue, 2 Jun 2020 11:30:00 +0200\r\nMessage-ID: <2@example.com>\r\nReferences: <0@example.net> <1@example.net>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nCaf=C3=A9\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nFrom: x@example.org\r\n\r\ninner body\r\n--b1--\r\n";

thread_local! {
    /// The user directory (one argon2 hash per thread, not per input).
    static DIRECTORY: RefCell<Option<Directory>> = const { RefCell::new(None) };
}

fn directory() -> Directory {
    DIRECTORY.with(|cell| {
        cell.borrow_mut()
            .get_or_insert_with(|| {
                let path = process_dir().join(format!(
                    "directory-{:?}.sqlite",
                    std::thread::current().id()
                ));
                block_on(async {
                    let dir = Directory::open(&path, &["example.org".into()])
                        .await
                        .expect("directory");
                    if dir.user(USER).await.ok().flatten().is_none() {
                        dir.add_user(USER, PASSWORD, 0).await.expect("user");
                    }
                    dir
                })
            })
            .clone()
    })
}

/// The store a session starts with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Template {
    /// alice's store as first opened: INBOX and the special-use folders, no messages.
    Empty,
    /// With [`PLAIN`] and [`MULTIPART`] in INBOX.
    TwoMessages,
}

thread_local! {
    /// The template stores, made once per thread: copying one is much faster than making
    /// a user's store (its index, six folders) for every input.
    static TEMPLATES: RefCell<Vec<(Template, std::path::PathBuf)>> = const { RefCell::new(Vec::new()) };
}

fn template_dir(template: Template) -> std::path::PathBuf {
    TEMPLATES.with(|cell| {
        if let Some((_, dir)) = cell.borrow().iter().find(|(t, _)| *t == template) {
            return dir.clone();
        }
        let dir = process_dir().join(format!(
            "template-{:?}-{}",
            std::thread::current().id(),
            template as u8
        ));
        let _ = std::fs::remove_dir_all(&dir);
        block_on(async {
            let store = Store::new(StoreConfig::maildir(&dir));
            let user = store.user("alice", "example.org").await.expect("a store");
            if template == Template::TwoMessages {
                for m in [PLAIN, MULTIPART] {
                    user.deliver("INBOX", m).await.expect("delivered");
                }
            }
        });
        cell.borrow_mut().push((template, dir.clone()));
        dir
    })
}

/// Copies a directory tree (without SQLite's shared-memory index, which is rebuilt).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if !entry.file_name().to_string_lossy().ends_with("-shm") {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// One session over a fresh store: its parts and the scratch directory they live in.
struct Rig {
    shared: Arc<Shared>,
    store: Store,
    _scratch: ScratchDir,
}

impl Rig {
    fn new(settings: Settings, template: Template) -> Rig {
        let scratch = ScratchDir::new();
        copy_tree(&template_dir(template), scratch.path()).expect("a copy of the template");
        let store = Store::new(StoreConfig::maildir(scratch.path()));
        let shared = Arc::new(Shared {
            store: store.clone(),
            // A throttle per input: failed logins of earlier inputs must not slow this one.
            auth: Authenticator::new(directory(), 3),
            tls: None,
            junk_feedback: None,
            settings,
        });
        Rig {
            shared,
            store,
            _scratch: scratch,
        }
    }

    /// Logs the session in without a password check, with `messages` added to INBOX.
    async fn log_in(&self, session: &mut Session, messages: &[&[u8]]) -> bool {
        let Ok(user) = self.store.user("alice", "example.org").await else {
            return false;
        };
        for m in messages {
            if user.deliver("INBOX", m).await.is_err() {
                return false;
            }
        }
        session.account = Some(Account {
            user,
            address: USER.into(),
            quota_bytes: 1_000_000,
        });
        true
    }
}

/// Feeds `input` to `session` through a framer the way the connection loop does, until the
/// input is used up or the session ends. Returns the session's answers (the first 64 KiB).
async fn drive(session: &mut Session, settings: &Settings, input: &[u8]) -> Vec<u8> {
    let mut framer = Framer::new(settings.max_line, settings.max_literal);
    let mut out = Out::buffer();
    let mut answers = Vec::new();
    // In pieces, as TCP delivers them: the framer must not care where reads end.
    for chunk in input.chunks(4096) {
        framer.push(chunk);
        while let Some(frame) = framer.next_frame() {
            let result = session.handle(frame, &mut out).await;
            let taken = out.take();
            if answers.len() < 64 * 1024 {
                answers.extend_from_slice(&taken);
            }
            match result {
                Ok(Next::Command) => framer.set_line_mode(false),
                Ok(Next::Line | Next::Idle) => framer.set_line_mode(true),
                // No TLS or deflate here: the connection would change streams.
                Ok(Next::StartTls | Next::Compress | Next::Logout) | Err(_) => return answers,
            }
        }
    }
    answers
}

/// The IMAP session. The first byte picks the start: bit 0 a TLS connection, bit 1
/// logged in (INBOX holds two messages), bit 2 INBOX selected, bit 3 small limits
/// (1 KiB lines and literals); the rest is what the client sends.
pub fn session(data: &[u8]) {
    session_answers(data);
}

/// [`session`], returning what the session answered to the input.
fn session_answers(data: &[u8]) -> Vec<u8> {
    let Some((&mode, input)) = data.split_first() else {
        return Vec::new();
    };
    let mut settings = Settings {
        allow_plaintext_auth: false,
        ..Settings::default()
    };
    if mode & 8 != 0 {
        settings.max_line = 1024;
        settings.max_literal = 1024;
    }
    let rig = Rig::new(settings.clone(), Template::TwoMessages);
    block_on(async {
        let mut s = Session::new(
            rig.shared.clone(),
            "192.0.2.7".parse().unwrap(),
            mode & 1 != 0,
        );
        if mode & 2 != 0 {
            if !rig.log_in(&mut s, &[]).await {
                return Vec::new();
            }
            if mode & 4 != 0 {
                drive(&mut s, &settings, b"s SELECT INBOX\r\n").await;
            }
        }
        drive(&mut s, &settings, input).await
    })
}

/// SEARCH, SORT and THREAD over messages from the input. The first line is a command
/// without its tag (`UID SORT (DATE) UTF-8 ALL`); the rest holds up to four messages,
/// separated by NUL bytes, delivered to INBOX before it is selected.
pub fn search(data: &[u8]) {
    search_answers(data);
}

/// [`search`], returning what the session answered to the command.
fn search_answers(data: &[u8]) -> Vec<u8> {
    let (command, messages) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let command = command.strip_suffix(b"\r").unwrap_or(command);
    let (template, messages): (_, Vec<&[u8]>) = if messages.is_empty() {
        (Template::TwoMessages, Vec::new())
    } else {
        (
            Template::Empty,
            messages.split(|b| *b == 0).take(4).collect(),
        )
    };
    let settings = Settings::default();
    let rig = Rig::new(settings.clone(), template);
    block_on(async {
        let mut s = Session::new(rig.shared.clone(), "192.0.2.7".parse().unwrap(), true);
        if !rig.log_in(&mut s, &messages).await {
            return Vec::new();
        }
        drive(&mut s, &settings, b"s SELECT INBOX\r\n").await;
        let mut line = b"x ".to_vec();
        line.extend_from_slice(command);
        line.extend_from_slice(b"\r\n");
        drive(&mut s, &settings, &line).await
    })
}

/// The framer alone. The first byte sets the limits (bits 0-3: line limit 2^n * 16 bytes,
/// bits 4-7: literal limit 2^n * 16 bytes); each frame's first byte, in the rest of the
/// input, also decides whether the next frame is read in line mode.
pub fn framer(data: &[u8]) {
    let Some((&limits, input)) = data.split_first() else {
        return;
    };
    let max_line = 16usize << (limits & 0x0f);
    let max_literal = 16u64 << (limits >> 4);
    let mut framer = Framer::new(max_line, max_literal);
    let mut pushed = 0;
    // Pieces of varying size, as reads come.
    let mut size = 1;
    while pushed < input.len() {
        let end = (pushed + size).min(input.len());
        framer.push(&input[pushed..end]);
        pushed = end;
        size = size * 3 % 257 + 1;
        while let Some(frame) = framer.next_frame() {
            let bytes = match &frame {
                Frame::Command(b) | Frame::Line(b) => b.len(),
                _ => 0,
            };
            assert!(
                bytes <= input.len() + 2,
                "a frame cannot be longer than the input"
            );
            framer.set_line_mode(matches!(&frame, Frame::Command(b) if b.first() == Some(&b'+')));
        }
        let _ = framer.in_command();
        framer.shrink();
    }
}

/// The pre-parser for command forms imap-codec does not read (LIST-EXTENDED, ESEARCH,
/// CREATE USE, MULTIAPPEND), on every line of the input.
pub fn extended(data: &[u8]) {
    let _ = extended::tokenize(data);
    let _ = extended::parse(data);
    let _ = extended::quoted_8bit_to_literals(data);
    // The IMAP URLs CATENATE reads, and their sections.
    let _ = crate::imap_url::parse(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::imap_url::parse_section(text);
    }
    if let Ok(tokens) = extended::tokenize(data) {
        let items: Vec<_> = tokens.into_iter().map(|(_, t)| t).collect();
        let _ = extended::status_items(&items);
    }
}

/// ENVELOPE, BODY, BODYSTRUCTURE, BODY[section] and the SORT/THREAD summaries of a message.
pub fn mime(data: &[u8]) {
    let parsed = Parsed::compute(data);
    assert_eq!(Parsed::decode(&parsed.encode()).as_ref(), Some(&parsed));
    let _ = structure::of_message(data, true);
    let head = &data[..header::body_start(data)];
    let mut out = Vec::new();
    envelope::write(&mut out, head);
    let sum = summary::summarize(head);
    let _ = subject::base_subject(&sum.subject).key();
    let _ = header::first_value(head, "content-type");
    let tree = mime::parse(data);
    let mut paths: Vec<Vec<u32>> =
        vec![vec![], vec![1], vec![2], vec![1, 1], vec![2, 1], vec![2, 2]];
    paths.push(vec![1, 2, 1]);
    for part in paths {
        for spec in [
            Spec::Whole,
            Spec::Header,
            Spec::Text,
            Spec::Mime,
            Spec::HeaderFields {
                names: vec![b"subject".to_vec(), b"from".to_vec()],
                not: false,
            },
            Spec::HeaderFields {
                names: vec![b"received".to_vec()],
                not: true,
            },
        ] {
            let section = Section {
                part: part.clone(),
                spec,
            };
            if let Some(bytes) = section::extract_from(data, &tree, &section) {
                let _ = section::partial(&bytes, 3, 100);
            }
            let _ = section::extract(data, &section);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = date::parse_date_time(text);
        let _ = envelope::encode_word(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_target_reaches_the_selected_state_with_two_messages() {
        let out = session_answers(b"\x07a FETCH 1:* (ENVELOPE BODYSTRUCTURE)\r\nb LOGOUT\r\n");
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains("* 2 FETCH (ENVELOPE"), "{out}");
        assert!(out.contains("a OK") && out.contains("b OK"), "{out}");
    }

    #[test]
    fn the_session_target_logs_in_with_the_directory() {
        let out = session_answers(b"\x01a LOGIN alice@example.org secret\r\nb SELECT INBOX\r\n");
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains("a OK") && out.contains("b OK"), "{out}");
    }

    #[test]
    fn the_search_target_delivers_the_input_messages() {
        let out = search_answers(
            b"UID SORT (REVERSE SUBJECT) UTF-8 ALL\nSubject: a\r\n\r\nx\0Subject: b\r\n\r\ny",
        );
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains("* SORT 2 1\r\nx OK"), "{out}");
    }
}
