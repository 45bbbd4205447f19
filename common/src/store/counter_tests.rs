//! Tests of what the index keeps up to date instead of recounting: the per-mailbox counters
//! (STATUS, quotas), the SELECT cache of big mailboxes and the full-text index, through
//! several `Store` instances as separate processes would change one user's mail.

use std::path::Path;

use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;

use super::*;

fn message(i: usize) -> Vec<u8> {
    format!(
        "From: Sender {i} <s{i}@example.org>\r\nTo: b@example.org\r\nSubject: message {i}\r\n\r\nbody of {i}\r\n"
    )
    .into_bytes()
}

fn stores(dir: &Path, n: usize) -> Vec<Store> {
    (0..n)
        .map(|_| Store::new(StoreConfig::maildir(dir)))
        .collect()
}

/// STATUS and quota figures from the counters, against a count of the messages.
async fn assert_counted(u: &UserStore, mailboxes: &[&str], step: &str) {
    let mut total = (0u64, 0u64);
    for mb in mailboxes {
        let st = u.status(mb).await.unwrap();
        let snap = u.select(mb, true).await.unwrap();
        let unseen = snap
            .messages
            .iter()
            .filter(|m| !m.flags.contains(Flag::Seen))
            .count();
        let size: u64 = snap.messages.iter().map(|m| m.size).sum();
        assert_eq!(
            (st.messages as usize, st.unseen as usize, st.size),
            (snap.messages.len(), unseen, size),
            "{mb} after {step}"
        );
        total.0 += snap.messages.len() as u64;
        total.1 += size;
    }
    let q = u.quota_usage().await.unwrap();
    assert_eq!((q.messages, q.bytes), total, "quota after {step}");
}

#[tokio::test]
async fn counters_follow_every_change_from_every_store() {
    let tmp = tempfile::tempdir().unwrap();
    let s = stores(tmp.path(), 3);
    let a = s[0].user("alice", "example.org").await.unwrap();
    let b = s[1].user("alice", "example.org").await.unwrap();
    let c = s[2].user("alice", "example.org").await.unwrap();
    let boxes = ["INBOX", "Archive", "Trash", "Sent", "Drafts", "Junk"];
    for i in 0..4 {
        a.deliver("INBOX", &message(i)).await.unwrap();
    }
    assert_counted(&c, &boxes, "deliveries").await;
    let seen = Flags::from_flags(&[Flag::Seen]);
    b.append("INBOX", &message(9), seen, &[], None)
        .await
        .unwrap();
    assert_counted(&c, &boxes, "APPEND \\Seen").await;
    a.store("INBOX", &[1, 2], StoreMode::Add, seen, &[], None)
        .await
        .unwrap();
    assert_counted(&c, &boxes, "STORE +FLAGS").await;
    b.store("INBOX", &[2, 5], StoreMode::Remove, seen, &[], None)
        .await
        .unwrap();
    assert_counted(&c, &boxes, "STORE -FLAGS").await;
    b.store(
        "INBOX",
        &[3],
        StoreMode::Replace,
        seen,
        &["$x".into()],
        None,
    )
    .await
    .unwrap();
    assert_counted(&c, &boxes, "STORE FLAGS").await;
    a.copy("INBOX", &[1, 3], "Archive").await.unwrap();
    assert_counted(&c, &boxes, "COPY").await;
    b.move_messages("INBOX", &[2], "Trash").await.unwrap();
    assert_counted(&c, &boxes, "MOVE").await;
    let deleted = Flags::from_flags(&[Flag::Deleted]);
    a.store("Archive", &[1], StoreMode::Add, deleted, &[], None)
        .await
        .unwrap();
    b.expunge("Archive", None).await.unwrap();
    assert_counted(&c, &boxes, "EXPUNGE").await;
    // A file put into the Maildir by another tool is counted once the store looks.
    let cur = tmp.path().join("mail/example.org/alice/Maildir/cur");
    std::fs::write(cur.join("1700000000.M1P1.tool:2,S"), message(20)).unwrap();
    assert_counted(&c, &boxes, "a file added behind our back").await;
    a.rename("Trash", "Old").await.unwrap();
    assert_counted(&c, &["INBOX", "Archive", "Old"], "RENAME").await;
    b.delete("Old").await.unwrap();
    assert_counted(&c, &["INBOX", "Archive"], "DELETE").await;
}

fn index_path(dir: &Path) -> std::path::PathBuf {
    dir.join("mail/example.org/alice/index.sqlite")
}

/// An index as the layout before the counters left it (version 1).
async fn downgrade_to_version_1(path: &Path) {
    let url = format!("sqlite://{}", path.display());
    let mut c = SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "DROP TRIGGER message_counted; DROP TRIGGER message_uncounted; \
         DROP TRIGGER message_text_gone; DROP TRIGGER message_recounted; \
         DROP INDEX message_unseen; DROP TABLE message_text; \
         ALTER TABLE mailbox DROP COLUMN msg_count; ALTER TABLE mailbox DROP COLUMN unseen_count; \
         ALTER TABLE mailbox DROP COLUMN total_size; ALTER TABLE mailbox DROP COLUMN text_count; \
         ALTER TABLE message DROP COLUMN text_indexed; PRAGMA user_version = 1;",
    )
    .execute(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
}

