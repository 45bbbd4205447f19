//! Searches and sorts kept up to date (CONTEXT=SEARCH and CONTEXT=SORT, RFC 5267 section
//! 4.3): `SEARCH RETURN (UPDATE)` or `SORT RETURN (UPDATE)` keeps its criteria and result;
//! whenever the session reports changes, messages that newly match are sent as `ADDTO` and
//! those that no longer match (or were expunged) as `REMOVEFROM`, until CANCELUPDATE or
//! until the mailbox is closed.
//!
//! Unsorted results have no positions: both carry position 0 (RFC 5267 section 4.3.1).
//! Sorted ones carry one (position, message) pair per message, in an order in which the
//! client can apply them one after the other: removals from the highest position down,
//! additions from the lowest position up, each at its position in the list as it is then.
//! Only messages that are new or changed since the last look are evaluated again, so an
//! update costs what changed, not the mailbox; a session keeps at most [`MAX_CONTEXTS`].

use std::collections::BTreeSet;

use hermod_common::store::UserStore;
use imap_codec::imap_types::ToStatic;
use imap_codec::imap_types::core::Vec1;
use imap_codec::imap_types::extensions::sort::SortCriterion;
use imap_codec::imap_types::search::SearchKey;

use crate::cmd::search_eval::{self, Content, View};
use crate::cmd::sort::{Value, compare, needs_header, value};
use crate::extended::{Extended, Malformed, Token, tokenize};
use crate::mime::header;
use crate::mime::summary::summarize;
use crate::output::Out;
use crate::sequence;
use crate::session::{Reply, Selected, Session};

/// Searches a session keeps updated at once; more get `OK [NOUPDATE]` (RFC 5267 4.3).
pub(crate) const MAX_CONTEXTS: usize = 8;

/// A sorted result: the criteria and the messages in order, with their sort values.
#[derive(Debug)]
pub(crate) struct SortOrder {
    pub criteria: Vec<SortCriterion>,
    /// UIDs in sort order, each with one value per criterion.
    pub list: Vec<(u32, Vec<Value>)>,
}

/// The result a kept search starts from.
pub(crate) enum Kept {
    /// SEARCH: the UIDs found.
    Uids(Vec<u32>),
    /// SORT: the sorted result.
    Sorted(SortOrder),
}

/// One search kept up to date.
#[derive(Debug)]
pub(crate) struct SearchContext {
    /// The tag of the SEARCH, which names it in updates and CANCELUPDATE.
    tag: String,
    /// UID SEARCH: updates carry UIDs; otherwise sequence numbers.
    uid: bool,
    key: SearchKey<'static>,
    /// The UIDs in the result as the client knows it.
    matched: BTreeSet<u32>,
    /// For SORT: the order the positions refer to.
    sort: Option<SortOrder>,
    /// Messages up to this UID, with no change past this MODSEQ, were looked at.
    seen_uid: u32,
    seen_modseq: u64,
}

/// The live searches of the selected mailbox; they end with it.
#[derive(Debug, Default)]
pub(crate) struct SearchContexts(Vec<SearchContext>);

