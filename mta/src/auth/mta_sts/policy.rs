//! MTA-STS records and policies (RFC 8461): the `_mta-sts` TXT record, the policy file and
//! the MX patterns. Pure parsing, no I/O; every parser is one pass over its input.

use std::fmt;

/// Largest policy file accepted (RFC 8461 3.3: senders may cap it at 64 KiB).
pub const MAX_POLICY_BYTES: usize = 64 * 1024;
/// RFC 8461 3.2: `max_age` is at most 31557600 seconds (about a year).
pub const MAX_AGE_LIMIT: u64 = 31_557_600;
/// More MX patterns than any real policy has; a bound on what one policy can make us keep.
const MAX_PATTERNS: usize = 64;

/// What a policy asks of senders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Deliver only to matching MX hosts over TLS with a valid certificate.
    Enforce,
    /// Deliver as usual; report what would have failed.
    Testing,
    /// No policy (a domain turning MTA-STS off).
    None,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

/// A parsed policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// Patterns (`mx.example.org`, `*.example.org`), lowercase, without trailing dot.
    pub mx: Vec<String>,
    /// Seconds the policy may be cached.
    pub max_age: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy is larger than {MAX_POLICY_BYTES} bytes")]
    TooLarge,
    #[error("policy is not UTF-8")]
    NotUtf8,
    #[error("policy has no `version: STSv1`")]
    Version,
    #[error("policy has no valid `mode`")]
    Mode,
    #[error("policy has no valid `max_age`")]
    MaxAge,
    #[error("policy in mode {0} names no `mx`")]
    NoMx(&'static str),
    #[error("policy has more than {MAX_PATTERNS} `mx` lines")]
    TooManyMx,
}

impl Policy {
    /// Parses a policy file (RFC 8461 3.2): `key: value` lines ending in LF or CRLF; unknown
    /// keys are ignored, as the RFC asks.
    pub fn parse(text: &[u8]) -> Result<Policy, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge);
        }
        let text = std::str::from_utf8(text).map_err(|_| PolicyError::NotUtf8)?;
        let (mut version, mut mode, mut max_age) = (false, None, None);
        let mut mx = Vec::new();
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim_matches([' ', '\t']);
            match key.trim_matches([' ', '\t']) {
                "version" => version = value == "STSv1",
                "mode" => {
                    mode = match value {
                        "enforce" => Some(Mode::Enforce),
                        "testing" => Some(Mode::Testing),
                        "none" => Some(Mode::None),
                        _ => return Err(PolicyError::Mode),
                    }
                }
                "max_age" => {
                    max_age = match value.parse::<u64>() {
                        Ok(v) if value.len() <= 10 && v <= MAX_AGE_LIMIT => Some(v),
                        _ => return Err(PolicyError::MaxAge),
                    }
                }
                "mx" => {
                    if mx.len() == MAX_PATTERNS {
                        return Err(PolicyError::TooManyMx);
                    }
                    if let Some(pattern) = normalize_pattern(value) {
                        mx.push(pattern);
                    }
                }
                _ => {}
            }
        }
        if !version {
            return Err(PolicyError::Version);
        }
        let mode = mode.ok_or(PolicyError::Mode)?;
        let max_age = max_age.ok_or(PolicyError::MaxAge)?;
        if mx.is_empty() && mode != Mode::None {
            return Err(PolicyError::NoMx(mode.as_str()));
        }
        Ok(Policy { mode, mx, max_age })
    }

    /// Whether MX host `host` is allowed (RFC 8461 4.1): an exact name, or `*.suffix` standing
    /// for exactly one leftmost label.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(suffix) => host
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
                None => *pattern == host,
            })
    }
}

impl fmt::Display for Policy {
    /// The policy file, as hermod serves its own.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "version: STSv1\r\nmode: {}\r\n", self.mode.as_str())?;
        for mx in &self.mx {
            write!(f, "mx: {mx}\r\n")?;
        }
        write!(f, "max_age: {}\r\n", self.max_age)
    }
}

/// A pattern as compared: lowercase, no trailing dot; None for one that can never match.
fn normalize_pattern(value: &str) -> Option<String> {
    let p = value.trim_end_matches('.').to_ascii_lowercase();
    let name = p.strip_prefix("*.").unwrap_or(&p);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    valid.then_some(p)
}

