//! `hermod serve --dev`: starts fast, logs listeners and the certificate fingerprint, reuses
//! its certificate, refuses a busy port clearly, and exits 0 on SIGTERM and SIGINT.

mod common;

use common::Setup;

fn fingerprint(log: &str) -> String {
    let line = log
        .lines()
        .find(|l| l.contains("TLS certificate (SHA-256)"))
        .unwrap_or_else(|| panic!("no fingerprint line in log:\n{log}"));
    let start = line.find("fingerprint=").expect("fingerprint field") + "fingerprint=".len();
    line[start..]
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn serve_dev_starts_logs_and_stops_cleanly() {
    let s = Setup::new("", "");
    let mut server = s.start("serve", s.ports.imap);
    // Give the start-up lines a moment to reach the log reader.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = server.log();
    for port in [
        s.ports.smtp,
        s.ports.submission,
        s.ports.submissions,
        s.ports.imap,
        s.ports.imaps,
        s.ports.pop3,
        s.ports.pop3s,
        s.ports.lmtp,
    ] {
        assert!(
            log.contains(&format!("127.0.0.1:{port}")),
            "port {port} not logged:\n{log}"
        );
    }
    let fp = fingerprint(&log);
    assert_eq!(fp.len(), 95, "SHA-256 as colon hex: {fp}");
    let startup_ms: u64 = log
        .lines()
        .find(|l| l.contains("hermod started"))
        .and_then(|l| l.split("startup_ms=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no startup_ms in log:\n{log}"));
    assert!(startup_ms < 1000, "start-up took {startup_ms} ms");
    let status = server.signal_and_wait("TERM");
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(s.data_dir().join("tls/cert.pem").exists());

    // A second start reuses the certificate; SIGINT also exits 0.
    let mut again = s.start("serve", s.ports.imap);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(fingerprint(&again.log()), fp);
    let status = again.signal_and_wait("INT");
    assert!(status.success(), "exit status after SIGINT: {status}");
}

#[test]
fn busy_port_is_one_clear_error() {
    let s = Setup::new("", "");
    let _holder = std::net::TcpListener::bind(("127.0.0.1", s.ports.pop3)).expect("hold port");
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--dev", "--config"])
        .arg(&s.config)
        .arg("--data-dir")
        .arg(s.data_dir())
        .output()
        .expect("run hermod");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "pop3: cannot listen on 127.0.0.1:{}",
            s.ports.pop3
        )),
        "{err}"
    );
}

#[test]
fn sighup_reloads_the_certificate_without_stopping() {
    let s = Setup::new("", "");
    let mut server = s.start("serve", s.ports.imaps);
    let pid = server.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !server.log().contains("certificate reloaded") {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload logged:\n{}",
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "hermod exited on SIGHUP"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", s.ports.imaps)).is_ok());
    assert!(server.signal_and_wait("TERM").success());
}
