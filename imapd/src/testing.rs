//! Test support: a store and a directory in a temporary directory, and a session driven
//! without sockets.

use std::sync::Arc;

use hermod_common::auth::Authenticator;
use hermod_common::directory::Directory;
use hermod_common::store::{Store, StoreConfig, UserStore};

use crate::framer::Framer;
use crate::output::Out;
use crate::session::{Session, Settings, Shared};

pub(crate) const USER: &str = "alice@example.org";
pub(crate) const PASSWORD: &str = "secret";

pub(crate) struct Harness {
    pub shared: Arc<Shared>,
    pub store: Store,
    _tmp: tempfile::TempDir,
}

impl Harness {
    pub async fn new() -> Harness {
        Self::with_settings(Settings::default()).await
    }

    pub async fn with_settings(settings: Settings) -> Harness {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(
            &tmp.path().join("directory.sqlite"),
            &["example.org".into()],
        )
        .await
        .unwrap();
        dir.add_user(USER, PASSWORD, 1_000_000).await.unwrap();
        let store = Store::new(StoreConfig::maildir(tmp.path()));
        let shared = Arc::new(Shared {
            store: store.clone(),
            auth: Authenticator::new(dir, 3),
            tls: None,
            junk_feedback: None,
            settings,
        });
        Harness {
            shared,
            store,
            _tmp: tmp,
        }
    }

    /// What another hermod process shares: its own `Store` over the same data.
    pub fn other_process(&self) -> Arc<Shared> {
        Arc::new(Shared {
            store: Store::new(self.store.config().clone()),
            auth: self.shared.auth.clone(),
            tls: None,
            junk_feedback: None,
            settings: self.shared.settings.clone(),
        })
    }

    pub fn session(&self, tls: bool) -> Session {
        Session::new(self.shared.clone(), "127.0.0.1".parse().unwrap(), tls)
    }

    pub async fn user(&self) -> UserStore {
        self.store.user("alice", "example.org").await.unwrap()
    }

    /// Feeds client input and returns everything the session answered.
    pub async fn run(&self, s: &mut Session, input: &str) -> String {
        self.run_bytes(s, input.as_bytes()).await
    }

    pub async fn run_bytes(&self, s: &mut Session, input: &[u8]) -> String {
        let mut framer = Framer::new(
            self.shared.settings.max_line,
            self.shared.settings.max_literal,
        );
        framer.push(input);
        let mut out = Out::buffer();
        loop {
            let (line, literal, strict) = s.input_limits();
            framer.set_limits(line, literal, strict);
            let Some(frame) = framer.next_frame() else {
                break;
            };
            let next = s.handle(frame, &mut out).await.unwrap();
            framer.set_line_mode(matches!(
                next,
                crate::session::Next::Line | crate::session::Next::Idle
            ));
        }
        String::from_utf8_lossy(&out.into_bytes()).into_owned()
    }

    /// Logs in on a TLS session.
    pub async fn login(&self, s: &mut Session) -> String {
        let out = self
            .run(s, &format!("L1 LOGIN {USER} {PASSWORD}\r\n"))
            .await;
        assert!(out.contains("L1 OK"), "login failed: {out}");
        out
    }

    /// A logged-in session with `mailbox` selected.
    pub async fn selected(&self, mailbox: &str) -> Session {
        let mut s = self.session(true);
        self.login(&mut s).await;
        let out = self.run(&mut s, &format!("S1 SELECT {mailbox}\r\n")).await;
        assert!(out.contains("S1 OK"), "select failed: {out}");
        s
    }

    /// Delivers a message into a mailbox.
    pub async fn deliver(&self, mailbox: &str, message: &str) -> u32 {
        self.user()
            .await
            .deliver(mailbox, message.as_bytes())
            .await
            .unwrap()
    }
}

/// A small test message.
pub(crate) fn message(subject: &str, body: &str) -> String {
    format!(
        "From: Bob <bob@example.net>\r\nTo: alice@example.org\r\nSubject: {subject}\r\nDate: Mon, 1 Jun 2020 10:00:00 +0000\r\nMessage-ID: <{subject}@example.net>\r\n\r\n{body}\r\n"
    )
}
