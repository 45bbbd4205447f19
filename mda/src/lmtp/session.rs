//! The LMTP server session (RFC 2033), sans-I/O: bytes in with [`Session::feed`], replies
//! out with [`Session::take_output`], and [`Session::next_action`] says what the I/O loop
//! must do next (read, check a recipient, deliver, close).
//!
//! Commands are parsed by smtp-proto; DATA is read by its `DataReceiver`, which ends the
//! message only on CRLF.CRLF and removes dot-stuffing. After the final dot there is one
//! reply per accepted recipient, in RCPT order.

use std::path::PathBuf;

use hermod_common::Config;
use smtp_proto::request::receiver::DataReceiver;
use smtp_proto::{Error as ParseError, Request};

use crate::delivery::Envelope;
use crate::reply::Reply;
use crate::spool::Body;

/// The limits and names a session works with.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our name in the greeting and the LHLO reply.
    pub hostname: String,
    /// Largest message accepted (SIZE), in bytes; 0 = no limit.
    pub size_limit: u64,
    /// Recipients per transaction.
    pub max_recipients: usize,
    /// Longest command line, in bytes (without its line end).
    pub max_line_length: usize,
    /// Protocol errors before the session is closed.
    pub max_errors: usize,
    /// Where message content above [`crate::spool::SPOOL_THRESHOLD`] is written as it
    /// arrives; `None` keeps every message in memory.
    pub spool_dir: Option<PathBuf>,
}

impl SessionConfig {
    pub fn from_config(config: &Config) -> SessionConfig {
        SessionConfig {
            hostname: config.myhostname.clone(),
            size_limit: config.message_size_limit,
            max_recipients: config.limits.max_recipients.max(1),
            // RFC 5321 4.5.3.1.4: at least 512 octets with the CRLF.
            max_line_length: config.limits.max_line_length.max(510),
            max_errors: config.limits.max_errors.max(1),
            spool_dir: Some(spool_dir(config)),
        }
    }
}

/// Where LMTP sessions spool big messages: `<data_dir>/lmtp/spool` (the server creates it
/// and empties it at start).
pub fn spool_dir(config: &Config) -> PathBuf {
    config.data_dir.join("lmtp").join("spool")
}

/// What the I/O loop must do next.
#[derive(Debug)]
pub enum Action {
    /// Write the pending output, then read more input and [`Session::feed`] it.
    NeedInput,
    /// Look this recipient up, then call [`Session::recipient_checked`].
    CheckRecipient(String),
    /// Finish the message ([`Body::finish`]: it fsyncs a spool file, so the I/O loop runs it
    /// on the blocking pool), deliver it, then call [`Session::delivered`] with one reply
    /// per recipient of the envelope, in order.
    Deliver { envelope: Envelope, message: Body },
    /// Write the pending output, then close the connection.
    Close,
}

/// A message being received after DATA.
struct DataPhase {
    receiver: DataReceiver,
    /// In memory up to the spool threshold, then in a spool file.
    message: Body,
    /// Bytes thrown away once the message passed the size limit.
    discarded: u64,
}

enum State {
    Command,
    Data(Box<DataPhase>),
    /// Waiting for [`Session::recipient_checked`].
    CheckingRecipient(String),
    /// Waiting for [`Session::delivered`].
    Delivering,
    Closed,
}

/// One LMTP connection's protocol state.
pub struct Session {
    cfg: SessionConfig,
    input: Vec<u8>,
    output: Vec<u8>,
    state: State,
    greeted: bool,
    sender: Option<String>,
    recipients: Vec<String>,
    errors: usize,
    /// An overlong command line is being skipped up to its line end.
    skipping_line: bool,
}

