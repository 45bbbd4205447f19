//! Parsing one POP3 command line (RFC 1939, RFC 2449, RFC 2595, RFC 5034).
//!
//! A command is a case-insensitive keyword and arguments separated by spaces. Parsing never
//! fails on odd bytes: anything that is not a well-formed command becomes
//! [`Command::Invalid`] with the reason the client is told.

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `USER name`
    User(String),
    /// `PASS password`: everything after the first space, spaces included (RFC 1939 allows
    /// them in passwords).
    Pass(String),
    /// `AUTH` alone lists the mechanisms; `AUTH mech [initial-response]` starts SASL.
    Auth {
        mechanism: Option<String>,
        initial_response: Option<String>,
    },
    Stls,
    Capa,
    Stat,
    /// `LIST [msg]`
    List(Option<MessageNumber>),
    /// `UIDL [msg]`
    Uidl(Option<MessageNumber>),
    Retr(MessageNumber),
    /// `TOP msg n`
    Top(MessageNumber, u64),
    Dele(MessageNumber),
    Noop,
    Rset,
    Quit,
    /// A keyword we do not know (APOP and LAST included: we offer neither).
    Unknown(String),
    /// A known keyword with bad arguments.
    Invalid(&'static str),
}

/// A message number argument as the client wrote it; 0 and numbers past the maildrop are
/// answered by the session, which knows the maildrop.
pub type MessageNumber = u64;

/// Parse a command line (without its CRLF).
pub fn parse(line: &[u8]) -> Command {
    let (keyword, rest) = match line.iter().position(|b| *b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[][..]),
    };
    // RFC 1939 keywords are 3 or 4 characters; CAPA/STLS/AUTH too.
    let keyword = match std::str::from_utf8(keyword) {
        Ok(k) if !k.is_empty() && k.len() <= 4 && k.bytes().all(|b| b.is_ascii_alphabetic()) => {
            k.to_ascii_uppercase()
        }
        _ => return Command::Unknown(printable(keyword)),
    };
    let args: Vec<&[u8]> = rest
        .split(|b| *b == b' ')
        .filter(|a| !a.is_empty())
        .collect();
    match keyword.as_str() {
        "USER" => match text(rest).map(str::trim) {
            Some(name) if !name.is_empty() => Command::User(name.to_string()),
            Some(_) => Command::Invalid("USER needs a user name"),
            None => Command::Invalid("user name is not valid UTF-8"),
        },
        "PASS" => match text(rest) {
            Some(pw) if !pw.is_empty() => Command::Pass(pw.to_string()),
            Some(_) => Command::Invalid("PASS needs a password"),
            None => Command::Invalid("password is not valid UTF-8"),
        },
        "AUTH" => match args.as_slice() {
            [] => Command::Auth {
                mechanism: None,
                initial_response: None,
            },
            [mech] | [mech, _] => {
                let Some(mechanism) = text(mech) else {
                    return Command::Invalid("mechanism is not valid UTF-8");
                };
                let initial_response = match args.get(1) {
                    Some(r) => match text(r) {
                        Some(r) => Some(r.to_string()),
                        None => return Command::Invalid("initial response is not base64"),
                    },
                    None => None,
                };
                Command::Auth {
                    mechanism: Some(mechanism.to_ascii_uppercase()),
                    initial_response,
                }
            }
            _ => Command::Invalid("AUTH takes a mechanism and an optional initial response"),
        },
        "STLS" => no_args(&args, Command::Stls),
        "CAPA" => no_args(&args, Command::Capa),
        "STAT" => no_args(&args, Command::Stat),
        "NOOP" => no_args(&args, Command::Noop),
        "RSET" => no_args(&args, Command::Rset),
        "QUIT" => no_args(&args, Command::Quit),
        "LIST" | "UIDL" => {
            let msg = match args.as_slice() {
                [] => None,
                [n] => match number(n) {
                    Some(n) => Some(n),
                    None => return Command::Invalid("invalid message number"),
                },
                _ => return Command::Invalid("too many arguments"),
            };
            if keyword == "LIST" {
                Command::List(msg)
            } else {
                Command::Uidl(msg)
            }
        }
        "RETR" | "DELE" => match args.as_slice() {
            [n] => match number(n) {
                Some(n) if keyword == "RETR" => Command::Retr(n),
                Some(n) => Command::Dele(n),
                None => Command::Invalid("invalid message number"),
            },
            [] => Command::Invalid("a message number is required"),
            _ => Command::Invalid("too many arguments"),
        },
        "TOP" => match args.as_slice() {
            [n, lines] => match (number(n), number(lines)) {
                (Some(n), Some(lines)) => Command::Top(n, lines),
                (None, _) => Command::Invalid("invalid message number"),
                (_, None) => Command::Invalid("invalid number of lines"),
            },
            _ => Command::Invalid("TOP takes a message number and a number of lines"),
        },
        _ => Command::Unknown(keyword),
    }
}