#[tokio::test]
async fn an_old_index_gets_counters_and_an_empty_text_index() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let s = Store::new(StoreConfig::maildir(tmp.path()));
        let u = s.user("alice", "example.org").await.unwrap();
        for i in 0..3 {
            u.deliver("INBOX", &message(i)).await.unwrap();
        }
        u.append(
            "INBOX",
            &message(3),
            Flags::from_flags(&[Flag::Seen]),
            &[],
            None,
        )
        .await
        .unwrap();
    }
    downgrade_to_version_1(&index_path(tmp.path())).await;
    let s = Store::new(StoreConfig::maildir(tmp.path()));
    let u = s.user("alice", "example.org").await.unwrap();
    let st = u.status("INBOX").await.unwrap();
    assert_eq!((st.messages, st.unseen), (4, 3));
    assert_counted(&u, &["INBOX", "Archive"], "the migration").await;
    // Nothing is in the new full-text index: every message is listed, and a background
    // task indexes them.
    assert_eq!(u.text_unindexed("INBOX").await.unwrap(), vec![1, 2, 3, 4]);
    u.deliver("INBOX", &message(4)).await.unwrap();
    assert_counted(&u, &["INBOX"], "a delivery after the migration").await;
    let mut tries = 0;
    while !u.text_unindexed("INBOX").await.unwrap().is_empty() {
        tries += 1;
        assert!(tries < 500, "the background indexer does not finish");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let found = u
        .text_search("INBOX", TextField::Subject, "message 2")
        .await;
    assert_eq!(found.unwrap(), vec![3]);
}

#[tokio::test]
async fn text_index_follows_appends_expunges_and_late_indexing() {
    let tmp = tempfile::tempdir().unwrap();
    let s = stores(tmp.path(), 2);
    let a = s[0].user("alice", "example.org").await.unwrap();
    let b = s[1].user("alice", "example.org").await.unwrap();
    for i in 0..5 {
        a.deliver("INBOX", &message(i)).await.unwrap();
    }
    assert!(a.text_unindexed("INBOX").await.unwrap().is_empty());
    let find = |u: UserStore, f: TextField, n: &'static str| async move {
        u.text_search("INBOX", f, n).await.unwrap()
    };
    assert_eq!(
        find(b.clone(), TextField::Subject, "message 3").await,
        vec![4]
    );
    assert_eq!(
        find(b.clone(), TextField::From, "s2@example").await,
        vec![3]
    );
    assert_eq!(
        find(b.clone(), TextField::Body, "body of").await,
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(
        find(b.clone(), TextField::Body, "message 3").await,
        Vec::<Uid>::new()
    );
    assert_eq!(find(b.clone(), TextField::Text, "message 3").await, vec![4]);
    // A message expunged through the other store leaves the index with its row.
    let deleted = Flags::from_flags(&[Flag::Deleted]);
    b.store("INBOX", &[4], StoreMode::Add, deleted, &[], None)
        .await
        .unwrap();
    b.expunge("INBOX", None).await.unwrap();
    assert_eq!(
        find(a.clone(), TextField::Subject, "message 3").await,
        Vec::<Uid>::new()
    );
    // Copies are indexed late, by a reader.
    a.copy("INBOX", &[1, 2], "Archive").await.unwrap();
    assert_eq!(b.text_unindexed("Archive").await.unwrap(), vec![1, 2]);
    let texts: Vec<(Uid, crate::search_text::IndexedText)> = [1, 2, 99]
        .into_iter()
        .map(|uid| {
            (
                uid,
                crate::search_text::IndexedText::of(&message(uid as usize)),
            )
        })
        .collect();
    b.add_text("Archive", &texts).await.unwrap();
    assert!(a.text_unindexed("Archive").await.unwrap().is_empty());
    let mut conn =
        SqliteConnection::connect(&format!("sqlite://{}", index_path(tmp.path()).display()))
            .await
            .unwrap();
    for id in 1..=2 {
        assert!(text_index::consistent(&mut conn, id).await.unwrap());
    }
}

#[tokio::test]
async fn select_through_the_cache_sees_what_other_stores_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let s = stores(tmp.path(), 3);
    let a = s[0].user("alice", "example.org").await.unwrap();
    let b = s[1].user("alice", "example.org").await.unwrap();
    let n = snapshot_cache::MIN_MESSAGES + 3;
    for i in 0..n {
        b.deliver("INBOX", &message(i)).await.unwrap();
    }
    let first = a.select("INBOX", true).await.unwrap();
    assert_eq!(first.messages.len(), n);
    let seen = Flags::from_flags(&[Flag::Seen, Flag::Deleted]);
    b.store("INBOX", &[2, 3], StoreMode::Add, seen, &["$k".into()], None)
        .await
        .unwrap();
    b.expunge("INBOX", Some(&[3])).await.unwrap();
    b.deliver("INBOX", &message(1000)).await.unwrap();
    b.move_messages("INBOX", &[5], "Archive").await.unwrap();
    let cached = a.select("INBOX", true).await.unwrap();
    // A store that never read this mailbox reads it whole.
    let fresh = s[2]
        .user("alice", "example.org")
        .await
        .unwrap()
        .select("INBOX", true)
        .await
        .unwrap();
    assert_eq!(cached, fresh);
    assert_eq!(cached.messages.len(), n - 1);
    assert!(cached.messages[1].keywords == vec!["$k".to_string()]);
}
