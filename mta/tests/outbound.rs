//! Outbound delivery end to end on loopback: a fake DNS server answers MX/A queries, SMTP
//! sinks on 127.0.0.x (all on the one `remote_port`) play the remote servers, and the real
//! queue, outbound runner and local runner (for bounces) run in the test.

mod outbound_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hermod_mta::Queue;
use hermod_mta::envelope::Notify;
use hermod_mta::queue::RecipientStatus;
use mail_parser::{MessageParser, MimeHeaders};
use outbound_support::sink::{Sink, SinkOptions};
use outbound_support::{MESSAGE, World, wait_for};

/// The DSN filed into alice's mailbox, checked to be a well-formed RFC 3464 report, with the
/// text of its message/delivery-status part.
fn check_dsn(world: &World) -> (String, String) {
    let bounces = world.bounces();
    assert_eq!(bounces.len(), 1, "one bounce expected");
    let (sender, recipient, content) = &bounces[0];
    assert_eq!(sender, "", "a bounce comes from the null sender");
    assert_eq!(recipient, "alice@hermod.test");
    let text = String::from_utf8_lossy(content).into_owned();
    let parsed = MessageParser::default().parse(content.as_slice()).unwrap();
    // From MAILER-DAEMON@myorigin; the host (myhostname) is the Reporting-MTA.
    let from = parsed.from().and_then(|a| a.first()).expect("a From");
    assert_eq!(from.address(), Some("MAILER-DAEMON@hermod.test"), "{text}");
    assert!(
        text.contains("Reporting-MTA: dns; mx.hermod.test\r\n"),
        "{text}"
    );
    let ct = parsed.root_part().content_type().unwrap();
    assert_eq!(ct.ctype(), "multipart");
    assert_eq!(ct.subtype(), Some("report"));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    let status = parsed
        .parts
        .iter()
        .find(|p| {
            p.content_type()
                .is_some_and(|c| c.ctype() == "message" && c.subtype() == Some("delivery-status"))
        })
        .expect("a message/delivery-status part");
    let status = String::from_utf8_lossy(status.contents()).into_owned();
    (text, status)
}

#[tokio::test]
async fn delivers_to_the_lowest_mx_byte_exact() {
    let mut w = World::new(|_, _, _| {}).await;
    w.dns.mx("remote.test", 20, "mx2.remote.test");
    w.dns.mx("remote.test", 10, "mx1.remote.test");
    w.dns.address("mx1.remote.test", "127.0.0.2");
    w.dns.address("mx2.remote.test", "127.0.0.3");
    let best = Sink::start(w.at("127.0.0.2"), SinkOptions::default()).await;
    let second = Sink::start(w.at("127.0.0.3"), SinkOptions::default()).await;
    w.send("alice@hermod.test", &["bob@remote.test"], MESSAGE)
        .await;
    w.start(w.settings());

    let got = wait_for("delivery", async || best.messages().pop()).await;
    assert_eq!(got.mail_from, "MAIL FROM:<alice@hermod.test> SIZE=130");
    assert_eq!(got.recipients, ["bob@remote.test"]);
    assert_eq!(got.content, MESSAGE, "the body arrives byte for byte");
    assert_eq!(got.hello, "EHLO mx.hermod.test");
    wait_for("the queue to empty", async || {
        w.queue_is_empty().await.then_some(())
    })
    .await;
    assert!(second.messages().is_empty());
    w.stop().await;
}

#[tokio::test]
async fn falls_back_to_the_second_mx_when_the_first_refuses_connections() {
    let mut w = World::new(|_, _, _| {}).await;
    w.dns.mx("remote.test", 10, "mx1.remote.test");
    w.dns.mx("remote.test", 20, "mx2.remote.test");
    // Nothing listens on 127.0.0.4: connection refused.
    w.dns.address("mx1.remote.test", "127.0.0.4");
    w.dns.address("mx2.remote.test", "127.0.0.5");
    let second = Sink::start(w.at("127.0.0.5"), SinkOptions::default()).await;
    w.send("alice@hermod.test", &["bob@remote.test"], MESSAGE)
        .await;
    w.start(w.settings());
    let got = wait_for("delivery", async || second.messages().pop()).await;
    assert_eq!(got.recipients, ["bob@remote.test"]);
    wait_for("the queue to empty", async || {
        w.queue_is_empty().await.then_some(())
    })
    .await;
    w.stop().await;
}

