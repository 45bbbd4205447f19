//! An LMTP client (RFC 2033): local delivery when `hermod mta` runs apart from `hermod mda`.
//!
//! One connection per message: LHLO, MAIL, one RCPT per recipient, DATA with the message
//! dot-stuffed, then one reply per accepted recipient, which is what makes LMTP better than
//! SMTP for this: every recipient gets its own verdict.
//!
//! A big queued message (a file under `queue/messages/`) is sent from its file a chunk at a
//! time, dot-stuffed as it goes ([`StuffedFile`], shared with the SMTP client), never read
//! whole.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hermod_common::net::{Line, read_line};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use crate::delivery::{DeliveryError, LocalDelivery};
use crate::outbound::body::{self, FileMessage, OutgoingContent, StuffedFile};

/// Longest reply line read from the server.
const MAX_REPLY_LINE: usize = 4096;

/// Where the LMTP server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LmtpAddress {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// Delivers through an LMTP server.
#[derive(Debug, Clone)]
pub struct LmtpClient {
    address: LmtpAddress,
    /// Our name in LHLO.
    hostname: String,
    /// Bound on every step (connect, each reply, sending the message).
    timeout: Duration,
}

/// One server reply: code and text (continuation lines joined with spaces).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerReply {
    code: u16,
    text: String,
}

impl ServerReply {
    fn line(&self) -> String {
        format!("{} {}", self.code, self.text)
    }

    fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    fn into_error(self) -> DeliveryError {
        if self.code >= 500 {
            DeliveryError::permanent(self.line())
        } else {
            DeliveryError::temporary(self.line())
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum LmtpError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("connection closed by the server")]
    Closed,
    #[error("malformed reply {0:?}")]
    Malformed(String),
    #[error("reply line too long")]
    TooLong,
}

impl LmtpClient {
    pub fn new(address: LmtpAddress, hostname: impl Into<String>) -> Self {
        LmtpClient {
            address,
            hostname: hostname.into(),
            timeout: Duration::from_secs(300),
        }
    }

    /// Changes the per-step timeout (5 minutes by default).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn run(
        &self,
        sender: &str,
        recipients: &[String],
        message: OutgoingContent<'_>,
    ) -> Result<Vec<Result<(), DeliveryError>>, LmtpError> {
        match &self.address {
            LmtpAddress::Tcp(addr) => {
                let stream = self.step(tokio::net::TcpStream::connect(addr)).await??;
                let _ = stream.set_nodelay(true);
                self.transaction(stream, sender, recipients, message).await
            }
            LmtpAddress::Unix(path) => {
                let stream = self.step(tokio::net::UnixStream::connect(path)).await??;
                self.transaction(stream, sender, recipients, message).await
            }
        }
    }

