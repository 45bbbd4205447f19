//! What SORT and THREAD (RFC 5256) know of a message: its sent date, decoded subject, first
//! From/To/Cc addresses and Message-ID, References and In-Reply-To, read from the header
//! block alone.

use mail_parser::{Addr, Address, HeaderValue, MessageParser};

use super::header;

/// The first address of an address header, as SORT compares it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirstAddress {
    /// The local part (IMAP's addr-mailbox): what SORT FROM/TO/CC compare.
    pub mailbox: String,
    /// The display name, or the address when there is none: what SORT DISPLAYFROM and
    /// DISPLAYTO compare (RFC 5957).
    pub display: String,
}

/// The header facts of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The Date header in Unix seconds (UTC), if present and valid.
    pub sent: Option<i64>,
    /// The subject with RFC 2047 words decoded; empty when missing.
    pub subject: String,
    pub from: Option<FirstAddress>,
    pub to: Option<FirstAddress>,
    pub cc: Option<FirstAddress>,
    /// The Message-ID, without angle brackets.
    pub message_id: Option<String>,
    /// The ids of the References header, oldest first.
    pub references: Vec<String>,
    /// The first id of In-Reply-To.
    pub in_reply_to: Option<String>,
}

/// Reads the summary of the message whose header block is `header`.
pub fn summarize(header: &[u8]) -> Summary {
    let mut s = Summary::default();
    let raw_ids = |name: &str| {
        header::first_value(header, name)
            .map(|v| message_ids(&v))
            .unwrap_or_default()
    };
    s.message_id = raw_ids("Message-ID").into_iter().next();
    s.references = raw_ids("References");
    s.in_reply_to = raw_ids("In-Reply-To").into_iter().next();
    let Some(parsed) = MessageParser::default().parse_headers(header) else {
        return s;
    };
    let Some(part) = parsed.parts.first() else {
        return s;
    };
    let first = |name: mail_parser::HeaderName<'static>| {
        part.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| &h.value)
    };
    s.sent = match first(mail_parser::HeaderName::Date) {
        Some(HeaderValue::DateTime(d)) if d.is_valid() => Some(d.to_timestamp()),
        _ => None,
    };
    if let Some(v) = first(mail_parser::HeaderName::Subject) {
        s.subject = match v {
            HeaderValue::Text(t) => t.to_string(),
            HeaderValue::TextList(l) => l.join(" "),
            _ => String::new(),
        };
    }
    let address = |name| match first(name) {
        Some(HeaderValue::Address(a)) => first_address(a),
        _ => None,
    };
    s.from = address(mail_parser::HeaderName::From);
    s.to = address(mail_parser::HeaderName::To);
    s.cc = address(mail_parser::HeaderName::Cc);
    s
}

fn first_address(list: &Address<'_>) -> Option<FirstAddress> {
    // A named group starts with its name, as in ENVELOPE's `(NIL NIL "name" NIL)`.
    if let Address::Group(groups) = list
        && let Some(name) = groups.first().and_then(|g| g.name.as_deref())
    {
        let name = name.trim();
        return Some(FirstAddress {
            mailbox: name.to_string(),
            display: name.to_string(),
        });
    }
    let a: &Addr<'_> = list.first()?;
    let spec = a.address.as_deref().map(str::trim).unwrap_or_default();
    let mailbox = spec.rsplit_once('@').map_or(spec, |(local, _)| local);
    let name = a.name.as_deref().map(str::trim).unwrap_or_default();
    Some(FirstAddress {
        mailbox: mailbox.to_string(),
        display: if name.is_empty() { spec } else { name }.to_string(),
    })
}

/// The `<id>`s of a Message-ID, References or In-Reply-To value, without the angle brackets
/// and with folding white space removed. Text outside brackets (comments, phrases) is skipped.
pub fn message_ids(value: &[u8]) -> Vec<String> {
    let mut ids = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.iter().position(|&b| b == b'<') {
        rest = &rest[open + 1..];
        let Some(close) = rest.iter().position(|&b| b == b'>' || b == b'<') else {
            break;
        };
        if rest[close] == b'<' {
            // `<a <b>`: the first one never closed; start again at the second.
            rest = &rest[close..];
            continue;
        }
        let id: Vec<u8> = rest[..close]
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        if !id.is_empty() {
            ids.push(String::from_utf8_lossy(&id).into_owned());
        }
        rest = &rest[close + 1..];
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dates_subjects_and_addresses() {
        let h = b"From: =?utf-8?q?J=C3=BCrgen?= <JM@Example.de>\r\nTo: team@example.org, b@x\r\nSubject: =?utf-8?q?Re=3A_Gr=C3=BC=C3=9Fe?=\r\nDate: Mon, 1 Jun 2020 10:00:00 +0200\r\n\r\n";
        let s = summarize(h);
        assert_eq!(s.sent, Some(1_590_998_400));
        assert_eq!(s.subject, "Re: Grüße");
        let from = s.from.unwrap();
        assert_eq!(from.mailbox, "JM");
        assert_eq!(from.display, "Jürgen");
        let to = s.to.unwrap();
        assert_eq!(
            (to.mailbox.as_str(), to.display.as_str()),
            ("team", "team@example.org")
        );
        assert_eq!(s.cc, None);
        let s = summarize(b"From: Team: a@x, b@y;\r\nTo: undisclosed-recipients:;\r\n\r\n");
        assert_eq!(s.from.unwrap().mailbox, "Team");
        assert_eq!(s.to.unwrap().display, "undisclosed-recipients");
    }

    #[test]
    fn bad_or_missing_dates_are_none() {
        assert_eq!(summarize(b"Date: yesterday\r\n\r\n").sent, None);
        assert_eq!(summarize(b"Subject: x\r\n\r\n").sent, None);
        assert_eq!(summarize(b"Subject: x\r\n\r\n").subject, "x");
        assert_eq!(summarize(b"\r\nbody").subject, "");
    }

    #[test]
    fn message_ids_are_read_from_brackets() {
        let h = b"Message-ID: <a@x>\r\nReferences: <r1@x>\r\n <r2@x> (comment) <r3\r\n @x>\r\nIn-Reply-To: Bob's message <r3@x> of Monday\r\n\r\n";
        let s = summarize(h);
        assert_eq!(s.message_id.as_deref(), Some("a@x"));
        assert_eq!(s.references, ["r1@x", "r2@x", "r3@x"]);
        assert_eq!(s.in_reply_to.as_deref(), Some("r3@x"));
        assert_eq!(message_ids(b"<broken <ok@x> <>"), ["ok@x"]);
        assert!(message_ids(b"no ids here").is_empty());
    }
}
