//! Mail authentication against a fake DNS on loopback: SPF results (include, redirect,
//! macros, errors), DKIM results of messages signed by dkimpy, DMARC policies and alignment,
//! forged Authentication-Results, and hermod's own signatures verified by dkimpy.

mod outbound_support;

use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hermod_common::config::{MailAuthConfig, Service};
use hermod_common::{Config, Context, Shutdown};
use hermod_mta::auth::keys::{Algorithm, KeyStore, StoredKey};
use hermod_mta::auth::{MailAuth, MessageFacts, MessageOutcome, SenderAuth};
use hermod_mta::session::{BackendError, LocalDomains, Reply};
use mail_auth::SpfResult;
use outbound_support::dns::FakeDns;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;

const CLIENT: &str = "192.0.2.10";
const HELO: &str = "mail.sender.test";

struct Ours;

impl LocalDomains for Ours {
    async fn is_local_domain(&self, domain: &str) -> Result<bool, BackendError> {
        Ok(domain == "hermod.test")
    }
}

struct Rig {
    tmp: tempfile::TempDir,
    dns: FakeDns,
    config: Config,
    auth: MailAuth,
}

async fn rig(configure: impl FnOnce(&mut MailAuthConfig)) -> Rig {
    let tmp = tempfile::tempdir().unwrap();
    let dns = FakeDns::start().await;
    let mut config = Config::defaults(true);
    config.data_dir = tmp.path().to_path_buf();
    config.myhostname = "mx.hermod.test".into();
    config.dns.nameservers = vec![hermod_common::config::ListenAddrString(
        dns.addr.to_string(),
    )];
    configure(&mut config.mail_auth);
    let auth = MailAuth::new(&config).unwrap();
    Rig {
        tmp,
        dns,
        config,
        auth,
    }
}

impl Rig {
    async fn sender(&self, sender: &str) -> Result<SenderAuth, Reply> {
        self.auth
            .check_sender(CLIENT.parse().unwrap(), HELO, sender, false, false)
            .await
    }

    /// MAIL FROM then end of DATA, as the session calls them on port 25.
    async fn receive(&self, sender: &str, message: &[u8]) -> MessageOutcome {
        let sender_auth = self.sender(sender).await.expect("sender accepted");
        let facts = MessageFacts {
            ip: CLIENT.parse::<IpAddr>().unwrap(),
            helo: HELO.into(),
            sender: sender.into(),
            authenticated: false,
            relay_allowed: false,
            remote_recipients: false,
            forwarded: false,
            sender_auth,
            trace_len: 0,
            queue_id: "TESTID".into(),
            recipients: vec!["bob@hermod.test".into()],
            user: None,
            size: message.len(),
        };
        self.auth
            .check_message(facts, message.to_vec(), &Ours)
            .await
    }

    /// A key for `domain`, published in the fake DNS.
    fn key(&self, domain: &str, selector: &str, algorithm: Algorithm) -> StoredKey {
        let store = KeyStore::new(&self.tmp.path().join("test-keys"));
        let key = store.generate(domain, selector, algorithm).unwrap();
        self.dns.txt(
            &format!("{selector}._domainkey.{domain}"),
            &format!(
                "v=DKIM1; k={}; p={}",
                algorithm.key_type(),
                key.public_key_base64
            ),
        );
        key
    }
}

fn accepted(outcome: MessageOutcome) -> String {
    match outcome {
        MessageOutcome::Accept(m) => String::from_utf8(m).unwrap(),
        MessageOutcome::Refuse(r) => panic!("refused: {}", r.to_line()),
        MessageOutcome::Discard => panic!("discarded"),
    }
}

fn refused(outcome: MessageOutcome) -> String {
    match outcome {
        MessageOutcome::Refuse(r) => r.to_line(),
        MessageOutcome::Accept(m) => panic!("accepted: {}", String::from_utf8_lossy(&m)),
        MessageOutcome::Discard => panic!("discarded"),
    }
}

/// Our Authentication-Results field, unfolded.
fn our_results(message: &str) -> String {
    let start = message
        .find("Authentication-Results: mx.hermod.test")
        .expect("our Authentication-Results");
    let rest = &message[start..];
    let mut end = 0;
    for line in rest.split_inclusive("\r\n") {
        if end > 0 && !line.starts_with([' ', '\t']) {
            break;
        }
        end += line.len();
    }
    rest[..end].replace("\r\n", "")
}

/// dkimpy must be there: these tests are `#[ignore]`d for a plain `cargo test`, and `.ci/run`
/// installs it and runs them with `--ignored`.
fn require_dkimpy() {
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import dkim, nacl"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "needs Debian's python3-dkim and python3-nacl (apt-get install python3-dkim python3-nacl)"
    );
}

