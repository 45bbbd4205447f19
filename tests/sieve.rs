//! Sieve at delivery, end to end: mail received over SMTP lands where the user's script says,
//! with its flags; a broken script sends mail to INBOX and logs why. Plus the differential
//! test against Pigeonhole's `sieve-test` (Debian dovecot-sieve) in `sieve_cases/oracle.rs`.

mod common;
#[path = "sieve_cases/oracle.rs"]
mod oracle;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{LineClient, Setup, wait_until};
use hermod_mda::sieve::store::ScriptStore;

fn send(port: u16, from: &str, to: &str, message: &str) {
    let mut c = LineClient::connect(port);
    assert_eq!(c.reply().expect("greeting").0, 220);
    c.command("EHLO client.example", 250);
    c.command(&format!("MAIL FROM:<{from}>"), 250);
    c.command(&format!("RCPT TO:<{to}>"), 250);
    c.command("DATA", 354);
    c.send(message.as_bytes());
    c.command(".", 250);
    c.command("QUIT", 221);
}

/// The files of one Maildir folder (INBOX when `folder` is None), as (file name, content).
fn folder_files(data: &Path, folder: Option<&str>) -> Vec<(String, String)> {
    let mut dir: PathBuf = data.join("mail/localhost/alice/Maildir");
    if let Some(f) = folder {
        dir = dir.join(format!(".{f}"));
    }
    ["new", "cur"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(dir.join(d))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                String::from_utf8_lossy(&std::fs::read(e.path()).unwrap_or_default()).into_owned(),
            )
        })
        .collect()
}

fn message(subject: &str) -> String {
    format!(
        "From: Bob <bob@example.com>\r\nTo: alice@localhost\r\nSubject: {subject}\r\n\
         Message-ID: <{}@example.com>\r\n\r\nHello.\r\n",
        subject.replace(' ', ".")
    )
}

#[test]
fn script_files_into_folder_with_flags_and_headers() {
    let s = Setup::new("", "");
    s.add_user("alice@localhost", "wonderland");
    let scripts = ScriptStore::new(&s.data_dir());
    scripts
        .put(
            "alice",
            "localhost",
            "main",
            "require [\"fileinto\", \"imap4flags\", \"mailbox\", \"editheader\"];\n\
             if header :contains \"subject\" \"report\" {\n\
               addheader \"X-Filed-By\" \"sieve\";\n\
               fileinto :create :flags [\"\\\\Seen\", \"\\\\Flagged\"] \"Reports\";\n\
             } elsif header :contains \"subject\" \"spam\" { discard; }\n",
        )
        .expect("put script");
    scripts
        .activate("alice", "localhost", "main")
        .expect("activate");
    let server = s.start("serve", s.ports.smtp);
    send(
        s.ports.smtp,
        "bob@example.com",
        "alice@localhost",
        &message("weekly report"),
    );
    send(
        s.ports.smtp,
        "bob@example.com",
        "alice@localhost",
        &message("spam offer"),
    );
    send(
        s.ports.smtp,
        "bob@example.com",
        "alice@localhost",
        &message("lunch"),
    );
    let data = s.data_dir();
    let filed = wait_until("the report in Reports", Duration::from_secs(20), || {
        let f = folder_files(&data, Some("Reports"));
        (!f.is_empty()).then_some(f)
    });
    assert_eq!(filed.len(), 1);
    let (name, content) = &filed[0];
    assert!(content.contains("Subject: weekly report"), "{content}");
    assert!(content.contains("X-Filed-By: sieve"), "{content}");
    assert!(name.ends_with(":2,FS"), "flags in the file name: {name}");
    let inbox = wait_until("lunch in INBOX", Duration::from_secs(20), || {
        let f = folder_files(&data, None);
        f.iter()
            .any(|(_, c)| c.contains("Subject: lunch"))
            .then_some(f)
    });
    // The discarded message is nowhere: INBOX holds only lunch.
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert!(
        server
            .log()
            .contains("filtered to=<alice@localhost> by sieve")
    );
}

#[test]
fn broken_script_delivers_to_inbox_and_logs() {
    let s = Setup::new("", "");
    s.add_user("alice@localhost", "wonderland");
    // Written behind the store's back (as an admin might), so it never compiled.
    let dir = s.data_dir().join("sieve/localhost/alice");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("broken.sieve"), "keep;\nfileinto \"x\";\n").unwrap();
    std::fs::write(dir.join(".active"), "broken").unwrap();
    // A runtime error in an admin script also keeps the message.
    let before = s.data_dir().join("sieve/before.d");
    std::fs::create_dir_all(&before).unwrap();
    std::fs::write(
        before.join("10-include.sieve"),
        "require \"include\"; include :global \"missing\";",
    )
    .unwrap();
    let server = s.start("serve", s.ports.smtp);
    send(
        s.ports.smtp,
        "bob@example.com",
        "alice@localhost",
        &message("still arrives"),
    );
    let data = s.data_dir();
    wait_until("the message in INBOX", Duration::from_secs(20), || {
        folder_files(&data, None)
            .iter()
            .any(|(_, c)| c.contains("Subject: still arrives"))
            .then_some(())
    });
    // The log lines come through a reader thread: wait for them.
    let logged = |pattern: &dyn Fn(&str) -> bool| {
        wait_until("the sieve error line", Duration::from_secs(10), || {
            server.log().lines().any(pattern).then_some(())
        })
    };
    // The compile error names the user, the script and the line.
    logged(&|l: &str| {
        l.contains("sieve")
            && l.contains("alice@localhost")
            && l.contains("script broken")
            && l.contains("line 2")
    });
    // The runtime error names the admin script.
    logged(&|l: &str| l.contains("sieve") && l.contains("before.d/10-include"));
}
