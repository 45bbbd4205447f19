//! Screening of port 25 clients at connect (`[screen]`): DNS list scores through the fake DNS
//! on loopback (weights, result filters, a negative-weight allow list), the allow list, and
//! the pre-greeting test. Clients come from different loopback addresses (127.0.0.x).

mod common;

use std::io::BufReader;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::dns::FakeDns;
use common::{LineClient, Setup};

/// A client connected from `source` (a loopback address) to `port`.
async fn connect_from(source: Ipv4Addr, port: u16) -> LineClient {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind source");
    let stream = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("connect")
        .into_std()
        .expect("std stream");
    stream.set_nonblocking(false).expect("blocking");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let writer = stream.try_clone().expect("clone");
    LineClient {
        reader: BufReader::new(stream),
        writer,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_lists_allow_list_and_pregreeting() {
    let dns = FakeDns::start();
    let listed = Ipv4Addr::new(127, 0, 0, 2);
    for (client, zone) in [
        ("1", "zen.example"),
        ("1", "weak.example"),
        ("2", "zen.example"),
        ("3", "zen.example"),
        ("3", "weak.example"),
        ("4", "zen.example"),
        ("4", "weak.example"),
        ("4", "wl.example"),
    ] {
        dns.a(&format!("{client}.0.0.127.{zone}"), listed);
    }
    // Listed, but with an answer the filter does not count.
    dns.a("2.0.0.127.filtered.example", Ipv4Addr::new(127, 0, 0, 200));
    let s = Setup::new(
        "",
        &format!(
            "[dns]\nnameservers = [\"{}\"]\n[screen]\ndnsbl_sites = [\"zen.example*2\", \"weak.example\", \"filtered.example=127.0.0.[2..11]*5\", \"wl.example*-2\"]\ndnsbl_threshold = 3\npregreet_wait_ms = 300\nallow = [\"127.0.0.3/32\"]\n",
            dns.addr
        ),
    );
    let server = s.start("serve", s.ports.submission);
    let port = s.ports.smtp;

    // 127.0.0.1: zen (2) + weak (1) reaches 3: refused at connect, twice (the second time
    // from the cache).
    for _ in 0..2 {
        let mut c = connect_from(Ipv4Addr::new(127, 0, 0, 1), port).await;
        let (code, text) = c.reply().expect("a reply");
        assert_eq!(code, 554, "{text}");
        assert!(
            text.ends_with(
                "554 5.7.1 Service unavailable; client [127.0.0.1] blocked using weak.example, zen.example\r\n"
            ),
            "{text}"
        );
        assert!(c.reply().is_none(), "connection closed");
    }
    // 127.0.0.2: zen (2), and filtered.example's answer is outside its filter: admitted,
    // with the two-line greeting of the pre-greeting test.
    let mut c = connect_from(Ipv4Addr::new(127, 0, 0, 2), port).await;
    let (code, text) = c.reply().expect("greeting");
    assert_eq!(code, 220, "{text}");
    assert!(
        text.starts_with("220-localhost ESMTP hermod\r\n220 "),
        "{text}"
    );
    c.command("EHLO client.example.net", 250);
    c.command("QUIT", 221);
    // 127.0.0.3: as listed as 127.0.0.1, but allow-listed. 127.0.0.4: the allow list in DNS
    // (-2) brings it under the threshold.
    for n in [3, 4] {
        let mut c = connect_from(Ipv4Addr::new(127, 0, 0, n), port).await;
        let (code, text) = c.reply().expect("greeting");
        assert_eq!(code, 220, "127.0.0.{n}: {text}");
        c.command("QUIT", 221);
    }
    // 127.0.0.5 talks before the greeting is done.
    let mut c = connect_from(Ipv4Addr::new(127, 0, 0, 5), port).await;
    c.send(b"EHLO impatient.example\r\n");
    let (code, text) = c.reply().expect("a reply");
    assert!(
        code == 554 && text.contains("554 5.5.1 Protocol error: talked before the greeting"),
        "{text}"
    );

    // Submission is not screened, and each refusal is logged with its reason.
    let mut c = LineClient::connect(s.ports.submission);
    assert_eq!(c.reply().expect("greeting").0, 220);
    common::wait_until("the refusals in the log", Duration::from_secs(10), || {
        server
            .log()
            .contains("refused: talked before the greeting")
            .then_some(())
    });
    let log = server.log();
    assert_eq!(
        log.matches("refused: DNS list score over the threshold")
            .count(),
        2,
        "{log}"
    );
    assert!(log.contains("refused: talked before the greeting"), "{log}");
}
