//! Delivery status notifications (RFC 3464): the multipart/report sent back to the envelope
//! sender when delivery failed (a bounce), is still being retried after `delay_warning_time`
//! (a delay warning) or, if asked with `NOTIFY=SUCCESS`, succeeded. A DSN is sent from the
//! null sender `<>`, so a DSN is never answered by another DSN; its header From is
//! `MAILER-DAEMON@<myorigin>`, and `Reporting-MTA` names this host (`myhostname`).

use mail_builder::MessageBuilder;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};

use crate::envelope::DsnReturn;
use crate::session::message::{header_section, rfc5322_date};

/// Original messages larger than this are returned as headers only.
pub const MAX_RETURNED_SIZE: usize = 1024 * 1024;

/// What happened to a recipient (RFC 3464 2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnAction {
    Failed,
    Delayed,
    Delivered,
    Relayed,
}

impl DsnAction {
    fn as_str(self) -> &'static str {
        match self {
            DsnAction::Failed => "failed",
            DsnAction::Delayed => "delayed",
            DsnAction::Delivered => "delivered",
            DsnAction::Relayed => "relayed",
        }
    }
}

/// One recipient in a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsnRecipient {
    pub address: String,
    /// `ORCPT` from RCPT TO, with its type (`rfc822;user@example.org`).
    pub orcpt: Option<String>,
    pub action: DsnAction,
    /// The reply that decided it (`550 5.1.1 No such user`).
    pub reply: String,
    /// Unix seconds.
    pub last_attempt: Option<i64>,
    /// The remote server that gave `reply` (`Remote-MTA: dns; mx.example.org`).
    pub remote_mta: Option<String>,
    /// For a delay: until when delivery is retried (unix seconds, `Will-Retry-Until`).
    pub will_retry_until: Option<i64>,
}

/// A report to build.
pub struct DsnReport<'a> {
    /// Our host name (myhostname), for `Reporting-MTA`.
    pub reporting_mta: &'a str,
    /// The domain of the report's From: `MAILER-DAEMON@<from_domain>` (myorigin).
    pub from_domain: &'a str,
    /// The envelope sender of the original message: the report goes to it.
    pub original_sender: &'a str,
    pub env_id: Option<&'a str>,
    /// Unix seconds.
    pub arrival: i64,
    pub ret: Option<DsnReturn>,
    pub recipients: &'a [DsnRecipient],
    /// The original message as queued.
    pub original: &'a [u8],
    /// Message-ID to give the report, without angle brackets.
    pub message_id: &'a str,
    /// Unix seconds.
    pub now: i64,
}

/// The enhanced status code of a reply (`5.1.1` from `550 5.1.1 ...`), or one made from the
/// reply class when the reply has none.
pub fn status_of(reply: &str) -> String {
    let mut words = reply.split_whitespace();
    let code = words.next().unwrap_or("");
    if let Some(status) = words.next() {
        let parts: Vec<&str> = status.split('.').collect();
        if parts.len() == 3
            && matches!(parts[0], "2" | "4" | "5")
            && parts[1..]
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        {
            return status.to_string();
        }
    }
    match code.as_bytes().first() {
        Some(b'2') => "2.0.0".into(),
        Some(b'4') => "4.0.0".into(),
        _ => "5.0.0".into(),
    }
}

/// The `Status:` of a recipient: from its reply, but a delay is always a 4.x.x (RFC 3464
/// 2.3.4: a delayed action carries a transient status).
fn recipient_status(rcpt: &DsnRecipient) -> String {
    let status = status_of(&rcpt.reply);
    if rcpt.action == DsnAction::Delayed && !status.starts_with('4') {
        return "4.0.0".into();
    }
    status
}

