//! The in-process delivery API and the LDA (`hermod deliver`), on Maildir and mbox.

mod support;

use hermod_common::store::SpecialUse;
use hermod_mda::lda::{EX_CANTCREAT, EX_DATAERR, EX_NOUSER, EX_OK};
use hermod_mda::{Delivery, Envelope, TargetOutcome, deliver, deliver_stdin};
use support::*;

fn envelope(sender: &str, rcpts: &[&str]) -> Envelope {
    Envelope {
        sender: sender.into(),
        recipients: rcpts.iter().map(|r| r.to_string()).collect(),
    }
}

#[tokio::test]
async fn deliver_reports_per_recipient_and_returns_remote_alias_targets_as_forwards() {
    let h = maildir().await;
    h.add_user("alice", 0).await;
    h.add_user("dora", 500).await;
    let d = &h.ctx.directory;
    d.add_alias("team@example.org", "alice@example.org")
        .await
        .unwrap();
    d.add_alias("team@example.org", "carol@remote.example")
        .await
        .unwrap();
    let msg = message("api", 1000);
    let results = deliver(
        &h.ctx,
        &envelope(
            "s@remote.example",
            &["team@example.org", "ghost@example.org", "dora@example.org"],
        ),
        &msg,
    )
    .await;
    assert_eq!(results.len(), 3);

    let team = &results[0];
    assert!(team.is_success(), "{:?}", team.reply);
    assert_eq!(
        team.forwards().collect::<Vec<_>>(),
        vec!["carol@remote.example"]
    );
    let delivered: Vec<_> = team
        .targets
        .iter()
        .filter(|t| matches!(t.outcome, TargetOutcome::Delivered { .. }))
        .map(|t| t.address.as_str())
        .collect();
    assert_eq!(delivered, vec!["alice@example.org"]);

    let ghost = &results[1];
    assert!(ghost.is_permanent());
    assert_eq!((ghost.reply.code, ghost.reply.status), (550, [5, 1, 1]));

    let dora = &results[2];
    assert!(dora.is_permanent());
    assert_eq!((dora.reply.code, dora.reply.status), (552, [5, 2, 2]));
    assert_eq!(
        dora.reply.to_string(),
        "552 5.2.2 <dora@example.org>: mailbox full (over quota)"
    );

    let inbox = h.messages("alice", "INBOX").await;
    assert_eq!(inbox.len(), 1);
    assert!(
        inbox[0]
            .starts_with(b"Return-Path: <s@remote.example>\r\nDelivered-To: team@example.org\r\n")
    );
    assert!(h.messages("dora", "INBOX").await.is_empty());

    // A delivered message that comes back to the same address is a loop.
    let again = deliver(
        &h.ctx,
        &envelope("s@remote.example", &["alice@example.org"]),
        &inbox[0],
    )
    .await;
    assert!(again[0].is_success(), "different Delivered-To: no loop");
    let copy = h.messages("alice", "INBOX").await.pop().unwrap();
    let looped = deliver(
        &h.ctx,
        &envelope("s@remote.example", &["alice@example.org"]),
        &copy,
    )
    .await;
    assert_eq!(looped[0].reply.status, [5, 4, 6], "{:?}", looped[0].reply);
}

#[tokio::test]
async fn local_only_delivery_refuses_remote_addresses() {
    let h = maildir().await;
    h.add_user("alice", 0).await;
    h.ctx
        .directory
        .add_alias("out@example.org", "carol@remote.example")
        .await
        .unwrap();
    let local = Delivery::from_context(&h.ctx).local_only();
    assert!(local.check_recipient("alice@example.org").await.is_ok());
    assert!(local.check_recipient("ALICE+x@example.org").await.is_ok());
    for refused in [
        "out@example.org",
        "x@remote.example",
        "ghost@example.org",
        "not an address",
    ] {
        let r = local.check_recipient(refused).await.unwrap_err();
        assert_eq!((r.code, r.status), (550, [5, 1, 1]), "{refused}: {r}");
    }
    // The MTA's delivery accepts the off-site alias (it queues the forward).
    let mta = Delivery::from_context(&h.ctx);
    assert!(mta.check_recipient("out@example.org").await.is_ok());
    assert!(
        mta.check_recipient("x@remote.example").await.is_err(),
        "not ours at all"
    );
}

#[tokio::test]
async fn mbox_delivery_round_trips_from_lines_byte_exactly() {
    let h = mbox().await;
    h.add_user("alice", 0).await;
    h.add_user("bob", 0).await;
    h.store("alice").await.create("Lists", None).await.unwrap();
    let mut msg = message("mbox", 800);
    msg.extend_from_slice(b"From here on\r\n>From quoted\r\n");
    let results = deliver(
        &h.ctx,
        &envelope(
            "s@remote.example",
            &["alice+LISTS@example.org", "bob@example.org"],
        ),
        &msg,
    )
    .await;
    assert!(results.iter().all(|r| r.is_success()), "{results:?}");
    let mut expected =
        b"Return-Path: <s@remote.example>\r\nDelivered-To: bob@example.org\r\n".to_vec();
    expected.extend_from_slice(&msg);
    assert_eq!(h.messages("bob", "INBOX").await, vec![expected]);
    assert_eq!(h.messages("alice", "Lists").await.len(), 1);
    // The spool file of the dev config (`spool/{domain}/{localpart}`), readable by mail tools.
    let spool = std::fs::read(h.path("spool/example.org/bob")).unwrap();
    assert!(spool.starts_with(b"From "));
    assert!(String::from_utf8_lossy(&spool).contains("\r\n>From here on\r\n>>From quoted\r\n"));
}

