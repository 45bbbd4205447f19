//! Store tests against real files in a temporary data directory.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;

fn message(i: usize) -> Vec<u8> {
    format!(
        "From: a@example.org\r\nTo: b@example.org\r\nSubject: message {i}\r\n\r\nbody of {i}\r\n"
    )
    .into_bytes()
}

/// STORE +FLAGS on messages of the INBOX (no keywords).
async fn add_flags(u: &UserStore, uids: &[Uid], flags: &[Flag]) -> StoreResult {
    u.store(
        "INBOX",
        uids,
        StoreMode::Add,
        Flags::from_flags(flags),
        &[],
        None,
    )
    .await
    .unwrap()
}

fn maildir_store(dir: &Path) -> Store {
    Store::new(StoreConfig::maildir(dir))
}

fn mbox_store(dir: &Path) -> Store {
    Store::new(StoreConfig::mbox(dir, "spool/{localpart}"))
}

fn stores(dir: &Path) -> Vec<(&'static str, Store)> {
    vec![
        ("maildir", maildir_store(&dir.join("m"))),
        ("mbox", mbox_store(&dir.join("b"))),
    ]
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn inbox_dir(store: &Store) -> PathBuf {
    store
        .config()
        .data_dir
        .join("mail/example.org/alice/Maildir")
}

#[tokio::test]
async fn first_open_creates_special_use_folders_subscribed() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, store) in stores(tmp.path()) {
        let u = store.user("alice", "Example.ORG").await.unwrap();
        let list = u.list().await.unwrap();
        let names: Vec<&str> = list.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            ["INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"],
            "{kind}"
        );
        assert!(
            list.iter()
                .all(|m| m.subscribed && !m.noselect && !m.has_children)
        );
        let sent = list.iter().find(|m| m.name == "Sent").unwrap();
        assert_eq!(sent.special_use, Some(SpecialUse::Sent));
        assert!(u.dir().ends_with("mail/example.org/alice"));
    }
    assert!(
        tmp.path()
            .join("m/mail/example.org/alice/Maildir/.Sent/cur")
            .is_dir()
    );
    assert!(
        tmp.path()
            .join("b/mail/example.org/alice/mbox/Sent")
            .is_file()
    );
    assert!(tmp.path().join("b/spool/alice").is_file());
}

