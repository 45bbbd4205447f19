//! The base subject of RFC 5256 section 2.1, which SORT SUBJECT and both THREAD algorithms
//! compare.
//!
//! Written here rather than taken from mail-parser's `thread_name`: that one strips many
//! languages' prefixes (`AW:`, `SV:`, `I:`...) where RFC 5256 strips only `Re`, `Fw` and
//! `Fwd`, so another server's SORT would differ, and it does not say whether the message is
//! a reply or forward, which THREAD=REFERENCES needs.

/// The base subject of a decoded subject (RFC 2047 words already turned into UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseSubject {
    /// The base subject text, case kept.
    pub text: String,
    /// Whether a `Re:`/`Fwd:` leader, a `(fwd)` trailer or a `[fwd: ...]` wrapper was
    /// removed: the message is a reply or a forward.
    pub reply_or_forward: bool,
}

impl BaseSubject {
    /// The comparison key: case folded, so `Hello` and `HELLO` sort and thread together.
    pub fn key(&self) -> String {
        fold_case(&self.text)
    }
}

/// The collation SORT and THREAD compare strings with: each character mapped to its upper
/// case when that is a single character. On ASCII this is i;ascii-casemap (RFC 4790, which
/// maps to upper case, so `[` sorts after letters); beyond it, close to the simple titlecase
/// mapping of i;unicode-casemap (RFC 5051) that Dovecot uses, without its decomposition.
pub fn fold_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c.to_ascii_uppercase());
            continue;
        }
        let mut upper = c.to_uppercase();
        match (upper.next(), upper.next()) {
            (Some(u), None) => out.push(u),
            // `ß` -> `SS` and the like: no single-character mapping, keep it.
            _ => out.push(c),
        }
    }
    out
}

/// Extracts the base subject (RFC 5256 section 2.1, steps 1 to 7).
pub fn base_subject(subject: &str) -> BaseSubject {
    // (1) Tabs and line breaks become spaces, runs of spaces one space.
    let mut text = String::with_capacity(subject.len());
    for c in subject.chars() {
        let c = if matches!(c, '\t' | '\r' | '\n') {
            ' '
        } else {
            c
        };
        if c == ' ' && text.ends_with(' ') {
            continue;
        }
        text.push(c);
    }
    let mut reply_or_forward = false;
    let mut s: &str = &text;
    loop {
        // (2) Trailers: white space and "(fwd)".
        loop {
            if let Some(rest) = s.strip_suffix(' ') {
                s = rest;
            } else if s.len() >= 5
                && s.is_char_boundary(s.len() - 5)
                && s[s.len() - 5..].eq_ignore_ascii_case("(fwd)")
            {
                s = &s[..s.len() - 5];
                reply_or_forward = true;
            } else {
                break;
            }
        }
        // (3), (4) and (5): leaders and blobs, until neither is left.
        loop {
            if let Some(rest) = s.strip_prefix(' ') {
                s = rest;
                continue;
            }
            if let Some(end) = leader_end(s) {
                s = &s[end..];
                reply_or_forward = true;
                continue;
            }
            if let Some(end) = blob_end(s)
                && end < s.len()
            {
                // Only when something is left: a subject that is all blob keeps it.
                s = &s[end..];
                continue;
            }
            break;
        }
        // (6) "[fwd: ...]" around the whole subject.
        if s.len() >= 6
            && s.is_char_boundary(5)
            && s[..5].eq_ignore_ascii_case("[fwd:")
            && s.ends_with(']')
        {
            s = &s[5..s.len() - 1];
            reply_or_forward = true;
            continue;
        }
        break;
    }
    BaseSubject {
        text: s.to_string(),
        reply_or_forward,
    }
}

/// The end of a `subj-blob` at the start of `s`: `"[" *BLOBCHAR "]" *WSP`.
fn blob_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.first() != Some(&b'[') {
        return None;
    }
    let close = b[1..].iter().position(|&c| c == b']' || c == b'[')? + 1;
    if b[close] != b']' {
        return None;
    }
    Some(skip_spaces(b, close + 1))
}

