//! Interpreter tests, one group per extension, through the public API.

use std::collections::HashMap;

use super::*;

#[derive(Default)]
struct TestHost {
    scripts: HashMap<String, String>,
    mailboxes: Vec<String>,
    seen: Vec<String>,
}

impl SieveHost for TestHost {
    fn include(&mut self, name: &str, _global: bool) -> Result<Script, String> {
        let src = self.scripts.get(name).ok_or("no such script")?;
        compile(src).map_err(|e| e.to_string())
    }
    fn mailbox_exists(&self, name: &str) -> bool {
        self.mailboxes.iter().any(|m| m == name)
    }
    fn duplicate(&mut self, id: &str, _period: u64, _last: bool) -> bool {
        if self.seen.iter().any(|s| s == id) {
            return true;
        }
        self.seen.push(id.to_string());
        false
    }
    fn now(&self) -> i64 {
        // 2026-12-03 16:00:00 UTC
        1_796_313_600
    }
}

const MESSAGE: &str = "Return-Path: <bob@example.com>\r\n\
Received: from a by b; Thu, 3 Dec 2026 10:00:00 +0000\r\n\
From: Bob Smith <bob+lists@Example.com>\r\n\
To: alice@example.org, Carol <carol@example.net>\r\n\
Cc: dave@example.org\r\n\
Subject: [hermod-dev] Weekly report =?utf-8?q?caf=C3=A9?=\r\n\
Date: Thu, 3 Dec 2026 11:22:33 +0100\r\n\
Message-ID: <m1@example.com>\r\n\
List-Id: hermod developers <dev.hermod.example>\r\n\
X-Spam-Score: 7.5\r\n\
X-Priority: 10\r\n\
\r\n\
Hello Alice,\r\nthe numbers are in.\r\n";

fn run_with(script: &str, host: &mut TestHost) -> Outcome {
    let script = compile(script).unwrap_or_else(|e| panic!("compile: {e}"));
    let envelope = SieveEnvelope {
        from: "bob+lists@example.com".into(),
        to: "alice+sieve@example.org".into(),
        orig_to: "alice+sieve@example.org".into(),
        auth_user: None,
    };
    let message = SieveMessage::new(MESSAGE.as_bytes(), MESSAGE.len() as u64);
    execute(
        &[NamedScript {
            name: "test".into(),
            script,
        }],
        &message,
        &envelope,
        host,
    )
}

fn run(script: &str) -> Outcome {
    run_with(script, &mut TestHost::default())
}

fn keep() -> Action {
    Action::Keep { flags: vec![] }
}

fn fileinto(m: &str) -> Action {
    Action::FileInto {
        mailbox: m.into(),
        flags: vec![],
        create: false,
    }
}

/// The script files into "yes" when `test` holds, else keeps.
fn holds(requires: &str, test: &str) -> bool {
    let out = run(&format!(
        "require [\"fileinto\"{requires}];\nif {test} {{ fileinto \"yes\"; }}"
    ));
    assert!(out.errors.is_empty(), "{test}: {:?}", out.errors);
    out.actions == vec![fileinto("yes")]
}

#[test]
fn no_actions_is_implicit_keep() {
    assert_eq!(run("").actions, vec![keep()]);
    assert_eq!(run("# nothing\n").actions, vec![keep()]);
}

