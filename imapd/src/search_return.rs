//! The RETURN options of SEARCH and SORT and the ESEARCH response that answers them:
//! MIN, MAX, COUNT and ALL (ESEARCH, RFC 4731), the same for SORT (ESORT, RFC 5267
//! section 3), UPDATE and CONTEXT (CONTEXT=SEARCH, RFC 5267 section 4) and PARTIAL with
//! positive or negative ranges (RFC 5267 section 4.4, RFC 9394).
//!
//! The options are read here; the command without them goes to imap-codec, which parses
//! SEARCH and SORT but not their RETURN clause.

use crate::extended::{Malformed, Token, tokenize};
use crate::sequence;

/// What a SEARCH or SORT returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReturnOptions {
    pub min: bool,
    pub max: bool,
    pub all: bool,
    pub count: bool,
    /// Only the results at these positions (RFC 9394).
    pub partial: Option<PartialRange>,
    /// Keep the search alive and report changes to its result (RFC 5267 section 4.3).
    pub update: bool,
    /// A hint that the client will page through the result (RFC 5267 section 4.2).
    pub context: bool,
    /// Keep the result as `$` (SEARCHRES, RFC 5182).
    pub save: bool,
}

/// A range of positions in a result list, 1-based and inclusive: from the start
/// (`2:4`), or from the end (`-1:-100`, -1 being the last result).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartialRange {
    First(u32, u32),
    Last(u32, u32),
}

fn positive(text: &[u8]) -> Option<u32> {
    if text.is_empty() || text.len() > 10 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text)
        .ok()?
        .parse()
        .ok()
        .filter(|n| *n > 0)
}

impl PartialRange {
    /// `m:n` or `-m:-n`, either way round; `*`, zero and mixed signs are refused.
    pub fn parse(text: &[u8]) -> Option<PartialRange> {
        let colon = text.iter().position(|&b| b == b':')?;
        let (a, b) = (&text[..colon], &text[colon + 1..]);
        match (a.strip_prefix(b"-"), b.strip_prefix(b"-")) {
            (None, None) => {
                let (a, b) = (positive(a)?, positive(b)?);
                Some(PartialRange::First(a.min(b), a.max(b)))
            }
            (Some(a), Some(b)) => {
                let (a, b) = (positive(a)?, positive(b)?);
                Some(PartialRange::Last(a.min(b), a.max(b)))
            }
            _ => None,
        }
    }

    /// The positions this range names in a list of `len` results, as indexes.
    pub fn indexes(self, len: usize) -> std::ops::Range<usize> {
        let (lo, hi) = match self {
            PartialRange::First(a, b) => (a as usize - 1, b as usize),
            PartialRange::Last(a, b) => (
                len.saturating_sub(b as usize),
                len.saturating_sub(a as usize - 1),
            ),
        };
        lo.min(len)..hi.min(len)
    }
}

impl std::fmt::Display for PartialRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PartialRange::First(a, b) => write!(f, "{a}:{b}"),
            PartialRange::Last(a, b) => write!(f, "-{a}:-{b}"),
        }
    }
}

/// Reads the list after RETURN. An empty list means ALL (RFC 4731 section 3.1).
pub fn parse_options(opts: &[Token]) -> Result<ReturnOptions, Malformed> {
    let mut r = ReturnOptions::default();
    let mut it = opts.iter();
    while let Some(o) = it.next() {
        let Token::Atom(name) = o else {
            return Err(Malformed("bad RETURN option"));
        };
        match name.to_ascii_uppercase().as_slice() {
            b"MIN" => r.min = true,
            b"MAX" => r.max = true,
            b"ALL" => r.all = true,
            b"COUNT" => r.count = true,
            b"UPDATE" => r.update = true,
            b"CONTEXT" => r.context = true,
            b"SAVE" => r.save = true,
            b"PARTIAL" => {
                let Some(Token::Atom(range)) = it.next() else {
                    return Err(Malformed("PARTIAL needs a range"));
                };
                if r.partial.is_some() {
                    return Err(Malformed("PARTIAL given twice"));
                }
                r.partial = Some(PartialRange::parse(range).ok_or(Malformed("bad PARTIAL range"))?);
            }
            _ => return Err(Malformed("unknown RETURN option")),
        }
    }
    if opts.is_empty() {
        r.all = true;
    }
    Ok(r)
}

