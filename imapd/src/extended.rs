//! Command forms imap-codec 2.0.0-alpha.10 does not parse, read before it sees the line:
//! LIST with LIST-EXTENDED selection and RETURN options (RFC 5258, 5819, 6154), which
//! Thunderbird and K-9 send, `SEARCH RETURN (...)` (ESEARCH, RFC 4731) and
//! `CREATE name (USE (...))` (CREATE-SPECIAL-USE, RFC 6154) and APPEND of several messages
//! (MULTIAPPEND, RFC 3502).
//!
//! All LIST commands come through here, plain ones too, so LIST has one code path.

use imap_codec::imap_types::status::StatusDataItemName;

/// A token of a command line: an atom, a string (quoted or literal), or a parenthesized list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Atom(Vec<u8>),
    /// A quoted string.
    String(Vec<u8>),
    /// A literal (`{n}`, `{n+}` or `~{n}`).
    Literal(Vec<u8>),
    List(Vec<Token>),
}

impl Token {
    /// The bytes of an atom or string (an astring).
    pub fn astring(&self) -> Option<&[u8]> {
        match self {
            Token::Atom(a) | Token::String(a) | Token::Literal(a) => Some(a),
            Token::List(_) => None,
        }
    }

    fn is_atom(&self, name: &str) -> bool {
        matches!(self, Token::Atom(a) if a.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// The error for a line these forms cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub &'static str);

struct Lexer<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn skip_spaces(&mut self) {
        while self.pos < self.input.len() && self.input[self.pos] == b' ' {
            self.pos += 1;
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
            || self.input[self.pos..].starts_with(b"\r\n")
            || self.input[self.pos] == b'\n'
    }

    /// Reads one token; `None` at the end of the line or at a closing parenthesis.
    fn token(&mut self, depth: usize) -> Result<Option<Token>, Malformed> {
        self.skip_spaces();
        if self.at_end() {
            return Ok(None);
        }
        match self.input[self.pos] {
            b')' => Ok(None),
            b'(' => {
                if depth > 8 {
                    return Err(Malformed("too deeply nested"));
                }
                self.pos += 1;
                let mut items = Vec::new();
                while let Some(t) = self.token(depth + 1)? {
                    items.push(t);
                }
                if self.input.get(self.pos) != Some(&b')') {
                    return Err(Malformed("missing )"));
                }
                self.pos += 1;
                Ok(Some(Token::List(items)))
            }
            b'"' => {
                self.pos += 1;
                let mut s = Vec::new();
                loop {
                    match self.input.get(self.pos) {
                        None | Some(b'\r') | Some(b'\n') => {
                            return Err(Malformed("unterminated string"));
                        }
                        Some(b'"') => {
                            self.pos += 1;
                            return Ok(Some(Token::String(s)));
                        }
                        Some(b'\\') => {
                            let c = *self
                                .input
                                .get(self.pos + 1)
                                .ok_or(Malformed("bad escape"))?;
                            s.push(c);
                            self.pos += 2;
                        }
                        Some(&c) => {
                            s.push(c);
                            self.pos += 1;
                        }
                    }
                }
            }
            b'{' | b'~' => {
                let start = self.pos + usize::from(self.input[self.pos] == b'~');
                if self.input.get(start) != Some(&b'{') {
                    return self.atom();
                }
                let (close, n) =
                    literal_length(self.input, start).ok_or(Malformed("bad literal"))?;
                let data_start = close
                    + 1
                    + if self.input[close + 1..].starts_with(b"\r\n") {
                        2
                    } else {
                        1
                    };
                let end = data_start.checked_add(n).ok_or(Malformed("bad literal"))?;
                let data = self
                    .input
                    .get(data_start..end)
                    .ok_or(Malformed("short literal"))?;
                self.pos = data_start + n;
                Ok(Some(Token::Literal(data.to_vec())))
            }
            _ => self.atom(),
        }
    }

    fn atom(&mut self) -> Result<Option<Token>, Malformed> {
        let start = self.pos;
        while let Some(&c) = self.input.get(self.pos) {
            if matches!(c, b' ' | b'(' | b')' | b'"' | b'\r' | b'\n') || c < 0x20 || c == 0x7f {
                break;
            }
            self.pos += 1;
        }
        if self.pos == start {
            return Err(Malformed("unexpected character"));
        }
        Ok(Some(Token::Atom(self.input[start..self.pos].to_vec())))
    }
}

/// The literal announced by the `{` at `brace`: the position of its `}` and its length.
/// Only the digits (and a `+` or `-`) after the brace are looked at, so every `{` of a
/// hostile line costs a few bytes, not a scan to the end of the line.
fn literal_length(input: &[u8], brace: usize) -> Option<(usize, usize)> {
    let digits_start = brace + 1;
    let digits = input
        .get(digits_start..)?
        .iter()
        .take(20)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let mut close = digits_start + digits;
    if matches!(input.get(close), Some(b'+' | b'-')) {
        close += 1;
    }
    if input.get(close) != Some(&b'}') {
        return None;
    }
    let n = std::str::from_utf8(&input[digits_start..digits_start + digits])
        .ok()?
        .parse()
        .ok()?;
    Some((close, n))
}

/// Splits a command into its tokens, with the byte offset where each top-level token starts.
pub fn tokenize(line: &[u8]) -> Result<Vec<(usize, Token)>, Malformed> {
    let mut lx = Lexer {
        input: line,
        pos: 0,
    };
    let mut out = Vec::new();
    loop {
        lx.skip_spaces();
        let at = lx.pos;
        match lx.token(0)? {
            Some(t) => out.push((at, t)),
            None if lx.at_end() => return Ok(out),
            None => return Err(Malformed("unbalanced )")),
        }
    }
}

/// LIST selection options (RFC 5258 section 3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListSelect {
    pub subscribed: bool,
    pub remote: bool,
    pub recursive_match: bool,
    pub special_use: bool,
}

/// LIST return options (RFC 5258, RFC 5819 LIST-STATUS, RFC 6154).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListReturn {
    pub subscribed: bool,
    pub children: bool,
    pub special_use: bool,
    pub status: Option<Vec<StatusDataItemName>>,
    /// MAILBOXID among the STATUS items (OBJECTID, RFC 8474).
    pub mailboxid: bool,
}

/// A LIST command in any of its forms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListCommand {
    pub select: ListSelect,
    /// The reference name, as sent (modified UTF-7 or UTF-8).
    pub reference: Vec<u8>,
    /// One or more patterns, as sent.
    pub patterns: Vec<Vec<u8>>,
    pub returns: ListReturn,
    /// Whether selection or return options were given (the extended form).
    pub extended: bool,
}