#[tokio::test]
async fn implicit_mx_uses_the_domains_own_address() {
    let mut w = World::new(|_, _, _| {}).await;
    w.dns.address("plain.test", "127.0.0.6");
    let sink = Sink::start(w.at("127.0.0.6"), SinkOptions::default()).await;
    w.send("alice@hermod.test", &["carol@plain.test"], MESSAGE)
        .await;
    w.start(w.settings());
    let got = wait_for("delivery", async || sink.messages().pop()).await;
    assert_eq!(got.recipients, ["carol@plain.test"]);
    w.stop().await;
}

#[tokio::test]
async fn null_mx_bounces_at_once() {
    let mut w = World::new(|_, _, _| {}).await;
    w.dns.null_mx("nomail.test");
    w.send("alice@hermod.test", &["x@nomail.test"], MESSAGE)
        .await;
    w.start(w.settings());
    wait_for("the bounce", async || {
        (!w.bounces().is_empty()).then_some(())
    })
    .await;
    let (_, status) = check_dsn(&w);
    assert!(
        status.contains("Final-Recipient: rfc822; x@nomail.test\r\n"),
        "{status}"
    );
    assert!(status.contains("Action: failed\r\n"));
    assert!(status.contains("Status: 5.1.10\r\n"), "{status}");
    assert!(status.contains("null MX"), "{status}");
    w.stop().await;
}

#[tokio::test]
async fn mx_pointing_at_ourselves_bounces_instead_of_looping() {
    let mut w = World::new(|_, _, _| {}).await;
    w.dns.mx("loop.test", 10, outbound_support::MYHOSTNAME);
    w.dns.address(outbound_support::MYHOSTNAME, "127.0.0.7");
    w.send("alice@hermod.test", &["x@loop.test"], MESSAGE).await;
    w.start(w.settings());
    wait_for("the bounce", async || {
        (!w.bounces().is_empty()).then_some(())
    })
    .await;
    let (_, status) = check_dsn(&w);
    assert!(status.contains("Status: 5.4.6\r\n"), "{status}");
    assert!(status.contains("loops back to myself"), "{status}");
    w.stop().await;
}

#[tokio::test]
async fn temporary_failure_is_retried_with_backoff() {
    let mut w = World::new(|_, _, _| {}).await;
    w.dns.mx("remote.test", 10, "mx1.remote.test");
    w.dns.address("mx1.remote.test", "127.0.0.8");
    let tries = Arc::new(AtomicUsize::new(0));
    let counter = tries.clone();
    let sink = Sink::start(
        w.at("127.0.0.8"),
        SinkOptions {
            rcpt: Arc::new(move |_| {
                if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                    "451 4.3.0 Try again later".into()
                } else {
                    "250 2.1.5 Ok".into()
                }
            }),
            ..SinkOptions::default()
        },
    )
    .await;
    let id = w
        .send("alice@hermod.test", &["bob@remote.test"], MESSAGE)
        .await;
    w.start(w.settings());
    // First attempt: deferred, with the reply kept for `queue list`.
    let deferred = wait_for("the deferral", async || {
        let m = w.queue.show(&id).await.unwrap()?;
        (m.recipients[0].status == RecipientStatus::Deferred).then_some(m)
    })
    .await;
    assert_eq!(deferred.recipients[0].attempts, 1);
    assert_eq!(
        deferred.recipients[0].last_reply.as_deref(),
        Some("451 4.3.0 Try again later")
    );
    // minimal_backoff_time = 1 s: the retry comes soon and succeeds.
    let got = wait_for("the retry", async || sink.messages().pop()).await;
    assert_eq!(got.content, MESSAGE);
    assert_eq!(tries.load(Ordering::SeqCst), 2);
    wait_for("the queue to empty", async || {
        w.queue_is_empty().await.then_some(())
    })
    .await;
    assert!(w.bounces().is_empty());
    w.stop().await;
}