#[tokio::test]
async fn deliver_select_read_round_trip_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, store) in stores(tmp.path()) {
        let u = store.user("alice", "example.org").await.unwrap();
        let m1 = message(1);
        let m2 = b"Subject: no final newline\n\nlast line".to_vec();
        let u1 = u.deliver("inbox", &m1).await.unwrap();
        let u2 = u.deliver("INBOX", &m2).await.unwrap();
        assert_eq!((u1, u2), (1, 2), "{kind}");
        assert_eq!(u.read("INBOX", u1).await.unwrap(), m1, "{kind}");
        assert_eq!(u.read("INBOX", u2).await.unwrap(), m2, "{kind}");
        let snap = u.select("INBOX", false).await.unwrap();
        assert_eq!(snap.uidnext, 3);
        assert_eq!(snap.messages.len(), 2);
        assert_eq!(snap.messages[0].size, m1.len() as u64);
        assert!(snap.messages.iter().all(|m| m.recent && m.flags.is_empty()));
        // \Recent belongs to the first session only.
        let again = u.select("INBOX", false).await.unwrap();
        assert!(again.messages.iter().all(|m| !m.recent), "{kind}");
        let st = u.status("INBOX").await.unwrap();
        assert_eq!(
            (st.messages, st.unseen, st.recent, st.uidnext),
            (2, 2, 0, 3)
        );
        assert_eq!(st.size, (m1.len() + m2.len()) as u64);
        assert!(matches!(
            u.read("INBOX", 99).await,
            Err(StoreError::NoSuchMessage(99))
        ));
        assert!(matches!(
            u.deliver("Nope", &m1).await,
            Err(StoreError::NoSuchMailbox(_))
        ));
        let q = u.quota_usage().await.unwrap();
        assert_eq!(q.messages, 2);
        assert!(matches!(
            u.check_quota(Some(q.bytes + 10), None, 11).await,
            Err(StoreError::OverQuota(_))
        ));
        u.check_quota(Some(q.bytes + 10), Some(3), 10)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn flag_changes_show_in_maildir_file_names_and_modseq() {
    let tmp = tempfile::tempdir().unwrap();
    let store = maildir_store(tmp.path());
    let u = store.user("alice", "example.org").await.unwrap();
    let uid = u.deliver("INBOX", &message(1)).await.unwrap();
    let dir = inbox_dir(&store);
    assert_eq!(files_in(&dir.join("new")).len(), 1);
    let before = u.select("INBOX", true).await.unwrap().highest_modseq;

    let seen = Flags::from_flags(&[Flag::Seen, Flag::Flagged]);
    let r = u
        .store(
            "INBOX",
            &[uid],
            StoreMode::Add,
            seen,
            &["$Forwarded".into(), "work".into()],
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.changed, vec![uid]);
    assert!(r.messages[0].modseq > before);
    assert!(files_in(&dir.join("new")).is_empty());
    let cur = files_in(&dir.join("cur"));
    assert_eq!(cur.len(), 1);
    assert!(cur[0].ends_with(":2,FPS"), "{cur:?}");

    // Same flags again: no change, no new modseq.
    let again = add_flags(&u, &[uid], &[Flag::Seen]).await;
    assert!(again.changed.is_empty());
    assert_eq!(again.messages[0].modseq, r.messages[0].modseq);

    // UNCHANGEDSINCE older than the message's modseq fails.
    let failed = u
        .store(
            "INBOX",
            &[uid],
            StoreMode::Remove,
            Flags::from_flags(&[Flag::Seen]),
            &[],
            Some(before),
        )
        .await
        .unwrap();
    assert_eq!(failed.failed, vec![uid]);
    assert!(failed.messages.is_empty());

    let r = u
        .store(
            "INBOX",
            &[uid],
            StoreMode::Replace,
            Flags::from_flags(&[Flag::Answered, Flag::Draft, Flag::Deleted]),
            &["work".into()],
            Some(r.messages[0].modseq),
        )
        .await
        .unwrap();
    assert_eq!(r.messages[0].keywords, vec!["work".to_string()]);
    assert!(files_in(&dir.join("cur"))[0].ends_with(":2,DRT"));
    assert_eq!(u.read("INBOX", uid).await.unwrap(), message(1));
    let snap = u.select("INBOX", true).await.unwrap();
    assert_eq!(
        snap.messages[0].flags,
        Flags::from_flags(&[Flag::Answered, Flag::Draft, Flag::Deleted])
    );
    let ch = u.changes_since("INBOX", before).await.unwrap();
    assert_eq!(ch.changed.len(), 1);
    assert!(matches!(
        u.store(
            "INBOX",
            &[uid],
            StoreMode::Add,
            Flags::EMPTY,
            &["bad word".into()],
            None
        )
        .await,
        Err(StoreError::Cannot(_))
    ));
}

#[tokio::test]
async fn expunge_then_deliver_never_reuses_uids_also_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    for kind in ["maildir", "mbox"] {
        let dir = tmp.path().join(kind);
        let open = || {
            if kind == "maildir" {
                maildir_store(&dir)
            } else {
                mbox_store(&dir)
            }
        };
        let store = open();
        let u = store.user("alice", "example.org").await.unwrap();
        for i in 0..3 {
            u.deliver("INBOX", &message(i)).await.unwrap();
        }
        let del = Flags::from_flags(&[Flag::Deleted]);
        u.store("INBOX", &[2, 3], StoreMode::Add, del, &[], None)
            .await
            .unwrap();
        let before = u.select("INBOX", true).await.unwrap().highest_modseq;
        assert_eq!(u.expunge("INBOX", Some(&[3])).await.unwrap(), vec![3]);
        assert_eq!(u.expunge("INBOX", None).await.unwrap(), vec![2]);
        let ch = u.changes_since("INBOX", before).await.unwrap();
        assert_eq!(ch.vanished, vec![2, 3], "{kind}");
        assert_eq!(u.deliver("INBOX", &message(9)).await.unwrap(), 4, "{kind}");
        assert_eq!(u.read("INBOX", 1).await.unwrap(), message(0), "{kind}");
        assert_eq!(u.read("INBOX", 4).await.unwrap(), message(9), "{kind}");
        u.store("INBOX", &[4], StoreMode::Add, del, &[], None)
            .await
            .unwrap();
        u.expunge("INBOX", None).await.unwrap();
        let uidvalidity = u.select("INBOX", true).await.unwrap().uidvalidity;
        drop(u);
        drop(store);

        // A restart: a new Store over the same directory.
        let store = open();
        let u = store.user("alice", "example.org").await.unwrap();
        let snap = u.select("INBOX", true).await.unwrap();
        assert_eq!(snap.uidvalidity, uidvalidity, "{kind}");
        assert_eq!(
            snap.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(u.deliver("INBOX", &message(10)).await.unwrap(), 5, "{kind}");
        assert_eq!(u.read("INBOX", 1).await.unwrap(), message(0), "{kind}");
    }
}

#[tokio::test]
async fn after_a_reboot_lost_index_commits_cannot_bring_uids_back() {
    let tmp = tempfile::tempdir().unwrap();
    let store = maildir_store(tmp.path());
    let u = store.user("alice", "example.org").await.unwrap();
    for i in 0..5 {
        u.deliver("INBOX", &message(i)).await.unwrap();
    }
    let index = u.dir().join("index.sqlite");
    drop(u);
    drop(store);
    // Simulate a power loss that dropped the last three commits (rows and counters), and a
    // new boot id.
    {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", index.display()))
            .await
            .unwrap();
        for sql in [
            "DELETE FROM message WHERE uid >= 3",
            "UPDATE mailbox SET uidnext = 3 WHERE name = 'INBOX'",
            "UPDATE meta SET tval = 'another-boot' WHERE key = 'boot_id'",
        ] {
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
    }
    let store = maildir_store(tmp.path());
    let u = store.user("alice", "example.org").await.unwrap();
    let snap = u.select("INBOX", true).await.unwrap();
    let uids: Vec<u32> = snap.messages.iter().map(|m| m.uid).collect();
    assert_eq!(uids.len(), 5);
    assert_eq!(&uids[..2], &[1, 2]);
    assert!(uids[2..].iter().all(|u| *u > 5), "{uids:?}");
}

#[tokio::test]
async fn tmp_leftovers_of_a_crash_stay_invisible() {
    let tmp = tempfile::tempdir().unwrap();
    let store = maildir_store(tmp.path());
    let u = store.user("alice", "example.org").await.unwrap();
    let dir = inbox_dir(&store);
    // A crash between write and rename leaves a file in tmp/. (Removal after 36 hours,
    // judged by ctime, is tested in `maildir`: a test cannot age a ctime.)
    std::fs::write(dir.join("tmp/123.M1P1.host,S=4"), b"half").unwrap();
    let uid = u.deliver("INBOX", &message(1)).await.unwrap();
    assert_eq!(uid, 1);
    let snap = u.select("INBOX", false).await.unwrap();
    assert_eq!(snap.messages.len(), 1);
    assert_eq!(u.read("INBOX", 1).await.unwrap(), message(1));
    assert!(dir.join("tmp/123.M1P1.host,S=4").exists());
}

#[tokio::test]
async fn maildir_changes_behind_our_back_keep_uids() {
    let tmp = tempfile::tempdir().unwrap();
    let store = maildir_store(tmp.path());
    let u = store.user("alice", "example.org").await.unwrap();
    for i in 0..3 {
        u.deliver("INBOX", &message(i)).await.unwrap();
    }
    let first = u.select("INBOX", true).await.unwrap();
    let dir = inbox_dir(&store);
    let mut news = files_in(&dir.join("new"));
    news.sort();
    // mutt reads message 2 (moves it to cur with S), deletes message 1, another MDA
    // delivers a new one.
    let name_of = |i: usize, list: &[String]| {
        list.iter()
            .find(|n| std::fs::read(dir.join("new").join(n)).unwrap() == message(i))
            .unwrap()
            .clone()
    };
    let m2 = name_of(1, &news);
    let m1 = name_of(0, &news);
    std::thread::sleep(Duration::from_millis(20));
    std::fs::rename(
        dir.join("new").join(&m2),
        dir.join("cur").join(format!("{m2}:2,S")),
    )
    .unwrap();
    std::fs::remove_file(dir.join("new").join(&m1)).unwrap();
    std::fs::write(dir.join("new/999.external.host"), message(7)).unwrap();

    let snap = u.select("INBOX", true).await.unwrap();
    let uids: Vec<u32> = snap.messages.iter().map(|m| m.uid).collect();
    assert_eq!(uids, vec![2, 3, 4]);
    assert_eq!(snap.messages[0].flags, Flags::from_flags(&[Flag::Seen]));
    assert_eq!(u.read("INBOX", 2).await.unwrap(), message(1));
    assert_eq!(u.read("INBOX", 3).await.unwrap(), message(2));
    assert_eq!(u.read("INBOX", 4).await.unwrap(), message(7));
    let ch = u
        .changes_since("INBOX", first.highest_modseq)
        .await
        .unwrap();
    assert_eq!(ch.vanished, vec![1]);
    let changed: Vec<u32> = ch.changed.iter().map(|m| m.uid).collect();
    assert_eq!(changed, vec![2, 4]);

    // A folder made by another tool appears (and takes deliveries); one removed disappears.
    std::fs::create_dir_all(dir.join(".Lists.rust/cur")).unwrap();
    std::fs::create_dir_all(dir.join(".Lists.rust/new")).unwrap();
    std::fs::create_dir_all(dir.join(".Lists.rust/tmp")).unwrap();
    assert_eq!(u.deliver("Lists/rust", &message(8)).await.unwrap(), 1);
    std::fs::remove_dir_all(dir.join(".Junk")).unwrap();
    let names: Vec<String> = u
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert!(names.contains(&"Lists/rust".to_string()));
    assert!(names.contains(&"Lists".to_string()));
    assert!(!names.contains(&"Junk".to_string()));
    assert!(matches!(
        u.select("Junk", true).await,
        Err(StoreError::NoSuchMailbox(_))
    ));
}

#[tokio::test]
async fn mbox_changes_behind_our_back_keep_uids() {
    let tmp = tempfile::tempdir().unwrap();
    let store = mbox_store(tmp.path());
    let u = store.user("alice", "example.org").await.unwrap();
    for i in 0..3 {
        u.deliver("INBOX", &message(i)).await.unwrap();
    }
    let first = u.select("INBOX", true).await.unwrap();
    let spool = tmp.path().join("spool/alice");
    // mutt deletes message 1 and marks message 2 read (adds Status: RO), another MDA
    // appends one.
    let text = String::from_utf8(std::fs::read(&spool).unwrap()).unwrap();
    let parts: Vec<&str> = text
        .split("From MAILER-DAEMON")
        .filter(|p| !p.is_empty())
        .collect();
    assert_eq!(parts.len(), 3);
    // As neomutt rewrites a message: Status/Content-Length/Lines added, LF-only blank line.
    let second = parts[1].replacen(
        "Subject: message 1\r\n\r\n",
        "Subject: message 1\r\nStatus: RO\nContent-Length: 15\nLines: 1\n\n",
        1,
    );
    let rewritten = format!(
        "From MAILER-DAEMON{second}From MAILER-DAEMON{}From other@example.org Tue Nov 14 22:13:20 2023\n{}\n",
        parts[2],
        String::from_utf8(message(7)).unwrap()
    );
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&spool, rewritten).unwrap();

    let snap = u.select("INBOX", true).await.unwrap();
    let uids: Vec<u32> = snap.messages.iter().map(|m| m.uid).collect();
    assert_eq!(uids, vec![2, 3, 4]);
    assert_eq!(u.read("INBOX", 3).await.unwrap(), message(2));
    assert_eq!(u.read("INBOX", 4).await.unwrap(), message(7));
    assert_eq!(snap.messages[2].internal_date, 1_700_000_000);
    let two = u.read("INBOX", 2).await.unwrap();
    assert!(two.windows(10).any(|w| w == b"Status: RO"));
    let ch = u
        .changes_since("INBOX", first.highest_modseq)
        .await
        .unwrap();
    assert_eq!(ch.vanished, vec![1]);
}

#[tokio::test]
async fn mbox_quotes_from_lines_and_round_trips_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let store = mbox_store(tmp.path());
    let u = store.user("alice", "example.org").await.unwrap();
    let m =
        b"Subject: quoting\r\n\r\nFrom the start\r\n>From quoted\r\n>>From deeper\r\nFromage\r\n"
            .to_vec();
    let uid = u.deliver("INBOX", &m).await.unwrap();
    u.deliver("INBOX", &message(2)).await.unwrap();
    let raw = std::fs::read(tmp.path().join("spool/alice")).unwrap();
    let text = String::from_utf8(raw).unwrap();
    assert!(text.starts_with("From MAILER-DAEMON "));
    assert!(text.contains(
        "\r\n>From the start\r\n>>From quoted\r\n>>>From deeper\r\nFromage\r\n\nFrom MAILER-DAEMON "
    ));
    assert_eq!(text.matches("\nFrom ").count(), 1);
    assert_eq!(u.read("INBOX", uid).await.unwrap(), m);
    // Also after the index forgot the offsets (re-read from the file).
    let snap = u.select("INBOX", true).await.unwrap();
    assert_eq!(snap.messages[0].size, m.len() as u64);
}

