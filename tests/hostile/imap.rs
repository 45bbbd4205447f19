//! IMAP: hostile input before and after login.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::{Server, Setup};

const USER: &str = "alice@localhost";
const PASSWORD: &str = "wonderland";

/// A plain-text IMAP client reading line by line (the tests send no literals to it).
struct Imap {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Imap {
    fn connect(port: u16) -> Imap {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut c = Imap {
            writer: stream.try_clone().expect("clone"),
            reader: BufReader::new(stream),
        };
        let greeting = c.line();
        assert!(greeting.starts_with("* OK"), "{greeting}");
        c
    }

    /// One response line; panics on EOF or a read timeout.
    fn line(&mut self) -> String {
        let mut l = String::new();
        let n = self.reader.read_line(&mut l).expect("read a response line");
        assert!(n > 0, "server closed the connection");
        l
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    /// Sends a command and returns its responses, the tagged one last.
    fn cmd(&mut self, tag: &str, command: &str) -> Vec<String> {
        self.send(format!("{tag} {command}\r\n").as_bytes());
        let mut lines = Vec::new();
        loop {
            let l = self.line();
            let done = l.starts_with(&format!("{tag} "));
            lines.push(l);
            if done {
                return lines;
            }
        }
    }

    fn ok(&mut self, tag: &str, command: &str) -> Vec<String> {
        let lines = self.cmd(tag, command);
        let last = lines.last().cloned().unwrap_or_default();
        assert!(
            last.starts_with(&format!("{tag} OK")),
            "{command}: {lines:?}"
        );
        lines
    }

    fn login(port: u16) -> Imap {
        let mut c = Imap::connect(port);
        c.ok("L", &format!("LOGIN {USER} {PASSWORD}"));
        c
    }

    /// Reads until the server closes the connection; false if it is still open at the
    /// deadline.
    fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 256 * 1024];
        while Instant::now() < deadline {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return true,
            }
        }
        false
    }
}

/// hermod with a plain-text IMAP login allowed (loopback only) and one user.
fn start(extra_sections: &str) -> (Setup, Server) {
    let s = Setup::new("allow_plaintext_auth = true", extra_sections);
    s.add_user(USER, PASSWORD);
    let server = s.start("serve", s.ports.imap);
    (s, server)
}

/// Another client logs in and lists, and the process is still running.
fn still_serving(s: &Setup, server: &mut Server) {
    let mut other = Imap::login(s.ports.imap);
    let lines = other.ok("o1", "LIST \"\" \"*\"");
    assert!(lines.iter().any(|l| l.ends_with(" INBOX\r\n")), "{lines:?}");
    other.ok("o2", "LOGOUT");
    assert!(
        server.child.try_wait().expect("try_wait").is_none(),
        "hermod exited: {}",
        server.log()
    );
}

/// `LIST "" "***…"` (60,000 `*`) used to overflow the stack and abort the whole process;
/// `*a*a*a*a*a*a*a*a*b` against a 200-`a` name used to backtrack for minutes. Both are
/// answered at once and everyone else is still served.
#[test]
fn list_wildcard_bombs_leave_the_server_serving() {
    let (s, mut server) = start("");
    let mut c = Imap::login(s.ports.imap);
    let long_name = "a".repeat(200);
    c.ok("c1", &format!("CREATE {long_name}"));
    let started = Instant::now();
    c.ok("c2", &format!("LIST \"\" \"{}\"", "*".repeat(60_000)));
    let lines = c.ok("c3", "LIST \"\" \"*a*a*a*a*a*a*a*a*b\"");
    assert_eq!(lines.len(), 1, "nothing matches: {lines:?}");
    let lines = c.ok("c4", "LIST \"\" \"*a*a*a*a*a*a*a*a*\"");
    assert!(lines.iter().any(|l| l.contains(&long_name)), "{lines:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "LIST took {:?}",
        started.elapsed()
    );
    still_serving(&s, &mut server);
}

/// `SELECT "INBOX&AOk-"` (INBOXé) used to panic the session on a slice inside the `é`.
#[test]
fn mailbox_name_inside_a_character_is_an_answer_not_a_panic() {
    let (s, mut server) = start("");
    let mut c = Imap::login(s.ports.imap);
    let lines = c.cmd("s1", "SELECT \"INBOX&AOk-\"");
    assert!(
        lines.last().is_some_and(|l| l.starts_with("s1 NO")),
        "{lines:?}"
    );
    c.ok("s2", "NOOP");
    still_serving(&s, &mut server);
}

/// Before login, a 50 MiB literal gets no continuation: a synchronizing one is refused
/// with BAD at once, a non-synchronizing one closes the connection without being read.
#[test]
fn pre_login_huge_literal_is_refused_at_once() {
    let (s, mut server) = start("");
    let mut c = Imap::connect(s.ports.imap);
    let started = Instant::now();
    c.send(b"a LOGIN {52428800}\r\n");
    let reply = c.line();
    assert!(reply.starts_with("a BAD "), "{reply}");
    c.send(b"b LOGIN {52428800+}\r\n");
    c.send(&[b'x'; 64 * 1024]);
    let reply = c.line();
    assert!(reply.starts_with("b BAD "), "{reply}");
    let bye = c.line();
    assert!(bye.starts_with("* BYE "), "{bye}");
    assert!(c.closed_within(Duration::from_secs(10)), "still open");
    assert!(started.elapsed() < Duration::from_secs(5));
    // An overlong line before login is refused too, without waiting for its end.
    let mut c = Imap::connect(s.ports.imap);
    c.send(b"c LOGIN ");
    c.send(&[b'u'; 64 * 1024]);
    let reply = c.line();
    assert!(reply.starts_with("c BAD "), "{reply}");
    still_serving(&s, &mut server);
}

/// A client that asks for a large message again and again but never reads is dropped
/// after the write timeout, and its connection is freed.
#[test]
fn client_that_never_reads_is_dropped_after_the_write_timeout() {
    let (s, mut server) = start("[limits]\nwrite_timeout = 2\n");
    let mut message = b"From: bob@example.org\r\nSubject: big\r\n\r\n".to_vec();
    for _ in 0..10_000 {
        message.extend_from_slice(&[b'x'; 98]);
        message.extend_from_slice(b"\r\n");
    }
    let out = s.cli_bytes(&["deliver", "--recipient", USER], &message);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut c = Imap::login(s.ports.imap);
    c.ok("x1", "SELECT INBOX");
    for i in 0..100 {
        c.send(format!("f{i} FETCH 1 BODY.PEEK[]\r\n").as_bytes());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.log().contains("write timed out") {
        assert!(
            Instant::now() < deadline,
            "no write timeout logged: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        c.closed_within(Duration::from_secs(20)),
        "the stalled connection is still open"
    );
    still_serving(&s, &mut server);
}
