//! One milter conversation for one message: negotiate, then every stage (connect, HELO,
//! MAIL, RCPT, DATA, each header, end of headers, the body in chunks, end of message), each
//! answered unless the milter said it would not answer it; the modifications of the end of
//! message are collected. The whole conversation runs under one timeout.
//!
//! The stages are replayed at the end of DATA (one hook in the session, not five): a milter
//! that rejects at MAIL or RCPT makes the message refused with its reply.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::protocol::{self, BODY_CHUNK, Command, DecodeError, Reply, actions, steps};
use crate::auth::results::header_fields;

/// Where a milter listens, as Postfix writes it: `inet:host:port` or `unix:/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MilterAddress {
    Inet(String),
    Unix(PathBuf),
}

impl std::str::FromStr for MilterAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(MilterAddress::Unix(PathBuf::from(path)));
        }
        let rest = s
            .strip_prefix("inet:")
            .ok_or_else(|| format!("milter address {s:?} must start with inet: or unix:"))?;
        // Postfix also writes inet:port@host.
        let addr = match rest.split_once('@') {
            Some((port, host)) => format!("{host}:{port}"),
            None => rest.to_string(),
        };
        if !addr.contains(':') {
            return Err(format!("milter address {s:?} names no port"));
        }
        Ok(MilterAddress::Inet(addr))
    }
}

impl std::fmt::Display for MilterAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MilterAddress::Inet(addr) => write!(f, "inet:{addr}"),
            MilterAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The message and its envelope, as the milter is told them.
#[derive(Debug, Clone)]
pub struct Transaction<'a> {
    pub ip: IpAddr,
    pub client_name: &'a str,
    pub helo: &'a str,
    pub sender: &'a str,
    pub recipients: &'a [String],
    pub queue_id: &'a str,
    pub hostname: &'a str,
    /// The whole message, header section first.
    pub message: &'a [u8],
}

/// A change the milter asked for at the end of the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    AddHeader {
        name: String,
        value: String,
    },
    ChangeHeader {
        index: u32,
        name: String,
        value: String,
    },
    InsertHeader {
        index: u32,
        name: String,
        value: String,
    },
    ChangeFrom(String),
    AddRcpt(String),
    DeleteRcpt(String),
    Quarantine(String),
}

/// How the conversation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver, with these changes (and this body, if replaced).
    Accept {
        changes: Vec<Change>,
        body: Option<Vec<u8>>,
    },
    Reject(Option<String>),
    Tempfail(Option<String>),
    Discard,
}

#[derive(Debug, thiserror::Error)]
pub enum MilterError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Protocol(#[from] DecodeError),
    #[error("unexpected reply {0}")]
    Unexpected(String),
    #[error("milter closed the connection")]
    Closed,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Runs the conversation with the milter at `address`.
pub async fn check(
    address: &MilterAddress,
    timeout: Duration,
    tx: &Transaction<'_>,
) -> Result<Verdict, MilterError> {
    let conversation = async {
        match address {
            MilterAddress::Inet(addr) => {
                let stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(MilterError::Connect)?;
                Conversation::new(stream).run(tx).await
            }
            MilterAddress::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(MilterError::Connect)?;
                Conversation::new(stream).run(tx).await
            }
        }
    };
    tokio::time::timeout(timeout, conversation)
        .await
        .map_err(|_| MilterError::Timeout(timeout))?
}

/// What a stage's reply means for the conversation.
enum Step {
    Next,
    /// Skip the rest of the body.
    SkipBody,
    Done(Verdict),
}