#[tokio::test]
async fn permanent_failure_bounces_with_a_dsn_per_recipient() {
    let mut w = World::new(|_, _, _| {}).await;
    w.dns.mx("remote.test", 10, "mx1.remote.test");
    w.dns.address("mx1.remote.test", "127.0.0.9");
    let sink = Sink::start(
        w.at("127.0.0.9"),
        SinkOptions {
            rcpt: Arc::new(|rcpt| {
                if rcpt.starts_with("nobody@") {
                    "550 5.1.1 <nobody@remote.test>: Recipient address rejected".into()
                } else {
                    "250 2.1.5 Ok".into()
                }
            }),
            ..SinkOptions::default()
        },
    )
    .await;
    w.send(
        "alice@hermod.test",
        &["nobody@remote.test", "bob@remote.test"],
        MESSAGE,
    )
    .await;
    w.start(w.settings());
    wait_for("the bounce", async || {
        (!w.bounces().is_empty()).then_some(())
    })
    .await;
    // The other recipient got the message, in the same transaction.
    let got = sink.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].recipients, ["bob@remote.test"]);

    let (text, status) = check_dsn(&w);
    assert!(text.contains("Subject: Undelivered Mail Returned to Sender"));
    assert!(
        text.contains("Subject: hello"),
        "the original headers come back"
    );
    for field in [
        "Reporting-MTA: dns; mx.hermod.test\r\n",
        "Final-Recipient: rfc822; nobody@remote.test\r\n",
        "Action: failed\r\n",
        "Status: 5.1.1\r\n",
        "Remote-MTA: dns; mx1.remote.test\r\n",
        "Diagnostic-Code: smtp; 550 5.1.1 <nobody@remote.test>: Recipient address rejected\r\n",
    ] {
        assert!(status.contains(field), "missing {field:?} in {status}");
    }
    assert!(
        !status.contains("bob@remote.test"),
        "only failures are reported"
    );
    wait_for("the queue to empty", async || {
        w.queue_is_empty().await.then_some(())
    })
    .await;
    w.stop().await;
}

#[tokio::test]
async fn a_bounce_that_fails_is_dropped_not_bounced() {
    let mut w = World::new(|_, _, _| {}).await;
    w.dns.mx("remote.test", 10, "mx1.remote.test");
    w.dns.address("mx1.remote.test", "127.0.0.10");
    let _sink = Sink::start(
        w.at("127.0.0.10"),
        SinkOptions {
            rcpt: Arc::new(|_| "550 5.1.1 No such user".into()),
            ..SinkOptions::default()
        },
    )
    .await;
    w.send("", &["gone@remote.test"], MESSAGE).await;
    let stats = w.start(w.settings());
    // A report would be queued in the same transaction that removes the message, and the
    // local runner removes it only after filing it: once the queue is empty, any bounce is
    // in the mailbox already.
    wait_for("the queue to empty", async || {
        w.queue_is_empty().await.then_some(())
    })
    .await;
    assert_eq!(
        stats
            .recipients_bounced
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the recipient was refused and bounced"
    );
    assert!(w.bounces().is_empty());
    w.stop().await;
}

