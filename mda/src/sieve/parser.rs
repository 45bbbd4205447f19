//! Sieve grammar (RFC 5228 section 8.2) into [`Program`], with the checks a compiler does:
//! known commands and tests, `require` before use, `elsif`/`else` after `if`, tags that need
//! an extension. Nesting is limited to [`limits::NESTING`], so recursion depth is bounded.

use super::args::Args;
use super::ast::{Arg, Call, Command, Program, Test};
use super::lexer::{Spanned, Token, tokenize};
use super::matching::check_regex;
use super::{CompileError, limits};

/// Every extension this implementation knows.
pub(crate) const EXTENSIONS: &[&str] = &[
    "fileinto",
    "reject",
    "ereject",
    "envelope",
    "encoded-character",
    "imap4flags",
    "copy",
    "body",
    "variables",
    "vacation",
    "vacation-seconds",
    "relational",
    "comparator-i;ascii-numeric",
    "comparator-i;octet",
    "comparator-i;ascii-casemap",
    "subaddress",
    "date",
    "index",
    "mailbox",
    "include",
    "duplicate",
    "editheader",
    "regex",
    "spamtest",
    "spamtestplus",
];

/// Command name -> the extension it needs ("" = core).
fn command_extension(name: &str) -> Option<&'static str> {
    Some(match name {
        "require" | "if" | "elsif" | "else" | "stop" | "keep" | "discard" | "redirect" => "",
        "fileinto" => "fileinto",
        "reject" => "reject",
        "ereject" => "ereject",
        "setflag" | "addflag" | "removeflag" => "imap4flags",
        "set" => "variables",
        "vacation" => "vacation",
        "include" | "return" | "global" => "include",
        "addheader" | "deleteheader" => "editheader",
        _ => return None,
    })
}

fn test_extension(name: &str) -> Option<&'static str> {
    Some(match name {
        "address" | "allof" | "anyof" | "exists" | "false" | "true" | "header" | "not" | "size" => {
            ""
        }
        "envelope" => "envelope",
        "body" => "body",
        "string" => "variables",
        "hasflag" => "imap4flags",
        "date" | "currentdate" => "date",
        "mailboxexists" => "mailbox",
        "duplicate" => "duplicate",
        "spamtest" => "spamtest",
        _ => return None,
    })
}

/// Tag -> the extension it needs ("" = core or checked per command).
fn tag_extension(tag: &str) -> &'static str {
    match tag {
        "copy" => "copy",
        "flags" => "imap4flags",
        "create" => "mailbox",
        "regex" => "regex",
        "value" | "count" => "relational",
        "user" | "detail" => "subaddress",
        "index" | "last" => "index",
        "seconds" => "vacation-seconds",
        "percent" => "spamtestplus",
        _ => "",
    }
}

struct Parser {
    tokens: Vec<Spanned>,
    pos: usize,
    requires: Vec<String>,
    /// Whether a command other than `require` has been seen.
    started: bool,
    /// Where the source ends (for "unexpected end" errors).
    end: (u32, u32),
}