impl Session {
    /// A new session; the 220 greeting is already in the output.
    pub fn new(cfg: SessionConfig) -> Session {
        let mut s = Session {
            input: Vec::new(),
            output: Vec::new(),
            state: State::Command,
            greeted: false,
            sender: None,
            recipients: Vec::new(),
            errors: 0,
            skipping_line: false,
            cfg,
        };
        let greeting = format!("220 {} LMTP ready\r\n", s.cfg.hostname);
        s.output.extend_from_slice(greeting.as_bytes());
        s
    }

    /// Bytes received from the client.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    /// Replies to send (taking them out of the session).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// True once the session has ended (QUIT, too many errors, timeout, shutdown).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The client was silent for too long.
    pub fn timed_out(&mut self) {
        self.close_with(&format!(
            "421 4.4.2 {} idle for too long, closing\r\n",
            self.cfg.hostname
        ));
    }

    /// The server is stopping.
    pub fn shutting_down(&mut self) {
        self.close_with(&format!(
            "421 4.3.2 {} shutting down, try again later\r\n",
            self.cfg.hostname
        ));
    }

    fn close_with(&mut self, line: &str) {
        if !self.is_closed() {
            self.output.extend_from_slice(line.as_bytes());
            self.state = State::Closed;
        }
    }

    fn reply(&mut self, code: u16, status: [u16; 3], text: &str) {
        self.output
            .extend_from_slice(Reply::new(code, status, text).to_line().as_bytes());
    }

    /// A 5xx for a protocol error; too many of them end the session.
    fn error(&mut self, code: u16, status: [u16; 3], text: &str) {
        self.reply(code, status, text);
        self.errors += 1;
        if self.errors >= self.cfg.max_errors {
            self.close_with("421 4.7.0 Too many errors, closing connection\r\n");
        }
    }

    fn reset_transaction(&mut self) {
        self.sender = None;
        self.recipients.clear();
    }

    /// Processes buffered input until the I/O loop has to act.
    pub fn next_action(&mut self) -> Action {
        loop {
            match &mut self.state {
                State::Closed => return Action::Close,
                // Misuse by the caller: the answer to the last action never came.
                State::CheckingRecipient(_) | State::Delivering => return Action::Close,
                State::Data(phase) => {
                    let mut bytes = self.input.iter();
                    let limit = self.cfg.size_limit;
                    let done = if phase.discarded > 0 {
                        // Past the limit: read to the final dot, keep nothing.
                        let mut thrown = Vec::new();
                        let done = phase.receiver.ingest(&mut bytes, &mut thrown);
                        phase.discarded += thrown.len() as u64;
                        done
                    } else {
                        let before = phase.message.buffer().len();
                        let done = phase.receiver.ingest(&mut bytes, phase.message.buffer());
                        phase.message.ingested(before);
                        if limit > 0 && phase.message.len() as u64 > limit {
                            phase.discarded = phase.message.len() as u64;
                            phase.message.discard();
                        }
                        done
                    };
                    let consumed = self.input.len() - bytes.len();
                    self.input.drain(..consumed);
                    if !done {
                        return Action::NeedInput;
                    }
                    let State::Data(phase) = std::mem::replace(&mut self.state, State::Command)
                    else {
                        return Action::Close;
                    };
                    if phase.discarded > 0 {
                        let text = format!("Message too big (limit {limit} bytes)");
                        for _ in 0..self.recipients.len() {
                            self.reply(552, [5, 3, 4], &text);
                        }
                        self.reset_transaction();
                        continue;
                    }
                    self.state = State::Delivering;
                    return Action::Deliver {
                        envelope: Envelope {
                            sender: self.sender.clone().unwrap_or_default(),
                            recipients: self.recipients.clone(),
                        },
                        message: phase.message,
                    };
                }
                State::Command => {
                    let Some(end) = self.input.iter().position(|b| *b == b'\n') else {
                        if self.input.len() > self.cfg.max_line_length + 2 {
                            self.skipping_line = true;
                            self.input.clear();
                        }
                        return Action::NeedInput;
                    };
                    let line: Vec<u8> = self.input.drain(..=end).collect();
                    if std::mem::take(&mut self.skipping_line)
                        || line.len() > self.cfg.max_line_length + 2
                    {
                        self.error(500, [5, 5, 2], "Line too long");
                        continue;
                    }
                    if let Some(action) = self.command(&line) {
                        return action;
                    }
                }
            }
        }
    }