#[tokio::test]
async fn one_connection_carries_several_messages() {
    let mut w = World::new(|_, _, _| {}).await;
    w.dns.mx("remote.test", 10, "mx1.remote.test");
    w.dns.address("mx1.remote.test", "127.0.0.11");
    let sink = Sink::start(w.at("127.0.0.11"), SinkOptions::default()).await;
    for i in 0..5 {
        w.send(
            "alice@hermod.test",
            &[&format!("user{i}@remote.test")],
            MESSAGE,
        )
        .await;
    }
    let stats = w.start(w.settings());
    wait_for("5 deliveries", async || {
        (sink.messages().len() == 5).then_some(())
    })
    .await;
    assert_eq!(sink.connections(), 1);
    assert!(sink.messages().iter().all(|m| m.connection == 1));
    assert_eq!(stats.connections.load(Ordering::SeqCst), 1);
    assert_eq!(stats.messages_sent.load(Ordering::SeqCst), 5);
    w.stop().await;
}

#[tokio::test]
async fn helo_fallback_and_servers_lacking_8bitmime() {
    let mut w = World::new(|_, _, _| {}).await;
    w.dns.mx("old.test", 10, "mx.old.test");
    w.dns.address("mx.old.test", "127.0.0.12");
    let sink = Sink::start(
        w.at("127.0.0.12"),
        SinkOptions {
            ehlo: false,
            ..SinkOptions::default()
        },
    )
    .await;
    w.send("alice@hermod.test", &["a@old.test"], MESSAGE).await;
    w.send(
        "alice@hermod.test",
        &["b@old.test"],
        "Subject: caf\u{e9}\r\n\r\nd\u{e9}j\u{e0} vu\r\n".as_bytes(),
    )
    .await;
    w.start(w.settings());
    wait_for("the bounce", async || {
        (!w.bounces().is_empty()).then_some(())
    })
    .await;
    let got = sink.messages();
    assert_eq!(
        got.len(),
        1,
        "only the 7-bit message goes to a HELO-only server"
    );
    assert_eq!(got[0].hello, "HELO mx.hermod.test");
    assert_eq!(got[0].mail_from, "MAIL FROM:<alice@hermod.test>");
    let (_, status) = check_dsn(&w);
    assert!(status.contains("Final-Recipient: rfc822; b@old.test"));
    assert!(status.contains("Status: 5.6.3\r\n"), "{status}");
    w.stop().await;
}

/// A sink TLS configuration with a self-signed certificate for relay.test (made the way
/// hermod makes its own), and that certificate.
fn relay_tls() -> (
    tempfile::TempDir,
    Arc<rustls::ServerConfig>,
    rustls::pki_types::CertificateDer<'static>,
) {
    use rustls::pki_types::pem::PemObject;
    let dir = tempfile::tempdir().unwrap();
    let mut config = hermod_common::Config::defaults(true);
    config.data_dir = dir.path().to_path_buf();
    config.myhostname = "relay.test".into();
    let tls = hermod_common::tls::Tls::load(&config).unwrap();
    let cert = rustls::pki_types::CertificateDer::from_pem_file(&tls.cert_path).unwrap();
    (dir, tls.server_config.clone(), cert)
}

#[tokio::test]
async fn relay_host_with_starttls_and_auth() {
    let mut w = World::new(|c, _, port| {
        c.relayhost = Some(format!("[relay.test]:{port}").parse().unwrap());
        c.delivery.relayhost_username = Some("hermod".into());
        c.delivery.relayhost_password = Some("relay-secret".into());
    })
    .await;
    w.dns.address("relay.test", "127.0.0.13");
    // Mail for these domains would go elsewhere by MX: the relay host takes it all.
    w.dns.mx("remote.test", 10, "mx1.remote.test");
    w.dns.address("mx1.remote.test", "127.0.0.14");
    let (_dir, server_config, _) = relay_tls();
    let relay = Sink::start(
        w.at("127.0.0.13"),
        SinkOptions {
            tls: Some(server_config),
            auth: Some(("hermod".into(), "relay-secret".into())),
            ..SinkOptions::default()
        },
    )
    .await;
    w.send("alice@hermod.test", &["bob@remote.test"], MESSAGE)
        .await;
    w.send("alice@hermod.test", &["dave@elsewhere.test"], MESSAGE)
        .await;
    w.start(w.settings());
    wait_for("2 relayed messages", async || {
        (relay.messages().len() == 2).then_some(())
    })
    .await;
    for m in relay.messages() {
        assert!(m.tls, "sent over STARTTLS");
        assert_eq!(m.auth_user.as_deref(), Some("hermod"));
        assert_eq!(m.content, MESSAGE);
    }
    let mut rcpts: Vec<String> = relay
        .messages()
        .into_iter()
        .flat_map(|m| m.recipients)
        .collect();
    rcpts.sort();
    assert_eq!(rcpts, ["bob@remote.test", "dave@elsewhere.test"]);
    w.stop().await;
}