/// `tag [UID] SEARCH|SORT RETURN (...) rest`: the options, and the command without them.
/// `None` when there is no RETURN (imap-codec reads the command as it is).
pub fn split_return(line: &[u8], uid: bool) -> Option<Result<(ReturnOptions, Vec<u8>), Malformed>> {
    let toks = match tokenize(line) {
        Ok(t) => t,
        // Let imap-codec judge lines this lexer cannot read.
        Err(_) => return None,
    };
    let skip = if uid { 3 } else { 2 };
    let (ret_at, ret) = toks.get(skip)?;
    if !matches!(ret, Token::Atom(a) if a.eq_ignore_ascii_case(b"RETURN")) {
        return None;
    }
    let Some((_, Token::List(opts))) = toks.get(skip + 1) else {
        return Some(Err(Malformed("RETURN needs a list")));
    };
    let returns = match parse_options(opts) {
        Ok(r) => r,
        Err(e) => return Some(Err(e)),
    };
    let Some((rest_at, _)) = toks.get(skip + 2) else {
        return Some(Err(Malformed("missing criteria")));
    };
    let mut rest = line[..*ret_at].to_vec();
    rest.extend_from_slice(&line[*rest_at..]);
    Some(Ok((returns, rest)))
}

/// One result: its number (sequence number or UID, as the command asked) and MODSEQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub number: u32,
    pub modseq: u64,
}

/// A set of numbers in result order: sorted for SEARCH, in sort order for SORT.
fn set(numbers: &[u32], ordered: bool) -> String {
    if ordered {
        sequence::format_ordered(numbers)
    } else {
        sequence::format(numbers)
    }
}

