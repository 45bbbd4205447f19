//! Replays what Thunderbird 153 sends (see /work/shared/CRATES.md) against a real listener
//! and checks that no command gets BAD or NO.

mod support;

use support::{start, tls_client};

#[tokio::test]
async fn thunderbird_session_has_no_bad_answers() {
    let server = start().await;
    let user = server.ctx.store.user("alice", "localhost").await.unwrap();
    let plain = "From: Bob <bob@example.net>\r\nTo: alice@localhost\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nDate: Mon, 1 Jun 2020 10:00:00 +0000\r\nMessage-ID: <1@example.net>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHallo!\r\n";
    let html = "From: Carol <carol@example.net>\r\nTo: alice@localhost\r\nSubject: html\r\nMessage-ID: <2@example.net>\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: multipart/alternative; boundary=a\r\n\r\n--a\r\nContent-Type: text/plain\r\n\r\nhi\r\n--a\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n--a--\r\n--b\r\nContent-Type: application/pdf; name=\"x.pdf\"\r\nContent-Disposition: attachment; filename=\"x.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n";
    user.deliver("INBOX", plain.as_bytes()).await.unwrap();
    user.deliver("INBOX", html.as_bytes()).await.unwrap();

    let mut c = tls_client(&server).await;
    let mut transcript = String::new();
    let run = async |c: &mut support::Client<_>, tag: &str, cmd: &str| -> String {
        let out = c.cmd(tag, cmd).await;
        let last = out.lines().last().unwrap_or_default().to_string();
        assert!(last.starts_with(&format!("{tag} OK")), "{cmd} => {out}");
        out
    };
    let mut log = |s: &str| transcript.push_str(s);
    log(&run(
        &mut c,
        "2",
        "ID (\"name\" \"Thunderbird\" \"version\" \"153.7\")",
    )
    .await);
    // Thunderbird turns COMPRESS=DEFLATE on by default: the rest of the session is deflated.
    c.compress().await;
    log(&run(&mut c, "3", "ENABLE UTF8=ACCEPT").await);
    log(&run(&mut c, "4", "namespace").await);
    let out = run(
        &mut c,
        "5",
        "list (subscribed) \"\" \"*\" return (special-use)",
    )
    .await;
    assert!(
        out.contains("\\Sent) \"/\" Sent") && out.contains("\\Trash) \"/\" Trash"),
        "{out}"
    );
    log(&run(&mut c, "6", "list \"\" \"INBOX\"").await);
    for m in ["Sent", "Drafts", "Archive"] {
        let out = run(
            &mut c,
            "7",
            &format!("STATUS \"{m}\" (UIDNEXT MESSAGES UNSEEN RECENT)"),
        )
        .await;
        assert!(out.contains("* STATUS"), "{out}");
    }
    log(&run(&mut c, "8", "getquotaroot \"INBOX\"").await);
    let out = run(&mut c, "9", "select \"INBOX\"").await;
    assert!(out.contains("* 2 EXISTS"), "{out}");
    let out = run(&mut c, "10", "UID fetch 1:* (FLAGS)").await;
    assert!(out.contains("* 2 FETCH (UID 2 FLAGS"), "{out}");
    let out = run(&mut c, "11", "UID fetch 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])").await;
    assert!(
        out.contains("Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?="),
        "{out}"
    );
    let out = run(&mut c, "12", "UID fetch 2 (UID RFC822.SIZE BODYSTRUCTURE)").await;
    assert!(out.contains("\"ALTERNATIVE\""), "{out}");
    assert!(
        out.contains("(\"ATTACHMENT\" (\"FILENAME\" \"x.pdf\"))"),
        "{out}"
    );
    let out = run(
        &mut c,
        "13",
        "UID fetch 2 (UID RFC822.SIZE FLAGS BODY.PEEK[1.1] BODY.PEEK[1.2] BODY.PEEK[2.MIME])",
    )
    .await;
    assert!(out.contains("BODY[1.2] {9}\r\n<p>hi</p>"), "{out}");
    let out = run(&mut c, "14", "UID fetch 1 (BODY.PEEK[TEXT]<0.2048>)").await;
    assert!(out.contains("BODY[TEXT]<0> {8}\r\nHallo!\r\n"), "{out}");
    let out = run(&mut c, "15", "UID fetch 1:2 (UID RFC822.SIZE BODY.PEEK[])").await;
    assert!(
        out.contains(&format!("BODY[] {{{}}}\r\n{plain}", plain.len())),
        "{out}"
    );
    log(&run(&mut c, "16", "uid store 1 +Flags (\\Seen)").await);
    log(&run(&mut c, "17", "uid store 2 +Flags (\\Flagged)").await);
    log(&run(&mut c, "18", "NOOP").await);
    let out = run(&mut c, "19", "UID fetch 3:* (FLAGS)").await;
    assert!(out.contains("UID 2 FLAGS (\\Flagged"), "{out}");
    let out = run(&mut c, "20", "uid move 2 \"Trash\"").await;
    assert!(
        out.contains("[COPYUID ") && out.contains("* 2 EXPUNGE"),
        "{out}"
    );
    let sent = "From: alice@localhost\r\nTo: bob@example.net\r\nSubject: reply\r\n\r\nThanks\r\n";
    let out = run(
        &mut c,
        "21",
        &format!("append \"Sent\" (\\Seen) {{{}+}}\r\n{sent}", sent.len()),
    )
    .await;
    assert!(out.contains("[APPENDUID "), "{out}");
    let draft = "Subject: draft\r\n\r\nwip\r\n";
    log(&run(
        &mut c,
        "22",
        &format!(
            "append \"Drafts\" (\\Draft \\Seen) {{{}+}}\r\n{draft}",
            draft.len()
        ),
    )
    .await);
    c.send("23 IDLE\r\n").await;
    c.read_until("+ ").await;
    user.deliver("INBOX", b"Subject: new\r\n\r\nnew\r\n")
        .await
        .unwrap();
    c.read_until("* 2 EXISTS").await;
    c.send("DONE\r\n").await;
    let out = c.read_until("23 ").await;
    assert!(out.contains("23 OK"), "{out}");
    log(&run(&mut c, "24", "UID fetch 3:* (FLAGS)").await);
    log(&run(&mut c, "25", "logout").await);
    assert!(!transcript.contains(" BAD "), "{transcript}");
    server.shutdown.trigger();
}
