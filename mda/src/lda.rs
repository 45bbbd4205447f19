//! `hermod deliver --recipient ADDR [--sender ADDR] < message`: the local delivery agent
//! for other MTAs (Postfix `mailbox_command`, procmail-style pipes). The exit code is a
//! sysexits(3) code, which MTAs map to delivered / retry / bounce.

use std::io;
use std::path::{Path, PathBuf};

use hermod_common::Context;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::content::{Content, FileContent};
use crate::delivery::Delivery;
use crate::message::strip_mbox_from_line;
use crate::spool::{SPOOL_THRESHOLD, SpoolFile};

/// Delivered.
pub const EX_OK: u8 = 0;
/// The message was refused for its content (too big): bounce.
pub const EX_DATAERR: u8 = 65;
/// No such local user: bounce.
pub const EX_NOUSER: u8 = 67;
/// The mailbox refused the message for good (over quota, loop, unusable mailbox): bounce.
pub const EX_CANTCREAT: u8 = 73;
/// Try again later (mailbox locked, I/O error, directory unavailable).
pub const EX_TEMPFAIL: u8 = 75;

/// The message as read from stdin: in memory when small, else in a spool file (deleted when
/// this is dropped), so `hermod deliver` of a 40 MB message never holds it whole.
pub enum Input {
    Memory(Vec<u8>),
    Spooled {
        file: SpoolFile,
        /// The sender of the leading mbox `From ` line (the line itself is not in the file).
        from_sender: Option<String>,
    },
}

/// How much is read from stdin at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Fills `buf` up to `want` bytes from `input`; stops early only at the end of the input.
async fn fill<R: AsyncRead + Unpin>(
    input: &mut R,
    buf: &mut Vec<u8>,
    want: usize,
) -> io::Result<()> {
    while buf.len() < want {
        let before = buf.len();
        buf.resize(want.min(before + READ_CHUNK), 0);
        let n = input.read(&mut buf[before..]).await?;
        buf.truncate(before + n);
        if n == 0 {
            break;
        }
    }
    Ok(())
}

/// Reads the message from `input` (stdin), at most `limit + 1` bytes when `limit` > 0 so
/// that an oversized message is noticed without reading it all. Up to [`SPOOL_THRESHOLD`]
/// it stays in memory; a bigger one goes to a spool file in `spool_dir` as it is read, its
/// leading mbox `From ` line (a Postfix `mailbox_command` adds one) left out, its line
/// endings kept as given.
pub async fn read_input<R: AsyncRead + Unpin>(
    input: R,
    limit: u64,
    spool_dir: &Path,
) -> io::Result<Input> {
    let cap = if limit > 0 {
        limit.saturating_add(1)
    } else {
        u64::MAX
    };
    let mut input = input.take(cap);
    let mut head = Vec::new();
    fill(&mut input, &mut head, SPOOL_THRESHOLD + 1).await?;
    if head.len() <= SPOOL_THRESHOLD {
        return Ok(Input::Memory(head));
    }
    let from_sender = mbox_from_sender(&head);
    if head.starts_with(b"From ") {
        // Drop the `From ` line, however long (its end may be further on).
        loop {
            if let Some(i) = head.iter().position(|b| *b == b'\n') {
                head.drain(..=i);
                break;
            }
            head.clear();
            fill(&mut input, &mut head, READ_CHUNK).await?;
            if head.is_empty() {
                break;
            }
        }
    }
    let mut file = SpoolFile::create_in(spool_dir)?;
    loop {
        file.write_as_is(&head)?;
        head.clear();
        fill(&mut input, &mut head, READ_CHUNK).await?;
        if head.is_empty() {
            break;
        }
    }
    file.sync()?;
    Ok(Input::Spooled { file, from_sender })
}

/// Where `hermod deliver` spools a big message: the system's temporary directory (`TMPDIR`),
/// which any user an MTA runs the LDA as can write; the file is private (mode 0600).
pub fn spool_dir() -> PathBuf {
    std::env::temp_dir()
}

/// The sender of a leading mbox `From sender date` line, if the message starts with one.
fn mbox_from_sender(message: &[u8]) -> Option<String> {
    let line = message.strip_prefix(b"From ")?;
    let end = line.iter().position(|b| b.is_ascii_whitespace())?;
    let sender = std::str::from_utf8(&line[..end]).ok()?;
    (!sender.is_empty() && sender != "MAILER-DAEMON").then(|| sender.to_string())
}

