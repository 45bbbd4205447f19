//! FETCH ENVELOPE (RFC 3501 section 7.4.2), built from a header block.

use base64::Engine;
use mail_parser::{Addr, Address, HeaderName, HeaderValue, MessageParser};

use super::header;
use crate::wire;

/// Writes the ENVELOPE of the message whose header block is `header`.
pub fn write(out: &mut Vec<u8>, header: &[u8]) {
    let parsed = MessageParser::default().parse_headers(header);
    let headers = parsed
        .as_ref()
        .and_then(|m| m.parts.first())
        .map(|p| p.headers.as_slice())
        .unwrap_or_default();
    let address = |name: HeaderName<'static>| {
        headers
            .iter()
            .find(|h| h.name == name)
            .and_then(|h| match &h.value {
                HeaderValue::Address(a) => Some(a),
                _ => None,
            })
    };
    let raw = |name: &str| header::first_value(header, name);

    out.push(b'(');
    write_nonempty(out, raw("Date"));
    out.push(b' ');
    wire::nstring(out, raw("Subject").as_deref());
    let from = address(HeaderName::From);
    let sender = address(HeaderName::Sender).or(from);
    let reply_to = address(HeaderName::ReplyTo).or(from);
    for list in [
        from,
        sender,
        reply_to,
        address(HeaderName::To),
        address(HeaderName::Cc),
        address(HeaderName::Bcc),
    ] {
        out.push(b' ');
        write_addresses(out, list);
    }
    out.push(b' ');
    write_nonempty(out, raw("In-Reply-To"));
    out.push(b' ');
    write_nonempty(out, raw("Message-ID"));
    out.push(b')');
}

fn write_nonempty(out: &mut Vec<u8>, v: Option<Vec<u8>>) {
    wire::nstring(out, v.as_deref().filter(|v| !v.is_empty()));
}

fn write_addresses(out: &mut Vec<u8>, list: Option<&Address<'_>>) {
    let mut body = Vec::new();
    match list {
        Some(Address::List(addrs)) => {
            for a in addrs {
                write_address(&mut body, a);
            }
        }
        Some(Address::Group(groups)) => {
            for g in groups {
                match &g.name {
                    Some(name) => {
                        // A group is framed by (NIL NIL "name" NIL) ... (NIL NIL NIL NIL).
                        body.extend_from_slice(b"(NIL NIL ");
                        wire::string(&mut body, name.as_bytes());
                        body.extend_from_slice(b" NIL)");
                        // A comment alone (`group2: (foo) ;`) is no member.
                        for a in g.addresses.iter().filter(|a| a.address.is_some()) {
                            write_address(&mut body, a);
                        }
                        body.extend_from_slice(b"(NIL NIL NIL NIL)");
                    }
                    None => {
                        for a in &g.addresses {
                            write_address(&mut body, a);
                        }
                    }
                }
            }
        }
        None => {}
    }
    if body.is_empty() {
        out.extend_from_slice(b"NIL");
    } else {
        out.push(b'(');
        out.extend_from_slice(&body);
        out.push(b')');
    }
}

