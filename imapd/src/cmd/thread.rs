//! THREAD and UID THREAD (RFC 5256): ORDEREDSUBJECT (section 3, "poor man's threading")
//! and REFERENCES (section 3, after Jamie Zawinski's algorithm), and the nested
//! parenthesised answer.
//!
//! The trees are arenas of nodes walked with explicit stacks, not recursion: a mailbox may
//! hold a reply chain thousands deep and must not overflow a task's stack.

use std::collections::HashMap;

use imap_codec::imap_types::core::Charset;
use imap_codec::imap_types::extensions::thread::ThreadingAlgorithm;
use imap_codec::imap_types::search::SearchKey;

use super::search::check_charset;
use crate::mime::subject::{BaseSubject, base_subject};
use crate::output::Out;
use crate::session::{Reply, Session, Sync};
use crate::wire;

/// What threading knows of one message.
#[derive(Debug, Clone)]
pub(crate) struct ThreadMsg {
    /// The number sent to the client (sequence number or UID).
    pub number: u32,
    /// The sent date (RFC 5256 section 2.2): the Date header, else the internal date.
    pub sent: i64,
    pub subject: BaseSubject,
    pub message_id: Option<String>,
    pub references: Vec<String>,
    pub in_reply_to: Option<String>,
}

/// A node: a message (index into the message slice) or a dummy standing for one that is
/// referenced but not there.
#[derive(Debug, Clone, Default)]
struct Node {
    msg: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

/// Threads: the nodes and the top-level ones in order.
#[derive(Debug, Default)]
struct Forest {
    nodes: Vec<Node>,
    roots: Vec<usize>,
}

impl Forest {
    fn add(&mut self, msg: Option<usize>) -> usize {
        self.nodes.push(Node {
            msg,
            ..Node::default()
        });
        self.nodes.len() - 1
    }

    fn is_dummy(&self, n: usize) -> bool {
        self.nodes[n].msg.is_none()
    }

    /// Whether making `parent` the parent of `child` would close a loop: `child` is
    /// `parent` or one of its ancestors.
    fn would_loop(&self, parent: usize, child: usize) -> bool {
        if parent != child && self.nodes[child].children.is_empty() {
            // The common case, without a walk up: a leaf is nobody's ancestor.
            return false;
        }
        let mut cur = Some(parent);
        while let Some(c) = cur {
            if c == child {
                return true;
            }
            cur = self.nodes[c].parent;
        }
        false
    }

    fn link(&mut self, parent: usize, child: usize) {
        self.nodes[child].parent = Some(parent);
        self.nodes[parent].children.push(child);
    }

    fn unlink(&mut self, child: usize) {
        if let Some(p) = self.nodes[child].parent.take() {
            self.nodes[p].children.retain(|&c| c != child);
        }
    }

    /// The first real message at or below `n` along first children (a dummy's stand-in).
    fn first_message(&self, mut n: usize) -> Option<usize> {
        loop {
            match self.nodes[n].msg {
                Some(m) => return Some(m),
                None => n = *self.nodes[n].children.first()?,
            }
        }
    }

    /// Every node below the roots, children before their parents.
    fn post_order(&self) -> Vec<usize> {
        let mut order = Vec::with_capacity(self.nodes.len());
        let mut stack: Vec<(usize, bool)> = self.roots.iter().rev().map(|&r| (r, false)).collect();
        while let Some((n, expanded)) = stack.pop() {
            if expanded {
                order.push(n);
            } else {
                stack.push((n, true));
                stack.extend(self.nodes[n].children.iter().rev().map(|&c| (c, false)));
            }
        }
        order
    }

