//! Started as root, hermod binds its ports and then runs as the configured user.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::Setup;

fn uid_of(user: &str) -> Option<u32> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&user))
        .and_then(|f| f.get(2)?.parse().ok())
}

#[test]
fn root_drops_to_run_as_user_after_binding() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: the privilege drop cannot be exercised here (CI runs as root)");
        return;
    }
    let nobody = uid_of("nobody").expect("a nobody user");
    let s = Setup::new("run_as_user = \"nobody\"", "");
    // The unprivileged user must be able to reach the data dir inside the temp dir.
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    s.add_user("alice@localhost", "pw");
    let server = s.start("pop3d", s.ports.pop3);
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let uids: Vec<u32> = uid_line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(
        uids.iter().all(|u| *u == nobody),
        "still privileged: {uid_line}"
    );
    // The data created by the admin command belongs to the run-as user too.
    let meta = std::fs::metadata(s.data_dir().join("directory.sqlite")).unwrap();
    assert_eq!(meta.uid(), nobody);
    // And the daemon still answers on its (privileged-bound) port.
    let conn = std::net::TcpStream::connect(("127.0.0.1", s.ports.pop3)).unwrap();
    let mut greeting = String::new();
    BufReader::new(conn).read_line(&mut greeting).unwrap();
    assert!(greeting.starts_with("+OK"), "{greeting}");
}