#[test]
fn core_tests() {
    assert!(holds("", "header :contains \"subject\" \"weekly\""));
    assert!(holds(
        "",
        "header :is \"Subject\" \"[hermod-dev] Weekly report café\""
    ));
    assert!(holds("", "header :matches \"subject\" \"*report*\""));
    assert!(!holds("", "header :is \"subject\" \"weekly\""));
    assert!(holds("", "address :domain :is \"from\" \"example.com\""));
    assert!(holds("", "address :localpart :is \"to\" \"carol\""));
    assert!(holds(
        "",
        "address :all :is [\"to\", \"cc\"] \"dave@example.org\""
    ));
    assert!(!holds("", "address :is \"subject\" \"x\""));
    assert!(holds("", "exists [\"List-Id\", \"Message-ID\"]"));
    assert!(!holds("", "exists [\"List-Id\", \"X-None\"]"));
    assert!(holds("", "size :over 100"));
    assert!(holds("", "size :under 10K"));
    assert!(holds("", "allof (true, not false)"));
    assert!(holds(
        "",
        "anyof (false, header :contains \"list-id\" \"dev.hermod\")"
    ));
    assert!(holds(
        "",
        "header :comparator \"i;octet\" :contains \"subject\" \"Weekly\""
    ));
    assert!(!holds(
        "",
        "header :comparator \"i;octet\" :contains \"subject\" \"weekly\""
    ));
}

#[test]
fn actions_and_implicit_keep() {
    assert_eq!(run("discard;").actions, vec![Action::Discard]);
    assert_eq!(
        run("require \"fileinto\"; fileinto \"A\"; fileinto \"A\";").actions,
        vec![fileinto("A")]
    );
    assert_eq!(run("keep; keep;").actions, vec![keep()]);
    assert_eq!(
        run("redirect \"x@example.net\";").actions,
        vec![Action::Redirect {
            address: "x@example.net".into(),
            copy: false
        }]
    );
    assert_eq!(
        run("require \"copy\"; redirect :copy \"x@example.net\";").actions,
        vec![
            Action::Redirect {
                address: "x@example.net".into(),
                copy: true
            },
            keep()
        ]
    );
    assert_eq!(run("stop; discard;").actions, vec![keep()]);
    let out = run("require \"reject\"; reject \"go away\";");
    assert_eq!(
        out.actions,
        vec![Action::Reject {
            reason: "go away".into()
        }]
    );
    let out = run("require \"ereject\"; ereject \"no\";");
    assert_eq!(
        out.actions,
        vec![Action::Ereject {
            reason: "no".into()
        }]
    );
}

#[test]
fn envelope_and_subaddress() {
    assert!(holds(
        ",\"envelope\"",
        "envelope :is \"from\" \"bob+lists@example.com\""
    ));
    assert!(holds(
        ",\"envelope\",\"subaddress\"",
        "envelope :detail \"to\" \"sieve\""
    ));
    assert!(holds(
        ",\"envelope\",\"subaddress\"",
        "envelope :user \"to\" \"alice\""
    ));
    assert!(holds(
        ",\"subaddress\"",
        "address :detail \"from\" \"lists\""
    ));
    assert!(!holds(",\"subaddress\"", "address :detail \"to\" \"\""));
}

#[test]
fn imap4flags() {
    let out = run("require [\"imap4flags\", \"fileinto\"];\n\
        setflag \"\\\\seen\"; addflag [\"$Label1\", \"\\\\Flagged\"]; removeflag \"$label1\";\n\
        fileinto :flags \"\\\\Answered\" \"A\"; fileinto \"B\";");
    assert_eq!(
        out.actions,
        vec![
            Action::FileInto {
                mailbox: "A".into(),
                flags: vec!["\\Answered".into()],
                create: false
            },
            Action::FileInto {
                mailbox: "B".into(),
                flags: vec!["\\Seen".into(), "\\Flagged".into()],
                create: false
            },
        ]
    );
    let out = run("require \"imap4flags\"; addflag \"\\\\Seen\";");
    assert_eq!(
        out.actions,
        vec![Action::Keep {
            flags: vec!["\\Seen".into()]
        }]
    );
    assert!(holds(
        ",\"imap4flags\"",
        "allof(true, not hasflag \"\\\\Seen\")"
    ));
}

#[test]
fn body_test() {
    assert!(holds(",\"body\"", "body :contains \"numbers are\""));
    assert!(holds(",\"body\"", "body :raw :contains \"Alice,\""));
    assert!(holds(
        ",\"body\"",
        "body :content \"text\" :contains \"hello\""
    ));
    assert!(!holds(",\"body\"", "body :contains \"Subject\""));
}