    /// Handles one command line (with its line end).
    fn command(&mut self, line: &[u8]) -> Option<Action> {
        let request = match Request::parse(&mut line.iter()) {
            Ok(r) => r,
            Err(e) => {
                self.parse_error(e);
                return None;
            }
        };
        match request {
            Request::Lhlo { host } => {
                let _ = host;
                self.greeted = true;
                self.reset_transaction();
                // Written by hand: smtp-proto's EhloResponse greets with "you had me at EHLO".
                let size = match self.cfg.size_limit {
                    0 => "SIZE".to_string(),
                    n => format!("SIZE {n}"),
                };
                let text = format!(
                    "250-{}\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 {size}\r\n",
                    self.cfg.hostname
                );
                self.output.extend_from_slice(text.as_bytes());
            }
            Request::Ehlo { .. } | Request::Helo { .. } => {
                self.error(500, [5, 5, 1], "This is an LMTP server: use LHLO");
            }
            Request::Mail { from } => {
                if !self.greeted {
                    self.error(503, [5, 5, 1], "Send LHLO first");
                } else if self.sender.is_some() {
                    self.error(503, [5, 5, 1], "Nested MAIL command");
                } else if self.cfg.size_limit > 0 && from.size as u64 > self.cfg.size_limit {
                    let text = format!("Message too big (limit {} bytes)", self.cfg.size_limit);
                    self.reply(552, [5, 3, 4], &text);
                } else {
                    let text = format!("<{}> sender OK", from.address);
                    self.sender = Some(from.address.into_owned());
                    self.reply(250, [2, 1, 0], &text);
                }
            }
            Request::Rcpt { to } => {
                if self.sender.is_none() {
                    self.error(503, [5, 5, 1], "Send MAIL first");
                } else if self.recipients.len() >= self.cfg.max_recipients {
                    self.reply(452, [4, 5, 3], "Too many recipients");
                } else {
                    // `<Postmaster>` without a domain (RFC 5321 4.5.1) parses as empty.
                    let address = if to.address.is_empty() {
                        format!("postmaster@{}", self.cfg.hostname)
                    } else {
                        to.address.into_owned()
                    };
                    self.state = State::CheckingRecipient(address.clone());
                    return Some(Action::CheckRecipient(address));
                }
            }
            Request::Data => {
                if self.sender.is_none() {
                    self.error(503, [5, 5, 1], "Send MAIL first");
                } else if self.recipients.is_empty() {
                    // RFC 2033 4.2: DATA without a successful RCPT fails with 503.
                    self.error(503, [5, 5, 1], "No valid recipients");
                } else {
                    let mut receiver = DataReceiver::new();
                    // The receiver recognises "CRLF ." only after a CRLF it has seen itself;
                    // the CRLF that ended the DATA line counts too, so that an empty message
                    // (".") or a first line starting with a dot is read right.
                    receiver.ingest(&mut b"\r\n".iter(), &mut Vec::new());
                    self.state = State::Data(Box::new(DataPhase {
                        receiver,
                        message: Body::new(self.cfg.spool_dir.clone()),
                        discarded: 0,
                    }));
                    self.reply(354, [2, 0, 0], "Start mail input; end with <CRLF>.<CRLF>");
                }
            }
            Request::Rset => {
                self.reset_transaction();
                self.reply(250, [2, 0, 0], "OK");
            }
            Request::Noop { .. } => self.reply(250, [2, 0, 0], "OK"),
            Request::Quit => {
                let line = format!("221 2.0.0 {} closing connection\r\n", self.cfg.hostname);
                self.close_with(&line);
            }
            Request::Vrfy { .. } => {
                self.reply(252, [2, 5, 0], "Cannot VRFY; send the message to find out")
            }
            _ => self.error(502, [5, 5, 1], "Command not implemented"),
        }
        None
    }