#[tokio::test]
async fn require_tls_demands_a_verified_certificate() {
    let mut w = World::new(|c, _, port| {
        c.relayhost = Some(format!("[relay.test]:{port}").parse().unwrap());
        c.delivery.require_tls = true;
    })
    .await;
    w.dns.address("relay.test", "127.0.0.15");
    let (_dir, server_config, cert) = relay_tls();
    let relay = Sink::start(
        w.at("127.0.0.15"),
        SinkOptions {
            tls: Some(server_config),
            ..SinkOptions::default()
        },
    )
    .await;
    let id = w
        .send("alice@hermod.test", &["bob@remote.test"], MESSAGE)
        .await;
    // The self-signed certificate is not trusted: the message waits.
    w.start(w.settings());
    let deferred = wait_for("the deferral", async || {
        let m = w.queue.show(&id).await.unwrap()?;
        (m.recipients[0].status == RecipientStatus::Deferred).then_some(m)
    })
    .await;
    let reply = deferred.recipients[0].last_reply.clone().unwrap();
    assert!(reply.starts_with("451 4.7.5 TLS handshake"), "{reply}");
    w.stop().await;
    assert!(relay.messages().is_empty());

    // Trusting it, the retry (flushed as `hermod queue flush` would) goes through.
    let mut settings = w.settings();
    settings.extra_roots = vec![cert];
    w.start(settings);
    hermod_mta::outbound::flush(&w.queue).await.unwrap();
    let got = wait_for("delivery", async || relay.messages().pop()).await;
    assert!(got.tls);
    w.stop().await;
}

#[tokio::test]
async fn queue_survives_a_restart_and_resumes() {
    let mut w = World::new(|_, _, _| {}).await;
    w.dns.mx("remote.test", 10, "mx1.remote.test");
    w.dns.address("mx1.remote.test", "127.0.0.16");
    let id = w
        .send("alice@hermod.test", &["bob@remote.test"], MESSAGE)
        .await;
    // Nobody listens yet: the first attempt is deferred.
    w.start(w.settings());
    wait_for("the deferral", async || {
        let m = w.queue.show(&id).await.unwrap()?;
        (m.recipients[0].attempts == 1).then_some(())
    })
    .await;
    w.stop().await;

    // The daemon restarts: a new queue handle on the same directory, a new runner.
    let dir = w.queue.dir().to_path_buf();
    w.queue = Arc::new(Queue::open(&dir).await.unwrap());
    let queued = w.queue.show(&id).await.unwrap().unwrap();
    assert_eq!(queued.recipients[0].status, RecipientStatus::Deferred);
    assert_eq!(queued.recipients[0].attempts, 1);
    let sink = Sink::start(w.at("127.0.0.16"), SinkOptions::default()).await;
    w.start(w.settings());
    let got = wait_for("delivery after restart", async || sink.messages().pop()).await;
    assert_eq!(got.content, MESSAGE);
    wait_for("the queue to empty", async || {
        w.queue_is_empty().await.then_some(())
    })
    .await;
    w.stop().await;
}