#[test]
fn variables() {
    let out = run("require [\"variables\", \"fileinto\"];\n\
        if header :matches \"List-Id\" \"*<*.hermod.example>\" { set \"list\" \"${2}\"; }\n\
        set :upperfirst \"box\" \"lists/${list}\";\n\
        fileinto \"${box}\";");
    assert_eq!(out.actions, vec![fileinto("Lists/dev")]);
    let out = run("require [\"variables\", \"fileinto\"];\n\
        set :length \"n\" \"abcd\"; set :lower :upperfirst \"a\" \"HELLO\";\n\
        fileinto \"${n}-${a}-${unknown}-${bad\";");
    assert_eq!(out.actions, vec![fileinto("4-Hello--${bad")]);
    assert!(holds(",\"variables\"", "string :is \"${undefined}\" \"\""));
}

#[test]
fn relational_and_numeric() {
    assert!(holds(
        ",\"relational\",\"comparator-i;ascii-numeric\"",
        "header :value \"ge\" :comparator \"i;ascii-numeric\" \"x-priority\" \"9\""
    ));
    assert!(!holds(
        ",\"relational\"",
        "header :value \"ge\" \"x-priority\" \"9\""
    ));
    assert!(holds(
        ",\"relational\",\"comparator-i;ascii-numeric\"",
        "address :count \"eq\" :comparator \"i;ascii-numeric\" [\"to\",\"cc\"] \"3\""
    ));
}

#[test]
fn vacation_action() {
    let out = run("require \"vacation\";\n\
        vacation :days 3 :subject \"Away\" :addresses [\"alice@example.org\"] \"I am away.\";");
    let Some(Action::Vacation(v)) = out.actions.first() else {
        panic!("{:?}", out.actions)
    };
    assert_eq!(v.period_seconds, 3 * 86_400);
    assert_eq!(v.subject.as_deref(), Some("Away"));
    assert_eq!(v.to, "bob+lists@example.com");
    assert_eq!(out.actions.last(), Some(&keep()));
    let out = run("require \"vacation-seconds\"; vacation :seconds 90000 \"x\";");
    assert!(matches!(&out.actions[0], Action::Vacation(v) if v.period_seconds == 90_000));
    let out = run("require \"vacation-seconds\"; vacation :seconds 60 \"x\";");
    assert!(matches!(&out.actions[0], Action::Vacation(v) if v.period_seconds == 86_400));
}

#[test]
fn date_and_index() {
    assert!(holds(
        ",\"date\"",
        "date :is \"date\" \"date\" \"2026-12-03\""
    ));
    assert!(holds(
        ",\"date\"",
        "date :originalzone :is \"date\" \"hour\" \"11\""
    ));
    assert!(holds(",\"date\"", "date :is \"date\" \"hour\" \"10\""));
    assert!(holds(
        ",\"date\"",
        "date :zone \"+0500\" :is \"date\" \"hour\" \"15\""
    ));
    assert!(holds(
        ",\"date\"",
        "currentdate :is \"date\" \"2026-12-03\""
    ));
    assert!(holds(
        ",\"date\"",
        "date :is \"received\" \"time\" \"10:00:00\""
    ));
    assert!(holds(
        ",\"index\"",
        "header :index 1 :last :contains \"to\" \"carol\""
    ));
    assert!(holds(
        ",\"index\"",
        "address :index 1 :is \"from\" \"bob+lists@example.com\""
    ));
}

#[test]
fn mailbox_and_create() {
    let mut host = TestHost {
        mailboxes: vec!["INBOX".into(), "Lists".into()],
        ..TestHost::default()
    };
    let out = run_with(
        "require [\"mailbox\", \"fileinto\"];\n\
         if mailboxexists \"Lists\" { fileinto :create \"Lists/dev\"; }",
        &mut host,
    );
    assert_eq!(
        out.actions,
        vec![Action::FileInto {
            mailbox: "Lists/dev".into(),
            flags: vec![],
            create: true
        }]
    );
}

