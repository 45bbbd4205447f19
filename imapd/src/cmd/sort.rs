//! SORT and UID SORT (RFC 5256 section 3), with the DISPLAYFROM and DISPLAYTO keys of
//! SORT=DISPLAY (RFC 5957) and the MODSEQ result of CONDSTORE (RFC 7162 section 3.1.5).
//!
//! The search criteria select the messages (the SEARCH code does that); this file orders
//! them. Strings compare case-insensitively ([`fold_case`]); messages equal on every
//! criterion stay in sequence order.

use std::cmp::Ordering;

use imap_codec::imap_types::core::Charset;
use imap_codec::imap_types::extensions::sort::{SortCriterion, SortKey};
use imap_codec::imap_types::search::SearchKey;

use super::search::{check_charset, read_batched};
use crate::mime::header;
use crate::mime::subject::{base_subject, fold_case};
use crate::mime::summary::{FirstAddress, Summary, summarize};
use crate::output::Out;
use crate::search_context::{Kept, SortOrder};
use crate::search_return::{Found, ReturnOptions, esearch_line};
use crate::session::{Reply, Session, Sync};
use crate::wire;

/// The value of one sort key for one message.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Value {
    Number(i64),
    Text(String),
}

/// Whether a key needs the message's header (ARRIVAL and SIZE come from the index).
pub(crate) fn needs_header(key: &SortKey) -> bool {
    !matches!(key, SortKey::Arrival | SortKey::Size)
}

fn mailbox(a: &Option<FirstAddress>) -> Value {
    Value::Text(
        a.as_ref()
            .map_or_else(String::new, |a| fold_case(&a.mailbox)),
    )
}

fn display(a: &Option<FirstAddress>) -> Value {
    Value::Text(
        a.as_ref()
            .map_or_else(String::new, |a| fold_case(&a.display)),
    )
}

/// The value of `key` for a message: its index metadata and header summary.
pub(crate) fn value(key: &SortKey, internal_date: i64, size: u64, s: &Summary) -> Value {
    match key {
        SortKey::Arrival => Value::Number(internal_date),
        SortKey::Size => Value::Number(i64::try_from(size).unwrap_or(i64::MAX)),
        SortKey::Date => Value::Number(s.sent.unwrap_or(internal_date)),
        SortKey::Subject => Value::Text(base_subject(&s.subject).key()),
        SortKey::From => mailbox(&s.from),
        SortKey::To => mailbox(&s.to),
        SortKey::Cc => mailbox(&s.cc),
        SortKey::DisplayFrom => display(&s.from),
        SortKey::DisplayTo => display(&s.to),
    }
}

/// Orders `items` (in sequence order, each with one value per criterion) by the criteria;
/// ties keep sequence order because the sort is stable.
fn order<T>(items: &mut [(T, Vec<Value>)], criteria: &[SortCriterion]) {
    items.sort_by(|(_, a), (_, b)| compare(a, b, criteria));
}