fn no_args(args: &[&[u8]], command: Command) -> Command {
    if args.is_empty() {
        command
    } else {
        Command::Invalid("this command takes no arguments")
    }
}

fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

/// A decimal number of at most 19 digits (no sign, no spaces): fits in u64.
fn number(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 19 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// A keyword shown back to the client/log: printable ASCII only, bounded.
fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(16)
        .map(|b| {
            if b.is_ascii_graphic() {
                char::from(*b)
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_case_insensitive() {
        assert_eq!(parse(b"stat"), Command::Stat);
        assert_eq!(parse(b"Quit"), Command::Quit);
        assert_eq!(parse(b"capa"), Command::Capa);
        assert_eq!(parse(b"stls"), Command::Stls);
    }

    #[test]
    fn message_number_arguments() {
        assert_eq!(parse(b"LIST"), Command::List(None));
        assert_eq!(parse(b"LIST 3"), Command::List(Some(3)));
        assert_eq!(parse(b"UIDL 12"), Command::Uidl(Some(12)));
        assert_eq!(parse(b"RETR 1"), Command::Retr(1));
        assert_eq!(parse(b"DELE 7"), Command::Dele(7));
        assert_eq!(parse(b"TOP 2 0"), Command::Top(2, 0));
        assert_eq!(parse(b"top 2  5"), Command::Top(2, 5));
        assert!(matches!(parse(b"RETR"), Command::Invalid(_)));
        assert!(matches!(parse(b"RETR x"), Command::Invalid(_)));
        assert!(matches!(parse(b"RETR -1"), Command::Invalid(_)));
        assert!(matches!(parse(b"RETR +1"), Command::Invalid(_)));
        assert!(matches!(
            parse(b"RETR 99999999999999999999999"),
            Command::Invalid(_)
        ));
        assert!(matches!(parse(b"TOP 1"), Command::Invalid(_)));
        assert!(matches!(parse(b"LIST 1 2"), Command::Invalid(_)));
        assert!(matches!(parse(b"STAT 1"), Command::Invalid(_)));
    }

    #[test]
    fn pass_keeps_spaces() {
        assert_eq!(
            parse(b"PASS correct horse  battery "),
            Command::Pass("correct horse  battery ".into())
        );
        assert_eq!(
            parse(b"USER alice@example.org"),
            Command::User("alice@example.org".into())
        );
        assert!(matches!(parse(b"USER"), Command::Invalid(_)));
        assert!(matches!(parse(b"PASS"), Command::Invalid(_)));
    }

    #[test]
    fn auth_forms() {
        assert_eq!(
            parse(b"AUTH"),
            Command::Auth {
                mechanism: None,
                initial_response: None
            }
        );
        assert_eq!(
            parse(b"auth plain"),
            Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial_response: None
            }
        );
        assert_eq!(
            parse(b"AUTH PLAIN AGEAYg=="),
            Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial_response: Some("AGEAYg==".into())
            }
        );
        assert!(matches!(parse(b"AUTH PLAIN a b"), Command::Invalid(_)));
    }

    #[test]
    fn garbage_is_unknown() {
        assert_eq!(parse(b""), Command::Unknown(String::new()));
        assert_eq!(parse(b"\xff\xfe"), Command::Unknown("??".into()));
        assert_eq!(parse(b"APOP a b"), Command::Unknown("APOP".into()));
        assert_eq!(parse(b"LAST"), Command::Unknown("LAST".into()));
        assert_eq!(parse(b"GET / HTTP/1.1"), Command::Unknown("GET".into()));
        assert!(matches!(parse(b"RETRIEVE 1"), Command::Unknown(_)));
    }
}
