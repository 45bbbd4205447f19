//! SEARCH text keys answered from the store's full-text index (`store/text_index.rs`)
//! instead of reading every message: SUBJECT, FROM, TO, CC, BCC, BODY, TEXT and HEADER
//! Subject exactly (the index holds the same text `search_eval` compares with, see
//! `hermod_common::search_text`), other HEADER keys as a superset that reading the
//! candidates confirms. Messages the index does not cover yet are evaluated as before
//! (the store indexes them meanwhile in the background).

use hermod_common::search_text::usable_needle;
use hermod_common::store::{MessageMeta, StoreError, TextField, Uid, UserStore};
use imap_codec::imap_types::search::SearchKey;

use super::search_eval::{self, View};
use crate::session::Selected;

/// The answer of the index for one key of a search.
struct Answer {
    /// The key's address in the criteria (they are borrowed, so it stays put).
    key: usize,
    /// Indexed messages that may match, ascending.
    uids: Vec<Uid>,
    /// `uids` are exactly the indexed messages that match (else: a superset).
    exact: bool,
}

/// What the index says about the text keys of one search.
pub(crate) struct IndexAnswers {
    answers: Vec<Answer>,
    /// Messages the index does not cover (ascending UIDs): evaluated by reading them.
    unindexed: Vec<Uid>,
}

fn address(key: &SearchKey<'_>) -> usize {
    std::ptr::from_ref(key) as usize
}

/// The index column a key compares with, its needle, and whether the index's answer is
/// exact; `None` for keys the index cannot answer.
fn indexed_key(key: &SearchKey<'_>) -> Option<(TextField, String, bool)> {
    use SearchKey::*;
    let (field, needle, exact) = match key {
        Subject(s) => (TextField::Subject, search_eval::text(s), true),
        From(s) => (TextField::From, search_eval::text(s), true),
        To(s) => (TextField::To, search_eval::text(s), true),
        Cc(s) => (TextField::Cc, search_eval::text(s), true),
        Bcc(s) => (TextField::Bcc, search_eval::text(s), true),
        Body(s) => (TextField::Body, search_eval::text(s), true),
        Text(s) => (TextField::Text, search_eval::text(s), true),
        Header(name, value) if search_eval::text(name) == "subject" => {
            (TextField::Subject, search_eval::text(value), true)
        }
        Header(_, value) => (TextField::Headers, search_eval::text(value), false),
        _ => return None,
    };
    usable_needle(&needle).then_some((field, needle, exact))
}

/// Every key of the criteria the index can answer. The criteria's depth is bounded by the
/// command parser (`search_eval::eval` recurses over it the same way).
fn collect<'a, 'k>(key: &'a SearchKey<'k>, out: &mut Vec<&'a SearchKey<'k>>) {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().for_each(|k| collect(k, out)),
        SearchKey::Or(a, b) => {
            collect(a, out);
            collect(b, out);
        }
        SearchKey::Not(k) => collect(k, out),
        k if indexed_key(k).is_some() => out.push(k),
        _ => {}
    }
}

impl IndexAnswers {
    /// Asks the index about the text keys of `key`; `None` if it has none the index can
    /// answer.
    pub(crate) async fn prepare(
        user: &UserStore,
        sel: &Selected,
        key: &SearchKey<'_>,
    ) -> Result<Option<IndexAnswers>, StoreError> {
        let mut keys = Vec::new();
        collect(key, &mut keys);
        if keys.is_empty() {
            return Ok(None);
        }
        // Also starts indexing what is missing, in the background.
        let unindexed = user.text_unindexed(&sel.name).await?;
        let mut answers = Vec::with_capacity(keys.len());
        for k in keys {
            let Some((field, needle, exact)) = indexed_key(k) else {
                continue;
            };
            let uids = user.text_search(&sel.name, field, &needle).await?;
            answers.push(Answer {
                key: address(k),
                uids,
                exact,
            });
        }
        Ok(Some(IndexAnswers { answers, unindexed }))
    }

    fn answer(&self, key: &SearchKey<'_>) -> Option<&Answer> {
        let a = address(key);
        self.answers.iter().find(|x| x.key == a)
    }

    /// Whether the index covers message `uid`.
    pub(crate) fn covers(&self, uid: Uid) -> bool {
        self.unindexed.binary_search(&uid).is_err()
    }

