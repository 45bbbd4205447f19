//! Text views of the queue for `hermod queue list` and `hermod queue show`, in the shape of
//! Postfix's `mailq` so an admin reads them at a glance.

use std::fmt::Write;

use super::{QueuedMessage, RecipientStatus};
use crate::session::message::rfc5322_date;

/// `mailq`-style listing: one block per message (id, size, arrival, sender), then each
/// recipient that is not delivered yet with its status and last reply.
pub fn mailq(messages: &[QueuedMessage]) -> String {
    if messages.is_empty() {
        return "Mail queue is empty\n".to_string();
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:>9}  {:<31}  Sender/Recipient",
        "Queue ID", "Size", "Arrival Time"
    );
    let mut bytes = 0u64;
    for m in messages {
        bytes += m.size;
        let sender = if m.sender.is_empty() {
            "MAILER-DAEMON"
        } else {
            &m.sender
        };
        let _ = writeln!(
            out,
            "{:<20} {:>9}  {:<31}  {sender}",
            m.id.as_str(),
            m.size,
            rfc5322_date(m.arrival)
        );
        for r in m.recipients.iter().filter(|r| !r.status.is_final()) {
            if let Some(reply) = &r.last_reply {
                let _ = writeln!(out, "{:>66}({reply})", "");
            }
            let _ = writeln!(
                out,
                "{:>66}{}  [{}{}, {} attempt{}]",
                "",
                r.address,
                r.status.as_str(),
                if r.local { ", local" } else { "" },
                r.attempts,
                if r.attempts == 1 { "" } else { "s" }
            );
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "-- {} Kbytes in {} Request{}.",
        bytes.div_ceil(1024),
        messages.len(),
        if messages.len() == 1 { "" } else { "s" }
    );
    out
}

/// Everything the queue knows about one message, for `hermod queue show`.
pub fn details(m: &QueuedMessage) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Queue ID:    {}", m.id);
    let _ = writeln!(out, "Arrival:     {}", rfc5322_date(m.arrival));
    let _ = writeln!(out, "Size:        {} bytes", m.size);
    let _ = writeln!(
        out,
        "Sender:      <{}>{}",
        m.sender,
        if m.sender.is_empty() {
            " (delivery status notification)"
        } else {
            ""
        }
    );
    if let Some(user) = &m.auth_user {
        let _ = writeln!(out, "Submitted by: {user}");
    }
    let _ = writeln!(out, "Client:      {}", m.client);
    if let Some(ret) = m.ret {
        let _ = writeln!(out, "DSN RET:     {}", ret.as_str());
    }
    if let Some(env_id) = &m.env_id {
        let _ = writeln!(out, "DSN ENVID:   {env_id}");
    }
    if !m.body_type.as_str().is_empty() {
        let _ = writeln!(out, "Body:        {}", m.body_type.as_str());
    }
    if m.smtputf8 {
        let _ = writeln!(out, "SMTPUTF8:    yes");
    }
    if m.delay_warned {
        let _ = writeln!(out, "Delay:       the sender was warned");
    }
    for r in &m.recipients {
        let _ = writeln!(
            out,
            "Recipient:   <{}> {} ({}), {} attempt{}",
            r.address,
            r.status.as_str(),
            if r.local { "local" } else { "remote" },
            r.attempts,
            if r.attempts == 1 { "" } else { "s" }
        );
        if matches!(
            r.status,
            RecipientStatus::Pending | RecipientStatus::Deferred
        ) {
            let _ = writeln!(
                out,
                "             next attempt {}",
                rfc5322_date(r.next_attempt)
            );
        }
        if let Some(reply) = &r.last_reply {
            let _ = writeln!(out, "             last reply: {reply}");
        }
        if let Some(orcpt) = &r.orcpt {
            let _ = writeln!(out, "             original recipient: {orcpt}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{BodyType, Notify, QueueId};
    use crate::queue::QueuedRecipient;

    fn sample() -> QueuedMessage {
        QueuedMessage {
            id: QueueId::parse("0123456789ABCDEF0123").unwrap(),
            sender: "a@example.net".into(),
            ret: None,
            env_id: None,
            body_type: BodyType::Unspecified,
            smtputf8: false,
            auth_user: None,
            client: "[192.0.2.1] c".into(),
            size: 5120,
            arrival: 0,
            delay_warned: true,
            recipients: vec![
                QueuedRecipient {
                    position: 0,
                    address: "x@remote.test".into(),
                    local: false,
                    notify: Notify::default(),
                    orcpt: None,
                    status: RecipientStatus::Deferred,
                    attempts: 2,
                    next_attempt: 600,
                    last_attempt: Some(300),
                    last_reply: Some("451 4.4.1 no answer".into()),
                },
                QueuedRecipient {
                    position: 1,
                    address: "done@example.org".into(),
                    local: true,
                    notify: Notify::default(),
                    orcpt: None,
                    status: RecipientStatus::Sent,
                    attempts: 1,
                    next_attempt: 0,
                    last_attempt: Some(0),
                    last_reply: Some("250 2.0.0 delivered".into()),
                },
            ],
        }
    }

    #[test]
    fn mailq_lists_undelivered_recipients() {
        let text = mailq(&[sample()]);
        assert!(text.contains("0123456789ABCDEF0123"));
        assert!(text.contains("a@example.net"));
        assert!(text.contains("(451 4.4.1 no answer)"));
        assert!(text.contains("x@remote.test  [deferred, 2 attempts]"));
        assert!(!text.contains("done@example.org"));
        assert!(text.ends_with("-- 5 Kbytes in 1 Request.\n"));
        assert_eq!(mailq(&[]), "Mail queue is empty\n");
    }

    #[test]
    fn details_show_every_recipient() {
        let text = details(&sample());
        assert!(text.contains("Recipient:   <x@remote.test> deferred (remote), 2 attempts"));
        assert!(text.contains("Recipient:   <done@example.org> sent (local), 1 attempt\n"));
        assert!(text.contains("last reply: 451 4.4.1 no answer"));
        assert!(text.contains("Delay:       the sender was warned\n"));
    }
}
