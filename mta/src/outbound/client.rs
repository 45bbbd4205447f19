//! The sans-I/O part of the SMTP client: what the server can do (EHLO), the commands of one
//! mail transaction, and the transaction itself as a state machine that turns the server's
//! replies into one outcome per recipient, with or without PIPELINING (RFC 2920).
//!
//! Why not lettre or mail-send: neither reports a reply per recipient while pipelining, nor
//! lets one connection carry many transactions with our own TLS policy and logging.

use std::collections::VecDeque;

use smtp_proto::{
    AUTH_LOGIN, AUTH_PLAIN, EXT_8BIT_MIME, EXT_DSN, EXT_PIPELINING, EXT_SIZE, EXT_SMTP_UTF8,
    EXT_START_TLS, EhloResponse,
};

use super::body::OutgoingContent;
use super::reply::{RemoteReply, synthetic};
use crate::envelope::{BodyType, DsnReturn, Notify};

/// What the server announced in its EHLO reply (nothing after HELO).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The server answered EHLO (not only HELO).
    pub esmtp: bool,
    pub pipelining: bool,
    /// `SIZE n`: the largest message the server takes; `Some(0)` means no fixed limit.
    pub size: Option<u64>,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub starttls: bool,
    pub dsn: bool,
    pub auth_plain: bool,
    pub auth_login: bool,
}

impl Capabilities {
    /// From a 250 reply to EHLO. A reply whose extension list smtp-proto cannot parse gives
    /// no extensions: plain SMTP always works.
    pub fn from_ehlo(reply: &RemoteReply) -> Self {
        match EhloResponse::parse(&mut reply.raw().iter()) {
            Ok(ehlo) => {
                let has = |ext: u32| ehlo.capabilities & ext != 0;
                Capabilities {
                    esmtp: true,
                    pipelining: has(EXT_PIPELINING),
                    size: has(EXT_SIZE).then_some(ehlo.size as u64),
                    eight_bit_mime: has(EXT_8BIT_MIME),
                    smtputf8: has(EXT_SMTP_UTF8),
                    starttls: has(EXT_START_TLS),
                    dsn: has(EXT_DSN),
                    auth_plain: ehlo.auth_mechanisms & AUTH_PLAIN != 0,
                    auth_login: ehlo.auth_mechanisms & AUTH_LOGIN != 0,
                }
            }
            Err(e) => {
                tracing::debug!(error = ?e, "EHLO reply not understood; using no extensions");
                Capabilities {
                    esmtp: true,
                    ..Capabilities::default()
                }
            }
        }
    }
}

/// The envelope of one message as sent to the next hop.
#[derive(Debug, Clone, Copy)]
pub struct OutgoingMessage<'a> {
    /// Empty for the null sender (bounces).
    pub sender: &'a str,
    pub body: BodyType,
    pub smtputf8: bool,
    pub ret: Option<DsnReturn>,
    pub env_id: Option<&'a str>,
    pub content: OutgoingContent<'a>,
}

/// One recipient as sent to the next hop.
#[derive(Debug, Clone, Copy)]
pub struct OutgoingRecipient<'a> {
    pub address: &'a str,
    pub notify: Notify,
    /// `rfc822;user@example.org` as the client gave it (decoded).
    pub orcpt: Option<&'a str>,
}

/// What the message needs from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// 8-bit content: needs 8BITMIME.
    pub eight_bit: bool,
    /// Non-ASCII addresses or headers: needs SMTPUTF8.
    pub utf8: bool,
}

impl Needs {
    pub fn of(message: &OutgoingMessage<'_>, recipients: &[OutgoingRecipient<'_>]) -> Needs {
        let utf8_addresses =
            !message.sender.is_ascii() || recipients.iter().any(|r| !r.address.is_ascii());
        let headers = crate::session::message::header_section(message.content.head());
        Needs {
            eight_bit: message.content.eight_bit(),
            utf8: utf8_addresses || (message.smtputf8 && !headers.is_ascii()),
        }
    }
}

/// Why a message cannot go to this server at all: a permanent reply of our own.
pub fn unsuitable_server(
    message: &OutgoingMessage<'_>,
    needs: Needs,
    caps: &Capabilities,
    server: &str,
) -> Option<RemoteReply> {
    if let Some(limit) = caps.size
        && limit > 0
        && message.content.len() > limit
    {
        let text = format!(
            "Message size ({} bytes) exceeds the limit of {limit} bytes of {server}",
            message.content.len()
        );
        return Some(synthetic(552, [5, 3, 4], &text));
    }
    if needs.utf8 && !caps.smtputf8 {
        let text = format!("{server} does not support SMTPUTF8, which this message needs");
        return Some(synthetic(553, [5, 6, 7], &text));
    }
    if needs.eight_bit && !caps.eight_bit_mime {
        let text = format!("{server} does not support 8BITMIME and the message has 8-bit content");
        return Some(synthetic(554, [5, 6, 3], &text));
    }
    None
}

