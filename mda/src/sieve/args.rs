//! The arguments of one command or test, sorted into tags (with their values) and
//! positional arguments, and the match options most tests share.

use super::ast::{Arg, Call};
use super::matching::{Comparator, MatchType, Relation};

/// Tags that take the next argument as their value.
const TAKES_VALUE: &[&str] = &[
    "comparator",
    "value",
    "count",
    "index",
    "days",
    "seconds",
    "subject",
    "from",
    "addresses",
    "handle",
    "flags",
    "zone",
    "header",
    "uniqueid",
    "content",
    "over",
    "under",
];

pub(crate) struct Args<'a> {
    pub tags: Vec<(&'a str, Option<&'a Arg>)>,
    pub positional: Vec<&'a Arg>,
}

impl<'a> Args<'a> {
    pub fn of(call: &'a Call) -> Result<Args<'a>, String> {
        let mut tags = Vec::new();
        let mut positional = Vec::new();
        let mut it = call.args.iter();
        while let Some(arg) = it.next() {
            match arg {
                Arg::Tag(t) if TAKES_VALUE.contains(&t.as_str()) => {
                    let value = it.next().ok_or_else(|| format!("':{t}' needs a value"))?;
                    if matches!(value, Arg::Tag(_)) {
                        return Err(format!("':{t}' needs a value"));
                    }
                    tags.push((t.as_str(), Some(value)));
                }
                Arg::Tag(t) => tags.push((t.as_str(), None)),
                other => positional.push(other),
            }
        }
        Ok(Args { tags, positional })
    }

    pub fn has(&self, tag: &str) -> bool {
        self.tags.iter().any(|(t, _)| *t == tag)
    }

    pub fn value(&self, tag: &str) -> Option<&'a Arg> {
        self.tags
            .iter()
            .find(|(t, _)| *t == tag)
            .and_then(|(_, v)| *v)
    }

    pub fn number(&self, tag: &str) -> Result<Option<u64>, String> {
        match self.value(tag) {
            None => Ok(None),
            Some(Arg::Number(n)) => Ok(Some(*n)),
            Some(_) => Err(format!("':{tag}' needs a number")),
        }
    }

    pub fn string(&self, tag: &str) -> Result<Option<&'a str>, String> {
        match self.value(tag) {
            None => Ok(None),
            Some(Arg::Str(s)) => Ok(Some(s.as_str())),
            Some(Arg::List(l)) if l.len() == 1 => Ok(Some(l[0].as_str())),
            Some(_) => Err(format!("':{tag}' needs a string")),
        }
    }

    pub fn list(&self, tag: &str) -> Result<Option<Vec<&'a str>>, String> {
        match self.value(tag) {
            None => Ok(None),
            Some(a) => a
                .strings()
                .map(Some)
                .ok_or_else(|| format!("':{tag}' needs a string list")),
        }
    }

    /// Positional argument `i` as strings.
    pub fn strings(&self, i: usize) -> Result<Vec<&'a str>, String> {
        self.positional
            .get(i)
            .and_then(|a| a.strings())
            .ok_or_else(|| "missing string argument".to_string())
    }

    pub fn string_at(&self, i: usize) -> Result<&'a str, String> {
        match self.positional.get(i) {
            Some(Arg::Str(s)) => Ok(s.as_str()),
            Some(Arg::List(l)) if l.len() == 1 => Ok(l[0].as_str()),
            _ => Err("missing string argument".to_string()),
        }
    }
}

/// Comparator, match type and index options of a test.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MatchOpts {
    pub comparator: Comparator,
    pub match_type: MatchType,
}

impl MatchOpts {
    pub fn of(args: &Args<'_>) -> Result<MatchOpts, String> {
        let comparator = match args.string("comparator")? {
            Some(name) => Comparator::from_name(name)
                .ok_or_else(|| format!("unknown comparator \"{name}\""))?,
            None => Comparator::CaseMap,
        };
        let mut match_type = MatchType::Is;
        let mut seen = 0;
        for (tag, _) in &args.tags {
            let t = match *tag {
                "is" => MatchType::Is,
                "contains" => MatchType::Contains,
                "matches" => MatchType::Matches,
                "regex" => MatchType::Regex,
                "value" | "count" => {
                    let rel = args.string(tag)?.unwrap_or("");
                    let rel = Relation::from_name(rel)
                        .ok_or_else(|| format!("invalid relation \"{rel}\""))?;
                    if *tag == "value" {
                        MatchType::Value(rel)
                    } else {
                        MatchType::Count(rel)
                    }
                }
                _ => continue,
            };
            match_type = t;
            seen += 1;
        }
        if seen > 1 {
            return Err("more than one match type".into());
        }
        Ok(MatchOpts {
            comparator,
            match_type,
        })
    }
}

/// RFC 5228 2.7.4 address parts and RFC 5233 :user/:detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddressPart {
    All,
    LocalPart,
    Domain,
    User,
    Detail,
}

impl AddressPart {
    pub fn of(args: &Args<'_>) -> AddressPart {
        let mut part = AddressPart::All;
        for (tag, _) in &args.tags {
            part = match *tag {
                "all" => AddressPart::All,
                "localpart" => AddressPart::LocalPart,
                "domain" => AddressPart::Domain,
                "user" => AddressPart::User,
                "detail" => AddressPart::Detail,
                _ => continue,
            };
        }
        part
    }

    /// The part of `address`; `None` when it has none (`:detail` without a `+`).
    pub fn extract(self, address: &str) -> Option<String> {
        let (local, domain) = match address.rsplit_once('@') {
            Some((l, d)) => (l, d),
            None => (address, ""),
        };
        match self {
            AddressPart::All => Some(address.to_string()),
            AddressPart::LocalPart => Some(local.to_string()),
            AddressPart::Domain => Some(domain.to_string()),
            AddressPart::User => Some(local.split_once('+').map_or(local, |(u, _)| u).to_string()),
            AddressPart::Detail => local.split_once('+').map(|(_, d)| d.to_string()),
        }
    }
}
