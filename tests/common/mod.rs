//! Shared harness of the end-to-end tests: run the real `hermod` binary on ephemeral loopback
//! ports with a temporary data dir, and drive it with independent clients.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod dns;
pub mod fake_http;
pub mod fake_milter;
pub mod rspamd;

pub const BIN: &str = env!("CARGO_BIN_EXE_hermod");

/// A free loopback port for a hermod listener.
///
/// Ports are taken below the kernel's ephemeral range (32768+), so the client connections
/// that other tests open at the same time can never grab a port between this check and
/// hermod binding it. Each test process walks its own slice of 20000..32000 (seeded by its
/// pid) and skips ports that are in use.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() * 613) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN)
}

/// A temporary data dir and a config file whose services listen on free ports.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub ports: Ports,
}

#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub smtp: u16,
    pub submission: u16,
    pub submissions: u16,
    pub imap: u16,
    pub imaps: u16,
    pub pop3: u16,
    pub pop3s: u16,
    pub lmtp: u16,
    pub http: u16,
    pub managesieve: u16,
}

impl Setup {
    /// `extra` is appended to the generated config (top-level keys must come first in TOML,
    /// so `extra_top` goes before the sections).
    pub fn new(extra_top: &str, extra_sections: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = Ports {
            smtp: free_port(),
            submission: free_port(),
            submissions: free_port(),
            imap: free_port(),
            imaps: free_port(),
            pop3: free_port(),
            pop3s: free_port(),
            lmtp: free_port(),
            http: free_port(),
            managesieve: free_port(),
        };
        let l = |p: u16| format!("listen = [\"127.0.0.1:{p}\"]");
        // Tests never send traffic off this machine: DNS goes to a dead loopback port unless
        // the test brings its own fake server.
        let dns = if extra_sections.contains("[dns]") {
            String::new()
        } else {
            "[dns]\nnameservers = [\"127.0.0.1:9\"]\n".to_string()
        };
        // Mail authentication would ask that dead DNS on every port 25 message: off unless the
        // test configures it.
        let auth = if extra_sections.contains("[auth]") {
            ""
        } else {
            "[auth]\nverify = false\n"
        };
        let text = format!(
            "{extra_top}\n{dns}{auth}[smtp]\n{}\n[submission]\n{}\n[submissions]\n{}\n[imap]\n{}\n[imaps]\n{}\n[pop3]\n{}\n[pop3s]\n{}\n[lmtp]\n{}\n[http]\n{}\n[managesieve]\n{}\n{extra_sections}\n",
            l(ports.smtp),
            l(ports.submission),
            l(ports.submissions),
            l(ports.imap),
            l(ports.imaps),
            l(ports.pop3),
            l(ports.pop3s),
            l(ports.lmtp),
            l(ports.http),
            l(ports.managesieve),
        );
        let config = dir.path().join("hermod.toml");
        std::fs::write(&config, text).expect("write config");
        Setup { dir, config, ports }
    }

