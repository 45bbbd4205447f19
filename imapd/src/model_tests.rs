//! A model test of concurrent sessions on one mailbox: tasks doing random APPEND, STORE,
//! EXPUNGE, COPY, MOVE and deliveries, through several `Store` instances as separate
//! processes would (the MDA's deliveries and a mail tool's moves come from one more). Each
//! session's answers are read as a client reads them, and checked after every step:
//!
//! - sequence numbers map to UIDs that stay strictly ascending, and the client's picture
//!   matches the session's own view;
//! - every EXPUNGE names a message the client had and is reported once;
//! - a keyword appears in FETCH only after `* FLAGS` announced it;
//! - a message is `\Recent` in at most one session.
//!
//! At the end every session's view equals the store's, and equals every message ever added
//! minus those reported expunged: nothing is lost.
//!
//! Seeded and bounded; the interleaving varies with the scheduler, the operations do not.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use hermod_common::store::{Flag, Store, UserStore};

use crate::session::{Session, Shared};
use crate::testing::{Harness, message};

const SESSIONS: usize = 6;
const STEPS: usize = 40;
const DELIVERIES: usize = 30;

/// A small xorshift generator: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What every task adds to and every check reads.
#[derive(Default)]
struct Truth {
    /// UIDs of INBOX ever given out (APPENDUID, deliveries, moves into INBOX).
    created: BTreeSet<u32>,
    /// UIDs some session was told were expunged.
    expunged: BTreeSet<u32>,
    /// UIDs that may be expunged: shown with \Deleted, or moved away by a session.
    deletable: BTreeSet<u32>,
    /// How each UID came, for the failure message.
    origin: HashMap<u32, String>,
    /// Which session saw a UID as \Recent.
    recent_owner: HashMap<u32, usize>,
}

/// A client's picture of its selected mailbox, built from the server's answers only.
struct Client {
    id: usize,
    /// UID by sequence number; 0 where EXISTS announced a message not fetched yet.
    uids: Vec<u32>,
    keywords: BTreeSet<String>,
    told_expunged: BTreeSet<u32>,
}

impl Client {
    /// Reads one command's answers, checking each line against what came before.
    fn absorb(&mut self, out: &str, truth: &Mutex<Truth>) {
        for line in out.split("\r\n").filter(|l| l.starts_with("* ")) {
            let words: Vec<&str> = line.splitn(4, ' ').collect();
            if words[1] == "FLAGS" {
                self.keywords = flag_words(line)
                    .into_iter()
                    .filter(|f| !f.starts_with('\\'))
                    .collect();
                continue;
            }
            let Ok(n) = words[1].parse::<usize>() else {
                continue;
            };
            match words.get(2).copied() {
                Some("EXISTS") => {
                    assert!(n >= self.uids.len(), "EXISTS shrank: {line}\n{out}");
                    self.uids.resize(n, 0);
                }
                Some("EXPUNGE") => {
                    assert!(n >= 1 && n <= self.uids.len(), "bad EXPUNGE: {line}\n{out}");
                    let uid = self.uids.remove(n - 1);
                    assert!(uid != 0, "EXPUNGE of a message never fetched: {out}");
                    assert!(
                        self.told_expunged.insert(uid),
                        "UID {uid} reported expunged twice\n{out}"
                    );
                    truth.lock().unwrap().expunged.insert(uid);
                }
                Some("FETCH") => {
                    assert!(n >= 1 && n <= self.uids.len(), "FETCH past the end: {line}");
                    let flags = flag_words(line);
                    for k in flags.iter().filter(|f| !f.starts_with('\\')) {
                        assert!(
                            self.keywords.contains(k),
                            "keyword {k} used before * FLAGS announced it: {line}\n{out}"
                        );
                    }
                    if flags.iter().any(|f| f == "\\Recent")
                        && let Some(uid) = fetch_uid(line)
                    {
                        let mut t = truth.lock().unwrap();
                        let owner = *t.recent_owner.entry(uid).or_insert(self.id);
                        assert_eq!(owner, self.id, "UID {uid} recent in two sessions");
                    }
                    let uid = fetch_uid(line).unwrap_or(self.uids[n - 1]);
                    if flags.iter().any(|f| f == "\\Deleted") {
                        assert!(uid != 0, "\\Deleted on an unknown message: {out}");
                        truth.lock().unwrap().deletable.insert(uid);
                    }
                    if let Some(uid) = fetch_uid(line) {
                        let known = self.uids[n - 1];
                        assert!(
                            known == 0 || known == uid,
                            "sequence {n} was UID {known}, now {uid}\n{out}"
                        );
                        self.uids[n - 1] = uid;
                    }
                }
                _ => {}
            }
        }
        let known: Vec<u32> = self.uids.iter().copied().filter(|&u| u != 0).collect();
        assert!(
            known.windows(2).all(|w| w[0] < w[1]),
            "UIDs not ascending: {known:?}"
        );
    }

