//! Tests: address, header, envelope, exists, size, body, string, hasflag, date,
//! currentdate, mailboxexists, duplicate, spamtest, allof/anyof/not/true/false.

use super::args::{AddressPart, Args, MatchOpts};
use super::ast::Test;
use super::dates::{ZonedTime, parse_header_date, parse_zone};
use super::interp::{Exec, Frame};
use super::matching::{MatchType, match_one};
use super::message::{BodyTransform, addresses, body_texts, decoded_value};
use super::{commands::flag_list, limits};

/// Headers whose values are address lists (RFC 5228 2.7.4: `address` on others fails).
const ADDRESS_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "sender",
    "reply-to",
    "resent-from",
    "resent-to",
    "resent-cc",
    "resent-bcc",
    "resent-sender",
    "return-path",
    "delivered-to",
    "envelope-to",
    "x-original-to",
    "errors-to",
    "mail-followup-to",
    "mail-reply-to",
    "disposition-notification-to",
];

impl Exec<'_> {
    pub(crate) fn eval_test(&mut self, frame: &mut Frame, test: &Test) -> Result<bool, String> {
        self.step()?;
        let call = &test.call;
        match call.name.as_str() {
            "true" => return Ok(true),
            "false" => return Ok(false),
            "not" => return Ok(!self.eval_test(frame, &test.tests[0])?),
            "allof" => {
                for t in &test.tests {
                    if !self.eval_test(frame, t)? {
                        return Ok(false);
                    }
                }
                return Ok(true);
            }
            "anyof" => {
                for t in &test.tests {
                    if self.eval_test(frame, t)? {
                        return Ok(true);
                    }
                }
                return Ok(false);
            }
            _ => {}
        }
        let args = Args::of(call)?;
        match call.name.as_str() {
            "exists" => {
                let names = self.expand_all(frame, &args.strings(0)?);
                Ok(names
                    .iter()
                    .all(|n| self.fields.iter().any(|f| f.name.eq_ignore_ascii_case(n))))
            }
            "size" => {
                let size = self.message.size();
                match (args.number("over")?, args.number("under")?) {
                    (Some(n), None) => Ok(size > n),
                    (None, Some(n)) => Ok(size < n),
                    _ => Err("size needs :over or :under".into()),
                }
            }
            "header" => {
                let opts = MatchOpts::of(&args)?;
                let names = self.expand_all(frame, &args.strings(0)?);
                let keys = self.expand_all(frame, &args.strings(1)?);
                let values = self.header_values(&args, &names, |raw| vec![decoded_value(raw)])?;
                self.match_keys(frame, opts, &values, &keys)
            }
            "address" => {
                let opts = MatchOpts::of(&args)?;
                let part = AddressPart::of(&args);
                let names = self.expand_all(frame, &args.strings(0)?);
                let keys = self.expand_all(frame, &args.strings(1)?);
                let names: Vec<String> = names
                    .into_iter()
                    .filter(|n| ADDRESS_HEADERS.contains(&n.to_ascii_lowercase().as_str()))
                    .collect();
                let values = self.header_values(&args, &names, addresses)?;
                let values: Vec<String> = values.iter().filter_map(|a| part.extract(a)).collect();
                self.match_keys(frame, opts, &values, &keys)
            }
            "envelope" => {
                let opts = MatchOpts::of(&args)?;
                let part = AddressPart::of(&args);
                let which = self.expand_all(frame, &args.strings(0)?);
                let keys = self.expand_all(frame, &args.strings(1)?);
                let mut values = Vec::new();
                for w in which {
                    let address = match w.to_ascii_lowercase().as_str() {
                        "from" => Some(self.envelope.from.clone()),
                        "to" => Some(self.envelope.to.clone()),
                        "orig_to" => Some(self.envelope.orig_to.clone()),
                        "auth" => self.envelope.auth_user.clone(),
                        _ => None,
                    };
                    if let Some(a) = address {
                        // The null sender has only the empty :all part.
                        if a.is_empty() {
                            if part == AddressPart::All {
                                values.push(String::new());
                            }
                        } else if let Some(v) = part.extract(&a) {
                            values.push(v);
                        }
                    }
                }
                self.match_keys(frame, opts, &values, &keys)
            }
            "body" => {
                let opts = MatchOpts::of(&args)?;
                let keys = self.expand_all(frame, &args.strings(0)?);
                let transform = if args.has("raw") {
                    BodyTransform::Raw
                } else if let Some(types) = args.list("content")? {
                    BodyTransform::Content(types.iter().map(|s| s.to_string()).collect())
                } else {
                    BodyTransform::Text
                };
                let texts = body_texts(self.message.bytes(), self.body_start, &transform);
                let total: usize = texts.iter().map(String::len).sum();
                self.spend(total * keys.len().max(1))?;
                self.match_keys(frame, opts, &texts, &keys)
            }
            "string" => {
                let opts = MatchOpts::of(&args)?;
                let sources = self.expand_all(frame, &args.strings(0)?);
                let keys = self.expand_all(frame, &args.strings(1)?);
                // An empty string is no value for :count.
                let values: Vec<String> = if matches!(opts.match_type, MatchType::Count(_)) {
                    sources.into_iter().filter(|s| !s.is_empty()).collect()
                } else {
                    sources
                };
                self.match_keys(frame, opts, &values, &keys)
            }
            "hasflag" => {
                let opts = MatchOpts::of(&args)?;
                let (vars, keys) = match args.positional.len() {
                    1 => (None, args.strings(0)?),
                    _ => (Some(args.strings(0)?), args.strings(1)?),
                };
                let keys = self.expand_all(frame, &keys);
                let values: Vec<String> = match vars {
                    None => self.flags.clone(),
                    Some(vars) => vars
                        .iter()
                        .flat_map(|v| flag_list(self.get_var(frame, v).split(' ')))
                        .collect(),
                };
                self.match_keys(frame, opts, &values, &keys)
            }
            "date" | "currentdate" => self.date_test(frame, call.name == "date", &args),
            "mailboxexists" => {
                let names = self.expand_all(frame, &args.strings(0)?);
                Ok(names.iter().all(|n| self.host.mailbox_exists(n)))
            }
            "duplicate" => {
                let seconds = args.number("seconds")?.unwrap_or(7 * 86_400);
                let id = if let Some(u) = args.string("uniqueid")? {
                    self.expand(frame, u)
                } else {
                    let header = args.string("header")?.unwrap_or("message-id").to_string();
                    match self
                        .fields
                        .iter()
                        .find(|f| f.name.eq_ignore_ascii_case(&header))
                    {
                        Some(f) => decoded_value(&f.raw),
                        None => return Ok(false),
                    }
                };
                let handle = args
                    .string("handle")?
                    .map(|h| self.expand(frame, h))
                    .unwrap_or_default();
                let key = format!("{handle}\u{0}{id}");
                Ok(self.host.duplicate(&key, seconds, args.has("last")))
            }
            "spamtest" => {
                let opts = MatchOpts::of(&args)?;
                let keys = self.expand_all(frame, &args.strings(0)?);
                let value = spam_value(&self.fields, args.has("percent"));
                self.match_keys(frame, opts, &[value], &keys)
            }
            other => Err(format!("unknown test '{other}'")),
        }
    }

    /// The values of the named fields (in order, each through `extract`), honouring
    /// `:index n [:last]` (RFC 5260 section 6).
    fn header_values(
        &mut self,
        args: &Args<'_>,
        names: &[String],
        extract: impl Fn(&str) -> Vec<String>,
    ) -> Result<Vec<String>, String> {
        let index = args.number("index")?;
        let from_last = args.has("last");
        let mut values = Vec::new();
        for name in names {
            let raws: Vec<&str> = self
                .fields
                .iter()
                .filter(|f| f.name.eq_ignore_ascii_case(name))
                .map(|f| f.raw.as_str())
                .collect();
            let raws: Vec<&str> = match index {
                Some(0) => return Err(":index 0".into()),
                Some(n) => {
                    let n = n as usize;
                    let pick = if from_last {
                        raws.len().checked_sub(n).and_then(|i| raws.get(i))
                    } else {
                        raws.get(n - 1)
                    };
                    pick.copied().into_iter().collect()
                }
                None => raws,
            };
            for raw in raws {
                values.extend(extract(raw));
            }
        }
        let total: usize = values.iter().map(String::len).sum();
        self.spend(total)?;
        Ok(values)
    }

    fn date_test(
        &mut self,
        frame: &mut Frame,
        is_header: bool,
        args: &Args<'_>,
    ) -> Result<bool, String> {
        let opts = MatchOpts::of(args)?;
        let zone = match args.string("zone")? {
            Some(z) => match parse_zone(z) {
                Some(offset) => Some(offset),
                // An unparsable zone makes the test fail (RFC 5260 4.1).
                None => return Ok(false),
            },
            None => None,
        };
        let (time, part, keys) = if is_header {
            let header = self.expand(frame, args.string_at(0)?);
            let part = self.expand(frame, args.string_at(1)?);
            let keys = self.expand_all(frame, &args.strings(2)?);
            let values = self.header_values(args, &[header], |raw| vec![raw.to_string()])?;
            let Some(time) = values.first().and_then(|v| {
                // Received: the date follows the last ';'.
                let v = v.rsplit_once(';').map_or(v.as_str(), |(_, d)| d);
                parse_header_date(v)
            }) else {
                return Ok(false);
            };
            (time, part, keys)
        } else {
            let part = self.expand(frame, args.string_at(0)?);
            let keys = self.expand_all(frame, &args.strings(1)?);
            let time = ZonedTime {
                timestamp: self.host.now(),
                offset_minutes: 0,
            };
            (time, part, keys)
        };
        let offset = match zone {
            Some(z) => z,
            None if args.has("originalzone") => time.offset_minutes,
            // The local zone of this server: UTC.
            None => 0,
        };
        let shown = ZonedTime {
            offset_minutes: offset,
            ..time
        };
        let Some(value) = shown.part(&part) else {
            return Err(format!("unknown date part \"{part}\""));
        };
        self.match_keys(frame, opts, &[value], &keys)
    }

    fn expand_all(&mut self, frame: &Frame, strings: &[&str]) -> Vec<String> {
        strings.iter().map(|s| self.expand(frame, s)).collect()
    }

    /// Whether any value matches any key; sets the match variables on a :matches/:regex hit.
    fn match_keys(
        &mut self,
        frame: &mut Frame,
        opts: MatchOpts,
        values: &[String],
        keys: &[String],
    ) -> Result<bool, String> {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.matches_values(frame, opts, values, &keys)
    }

    pub(crate) fn matches_values(
        &mut self,
        frame: &mut Frame,
        opts: MatchOpts,
        values: &[String],
        keys: &[&str],
    ) -> Result<bool, String> {
        if let MatchType::Count(rel) = opts.match_type {
            let count = values.len().to_string();
            return Ok(keys
                .iter()
                .any(|k| rel.holds(opts.comparator.compare(&count, k))));
        }
        let want_captures = frame.script.0.has("variables")
            && matches!(opts.match_type, MatchType::Matches | MatchType::Regex);
        for value in values {
            for key in keys {
                self.spend(value.len() + key.len())?;
                self.step()?;
                let hit = match_one(opts.comparator, opts.match_type, value, key, want_captures)
                    .map_err(|e| e.0)?;
                if let Some(captures) = hit {
                    if want_captures {
                        frame.match_vars = captures
                            .into_iter()
                            .map(|c| truncate(c, limits::STRING))
                            .collect();
                    }
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// RFC 5235 spamtest value from the spam filter's header: `X-Spam-Score: 7.5` (with an
/// optional `X-Spam-Threshold`, default 5) or rspamd's `X-Spamd-Result: default: True
/// [7.50 / 15.00]`. "0" when no filter looked at the message.
fn spam_value(fields: &[super::message::Field], percent: bool) -> String {
    let get = |name: &str| {
        fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| decoded_value(&f.raw))
    };
    let (score, threshold) = if let Some(result) = get("X-Spamd-Result") {
        let Some(inside) = result.split_once('[').and_then(|(_, r)| r.split_once(']')) else {
            return "0".into();
        };
        let mut nums = inside.0.split('/').map(|s| s.trim().parse::<f64>());
        match (nums.next(), nums.next()) {
            (Some(Ok(s)), Some(Ok(t))) => (s, t),
            _ => return "0".into(),
        }
    } else if let Some(score) = get("X-Spam-Score") {
        let Ok(s) = score.split_whitespace().next().unwrap_or("").parse::<f64>() else {
            return "0".into();
        };
        let t = get("X-Spam-Threshold")
            .and_then(|t| t.parse::<f64>().ok())
            .unwrap_or(5.0);
        (s, t)
    } else {
        return "0".into();
    };
    let ratio = if threshold > 0.0 {
        (score / threshold).clamp(0.0, 1.0)
    } else {
        1.0
    };
    if percent {
        format!("{}", (ratio * 100.0).round() as u32)
    } else {
        format!("{}", 1 + (ratio * 9.0).round() as u32)
    }
}