    /// Sorts the children of every node, then the roots, by sent date (RFC 5256 section 2.2;
    /// a dummy counts as its first child), deepest first so a dummy's first child is known.
    fn sort_by_date(&mut self, msgs: &[ThreadMsg]) {
        let key = |f: &Forest, n: usize| {
            f.first_message(n)
                .map_or((i64::MAX, usize::MAX), |m| (msgs[m].sent, m))
        };
        for n in self.post_order() {
            let mut kids = std::mem::take(&mut self.nodes[n].children);
            kids.sort_by_key(|&c| key(self, c));
            self.nodes[n].children = kids;
        }
        let mut roots = std::mem::take(&mut self.roots);
        roots.sort_by_key(|&r| key(self, r));
        self.roots = roots;
    }
}

/// ORDEREDSUBJECT: messages grouped by base subject, each group a thread whose first
/// message (by sent date) has all the others as children; threads in order of their first
/// message's sent date.
fn ordered_subject(msgs: &[ThreadMsg]) -> Forest {
    let mut order: Vec<usize> = (0..msgs.len()).collect();
    let keys: Vec<String> = msgs.iter().map(|m| m.subject.key()).collect();
    order.sort_by(|&a, &b| {
        keys[a]
            .cmp(&keys[b])
            .then(msgs[a].sent.cmp(&msgs[b].sent))
            .then(a.cmp(&b))
    });
    let mut f = Forest::default();
    let mut start = 0;
    while start < order.len() {
        let end = order[start..]
            .iter()
            .position(|&m| keys[m] != keys[order[start]])
            .map_or(order.len(), |p| start + p);
        let first = f.add(Some(order[start]));
        for &m in &order[start + 1..end] {
            let n = f.add(Some(m));
            f.link(first, n);
        }
        f.roots.push(first);
        start = end;
    }
    f.roots
        .sort_by_key(|&r| f.nodes[r].msg.map(|m| (msgs[m].sent, m)));
    f
}

/// The node of a Message-ID, a new dummy if no message seen so far has it.
fn node_of<'a>(f: &mut Forest, by_id: &mut HashMap<&'a str, usize>, id: &'a str) -> usize {
    *by_id.entry(id).or_insert_with(|| f.add(None))
}

/// REFERENCES (RFC 5256 section 3, steps 1 to 6).
fn references(msgs: &[ThreadMsg]) -> Forest {
    let mut f = Forest::default();
    // Message-ID to node; ids are compared case-sensitively.
    let mut by_id: HashMap<&str, usize> = HashMap::new();

    // (1) Link messages to their parents.
    for (m, msg) in msgs.iter().enumerate() {
        // A missing or duplicate Message-ID gets a unique node of its own.
        let me = match msg.message_id.as_deref() {
            Some(id) => match by_id.get(id) {
                Some(&n) if f.is_dummy(n) => {
                    f.nodes[n].msg = Some(m);
                    n
                }
                Some(_) => f.add(Some(m)),
                None => {
                    let n = f.add(Some(m));
                    by_id.insert(id, n);
                    n
                }
            },
            None => f.add(Some(m)),
        };
        let refs: Vec<&str> = if msg.references.is_empty() {
            msg.in_reply_to.as_deref().into_iter().collect()
        } else {
            msg.references.iter().map(String::as_str).collect()
        };
        // (1A) Each reference is the parent of the next, unless the child has a parent
        // already or the link would close a loop.
        let nodes: Vec<usize> = refs
            .iter()
            .map(|id| node_of(&mut f, &mut by_id, id))
            .collect();
        for pair in nodes.windows(2) {
            let (p, c) = (pair[0], pair[1]);
            if f.nodes[c].parent.is_none() && !f.would_loop(p, c) {
                f.link(p, c);
            }
        }
        // (1B) The last reference is this message's parent, replacing any parent a
        // (probably truncated) References of another message gave it.
        f.unlink(me);
        if let Some(&p) = nodes.last()
            && !f.would_loop(p, me)
        {
            f.link(p, me);
        }
    }

    // (2) The parentless nodes are the roots.
    f.roots = (0..f.nodes.len())
        .filter(|&n| f.nodes[n].parent.is_none())
        .collect();

    // (3) Prune dummies: an empty one goes, one with children is replaced by them, except
    // at the top where a dummy with several children stays.
    for n in f.post_order() {
        let kids = std::mem::take(&mut f.nodes[n].children);
        let mut kept = Vec::with_capacity(kids.len());
        for k in kids {
            if f.is_dummy(k) {
                for g in std::mem::take(&mut f.nodes[k].children) {
                    f.nodes[g].parent = Some(n);
                    kept.push(g);
                }
            } else {
                kept.push(k);
            }
        }
        f.nodes[n].children = kept;
    }
    let roots = std::mem::take(&mut f.roots);
    for r in roots {
        if !f.is_dummy(r) || f.nodes[r].children.len() > 1 {
            f.roots.push(r);
        } else if let Some(&only) = f.nodes[r].children.first() {
            f.nodes[only].parent = None;
            f.nodes[r].children.clear();
            f.roots.push(only);
        }
    }

    // (4) Sort the top level by sent date (a dummy by its earliest child).
    f.sort_by_date(msgs);

    // (5) Gather top-level threads with the same base subject.
    let subject_of = |f: &Forest, n: usize| f.first_message(n).map(|m| &msgs[m].subject);
    let reply = |f: &Forest, n: usize| {
        f.nodes[n]
            .msg
            .is_some_and(|m| msgs[m].subject.reply_or_forward)
    };
    // (5A, 5B) The subject table: per base subject, the thread to gather into; a dummy is
    // preferred, then a message that is not a reply.
    let mut table: HashMap<String, usize> = HashMap::new();
    for &r in &f.roots {
        let Some(s) = subject_of(&f, r).filter(|s| !s.text.is_empty()) else {
            continue;
        };
        match table.get(&s.key()) {
            None => {
                table.insert(s.key(), r);
            }
            Some(&t) => {
                if !f.is_dummy(t) && (f.is_dummy(r) || (reply(&f, t) && !reply(&f, r))) {
                    table.insert(s.key(), r);
                }
            }
        }
    }
    // (5C) Merge.
    let mut top: Vec<Option<usize>> = f.roots.iter().map(|&r| Some(r)).collect();
    let mut slot: HashMap<usize, usize> =
        f.roots.iter().enumerate().map(|(i, &r)| (r, i)).collect();
    for i in 0..top.len() {
        let Some(r) = top[i] else { continue };
        let Some(key) = subject_of(&f, r)
            .filter(|s| !s.text.is_empty())
            .map(BaseSubject::key)
        else {
            continue;
        };
        let Some(&t) = table.get(&key) else { continue };
        if t == r {
            continue;
        }
        match (f.is_dummy(t), f.is_dummy(r)) {
            (true, true) => {
                for c in std::mem::take(&mut f.nodes[r].children) {
                    f.link(t, c);
                }
                top[i] = None;
            }
            (true, false) => {
                f.link(t, r);
                top[i] = None;
            }
            _ if reply(&f, r) && !reply(&f, t) => {
                f.link(t, r);
                top[i] = None;
            }
            _ => {
                let d = f.add(None);
                f.link(d, t);
                f.link(d, r);
                top[i] = None;
                if let Some(ts) = slot.remove(&t) {
                    top[ts] = Some(d);
                    slot.insert(d, ts);
                }
                table.insert(key, d);
            }
        }
    }
    f.roots = top.into_iter().flatten().collect();

    // (6) Sort every set of siblings by sent date, children before parents.
    f.sort_by_date(msgs);
    f
}

