//! LIST (RFC 3501 section 6.3.8) with LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819),
//! SPECIAL-USE (RFC 6154) and CHILDREN (RFC 3348); LSUB (RFC 3501 section 6.3.9).

use std::collections::BTreeSet;

use hermod_common::log_escape::escape;
use hermod_common::store::MailboxInfo;
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox};

use crate::extended::ListCommand;
use crate::output::Out;
use crate::session::{Reply, Session};

/// The longest LIST pattern after runs of wildcards are merged; no mailbox name is longer.
pub const MAX_PATTERN_LEN: usize = 1024;

/// A LIST pattern ready to match names: `*` matches anything, `%` anything but `/`.
///
/// Matching simulates the pattern as a small automaton over the name's bytes (the
/// wildcards are ASCII, so bytes match as characters do): time is bounded by name length
/// times pattern length, with no recursion and no backtracking whatever the input.
#[derive(Debug, Clone)]
pub struct ListPattern {
    /// The pattern bytes, each run of wildcards merged into one (`*` if it held a `*`).
    bytes: Vec<u8>,
    /// How many bytes are not wildcards: a shorter name cannot match.
    literals: usize,
}

impl ListPattern {
    /// `None` when the pattern is longer than [`MAX_PATTERN_LEN`] once its wildcard runs are
    /// merged.
    pub fn new(pattern: &str) -> Option<ListPattern> {
        let canonical = canonical_inbox(pattern);
        let mut bytes: Vec<u8> = Vec::with_capacity(canonical.len().min(MAX_PATTERN_LEN));
        for &b in canonical.as_bytes() {
            let wild = b == b'*' || b == b'%';
            match bytes.last_mut() {
                Some(last) if wild && (*last == b'*' || *last == b'%') => {
                    if b == b'*' {
                        *last = b'*';
                    }
                }
                _ => {
                    if bytes.len() == MAX_PATTERN_LEN {
                        return None;
                    }
                    bytes.push(b);
                }
            }
        }
        let literals = bytes.iter().filter(|&&b| b != b'*' && b != b'%').count();
        Some(ListPattern { bytes, literals })
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let p = &self.bytes;
        if p.as_slice() == b"*" {
            return true;
        }
        // Also bounds the work below: at most `name.len()` literal steps to follow.
        if name.len() < self.literals {
            return false;
        }
        // States are pattern positions; wildcards are never adjacent, so the closure of a
        // state is itself plus, after a wildcard, the next position.
        let mut current: Vec<usize> = Vec::with_capacity(4);
        let mut next: Vec<usize> = Vec::with_capacity(4);
        let mut seen = vec![usize::MAX; p.len() + 1];
        let add = |states: &mut Vec<usize>, seen: &mut [usize], s: usize, step: usize| {
            for s in [s, s + 1] {
                if seen[s] != step {
                    seen[s] = step;
                    states.push(s);
                }
                if !matches!(p.get(s), Some(b'*' | b'%')) {
                    break;
                }
            }
        };
        add(&mut current, &mut seen, 0, 0);
        for (i, &c) in name.as_bytes().iter().enumerate() {
            let step = i + 1;
            next.clear();
            for &s in &current {
                match p.get(s) {
                    None => {}
                    Some(b'*') => add(&mut next, &mut seen, s, step),
                    Some(b'%') if c != b'/' => add(&mut next, &mut seen, s, step),
                    Some(b'%') => {}
                    Some(&l) if l == c => add(&mut next, &mut seen, s + 1, step),
                    Some(_) => {}
                }
            }
            if next.is_empty() {
                return false;
            }
            std::mem::swap(&mut current, &mut next);
        }
        current.contains(&p.len())
    }
}

/// Whether `name` matches a LIST pattern: `*` matches anything, `%` anything but `/`.
/// A pattern over [`MAX_PATTERN_LEN`] matches nothing.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    ListPattern::new(pattern).is_some_and(|p| p.matches(name))
}

/// Spells a leading `inbox` (any case) the way the store names it.
fn canonical_inbox(pattern: &str) -> String {
    if pattern.len() >= 5
        && pattern.is_char_boundary(5)
        && pattern[..5].eq_ignore_ascii_case("INBOX")
        && pattern[5..]
            .chars()
            .next()
            .is_none_or(|c| c == '/' || c == '*' || c == '%')
    {
        format!("INBOX{}", &pattern[5..])
    } else {
        pattern.to_string()
    }
}

