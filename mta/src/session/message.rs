//! What happens to a message between the end of DATA and the queue: the trace header
//! prepended, and on submission the headers a client may have left out. (Line endings are
//! made canonical by the spool, `hermod_mda::spool::line_endings`.)

use std::net::IpAddr;

/// The header section of a message: everything before the first empty line (all of it when
/// there is no empty line).
pub fn header_section(message: &[u8]) -> &[u8] {
    if message.starts_with(b"\r\n") {
        return &[];
    }
    match find(message, b"\r\n\r\n") {
        Some(pos) => &message[..pos + 2],
        None => message,
    }
}

/// How many header fields named `name` (case-insensitive) the header section holds.
pub fn count_fields(headers: &[u8], name: &str) -> usize {
    headers
        .split(|&b| b == b'\n')
        .filter(|line| {
            line.len() > name.len()
                && line[name.len()] == b':'
                && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
        })
        .count()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What goes in the `with` clause of Received (RFC 3848).
pub fn protocol_name(esmtp: bool, tls: bool, authenticated: bool) -> &'static str {
    match (esmtp, tls, authenticated) {
        (false, _, _) => "SMTP",
        (true, false, false) => "ESMTP",
        (true, true, false) => "ESMTPS",
        (true, false, true) => "ESMTPA",
        (true, true, true) => "ESMTPSA",
    }
}

/// Facts about the transaction that go into the trace header.
pub struct TraceInfo<'a> {
    pub helo: &'a str,
    pub peer: IpAddr,
    pub hostname: &'a str,
    pub protocol: &'static str,
    /// TLS version and cipher, when known (`TLSv1.3 TLS13_AES_256_GCM_SHA384`).
    pub tls: Option<&'a str>,
    pub queue_id: &'a str,
    /// Named only when there is exactly one recipient, so Bcc recipients stay hidden.
    pub single_recipient: Option<&'a str>,
    /// Unix seconds.
    pub date: i64,
}

/// The `Received:` header (RFC 5321 4.4), folded over lines of reasonable length.
pub fn received_header(info: &TraceInfo<'_>) -> String {
    let peer = match info.peer {
        IpAddr::V4(ip) => format!("[{ip}]"),
        IpAddr::V6(ip) => format!("[IPv6:{ip}]"),
    };
    let mut header = format!(
        "Received: from {} ({peer})\r\n\tby {} (hermod) with {}",
        sanitize_helo(info.helo),
        info.hostname,
        info.protocol
    );
    if let Some(tls) = info.tls {
        header.push_str(&format!(" ({})", sanitize_helo(tls)));
    }
    header.push_str(&format!("\r\n\tid {}", info.queue_id));
    if let Some(rcpt) = info.single_recipient {
        header.push_str(&format!("\r\n\tfor <{rcpt}>"));
    }
    header.push_str(&format!("; {}\r\n", rfc5322_date(info.date)));
    header
}

/// `Tue, 25 Nov 2026 10:00:00 +0000`
pub fn rfc5322_date(unix_seconds: i64) -> String {
    mail_builder::headers::date::Date::new(unix_seconds).to_rfc822()
}

/// The HELO name is client text going into a header: keep what a hostname or address literal
/// can hold and replace the rest.
fn sanitize_helo(helo: &str) -> String {
    helo.chars()
        .take(255)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-.:[]_ ".contains(c) {
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
    fn header_section_and_fields() {
        let msg = b"Subject: x\r\nreceived: a\r\nReceived: b\r\n\r\nReceived: body\r\n";
        let headers = header_section(msg);
        assert_eq!(count_fields(headers, "Received"), 2);
        assert_eq!(count_fields(headers, "Message-ID"), 0);
        assert_eq!(count_fields(header_section(b"\r\nbody"), "Subject"), 0);
    }

    #[test]
    fn received_header_has_the_trace_facts() {
        let header = received_header(&TraceInfo {
            helo: "client.example.net",
            peer: "192.0.2.7".parse().unwrap(),
            hostname: "mx.example.org",
            protocol: "ESMTPS",
            tls: Some("TLSv1.3"),
            queue_id: "ABC123",
            single_recipient: Some("alice@example.org"),
            date: 0,
        });
        assert_eq!(
            header,
            "Received: from client.example.net ([192.0.2.7])\r\n\tby mx.example.org (hermod) \
             with ESMTPS (TLSv1.3)\r\n\tid ABC123\r\n\tfor <alice@example.org>; \
             Thu, 1 Jan 1970 00:00:00 +0000\r\n"
        );
    }

    #[test]
    fn received_header_cannot_be_split_by_helo() {
        let header = received_header(&TraceInfo {
            helo: "evil\r\nX-Injected: 1",
            peer: "2001:db8::1".parse().unwrap(),
            hostname: "mx",
            protocol: "ESMTP",
            tls: None,
            queue_id: "1",
            single_recipient: None,
            date: 0,
        });
        assert!(header.contains("from evil??X-Injected: 1 ([IPv6:2001:db8::1])"));
        assert_eq!(header.matches("\r\n").count(), 3);
    }
}
