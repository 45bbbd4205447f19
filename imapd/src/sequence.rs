//! Sequence sets (`1:5,7,10:*`) resolved against a mailbox view.
//!
//! Results are sorted, merged index ranges into the view (0-based), so `UID FETCH 1:* (FLAGS)`
//! on a large mailbox costs two binary searches, not one lookup per number.

use std::ops::Range;

use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

/// The error for message sequence numbers beyond the mailbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid message sequence number")]
pub struct BadSequence;

fn value(v: &SeqOrUid, star: u32) -> u32 {
    match v {
        SeqOrUid::Value(n) => n.get(),
        SeqOrUid::Asterisk => star,
    }
}

/// The (inclusive) number ranges of a set, with `*` standing for `star`.
fn ranges(set: &SequenceSet, star: u32) -> impl Iterator<Item = (u32, u32)> + '_ {
    set.0.as_ref().iter().map(move |s| match s {
        Sequence::Single(v) => {
            let n = value(v, star);
            (n, n)
        }
        Sequence::Range(a, b) => {
            let (a, b) = (value(a, star), value(b, star));
            (a.min(b), a.max(b))
        }
    })
}

/// Sorts and merges overlapping or adjacent ranges.
fn merge(mut v: Vec<Range<usize>>) -> Vec<Range<usize>> {
    v.retain(|r| !r.is_empty());
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range<usize>> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Message sequence numbers against a mailbox of `count` messages. Numbers beyond it are an
/// error (the client's view and ours always agree, as EXPUNGEs are announced in order);
/// `*` in an empty mailbox selects nothing.
pub fn by_seq(set: &SequenceSet, count: u32) -> Result<Vec<Range<usize>>, BadSequence> {
    let mut out = Vec::new();
    for (a, b) in ranges(set, count) {
        if count == 0 && a == 0 {
            continue;
        }
        if b > count || a == 0 {
            return Err(BadSequence);
        }
        out.push(a as usize - 1..b as usize);
    }
    Ok(merge(out))
}

/// UIDs against the messages of a mailbox, sorted by UID (`uid` reads one's UID). UIDs that do not exist are skipped; `*` is the
/// highest UID, so `n:*` always includes the last message (RFC 3501 section 6.4.8).
pub fn by_uid<T>(set: &SequenceSet, items: &[T], uid: impl Fn(&T) -> u32) -> Vec<Range<usize>> {
    let star = items.last().map_or(0, &uid);
    merge(
        ranges(set, star)
            .map(|(a, b)| {
                let start = items.partition_point(|m| uid(m) < a);
                let end = items.partition_point(|m| uid(m) <= b);
                start..end
            })
            .collect(),
    )
}

/// Whether `n` is in the set, with `*` standing for `star`.
pub fn contains(set: &SequenceSet, n: u32, star: u32) -> bool {
    ranges(set, star).any(|(a, b)| a <= n && n <= b)
}

/// Iterates over the indices of a list of ranges.
pub fn indices(ranges: &[Range<usize>]) -> impl Iterator<Item = usize> + '_ {
    ranges.iter().flat_map(|r| r.clone())
}

/// Writes numbers as a compact sequence set (`1:3,7`); the numbers need not be sorted.
pub fn format(numbers: &[u32]) -> String {
    let mut sorted = numbers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// Writes numbers in the given order as a sequence set, merging only ascending runs
/// (COPYUID must pair source and destination UIDs one to one).
pub fn format_ordered(numbers: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < numbers.len() {
        let start = numbers[i];
        let mut end = start;
        while i + 1 < numbers.len() && numbers[i + 1] == end.wrapping_add(1) {
            i += 1;
            end = numbers[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> SequenceSet {
        s.try_into().unwrap()
    }

    #[test]
    fn sequence_numbers() {
        assert_eq!(by_seq(&set("1:3,5"), 10).unwrap(), vec![0..3, 4..5]);
        assert_eq!(by_seq(&set("3:1"), 10).unwrap(), vec![0..3]);
        assert_eq!(by_seq(&set("8:*"), 10).unwrap(), vec![7..10]);
        assert_eq!(by_seq(&set("*"), 10).unwrap(), vec![9..10]);
        assert_eq!(by_seq(&set("1:2,2:4"), 10).unwrap(), vec![0..4]);
        assert_eq!(by_seq(&set("11"), 10), Err(BadSequence));
        assert_eq!(by_seq(&set("1:*"), 0).unwrap(), Vec::<Range<usize>>::new());
    }

    #[test]
    fn uids_skip_missing_and_star_is_last() {
        let uids = [3, 4, 9, 12];
        assert_eq!(by_uid(&set("1:*"), &uids, |u: &u32| *u), vec![0..4]);
        assert_eq!(
            by_uid(&set("5:8"), &uids, |u: &u32| *u),
            Vec::<Range<usize>>::new()
        );
        assert_eq!(by_uid(&set("4,12"), &uids, |u: &u32| *u), vec![1..2, 3..4]);
        // n:* with n beyond the last UID still names the last message.
        assert_eq!(by_uid(&set("100:*"), &uids, |u: &u32| *u), vec![3..4]);
        assert_eq!(
            by_uid(&set("1:*"), &[], |u: &u32| *u),
            Vec::<Range<usize>>::new()
        );
    }

    #[test]
    fn formats_compactly() {
        assert_eq!(format(&[5, 1, 2, 3, 9]), "1:3,5,9");
        assert_eq!(format(&[]), "");
        assert_eq!(format_ordered(&[4, 5, 6, 2]), "4:6,2");
    }

    #[test]
    fn contains_with_star() {
        assert!(contains(&set("2:*"), 7, 7));
        assert!(!contains(&set("2:4"), 7, 7));
    }
}
