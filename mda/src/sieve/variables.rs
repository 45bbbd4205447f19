//! RFC 5229 variables: `${name}`, `${N}` (match variables), `global.name` (RFC 6609).

use super::interp::{Exec, Frame};
use super::limits;

impl Exec<'_> {
    /// `s` with variable references replaced, when the script requires "variables";
    /// unknown variables are empty, malformed references stay as written.
    pub(crate) fn expand(&self, frame: &Frame, s: &str) -> String {
        if !frame.script.0.has("variables") || !s.contains("${") {
            return s.to_string();
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            match after.find('}') {
                Some(end) if valid_reference(&after[..end]) => {
                    out.push_str(&self.get_var(frame, &after[..end]));
                    rest = &after[end + 1..];
                }
                _ => {
                    out.push_str("${");
                    rest = after;
                }
            }
            if out.len() > limits::STRING {
                break;
            }
        }
        out.push_str(rest);
        truncate(out)
    }

    pub(crate) fn get_var(&self, frame: &Frame, name: &str) -> String {
        if let Ok(n) = name.parse::<usize>() {
            return frame.match_vars.get(n).cloned().unwrap_or_default();
        }
        let lower = name.to_ascii_lowercase();
        if let Some(g) = lower.strip_prefix("global.") {
            return self.global_vars.get(g).cloned().unwrap_or_default();
        }
        if frame.globals.contains(&lower) {
            return self.global_vars.get(&lower).cloned().unwrap_or_default();
        }
        frame.vars.get(&lower).cloned().unwrap_or_default()
    }

    pub(crate) fn set_var(
        &mut self,
        frame: &mut Frame,
        name: &str,
        value: String,
    ) -> Result<(), String> {
        let lower = name.to_ascii_lowercase();
        let (is_global, bare) = match lower.strip_prefix("global.") {
            Some(g) => (true, g.to_string()),
            None => (frame.globals.contains(&lower), lower.clone()),
        };
        if !valid_identifier(&bare) {
            return Err(format!("invalid variable name \"{name}\""));
        }
        let value = truncate(value);
        let map = if is_global {
            &mut self.global_vars
        } else {
            &mut frame.vars
        };
        if map.len() >= limits::VARIABLES && !map.contains_key(&bare) {
            return Err("too many variables".into());
        }
        map.insert(bare, value);
        Ok(())
    }
}

fn valid_identifier(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// `name`, `ns.name` or a number.
fn valid_reference(s: &str) -> bool {
    if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
        return true;
    }
    !s.is_empty() && s.split('.').all(valid_identifier)
}

fn truncate(mut s: String) -> String {
    if s.len() > limits::STRING {
        let mut cut = limits::STRING;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}
