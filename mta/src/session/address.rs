//! Checks on envelope addresses: syntax, and the routing tricks used to abuse relays.
//!
//! smtp-proto has already removed source routes (`@a,@b:user@c` -> `user@c`) and the quotes of
//! quoted local parts (`"a@b"@c` -> `a@b@c`), so the domain is always what follows the LAST `@`.

/// Longest address accepted (RFC 5321 4.5.3.1.3: 256 octets for a path including `<>`).
pub const MAX_ADDRESS_LEN: usize = 254;

/// Splits `local@domain` at the last `@`; both parts must be non-empty.
pub fn split(address: &str) -> Option<(&str, &str)> {
    let (local, domain) = address.rsplit_once('@')?;
    (!local.is_empty() && !domain.is_empty()).then_some((local, domain))
}

/// Characters that make a local part route mail somewhere else on some MTAs (`%` hack, UUCP bang
/// paths, nested `@`, source-route `:`): never honoured for relaying.
pub fn has_routing_syntax(local: &str) -> bool {
    local.contains(['%', '!', '@', ':'])
}

/// Control characters, the replacement character (from invalid UTF-8) and spaces outside of a
/// quoted local part have no place in an address we store and pass on.
pub fn has_forbidden_chars(address: &str) -> bool {
    address
        .chars()
        .any(|c| c.is_control() || c == char::REPLACEMENT_CHARACTER)
}

/// A domain as RFC 5321 allows it in a path: a host name (hermod-common's check, plus
/// non-ASCII labels when `utf8`) without the trailing dot that check forgives, or an address
/// literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`).
pub fn valid_domain(domain: &str, utf8: bool) -> bool {
    if is_address_literal(domain) {
        return valid_address_literal(domain);
    }
    if domain.ends_with('.') || domain.trim() != domain {
        return false;
    }
    if utf8 && !domain.is_ascii() {
        // U-labels: letters of any script, digits, hyphens; the ASCII rules otherwise.
        return domain.len() <= 253
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
    }
    hermod_common::config::check_domain(domain).is_ok()
}

pub fn is_address_literal(domain: &str) -> bool {
    domain.starts_with('[')
}

fn valid_address_literal(domain: &str) -> bool {
    let Some(inner) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) else {
        return false;
    };
    match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => {
            inner[5..].parse::<std::net::Ipv6Addr>().is_ok()
        }
        _ => inner.parse::<std::net::Ipv4Addr>().is_ok(),
    }
}

/// `local@domain` with the domain lower-cased (local parts are case-sensitive by the RFC; the
/// directory decides how it compares them).
pub fn normalize(local: &str, domain: &str) -> String {
    format!("{local}@{}", domain.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_the_last_at_sign() {
        assert_eq!(split("a@b@c"), Some(("a@b", "c")));
        assert_eq!(split("user@example.org"), Some(("user", "example.org")));
        assert_eq!(split("@example.org"), None);
        assert_eq!(split("user@"), None);
        assert_eq!(split("user"), None);
    }

    #[test]
    fn domain_syntax() {
        assert!(valid_domain("example.org", false));
        assert!(valid_domain("localhost", false));
        assert!(valid_domain("[192.0.2.1]", false));
        assert!(valid_domain("[IPv6:2001:db8::1]", false));
        assert!(!valid_domain("example.org.", false));
        assert!(!valid_domain(".example.org", false));
        assert!(!valid_domain("exa_mple.org", false));
        assert!(!valid_domain("-a.org", false));
        assert!(!valid_domain("[300.0.0.1]", false));
        assert!(!valid_domain("[192.0.2.1", false));
        assert!(!valid_domain("bücher.de", false));
        assert!(valid_domain("bücher.de", true));
    }

    #[test]
    fn routing_syntax() {
        for local in ["a%b", "b!a", "a@b", "@a:b"] {
            assert!(has_routing_syntax(local), "{local}");
        }
        assert!(!has_routing_syntax("first.last+tag"));
    }
}