#[tokio::test]
async fn names_that_escape_the_user_dir_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, store) in stores(tmp.path()) {
        let u = store.user("alice", "example.org").await.unwrap();
        for bad in [
            "../x",
            "/etc",
            "a/../../b",
            ".hidden",
            "a/.b",
            "a\0b",
            "",
            "a//b",
            "x\r\n",
        ] {
            assert!(
                matches!(u.create(bad, None).await, Err(StoreError::InvalidName(_))),
                "{kind}: {bad:?}"
            );
            assert!(matches!(
                u.deliver(bad, b"x").await,
                Err(StoreError::InvalidName(_))
            ));
            assert!(matches!(
                u.rename("Sent", bad).await,
                Err(StoreError::InvalidName(_))
            ));
        }
        assert!(matches!(
            store.user("../bob", "example.org").await,
            Err(StoreError::InvalidName(_))
        ));
        assert!(matches!(
            store.user("bob", "../../etc").await,
            Err(StoreError::InvalidName(_))
        ));
    }
    let u = mbox_store(&tmp.path().join("x"))
        .user("a", "b.c")
        .await
        .unwrap();
    assert!(matches!(
        u.create("foo/lock", None).await,
        Err(StoreError::InvalidName(_))
    ));
}

#[tokio::test]
async fn create_rename_delete_follow_rfc3501() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, store) in stores(tmp.path()) {
        let u = store.user("alice", "example.org").await.unwrap();
        u.create("Work/2024", None).await.unwrap();
        u.create("Work/2024/Q1", None).await.unwrap();
        u.create("Caf\u{e9}.v1", None).await.unwrap();
        assert!(matches!(
            u.create("Work/2024", None).await,
            Err(StoreError::AlreadyExists(_))
        ));
        assert!(matches!(
            u.create("inbox", None).await,
            Err(StoreError::AlreadyExists(_))
        ));
        let list = u.list().await.unwrap();
        let work = list.iter().find(|m| m.name == "Work").unwrap();
        assert!(work.noselect && work.has_children, "{kind}");
        assert!(list.iter().any(|m| m.name == "Caf\u{e9}.v1"));
        u.deliver("Work/2024", &message(1)).await.unwrap();
        u.subscribe("Work/2024").await.unwrap();
        let uv = u.status("Work/2024").await.unwrap().uidvalidity;

        assert!(matches!(
            u.rename("Work", "Work/x").await,
            Err(StoreError::Cannot(_))
        ));
        assert!(matches!(
            u.rename("Work/2024", "Sent").await,
            Err(StoreError::AlreadyExists(_))
        ));
        u.rename("Work", "Jobs").await.unwrap();
        let names: Vec<String> = u
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert!(
            names.contains(&"Jobs/2024".to_string()) && names.contains(&"Jobs/2024/Q1".to_string())
        );
        assert!(
            !names.iter().any(|n| n.starts_with("Work")),
            "{kind}: {names:?}"
        );
        let st = u.status("Jobs/2024").await.unwrap();
        assert_eq!((st.uidvalidity, st.messages), (uv, 1), "{kind}");
        assert_eq!(u.read("Jobs/2024", 1).await.unwrap(), message(1));
        assert!(
            u.subscriptions()
                .await
                .unwrap()
                .contains(&"Jobs/2024".to_string())
        );
        u.unsubscribe("Jobs/2024").await.unwrap();
        assert!(
            !u.subscriptions()
                .await
                .unwrap()
                .contains(&"Jobs/2024".to_string())
        );
        u.set_special_use("Jobs/2024", Some(SpecialUse::Archive))
            .await
            .unwrap();
        let l = u.list().await.unwrap();
        let j = l.iter().find(|m| m.name == "Jobs/2024").unwrap();
        assert_eq!(
            (j.special_use, j.subscribed),
            (Some(SpecialUse::Archive), false)
        );

        // DELETE with children: messages go, the name stays as a \Noselect parent.
        u.delete("Jobs/2024").await.unwrap();
        let list = u.list().await.unwrap();
        let p = list.iter().find(|m| m.name == "Jobs/2024").unwrap();
        assert!(p.noselect && p.has_children, "{kind}");
        assert!(matches!(
            u.select("Jobs/2024", true).await,
            Err(StoreError::NoSuchMailbox(_))
        ));
        assert!(matches!(
            u.delete("Jobs/2024").await,
            Err(StoreError::NoSuchMailbox(_))
        ));
        assert!(matches!(
            u.delete("INBOX").await,
            Err(StoreError::Cannot(_))
        ));
        // Re-created: a new UIDVALIDITY.
        u.create("Jobs/2024", None).await.unwrap();
        assert_ne!(u.status("Jobs/2024").await.unwrap().uidvalidity, uv);

        // RENAME INBOX moves the messages and leaves INBOX empty.
        u.deliver("INBOX", &message(5)).await.unwrap();
        u.deliver("INBOX", &message(6)).await.unwrap();
        let inbox_next = u.status("INBOX").await.unwrap().uidnext;
        u.rename("INBOX", "Old").await.unwrap();
        let inbox = u.status("INBOX").await.unwrap();
        assert_eq!((inbox.messages, inbox.uidnext), (0, inbox_next), "{kind}");
        assert_eq!(u.status("Old").await.unwrap().messages, 2);
        assert_eq!(u.read("Old", 2).await.unwrap(), message(6));
    }
    let root = tmp.path().join("m/mail/example.org/alice/Maildir");
    assert!(root.join(".Jobs.2024.Q1").is_dir());
    assert!(root.join(".Caf&AOkALg-v1").is_dir());
    assert!(root.join(".Jobs.2024.Q1/maildirfolder").exists());
    let mroot = tmp.path().join("b/mail/example.org/alice/mbox");
    assert!(mroot.join("Jobs.2024.Q1").is_file());
}