/// The end of a `subj-leader` with a reply/forward marker at the start of `s`:
/// `*subj-blob ("re" / "fw" / "fwd") *WSP [subj-blob] ":"`.
fn leader_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(end) = blob_end(&s[i..]) {
        i += end;
    }
    let word =
        |w: &str| b.len() >= i + w.len() && b[i..i + w.len()].eq_ignore_ascii_case(w.as_bytes());
    let after = if word("fwd") {
        i + 3
    } else if word("fw") || word("re") {
        i + 2
    } else {
        return None;
    };
    let mut j = skip_spaces(b, after);
    if let Some(end) = blob_end(&s[j..]) {
        j += end;
    }
    (b.get(j) == Some(&b':')).then_some(j + 1)
}

fn skip_spaces(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i] == b' ' {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(s: &str) -> (String, bool) {
        let b = base_subject(s);
        (b.text, b.reply_or_forward)
    }

    #[test]
    fn reply_and_forward_leaders_are_removed() {
        assert_eq!(base("Re: hello"), ("hello".into(), true));
        assert_eq!(base("RE: Re: re:hello"), ("hello".into(), true));
        assert_eq!(base("Fwd: hello"), ("hello".into(), true));
        assert_eq!(base("FW: hello"), ("hello".into(), true));
        assert_eq!(base("Re : hello"), ("hello".into(), true));
        assert_eq!(base("Re[2]: hello"), ("hello".into(), true));
        assert_eq!(base("Re [2]: hello"), ("hello".into(), true));
        assert_eq!(base("[list] Re: hello"), ("hello".into(), true));
        assert_eq!(base("[a][b] Fwd: [c] Re: hello"), ("hello".into(), true));
    }

    #[test]
    fn words_that_only_start_like_a_leader_stay() {
        assert_eq!(base("Rebel: yell"), ("Rebel: yell".into(), false));
        assert_eq!(base("Fwiw: maybe"), ("Fwiw: maybe".into(), false));
        assert_eq!(base("Re hello"), ("Re hello".into(), false));
        assert_eq!(base("Sv: svar"), ("Sv: svar".into(), false));
    }

    #[test]
    fn blobs_are_removed_unless_nothing_would_be_left() {
        assert_eq!(base("[PATCH] fix it"), ("fix it".into(), false));
        assert_eq!(base("[PATCH 1/2] [v2] fix it"), ("fix it".into(), false));
        assert_eq!(base("Re: [PATCH] fix it"), ("fix it".into(), true));
        assert_eq!(base("[PATCH]"), ("[PATCH]".into(), false));
        assert_eq!(base("[a] [b]"), ("[b]".into(), false));
        assert_eq!(
            base("[unclosed subject"),
            ("[unclosed subject".into(), false)
        );
    }

    #[test]
    fn trailers_and_fwd_wrappers_are_removed() {
        assert_eq!(base("hello (fwd)"), ("hello".into(), true));
        assert_eq!(base("hello (FWD) (fwd)  "), ("hello".into(), true));
        assert_eq!(base("[Fwd: hello]"), ("hello".into(), true));
        assert_eq!(
            base("[fwd: Re: [list] hello (fwd)]"),
            ("hello".into(), true)
        );
        assert_eq!(base("Re: [Fwd: [Fwd: hello]]"), ("hello".into(), true));
        assert_eq!(base("[fwd: ]"), ("".into(), true));
    }

    #[test]
    fn white_space_is_normalised_and_case_kept() {
        assert_eq!(
            base("  Hello\t  big\r\n world  "),
            ("Hello big world".into(), false)
        );
        assert_eq!(base(""), ("".into(), false));
        assert_eq!(base("Re:"), ("".into(), true));
        assert_eq!(base_subject("Re: HeLLo").key(), "HELLO");
        assert_eq!(base_subject("Re: Grüße").key(), "GRÜßE");
        assert_eq!(base_subject("GRÜSSE").key(), base_subject("grüsse").key());
        // Upper case, as i;ascii-casemap: brackets sort after letters.
        assert!(fold_case("[b]") > fold_case("agenda"));
    }
}
