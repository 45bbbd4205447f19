//! APPEND with CATENATE (RFC 4469): a message built from TEXT literals and URLs naming
//! messages or parts of messages the user can read (RFC 5092, see [`crate::imap_url`]),
//! alone or with other messages in one MULTIAPPEND (RFC 3502).
//!
//! A URL that cannot be resolved fails the whole command with `NO [BADURL "url"]`; a
//! message larger than the literal limit with `NO [TOOBIG]`. Building stops as soon as a
//! message passes the limit, so memory stays bounded by it. The messages are then added
//! as MULTIAPPEND adds them: all or none.

use std::collections::HashMap;

use hermod_common::store::StoreError;

use crate::extended::{AppendMessage, Malformed, Token, tokenize};
use crate::imap_url;
use crate::mime::section;
use crate::session::{Reply, Session};

/// One part of a CATENATE list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatPart {
    Text(Vec<u8>),
    Url(Vec<u8>),
}

/// One message of the APPEND: flags, date, and its parts (a plain literal is one TEXT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatMessage {
    pub flags: Vec<String>,
    pub date: Option<String>,
    pub parts: Vec<CatPart>,
}

/// An APPEND in which at least one message uses CATENATE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatenateAppend {
    pub mailbox: Vec<u8>,
    pub messages: Vec<CatMessage>,
}

fn is_atom(t: &Token, name: &str) -> bool {
    matches!(t, Token::Atom(a) if a.eq_ignore_ascii_case(name.as_bytes()))
}

fn cat_parts(items: Vec<Token>) -> Result<Vec<CatPart>, Malformed> {
    let mut parts = Vec::new();
    let mut it = items.into_iter();
    while let Some(kind) = it.next() {
        let value = it.next().ok_or(Malformed("CATENATE part without value"))?;
        match value {
            Token::Literal(data) if is_atom(&kind, "TEXT") => parts.push(CatPart::Text(data)),
            Token::String(u) | Token::Atom(u) | Token::Literal(u) if is_atom(&kind, "URL") => {
                parts.push(CatPart::Url(u))
            }
            _ => return Err(Malformed("CATENATE parts are TEXT literal or URL url")),
        }
    }
    if parts.is_empty() {
        return Err(Malformed("empty CATENATE list"));
    }
    Ok(parts)
}

