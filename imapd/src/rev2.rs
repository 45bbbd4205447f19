//! IMAP4rev2 (RFC 9051) beside IMAP4rev1: both are advertised, and `ENABLE IMAP4rev2`
//! switches a session to rev2's semantics (RFC 9051 appendix E), which live where each
//! command is handled:
//!
//! - no `\Recent` flag and no `RECENT` responses (`select`, `Session::sync`); such a
//!   session leaves new messages recent for rev1 sessions;
//! - SELECT sends `* LIST () "/" name` instead of RECENT and `OK [UNSEEN]`, and
//!   `OK [CLOSED]` when it leaves a selected mailbox (`select`);
//! - every SEARCH answers with ESEARCH (`search`);
//! - mailbox names are UTF-8, as after UTF8=ACCEPT (`enable`).
//!
//! What rev2 requires and rev1 sessions get too: ESEARCH, SEARCHRES (`searchres`),
//! LIST-EXTENDED with `\NonExistent` and CHILDINFO, `\Subscribed` only when asked for,
//! LIST-STATUS, STATUS DELETED and SIZE, BINARY (`cmd/binary`), UIDPLUS, MOVE, UNSELECT,
//! NAMESPACE, SPECIAL-USE, LITERAL+, IDLE, ENABLE, SASL-IR, and a UID in every untagged
//! FETCH answering a UID command. A session that never enables rev2 behaves as before.

#[cfg(test)]
mod tests {
    use crate::testing::{Harness, message};

    #[tokio::test]
    async fn rev1_session_keeps_rev1_answers() {
        let h = Harness::new().await;
        h.deliver("INBOX", &message("one", "1")).await;
        let mut s = h.session(true);
        let out = h.login(&mut s).await;
        assert!(out.contains("IMAP4rev1 IMAP4rev2 "), "{out}");
        let out = h.run(&mut s, "a SELECT INBOX\r\n").await;
        assert!(
            out.contains("* 1 RECENT\r\n") && out.contains("[UNSEEN 1]"),
            "{out}"
        );
        assert!(!out.contains("* LIST"), "{out}");
        let out = h.run(&mut s, "b SEARCH ALL\r\nc FETCH 1 FLAGS\r\n").await;
        assert!(out.starts_with("* SEARCH 1\r\n"), "{out}");
        assert!(out.contains("FLAGS (\\Recent)"), "{out}");
        let out = h.run(&mut s, "d SELECT INBOX\r\n").await;
        assert!(!out.contains("CLOSED"), "{out}");
    }

    #[tokio::test]
    async fn enable_imap4rev2_switches_semantics() {
        let h = Harness::new().await;
        h.deliver("INBOX", &message("one", "1")).await;
        let mut s = h.session(true);
        h.login(&mut s).await;
        let out = h.run(&mut s, "e enable imap4rev2\r\n").await;
        assert_eq!(out, "* ENABLED IMAP4rev2\r\ne OK ENABLE completed\r\n");
        let out = h.run(&mut s, "a SELECT INBOX\r\n").await;
        assert!(!out.contains("RECENT") && !out.contains("UNSEEN"), "{out}");
        assert!(
            out.contains("* 1 EXISTS\r\n* LIST () \"/\" INBOX\r\n"),
            "{out}"
        );
        let out = h.run(&mut s, "b FETCH 1 FLAGS\r\n").await;
        assert_eq!(out, "* 1 FETCH (FLAGS ())\r\nb OK FETCH completed\r\n");
        let out = h
            .run(&mut s, "c SEARCH ALL\r\nd UID SEARCH NOT ALL\r\n")
            .await;
        assert_eq!(
            out,
            "* ESEARCH (TAG \"c\") ALL 1\r\nc OK SEARCH completed\r\n\
             * ESEARCH (TAG \"d\") UID\r\nd OK UID SEARCH completed\r\n"
        );
        // New mail: EXISTS without RECENT, and still \Recent for a rev1 session.
        let msg = message("two", "2");
        let out = h
            .run(
                &mut s,
                &format!("f APPEND INBOX {{{}+}}\r\n{msg}\r\n", msg.len()),
            )
            .await;
        assert!(out.starts_with("* 2 EXISTS\r\nf OK [APPENDUID"), "{out}");
        let mut old = h.selected("INBOX").await;
        let out = h.run(&mut old, "g FETCH 2 FLAGS\r\n").await;
        assert!(out.contains("FLAGS (\\Recent)"), "{out}");
        // UTF-8 mailbox names, as after UTF8=ACCEPT.
        let out = h
            .run(&mut s, "h CREATE \"Grüße\"\r\ni LIST \"\" G*\r\n")
            .await;
        assert!(out.contains("\"/\" \"Grüße\"\r\n"), "{out}");
        let out = h.run(&mut s, "j SELECT INBOX\r\n").await;
        assert!(out.starts_with("* OK [CLOSED]"), "{out}");
    }

    #[tokio::test]
    async fn searchres_saves_and_dollar_uses() {
        let h = Harness::new().await;
        for i in 1..=4 {
            h.deliver("INBOX", &message(&format!("m{i}"), "x")).await;
        }
        let mut s = h.selected("INBOX").await;
        let out = h.run(&mut s, "a SEARCH RETURN (SAVE) 2:3\r\n").await;
        assert_eq!(out, "a OK SEARCH completed\r\n");
        let out = h.run(&mut s, "b FETCH $ (UID)\r\nc UID SEARCH $\r\n").await;
        assert_eq!(
            out,
            "* 2 FETCH (UID 2)\r\n* 3 FETCH (UID 3)\r\nb OK FETCH completed\r\n\
             * SEARCH 2 3\r\nc OK UID SEARCH completed\r\n"
        );
        // Expunged messages leave the saved result.
        let out = h
            .run(
                &mut s,
                "d STORE 2 +FLAGS.SILENT (\\Deleted)\r\ne EXPUNGE\r\nf FETCH $ UID\r\n",
            )
            .await;
        assert!(
            out.ends_with("* 2 FETCH (UID 3)\r\nf OK FETCH completed\r\n"),
            "{out}"
        );
        // MIN alone saves only the first match, and returns it.
        let out = h
            .run(
                &mut s,
                "g SEARCH RETURN (SAVE MIN) ALL\r\nh UID FETCH $ UID\r\n",
            )
            .await;
        assert_eq!(
            out,
            "* ESEARCH (TAG \"g\") MIN 1\r\ng OK SEARCH completed\r\n\
             * 1 FETCH (UID 1)\r\nh OK UID FETCH completed\r\n"
        );
        // An empty result: nothing, with OK; a new SELECT forgets the result.
        let out = h
            .run(
                &mut s,
                "i SEARCH RETURN (SAVE) DELETED\r\nj FETCH $ UID\r\n",
            )
            .await;
        assert_eq!(out, "i OK SEARCH completed\r\nj OK UID FETCH completed\r\n");
        h.run(&mut s, "k SEARCH RETURN (SAVE) ALL\r\nl SELECT INBOX\r\n")
            .await;
        let out = h.run(&mut s, "m SEARCH $\r\n").await;
        assert_eq!(out, "* SEARCH\r\nm OK SEARCH completed\r\n");
    }
}