fn dkim_tool(args: &[&str], input: &[u8]) -> (bool, Vec<u8>) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/dkim_tool.py");
    let mut child = Command::new("/usr/bin/python3")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        eprintln!("dkim_tool: {}", String::from_utf8_lossy(&out.stderr));
    }
    (out.status.success(), out.stdout)
}

/// dkimpy signs `message` with `key` (for RSA it wants PKCS#1, for Ed25519 the seed).
fn dkimpy_sign(dir: &Path, key: &StoredKey, message: &str, expired: bool) -> Vec<u8> {
    let path = dir.join(format!("{}-{}.dkimpy", key.domain, key.selector));
    let text = match key.algorithm {
        Algorithm::Rsa => rsa::RsaPrivateKey::from_pkcs8_der(&key.pkcs8)
            .unwrap()
            .to_pkcs1_pem(Default::default())
            .unwrap()
            .to_string(),
        // ring's PKCS#8 v2 document: 16 bytes of prefix, then the 32-byte seed.
        Algorithm::Ed25519 => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(&key.pkcs8[16..48])
        }
    };
    std::fs::write(&path, text).unwrap();
    let mut args = vec![
        "sign",
        path.to_str().unwrap(),
        &key.domain,
        &key.selector,
        key.algorithm.key_type(),
    ];
    if expired {
        args.push("expired");
    }
    let (ok, signed) = dkim_tool(&args, message.as_bytes());
    assert!(ok, "dkimpy could not sign");
    signed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_results_for_mail_from() {
    let r = rig(|_| {}).await;
    r.dns.txt("pass.test", "v=spf1 ip4:192.0.2.10 -all");
    r.dns.txt("fail.test", "v=spf1 ip4:198.51.100.1 -all");
    r.dns.txt("soft.test", "v=spf1 ip4:198.51.100.1 ~all");
    r.dns.txt("neutral.test", "v=spf1 ?all");
    r.dns.address("none.test", "198.51.100.7");
    // An include whose domain has no SPF record is a permanent error (RFC 7208 5.2).
    r.dns.txt(
        "perm.test",
        "v=spf1 include:nothing.perm.test ip4:192.0.2.10 -all",
    );
    r.dns.servfail("temp.test");
    r.dns.txt("inc.test", "v=spf1 include:_spf.inc.test -all");
    r.dns.txt("_spf.inc.test", "v=spf1 ip4:192.0.2.0/24 -all");
    r.dns.txt("redir.test", "v=spf1 redirect=_spf.inc.test");
    r.dns.txt("redir-out.test", "v=spf1 redirect=fail.test");
    r.dns
        .txt("macro.test", "v=spf1 exists:%{i}._ip.macro.test -all");
    r.dns.address("192.0.2.10._ip.macro.test", "127.0.0.2");
    r.dns.txt(
        "macro-out.test",
        "v=spf1 exists:%{l}.%{i}._ip.macro.test -all",
    );

    let cases = [
        ("a@pass.test", SpfResult::Pass),
        ("a@fail.test", SpfResult::Fail),
        ("a@soft.test", SpfResult::SoftFail),
        ("a@neutral.test", SpfResult::Neutral),
        ("a@none.test", SpfResult::None),
        ("a@perm.test", SpfResult::PermError),
        ("a@temp.test", SpfResult::TempError),
        ("a@inc.test", SpfResult::Pass),
        ("a@redir.test", SpfResult::Pass),
        ("a@redir-out.test", SpfResult::Fail),
        ("a@macro.test", SpfResult::Pass),
        ("someone@macro-out.test", SpfResult::Fail),
    ];
    for (sender, want) in cases {
        let auth = r.sender(sender).await.unwrap();
        let got = auth.mail_from.expect("SPF checked").result();
        assert_eq!(got, want, "SPF of {sender}");
    }

    // The result goes into Authentication-Results.
    let message = accepted(
        r.receive(
            "a@soft.test",
            b"From: a@soft.test\r\nSubject: x\r\n\r\nhi\r\n",
        )
        .await,
    );
    let results = our_results(&message);
    assert!(
        results.contains("spf=softfail") && results.contains("smtp.mailfrom=a@soft.test"),
        "{results}"
    );
    assert!(results.contains("iprev="), "{results}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_fail_is_refused_at_mail_from_only_when_configured() {
    let lenient = rig(|_| {}).await;
    lenient.dns.txt("fail.test", "v=spf1 ip4:198.51.100.1 -all");
    assert!(lenient.sender("a@fail.test").await.is_ok());

    let strict = rig(|c| c.spf_refuse_fail = true).await;
    strict.dns.txt("fail.test", "v=spf1 ip4:198.51.100.1 -all");
    strict.dns.txt("soft.test", "v=spf1 ip4:198.51.100.1 ~all");
    let reply = strict.sender("a@fail.test").await.unwrap_err();
    assert!(
        reply.to_line().starts_with("550 5.7.23"),
        "{}",
        reply.to_line()
    );
    assert!(
        strict.sender("a@soft.test").await.is_ok(),
        "softfail passes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3-dkim (Debian packages python3-dkim python3-nacl); .ci/run runs it with --ignored"]
async fn dkim_results_of_messages_signed_by_dkimpy() {
    require_dkimpy();
    let r = rig(|_| {}).await;
    let rsa = r.key("signer.test", "rsa1", Algorithm::Rsa);
    let ed = r.key("signer.test", "ed1", Algorithm::Ed25519);
    // Published under the selector "wrong", but the signature is made with another key.
    let _published = r.key("signer.test", "wrong", Algorithm::Rsa);
    let other = KeyStore::new(&r.tmp.path().join("other-keys"))
        .generate("signer.test", "wrong", Algorithm::Rsa)
        .unwrap();
    let message =
        "From: a@signer.test\r\nTo: b@hermod.test\r\nSubject: signed\r\n\r\nThe body.\r\n";
    let dir = r.tmp.path();

    let result_of = async |signed: Vec<u8>| {
        let delivered = accepted(r.receive("a@signer.test", &signed).await);
        our_results(&delivered)
    };

    let valid = result_of(dkimpy_sign(dir, &rsa, message, false)).await;
    assert!(
        valid.contains("dkim=pass") && valid.contains("header.s=rsa1"),
        "{valid}"
    );
    let valid_ed = result_of(dkimpy_sign(dir, &ed, message, false)).await;
    assert!(valid_ed.contains("dkim=pass"), "{valid_ed}");

    let signed = String::from_utf8(dkimpy_sign(dir, &rsa, message, false)).unwrap();
    let body_altered = result_of(signed.replace("The body.", "The b0dy.").into_bytes()).await;
    assert!(body_altered.contains("dkim=fail"), "{body_altered}");
    let header_altered = result_of(
        signed
            .replace("Subject: signed", "Subject: changed")
            .into_bytes(),
    )
    .await;
    assert!(header_altered.contains("dkim=fail"), "{header_altered}");

    let expired = result_of(dkimpy_sign(dir, &rsa, message, true)).await;
    assert!(expired.contains("dkim=fail"), "{expired}");
    assert!(!expired.contains("dkim=pass"), "{expired}");

    let wrong_key = result_of(dkimpy_sign(dir, &other, message, false)).await;
    assert!(wrong_key.contains("dkim=fail"), "{wrong_key}");
    assert!(!wrong_key.contains("dkim=pass"), "{wrong_key}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3-dkim (Debian packages python3-dkim python3-nacl); .ci/run runs it with --ignored"]
async fn dmarc_reject_quarantine_none_and_alignment() {
    require_dkimpy();
    let r = rig(|_| {}).await;
    for (domain, policy) in [
        ("reject.test", "p=reject"),
        ("quarantine.test", "p=quarantine"),
        ("none.test", "p=none"),
    ] {
        r.dns.txt(domain, "v=spf1 ip4:198.51.100.1 -all");
        r.dns
            .txt(&format!("_dmarc.{domain}"), &format!("v=DMARC1; {policy}"));
    }
    let msg =
        |from: &str| format!("From: x@{from}\r\nTo: bob@hermod.test\r\nSubject: s\r\n\r\nbody\r\n");

    let reply = refused(
        r.receive("x@reject.test", msg("reject.test").as_bytes())
            .await,
    );
    assert!(reply.starts_with("550 5.7.1"), "{reply}");

    let quarantined = accepted(
        r.receive("x@quarantine.test", msg("quarantine.test").as_bytes())
            .await,
    );
    assert!(quarantined.contains("X-Hermod-Quarantine: dmarc\r\n"));
    assert!(our_results(&quarantined).contains("dmarc=fail"));
    // The MDA files it into Junk.
    let ctx = Context::open(r.config.clone()).await.unwrap();
    ctx.directory.add_domain("hermod.test").await.unwrap();
    ctx.directory
        .add_user("bob@hermod.test", "pw", 0)
        .await
        .unwrap();
    let delivery = hermod_mda::Delivery::from_context(&ctx);
    let result = delivery
        .deliver_one(
            "x@quarantine.test",
            "bob@hermod.test",
            quarantined.as_bytes(),
        )
        .await;
    assert!(result.is_success(), "{:?}", result.reply);
    let bob = ctx.store.user("bob", "hermod.test").await.unwrap();
    assert_eq!(bob.status("Junk").await.unwrap().messages, 1);
    assert_eq!(bob.status("INBOX").await.unwrap().messages, 0);

    let none = accepted(r.receive("x@none.test", msg("none.test").as_bytes()).await);
    assert!(our_results(&none).contains("dmarc=fail"), "{none}");
    assert!(!none.contains("X-Hermod-Quarantine"));

    // Relaxed alignment (the default): d=align.test aligns with From: news.align.test.
    r.dns.txt("_dmarc.align.test", "v=DMARC1; p=reject");
    let align_key = r.key("align.test", "k1", Algorithm::Rsa);
    let relaxed = dkimpy_sign(r.tmp.path(), &align_key, &msg("news.align.test"), false);
    let relaxed = accepted(r.receive("bounce@elsewhere.test", &relaxed).await);
    assert!(our_results(&relaxed).contains("dmarc=pass"), "{relaxed}");

    // Strict alignment: the same signature does not align with a subdomain.
    r.dns
        .txt("_dmarc.strict.test", "v=DMARC1; p=reject; adkim=s; aspf=s");
    let strict_key = r.key("strict.test", "k1", Algorithm::Rsa);
    let strict = dkimpy_sign(r.tmp.path(), &strict_key, &msg("news.strict.test"), false);
    let reply = refused(r.receive("bounce@elsewhere.test", &strict).await);
    assert!(reply.starts_with("550 5.7.1"), "{reply}");
    // ...but the exact domain does.
    let exact = dkimpy_sign(r.tmp.path(), &strict_key, &msg("strict.test"), false);
    let exact = accepted(r.receive("bounce@elsewhere.test", &exact).await);
    assert!(our_results(&exact).contains("dmarc=pass"), "{exact}");

    // SPF alignment alone passes too.
    r.dns.txt("spf-aligned.test", "v=spf1 ip4:192.0.2.10 -all");
    r.dns
        .txt("_dmarc.spf-aligned.test", "v=DMARC1; p=reject; aspf=s");
    let spf = accepted(
        r.receive("x@spf-aligned.test", msg("spf-aligned.test").as_bytes())
            .await,
    );
    assert!(our_results(&spf).contains("dmarc=pass"), "{spf}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_results_are_stripped_and_our_domain_cannot_be_spoofed() {
    let r = rig(|_| {}).await;
    let forged = "Authentication-Results: mx.hermod.test; dkim=pass header.d=bank.test; dmarc=pass\r\n\
Authentication-Results: other.example; spf=pass\r\n\
X-Hermod-Quarantine: no\r\n\
From: x@bank.test\r\nSubject: s\r\n\r\nbody\r\n";
    let delivered = accepted(r.receive("x@bank.test", forged.as_bytes()).await);
    assert_eq!(
        delivered
            .matches("Authentication-Results: mx.hermod.test")
            .count(),
        1,
        "{delivered}"
    );
    assert!(!delivered.contains("header.d=bank.test"), "{delivered}");
    assert!(!delivered.contains("X-Hermod-Quarantine"), "{delivered}");
    assert!(delivered.contains("Authentication-Results: other.example; spf=pass"));
    assert!(delivered.starts_with("Authentication-Results: mx.hermod.test"));

    // From: one of our domains, from outside, no DMARC pass: refused.
    let spoof = "From: ceo@hermod.test\r\nSubject: pay this\r\n\r\nnow\r\n";
    let reply = refused(r.receive("ceo@hermod.test", spoof.as_bytes()).await);
    assert!(reply.starts_with("550 5.7.1"), "{reply}");
    // A second From address does not hide it (DMARC itself skips such messages).
    let two = "From: ceo@hermod.test, x@bank.test\r\nSubject: pay this\r\n\r\nnow\r\n";
    let reply = refused(r.receive("x@bank.test", two.as_bytes()).await);
    assert!(reply.starts_with("550 5.7.1"), "{reply}");
    // Turned off, it is delivered (with the results).
    let off = rig(|c| c.refuse_local_spoofing = false).await;
    accepted(off.receive("ceo@hermod.test", spoof.as_bytes()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3-dkim (Debian packages python3-dkim python3-nacl); .ci/run runs it with --ignored"]
async fn submitted_mail_is_signed_twice_and_dkimpy_verifies_it_with_the_published_keys() {
    require_dkimpy();
    let w = outbound_support::World::new(|c, _, _| {
        c.listen = vec![(Service::Submission, vec!["127.0.0.1:0".parse().unwrap()])];
        c.allow_plaintext_auth = true;
    })
    .await;
    let store = KeyStore::new(&w.ctx.config.data_dir);
    store
        .generate("hermod.test", "rsa1", Algorithm::Rsa)
        .unwrap();
    store
        .generate("hermod.test", "ed1", Algorithm::Ed25519)
        .unwrap();
    w.dns.mx("remote.test", 10, "mx1.remote.test");
    w.dns.address("mx1.remote.test", "127.0.0.31");
    let sink = outbound_support::sink::Sink::start(w.at("127.0.0.31"), Default::default()).await;
    w.ctx.bind(&[Service::Submission]).unwrap();
    let submission = w.ctx.bound_addrs()[0].1;
    let shutdown = Shutdown::new();
    let daemon = tokio::spawn(hermod_mta::serve_with(
        w.ctx.clone(),
        shutdown.clone(),
        Arc::new(outbound_support::Mailbox::default()),
    ));

    let token = hermod_common::sasl::encode_base64(b"\0alice@hermod.test\0secret");
    let script = [
        "EHLO laptop".to_string(),
        format!("AUTH PLAIN {token}"),
        "MAIL FROM:<alice@hermod.test>".into(),
        "RCPT TO:<bob@remote.test>".into(),
        "DATA".into(),
        "From: Alice <alice@hermod.test>\r\nTo: bob@remote.test\r\nSubject: signed twice\r\n\r\nHello Bob.\r\n.".into(),
        "QUIT".into(),
    ];
    let replies = smtp_dialogue(submission, &script).await;
    assert!(replies[6].starts_with("250 "), "{replies:?}");

    let got =
        outbound_support::wait_for("the remote delivery", async || sink.messages().pop()).await;
    let content = String::from_utf8(got.content.clone()).unwrap();
    assert_eq!(content.matches("DKIM-Signature:").count(), 2, "{content}");
    assert!(
        !content.contains("Authentication-Results"),
        "submissions are not verified"
    );

    // The records `hermod dns hermod.test` prints, with the keys from the data dir.
    let keys: Vec<_> = store
        .active("hermod.test")
        .unwrap()
        .iter()
        .map(StoredKey::dns_record)
        .collect();
    let zone = hermod_common::dns_records::render_zone(&hermod_common::dns_records::records(
        &w.ctx.config,
        "hermod.test",
        &keys,
    ));
    assert!(zone.contains("rsa1._domainkey.hermod.test."), "{zone}");
    let zone_path = w.tmp.path().join("zone.txt");
    std::fs::write(&zone_path, zone).unwrap();
    let (ok, out) = dkim_tool(&["verify", zone_path.to_str().unwrap()], &got.content);
    assert!(ok, "dkimpy: {}", String::from_utf8_lossy(&out));
    assert_eq!(String::from_utf8_lossy(&out).trim(), "verified 2");

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(20), daemon)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Sends each line (or DATA content, which ends with its own ".") and collects the replies;
/// the first reply is the greeting.
async fn smtp_dialogue(addr: std::net::SocketAddr, lines: &[String]) -> Vec<String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut conn = BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let mut replies = Vec::new();
    let read_reply = async |conn: &mut BufReader<tokio::net::TcpStream>| {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(20), conn.read_line(&mut line))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed after {all:?}");
            all.push_str(&line);
            if line.as_bytes().get(3) == Some(&b' ') {
                return all;
            }
        }
    };
    replies.push(read_reply(&mut conn).await);
    for line in lines {
        conn.get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        replies.push(read_reply(&mut conn).await);
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_25_refuses_spf_fail_at_mail_from_and_dmarc_reject_at_end_of_data() {
    let w = outbound_support::World::new(|c, _, _| {
        c.listen = vec![(Service::Smtp, vec!["127.0.0.1:0".parse().unwrap()])];
        // Loopback plays an outside client.
        c.mynetworks = Vec::new();
        c.mail_auth.spf_refuse_fail = true;
    })
    .await;
    // 127.0.0.1 is not allowed by either domain's SPF.
    w.dns.txt("fail.test", "v=spf1 ip4:198.51.100.1 -all");
    w.dns.txt("reject.test", "v=spf1 ip4:198.51.100.1 ~all");
    w.dns.txt("_dmarc.reject.test", "v=DMARC1; p=reject");
    w.ctx.bind(&[Service::Smtp]).unwrap();
    let smtp = w.ctx.bound_addrs()[0].1;
    let shutdown = Shutdown::new();
    let mailbox = Arc::new(outbound_support::Mailbox::default());
    let daemon = tokio::spawn(hermod_mta::serve_with(
        w.ctx.clone(),
        shutdown.clone(),
        mailbox.clone(),
    ));

    let replies = smtp_dialogue(
        smtp,
        &[
            "EHLO client.outside.test".into(),
            "MAIL FROM:<x@fail.test>".into(),
            "MAIL FROM:<x@reject.test>".into(),
            "RCPT TO:<alice@hermod.test>".into(),
            "DATA".into(),
            "From: x@reject.test\r\nSubject: s\r\n\r\nbody\r\n.".into(),
            "MAIL FROM:<x@other.test>".into(),
            "RCPT TO:<alice@hermod.test>".into(),
            "DATA".into(),
            "Authentication-Results: mx.hermod.test; dmarc=pass\r\nFrom: x@other.test\r\nSubject: s\r\n\r\nbody\r\n.".into(),
            "QUIT".into(),
        ],
    )
    .await;
    assert!(replies[2].starts_with("550 5.7.23"), "{replies:?}");
    assert!(replies[3].starts_with("250"), "{replies:?}");
    assert!(replies[6].starts_with("550 5.7.1"), "{replies:?}");
    assert!(replies[10].starts_with("250 "), "{replies:?}");

    let (_, _, message) = outbound_support::wait_for("the local delivery", async || {
        mailbox.delivered.lock().unwrap().first().cloned()
    })
    .await;
    let message = String::from_utf8(message).unwrap();
    assert!(
        message.starts_with("Received: "),
        "our Received stays on top"
    );
    assert_eq!(
        message
            .matches("Authentication-Results: mx.hermod.test")
            .count(),
        1,
        "{message}"
    );
    let results = our_results(&message);
    assert!(
        results.contains("spf=none") && !results.contains("dmarc=pass"),
        "{results}"
    );

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(20), daemon)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_big_enough_to_be_spooled_is_verified_too() {
    let w = outbound_support::World::new(|c, _, _| {
        c.listen = vec![(Service::Smtp, vec!["127.0.0.1:0".parse().unwrap()])];
        c.mynetworks = Vec::new();
    })
    .await;
    w.dns.txt("reject.test", "v=spf1 ip4:198.51.100.1 ~all");
    w.dns.txt("_dmarc.reject.test", "v=DMARC1; p=reject");
    w.ctx.bind(&[Service::Smtp]).unwrap();
    let smtp = w.ctx.bound_addrs()[0].1;
    let shutdown = Shutdown::new();
    let daemon = tokio::spawn(hermod_mta::serve_with(
        w.ctx.clone(),
        shutdown.clone(),
        Arc::new(outbound_support::Mailbox::default()),
    ));
    // Past the spool threshold (256 KiB): the session writes it to disk as it arrives.
    let line = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n";
    let body = line.repeat(600 * 1024 / line.len());
    let replies = smtp_dialogue(
        smtp,
        &[
            "EHLO client.outside.test".into(),
            "MAIL FROM:<x@reject.test>".into(),
            "RCPT TO:<alice@hermod.test>".into(),
            "DATA".into(),
            format!("From: x@reject.test\r\nSubject: big\r\n\r\n{body}."),
            "QUIT".into(),
        ],
    )
    .await;
    assert!(replies[5].starts_with("550 5.7.1"), "{:?}", &replies[5]);
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(20), daemon)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn dmarc_aggregate_reports_count_results_and_go_to_authorized_destinations() {
    use hermod_mta::auth::reports::store::ReportStore;
    use hermod_mta::auth::reports::today;
    use hermod_mta::queue::QueuedContent;
    use mail_auth::report::{ActionDisposition, DmarcResult, Report};

    let r = rig(|c| c.dmarc_reports = true).await;
    for domain in ["sender.test", "other.test"] {
        r.dns.txt(domain, &format!("v=spf1 ip4:{CLIENT} -all"));
    }
    // One destination inside the domain, one outside it that authorized the reports, and
    // for other.test only a destination that did not.
    r.dns.txt(
        "_dmarc.sender.test",
        "v=DMARC1; p=none; rua=mailto:dmarc@sender.test,mailto:rua@reports.test",
    );
    r.dns
        .txt("sender.test._report._dmarc.reports.test", "v=DMARC1");
    r.dns.txt(
        "_dmarc.other.test",
        "v=DMARC1; p=none; rua=mailto:x@unauthorized.test",
    );
    let msg =
        |from: &str| format!("From: x@{from}\r\nTo: bob@hermod.test\r\nSubject: s\r\n\r\nbody\r\n");
    for _ in 0..2 {
        accepted(
            r.receive("x@sender.test", msg("sender.test").as_bytes())
                .await,
        );
    }
    accepted(
        r.receive("x@other.test", msg("other.test").as_bytes())
            .await,
    );

    let ctx = Context::open(r.config.clone()).await.unwrap();
    let queue = hermod_mta::Queue::open(hermod_mta::queue_dir(&ctx.config))
        .await
        .unwrap();
    let store = ReportStore::open(&r.tmp.path().join("reports.db"))
        .await
        .unwrap();
    let reports = r.auth.reports();
    reports.flush(&store).await;
    assert_eq!(
        reports.send_due(&store, &ctx, &queue, today()).await,
        0,
        "a day's report waits for the day to end"
    );
    assert_eq!(reports.send_due(&store, &ctx, &queue, today() + 1).await, 1);
    assert!(
        store.due(today() + 1).await.unwrap().is_empty(),
        "rows cleared"
    );

    let queued = queue.list().await.unwrap();
    assert_eq!(queued.len(), 1);
    let mut to: Vec<String> = queued[0]
        .recipients
        .iter()
        .map(|r| r.address.clone())
        .collect();
    to.sort();
    assert_eq!(to, ["dmarc@sender.test", "rua@reports.test"]);
    assert_eq!(
        queued[0].sender,
        format!("postmaster@{}", r.config.myorigin)
    );
    let QueuedContent::Memory(content) = queue.content(&queued[0].id).await.unwrap() else {
        panic!("a small report is stored inline");
    };
    let report = Report::parse_rfc5322(&content, 1 << 20).expect("a DMARC aggregate report");
    assert_eq!(report.domain(), "sender.test");
    assert_eq!(report.org_name(), "mx.hermod.test");
    assert_eq!(report.records().len(), 1);
    let record = &report.records()[0];
    assert_eq!(record.count(), 2);
    assert_eq!(record.source_ip(), Some(CLIENT.parse().unwrap()));
    assert_eq!(record.action_disposition(), ActionDisposition::Pass);
    assert_eq!(record.dmarc_spf_result(), DmarcResult::Pass);
    assert_eq!(record.header_from(), "sender.test");
}

/// A message from sender.test (SPF pass) forwarded by an alias to a remote address: sealed
/// with hermod.test's RSA key. Returns the sealed message and the zone with that key.
async fn forwarded_and_sealed(r: &Rig) -> (Vec<u8>, std::path::PathBuf) {
    let mut config = r.config.clone();
    config.mydomain = "hermod.test".into();
    let store = KeyStore::new(&config.data_dir);
    let key = store
        .generate("hermod.test", "arc1", Algorithm::Rsa)
        .unwrap();
    r.dns.txt(
        "arc1._domainkey.hermod.test",
        &format!("v=DKIM1; k=rsa; p={}", key.public_key_base64),
    );
    r.dns
        .txt("sender.test", &format!("v=spf1 ip4:{CLIENT} -all"));
    let auth = MailAuth::new(&config).unwrap();
    let sender_auth = auth
        .check_sender(CLIENT.parse().unwrap(), HELO, "x@sender.test", false, false)
        .await
        .unwrap();
    let facts = MessageFacts {
        ip: CLIENT.parse::<IpAddr>().unwrap(),
        helo: HELO.into(),
        sender: "x@sender.test".into(),
        authenticated: false,
        relay_allowed: false,
        remote_recipients: false,
        // The backend found that this alias points to a remote address.
        forwarded: true,
        sender_auth,
        trace_len: 0,
        queue_id: "TESTID".into(),
        recipients: vec!["alias@hermod.test".into()],
        user: None,
        size: 70,
    };
    let message = b"From: x@sender.test\r\nTo: alias@hermod.test\r\nSubject: fwd\r\n\r\nbody\r\n";
    let sealed = accepted(auth.check_message(facts, message.to_vec(), &Ours).await);
    let keys: Vec<_> = store
        .active("hermod.test")
        .unwrap()
        .iter()
        .map(StoredKey::dns_record)
        .collect();
    let zone = hermod_common::dns_records::render_zone(&hermod_common::dns_records::records(
        &config,
        "hermod.test",
        &keys,
    ));
    let zone_path = r.tmp.path().join("arc-zone.txt");
    std::fs::write(&zone_path, zone).unwrap();
    (sealed.into_bytes(), zone_path)
}

#[tokio::test]
async fn forwarded_mail_is_arc_sealed_and_the_chain_verifies() {
    let r = rig(|_| {}).await;
    let (sealed, _) = forwarded_and_sealed(&r).await;
    let text = String::from_utf8_lossy(&sealed);
    assert!(text.starts_with("ARC-Seal: i=1;"), "{text}");
    assert!(text.contains("ARC-Message-Signature: i=1;"), "{text}");
    assert!(
        text.contains("ARC-Authentication-Results: i=1; mx.hermod.test"),
        "{text}"
    );
    assert!(
        text.contains("d=hermod.test") && text.contains("s=arc1"),
        "{text}"
    );
    // A receiver downstream (mail-auth here, dkimpy in the test below) validates the chain.
    let resolver = hermod_mta::outbound::route::resolver(&r.config).unwrap();
    let verifier = mail_auth::MessageAuthenticator(resolver);
    let parsed = mail_auth::AuthenticatedMessage::parse(&sealed).unwrap();
    let arc = verifier.verify_arc(&parsed).await;
    assert_eq!(arc.result(), &mail_auth::DkimResult::Pass, "{text}");

    // Mail that stays here is not sealed.
    let plain = accepted(
        r.receive(
            "x@sender.test",
            b"From: x@sender.test\r\nTo: bob@hermod.test\r\nSubject: s\r\n\r\nbody\r\n",
        )
        .await,
    );
    assert!(!plain.contains("ARC-Seal"), "{plain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3-dkim (Debian packages python3-dkim python3-nacl); .ci/run runs it with --ignored"]
async fn dkimpy_verifies_the_arc_seal_of_forwarded_mail() {
    require_dkimpy();
    let r = rig(|_| {}).await;
    let (sealed, zone) = forwarded_and_sealed(&r).await;
    let (ok, out) = dkim_tool(&["arcverify", zone.to_str().unwrap()], &sealed);
    assert!(ok, "dkimpy: {}", String::from_utf8_lossy(&out));
    assert!(String::from_utf8_lossy(&out).starts_with("arc pass"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_an_alias_forwards_leaves_arc_sealed() {
    let w = outbound_support::World::new(|c, _, _| {
        c.listen = vec![(Service::Smtp, vec!["127.0.0.1:0".parse().unwrap()])];
        c.mynetworks = Vec::new();
    })
    .await;
    let key = KeyStore::new(&w.ctx.config.data_dir)
        .generate("hermod.test", "arc1", Algorithm::Rsa)
        .unwrap();
    w.dns.txt(
        "arc1._domainkey.hermod.test",
        &format!("v=DKIM1; k=rsa; p={}", key.public_key_base64),
    );
    w.dns.txt("sender.test", "v=spf1 ip4:127.0.0.1 -all");
    w.dns.mx("remote.test", 10, "mx.remote.test");
    w.dns.address("mx.remote.test", "127.0.0.70");
    let remote = outbound_support::sink::Sink::start(w.at("127.0.0.70"), Default::default()).await;
    w.ctx
        .directory
        .add_alias("fwd@hermod.test", "carol@remote.test")
        .await
        .unwrap();
    w.ctx.bind(&[Service::Smtp]).unwrap();
    let smtp = w.ctx.bound_addrs()[0].1;
    let shutdown = Shutdown::new();
    let mailbox = Arc::new(outbound_support::Mailbox::default());
    let daemon = tokio::spawn(hermod_mta::serve_with(
        w.ctx.clone(),
        shutdown.clone(),
        mailbox.clone(),
    ));
    let replies = smtp_dialogue(
        smtp,
        &[
            "EHLO mail.sender.test".into(),
            "MAIL FROM:<x@sender.test>".into(),
            "RCPT TO:<fwd@hermod.test>".into(),
            "DATA".into(),
            "From: x@sender.test\r\nTo: fwd@hermod.test\r\nSubject: s\r\n\r\nbody\r\n.".into(),
            "QUIT".into(),
        ],
    )
    .await;
    assert!(replies[5].starts_with("250 "), "{replies:?}");
    let got =
        outbound_support::wait_for("the forwarded copy", async || remote.messages().pop()).await;
    assert_eq!(got.recipients, ["carol@remote.test"]);
    let text = String::from_utf8_lossy(&got.content).into_owned();
    assert!(text.contains("ARC-Seal: i=1;"), "{text}");
    let resolver = hermod_mta::outbound::route::resolver(&w.ctx.config).unwrap();
    let parsed = mail_auth::AuthenticatedMessage::parse(&got.content).unwrap();
    let arc = mail_auth::MessageAuthenticator(resolver)
        .verify_arc(&parsed)
        .await;
    assert_eq!(arc.result(), &mail_auth::DkimResult::Pass, "{text}");
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(20), daemon)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