pub(crate) fn parse(source: &str) -> Result<Program, CompileError> {
    let tokens = tokenize(source)?;
    let lines = source.split('\n').count() as u32;
    let last_col = source.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u32 + 1;
    let mut p = Parser {
        tokens,
        pos: 0,
        requires: Vec::new(),
        started: false,
        end: (lines.max(1), last_col),
    };
    let commands = p.commands(0, true)?;
    Ok(Program {
        requires: p.requires,
        commands,
    })
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|s| &s.token)
    }

    fn here(&self) -> (u32, u32) {
        self.tokens
            .get(self.pos)
            .map_or(self.end, |s| (s.line, s.column))
    }

    fn error(&self, message: impl Into<String>) -> CompileError {
        let (line, column) = self.here();
        CompileError::new(line, column, message)
    }

    fn next(&mut self) -> Option<Spanned> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expect(&mut self, want: Token, what: &str) -> Result<(), CompileError> {
        if self.peek() == Some(&want) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(format!("expected {what}")))
        }
    }

    fn has(&self, ext: &str) -> bool {
        self.requires.iter().any(|r| r == ext)
    }

    /// Commands up to `}` (or the end at the top level).
    fn commands(&mut self, depth: usize, top: bool) -> Result<Vec<Command>, CompileError> {
        if depth > limits::NESTING {
            return Err(self.error("blocks nested too deeply"));
        }
        let mut out: Vec<Command> = Vec::new();
        loop {
            match self.peek() {
                None if top => return Ok(out),
                None => return Err(self.error("missing '}'")),
                Some(Token::RBrace) if !top => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(Token::Identifier(_)) => {}
                Some(_) => return Err(self.error("expected a command")),
            }
            let (line, column) = self.here();
            let Some(Spanned {
                token: Token::Identifier(name),
                ..
            }) = self.next()
            else {
                return Err(self.error("expected a command"));
            };
            let Some(ext) = command_extension(&name) else {
                return Err(CompileError::new(
                    line,
                    column,
                    format!("unknown command '{name}'"),
                ));
            };
            if !ext.is_empty() && !self.has(ext) {
                return Err(CompileError::new(
                    line,
                    column,
                    format!("command '{name}' needs require \"{ext}\""),
                ));
            }
            match name.as_str() {
                "require" => {
                    if !top || self.started {
                        return Err(CompileError::new(
                            line,
                            column,
                            "require must come before any other command",
                        ));
                    }
                    let (args, _) = self.arguments(depth, false)?;
                    self.expect(Token::Semicolon, "';'")?;
                    let [arg] = &args[..] else {
                        return Err(CompileError::new(
                            line,
                            column,
                            "require takes a string list",
                        ));
                    };
                    let Some(names) = arg.strings() else {
                        return Err(CompileError::new(
                            line,
                            column,
                            "require takes a string list",
                        ));
                    };
                    for ext in names {
                        let ext = ext.to_ascii_lowercase();
                        if !EXTENSIONS.contains(&ext.as_str()) {
                            return Err(CompileError::new(
                                line,
                                column,
                                format!("unsupported extension \"{ext}\""),
                            ));
                        }
                        if ext == "spamtestplus" {
                            self.requires.push("spamtest".into());
                        }
                        if ext == "vacation-seconds" {
                            self.requires.push("vacation".into());
                        }
                        self.requires.push(ext);
                    }
                }
                "if" => {
                    self.started = true;
                    let test = self.single_test(depth)?;
                    let block = self.block(depth)?;
                    out.push(Command::If {
                        branches: vec![(test, block)],
                        otherwise: None,
                    });
                }
                "elsif" | "else" => {
                    let Some(Command::If {
                        branches,
                        otherwise,
                    }) = out.last_mut()
                    else {
                        return Err(CompileError::new(
                            line,
                            column,
                            format!("'{name}' without 'if'"),
                        ));
                    };
                    if otherwise.is_some() {
                        return Err(CompileError::new(
                            line,
                            column,
                            format!("'{name}' after 'else'"),
                        ));
                    }
                    if name == "elsif" {
                        let test = self.single_test(depth)?;
                        let block = self.block(depth)?;
                        branches.push((test, block));
                    } else {
                        let block = self.block(depth)?;
                        *otherwise = Some(block);
                    }
                }
                _ => {
                    self.started = true;
                    let (args, tests) = self.arguments(depth, false)?;
                    if !tests.is_empty() {
                        return Err(CompileError::new(
                            line,
                            column,
                            format!("'{name}' takes no test"),
                        ));
                    }
                    self.expect(Token::Semicolon, "';'")?;
                    let call = Call {
                        name,
                        args,
                        line,
                        column,
                    };
                    self.check_command(&call)?;
                    out.push(Command::Action(call));
                }
            }
        }
    }

    fn block(&mut self, depth: usize) -> Result<Vec<Command>, CompileError> {
        self.expect(Token::LBrace, "'{'")?;
        self.commands(depth + 1, false)
    }

    /// The one test of `if`/`elsif`.
    fn single_test(&mut self, depth: usize) -> Result<Test, CompileError> {
        match self.peek() {
            Some(Token::Identifier(_)) => self.test(depth + 1),
            _ => Err(self.error("expected a test")),
        }
    }

    fn test(&mut self, depth: usize) -> Result<Test, CompileError> {
        if depth > limits::NESTING {
            return Err(self.error("tests nested too deeply"));
        }
        let (line, column) = self.here();
        let Some(Spanned {
            token: Token::Identifier(name),
            ..
        }) = self.next()
        else {
            return Err(CompileError::new(line, column, "expected a test"));
        };
        let Some(ext) = test_extension(&name) else {
            return Err(CompileError::new(
                line,
                column,
                format!("unknown test '{name}'"),
            ));
        };
        if !ext.is_empty() && !self.has(ext) {
            return Err(CompileError::new(
                line,
                column,
                format!("test '{name}' needs require \"{ext}\""),
            ));
        }
        let (args, tests) = self.arguments(depth, true)?;
        let call = Call {
            name,
            args,
            line,
            column,
        };
        self.check_test(&call, &tests)?;
        Ok(Test { call, tests })
    }

    /// Arguments, then (for tests, or where allowed) a test or a test list.
    fn arguments(
        &mut self,
        depth: usize,
        allow_tests: bool,
    ) -> Result<(Vec<Arg>, Vec<Test>), CompileError> {
        let mut args = Vec::new();
        loop {
            let (line, column) = self.here();
            match self.peek().cloned() {
                Some(Token::Tag(t)) => {
                    self.pos += 1;
                    let ext = tag_extension(&t);
                    if !ext.is_empty() && !self.has(ext) {
                        return Err(CompileError::new(
                            line,
                            column,
                            format!("tag ':{t}' needs require \"{ext}\""),
                        ));
                    }
                    args.push(Arg::Tag(t));
                }
                Some(Token::Number(n)) => {
                    self.pos += 1;
                    args.push(Arg::Number(n));
                }
                Some(Token::Str(s)) => {
                    self.pos += 1;
                    args.push(Arg::Str(self.decode(s, line, column)?));
                }
                Some(Token::LBracket) => {
                    self.pos += 1;
                    let mut list = Vec::new();
                    loop {
                        let (line, column) = self.here();
                        match self.next().map(|s| s.token) {
                            Some(Token::Str(s)) => list.push(self.decode(s, line, column)?),
                            _ => {
                                return Err(CompileError::new(line, column, "expected a string"));
                            }
                        }
                        match self.next().map(|s| s.token) {
                            Some(Token::Comma) => {}
                            Some(Token::RBracket) => break,
                            _ => return Err(self.error("expected ',' or ']'")),
                        }
                    }
                    args.push(Arg::List(list));
                }
                Some(Token::LParen) if allow_tests => {
                    self.pos += 1;
                    let mut tests = Vec::new();
                    loop {
                        tests.push(self.test(depth + 1)?);
                        match self.next().map(|s| s.token) {
                            Some(Token::Comma) => {}
                            Some(Token::RParen) => break,
                            _ => {
                                self.pos -= 1;
                                return Err(self.error("expected ',' or ')'"));
                            }
                        }
                    }
                    return Ok((args, tests));
                }
                Some(Token::Identifier(_)) if allow_tests => {
                    let test = self.test(depth + 1)?;
                    return Ok((args, vec![test]));
                }
                _ => return Ok((args, Vec::new())),
            }
        }
    }

    /// `encoded-character` (RFC 5228 2.4.2.4): `${hex:..}` and `${unicode:..}` decoded.
    fn decode(&self, s: String, line: u32, column: u32) -> Result<String, CompileError> {
        if !self.has("encoded-character") || !s.contains("${") {
            return Ok(s);
        }
        decode_encoded_characters(&s).map_err(|m| CompileError::new(line, column, m))
    }

    fn check_command(&self, call: &Call) -> Result<(), CompileError> {
        let err = |m: String| CompileError::new(call.line, call.column, m);
        let args = Args::of(call).map_err(err)?;
        let n = args.positional.len();
        let (min, max) = match call.name.as_str() {
            "stop" | "keep" | "discard" | "return" => (0, 0),
            "fileinto" | "redirect" | "reject" | "ereject" | "vacation" | "include" | "global" => {
                (1, 1)
            }
            "set" | "addheader" => (2, 2),
            "deleteheader" | "setflag" | "addflag" | "removeflag" => (1, 2),
            _ => (0, usize::MAX),
        };
        if n < min || n > max {
            return Err(err(format!(
                "'{}' takes {} argument{}, not {n}",
                call.name,
                if min == max {
                    min.to_string()
                } else {
                    format!("{min} or {max}")
                },
                if max == 1 { "" } else { "s" }
            )));
        }
        if args.positional.iter().any(|a| matches!(a, Arg::Number(_))) {
            return Err(err(format!("'{}' takes no number here", call.name)));
        }
        Ok(())
    }

    fn check_test(&self, call: &Call, tests: &[Test]) -> Result<(), CompileError> {
        let err = |m: String| CompileError::new(call.line, call.column, m);
        match call.name.as_str() {
            "allof" | "anyof" if tests.is_empty() => {
                return Err(err("needs a test list".into()));
            }
            "not" if tests.len() != 1 => return Err(err("'not' takes one test".into())),
            "allof" | "anyof" | "not" => return Ok(()),
            _ if !tests.is_empty() => return Err(err("this test takes no test list".into())),
            _ => {}
        }
        let args = Args::of(call).map_err(err)?;
        let n = args.positional.len();
        let (min, max) = match call.name.as_str() {
            "true" | "false" | "size" | "duplicate" => (0, 0),
            "exists" | "body" | "mailboxexists" | "spamtest" => (1, 1),
            "header" | "address" | "envelope" | "string" | "currentdate" => (2, 2),
            "hasflag" => (1, 2),
            "date" => (3, 3),
            _ => (0, usize::MAX),
        };
        if n < min || n > max {
            return Err(err(format!(
                "'{}' has {n} arguments, wants {min}",
                call.name
            )));
        }
        if args.positional.iter().any(|a| matches!(a, Arg::Number(_))) {
            return Err(err(format!("'{}' takes no number here", call.name)));
        }
        if call.name == "size" && (args.has("over") == args.has("under")) {
            return Err(err("size needs :over or :under".into()));
        }
        if let Ok(Some(name)) = args.string("comparator") {
            let ext = format!("comparator-{}", name.to_ascii_lowercase());
            let builtin = matches!(
                name.to_ascii_lowercase().as_str(),
                "i;octet" | "i;ascii-casemap"
            );
            if !builtin && !self.has(&ext) {
                return Err(err(format!(
                    "comparator \"{name}\" needs require \"{ext}\""
                )));
            }
        }
        if args.has("regex") {
            for a in &args.positional {
                for key in a.strings().unwrap_or_default() {
                    if !key.contains("${") {
                        check_regex(key).map_err(|e| err(format!("bad regex: {}", e.0)))?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Decodes `${hex:41 42}` and `${unicode:263a}`; a malformed one stays as written.
pub(crate) fn decode_encoded_characters(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[i..]);
            return Ok(out);
        };
        let inner = &after[..end];
        let decoded = inner.split_once(':').and_then(|(kind, body)| {
            let kind = kind.to_ascii_lowercase();
            let words: Vec<&str> = body.split_whitespace().collect();
            if words.is_empty() {
                return None;
            }
            match kind.as_str() {
                "hex" => {
                    let mut bytes = Vec::new();
                    for w in words {
                        // Hex digits only: the slicing below is by bytes.
                        if (w.len() % 2 == 1 && w.len() > 1)
                            || !w.bytes().all(|b| b.is_ascii_hexdigit())
                        {
                            return None;
                        }
                        let mut i = 0;
                        while i < w.len() {
                            let n = if w.len() == 1 { 1 } else { 2 };
                            bytes.push(u8::from_str_radix(&w[i..i + n], 16).ok()?);
                            i += n;
                        }
                    }
                    Some(Ok(String::from_utf8(bytes).ok()?))
                }
                "unicode" => {
                    let mut text = String::new();
                    for w in words {
                        let cp = u32::from_str_radix(w, 16).ok()?;
                        match char::from_u32(cp) {
                            Some(c) => text.push(c),
                            None => return Some(Err(format!("invalid unicode character {w}"))),
                        }
                    }
                    Some(Ok(text))
                }
                _ => None,
            }
        });
        match decoded {
            Some(Ok(text)) => {
                out.push_str(&text);
                rest = &after[end + 1..];
            }
            Some(Err(e)) => return Err(e),
            None => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_chains_and_requires() {
        let p = parse(
            "require [\"fileinto\"];\nif header :is \"x\" \"y\" { fileinto \"a\"; }\
             elsif true { stop; } else { keep; }",
        )
        .unwrap();
        assert_eq!(p.requires, vec!["fileinto"]);
        assert!(
            matches!(&p.commands[0], Command::If { branches, otherwise: Some(_) } if branches.len() == 2)
        );
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = parse("keep;\nfileinto \"x\";").unwrap_err();
        assert_eq!((e.line, e.column), (2, 1));
        assert!(e.message.contains("require"), "{e}");
        let e = parse("if true {\n  keep;\n").unwrap_err();
        assert!(e.message.contains("'}'"), "{e}");
        let e = parse("else { keep; }").unwrap_err();
        assert!(e.message.contains("without 'if'"));
        let e = parse("require \"bogus\";").unwrap_err();
        assert!(e.message.contains("unsupported"));
        assert_eq!(parse("keep;\nrequire \"fileinto\";").unwrap_err().line, 2);
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = "if true {".repeat(10_000) + &"}".repeat(10_000);
        assert!(parse(&deep).unwrap_err().message.contains("deeply"));
        let deep = format!("if {} true{} {{}}", "not ".repeat(100_000), "");
        assert!(parse(&deep).is_err());
        let deep = format!(
            "if {}true{} {{}}",
            "anyof(".repeat(100_000),
            ")".repeat(100_000)
        );
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn encoded_characters() {
        assert_eq!(decode_encoded_characters("a${hex:42 43}d").unwrap(), "aBCd");
        assert_eq!(
            decode_encoded_characters("${unicode:263a}").unwrap(),
            "\u{263a}"
        );
        assert_eq!(decode_encoded_characters("${hex:zz}").unwrap(), "${hex:zz}");
    }
}