    async fn step<F: Future>(&self, fut: F) -> Result<F::Output, LmtpError> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| LmtpError::Timeout)
    }

    async fn transaction<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        sender: &str,
        recipients: &[String],
        message: OutgoingContent<'_>,
    ) -> Result<Vec<Result<(), DeliveryError>>, LmtpError> {
        let mut conn = BufReader::new(stream);
        let all = |reply: ServerReply| -> Vec<Result<(), DeliveryError>> {
            recipients
                .iter()
                .map(|_| Err(reply.clone().into_error()))
                .collect()
        };

        let greeting = self.reply(&mut conn).await?;
        if !greeting.is_positive() {
            return Ok(all(greeting));
        }
        self.send(&mut conn, format!("LHLO {}\r\n", self.hostname).as_bytes())
            .await?;
        let lhlo = self.reply(&mut conn).await?;
        if !lhlo.is_positive() {
            return Ok(all(lhlo));
        }
        let eight_bit = message.eight_bit() && lhlo.text.to_ascii_uppercase().contains("8BITMIME");
        let utf8 = !(sender.is_ascii() && recipients.iter().all(|r| r.is_ascii()))
            && lhlo.text.to_ascii_uppercase().contains("SMTPUTF8");
        let mut mail = format!("MAIL FROM:<{sender}>");
        if eight_bit {
            mail.push_str(" BODY=8BITMIME");
        }
        if utf8 {
            mail.push_str(" SMTPUTF8");
        }
        mail.push_str("\r\n");
        self.send(&mut conn, mail.as_bytes()).await?;
        let reply = self.reply(&mut conn).await?;
        if !reply.is_positive() {
            let _ = self.send(&mut conn, b"QUIT\r\n").await;
            return Ok(all(reply));
        }

        let mut results: Vec<Option<Result<(), DeliveryError>>> = Vec::new();
        for rcpt in recipients {
            self.send(&mut conn, format!("RCPT TO:<{rcpt}>\r\n").as_bytes())
                .await?;
            let reply = self.reply(&mut conn).await?;
            // None: accepted, its verdict comes after DATA.
            results.push((!reply.is_positive()).then(|| Err(reply.into_error())));
        }
        if results.iter().all(Option::is_some) {
            let _ = self.send(&mut conn, b"QUIT\r\n").await;
            return Ok(results.into_iter().flatten().collect());
        }

        self.send(&mut conn, b"DATA\r\n").await?;
        let reply = self.reply(&mut conn).await?;
        if reply.code != 354 {
            let _ = self.send(&mut conn, b"QUIT\r\n").await;
            return Ok(results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(reply.clone().into_error())))
                .collect());
        }
        match message {
            OutgoingContent::Memory(m) => self.send(&mut conn, &dot_stuff(m)).await?,
            OutgoingContent::File(f) => self.send_file(&mut conn, f).await?,
        }
        // One reply per accepted recipient, in RCPT order (RFC 2033 4.2).
        for slot in results.iter_mut().filter(|r| r.is_none()) {
            let reply = self.reply(&mut conn).await?;
            *slot = Some(if reply.is_positive() {
                Ok(())
            } else {
                Err(reply.into_error())
            });
        }
        let _ = self.send(&mut conn, b"QUIT\r\n").await;
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(DeliveryError::temporary("451 4.4.0 no reply"))))
            .collect())
    }

    async fn send<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        conn: &mut BufReader<S>,
        bytes: &[u8],
    ) -> Result<(), LmtpError> {
        self.step(async {
            conn.get_mut().write_all(bytes).await?;
            conn.get_mut().flush().await
        })
        .await??;
        Ok(())
    }

    /// Sends a message file as DATA content, a chunk at a time. A read error drops the
    /// connection before the end line, so the server discards the transaction.
    async fn send_file<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        conn: &mut BufReader<S>,
        message: &FileMessage,
    ) -> Result<(), LmtpError> {
        let mut file = StuffedFile::open(message.path()).await?;
        let mut part = Vec::with_capacity(body::CHUNK + body::CHUNK / 8);
        while file.next_part(&mut part).await? {
            self.send(conn, &part).await?;
        }
        Ok(())
    }

    async fn reply<S: AsyncRead + Unpin>(
        &self,
        conn: &mut BufReader<S>,
    ) -> Result<ServerReply, LmtpError> {
        let mut texts = Vec::new();
        let mut line = Vec::new();
        loop {
            match self
                .step(read_line(conn, &mut line, MAX_REPLY_LINE))
                .await??
            {
                Line::Complete => {}
                Line::TooLong => return Err(LmtpError::TooLong),
                Line::Eof => return Err(LmtpError::Closed),
            }
            let text = String::from_utf8_lossy(&line);
            let malformed = || LmtpError::Malformed(text.chars().take(80).collect());
            let code: u16 = text
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(malformed)?;
            let separator = text.as_bytes().get(3).copied().unwrap_or(b' ');
            texts.push(text.get(4..).unwrap_or("").trim().to_string());
            match separator {
                b'-' => continue,
                b' ' => {
                    return Ok(ServerReply {
                        code,
                        text: texts.join(" "),
                    });
                }
                _ => return Err(malformed()),
            }
        }
    }
}

impl LocalDelivery for LmtpClient {
    async fn deliver(
        &self,
        sender: &str,
        recipient: &str,
        message: &[u8],
    ) -> Result<(), DeliveryError> {
        self.deliver_many(sender, &[recipient.to_string()], message)
            .await
            .pop()
            .unwrap_or_else(|| Err(DeliveryError::temporary("451 4.4.0 no reply")))
    }

