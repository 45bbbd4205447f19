//! MTA-STS (RFC 8461) end to end on loopback: a fake DNS publishes the `_mta-sts` record and
//! the MX hosts, a local HTTPS server (certificate trusted as a private CA would be) serves
//! the policy, and SMTP sinks play the MX hosts, one of them an attacker's.

mod outbound_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hermod_mta::queue::RecipientStatus;
use outbound_support::sink::{Sink, SinkOptions};
use outbound_support::{MESSAGE, World, wait_for};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A self-signed certificate for `name` (made the way hermod makes its own), its server
/// configuration, and the directory holding it.
fn certificate(
    name: &str,
) -> (
    tempfile::TempDir,
    Arc<rustls::ServerConfig>,
    CertificateDer<'static>,
) {
    use rustls::pki_types::pem::PemObject;
    let dir = tempfile::tempdir().unwrap();
    let mut config = hermod_common::Config::defaults(true);
    config.data_dir = dir.path().to_path_buf();
    config.myhostname = name.into();
    let tls = hermod_common::tls::Tls::load(&config).unwrap();
    let cert = CertificateDer::from_pem_file(&tls.cert_path).unwrap();
    (dir, tls.server_config.clone(), cert)
}

/// An HTTPS server answering every request with `policy` (text/plain); counts requests.
struct PolicyServer {
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PolicyServer {
    async fn start(addr: SocketAddr, tls: Arc<rustls::ServerConfig>, policy: &str) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let requests: Arc<AtomicUsize> = Arc::default();
        let (count, policy) = (requests.clone(), policy.to_string());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, count, policy) = (acceptor.clone(), count.clone(), policy.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    assert!(
                        head.starts_with("GET /.well-known/mta-sts.txt HTTP/1.1\r\n"),
                        "{head}"
                    );
                    assert!(
                        head.to_ascii_lowercase().contains("host: mta-sts."),
                        "{head}"
                    );
                    count.fetch_add(1, Ordering::SeqCst);
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{policy}",
                        policy.len()
                    );
                    let _ = tls.write_all(reply.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        PolicyServer { requests, task }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn policy(mode: &str, mx: &str) -> String {
    format!("version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n")
}

/// Waits until the recipient of message `id` is deferred; returns the last reply.
async fn deferral(w: &World, id: &hermod_mta::QueueId) -> String {
    let m = wait_for("the deferral", async || {
        let m = w.queue.show(id).await.unwrap()?;
        (m.recipients[0].status == RecipientStatus::Deferred).then_some(m)
    })
    .await;
    m.recipients[0].last_reply.clone().unwrap()
}

#[tokio::test]
async fn enforce_uses_only_policy_mx_hosts_over_verified_tls_and_caches_the_policy() {
    let mut w = World::new(|_, _, _| {}).await;
    // The attacker's MX has the better preference: without MTA-STS it would get the mail.
    w.dns.mx("remote.test", 10, "evil.attacker.test");
    w.dns.mx("remote.test", 20, "mx1.remote.test");
    w.dns.address("evil.attacker.test", "127.0.0.21");
    w.dns.address("mx1.remote.test", "127.0.0.22");
    w.dns.txt("_mta-sts.remote.test", "v=STSv1; id=20261203T1;");
    w.dns.address("mta-sts.remote.test", "127.0.0.20");
    let (_d1, policy_tls, policy_cert) = certificate("mta-sts.remote.test");
    let (_d2, mx_tls, mx_cert) = certificate("mx1.remote.test");
    let server = PolicyServer::start(
        w.at("127.0.0.20"),
        policy_tls,
        &policy("enforce", "mx1.remote.test"),
    )
    .await;
    let evil = Sink::start(w.at("127.0.0.21"), SinkOptions::default()).await;
    let good = Sink::start(
        w.at("127.0.0.22"),
        SinkOptions {
            tls: Some(mx_tls),
            ..SinkOptions::default()
        },
    )
    .await;
    let mut settings = w.settings();
    settings.mta_sts_port = w.port;
    settings.extra_roots = vec![policy_cert, mx_cert];
    w.start(settings);
    w.send("alice@hermod.test", &["bob@remote.test"], MESSAGE)
        .await;
    let got = wait_for("delivery to the policy's MX", async || {
        good.messages().pop()
    })
    .await;
    assert!(got.tls, "enforce demands TLS");
    assert_eq!(got.content, MESSAGE);
    assert_eq!(evil.count(), 0, "the MX outside the policy got the mail");
    assert_eq!(
        evil.connections(),
        0,
        "the MX outside the policy was contacted"
    );
    assert_eq!(server.requests(), 1);

    // The policy server goes away: the cached policy (same id) still holds.
    drop(server);
    w.send("alice@hermod.test", &["carol@remote.test"], MESSAGE)
        .await;
    wait_for("the second delivery", async || {
        (good.count() == 2).then_some(())
    })
    .await;
    assert_eq!(evil.connections(), 0);
    w.stop().await;
    // Kept on disk for the next start.
    let kept = std::fs::read_to_string(w.tmp.path().join("mta-sts/remote.test")).unwrap();
    assert!(kept.starts_with("20261203T1\n"), "{kept}");
}

#[tokio::test]
async fn enforce_defers_without_a_matching_mx_and_testing_delivers_anyway() {
    let mut w = World::new(|_, _, _| {}).await;
    for (domain, policy_ip) in [("strict.test", "127.0.0.30"), ("trial.test", "127.0.0.31")] {
        w.dns.mx(domain, 10, "evil.attacker.test");
        w.dns.txt(&format!("_mta-sts.{domain}"), "v=STSv1; id=1");
        w.dns.address(&format!("mta-sts.{domain}"), policy_ip);
    }
    w.dns.address("evil.attacker.test", "127.0.0.32");
    let (_d1, strict_tls, strict_cert) = certificate("mta-sts.strict.test");
    let (_d2, trial_tls, trial_cert) = certificate("mta-sts.trial.test");
    let _strict = PolicyServer::start(
        w.at("127.0.0.30"),
        strict_tls,
        &policy("enforce", "*.strict.test"),
    )
    .await;
    let _trial = PolicyServer::start(
        w.at("127.0.0.31"),
        trial_tls,
        &policy("testing", "*.trial.test"),
    )
    .await;
    let evil = Sink::start(w.at("127.0.0.32"), SinkOptions::default()).await;
    let mut settings = w.settings();
    settings.mta_sts_port = w.port;
    settings.extra_roots = vec![strict_cert, trial_cert];
    w.start(settings);
    let strict = w
        .send("alice@hermod.test", &["bob@strict.test"], MESSAGE)
        .await;
    w.send("alice@hermod.test", &["bob@trial.test"], MESSAGE)
        .await;
    let reply = deferral(&w, &strict).await;
    assert!(
        reply.starts_with("451 4.7.5") && reply.contains("MTA-STS"),
        "{reply}"
    );
    let got = wait_for("the testing-mode delivery", async || evil.messages().pop()).await;
    assert_eq!(got.recipients, ["bob@trial.test"]);
    assert_eq!(evil.count(), 1, "only the testing-mode domain's mail");
    w.stop().await;
}

#[tokio::test]
async fn enforce_defers_when_the_mx_certificate_does_not_verify() {
    let mut w = World::new(|_, _, _| {}).await;
    w.dns.mx("remote.test", 10, "mx1.remote.test");
    w.dns.address("mx1.remote.test", "127.0.0.41");
    w.dns.txt("_mta-sts.remote.test", "v=STSv1; id=7");
    w.dns.address("mta-sts.remote.test", "127.0.0.40");
    let (_d1, policy_tls, policy_cert) = certificate("mta-sts.remote.test");
    // Not trusted: the sink's certificate is self-signed and not among the roots.
    let (_d2, mx_tls, _) = certificate("mx1.remote.test");
    let _server = PolicyServer::start(
        w.at("127.0.0.40"),
        policy_tls,
        &policy("enforce", "mx1.remote.test"),
    )
    .await;
    let mx = Sink::start(
        w.at("127.0.0.41"),
        SinkOptions {
            tls: Some(mx_tls),
            ..SinkOptions::default()
        },
    )
    .await;
    let mut settings = w.settings();
    settings.mta_sts_port = w.port;
    settings.extra_roots = vec![policy_cert];
    w.start(settings);
    let id = w
        .send("alice@hermod.test", &["bob@remote.test"], MESSAGE)
        .await;
    let reply = deferral(&w, &id).await;
    assert!(reply.starts_with("451 4.7.5"), "{reply}");
    assert_eq!(
        mx.count(),
        0,
        "nothing goes out without a verified certificate"
    );
    w.stop().await;
}

#[tokio::test]
async fn a_domain_without_a_record_is_delivered_as_before() {
    let mut w = World::new(|_, _, _| {}).await;
    w.dns.mx("plain.test", 10, "mx.plain.test");
    w.dns.address("mx.plain.test", "127.0.0.51");
    let mx = Sink::start(w.at("127.0.0.51"), SinkOptions::default()).await;
    w.start(w.settings());
    w.send("alice@hermod.test", &["bob@plain.test"], MESSAGE)
        .await;
    let got = wait_for("delivery", async || mx.messages().pop()).await;
    assert!(
        !got.tls,
        "the sink offers no TLS: plain text is still fine without a policy"
    );
    w.stop().await;
}

#[tokio::test]
async fn tls_reports_count_sessions_per_policy_and_are_sent_to_the_domains_rua() {
    use hermod_mta::auth::reports::store::ReportStore;
    use hermod_mta::auth::reports::{Reports, today};
    use hermod_mta::outbound::OutboundRunner;
    use mail_auth::report::tlsrpt::{PolicyType, ResultType, TlsReport};

    let w = World::new(|c, _, _| c.mail_auth.tls_reports = true).await;
    w.dns.mx("remote.test", 10, "mx1.remote.test");
    w.dns.address("mx1.remote.test", "127.0.0.62");
    w.dns.txt("_mta-sts.remote.test", "v=STSv1; id=r1");
    w.dns.address("mta-sts.remote.test", "127.0.0.61");
    w.dns.txt(
        "_smtp._tls.remote.test",
        "v=TLSRPTv1; rua=mailto:tls@reports.test",
    );
    // A domain with TLS reporting but no MTA-STS, whose server offers no STARTTLS.
    w.dns.mx("plain.test", 10, "mx.plain.test");
    w.dns.address("mx.plain.test", "127.0.0.63");
    w.dns.txt(
        "_smtp._tls.plain.test",
        "v=TLSRPTv1; rua=mailto:tls@reports.test",
    );
    w.dns.mx("reports.test", 10, "mx.reports.test");
    w.dns.address("mx.reports.test", "127.0.0.64");
    let (_d1, policy_tls, policy_cert) = certificate("mta-sts.remote.test");
    let (_d2, mx_tls, mx_cert) = certificate("mx1.remote.test");
    let _server = PolicyServer::start(
        w.at("127.0.0.61"),
        policy_tls,
        &policy("enforce", "mx1.remote.test"),
    )
    .await;
    let remote = Sink::start(
        w.at("127.0.0.62"),
        SinkOptions {
            tls: Some(mx_tls),
            ..SinkOptions::default()
        },
    )
    .await;
    let plain = Sink::start(w.at("127.0.0.63"), SinkOptions::default()).await;
    let collector = Sink::start(w.at("127.0.0.64"), SinkOptions::default()).await;

    let mut settings = w.settings();
    settings.mta_sts_port = w.port;
    settings.extra_roots = vec![policy_cert, mx_cert];
    let signing = Arc::new(hermod_mta::auth::sign::DkimSigning::new(
        hermod_mta::auth::keys::KeyStore::new(&w.ctx.config.data_dir),
    ));
    let reports: Arc<Reports> = Reports::new(&w.ctx.config, signing).unwrap();
    let runner = OutboundRunner::with_reports(
        w.ctx.clone(),
        w.queue.clone(),
        settings,
        Some(reports.clone()),
    )
    .unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(runner.run(shutdown.clone()));
    w.send("alice@hermod.test", &["bob@remote.test"], MESSAGE)
        .await;
    w.send("alice@hermod.test", &["bob@plain.test"], MESSAGE)
        .await;
    wait_for("both deliveries", async || {
        (remote.count() == 1 && plain.count() == 1).then_some(())
    })
    .await;

    let store = ReportStore::open(&w.tmp.path().join("reports.db"))
        .await
        .unwrap();
    reports.flush(&store).await;
    assert_eq!(
        reports
            .send_due(&store, &w.ctx, &w.queue, today() + 1)
            .await,
        2
    );
    let got = wait_for("both reports", async || {
        (collector.count() == 2).then(|| collector.messages())
    })
    .await;
    shutdown.cancel();
    task.await.unwrap();

    let mut by_domain = std::collections::HashMap::new();
    for m in got {
        assert_eq!(m.recipients, ["tls@reports.test"]);
        let report = TlsReport::parse_rfc5322(&m.content, 1 << 20).expect("a TLS report");
        assert_eq!(report.policies.len(), 1);
        let p = report.policies[0].clone();
        by_domain.insert(p.policy.policy_domain.clone(), p);
    }
    let sts = &by_domain["remote.test"];
    assert_eq!(sts.policy.policy_type, PolicyType::Sts);
    assert_eq!(sts.policy.mx_host, ["mx1.remote.test"]);
    assert_eq!(
        (sts.summary.total_success, sts.summary.total_failure),
        (1, 0)
    );
    let none = &by_domain["plain.test"];
    assert_eq!(none.policy.policy_type, PolicyType::NoPolicyFound);
    assert_eq!(
        (none.summary.total_success, none.summary.total_failure),
        (0, 1)
    );
    assert_eq!(
        none.failure_details[0].result_type,
        ResultType::StartTlsNotSupported
    );
    assert_eq!(
        none.failure_details[0].receiving_mx_hostname.as_deref(),
        Some("mx.plain.test")
    );
}
