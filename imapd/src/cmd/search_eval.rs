//! SEARCH key evaluation over one message (RFC 3501 section 6.4.4).
//!
//! Evaluation is three-valued: with only the index metadata a key may be undecided (`None`),
//! and only then is the message read and parsed. Text keys match case-insensitively on
//! decoded text: RFC 2047 words in headers, transfer encodings and charsets in bodies.

use hermod_common::search_text;
use hermod_common::store::{Flag, MessageMeta};
use imap_codec::imap_types::core::AString;
use imap_codec::imap_types::search::SearchKey;
use mail_parser::MessageParser;

use crate::date;
use crate::mime::header;
use crate::sequence;

/// What a key needs to know about the mailbox: `*` for sequence numbers and UIDs.
#[derive(Debug, Clone, Copy)]
pub struct View {
    pub count: u32,
    pub max_uid: u32,
}

/// A message's content, parsed on first use.
pub struct Content<'a> {
    raw: &'a [u8],
    headers: Option<Vec<(String, String)>>,
    /// Address fields as parsed: lower-case field name, `name <local@domain>` in lower case.
    addresses: Option<Vec<(String, String)>>,
    body: Option<String>,
    sent_day: Option<Option<i64>>,
}

impl<'a> Content<'a> {
    pub fn new(raw: &'a [u8]) -> Self {
        Content {
            raw,
            headers: None,
            addresses: None,
            body: None,
            sent_day: None,
        }
    }

    /// Top-level header fields: lower-case name, lower-case decoded value.
    fn headers(&mut self) -> &[(String, String)] {
        let raw = self.raw;
        self.headers
            .get_or_insert_with(|| search_text::header_values(raw))
    }

    /// The decoded text of every text part, lower case.
    fn body(&mut self) -> &str {
        let raw = self.raw;
        self.body.get_or_insert_with(|| search_text::body_text(raw))
    }

    /// The day of the Date header (as written, its own time zone).
    fn sent_day(&mut self) -> Option<i64> {
        let raw = self.raw;
        *self.sent_day.get_or_insert_with(|| {
            let block = &raw[..header::body_start(raw)];
            let msg = MessageParser::new()
                .with_date_headers()
                .parse_headers(block)?;
            let d = msg.date()?;
            Some(date::days_from_civil(
                i64::from(d.year),
                u32::from(d.month),
                u32::from(d.day),
            ))
        })
    }

    /// FROM, TO, CC, BCC: the raw field, or one of its addresses as parsed, so comments,
    /// spaces and quoting in the field do not hide `user@domain.org`.
    fn address_contains(&mut self, name: &str, needle: &str) -> bool {
        if self.header_contains(name, needle) {
            return true;
        }
        let raw = self.raw;
        self.addresses
            .get_or_insert_with(|| search_text::address_values(raw))
            .iter()
            .any(|(n, v)| n == name && v.contains(needle))
    }

    fn header_contains(&mut self, name: &str, needle: &str) -> bool {
        let name = name.to_lowercase();
        self.headers()
            .iter()
            .any(|(n, v)| *n == name && v.contains(needle))
    }
}

/// A search string as the evaluator compares it: lower case.
pub(crate) fn text(s: &AString<'_>) -> String {
    let bytes: &[u8] = match s {
        AString::Atom(a) => a.inner().as_bytes(),
        AString::String(s) => s.as_ref(),
    };
    String::from_utf8_lossy(bytes).to_lowercase()
}

/// Whether a key needs the message content (headers or body) at all.
pub fn needs_content(key: &SearchKey<'_>) -> bool {
    use SearchKey::*;
    match key {
        And(keys) => keys.as_ref().iter().any(needs_content),
        Not(k) => needs_content(k),
        Or(a, b) => needs_content(a) || needs_content(b),
        Bcc(_) | Body(_) | Cc(_) | From(_) | Header(..) | Subject(_) | Text(_) | To(_)
        | SentBefore(_) | SentOn(_) | SentSince(_) => true,
        _ => false,
    }
}