struct Conversation<S> {
    stream: S,
    buf: Vec<u8>,
    /// Steps the milter does not want (NO_*) or will not answer (NR_*).
    steps: u32,
    changes: Vec<Change>,
    body: Option<Vec<u8>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conversation<S> {
    fn new(stream: S) -> Self {
        Conversation {
            stream,
            buf: Vec::new(),
            steps: 0,
            changes: Vec::new(),
            body: None,
        }
    }

    async fn run(mut self, tx: &Transaction<'_>) -> Result<Verdict, MilterError> {
        let verdict = self.stages(tx).await;
        // Polite end; a milter that already hung up does not matter.
        let _ = self.stream.write_all(&Command::Quit.encode()).await;
        verdict
    }

    async fn stages(&mut self, tx: &Transaction<'_>) -> Result<Verdict, MilterError> {
        self.send(&Command::Negotiate {
            actions: actions::ALL,
            steps: steps::OFFERED,
        })
        .await?;
        match self.reply().await? {
            Reply::Negotiate { steps, .. } => self.steps = steps,
            other => return Err(MilterError::Unexpected(format!("{other:?}"))),
        }
        let macros = [("j", tx.hostname), ("{daemon_name}", "hermod")];
        self.send(&Command::Macros {
            code: b'C',
            pairs: &macros,
        })
        .await?;
        let connect = Command::Connect {
            hostname: tx.client_name,
            ip: tx.ip,
            port: 0,
        };
        if let Step::Done(v) = self
            .stage(&connect, steps::NO_CONNECT, steps::NR_CONNECT)
            .await?
        {
            return Ok(v);
        }
        if let Step::Done(v) = self
            .stage(&Command::Helo(tx.helo), steps::NO_HELO, steps::NR_HELO)
            .await?
        {
            return Ok(v);
        }
        let from = format!("<{}>", tx.sender);
        let macros = [("i", tx.queue_id), ("{mail_addr}", tx.sender)];
        self.send(&Command::Macros {
            code: b'M',
            pairs: &macros,
        })
        .await?;
        if let Step::Done(v) = self
            .stage(
                &Command::Mail(&[from.as_str()]),
                steps::NO_MAIL,
                steps::NR_MAIL,
            )
            .await?
        {
            return Ok(v);
        }
        for rcpt in tx.recipients {
            let to = format!("<{rcpt}>");
            let macros = [("{rcpt_addr}", rcpt.as_str())];
            self.send(&Command::Macros {
                code: b'R',
                pairs: &macros,
            })
            .await?;
            if let Step::Done(v) = self
                .stage(
                    &Command::Rcpt(&[to.as_str()]),
                    steps::NO_RCPT,
                    steps::NR_RCPT,
                )
                .await?
            {
                return Ok(v);
            }
        }
        if let Step::Done(v) = self
            .stage(&Command::Data, steps::NO_DATA, steps::NR_DATA)
            .await?
        {
            return Ok(v);
        }
        let fields = header_fields(tx.message);
        let body_start = fields.last().map_or(0, |f| f.end);
        for field in &fields {
            let name = String::from_utf8_lossy(&tx.message[field.start..field.name_end]);
            let raw = &tx.message[field.name_end + 1..field.end];
            let raw = raw
                .strip_suffix(b"\r\n")
                .or(raw.strip_suffix(b"\n"))
                .unwrap_or(raw);
            // Without HEADER_LEADING_SPACE the milter wants the value after the space.
            let raw = if self.steps & steps::HEADER_LEADING_SPACE == 0 {
                raw.strip_prefix(b" ").unwrap_or(raw)
            } else {
                raw
            };
            let value = String::from_utf8_lossy(raw);
            let header = Command::Header {
                name: name.trim(),
                value: &value,
            };
            if let Step::Done(v) = self
                .stage(&header, steps::NO_HEADERS, steps::NR_HEADER)
                .await?
            {
                return Ok(v);
            }
        }
        if let Step::Done(v) = self
            .stage(&Command::EndOfHeaders, steps::NO_EOH, steps::NR_EOH)
            .await?
        {
            return Ok(v);
        }
        // The body: after the empty line that ends the header section.
        let rest = &tx.message[body_start.min(tx.message.len())..];
        let body = rest
            .strip_prefix(b"\r\n")
            .or(rest.strip_prefix(b"\n"))
            .unwrap_or(rest);
        for chunk in body.chunks(BODY_CHUNK) {
            match self
                .stage(&Command::Body(chunk), steps::NO_BODY, steps::NR_BODY)
                .await?
            {
                Step::Done(v) => return Ok(v),
                Step::SkipBody => break,
                Step::Next => {}
            }
        }
        self.send(&Command::EndOfMessage).await?;
        loop {
            match self.reply().await? {
                Reply::AddHeader { name, value } => {
                    self.changes.push(Change::AddHeader { name, value })
                }
                Reply::ChangeHeader { index, name, value } => self
                    .changes
                    .push(Change::ChangeHeader { index, name, value }),
                Reply::InsertHeader { index, name, value } => self
                    .changes
                    .push(Change::InsertHeader { index, name, value }),
                Reply::ChangeFrom { address, .. } => self.changes.push(Change::ChangeFrom(address)),
                Reply::AddRcpt { address, .. } => self.changes.push(Change::AddRcpt(address)),
                Reply::DeleteRcpt(address) => self.changes.push(Change::DeleteRcpt(address)),
                Reply::Quarantine(reason) => self.changes.push(Change::Quarantine(reason)),
                Reply::ReplaceBody(piece) => self
                    .body
                    .get_or_insert_with(Vec::new)
                    .extend_from_slice(&piece),
                Reply::Progress => {}
                final_reply => {
                    return match self.finish(final_reply) {
                        Step::Done(v) => Ok(v),
                        _ => Ok(self.accepted()),
                    };
                }
            }
        }
    }

    /// Sends one stage's command (unless the milter asked to skip it) and reads its reply
    /// (unless the milter said it would not answer).
    async fn stage(
        &mut self,
        command: &Command<'_>,
        skip: u32,
        no_reply: u32,
    ) -> Result<Step, MilterError> {
        if self.steps & skip != 0 {
            return Ok(Step::Next);
        }
        self.send(command).await?;
        if self.steps & no_reply != 0 {
            return Ok(Step::Next);
        }
        loop {
            match self.reply().await? {
                Reply::Progress => continue,
                Reply::Skip => return Ok(Step::SkipBody),
                other => return Ok(self.finish(other)),
            }
        }
    }

    /// A reply that ends a stage.
    fn finish(&mut self, reply: Reply) -> Step {
        match reply {
            Reply::Continue => Step::Next,
            Reply::Accept => Step::Done(self.accepted()),
            Reply::Reject => Step::Done(Verdict::Reject(None)),
            Reply::Tempfail => Step::Done(Verdict::Tempfail(None)),
            Reply::Discard => Step::Done(Verdict::Discard),
            Reply::ReplyCode(text) => {
                if text.starts_with('4') {
                    Step::Done(Verdict::Tempfail(Some(text)))
                } else {
                    Step::Done(Verdict::Reject(Some(text)))
                }
            }
            other => Step::Done(Verdict::Tempfail(Some(format!(
                "451 4.7.1 Filter error (unexpected {})",
                reply_name(&other)
            )))),
        }
    }

    fn accepted(&mut self) -> Verdict {
        Verdict::Accept {
            changes: std::mem::take(&mut self.changes),
            body: self.body.take(),
        }
    }

    async fn send(&mut self, command: &Command<'_>) -> Result<(), MilterError> {
        self.stream.write_all(&command.encode()).await?;
        Ok(())
    }

    async fn reply(&mut self) -> Result<Reply, MilterError> {
        loop {
            if let Some(reply) = protocol::decode(&mut self.buf)? {
                return Ok(reply);
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(MilterError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn reply_name(reply: &Reply) -> String {
    match reply {
        Reply::Unknown(code) => format!("code {:?}", char::from(*code)),
        other => format!("{other:?}").chars().take(40).collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::net::TcpListener;

    use super::*;

    fn packet(code: u8, data: &[u8]) -> Vec<u8> {
        let mut p = u32::try_from(data.len() + 1)
            .unwrap()
            .to_be_bytes()
            .to_vec();
        p.push(code);
        p.extend_from_slice(data);
        p
    }

    /// A milter on loopback: negotiates `steps`, answers `special` to the command with that
    /// byte, `eom` (whole packets) to the end of message, `c` to the rest; gives the command
    /// bytes it saw.
    async fn fake_milter(
        steps: u32,
        special: Option<(u8, Vec<u8>)>,
        eom: Vec<Vec<u8>>,
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            loop {
                let mut len = [0u8; 4];
                if s.read_exact(&mut len).await.is_err() {
                    return seen;
                }
                let mut data = vec![0u8; u32::from_be_bytes(len) as usize];
                s.read_exact(&mut data).await.unwrap();
                let code = data[0];
                seen.push(code);
                let answer: Vec<u8> = match code {
                    b'O' => {
                        let mut d = 6u32.to_be_bytes().to_vec();
                        d.extend_from_slice(&actions::ALL.to_be_bytes());
                        d.extend_from_slice(&steps.to_be_bytes());
                        packet(b'O', &d)
                    }
                    b'D' | b'A' => Vec::new(),
                    b'Q' => return seen,
                    b'E' => eom.concat(),
                    c if special.as_ref().is_some_and(|(s, _)| *s == c) => {
                        special.as_ref().unwrap().1.clone()
                    }
                    b'L' if steps & steps::NR_HEADER != 0 => Vec::new(),
                    _ => packet(b'c', b""),
                };
                s.write_all(&answer).await.unwrap();
            }
        });
        (addr, task)
    }

    const MESSAGE: &[u8] = b"Received: x\r\nSubject: hi\r\n\r\nbody line\r\n";

    async fn run(
        steps: u32,
        special: Option<(u8, Vec<u8>)>,
        eom: Vec<Vec<u8>>,
    ) -> (Result<Verdict, MilterError>, Vec<u8>) {
        let (addr, task) = fake_milter(steps, special, eom).await;
        let rcpts = vec![
            "bob@example.org".to_string(),
            "carol@example.org".to_string(),
        ];
        let tx = Transaction {
            ip: "192.0.2.1".parse().unwrap(),
            client_name: "unknown",
            helo: "client.example",
            sender: "alice@example.net",
            recipients: &rcpts,
            queue_id: "Q1",
            hostname: "mx.example.org",
            message: MESSAGE,
        };
        let address = MilterAddress::Inet(addr.to_string());
        let verdict = check(&address, Duration::from_secs(5), &tx).await;
        (verdict, task.await.unwrap())
    }

    #[tokio::test]
    async fn every_stage_is_sent_and_end_of_message_changes_are_collected() {
        let (verdict, seen) = run(
            0,
            None,
            vec![
                packet(b'h', b"X-Milter\0yes\0"),
                packet(b'm', b"\0\0\0\x01Subject\0changed\0"),
                packet(b'p', b""),
                packet(b'b', b"new "),
                packet(b'b', b"body\r\n"),
                packet(b'q', b"looks odd\0"),
                packet(b'a', b""),
            ],
        )
        .await;
        assert_eq!(seen, b"ODCHDMDRDRTLLNBEQ".to_vec());
        let Ok(Verdict::Accept { changes, body }) = verdict else {
            panic!("{verdict:?}");
        };
        assert_eq!(body.as_deref(), Some(&b"new body\r\n"[..]));
        assert_eq!(
            changes,
            vec![
                Change::AddHeader {
                    name: "X-Milter".into(),
                    value: "yes".into()
                },
                Change::ChangeHeader {
                    index: 1,
                    name: "Subject".into(),
                    value: "changed".into()
                },
                Change::Quarantine("looks odd".into()),
            ]
        );
    }

    #[tokio::test]
    async fn a_stage_reply_ends_the_conversation() {
        let reject = packet(b'y', b"550 5.7.1 No such user here\0");
        let (verdict, seen) = run(0, Some((b'R', reject)), vec![]).await;
        assert_eq!(
            verdict.unwrap(),
            Verdict::Reject(Some("550 5.7.1 No such user here".into()))
        );
        assert_eq!(seen, b"ODCHDMDRQ".to_vec());
        let (verdict, _) = run(0, Some((b'M', packet(b'd', b""))), vec![]).await;
        assert_eq!(verdict.unwrap(), Verdict::Discard);
        let (verdict, _) = run(0, Some((b'C', packet(b't', b""))), vec![]).await;
        assert_eq!(verdict.unwrap(), Verdict::Tempfail(None));
        // Accept at HELO: no more stages, no changes.
        let (verdict, seen) = run(0, Some((b'H', packet(b'a', b""))), vec![]).await;
        assert_eq!(
            verdict.unwrap(),
            Verdict::Accept {
                changes: vec![],
                body: None
            }
        );
        assert_eq!(seen, b"ODCHQ".to_vec());
    }

    #[tokio::test]
    async fn skipped_and_unanswered_steps_are_honoured() {
        let steps = steps::NO_BODY | steps::NR_HEADER | steps::NO_HELO;
        let (verdict, seen) = run(steps, None, vec![packet(b'c', b"")]).await;
        assert!(matches!(verdict, Ok(Verdict::Accept { .. })), "{verdict:?}");
        assert_eq!(seen, b"ODCDMDRDRTLLNEQ".to_vec());
    }

    #[tokio::test]
    async fn garbage_silence_and_absence_are_errors() {
        let (verdict, _) = run(0, Some((b'M', vec![0xff, 0xff, 0xff, 0xff])), vec![]).await;
        assert!(
            matches!(verdict, Err(MilterError::Protocol(_))),
            "{verdict:?}"
        );
        let (verdict, _) = run(0, Some((b'T', packet(b'Z', b""))), vec![]).await;
        assert!(
            matches!(verdict, Ok(Verdict::Tempfail(Some(_)))),
            "{verdict:?}"
        );

        // A milter that never answers: the timeout.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = MilterAddress::Inet(listener.local_addr().unwrap().to_string());
        let held = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        let rcpts = vec![];
        let tx = Transaction {
            ip: "192.0.2.1".parse().unwrap(),
            client_name: "unknown",
            helo: "h",
            sender: "",
            recipients: &rcpts,
            queue_id: "Q",
            hostname: "mx",
            message: MESSAGE,
        };
        let verdict = check(&address, Duration::from_millis(300), &tx).await;
        assert!(
            matches!(verdict, Err(MilterError::Timeout(_))),
            "{verdict:?}"
        );
        drop(held);
        // Nobody there.
        let verdict = check(&address, Duration::from_secs(2), &tx).await;
        assert!(
            matches!(verdict, Err(MilterError::Connect(_))),
            "{verdict:?}"
        );
    }

    #[test]
    fn postfix_addresses() {
        assert_eq!(
            "inet:127.0.0.1:11332".parse(),
            Ok(MilterAddress::Inet("127.0.0.1:11332".into()))
        );
        assert_eq!(
            "inet:11332@localhost".parse(),
            Ok(MilterAddress::Inet("localhost:11332".into()))
        );
        assert_eq!(
            "unix:/run/m.sock".parse(),
            Ok(MilterAddress::Unix("/run/m.sock".into()))
        );
        assert!("tcp:1.2.3.4:1".parse::<MilterAddress>().is_err());
        assert!("inet:host".parse::<MilterAddress>().is_err());
    }
}
