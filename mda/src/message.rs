//! The few changes the MDA makes to a message: the trace headers it prepends, the loop check
//! on `Delivered-To:`, and dropping a leading mbox `From ` line handed to the LDA.

/// The line end the message uses: CRLF when its first line ends in CRLF, else LF. Added
/// headers follow it, so a message piped with LF stays LF throughout (fine for Maildir).
fn line_end(message: &[u8]) -> &'static [u8] {
    match message.iter().position(|b| *b == b'\n') {
        Some(i) if i > 0 && message[i - 1] == b'\r' => b"\r\n",
        Some(_) => b"\n",
        None => b"\r\n",
    }
}

/// An address fit for a header value: control characters (CR, LF, NUL...) and angle
/// brackets dropped, so an envelope address can never inject a header line.
fn header_safe(address: &str) -> String {
    address
        .chars()
        .filter(|c| !c.is_control() && *c != '<' && *c != '>')
        .collect()
}

/// The message with `Return-Path: <sender>` and `Delivered-To: recipient` on top, as
/// Postfix's local(8) and Dovecot's LDA write them. An empty sender is the null sender `<>`.
pub(crate) fn with_trace_headers(sender: &str, recipient: &str, message: &[u8]) -> Vec<u8> {
    let mut out = trace_headers(sender, recipient, message, message.len());
    out.extend_from_slice(message);
    out
}

/// Just the lines [`with_trace_headers`] puts on top of a message starting with `head`
/// (`reserve`: extra capacity for the caller to append the message).
pub(crate) fn trace_headers(sender: &str, recipient: &str, head: &[u8], reserve: usize) -> Vec<u8> {
    let eol = line_end(head);
    let sender = header_safe(sender);
    let recipient = header_safe(recipient);
    let mut out = Vec::with_capacity(reserve + sender.len() + recipient.len() + 40);
    out.extend_from_slice(b"Return-Path: <");
    out.extend_from_slice(sender.as_bytes());
    out.extend_from_slice(b">");
    out.extend_from_slice(eol);
    out.extend_from_slice(b"Delivered-To: ");
    out.extend_from_slice(recipient.as_bytes());
    out.extend_from_slice(eol);
    out
}

/// The header section: up to the first empty line (or the whole message if none).
fn header_section(message: &[u8]) -> &[u8] {
    let mut start = 0;
    for line in message.split_inclusive(|b| *b == b'\n') {
        if line == b"\n" || line == b"\r\n" {
            return &message[..start];
        }
        start += line.len();
    }
    message
}

/// True when the message already carries `Delivered-To: recipient`: it has been delivered
/// here before and came back, a mail loop (Postfix refuses these with 5.4.6 too).
pub(crate) fn already_delivered_to(message: &[u8], recipient: &str) -> bool {
    const NAME: &[u8] = b"delivered-to:";
    header_section(message)
        .split(|b| *b == b'\n')
        .filter(|line| line.len() > NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME))
        .any(|line| {
            let value = String::from_utf8_lossy(&line[NAME.len()..]);
            let value = value.trim().trim_start_matches('<').trim_end_matches('>');
            value.eq_ignore_ascii_case(recipient.trim())
        })
}

/// Header field with which the MTA asks for a message to be filed into Junk (a DMARC
/// `p=quarantine` failure). The MTA removes any copy that arrives from outside.
pub const QUARANTINE_FIELD: &str = "X-Hermod-Quarantine";

/// True when the header section carries [`QUARANTINE_FIELD`].
pub(crate) fn is_quarantined(message: &[u8]) -> bool {
    let name = QUARANTINE_FIELD.as_bytes();
    header_section(message).split(|b| *b == b'\n').any(|line| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()] == b':'
    })
}

/// Drops a leading mbox `From sender date` separator line (Postfix's `mailbox_command`
/// may pass one). A `From:` header has a colon and is kept.
pub fn strip_mbox_from_line(message: &[u8]) -> &[u8] {
    if !message.starts_with(b"From ") {
        return message;
    }
    match message.iter().position(|b| *b == b'\n') {
        Some(i) => &message[i + 1..],
        None => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_mark_is_seen_in_the_header_only() {
        assert!(is_quarantined(
            b"A: b\r\nX-Hermod-Quarantine: dmarc\r\n\r\nbody\r\n"
        ));
        assert!(!is_quarantined(
            b"A: b\r\n\r\nX-Hermod-Quarantine: dmarc\r\n"
        ));
        assert!(!is_quarantined(b"X-Hermod-Quarantined: no\r\n\r\n"));
    }

    #[test]
    fn trace_headers_follow_the_line_ends_of_the_message() {
        let crlf = with_trace_headers("a@x.org", "b@y.org", b"Subject: s\r\n\r\nbody\r\n");
        assert_eq!(
            crlf,
            b"Return-Path: <a@x.org>\r\nDelivered-To: b@y.org\r\nSubject: s\r\n\r\nbody\r\n"
        );
        let lf = with_trace_headers("", "b@y.org", b"Subject: s\n\nbody\n");
        assert_eq!(
            lf,
            b"Return-Path: <>\nDelivered-To: b@y.org\nSubject: s\n\nbody\n"
        );
    }

    #[test]
    fn envelope_addresses_cannot_inject_headers() {
        let out = with_trace_headers("a@x\r\nBcc: evil@x>", "b@y", b"S: 1\n\n");
        assert!(out.starts_with(b"Return-Path: <a@xBcc: evil@x>\nDelivered-To: b@y\n"));
    }

    #[test]
    fn loop_detection_looks_at_headers_only() {
        let m = b"Delivered-To: Alice@Example.org\r\nSubject: x\r\n\r\nDelivered-To: bob@x\r\n";
        assert!(already_delivered_to(m, "alice@example.org"));
        assert!(!already_delivered_to(m, "bob@x"));
        assert!(!already_delivered_to(
            b"Subject: x\n\n",
            "alice@example.org"
        ));
    }

    #[test]
    fn mbox_from_line_is_dropped_but_from_header_kept() {
        assert_eq!(
            strip_mbox_from_line(b"From a@b Thu Jan  1 00:00:00 1970\nSubject: x\n\nhi\n"),
            b"Subject: x\n\nhi\n"
        );
        assert_eq!(
            strip_mbox_from_line(b"From: a@b\n\nhi\n"),
            b"From: a@b\n\nhi\n"
        );
    }
}