    async fn deliver_many(
        &self,
        sender: &str,
        recipients: &[String],
        message: &[u8],
    ) -> Vec<Result<(), DeliveryError>> {
        self.deliver_content(sender, recipients, OutgoingContent::Memory(message))
            .await
    }

    /// A big queued message: looked at once for its 8-bit content, then sent from its file.
    async fn deliver_file_many(
        &self,
        sender: &str,
        recipients: &[String],
        path: &Path,
        _after_restart: bool,
    ) -> Vec<Result<(), DeliveryError>> {
        match FileMessage::scan_async(path).await {
            Ok(file) => {
                self.deliver_content(sender, recipients, OutgoingContent::File(&file))
                    .await
            }
            Err(e) => {
                let reply = format!("451 4.3.0 cannot read the queued message: {e}");
                recipients
                    .iter()
                    .map(|_| Err(DeliveryError::temporary(reply.clone())))
                    .collect()
            }
        }
    }
}

impl LmtpClient {
    async fn deliver_content(
        &self,
        sender: &str,
        recipients: &[String],
        message: OutgoingContent<'_>,
    ) -> Vec<Result<(), DeliveryError>> {
        match self.run(sender, recipients, message).await {
            Ok(results) => results,
            Err(e) => {
                tracing::warn!(server = ?self.address, error = %e, "LMTP delivery failed");
                recipients
                    .iter()
                    .map(|_| Err(DeliveryError::temporary(format!("451 4.4.1 LMTP: {e}"))))
                    .collect()
            }
        }
    }
}