    /// Like a client after EXISTS: learns the UIDs of new messages (FETCH reports no
    /// EXPUNGE, so this ends once no new message arrives meanwhile).
    async fn fetch_unknown(&mut self, h: &Harness, s: &mut Session, truth: &Mutex<Truth>) {
        for _ in 0..20 {
            let Some(first) = self.uids.iter().position(|&u| u == 0) else {
                return;
            };
            let out = h
                .run(s, &format!("u FETCH {}:* (UID FLAGS)\r\n", first + 1))
                .await;
            assert!(tagged_ok(&out, "u"), "{out}");
            self.absorb(&out, truth);
        }
        panic!("UIDs still unknown: {:?}", self.uids);
    }

    /// The client's picture agrees with the session's own view.
    fn matches(&self, s: &Session) {
        let sel = s.selected.as_ref().expect("still selected");
        assert_eq!(sel.msgs.len(), self.uids.len(), "message count");
        for (m, &u) in sel.msgs.iter().zip(&self.uids) {
            assert!(
                u == 0 || u == m.uid,
                "view has {} where client has {u}",
                m.uid
            );
        }
        assert!(sel.msgs.windows(2).all(|w| w[0].uid < w[1].uid));
    }
}

fn flag_words(line: &str) -> Vec<String> {
    let Some(start) = line.find("FLAGS (") else {
        return Vec::new();
    };
    let rest = &line[start + 7..];
    let end = rest.find(')').unwrap_or(rest.len());
    rest[..end].split_whitespace().map(str::to_string).collect()
}

