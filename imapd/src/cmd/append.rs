//! APPEND (RFC 3501 section 6.3.11) with APPENDUID (UIDPLUS, RFC 4315), LITERAL+,
//! UTF8=ACCEPT's `UTF8 (~{n}...)` form and MULTIAPPEND (RFC 3502).

use hermod_common::store::{Flag, Flags, StoreError, StoreMode};
use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::flag::Flag as ImapFlag;
use imap_codec::imap_types::mailbox::Mailbox;

use super::store::split_flags;
use crate::date;
use crate::extended::AppendMessage;
use crate::output::Out;
use crate::session::{Reply, Session};

impl Session {
    pub(crate) async fn append(
        &mut self,
        mailbox: &Mailbox<'_>,
        flags: &[ImapFlag<'_>],
        date: Option<&DateTime>,
        message: &LiteralOrLiteral8<'_>,
        _out: &mut Out<'_>,
    ) -> Reply {
        let name = match self.mailbox_name(mailbox) {
            Ok(n) => n,
            Err(r) => return r,
        };
        let (Some(user), Some(account)) = (self.user(), self.account.as_ref()) else {
            return Reply::no("Not logged in");
        };
        let converted;
        let data: &[u8] = match message {
            LiteralOrLiteral8::Literal(l) => l.data(),
            // BINARY (RFC 3516 section 4.4): raw binary parts are stored base64-encoded.
            LiteralOrLiteral8::Literal8(l) => {
                converted = crate::mime::binary::encode_binary_parts(&l.data);
                converted.as_deref().unwrap_or(&l.data)
            }
        };
        if data.is_empty() {
            return Reply::no("Empty message");
        }
        if data.len() as u64 > self.shared.settings.max_literal {
            return Reply::no("Message too large").code("TOOBIG");
        }
        if account.quota_bytes > 0
            && let Err(e) = user
                .check_quota(Some(account.quota_bytes), None, data.len() as u64)
                .await
        {
            return e.into();
        }
        let (system, keywords) = split_flags(flags);
        let internal_date = date.map(|d| d.as_ref().timestamp());
        match user
            .append(&name, data, system, &keywords, internal_date)
            .await
        {
            Ok(a) => {
                Reply::ok("APPEND completed").code(format!("APPENDUID {} {}", a.uidvalidity, a.uid))
            }
            Err(StoreError::NoSuchMailbox(_)) => {
                Reply::no("Mailbox does not exist").code("TRYCREATE")
            }
            Err(e) => e.into(),
        }
    }
}

impl Session {
    /// MULTIAPPEND: all messages or none (RFC 3502); APPENDUID names them all.
    pub(crate) async fn multiappend(
        &mut self,
        raw_mailbox: &[u8],
        messages: Vec<AppendMessage>,
    ) -> Reply {
        let name = match self.decode_name(raw_mailbox) {
            Ok(n) => n,
            Err(r) => return r,
        };
        let (Some(user), Some(account)) = (self.user(), self.account.as_ref()) else {
            return Reply::no("APPEND needs a login first");
        };
        let total: u64 = messages.iter().map(|m| m.data.len() as u64).sum();
        if account.quota_bytes > 0
            && let Err(e) = user
                .check_quota(Some(account.quota_bytes), None, total)
                .await
        {
            return e.into();
        }
        let mut prepared = Vec::with_capacity(messages.len());
        for m in &messages {
            if m.data.is_empty() {
                return Reply::no("Empty message");
            }
            let date = match &m.date {
                Some(d) => match date::parse_date_time(d) {
                    Some(t) => Some(t),
                    None => return Reply::bad("Invalid date-time"),
                },
                None => None,
            };
            let mut system = Flags::EMPTY;
            let mut keywords = Vec::new();
            for f in &m.flags {
                match Flag::from_imap(f) {
                    Some(flag) => system.insert(flag),
                    None if !f.starts_with('\\') => keywords.push(f.clone()),
                    None => {}
                }
            }
            prepared.push((system, keywords, date));
        }
        let mut uids = Vec::new();
        let mut uidvalidity = 0;
        for (m, (system, keywords, date)) in messages.iter().zip(prepared) {
            match user.append(&name, &m.data, system, &keywords, date).await {
                Ok(a) => {
                    uidvalidity = a.uidvalidity;
                    uids.push(a.uid);
                }
                Err(e) => {
                    // Take back what was added, so the command has no effect.
                    if !uids.is_empty() {
                        let deleted = Flags::from_flags(&[Flag::Deleted]);
                        let _ = user
                            .store(&name, &uids, StoreMode::Add, deleted, &[], None)
                            .await;
                        let _ = user.expunge(&name, Some(&uids)).await;
                    }
                    return match e {
                        StoreError::NoSuchMailbox(_) => {
                            Reply::no("Mailbox does not exist").code("TRYCREATE")
                        }
                        e => e.into(),
                    };
                }
            }
        }
        Reply::ok("APPEND completed").code(format!(
            "APPENDUID {uidvalidity} {}",
            crate::sequence::format_ordered(&uids)
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{Harness, message};

    #[tokio::test]
    async fn thunderbird_append_to_sent() {
        let h = Harness::new().await;
        let mut s = h.session(true);
        h.login(&mut s).await;
        let msg = message("sent", "hello");
        let out = h
            .run(
                &mut s,
                &format!("9 append \"Sent\" (\\Seen) {{{}+}}\r\n{msg}\r\n", msg.len()),
            )
            .await;
        assert!(out.starts_with("9 OK [APPENDUID "), "{out}");
        assert!(out.trim_end().ends_with(" 1] APPEND completed"), "{out}");
        let user = h.user().await;
        let snap = user.select("Sent", true).await.unwrap();
        assert_eq!(
            user.read("Sent", 1).await.unwrap(),
            msg.as_bytes(),
            "byte-identical"
        );
        assert!(
            snap.messages[0]
                .flags
                .contains(hermod_common::store::Flag::Seen)
        );
    }

    /// A sent message as Thunderbird 153 saves it to Sent after ENABLE UTF8=ACCEPT: 452
    /// bytes, UTF-8 in the headers.
    pub(crate) fn thunderbird_sent_message() -> Vec<u8> {
        let head = "Message-ID: <6f1c2b7e-3d4a-4b8e-9c1f-2a7d5e8b9c0d@example.org>\r\n\
Date: Thu, 3 Dec 2026 13:00:00 +0000\r\nMIME-Version: 1.0\r\n\
User-Agent: Mozilla Thunderbird\r\nContent-Language: en-US\r\n\
To: bob@example.net\r\nFrom: Alice <alice@example.org>\r\n\
Subject: Grüße aus Zürich\r\nContent-Type: text/plain; charset=UTF-8; format=flowed\r\n\
Content-Transfer-Encoding: 8bit\r\n\r\nHallo Bob, schöne Grüße!\r\n";
        let mut m = head.as_bytes().to_vec();
        while m.len() < 450 {
            m.push(b'.');
        }
        m.extend_from_slice(b"\r\n");
        assert_eq!(m.len(), 452);
        m
    }

    /// RFC 6855 section 4: `UTF8 (~{n+}...)`, exactly as Thunderbird sends it.
    #[tokio::test]
    async fn thunderbird_utf8_append_to_sent() {
        let h = Harness::new().await;
        let mut s = h.session(true);
        h.login(&mut s).await;
        let out = h.run(&mut s, "6 ENABLE UTF8=ACCEPT\r\n").await;
        assert!(out.contains("6 OK"), "{out}");
        let msg = thunderbird_sent_message();
        let mut cmd = b"7 APPEND \"Sent\" (\\Seen) UTF8 (~{452+}\r\n".to_vec();
        cmd.extend_from_slice(&msg);
        cmd.extend_from_slice(b")\r\n");
        let out = h.run_bytes(&mut s, &cmd).await;
        assert!(out.starts_with("7 OK [APPENDUID "), "{out}");
        let user = h.user().await;
        let snap = user.select("Sent", true).await.unwrap();
        assert_eq!(user.read("Sent", 1).await.unwrap(), msg, "byte-identical");
        assert!(
            snap.messages[0]
                .flags
                .contains(hermod_common::store::Flag::Seen)
        );
    }

    /// BINARY's literal8 (RFC 3516): `~{n}` waits for the continuation, `~{n+}` does not.
    #[tokio::test]
    async fn literal8_append() {
        let h = Harness::new().await;
        let mut s = h.session(true);
        h.login(&mut s).await;
        let msg = message("binary", "x");
        let out = h
            .run(
                &mut s,
                &format!("a APPEND Drafts ~{{{}}}\r\n{msg}\r\n", msg.len()),
            )
            .await;
        assert!(out.starts_with("+ "), "{out}");
        assert!(out.contains("a OK [APPENDUID "), "{out}");
        let out = h
            .run(
                &mut s,
                &format!("b APPEND Drafts ~{{{}+}}\r\n{msg}\r\n", msg.len()),
            )
            .await;
        assert!(out.starts_with("b OK [APPENDUID "), "{out}");
        let user = h.user().await;
        user.select("Drafts", true).await.unwrap();
        assert_eq!(user.read("Drafts", 2).await.unwrap(), msg.as_bytes());
    }

    #[tokio::test]
    async fn date_keywords_and_sync_literal() {
        let h = Harness::new().await;
        let mut s = h.selected("INBOX").await;
        let msg = message("dated", "x");
        let out = h
            .run(&mut s, &format!("a APPEND INBOX (\\Flagged $Label1) \"05-Jan-2021 10:00:00 +0100\" {{{}}}\r\n{msg}\r\n", msg.len()))
            .await;
        assert!(out.starts_with("+ Ready"), "{out}");
        assert!(
            out.contains("* 1 EXISTS\r\n"),
            "selected mailbox hears of it: {out}"
        );
        assert!(out.contains("a OK [APPENDUID"), "{out}");
        let out = h.run(&mut s, "b FETCH 1 (FLAGS INTERNALDATE)\r\n").await;
        assert!(out.contains("FLAGS (\\Flagged $Label1 \\Recent)"), "{out}");
        assert!(
            out.contains("INTERNALDATE \"05-Jan-2021 09:00:00 +0000\""),
            "{out}"
        );
    }

    #[tokio::test]
    async fn multiappend_adds_all() {
        let h = Harness::new().await;
        let mut s = h.session(true);
        h.login(&mut s).await;
        let (a, b) = (message("a", "1"), message("b", "2"));
        let out = h
            .run(&mut s, &format!("m APPEND Drafts (\\Draft) {{{}+}}\r\n{a} (\\Seen $X) \"05-Jan-2021 10:00:00 +0100\" {{{}+}}\r\n{b}\r\n", a.len(), b.len()))
            .await;
        assert!(
            out.starts_with("m OK [APPENDUID ") && out.contains(" 1:2] APPEND completed"),
            "{out}"
        );
        let out = h
            .run(
                &mut s,
                "n SELECT Drafts\r\no FETCH 1:2 (FLAGS INTERNALDATE)\r\n",
            )
            .await;
        assert!(out.contains("* 1 FETCH (FLAGS (\\Draft \\Recent)"), "{out}");
        assert!(
            out.contains(
                "* 2 FETCH (FLAGS (\\Seen $X \\Recent) INTERNALDATE \"05-Jan-2021 09:00:00 +0000\")"
            ),
            "{out}"
        );
        let out = h
            .run(
                &mut s,
                &format!(
                    "p APPEND Nope {{{}+}}\r\n{a} {{{}+}}\r\n{b}\r\n",
                    a.len(),
                    b.len()
                ),
            )
            .await;
        assert_eq!(out, "p NO [TRYCREATE] Mailbox does not exist\r\n");
    }

    /// MULTIAPPEND with synchronizing literals: a continuation for each, one APPENDUID set.
    #[tokio::test]
    async fn multiappend_with_sync_literals() {
        let h = Harness::new().await;
        let mut s = h.selected("Drafts").await;
        let (a, b, c) = (message("a", "1"), message("b", "2"), message("c", "3"));
        let out = h
            .run(
                &mut s,
                &format!(
                    "m APPEND Drafts {{{}}}\r\n{a} (\\Seen) {{{}}}\r\n{b} {{{}+}}\r\n{c}\r\n",
                    a.len(),
                    b.len(),
                    c.len()
                ),
            )
            .await;
        assert_eq!(
            out.matches("+ Ready for literal data\r\n").count(),
            2,
            "{out}"
        );
        assert!(out.contains("* 3 EXISTS\r\n"), "{out}");
        assert!(out.contains(" 1:3] APPEND completed\r\n"), "{out}");
        let user = h.user().await;
        assert_eq!(user.read("Drafts", 3).await.unwrap(), c.as_bytes());
    }

    /// An error in any message (bad date, empty message, quota for all of them together,
    /// a literal over the limit) adds none of them.
    #[tokio::test]
    async fn multiappend_all_or_none() {
        let h = Harness::with_settings(crate::session::Settings {
            max_literal: 1_300_000,
            ..Default::default()
        })
        .await;
        let mut s = h.session(true);
        h.login(&mut s).await;
        let a = message("a", "1");
        let big = "x".repeat(600_000);
        let too_big = "x".repeat(1_300_001);
        for (tag, second, want) in [
            (
                "d",
                format!("\"99-Foo-2021 10:00:00 +0000\" {{{}+}}\r\n{a}", a.len()),
                "d BAD",
            ),
            ("e", "{0+}\r\n".to_string(), "e NO"),
            (
                "q",
                format!("{{{}+}}\r\n{big}", big.len()),
                "q NO [OVERQUOTA]",
            ),
            (
                "t",
                format!("{{{}+}}\r\n{too_big}", too_big.len()),
                "t NO [TOOBIG]",
            ),
        ] {
            let first = if tag == "q" { &big } else { &a };
            let out = h
                .run(
                    &mut s,
                    &format!(
                        "{tag} APPEND Drafts {{{}+}}\r\n{first} {second}\r\n",
                        first.len()
                    ),
                )
                .await;
            assert!(out.starts_with(want), "{tag}: {out}");
            let st = h.user().await.status("Drafts").await.unwrap();
            assert_eq!(st.messages, 0, "{tag}: nothing added");
        }
    }

    #[tokio::test]
    async fn missing_mailbox_asks_to_create() {
        let h = Harness::new().await;
        let mut s = h.session(true);
        h.login(&mut s).await;
        let out = h.run(&mut s, "a APPEND Nope {3+}\r\nabc\r\n").await;
        assert_eq!(out, "a NO [TRYCREATE] Mailbox does not exist\r\n");
    }

    #[tokio::test]
    async fn over_quota() {
        let h = Harness::new().await;
        let mut s = h.session(true);
        h.login(&mut s).await;
        let big = "x".repeat(1_100_000);
        let out = h
            .run(
                &mut s,
                &format!("a APPEND INBOX {{{}+}}\r\n{big}\r\n", big.len()),
            )
            .await;
        assert!(out.starts_with("a NO [OVERQUOTA]"), "{out}");
    }
}
