//! A real Thunderbird (Debian's, under xvfb-run, driven over Marionette by
//! tests/py/thunderbird_flow.py) against hermod: the account comes from hermod's autoconfig,
//! IMAP with STARTTLS, COMPRESS and UTF8=ACCEPT as Thunderbird negotiates them, folders
//! listed, a message opened, one deleted (moved to Trash), one sent through submission with
//! STARTTLS and its copy saved in Sent. A tap between Thunderbird and hermod records hermod's
//! side of every IMAP connection; any BAD or unexpected NO fails the test.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;

use common::Setup;

const USER: &str = "alice@localhost";
const PASSWORD: &str = "thunder-pw";
const OPEN_SUBJECT: &str = "Please open me";
const OPEN_TEXT: &str = "tb-open-marker-4711";
const DELETE_SUBJECT: &str = "Please delete me";
const KEEP_SUBJECT: &str = "Please keep me";
const SEND_SUBJECT: &str = "Grüße aus Thunderbird ✓";
const SEND_TEXT: &str = "tb-sent-marker-0815 Grüße";

fn message(subject: &str, body: &str) -> String {
    format!(
        "From: Bob <bob@example.org>\r\nTo: {USER}\r\nSubject: {subject}\r\n\
         Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{}@example.org>\r\n\r\n{body}\r\n",
        subject.replace(' ', "-")
    )
}

/// The messages (file contents) of one Maildir folder.
fn maildir_messages(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in entries.flatten() {
            if let Ok(text) = std::fs::read(e.path()) {
                out.push(String::from_utf8_lossy(&text).to_string());
            }
        }
    }
    out
}

fn count_with(messages: &[String], needle: &str) -> usize {
    messages.iter().filter(|m| m.contains(needle)).count()
}

/// What the tap recorded, per connection: the commands Thunderbird sent and hermod's answers.
#[derive(Default)]
struct Trace {
    /// (connection, client line) in order.
    commands: Vec<(String, String)>,
    /// (connection, server line) in order.
    responses: Vec<(String, String)>,
}

impl Trace {
    fn parse(text: &str) -> Trace {
        let mut t = Trace::default();
        for line in text.lines() {
            let Some((conn, rest)) = line.split_once(' ') else {
                continue;
            };
            if let Some(c) = rest.strip_prefix("C: ") {
                t.commands.push((conn.to_string(), c.to_string()));
            } else if let Some(s) = rest.strip_prefix("S: ") {
                t.responses.push((conn.to_string(), s.to_string()));
            }
        }
        t
    }

    /// The tags the client used on each connection.
    fn tags(&self) -> HashMap<&str, HashSet<&str>> {
        let mut tags: HashMap<&str, HashSet<&str>> = HashMap::new();
        for (conn, c) in &self.commands {
            if let Some(tag) = c
                .split(' ')
                .next()
                .filter(|t| !t.is_empty() && c.contains(' '))
            {
                tags.entry(conn.as_str()).or_default().insert(tag);
            }
        }
        tags
    }

    /// The command a tagged response answers.
    fn command_of(&self, conn: &str, tag: &str) -> String {
        self.commands
            .iter()
            .find(|(c, l)| c == conn && l.split(' ').next() == Some(tag))
            .map(|(_, l)| l.clone())
            .unwrap_or_default()
    }

    /// Every BAD (tagged or untagged) and every tagged NO, each with the command it answers.
    fn failures(&self) -> Vec<String> {
        let tags = self.tags();
        let mut out = Vec::new();
        for (conn, line) in &self.responses {
            let mut words = line.splitn(3, ' ');
            let (first, status) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            let status = status.to_ascii_uppercase();
            let tagged = tags.get(conn.as_str()).is_some_and(|t| t.contains(first));
            if status == "BAD" && (first == "*" || tagged) || status == "NO" && tagged {
                out.push(format!(
                    "connection {conn}: C: {}\n              S: {line}",
                    self.command_of(conn, first)
                ));
            }
        }
        out
    }

