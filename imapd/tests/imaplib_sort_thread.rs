//! SORT and THREAD end to end with Python's imaplib (tests/py/sort_thread.py) over IMAPS.

mod support;

use support::start;

/// Five messages: two threads, one reply that names a missing message first in References,
/// encoded-word subjects.
const MESSAGES: [&str; 5] = [
    "Message-ID: <1@x>\r\nFrom: Zoe <zoe@x>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=\r\nDate: Wed, 3 Jun 2020 10:00:00 +0000\r\n\r\nhallo\r\n",
    "Message-ID: <2@x>\r\nReferences: <1@x>\r\nFrom: Adam <adam@x>\r\nSubject: Re: =?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=\r\nDate: Thu, 4 Jun 2020 10:00:00 +0000\r\n\r\nja\r\n",
    "Message-ID: <3@x>\r\nFrom: Bob <bob@x>\r\nSubject: [team] Agenda\r\nDate: Mon, 1 Jun 2020 10:00:00 +0000\r\n\r\npoints\r\n",
    "Message-ID: <4@x>\r\nIn-Reply-To: <3@x>\r\nFrom: Carol <carol@x>\r\nSubject: Re: [team] Agenda\r\nDate: Tue, 2 Jun 2020 10:00:00 +0000\r\n\r\nmore\r\n",
    "Message-ID: <5@x>\r\nReferences: <missing@x> <1@x>\r\nFrom: Eve <eve@x>\r\nSubject: Fwd: =?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=\r\nDate: Fri, 5 Jun 2020 10:00:00 +0000\r\n\r\nweiter\r\n",
];

#[tokio::test]
async fn sort_and_thread_with_imaplib() {
    let have_python = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_python {
        eprintln!("python3 not installed; skipped");
        return;
    }
    let server = start().await;
    let user = server.ctx.store.user("alice", "localhost").await.unwrap();
    for m in MESSAGES {
        user.deliver("INBOX", m.as_bytes()).await.unwrap();
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/sort_thread.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(server.imaps.port().to_string())
        .arg(&server.ctx.tls.cert_path)
        .args(["alice@localhost", "secret"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.starts_with("sort-thread ok"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    server.shutdown.trigger();
}