/// ESEARCH result options (RFC 4731, RFC 5267, RFC 9394).
pub use crate::search_return::ReturnOptions as SearchReturn;

/// A command read here instead of by imap-codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extended {
    List(ListCommand),
    /// `SEARCH RETURN (...)`: the options, and the command without them for imap-codec.
    Search {
        returns: SearchReturn,
        rest: Vec<u8>,
    },
    /// `CREATE name (USE (\Sent ...))`.
    Create {
        name: Vec<u8>,
        special_use: Vec<String>,
    },
    /// APPEND with more than one message (MULTIAPPEND).
    MultiAppend {
        mailbox: Vec<u8>,
        messages: Vec<AppendMessage>,
    },
    /// `SORT RETURN (...)` (ESORT, CONTEXT=SORT): the options, and the command without them.
    Sort {
        returns: SearchReturn,
        rest: Vec<u8>,
    },
    /// APPEND with CATENATE (RFC 4469), one or more messages.
    Catenate(crate::cmd::catenate::CatenateAppend),
    /// CANCELUPDATE (RFC 5267 section 4.3.3): the tags of the searches to stop updating.
    CancelUpdate(Vec<String>),
    /// FETCH with the PARTIAL modifier (RFC 9394): the page, and the command without it.
    FetchPartial {
        range: crate::search_return::PartialRange,
        rest: Vec<u8>,
    },
}

/// One message of a MULTIAPPEND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendMessage {
    /// Flag names as sent (`\Seen`, `$Label1`).
    pub flags: Vec<String>,
    /// The date-time string, if given.
    pub date: Option<String>,
    pub data: Vec<u8>,
}