/// Builds the complete report message (headers and body, CRLF).
pub fn build_dsn(report: &DsnReport<'_>) -> Vec<u8> {
    let any_failed = report
        .recipients
        .iter()
        .any(|r| r.action == DsnAction::Failed);
    let any_delayed = report
        .recipients
        .iter()
        .any(|r| r.action == DsnAction::Delayed);
    let subject = if any_failed {
        "Undelivered Mail Returned to Sender"
    } else if any_delayed {
        "Delayed Mail (still being retried)"
    } else {
        "Successful Mail Delivery Report"
    };

    let mut human = format!(
        "This is the mail system at host {}.\r\n\r\n",
        report.reporting_mta
    );
    if any_failed {
        human.push_str(
            "I'm sorry to have to inform you that your message could not\r\n\
             be delivered to one or more recipients.\r\n\r\n",
        );
    } else if any_delayed {
        human.push_str(
            "Your message could not be delivered yet; delivery is being retried.\r\n\
             This is a warning only: you do not need to send your message again.\r\n\r\n",
        );
    } else {
        human.push_str("Your message was successfully delivered to the recipients below.\r\n\r\n");
    }
    for rcpt in report.recipients {
        human.push_str(&format!(
            "<{}>: {}: {}\r\n",
            ascii(&rcpt.address),
            rcpt.action.as_str(),
            ascii(&rcpt.reply)
        ));
    }

    let mut status = format!("Reporting-MTA: dns; {}\r\n", report.reporting_mta);
    if let Some(env_id) = report.env_id {
        status.push_str(&format!("Original-Envelope-Id: {}\r\n", ascii(env_id)));
    }
    status.push_str(&format!(
        "Arrival-Date: {}\r\n",
        rfc5322_date(report.arrival)
    ));
    for rcpt in report.recipients {
        status.push_str("\r\n");
        if let Some(orcpt) = &rcpt.orcpt {
            status.push_str(&format!("Original-Recipient: {}\r\n", ascii(orcpt)));
        }
        status.push_str(&format!(
            "Final-Recipient: rfc822; {}\r\nAction: {}\r\nStatus: {}\r\n",
            ascii(&rcpt.address),
            rcpt.action.as_str(),
            recipient_status(rcpt)
        ));
        if let Some(mta) = &rcpt.remote_mta {
            status.push_str(&format!("Remote-MTA: dns; {}\r\n", ascii(mta)));
        }
        if rcpt.action != DsnAction::Delivered || !rcpt.reply.is_empty() {
            status.push_str(&format!(
                "Diagnostic-Code: smtp; {}\r\n",
                ascii(&rcpt.reply)
            ));
        }
        if let Some(at) = rcpt.last_attempt {
            status.push_str(&format!("Last-Attempt-Date: {}\r\n", rfc5322_date(at)));
        }
        if let Some(until) = rcpt.will_retry_until {
            status.push_str(&format!("Will-Retry-Until: {}\r\n", rfc5322_date(until)));
        }
    }

    // RET=FULL returns the message, RET=HDRS the headers; without RET, failures return the
    // message and success reports only the headers (RFC 3461 4.3). Huge messages: headers.
    let full = match report.ret {
        Some(DsnReturn::Full) => true,
        Some(DsnReturn::Headers) => false,
        None => any_failed,
    } && report.original.len() <= MAX_RETURNED_SIZE;
    let returned = if full {
        MimePart::new(
            ContentType::new("message/rfc822"),
            BodyPart::Binary(report.original.into()),
        )
        .transfer_encoding(if report.original.is_ascii() {
            "7bit"
        } else {
            "8bit"
        })
    } else {
        let headers = header_section(report.original);
        MimePart::new(
            ContentType::new("text/rfc822-headers"),
            BodyPart::Binary(headers.into()),
        )
        .transfer_encoding(if headers.is_ascii() { "7bit" } else { "8bit" })
    };

    let body = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        BodyPart::Multipart(vec![
            MimePart::new(
                ContentType::new("text/plain").attribute("charset", "us-ascii"),
                BodyPart::Binary(human.into_bytes().into()),
            )
            .transfer_encoding("7bit"),
            MimePart::new(
                ContentType::new("message/delivery-status"),
                BodyPart::Binary(status.into_bytes().into()),
            )
            .transfer_encoding("7bit"),
            returned,
        ]),
    );

    let from = format!("MAILER-DAEMON@{}", report.from_domain);
    MessageBuilder::new()
        .from(("Mail Delivery System", from.as_str()))
        .to(report.original_sender)
        .subject(subject)
        .date(Date::new(report.now))
        .message_id(report.message_id)
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .body(body)
        .write_to_vec()
        .unwrap_or_default()
}