    /// The only messages (indexes into `sel.msgs`, ascending) that can match, when a key
    /// that every match must satisfy was answered by the index: its candidates, and the
    /// messages the index does not cover. `None`: any message may match.
    pub(crate) fn candidates(&self, key: &SearchKey<'_>, sel: &Selected) -> Option<Vec<usize>> {
        let conjuncts: Vec<&SearchKey<'_>> = match key {
            SearchKey::And(keys) => keys.as_ref().iter().collect(),
            one => vec![one],
        };
        let smallest = conjuncts
            .iter()
            .filter_map(|k| self.answer(k))
            .min_by_key(|a| a.uids.len())?;
        let mut out: Vec<usize> = smallest
            .uids
            .iter()
            .chain(&self.unindexed)
            .filter_map(|&uid| sel.index_of(uid))
            .collect();
        out.sort_unstable();
        out.dedup();
        Some(out)
    }

    /// `search_eval::eval` with the index's answers for indexed messages: `None` where the
    /// message must still be read.
    pub(crate) fn eval(
        &self,
        key: &SearchKey<'_>,
        seq: u32,
        meta: &MessageMeta,
        view: View,
    ) -> Option<bool> {
        if !self.covers(meta.uid) {
            return search_eval::eval(key, seq, meta, view, None);
        }
        self.eval_covered(key, seq, meta, view)
    }

    fn eval_covered(
        &self,
        key: &SearchKey<'_>,
        seq: u32,
        meta: &MessageMeta,
        view: View,
    ) -> Option<bool> {
        match key {
            SearchKey::And(keys) => {
                let mut all = Some(true);
                for k in keys.as_ref() {
                    match self.eval_covered(k, seq, meta, view) {
                        Some(false) => return Some(false),
                        None => all = None,
                        Some(true) => {}
                    }
                }
                all
            }
            SearchKey::Or(a, b) => {
                let x = self.eval_covered(a, seq, meta, view);
                if x == Some(true) {
                    return Some(true);
                }
                match (x, self.eval_covered(b, seq, meta, view)) {
                    (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                }
            }
            SearchKey::Not(k) => self.eval_covered(k, seq, meta, view).map(|b| !b),
            leaf => match self.answer(leaf) {
                Some(a) => {
                    let found = a.uids.binary_search(&meta.uid).is_ok();
                    match (found, a.exact) {
                        (false, _) => Some(false),
                        (true, true) => Some(true),
                        (true, false) => None,
                    }
                }
                None => search_eval::eval(leaf, seq, meta, view, None),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use hermod_common::store::Uid;
    use imap_codec::CommandCodec;
    use imap_codec::decode::Decoder;
    use imap_codec::imap_types::command::CommandBody;
    use imap_codec::imap_types::search::SearchKey;

    use crate::cmd::search_eval::{self, Content, View};
    use crate::testing::Harness;

    /// Messages with what text search must see through: RFC 2047 words, charsets and
    /// transfer encodings, HTML, addresses with comments, quotes, letters whose lower case
    /// is longer than themselves.
    const MESSAGES: [&str; 8] = [
        "From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <jm@example.de>\r\nTo: Team <team@example.org>\r\nSubject: =?utf-8?b?R3LDvMOfZSBhdXMgQmVybGlu?=\r\nX-Tag: blue\r\nMessage-ID: <m1@example.de>\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nS8Okc2VrdWNoZW4gaXN0IGZlcnRpZw==\r\n--b\r\nContent-Type: text/html; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<p>Sch=F6ne Gr=FC=DFe</p>\r\n--b--\r\n",
        "From: <user-from (comment)@ (comment) domain.org>\r\nTo: x@y.org\r\nSubject: Report number 12 on things\r\nMessage-ID: <m2@example.org>\r\n\r\nThe body of the report.\r\n",
        "From: Bob <bob@example.net>\r\nTo: Alice <alice@example.org>\r\nCc: Carol <carol@example.com>\r\nBcc: dave@example.com\r\nSubject: say \"hi\" to Istanbul\r\nMessage-ID: <m3@example.net>\r\n\r\nMeet in \u{130}stanbul at the STRASSE corner.\r\n",
        "From: Eve <eve@example.net>\r\nTo: team@example.org\r\nSubject: Stra\u{df}e and more\r\nX-Tag: red\r\n\r\nnothing to see\r\n",
        "From: Sender 7 <sender7@example.net>\r\nTo: Team 1 <team1@example.org>\r\nSubject: Report number 1 on the state\r\n\r\nReference ref-0000001-q.\r\n",
        "From: Sender 17 <sender17@example.net>\r\nTo: Team 11 <team11@example.org>\r\nSubject: Report number 11 on the state\r\n\r\nReference ref-0000011-q.\r\n",
        "Subject: no from at all\r\n\r\n",
        "From: a@b.c\r\nSubject: =?iso-8859-1?q?Gr=FC=DFe?=\r\nContent-Type: text/html\r\n\r\n<html><body><b>Berlin</b> &amp; Br\u{fc}ssel</body></html>\r\n",
    ];

    const CRITERIA: [&str; 30] = [
        "SUBJECT \"gr\u{fc}\u{df}e\"",
        "SUBJECT berlin",
        "SUBJECT \"number 1\"",
        "SUBJECT \"number 12\"",
        "SUBJECT \"number 1 on\"",
        "SUBJECT ab",
        "SUBJECT \"say \\\"hi\\\"\"",
        "SUBJECT \"stra\u{df}e\"",
        "FROM \"m\u{fc}ller\"",
        "FROM jm@example.de",
        "FROM user-from@domain.org",
        "FROM sender7@example.net",
        "TO team",
        "TO \"team1@example.org\"",
        "CC carol",
        "BCC dave",
        "BODY \"k\u{e4}sekuchen\"",
        "BODY S8OkC2VR",
        "BODY \"sch\u{f6}ne gr\u{fc}\u{df}e\"",
        "TEXT berlin",
        "TEXT \"i\u{307}stanbul\"",
        "TEXT strasse",
        "HEADER X-Tag blu",
        "HEADER Subject berlin",
        "HEADER Message-ID \"<m3@\"",
        "NOT SUBJECT berlin",
        "OR SUBJECT berlin BODY \"sch\u{f6}ne\"",
        "SEEN SUBJECT report",
        "UNSEEN NOT TEXT \"the\"",
        "OR HEADER X-Tag red TEXT \"ref-0000011\"",
    ];

    fn key(criteria: &str) -> SearchKey<'static> {
        let line = format!("a SEARCH {criteria}\r\n");
        let line = crate::extended::quoted_8bit_to_literals(line.as_bytes()).into_owned();
        let (_, cmd) = CommandCodec::default()
            .decode_static(&line)
            .unwrap_or_else(|e| panic!("{criteria}: {e:?}"));
        match cmd.body {
            CommandBody::Search { criteria, .. } => {
                let mut v = criteria.into_inner();
                if v.len() == 1 {
                    v.remove(0)
                } else {
                    SearchKey::And(v.try_into().unwrap())
                }
            }
            _ => panic!(),
        }
    }

    /// What reading every message finds, without the index.
    async fn by_reading(h: &Harness, criteria: &str) -> Vec<Uid> {
        let key = key(criteria);
        let u = h.user().await;
        let snap = u.select("INBOX", true).await.unwrap();
        let view = View {
            count: snap.messages.len() as u32,
            max_uid: snap.messages.last().map_or(0, |m| m.uid),
        };
        let mut out = Vec::new();
        for (i, m) in snap.messages.iter().enumerate() {
            let raw = u.read("INBOX", m.uid).await.unwrap();
            let mut c = Content::new(&raw);
            if search_eval::eval(&key, (i + 1) as u32, m, view, Some(&mut c)) == Some(true) {
                out.push(m.uid);
            }
        }
        out
    }

    fn uids(out: &str) -> Vec<Uid> {
        let line = out
            .lines()
            .find_map(|l| l.strip_prefix("* SEARCH"))
            .unwrap_or_else(|| panic!("no SEARCH in {out}"));
        line.split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn index_answers_are_what_reading_the_messages_finds() {
        let h = Harness::new().await;
        // Half delivered (indexed on the way in), half put on disk by another tool (indexed
        // by the first search that needs them).
        let cur = h
            .store
            .config()
            .data_dir
            .join("mail/example.org/alice/Maildir/cur");
        for (i, m) in MESSAGES.iter().enumerate() {
            if i % 2 == 0 {
                h.deliver("INBOX", m).await;
            } else {
                std::fs::create_dir_all(&cur).unwrap();
                std::fs::write(cur.join(format!("17000000{i:02}.M{i}P1.tool:2,")), m).unwrap();
            }
        }
        let mut s = h.selected("INBOX").await;
        h.run(&mut s, "a STORE 2,5 +FLAGS (\\Seen)\r\n").await;
        let user = h.user().await;
        assert!(!user.text_unindexed("INBOX").await.unwrap().is_empty());
        for round in ["partly indexed", "fully indexed"] {
            for c in CRITERIA {
                let out = h.run(&mut s, &format!("b UID SEARCH {c}\r\n")).await;
                assert!(out.contains("\r\nb OK"), "{c}: {out}");
                assert_eq!(uids(&out), by_reading(&h, c).await, "{c} ({round})");
            }
            // The first search started indexing the rest in the background.
            let mut tries = 0;
            while !user.text_unindexed("INBOX").await.unwrap().is_empty() {
                tries += 1;
                assert!(tries < 500, "the background indexer does not finish");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        // The answers are not all empty or all full: the criteria do select.
        let out = h
            .run(&mut s, "c UID SEARCH SUBJECT \"number 1 on\"\r\n")
            .await;
        assert_eq!(uids(&out).len(), 1, "{out}");
    }
}
