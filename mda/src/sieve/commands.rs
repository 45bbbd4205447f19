//! Actions and control commands: keep, fileinto, redirect, discard, reject, ereject,
//! imap4flags, set, vacation, include/return/global, addheader/deleteheader, stop.

use super::args::{Args, MatchOpts};
use super::ast::Call;
use super::interp::{Exec, Flow, Frame};
use super::message::{Field, decoded_value};
use super::{Action, Vacation, limits};

impl Exec<'_> {
    pub(crate) fn command(&mut self, frame: &mut Frame, call: &Call) -> Result<Flow, String> {
        let args = Args::of(call)?;
        match call.name.as_str() {
            "stop" => return Ok(Flow::Stop),
            "return" => return Ok(Flow::Return),
            "keep" => {
                let flags = self.flags_arg(frame, &args)?;
                self.push_action(Action::Keep { flags })?;
                self.implicit_keep = false;
            }
            "discard" => {
                self.push_action(Action::Discard)?;
                self.implicit_keep = false;
            }
            "fileinto" => {
                let mailbox = self.expand(frame, args.string_at(0)?);
                if mailbox.is_empty() {
                    return Err("fileinto: empty mailbox name".into());
                }
                let flags = self.flags_arg(frame, &args)?;
                let create = args.has("create");
                self.push_action(Action::FileInto {
                    mailbox,
                    flags,
                    create,
                })?;
                if !args.has("copy") {
                    self.implicit_keep = false;
                }
            }
            "redirect" => {
                let address = self.expand(frame, args.string_at(0)?);
                let address = address.trim().trim_start_matches('<').trim_end_matches('>');
                if !plausible_address(address) {
                    return Err(format!("redirect: invalid address \"{address}\""));
                }
                self.redirects += 1;
                if self.redirects > limits::REDIRECTS {
                    return Err(format!("more than {} redirects", limits::REDIRECTS));
                }
                let copy = args.has("copy");
                self.push_action(Action::Redirect {
                    address: address.to_string(),
                    copy,
                })?;
                if !copy {
                    self.implicit_keep = false;
                }
            }
            "reject" | "ereject" => {
                let reason = self.expand(frame, args.string_at(0)?);
                if self.actions.iter().any(|a| {
                    matches!(
                        a,
                        Action::Reject { .. } | Action::Ereject { .. } | Action::Vacation(_)
                    )
                }) {
                    return Err("reject cannot be combined with another reject or vacation".into());
                }
                self.push_action(if call.name == "reject" {
                    Action::Reject { reason }
                } else {
                    Action::Ereject { reason }
                })?;
                self.implicit_keep = false;
            }
            "setflag" | "addflag" | "removeflag" => self.flag_command(frame, call, &args)?,
            "set" => self.set_command(frame, &args)?,
            "vacation" => self.vacation(frame, &args)?,
            "global" => {
                for name in args.strings(0)? {
                    frame.globals.insert(name.to_ascii_lowercase());
                }
            }
            "include" => return self.include(frame, &args),
            "addheader" => self.add_header(frame, &args)?,
            "deleteheader" => self.delete_header(frame, &args)?,
            other => return Err(format!("unknown command '{other}'")),
        }
        Ok(Flow::Next)
    }

    /// `:flags` of keep/fileinto, else the internal flag variable.
    fn flags_arg(&mut self, frame: &Frame, args: &Args<'_>) -> Result<Vec<String>, String> {
        match args.list("flags")? {
            Some(list) => {
                let expanded: Vec<String> = list.iter().map(|s| self.expand(frame, s)).collect();
                Ok(flag_list(expanded.iter().map(String::as_str)))
            }
            None => Ok(self.flags.clone()),
        }
    }

    fn flag_command(
        &mut self,
        frame: &mut Frame,
        call: &Call,
        args: &Args<'_>,
    ) -> Result<(), String> {
        // Optional variable name first, then the flag list.
        let (var, list) = match args.positional.len() {
            1 => (None, args.strings(0)?),
            2 => (Some(args.string_at(0)?), args.strings(1)?),
            _ => return Err(format!("{}: wrong arguments", call.name)),
        };
        let given: Vec<String> = list.iter().map(|s| self.expand(frame, s)).collect();
        let given = flag_list(given.iter().map(String::as_str));
        let current = match var {
            Some(v) => flag_list(self.get_var(frame, v).split(' ')),
            None => self.flags.clone(),
        };
        let new = match call.name.as_str() {
            "setflag" => given,
            "addflag" => {
                let mut all = current;
                for f in given {
                    if !all.iter().any(|c| c.eq_ignore_ascii_case(&f)) {
                        all.push(f);
                    }
                }
                all
            }
            _ => current
                .into_iter()
                .filter(|c| !given.iter().any(|g| g.eq_ignore_ascii_case(c)))
                .collect(),
        };
        match var {
            Some(v) => self.set_var(frame, v, new.join(" "))?,
            None => self.flags = new,
        }
        Ok(())
    }

    fn set_command(&mut self, frame: &mut Frame, args: &Args<'_>) -> Result<(), String> {
        let name = args.string_at(0)?;
        let mut value = self.expand(frame, args.string_at(1)?);
        // Modifiers apply from the highest precedence down (RFC 5229 4.1).
        let order = [
            "lower",
            "upper",
            "lowerfirst",
            "upperfirst",
            "quotewildcard",
            "quoteregex",
            "encodeurl",
            "length",
        ];
        for m in order {
            if !args.has(m) {
                continue;
            }
            value = match m {
                "lower" => value.to_lowercase(),
                "upper" => value.to_uppercase(),
                "lowerfirst" => first_char(&value, |c| c.to_lowercase().collect()),
                "upperfirst" => first_char(&value, |c| c.to_uppercase().collect()),
                "quotewildcard" => value
                    .chars()
                    .flat_map(|c| {
                        let esc = matches!(c, '*' | '?' | '\\');
                        esc.then_some('\\').into_iter().chain([c])
                    })
                    .collect(),
                "quoteregex" => regex_syntax::escape(&value),
                "encodeurl" => encode_url(&value),
                _ => value.chars().count().to_string(),
            };
        }
        self.set_var(frame, name, value)
    }

    fn vacation(&mut self, frame: &Frame, args: &Args<'_>) -> Result<(), String> {
        let reason = self.expand(frame, args.string_at(0)?);
        let subject = args.string("subject")?.map(|s| self.expand(frame, s));
        let from = args.string("from")?.map(|s| self.expand(frame, s));
        let addresses = args
            .list("addresses")?
            .unwrap_or_default()
            .iter()
            .map(|s| self.expand(frame, s))
            .collect();
        let mime = args.has("mime");
        // Pigeonhole's defaults: at least a day, at most 60 days, 7 days unless said.
        let period_seconds = match (args.number("seconds")?, args.number("days")?) {
            (Some(s), _) => s,
            (None, Some(d)) => d.saturating_mul(86_400),
            (None, None) => 7 * 86_400,
        }
        .clamp(limits::VACATION_MIN_PERIOD, limits::VACATION_MAX_PERIOD);
        let handle = match args.string("handle")? {
            Some(h) => self.expand(frame, h),
            None => format!(
                "{}\u{0}{}\u{0}{}\u{0}{}",
                reason,
                subject.as_deref().unwrap_or(""),
                from.as_deref().unwrap_or(""),
                mime
            ),
        };
        if self.actions.iter().any(|a| {
            matches!(
                a,
                Action::Vacation(_) | Action::Reject { .. } | Action::Ereject { .. }
            )
        }) {
            return Err("vacation cannot be combined with reject or another vacation".into());
        }
        self.push_action(Action::Vacation(Vacation {
            reason,
            mime,
            subject,
            from,
            addresses,
            handle,
            period_seconds,
            to: self.envelope.from.clone(),
        }))
    }

    fn include(&mut self, frame: &Frame, args: &Args<'_>) -> Result<Flow, String> {
        let name = self.expand(frame, args.string_at(0)?);
        let global = args.has("global");
        let key = format!("{}:{name}", if global { "global" } else { "personal" });
        if args.has("once") && !self.included_once.insert(key) {
            return Ok(Flow::Next);
        }
        self.includes += 1;
        if self.includes > limits::INCLUDES {
            return Err(format!("more than {} includes", limits::INCLUDES));
        }
        match self.host.include(&name, global) {
            Ok(script) => Ok(Flow::Include { script, name }),
            Err(_) if args.has("optional") => Ok(Flow::Next),
            Err(e) => Err(format!("include \"{name}\": {e}")),
        }
    }

    fn add_header(&mut self, frame: &Frame, args: &Args<'_>) -> Result<(), String> {
        let name = self.expand(frame, args.string_at(0)?);
        let value = self.expand(frame, args.string_at(1)?);
        if !valid_field_name(&name) {
            return Err(format!("addheader: invalid field name \"{name}\""));
        }
        if value.len() > 998 * 8 || value.contains(['\r', '\n']) {
            return Err("addheader: invalid value".into());
        }
        let last = args.has("last");
        let field = Field {
            name: name.clone(),
            raw: format!(" {value}"),
        };
        if self.fields.len() >= 1000 {
            return Err("addheader: too many fields".into());
        }
        if last {
            self.fields.push(field);
        } else {
            self.fields.insert(0, field);
        }
        self.header_changed = true;
        self.push_action(Action::AddHeader { name, value, last })
    }

    fn delete_header(&mut self, frame: &mut Frame, args: &Args<'_>) -> Result<(), String> {
        let name = self.expand(frame, args.string_at(0)?);
        if is_protected(&name) {
            return Err(format!("deleteheader: \"{name}\" may not be deleted"));
        }
        let patterns: Option<Vec<String>> = match args.positional.len() {
            1 => None,
            _ => Some(
                args.strings(1)?
                    .iter()
                    .map(|s| self.expand(frame, s))
                    .collect(),
            ),
        };
        let opts = MatchOpts::of(args)?;
        let index = args.number("index")?.map(|n| n as usize);
        let from_last = args.has("last");
        let positions: Vec<usize> = self
            .fields
            .iter()
            .enumerate()
            .filter(|(_, f)| f.name.eq_ignore_ascii_case(&name))
            .map(|(i, _)| i)
            .collect();
        let chosen: Vec<usize> = match index {
            Some(0) => return Err("deleteheader: :index 0".into()),
            Some(n) => {
                let pick = if from_last {
                    positions
                        .len()
                        .checked_sub(n)
                        .and_then(|i| positions.get(i))
                } else {
                    positions.get(n - 1)
                };
                pick.copied().into_iter().collect()
            }
            None => positions,
        };
        let mut remove = Vec::new();
        for i in chosen {
            let keep_it = match &patterns {
                None => false,
                Some(keys) => {
                    let value = decoded_value(&self.fields[i].raw);
                    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                    !self.matches_values(frame, opts, &[value], &keys)?
                }
            };
            if !keep_it {
                remove.push(i);
            }
        }
        for i in remove.into_iter().rev() {
            self.fields.remove(i);
            self.header_changed = true;
        }
        self.push_action(Action::DeleteHeader { name })
    }
}