    fn parse_error(&mut self, e: ParseError) {
        match e {
            ParseError::UnknownCommand => self.error(500, [5, 5, 1], "Unknown command"),
            ParseError::InvalidSenderAddress => {
                self.error(501, [5, 1, 7], "Invalid sender address")
            }
            ParseError::InvalidRecipientAddress => {
                self.error(501, [5, 1, 3], "Invalid recipient address")
            }
            ParseError::SyntaxError { syntax } => {
                self.error(501, [5, 5, 4], &format!("Syntax: {syntax}"))
            }
            ParseError::InvalidParameter { param } => {
                self.error(501, [5, 5, 4], &format!("Invalid parameter {param}"))
            }
            ParseError::UnsupportedParameter { param } => {
                self.error(555, [5, 5, 4], &format!("Unsupported parameter {param}"))
            }
            _ => self.error(500, [5, 5, 2], "Syntax error"),
        }
    }

    /// The answer to [`Action::CheckRecipient`]: Ok accepts the recipient (250), Err is
    /// the refusal to send.
    pub fn recipient_checked(&mut self, result: Result<(), Reply>) {
        let State::CheckingRecipient(address) = std::mem::replace(&mut self.state, State::Command)
        else {
            return;
        };
        match result {
            Ok(()) => {
                self.reply(250, [2, 1, 5], &format!("<{address}> recipient OK"));
                self.recipients.push(address);
            }
            Err(reply) => self.output.extend_from_slice(reply.to_line().as_bytes()),
        }
    }