impl SearchContexts {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Every change up to this MODSEQ is in the view. Not the highest MODSEQ the view holds:
/// the session's own STOREs put newer ones there before another session's older change
/// has been looked at, and that change must still count as unseen.
fn view_modseq(sel: &Selected) -> u64 {
    sel.highest_modseq
}

/// The number the client knows a UID by (its sequence number in the current view).
fn number(sel: &Selected, ctx: &SearchContext, uid: u32) -> Option<u32> {
    if ctx.uid {
        Some(uid)
    } else {
        sel.index_of(uid).map(|i| (i + 1) as u32)
    }
}

fn update_line(ctx: &SearchContext, item: &str, data: &str) -> String {
    format!(
        "ESEARCH (TAG \"{}\"){} {item} ({data})",
        ctx.tag,
        if ctx.uid { " UID" } else { "" },
    )
}

/// Takes `gone` out of a context's result and sends REMOVEFROM for them (while their
/// sequence numbers are still valid).
fn remove(sel: &Selected, ctx: &mut SearchContext, gone: &[u32], out: &mut Out<'_>) {
    let gone: Vec<u32> = gone
        .iter()
        .copied()
        .filter(|u| ctx.matched.remove(u))
        .collect();
    if gone.is_empty() {
        return;
    }
    let uid = ctx.uid;
    let data = match &mut ctx.sort {
        None => {
            let numbers: Vec<u32> = gone
                .iter()
                .filter_map(|&u| {
                    if uid {
                        Some(u)
                    } else {
                        sel.index_of(u).map(|i| (i + 1) as u32)
                    }
                })
                .collect();
            format!("0 {}", sequence::format(&numbers))
        }
        Some(order) => {
            // One pass over the list, not one search per message: an EXPUNGE of many.
            let gone: BTreeSet<u32> = gone.into_iter().collect();
            let at: Vec<(usize, u32)> = order
                .list
                .iter()
                .enumerate()
                .filter(|(_, (u, _))| gone.contains(u))
                .map(|(p, (u, _))| (p, *u))
                .collect();
            order.list.retain(|(u, _)| !gone.contains(u));
            let mut pairs = Vec::with_capacity(at.len());
            // From the highest position down, so each is right when the client applies it.
            for &(p, u) in at.iter().rev() {
                let n = if uid {
                    Some(u)
                } else {
                    sel.index_of(u).map(|i| (i + 1) as u32)
                };
                if let Some(n) = n {
                    pairs.push(format!("{} {n}", p + 1));
                }
            }
            pairs.join(" ")
        }
    };
    if !data.is_empty() {
        out.untagged(&update_line(ctx, "REMOVEFROM", &data));
    }
}

/// Before `uids` are reported expunged: REMOVEFROM for those in a live result.
pub(crate) fn report_removed(sel: &mut Selected, uids: &[u32], out: &mut Out<'_>) {
    let mut contexts = std::mem::take(&mut sel.contexts);
    for ctx in &mut contexts.0 {
        remove(sel, ctx, uids, out);
    }
    sel.contexts = contexts;
}

/// Reads `tag CANCELUPDATE "tag1" ...`.
pub(crate) fn parse_cancel(line: &[u8]) -> Result<Extended, Malformed> {
    let toks = tokenize(line)?;
    let tags: Vec<String> = toks
        .iter()
        .skip(2)
        .map(|(_, t)| match t {
            Token::String(s) | Token::Atom(s) => Ok(String::from_utf8_lossy(s).into_owned()),
            _ => Err(Malformed("CANCELUPDATE takes quoted tags")),
        })
        .collect::<Result<_, _>>()?;
    if tags.is_empty() {
        return Err(Malformed("CANCELUPDATE needs a tag"));
    }
    Ok(Extended::CancelUpdate(tags))
}

/// Which of the messages at `indexes` match the context's criteria now.
async fn evaluate(
    user: &UserStore,
    sel: &Selected,
    key: &SearchKey<'static>,
    indexes: &[usize],
) -> Result<Vec<(usize, bool)>, hermod_common::store::StoreError> {
    let view = View {
        count: sel.msgs.len() as u32,
        max_uid: sel.max_uid(),
    };
    let mut hits = Vec::with_capacity(indexes.len());
    let mut undecided = Vec::new();
    for &i in indexes {
        match search_eval::eval(key, (i + 1) as u32, &sel.msgs[i], view, None) {
            Some(hit) => hits.push((i, hit)),
            None => undecided.push(i),
        }
    }
    crate::cmd::search::read_batched(user, sel, &undecided, |i, raw| {
        let mut content = Content::new(raw);
        let hit = search_eval::eval(key, (i + 1) as u32, &sel.msgs[i], view, Some(&mut content))
            .unwrap_or(false);
        hits.push((i, hit));
    })
    .await?;
    Ok(hits)
}

/// Adds `uids` (new matches) to a sorted context: their sort values, their places, and
/// the ADDTO pairs from the lowest position up.
async fn add_sorted(
    user: &UserStore,
    sel: &Selected,
    ctx: &mut SearchContext,
    uids: &[u32],
) -> Result<Vec<String>, hermod_common::store::StoreError> {
    let uid = ctx.uid;
    let Some(order) = ctx.sort.as_mut() else {
        return Ok(Vec::new());
    };
    let indexes: Vec<usize> = uids.iter().filter_map(|u| sel.index_of(*u)).collect();
    let headers = order.criteria.iter().any(|c| needs_header(&c.key));
    let mut summaries = Vec::with_capacity(indexes.len());
    if headers {
        crate::cmd::search::read_batched(user, sel, &indexes, |i, raw| {
            summaries.push((i, summarize(&raw[..header::body_start(raw)])));
        })
        .await?;
    } else {
        summaries.extend(indexes.iter().map(|&i| (i, Default::default())));
    }
    let mut new: Vec<(u32, Vec<Value>)> = summaries
        .iter()
        .map(|(i, summary)| {
            let m = &sel.msgs[*i];
            let values = order
                .criteria
                .iter()
                .map(|c| value(&c.key, m.internal_date, m.size, summary))
                .collect();
            (m.uid, values)
        })
        .collect();
    // Sorted, then merged in one pass: many new messages cost no more than a sort.
    let criteria = &order.criteria;
    let before = |a: &(u32, Vec<Value>), b: &(u32, Vec<Value>)| {
        compare(&a.1, &b.1, criteria).then(a.0.cmp(&b.0))
    };
    new.sort_by(before);
    let old = std::mem::take(&mut order.list);
    let mut merged = Vec::with_capacity(old.len() + new.len());
    let (mut old, mut new) = (old.into_iter().peekable(), new.into_iter().peekable());
    loop {
        let take_new = match (old.peek(), new.peek()) {
            (Some(o), Some(n)) => before(n, o).is_lt(),
            (None, Some(_)) => true,
            (Some(_), None) => false,
            (None, None) => break,
        };
        let next = if take_new { new.next() } else { old.next() };
        merged.extend(next);
    }
    order.list = merged;
    let added: BTreeSet<u32> = summaries.iter().map(|(i, _)| sel.msgs[*i].uid).collect();
    let mut pairs = Vec::new();
    for (p, (u, _)) in order.list.iter().enumerate() {
        if added.contains(u) {
            let n = if uid {
                Some(*u)
            } else {
                sel.index_of(*u).map(|i| (i + 1) as u32)
            };
            if let Some(n) = n {
                pairs.push(format!("{} {n}", p + 1));
            }
        }
    }
    Ok(pairs)
}

impl Session {
    /// Keeps the search or sort just answered (tag `tag`) up to date.
    pub(crate) fn start_search_context(
        &mut self,
        tag: &str,
        uid: bool,
        criteria: &[SearchKey<'_>],
        kept: Kept,
        out: &mut Out<'_>,
    ) {
        let key = match criteria {
            [one] => one.to_static(),
            many => match Vec1::try_from(many.to_vec()) {
                Ok(v) => SearchKey::And(v).to_static(),
                Err(_) => return,
            },
        };
        let Some(sel) = self.selected.as_mut() else {
            return;
        };
        sel.contexts.0.retain(|c| c.tag != tag);
        if sel.contexts.0.len() >= MAX_CONTEXTS {
            out.untagged(&format!(
                "OK [NOUPDATE \"{tag}\"] Too many searches kept up to date"
            ));
            return;
        }
        let (matched, sort) = match kept {
            Kept::Uids(uids) => (uids.into_iter().collect(), None),
            Kept::Sorted(order) => (order.list.iter().map(|(u, _)| *u).collect(), Some(order)),
        };
        let ctx = SearchContext {
            tag: tag.to_string(),
            uid,
            key,
            matched,
            sort,
            seen_uid: sel.max_uid(),
            seen_modseq: view_modseq(sel),
        };
        sel.contexts.0.push(ctx);
    }

    /// CANCELUPDATE (RFC 5267 section 4.3.3).
    pub(crate) fn cancel_update(&mut self, tags: &[String]) -> Reply {
        let Some(sel) = self.selected.as_mut() else {
            return Reply::bad("CANCELUPDATE needs a selected mailbox");
        };
        let before = sel.contexts.0.len();
        sel.contexts.0.retain(|c| !tags.contains(&c.tag));
        if before - sel.contexts.0.len() < tags.len() {
            return Reply::no("No such search is kept up to date");
        }
        Reply::ok("CANCELUPDATE completed")
    }

    /// After changes were reported: ADDTO and REMOVEFROM for every live search whose result
    /// they change. Messages that are new or changed since the last look are evaluated.
    pub(crate) async fn update_search_contexts(&mut self, out: &mut Out<'_>) {
        let user = self.user();
        let Some(sel) = self.selected.as_mut() else {
            return;
        };
        if sel.contexts.is_empty() {
            return;
        }
        let Some(user) = user else {
            return;
        };
        let mut contexts = std::mem::take(&mut sel.contexts);
        let sel = &*sel;
        let modseq = view_modseq(sel);
        let vanished: BTreeSet<u32> = sel.vanished.iter().copied().collect();
        for ctx in &mut contexts.0 {
            let changed: Vec<usize> = (0..sel.msgs.len())
                .filter(|&i| {
                    let m = &sel.msgs[i];
                    (m.uid > ctx.seen_uid || m.modseq > ctx.seen_modseq)
                        && !vanished.contains(&m.uid)
                })
                .collect();
            let hits = match evaluate(&user, sel, &ctx.key, &changed).await {
                Ok(h) => h,
                Err(e) => {
                    // Looked at again at the next update.
                    tracing::warn!(error = %e, "cannot update a kept search");
                    continue;
                }
            };
            let mut added = Vec::new();
            let mut removed = Vec::new();
            for (i, hit) in hits {
                let uid = sel.msgs[i].uid;
                match (hit, ctx.matched.contains(&uid)) {
                    (true, false) => added.push(uid),
                    (false, true) => removed.push(uid),
                    _ => {}
                }
            }
            // Results that left the view without an EXPUNGE to this client (none should).
            removed.extend(
                ctx.matched
                    .iter()
                    .copied()
                    .filter(|u| sel.index_of(*u).is_none()),
            );
            removed.sort_unstable();
            added.sort_unstable();
            remove(sel, ctx, &removed, out);
            if ctx.sort.is_some() {
                match add_sorted(&user, sel, ctx, &added).await {
                    Ok(pairs) if !pairs.is_empty() => {
                        out.untagged(&update_line(ctx, "ADDTO", &pairs.join(" ")));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot update a kept sort");
                        continue;
                    }
                }
            } else if !added.is_empty() {
                let numbers: Vec<u32> = added.iter().filter_map(|u| number(sel, ctx, *u)).collect();
                out.untagged(&update_line(
                    ctx,
                    "ADDTO",
                    &format!("0 {}", sequence::format(&numbers)),
                ));
            }
            ctx.matched.extend(added);
            ctx.seen_uid = sel.max_uid().max(ctx.seen_uid);
            ctx.seen_modseq = modseq.max(ctx.seen_modseq);
        }
        if let Some(sel) = self.selected.as_mut() {
            sel.contexts = contexts;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{Harness, message};

    async fn five(h: &Harness) -> crate::session::Session {
        for i in 1..=5 {
            h.deliver("INBOX", &message(&format!("s{i}"), "some body"))
                .await;
        }
        h.selected("INBOX").await
    }

    /// imaptest's search-context-update: own STOREs, EXPUNGE and APPEND update the result
    /// until CANCELUPDATE.
    #[tokio::test]
    async fn updates_follow_store_expunge_and_append() {
        let h = Harness::new().await;
        let mut s = five(&h).await;
        let out = h
            .run(&mut s, "u SEARCH RETURN (UPDATE) BODY body SEEN\r\n")
            .await;
        assert_eq!(out, "* ESEARCH (TAG \"u\")\r\nu OK SEARCH completed\r\n");
        let out = h
            .run(&mut s, "a STORE 1,2,4 +FLAGS.SILENT (\\Seen)\r\n")
            .await;
        assert_eq!(
            out,
            "* ESEARCH (TAG \"u\") ADDTO (0 1:2,4)\r\na OK STORE completed\r\n"
        );
        let out = h
            .run(&mut s, "b STORE 1,2 -FLAGS.SILENT (\\Seen)\r\n")
            .await;
        assert_eq!(
            out,
            "* ESEARCH (TAG \"u\") REMOVEFROM (0 1:2)\r\nb OK STORE completed\r\n"
        );
        h.run(&mut s, "c STORE 3:5 +FLAGS.SILENT (\\Deleted)\r\n")
            .await;
        let out = h.run(&mut s, "d EXPUNGE\r\n").await;
        assert!(
            out.starts_with("* ESEARCH (TAG \"u\") REMOVEFROM (0 4)\r\n* 5 EXPUNGE\r\n"),
            "REMOVEFROM before the EXPUNGEs: {out}"
        );
        let msg = message("new", "more body");
        let out = h
            .run(
                &mut s,
                &format!("e APPEND INBOX (\\Seen) {{{}+}}\r\n{msg}\r\n", msg.len()),
            )
            .await;
        assert!(
            out.contains("* 3 EXISTS\r\n") && out.contains("* ESEARCH (TAG \"u\") ADDTO (0 3)\r\n"),
            "{out}"
        );
        let out = h.run(&mut s, "f CANCELUPDATE \"u\"\r\n").await;
        assert_eq!(out, "f OK CANCELUPDATE completed\r\n");
        let out = h.run(&mut s, "g STORE 1 +FLAGS.SILENT (\\Seen)\r\n").await;
        assert_eq!(out, "g OK STORE completed\r\n");
        let out = h.run(&mut s, "h CANCELUPDATE \"u\"\r\n").await;
        assert!(out.starts_with("h NO"), "{out}");
    }

    /// UID SEARCH updates carry UIDs; another session's changes count too.
    #[tokio::test]
    async fn uid_updates_from_another_session() {
        let h = Harness::new().await;
        let mut s = five(&h).await;
        let mut other = h.selected("INBOX").await;
        let out = h
            .run(
                &mut s,
                "u UID SEARCH RETURN (UPDATE ALL) OR SEEN SUBJECT s2\r\n",
            )
            .await;
        assert!(
            out.starts_with("* ESEARCH (TAG \"u\") UID ALL 2\r\n"),
            "{out}"
        );
        h.run(&mut other, "a STORE 4:5 +FLAGS (\\Seen)\r\n").await;
        let out = h.run(&mut s, "n NOOP\r\n").await;
        assert!(
            out.contains("* ESEARCH (TAG \"u\") UID ADDTO (0 4:5)\r\n"),
            "{out}"
        );
    }

    /// A kept SORT: removals and additions carry their positions in the sorted list.
    #[tokio::test]
    async fn sorted_updates_carry_positions() {
        let h = Harness::new().await;
        for (subject, size) in [("c", 30), ("a", 10), ("b", 20)] {
            h.deliver("INBOX", &message(subject, &"x".repeat(size)))
                .await;
        }
        let mut s = h.selected("INBOX").await;
        let out = h
            .run(
                &mut s,
                "u UID SORT RETURN (UPDATE ALL) (SUBJECT) UTF-8 UNSEEN\r\n",
            )
            .await;
        assert!(
            out.starts_with("* ESEARCH (TAG \"u\") UID ALL 2:3,1\r\n"),
            "{out}"
        );
        let out = h.run(&mut s, "a STORE 2 +FLAGS.SILENT (\\Seen)\r\n").await;
        assert_eq!(
            out,
            "* ESEARCH (TAG \"u\") UID REMOVEFROM (1 2)\r\na OK STORE completed\r\n"
        );
        for (subject, size) in [("bb", 5), ("0", 5)] {
            h.deliver("INBOX", &message(subject, &"x".repeat(size)))
                .await;
        }
        let out = h.run(&mut s, "n NOOP\r\n").await;
        assert!(
            out.contains("* ESEARCH (TAG \"u\") UID ADDTO (1 5 3 4)\r\n"),
            "{out}"
        );
        h.run(&mut s, "d STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
            .await;
        let out = h
            .run(
                &mut s,
                "e SORT RETURN (UPDATE) (REVERSE SUBJECT) UTF-8 UNSEEN\r\n",
            )
            .await;
        assert!(out.starts_with("* ESEARCH (TAG \"e\")\r\n"), "{out}");
        let out = h.run(&mut s, "f EXPUNGE\r\n").await;
        // u holds 0, b, bb, c (UIDs 5, 3, 4, 1); e holds c, bb, b, 0.
        assert!(
            out.starts_with(
                "* ESEARCH (TAG \"u\") UID REMOVEFROM (4 1)\r\n* ESEARCH (TAG \"e\") REMOVEFROM (1 1)\r\n* 1 EXPUNGE\r\n"
            ),
            "{out}"
        );
    }

    /// More than the allowed number of kept searches: the search is answered, not kept.
    #[tokio::test]
    async fn bounded_number_of_contexts() {
        let h = Harness::new().await;
        let mut s = five(&h).await;
        for i in 0..super::MAX_CONTEXTS {
            let out = h
                .run(&mut s, &format!("t{i} SEARCH RETURN (UPDATE) SEEN\r\n"))
                .await;
            assert!(!out.contains("NOUPDATE"), "{out}");
        }
        let out = h.run(&mut s, "x SEARCH RETURN (UPDATE) SEEN\r\n").await;
        assert!(out.contains("* OK [NOUPDATE \"x\"]"), "{out}");
        assert!(out.ends_with("x OK SEARCH completed\r\n"), "{out}");
        // Closing the mailbox ends them all.
        h.run(&mut s, "c UNSELECT\r\nd SELECT INBOX\r\n").await;
        let out = h.run(&mut s, "y SEARCH RETURN (UPDATE) SEEN\r\n").await;
        assert!(!out.contains("NOUPDATE"), "{out}");
    }
}