impl Session {
    /// The reference and pattern joined, as a UTF-8 pattern.
    fn full_pattern(&self, reference: &[u8], pattern: &[u8]) -> Result<String, Reply> {
        let decode = |raw: &[u8]| -> Result<String, Reply> {
            if raw.is_empty() {
                return Ok(String::new());
            }
            // Wildcards are plain ASCII, so the name decoder reads patterns as well.
            self.decode_name(raw)
        };
        Ok(format!("{}{}", decode(reference)?, decode(pattern)?))
    }

    pub(crate) async fn list(&mut self, cmd: &ListCommand, out: &mut Out<'_>) -> Reply {
        let Some(user) = self.user() else {
            return Reply::no("LIST needs a login first");
        };
        if !cmd.extended && cmd.patterns.len() == 1 && cmd.patterns[0].is_empty() {
            // LIST "" "": the hierarchy separator and root.
            out.untagged("LIST (\\Noselect) \"/\" \"\"");
            return Reply::ok("LIST completed");
        }
        let mut patterns = Vec::new();
        for p in &cmd.patterns {
            // A pattern that is not valid modified UTF-7 matches no name (RFC 3501 LIST
            // answers OK with what matches; a mailbox can never have such a name).
            if let Ok(p) = self.full_pattern(&cmd.reference, p) {
                match ListPattern::new(&p) {
                    Some(p) => patterns.push(p),
                    None => return Reply::bad("Mailbox pattern too long"),
                }
            }
        }
        if patterns.is_empty() {
            return Reply::ok("LIST completed");
        }
        let all = match user.list().await {
            Ok(l) => l,
            Err(e) => return e.into(),
        };
        self.objectid.status_mailboxid = cmd.returns.mailboxid;
        let want_subscribed = cmd.select.subscribed || cmd.returns.subscribed;
        let subscribed: BTreeSet<String> = if want_subscribed {
            match user.subscriptions().await {
                Ok(s) => s.into_iter().collect(),
                Err(e) => return e.into(),
            }
        } else {
            BTreeSet::new()
        };
        let is_subscribed = |m: &MailboxInfo| m.subscribed || subscribed.contains(&m.name);
        let matches = |name: &str| patterns.iter().any(|p| p.matches(name));

        // What to list: every mailbox, or (SUBSCRIBED) the subscribed ones, existing or not.
        let mut entries: Vec<(MailboxInfo, bool, bool)> = Vec::new(); // (info, exists, childinfo)
        if cmd.select.subscribed {
            for m in &all {
                if is_subscribed(m) && matches(&m.name) {
                    entries.push((m.clone(), true, false));
                } else if cmd.select.recursive_match
                    && matches(&m.name)
                    // CHILDINFO only for a subscribed descendant the patterns do not list
                    // themselves (RFC 5258 section 3.5).
                    && subscribed
                        .iter()
                        .any(|s| s.starts_with(&format!("{}/", m.name)) && !matches(s))
                {
                    entries.push((m.clone(), true, true));
                }
            }
            for name in &subscribed {
                if !all.iter().any(|m| &m.name == name) && matches(name) {
                    let info = MailboxInfo {
                        name: name.clone(),
                        noselect: true,
                        has_children: false,
                        subscribed: true,
                        special_use: None,
                    };
                    entries.push((info, false, false));
                }
            }
        } else {
            for m in &all {
                if matches(&m.name) {
                    entries.push((m.clone(), true, false));
                }
            }
        }

        for (m, exists, childinfo) in entries {
            if cmd.select.special_use && m.special_use.is_none() {
                continue;
            }
            let mut attrs: Vec<&str> = Vec::new();
            if !exists {
                attrs.push("\\NonExistent");
            } else {
                if m.noselect {
                    attrs.push("\\Noselect");
                }
                attrs.push(if m.has_children {
                    "\\HasChildren"
                } else {
                    "\\HasNoChildren"
                });
            }
            if want_subscribed && (is_subscribed(&m) || !exists) && !childinfo {
                attrs.push("\\Subscribed");
            }
            if let Some(u) = m.special_use {
                attrs.push(u.imap_attr());
            }
            let b = out.buf();
            b.extend_from_slice(b"* LIST (");
            b.extend_from_slice(attrs.join(" ").as_bytes());
            b.extend_from_slice(b") \"/\" ");
            self.write_name(out.buf(), &m.name);
            if childinfo {
                out.put(b" (\"CHILDINFO\" (\"SUBSCRIBED\"))");
            }
            out.put(b"\r\n");
            if let Some(items) = &cmd.returns.status
                && exists
                && !m.noselect
                && let Err(r) = self.write_status(&user, &m.name, items, out).await
            {
                tracing::debug!(mailbox = %escape(&m.name), status = ?r.text, "LIST-STATUS skipped a mailbox");
            }
        }
        Reply::ok("LIST completed")
    }