    /// Rewrites the generated config (for keys inside the generated sections).
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config).expect("read config");
        std::fs::write(&self.config, edit(text)).expect("write config");
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn base_args(&self) -> Vec<String> {
        vec![
            "--dev".into(),
            "--config".into(),
            self.config.display().to_string(),
            "--data-dir".into(),
            self.data_dir().display().to_string(),
        ]
    }

    /// Run a hermod subcommand against this setup's data, with optional stdin.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args).args(self.base_args());
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn hermod");
        if let Some(input) = stdin {
            let mut s = child.stdin.take().expect("stdin");
            s.write_all(input.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("wait hermod")
    }

    /// Run a hermod subcommand with raw bytes on stdin (a message for `deliver`).
    pub fn cli_bytes(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args).args(self.base_args());
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn hermod");
        let mut s = child.stdin.take().expect("stdin");
        s.write_all(stdin).expect("write stdin");
        drop(s);
        child.wait_with_output().expect("wait hermod")
    }

    /// Add a user with a password (the test's usual first step).
    pub fn add_user(&self, address: &str, password: &str) {
        let out = self.cli(
            &["user", "add", address, "--password-stdin"],
            Some(&format!("{password}\n")),
        );
        assert!(
            out.status.success(),
            "user add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Start `hermod serve` (or another daemon command) and wait until `ready_port` accepts.
    pub fn start(&self, command: &str, ready_port: u16) -> Server {
        let mut child = Command::new(BIN)
            .arg(command)
            .args(self.base_args())
            .env("HERMOD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hermod serve");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[hermod] {line}");
                if let Ok(mut l) = sink.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        let addr: SocketAddr = format!("127.0.0.1:{ready_port}").parse().expect("addr");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Bound ports accept before the daemons run: wait for the start-up line too.
            let started = log
                .lock()
                .map(|l| l.contains("hermod started"))
                .unwrap_or(false);
            if started && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "hermod exited early with {status}: {}",
                    log.lock().map(|l| l.clone()).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "hermod did not listen on {addr} in time"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { child, log }
    }
}

/// A running hermod process; killed when dropped.
pub struct Server {
    pub child: Child,
    pub log: Arc<Mutex<String>>,
}

impl Server {
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Send a signal and wait (bounded) for the exit status.
    pub fn signal_and_wait(&mut self, signal: &str) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "hermod did not exit after SIG{signal}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a Python client script from tests/py with arguments; panics with its output on failure.
pub fn python(script: &str, args: &[String]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(script);
    let out = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "{script} failed:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

/// Whether a command is installed.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The tests that need a tool from Debian are `#[ignore]`d with the tool named in the
/// reason, so a plain `cargo test` lists them as ignored rather than passed; `.ci/run` runs
/// them with `--ignored` and `CI=true`. Once asked for, a missing tool is a failure, never a
/// silent pass.
pub fn need(cmds: &[&str]) {
    let missing: Vec<&str> = cmds.iter().copied().filter(|c| !have(c)).collect();
    assert!(
        missing.is_empty(),
        "this test needs {} on PATH (Debian packages; .ci/run installs them){}",
        missing.join(", "),
        if std::env::var_os("CI").is_some() {
            " and CI=true is set"
        } else {
            ""
        }
    );
}

/// Every message file (new and cur) in a user's Maildir INBOX.
pub fn maildir_messages(data_dir: &Path, domain: &str, local: &str) -> Vec<String> {
    let dir = data_dir.join(format!("mail/{domain}/{local}/Maildir"));
    ["new", "cur"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(dir.join(d))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| String::from_utf8_lossy(&std::fs::read(e.path()).unwrap_or_default()).to_string())
        .collect()
}

/// Polls `check` every 50 ms until it gives a value; panics naming `what` after `limit`.
pub fn wait_until<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A line-based client for SMTP/LMTP/POP3-style replies over a plain loopback socket.
pub struct LineClient {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
}

impl LineClient {
    pub fn connect(port: u16) -> LineClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        stream
            .set_write_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let writer = stream.try_clone().expect("clone");
        LineClient {
            reader: BufReader::new(stream),
            writer,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write");
    }

    /// One line (POP3 and the like); empty at end of stream.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read line");
        line
    }

    /// One SMTP reply (all its lines): the code and the text, or None at end of stream.
    pub fn reply(&mut self) -> Option<(u16, String)> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).expect("read reply") == 0 {
                return None;
            }
            text.push_str(&line);
            let code = line.get(..3).and_then(|c| c.parse().ok());
            let last = line.as_bytes().get(3) != Some(&b'-');
            match (code, last) {
                (Some(code), true) => return Some((code, text)),
                (Some(_), false) => continue,
                (None, _) => panic!("not an SMTP reply: {line:?}"),
            }
        }
    }

    /// Sends a command line and expects a reply with `code`.
    pub fn command(&mut self, line: &str, code: u16) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        let (got, text) = self.reply().expect("a reply");
        assert_eq!(got, code, "{line} answered {text}");
        text
    }
}
