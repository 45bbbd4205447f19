//! Comparators (RFC 4790: i;octet, i;ascii-casemap, i;ascii-numeric), match types (:is,
//! :contains, :matches, :regex, relational :value and :count) and the match variables they
//! set (`${0}`..`${9}`, RFC 5229).
//!
//! `:matches` and `:regex` run on regex-automata's meta engine, which is linear in the input:
//! no pattern can make a match take exponential time.

use std::cmp::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

use regex_automata::meta::Regex;
use regex_automata::util::syntax;

use super::limits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Comparator {
    Octet,
    CaseMap,
    Numeric,
}

impl Comparator {
    pub fn from_name(name: &str) -> Option<Comparator> {
        match name.to_ascii_lowercase().as_str() {
            "i;octet" => Some(Comparator::Octet),
            "i;ascii-casemap" => Some(Comparator::CaseMap),
            "i;ascii-numeric" => Some(Comparator::Numeric),
            _ => None,
        }
    }

    /// Total order of two values under this comparator.
    pub fn compare(self, a: &str, b: &str) -> Ordering {
        match self {
            Comparator::Octet => a.as_bytes().cmp(b.as_bytes()),
            Comparator::CaseMap => {
                let a = a.bytes().map(|c| c.to_ascii_lowercase());
                let b = b.bytes().map(|c| c.to_ascii_lowercase());
                a.cmp(b)
            }
            Comparator::Numeric => numeric_value(a).cmp(&numeric_value(b)),
        }
    }
}