/// The message as DATA content: a line starting with `.` gets another `.`, the message ends
/// with CRLF, then the `.` line that ends the data.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 5);
    let mut at_line_start = true;
    for &byte in message {
        if at_line_start && byte == b'.' {
            out.push(b'.');
        }
        out.push(byte);
        at_line_start = byte == b'\n';
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};

    #[test]
    fn dot_stuffing() {
        assert_eq!(dot_stuff(b".a\r\nb\r\n..\r\n"), b"..a\r\nb\r\n...\r\n.\r\n");
        assert_eq!(dot_stuff(b"x"), b"x\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
    }

    /// A scripted LMTP server: answers each command with the next canned reply and records
    /// what it received.
    async fn fake_server(
        replies: Vec<&'static str>,
    ) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut read = tokio::io::BufReader::new(read);
            let mut log = String::new();
            let mut replies = replies.into_iter();
            write
                .write_all(replies.next().unwrap().as_bytes())
                .await
                .unwrap();
            let mut in_data = false;
            loop {
                let mut line = String::new();
                if read.read_line(&mut line).await.unwrap() == 0 {
                    break;
                }
                log.push_str(&line);
                if in_data {
                    if line == ".\r\n" {
                        in_data = false;
                        for r in replies.by_ref() {
                            if r == "--" {
                                break;
                            }
                            write.write_all(r.as_bytes()).await.unwrap();
                        }
                    }
                    continue;
                }
                let Some(reply) = replies.next() else { break };
                write.write_all(reply.as_bytes()).await.unwrap();
                if line.starts_with("DATA") && reply.starts_with("354") {
                    in_data = true;
                }
                if line.starts_with("QUIT") {
                    break;
                }
            }
            drop(write);
            let mut rest = Vec::new();
            let _ = read.read_to_end(&mut rest).await;
            log
        });
        (addr, task)
    }

    #[tokio::test]
    async fn per_recipient_replies_after_data() {
        let (addr, server) = fake_server(vec![
            "220 lmtp ready\r\n",
            "250-mda\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
            "250 2.1.0 ok\r\n",
            "250 2.1.5 ok\r\n",
            "550 5.1.1 no such user\r\n",
            "250 2.1.5 ok\r\n",
            "354 go ahead\r\n",
            "250 2.0.0 delivered to alice\r\n",
            "452 4.2.2 bob over quota\r\n",
            "--",
            "221 bye\r\n",
        ])
        .await;
        let client = LmtpClient::new(LmtpAddress::Tcp(addr), "mx.example.org");
        let results = client
            .deliver_many(
                "s@example.net",
                &[
                    "alice@example.org".into(),
                    "ghost@example.org".into(),
                    "bob@example.org".into(),
                ],
                b"Subject: x\r\n\r\n.hidden\r\nbody\r\n",
            )
            .await;
        assert_eq!(results[0], Ok(()));
        assert_eq!(
            results[1],
            Err(DeliveryError::permanent("550 5.1.1 no such user"))
        );
        assert_eq!(
            results[2],
            Err(DeliveryError::temporary("452 4.2.2 bob over quota"))
        );
        let log = server.await.unwrap();
        assert!(log.starts_with("LHLO mx.example.org\r\nMAIL FROM:<s@example.net>\r\n"));
        assert!(log.contains("RCPT TO:<ghost@example.org>\r\n"));
        // The message was dot-stuffed and terminated.
        assert!(log.contains("\r\n..hidden\r\nbody\r\n.\r\n"), "{log}");
    }

    #[tokio::test]
    async fn a_queue_file_is_sent_dot_stuffed_from_the_file() {
        let (addr, server) = fake_server(vec![
            "220 lmtp ready\r\n",
            "250-mda\r\n250 8BITMIME\r\n",
            "250 2.1.0 ok\r\n",
            "250 2.1.5 ok\r\n",
            "354 go ahead\r\n",
            "250 2.0.0 delivered\r\n",
            "--",
            "221 bye\r\n",
        ])
        .await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queued");
        let mut content = "Subject: big\r\n\r\n".to_string();
        let mut i = 0;
        while content.len() < 3 * body::CHUNK {
            content.push_str(&format!(".line {i}\r\nplain {i} \u{e9}\r\n"));
            i += 1;
        }
        content.push_str("..last");
        std::fs::write(&path, &content).unwrap();
        let client = LmtpClient::new(LmtpAddress::Tcp(addr), "mx");
        let results = client
            .deliver_file_many("s@example.net", &["alice@example.org".into()], &path, false)
            .await;
        assert_eq!(results, vec![Ok(())]);
        let log = server.await.unwrap();
        // 8-bit content was seen in the file and announced.
        assert!(
            log.contains("MAIL FROM:<s@example.net> BODY=8BITMIME\r\n"),
            "{}",
            &log[..200]
        );
        let data = log.split_once("DATA\r\n").unwrap().1;
        let expected = String::from_utf8(dot_stuff(content.as_bytes())).unwrap();
        assert!(
            data.starts_with(&expected),
            "the content changed on the way"
        );
    }

    #[tokio::test]
    async fn no_accepted_recipient_means_no_data() {
        let (addr, server) = fake_server(vec![
            "220 ready\r\n",
            "250 mda\r\n",
            "250 ok\r\n",
            "550 5.1.1 unknown\r\n",
            "221 bye\r\n",
        ])
        .await;
        let client = LmtpClient::new(LmtpAddress::Tcp(addr), "mx");
        let result = client.deliver("", "ghost@example.org", b"x\r\n").await;
        assert!(result.unwrap_err().is_permanent());
        let log = server.await.unwrap();
        assert!(!log.contains("DATA"), "{log}");
        assert!(log.contains("MAIL FROM:<>\r\n"));
    }

    #[tokio::test]
    async fn unreachable_server_is_a_temporary_failure() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = LmtpClient::new(LmtpAddress::Tcp(addr), "mx");
        let results = client
            .deliver_many("a@b.c", &["x@y.z".into(), "w@y.z".into()], b"m\r\n")
            .await;
        assert_eq!(results.len(), 2);
        for r in results {
            let e = r.unwrap_err();
            assert!(!e.is_permanent());
            assert!(e.reply.starts_with("451 4.4.1 LMTP:"), "{}", e.reply);
        }
    }

    #[tokio::test]
    async fn server_closing_mid_transaction_is_temporary() {
        let (addr, _server) = fake_server(vec!["220 ready\r\n", "250 mda\r\n"]).await;
        let client =
            LmtpClient::new(LmtpAddress::Tcp(addr), "mx").with_timeout(Duration::from_secs(5));
        let e = client
            .deliver("a@b.c", "x@y.z", b"m\r\n")
            .await
            .unwrap_err();
        assert!(!e.is_permanent(), "{e}");
    }
}
