//! The ManageSieve state machine driven without a socket, with scripts in memory.

use super::*;
use crate::managesieve::command::{Framed, Framer};
use crate::managesieve::memory::MemoryBackend as Memory;

struct Client {
    session: Session<Memory>,
    framer: Framer,
}

impl Client {
    fn new(tls: bool) -> Client {
        let mut config = SessionConfig::new("mx.example.org");
        config.max_scripts = 2;
        config.max_script_size = 100;
        Client {
            session: Session::new(config, Memory::default(), tls),
            framer: Framer::new(),
        }
    }

    /// Sends the text (lines and literal bytes, CRLF-separated) and returns the response.
    async fn send(&mut self, text: &str) -> (String, Control) {
        let mut out = Vec::new();
        let mut control = Control::Continue;
        let mut rest = text.as_bytes();
        while !rest.is_empty() {
            let end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .unwrap_or(rest.len());
            let line = &rest[..end];
            rest = rest.get(end + 2..).unwrap_or(&[]);
            match self.framer.line(line, self.session.max_literal()) {
                Framed::Command(args) => control = self.session.handle(args, &mut out).await,
                Framed::Literal(n) => {
                    self.framer.literal(rest[..n].to_vec());
                    rest = &rest[n..];
                }
                Framed::TooBig(n) => {
                    self.framer.literal(Vec::new());
                    rest = &rest[n..];
                }
                Framed::Error(e) => control = self.session.bad_command(&e, &mut out),
            }
        }
        (String::from_utf8(out).unwrap(), control)
    }

    async fn login(&mut self) {
        let (r, _) = self
            .send("AUTHENTICATE \"PLAIN\" \"AGFsaWNlQGV4YW1wbGUub3JnAHB3\"\r\n")
            .await;
        assert_eq!(r, "OK \"Logged in\"\r\n");
    }
}

#[tokio::test]
async fn greeting_and_capabilities_follow_tls_and_login() {
    let c = Client::new(false);
    let mut out = Vec::new();
    c.session.greeting(&mut out);
    let g = String::from_utf8(out).unwrap();
    assert!(g.starts_with("\"IMPLEMENTATION\" \"hermod\"\r\n"), "{g}");
    assert!(g.contains("\"SASL\" \"\"\r\n"), "no PLAIN before TLS: {g}");
    assert!(g.contains("\"STARTTLS\"\r\n") && g.contains("\"VERSION\" \"1.0\"\r\n"));
    assert!(g.ends_with("OK \"mx.example.org ManageSieve ready\"\r\n"));

    let mut c = Client::new(false);
    let (r, control) = c.send("STARTTLS\r\n").await;
    assert_eq!(
        (r.as_str(), control),
        ("OK \"Begin TLS negotiation now\"\r\n", Control::StartTls)
    );
    let mut out = Vec::new();
    c.session.tls_started(&mut out);
    let caps = String::from_utf8(out).unwrap();
    assert!(
        caps.contains("\"SASL\" \"PLAIN\"") && !caps.contains("STARTTLS"),
        "{caps}"
    );
    c.login().await;
    let (caps, _) = c.send("CAPABILITY\r\n").await;
    assert!(caps.contains("\"OWNER\" \"alice@example.org\""), "{caps}");
}

#[tokio::test]
async fn authentication_needs_tls_and_right_credentials() {
    let mut c = Client::new(false);
    let (r, _) = c
        .send("AUTHENTICATE \"PLAIN\" \"AGFsaWNlQGV4YW1wbGUub3JnAHB3\"\r\n")
        .await;
    assert!(r.starts_with("NO (ENCRYPT-NEEDED)"), "{r}");
    let (r, _) = c.send("LISTSCRIPTS\r\n").await;
    assert_eq!(r, "NO \"Authenticate first\"\r\n");

    let mut c = Client::new(true);
    let (r, _) = c
        .send("AUTHENTICATE \"PLAIN\" \"AGFsaWNlQGV4YW1wbGUub3JnAHdyb25n\"\r\n")
        .await;
    assert_eq!(r, "NO \"Authentication failed\"\r\n");
    // The response after an empty challenge, as a literal.
    let (r, _) = c.send("AUTHENTICATE \"PLAIN\"\r\n").await;
    assert_eq!(r, "\"\"\r\n");
    let (r, _) = c.send("{28+}\r\nAGFsaWNlQGV4YW1wbGUub3JnAHB3\r\n").await;
    assert_eq!(r, "OK \"Logged in\"\r\n");
    let (r, _) = c.send("UNAUTHENTICATE\r\n").await;
    assert!(r.starts_with("OK"));
    let (r, _) = c.send("LISTSCRIPTS\r\n").await;
    assert!(r.starts_with("NO"));
}