/// A flag list: space-separated words, deduplicated case-insensitively; system flags
/// written as IMAP spells them.
pub(crate) fn flag_list<'a>(words: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for word in words.flat_map(|w| w.split(' ')) {
        let word = word.trim();
        if word.is_empty() {
            continue;
        }
        let canonical = match word.to_ascii_lowercase().as_str() {
            "\\seen" => "\\Seen".to_string(),
            "\\answered" => "\\Answered".to_string(),
            "\\flagged" => "\\Flagged".to_string(),
            "\\deleted" => "\\Deleted".to_string(),
            "\\draft" => "\\Draft".to_string(),
            _ => word.to_string(),
        };
        if !out.iter().any(|o| o.eq_ignore_ascii_case(&canonical)) {
            out.push(canonical);
        }
    }
    out
}

fn first_char(s: &str, f: impl Fn(char) -> String) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => f(c) + chars.as_str(),
        None => String::new(),
    }
}

fn encode_url(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Field names are printable ASCII without colon or space (RFC 5322 ftext).
fn valid_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 997
        && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// RFC 5293 section 7: these may not be removed.
fn is_protected(name: &str) -> bool {
    name.eq_ignore_ascii_case("received") || name.eq_ignore_ascii_case("auto-submitted")
}

fn plausible_address(a: &str) -> bool {
    match a.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !a
                    .chars()
                    .any(|c| c.is_control() || c == ' ' || c == '<' || c == '>' || c == ',')
        }
        None => false,
    }
}