    pub(crate) async fn lsub(
        &mut self,
        reference: &Mailbox<'_>,
        pattern: &ListMailbox<'_>,
        out: &mut Out<'_>,
    ) -> Reply {
        let Some(user) = self.user() else {
            return Reply::no("LSUB needs a login first");
        };
        let reference: Vec<u8> = match reference {
            Mailbox::Inbox => b"INBOX".to_vec(),
            Mailbox::Other(o) => o.as_ref().to_vec(),
        };
        let pattern_bytes: &[u8] = match pattern {
            ListMailbox::Token(t) => t.as_ref(),
            ListMailbox::String(s) => s.as_ref(),
        };
        let pattern = match self.full_pattern(&reference, pattern_bytes) {
            Ok(p) => match ListPattern::new(&p) {
                Some(p) => p,
                None => return Reply::bad("Mailbox pattern too long"),
            },
            Err(r) => return r,
        };
        let subs = match user.subscriptions().await {
            Ok(s) => s,
            Err(e) => return e.into(),
        };
        let subscribed: BTreeSet<&str> = subs.iter().map(String::as_str).collect();
        let mut shown = BTreeSet::new();
        for name in &subs {
            if pattern.matches(name) && shown.insert(name.clone()) {
                out.put(b"* LSUB () \"/\" ");
                self.write_name(out.buf(), name);
                out.put(b"\r\n");
            }
            // With `%`, an unsubscribed parent of a subscribed mailbox shows as \Noselect.
            for (i, _) in name.match_indices('/') {
                let parent = &name[..i];
                if !subscribed.contains(parent)
                    && pattern.matches(parent)
                    && shown.insert(parent.to_string())
                {
                    out.put(b"* LSUB (\\Noselect) \"/\" ");
                    self.write_name(out.buf(), parent);
                    out.put(b"\r\n");
                }
            }
        }
        Reply::ok("LSUB completed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Harness;

    #[test]
    fn wildcards() {
        assert!(pattern_matches("*", "Work/2024"));
        assert!(pattern_matches("%", "Work"));
        assert!(!pattern_matches("%", "Work/2024"));
        assert!(pattern_matches("Work/%", "Work/2024"));
        assert!(pattern_matches("W*4", "Work/2024"));
        assert!(pattern_matches("inbox", "INBOX"));
        assert!(pattern_matches("Inbox/%", "INBOX/x"));
        assert!(!pattern_matches("Sent", "sent"));
        assert!(pattern_matches("%/%", "a/b"));
        assert!(!pattern_matches("%/%", "a/b/c"));
        assert!(pattern_matches("%/*", "a/b/c"));
        assert!(pattern_matches("*%", "a/b"));
        assert!(!pattern_matches("%%", "a/b"));
        assert!(pattern_matches("a*b*c", "aXbYbc"));
        assert!(!pattern_matches("a*b*c", "aXbYb"));
        assert!(pattern_matches("", ""));
        assert!(!pattern_matches("", "x"));
        assert!(pattern_matches("Entw%rfe", "Entwürfe"));
        assert!(pattern_matches("Entw*", "Entwürfe"));
        assert!(!pattern_matches("Entwu%", "Entwürfe"));
    }

    /// Wildcard bombs: a long run of `*` neither recurses nor is refused (it is one `*`),
    /// and many `*` segments against a long name finish at once, not after exponential
    /// backtracking.
    #[test]
    fn wildcard_bombs_are_cheap() {
        let stars = "*".repeat(60_000);
        assert!(pattern_matches(&stars, "Work/2024"));
        assert!(pattern_matches(&format!("{stars}%{stars}a"), "a/a"));
        let name = "a".repeat(200);
        let started = std::time::Instant::now();
        assert!(!pattern_matches("*a*a*a*a*a*a*a*a*b", &name));
        assert!(!pattern_matches("%a%a%a%a%a%a%a%a%b", &name));
        assert!(pattern_matches("*a*a*a*a*a*a*a*a*", &name));
        // The longest patterns against the longest names the store allows (240 bytes),
        // as a LIST over many mailboxes would run them.
        let longest = ListPattern::new(&"*a".repeat(MAX_PATTERN_LEN / 2)).unwrap();
        let busiest = ListPattern::new(&format!("{}b", "*a".repeat(119))).unwrap();
        let name = "a".repeat(240);
        for _ in 0..100 {
            assert!(!longest.matches(&name));
            assert!(!busiest.matches(&name));
        }
        assert!(pattern_matches(&"*a".repeat(120), &name));
        let took = started.elapsed();
        // The old backtracking matcher took minutes here; a loaded CI machine may take a
        // few hundred milliseconds.
        assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
        // Over the cap (after merging), a pattern is refused.
        assert!(ListPattern::new(&"ab".repeat(MAX_PATTERN_LEN)).is_none());
    }

    async fn session(h: &Harness) -> crate::session::Session {
        let mut s = h.session(true);
        h.login(&mut s).await;
        s
    }

    /// imaptest's atoms test: every atom character in a pattern; `&'+,-` is not valid
    /// modified UTF-7, so nothing matches, and that is no error.
    #[tokio::test]
    async fn pattern_that_is_not_modified_utf7_matches_nothing() {
        let h = Harness::new().await;
        let mut s = h.session(true);
        h.login(&mut s).await;
        let out = h
            .run(&mut s, "a list \"\" !#$&'+,-.0123456789:;<=>?@^_`|[}%*\r\n")
            .await;
        assert_eq!(out, "a OK LIST completed\r\n");
    }

    #[tokio::test]
    async fn plain_list_has_children_and_special_use() {
        let h = Harness::new().await;
        let mut s = session(&h).await;
        h.run(&mut s, "a CREATE Work/2024\r\n").await;
        let out = h.run(&mut s, "b LIST \"\" \"*\"\r\n").await;
        assert!(
            out.starts_with("* LIST (\\HasNoChildren) \"/\" INBOX\r\n"),
            "{out}"
        );
        assert!(
            out.contains("* LIST (\\HasNoChildren \\Sent) \"/\" Sent\r\n"),
            "{out}"
        );
        assert!(
            out.contains("* LIST (\\HasNoChildren \\Trash) \"/\" Trash\r\n"),
            "{out}"
        );
        assert!(
            out.contains("* LIST (\\Noselect \\HasChildren) \"/\" Work\r\n"),
            "implied parent: {out}"
        );
        assert!(
            out.contains("* LIST (\\HasNoChildren) \"/\" Work/2024\r\n"),
            "{out}"
        );
        let out = h.run(&mut s, "c LIST \"\" %\r\n").await;
        assert!(!out.contains("Work/2024"), "{out}");
        let out = h.run(&mut s, "d LIST \"\" \"\"\r\n").await;
        assert_eq!(
            out,
            "* LIST (\\Noselect) \"/\" \"\"\r\nd OK LIST completed\r\n"
        );
        let out = h.run(&mut s, "e LIST Work/ %\r\n").await;
        assert_eq!(
            out,
            "* LIST (\\HasNoChildren) \"/\" Work/2024\r\ne OK LIST completed\r\n"
        );
    }

    /// RFC 5258 section 3.5 (imaptest listext): a parent gets CHILDINFO only for a
    /// subscribed child that the patterns do not list themselves.
    #[tokio::test]
    async fn recursivematch_childinfo_only_for_unlisted_children() {
        let h = Harness::new().await;
        let mut s = h.session(true);
        h.login(&mut s).await;
        h.run(&mut s, "a CREATE P/C1\r\nb SUBSCRIBE P/C1\r\n").await;
        let out = h
            .run(&mut s, "c LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (P)\r\n")
            .await;
        assert!(out.contains("P (\"CHILDINFO\" (\"SUBSCRIBED\"))"), "{out}");
        let out = h
            .run(
                &mut s,
                "d LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (P P/C1)\r\n",
            )
            .await;
        assert!(!out.contains("CHILDINFO"), "{out}");
        assert!(out.contains("\\Subscribed) \"/\" P/C1\r\n"), "{out}");
    }

    #[tokio::test]
    async fn thunderbird_subscribed_with_special_use() {
        let h = Harness::new().await;
        let mut s = session(&h).await;
        h.run(&mut s, "a CREATE Unsubscribed\r\n").await;
        h.run(&mut s, "b SUBSCRIBE Ghost\r\n").await;
        let out = h
            .run(
                &mut s,
                "5 list (subscribed) \"\" \"*\" return (special-use)\r\n",
            )
            .await;
        assert!(
            out.contains("* LIST (\\HasNoChildren \\Subscribed) \"/\" INBOX\r\n"),
            "{out}"
        );
        assert!(
            out.contains("* LIST (\\HasNoChildren \\Subscribed \\Drafts) \"/\" Drafts\r\n"),
            "{out}"
        );
        assert!(
            out.contains("* LIST (\\NonExistent \\Subscribed) \"/\" Ghost\r\n"),
            "{out}"
        );
        assert!(!out.contains("Unsubscribed"), "{out}");
        assert!(out.ends_with("5 OK LIST completed\r\n"), "{out}");
    }

    #[tokio::test]
    async fn special_use_selection_and_status_return() {
        let h = Harness::new().await;
        let mut s = session(&h).await;
        let out = h.run(&mut s, "a LIST (SPECIAL-USE) \"\" \"*\"\r\n").await;
        assert!(!out.contains("INBOX"), "{out}");
        for u in ["Sent", "Drafts", "Trash", "Junk", "Archive"] {
            assert!(out.contains(&format!("\\{u}) \"/\" {u}\r\n")), "{u}: {out}");
        }
        h.deliver("INBOX", &crate::testing::message("x", "y")).await;
        let out = h
            .run(
                &mut s,
                "b LIST \"\" (INBOX Sent) RETURN (STATUS (MESSAGES UNSEEN))\r\n",
            )
            .await;
        assert!(
            out.contains(
                "* LIST (\\HasNoChildren) \"/\" INBOX\r\n* STATUS INBOX (MESSAGES 1 UNSEEN 1)\r\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("* STATUS Sent (MESSAGES 0 UNSEEN 0)\r\n"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn utf7_names_on_the_wire() {
        let h = Harness::new().await;
        let mut s = session(&h).await;
        h.run(&mut s, "a CREATE Entw&APw-rfe\r\n").await;
        let out = h.run(&mut s, "b LIST \"\" Entw*\r\n").await;
        assert!(out.contains("\"/\" Entw&APw-rfe\r\n"), "{out}");
        h.run(&mut s, "c ENABLE UTF8=ACCEPT\r\n").await;
        let out = h.run(&mut s, "d LIST \"\" Entw*\r\n").await;
        assert!(out.contains("\"/\" \"Entwürfe\"\r\n"), "{out}");
    }

    #[tokio::test]
    async fn lsub_shows_unsubscribed_parents_as_noselect() {
        let h = Harness::new().await;
        let mut s = session(&h).await;
        h.run(&mut s, "a CREATE Lists/rust\r\n").await;
        h.run(&mut s, "b SUBSCRIBE Lists/rust\r\n").await;
        let out = h.run(&mut s, "c LSUB \"\" %\r\n").await;
        assert!(out.contains("* LSUB (\\Noselect) \"/\" Lists\r\n"), "{out}");
        assert!(!out.contains("Lists/rust"), "{out}");
        let out = h.run(&mut s, "d LSUB \"\" *\r\n").await;
        assert!(out.contains("* LSUB () \"/\" Lists/rust\r\n"), "{out}");
    }
}