#[test]
fn include_runs_and_bounds_loops() {
    let mut host = TestHost::default();
    host.scripts.insert(
        "lists".into(),
        "require \"fileinto\"; fileinto \"L\";".into(),
    );
    host.scripts.insert(
        "loop".into(),
        "require \"include\"; include \"loop\";".into(),
    );
    host.scripts
        .insert("ret".into(), "require \"include\"; return; discard;".into());
    let out = run_with("require \"include\"; include \"lists\";", &mut host);
    assert_eq!(out.actions, vec![fileinto("L")]);
    let out = run_with("require \"include\"; include \"ret\";", &mut host);
    assert_eq!(out.actions, vec![keep()]);
    let out = run_with("require \"include\"; include \"loop\";", &mut host);
    assert_eq!(out.actions, vec![keep()]);
    assert!(out.errors[0].contains("include"), "{:?}", out.errors);
    let out = run_with(
        "require \"include\"; include :optional \"none\";",
        &mut host,
    );
    assert!(out.errors.is_empty());
    let out = run_with("require \"include\"; include \"none\";", &mut host);
    assert_eq!(out.actions, vec![keep()]);
    assert_eq!(out.errors.len(), 1);
}

#[test]
fn global_variables_cross_includes() {
    let mut host = TestHost::default();
    host.scripts.insert(
        "setter".into(),
        "require [\"include\", \"variables\"]; global \"box\"; set \"box\" \"G\";".into(),
    );
    let out = run_with(
        "require [\"include\", \"variables\", \"fileinto\"]; global \"box\";\n\
         include \"setter\"; fileinto \"${box}\";",
        &mut host,
    );
    assert_eq!(out.actions, vec![fileinto("G")]);
}

#[test]
fn duplicate_test() {
    let mut host = TestHost::default();
    let script = "require [\"duplicate\"]; if duplicate { discard; }";
    assert_eq!(run_with(script, &mut host).actions, vec![keep()]);
    assert_eq!(run_with(script, &mut host).actions, vec![Action::Discard]);
}

#[test]
fn editheader() {
    let out = run("require \"editheader\";\n\
        addheader \"X-Sieve\" \"yes\"; deleteheader \"x-priority\";\n\
        deleteheader :contains \"cc\" \"nobody\";");
    let header = String::from_utf8(out.header.unwrap()).unwrap();
    assert!(header.starts_with("X-Sieve: yes\r\n"), "{header}");
    assert!(!header.contains("X-Priority"));
    assert!(header.contains("Cc: dave@example.org"));
    let out = run("require \"editheader\"; deleteheader \"Received\";");
    assert_eq!(out.errors.len(), 1);
    // Tests after an edit see the edited header.
    assert!(holds(",\"editheader\"", "allof(true, true)"));
    let out = run(
        "require [\"editheader\", \"fileinto\"]; addheader \"X-A\" \"1\";\n\
        if header :is \"x-a\" \"1\" { fileinto \"edited\"; }",
    );
    assert!(out.actions.contains(&fileinto("edited")));
}

#[test]
fn regex_test() {
    assert!(holds(
        ",\"regex\"",
        "header :regex \"subject\" \"^\\\\[hermod-[a-z]+\\\\]\""
    ));
    let out = run("require [\"regex\", \"variables\", \"fileinto\"];\n\
        if header :regex \"subject\" \"\\\\[([a-z-]+)\\\\]\" { fileinto \"${1}\"; }");
    assert_eq!(out.actions, vec![fileinto("hermod-dev")]);
    // A bad regex is refused when the script is compiled.
    let e =
        compile("require \"regex\"; if header :regex \"subject\" \"(\" { discard; }").unwrap_err();
    assert!(e.message.contains("regex"), "{e}");
    // One made at run time from a variable is a runtime error: implicit keep.
    let out = run("require [\"regex\", \"variables\"]; set \"re\" \"(\";\n\
        if header :regex \"subject\" \"${re}\" { discard; }");
    assert_eq!(out.actions, vec![keep()]);
    assert_eq!(out.errors.len(), 1);
}