/// Writes the threads: `(1 2 (3)(4 5))(6)` (RFC 5256 section 4).
fn write(buf: &mut Vec<u8>, f: &Forest, msgs: &[ThreadMsg]) {
    enum Step {
        Node(usize),
        Text(&'static [u8]),
    }
    let mut stack: Vec<Step> = Vec::new();
    for &r in f.roots.iter().rev() {
        if f.first_message(r).is_none() {
            continue;
        }
        stack.push(Step::Text(b")"));
        stack.push(Step::Node(r));
        stack.push(Step::Text(b"("));
    }
    while let Some(step) = stack.pop() {
        let mut n = match step {
            Step::Text(t) => {
                buf.extend_from_slice(t);
                continue;
            }
            Step::Node(n) => n,
        };
        // A chain of only children is written inline: `1 2 3`.
        loop {
            let node = &f.nodes[n];
            if let Some(m) = node.msg {
                wire::number(buf, u64::from(msgs[m].number));
            }
            match node.children.as_slice() {
                [] => break,
                [only] => {
                    if node.msg.is_some() {
                        buf.push(b' ');
                    }
                    n = *only;
                }
                several => {
                    if node.msg.is_some() {
                        buf.push(b' ');
                    }
                    for &c in several.iter().rev() {
                        stack.push(Step::Text(b")"));
                        stack.push(Step::Node(c));
                        stack.push(Step::Text(b"("));
                    }
                    break;
                }
            }
        }
    }
}

impl Session {
    /// THREAD / UID THREAD.
    pub(crate) async fn thread(
        &mut self,
        algorithm: &ThreadingAlgorithm<'_>,
        charset: &Charset<'_>,
        search: &[SearchKey<'_>],
        uid: bool,
        out: &mut Out<'_>,
    ) -> Reply {
        let sync = if uid { Sync::Full } else { Sync::NoExpunge };
        if matches!(algorithm, ThreadingAlgorithm::Other(_)) {
            return Reply::bad("Unknown threading algorithm (REFERENCES or ORDEREDSUBJECT)");
        }
        if let Err(reply) = check_charset(charset) {
            return reply.sync_unless_bad(sync);
        }
        let matches = match self.matching(search).await {
            Ok(m) => m,
            Err(reply) => return reply.sync_unless_bad(sync),
        };
        let (summaries, expunged) = match self.summaries(&matches.found, true).await {
            Ok(s) => s,
            Err(reply) => return reply.sync_unless_bad(sync),
        };
        let Some(sel) = self.selected.as_ref() else {
            return Reply::bad("No mailbox selected");
        };
        let msgs: Vec<ThreadMsg> = summaries
            .into_iter()
            .map(|(i, s)| {
                let m = &sel.msgs[i];
                ThreadMsg {
                    number: if uid { m.uid } else { (i + 1) as u32 },
                    sent: s.sent.unwrap_or(m.internal_date),
                    subject: base_subject(&s.subject),
                    message_id: s.message_id,
                    references: s.references,
                    in_reply_to: s.in_reply_to,
                }
            })
            .collect();
        let forest = match algorithm {
            ThreadingAlgorithm::OrderedSubject => ordered_subject(&msgs),
            _ => references(&msgs),
        };
        let b = out.buf();
        b.extend_from_slice(b"* THREAD");
        if !forest.roots.is_empty() {
            b.push(b' ');
            write(b, &forest, &msgs);
        }
        b.extend_from_slice(b"\r\n");
        Reply::completed("THREAD", uid, expunged || matches.expunged, sync)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Harness;

    /// A message numbered `n` (sequence order), sent at `sent`, with these headers.
    fn msg(n: u32, sent: i64, subject: &str, id: Option<&str>, refs: &[&str]) -> ThreadMsg {
        ThreadMsg {
            number: n,
            sent,
            subject: base_subject(subject),
            message_id: id.map(str::to_string),
            references: refs.iter().map(|r| r.to_string()).collect(),
            in_reply_to: None,
        }
    }

    fn threads(msgs: &[ThreadMsg], refs: bool) -> String {
        let f = if refs {
            references(msgs)
        } else {
            ordered_subject(msgs)
        };
        let mut b = Vec::new();
        write(&mut b, &f, msgs);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn references_links_replies_through_missing_parents() {
        let msgs = [
            msg(1, 10, "hello", Some("a"), &[]),
            // Both reply to "b", which is not in the mailbox: they become siblings under
            // the dummy, and the dummy under "a" is replaced by them.
            msg(2, 30, "Re: hello", Some("c"), &["a", "b"]),
            msg(3, 20, "Re: hello", Some("d"), &["a", "b"]),
            msg(4, 40, "Re: hello", Some("e"), &["a", "b", "d"]),
            msg(5, 5, "other", Some("f"), &[]),
        ];
        // Siblings in sent-date order: 3 (20) before 2 (30); roots 5 (5) before 1 (10).
        assert_eq!(threads(&msgs, true), "(5)(1 (3 4)(2))");
    }

    #[test]
    fn references_keeps_a_dummy_root_with_several_children() {
        let msgs = [
            msg(1, 20, "Re: lost", Some("x"), &["gone"]),
            msg(2, 10, "Re: lost", Some("y"), &["gone"]),
            // A dummy root with one child is replaced by it.
            msg(3, 30, "Re: alone", Some("z"), &["vanished"]),
        ];
        assert_eq!(threads(&msgs, true), "((2)(1))(3)");
    }

    #[test]
    fn references_falls_back_to_in_reply_to_and_survives_loops_and_duplicates() {
        let mut reply = msg(2, 20, "Re: q", Some("b"), &[]);
        reply.in_reply_to = Some("a".into());
        let msgs = [
            msg(1, 10, "q", Some("a"), &["b"]), // claims to reply to its own reply
            reply,
            msg(3, 30, "dup", Some("a"), &[]), // duplicate Message-ID
            msg(4, 40, "self", Some("s"), &["s"]),
            msg(5, 50, "none", None, &[]),
        ];
        // 1 became the child of "b" first; 2 (which is "b") cannot then become 1's child.
        assert_eq!(threads(&msgs, true), "(2 1)(3)(4)(5)");
    }

    #[test]
    fn references_gathers_threads_by_subject() {
        let msgs = [
            msg(1, 10, "plans", Some("a"), &[]),
            // A reply without References joins the thread of the original subject.
            msg(2, 20, "Re: plans", Some("b"), &[]),
            // Two non-replies with one subject are put under a new dummy.
            msg(3, 30, "news", Some("c"), &[]),
            msg(4, 40, "News", Some("d"), &[]),
            // Empty subjects are never gathered.
            msg(5, 50, "", Some("e"), &[]),
            msg(6, 60, "Re:", Some("f"), &[]),
        ];
        assert_eq!(threads(&msgs, true), "(1 2)((3)(4))(5)(6)");
    }

    #[test]
    fn ordered_subject_groups_by_base_subject_then_date() {
        let msgs = [
            msg(1, 30, "hello", None, &[]),
            msg(2, 10, "Re: hello", None, &[]),
            msg(3, 20, "other", None, &[]),
            msg(4, 50, "RE: HELLO", None, &[]),
            msg(5, 40, "[fwd: other]", None, &[]),
            msg(6, 45, "third", None, &[]),
        ];
        // hello: 2, 1, 4 (first 2, the rest its children); other: 3, 5; third: 6.
        assert_eq!(threads(&msgs, false), "(2 (1)(4))(3 5)(6)");
        assert_eq!(threads(&[], false), "");
    }

    #[test]
    fn deep_chains_do_not_overflow_the_stack() {
        let ids: Vec<String> = (0..50_000).map(|i| format!("m{i}")).collect();
        let msgs: Vec<ThreadMsg> = (0..ids.len())
            .map(|i| {
                let refs: Vec<&str> = if i == 0 {
                    vec![]
                } else {
                    vec![ids[i - 1].as_str()]
                };
                msg(i as u32 + 1, i as i64, "Re: long", Some(&ids[i]), &refs)
            })
            .collect();
        let out = threads(&msgs, true);
        assert!(
            out.starts_with("(1 2 3 ") && out.ends_with(" 50000)"),
            "{}",
            &out[..20]
        );
    }

    #[tokio::test]
    async fn thread_command_answers_sequence_numbers_or_uids() {
        let h = Harness::new().await;
        let m = |id: &str, refs: &str, subject: &str, date: &str| {
            format!(
                "Message-ID: <{id}>\r\n{refs}Subject: {subject}\r\nDate: {date}\r\n\r\nbody\r\n"
            )
        };
        h.deliver("INBOX", "Subject: gone\r\n\r\nx\r\n").await;
        h.deliver(
            "INBOX",
            &m("a@x", "", "meeting", "Mon, 1 Jun 2020 10:00:00 +0000"),
        )
        .await;
        h.deliver(
            "INBOX",
            &m(
                "b@x",
                "References: <a@x>\r\n",
                "Re: meeting",
                "Mon, 1 Jun 2020 11:00:00 +0000",
            ),
        )
        .await;
        h.deliver(
            "INBOX",
            &m(
                "c@x",
                "In-Reply-To: <a@x>\r\n",
                "Re: meeting",
                "Mon, 1 Jun 2020 10:30:00 +0000",
            ),
        )
        .await;
        h.deliver(
            "INBOX",
            &m("d@x", "", "lunch", "Sun, 31 May 2020 10:00:00 +0000"),
        )
        .await;
        let mut s = h.selected("INBOX").await;
        h.run(&mut s, "a STORE 1 +FLAGS (\\Deleted)\r\nb EXPUNGE\r\n")
            .await;
        // seq 1..4 are UIDs 2..5.
        assert_eq!(
            h.run(&mut s, "c THREAD REFERENCES UTF-8 ALL\r\n").await,
            "* THREAD (4)(1 (3)(2))\r\nc OK THREAD completed\r\n"
        );
        assert_eq!(
            h.run(&mut s, "d UID THREAD REFERENCES UTF-8 ALL\r\n").await,
            "* THREAD (5)(2 (4)(3))\r\nd OK UID THREAD completed\r\n"
        );
        assert_eq!(
            h.run(&mut s, "e THREAD ORDEREDSUBJECT UTF-8 SUBJECT meeting\r\n")
                .await,
            "* THREAD (1 (3)(2))\r\ne OK THREAD completed\r\n"
        );
        assert_eq!(
            h.run(&mut s, "f THREAD REFERENCES UTF-8 SUBJECT nothing\r\n")
                .await,
            "* THREAD\r\nf OK THREAD completed\r\n"
        );
        let out = h.run(&mut s, "g THREAD SHOESIZE UTF-8 ALL\r\n").await;
        assert!(out.starts_with("g BAD"), "{out}");
        let out = h.run(&mut s, "h THREAD REFERENCES KOI8-R ALL\r\n").await;
        assert!(out.starts_with("h NO [BADCHARSET"), "{out}");
        let out = h.run(&mut s, "i CAPABILITY\r\n").await;
        assert!(
            out.contains(" SORT ") && out.contains("THREAD=REFERENCES THREAD=ORDEREDSUBJECT"),
            "{out}"
        );
    }
}
