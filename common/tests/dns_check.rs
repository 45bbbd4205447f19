//! `hermod dns --check` against a fake DNS server on loopback: what is published right, what
//! is missing and what is wrong, each with its fix.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use hermod_common::config::ListenAddrString;
use hermod_common::dns_records::{self, CheckResult, CheckStatus, RecordData};
use hermod_common::{Config, Service};
use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, CNAME, MX, PTR, SRV, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

type Zone = HashMap<(String, RecordType), Vec<RData>>;

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

/// A UDP DNS server answering from `zone`: NXDOMAIN for unknown names, an empty answer for
/// known names without records of the asked type.
async fn fake_dns(zone: Zone) -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(request) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
            reply.metadata.recursion_desired = request.metadata.recursion_desired;
            reply.metadata.recursion_available = true;
            reply.add_queries(request.queries.clone());
            if let Some(q) = request.queries.first() {
                let qname = q.name().to_ascii().to_ascii_lowercase();
                let known = zone.keys().any(|(n, _)| *n == qname);
                match zone.get(&(qname, q.query_type())) {
                    Some(data) => {
                        for d in data {
                            reply.add_answer(Record::from_rdata(q.name().clone(), 300, d.clone()));
                        }
                    }
                    None if !known => reply.metadata.response_code = ResponseCode::NXDomain,
                    None => {}
                }
            }
            let bytes = reply.to_vec().unwrap();
            let _ = socket.send_to(&bytes, peer).await;
        }
    });
    addr
}

fn config(dns: SocketAddr) -> Config {
    let mut c = Config::defaults(false);
    c.myhostname = "mail.example.org".into();
    c.dns.nameservers = vec![ListenAddrString(dns.to_string())];
    for (service, addrs) in c.listen.iter_mut() {
        if *service == Service::Smtp {
            *addrs = vec!["198.51.100.7:25".parse().unwrap()];
        }
    }
    c
}

fn find<'a>(results: &'a [CheckResult], rtype: &str, name: &str) -> &'a CheckResult {
    results
        .iter()
        .find(|r| r.record.rtype() == rtype && r.record.name == name)
        .unwrap_or_else(|| panic!("no {rtype} {name} checked"))
}

#[tokio::test]
async fn check_reports_ok_missing_and_wrong() {
    let mut zone = Zone::new();
    let mut put = |n: &str, t: RecordType, d: RData| {
        zone.entry((n.to_string(), t)).or_default().push(d);
    };
    put(
        "example.org.",
        RecordType::MX,
        RData::MX(MX::new(10, name("mx.other.example.net."))),
    );
    put(
        "example.org.",
        RecordType::TXT,
        RData::TXT(TXT::new(vec!["v=spf1 mx -all".into()])),
    );
    put(
        "mail.example.org.",
        RecordType::A,
        RData::A(A::new(198, 51, 100, 7)),
    );
    put(
        "_imaps._tcp.example.org.",
        RecordType::SRV,
        RData::SRV(SRV::new(0, 1, 994, name("mail.example.org."))),
    );
    put(
        "_submission._tcp.example.org.",
        RecordType::SRV,
        RData::SRV(SRV::new(0, 1, 587, name("mail.example.org."))),
    );
    put(
        "autoconfig.example.org.",
        RecordType::CNAME,
        RData::CNAME(CNAME(name("mail.example.org."))),
    );
    put(
        "7.100.51.198.in-addr.arpa.",
        RecordType::PTR,
        RData::PTR(PTR(name("static-7.isp.example.net."))),
    );
    let dns = fake_dns(zone).await;
    let config = config(dns);

    let results = tokio::time::timeout(
        Duration::from_secs(60),
        dns_records::check(&config, "example.org", &[]),
    )
    .await
    .expect("check took too long")
    .unwrap();
    let report = dns_records::render_check(&results);

    // Published right.
    assert_eq!(
        find(&results, "A", "mail.example.org.").status,
        CheckStatus::Ok,
        "{report}"
    );
    let spf = results
        .iter()
        .find(|r| r.record.name == "example.org." && r.record.rtype() == "TXT")
        .unwrap();
    assert_eq!(spf.status, CheckStatus::Ok, "{report}");
    assert_eq!(
        find(&results, "SRV", "_submission._tcp.example.org.").status,
        CheckStatus::Ok
    );
    assert_eq!(
        find(&results, "CNAME", "autoconfig.example.org.").status,
        CheckStatus::Ok
    );

    // Wrong, with what was found and the fix.
    let mx = find(&results, "MX", "example.org.");
    assert_eq!(
        mx.status,
        CheckStatus::Wrong("10 mx.other.example.net.".into()),
        "{report}"
    );
    assert!(mx.fix.contains("example.org."), "{}", mx.fix);
    assert!(
        mx.fix.contains("IN MX    10 mail.example.org."),
        "{}",
        mx.fix
    );
    let imaps = find(&results, "SRV", "_imaps._tcp.example.org.");
    assert_eq!(
        imaps.status,
        CheckStatus::Wrong("0 1 994 mail.example.org.".into())
    );
    assert!(
        imaps.fix.contains("0 1 993 mail.example.org."),
        "{}",
        imaps.fix
    );
    let ptr = find(&results, "PTR", "7.100.51.198.in-addr.arpa.");
    assert_eq!(
        ptr.status,
        CheckStatus::Wrong("static-7.isp.example.net.".into())
    );
    assert!(ptr.fix.contains("198.51.100.7"), "{}", ptr.fix);

    // Missing: the name does not exist (NXDOMAIN) or has no record of the type.
    let dmarc = find(&results, "TXT", "_dmarc.example.org.");
    assert_eq!(dmarc.status, CheckStatus::Missing, "{report}");
    assert!(
        dmarc.fix.starts_with("add: _dmarc.example.org."),
        "{}",
        dmarc.fix
    );
    assert!(dmarc.fix.contains("v=DMARC1"));
    let host_spf = find(&results, "TXT", "mail.example.org.");
    assert_eq!(host_spf.status, CheckStatus::Missing);
    assert_eq!(
        find(&results, "CNAME", "autodiscover.example.org.").status,
        CheckStatus::Missing
    );
    assert_eq!(
        find(&results, "SRV", "_pop3s._tcp.example.org.").status,
        CheckStatus::Missing
    );

    assert!(!dns_records::all_ok(&results));
    assert!(report.contains("WRONG    MX    example.org."), "{report}");
    assert!(
        report.contains("MISSING  TXT   _dmarc.example.org."),
        "{report}"
    );
    assert!(report.contains("fix: add: _dmarc.example.org."), "{report}");
    // Every record of `hermod dns` was checked.
    let expected = dns_records::records(&config, "example.org", &[]);
    assert_eq!(results.len(), expected.len());
}