#[tokio::test]
async fn scripts_are_stored_activated_renamed_and_deleted() {
    let mut c = Client::new(true);
    c.login().await;
    let (r, _) = c.send("PUTSCRIPT \"vacation\" {5+}\r\nkeep;\r\n").await;
    assert_eq!(r, "OK \"Putscript completed\"\r\n");
    let (r, _) = c
        .send("PUTSCRIPT \"bad\" {15+}\r\nkeep;\nbogus x;\n\r\n")
        .await;
    assert_eq!(r, "NO \"line 2, column 1: unknown command\"\r\n");
    let (r, _) = c.send("CHECKSCRIPT \"bogus;\"\r\n").await;
    assert!(r.starts_with("NO \"line 1"), "{r}");
    let (r, _) = c.send("CHECKSCRIPT \"keep;\"\r\n").await;
    assert!(r.starts_with("OK"), "{r}");
    let (r, _) = c.send("SETACTIVE \"vacation\"\r\n").await;
    assert!(r.starts_with("OK"));
    let (r, _) = c.send("LISTSCRIPTS\r\n").await;
    assert_eq!(r, "\"vacation\" ACTIVE\r\nOK \"Listscripts completed\"\r\n");
    let (r, _) = c.send("GETSCRIPT \"vacation\"\r\n").await;
    assert_eq!(r, "{5}\r\nkeep;\r\nOK \"Getscript completed\"\r\n");
    let (r, _) = c.send("DELETESCRIPT \"vacation\"\r\n").await;
    assert!(r.starts_with("NO (ACTIVE)"), "{r}");
    let (r, _) = c.send("RENAMESCRIPT \"vacation\" \"away\"\r\n").await;
    assert!(r.starts_with("OK"), "{r}");
    let (r, _) = c.send("LISTSCRIPTS\r\n").await;
    assert_eq!(r, "\"away\" ACTIVE\r\nOK \"Listscripts completed\"\r\n");
    let (r, _) = c.send("GETSCRIPT \"vacation\"\r\n").await;
    assert!(r.starts_with("NO (NONEXISTENT)"), "{r}");
    let (r, _) = c.send("SETACTIVE \"\"\r\n").await;
    assert!(r.starts_with("OK"));
    let (r, _) = c.send("DELETESCRIPT \"away\"\r\n").await;
    assert!(r.starts_with("OK"), "{r}");
    let (r, _) = c.send("NOOP \"t1\"\r\n").await;
    assert_eq!(r, "OK (TAG \"t1\") \"Done\"\r\n");
}

#[tokio::test]
async fn limits_on_count_size_and_names() {
    let mut c = Client::new(true);
    c.login().await;
    for name in ["a", "b"] {
        let (r, _) = c.send(&format!("PUTSCRIPT \"{name}\" \"keep;\"\r\n")).await;
        assert!(r.starts_with("OK"), "{r}");
    }
    let (r, _) = c.send("PUTSCRIPT \"c\" \"keep;\"\r\n").await;
    assert!(r.starts_with("NO (QUOTA/MAXSCRIPTS)"), "{r}");
    let (r, _) = c.send("HAVESPACE \"c\" 10\r\n").await;
    assert!(r.starts_with("NO (QUOTA/MAXSCRIPTS)"), "{r}");
    // Replacing one is fine.
    let (r, _) = c.send("HAVESPACE \"a\" 10\r\n").await;
    assert!(r.starts_with("OK"), "{r}");
    let (r, _) = c.send("HAVESPACE \"a\" 101\r\n").await;
    assert!(r.starts_with("NO (QUOTA/MAXSIZE)"), "{r}");
    // A literal over the limit is skipped and the command refused; the session goes on.
    let big = "x".repeat(150);
    let (r, _) = c
        .send(&format!("PUTSCRIPT \"a\" {{150+}}\r\n{big}\r\n"))
        .await;
    assert!(r.starts_with("NO \"Literal of 150 bytes"), "{r}");
    let (r, _) = c.send("PUTSCRIPT \"../x\" \"keep;\"\r\n").await;
    assert!(r.starts_with("NO"), "{r}");
    let (r, _) = c.send("PUTSCRIPT \".active\" \"keep;\"\r\n").await;
    assert!(r.starts_with("NO"), "{r}");
    let (r, _) = c.send("RENAMESCRIPT \"a\" \"b\"\r\n").await;
    assert!(r.starts_with("NO (ALREADYEXISTS)"), "{r}");
}

#[tokio::test]
async fn too_many_errors_end_with_bye() {
    let mut c = Client::new(true);
    let mut last = (String::new(), Control::Continue);
    for _ in 0..10 {
        last = c.send("BOGUS\r\n").await;
    }
    assert_eq!(
        last,
        ("BYE \"Too many errors\"\r\n".to_string(), Control::Close)
    );
    let mut c = Client::new(true);
    let (r, control) = c.send("LOGOUT\r\n").await;
    assert_eq!(
        (r.as_str(), control),
        ("OK \"Logout completed\"\r\n", Control::Close)
    );
}
