//! `hermod deliver --recipient ADDR [--sender ADDR] < message`: the local delivery agent
//! for other MTAs (Postfix `mailbox_command`, procmail-style pipes). The exit code is a
//! sysexits(3) code, which MTAs map to delivered / retry / bounce.

use hermod_common::Context;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::delivery::Delivery;
use crate::message::strip_mbox_from_line;

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

/// Reads the message from `input` (stdin), at most `limit + 1` bytes when `limit` > 0 so
/// that an oversized message is noticed without reading it all into memory.
pub async fn read_message<R: AsyncRead + Unpin>(input: R, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut message = Vec::new();
    if limit > 0 {
        input
            .take(limit.saturating_add(1))
            .read_to_end(&mut message)
            .await?;
    } else {
        let mut input = input;
        input.read_to_end(&mut message).await?;
    }
    Ok(message)
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
    let sender = sender
        .map(str::to_string)
        .or_else(|| mbox_from_sender(message))
        .unwrap_or_default();
    let message = strip_mbox_from_line(message);
    let delivery = Delivery::from_context(ctx)
        .local_only()
        .without_loop_check();
    let limit = delivery.size_limit();
    if limit > 0 && message.len() as u64 > limit {
        eprintln!(
            "hermod deliver: 552 5.3.4 message too big ({} bytes; message_size_limit is {limit})",
            message.len()
        );
        return EX_DATAERR;
    }
    let result = delivery.deliver_one(&sender, recipient, message).await;
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

    #[tokio::test]
    async fn reading_stops_just_past_the_limit() {
        let data = [b'x'; 100];
        assert_eq!(read_message(&data[..], 10).await.unwrap().len(), 11);
        assert_eq!(read_message(&data[..], 0).await.unwrap().len(), 100);
        assert_eq!(read_message(&data[..], 1000).await.unwrap().len(), 100);
    }
}
