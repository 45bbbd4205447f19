//! Debian's rspamd, started by a test on free loopback ports with a config of its own: the
//! normal worker (`/checkv2`), the controller and the milter proxy; no network lookups (its
//! DNS goes to a dead loopback port), test patterns (GTUBE and its variants) enabled.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// The GTUBE variants rspamd 3 knows (with `enable_test_patterns`): reject, add header,
/// rewrite subject, no action.
pub const GTUBE_REJECT: &str =
    "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
pub const GTUBE_ADD_HEADER: &str =
    "YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

pub struct Rspamd {
    child: Child,
    pub dir: tempfile::TempDir,
    pub normal: u16,
    pub controller: u16,
    pub proxy: u16,
}

impl Rspamd {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.normal)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rspamd.log")).unwrap_or_default()
    }

    /// Starts rspamd and waits (up to 60 s) until its workers accept connections.
    pub fn start() -> Rspamd {
        let dir = tempfile::tempdir().expect("tempdir");
        let (normal, controller, proxy) = (free_port(), free_port(), free_port());
        let root = dir.path();
        for sub in ["local.d", "db", "run"] {
            std::fs::create_dir_all(root.join(sub)).expect("mkdir");
        }
        let write = |name: &str, text: String| {
            std::fs::write(root.join(name), text).expect("write rspamd config")
        };
        write(
            "rspamd.conf",
            format!(
                r#".include "$CONFDIR/common.conf"
options {{
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}}
logging {{
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    level = "info";
}}
worker "normal" {{
    bind_socket = "127.0.0.1:{normal}";
    count = 1;
    task_timeout = 8s;
}}
worker "controller" {{
    bind_socket = "127.0.0.1:{controller}";
    count = 1;
    password = "q1";
    enable_password = "q1";
    secure_ip = "127.0.0.1";
}}
worker "rspamd_proxy" {{
    bind_socket = "127.0.0.1:{proxy}";
    count = 1;
    milter = yes;
    timeout = 120s;
    upstream "local" {{
        default = yes;
        self_scan = yes;
    }}
}}
"#
            ),
        );
        write(
            "local.d/options.inc",
            "dns {\n  nameserver = [\"127.0.0.1:9\"];\n  timeout = 0.3s;\n  retransmits = 1;\n}\nenable_test_patterns = true;\nlocal_addrs = [];\n".into(),
        );
        // rspamd's headers on every message, also from loopback.
        write(
            "local.d/milter_headers.conf",
            "use = [\"x-spamd-result\", \"x-rspamd-queue-id\", \"x-spam-status\"];\nskip_local = false;\nskip_authenticated = false;\n".into(),
        );
        // Modules that would only wait on the network.
        for module in [
            "fuzzy_check",
            "rbl",
            "asn",
            "phishing",
            "dcc",
            "url_redirector",
        ] {
            write(
                &format!("local.d/{module}.conf"),
                "enabled = false;\n".into(),
            );
        }
        let mut command = Command::new("rspamd");
        command
            .arg("-f")
            .arg("-c")
            .arg(root.join("rspamd.conf"))
            .arg("--var")
            .arg(format!("LOCAL_CONFDIR={}", root.display()))
            .arg("--var")
            .arg(format!("DBDIR={}", root.join("db").display()))
            .arg("--var")
            .arg(format!("RUNDIR={}", root.join("run").display()))
            .arg("--var")
            .arg(format!("LOGDIR={}", root.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // As root rspamd insists on dropping to its own user, which must reach the files.
        if is_root() {
            give_to_rspamd_user(root);
            command.args(["-u", "_rspamd", "-g", "_rspamd"]);
        }
        let child = command.spawn().expect("spawn rspamd");
        let mut rspamd = Rspamd {
            child,
            dir,
            normal,
            controller,
            proxy,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        for port in [normal, controller, proxy] {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Ok(Some(status)) = rspamd.child.try_wait() {
                    panic!("rspamd exited with {status}: {}", rspamd.log());
                }
                assert!(
                    Instant::now() < deadline,
                    "rspamd did not listen in time: {}",
                    rspamd.log()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        rspamd
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn give_to_rspamd_user(root: &Path) {
    let status = Command::new("chown")
        .args(["-R", "_rspamd:_rspamd"])
        .arg(root)
        .status()
        .expect("chown");
    assert!(status.success(), "chown to _rspamd failed");
}

impl Drop for Rspamd {
    fn drop(&mut self) {
        // rspamd's main process ends its workers on SIGTERM.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
