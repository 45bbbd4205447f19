//! FETCH BINARY[section]<partial>, BINARY.PEEK and BINARY.SIZE (RFC 3516 sections 4.1-4.3):
//! part contents with the transfer encoding undone, sent as a literal8 when they hold NUL.
//! The decoding is in `mime::binary`; `fetch` calls here for these items.

use imap_codec::imap_types::fetch::MessageDataItemName;

use crate::mime::{self, Entity, binary, section};
use crate::session::Reply;
use crate::wire;

/// Whether an item is one of BINARY's.
pub(super) fn is_binary(item: &MessageDataItemName<'_>) -> bool {
    matches!(
        item,
        MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. }
    )
}

fn path(section: &[std::num::NonZeroU32]) -> Vec<u32> {
    section.iter().map(|n| n.get()).collect()
}

/// Before a message's FETCH line: every BINARY item of `items` can be decoded, or the
/// command fails with `NO [UNKNOWN-CTE]` (RFC 3516 section 4.3).
pub(super) fn check(
    items: &[MessageDataItemName<'_>],
    raw: &[u8],
    tree: &mut Option<Entity>,
) -> Result<(), Reply> {
    for item in items {
        let (MessageDataItemName::Binary { section, .. }
        | MessageDataItemName::BinarySize { section }) = item
        else {
            continue;
        };
        if section.is_empty() {
            continue;
        }
        let t = tree.get_or_insert_with(|| mime::parse(raw));
        if binary::decode(raw, t, &path(section)).is_err() {
            return Err(Reply::no("Unknown Content-Transfer-Encoding").code("UNKNOWN-CTE"));
        }
    }
    Ok(())
}

fn write_section(b: &mut Vec<u8>, section: &[std::num::NonZeroU32]) {
    b.push(b'[');
    for (i, n) in section.iter().enumerate() {
        if i > 0 {
            b.push(b'.');
        }
        wire::number(b, u64::from(n.get()));
    }
    b.push(b']');
}

/// Writes a BINARY or BINARY.SIZE item (after [`check`] passed for this message).
pub(super) fn write_item(
    b: &mut Vec<u8>,
    item: &MessageDataItemName<'_>,
    raw: &[u8],
    tree: &mut Option<Entity>,
) {
    let decoded = |section: &[std::num::NonZeroU32], tree: &mut Option<Entity>| {
        let t = tree.get_or_insert_with(|| mime::parse(raw));
        binary::decode(raw, t, &path(section))
            .ok()
            .flatten()
            .map(|d| d.into_owned())
    };
    match item {
        MessageDataItemName::Binary {
            section, partial, ..
        } => {
            b.extend_from_slice(b"BINARY");
            write_section(b, section);
            if let Some((offset, _)) = partial {
                b.push(b'<');
                wire::number(b, u64::from(*offset));
                b.push(b'>');
            }
            b.push(b' ');
            match decoded(section, tree) {
                Some(data) => {
                    let data = match partial {
                        Some((o, l)) => section::partial(&data, *o, l.get()),
                        None => &data,
                    };
                    if binary::needs_literal8(data) {
                        b.push(b'~');
                    }
                    wire::literal(b, data);
                }
                None => b.extend_from_slice(b"NIL"),
            }
        }
        MessageDataItemName::BinarySize { section } => {
            b.extend_from_slice(b"BINARY.SIZE");
            write_section(b, section);
            b.push(b' ');
            let size = decoded(section, tree).map_or(0, |d| d.len());
            wire::number(b, size as u64);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::Harness;

    const MIXED: &str = "From: user@domain.org\r\nMime-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGVs\r\nbG8gd29y\r\nbGQ=\r\n\
--b\r\nContent-Transfer-Encoding: base64\r\n\r\nYQBi\r\n\
--b\r\nContent-Transfer-Encoding: x-unknown\r\n\r\nzzz\r\n--b--\r\n";

    #[tokio::test]
    async fn binary_items_decode_parts() {
        let h = Harness::new().await;
        h.deliver("INBOX", MIXED).await;
        let mut s = h.selected("INBOX").await;
        let out = h
            .run(
                &mut s,
                "a FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1] BINARY.PEEK[1]<6.100>)\r\n",
            )
            .await;
        assert_eq!(
            out,
            "* 1 FETCH (BINARY.SIZE[1] 11 BINARY[1] {11}\r\nhello world BINARY[1]<6> {5}\r\nworld)\r\n\
a OK FETCH completed\r\n"
        );
        // NUL in the content: a literal8.
        let out = h.run(&mut s, "b FETCH 1 (BINARY.PEEK[2])\r\n").await;
        assert!(
            out.starts_with("* 1 FETCH (BINARY[2] ~{3}\r\na\0b)"),
            "{out:?}"
        );
        let out = h.run(&mut s, "c FETCH 1 (BINARY.PEEK[3])\r\n").await;
        assert_eq!(
            out,
            "c NO [UNKNOWN-CTE] Unknown Content-Transfer-Encoding\r\n"
        );
        let out = h
            .run(&mut s, "d FETCH 1 (BINARY.PEEK[] BINARY[9])\r\n")
            .await;
        assert!(
            out.contains(&format!("BINARY[] {{{}}}\r\n", MIXED.len())),
            "{out}"
        );
        assert!(out.contains("BINARY[9] NIL"), "{out}");
        // BINARY without PEEK sets \Seen like BODY[].
        assert!(out.contains("\\Seen"), "{out}");
    }

    #[tokio::test]
    async fn append_literal8_with_binary_part_is_stored_as_base64() {
        let h = Harness::new().await;
        let mut s = h.selected("INBOX").await;
        let msg = b"From: a@b\r\nContent-Type: application/octet-stream\r\n\
Content-Transfer-Encoding: binary\r\n\r\n\x00-\xff\r\n";
        let mut cmd = format!("a APPEND INBOX ~{{{}+}}\r\n", msg.len()).into_bytes();
        cmd.extend_from_slice(msg);
        cmd.extend_from_slice(b"\r\n");
        let out = h.run_bytes(&mut s, &cmd).await;
        assert!(out.contains("a OK [APPENDUID"), "{out}");
        let out = h
            .run(&mut s, "b FETCH 1 (BODY.PEEK[1] BINARY.SIZE[1])\r\n")
            .await;
        assert!(
            out.starts_with("* 1 FETCH (BODY[1] {10}\r\nAC3/DQo=\r\n BINARY.SIZE[1] 5)"),
            "{out:?}"
        );
        let out = h.run_bytes(&mut s, b"c FETCH 1 (BINARY.PEEK[1])\r\n").await;
        assert!(
            out.starts_with("* 1 FETCH (BINARY[1] ~{5}\r\n\0-\u{fffd}"),
            "{out:?}"
        );
    }
}