/// The `id` of a `_mta-sts` TXT record (RFC 8461 3.1), from the record's strings joined.
/// None when the text is not an STSv1 record or its id is invalid.
pub fn record_id(txt: &str) -> Option<String> {
    let mut fields = txt.split(';').map(|f| f.trim_matches([' ', '\t']));
    if fields.next()? != "v=STSv1" {
        return None;
    }
    let mut id = None;
    for field in fields {
        if let Some(value) = field.strip_prefix("id=") {
            let ok =
                (1..=32).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric());
            if !ok {
                return None;
            }
            id = Some(value.to_string());
        }
    }
    id
}

/// From the TXT records at `_mta-sts.<domain>`: the policy id, if exactly one record is an
/// STSv1 record (RFC 8461 3.1: with several, the domain has no usable policy).
pub fn policy_id<'a>(records: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut found = records.into_iter().filter(|r| r.starts_with("v=STSv1"));
    let first = found.next()?;
    if found.next().is_some() {
        return None;
    }
    record_id(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n";

    #[test]
    fn the_rfc_example_parses_and_matches() {
        let p = Policy::parse(GOOD.as_bytes()).unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 604800);
        assert!(p.allows("mail.example.com"));
        assert!(p.allows("MAIL.Example.COM."));
        assert!(p.allows("mx1.example.net"));
        assert!(!p.allows("example.net"), "a wildcard needs one label");
        assert!(
            !p.allows("a.b.example.net"),
            "a wildcard stands for one label only"
        );
        assert!(!p.allows("evil.example.org"));
        assert_eq!(Policy::parse(p.to_string().as_bytes()).unwrap(), p);
    }

    #[test]
    fn lf_endings_unknown_keys_and_spaces_are_accepted() {
        let p = Policy::parse(
            b"version:STSv1\nfoo: bar\nmode:   testing  \nmx: MX.Example.org.\nmax_age: 86400",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Testing);
        assert_eq!(p.mx, ["mx.example.org"]);
    }

    #[test]
    fn broken_policies_are_refused() {
        let cases: [(&str, PolicyError); 6] = [
            ("mode: enforce\nmx: a.b\nmax_age: 1\n", PolicyError::Version),
            (
                "version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1\n",
                PolicyError::Version,
            ),
            (
                "version: STSv1\nmode: strict\nmx: a.b\nmax_age: 1\n",
                PolicyError::Mode,
            ),
            (
                "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 99999999999\n",
                PolicyError::MaxAge,
            ),
            (
                "version: STSv1\nmode: enforce\nmax_age: 1\n",
                PolicyError::NoMx("enforce"),
            ),
            (
                "version: STSv1\nmode: testing\nmx: -bad..name\nmax_age: 1\n",
                PolicyError::NoMx("testing"),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(Policy::parse(text.as_bytes()), Err(want), "{text}");
        }
        let none = Policy::parse(b"version: STSv1\nmode: none\nmax_age: 1\n").unwrap();
        assert_eq!(none.mode, Mode::None);
        assert_eq!(
            Policy::parse(&vec![b'a'; MAX_POLICY_BYTES + 1]),
            Err(PolicyError::TooLarge)
        );
        let many = format!(
            "version: STSv1\nmode: testing\nmax_age: 1\n{}",
            "mx: a.b\n".repeat(65)
        );
        assert_eq!(Policy::parse(many.as_bytes()), Err(PolicyError::TooManyMx));
    }

    #[test]
    fn txt_records() {
        assert_eq!(
            record_id("v=STSv1; id=20160831085700Z;"),
            Some("20160831085700Z".into())
        );
        assert_eq!(record_id("v=STSv1;id=abc"), Some("abc".into()));
        assert_eq!(record_id("v=STSv1; id=has-dash"), None);
        assert_eq!(record_id("v=STSv1; id="), None);
        assert_eq!(record_id("v=spf1 -all"), None);
        assert_eq!(
            policy_id(["v=spf1 -all", "v=STSv1; id=x1"]),
            Some("x1".into())
        );
        assert_eq!(policy_id(["v=STSv1; id=x1", "v=STSv1; id=x2"]), None);
        assert_eq!(policy_id([]), None);
    }
}