/// Reads `line` (a complete command, literals included) if it is one of the forms handled
/// here. `None` means: give it to imap-codec. `Some(Err)` means a BAD for this tag.
pub fn parse(line: &[u8]) -> Option<Result<Extended, Malformed>> {
    // Cheap check first: only LIST, SEARCH with RETURN and CREATE with options come here.
    let mut words = line.splitn(4, |&b| b == b' ');
    let _tag = words.next()?;
    // Command names are short: a long second word is none of ours (and not worth copying).
    let mut name = words.next().filter(|w| w.len() <= 16)?.to_ascii_uppercase();
    let mut uid = false;
    if name == b"UID" {
        uid = true;
        name = words.next().filter(|w| w.len() <= 16)?.to_ascii_uppercase();
    }
    let name = name.strip_suffix(b"\r\n").unwrap_or(&name).to_vec();
    match (name.as_slice(), uid) {
        (b"LIST", false) => Some(parse_list(line)),
        (b"SEARCH", _) => parse_search(line, uid),
        (b"SORT", _) => crate::search_return::split_return(line, uid)
            .map(|r| r.map(|(returns, rest)| Extended::Sort { returns, rest })),
        (b"CREATE", false) => parse_create(line),
        (b"APPEND", false) => crate::cmd::catenate::parse(line)
            .map(|r| r.map(Extended::Catenate))
            .or_else(|| parse_multiappend(line)),
        (b"CANCELUPDATE", false) => Some(crate::search_context::parse_cancel(line)),
        (b"FETCH", _) => crate::cmd::fetch_partial::parse(line, uid),
        _ => None,
    }
}

fn parse_list(line: &[u8]) -> Result<Extended, Malformed> {
    let toks = tokenize(line)?;
    let mut it = toks.into_iter().map(|(_, t)| t).skip(2).peekable();
    let mut cmd = ListCommand::default();
    if let Some(Token::List(opts)) = it.peek() {
        cmd.extended = true;
        for o in opts {
            match o {
                t if t.is_atom("SUBSCRIBED") => cmd.select.subscribed = true,
                t if t.is_atom("REMOTE") => cmd.select.remote = true,
                t if t.is_atom("RECURSIVEMATCH") => cmd.select.recursive_match = true,
                t if t.is_atom("SPECIAL-USE") => cmd.select.special_use = true,
                _ => return Err(Malformed("unknown LIST selection option")),
            }
        }
        if cmd.select.recursive_match && !cmd.select.subscribed && !cmd.select.special_use {
            return Err(Malformed("RECURSIVEMATCH needs another selection option"));
        }
        it.next();
    }
    cmd.reference = it
        .next()
        .and_then(|t| t.astring().map(<[u8]>::to_vec))
        .ok_or(Malformed("missing reference"))?;
    match it.next().ok_or(Malformed("missing mailbox pattern"))? {
        Token::List(pats) => {
            cmd.extended = true;
            for p in pats {
                cmd.patterns
                    .push(p.astring().ok_or(Malformed("bad pattern"))?.to_vec());
            }
            if cmd.patterns.is_empty() {
                return Err(Malformed("empty pattern list"));
            }
        }
        t => cmd
            .patterns
            .push(t.astring().ok_or(Malformed("bad pattern"))?.to_vec()),
    }
    match it.next() {
        None => {}
        Some(t) if t.is_atom("RETURN") => {
            cmd.extended = true;
            let Some(Token::List(opts)) = it.next() else {
                return Err(Malformed("RETURN needs a list"));
            };
            let mut opts = opts.into_iter();
            while let Some(o) = opts.next() {
                match o {
                    t if t.is_atom("SUBSCRIBED") => cmd.returns.subscribed = true,
                    t if t.is_atom("CHILDREN") => cmd.returns.children = true,
                    t if t.is_atom("SPECIAL-USE") => cmd.returns.special_use = true,
                    t if t.is_atom("STATUS") => {
                        let Some(Token::List(items)) = opts.next() else {
                            return Err(Malformed("STATUS needs a list"));
                        };
                        let (ids, items): (Vec<Token>, Vec<Token>) =
                            items.into_iter().partition(|t| t.is_atom("MAILBOXID"));
                        cmd.returns.mailboxid = !ids.is_empty();
                        cmd.returns.status = Some(status_items(&items)?);
                    }
                    _ => return Err(Malformed("unknown LIST return option")),
                }
            }
        }
        Some(_) => return Err(Malformed("unexpected argument")),
    }
    if it.next().is_some() {
        return Err(Malformed("unexpected argument"));
    }
    Ok(Extended::List(cmd))
}

