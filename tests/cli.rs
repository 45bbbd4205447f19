//! The admin commands against a real data dir: users, domains, aliases, config errors.

mod common;

use common::Setup;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

#[test]
fn user_domain_alias_lifecycle() {
    let s = Setup::new("", "");
    s.add_user("alice@localhost", "wonderland");
    // Duplicate user: one clear line, non-zero exit.
    let out = s.cli(
        &["user", "add", "alice@localhost", "--password-stdin"],
        Some("x\n"),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    // Unknown domain.
    let out = s.cli(
        &["user", "add", "bob@example.org", "--password-stdin"],
        Some("x\n"),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not a local domain"),
        "{}",
        text(&out.stderr)
    );
    // Invalid address.
    let out = s.cli(
        &["user", "add", "bob@@example.org", "--password-stdin"],
        Some("x\n"),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("invalid address"),
        "{}",
        text(&out.stderr)
    );
    // Add the domain, then the user works; the domain is stored lower-cased.
    let out = s.cli(&["domain", "add", "Example.ORG"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    s.add_user("Bob@Example.org", "builder");
    let out = s.cli(&["user", "list"], None);
    let list = text(&out.stdout);
    assert!(list.contains("alice@localhost"), "{list}");
    assert!(list.contains("bob@example.org"), "{list}");
    let out = s.cli(&["domain", "list"], None);
    assert_eq!(text(&out.stdout), "localhost\nexample.org\n");
    // Aliases with several targets and a catch-all.
    let out = s.cli(
        &[
            "alias",
            "add",
            "team@example.org",
            "alice@localhost",
            "bob@example.org",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = s.cli(&["alias", "add", "@example.org", "bob@example.org"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = s.cli(&["alias", "list"], None);
    let list = text(&out.stdout);
    assert!(
        list.contains("team@example.org\talice@localhost, bob@example.org"),
        "{list}"
    );
    assert!(list.contains("@example.org\tbob@example.org"), "{list}");
    // A domain with users cannot be deleted.
    let out = s.cli(&["domain", "del", "example.org"], None);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("still has users"),
        "{}",
        text(&out.stderr)
    );
    let out = s.cli(&["user", "del", "bob@example.org"], None);
    assert!(out.status.success());
    let out = s.cli(
        &["user", "passwd", "alice@localhost", "--password-stdin"],
        Some("new\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = s.cli(&["user", "del", "ghost@localhost"], None);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no such user"));
}

#[test]
fn empty_password_is_refused_and_nothing_is_written() {
    let s = Setup::new("", "");
    let out = s.cli(
        &["user", "add", "carol@localhost", "--password-stdin"],
        Some("\n"),
    );
    assert!(!out.status.success());
    let out = s.cli(&["user", "list"], None);
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn config_errors_name_file_line_and_key() {
    let s = Setup::new("", "");
    let bad = s.dir.path().join("bad.toml");
    std::fs::write(&bad, "myhostname = \"mx.example.org\"\nmy_typo = 3\n").unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("line 2") && err.contains("my_typo"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    std::fs::write(&bad, "[smtp]\nlisten = [\"127.0.0.1:99999\"]\n").unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("line 2"), "{err}");
    let out = std::process::Command::new(common::BIN)
        .args(["check-config", "--config", "/nonexistent/hermod.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("/nonexistent/hermod.toml"));
}

#[test]
fn check_config_prints_effective_values() {
    let s = Setup::new(
        "myhostname = \"mx.example.net\"\nmynetworks = []",
        "[dns]\nnameservers = [\"127.0.0.1:10053\"]",
    );
    let out = s.cli(&["check-config"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cfg = text(&out.stdout);
    assert!(cfg.contains("myhostname = \"mx.example.net\""), "{cfg}");
    assert!(cfg.contains("mynetworks = []"), "{cfg}");
    assert!(cfg.contains("nameservers = [\"127.0.0.1:10053\"]"), "{cfg}");
    assert!(
        cfg.contains(&format!("listen = [\"127.0.0.1:{}\"]", s.ports.smtp)),
        "{cfg}"
    );
}

#[test]
fn unusable_data_dir_is_a_clear_error() {
    let out = std::process::Command::new(common::BIN)
        .args(["user", "list", "--dev", "--data-dir", "/dev/null/data"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("/dev/null/data"), "{err}");
}

#[test]
fn dns_prints_a_zone_fragment() {
    let s = Setup::new("myhostname = \"mail.example.org\"", "");
    let out = s.cli(&["dns", "example.org"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let zone = text(&out.stdout);
    assert!(zone.contains("example.org."), "{zone}");
    let mx = zone
        .lines()
        .find(|l| l.contains(" MX "))
        .unwrap_or_else(|| panic!("no MX in {zone}"));
    assert!(mx.contains("10 mail.example.org."), "{mx}");
    assert!(zone.contains("_submission._tcp.example.org."), "{zone}");
    assert!(zone.contains("v=spf1"), "{zone}");
    assert!(zone.contains("_dmarc.example.org."), "{zone}");
    for line in zone
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with(';'))
    {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(
            fields.len() >= 4 && fields.contains(&"IN"),
            "not a zone line: {line}"
        );
        assert!(fields[0].ends_with('.'), "owner not absolute: {line}");
    }
    let out = s.cli(&["dns", "not a domain"], None);
    assert!(!out.status.success());
}

/// POP3 USER/PASS over plain TCP (the test config allows plaintext AUTH): did it log in?
fn pop3_login(port: u16, user: &str, password: &str) -> bool {
    let mut c = common::LineClient::connect(port);
    assert!(c.line().starts_with("+OK"));
    c.send(format!("USER {user}\r\n").as_bytes());
    if !c.line().starts_with("+OK") {
        return false;
    }
    c.send(format!("PASS {password}\r\n").as_bytes());
    let l = c.line();
    let ok = l.starts_with("+OK");
    c.send(b"QUIT\r\n");
    ok
}

fn imap_login(port: u16, user: &str, password: &str) -> bool {
    let mut c = common::LineClient::connect(port);
    assert!(c.line().starts_with("* OK"));
    c.send(format!("a LOGIN \"{user}\" \"{password}\"\r\n").as_bytes());
    let ok = loop {
        let l = c.line();
        assert!(!l.is_empty(), "connection closed during LOGIN");
        if let Some(rest) = l.strip_prefix("a ") {
            break rest.starts_with("OK");
        }
    };
    c.send(b"z LOGOUT\r\n");
    ok
}

/// The daemons remember successful logins for a few minutes (so repeated logins skip
/// argon2id), yet `hermod user passwd`, run as another process, takes effect for the very
/// next login over IMAP and POP3: the old password fails, the new one works.
#[test]
fn a_password_change_takes_effect_at_once_for_remembered_logins() {
    let s = Setup::new("allow_plaintext_auth = true", "");
    s.add_user("alice@localhost", "old-secret");
    let _server = s.start("serve", s.ports.imap);
    for _ in 0..2 {
        assert!(imap_login(s.ports.imap, "alice@localhost", "old-secret"));
        assert!(pop3_login(s.ports.pop3, "alice@localhost", "old-secret"));
    }
    let out = s.cli(
        &["user", "passwd", "alice@localhost", "--password-stdin"],
        Some("new-secret\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!imap_login(s.ports.imap, "alice@localhost", "old-secret"));
    assert!(!pop3_login(s.ports.pop3, "alice@localhost", "old-secret"));
    assert!(imap_login(s.ports.imap, "alice@localhost", "new-secret"));
    assert!(pop3_login(s.ports.pop3, "alice@localhost", "new-secret"));
    // Changed back to the old password (a new salt, so a new hash): the old one works
    // again, the one in between no longer does.
    let out = s.cli(
        &["user", "passwd", "alice@localhost", "--password-stdin"],
        Some("old-secret\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!imap_login(s.ports.imap, "alice@localhost", "new-secret"));
    assert!(imap_login(s.ports.imap, "alice@localhost", "old-secret"));
}

fn deliver(s: &Setup, recipient: &str, message: &[u8]) -> std::process::Output {
    s.cli_bytes(
        &[
            "deliver",
            "--recipient",
            recipient,
            "--sender",
            "bob@example.org",
        ],
        message,
    )
}

/// Each admin command checked by what it does, with the daemon running: `user passwd`,
/// `user del`, `user quota`, `alias del` and a successful `domain del`.
#[test]
fn admin_commands_take_effect() {
    let s = Setup::new("allow_plaintext_auth = true", "");
    s.add_user("alice@localhost", "old-secret");
    s.add_user("carol@localhost", "carol-pw");
    let _server = s.start("serve", s.ports.pop3);
    assert!(pop3_login(s.ports.pop3, "alice@localhost", "old-secret"));

    // user passwd: the new password works, the old one no longer does.
    let out = s.cli(
        &["user", "passwd", "alice@localhost", "--password-stdin"],
        Some("new-secret\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(pop3_login(s.ports.pop3, "alice@localhost", "new-secret"));
    assert!(!pop3_login(s.ports.pop3, "alice@localhost", "old-secret"));

    // user del: gone from the list, cannot log in, mail to it is refused.
    assert!(pop3_login(s.ports.pop3, "carol@localhost", "carol-pw"));
    let out = s.cli(&["user", "del", "carol@localhost"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = text(&s.cli(&["user", "list"], None).stdout);
    assert!(!list.contains("carol@localhost"), "{list}");
    assert!(list.contains("alice@localhost"), "{list}");
    assert!(!pop3_login(s.ports.pop3, "carol@localhost", "carol-pw"));
    assert!(
        !deliver(&s, "carol@localhost", b"Subject: x\r\n\r\nx\r\n")
            .status
            .success()
    );

    // user quota: a message that fits is delivered, one past the quota is refused as a full
    // mailbox.
    let out = s.cli(&["user", "quota", "alice@localhost", "4K"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let small = format!("Subject: small\r\n\r\n{}\r\n", "s".repeat(500));
    let out = deliver(&s, "alice@localhost", small.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let big = format!("Subject: big\r\n\r\n{}\r\n", "b".repeat(6000));
    let out = deliver(&s, "alice@localhost", big.as_bytes());
    assert!(!out.status.success(), "over-quota message accepted");
    assert!(
        text(&out.stderr).contains("over quota") || text(&out.stdout).contains("over quota"),
        "{} {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stored = common::maildir_messages(&s.data_dir(), "localhost", "alice");
    assert_eq!(stored.len(), 1, "only the small message: {}", stored.len());
    // Lifting the quota (0: none) lets it in.
    let out = s.cli(&["user", "quota", "alice@localhost", "0"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        deliver(&s, "alice@localhost", big.as_bytes())
            .status
            .success()
    );

    // alias del: the alias delivers while it exists, and no longer afterwards.
    let out = s.cli(&["alias", "add", "team@localhost", "alice@localhost"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = deliver(&s, "team@localhost", b"Subject: to the team\r\n\r\nhi\r\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        common::maildir_messages(&s.data_dir(), "localhost", "alice")
            .iter()
            .any(|m| m.contains("Subject: to the team"))
    );
    let out = s.cli(&["alias", "del", "team@localhost"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&s.cli(&["alias", "list"], None).stdout).contains("team@localhost"));
    let out = deliver(&s, "team@localhost", b"Subject: after del\r\n\r\nhi\r\n");
    assert!(
        !out.status.success(),
        "mail to a deleted alias was delivered"
    );

    // domain del: an empty domain goes, and then takes no users.
    let out = s.cli(&["domain", "add", "example.org"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = s.cli(&["domain", "del", "example.org"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&s.cli(&["domain", "list"], None).stdout),
        "localhost\n"
    );
    let out = s.cli(
        &["user", "add", "dave@example.org", "--password-stdin"],
        Some("x\n"),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not a local domain"),
        "{}",
        text(&out.stderr)
    );
}

/// A one-message SMTP server on `listener`: returns the envelope and data it received.
fn one_message_sink(listener: std::net::TcpListener) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        let (stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(15)))
            .expect("timeout");
        let mut w = stream.try_clone().expect("clone");
        let mut r = std::io::BufReader::new(stream);
        let mut got = String::new();
        w.write_all(b"220 sink.test ESMTP\r\n").expect("write");
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).expect("read") == 0 {
                return got;
            }
            let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
            let reply: &[u8] = match verb.as_str() {
                "EHLO" | "HELO" => b"250 sink.test\r\n",
                "DATA" => {
                    w.write_all(b"354 go on\r\n").expect("write");
                    loop {
                        let mut l = String::new();
                        if r.read_line(&mut l).expect("read") == 0 || l == ".\r\n" {
                            break;
                        }
                        got.push_str(&l);
                    }
                    b"250 2.0.0 taken\r\n"
                }
                "QUIT" => {
                    w.write_all(b"221 bye\r\n").expect("write");
                    return got;
                }
                _ => {
                    got.push_str(&line);
                    b"250 ok\r\n"
                }
            };
            w.write_all(reply).expect("write");
        }
    })
}

/// `queue flush` makes a deferred message go now instead of after its backoff (300 s by
/// default): the first attempt finds no server, then a server appears and `queue flush`
/// sends the message there at once.
#[test]
fn queue_flush_sends_a_deferred_message_now() {
    let dns = common::dns::FakeDns::start();
    dns.mx("remote.test", 10, "mx.remote.test");
    dns.a("mx.remote.test", std::net::Ipv4Addr::LOCALHOST);
    let mx_port = common::free_port();
    let s = Setup::new(
        "",
        &format!(
            "[dns]\nnameservers = [\"{}\"]\n[delivery]\nremote_port = {mx_port}\nminimal_backoff_time = 300\n",
            dns.addr
        ),
    );
    s.add_user("alice@localhost", "wonderland");
    let server = s.start("serve", s.ports.smtp);
    let mut c = common::LineClient::connect(s.ports.smtp);
    assert_eq!(c.reply().expect("greeting").0, 220);
    c.command("EHLO client.test", 250);
    c.command("MAIL FROM:<alice@localhost>", 250);
    c.command("RCPT TO:<carol@remote.test>", 250);
    c.command("DATA", 354);
    c.send(b"Subject: flushed\r\n\r\nsent after a flush\r\n.\r\n");
    assert_eq!(c.reply().expect("reply").0, 250);
    c.command("QUIT", 221);
    common::wait_until(
        "the first (failed) attempt",
        std::time::Duration::from_secs(20),
        || {
            server
                .log()
                .lines()
                .any(|l| l.contains("delivery attempt") && l.contains("carol@remote.test"))
                .then_some(())
        },
    );
    let listed = text(&s.cli(&["queue", "list"], None).stdout);
    assert!(listed.contains("carol@remote.test"), "{listed}");
    // Now the MX answers; without the flush the retry would come in 300 s.
    let listener = std::net::TcpListener::bind(("127.0.0.1", mx_port)).expect("bind MX");
    let sink = one_message_sink(listener);
    let out = s.cli(&["queue", "flush"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("1 recipient"),
        "{}",
        text(&out.stdout)
    );
    common::wait_until(
        "the flushed delivery",
        std::time::Duration::from_secs(20),
        || sink.is_finished().then_some(()),
    );
    let received = sink.join().expect("sink");
    assert!(
        received.contains("RCPT TO:<carol@remote.test>"),
        "{received}"
    );
    assert!(received.contains("Subject: flushed"), "{received}");
    common::wait_until("an empty queue", std::time::Duration::from_secs(15), || {
        (!text(&s.cli(&["queue", "list"], None).stdout).contains("carol@remote.test")).then_some(())
    });
}

/// `dns --check` looks the records up (here in a fake DNS) and reports each: the published
/// MX is ok, a wrong SPF record is WRONG, an absent DMARC record MISSING, and the exit status
/// says not all is well.
#[test]
fn dns_check_reports_each_record() {
    let dns = common::dns::FakeDns::start();
    dns.mx("example.org", 10, "mail.example.org");
    dns.a("mail.example.org", std::net::Ipv4Addr::new(127, 0, 0, 1));
    dns.txt("example.org", "v=spf1 -all");
    let s = Setup::new(
        "myhostname = \"mail.example.org\"",
        &format!("[dns]\nnameservers = [\"{}\"]\n", dns.addr),
    );
    let out = s.cli(&["dns", "example.org", "--check"], None);
    let report = text(&out.stdout);
    assert!(!out.status.success(), "{report}");
    let line = |needle: &str| {
        report
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} line in:\n{report}"))
            .to_string()
    };
    assert!(line(" MX ").starts_with("ok "), "{report}");
    assert!(
        line("_dmarc.example.org.").starts_with("MISSING "),
        "{report}"
    );
    let spf = report
        .lines()
        .find(|l| l.contains("TXT") && l.contains(" example.org."))
        .unwrap_or_else(|| panic!("no SPF line in:\n{report}"));
    assert!(
        spf.starts_with("WRONG ") && spf.contains("v=spf1 -all"),
        "{report}"
    );
}

#[test]
fn dkim_keys_are_made_listed_published_and_retired() {
    let s = Setup::new("myhostname = \"mail.example.org\"", "");
    let out = s.cli(&["domain", "add", "example.org"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = s.cli(&["dkim", "list"], None);
    let list = text(&out.stdout);
    let selectors: Vec<(&str, &str)> = list
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f[0], "example.org", "{l}");
            assert_eq!(f[3], "active", "{l}");
            (f[1], f[2])
        })
        .collect();
    assert_eq!(selectors.len(), 2, "an RSA and an Ed25519 key: {list}");
    assert!(selectors.iter().any(|(_, k)| *k == "rsa"), "{list}");
    assert!(selectors.iter().any(|(_, k)| *k == "ed25519"), "{list}");
    for (selector, _) in &selectors {
        let path = s
            .data_dir()
            .join(format!("dkim/example.org/{selector}.key"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    }
    let zone = text(&s.cli(&["dns", "example.org"], None).stdout);
    for (selector, kind) in &selectors {
        let line = zone
            .lines()
            .find(|l| l.starts_with(&format!("{selector}._domainkey.example.org.")))
            .unwrap_or_else(|| panic!("no record for {selector}: {zone}"));
        assert!(line.contains(&format!("v=DKIM1; k={kind}; p=")), "{line}");
    }

    // Another key by hand; then retiring one takes it out of the zone.
    let out = s.cli(
        &[
            "dkim",
            "generate",
            "example.org",
            "--selector",
            "extra",
            "--algorithm",
            "ed25519",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = s.cli(&["dkim", "retire", "example.org", "extra"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = text(&s.cli(&["dkim", "list", "example.org"], None).stdout);
    assert!(
        list.contains("example.org\textra\ted25519\tretired"),
        "{list}"
    );
    let zone = text(&s.cli(&["dns", "example.org"], None).stdout);
    assert!(!zone.contains("extra._domainkey"), "{zone}");
    let out = s.cli(&["dkim", "retire", "example.org", "extra"], None);
    assert!(!out.status.success());

    // --no-dkim makes none.
    let out = s.cli(&["domain", "add", "quiet.example", "--no-dkim"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&s.cli(&["dkim", "list", "quiet.example"], None).stdout).is_empty());
}
