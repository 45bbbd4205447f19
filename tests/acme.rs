//! ACME end to end: hermod obtains a certificate from pebble (Let's Encrypt's small ACME test
//! server) through a real TLS-ALPN-01 validation, serves it on its TLS listeners and after
//! STARTTLS, keeps it across SIGHUP, and reuses it after a restart without a new order.
//!
//! Everything stays on loopback: pebble resolves the test name through a fake DNS server in
//! this test and validates on hermod's ACME listener. The tests that need pebble are
//! `#[ignore]`d with that reason; `.ci/run` installs pebble and runs them.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::dns::FakeDns;
use common::{Server, Setup, free_port, need, python};

const DOMAIN: &str = "mail.hermod-acme.test";

/// A test CA and the certificate pebble serves its ACME API with (for 127.0.0.1). Returns the
/// CA's PEM path, for hermod's `[acme] ca_file`.
fn pebble_tls(dir: &Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "hermod test CA for pebble");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("pebble-cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("pebble-key.pem"), key.serialize_pem()).unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    ca_path
}

/// A running pebble, its output collected; killed when dropped.
struct Pebble {
    child: Child,
    log: Arc<Mutex<String>>,
    directory_url: String,
    root_url: String,
}

impl Pebble {
    /// Start pebble validating TLS-ALPN-01 on `tls_port`, resolving names through `dns`,
    /// issuing certificates valid for `validity_s` seconds.
    fn start(dir: &Path, tls_port: u16, dns: SocketAddr, validity_s: u64) -> Pebble {
        let (api, management, http) = (free_port(), free_port(), free_port());
        let config = pebble_config(dir, api, management, http, tls_port, validity_s);
        let config_path = dir.join("pebble.json");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .arg("-dnsserver")
            .arg(dns.to_string())
            // Validation stays real (no PEBBLE_VA_ALWAYS_VALID); only its random delays go.
            .env("PEBBLE_VA_NOSLEEP", "1")
            // rustls-acme does not retry an order after a badNonce (Let's Encrypt sends those
            // rarely; pebble rejects 5% of nonces by default): keep the run deterministic.
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pebble");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let stdout = child.stdout.take().expect("pebble stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("[pebble] {line}");
                if let Ok(mut l) = sink.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        let addr = SocketAddr::from(([127, 0, 0, 1], api));
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "pebble did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Pebble {
            child,
            log,
            directory_url: format!("https://127.0.0.1:{api}/dir"),
            root_url: format!("https://127.0.0.1:{management}/roots/0"),
        }
    }

    fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Orders placed so far (pebble logs each request).
    fn orders(&self) -> usize {
        self.log().matches("POST /order-plz").count()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pebble_config(
    dir: &Path,
    api: u16,
    management: u16,
    http: u16,
    tls: u16,
    validity_s: u64,
) -> String {
    format!(
        r#"{{"pebble": {{
  "listenAddress": "127.0.0.1:{api}",
  "managementListenAddress": "127.0.0.1:{management}",
  "certificate": "{cert}",
  "privateKey": "{key}",
  "httpPort": {http},
  "tlsPort": {tls},
  "ocspResponderURL": "",
  "externalAccountBindingRequired": false,
  "certificateValidityPeriod": {validity_s}
}}}}"#,
        cert = dir.join("pebble-cert.pem").display(),
        key = dir.join("pebble-key.pem").display(),
    )
}