#[tokio::test]
async fn everything_published_is_all_ok() {
    let config = config("127.0.0.1:1".parse().unwrap());
    let mut zone = Zone::new();
    // Publish exactly what `hermod dns` prints.
    for r in dns_records::records(&config, "example.org", &[]) {
        let (t, d) = match &r.data {
            RecordData::A(ip) => (RecordType::A, RData::A(A(*ip))),
            RecordData::Mx {
                preference,
                exchange,
            } => (
                RecordType::MX,
                RData::MX(MX::new(*preference, name(exchange))),
            ),
            RecordData::Txt(t) => (RecordType::TXT, RData::TXT(TXT::new(vec![t.clone()]))),
            RecordData::Srv {
                priority,
                weight,
                port,
                target,
            } => (
                RecordType::SRV,
                RData::SRV(SRV::new(*priority, *weight, *port, name(target))),
            ),
            RecordData::Cname(t) => (RecordType::CNAME, RData::CNAME(CNAME(name(t)))),
            RecordData::Ptr { target, .. } => (RecordType::PTR, RData::PTR(PTR(name(target)))),
            other => panic!("unexpected {other:?}"),
        };
        zone.entry((r.name.clone(), t)).or_default().push(d);
    }
    let dns = fake_dns(zone).await;
    let config = Config {
        dns: hermod_common::config::DnsConfig {
            nameservers: vec![ListenAddrString(dns.to_string())],
        },
        ..config
    };
    let results = dns_records::check(&config, "example.org", &[])
        .await
        .unwrap();
    let report = dns_records::render_check(&results);
    assert!(dns_records::all_ok(&results), "{report}");
    assert!(
        report.contains(" 0 missing, 0 wrong, 0 not checked"),
        "{report}"
    );
}

#[tokio::test]
async fn unreachable_dns_is_reported_not_called_missing() {
    // Nothing listens on this port: every lookup fails.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead = socket.local_addr().unwrap();
    drop(socket);
    let config = config(dead);
    let results = tokio::time::timeout(
        Duration::from_secs(60),
        dns_records::check(&config, "example.org", &[]),
    )
    .await
    .expect("a dead resolver must not stall the check")
    .unwrap();
    let mx = find(&results, "MX", "example.org.");
    assert!(
        matches!(mx.status, CheckStatus::Failed(_)),
        "{:?}",
        mx.status
    );
}

#[tokio::test]
async fn a_published_dkim_key_that_does_not_match_is_reported() {
    let mut zone = Zone::new();
    zone.insert(
        ("rsa1._domainkey.example.org.".into(), RecordType::TXT),
        vec![RData::TXT(TXT::new(vec![
            "v=DKIM1; k=rsa; p=OLDKEYAAAA".into(),
        ]))],
    );
    zone.insert(
        ("ed1._domainkey.example.org.".into(), RecordType::TXT),
        vec![RData::TXT(TXT::new(vec![
            "v=DKIM1; k=ed25519; p=EDKEY".into(),
        ]))],
    );
    let dns = fake_dns(zone).await;
    let config = config(dns);
    let keys = [
        dns_records::DkimKey {
            selector: "rsa1".into(),
            key_type: "rsa".into(),
            public_key_base64: "NEWKEYBBBB".into(),
        },
        dns_records::DkimKey {
            selector: "ed1".into(),
            key_type: "ed25519".into(),
            public_key_base64: "EDKEY".into(),
        },
        dns_records::DkimKey {
            selector: "new1".into(),
            key_type: "ed25519".into(),
            public_key_base64: "UNPUBLISHED".into(),
        },
    ];
    let results = tokio::time::timeout(
        Duration::from_secs(60),
        dns_records::check(&config, "example.org", &keys),
    )
    .await
    .expect("check took too long")
    .unwrap();
    let rsa = find(&results, "TXT", "rsa1._domainkey.example.org.");
    assert!(
        matches!(&rsa.status, CheckStatus::Wrong(found) if found.contains("OLDKEYAAAA")),
        "{:?}",
        rsa.status
    );
    assert!(rsa.fix.contains("p=NEWKEYBBBB"), "{}", rsa.fix);
    let ed = find(&results, "TXT", "ed1._domainkey.example.org.");
    assert_eq!(ed.status, CheckStatus::Ok);
    let new = find(&results, "TXT", "new1._domainkey.example.org.");
    assert_eq!(new.status, CheckStatus::Missing);
    assert!(!dns_records::all_ok(&results));
}