#[tokio::test]
async fn copy_and_move_keep_flags_and_report_uid_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, store) in stores(tmp.path()) {
        let u = store.user("alice", "example.org").await.unwrap();
        for i in 0..3 {
            u.deliver("INBOX", &message(i)).await.unwrap();
        }
        let seen = Flags::from_flags(&[Flag::Seen]);
        u.store(
            "INBOX",
            &[2],
            StoreMode::Add,
            seen,
            &["$label1".into()],
            None,
        )
        .await
        .unwrap();
        let trash = u.status("Trash").await.unwrap();
        let c = u.copy("INBOX", &[2, 3, 77], "Trash").await.unwrap();
        assert_eq!(c.uidvalidity, trash.uidvalidity, "{kind}");
        assert_eq!(c.pairs, vec![(2, 1), (3, 2)], "{kind}");
        let snap = u.select("Trash", true).await.unwrap();
        assert_eq!(snap.messages[0].flags, seen);
        assert_eq!(snap.messages[0].keywords, vec!["$label1".to_string()]);
        assert_eq!(u.read("Trash", 2).await.unwrap(), message(2));
        let before = u.select("INBOX", true).await.unwrap().highest_modseq;
        let m = u.move_messages("INBOX", &[1, 3], "Archive").await.unwrap();
        assert_eq!(m.pairs, vec![(1, 1), (3, 2)], "{kind}");
        let ch = u.changes_since("INBOX", before).await.unwrap();
        assert_eq!(ch.vanished, vec![1, 3], "{kind}");
        let inbox = u.select("INBOX", true).await.unwrap();
        assert_eq!(
            inbox.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
            vec![2]
        );
        assert_eq!(u.read("INBOX", 2).await.unwrap(), message(1));
        assert_eq!(u.read("Archive", 2).await.unwrap(), message(2));
        assert_eq!(u.read("Archive", 1).await.unwrap(), message(0));
        assert_eq!(u.quota_usage().await.unwrap().messages, 5);
        // COPY into the same mailbox adds a second copy under a new UID.
        let next = u.status("INBOX").await.unwrap().uidnext;
        let c = u.copy("INBOX", &[2], "INBOX").await.unwrap();
        assert_eq!(c.pairs, vec![(2, next)], "{kind}");
        assert_eq!(u.read("INBOX", next).await.unwrap(), message(1));
        let st = u.status("INBOX").await.unwrap();
        assert_eq!((st.messages, st.uidnext), (2, next + 1), "{kind}");
    }
    // Copies keep flags in the file name: the \Seen one in cur/, the other in new/.
    let trash = tmp.path().join("m/mail/example.org/alice/Maildir/.Trash");
    assert_eq!(files_in(&trash.join("new")).len(), 1);
    let cur = files_in(&trash.join("cur"));
    assert!(cur.len() == 1 && cur[0].ends_with(":2,S"), "{cur:?}");
    let arch = tmp.path().join("m/mail/example.org/alice/Maildir/.Archive");
    assert_eq!(files_in(&arch.join("new")).len(), 2);
}