/// i;ascii-numeric: the leading digits as a number; no leading digit is positive infinity
/// (`None` sorts after every number here).
fn numeric_value(s: &str) -> NumericValue {
    let digits: &str = &s[..s.bytes().take_while(u8::is_ascii_digit).count()];
    if digits.is_empty() {
        return NumericValue::Infinite;
    }
    let trimmed = digits.trim_start_matches('0');
    NumericValue::Finite(trimmed.len(), trimmed.to_string())
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum NumericValue {
    /// (number of significant digits, the digits): compares like the numbers.
    Finite(usize, String),
    Infinite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Relation {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Relation {
    pub fn from_name(name: &str) -> Option<Relation> {
        Some(match name.to_ascii_lowercase().as_str() {
            "gt" => Relation::Gt,
            "ge" => Relation::Ge,
            "lt" => Relation::Lt,
            "le" => Relation::Le,
            "eq" => Relation::Eq,
            "ne" => Relation::Ne,
            _ => return None,
        })
    }

    pub fn holds(self, o: Ordering) -> bool {
        match self {
            Relation::Gt => o == Ordering::Greater,
            Relation::Ge => o != Ordering::Less,
            Relation::Lt => o == Ordering::Less,
            Relation::Le => o != Ordering::Greater,
            Relation::Eq => o == Ordering::Equal,
            Relation::Ne => o != Ordering::Equal,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MatchType {
    Is,
    Contains,
    Matches,
    Regex,
    Value(Relation),
    Count(Relation),
}

/// The error of a key that cannot be used (a bad regex).
#[derive(Debug)]
pub(crate) struct BadPattern(pub String);

/// A `:matches` glob as an anchored regex: `*` -> `(.*?)`, `?` -> `(.)`, `\x` -> literal x.
/// Stars match as little as they can (so `*: *` on `Re: Re: x` gives `Re` and `Re: x`, as
/// Pigeonhole does).
fn glob_to_regex(glob: &str) -> String {
    let mut re = String::with_capacity(glob.len() * 2 + 8);
    re.push_str("\\A");
    let mut chars = glob.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str("(.*?)"),
            '?' => re.push_str("(.)"),
            '\\' => {
                if let Some(n) = chars.next() {
                    re.push_str(&regex_syntax::escape(&n.to_string()));
                }
            }
            c => re.push_str(&regex_syntax::escape(&c.to_string())),
        }
    }
    re.push_str("\\z");
    re
}

/// Compiled patterns shared by all deliveries (a 50-rule script must not compile its
/// patterns again for every message), bounded in number.
fn cached_regex(pattern: &str, case_insensitive: bool) -> Result<Arc<Regex>, BadPattern> {
    type Cache = hashlink::LruCache<(String, bool), Arc<Regex>>;
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(hashlink::LruCache::new(REGEX_CACHE)));
    let key = (pattern.to_string(), case_insensitive);
    if let Some(re) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(re.clone());
    }
    let re = Arc::new(build_regex(pattern, case_insensitive)?);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, re.clone());
    Ok(re)
}

/// How many compiled patterns [`cached_regex`] keeps.
const REGEX_CACHE: usize = 1024;

fn build_regex(pattern: &str, case_insensitive: bool) -> Result<Regex, BadPattern> {
    Regex::builder()
        .syntax(
            syntax::Config::new()
                .case_insensitive(case_insensitive)
                .dot_matches_new_line(true)
                .unicode(true),
        )
        .configure(
            Regex::config()
                .nfa_size_limit(Some(limits::REGEX_SIZE))
                .hybrid_cache_capacity(2 * limits::REGEX_SIZE),
        )
        .build(pattern)
        .map_err(|e| BadPattern(e.to_string()))
}

/// Matches `value` against one `key`: returns whether it matched and, for :matches and
/// :regex, the captured groups (`${0}` first).
pub(crate) fn match_one(
    comparator: Comparator,
    match_type: MatchType,
    value: &str,
    key: &str,
    want_captures: bool,
) -> Result<Option<Vec<String>>, BadPattern> {
    let hit = match match_type {
        MatchType::Is => comparator.compare(value, key) == Ordering::Equal,
        MatchType::Contains => match comparator {
            Comparator::Octet => value.contains(key),
            Comparator::CaseMap => contains_ascii_casemap(value, key),
            Comparator::Numeric => return Err(BadPattern(":contains with i;ascii-numeric".into())),
        },
        MatchType::Value(rel) => rel.holds(comparator.compare(value, key)),
        MatchType::Count(_) => false,
        MatchType::Matches | MatchType::Regex => {
            if comparator == Comparator::Numeric {
                return Err(BadPattern("wildcards with i;ascii-numeric".into()));
            }
            let pattern = if match_type == MatchType::Matches {
                if !want_captures && !key.contains(['*', '?', '\\']) {
                    return Ok((comparator.compare(value, key) == Ordering::Equal).then(Vec::new));
                }
                glob_to_regex(key)
            } else {
                key.to_string()
            };
            let re = cached_regex(&pattern, comparator == Comparator::CaseMap)?;
            if !want_captures {
                return Ok(re.is_match(value).then(Vec::new));
            }
            let mut caps = re.create_captures();
            re.captures(value, &mut caps);
            if !caps.is_match() {
                return Ok(None);
            }
            let groups = (0..caps.group_len().min(10))
                .map(|i| {
                    caps.get_group(i)
                        .map_or(String::new(), |s| value[s.start..s.end].to_string())
                })
                .collect();
            return Ok(Some(groups));
        }
    };
    Ok(hit.then(Vec::new))
}

fn contains_ascii_casemap(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// Validates a regex key at compile or run time.
pub(crate) fn check_regex(key: &str) -> Result<(), BadPattern> {
    build_regex(key, false).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(c: Comparator, t: MatchType, v: &str, k: &str) -> bool {
        match_one(c, t, v, k, false).unwrap().is_some()
    }

    #[test]
    fn comparators_and_match_types() {
        use Comparator::*;
        assert!(m(CaseMap, MatchType::Is, "Hello", "hello"));
        assert!(!m(Octet, MatchType::Is, "Hello", "hello"));
        assert!(m(CaseMap, MatchType::Contains, "Big SALE today", "sale"));
        assert!(m(CaseMap, MatchType::Matches, "[list] x", "\\[LIST\\]*"));
        assert!(!m(CaseMap, MatchType::Matches, "a.b", "a?c"));
        assert!(m(Octet, MatchType::Regex, "abc123", "^[a-c]+[0-9]{3}$"));
        assert!(m(Numeric, MatchType::Value(Relation::Gt), "10", "9"));
        assert!(m(Numeric, MatchType::Value(Relation::Eq), "007", "7"));
        assert!(m(Numeric, MatchType::Value(Relation::Gt), "abc", "99999"));
        assert!(m(CaseMap, MatchType::Value(Relation::Lt), "a", "B"));
    }

    #[test]
    fn matches_captures_take_the_shortest_first() {
        let caps = match_one(
            Comparator::CaseMap,
            MatchType::Matches,
            "a-b-c",
            "*-*",
            true,
        )
        .unwrap()
        .unwrap();
        assert_eq!(caps, vec!["a-b-c", "a", "b-c"]);
    }

    #[test]
    fn regex_bombs_are_linear_or_refused() {
        let value = "a".repeat(50_000);
        let start = std::time::Instant::now();
        assert!(!m(Comparator::Octet, MatchType::Regex, &value, "^(a+)+$b"));
        assert!(start.elapsed().as_secs() < 5);
        assert!(check_regex("(a{1000}){1000}").is_err());
    }
}