/// `MAIL FROM:<...>` with the parameters the server understands.
pub fn mail_command(message: &OutgoingMessage<'_>, needs: Needs, caps: &Capabilities) -> String {
    let mut cmd = format!("MAIL FROM:<{}>", smtp_path(message.sender));
    if caps.size.is_some() {
        cmd.push_str(&format!(" SIZE={}", message.content.len()));
    }
    if caps.eight_bit_mime {
        if needs.eight_bit || message.body == BodyType::EightBitMime {
            cmd.push_str(" BODY=8BITMIME");
        } else if message.body == BodyType::SevenBit {
            cmd.push_str(" BODY=7BIT");
        }
    }
    if caps.smtputf8 && (needs.utf8 || message.smtputf8) {
        cmd.push_str(" SMTPUTF8");
    }
    if caps.dsn {
        if let Some(ret) = message.ret {
            cmd.push_str(" RET=");
            cmd.push_str(ret.as_str());
        }
        if let Some(env_id) = message.env_id {
            cmd.push_str(" ENVID=");
            cmd.push_str(&xtext(env_id));
        }
    }
    cmd.push_str("\r\n");
    cmd
}

/// `RCPT TO:<...>`, with the DSN parameters passed on when the server takes them.
pub fn rcpt_command(rcpt: &OutgoingRecipient<'_>, caps: &Capabilities) -> String {
    let mut cmd = format!("RCPT TO:<{}>", smtp_path(rcpt.address));
    if caps.dsn {
        let notify = rcpt.notify.to_param();
        if !notify.is_empty() {
            cmd.push_str(" NOTIFY=");
            cmd.push_str(&notify);
        }
        if let Some((kind, address)) = rcpt.orcpt.and_then(|o| o.split_once(';')) {
            cmd.push_str(&format!(" ORCPT={kind};{}", xtext(address)));
        }
    }
    cmd.push_str("\r\n");
    cmd
}

/// RFC 3461 xtext: `+XX` for `+`, `=`, and anything outside printable ASCII.
pub fn xtext(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// An address as written in MAIL FROM / RCPT TO: a local part that is not a dot-atom is
/// quoted again (the session stores `"john doe"@example.org` unquoted, as smtp-proto gives it).
pub fn smtp_path(address: &str) -> String {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return address.to_string();
    };
    let atext =
        |c: char| c.is_ascii_alphanumeric() || !c.is_ascii() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    let dot_atom = !local.is_empty()
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(atext));
    if dot_atom {
        return address.to_string();
    }
    let mut quoted = String::with_capacity(local.len() + 2);
    quoted.push('"');
    for c in local.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    format!("{quoted}@{domain}")
}

/// Where in the transaction a reply came from (for logs: "in reply to RCPT TO").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    MailFrom,
    RcptTo,
    Data,
    EndOfData,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::MailFrom => "MAIL FROM",
            Stage::RcptTo => "RCPT TO",
            Stage::Data => "DATA",
            Stage::EndOfData => "end of DATA",
        }
    }
}

/// The result for one recipient: the reply that decided it and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReply {
    pub reply: RemoteReply,
    pub stage: Stage,
}

impl RecipientReply {
    /// The message was accepted for this recipient.
    pub fn delivered(&self) -> bool {
        self.stage == Stage::EndOfData && self.reply.is_positive()
    }
}

/// What the socket loop does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Read another reply.
    Read,
    /// Write these bytes, then read.
    Write(Vec<u8>),
    /// Write the message content (dot-stuffed, [`crate::lmtp_client::dot_stuff`]), then read.
    WriteContent,
    /// The transaction is over. `reset`: a transaction is open on the server and needs an
    /// RSET before the connection carries another message.
    Done {
        results: Vec<RecipientReply>,
        reset: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Mail,
    Rcpt(usize),
    Data,
    /// The reply to the content: the final word for the accepted recipients.
    EndOfData,
    /// The reply to an empty message sent only because the server said 354 after refusing
    /// every recipient (RFC 2920 3.1).
    Abandoned,
}

/// One mail transaction: MAIL, RCPT for each recipient, DATA, content.
#[derive(Debug)]
pub struct Transaction {
    rcpt_commands: Vec<String>,
    pipelining: bool,
    expect: VecDeque<Expect>,
    mail: Option<RemoteReply>,
    rcpts: Vec<Option<RemoteReply>>,
    data: Option<RemoteReply>,
}