/// Status data item names as in STATUS.
pub fn status_items(items: &[Token]) -> Result<Vec<StatusDataItemName>, Malformed> {
    items
        .iter()
        .map(|t| {
            let Token::Atom(a) = t else {
                return Err(Malformed("bad status item"));
            };
            Ok(match a.to_ascii_uppercase().as_slice() {
                b"MESSAGES" => StatusDataItemName::Messages,
                b"RECENT" => StatusDataItemName::Recent,
                b"UIDNEXT" => StatusDataItemName::UidNext,
                b"UIDVALIDITY" => StatusDataItemName::UidValidity,
                b"UNSEEN" => StatusDataItemName::Unseen,
                b"DELETED" => StatusDataItemName::Deleted,
                b"HIGHESTMODSEQ" => StatusDataItemName::HighestModSeq,
                b"SIZE" => StatusDataItemName::Size,
                _ => return Err(Malformed("unknown status item")),
            })
        })
        .collect()
}

fn parse_search(line: &[u8], uid: bool) -> Option<Result<Extended, Malformed>> {
    crate::search_return::split_return(line, uid)
        .map(|r| r.map(|(returns, rest)| Extended::Search { returns, rest }))
}

/// APPEND with two or more messages; a single one is left to imap-codec.
fn parse_multiappend(line: &[u8]) -> Option<Result<Extended, Malformed>> {
    // Only worth tokenizing when two literals are announced.
    let announcements = line
        .windows(3)
        .filter(|w| w[0] == b'}' && w[1] == b'\r' && w[2] == b'\n')
        .count();
    if announcements < 2 {
        return None;
    }
    let toks = tokenize(line).ok()?;
    let mut it = toks.into_iter().map(|(_, t)| t).skip(2).peekable();
    let mailbox = it.next()?.astring()?.to_vec();
    let mut messages = Vec::new();
    while it.peek().is_some() {
        let mut msg = AppendMessage {
            flags: Vec::new(),
            date: None,
            data: Vec::new(),
        };
        if let Some(Token::List(flags)) = it.peek() {
            for f in flags {
                match f {
                    Token::Atom(a) => msg.flags.push(String::from_utf8_lossy(a).into_owned()),
                    _ => return Some(Err(Malformed("bad flag"))),
                }
            }
            it.next();
        }
        if let Some(Token::String(d)) = it.peek() {
            msg.date = Some(String::from_utf8_lossy(d).into_owned());
            it.next();
        }
        match it.next() {
            Some(Token::Literal(data)) => msg.data = data,
            // UTF8 (~{n}...) and other forms are left to imap-codec.
            _ => return None,
        }
        messages.push(msg);
    }
    if messages.len() < 2 {
        return None;
    }
    Some(Ok(Extended::MultiAppend { mailbox, messages }))
}

fn parse_create(line: &[u8]) -> Option<Result<Extended, Malformed>> {
    let toks = tokenize(line).ok()?;
    if toks.len() != 4 {
        return None;
    }
    let name = toks[2].1.astring()?.to_vec();
    let Token::List(opts) = &toks[3].1 else {
        return Some(Err(Malformed("bad CREATE parameters")));
    };
    let mut special_use = Vec::new();
    let mut it = opts.iter();
    while let Some(o) = it.next() {
        if !o.is_atom("USE") {
            return Some(Err(Malformed("unknown CREATE parameter")));
        }
        let Some(Token::List(uses)) = it.next() else {
            return Some(Err(Malformed("USE needs a list")));
        };
        for u in uses {
            let Token::Atom(a) = u else {
                return Some(Err(Malformed("bad special-use flag")));
            };
            special_use.push(String::from_utf8_lossy(a).into_owned());
        }
    }
    Some(Ok(Extended::Create { name, special_use }))
}

