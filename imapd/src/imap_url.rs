//! IMAP URLs naming a message or a part of one (RFC 5092), as CATENATE uses them
//! (RFC 4469 section 3): `/INBOX;UIDVALIDITY=385759045/;UID=20/;SECTION=1.2/;PARTIAL=0.512`,
//! the same after `imap://user@host`, or `;UID=20/...` relative to the selected mailbox.
//!
//! Hand-written because no crate reads this form; one pass over the text, no recursion.
//! URLAUTH-authorized URLs and search URLs are not message parts here and are refused.

use crate::mime::section::{Section, Spec};

/// A parsed message URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageUrl {
    /// The user in an absolute URL's authority (`imap://user@host/...`).
    pub user: Option<String>,
    /// The mailbox (UTF-8, percent-decoded); `None`: the selected mailbox.
    pub mailbox: Option<String>,
    pub uidvalidity: Option<u32>,
    pub uid: u32,
    /// The section, percent-decoded (`1.2`, `HEADER`, `1.MIME`).
    pub section: Option<String>,
    /// Offset and length (`;PARTIAL=offset[.length]`).
    pub partial: Option<(u64, Option<u64>)>,
}

/// Decodes `%XX` escapes; `None` for a broken escape.
fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

fn number<T: std::str::FromStr>(s: &[u8]) -> Option<T> {
    if s.is_empty() || s.len() > 20 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

fn nz_number(s: &[u8]) -> Option<u32> {
    number::<u32>(s).filter(|n| *n > 0)
}

/// Parses a message URL; `None` for anything else (the caller answers `[BADURL]`).
pub fn parse(url: &[u8]) -> Option<MessageUrl> {
    let mut user = None;
    let mut rest = url;
    if rest.len() >= 7 && rest[..7].eq_ignore_ascii_case(b"imap://") {
        let after = &rest[7..];
        let slash = after.iter().position(|&b| b == b'/')?;
        let authority = &after[..slash];
        if let Some(at) = authority.iter().rposition(|&b| b == b'@') {
            let userinfo = &authority[..at];
            // `;AUTH=...` names how to log in, not who.
            let name = userinfo.split(|&b| b == b';').next().unwrap_or_default();
            user = Some(String::from_utf8(percent_decode(name)?).ok()?);
        }
        rest = &after[slash..];
    }
    let mailbox;
    if let Some(path) = rest.strip_prefix(b"/") {
        // A mailbox name has no `;` or `?` (RFC 5092 bchar): it ends at the first one.
        let end = path
            .iter()
            .position(|&b| b == b';' || b == b'?')
            .unwrap_or(path.len());
        if path.get(end) == Some(&b'?') {
            return None; // a search URL
        }
        let raw = &path[..end];
        let raw = raw.strip_suffix(b"/").unwrap_or(raw);
        if raw.is_empty() {
            return None;
        }
        mailbox = Some(String::from_utf8(percent_decode(raw)?).ok()?);
        rest = &path[end..];
    } else {
        mailbox = None;
    }
    let mut parsed = MessageUrl {
        user,
        mailbox,
        uidvalidity: None,
        uid: 0,
        section: None,
        partial: None,
    };
    // `;KEY=value` items, each but the last ending in `/` (UIDVALIDITY does not).
    for (n, item) in rest.split(|&b| b == b';').enumerate() {
        if n == 0 {
            if !item.is_empty() {
                return None;
            }
            continue;
        }
        let item = item.strip_suffix(b"/").unwrap_or(item);
        let eq = item.iter().position(|&b| b == b'=')?;
        let (key, value) = (&item[..eq], &item[eq + 1..]);
        match key.to_ascii_uppercase().as_slice() {
            b"UIDVALIDITY" if n == 1 && parsed.mailbox.is_some() => {
                parsed.uidvalidity = Some(nz_number(value)?);
            }
            b"UID" if parsed.uid == 0 => parsed.uid = nz_number(value)?,
            b"SECTION" if parsed.uid != 0 && parsed.section.is_none() => {
                let s = String::from_utf8(percent_decode(value)?).ok()?;
                if s.is_empty() {
                    return None;
                }
                parsed.section = Some(s);
            }
            b"PARTIAL" if parsed.uid != 0 && parsed.partial.is_none() => {
                let (offset, length) = match value.iter().position(|&b| b == b'.') {
                    Some(dot) => (
                        number::<u64>(&value[..dot])?,
                        Some(number::<u64>(&value[dot + 1..]).filter(|l| *l > 0)?),
                    ),
                    None => (number::<u64>(value)?, None),
                };
                parsed.partial = Some((offset, length));
            }
            // URLAUTH, EXPIRE, ACCESS and anything unknown.
            _ => return None,
        }
    }
    (parsed.uid != 0).then_some(parsed)
}

/// A section as in a URL (`1.2`, `HEADER`, `1.MIME`, `HEADER.FIELDS (To From)`).
pub fn parse_section(text: &str) -> Option<Section> {
    let mut part = Vec::new();
    let mut rest = text;
    loop {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            break;
        }
        let n: u32 = rest[..digits].parse().ok().filter(|n| *n > 0)?;
        if part.len() >= 64 {
            return None;
        }
        part.push(n);
        rest = &rest[digits..];
        match rest.strip_prefix('.') {
            Some("") => return None,
            Some(r) => rest = r,
            None if rest.is_empty() => break,
            None => return None,
        }
    }
    if rest.is_empty() {
        if part.is_empty() {
            return None;
        }
        return Some(Section {
            part,
            spec: Spec::Whole,
        });
    }
    let upper = rest.to_ascii_uppercase();
    let spec = match upper.as_str() {
        "HEADER" => Spec::Header,
        "TEXT" => Spec::Text,
        "MIME" if !part.is_empty() => Spec::Mime,
        _ => {
            let (not, list) = if let Some(l) = upper.strip_prefix("HEADER.FIELDS.NOT ") {
                (true, l)
            } else if let Some(l) = upper.strip_prefix("HEADER.FIELDS ") {
                (false, l)
            } else {
                return None;
            };
            let inner = list.strip_prefix('(')?.strip_suffix(')')?;
            let names: Vec<Vec<u8>> = inner
                .split(' ')
                .filter(|n| !n.is_empty())
                .map(|n| n.trim_matches('"').as_bytes().to_vec())
                .collect();
            if names.is_empty() {
                return None;
            }
            Spec::HeaderFields { names, not }
        }
    };
    Some(Section { part, spec })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_to_the_server() {
        let u =
            parse(b"/INBOX;UIDVALIDITY=385759045/;UID=20/;SECTION=1.2/;PARTIAL=10.512").unwrap();
        assert_eq!(u.mailbox.as_deref(), Some("INBOX"));
        assert_eq!(u.uidvalidity, Some(385759045));
        assert_eq!(u.uid, 20);
        assert_eq!(u.section.as_deref(), Some("1.2"));
        assert_eq!(u.partial, Some((10, Some(512))));
        let u = parse(b"/Drafts/Sub%20box/;uid=3/;section=header").unwrap();
        assert_eq!(u.mailbox.as_deref(), Some("Drafts/Sub box"));
        assert_eq!((u.uid, u.uidvalidity), (3, None));
        let u = parse(b"/Entw%C3%BCrfe/;UID=1").unwrap();
        assert_eq!(u.mailbox.as_deref(), Some("Entwürfe"));
        assert_eq!(u.section, None);
    }

    #[test]
    fn absolute_and_selected_mailbox_forms() {
        let u = parse(b"imap://alice;AUTH=*@mail.example.org:143/INBOX/;UID=7").unwrap();
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!((u.mailbox.as_deref(), u.uid), (Some("INBOX"), 7));
        let u = parse(b";UID=9/;SECTION=TEXT").unwrap();
        assert_eq!((u.mailbox, u.uid), (None, 9));
    }

    #[test]
    fn refused_forms() {
        for bad in [
            &b"/INBOX"[..],
            b"/INBOX/;UID=0",
            b"/INBOX/;UID=x",
            b"/INBOX?SUBJECT%20x",
            b"/INBOX/;UID=5/;URLAUTH=anonymous:internal:91354a",
            b"/INBOX/;UID=5/;PARTIAL=1.0",
            b"/INBOX/;SECTION=1/;UID=5",
            b"/INBOX/;UID=5/;SECTION=%zz",
            b"/;UID=5",
            b"imap://host",
            b"",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    /// Every `;` and `%` of a long hostile URL is looked at once.
    #[test]
    fn linear_in_its_input() {
        let mut url = b"/INBOX/".to_vec();
        url.extend(std::iter::repeat_n(b';', 200_000));
        let started = std::time::Instant::now();
        assert_eq!(parse(&url), None);
        let mut url = b"/".to_vec();
        url.extend(std::iter::repeat_n(b'%', 200_000));
        assert_eq!(parse(&url), None);
        assert!(started.elapsed() < std::time::Duration::from_millis(200));
    }

    #[test]
    fn sections() {
        assert_eq!(
            parse_section("header"),
            Some(Section {
                part: vec![],
                spec: Spec::Header
            })
        );
        assert_eq!(
            parse_section("1.2"),
            Some(Section {
                part: vec![1, 2],
                spec: Spec::Whole
            })
        );
        assert_eq!(
            parse_section("2.MIME"),
            Some(Section {
                part: vec![2],
                spec: Spec::Mime
            })
        );
        assert_eq!(
            parse_section("HEADER.FIELDS (Subject From)"),
            Some(Section {
                part: vec![],
                spec: Spec::HeaderFields {
                    names: vec![b"SUBJECT".to_vec(), b"FROM".to_vec()],
                    not: false
                }
            })
        );
        for bad in ["", "MIME", "0", "1..2", "1.", "BOGUS", "HEADER.FIELDS ()"] {
            assert_eq!(parse_section(bad), None, "{bad}");
        }
    }
}
