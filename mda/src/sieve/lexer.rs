//! Sieve tokens (RFC 5228 section 8.1), one pass over the source, with line and column.

use super::{CompileError, limits};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token {
    Identifier(String),
    Tag(String),
    Number(u64),
    /// A quoted string or a `text:` block, unescaped.
    Str(String),
    LBracket,
    RBracket,
    Comma,
    LParen,
    RParen,
    LBrace,
    RBrace,
    Semicolon,
}

#[derive(Debug, Clone)]
pub(crate) struct Spanned {
    pub token: Token,
    pub line: u32,
    pub column: u32,
}

struct Cursor<'a> {
    src: &'a [u8],
    pos: usize,
    line: u32,
    /// Column of `pos` in characters, counted as bytes go by (never recounted: a script
    /// on one long line stays linear).
    col: u32,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }
    fn peek_at(&self, n: usize) -> Option<u8> {
        self.src.get(self.pos + n).copied()
    }
    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        if b == b'\n' {
            self.line += 1;
            self.col = 1;
        } else if (b & 0xC0) != 0x80 {
            // Characters, not bytes: UTF-8 continuation bytes do not count.
            self.col += 1;
        }
        Some(b)
    }
    fn column(&self) -> u32 {
        self.col
    }
    fn error(&self, message: impl Into<String>) -> CompileError {
        CompileError::new(self.line, self.column(), message)
    }
}

pub(crate) fn tokenize(source: &str) -> Result<Vec<Spanned>, CompileError> {
    let mut c = Cursor {
        src: source.as_bytes(),
        pos: 0,
        line: 1,
        col: 1,
    };
    let mut tokens = Vec::new();
    loop {
        skip_space_and_comments(&mut c)?;
        let (line, column) = (c.line, c.column());
        let Some(b) = c.peek() else { break };
        let token = match b {
            b'[' => single(&mut c, Token::LBracket),
            b']' => single(&mut c, Token::RBracket),
            b',' => single(&mut c, Token::Comma),
            b'(' => single(&mut c, Token::LParen),
            b')' => single(&mut c, Token::RParen),
            b'{' => single(&mut c, Token::LBrace),
            b'}' => single(&mut c, Token::RBrace),
            b';' => single(&mut c, Token::Semicolon),
            b'"' => Token::Str(quoted(&mut c)?),
            b':' => {
                c.bump();
                match identifier(&mut c) {
                    Some(id) => Token::Tag(id.to_ascii_lowercase()),
                    None => return Err(c.error("expected a tag name after ':'")),
                }
            }
            b'0'..=b'9' => Token::Number(number(&mut c)?),
            b if b.is_ascii_alphabetic() || b == b'_' => {
                let id = identifier(&mut c).unwrap_or_default();
                if id.eq_ignore_ascii_case("text") && c.peek() == Some(b':') {
                    c.bump();
                    Token::Str(multiline(&mut c)?)
                } else {
                    Token::Identifier(id.to_ascii_lowercase())
                }
            }
            _ => {
                let ch = source[c.pos..].chars().next().unwrap_or('?');
                return Err(c.error(format!("unexpected character {ch:?}")));
            }
        };
        tokens.push(Spanned {
            token,
            line,
            column,
        });
    }
    Ok(tokens)
}

fn single(c: &mut Cursor<'_>, t: Token) -> Token {
    c.bump();
    t
}

fn skip_space_and_comments(c: &mut Cursor<'_>) -> Result<(), CompileError> {
    loop {
        match c.peek() {
            Some(b' ' | b'\t' | b'\r' | b'\n') => {
                c.bump();
            }
            Some(b'#') => {
                while let Some(b) = c.bump() {
                    if b == b'\n' {
                        break;
                    }
                }
            }
            Some(b'/') if c.peek_at(1) == Some(b'*') => {
                let (line, column) = (c.line, c.column());
                c.bump();
                c.bump();
                loop {
                    match c.bump() {
                        Some(b'*') if c.peek() == Some(b'/') => {
                            c.bump();
                            break;
                        }
                        Some(_) => {}
                        None => {
                            return Err(CompileError::new(line, column, "unterminated comment"));
                        }
                    }
                }
            }
            _ => return Ok(()),
        }
    }
}

