use super::*;
use crate::testing::{Harness, message};

fn lit(s: &str) -> String {
    format!("{{{}+}}\r\n{s}", s.len())
}

/// Appends `args` (everything after the mailbox) to `mailbox` and returns the answer.
async fn append(h: &Harness, s: &mut crate::session::Session, mailbox: &str, args: &str) -> String {
    h.run(s, &format!("c APPEND {mailbox} {args}\r\n")).await
}

async fn setup() -> (Harness, crate::session::Session, u32) {
    let h = Harness::new().await;
    let mut s = h.session(true);
    h.login(&mut s).await;
    let first = "From: foo@example.com\r\n\r\nHello world body\r\n";
    let out = append(
        &h,
        &mut s,
        "Drafts",
        &format!("CATENATE (TEXT {})", lit(first)),
    )
    .await;
    assert!(out.starts_with("c OK [APPENDUID "), "{out}");
    let uidvalidity = h.user().await.status("Drafts").await.unwrap().uidvalidity;
    (h, s, uidvalidity)
}

async fn read(h: &Harness, mailbox: &str, uid: u32) -> String {
    let user = h.user().await;
    String::from_utf8(user.read(mailbox, uid).await.unwrap()).unwrap()
}

#[test]
fn parses_mixed_forms() {
    let line =
        b"a APPEND Sent (\\Seen) CATENATE (URL \"/INBOX/;UID=1\" TEXT {2+}\r\nxy) {1+}\r\nz\r\n";
    let Some(Ok(a)) = parse(line) else { panic!() };
    assert_eq!(a.mailbox, b"Sent");
    assert_eq!(a.messages.len(), 2);
    assert_eq!(a.messages[0].flags, vec!["\\Seen".to_string()]);
    assert_eq!(
        a.messages[0].parts,
        vec![
            CatPart::Url(b"/INBOX/;UID=1".to_vec()),
            CatPart::Text(b"xy".to_vec())
        ]
    );
    assert_eq!(a.messages[1].parts, vec![CatPart::Text(b"z".to_vec())]);
    // A body that merely mentions the word is a plain APPEND.
    assert_eq!(parse(b"a APPEND Sent {8+}\r\nCATENATE\r\n"), None);
    assert!(matches!(
        parse(b"a APPEND Sent CATENATE ()\r\n"),
        Some(Err(_))
    ));
    assert!(matches!(
        parse(b"a APPEND Sent CATENATE (TEXT \"x\")\r\n"),
        Some(Err(_))
    ));
}

/// imaptest's catenate: headers and bodies of other messages joined with text.
#[tokio::test]
async fn builds_from_text_and_urls() {
    let (h, mut s, uv) = setup().await;
    let cases = [
        (
            format!(
                "(\\Seen \\Flagged) CATENATE (URL \"/Drafts;UIDVALIDITY={uv}/;UID=1/;SECTION=HEADER\" TEXT {})",
                lit("body1\r\n")
            ),
            "From: foo@example.com\r\n\r\nbody1\r\n",
        ),
        (
            format!(
                "CATENATE (TEXT {} URL \"/Drafts/;uid=1/;section=1\" TEXT {})",
                lit("Subject: x\r\n\r\n"),
                lit("suffix\r\n")
            ),
            "Subject: x\r\n\r\nHello world body\r\nsuffix\r\n",
        ),
        (
            format!(
                "CATENATE (URL \"/Drafts/;UID=1/;PARTIAL=100000.1\" TEXT {})",
                lit("H: foo\r\n\r\nb\r\n")
            ),
            "H: foo\r\n\r\nb\r\n",
        ),
        (
            format!(
                "CATENATE (URL \"/Drafts/;UID=1/;PARTIAL=6.3\" TEXT {})",
                lit("\r\n\r\nb\r\n")
            ),
            "foo\r\n\r\nb\r\n",
        ),
    ];
    for (i, (args, want)) in cases.iter().enumerate() {
        let out = append(&h, &mut s, "INBOX", args).await;
        assert!(
            out.starts_with(&format!(
                "c OK [APPENDUID {} {}]",
                h.user().await.status("INBOX").await.unwrap().uidvalidity,
                i + 1
            )),
            "{args}: {out}"
        );
        assert_eq!(read(&h, "INBOX", (i + 1) as u32).await, *want, "{args}");
    }
    let snap = h.user().await.select("INBOX", true).await.unwrap();
    assert!(
        snap.messages[0]
            .flags
            .contains(hermod_common::store::Flag::Flagged)
    );
}

