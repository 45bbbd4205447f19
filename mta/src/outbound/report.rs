//! The delivery status notification for a message whose last remote recipient was settled:
//! built with [`crate::bounce::build_dsn`], queued for the sender (local mailbox or remote)
//! from the null sender, and the original removed, in one queue transaction.

use std::collections::HashMap;

use crate::bounce::{DsnReport, build_dsn};
use crate::envelope::{Envelope, EnvelopeRecipient, Notify, QueueId};
use crate::queue::runner::reported_recipients;
use crate::queue::{NewMessage, Queue, QueueError, QueuedMessage, unix_now};

/// Queues the report for a finished `message` and removes the message. `remote_mtas` names
/// the server that gave the final reply, by recipient position, for `Remote-MTA:`.
pub async fn queue_report(
    queue: &Queue,
    hostname: &str,
    sender_is_local: bool,
    message: &QueuedMessage,
    remote_mtas: &HashMap<u32, String>,
) -> Result<QueueId, QueueError> {
    let id = &message.id;
    let recipients = reported_recipients(message);
    let original = match queue.read_message(id).await {
        Ok(content) => content,
        Err(e) => {
            tracing::error!(queue_id = %id, error = %e, "original missing for the bounce");
            Vec::new()
        }
    };
    let report_id = QueueId::generate();
    let message_id = format!("{report_id}@{hostname}");
    let mut content = build_dsn(&DsnReport {
        reporting_mta: hostname,
        original_sender: &message.sender,
        env_id: message.env_id.as_deref(),
        arrival: message.arrival,
        ret: message.ret,
        recipients: &recipients,
        original: &original,
        message_id: &message_id,
        now: unix_now(),
    });
    for rcpt in message.recipients.iter().filter(|r| !r.local) {
        if let Some(mta) = remote_mtas.get(&rcpt.position) {
            content = add_remote_mta(content, &rcpt.address, mta);
        }
    }
    let envelope = Envelope {
        sender: String::new(),
        recipients: vec![EnvelopeRecipient {
            address: message.sender.clone(),
            local: sender_is_local,
            notify: Notify {
                never: true,
                ..Notify::default()
            },
            orcpt: None,
        }],
        client: format!("bounce of {id}"),
        ..Envelope::default()
    };
    queue
        .complete(
            id,
            Some(NewMessage {
                id: &report_id,
                envelope: &envelope,
                content: &content,
            }),
        )
        .await?;
    tracing::info!(queue_id = %id, report_id = %report_id, to = %message.sender,
        "delivery status notification queued");
    Ok(report_id)
}

/// Adds `Remote-MTA: dns; <host>` after the `Status:` field of the recipient's block.
// The bounce builder has no Remote-MTA field yet (see notes/OUTBOUND_NEEDS.md); its output
// for a recipient is fixed text, so the field is placed there.
fn add_remote_mta(content: Vec<u8>, address: &str, mta: &str) -> Vec<u8> {
    let marker = format!("Final-Recipient: rfc822; {}\r\n", printable(address));
    let Some(block) = find(&content, marker.as_bytes()) else {
        return content;
    };
    let Some(status) = find(&content[block..], b"\r\nStatus: ").map(|i| block + i + 2) else {
        return content;
    };
    let Some(end) = find(&content[status..], b"\r\n").map(|i| status + i + 2) else {
        return content;
    };
    let field = format!("Remote-MTA: dns; {}\r\n", printable(mta));
    let mut out = Vec::with_capacity(content.len() + field.len());
    out.extend_from_slice(&content[..end]);
    out.extend_from_slice(field.as_bytes());
    out.extend_from_slice(&content[end..]);
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// As the bounce builder writes addresses: 7-bit, unprintables as `?`.
fn printable(text: &str) -> String {
    text.chars()
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
    fn remote_mta_goes_after_the_recipients_status() {
        let dsn = b"Reporting-MTA: dns; mx\r\n\r\nFinal-Recipient: rfc822; a@x.test\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 no\r\n\r\nFinal-Recipient: rfc822; b@x.test\r\nAction: failed\r\nStatus: 4.4.1\r\nDiagnostic-Code: smtp; 451 4.4.1 gone\r\n".to_vec();
        let out = add_remote_mta(dsn, "b@x.test", "mx2.x.test");
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(
            "Final-Recipient: rfc822; b@x.test\r\nAction: failed\r\nStatus: 4.4.1\r\nRemote-MTA: dns; mx2.x.test\r\nDiagnostic-Code"
        ));
        assert_eq!(text.matches("Remote-MTA").count(), 1);
        let unchanged = add_remote_mta(text.clone().into_bytes(), "c@x.test", "mx");
        assert_eq!(unchanged, text.into_bytes());
    }
}