    /// The answer to [`Action::Deliver`]: one reply per recipient, in envelope order. A
    /// missing reply (a caller bug) is sent as a temporary failure, never as a success.
    pub fn delivered(&mut self, replies: Vec<Reply>) {
        if !matches!(self.state, State::Delivering) {
            return;
        }
        self.state = State::Command;
        let mut replies = replies.into_iter();
        for _ in 0..self.recipients.len() {
            let reply = replies
                .next()
                .unwrap_or_else(|| Reply::new(451, [4, 3, 0], "Delivery result missing"));
            self.output.extend_from_slice(reply.to_line().as_bytes());
        }
        self.reset_transaction();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{Content, SPOOL_THRESHOLD};

    fn session() -> Session {
        Session::new(SessionConfig {
            hostname: "mx.example.org".into(),
            size_limit: 1000,
            max_recipients: 3,
            max_line_length: 100,
            max_errors: 5,
            spool_dir: None,
        })
    }

    fn content(message: Body) -> Vec<u8> {
        match message.finish().unwrap() {
            Content::Memory(m) => m,
            Content::Spooled(f) => std::fs::read(f.path()).unwrap(),
        }
    }

    fn out(s: &mut Session) -> String {
        String::from_utf8(s.take_output()).unwrap()
    }

    /// Feeds `input` and answers every recipient check: addresses starting with "bad" are
    /// unknown. Returns the delivery action if one came.
    fn drive(s: &mut Session, input: &[u8]) -> Option<(Envelope, Vec<u8>)> {
        s.feed(input);
        loop {
            match s.next_action() {
                Action::NeedInput | Action::Close => return None,
                Action::CheckRecipient(a) => {
                    let r = if a.starts_with("bad") {
                        Err(Reply::new(
                            550,
                            [5, 1, 1],
                            format!("<{a}>: no such user here"),
                        ))
                    } else {
                        Ok(())
                    };
                    s.recipient_checked(r);
                }
                Action::Deliver { envelope, message } => {
                    return Some((envelope, content(message)));
                }
            }
        }
    }

    fn greeted() -> Session {
        let mut s = session();
        drive(&mut s, b"LHLO client.example\r\n");
        s.take_output();
        s
    }

    #[test]
    fn greeting_and_lhlo_advertise_the_extensions() {
        let mut s = session();
        assert!(matches!(s.next_action(), Action::NeedInput));
        assert_eq!(out(&mut s), "220 mx.example.org LMTP ready\r\n");
        drive(&mut s, b"LHLO client.example\r\n");
        assert_eq!(
            out(&mut s),
            "250-mx.example.org\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SIZE 1000\r\n"
        );
    }

    #[test]
    fn ehlo_and_helo_are_refused_and_mail_needs_lhlo() {
        let mut s = session();
        s.take_output();
        drive(&mut s, b"EHLO x\r\nHELO x\r\nMAIL FROM:<a@x.org>\r\n");
        let o = out(&mut s);
        let lines: Vec<&str> = o.lines().collect();
        assert!(lines[0].starts_with("500 5.5.1"), "{o}");
        assert!(lines[1].starts_with("500 5.5.1"), "{o}");
        assert!(lines[2].starts_with("503 5.5.1"), "{o}");
    }

    #[test]
    fn pipelined_transaction_gets_one_reply_per_recipient_after_data() {
        let mut s = greeted();
        let (env, msg) = drive(
            &mut s,
            b"MAIL FROM:<a@x.org> BODY=8BITMIME SIZE=20\r\nRCPT TO:<b@y.org>\r\nRCPT TO:<bad@y.org>\r\nRCPT TO:<c@y.org>\r\nDATA\r\nSubject: hi\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n",
        )
        .expect("delivery");
        assert_eq!(env.sender, "a@x.org");
        assert_eq!(env.recipients, vec!["b@y.org", "c@y.org"]);
        assert_eq!(msg, b"Subject: hi\r\n\r\n.dot\r\nbody\r\n");
        assert_eq!(
            out(&mut s),
            "250 2.1.0 <a@x.org> sender OK\r\n\
             250 2.1.5 <b@y.org> recipient OK\r\n\
             550 5.1.1 <bad@y.org>: no such user here\r\n\
             250 2.1.5 <c@y.org> recipient OK\r\n\
             354 2.0.0 Start mail input; end with <CRLF>.<CRLF>\r\n"
        );
        s.delivered(vec![
            Reply::new(250, [2, 0, 0], "<b@y.org> delivered"),
            Reply::new(552, [5, 2, 2], "<c@y.org>: mailbox full (over quota)"),
        ]);
        assert!(
            matches!(s.next_action(), Action::Close),
            "QUIT was pipelined"
        );
        assert_eq!(
            out(&mut s),
            "250 2.0.0 <b@y.org> delivered\r\n\
             552 5.2.2 <c@y.org>: mailbox full (over quota)\r\n\
             221 2.0.0 mx.example.org closing connection\r\n"
        );
    }

    #[test]
    fn only_crlf_dot_crlf_ends_data_and_input_may_come_in_pieces() {
        let mut s = greeted();
        drive(&mut s, b"MAIL FROM:<>\r\nRCPT TO:<b@y.org>\r\nDATA\r\n");
        s.take_output();
        // Bare-LF dot lines (SMTP smuggling) are message content, not the end.
        for piece in [
            &b"A: 1\r\n\r\nx\n.\nbare\r"[..],
            b"\n.\n",
            b"after\n.\r\nmore",
        ] {
            assert!(drive(&mut s, piece).is_none());
        }
        let (env, msg) = drive(&mut s, b"\r\n.\r\n").expect("end of data");
        assert_eq!(env.sender, "");
        // "CRLF . LF" is a stuffed line (dot removed); "LF . CRLF" is plain content. Bare
        // line endings are then made CRLF, as the SMTP session stores them (the spool's rule).
        assert_eq!(
            msg,
            b"A: 1\r\n\r\nx\r\n.\r\nbare\r\n\r\nafter\r\n.\r\nmore\r\n"
        );
    }

    #[test]
    fn empty_message_and_leading_dot_line() {
        let mut s = greeted();
        let (_, msg) = drive(
            &mut s,
            b"MAIL FROM:<>\r\nRCPT TO:<b@y.org>\r\nDATA\r\n.\r\n",
        )
        .expect("empty message");
        assert_eq!(msg, b"");
        s.delivered(vec![Reply::new(250, [2, 0, 0], "ok")]);
        let (_, msg) = drive(
            &mut s,
            b"MAIL FROM:<>\r\nRCPT TO:<b@y.org>\r\nDATA\r\n..x\r\n.\r\n",
        )
        .expect("dot-stuffed first line");
        assert_eq!(msg, b".x\r\n");
    }

    #[test]
    fn sequence_errors() {
        let mut s = greeted();
        drive(
            &mut s,
            b"RCPT TO:<b@y.org>\r\nDATA\r\nMAIL FROM:<a@x>\r\nMAIL FROM:<a@x>\r\nDATA\r\n",
        );
        let o = out(&mut s);
        let codes: Vec<&str> = o.lines().map(|l| &l[..9]).collect();
        assert_eq!(
            codes,
            [
                "503 5.5.1",
                "503 5.5.1",
                "250 2.1.0",
                "503 5.5.1",
                "503 5.5.1"
            ],
            "{o}"
        );
        assert!(o.ends_with("503 5.5.1 No valid recipients\r\n"));
    }

    #[test]
    fn rset_noop_vrfy_and_unknown_commands() {
        let mut s = greeted();
        drive(&mut s, b"MAIL FROM:<a@x.org>\r\nRSET\r\nRCPT TO:<b@y.org>\r\nNOOP\r\nVRFY b\r\nSTARTTLS\r\nXYZZY\r\n");
        let o = out(&mut s);
        let codes: Vec<&str> = o.lines().map(|l| &l[..9]).collect();
        assert_eq!(
            codes,
            [
                "250 2.1.0",
                "250 2.0.0",
                "503 5.5.1",
                "250 2.0.0",
                "252 2.5.0",
                "502 5.5.1",
                "500 5.5.1"
            ],
            "{o}"
        );
    }

    #[test]
    fn size_limits_on_mail_and_on_data() {
        let mut s = greeted();
        drive(&mut s, b"MAIL FROM:<a@x.org> SIZE=5000\r\n");
        assert!(out(&mut s).starts_with("552 5.3.4"));
        drive(
            &mut s,
            b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\nRCPT TO:<c@y.org>\r\nDATA\r\n",
        );
        s.take_output();
        let big = vec![b'x'; 600];
        assert!(drive(&mut s, &big).is_none());
        assert!(drive(&mut s, &big).is_none());
        assert!(
            drive(&mut s, b"\r\n.\r\nNOOP\r\n").is_none(),
            "nothing is delivered"
        );
        assert_eq!(
            out(&mut s),
            "552 5.3.4 Message too big (limit 1000 bytes)\r\n\
             552 5.3.4 Message too big (limit 1000 bytes)\r\n\
             250 2.0.0 OK\r\n"
        );
        // The transaction is over: a new one can start.
        drive(&mut s, b"MAIL FROM:<a@x.org>\r\n");
        assert!(out(&mut s).starts_with("250 2.1.0"));
    }

    #[test]
    fn recipient_limit() {
        let mut s = greeted();
        drive(&mut s, b"MAIL FROM:<a@x>\r\nRCPT TO:<b1@y.org>\r\nRCPT TO:<b2@y.org>\r\nRCPT TO:<b3@y.org>\r\nRCPT TO:<b4@y.org>\r\n");
        assert!(out(&mut s).ends_with("452 4.5.3 Too many recipients\r\n"));
    }

    #[test]
    fn long_lines_are_refused_and_the_session_goes_on() {
        let mut s = greeted();
        let long = vec![b'A'; 300];
        assert!(drive(&mut s, &long).is_none());
        drive(&mut s, b"AAAA\r\nNOOP\r\n");
        assert_eq!(out(&mut s), "500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n");
    }

    #[test]
    fn too_many_errors_close_the_session() {
        let mut s = greeted();
        s.feed(b"X\r\nX\r\nX\r\nX\r\nX\r\nX\r\nNOOP\r\n");
        assert!(matches!(s.next_action(), Action::Close));
        let o = out(&mut s);
        assert!(
            o.ends_with("421 4.7.0 Too many errors, closing connection\r\n"),
            "{o}"
        );
        assert!(!o.contains("250"), "{o}");
    }

    #[test]
    fn syntax_errors_and_postmaster() {
        let mut s = greeted();
        s.feed(b"MAIL FROM:a@x\r\nMAIL FROM:<a@x>\r\nRCPT TO:<Postmaster>\r\n");
        while let Action::CheckRecipient(a) = s.next_action() {
            assert_eq!(a, "postmaster@mx.example.org");
            s.recipient_checked(Ok(()));
        }
        let o = out(&mut s);
        assert!(
            o.starts_with("501 5.5.4 Syntax: MAIL FROM:<reverse-path>"),
            "{o}"
        );
        assert!(
            o.ends_with("250 2.1.5 <postmaster@mx.example.org> recipient OK\r\n"),
            "{o}"
        );
    }

    #[test]
    fn timeout_and_shutdown_say_421() {
        let mut s = greeted();
        s.timed_out();
        assert!(matches!(s.next_action(), Action::Close));
        assert!(out(&mut s).starts_with("421 4.4.2"));
        let mut s = greeted();
        s.shutting_down();
        assert!(out(&mut s).starts_with("421 4.3.2"));
        assert!(s.is_closed());
    }

    /// A message above the spool threshold goes to a file as it arrives: the session's
    /// buffer stays near the threshold, and the file holds the message (dot-unstuffed, CRLF).
    #[test]
    fn big_message_is_spooled_while_it_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Session::new(SessionConfig {
            size_limit: 0,
            spool_dir: Some(dir.path().to_path_buf()),
            ..session().cfg
        });
        s.take_output();
        assert!(
            drive(
                &mut s,
                b"LHLO c\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\nDATA\r\n"
            )
            .is_none()
        );
        let mut sent = b"Subject: big\r\n\r\n".to_vec();
        while sent.len() < 16 * SPOOL_THRESHOLD {
            sent.extend_from_slice(b"..a stuffed dot line\r\nx has a bare LF\nand a CRLF\r\n");
        }
        let mut peak = 0;
        for piece in sent.chunks(64 * 1024) {
            assert!(drive(&mut s, piece).is_none());
            if let State::Data(phase) = &mut s.state {
                peak = peak.max(phase.message.buffer().capacity());
                assert_eq!(
                    phase.message.is_spooled(),
                    phase.message.len() >= SPOOL_THRESHOLD
                );
            }
        }
        // The receiver appends byte by byte, so the buffer may double once past the threshold.
        assert!(peak < 3 * SPOOL_THRESHOLD, "buffer grew to {peak}");
        s.feed(b".\r\n");
        let Action::Deliver { message, .. } = s.next_action() else {
            panic!("no delivery");
        };
        assert!(message.is_spooled());
        let Content::Spooled(file) = message.finish().unwrap() else {
            panic!("not spooled");
        };
        let unstuffed = String::from_utf8(sent)
            .unwrap()
            .replace("\r\n..a", "\r\n.a");
        let mut expected = Vec::new();
        crate::spool::line_endings::normalize_line_endings(unstuffed.as_bytes(), &mut expected);
        assert_eq!(std::fs::read(file.path()).unwrap(), expected);
    }
}