impl Transaction {
    pub fn new(
        mail_command: String,
        rcpt_commands: Vec<String>,
        pipelining: bool,
    ) -> (Self, Vec<u8>) {
        let mut first = mail_command.into_bytes();
        let mut expect = VecDeque::from([Expect::Mail]);
        if pipelining {
            for (i, cmd) in rcpt_commands.iter().enumerate() {
                first.extend_from_slice(cmd.as_bytes());
                expect.push_back(Expect::Rcpt(i));
            }
            first.extend_from_slice(b"DATA\r\n");
            expect.push_back(Expect::Data);
        }
        let n = rcpt_commands.len();
        (
            Transaction {
                rcpt_commands,
                pipelining,
                expect,
                mail: None,
                rcpts: vec![None; n],
                data: None,
            },
            first,
        )
    }

    /// The command whose reply is awaited, for error messages.
    pub fn waiting_for(&self) -> &'static str {
        match self.expect.front() {
            Some(Expect::Mail) => "MAIL FROM",
            Some(Expect::Rcpt(_)) => "RCPT TO",
            Some(Expect::Data) => "DATA",
            Some(Expect::EndOfData | Expect::Abandoned) => "end of DATA",
            None => "nothing",
        }
    }

    fn accepted(&self) -> usize {
        self.rcpts
            .iter()
            .filter(|r| r.as_ref().is_some_and(RemoteReply::is_positive))
            .count()
    }

    fn mail_ok(&self) -> bool {
        self.mail.as_ref().is_some_and(RemoteReply::is_positive)
    }

    /// Feeds the next reply of the server.
    pub fn on_reply(&mut self, reply: RemoteReply) -> Next {
        let Some(expect) = self.expect.pop_front() else {
            return self.finish(None, true);
        };
        match expect {
            Expect::Mail => {
                let ok = reply.is_positive();
                self.mail = Some(reply);
                if self.pipelining {
                    Next::Read
                } else if ok {
                    self.send_rcpt(0)
                } else {
                    self.finish(None, false)
                }
            }
            Expect::Rcpt(i) => {
                self.rcpts[i] = Some(reply);
                if self.pipelining {
                    Next::Read
                } else if i + 1 < self.rcpt_commands.len() {
                    self.send_rcpt(i + 1)
                } else if self.accepted() > 0 {
                    self.expect.push_back(Expect::Data);
                    Next::Write(b"DATA\r\n".to_vec())
                } else {
                    self.finish(None, true)
                }
            }
            Expect::Data => {
                let go_ahead = reply.code == 354;
                self.data = Some(reply);
                if go_ahead && self.mail_ok() && self.accepted() > 0 {
                    self.expect.push_back(Expect::EndOfData);
                    Next::WriteContent
                } else if go_ahead {
                    self.expect.push_back(Expect::Abandoned);
                    Next::Write(b".\r\n".to_vec())
                } else {
                    let reset = self.mail_ok();
                    self.finish(None, reset)
                }
            }
            Expect::EndOfData => self.finish(Some(reply), false),
            Expect::Abandoned => self.finish(None, true),
        }
    }

    fn send_rcpt(&mut self, i: usize) -> Next {
        self.expect.push_back(Expect::Rcpt(i));
        Next::Write(self.rcpt_commands[i].clone().into_bytes())
    }

    /// One reply per recipient: a refusal of MAIL FROM counts for all, then each RCPT reply,
    /// then the DATA reply (if refused) or the final reply for those accepted.
    fn finish(&mut self, end_of_data: Option<RemoteReply>, reset: bool) -> Next {
        self.expect.clear();
        let missing = || RecipientReply {
            reply: synthetic(451, [4, 4, 2], "no reply from server"),
            stage: Stage::RcptTo,
        };
        let results = (0..self.rcpts.len())
            .map(|i| {
                if let Some(mail) = self.mail.as_ref().filter(|m| !m.is_positive()) {
                    return RecipientReply {
                        reply: mail.clone(),
                        stage: Stage::MailFrom,
                    };
                }
                match &self.rcpts[i] {
                    None => missing(),
                    Some(r) if !r.is_positive() => RecipientReply {
                        reply: r.clone(),
                        stage: Stage::RcptTo,
                    },
                    Some(_) => match (&self.data, &end_of_data) {
                        (_, Some(end)) => RecipientReply {
                            reply: end.clone(),
                            stage: Stage::EndOfData,
                        },
                        (Some(data), None) if data.code != 354 => RecipientReply {
                            reply: data.clone(),
                            stage: Stage::Data,
                        },
                        _ => missing(),
                    },
                }
            })
            .collect();
        Next::Done { results, reset }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::reply::reply;

    fn caps(text: &str) -> Capabilities {
        Capabilities::from_ehlo(&reply(text))
    }

    const EHLO: &str = "250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-STARTTLS\r\n250-DSN\r\n250-AUTH PLAIN LOGIN\r\n250 SMTPUTF8\r\n";

    #[test]
    fn ehlo_capabilities() {
        let c = caps(EHLO);
        assert!(c.esmtp && c.pipelining && c.eight_bit_mime && c.starttls && c.dsn);
        assert!(c.smtputf8 && c.auth_plain && c.auth_login);
        assert_eq!(c.size, Some(1000));
        let c = caps("250 mx.example.org\r\n");
        assert!(c.esmtp && !c.pipelining && !c.starttls);
        assert_eq!(c.size, None);
    }

    fn message(content: &[u8]) -> OutgoingMessage<'_> {
        OutgoingMessage {
            sender: "a@example.net",
            body: BodyType::Unspecified,
            smtputf8: false,
            ret: Some(DsnReturn::Headers),
            env_id: Some("id 1"),
            content: OutgoingContent::Memory(content),
        }
    }

    #[test]
    fn mail_and_rcpt_commands_carry_what_the_server_understands() {
        let msg = message("Subject: é\r\n\r\nbody\r\n".as_bytes());
        let needs = Needs::of(&msg, &[]);
        assert_eq!(
            needs,
            Needs {
                eight_bit: true,
                utf8: false
            }
        );
        assert_eq!(
            mail_command(&msg, needs, &caps(EHLO)),
            "MAIL FROM:<a@example.net> SIZE=21 BODY=8BITMIME RET=HDRS ENVID=id+201\r\n"
        );
        assert_eq!(
            mail_command(&msg, needs, &Capabilities::default()),
            "MAIL FROM:<a@example.net>\r\n"
        );
        let bounce = OutgoingMessage {
            sender: "",
            ..message(b"x\r\n")
        };
        assert!(mail_command(&bounce, needs, &Capabilities::default()).starts_with("MAIL FROM:<>"));
        let rcpt = OutgoingRecipient {
            address: "b@example.org",
            notify: Notify {
                success: true,
                failure: true,
                ..Notify::default()
            },
            orcpt: Some("rfc822;B=x@example.org"),
        };
        assert_eq!(
            rcpt_command(&rcpt, &caps(EHLO)),
            "RCPT TO:<b@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;B+3Dx@example.org\r\n"
        );
        assert_eq!(
            rcpt_command(&rcpt, &Capabilities::default()),
            "RCPT TO:<b@example.org>\r\n"
        );
    }

    #[test]
    fn servers_lacking_what_the_message_needs_are_refused() {
        let big = vec![b'a'; 2000];
        let msg = message(&big);
        let reason = unsuitable_server(&msg, Needs::of(&msg, &[]), &caps(EHLO), "mx[192.0.2.1]");
        assert!(reason.unwrap().line().starts_with("552 5.3.4 "));
        let eight = "Subject: x\r\n\r\nd\u{e9}j\u{e0}\r\n".as_bytes();
        let msg = message(eight);
        let plain = caps("250-mx\r\n250 PIPELINING\r\n");
        let reason = unsuitable_server(&msg, Needs::of(&msg, &[]), &plain, "mx").unwrap();
        assert!(reason.line().starts_with("554 5.6.3 "), "{reason:?}");
        let rcpt = [OutgoingRecipient {
            address: "jos\u{e9}@example.org",
            notify: Notify::default(),
            orcpt: None,
        }];
        let msg = message(b"Subject: x\r\n\r\n");
        let reason = unsuitable_server(&msg, Needs::of(&msg, &rcpt), &plain, "mx").unwrap();
        assert!(reason.line().starts_with("553 5.6.7 "), "{reason:?}");
        assert_eq!(
            unsuitable_server(&msg, Needs::of(&msg, &rcpt), &caps(EHLO), "mx"),
            None
        );
    }

    #[test]
    fn local_parts_that_are_not_dot_atoms_are_quoted() {
        assert_eq!(
            smtp_path("first.last+tag@example.org"),
            "first.last+tag@example.org"
        );
        assert_eq!(
            smtp_path("john doe@example.org"),
            "\"john doe\"@example.org"
        );
        assert_eq!(smtp_path("a\"b@example.org"), "\"a\\\"b\"@example.org");
        assert_eq!(smtp_path(".lead@example.org"), "\".lead\"@example.org");
        assert_eq!(smtp_path("jos\u{e9}@example.org"), "jos\u{e9}@example.org");
        assert_eq!(smtp_path(""), "");
    }

    fn rcpts(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("RCPT TO:<r{i}@x>\r\n")).collect()
    }

    #[test]
    fn pipelined_transaction_with_one_refused_recipient() {
        let (mut t, first) = Transaction::new("MAIL FROM:<a@x>\r\n".into(), rcpts(2), true);
        assert_eq!(
            first,
            b"MAIL FROM:<a@x>\r\nRCPT TO:<r0@x>\r\nRCPT TO:<r1@x>\r\nDATA\r\n"
        );
        assert_eq!(t.on_reply(reply("250 2.1.0 Ok\r\n")), Next::Read);
        assert_eq!(t.on_reply(reply("550 5.1.1 No such user\r\n")), Next::Read);
        assert_eq!(t.on_reply(reply("250 2.1.5 Ok\r\n")), Next::Read);
        assert_eq!(t.on_reply(reply("354 go ahead\r\n")), Next::WriteContent);
        let Next::Done { results, reset } = t.on_reply(reply("250 2.0.0 queued as X\r\n")) else {
            panic!("not done");
        };
        assert!(!reset);
        assert_eq!(results[0].stage, Stage::RcptTo);
        assert_eq!(results[0].reply.line(), "550 5.1.1 No such user");
        assert!(!results[0].delivered());
        assert!(results[1].delivered());
        assert_eq!(results[1].reply.line(), "250 2.0.0 queued as X");
    }

    #[test]
    fn pipelined_transaction_where_every_recipient_is_refused() {
        let (mut t, _) = Transaction::new("MAIL FROM:<a@x>\r\n".into(), rcpts(1), true);
        t.on_reply(reply("250 ok\r\n"));
        t.on_reply(reply("450 4.2.0 busy\r\n"));
        // A server that says 354 anyway gets an empty message, then RSET.
        assert_eq!(
            t.on_reply(reply("354 go ahead\r\n")),
            Next::Write(b".\r\n".to_vec())
        );
        let Next::Done { results, reset } = t.on_reply(reply("554 5.5.1 no recipients\r\n")) else {
            panic!("not done");
        };
        assert!(reset);
        assert_eq!(results[0].reply.line(), "450 4.2.0 busy");
        assert!(results[0].reply.is_transient());
    }

    #[test]
    fn step_by_step_transaction_without_pipelining() {
        let (mut t, first) = Transaction::new("MAIL FROM:<a@x>\r\n".into(), rcpts(2), false);
        assert_eq!(first, b"MAIL FROM:<a@x>\r\n");
        assert_eq!(
            t.on_reply(reply("250 ok\r\n")),
            Next::Write(b"RCPT TO:<r0@x>\r\n".to_vec())
        );
        assert_eq!(
            t.on_reply(reply("250 ok\r\n")),
            Next::Write(b"RCPT TO:<r1@x>\r\n".to_vec())
        );
        assert_eq!(
            t.on_reply(reply("250 ok\r\n")),
            Next::Write(b"DATA\r\n".to_vec())
        );
        assert_eq!(t.on_reply(reply("354 go\r\n")), Next::WriteContent);
        let Next::Done { results, .. } = t.on_reply(reply("451 4.3.0 disk full\r\n")) else {
            panic!("not done");
        };
        assert!(results.iter().all(|r| r.stage == Stage::EndOfData));
        assert!(results.iter().all(|r| r.reply.is_transient()));
    }

    #[test]
    fn refused_sender_counts_for_every_recipient() {
        let (mut t, _) = Transaction::new("MAIL FROM:<a@x>\r\n".into(), rcpts(2), false);
        let Next::Done { results, reset } = t.on_reply(reply("553 5.7.1 sender refused\r\n"))
        else {
            panic!("not done");
        };
        assert!(!reset);
        assert_eq!(results.len(), 2);
        assert!(results.iter().all(|r| r.stage == Stage::MailFrom));
        // Pipelined: the RCPT and DATA replies (503) do not hide the real reason.
        let (mut t, _) = Transaction::new("MAIL FROM:<a@x>\r\n".into(), rcpts(1), true);
        t.on_reply(reply("553 5.7.1 sender refused\r\n"));
        t.on_reply(reply("503 5.5.1 need MAIL\r\n"));
        let Next::Done { results, .. } = t.on_reply(reply("503 5.5.1 need RCPT\r\n")) else {
            panic!("not done");
        };
        assert_eq!(results[0].reply.line(), "553 5.7.1 sender refused");
    }
}
