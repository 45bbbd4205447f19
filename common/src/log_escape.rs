//! Client-provided text made safe for a log line: control characters (CR and LF above
//! all, which would forge log lines), backslashes, invalid UTF-8 and invisible
//! direction marks are escaped, and the text is cut at a length limit.
//!
//! Lazy: formatting happens only if the log line is written, so a disabled level costs
//! nothing. Use it as `tracing::info!(login = %log_escape::escape(name), ...)`.

use std::fmt;

/// How many bytes of client text a log field shows by default.
pub const DEFAULT_MAX: usize = 200;

/// Client text that displays escaped and length-capped.
#[derive(Clone, Copy)]
pub struct Escaped<'a> {
    bytes: &'a [u8],
    max: usize,
}

/// `bytes` (a string or raw bytes from a client), at most [`DEFAULT_MAX`] of them shown.
pub fn escape(bytes: &(impl AsRef<[u8]> + ?Sized)) -> Escaped<'_> {
    escape_max(bytes, DEFAULT_MAX)
}

/// `bytes` with at most `max` of them shown.
pub fn escape_max(bytes: &(impl AsRef<[u8]> + ?Sized), max: usize) -> Escaped<'_> {
    Escaped {
        bytes: bytes.as_ref(),
        max,
    }
}

/// Characters shown as `\u{..}`: they are not controls to Rust but hide or reorder text.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        let shown = &self.bytes[..self.bytes.len().min(self.max)];
        for chunk in shown.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\r' => f.write_str("\\r")?,
                    '\n' => f.write_str("\\n")?,
                    '\t' => f.write_str("\\t")?,
                    '\\' => f.write_str("\\\\")?,
                    c if c.is_control() || is_invisible(c) => write!(f, "\\u{{{:x}}}", c as u32)?,
                    c => f.write_char(c)?,
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        if self.bytes.len() > shown.len() {
            write!(f, "...[{} more bytes]", self.bytes.len() - shown.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_cannot_forge_log_lines() {
        let s = escape("alice\r\n2026-01-01 INFO login ok user=root").to_string();
        assert!(!s.contains('\r') && !s.contains('\n'), "{s}");
        assert_eq!(s, "alice\\r\\n2026-01-01 INFO login ok user=root");
    }

    #[test]
    fn controls_invalid_utf8_and_backslashes_are_escaped() {
        assert_eq!(escape(b"a\x00b\x1b[31m").to_string(), "a\\u{0}b\\u{1b}[31m");
        assert_eq!(escape(b"\xff\xfe ok").to_string(), "\\xff\\xfe ok");
        assert_eq!(escape("a\\nb").to_string(), "a\\\\nb");
        assert_eq!(escape("Entwürfe").to_string(), "Entwürfe");
        assert_eq!(escape("x\u{202e}y").to_string(), "x\\u{202e}y");
    }

    #[test]
    fn long_text_is_cut() {
        let long = "x".repeat(10_000);
        let s = escape(&long).to_string();
        assert_eq!(s, format!("{}...[9800 more bytes]", "x".repeat(200)));
        assert_eq!(escape_max("abcdef", 3).to_string(), "abc...[3 more bytes]");
    }
}