/// The `ESEARCH` response (without `* `) for `found`, which is in result order (ascending
/// for SEARCH; sort order for SORT, `ordered`). MIN and MAX are the first and last result.
/// With MODSEQ criteria (`with_modseq`) the highest MODSEQ of what is returned is added
/// (RFC 7162 section 3.1.5): of the MIN/MAX messages when only those are asked for.
pub fn esearch_line(
    tag: &str,
    uid: bool,
    opts: &ReturnOptions,
    found: &[Found],
    ordered: bool,
    with_modseq: bool,
) -> String {
    let mut line = format!("ESEARCH (TAG \"{tag}\")");
    if uid {
        line.push_str(" UID");
    }
    let (first, last) = if ordered {
        (found.first(), found.last())
    } else {
        (
            found.iter().min_by_key(|f| f.number),
            found.iter().max_by_key(|f| f.number),
        )
    };
    if opts.min
        && let Some(f) = first
    {
        line.push_str(&format!(" MIN {}", f.number));
    }
    if opts.max
        && let Some(f) = last
    {
        line.push_str(&format!(" MAX {}", f.number));
    }
    if opts.count {
        line.push_str(&format!(" COUNT {}", found.len()));
    }
    let numbers: Vec<u32> = found.iter().map(|f| f.number).collect();
    if opts.all && !numbers.is_empty() {
        line.push_str(&format!(" ALL {}", set(&numbers, ordered)));
    }
    if let Some(range) = opts.partial {
        let page = &numbers[range.indexes(numbers.len())];
        if page.is_empty() {
            line.push_str(&format!(" PARTIAL ({range} NIL)"));
        } else {
            line.push_str(&format!(" PARTIAL ({range} {})", set(page, ordered)));
        }
    }
    if with_modseq {
        let highest = if opts.all || opts.count || opts.partial.is_some() {
            found.iter().map(|f| f.modseq).max()
        } else {
            [first.filter(|_| opts.min), last.filter(|_| opts.max)]
                .into_iter()
                .flatten()
                .map(|f| f.modseq)
                .max()
        };
        if let Some(h) = highest {
            line.push_str(&format!(" MODSEQ {h}"));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &str) -> Result<ReturnOptions, Malformed> {
        let toks = tokenize(list.as_bytes()).unwrap();
        let Some((_, Token::List(items))) = toks.into_iter().next() else {
            panic!("not a list: {list}")
        };
        parse_options(&items)
    }

    fn found(numbers: &[u32]) -> Vec<Found> {
        numbers
            .iter()
            .map(|&n| Found {
                number: n,
                modseq: u64::from(n) * 10,
            })
            .collect()
    }

    #[test]
    fn ranges_parse_either_way_round_and_refuse_stars() {
        assert_eq!(
            PartialRange::parse(b"1:100"),
            Some(PartialRange::First(1, 100))
        );
        assert_eq!(PartialRange::parse(b"4:2"), Some(PartialRange::First(2, 4)));
        assert_eq!(
            PartialRange::parse(b"-1:-100"),
            Some(PartialRange::Last(1, 100))
        );
        assert_eq!(
            PartialRange::parse(b"-100:-1"),
            Some(PartialRange::Last(1, 100))
        );
        for bad in [
            &b"1"[..],
            b"1:*",
            b"*:1",
            b"0:3",
            b"1:-3",
            b"-1:3",
            b"1:",
            b"99999999999:1",
        ] {
            assert_eq!(
                PartialRange::parse(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn ranges_select_positions_from_start_or_end() {
        assert_eq!(PartialRange::First(2, 4).indexes(5), 1..4);
        assert_eq!(PartialRange::First(1, 6).indexes(5), 0..5);
        assert_eq!(PartialRange::First(6, 6).indexes(5), 5..5);
        assert_eq!(PartialRange::Last(1, 2).indexes(5), 3..5);
        assert_eq!(PartialRange::Last(1, 100).indexes(5), 0..5);
        assert_eq!(PartialRange::Last(6, 9).indexes(5), 0..0);
        assert_eq!(PartialRange::Last(2, 3).to_string(), "-2:-3");
    }

    #[test]
    fn options() {
        let o = opts("(MIN max Count)").unwrap();
        assert!(o.min && o.max && o.count && !o.all);
        assert!(opts("()").unwrap().all);
        let o = opts("(UPDATE CONTEXT PARTIAL 4:2)").unwrap();
        assert!(o.update && o.context && !o.all);
        assert_eq!(o.partial, Some(PartialRange::First(2, 4)));
        assert!(opts("(PARTIAL)").is_err());
        assert!(opts("(PARTIAL 1)").is_err());
        assert!(opts("(PARTIAL 1:*)").is_err());
        let o = opts("(SAVE)").unwrap();
        assert!(o.save && !o.all, "SAVE alone returns nothing (RFC 5182)");
        assert!(opts("(SAVEX)").is_err());
    }

    #[test]
    fn split_keeps_the_rest_for_the_codec() {
        let (o, rest) = split_return(b"s UID SORT RETURN (COUNT) (ARRIVAL) UTF-8 ALL\r\n", true)
            .unwrap()
            .unwrap();
        assert!(o.count);
        assert_eq!(rest, b"s UID SORT (ARRIVAL) UTF-8 ALL\r\n");
        assert!(split_return(b"s SORT (ARRIVAL) UTF-8 ALL\r\n", false).is_none());
        assert!(matches!(
            split_return(b"s SORT RETURN (PARTIAL 1) (ARRIVAL) UTF-8 ALL\r\n", false),
            Some(Err(_))
        ));
    }

    #[test]
    fn lines_for_search_and_sort() {
        let o = opts("(MIN MAX COUNT ALL)").unwrap();
        assert_eq!(
            esearch_line("a", false, &o, &found(&[1, 2, 3, 5]), false, false),
            "ESEARCH (TAG \"a\") MIN 1 MAX 5 COUNT 4 ALL 1:3,5"
        );
        // SORT: first and last in sort order, ALL in sort order.
        assert_eq!(
            esearch_line("b", true, &o, &found(&[5, 3, 4, 2]), true, false),
            "ESEARCH (TAG \"b\") UID MIN 5 MAX 2 COUNT 4 ALL 5,3:4,2"
        );
        let o = opts("(PARTIAL 2:4)").unwrap();
        assert_eq!(
            esearch_line("c", false, &o, &found(&[1, 2, 4, 5]), false, false),
            "ESEARCH (TAG \"c\") PARTIAL (2:4 2,4:5)"
        );
        assert_eq!(
            esearch_line("d", false, &o, &found(&[1]), false, false),
            "ESEARCH (TAG \"d\") PARTIAL (2:4 NIL)"
        );
        let o = opts("(PARTIAL -1:-2)").unwrap();
        assert_eq!(
            esearch_line("e", false, &o, &found(&[1, 2, 4, 5]), false, true),
            "ESEARCH (TAG \"e\") PARTIAL (-1:-2 4:5) MODSEQ 50"
        );
        let o = opts("(MIN)").unwrap();
        assert_eq!(
            esearch_line("f", false, &o, &found(&[3, 4]), false, true),
            "ESEARCH (TAG \"f\") MIN 3 MODSEQ 30"
        );
        assert_eq!(
            esearch_line("g", false, &o, &[], false, true),
            "ESEARCH (TAG \"g\")"
        );
    }
}