/// Wait until hermod's log has `needle`; panics with both logs when it does not in time.
fn wait_for_log(server: &Server, pebble: &Pebble, needle: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !server.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in hermod's log within {limit:?}\nhermod:\n{}\npebble:\n{}",
            server.log(),
            pebble.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The certificate each listener serves, verified against pebble's root for [`DOMAIN`]:
/// one `PORT issuer=... san=... sha256=...` line per listener.
fn served(pebble: &Pebble, ca: &Path, listeners: &[(&str, u16)]) -> Vec<String> {
    let mut args = vec![
        pebble.root_url.clone(),
        ca.display().to_string(),
        "127.0.0.1".to_string(),
        DOMAIN.to_string(),
    ];
    args.extend(
        listeners
            .iter()
            .map(|(kind, port)| format!("{kind}={port}")),
    );
    python("tls_issuer.py", &args)
        .lines()
        .map(str::to_string)
        .collect()
}

fn acme_section(pebble: &Pebble, acme_port: u16, ca: &Path) -> String {
    format!(
        "[acme]\nenabled = true\ndomains = [\"{DOMAIN}\"]\ncontact = [\"mailto:postmaster@hermod-acme.test\"]\ndirectory_url = \"{}\"\nlisten = [\"127.0.0.1:{acme_port}\"]\nca_file = \"{}\"\n",
        pebble.directory_url,
        ca.display()
    )
}

/// A pebble with its own TLS CA and a fake DNS that points the test domain at loopback;
/// pebble goes first when dropped, before its directory.
struct Rig {
    pebble: Pebble,
    ca: PathBuf,
    _dns: FakeDns,
    _dir: tempfile::TempDir,
}

/// A [`Rig`] issuing certificates valid for `validity_s` seconds, and a hermod setup whose
/// ACME uses it.
fn start_rig(validity_s: u64) -> (Rig, Setup) {
    let dir = tempfile::tempdir().unwrap();
    let ca = pebble_tls(dir.path());
    // pebble resolves the test name through this: `A 127.0.0.1`, NXDOMAIN for other names.
    let dns = FakeDns::start();
    dns.a(DOMAIN, std::net::Ipv4Addr::LOCALHOST);
    let acme_port = free_port();
    let pebble = Pebble::start(dir.path(), acme_port, dns.addr, validity_s);
    let setup = Setup::new("", &acme_section(&pebble, acme_port, &ca));
    let rig = Rig {
        pebble,
        ca,
        _dns: dns,
        _dir: dir,
    };
    (rig, setup)
}

fn sha256_of(line: &str) -> &str {
    line.split("sha256=").nth(1).unwrap_or_default()
}

#[test]
#[ignore = "needs pebble (Debian package); .ci/run runs it with --ignored"]
fn certificate_from_pebble_is_served_and_reused_after_restart() {
    need(&["pebble"]);
    // Five years, as pebble's default: no renewal during the test.
    let (rig, setup) = start_rig(5 * 365 * 86400);
    let (pebble, ca) = (&rig.pebble, &rig.ca);
    let p = setup.ports;
    let mut server = setup.start("serve", p.imaps);
    wait_for_log(
        &server,
        pebble,
        "ACME: certificate issued",
        Duration::from_secs(20),
    );
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());
    // Really validated: pebble connected to hermod's listener and got the challenge answer.
    assert!(
        server
            .log()
            .contains("ACME: answered a TLS-ALPN-01 validation"),
        "{}",
        server.log()
    );

    // Implicit TLS (IMAPS, SMTPS) and STARTTLS (IMAP) all serve it, and it verifies against
    // pebble's root through pebble's intermediate, for the ordered name.
    let lines = served(
        pebble,
        ca,
        &[
            ("tls", p.imaps),
            ("tls", p.submissions),
            ("imap-starttls", p.imap),
        ],
    );
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines {
        assert!(line.contains("issuer=Pebble Intermediate CA"), "{line}");
        assert!(line.contains(&format!("san={DOMAIN}")), "{line}");
    }
    let fingerprint = sha256_of(&lines[0]).to_string();
    assert!(
        lines.iter().all(|l| sha256_of(l) == fingerprint),
        "{lines:?}"
    );

    // The account key and certificate key are private to hermod.
    use std::os::unix::fs::PermissionsExt;
    for key in ["acme/key.pem", "acme/account.key"] {
        let mode = std::fs::metadata(setup.data_dir().join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }

    // SIGHUP reloads the ACME certificate, not the self-signed one it replaced.
    let pid = server.child.id().to_string();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    wait_for_log(
        &server,
        pebble,
        "SIGHUP: certificate reloaded",
        Duration::from_secs(5),
    );
    let lines = served(pebble, ca, &[("tls", p.imaps)]);
    assert_eq!(sha256_of(&lines[0]), fingerprint, "{lines:?}");

    // A restart reuses the stored certificate: no new order reaches pebble.
    assert!(server.signal_and_wait("TERM").success());
    let requests_before = pebble.log().lines().count();
    let server = setup.start("serve", p.imaps);
    wait_for_log(
        &server,
        pebble,
        "ACME: using the stored certificate",
        Duration::from_secs(5),
    );
    let lines = served(pebble, ca, &[("tls", p.imaps)]);
    assert_eq!(sha256_of(&lines[0]), fingerprint, "{lines:?}");
    // rustls-acme's decision on the stored certificate: after it, no order comes before
    // the renewal time (years away).
    wait_for_log(
        &server,
        pebble,
        "ACME: the stored certificate is current",
        Duration::from_secs(10),
    );
    let log = server.log();
    assert!(!log.contains("ACME: ordering"), "{log}");
    assert!(!log.contains("ACME: certificate issued"), "{log}");
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());
    // The one request since is the test's own download of pebble's root.
    let since: Vec<String> = pebble
        .log()
        .lines()
        .skip(requests_before)
        .map(str::to_string)
        .collect();
    assert!(
        since.iter().all(|l| !l.contains("sign-me-up")),
        "hermod contacted the CA after the restart: {since:?}"
    );
}

