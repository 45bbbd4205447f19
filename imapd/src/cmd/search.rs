//! SEARCH and UID SEARCH (RFC 3501 section 6.4.4), with ESEARCH results (RFC 4731) and the
//! MODSEQ criterion (CONDSTORE, RFC 7162). Key evaluation is in `search_eval`.

use hermod_common::store::{StoreError, UserStore};
use imap_codec::imap_types::core::{Charset, Vec1};
use imap_codec::imap_types::search::SearchKey;

use super::search_eval::{self, Content, View};
use super::search_index::IndexAnswers;
use crate::extended::SearchReturn;
use crate::output::Out;
use crate::search_context::Kept;
use crate::search_return::{Found, esearch_line};
use crate::session::{Reply, Selected, Session, Sync};

fn uses_modseq(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::ModSequence { .. } => true,
        SearchKey::And(keys) => keys.as_ref().iter().any(uses_modseq),
        SearchKey::Or(a, b) => uses_modseq(a) || uses_modseq(b),
        SearchKey::Not(k) => uses_modseq(k),
        _ => false,
    }
}

/// The messages a search matched.
pub(crate) struct Matches {
    /// Indexes into the selected mailbox's messages, ascending (sequence order).
    pub found: Vec<usize>,
    /// Some messages could not be read: another session expunged them.
    pub expunged: bool,
    /// The criteria used MODSEQ: results carry the highest mod-sequence (RFC 7162).
    pub with_modseq: bool,
}

/// Checks a SEARCH/SORT/THREAD charset: UTF-8 and its subset US-ASCII are understood.
pub(crate) fn check_charset(charset: &Charset<'_>) -> Result<(), Reply> {
    let name = match charset {
        Charset::Atom(a) => a.inner().to_string(),
        Charset::Quoted(q) => q.inner().to_string(),
    };
    if name.eq_ignore_ascii_case("UTF-8") || name.eq_ignore_ascii_case("US-ASCII") {
        Ok(())
    } else {
        Err(Reply::no("Unsupported charset").code("BADCHARSET (UTF-8 US-ASCII)"))
    }
}

/// Messages read from the store at once: at most this many...
const BATCH_MESSAGES: usize = 256;
/// ...and about this many bytes (every message of a batch is in memory together).
const BATCH_BYTES: u64 = 8 * 1024 * 1024;

/// Reads the messages at `indexes` (into the selected mailbox) a batch at a time, one store
/// trip per batch rather than per message, and calls `f` with each index and its bytes.
/// Returns whether some could not be read because they were expunged meanwhile.
pub(crate) async fn read_batched(
    user: &UserStore,
    sel: &Selected,
    indexes: &[usize],
    mut f: impl FnMut(usize, &[u8]),
) -> Result<bool, StoreError> {
    let mut expunged = false;
    let mut start = 0;
    while start < indexes.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < indexes.len()
            && end - start < BATCH_MESSAGES
            && (end == start || bytes + sel.msgs[indexes[end]].size <= BATCH_BYTES)
        {
            bytes += sel.msgs[indexes[end]].size;
            end += 1;
        }
        let batch = &indexes[start..end];
        let uids: Vec<u32> = batch.iter().map(|&i| sel.msgs[i].uid).collect();
        let raws = user.read_many(&sel.name, &uids).await?;
        for (&i, raw) in batch.iter().zip(raws) {
            match raw {
                Some(raw) => f(i, &raw),
                None => expunged = true,
            }
        }
        start = end;
    }
    Ok(expunged)
}