    /// Whether a command matching `pred` got a tagged OK.
    fn ok(&self, pred: impl Fn(&str) -> bool) -> bool {
        self.commands.iter().any(|(conn, c)| {
            let Some((tag, rest)) = c.split_once(' ') else {
                return false;
            };
            pred(&rest.to_ascii_uppercase())
                && self.responses.iter().any(|(sc, s)| {
                    sc == conn
                        && s.split_once(' ').is_some_and(|(t, r)| {
                            t == tag && r.to_ascii_uppercase().starts_with("OK")
                        })
                })
        })
    }

    fn any_response(&self, pred: impl Fn(&str) -> bool) -> bool {
        self.responses
            .iter()
            .any(|(_, s)| pred(&s.to_ascii_uppercase()))
    }
}

#[test]
#[ignore = "needs thunderbird, xvfb-run (Debian packages thunderbird xvfb xauth); .ci/run runs it"]
fn thunderbird_account_from_autoconfig_reads_deletes_sends() {
    common::need(&["thunderbird", "xvfb-run"]);
    let s = Setup::new("", "");
    // hermod's IMAP listener moves to 127.0.0.2 (same port): the autoconfig still announces
    // `localhost` and this port, where the test's tap listens and relays to hermod.
    let config = std::fs::read_to_string(&s.config).expect("config");
    let imap_line = format!("[imap]\nlisten = [\"127.0.0.1:{}\"]", s.ports.imap);
    assert!(config.contains(&imap_line), "{config}");
    std::fs::write(
        &s.config,
        config.replace(
            &imap_line,
            &format!("[imap]\nlisten = [\"127.0.0.2:{}\"]", s.ports.imap),
        ),
    )
    .expect("config");
    s.add_user(USER, PASSWORD);
    for (subject, body) in [
        (OPEN_SUBJECT, format!("Hello from Bob.\r\n{OPEN_TEXT}")),
        (DELETE_SUBJECT, "This one goes to Trash.".to_string()),
        (KEEP_SUBJECT, "This one stays.".to_string()),
    ] {
        let out = s.cli_bytes(
            &[
                "deliver",
                "--recipient",
                USER,
                "--sender",
                "bob@example.org",
            ],
            message(subject, &body).as_bytes(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let server = s.start("serve", s.ports.submission);

    let work = s.dir.path().join("thunderbird");
    std::fs::create_dir_all(&work).expect("work dir");
    let trace_path = s.dir.path().join("imap-trace.txt");
    let tls = s.data_dir().join("tls");
    let args = json_object(&[
        ("http_port", s.ports.http.to_string()),
        ("imap_port", s.ports.imap.to_string()),
        ("imap_backend", "\"127.0.0.2\"".into()),
        ("submission_port", s.ports.submission.to_string()),
        ("email", quoted(USER)),
        ("password", quoted(PASSWORD)),
        ("cert", quoted(&tls.join("cert.pem").display().to_string())),
        ("key", quoted(&tls.join("key.pem").display().to_string())),
        ("work", quoted(&work.display().to_string())),
        ("trace", quoted(&trace_path.display().to_string())),
        (
            "folders",
            "[\"Sent\",\"Trash\",\"Drafts\",\"Junk\",\"Archive\"]".into(),
        ),
        ("inbox_count", "3".into()),
        ("open_subject", quoted(OPEN_SUBJECT)),
        ("open_text", quoted(OPEN_TEXT)),
        ("delete_subject", quoted(DELETE_SUBJECT)),
        ("send_subject", quoted(SEND_SUBJECT)),
        ("send_body", quoted(SEND_TEXT)),
    ]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/thunderbird_flow.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&args)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let trace_text = std::fs::read_to_string(&trace_path).unwrap_or_default();
    let trace = Trace::parse(&trace_text);
    let failures = trace.failures();
    let tb_log = std::fs::read_to_string(work.join("thunderbird.log")).unwrap_or_default();
    let context = format!(
        "driver stdout:\n{stdout}\ndriver stderr:\n{}\nBAD/NO from hermod:\n{}\n\
         IMAP trace (hermod's side, via the tap):\n{trace_text}\nthunderbird log (tail):\n{}",
        String::from_utf8_lossy(&out.stderr),
        failures.join("\n"),
        tail(&tb_log, 60),
    );
    assert!(
        out.status.success() && stdout.contains("thunderbird ok"),
        "Thunderbird flow failed\n{context}"
    );
    assert!(failures.is_empty(), "hermod answered BAD or NO:\n{context}");
    eprintln!(
        "{stdout}IMAP trace: {} commands, {} response lines",
        trace.commands.len(),
        trace.responses.len()
    );

    // What Thunderbird negotiated, as hermod saw it.
    assert!(trace.ok(|c| c == "STARTTLS"), "no STARTTLS\n{context}");
    assert!(
        trace.ok(|c| c == "COMPRESS DEFLATE"),
        "COMPRESS not negotiated\n{context}"
    );
    assert!(
        trace.any_response(|s| s.starts_with("* ENABLED") && s.contains("UTF8=ACCEPT")),
        "UTF8=ACCEPT not enabled\n{context}"
    );
    assert!(
        trace.ok(|c| c.starts_with("LIST") || c.starts_with("XLIST")),
        "no LIST\n{context}"
    );
    assert!(
        trace.ok(|c| c.starts_with("UID MOVE") && c.contains("TRASH")),
        "no UID MOVE to Trash\n{context}"
    );
    assert!(
        trace.ok(|c| c.starts_with("APPEND") && c.contains("SENT")),
        "no APPEND to Sent\n{context}"
    );

    // Submission: hermod takes AUTH only after STARTTLS, so a login on the submission port
    // means Thunderbird used STARTTLS there, as the autoconfig said.
    let log = server.log();
    assert!(
        log.lines().any(|l| l.contains("service=\"submission\"")
            && l.contains("smtp auth succeeded")
            && l.contains(USER)),
        "no login on submission\n{context}\nhermod log:\n{log}"
    );

    // The store, as any other client would see it.
    let maildir = s.data_dir().join("mail/localhost/alice/Maildir");
    let inbox = maildir_messages(&maildir);
    let trash = maildir_messages(&maildir.join(".Trash"));
    let sent = maildir_messages(&maildir.join(".Sent"));
    assert_eq!(count_with(&inbox, DELETE_SUBJECT), 0, "{context}");
    assert_eq!(count_with(&trash, DELETE_SUBJECT), 1, "{context}");
    assert_eq!(count_with(&inbox, OPEN_SUBJECT), 1, "{context}");
    assert_eq!(count_with(&inbox, KEEP_SUBJECT), 1, "{context}");
    assert_eq!(count_with(&sent, "tb-sent-marker-0815"), 1, "{context}");
    // Sent to the user's own address: delivered through submission into the INBOX as well.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while count_with(&maildir_messages(&maildir), "tb-sent-marker-0815") == 0
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        count_with(&maildir_messages(&maildir), "tb-sent-marker-0815"),
        1,
        "{context}\nhermod log:\n{}",
        server.log()
    );
}

fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON object from keys and already-encoded JSON values.
fn json_object(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", quoted(k)))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn trace_failures_name_bad_and_tagged_no_with_their_command() {
    let trace = Trace::parse(
        "1 S: * OK [CAPABILITY IMAP4rev1] ready\n\
         1 C: 5 append \"Sent\" (\\Seen) UTF8 (~{375+}\n\
         1 C: <literal>\n\
         1 C: )\n\
         1 S: 5 BAD Unknown command\n\
         2 C: a1 select \"Nope\"\n\
         2 S: * NO [ALERT] not a tagged answer\n\
         2 S: a1 NO [NONEXISTENT] no such mailbox\n\
         2 C: a2 noop\n\
         2 S: a2 OK NOOP completed\n\
         3 S: * BAD [PARSE] garbage\n\
         3 S: 5 NO from a tag this connection never sent\n",
    );
    let failures = trace.failures();
    assert_eq!(failures.len(), 3, "{failures:#?}");
    assert!(
        failures[0].contains("C: 5 append \"Sent\""),
        "{failures:#?}"
    );
    assert!(failures[0].contains("S: 5 BAD"), "{failures:#?}");
    assert!(failures[1].contains("C: a1 select") && failures[1].contains("S: a1 NO"));
    assert!(failures[2].contains("S: * BAD"), "{failures:#?}");
    assert!(trace.ok(|c| c == "NOOP"));
    assert!(!trace.ok(|c| c.starts_with("SELECT")));
}