#[tokio::test]
async fn lda_exit_codes_and_mbox_from_line() {
    let h = harness(|c, _| c.message_size_limit = 5000).await;
    h.add_user("alice", 0).await;
    h.add_user("full", 50).await;
    let piped = b"From sender@remote.example Thu Jan  1 00:00:00 1970\nSubject: lda\n\nbody\n";
    assert_eq!(
        deliver_stdin(&h.ctx, "alice@example.org", None, piped).await,
        EX_OK
    );
    let inbox = h.messages("alice", "INBOX").await;
    assert_eq!(
        inbox,
        vec![b"Return-Path: <sender@remote.example>\nDelivered-To: alice@example.org\nSubject: lda\n\nbody\n".to_vec()]
    );
    // Postfix's local(8) prepends its own Delivered-To before piping: not a loop here.
    let from_postfix = b"Delivered-To: alice@example.org\nSubject: p\n\nbody\n";
    assert_eq!(
        deliver_stdin(&h.ctx, "alice@example.org", None, from_postfix).await,
        EX_OK
    );
    let plain = b"Subject: x\n\nbody\n";
    assert_eq!(
        deliver_stdin(&h.ctx, "alice@example.org", Some("a@b.example"), plain).await,
        EX_OK
    );
    assert_eq!(
        deliver_stdin(&h.ctx, "ghost@example.org", None, plain).await,
        EX_NOUSER
    );
    assert_eq!(
        deliver_stdin(&h.ctx, "x@remote.example", None, plain).await,
        EX_NOUSER
    );
    assert_eq!(
        deliver_stdin(&h.ctx, "full@example.org", None, plain).await,
        EX_CANTCREAT
    );
    let big = vec![b'x'; 6000];
    assert_eq!(
        deliver_stdin(&h.ctx, "alice@example.org", None, &big).await,
        EX_DATAERR
    );
    assert_eq!(h.messages("alice", "INBOX").await.len(), 3);
}

#[tokio::test]
async fn concurrent_deliveries_to_one_mailbox_all_arrive_with_unique_uids() {
    for h in [maildir().await, mbox().await] {
        h.add_user("alice", 0).await;
        let delivery = Delivery::from_context(&h.ctx);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..50 {
            let d = delivery.clone();
            tasks.spawn(async move {
                let msg = message(&format!("c{i}"), 600);
                d.deliver_one("s@remote.example", "alice@example.org", &msg)
                    .await
            });
        }
        let mut uids = Vec::new();
        while let Some(r) = tasks.join_next().await {
            let r = r.unwrap();
            assert!(r.is_success(), "{:?}", r.reply);
            match &r.targets[0].outcome {
                TargetOutcome::Delivered { mailbox, uid } => {
                    assert_eq!(mailbox, "INBOX");
                    uids.push(*uid);
                }
                other => panic!("{other:?}"),
            }
        }
        uids.sort();
        uids.dedup();
        assert_eq!(uids.len(), 50);
        assert_eq!(h.messages("alice", "INBOX").await.len(), 50);
    }
}

/// After a restart the queue re-delivers messages whose outcome it never recorded; with the
/// duplicate check an identical copy already filed is reported, not filed again.
#[tokio::test]
async fn duplicate_check_finds_a_copy_filed_before_a_crash() {
    let h = maildir().await;
    h.add_user("alice", 0).await;
    let msg = message("once", 500);
    let plain = Delivery::from_context(&h.ctx);
    let first = plain
        .deliver_one("s@remote.example", "alice@example.org", &msg)
        .await;
    let Some(TargetOutcome::Delivered { uid: first_uid, .. }) =
        first.targets.first().map(|t| t.outcome.clone())
    else {
        panic!("first delivery failed: {:?}", first.reply);
    };
    let checking = Delivery::from_context(&h.ctx).checking_duplicates();
    let again = checking
        .deliver_one("s@remote.example", "alice@example.org", &msg)
        .await;
    match again.targets.first().map(|t| t.outcome.clone()) {
        Some(TargetOutcome::Delivered { uid, .. }) => assert_eq!(uid, first_uid),
        other => panic!("unexpected {other:?}"),
    }
    let store = h.ctx.store.user("alice", "example.org").await.unwrap();
    assert_eq!(store.status("INBOX").await.unwrap().messages, 1);
    // A different message is filed as usual.
    let other = checking
        .deliver_one(
            "s@remote.example",
            "alice@example.org",
            &message("twice", 500),
        )
        .await;
    assert!(other.is_success());
    assert_eq!(store.status("INBOX").await.unwrap().messages, 2);
}

