//! Mailbox names: validation (names can never leave the user's directory) and the
//! modified UTF-7 (RFC 3501 5.1.3) encoding used on disk.

use base64::Engine;
use base64::alphabet::Alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::StoreError;

/// The canonical name of the inbox.
pub const INBOX: &str = "INBOX";

/// Longest on-disk name (one file name holds the whole hierarchy in Maildir++, and mbox
/// adds `.lock` for the dotlock).
const MAX_DISK_NAME: usize = 240;

fn mutf7_engine() -> GeneralPurpose {
    // Modified base64: ',' instead of '/', no padding (RFC 3501 5.1.3). The alphabet is a
    // valid constant, so `new` cannot fail; fall back to the standard one to stay total.
    let alphabet =
        Alphabet::new("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")
            .unwrap_or(base64::alphabet::STANDARD);
    GeneralPurpose::new(
        &alphabet,
        GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_padding_mode(DecodePaddingMode::RequireNone),
    )
}

fn encode_with(s: &str, direct: impl Fn(char) -> bool) -> String {
    let engine = mutf7_engine();
    let mut out = String::with_capacity(s.len());
    let mut run: Vec<u16> = Vec::new();
    let flush = |run: &mut Vec<u16>, out: &mut String| {
        if !run.is_empty() {
            let bytes: Vec<u8> = run.iter().flat_map(|u| u.to_be_bytes()).collect();
            out.push('&');
            out.push_str(&engine.encode(bytes));
            out.push('-');
            run.clear();
        }
    };
    for c in s.chars() {
        if c == '&' {
            flush(&mut run, &mut out);
            out.push_str("&-");
        } else if direct(c) {
            flush(&mut run, &mut out);
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            run.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Encodes a UTF-8 mailbox name in modified UTF-7 (for IMAP clients without UTF8=ACCEPT).
pub fn encode_mutf7(s: &str) -> String {
    encode_with(s, |c| (' '..='~').contains(&c))
}

/// Decodes a modified UTF-7 mailbox name; `None` if it is not valid modified UTF-7
/// (non-ASCII input, bad base64, unterminated shift).
pub fn decode_mutf7(s: &str) -> Option<String> {
    let engine = mutf7_engine();
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if !(' '..='~').contains(&c) {
            return None;
        }
        if c != '&' {
            out.push(c);
            rest = &rest[1..];
            continue;
        }
        let end = rest.find('-')?;
        let b64 = &rest[1..end];
        rest = &rest[end + 1..];
        if b64.is_empty() {
            out.push('&');
            continue;
        }
        let bytes = engine.decode(b64).ok()?;
        if bytes.len() % 2 != 0 {
            return None;
        }
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|p| u16::from_be_bytes([p[0], p[1]]))
            .collect();
        out.push_str(&String::from_utf16(&units).ok()?);
    }
    Some(out)
}

fn invalid(reason: impl Into<String>) -> StoreError {
    StoreError::InvalidName(reason.into())
}

/// Checks a UTF-8 mailbox name (`/` separated) and returns its canonical form: `INBOX` in
/// capitals as first component. Refuses what could leave the user's directory or confuse
/// the on-disk layout: empty names or components (leading, trailing or doubled `/`),
/// components starting with `.` (`.`, `..`, hidden files), NUL and control characters, the
/// LIST wildcards `*` and `%`, and names too long for a file name.
pub fn validate_mailbox_name(name: &str) -> Result<String, StoreError> {
    if name.is_empty() {
        return Err(invalid("empty mailbox name"));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(invalid(format!(
            "control character U+{:04X} in mailbox name",
            c as u32
        )));
    }
    if name.contains(['*', '%']) {
        return Err(invalid(
            "wildcards * and % are not allowed in mailbox names",
        ));
    }
    let mut parts = Vec::new();
    for (i, comp) in name.split('/').enumerate() {
        if comp.is_empty() {
            return Err(invalid(
                "empty hierarchy level (leading, trailing or double '/')",
            ));
        }
        if comp.starts_with('.') {
            return Err(invalid(format!(
                "a hierarchy level may not start with '.': {comp:?}"
            )));
        }
        if i == 0 && comp.eq_ignore_ascii_case(INBOX) {
            parts.push(INBOX);
        } else {
            parts.push(comp);
        }
    }
    let canonical = parts.join("/");
    if disk_name(&canonical).len() > MAX_DISK_NAME {
        return Err(invalid("mailbox name too long"));
    }
    Ok(canonical)
}

/// The on-disk form of a canonical name, without the Maildir++ leading dot: each level in
/// modified UTF-7 with `.` also encoded (it is the on-disk separator), joined by `.`.
/// `Work/2024` -> `Work.2024`, `v1.2` -> `v1&AC4-2`, `Café` -> `Caf&AOk-`.
pub fn disk_name(canonical: &str) -> String {
    canonical
        .split('/')
        .map(|c| encode_with(c, |ch| (' '..='~').contains(&ch) && ch != '.'))
        .collect::<Vec<_>>()
        .join(".")
}

/// The mailbox name of an on-disk name; `None` unless it is the canonical encoding of a
/// valid name (directories made by other tools with other spellings are ignored).
pub fn from_disk_name(disk: &str) -> Option<String> {
    let mut parts = Vec::new();
    for comp in disk.split('.') {
        parts.push(decode_mutf7(comp)?);
    }
    let name = validate_mailbox_name(&parts.join("/")).ok()?;
    (disk_name(&name) == disk).then_some(name)
}

/// True if `child` is below `parent` in the hierarchy.
pub fn is_descendant(child: &str, parent: &str) -> bool {
    child.len() > parent.len() + 1
        && child.starts_with(parent)
        && child.as_bytes()[parent.len()] == b'/'
}

/// The parents of a name: `a/b/c` -> `a`, `a/b`.
pub fn parents(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices('/').map(move |(i, _)| &name[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutf7_round_trips_rfc_examples() {
        assert_eq!(
            encode_mutf7("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(
            decode_mutf7("~peter/mail/&U,BTFw-/&ZeVnLIqe-").as_deref(),
            Some("~peter/mail/台北/日本語")
        );
        assert_eq!(encode_mutf7("A&B"), "A&-B");
        assert_eq!(decode_mutf7("A&-B").as_deref(), Some("A&B"));
        assert_eq!(decode_mutf7("bad&AAA"), None);
        assert_eq!(decode_mutf7("Café"), None);
    }

    #[test]
    fn names_that_escape_are_refused() {
        for bad in [
            "",
            "/etc",
            "../x",
            "a/../b",
            "..",
            ".",
            "a/.hidden",
            ".x",
            "a//b",
            "a/",
            "a\0b",
            "a\nb",
            "a\u{7f}",
            "*",
            "a%",
        ] {
            assert!(
                matches!(validate_mailbox_name(bad), Err(StoreError::InvalidName(_))),
                "{bad:?} was accepted"
            );
        }
        let long = "x".repeat(300);
        assert!(validate_mailbox_name(&long).is_err());
    }

    #[test]
    fn inbox_is_case_insensitive_and_names_encode_on_disk() {
        assert_eq!(validate_mailbox_name("inbox").unwrap(), "INBOX");
        assert_eq!(validate_mailbox_name("InBoX/sub").unwrap(), "INBOX/sub");
        assert_eq!(validate_mailbox_name("Inboxes").unwrap(), "Inboxes");
        assert_eq!(disk_name("Work/2024"), "Work.2024");
        assert_eq!(disk_name("v1.2"), "v1&AC4-2");
        assert_eq!(disk_name("Café"), "Caf&AOk-");
        assert_eq!(from_disk_name("Work.2024").as_deref(), Some("Work/2024"));
        assert_eq!(from_disk_name("v1&AC4-2").as_deref(), Some("v1.2"));
        assert_eq!(from_disk_name("Caf&AOk-").as_deref(), Some("Café"));
        assert_eq!(from_disk_name("Café"), None);
        assert_eq!(from_disk_name(".x"), None);
        assert_eq!(from_disk_name("a..b"), None);
    }

    #[test]
    fn hierarchy_helpers() {
        assert!(is_descendant("a/b", "a"));
        assert!(!is_descendant("ab", "a"));
        assert!(!is_descendant("a", "a"));
        assert_eq!(parents("a/b/c").collect::<Vec<_>>(), vec!["a", "a/b"]);
    }
}