#[test]
fn spamtest_reads_the_filter_header() {
    assert!(holds(
        ",\"spamtest\",\"relational\",\"comparator-i;ascii-numeric\"",
        "spamtest :value \"ge\" :comparator \"i;ascii-numeric\" \"10\""
    ));
    assert!(holds(
        ",\"spamtestplus\",\"relational\",\"comparator-i;ascii-numeric\"",
        "spamtest :percent :value \"eq\" :comparator \"i;ascii-numeric\" \"100\""
    ));
}

#[test]
fn encoded_character() {
    let out =
        run("require [\"encoded-character\", \"fileinto\"]; fileinto \"${hex:41}${unicode:e9}\";");
    assert_eq!(out.actions, vec![fileinto("A\u{e9}")]);
}

#[test]
fn runtime_limits() {
    let many = "require \"fileinto\";\n".to_string()
        + &(0..200)
            .map(|i| format!("fileinto \"f{i}\";\n"))
            .collect::<String>();
    let out = run(&many);
    assert_eq!(out.errors.len(), 1);
    assert!(out.actions.contains(&keep()));
    let redirects = (0..10)
        .map(|i| format!("redirect \"a{i}@x.org\";"))
        .collect::<String>();
    let out = run(&redirects);
    assert_eq!(out.errors.len(), 1);
    assert!(out.actions.contains(&keep()));
    let big =
        "require \"variables\"; set \"a\" \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\";\n"
            .to_string()
            + &"set \"a\" \"${a}${a}\";\n".repeat(40);
    let out = run(&big);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
}

#[test]
fn sequence_stops_after_a_script_cancels_keep() {
    let before = compile(
        "require \"fileinto\"; if header :contains \"subject\" \"weekly\" { fileinto \"Junk\"; }",
    )
    .unwrap();
    let user = compile("discard;").unwrap();
    let message = SieveMessage::new(MESSAGE.as_bytes(), MESSAGE.len() as u64);
    let scripts = [
        NamedScript {
            name: "before".into(),
            script: before,
        },
        NamedScript {
            name: "user".into(),
            script: user,
        },
    ];
    let out = execute(
        &scripts,
        &message,
        &SieveEnvelope::default(),
        &mut TestHost::default(),
    );
    assert_eq!(out.actions, vec![fileinto("Junk")]);
}

#[test]
fn hostile_scripts_are_refused_or_bounded() {
    let huge = format!(
        "require \"fileinto\"; fileinto \"{}\";",
        "x".repeat(100_000)
    );
    assert!(compile(&huge).unwrap_err().message.contains("too long"));
    let too_big = "keep;\n".repeat(300_000);
    assert!(compile(&too_big).unwrap_err().message.contains("too large"));
    let deep = "if true {".repeat(50) + &"}".repeat(50);
    assert!(compile(&deep).is_err());
    // Many includes of one script: bounded by the include count.
    let mut host = TestHost::default();
    host.scripts.insert("one".into(), "keep;".into());
    let wide = "require \"include\";\n".to_string() + &"include \"one\";\n".repeat(100);
    let start = std::time::Instant::now();
    let out = run_with(&wide, &mut host);
    assert!(out.errors[0].contains("includes"), "{:?}", out.errors);
    assert!(out.actions.contains(&keep()));
    // A regex bomb on a long header: linear time.
    let out = run(
        "require \"regex\"; if header :regex \"subject\" \"^(([a-z])+.)+[A-Z]([a-z])+$\" { discard; }",
    );
    assert_eq!(out.actions, vec![keep()]);
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
}