#[tokio::test]
async fn flush_from_another_process_wakes_a_deferred_message() {
    let mut w = World::new(|c, _, _| {
        c.delivery.minimal_backoff_time = 3600;
        c.delivery.maximal_backoff_time = 3600;
    })
    .await;
    w.dns.mx("remote.test", 10, "mx1.remote.test");
    w.dns.address("mx1.remote.test", "127.0.0.17");
    let id = w
        .send("alice@hermod.test", &["bob@remote.test"], MESSAGE)
        .await;
    w.start(w.settings());
    wait_for("the deferral", async || {
        let m = w.queue.show(&id).await.unwrap()?;
        (m.recipients[0].attempts == 1).then_some(())
    })
    .await;
    let sink = Sink::start(w.at("127.0.0.17"), SinkOptions::default()).await;
    // `hermod queue retry ID` opens the queue itself, as another process would.
    let cli = Queue::open(w.queue.dir()).await.unwrap();
    let listed = hermod_mta::queue::listing::mailq(&cli.list().await.unwrap());
    assert!(
        listed.contains("bob@remote.test  [deferred, 1 attempt]"),
        "{listed}"
    );
    assert!(hermod_mta::outbound::retry(&cli, &id).await.unwrap());
    let got = wait_for("delivery after retry", async || sink.messages().pop()).await;
    assert_eq!(got.recipients, ["bob@remote.test"]);
    w.stop().await;
}

#[tokio::test]
async fn a_temporary_refusal_sends_the_message_to_the_next_mx_at_once() {
    let mut w = World::new(|_, _, _| {}).await;
    w.dns.mx("remote.test", 10, "mx1.remote.test");
    w.dns.mx("remote.test", 20, "mx2.remote.test");
    w.dns.address("mx1.remote.test", "127.0.0.18");
    w.dns.address("mx2.remote.test", "127.0.0.19");
    let busy = Sink::start(
        w.at("127.0.0.18"),
        SinkOptions {
            rcpt: Arc::new(|_| "452 4.3.1 Insufficient system storage".into()),
            ..SinkOptions::default()
        },
    )
    .await;
    let backup = Sink::start(w.at("127.0.0.19"), SinkOptions::default()).await;
    let id = w
        .send("alice@hermod.test", &["bob@remote.test"], MESSAGE)
        .await;
    w.start(w.settings());
    let got = wait_for("delivery by the backup MX", async || {
        backup.messages().pop()
    })
    .await;
    assert_eq!(got.recipients, ["bob@remote.test"]);
    assert!(busy.messages().is_empty());
    assert_eq!(busy.connections(), 1, "the best MX was tried first");
    wait_for("the queue to empty", async || {
        w.queue_is_empty().await.then_some(())
    })
    .await;
    assert!(w.queue.show(&id).await.unwrap().is_none());
    w.stop().await;
}

#[tokio::test]
async fn a_message_too_old_bounces_instead_of_waiting_again() {
    // maximal_queue_lifetime = 0: the first temporary failure is the last.
    let mut w = World::new(|c, _, _| c.delivery.maximal_queue_lifetime = 0).await;
    w.dns.mx("remote.test", 10, "mx1.remote.test");
    w.dns.address("mx1.remote.test", "127.0.0.20");
    w.send("alice@hermod.test", &["bob@remote.test"], MESSAGE)
        .await;
    w.start(w.settings());
    wait_for("the bounce", async || {
        (!w.bounces().is_empty()).then_some(())
    })
    .await;
    let (_, status) = check_dsn(&w);
    assert!(status.contains("Action: failed\r\n"));
    assert!(status.contains("Status: 4.4.1\r\n"), "{status}");
    assert!(status.contains("Connection refused"), "{status}");
    assert!(status.contains("gave up: message too old"), "{status}");
    w.stop().await;
}