/// A short-lived certificate is renewed in the background and the new one is served at once,
/// without a restart.
#[test]
#[ignore = "needs pebble (Debian package); .ci/run runs it with --ignored"]
fn certificate_is_renewed_in_the_background() {
    need(&["pebble"]);
    // Renewal comes when a third of the lifetime is left: about 8 s after issuance.
    let (rig, setup) = start_rig(12);
    let (pebble, ca) = (&rig.pebble, &rig.ca);
    let p = setup.ports;
    let server = setup.start("serve", p.imaps);
    wait_for_log(
        &server,
        pebble,
        "ACME: certificate issued",
        Duration::from_secs(20),
    );
    let first = served(pebble, ca, &[("tls", p.imaps)]);
    wait_for_log(
        &server,
        pebble,
        "ACME: certificate renewed",
        Duration::from_secs(20),
    );
    let renewed = served(pebble, ca, &[("tls", p.imaps), ("tls", p.submissions)]);
    assert!(pebble.orders() >= 2, "{}", pebble.log());
    for line in &renewed {
        assert!(line.contains("issuer=Pebble Intermediate CA"), "{line}");
        assert_ne!(sha256_of(line), sha256_of(&first[0]), "{line}");
    }
}

/// A CA that cannot be reached does not stop hermod: it logs why, keeps serving the
/// certificate it has (here the self-signed one) and tries again later. Needs no pebble.
#[test]
fn unreachable_ca_is_logged_and_hermod_keeps_serving() {
    let dead_port = free_port();
    let acme_port = free_port();
    let setup = Setup::new(
        "",
        &format!(
            "[acme]\nenabled = true\ndomains = [\"{DOMAIN}\"]\ndirectory_url = \"https://127.0.0.1:{dead_port}/dir\"\nlisten = [\"127.0.0.1:{acme_port}\"]\n"
        ),
    );
    let p = setup.ports;
    let server = setup.start("serve", p.imaps);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("ACME: certificate order failed") {
        assert!(
            Instant::now() < deadline,
            "no failure logged:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("ACME: certificate order failed"))
        .unwrap();
    // One line with the reason and when the next attempt comes.
    assert!(
        line.contains("error=") && line.contains("retry_in_s=10"),
        "{line}"
    );
    // Still serving, with the self-signed certificate.
    let mut imap = TcpStream::connect(("127.0.0.1", p.imap)).unwrap();
    imap.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut greeting = String::new();
    BufReader::new(&mut imap).read_line(&mut greeting).unwrap();
    assert!(greeting.starts_with("* OK"), "{greeting}");
    assert!(!setup.data_dir().join("acme/cert.pem").exists());
}