/// A bad URL anywhere fails the whole command, MULTIAPPEND included: nothing is added.
#[tokio::test]
async fn bad_urls_add_nothing() {
    let (h, mut s, uv) = setup().await;
    for url in [
        format!("/Drafts;UIDVALIDITY={}/;UID=1/;SECTION=HEADER", uv + 1),
        "/Drafts/;UID=99".to_string(),
        "/Nope/;UID=1".to_string(),
        "/Drafts/;UID=1/;SECTION=7".to_string(),
        "/Drafts/;UID=1/;URLAUTH=anonymous:internal:0123".to_string(),
        "imap://mallory@host/Drafts/;UID=1".to_string(),
    ] {
        let args = format!(
            "CATENATE (TEXT {}) CATENATE (TEXT {} URL \"{url}\" TEXT {})",
            lit("a: 1\r\n\r\nx\r\n"),
            lit("h: 1\r\n"),
            lit("\r\nb\r\n")
        );
        let out = append(&h, &mut s, "INBOX", &args).await;
        assert_eq!(
            out,
            format!("c NO [BADURL \"{url}\"] Cannot use this URL\r\n")
        );
    }
    assert_eq!(h.user().await.status("INBOX").await.unwrap().messages, 0);
    // The missing target comes first.
    let out = append(&h, &mut s, "Nope", "CATENATE (URL \"/Drafts/;UID=99\")").await;
    assert_eq!(out, "c NO [TRYCREATE] Mailbox does not exist\r\n");
}

/// With CATENATE and MULTIAPPEND together, APPENDUID names every message.
#[tokio::test]
async fn catenate_with_multiappend_and_selected_mailbox() {
    let (h, mut s, _) = setup().await;
    h.run(&mut s, "s SELECT Drafts\r\n").await;
    let args = format!(
        "CATENATE (URL \";UID=1\") (\\Answered) {} CATENATE (URL \"/Drafts/;UID=1/;SECTION=HEADER\" TEXT {})",
        lit("New: Message\r\n\r\nbody\r\n"),
        lit("second\r\n")
    );
    let out = append(&h, &mut s, "Drafts", &args).await;
    assert!(out.contains("* 4 EXISTS\r\n"), "{out}");
    assert!(out.contains(" 2:4] APPEND completed"), "{out}");
    assert_eq!(read(&h, "Drafts", 2).await, read(&h, "Drafts", 1).await);
    assert_eq!(read(&h, "Drafts", 3).await, "New: Message\r\n\r\nbody\r\n");
    assert_eq!(
        read(&h, "Drafts", 4).await,
        "From: foo@example.com\r\n\r\nsecond\r\n"
    );
}

/// A built message past the size limit is TOOBIG, and nothing is added.
#[tokio::test]
async fn too_big_when_joined() {
    let h = Harness::with_settings(crate::session::Settings {
        max_literal: 1000,
        ..Default::default()
    })
    .await;
    h.deliver("INBOX", &message("big", &"x".repeat(700))).await;
    let mut s = h.session(true);
    h.login(&mut s).await;
    let args = "CATENATE (URL \"/INBOX/;UID=1\" URL \"/INBOX/;UID=1\")";
    let out = append(&h, &mut s, "Drafts", args).await;
    assert_eq!(out, "c NO [TOOBIG] Message too large\r\n");
    assert_eq!(h.user().await.status("Drafts").await.unwrap().messages, 0);
}