#[tokio::test]
async fn credentials_are_never_sent_in_clear() {
    let mut w = World::new(|c, _, port| {
        c.relayhost = Some(format!("[relay.test]:{port}").parse().unwrap());
        c.delivery.relayhost_username = Some("hermod".into());
        c.delivery.relayhost_password = Some("relay-secret".into());
    })
    .await;
    w.dns.address("relay.test", "127.0.0.21");
    // AUTH offered, STARTTLS not: the mail waits rather than leak the password.
    let relay = Sink::start(
        w.at("127.0.0.21"),
        SinkOptions {
            auth: Some(("hermod".into(), "relay-secret".into())),
            ..SinkOptions::default()
        },
    )
    .await;
    let id = w
        .send("alice@hermod.test", &["bob@remote.test"], MESSAGE)
        .await;
    w.start(w.settings());
    let deferred = wait_for("the deferral", async || {
        let m = w.queue.show(&id).await.unwrap()?;
        (m.recipients[0].status == RecipientStatus::Deferred).then_some(m)
    })
    .await;
    let reply = deferred.recipients[0].last_reply.clone().unwrap();
    assert!(reply.starts_with("451 4.7.0 "), "{reply}");
    assert!(reply.contains("not sent in clear"), "{reply}");
    assert!(relay.messages().is_empty());
    assert!(w.bounces().is_empty());
    w.stop().await;
}

#[tokio::test]
async fn a_message_deferred_past_delay_warning_time_warns_the_sender_once() {
    // Warn after 1 s; retries every 1-2 s against a server that always says 4xx.
    let mut w = World::new(|c, _, _| c.delivery.delay_warning_time = 1).await;
    w.dns.mx("remote.test", 10, "mx1.remote.test");
    w.dns.address("mx1.remote.test", "127.0.0.22");
    let tries = Arc::new(AtomicUsize::new(0));
    let counter = tries.clone();
    let _sink = Sink::start(
        w.at("127.0.0.22"),
        SinkOptions {
            rcpt: Arc::new(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
                "451 4.3.0 Try again later".into()
            }),
            ..SinkOptions::default()
        },
    )
    .await;
    // Bob asked for nothing (default: failures and delays), carol for failures only.
    let id = w
        .send_with_notify(
            "alice@hermod.test",
            &[
                ("bob@remote.test", Notify::default()),
                ("carol@remote.test", Notify::from_param("FAILURE")),
            ],
            MESSAGE,
        )
        .await;
    w.start(w.settings());
    wait_for("the delay warning", async || {
        (!w.bounces().is_empty()).then_some(())
    })
    .await;
    let (text, status) = check_dsn(&w);
    assert!(text.contains("Subject: Delayed Mail (still being retried)\r\n"));
    assert!(text.contains("Auto-Submitted: auto-replied\r\n"));
    assert!(
        text.contains("Subject: hello"),
        "the original headers come back"
    );
    assert!(!text.contains("Hello Bob."), "but not the body");
    for field in [
        "Final-Recipient: rfc822; bob@remote.test\r\n",
        "Action: delayed\r\n",
        "Status: 4.3.0\r\n",
        "Remote-MTA: dns; mx1.remote.test\r\n",
        "Diagnostic-Code: smtp; 451 4.3.0 Try again later\r\n",
        "Will-Retry-Until: ",
    ] {
        assert!(status.contains(field), "missing {field:?} in {status}");
    }
    assert!(
        !status.contains("carol@"),
        "carol did not ask for delays: {status}"
    );
    let queued = w.queue.show(&id).await.unwrap().unwrap();
    assert!(
        queued.delay_warned,
        "the warning is remembered in the queue"
    );

    // More failed attempts: no second warning.
    let attempts = queued.recipients[0].attempts;
    wait_for("two more attempts", async || {
        let m = w.queue.show(&id).await.unwrap()?;
        (m.recipients[0].attempts >= attempts + 2).then_some(())
    })
    .await;
    assert_eq!(w.bounces().len(), 1, "one warning per message");

    // Nor after a restart.
    w.stop().await;
    let dir = w.queue.dir().to_path_buf();
    w.queue = Arc::new(Queue::open(&dir).await.unwrap());
    let attempts = w.queue.show(&id).await.unwrap().unwrap().recipients[0].attempts;
    w.start(w.settings());
    wait_for("two attempts after the restart", async || {
        let m = w.queue.show(&id).await.unwrap()?;
        (m.recipients[0].attempts >= attempts + 2).then_some(())
    })
    .await;
    assert_eq!(
        w.bounces().len(),
        1,
        "one warning per message, across restarts"
    );
    // Still waiting for delivery: no bounce until maximal_queue_lifetime.
    let m = w.queue.show(&id).await.unwrap().unwrap();
    assert!(
        m.recipients
            .iter()
            .all(|r| r.status == RecipientStatus::Deferred)
    );
    w.stop().await;
}