/// Report fields are 7-bit text (RFC 3464 with message/delivery-status).
fn ascii(text: &str) -> String {
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

    const ORIGINAL: &[u8] = b"Subject: hello\r\nFrom: a@example.net\r\n\r\nbody text\r\n";

    fn report(ret: Option<DsnReturn>, action: DsnAction) -> String {
        let recipients = [DsnRecipient {
            address: "nobody@example.org".into(),
            orcpt: Some("rfc822;Nobody@example.org".into()),
            action,
            reply: "550 5.1.1 No such user".into(),
            last_attempt: Some(0),
            remote_mta: None,
            will_retry_until: None,
        }];
        build(ret, &recipients)
    }

    fn build(ret: Option<DsnReturn>, recipients: &[DsnRecipient]) -> String {
        let bytes = build_dsn(&DsnReport {
            reporting_mta: "mx.example.org",
            from_domain: "example.org",
            original_sender: "a@example.net",
            env_id: Some("ENV1"),
            arrival: 0,
            ret,
            recipients,
            original: ORIGINAL,
            message_id: "BOUNCE1@mx.example.org",
            now: 0,
        });
        String::from_utf8(bytes).unwrap()
    }

    /// The From address of a report, as a mail reader shows it.
    fn from_address(text: &str) -> String {
        let parsed = mail_parser::MessageParser::default()
            .parse(text.as_bytes())
            .unwrap();
        let from = parsed.from().and_then(|a| a.first()).unwrap();
        from.address().unwrap().to_string()
    }

    #[test]
    fn failure_report_is_a_multipart_report_with_the_message() {
        let text = report(None, DsnAction::Failed);
        assert!(text.contains("Subject: Undelivered Mail Returned to Sender\r\n"));
        assert!(text.contains("To: <a@example.net>"), "{text}");
        // From MAILER-DAEMON at myorigin; the host itself is named in Reporting-MTA.
        assert_eq!(from_address(&text), "MAILER-DAEMON@example.org");
        assert!(!text.contains("MAILER-DAEMON@mx.example.org"), "{text}");
        assert!(text.contains("Auto-Submitted: auto-replied\r\n"));
        assert!(text.contains("multipart/report"));
        assert!(text.contains("report-type=") && text.contains("delivery-status"));
        assert!(text.contains("Content-Type: message/delivery-status\r\n"));
        for field in [
            "Reporting-MTA: dns; mx.example.org\r\n",
            "Original-Envelope-Id: ENV1\r\n",
            "Original-Recipient: rfc822;Nobody@example.org\r\n",
            "Final-Recipient: rfc822; nobody@example.org\r\n",
            "Action: failed\r\n",
            "Status: 5.1.1\r\n",
            "Diagnostic-Code: smtp; 550 5.1.1 No such user\r\n",
        ] {
            assert!(text.contains(field), "missing {field:?} in {text}");
        }
        assert!(!text.contains("Remote-MTA"), "{text}");
        assert!(text.contains("Content-Type: message/rfc822\r\n"));
        assert!(text.contains("body text"));
        // The report parses as MIME with three parts.
        let parsed = mail_parser::MessageParser::default()
            .parse(text.as_bytes())
            .unwrap();
        assert_eq!(parsed.parts.len(), 4);
    }

    #[test]
    fn remote_failure_names_the_remote_mta_after_its_status() {
        let recipients = [
            DsnRecipient {
                address: "a@x.test".into(),
                orcpt: None,
                action: DsnAction::Failed,
                reply: "550 5.1.1 no".into(),
                last_attempt: None,
                remote_mta: None,
                will_retry_until: None,
            },
            DsnRecipient {
                address: "b@x.test".into(),
                orcpt: None,
                action: DsnAction::Failed,
                reply: "554 5.7.1 refused".into(),
                last_attempt: None,
                remote_mta: Some("mx2.x.test".into()),
                will_retry_until: None,
            },
        ];
        let text = build(None, &recipients);
        assert!(
            text.contains(
                "Final-Recipient: rfc822; b@x.test\r\nAction: failed\r\nStatus: 5.7.1\r\n\
                 Remote-MTA: dns; mx2.x.test\r\nDiagnostic-Code: smtp; 554 5.7.1 refused\r\n"
            ),
            "{text}"
        );
        assert_eq!(text.matches("Remote-MTA").count(), 1);
    }

    #[test]
    fn delay_report_is_a_warning_with_headers_only() {
        let recipients = [DsnRecipient {
            address: "bob@remote.test".into(),
            orcpt: None,
            action: DsnAction::Delayed,
            reply: "451 4.3.0 Try again later".into(),
            last_attempt: Some(60),
            remote_mta: Some("mx1.remote.test".into()),
            will_retry_until: Some(432_000),
        }];
        let text = build(None, &recipients);
        assert!(text.contains("Subject: Delayed Mail (still being retried)\r\n"));
        assert_eq!(from_address(&text), "MAILER-DAEMON@example.org");
        assert!(text.contains("you do not need to send your message again"));
        for field in [
            "Action: delayed\r\n",
            "Status: 4.3.0\r\n",
            "Remote-MTA: dns; mx1.remote.test\r\n",
            "Diagnostic-Code: smtp; 451 4.3.0 Try again later\r\n",
            "Will-Retry-Until: Tue, 6 Jan 1970 00:00:00 +0000\r\n",
        ] {
            assert!(text.contains(field), "missing {field:?} in {text}");
        }
        assert!(text.contains("Content-Type: text/rfc822-headers\r\n"));
        assert!(
            !text.contains("body text"),
            "a warning does not return the body"
        );
    }

    #[test]
    fn ret_hdrs_returns_only_headers() {
        let text = report(Some(DsnReturn::Headers), DsnAction::Failed);
        assert!(text.contains("Content-Type: text/rfc822-headers\r\n"));
        assert!(text.contains("Subject: hello"));
        assert!(!text.contains("body text"));
    }

    #[test]
    fn success_report() {
        let text = report(None, DsnAction::Delivered);
        assert!(text.contains("Subject: Successful Mail Delivery Report"));
        assert!(text.contains("Action: delivered\r\n"));
        assert!(!text.contains("body text"));
    }

    #[test]
    fn status_from_reply() {
        assert_eq!(status_of("550 5.1.1 No such user"), "5.1.1");
        assert_eq!(status_of("452 4.2.2 Over quota"), "4.2.2");
        assert_eq!(status_of("550 No such user"), "5.0.0");
        assert_eq!(status_of("421 service closing"), "4.0.0");
        assert_eq!(status_of("garbage"), "5.0.0");
    }
}