/// How two messages' values compare under the criteria (equal: keep sequence order).
pub(crate) fn compare(a: &[Value], b: &[Value], criteria: &[SortCriterion]) -> Ordering {
    for (i, c) in criteria.iter().enumerate() {
        let o = a[i].cmp(&b[i]);
        let o = if c.reverse { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

impl Session {
    /// The header summaries of the messages at `found` (indexes into the selected mailbox),
    /// or empty summaries when `headers` is false. Messages expunged meanwhile are left
    /// out; the flag says whether there were any.
    pub(crate) async fn summaries(
        &self,
        found: &[usize],
        headers: bool,
    ) -> Result<(Vec<(usize, Summary)>, bool), Reply> {
        let (Some(user), Some(sel)) = (self.user(), self.selected.as_ref()) else {
            return Err(Reply::bad("No mailbox selected"));
        };
        if !headers {
            return Ok((
                found.iter().map(|&i| (i, Summary::default())).collect(),
                false,
            ));
        }
        let mut out = Vec::with_capacity(found.len());
        let expunged = read_batched(&user, sel, found, |i, raw| {
            out.push((i, summarize(&raw[..header::body_start(raw)])));
        })
        .await
        .map_err(Reply::from)?;
        Ok((out, expunged))
    }

    /// SORT / UID SORT.
    pub(crate) async fn sort(
        &mut self,
        criteria: &[SortCriterion],
        charset: &Charset<'_>,
        search: &[SearchKey<'_>],
        uid: bool,
        esort: Option<(&ReturnOptions, &str)>,
        out: &mut Out<'_>,
    ) -> Reply {
        // Sequence numbers in the answer: no EXPUNGE may be sent with it (RFC 3501 7.4.1).
        let sync = if uid { Sync::Full } else { Sync::NoExpunge };
        if let Err(reply) = check_charset(charset) {
            return reply.sync_unless_bad(sync);
        }
        let matches = match self.matching(search).await {
            Ok(m) => m,
            Err(reply) => return reply.sync_unless_bad(sync),
        };
        let headers = criteria.iter().any(|c| needs_header(&c.key));
        let (summaries, expunged) = match self.summaries(&matches.found, headers).await {
            Ok(s) => s,
            Err(reply) => return reply.sync_unless_bad(sync),
        };
        let Some(sel) = self.selected.as_ref() else {
            return Reply::bad("No mailbox selected");
        };
        let mut items: Vec<(usize, Vec<Value>)> = summaries
            .iter()
            .map(|(i, s)| {
                let m = &sel.msgs[*i];
                let values = criteria
                    .iter()
                    .map(|c| value(&c.key, m.internal_date, m.size, s))
                    .collect();
                (*i, values)
            })
            .collect();
        order(&mut items, criteria);
        if let Some((returns, tag)) = esort {
            let found: Vec<Found> = items
                .iter()
                .map(|(i, _)| Found {
                    number: if uid {
                        sel.msgs[*i].uid
                    } else {
                        (*i + 1) as u32
                    },
                    modseq: sel.msgs[*i].modseq,
                })
                .collect();
            let line = esearch_line(tag, uid, returns, &found, true, matches.with_modseq);
            out.untagged(&line);
            if returns.update {
                let order = SortOrder {
                    criteria: criteria.to_vec(),
                    list: items
                        .into_iter()
                        .map(|(i, values)| (sel.msgs[i].uid, values))
                        .collect(),
                };
                self.start_search_context(tag, uid, search, Kept::Sorted(order), out);
            }
            return Reply::completed("SORT", uid, expunged || matches.expunged, sync);
        }

        let b = out.buf();
        b.extend_from_slice(b"* SORT");
        for (i, _) in &items {
            b.push(b' ');
            let n = if uid {
                sel.msgs[*i].uid
            } else {
                (*i + 1) as u32
            };
            wire::number(b, u64::from(n));
        }
        let highest = items.iter().map(|(i, _)| sel.msgs[*i].modseq).max();
        if matches.with_modseq
            && let Some(h) = highest
        {
            b.extend_from_slice(format!(" (MODSEQ {h})").as_bytes());
        }
        b.extend_from_slice(b"\r\n");
        Reply::completed("SORT", uid, expunged || matches.expunged, sync)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Harness;

    fn criteria(list: &[(bool, SortKey)]) -> Vec<SortCriterion> {
        list.iter()
            .map(|(reverse, key)| SortCriterion {
                reverse: *reverse,
                key: key.clone(),
            })
            .collect()
    }

    #[test]
    fn criteria_apply_in_order_and_ties_keep_sequence_order() {
        let mut items = vec![
            (1, vec![Value::Text("b".into()), Value::Number(3)]),
            (2, vec![Value::Text("a".into()), Value::Number(3)]),
            (3, vec![Value::Text("b".into()), Value::Number(1)]),
            (4, vec![Value::Text("a".into()), Value::Number(3)]),
        ];
        order(
            &mut items,
            &criteria(&[(false, SortKey::Subject), (true, SortKey::Size)]),
        );
        let seqs: Vec<i32> = items.iter().map(|i| i.0).collect();
        assert_eq!(seqs, [2, 4, 1, 3]);
        // REVERSE reverses its criterion only: equal messages stay in sequence order.
        order(&mut items, &criteria(&[(true, SortKey::Subject)]));
        let seqs: Vec<i32> = items.iter().map(|i| i.0).collect();
        assert_eq!(seqs, [1, 3, 2, 4]);
    }

    #[test]
    fn values_follow_rfc_5256() {
        let s = summarize(
            b"From: \"Zed\" <Adam@x.org>\r\nTo: bob@y.org\r\nSubject: Re: [list] Hello\r\n\r\n",
        );
        assert_eq!(value(&SortKey::From, 0, 0, &s), Value::Text("ADAM".into()));
        assert_eq!(
            value(&SortKey::DisplayFrom, 0, 0, &s),
            Value::Text("ZED".into())
        );
        assert_eq!(
            value(&SortKey::DisplayTo, 0, 0, &s),
            Value::Text("BOB@Y.ORG".into())
        );
        assert_eq!(value(&SortKey::Cc, 0, 0, &s), Value::Text(String::new()));
        assert_eq!(
            value(&SortKey::Subject, 0, 0, &s),
            Value::Text("HELLO".into())
        );
        // No Date header: the internal date stands in.
        assert_eq!(value(&SortKey::Date, 77, 5, &s), Value::Number(77));
        assert_eq!(value(&SortKey::Size, 77, 5, &s), Value::Number(5));
    }

    fn msg(from: &str, subject: &str, date: &str, body: &str) -> String {
        format!(
            "From: {from}\r\nTo: alice@example.org\r\nSubject: {subject}\r\nDate: {date}\r\n\r\n{body}\r\n"
        )
    }

    async fn mailbox(h: &Harness) -> crate::session::Session {
        // seq 1..4, delivered in this order.
        h.deliver(
            "INBOX",
            &msg(
                "Carol <carol@x>",
                "Re: lunch",
                "Tue, 2 Jun 2020 10:00:00 +0000",
                "a somewhat longer body",
            ),
        )
        .await;
        h.deliver(
            "INBOX",
            &msg("alice@x", "lunch", "Tue, 2 Jun 2020 11:00:00 +0200", "x"),
        )
        .await;
        h.deliver(
            "INBOX",
            &msg(
                "Bob <bob@x>",
                "[team] agenda",
                "Mon, 1 Jun 2020 09:00:00 +0000",
                "body",
            ),
        )
        .await;
        h.deliver("INBOX", "Subject: no date\r\n\r\nbody\r\n").await;
        h.selected("INBOX").await
    }

    #[tokio::test]
    async fn sort_by_date_subject_from_size() {
        let h = Harness::new().await;
        let mut s = mailbox(&h).await;
        // In UTC seq 2 (11:00 +0200) is before seq 1 (10:00 +0000); seq 4 has no Date: its
        // internal date (now) is the latest.
        assert_eq!(
            h.run(&mut s, "a SORT (DATE) UTF-8 ALL\r\n").await,
            "* SORT 3 2 1 4\r\na OK SORT completed\r\n"
        );
        assert_eq!(
            h.run(&mut s, "b SORT (REVERSE DATE) UTF-8 ALL\r\n").await,
            "* SORT 4 1 2 3\r\nb OK SORT completed\r\n"
        );
        // Base subjects: agenda, lunch, lunch, "no date"; ties in sequence order.
        assert_eq!(
            h.run(&mut s, "c SORT (SUBJECT) US-ASCII ALL\r\n").await,
            "* SORT 3 1 2 4\r\nc OK SORT completed\r\n"
        );
        assert_eq!(
            h.run(&mut s, "d SORT (SUBJECT DATE) UTF-8 ALL\r\n").await,
            "* SORT 3 2 1 4\r\nd OK SORT completed\r\n"
        );
        // FROM: "" (none), alice, bob, carol.
        assert_eq!(
            h.run(&mut s, "e SORT (FROM) UTF-8 ALL\r\n").await,
            "* SORT 4 2 3 1\r\ne OK SORT completed\r\n"
        );
        // DISPLAYFROM: "", alice@x, Bob, Carol.
        assert_eq!(
            h.run(&mut s, "f SORT (DISPLAYFROM) UTF-8 ALL\r\n").await,
            "* SORT 4 2 3 1\r\nf OK SORT completed\r\n"
        );
        let out = h.run(&mut s, "g SORT (REVERSE SIZE) UTF-8 ALL\r\n").await;
        assert!(out.starts_with("* SORT 1 "), "{out}");
        assert_eq!(
            h.run(&mut s, "h SORT (ARRIVAL) UTF-8 ALL\r\n").await,
            "* SORT 1 2 3 4\r\nh OK SORT completed\r\n"
        );
    }

    #[tokio::test]
    async fn search_keys_select_and_uid_sort_answers_uids() {
        let h = Harness::new().await;
        let mut s = mailbox(&h).await;
        h.run(&mut s, "a STORE 1 +FLAGS (\\Deleted)\r\n").await;
        h.run(&mut s, "b EXPUNGE\r\n").await;
        // Now seq 1..3 are UIDs 2..4.
        assert_eq!(
            h.run(&mut s, "c UID SORT (DATE) UTF-8 ALL\r\n").await,
            "* SORT 3 2 4\r\nc OK UID SORT completed\r\n"
        );
        assert_eq!(
            h.run(&mut s, "d SORT (DATE) UTF-8 BODY body\r\n").await,
            "* SORT 2 3\r\nd OK SORT completed\r\n"
        );
        assert_eq!(
            h.run(&mut s, "e SORT (SUBJECT) UTF-8 SUBJECT nothing\r\n")
                .await,
            "* SORT\r\ne OK SORT completed\r\n"
        );
        assert_eq!(
            h.run(&mut s, "f SORT (SUBJECT) KOI8-R ALL\r\n").await,
            "f NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset\r\n"
        );
        let out = h.run(&mut s, "g SORT (ARRIVAL) UTF-8 MODSEQ 1\r\n").await;
        assert!(out.starts_with("* SORT 1 2 3 (MODSEQ "), "{out}");
    }

    #[tokio::test]
    async fn needs_a_selected_mailbox_and_valid_criteria() {
        let h = Harness::new().await;
        let mut s = h.session(true);
        h.login(&mut s).await;
        let out = h.run(&mut s, "a SORT (DATE) UTF-8 ALL\r\n").await;
        assert!(out.starts_with("a BAD"), "{out}");
        let mut s = h.selected("INBOX").await;
        let out = h.run(&mut s, "b SORT (SHOESIZE) UTF-8 ALL\r\n").await;
        assert!(out.starts_with("b BAD"), "{out}");
        let out = h.run(&mut s, "c SORT (DATE) ALL\r\n").await;
        assert!(out.starts_with("c BAD"), "charset is required: {out}");
        assert_eq!(
            h.run(&mut s, "d SORT (DATE) UTF-8 ALL\r\n").await,
            "* SORT\r\nd OK SORT completed\r\n"
        );
    }
}
