//! Address literals (`x@[10.0.0.5]`, `x@[IPv6:fc00::1]`) that point inside a network: mail
//! from the internet must never make us connect there (backscatter and request forgery: a
//! forged `MAIL FROM:<x@[127.0.0.1]>` with NOTIFY=SUCCESS would have us deliver a report
//! carrying the attacker's text to a loopback or internal service).
//!
//! The session refuses such senders and recipients from clients outside `mynetworks`; the
//! report path and the outbound engine refuse to send any report to them whoever asked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The IP address of an address-literal domain (`[192.0.2.1]`, `[IPv6:2001:db8::1]`), or
/// `None` when `domain` is not one or does not parse.
pub fn literal_ip(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => {
            inner[5..].parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        }
        _ => inner.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// True for addresses that are not a public unicast host on the internet: unspecified,
/// loopback, private (RFC 1918, fc00::/7), shared (CGNAT 100.64/10), link-local, multicast,
/// broadcast, reserved, documentation and benchmarking ranges, and IPv4 embedded in IPv6
/// (mapped, compatible, NAT64, 6to4) when the embedded address is one of those.
pub fn is_non_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_non_public_v4(v4),
        IpAddr::V6(v6) => is_non_public_v6(v6),
    }
}

fn is_non_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn is_non_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_non_public_v4(v4);
    }
    // IPv4-compatible (::a.b.c.d, deprecated), NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an
    // IPv4 address that decides where the packets go.
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    if segments[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return is_non_public_v4(embedded(segments[6], segments[7]));
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_non_public_v4(embedded(segments[6], segments[7]));
    }
    if segments[0] == 0x2002 {
        return is_non_public_v4(embedded(segments[1], segments[2]));
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (segments[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (segments[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        || (segments[0] == 0x0100 && segments[1..4] == [0, 0, 0]) // discard-only 100::/64
}

/// The domain of `address` (after the last `@`) is an address literal we must not send to
/// unasked: non-public, or not even a parsable literal.
pub fn is_forbidden_literal_domain(domain: &str) -> bool {
    domain.starts_with('[') && literal_ip(domain).is_none_or(is_non_public)
}

/// `address` (`local@domain`) has a forbidden address-literal domain.
pub fn is_forbidden_literal_address(address: &str) -> bool {
    address
        .rsplit_once('@')
        .is_some_and(|(_, domain)| is_forbidden_literal_domain(domain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_literals_are_forbidden() {
        for domain in [
            "[127.0.0.1]",
            "[127.1.2.3]",
            "[10.0.0.5]",
            "[172.16.9.9]",
            "[192.168.1.1]",
            "[169.254.169.254]",
            "[100.64.0.1]",
            "[100.127.255.255]",
            "[0.0.0.0]",
            "[0.1.2.3]",
            "[224.0.0.1]",
            "[255.255.255.255]",
            "[240.0.0.1]",
            "[192.0.2.1]",
            "[IPv6:::1]",
            "[ipv6:::]",
            "[IPv6:fc00::1]",
            "[IPv6:fd12:3456::1]",
            "[IPv6:fe80::1]",
            "[IPv6:ff02::1]",
            "[IPv6:::ffff:10.0.0.5]",
            "[IPv6:::ffff:127.0.0.1]",
            "[IPv6:64:ff9b::7f00:1]",
            "[IPv6:2002:a00:5::1]",
            "[IPv6:2001:db8::1]",
            "[not-an-ip]",
            "[10.0.0.5",
        ] {
            assert!(is_forbidden_literal_domain(domain), "{domain} allowed");
        }
        assert!(is_forbidden_literal_address("x@[10.0.0.5]"));
        assert!(is_forbidden_literal_address("\"a@b\"@[127.0.0.1]"));
    }

    #[test]
    fn public_literals_and_names_are_not() {
        for domain in [
            "[8.8.8.8]",
            "[100.128.0.1]",
            "[IPv6:2a00:1450:4001::1]",
            "[IPv6:::ffff:8.8.8.8]",
            "example.org",
            "10.0.0.5",
        ] {
            assert!(!is_forbidden_literal_domain(domain), "{domain} refused");
        }
        assert!(!is_forbidden_literal_address("x@example.org"));
        assert!(!is_forbidden_literal_address(""));
    }
}