/// Reads an APPEND that uses CATENATE; `None` when none of its messages does.
pub fn parse(line: &[u8]) -> Option<Result<CatenateAppend, Malformed>> {
    // Cheap look first: most APPENDs never mention it (a literal may, so this only filters).
    if !line.windows(8).any(|w| w.eq_ignore_ascii_case(b"CATENATE")) {
        return None;
    }
    let toks = tokenize(line).ok()?;
    if !toks.iter().skip(3).any(|(_, t)| is_atom(t, "CATENATE")) {
        return None;
    }
    let mut it = toks.into_iter().map(|(_, t)| t).skip(2).peekable();
    let Some(mailbox) = it.next().and_then(|t| t.astring().map(<[u8]>::to_vec)) else {
        return Some(Err(Malformed("missing mailbox")));
    };
    let mut messages = Vec::new();
    while it.peek().is_some() {
        let mut msg = CatMessage {
            flags: Vec::new(),
            date: None,
            parts: Vec::new(),
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
        msg.parts = match it.next() {
            Some(Token::Literal(data)) => vec![CatPart::Text(data)],
            Some(t) if is_atom(&t, "CATENATE") => match it.next() {
                Some(Token::List(items)) => match cat_parts(items) {
                    Ok(p) => p,
                    Err(e) => return Some(Err(e)),
                },
                _ => return Some(Err(Malformed("CATENATE needs a list"))),
            },
            _ => return Some(Err(Malformed("expected a message literal or CATENATE"))),
        };
        messages.push(msg);
    }
    Some(Ok(CatenateAppend { mailbox, messages }))
}

/// `BADURL "url"` with the URL as a quoted string (its controls and 8-bit bytes dropped).
fn badurl(url: &[u8]) -> Reply {
    let mut quoted = String::from("BADURL \"");
    for &b in url.iter().take(1024) {
        match b {
            b'"' | b'\\' => {
                quoted.push('\\');
                quoted.push(b as char);
            }
            0x20..=0x7e => quoted.push(b as char),
            _ => {}
        }
    }
    quoted.push('"');
    Reply::no("Cannot use this URL").code(quoted)
}

/// A URL's mailbox name (UTF-8) as the store names it: INBOX in any case.
fn store_name(name: &str) -> String {
    if name.eq_ignore_ascii_case("INBOX") {
        return "INBOX".into();
    }
    match name.get(..6).zip(name.get(6..)) {
        Some((head, child)) if head.eq_ignore_ascii_case("INBOX/") && !child.is_empty() => {
            format!("INBOX/{child}")
        }
        _ => name.to_string(),
    }
}

impl Session {
    /// The bytes a URL names, or the reply refusing it.
    async fn resolve_url(
        &self,
        url: &[u8],
        uidvalidities: &mut HashMap<String, u32>,
    ) -> Result<Vec<u8>, Reply> {
        let (Some(user), Some(account)) = (self.user(), self.account.as_ref()) else {
            return Err(Reply::no("APPEND needs a login first"));
        };
        let parsed = imap_url::parse(url).ok_or_else(|| badurl(url))?;
        if let Some(u) = &parsed.user {
            let local = account.address.split('@').next().unwrap_or_default();
            if !u.eq_ignore_ascii_case(&account.address) && !u.eq_ignore_ascii_case(local) {
                return Err(badurl(url));
            }
        }
        let mailbox = match (&parsed.mailbox, &self.selected) {
            (Some(m), _) => store_name(m),
            (None, Some(sel)) => sel.name.clone(),
            (None, None) => return Err(badurl(url)),
        };
        if let Some(want) = parsed.uidvalidity {
            let have = match uidvalidities.get(&mailbox) {
                Some(v) => *v,
                None => {
                    let st = user.status(&mailbox).await.map_err(|_| badurl(url))?;
                    uidvalidities.insert(mailbox.clone(), st.uidvalidity);
                    st.uidvalidity
                }
            };
            if have != want {
                return Err(badurl(url));
            }
        }
        let raw = match user.read(&mailbox, parsed.uid).await {
            Ok(raw) => raw,
            Err(e @ (StoreError::Io(_) | StoreError::Index(_) | StoreError::Temporary(_))) => {
                return Err(Reply::from(e));
            }
            Err(_) => return Err(badurl(url)),
        };
        let data = match &parsed.section {
            None => raw,
            Some(text) => {
                let sec = imap_url::parse_section(text).ok_or_else(|| badurl(url))?;
                section::extract(&raw, &sec)
                    .ok_or_else(|| badurl(url))?
                    .into_owned()
            }
        };
        Ok(match parsed.partial {
            None => data,
            Some((offset, length)) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                let end = match length {
                    Some(l) => start.saturating_add(usize::try_from(l).unwrap_or(usize::MAX)),
                    None => data.len(),
                }
                .min(data.len());
                data[start..end].to_vec()
            }
        })
    }

    /// APPEND with CATENATE: builds each message, then adds them all or none.
    pub(crate) async fn catenate(&mut self, append: CatenateAppend) -> Reply {
        let name = match self.decode_name(&append.mailbox) {
            Ok(n) => n,
            Err(r) => return r,
        };
        let Some(user) = self.user() else {
            return Reply::no("APPEND needs a login first");
        };
        // The target first: a missing mailbox is TRYCREATE whatever the URLs say.
        match user.status(&name).await {
            Ok(_) => {}
            Err(StoreError::NoSuchMailbox(_)) => {
                return Reply::no("Mailbox does not exist").code("TRYCREATE");
            }
            Err(e) => return e.into(),
        }
        let max = self.shared.settings.max_literal;
        let mut uidvalidities = HashMap::new();
        let mut messages = Vec::with_capacity(append.messages.len());
        for m in append.messages {
            let mut data = Vec::new();
            for part in m.parts {
                let bytes = match part {
                    CatPart::Text(t) => t,
                    CatPart::Url(u) => match self.resolve_url(&u, &mut uidvalidities).await {
                        Ok(b) => b,
                        Err(reply) => return reply,
                    },
                };
                if (data.len() + bytes.len()) as u64 > max {
                    return Reply::no("Message too large").code("TOOBIG");
                }
                data.extend_from_slice(&bytes);
            }
            messages.push(AppendMessage {
                flags: m.flags,
                date: m.date,
                data,
            });
        }
        self.multiappend(&append.mailbox, messages).await
    }
}

#[cfg(test)]
mod tests;