fn fetch_uid(line: &str) -> Option<u32> {
    let at = line.find("UID ")?;
    line[at + 4..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn tagged_ok(out: &str, tag: &str) -> bool {
    out.contains(&format!("\r\n{tag} OK")) || out.starts_with(&format!("{tag} OK"))
}

fn appenduid(out: &str) -> Option<u32> {
    let at = out.find("[APPENDUID ")?;
    out[at..]
        .split(' ')
        .nth(2)?
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// One session's random steps.
async fn session_task(
    h: Arc<Harness>,
    shared: Arc<Shared>,
    id: usize,
    truth: Arc<Mutex<Truth>>,
) -> (Session, Client) {
    let mut s = Session::new(shared, "127.0.0.1".parse().unwrap(), true);
    h.login(&mut s).await;
    let mut c = Client {
        id,
        uids: Vec::new(),
        keywords: BTreeSet::new(),
        told_expunged: BTreeSet::new(),
    };
    let out = h
        .run(&mut s, "s SELECT INBOX\r\nf UID FETCH 1:* (FLAGS)\r\n")
        .await;
    c.absorb(&out, &truth);
    c.fetch_unknown(&h, &mut s, &truth).await;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9));
    for step in 0..STEPS {
        let n = c.uids.len() as u64;
        let seq = if n == 0 {
            "1".to_string()
        } else {
            let a = rng.below(n) + 1;
            let b = (a + rng.below(3)).min(n);
            format!("{a}:{b}")
        };
        let keyword = format!("$Label{}", rng.below(5));
        let tag = format!("t{id}x{step}");
        let cmd = match rng.below(10) {
            0 | 1 => {
                let msg = message(&format!("s{id}n{step}"), "appended");
                let flags = if rng.below(2) == 0 {
                    format!("(\\Seen {keyword}) ")
                } else {
                    String::new()
                };
                // An old internal date, as imaptest and mail migrations append.
                let date = if rng.below(2) == 0 {
                    "\"05-Jan-2007 10:00:00 +0100\" "
                } else {
                    ""
                };
                format!(
                    "{tag} APPEND INBOX {flags}{date}{{{}+}}\r\n{msg}\r\n",
                    msg.len()
                )
            }
            2 | 3 if n > 0 => format!("{tag} STORE {seq} +FLAGS ({keyword} \\Flagged)\r\n"),
            4 if n > 0 => format!("{tag} STORE {seq} -FLAGS ({keyword})\r\n"),
            5 if n > 0 => format!("{tag} STORE {seq} +FLAGS (\\Deleted)\r\n"),
            6 => format!("{tag} EXPUNGE\r\n"),
            7 if n > 0 => format!("{tag} COPY {seq} Archive\r\n"),
            8 if n > 0 => format!("{tag} MOVE {seq} Archive\r\n"),
            _ => format!("{tag} FETCH 1:* (UID FLAGS)\r\n"),
        };
        let out = h.run(&mut s, &cmd).await;
        // A MOVE or STORE can meet messages another session expunged meanwhile.
        assert!(
            tagged_ok(&out, &tag) || out.contains("[EXPUNGEISSUED]"),
            "{cmd:?} failed:\n{out}"
        );
        if let Some(uid) = appenduid(&out) {
            let mut t = truth.lock().unwrap();
            t.created.insert(uid);
            t.origin
                .insert(uid, format!("APPEND by session {id} at step {step}"));
        }
        let before = c.told_expunged.clone();
        c.absorb(&out, &truth);
        if cmd.contains(" MOVE ") {
            truth
                .lock()
                .unwrap()
                .deletable
                .extend(c.told_expunged.difference(&before));
        }
        c.fetch_unknown(&h, &mut s, &truth).await;
        c.matches(&s);
    }
    (s, c)
}

/// The MDA of another process, and a mail tool moving messages back from Archive.
async fn delivery_task(store: Store, truth: Arc<Mutex<Truth>>) {
    let user: UserStore = store.user("alice", "example.org").await.unwrap();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for i in 0..DELIVERIES {
        let uid = user
            .deliver("INBOX", message(&format!("d{i}"), "delivered").as_bytes())
            .await
            .unwrap();
        {
            let mut t = truth.lock().unwrap();
            t.created.insert(uid);
            t.origin.insert(uid, format!("delivery {i}"));
        }
        if rng.below(4) == 0 {
            let archived = user.select("Archive", true).await.unwrap();
            let picked: Vec<_> = archived.messages.iter().take(2).collect();
            let uids: Vec<u32> = picked.iter().map(|m| m.uid).collect();
            if !uids.is_empty()
                && let Ok(moved) = user.move_messages("Archive", &uids, "INBOX").await
            {
                let mut t = truth.lock().unwrap();
                for (from, to) in moved.pairs {
                    t.created.insert(to);
                    // A copy keeps \Deleted: such a message may be expunged unseen.
                    if picked
                        .iter()
                        .any(|m| m.uid == from && m.flags.contains(Flag::Deleted))
                    {
                        t.deletable.insert(to);
                    }
                    t.origin
                        .insert(to, format!("moved from Archive {from} after delivery {i}"));
                }
            }
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sessions_keep_consistent_views() {
    let h = Arc::new(Harness::new().await);
    // Three "processes": each has its own Store over the same data.
    let processes: Vec<Arc<Shared>> = (0..3).map(|_| h.other_process()).collect();
    let truth = Arc::new(Mutex::new(Truth::default()));
    let mut tasks = Vec::new();
    for id in 0..SESSIONS {
        tasks.push(tokio::spawn(session_task(
            h.clone(),
            processes[id % processes.len()].clone(),
            id,
            truth.clone(),
        )));
    }
    let mda = tokio::spawn(delivery_task(
        Store::new(h.store.config().clone()),
        truth.clone(),
    ));
    let mut sessions = Vec::new();
    for t in tasks {
        sessions.push(t.await.expect("session task"));
    }
    mda.await.expect("delivery task");

    // Everyone catches up; then all views, the store and the model agree.
    let user = h.user().await;
    for (s, c) in sessions.iter_mut() {
        let out = h.run(s, "z NOOP\r\ny FETCH 1:* (UID FLAGS)\r\n").await;
        c.absorb(&out, &truth);
        c.matches(s);
    }
    let store_uids: Vec<u32> = user
        .select("INBOX", true)
        .await
        .unwrap()
        .messages
        .iter()
        .map(|m| m.uid)
        .collect();
    let t = truth.lock().unwrap();
    let expected: Vec<u32> = t.created.difference(&t.expunged).copied().collect();
    // Only a message that carried \Deleted may have been expunged before anyone saw it.
    let odd: Vec<String> = expected
        .iter()
        .filter(|u| !store_uids.contains(u) && !t.deletable.contains(u))
        .map(|u| format!("{u} lost: {:?}", t.origin.get(u)))
        .chain(
            store_uids
                .iter()
                .filter(|u| !expected.contains(u))
                .map(|u| format!("{u} unexpected: {:?}", t.origin.get(u))),
        )
        .collect();
    assert!(odd.is_empty(), "lost or resurrected messages: {odd:?}");
    let vanished: Vec<String> = t
        .expunged
        .difference(&t.deletable)
        .map(|u| format!("{u}: {:?}", t.origin.get(u)))
        .collect();
    assert!(
        vanished.is_empty(),
        "expunged without \\Deleted or MOVE: {vanished:?}"
    );
    for (_, c) in &sessions {
        assert_eq!(
            c.uids, store_uids,
            "session {} differs from the store",
            c.id
        );
    }
    assert!(t.created.len() > DELIVERIES, "the test did little");
    assert!(!t.expunged.is_empty(), "nothing was expunged");
}
