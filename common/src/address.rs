//! Mail addresses as the directory stores them: `localpart@domain`, domain lower-cased.

use std::fmt;

/// A validated mailbox address. The local part keeps its case (RFC 5321 says it may matter),
/// but lookups in the directory are case-insensitive, as every admin expects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    pub localpart: String,
    pub domain: String,
}

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address {address:?}: {reason}")]
pub struct AddressError {
    pub address: String,
    pub reason: &'static str,
}

impl Address {
    /// Parse `localpart@domain` with a dot-atom local part (what a directory entry may be).
    /// Quoted local parts, source routes and address literals are not mailbox names here.
    pub fn parse(s: &str) -> Result<Address, AddressError> {
        let err = |reason| AddressError {
            address: s.to_string(),
            reason,
        };
        let s = s.trim();
        let (local, domain) = s.rsplit_once('@').ok_or_else(|| err("missing @"))?;
        if local.is_empty() || local.len() > 64 {
            return Err(err("local part must be 1 to 64 characters"));
        }
        let atom_ok = |c: char| {
            c.is_ascii_alphanumeric() || "!#$&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
        };
        if local.starts_with('.')
            || local.ends_with('.')
            || local.contains("..")
            || !local.chars().all(|c| c == '.' || atom_ok(c))
        {
            return Err(err(
                "local part has characters not allowed in a mailbox name",
            ));
        }
        let domain = crate::config::check_domain(domain).map_err(|_| err("invalid domain"))?;
        Ok(Address {
            localpart: local.to_string(),
            domain,
        })
    }

    /// The form stored in the directory: local part lower-cased too, so lookups match
    /// `Alice@Example.org` and `alice@example.org` alike.
    pub fn key(&self) -> String {
        format!("{}@{}", self.localpart.to_lowercase(), self.domain)
    }

    /// The local part without a `+detail` suffix, and the detail if there was one.
    pub fn split_detail(&self) -> (&str, Option<&str>) {
        match self.localpart.split_once('+') {
            Some((base, detail)) if !base.is_empty() => (base, Some(detail)),
            _ => (&self.localpart, None),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.localpart, self.domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_lowercases_domain() {
        let a = Address::parse("Alice.Smith@Example.ORG").unwrap();
        assert_eq!(a.localpart, "Alice.Smith");
        assert_eq!(a.domain, "example.org");
        assert_eq!(a.key(), "alice.smith@example.org");
    }

    #[test]
    fn refuses_tricks() {
        for bad in [
            "no-at-sign",
            "@example.org",
            "a@",
            "a@b@example.org",
            ".a@example.org",
            "a..b@example.org",
            "a b@example.org",
            "\"quoted\"@example.org",
            "a@[127.0.0.1]",
            "a@exa_mple.org",
            "a%b@example.org",
            "a@-example.org",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn plus_detail() {
        let a = Address::parse("alice+lists@example.org").unwrap();
        assert_eq!(a.split_detail(), ("alice", Some("lists")));
        let b = Address::parse("+x@example.org").unwrap();
        assert_eq!(b.split_detail(), ("+x", None));
    }
}