/// Rewrites quoted strings holding 8-bit bytes (UTF-8 search text, UTF-8 mailbox names
/// after UTF8=ACCEPT) into literals, which imap-codec accepts; its quoted strings are ASCII.
pub fn quoted_8bit_to_literals(line: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if line.is_ascii() {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = Vec::with_capacity(line.len() + 16);
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b'"' => {
                // Find the end of the quoted string, unescaping as we go.
                let mut j = i + 1;
                let mut text = Vec::new();
                let mut closed = false;
                while j < line.len() {
                    match line[j] {
                        b'\\' if j + 1 < line.len() => {
                            text.push(line[j + 1]);
                            j += 2;
                        }
                        b'"' => {
                            closed = true;
                            break;
                        }
                        b'\r' | b'\n' => break,
                        c => {
                            text.push(c);
                            j += 1;
                        }
                    }
                }
                if closed && !text.is_ascii() {
                    out.extend_from_slice(format!("{{{}+}}\r\n", text.len()).as_bytes());
                    out.extend_from_slice(&text);
                    i = j + 1;
                } else {
                    let end = if closed { j + 1 } else { j };
                    out.extend_from_slice(&line[i..end]);
                    i = end;
                }
            }
            b'{' => {
                // Copy a literal (announcement and data) unchanged.
                match literal_length(line, i) {
                    Some((c, n)) if line[c + 1..].starts_with(b"\r\n") => {
                        let end = (c + 3).saturating_add(n).min(line.len());
                        out.extend_from_slice(&line[i..end]);
                        i = end;
                    }
                    _ => {
                        out.push(b'{');
                        i += 1;
                    }
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(line: &str) -> ListCommand {
        match parse(line.as_bytes()) {
            Some(Ok(Extended::List(l))) => l,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plain_list() {
        let l = list("a1 LIST \"\" \"*\"\r\n");
        assert_eq!(l.reference, b"");
        assert_eq!(l.patterns, vec![b"*".to_vec()]);
        assert!(!l.extended);
        let l = list("a2 list \"\" %\r\n");
        assert_eq!(l.patterns, vec![b"%".to_vec()]);
        let l = list("a3 LIST {0}\r\n INBOX/*\r\n");
        assert_eq!(
            (l.reference.as_slice(), l.patterns[0].as_slice()),
            (&b""[..], &b"INBOX/*"[..])
        );
    }

    #[test]
    fn thunderbird_subscribed_special_use() {
        let l = list("5 list (subscribed) \"\" \"*\" return (special-use)\r\n");
        assert!(l.extended && l.select.subscribed && l.returns.special_use);
        assert!(!l.returns.children);
    }

    #[test]
    fn k9_special_use_and_status() {
        let l = list("6 LIST (SPECIAL-USE) \"\" \"*\"\r\n");
        assert!(l.select.special_use);
        let l = list("7 LIST \"\" (INBOX \"Sent\") RETURN (CHILDREN STATUS (MESSAGES UNSEEN))\r\n");
        assert_eq!(l.patterns, vec![b"INBOX".to_vec(), b"Sent".to_vec()]);
        assert!(l.returns.children);
        assert_eq!(
            l.returns.status,
            Some(vec![
                StatusDataItemName::Messages,
                StatusDataItemName::Unseen
            ])
        );
    }

    #[test]
    fn bad_list_options() {
        assert!(matches!(parse(b"8 LIST (BOGUS) \"\" *\r\n"), Some(Err(_))));
        assert!(matches!(
            parse(b"8 LIST (RECURSIVEMATCH) \"\" *\r\n"),
            Some(Err(_))
        ));
        assert!(matches!(parse(b"8 LIST \"\"\r\n"), Some(Err(_))));
    }

    #[test]
    fn search_return_is_rewritten() {
        let Some(Ok(Extended::Search { returns, rest })) =
            parse(b"9 UID SEARCH RETURN (MIN COUNT) UNSEEN SINCE 1-Jan-2020\r\n")
        else {
            panic!()
        };
        assert!(returns.min && returns.count && !returns.all);
        assert_eq!(rest, b"9 UID SEARCH UNSEEN SINCE 1-Jan-2020\r\n");
        let Some(Ok(Extended::Search { returns, .. })) = parse(b"9 SEARCH RETURN () ALL\r\n")
        else {
            panic!()
        };
        assert!(returns.all);
        assert_eq!(parse(b"9 SEARCH UNSEEN\r\n"), None);
    }

    #[test]
    fn create_with_use() {
        assert_eq!(
            parse(b"c CREATE \"Archive\" (USE (\\Archive))\r\n"),
            Some(Ok(Extended::Create {
                name: b"Archive".to_vec(),
                special_use: vec!["\\Archive".into()]
            }))
        );
        assert_eq!(parse(b"c CREATE Archive\r\n"), None);
    }

    #[test]
    fn utf8_quoted_strings_become_literals() {
        assert_eq!(
            quoted_8bit_to_literals("a SEARCH SUBJECT \"grüße\" FROM \"x\"\r\n".as_bytes())
                .as_ref(),
            "a SEARCH SUBJECT {7+}\r\ngrüße FROM \"x\"\r\n".as_bytes()
        );
        // Literal data is left alone, even when it holds quotes.
        let line = "a APPEND x {4}\r\n\"é\"\r\n".as_bytes();
        assert_eq!(quoted_8bit_to_literals(line).as_ref(), line);
        assert_eq!(
            quoted_8bit_to_literals("a SELECT \"Entwürfe \\\"x\\\"\"\r\n".as_bytes()).as_ref(),
            "a SELECT {13+}\r\nEntwürfe \"x\"\r\n".as_bytes()
        );
    }

    #[test]
    fn hostile_literal_lengths_do_not_panic() {
        assert!(tokenize(b"a LIST {18446744073709551615}\r\nx\r\n").is_err());
        let line = b"a SEARCH \"\xc3\xa9\" {18446744073709551615}\r\nx\r\n";
        let _ = quoted_8bit_to_literals(line);
    }

    /// A 64 KiB line of `{` with one 8-bit byte: each `{` used to be followed by a scan to
    /// the end of the line (quadratic); now every pass over it takes milliseconds.
    #[test]
    fn hostile_braces_are_linear() {
        let mut line = b"a SEARCH ".to_vec();
        line.extend(std::iter::repeat_n(b'{', 64 * 1024));
        line.extend_from_slice("é\r\n".as_bytes());
        let started = std::time::Instant::now();
        assert!(matches!(
            quoted_8bit_to_literals(&line),
            std::borrow::Cow::Owned(_)
        ));
        let _ = tokenize(&line);
        let _ = parse(&line);
        let mut list = b"a LIST \"\" ".to_vec();
        list.extend_from_slice(&line[9..]);
        let _ = parse(&list);
        let took = started.elapsed();
        assert!(
            took < std::time::Duration::from_millis(200),
            "took {took:?}"
        );
    }

    #[test]
    fn literal_lengths() {
        assert_eq!(literal_length(b"{3}", 0), Some((2, 3)));
        assert_eq!(literal_length(b"x{12+}", 1), Some((5, 12)));
        assert_eq!(literal_length(b"{3-}", 0), Some((3, 3)));
        assert_eq!(literal_length(b"{}", 0), None);
        assert_eq!(literal_length(b"{3", 0), None);
        assert_eq!(literal_length(b"{a}", 0), None);
        assert_eq!(literal_length(b"{99999999999999999999}", 0), None);
    }

    #[test]
    fn multiappend() {
        let line =
            b"m APPEND Sent (\\Seen) \"05-Jan-2021 10:00:00 +0100\" {3+}\r\nabc {2+}\r\nde\r\n";
        let Some(Ok(Extended::MultiAppend { mailbox, messages })) = parse(line) else {
            panic!()
        };
        assert_eq!(mailbox, b"Sent");
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].flags, vec!["\\Seen".to_string()]);
        assert_eq!(
            messages[0].date.as_deref(),
            Some("05-Jan-2021 10:00:00 +0100")
        );
        assert_eq!(messages[0].data, b"abc");
        assert_eq!(
            (
                messages[1].flags.len(),
                messages[1].date.is_none(),
                messages[1].data.as_slice()
            ),
            (0, true, &b"de"[..])
        );
        assert_eq!(
            parse(b"m APPEND Sent {3+}\r\nabc\r\n"),
            None,
            "one message: imap-codec"
        );
    }

    #[test]
    fn other_commands_pass_through() {
        assert_eq!(parse(b"a FETCH 1 (FLAGS)\r\n"), None);
        assert_eq!(parse(b"a LSUB \"\" *\r\n"), None);
    }
}
