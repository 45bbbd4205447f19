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
