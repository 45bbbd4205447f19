//! The HTTP listener as a client sees it: autoconfig, Autodiscover, /healthz, /metrics, and
//! the limits on what it accepts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hermod_common::metrics::{self, Counter};
use hermod_common::{Config, Context, Service, Shutdown};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Server {
    addr: SocketAddr,
    ctx: Arc<Context>,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<(), hermod_common::http::HttpError>>,
    _tmp: tempfile::TempDir,
}

async fn start() -> Server {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config::defaults(true);
    config.data_dir = tmp.path().to_path_buf();
    config.myhostname = "mail.example.org".into();
    for (service, addrs) in config.listen.iter_mut() {
        match service {
            Service::Http => *addrs = vec!["127.0.0.1:0".parse().unwrap()],
            // A non-default port shows the documents follow the config.
            Service::Imaps => *addrs = vec!["127.0.0.1:3993".parse().unwrap()],
            Service::Pop3 => addrs.clear(),
            _ => {}
        }
    }
    let ctx = Context::open(config).await.unwrap();
    ctx.bind(&[Service::Http]).unwrap();
    let addr = ctx
        .bound_addrs()
        .into_iter()
        .find(|(s, _)| *s == Service::Http)
        .unwrap()
        .1;
    ctx.directory.add_domain("example.org").await.unwrap();
    let shutdown = Shutdown::new();
    let task = tokio::spawn(hermod_common::http::serve(ctx.clone(), shutdown.clone()));
    Server {
        addr,
        ctx,
        shutdown,
        task,
        _tmp: tmp,
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Send raw bytes, read the whole reply (the request asks to close).
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("server did not close")
        .unwrap();
    String::from_utf8(out).unwrap()
}

fn parse(reply: &str) -> Reply {
    let (head, body) = reply.split_once("\r\n\r\n").expect("no header end");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

async fn get(addr: SocketAddr, host: &str, target: &str) -> Reply {
    let req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    parse(&raw(addr, req.as_bytes()).await)
}

async fn post(addr: SocketAddr, target: &str, body: &str) -> Reply {
    let req = format!(
        "POST {target} HTTP/1.1\r\nHost: autodiscover.example.org\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    parse(&raw(addr, req.as_bytes()).await)
}

fn servers(xml: &str) -> Vec<(String, String, String, u16, String)> {
    let doc = roxmltree::Document::parse(xml).unwrap();
    let text = |n: roxmltree::Node, name: &str| {
        n.children()
            .find(|c| c.has_tag_name(name))
            .and_then(|c| c.text())
            .unwrap_or("")
            .to_string()
    };
    doc.descendants()
        .filter(|n| n.has_tag_name("incomingServer") || n.has_tag_name("outgoingServer"))
        .map(|n| {
            (
                n.attribute("type").unwrap().to_string(),
                text(n, "hostname"),
                text(n, "socketType"),
                text(n, "port").parse().unwrap(),
                text(n, "username"),
            )
        })
        .collect()
}

#[tokio::test]
async fn thunderbird_finds_the_settings_on_both_paths() {
    let s = start().await;
    for path in [
        "/mail/config-v1.1.xml?emailaddress=alice%40example.org",
        "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice%40example.org",
    ] {
        let r = get(s.addr, "autoconfig.example.org", path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(r.header("content-type").unwrap().contains("xml"));
        let doc = roxmltree::Document::parse(&r.body).unwrap();
        let provider = doc
            .descendants()
            .find(|n| n.has_tag_name("emailProvider"))
            .unwrap();
        assert_eq!(provider.attribute("id"), Some("example.org"));
        let list = servers(&r.body);
        let want = |t: &str, sock: &str, port: u16| {
            assert!(
                list.iter().any(|(ty, host, so, p, user)| ty == t
                    && host == "mail.example.org"
                    && so == sock
                    && *p == port
                    && user == "%EMAILADDRESS%"),
                "no {t} {sock} {port} in {list:?}"
            )
        };
        want("imap", "SSL", 3993);
        want("imap", "STARTTLS", 2143);
        want("pop3", "SSL", 2995);
        want("smtp", "SSL", 2465);
        want("smtp", "STARTTLS", 2587);
        // POP3 on the plain port is off in this config.
        assert!(!list.iter().any(|(_, _, _, p, _)| *p == 2110), "{list:?}");
        // IMAP over TLS is the first choice.
        assert_eq!(list[0].0, "imap");
        assert_eq!(list[0].3, 3993);
    }
    // Without an address, the Host header names the domain.
    let r = get(
        s.addr,
        "autoconfig.example.org:2080",
        "/mail/config-v1.1.xml",
    )
    .await;
    assert!(
        r.body.contains("<domain>example.org</domain>"),
        "{}",
        r.body
    );
    // A domain hermod does not serve falls back to mydomain instead of being echoed.
    let r = get(
        s.addr,
        "autoconfig.example.org",
        "/mail/config-v1.1.xml?emailaddress=bob%40elsewhere.test",
    )
    .await;
    assert!(!r.body.contains("elsewhere.test"), "{}", r.body);
}

#[tokio::test]
async fn autodiscover_answers_post_and_get() {
    let s = start().await;
    let request = r#"<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>alice@example.org</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>"#;
    let r = post(s.addr, "/Autodiscover/Autodiscover.xml", request).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let doc = roxmltree::Document::parse(&r.body).unwrap();
    let protocols: Vec<(String, String, u16, String)> = doc
        .descendants()
        .filter(|n| n.has_tag_name("Protocol"))
        .map(|n| {
            let t = |name: &str| {
                n.children()
                    .find(|c| c.has_tag_name(name))
                    .and_then(|c| c.text())
                    .unwrap_or("")
                    .to_string()
            };
            (
                t("Type"),
                t("Server"),
                t("Port").parse().unwrap(),
                t("LoginName"),
            )
        })
        .collect();
    assert!(
        protocols.contains(&(
            "IMAP".into(),
            "mail.example.org".into(),
            3993,
            "alice@example.org".into()
        )),
        "{protocols:?}"
    );
    assert!(
        protocols
            .iter()
            .any(|(t, _, p, _)| t == "SMTP" && *p == 2587),
        "{protocols:?}"
    );

    let r = get(
        s.addr,
        "autodiscover.example.org",
        "/autodiscover/autodiscover.xml?emailaddress=alice%40example.org",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("<LoginName>alice@example.org</LoginName>"));
    assert!(roxmltree::Document::parse(&r.body).is_ok());
}

#[tokio::test]
async fn health_and_metrics() {
    let s = start().await;
    let r = get(s.addr, "localhost", "/healthz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));

    let before = get(s.addr, "localhost", "/metrics").await;
    assert_eq!(before.status, 200);
    assert!(
        before
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    metrics::inc(Counter::MessagesDelivered);
    metrics::observe_delivery_latency(0.3);
    // A failed login through the shared authenticator counts too.
    let failed = s
        .ctx
        .auth
        .verify("nobody@example.org", "wrong", "127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    assert!(failed.is_none());
    let after = get(s.addr, "localhost", "/metrics").await;
    let value = |text: &str, name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    for name in [
        "hermod_messages_delivered_total",
        "hermod_auth_failures_total",
        "hermod_delivery_latency_seconds_count",
    ] {
        assert!(
            value(&after.body, name) > value(&before.body, name),
            "{name} did not move"
        );
    }
    // The scrape's own connection is open while it is served.
    assert!(value(&after.body, "hermod_connections_open{service=\"http\"}") >= 1.0);
}

#[tokio::test]
async fn bad_requests_are_refused_and_the_listener_goes_on() {
    let s = start().await;
    assert_eq!(get(s.addr, "localhost", "/nothing-here").await.status, 404);
    let r = parse(
        &raw(
            s.addr,
            b"DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await,
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));

    // A body over the limit is refused by its declared length...
    let big = format!(
        "POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        10 * 1024 * 1024
    );
    assert_eq!(parse(&raw(s.addr, big.as_bytes()).await).status, 413);
    // ...and when it is chunked, by what arrives.
    let mut chunked = b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..80 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b'a'; 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(parse(&raw(s.addr, &chunked).await).status, 413);

    // Oversized headers get an error status, not a hang.
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\n\r\n",
        "j".repeat(64 * 1024)
    );
    let reply = raw(s.addr, huge.as_bytes()).await;
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 431"),
        "{reply}"
    );

    // A client that never finishes its request is cut off.
    let mut slow = TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), slow.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "a stalled request was not timed out");

    assert_eq!(get(s.addr, "localhost", "/healthz").await.status, 200);
}

#[tokio::test]
async fn shutdown_stops_the_listener() {
    let s = start().await;
    assert_eq!(get(s.addr, "localhost", "/healthz").await.status, 200);
    s.shutdown.trigger();
    let result = tokio::time::timeout(Duration::from_secs(10), s.task)
        .await
        .expect("serve did not return after shutdown")
        .unwrap();
    assert!(result.is_ok());
}

#[tokio::test]
async fn https_on_the_same_port() {
    let s = start().await;
    // Trust hermod's generated certificate, as a user who accepted it would.
    let pem = std::fs::read(&s.ctx.tls.cert_path).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /mail/config-v1.1.xml HTTP/1.1\r\nHost: autoconfig.example.org\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let r = parse(&String::from_utf8(out).unwrap());
    assert_eq!(r.status, 200);
    assert_eq!(servers(&r.body)[0].1, "mail.example.org");
    // Plain http still works on the same port.
    assert_eq!(get(s.addr, "localhost", "/healthz").await.status, 200);
}

#[tokio::test]
async fn mta_sts_policy_is_served_for_our_domains_only() {
    let s = start().await;
    let r = get(s.addr, "mta-sts.example.org", "/.well-known/mta-sts.txt").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(
        r.body,
        "version: STSv1\r\nmode: testing\r\nmx: mail.example.org\r\nmax_age: 604800\r\n"
    );
    assert_eq!(
        r.body,
        hermod_common::http::mta_sts::policy_text(&s.ctx.config)
    );
    let other = get(s.addr, "mta-sts.elsewhere.org", "/.well-known/mta-sts.txt").await;
    assert_eq!(other.status, 404);
    let bare = get(s.addr, "example.org", "/.well-known/mta-sts.txt").await;
    assert_eq!(bare.status, 404);
}