/// `alice+Sent@` from the internet must not put mail in Sent (or Drafts, Trash, Junk): it
/// lands in INBOX. Ordinary folders take +detail mail; Junk only when the config names it.
#[tokio::test]
async fn plus_addressing_never_files_into_special_folders() {
    let h = maildir().await;
    h.add_user("alice", 0).await;
    let store = h.store("alice").await;
    for (name, special) in [
        ("Sent", Some(SpecialUse::Sent)),
        ("Drafts", Some(SpecialUse::Drafts)),
        ("Trash", Some(SpecialUse::Trash)),
        ("Junk", Some(SpecialUse::Junk)),
        ("Lists", None),
    ] {
        if store.create(name, special).await.is_err() {
            // Already there (created for every new user): give it its special use.
            continue;
        }
    }
    let rcpts = [
        "alice+Sent@example.org",
        "alice+sent@example.org",
        "alice+Drafts@example.org",
        "alice+TRASH@example.org",
        "alice+Junk@example.org",
        "alice+lists@example.org",
    ];
    for rcpt in rcpts {
        let results = deliver(
            &h.ctx,
            &envelope("s@remote.example", &[rcpt]),
            &message(rcpt, 200),
        )
        .await;
        assert!(
            results.iter().all(|r| r.is_success()),
            "{rcpt}: {results:?}"
        );
    }
    for folder in ["Sent", "Drafts", "Trash", "Junk"] {
        assert!(
            h.messages("alice", folder).await.is_empty(),
            "mail filed into {folder}"
        );
    }
    assert_eq!(h.messages("alice", "INBOX").await.len(), 5);
    assert_eq!(h.messages("alice", "Lists").await.len(), 1);
    // The admin may open Junk to plus-addressing by name; Sent stays closed whatever the list.
    let delivery = Delivery::from_context(&h.ctx).with_plus_folders(vec![
        "Junk".into(),
        "Sent".into(),
        "*".into(),
    ]);
    for rcpt in ["alice+junk@example.org", "alice+Sent@example.org"] {
        let results = delivery
            .deliver(&envelope("s@remote.example", &[rcpt]), &message(rcpt, 200))
            .await;
        assert!(
            results.iter().all(|r| r.is_success()),
            "{rcpt}: {results:?}"
        );
    }
    assert_eq!(h.messages("alice", "Junk").await.len(), 1);
    assert!(h.messages("alice", "Sent").await.is_empty());
}

/// The user's active Sieve script decides where a delivery goes, on Maildir and on mbox;
/// what is to be sent (redirect, vacation) comes back to the caller.
#[tokio::test]
async fn sieve_files_discards_and_returns_outbound_actions() {
    for h in [maildir().await, mbox().await] {
        h.add_user("alice", 0).await;
        let scripts = hermod_mda::sieve::store::ScriptStore::new(&h.ctx.config.data_dir);
        scripts
            .put(
                "alice",
                "example.org",
                "main",
                "require [\"fileinto\", \"mailbox\", \"copy\", \"vacation\"];\n\
                 if header :contains \"subject\" \"list\" { fileinto :create \"Lists\"; }\n\
                 elsif header :contains \"subject\" \"drop\" { discard; }\n\
                 elsif header :contains \"subject\" \"fwd\" { redirect :copy \"phone@remote.example\"; }\n\
                 elsif header :contains \"subject\" \"away\" { vacation \"Back soon.\"; }",
            )
            .unwrap();
        scripts.activate("alice", "example.org", "main").unwrap();
        let deliver_subject = |subject: &str| {
            let msg = message(subject, 300);
            let ctx = h.ctx.clone();
            async move {
                let mut r = deliver(
                    &ctx,
                    &envelope("s@remote.example", &["alice@example.org"]),
                    &msg,
                )
                .await;
                r.remove(0)
            }
        };
        let r = deliver_subject("a list message").await;
        assert!(r.is_success());
        assert!(
            matches!(&r.targets[0].outcome, TargetOutcome::Delivered { mailbox, .. } if mailbox == "Lists")
        );
        assert_eq!(h.messages("alice", "Lists").await.len(), 1);

        let r = deliver_subject("drop this").await;
        assert!(r.is_success());
        assert_eq!(r.targets[0].outcome, TargetOutcome::Filtered);

        let r = deliver_subject("fwd this").await;
        assert_eq!(
            r.targets[0].sieve,
            vec![hermod_mda::sieve::Action::Redirect {
                address: "phone@remote.example".into(),
                copy: true
            }]
        );
        let r = deliver_subject("away").await;
        assert!(
            matches!(&r.targets[0].sieve[..], [hermod_mda::sieve::Action::Vacation(v)] if v.to == "s@remote.example")
        );
        // Only "fwd this" and "away" were kept in INBOX.
        assert_eq!(h.messages("alice", "INBOX").await.len(), 2);
    }
}