#[tokio::test]
async fn no_delay_warning_for_the_null_sender_or_notify_never() {
    let mut w = World::new(|c, _, _| c.delivery.delay_warning_time = 1).await;
    w.dns.mx("remote.test", 10, "mx1.remote.test");
    w.dns.address("mx1.remote.test", "127.0.0.23");
    let _sink = Sink::start(
        w.at("127.0.0.23"),
        SinkOptions {
            rcpt: Arc::new(|_| "451 4.3.0 Try again later".into()),
            ..SinkOptions::default()
        },
    )
    .await;
    let bounce = w.send("", &["bob@remote.test"], MESSAGE).await;
    let never = w
        .send_with_notify(
            "alice@hermod.test",
            &[("bob@remote.test", Notify::from_param("NEVER"))],
            MESSAGE,
        )
        .await;
    w.start(w.settings());
    for id in [&bounce, &never] {
        wait_for("three attempts", async || {
            let m = w.queue.show(id).await.unwrap()?;
            (m.recipients[0].attempts >= 3).then_some(())
        })
        .await;
    }
    assert!(w.bounces().is_empty(), "no warning");
    assert!(!w.queue.show(&never).await.unwrap().unwrap().delay_warned);
    w.stop().await;
}

/// A message too big for the queue database is sent from its queue file, a chunk at a time
/// with the dot-stuffing done on the way: the sink gets it byte for byte (lines starting
/// with `.` everywhere, including at the sender's chunk boundaries, and 8-bit content).
#[tokio::test]
async fn big_file_backed_message_is_streamed_byte_exact() {
    let mut w = World::new(|_, _, _| {}).await;
    w.dns.mx("remote.test", 10, "mx1.remote.test");
    w.dns.address("mx1.remote.test", "127.0.0.12");
    let sink = Sink::start(w.at("127.0.0.12"), SinkOptions::default()).await;
    // A `.` line right where the sender cuts its 256 KiB pieces, then many more.
    let cut = 256 * 1024;
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    while big.len() + 104 < cut {
        big.extend_from_slice(&[b'f'; 100]);
        big.extend_from_slice(b"\r\n");
    }
    big.resize(cut - 2, b'g');
    big.extend_from_slice(b"\r\n.\r\n");
    let mut n = 0;
    while big.len() < 3 * 1024 * 1024 {
        let line = match n % 4 {
            0 => b".a line starting with a dot\r\n".to_vec(),
            1 => "..two dots, caf\u{e9}\r\n".as_bytes().to_vec(),
            2 => format!("line {n}\r\n").into_bytes(),
            _ => b".\r\n".to_vec(),
        };
        big.extend_from_slice(&line);
        n += 1;
    }
    big.extend_from_slice(b"last line\r\n");
    assert!(big.len() > hermod_mta::queue::INLINE_MAX);
    let id = w
        .send("alice@hermod.test", &["bob@remote.test"], &big)
        .await;
    assert!(
        w.queue.message_path(&id).exists(),
        "the message is stored in a file"
    );
    w.start(w.settings());
    let got = wait_for("delivery", async || sink.messages().pop()).await;
    assert!(
        got.mail_from
            .starts_with(&format!("MAIL FROM:<alice@hermod.test> SIZE={}", big.len())),
        "{}",
        got.mail_from
    );
    assert_eq!(got.content.len(), big.len());
    assert!(got.content == big, "the body arrives byte for byte");
    wait_for("the queue to empty", async || {
        w.queue_is_empty().await.then_some(())
    })
    .await;
    w.stop().await;
}