fn write_address(out: &mut Vec<u8>, a: &Addr<'_>) {
    let name = a.name.as_deref().map(str::trim).filter(|n| !n.is_empty());
    let address = a
        .address
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if name.is_none() && address.is_none() {
        return;
    }
    out.push(b'(');
    match name {
        Some(n) => wire::string(out, encode_word(n).as_bytes()),
        None => out.extend_from_slice(b"NIL"),
    }
    // An obsolete source route (`<@route:user@domain>`, RFC 5322 section 4.4) is the
    // envelope's second field.
    let (route, address) = match address {
        Some(a) if a.starts_with('@') => match a.split_once(':') {
            Some((route, rest)) => (Some(route), Some(rest)),
            None => (None, Some(a)),
        },
        a => (None, a),
    };
    out.push(b' ');
    match route {
        Some(r) => wire::string(out, r.as_bytes()),
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    match address {
        Some(addr) => match addr.rsplit_once('@') {
            Some((local, domain)) => {
                wire::string(out, local.as_bytes());
                out.push(b' ');
                wire::string(out, domain.as_bytes());
            }
            None => {
                wire::string(out, addr.as_bytes());
                out.extend_from_slice(b" \"MISSING_DOMAIN\"");
            }
        },
        None => out.extend_from_slice(b"\"MISSING_MAILBOX\" \"MISSING_DOMAIN\""),
    }
    out.push(b')');
}

/// Text as RFC 2047 encoded words when it is not plain ASCII: mail-parser hands names over
/// decoded, and clients without UTF8=ACCEPT expect 7-bit envelopes.
pub fn encode_word(text: &str) -> String {
    if text.is_ascii() {
        return text.to_string();
    }
    // Encoded words are at most 75 characters: 45 bytes of UTF-8 make 60 of base64.
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in text.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(chunk);
    }
    words
        .iter()
        .map(|w| {
            format!(
                "=?utf-8?b?{}?=",
                base64::engine::general_purpose::STANDARD.encode(w)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(header: &[u8]) -> String {
        let mut out = Vec::new();
        write(&mut out, header);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rfc3501_style_envelope() {
        let h = b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\nFrom: Terry Gray <gray@cac.washington.edu>\r\nSubject: IMAP4rev1 WG mtg summary and minutes\r\nTo: imap@cac.washington.edu\r\ncc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>\r\nMessage-Id: <B27397-0100000@cac.washington.edu>\r\n\r\n";
        assert_eq!(
            env(h),
            "(\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" \"IMAP4rev1 WG mtg summary and minutes\" ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) ((NIL NIL \"imap\" \"cac.washington.edu\")) ((NIL NIL \"minutes\" \"CNRI.Reston.VA.US\")(\"John Klensin\" NIL \"KLENSIN\" \"MIT.EDU\")) NIL NIL \"<B27397-0100000@cac.washington.edu>\")"
        );
    }

    /// imaptest's fetch-envelope: groups framed by name and end markers, a comment in a
    /// group is no member, and a source route is the second field.
    #[test]
    fn groups_and_source_routes() {
        let h = b"From: user@domain (Real Name)\r\nTo: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;\r\nCc: group:;, group2: (foo) ;\r\n\r\n";
        let e = env(h);
        assert!(
            e.contains(" ((NIL NIL \"group\" NIL)(NIL NIL \"g1\" \"d1.org\")(NIL NIL \"g2\" \"d2.org\")(NIL NIL NIL NIL)(NIL NIL \"group2\" NIL)(NIL NIL \"g3\" \"d3.org\")(NIL NIL NIL NIL)) ((NIL NIL \"group\" NIL)(NIL NIL NIL NIL)(NIL NIL \"group2\" NIL)(NIL NIL NIL NIL)) NIL "),
            "{e}"
        );
        let e = env(b"From: <@route:user@domain>\r\n\r\n");
        assert!(e.contains("((NIL \"@route\" \"user\" \"domain\"))"), "{e}");
    }

    #[test]
    fn empty_header_is_all_nil() {
        assert_eq!(env(b"\r\n"), "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
    }

    #[test]
    fn encoded_subject_stays_raw_and_utf8_names_are_encoded() {
        let h = "From: =?utf-8?q?J=C3=BCrgen?= <j@example.de>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nReply-To: Jürgen <r@example.de>\r\n\r\n";
        let e = env(h.as_bytes());
        assert!(e.contains("\"=?utf-8?q?Gr=C3=BC=C3=9Fe?=\""), "{e}");
        assert!(
            e.contains("((\"=?utf-8?b?SsO8cmdlbg==?=\" NIL \"j\" \"example.de\"))"),
            "{e}"
        );
        assert!(
            e.contains("((\"=?utf-8?b?SsO8cmdlbg==?=\" NIL \"r\" \"example.de\"))"),
            "{e}"
        );
    }

    #[test]
    fn groups_are_framed() {
        let e = env(b"To: Team: a@x.example, b@y.example;\r\nCc: undisclosed-recipients:;\r\n\r\n");
        assert!(e.contains("((NIL NIL \"Team\" NIL)(NIL NIL \"a\" \"x.example\")(NIL NIL \"b\" \"y.example\")(NIL NIL NIL NIL))"), "{e}");
        assert!(
            e.contains("((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL))"),
            "{e}"
        );
    }

    #[test]
    fn folded_subject_is_unfolded() {
        let e = env(b"Subject: one\r\n two\r\nIn-Reply-To: <x@y>\r\n\r\n");
        assert!(
            e.starts_with("(NIL \"one two\" NIL NIL NIL NIL NIL NIL \"<x@y>\" NIL)"),
            "{e}"
        );
    }
}
