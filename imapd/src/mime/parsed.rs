//! A message's ENVELOPE, BODY and BODYSTRUCTURE in wire form, computed once and kept in the
//! store's per-message cache, so listing a folder again does not read and parse every file.

use super::{envelope, header, structure};

/// Bumped whenever the wire form of any of the three changes: older cached values are then
/// recomputed instead of being served.
const FORMAT: u8 = 1;

/// The three parse results, each as it follows its item name in a FETCH response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub envelope: Vec<u8>,
    pub body: Vec<u8>,
    pub bodystructure: Vec<u8>,
}

impl Parsed {
    /// Parses a whole message.
    pub fn compute(raw: &[u8]) -> Parsed {
        let tree = super::parse(raw);
        let mut envelope = Vec::new();
        envelope::write(&mut envelope, &raw[..header::body_start(raw)]);
        let mut body = Vec::new();
        structure::write(&mut body, raw, &tree, false);
        let mut bodystructure = Vec::new();
        structure::write(&mut bodystructure, raw, &tree, true);
        Parsed {
            envelope,
            body,
            bodystructure,
        }
    }

    /// The cache value: a format byte, then each part with a 4-byte length before it.
    pub fn encode(&self) -> Vec<u8> {
        let parts = [&self.envelope, &self.body, &self.bodystructure];
        let mut out = Vec::with_capacity(1 + parts.iter().map(|p| p.len() + 4).sum::<usize>());
        out.push(FORMAT);
        for p in parts {
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
            out.extend_from_slice(p);
        }
        out
    }

    /// Reads a cache value; `None` for another format or damaged bytes.
    pub fn decode(value: &[u8]) -> Option<Parsed> {
        let (&format, mut rest) = value.split_first()?;
        if format != FORMAT {
            return None;
        }
        let mut next = || -> Option<Vec<u8>> {
            let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let part = rest.get(4..4 + len)?.to_vec();
            rest = &rest[4 + len..];
            Some(part)
        };
        let parsed = Parsed {
            envelope: next()?,
            body: next()?,
            bodystructure: next()?,
        };
        rest.is_empty().then_some(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"From: A <a@example.org>\r\nSubject: =?UTF-8?Q?caf=C3=A9?=\r\n\
Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n";

    #[test]
    fn round_trips_and_matches_a_fresh_parse() {
        let p = Parsed::compute(MSG);
        assert!(p.envelope.starts_with(b"(NIL \"=?UTF-8?Q?caf=C3=A9?=\""));
        assert!(p.bodystructure.starts_with(b"((\"TEXT\" \"PLAIN\""));
        assert!(
            p.body.len() < p.bodystructure.len(),
            "BODY lacks the extension data"
        );
        assert_eq!(Parsed::decode(&p.encode()), Some(p));
    }

    #[test]
    fn other_formats_and_damage_are_refused() {
        let mut v = Parsed::compute(MSG).encode();
        assert!(Parsed::decode(&v[..v.len() - 1]).is_none());
        v.push(0);
        assert!(Parsed::decode(&v).is_none());
        v.pop();
        v[0] = FORMAT + 1;
        assert!(Parsed::decode(&v).is_none());
        assert!(Parsed::decode(&[]).is_none());
    }
}