async fn deliver_many(store: Store, from: usize, n: usize) -> Vec<(usize, u32)> {
    let u = store.user("alice", "example.org").await.unwrap();
    let mut tasks = Vec::new();
    for i in from..from + n {
        let u = u.clone();
        tasks.push(tokio::spawn(async move {
            let uid = u.deliver("INBOX", &message(i)).await.unwrap();
            (i, uid)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// A child process delivering for `concurrent_deliveries_from_tasks_and_processes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the multi-process test as a child"]
async fn child_deliverer() {
    let (Ok(dir), Ok(kind), Ok(from)) = (
        std::env::var("HERMOD_STORE_CHILD_DIR"),
        std::env::var("HERMOD_STORE_CHILD_KIND"),
        std::env::var("HERMOD_STORE_CHILD_FROM"),
    ) else {
        return;
    };
    let store = if kind == "maildir" {
        maildir_store(Path::new(&dir))
    } else {
        mbox_store(Path::new(&dir))
    };
    let from: usize = from.parse().unwrap();
    deliver_many(store, from, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_deliveries_from_tasks_and_processes() {
    let tmp = tempfile::tempdir().unwrap();
    for kind in ["maildir", "mbox"] {
        let dir = tmp.path().join(kind);
        let open = || {
            if kind == "maildir" {
                maildir_store(&dir)
            } else {
                mbox_store(&dir)
            }
        };
        // Create the user first, so the processes race only on deliveries.
        let probe = open();
        probe.user("alice", "example.org").await.unwrap();
        let exe = std::env::current_exe().unwrap();
        let mut children = Vec::new();
        for c in 0..2 {
            children.push(
                tokio::process::Command::new(&exe)
                    .args([
                        "--exact",
                        "store::tests::child_deliverer",
                        "--ignored",
                        "--quiet",
                    ])
                    .env("HERMOD_STORE_CHILD_DIR", &dir)
                    .env("HERMOD_STORE_CHILD_KIND", kind)
                    .env("HERMOD_STORE_CHILD_FROM", (1000 + c * 50).to_string())
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap(),
            );
        }
        // Two stores in this process (like two processes) with 50 tasks each.
        let a = tokio::spawn(deliver_many(open(), 0, 50));
        let b = tokio::spawn(deliver_many(open(), 50, 50));
        let mut mine = a.await.unwrap();
        mine.extend(b.await.unwrap());
        for mut c in children {
            assert!(c.wait().await.unwrap().success(), "{kind}: child failed");
        }
        let store = open();
        let u = store.user("alice", "example.org").await.unwrap();
        let snap = u.select("INBOX", true).await.unwrap();
        assert_eq!(snap.messages.len(), 200, "{kind}: none lost");
        let uids: Vec<u32> = snap.messages.iter().map(|m| m.uid).collect();
        assert_eq!(
            uids,
            (1..=200).collect::<Vec<u32>>(),
            "{kind}: unique, dense UIDs"
        );
        assert_eq!(snap.uidnext, 201);
        // Every message reads back intact; in-process ones under the UID they were told.
        let mut bodies = HashSet::new();
        for m in &snap.messages {
            let b = u.read("INBOX", m.uid).await.unwrap();
            assert_eq!(b.len() as u64, m.size);
            assert!(bodies.insert(b), "{kind}: duplicate message");
        }
        for (i, uid) in mine {
            assert_eq!(u.read("INBOX", uid).await.unwrap(), message(i), "{kind}");
        }
        // Also after a full re-read from disk (index forgotten).
        if kind == "mbox" {
            let raw = std::fs::read(dir.join("spool/alice")).unwrap();
            assert_eq!(
                raw.windows(6).filter(|w| w == b"\nFrom ").count() + 1,
                200,
                "mbox has 200 separators"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uids_ascend_in_commit_order() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, store) in stores(tmp.path()) {
        let u = store.user("alice", "example.org").await.unwrap();
        let mut last = 0;
        for i in 0..20 {
            let uid = u.deliver("INBOX", &message(i)).await.unwrap();
            assert!(uid > last, "{kind}");
            last = uid;
        }
    }
}

async fn expect_change(rx: &mut ChangeReceiver, kind: &str, what: &str) {
    let t = Instant::now();
    loop {
        let got = tokio::time::timeout(Duration::from_secs(1), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{kind}: no notification for {what}"));
        if got == Some(Change::Mailbox("INBOX".into())) {
            break;
        }
    }
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn notifications_reach_another_store_within_a_second() {
    let tmp = tempfile::tempdir().unwrap();
    for kind in ["maildir", "mbox"] {
        let dir = tmp.path().join(kind);
        let open = || {
            if kind == "maildir" {
                maildir_store(&dir)
            } else {
                mbox_store(&dir)
            }
        };
        let watcher_store = open();
        let watcher = watcher_store.user("alice", "example.org").await.unwrap();
        let mut rx = watcher.watch();
        // The watch task's first look ends with a Resync.
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap();
        assert_eq!(first, Some(Change::Resync));
        let writer_store = open();
        let writer = writer_store.user("alice", "example.org").await.unwrap();

        let uid = writer.deliver("INBOX", &message(1)).await.unwrap();
        expect_change(&mut rx, kind, "new message").await;
        add_flags(&writer, &[uid], &[Flag::Deleted]).await;
        expect_change(&mut rx, kind, "flag change").await;
        writer.expunge("INBOX", None).await.unwrap();
        expect_change(&mut rx, kind, "expunge").await;
        if kind == "maildir" {
            // A file dropped in by another MDA.
            let d = dir.join("mail/example.org/alice/Maildir/new/1.ext.host");
            std::fs::write(d, message(3)).unwrap();
            expect_change(&mut rx, kind, "external delivery").await;
        }
    }
}

#[tokio::test]
async fn select_of_many_messages_is_one_fast_query() {
    let tmp = tempfile::tempdir().unwrap();
    let store = maildir_store(tmp.path());
    let u = store.user("alice", "example.org").await.unwrap();
    let dir = inbox_dir(&store);
    let n = 20_000;
    for i in 0..n {
        std::fs::write(dir.join(format!("cur/{i}.x.host:2,S")), message(i)).unwrap();
    }
    let t = Instant::now();
    let snap = u.select("INBOX", false).await.unwrap();
    let indexing = t.elapsed();
    assert_eq!(snap.messages.len(), n);
    let t = Instant::now();
    let snap = u.select("INBOX", false).await.unwrap();
    let again = t.elapsed();
    assert_eq!(snap.messages.len(), n);
    assert!(
        snap.messages
            .iter()
            .all(|m| m.flags == Flags::from_flags(&[Flag::Seen]))
    );
    eprintln!("{n} messages: first select (indexing) {indexing:?}, second {again:?}");
    assert!(again < Duration::from_secs(1), "{again:?}");
}

/// Writes sample mailboxes for checking with mutt by hand:
/// `HERMOD_STORE_DEMO_DIR=/tmp/demo cargo test -p hermod-common --lib write_demo -- --ignored`.
#[tokio::test]
#[ignore = "writes sample mailboxes for a manual mutt check"]
async fn write_demo_mailboxes() {
    let Ok(dir) = std::env::var("HERMOD_STORE_DEMO_DIR") else {
        return;
    };
    let dir = Path::new(&dir);
    for store in [
        maildir_store(&dir.join("maildir")),
        mbox_store(&dir.join("mbox")),
    ] {
        let u = store.user("alice", "example.org").await.unwrap();
        let mk = |subject: &str, body: &str| {
            format!(
                "From: Bob <bob@example.org>\r\nTo: alice@example.org\r\nSubject: {subject}\r\n\
                 Date: Tue, 14 Nov 2023 22:13:20 +0000\r\nMessage-ID: <{subject}@example.org>\r\n\r\n{body}\r\n"
            )
            .into_bytes()
        };
        u.deliver("INBOX", &mk("first-unread", "hello"))
            .await
            .unwrap();
        let uid = u
            .deliver(
                "INBOX",
                &mk("second-seen-flagged", "From the start\r\n>From quoted"),
            )
            .await
            .unwrap();
        add_flags(&u, &[uid], &[Flag::Seen, Flag::Flagged]).await;
        u.append(
            "INBOX",
            &mk("third-replied", "re"),
            Flags::from_flags(&[Flag::Seen, Flag::Answered]),
            &[],
            None,
        )
        .await
        .unwrap();
        u.create("Work/2024", None).await.unwrap();
        u.deliver("Work/2024", &mk("in-a-folder", "work"))
            .await
            .unwrap();
    }
}

/// Prints the sample mailboxes (after editing them with mutt):
/// `HERMOD_STORE_DEMO_DIR=/tmp/demo cargo test -p hermod-common --lib print_demo -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "prints sample mailboxes for a manual mutt check"]
async fn print_demo_mailboxes() {
    let Ok(dir) = std::env::var("HERMOD_STORE_DEMO_DIR") else {
        return;
    };
    let dir = Path::new(&dir);
    for (kind, store) in [
        ("maildir", maildir_store(&dir.join("maildir"))),
        ("mbox", mbox_store(&dir.join("mbox"))),
    ] {
        let u = store.user("alice", "example.org").await.unwrap();
        let snap = u.select("INBOX", true).await.unwrap();
        for m in &snap.messages {
            let body = u.read("INBOX", m.uid).await.unwrap();
            let text = String::from_utf8_lossy(&body);
            let subject = text
                .lines()
                .find(|l| l.starts_with("Subject:"))
                .unwrap_or("");
            println!("{kind} uid {} flags [{}] {subject}", m.uid, m.flags);
        }
    }
}

/// A child process delivering until killed, printing each acknowledged delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the kill -9 test as a child"]
async fn child_deliver_until_killed() {
    use std::io::Write;
    let (Ok(dir), Ok(kind)) = (
        std::env::var("HERMOD_STORE_CHILD_DIR"),
        std::env::var("HERMOD_STORE_CHILD_KIND"),
    ) else {
        return;
    };
    let store = if kind == "maildir" {
        maildir_store(Path::new(&dir))
    } else {
        mbox_store(Path::new(&dir))
    };
    let u = store.user("alice", "example.org").await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..4 {
        let u = u.clone();
        tasks.push(tokio::spawn(async move {
            for i in (t..).step_by(4) {
                let uid = u.deliver("INBOX", &message(i)).await.unwrap();
                let mut out = std::io::stdout().lock();
                writeln!(out, "ok {i} {uid}").unwrap();
                out.flush().unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_deliveries_survive_kill_9() {
    use tokio::io::AsyncBufReadExt;
    let tmp = tempfile::tempdir().unwrap();
    for kind in ["maildir", "mbox"] {
        let dir = tmp.path().join(kind);
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "store::tests::child_deliver_until_killed",
                "--ignored",
                "--nocapture",
                "--quiet",
            ])
            .env("HERMOD_STORE_CHILD_DIR", &dir)
            .env("HERMOD_STORE_CHILD_KIND", kind)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked: Vec<(usize, u32)> = Vec::new();
        while acked.len() < 60 {
            let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let mut p = line.split_whitespace();
            if let (Some("ok"), Some(i), Some(uid)) = (p.next(), p.next(), p.next()) {
                acked.push((i.parse().unwrap(), uid.parse().unwrap()));
            }
        }
        child.start_kill().unwrap(); // SIGKILL
        while let Ok(Some(line)) = lines.next_line().await {
            let mut p = line.split_whitespace();
            if let (Some("ok"), Some(i), Some(uid)) = (p.next(), p.next(), p.next()) {
                acked.push((i.parse().unwrap(), uid.parse().unwrap()));
            }
        }
        child.wait().await.unwrap();

        let store = if kind == "maildir" {
            maildir_store(&dir)
        } else {
            mbox_store(&dir)
        };
        let u = store.user("alice", "example.org").await.unwrap();
        let snap = u.select("INBOX", true).await.unwrap();
        assert!(
            snap.messages.len() >= acked.len(),
            "{kind}: acknowledged messages lost"
        );
        for (i, uid) in &acked {
            assert_eq!(
                u.read("INBOX", *uid).await.unwrap(),
                message(*i),
                "{kind} uid {uid}"
            );
        }
        // Whatever else is visible is whole: no partial message.
        for m in &snap.messages {
            let b = u.read("INBOX", m.uid).await.unwrap();
            let text = String::from_utf8(b).unwrap();
            assert!(
                text.ends_with("\r\n") && text.contains("body of"),
                "{kind}: partial {text:?}"
            );
        }
        // And the next delivery works, with a higher UID.
        let uid = u.deliver("INBOX", &message(9999)).await.unwrap();
        assert!(snap.messages.iter().all(|m| m.uid < uid));
    }
}

#[tokio::test]
async fn cached_values_follow_their_messages() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, store) in stores(tmp.path()) {
        let u = store.user("alice", "example.org").await.unwrap();
        for i in 0..3 {
            u.deliver("INBOX", &message(i)).await.unwrap();
        }
        assert!(u.cached("INBOX", &[1, 2, 3]).await.unwrap().is_empty());
        u.set_cached(
            "INBOX",
            &[
                (1, b"one".to_vec()),
                (3, b"three".to_vec()),
                (9, b"x".to_vec()),
            ],
        )
        .await
        .unwrap();
        let got = u.cached("INBOX", &[1, 2, 3, 9]).await.unwrap();
        assert_eq!(
            got.len(),
            2,
            "{kind}: a value for a missing UID is not kept"
        );
        assert_eq!(got[&1], b"one", "{kind}");
        assert_eq!(got[&3], b"three", "{kind}");
        // Only the asked-for UIDs come back.
        assert_eq!(u.cached("INBOX", &[3]).await.unwrap().len(), 1, "{kind}");

        // Expunged messages lose their value; copies start without one.
        let del = Flags::from_flags(&[Flag::Deleted]);
        u.store("INBOX", &[1], StoreMode::Add, del, &[], None)
            .await
            .unwrap();
        u.expunge("INBOX", None).await.unwrap();
        let c = u.copy("INBOX", &[3], "Archive").await.unwrap();
        assert!(u.cached("INBOX", &[1]).await.unwrap().is_empty(), "{kind}");
        assert!(
            u.cached("Archive", &[c.pairs[0].1])
                .await
                .unwrap()
                .is_empty(),
            "{kind}"
        );
        // Deleting a mailbox drops its values with it.
        u.create("Tmp", None).await.unwrap();
        let a = u
            .append("Tmp", &message(5), Flags::default(), &[], None)
            .await
            .unwrap();
        u.set_cached("Tmp", &[(a.uid, b"v".to_vec())])
            .await
            .unwrap();
        u.delete("Tmp").await.unwrap();
        u.create("Tmp", None).await.unwrap();
        let b = u
            .append("Tmp", &message(5), Flags::default(), &[], None)
            .await
            .unwrap();
        assert!(
            u.cached("Tmp", &[b.uid]).await.unwrap().is_empty(),
            "{kind}"
        );
    }
}

#[tokio::test]
async fn read_many_returns_messages_in_the_order_asked_and_none_for_missing() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, store) in stores(tmp.path()) {
        let u = store.user("alice", "example.org").await.unwrap();
        for i in 0..5 {
            u.deliver("INBOX", &message(i)).await.unwrap();
        }
        let lf_only = b"Subject: bare LF\n\n>From the start\nno final newline".to_vec();
        let last = u.deliver("INBOX", &lf_only).await.unwrap();
        add_flags(&u, &[2], &[Flag::Deleted]).await;
        u.expunge("INBOX", None).await.unwrap();
        let got = u.read_many("INBOX", &[3, 1, 2, 99, last, 3]).await.unwrap();
        assert_eq!(
            got,
            vec![
                Some(message(2)),
                Some(message(0)),
                None,
                None,
                Some(lf_only.clone()),
                Some(message(2)),
            ],
            "{kind}"
        );
        assert!(
            u.read_many("INBOX", &[]).await.unwrap().is_empty(),
            "{kind}"
        );
        assert!(matches!(
            u.read_many("Nope", &[1]).await,
            Err(StoreError::NoSuchMailbox(_))
        ));
    }
}

#[tokio::test]
async fn read_many_finds_maildir_files_renamed_behind_our_back() {
    let tmp = tempfile::tempdir().unwrap();
    let store = maildir_store(tmp.path());
    let u = store.user("alice", "example.org").await.unwrap();
    for i in 0..3 {
        u.deliver("INBOX", &message(i)).await.unwrap();
    }
    // Another tool marks message 2 seen: new/ name -> cur/ name with :2,S.
    let dir = inbox_dir(&store);
    let name = files_in(&dir.join("new"))[1].clone();
    std::fs::rename(
        dir.join("new").join(&name),
        dir.join("cur").join(format!("{name}:2,S")),
    )
    .unwrap();
    let got = u.read_many("INBOX", &[1, 2, 3]).await.unwrap();
    assert_eq!(
        got,
        vec![Some(message(0)), Some(message(1)), Some(message(2))]
    );
}

#[tokio::test]
async fn read_many_rereads_an_mbox_rewritten_behind_our_back() {
    let tmp = tempfile::tempdir().unwrap();
    let store = mbox_store(tmp.path());
    let u = store.user("alice", "example.org").await.unwrap();
    for i in 0..3 {
        u.deliver("INBOX", &message(i)).await.unwrap();
    }
    // Another MDA puts a message in front of the others: every offset moves.
    let spool = tmp.path().join("spool/alice");
    let old = std::fs::read(&spool).unwrap();
    let mut text = b"From other@example.org Tue Nov 14 22:13:20 2023\n".to_vec();
    text.extend_from_slice(&message(7));
    text.extend_from_slice(b"\n");
    text.extend_from_slice(&old);
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&spool, text).unwrap();
    let got = u.read_many("INBOX", &[3, 1, 2]).await.unwrap();
    assert_eq!(
        got,
        vec![Some(message(2)), Some(message(0)), Some(message(1))]
    );
}

#[tokio::test]
async fn byte_ranges_match_the_whole_message() {
    let tmp = tempfile::tempdir().unwrap();
    // A `From ` line is quoted in mbox, so file offsets differ from message offsets there.
    let msg = b"Subject: r\r\n\r\nFrom here\r\n>From there\r\nend\r\n".to_vec();
    for (kind, store) in stores(tmp.path()) {
        let u = store.user("alice", "example.org").await.unwrap();
        let uid = u.deliver("INBOX", &msg).await.unwrap();
        let n = msg.len() as u64;
        for (start, end) in [
            (0, 5),
            (12, 30),
            (14, n),
            (n - 3, n + 100),
            (n, n + 1),
            (n + 5, n + 9),
        ] {
            let want = &msg[(start.min(n) as usize)..(end.min(n) as usize)];
            assert_eq!(
                u.read_range("INBOX", uid, start..end).await.unwrap(),
                want,
                "{kind} {start}..{end}"
            );
        }
        assert!(matches!(
            u.read_range("INBOX", uid + 1, 0..4).await,
            Err(StoreError::NoSuchMessage(_))
        ));
    }
}

#[tokio::test]
async fn change_token_moves_with_every_commit_of_any_process() {
    let tmp = tempfile::tempdir().unwrap();
    // Two stores on one data dir stand for two processes.
    let here = maildir_store(tmp.path());
    let there = maildir_store(tmp.path());
    let a = here.user("alice", "example.org").await.unwrap();
    let b = there.user("alice", "example.org").await.unwrap();
    let uid = a.deliver("INBOX", &message(1)).await.unwrap();
    let first = a.change_token();
    assert!(
        first.same_as(a.change_token()),
        "stable while nothing happens"
    );
    let seen = a.changes_since("INBOX", 0).await.unwrap();
    assert!(first.same_as(a.change_token()), "reading changes nothing");

    // A commit in this process and one in the other both move the token.
    a.deliver("INBOX", &message(2)).await.unwrap();
    let second = a.change_token();
    assert!(!second.same_as(first));
    add_flags(&b, &[uid], &[Flag::Flagged]).await;
    let third = a.change_token();
    assert!(!third.same_as(second));
    assert!(third.same_as(b.change_token()));
    // And the change is in the index at once, without a look at the disk.
    let ch = a.changes_since("INBOX", seen.highest_modseq).await.unwrap();
    let flagged: Vec<u32> = ch
        .changed
        .iter()
        .filter(|m| m.flags.contains(Flag::Flagged))
        .map(|m| m.uid)
        .collect();
    assert_eq!(flagged, vec![uid]);
    assert_eq!(ch.changed.len(), 2, "the flag change and message 2");

    // Another tool's file shows once the last look at the disk is a second old.
    let before = ch.highest_modseq;
    std::fs::write(inbox_dir(&here).join("new/1.other-tool.host"), message(3)).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ch = a.changes_since("INBOX", before).await.unwrap();
    assert_eq!(ch.changed.len(), 1, "{:?}", ch.changed);
    assert_eq!(
        a.read("INBOX", ch.changed[0].uid).await.unwrap(),
        message(3)
    );
    assert!(
        !third.same_as(a.change_token()),
        "the reconcile was a commit"
    );

    // A mailbox deleted by the other process is reported as gone.
    b.create("Projects", None).await.unwrap();
    a.changes_since("Projects", 0).await.unwrap();
    b.delete("Projects").await.unwrap();
    assert!(matches!(
        a.changes_since("Projects", 0).await,
        Err(StoreError::NoSuchMailbox(_))
    ));
}

#[tokio::test]
async fn reconciling_an_mbox_during_expunge_moves_the_change_token() {
    let tmp = tempfile::tempdir().unwrap();
    let store = mbox_store(tmp.path());
    let u = store.user("alice", "example.org").await.unwrap();
    u.deliver("INBOX", &message(1)).await.unwrap();
    u.select("INBOX", true).await.unwrap();
    let before = u.change_token();
    // Another MDA appends a message; an EXPUNGE with nothing to remove reconciles it.
    let mut spool = std::fs::OpenOptions::new()
        .append(true)
        .open(tmp.path().join("spool/alice"))
        .unwrap();
    std::io::Write::write_all(
        &mut spool,
        b"From other@example.net Mon Jun  1 10:00:00 2020\nSubject: from elsewhere\n\nhi\n\n",
    )
    .unwrap();
    drop(spool);
    assert!(u.expunge("INBOX", None).await.unwrap().is_empty());
    assert!(
        !before.same_as(u.change_token()),
        "sessions must look again"
    );
    let ch = u.changes_since("INBOX", 0).await.unwrap();
    assert_eq!(ch.changed.len(), 2);
}