impl Session {
    /// Evaluates search criteria over the selected mailbox: the messages they match.
    /// SORT and THREAD order what this finds.
    pub(crate) async fn matching(&mut self, criteria: &[SearchKey<'_>]) -> Result<Matches, Reply> {
        let key = match criteria {
            [one] => one.clone(),
            many => match Vec1::try_from(many.to_vec()) {
                Ok(v) => SearchKey::And(v),
                Err(_) => return Err(Reply::bad("Missing search criteria")),
            },
        };
        let with_modseq = uses_modseq(&key);
        if with_modseq {
            self.enabled.condstore = true;
        }
        let (Some(user), Some(sel)) = (self.user(), self.selected.as_ref()) else {
            return Err(Reply::bad("No mailbox selected"));
        };
        let view = View {
            count: sel.msgs.len() as u32,
            max_uid: sel.max_uid(),
        };
        // Metadata and the full-text index first; only messages they leave undecided are
        // read, in batches. Without the index (an error there) every message is looked at.
        let index = IndexAnswers::prepare(&user, sel, &key)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "full-text index not used");
                None
            });
        let mut hits = vec![false; sel.msgs.len()];
        let mut undecided = Vec::new();
        let candidates = index.as_ref().and_then(|x| x.candidates(&key, sel));
        let all = 0..sel.msgs.len();
        let look_at: Box<dyn Iterator<Item = usize>> = match &candidates {
            Some(c) => Box::new(c.iter().copied()),
            None => Box::new(all),
        };
        for i in look_at {
            let (seq, m) = ((i + 1) as u32, &sel.msgs[i]);
            let decided = match &index {
                Some(x) => x.eval(&key, seq, m, view),
                None => search_eval::eval(&key, seq, m, view, None),
            };
            match decided {
                Some(hit) => hits[i] = hit,
                None => undecided.push(i),
            }
        }
        let expunged = read_batched(&user, sel, &undecided, |i, raw| {
            let mut content = Content::new(raw);
            hits[i] =
                search_eval::eval(&key, (i + 1) as u32, &sel.msgs[i], view, Some(&mut content))
                    .unwrap_or(false);
        })
        .await
        .map_err(Reply::from)?;
        let found = (0..hits.len()).filter(|&i| hits[i]).collect();
        Ok(Matches {
            found,
            expunged,
            with_modseq,
        })
    }

    pub(crate) async fn search(
        &mut self,
        charset: Option<&Charset<'_>>,
        criteria: &[SearchKey<'_>],
        uid: bool,
        esearch: Option<&SearchReturn>,
        tag: &str,
        out: &mut Out<'_>,
    ) -> Reply {
        let sync = if uid { Sync::Full } else { Sync::NoExpunge };
        // IMAP4rev2 answers every SEARCH with ESEARCH (RFC 9051 section 6.4.4).
        let rev2_default = SearchReturn {
            all: true,
            ..Default::default()
        };
        let esearch = esearch.or(self.enabled.rev2.then_some(&rev2_default));
        if esearch.is_some_and(|r| r.save)
            && let Some(sel) = self.selected.as_mut()
        {
            // A failed search saves the empty result (RFC 5182 section 2.1).
            sel.saved_search.clear();
        }
        if let Some(Err(reply)) = charset.map(check_charset) {
            return reply.sync_unless_bad(sync);
        }
        let Matches {
            found,
            expunged,
            with_modseq,
        } = match self.matching(criteria).await {
            Ok(m) => m,
            Err(reply) => return reply.sync_unless_bad(sync),
        };
        let Some(sel) = self.selected.as_ref() else {
            return Reply::bad("No mailbox selected");
        };
        let found: Vec<(u32, u32, u64)> = found
            .iter()
            .map(|&i| ((i + 1) as u32, sel.msgs[i].uid, sel.msgs[i].modseq))
            .collect();
        let numbers: Vec<u32> = found.iter().map(|f| if uid { f.1 } else { f.0 }).collect();
        let highest = found.iter().map(|f| f.2).max();
        if let Some(ret) = esearch.filter(|r| r.save) {
            let uids: Vec<u32> = found.iter().map(|f| f.1).collect();
            let saved = crate::searchres::to_save(&uids, ret.min, ret.max, ret.all || ret.count);
            if let Some(sel) = self.selected.as_mut() {
                sel.saved_search = saved;
            }
            if !(ret.min || ret.max || ret.all || ret.count) {
                // SAVE alone: no ESEARCH response (RFC 5182 section 2.1).
                return Reply::completed("SEARCH", uid, expunged, sync);
            }
        }
        match esearch {
            Some(ret) => {
                let items: Vec<Found> = found
                    .iter()
                    .zip(&numbers)
                    .map(|(f, &number)| Found {
                        number,
                        modseq: f.2,
                    })
                    .collect();
                out.untagged(&esearch_line(tag, uid, ret, &items, false, with_modseq));
                if ret.update {
                    let uids = found.iter().map(|f| f.1).collect();
                    self.start_search_context(tag, uid, criteria, Kept::Uids(uids), out);
                }
            }
            None => {
                let b = out.buf();
                b.extend_from_slice(b"* SEARCH");
                for n in &numbers {
                    b.push(b' ');
                    crate::wire::number(b, u64::from(*n));
                }
                if with_modseq && let Some(h) = highest {
                    b.extend_from_slice(format!(" (MODSEQ {h})").as_bytes());
                }
                b.extend_from_slice(b"\r\n");
            }
        }
        Reply::completed("SEARCH", uid, expunged, sync)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{Harness, message};

    async fn mailbox(h: &Harness) -> crate::session::Session {
        h.deliver("INBOX", &message("hello", "first body")).await;
        h.deliver("INBOX", "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nS8Okc2VrdWNoZW4=\r\n").await;
        h.deliver("INBOX", &message("third", "another body")).await;
        h.selected("INBOX").await
    }

    #[tokio::test]
    async fn plain_and_uid_search() {
        let h = Harness::new().await;
        let mut s = mailbox(&h).await;
        h.run(&mut s, "a STORE 1 +FLAGS (\\Seen)\r\n").await;
        assert_eq!(
            h.run(&mut s, "b SEARCH UNSEEN\r\n").await,
            "* SEARCH 2 3\r\nb OK SEARCH completed\r\n"
        );
        assert_eq!(
            h.run(&mut s, "c UID SEARCH BODY body\r\n").await,
            "* SEARCH 1 3\r\nc OK UID SEARCH completed\r\n"
        );
        assert_eq!(
            h.run(&mut s, "d SEARCH OR SUBJECT third SEEN\r\n").await,
            "* SEARCH 1 3\r\nd OK SEARCH completed\r\n"
        );
        assert_eq!(
            h.run(&mut s, "e SEARCH NOT 1:2\r\n").await,
            "* SEARCH 3\r\ne OK SEARCH completed\r\n"
        );
        assert_eq!(
            h.run(&mut s, "f SEARCH SUBJECT nothing\r\n").await,
            "* SEARCH\r\nf OK SEARCH completed\r\n"
        );
    }

    #[tokio::test]
    async fn utf8_text_in_a_literal() {
        let h = Harness::new().await;
        let mut s = mailbox(&h).await;
        let word = "käsekuchen";
        let out = h
            .run(
                &mut s,
                &format!(
                    "a SEARCH CHARSET UTF-8 BODY {{{}}}\r\n{word}\r\n",
                    word.len()
                ),
            )
            .await;
        assert!(
            out.ends_with("* SEARCH 2\r\na OK SEARCH completed\r\n"),
            "{out}"
        );
        let word = "GRÜSSE";
        let out = h
            .run(
                &mut s,
                &format!(
                    "b SEARCH CHARSET UTF-8 SUBJECT {{{}+}}\r\ngrüße\r\n",
                    "grüße".len()
                ),
            )
            .await;
        assert!(
            out.ends_with("* SEARCH 2\r\nb OK SEARCH completed\r\n"),
            "{word}: {out}"
        );
        let out = h.run(&mut s, "c SEARCH CHARSET KOI8-R TEXT x\r\n").await;
        assert_eq!(
            out,
            "c NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset\r\n"
        );
    }

    #[tokio::test]
    async fn esearch_results() {
        let h = Harness::new().await;
        let mut s = mailbox(&h).await;
        let out = h
            .run(&mut s, "a UID SEARCH RETURN (MIN MAX COUNT ALL) ALL\r\n")
            .await;
        assert_eq!(
            out,
            "* ESEARCH (TAG \"a\") UID MIN 1 MAX 3 COUNT 3 ALL 1:3\r\na OK UID SEARCH completed\r\n"
        );
        let out = h.run(&mut s, "b SEARCH RETURN () DELETED\r\n").await;
        assert_eq!(out, "* ESEARCH (TAG \"b\")\r\nb OK SEARCH completed\r\n");
        let out = h.run(&mut s, "c SEARCH RETURN (COUNT) BODY body\r\n").await;
        assert_eq!(
            out,
            "* ESEARCH (TAG \"c\") COUNT 2\r\nc OK SEARCH completed\r\n"
        );
    }

    /// imaptest's esearch-condstore: the first FETCH MODSEQ tells HIGHESTMODSEQ, and
    /// RETURN (MIN) or (MAX) gives the MODSEQ of that message, not of all matches.
    #[tokio::test]
    async fn esearch_min_max_modseq() {
        let h = Harness::new().await;
        let mut s = mailbox(&h).await;
        let out = h.run(&mut s, "a FETCH 1 MODSEQ\r\n").await;
        assert!(out.starts_with("* OK [HIGHESTMODSEQ "), "{out}");
        let mut modseq = Vec::new();
        for n in [1, 3, 2] {
            let out = h
                .run(&mut s, &format!("s STORE {n} +FLAGS (\\Seen)\r\n"))
                .await;
            let m: u64 = out
                .split("MODSEQ (")
                .nth(1)
                .unwrap()
                .split(')')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            modseq.push((n, m));
        }
        let of = |n| modseq.iter().find(|(k, _)| *k == n).unwrap().1;
        let out = h
            .run(
                &mut s,
                "b SEARCH RETURN (MIN) 1:3 MODSEQ \"/flags/\\\\seen\" all 1\r\n",
            )
            .await;
        assert!(
            out.starts_with(&format!("* ESEARCH (TAG \"b\") MIN 1 MODSEQ {}\r\n", of(1))),
            "{out}"
        );
        let out = h
            .run(
                &mut s,
                "c SEARCH RETURN (MAX) 1:3 MODSEQ \"/flags/\\\\seen\" all 1\r\n",
            )
            .await;
        assert!(
            out.starts_with(&format!("* ESEARCH (TAG \"c\") MAX 3 MODSEQ {}\r\n", of(3))),
            "{out}"
        );
        let out = h
            .run(
                &mut s,
                "d SEARCH RETURN () 1:3 MODSEQ \"/flags/\\\\seen\" all 1\r\n",
            )
            .await;
        assert!(
            out.starts_with(&format!(
                "* ESEARCH (TAG \"d\") ALL 1:3 MODSEQ {}\r\n",
                of(2)
            )),
            "{out}"
        );
    }

    #[tokio::test]
    async fn modseq_search() {
        let h = Harness::new().await;
        let mut s = mailbox(&h).await;
        h.run(&mut s, "a STORE 3 +FLAGS (\\Flagged)\r\n").await;
        let out = h.run(&mut s, "b FETCH 3 (MODSEQ)\r\n").await;
        let m: u64 = out
            .split("MODSEQ (")
            .nth(1)
            .unwrap()
            .split(')')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let out = h.run(&mut s, &format!("c SEARCH MODSEQ {m}\r\n")).await;
        assert_eq!(
            out,
            format!("* SEARCH 3 (MODSEQ {m})\r\nc OK SEARCH completed\r\n")
        );
    }
}
