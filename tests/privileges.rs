//! Started as root, hermod binds its ports and then runs as the configured user.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{LineClient, Setup};

fn ids_of(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&user))
        .and_then(|f| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))
}

/// The real, effective, saved and filesystem ids of a `Uid:` or `Gid:` line of
/// /proc/PID/status.
fn status_ids(status: &str, key: &str) -> Vec<u32> {
    status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().expect("an id"))
        .collect()
}

/// A free loopback port below 1024, which only a privileged process may bind.
fn privileged_port() -> u16 {
    let unprivileged_start: u16 =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1024);
    // Otherwise a daemon that dropped privileges before binding would pass.
    assert!(
        unprivileged_start > 1000,
        "net.ipv4.ip_unprivileged_port_start is {unprivileged_start}: ports below 1000 need \
         no privilege here, so this test cannot tell binding before the drop from after"
    );
    (600..1000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 600..1000")
}

#[test]
#[ignore = "needs root (CI runs as root); .ci/run runs it with --ignored"]
fn root_drops_to_run_as_user_after_binding() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test must run as root to show the privilege drop"
    );
    let (nobody_uid, nobody_gid) = ids_of("nobody").expect("a nobody user");
    let s = Setup::new("run_as_user = \"nobody\"\nallow_plaintext_auth = true", "");
    let port = privileged_port();
    s.edit_config(|text| {
        text.replace(
            &format!("[pop3]\nlisten = [\"127.0.0.1:{}\"]", s.ports.pop3),
            &format!("[pop3]\nlisten = [\"127.0.0.1:{port}\"]"),
        )
    });
    // The unprivileged user must be able to reach the data dir inside the temp dir.
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    s.add_user("alice@localhost", "pw");
    let out = s.cli_bytes(
        &["deliver", "--recipient", "alice@localhost"],
        b"Subject: low port\r\n\r\nhello\r\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = s.start("pop3d", port);
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let uids = status_ids(&status, "Uid:");
    let gids = status_ids(&status, "Gid:");
    assert!(
        uids.len() == 4 && uids.iter().all(|u| *u == nobody_uid),
        "still privileged: Uid {uids:?}"
    );
    assert!(
        gids.len() == 4 && gids.iter().all(|g| *g == nobody_gid),
        "still privileged: Gid {gids:?}"
    );
    let groups = status
        .lines()
        .find(|l| l.starts_with("Groups:"))
        .unwrap_or_default();
    assert!(
        groups
            .split_whitespace()
            .skip(1)
            .all(|g| g == nobody_gid.to_string()),
        "supplementary groups kept: {groups}"
    );
    // The data created by the admin command belongs to the run-as user too.
    let meta = std::fs::metadata(s.data_dir().join("directory.sqlite")).unwrap();
    assert_eq!(meta.uid(), nobody_uid);
    // The unprivileged process serves the port it bound as root: a POP3 login and RETR.
    let mut c = LineClient::connect(port);
    assert!(c.line().starts_with("+OK"));
    for cmd in ["USER alice@localhost", "PASS pw", "STAT"] {
        c.send(format!("{cmd}\r\n").as_bytes());
        let l = c.line();
        assert!(l.starts_with("+OK"), "{cmd}: {l}");
        if cmd == "STAT" {
            assert!(l.starts_with("+OK 1 "), "{l}");
        }
    }
    c.send(b"RETR 1\r\n");
    let mut text = String::new();
    loop {
        let l = c.line();
        if l.is_empty() || l == ".\r\n" {
            break;
        }
        text.push_str(&l);
    }
    assert!(
        text.starts_with("+OK") && text.contains("Subject: low port"),
        "{text}"
    );
}