/// Delivers `message` to `recipient` and returns the sysexits code; on failure one line
/// goes to stderr (MTAs put it into the bounce or the log). Without `sender`, the sender of
/// a leading mbox `From ` line is used, else the null sender. The leading `From ` line
/// itself is dropped. Line ends are stored as given.
pub async fn deliver_stdin(
    ctx: &Context,
    recipient: &str,
    sender: Option<&str>,
    message: &[u8],
) -> u8 {
    deliver_input(ctx, recipient, sender, Input::Memory(message.to_vec())).await
}

/// [`deliver_stdin`] of what [`read_input`] read: a spooled message is copied into the
/// mailbox from its file.
pub async fn deliver_input(
    ctx: &Context,
    recipient: &str,
    sender: Option<&str>,
    input: Input,
) -> u8 {
    let (file, from_sender) = match &input {
        Input::Memory(m) => (None, mbox_from_sender(m)),
        Input::Spooled { file, from_sender } => match FileContent::open_async(file.path()).await {
            Ok(f) => (Some(f), from_sender.clone()),
            Err(e) => {
                eprintln!("hermod deliver: 451 4.3.0 cannot read the spooled message: {e}");
                return EX_TEMPFAIL;
            }
        },
    };
    let message = match (&input, &file) {
        (_, Some(f)) => Content::File(f),
        (Input::Memory(m), None) => Content::Memory(strip_mbox_from_line(m)),
        (Input::Spooled { .. }, None) => return EX_TEMPFAIL,
    };
    let sender = sender
        .map(str::to_string)
        .or(from_sender)
        .unwrap_or_default();
    let delivery = Delivery::from_context(ctx)
        .local_only()
        .without_loop_check();
    let limit = delivery.size_limit();
    if limit > 0 && message.len() > limit {
        eprintln!(
            "hermod deliver: 552 5.3.4 message too big ({} bytes; message_size_limit is {limit})",
            message.len()
        );
        return EX_DATAERR;
    }
    let result = delivery.deliver_content(&sender, recipient, message).await;
    if result.is_success() {
        return EX_OK;
    }
    eprintln!("hermod deliver: {}", result.reply);
    let reply = &result.reply;
    if reply.is_temporary() {
        EX_TEMPFAIL
    } else if reply.status == [5, 1, 1] {
        EX_NOUSER
    } else if reply.status == [5, 3, 4] {
        EX_DATAERR
    } else {
        EX_CANTCREAT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_of_an_mbox_from_line() {
        assert_eq!(
            mbox_from_sender(b"From alice@x.org  Thu Jan  1 00:00:00 1970\nS: x\n"),
            Some("alice@x.org".into())
        );
        assert_eq!(mbox_from_sender(b"From MAILER-DAEMON Thu Jan 1\n"), None);
        assert_eq!(mbox_from_sender(b"From: alice@x.org\n"), None);
    }

    fn read(input: &[u8], limit: u64, dir: &Path) -> Input {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(read_input(input, limit, dir))
            .unwrap()
    }

    #[test]
    fn reading_stops_just_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let data = [b'x'; 100];
        let len = |i: Input| match i {
            Input::Memory(m) => m.len(),
            Input::Spooled { .. } => panic!("spooled"),
        };
        assert_eq!(len(read(&data, 10, dir.path())), 11);
        assert_eq!(len(read(&data, 0, dir.path())), 100);
        assert_eq!(len(read(&data, 1000, dir.path())), 100);
    }

    #[test]
    fn a_big_message_is_spooled_without_its_from_line_and_with_its_line_endings() {
        let dir = tempfile::tempdir().unwrap();
        let mut message = b"Subject: big\n\nbare LF\nCRLF\r\nlone CR\r".to_vec();
        message.resize(3 * SPOOL_THRESHOLD, b'x');
        let mut from_line = b"From alice@x.org Thu Jan  1 00:00:00 1970".to_vec();
        from_line.resize(2 * SPOOL_THRESHOLD, b' ');
        from_line.push(b'\n');
        for (input, sender) in [
            ([&from_line[..], &message[..]].concat(), Some("alice@x.org")),
            (message.clone(), None),
        ] {
            let Input::Spooled { file, from_sender } = read(&input, 0, dir.path()) else {
                panic!("not spooled");
            };
            assert_eq!(from_sender.as_deref(), sender);
            assert_eq!(std::fs::read(file.path()).unwrap(), message);
            let path = file.path().to_path_buf();
            drop(file);
            assert!(!path.exists(), "the spool file is removed");
        }
        // Past the limit, reading stops one byte after it.
        let Input::Spooled { file, .. } = read(&message, 2 * SPOOL_THRESHOLD as u64, dir.path())
        else {
            panic!("not spooled");
        };
        assert_eq!(file.len(), 2 * SPOOL_THRESHOLD as u64 + 1);
    }
}