/// Evaluates `key` for the message numbered `seq`. Returns `None` when the answer depends
/// on content and `content` is `None`.
pub fn eval(
    key: &SearchKey<'_>,
    seq: u32,
    meta: &MessageMeta,
    view: View,
    mut content: Option<&mut Content<'_>>,
) -> Option<bool> {
    use SearchKey::*;
    let flag = |f: Flag| Some(meta.flags.contains(f));
    let day = date::utc_day(meta.internal_date);
    match key {
        And(keys) => {
            let mut all = Some(true);
            for k in keys.as_ref() {
                match eval(k, seq, meta, view, content.as_deref_mut()) {
                    Some(false) => return Some(false),
                    None => all = None,
                    Some(true) => {}
                }
            }
            all
        }
        Or(a, b) => {
            let x = eval(a, seq, meta, view, content.as_deref_mut());
            if x == Some(true) {
                return Some(true);
            }
            let y = eval(b, seq, meta, view, content.as_deref_mut());
            match (x, y) {
                (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            }
        }
        Not(k) => eval(k, seq, meta, view, content).map(|b| !b),
        SequenceSet(set) => Some(sequence::contains(set, seq, view.count)),
        Uid(set) => Some(sequence::contains(set, meta.uid, view.max_uid)),
        All => Some(true),
        Answered => flag(Flag::Answered),
        Unanswered => flag(Flag::Answered).map(|b| !b),
        Deleted => flag(Flag::Deleted),
        Undeleted => flag(Flag::Deleted).map(|b| !b),
        Draft => flag(Flag::Draft),
        Undraft => flag(Flag::Draft).map(|b| !b),
        Flagged => flag(Flag::Flagged),
        Unflagged => flag(Flag::Flagged).map(|b| !b),
        Seen => flag(Flag::Seen),
        Unseen => flag(Flag::Seen).map(|b| !b),
        Recent => Some(meta.recent),
        New => Some(meta.recent && !meta.flags.contains(Flag::Seen)),
        Old => Some(!meta.recent),
        Keyword(k) => Some(has_keyword(meta, k.inner())),
        Unkeyword(k) => Some(!has_keyword(meta, k.inner())),
        Larger(n) => Some(meta.size > u64::from(*n)),
        Smaller(n) => Some(meta.size < u64::from(*n)),
        Before(d) => Some(day < date::search_day(d.as_ref())),
        On(d) => Some(day == date::search_day(d.as_ref())),
        Since(d) => Some(day >= date::search_day(d.as_ref())),
        ModSequence { modseq, .. } => Some(meta.modseq >= *modseq),
        SentBefore(d) | SentOn(d) | SentSince(d) => {
            let c = content?;
            let sent = c.sent_day().unwrap_or(day);
            let want = date::search_day(d.as_ref());
            Some(match key {
                SentBefore(_) => sent < want,
                SentOn(_) => sent == want,
                _ => sent >= want,
            })
        }
        Bcc(s) => Some(content?.address_contains("bcc", &text(s))),
        Cc(s) => Some(content?.address_contains("cc", &text(s))),
        From(s) => Some(content?.address_contains("from", &text(s))),
        To(s) => Some(content?.address_contains("to", &text(s))),
        Subject(s) => Some(content?.header_contains("subject", &text(s))),
        Header(name, value) => {
            let name = text(name);
            Some(content?.header_contains(&name, &text(value)))
        }
        Body(s) => {
            let needle = text(s);
            Some(content?.body().contains(&needle))
        }
        Text(s) => {
            let needle = text(s);
            let c = content?;
            Some(c.headers().iter().any(|(_, v)| v.contains(&needle)) || c.body().contains(&needle))
        }
    }
}

fn has_keyword(meta: &MessageMeta, k: &str) -> bool {
    meta.keywords.iter().any(|m| m.eq_ignore_ascii_case(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermod_common::store::Flags;
    use imap_codec::CommandCodec;
    use imap_codec::decode::Decoder;
    use imap_codec::imap_types::command::CommandBody;

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

    fn meta() -> MessageMeta {
        MessageMeta {
            uid: 7,
            flags: Flags::from_flags(&[Flag::Seen, Flag::Flagged]),
            keywords: vec!["$Forwarded".into()],
            modseq: 12,
            size: 2000,
            internal_date: 1_600_000_000, // 2020-09-13
            recent: false,
        }
    }

    const VIEW: View = View {
        count: 3,
        max_uid: 9,
    };

    const MSG: &str = "From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <jm@example.de>\r\nTo: Team <team@example.org>\r\nSubject: =?utf-8?b?R3LDvMOfZSBhdXMgQmVybGlu?=\r\nDate: Mon, 1 Jun 2020 10:00:00 +0200\r\nX-Tag: blue\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nS8Okc2VrdWNoZW4gaXN0IGZlcnRpZw==\r\n--b\r\nContent-Type: text/html; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<p>Sch=F6ne Gr=FC=DFe</p>\r\n--b--\r\n";

    fn run(criteria: &str) -> bool {
        let mut c = Content::new(MSG.as_bytes());
        eval(&key(criteria), 2, &meta(), VIEW, Some(&mut c)).unwrap()
    }

    #[test]
    fn flags_sizes_keywords_and_sets() {
        for (c, want) in [
            ("SEEN", true),
            ("UNSEEN", false),
            ("FLAGGED", true),
            ("DELETED", false),
            ("UNDELETED", true),
            ("ANSWERED", false),
            ("KEYWORD $forwarded", true),
            ("UNKEYWORD $Junk", true),
            ("LARGER 1999", true),
            ("SMALLER 2000", false),
            ("2", true),
            ("1,3", false),
            ("2:*", true),
            ("UID 7", true),
            ("UID 8:*", false),
            ("NOT SEEN", false),
            ("OR DELETED FLAGGED", true),
            ("SEEN NOT FLAGGED", false),
            ("MODSEQ 12", true),
            ("MODSEQ 13", false),
            ("ALL", true),
            ("OLD", true),
            ("NEW", false),
        ] {
            assert_eq!(eval(&key(c), 2, &meta(), VIEW, None), Some(want), "{c}");
        }
    }

    #[test]
    fn dates() {
        for (c, want) in [
            ("SINCE 13-Sep-2020", true),
            ("SINCE 14-Sep-2020", false),
            ("ON 13-Sep-2020", true),
            ("BEFORE 13-Sep-2020", false),
            ("BEFORE 14-Sep-2020", true),
        ] {
            assert_eq!(eval(&key(c), 2, &meta(), VIEW, None), Some(want), "{c}");
        }
        assert!(run("SENTON 1-Jun-2020"));
        assert!(run("SENTBEFORE 2-Jun-2020"));
        assert!(!run("SENTSINCE 2-Jun-2020"));
    }

    #[test]
    fn content_keys_are_undecided_without_content() {
        assert_eq!(eval(&key("SUBJECT x"), 2, &meta(), VIEW, None), None);
        // ...unless metadata decides.
        assert_eq!(
            eval(&key("DELETED SUBJECT x"), 2, &meta(), VIEW, None),
            Some(false)
        );
        assert_eq!(
            eval(&key("OR SEEN SUBJECT x"), 2, &meta(), VIEW, None),
            Some(true)
        );
    }

    #[test]
    fn decoded_headers() {
        assert!(run("FROM \"müller\""));
        assert!(run("FROM jm@example.de"));
        assert!(run("TO team"));
        assert!(!run("CC team"));
        assert!(run("CHARSET UTF-8 SUBJECT \"grüße\""));
        assert!(run("SUBJECT BERLIN"));
        assert!(run("HEADER X-Tag blu"));
        assert!(run("HEADER X-Tag \"\""));
        assert!(!run("HEADER X-Other \"\""));
    }

    /// imaptest's search-addresses: an address written with comments and spaces matches
    /// its plain form.
    #[test]
    fn addresses_match_as_parsed() {
        for from in [
            "user-from@domain.org",
            "RealFrom <user-from@domain.org>",
            "<user-from (comment)@ (comment) domain.org>",
            "user-from@domain.org (RealFrom)",
        ] {
            let msg = format!("From: {from}\r\nTo: x@y.org\r\n\r\nbody\r\n");
            let mut c = Content::new(msg.as_bytes());
            let found = eval(
                &key("FROM user-from@domain.org"),
                2,
                &meta(),
                VIEW,
                Some(&mut c),
            );
            assert_eq!(found, Some(true), "{from}");
        }
        let msg = "From: user-from1@domain.org, user-from2@domain.org\r\n\r\n";
        let mut c = Content::new(msg.as_bytes());
        let found = eval(
            &key("FROM user-from@domain.org"),
            2,
            &meta(),
            VIEW,
            Some(&mut c),
        );
        assert_eq!(found, Some(false));
    }

    #[test]
    fn decoded_bodies_not_raw_base64() {
        assert!(run("BODY \"käsekuchen\""));
        assert!(!run("BODY S8OkC2VR"), "raw base64 must not match");
        assert!(
            run("BODY \"schöne grüße\""),
            "latin-1 quoted-printable html"
        );
        assert!(run("TEXT berlin"));
        assert!(run("TEXT \"käsekuchen\""));
        assert!(!run("BODY berlin"), "BODY does not search headers");
    }
}