fn identifier(c: &mut Cursor<'_>) -> Option<String> {
    let start = c.pos;
    match c.peek() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return None,
    }
    while matches!(c.peek(), Some(b) if b.is_ascii_alphanumeric() || b == b'_') {
        c.bump();
    }
    Some(String::from_utf8_lossy(&c.src[start..c.pos]).into_owned())
}

fn number(c: &mut Cursor<'_>) -> Result<u64, CompileError> {
    let mut n: u64 = 0;
    while let Some(d @ b'0'..=b'9') = c.peek() {
        c.bump();
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or_else(|| c.error("number too large"))?;
    }
    let shift = match c.peek() {
        Some(b'k' | b'K') => 10,
        Some(b'm' | b'M') => 20,
        Some(b'g' | b'G') => 30,
        _ => 0,
    };
    if shift > 0 {
        c.bump();
        n = n
            .checked_mul(1 << shift)
            .ok_or_else(|| c.error("number too large"))?;
    }
    Ok(n)
}

fn quoted(c: &mut Cursor<'_>) -> Result<String, CompileError> {
    let (line, column) = (c.line, c.column());
    c.bump();
    let mut out = Vec::new();
    loop {
        match c.bump() {
            Some(b'"') => break,
            Some(b'\\') => match c.bump() {
                Some(b) => out.push(b),
                None => break,
            },
            Some(b) => out.push(b),
            None => return Err(CompileError::new(line, column, "unterminated string")),
        }
        if out.len() > limits::STRING {
            return Err(CompileError::new(line, column, "string too long"));
        }
    }
    String::from_utf8(out).map_err(|_| CompileError::new(line, column, "string is not UTF-8"))
}

/// `text:` up to a line holding only `.`; a leading `..` stands for `.`.
fn multiline(c: &mut Cursor<'_>) -> Result<String, CompileError> {
    let (line, column) = (c.line, c.column());
    // The rest of the `text:` line: spaces, tabs and an optional hash comment.
    while matches!(c.peek(), Some(b' ' | b'\t')) {
        c.bump();
    }
    if c.peek() == Some(b'#') {
        while !matches!(c.peek(), Some(b'\n') | None) {
            c.bump();
        }
    }
    if c.peek() == Some(b'\r') {
        c.bump();
    }
    if c.bump() != Some(b'\n') {
        return Err(c.error("expected a line end after 'text:'"));
    }
    let mut out = Vec::new();
    loop {
        let start = c.pos;
        let mut end = None;
        while let Some(b) = c.bump() {
            if b == b'\n' {
                end = Some(c.pos);
                break;
            }
        }
        let Some(end) = end else {
            return Err(CompileError::new(line, column, "unterminated text: block"));
        };
        let raw = &c.src[start..end];
        let content = raw
            .strip_suffix(b"\r\n")
            .or_else(|| raw.strip_suffix(b"\n"))
            .unwrap_or(raw);
        if content == b"." {
            break;
        }
        let content = if raw.starts_with(b"..") {
            &raw[1..]
        } else {
            raw
        };
        // Line ends inside the text are CRLF, as in a message.
        let body = content
            .strip_suffix(b"\r\n")
            .or_else(|| content.strip_suffix(b"\n"))
            .unwrap_or(content);
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
        if out.len() > limits::STRING {
            return Err(CompileError::new(line, column, "string too long"));
        }
    }
    String::from_utf8(out).map_err(|_| CompileError::new(line, column, "string is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<Token> {
        tokenize(src)
            .unwrap()
            .into_iter()
            .map(|s| s.token)
            .collect()
    }

    #[test]
    fn tokens_strings_numbers_comments() {
        assert_eq!(
            kinds("if header :Is \"a\\\"b\" 10K; # c\n/* x */ ["),
            vec![
                Token::Identifier("if".into()),
                Token::Identifier("header".into()),
                Token::Tag("is".into()),
                Token::Str("a\"b".into()),
                Token::Number(10240),
                Token::Semicolon,
                Token::LBracket
            ]
        );
        assert_eq!(
            kinds("text: # c\nline\n..dot\n.\n"),
            vec![Token::Str("line\r\n.dot\r\n".into())]
        );
    }

    #[test]
    fn errors_have_positions() {
        let e = tokenize("keep;\n  \"open").unwrap_err();
        assert_eq!((e.line, e.column), (2, 3));
        let e = tokenize("keep;\n /* x").unwrap_err();
        assert_eq!((e.line, e.column), (2, 2));
        assert_eq!(tokenize("99999999999999999999").unwrap_err().line, 1);
    }
}
