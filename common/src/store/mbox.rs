//! mboxrd files: `From ` separator lines, `>From ` quoting, parsing, appending and
//! compaction. Blocking functions over an already locked file.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::index::DiskState;
use super::mbox_fingerprint::Builder;
use super::mbox_stream::{Quoter, Unquoter};

/// True for lines mboxrd quotes: `^>*From `.
#[cfg(test)]
pub(super) fn is_from_like(line: &[u8]) -> bool {
    let rest = line
        .iter()
        .position(|b| *b != b'>')
        .map_or(&[][..], |i| &line[i..]);
    rest.starts_with(b"From ")
}

/// mboxrd quoting: every line matching `^>*From ` gets one more `>` (the whole-message
/// reference for [`Quoter`]).
#[cfg(test)]
pub(super) fn quote(msg: &[u8], out: &mut Vec<u8>) {
    for line in msg.split_inclusive(|b| *b == b'\n') {
        if is_from_like(line) {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
}

/// Reverses [`quote`]: every line matching `^>+From ` loses one `>`.
#[cfg(test)]
pub(super) fn unquote(q: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(q.len());
    for line in q.split_inclusive(|b| *b == b'\n') {
        if line.first() == Some(&b'>') && is_from_like(line) {
            out.extend_from_slice(&line[1..]);
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// (year, month 1-12, day) of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The separator line: `From MAILER-DAEMON Thu Jan  1 00:00:00 1970\n` (asctime, UTC).
pub(super) fn from_line(date: i64) -> String {
    let days = date.div_euclid(86_400);
    let secs = date.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "From MAILER-DAEMON {} {} {:>2} {:02}:{:02}:{:02} {}\n",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        d,
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        y
    )
}

/// The date of a `From ` line (asctime after the sender), Unix seconds (UTC assumed).
fn parse_from_date(line: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(line).ok()?;
    let toks: Vec<&str> = text.split_whitespace().collect();
    let t = toks
        .iter()
        .rposition(|t| t.len() == 8 && t.as_bytes()[2] == b':')?;
    if t < 2 {
        return None;
    }
    let month = MONTHS.iter().position(|m| *m == toks[t - 2])? as u32 + 1;
    let day: u32 = toks[t - 1].parse().ok()?;
    let year: i64 = toks.get(t + 1)?.parse().ok()?;
    let mut hms = toks[t].split(':').map(|p| p.parse::<i64>());
    let (h, mi, s) = (hms.next()?.ok()?, hms.next()?.ok()?, hms.next()?.ok()?);
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + mi * 60 + s)
}

/// One message as found in (or written to) an mbox file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Parsed {
    /// Offset of its `From ` line.
    pub from: u64,
    /// Offset and length of the quoted message (without the separating empty line).
    pub off: u64,
    pub len: u64,
    /// Size once unquoted.
    pub size: u64,
    pub fingerprint: u64,
    /// Date of the `From ` line.
    pub date: Option<i64>,
}

/// Longest `From ` line kept for its date; the rest of a longer one is only skipped.
const FROM_LINE_MAX: usize = 1024;

/// How much of an mbox is read at a time.
const CHUNK: usize = 1 << 16;

/// Parses a whole mbox: a line starting with `From ` begins a message; the empty line
/// before the next one is the separator, not part of the message.
///
/// One pass in [`CHUNK`]s with a few bytes of state: a huge mbox or a huge line costs time
/// in proportion, never memory.
pub(super) fn parse(file: &File) -> io::Result<Vec<Parsed>> {
    let mut out = Vec::new();
    let mut cur: Option<Builder> = None;
    // At the start of a line: its first bytes while they may still be `From `.
    let mut line_start: Option<Vec<u8>> = Some(Vec::with_capacity(5));
    // Inside a `From ` line: its offset and its first bytes (for the date).
    let mut from_line: Option<(u64, Vec<u8>)> = None;
    // A line that is just `\n`, held back: before a `From ` line it is the separator.
    let mut blank = false;
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    loop {
        let n = file.read_at(&mut buf, pos)?;
        if n == 0 {
            break;
        }
        let mut i = 0;
        while i < n {
            let b = buf[i];
            let at = pos + i as u64;
            if let Some((_, line)) = from_line.as_mut() {
                let end = buf[i..n].iter().position(|c| *c == b'\n');
                let take = end.map_or(n - i, |e| e + 1);
                let room = FROM_LINE_MAX.saturating_sub(line.len()).min(take);
                line.extend_from_slice(&buf[i..i + room]);
                i += take;
                if end.is_some() {
                    let (from, line) = from_line.take().unwrap_or_default();
                    cur = Some(Builder::new(from, pos + i as u64, parse_from_date(&line)));
                    line_start = Some(Vec::with_capacity(5));
                }
                continue;
            }
            if let Some(head) = line_start.as_mut() {
                i += 1;
                head.push(b);
                if head.as_slice() == b"\n" {
                    if blank && let Some(c) = cur.as_mut() {
                        c.feed(b"\n");
                    }
                    blank = true;
                    head.clear();
                } else if head.as_slice() == b"From " {
                    if let Some(c) = cur.take() {
                        out.push(c.finish());
                    }
                    blank = false;
                    line_start = None;
                    from_line = Some((at + 1 - 5, b"From ".to_vec()));
                } else if !b"From ".starts_with(head) {
                    if let Some(c) = cur.as_mut() {
                        if blank {
                            c.feed(b"\n");
                        }
                        c.feed(head);
                    }
                    blank = false;
                    line_start = (b == b'\n').then(|| Vec::with_capacity(5));
                }
                continue;
            }
            // The middle of a line: through its end.
            let end = buf[i..n].iter().position(|c| *c == b'\n');
            let take = end.map_or(n - i, |e| e + 1);
            if let Some(c) = cur.as_mut() {
                c.feed(&buf[i..i + take]);
            }
            i += take;
            if end.is_some() {
                line_start = Some(Vec::with_capacity(5));
            }
        }
        pos += n as u64;
    }
    if let Some((from, line)) = from_line.take() {
        // A last `From ` line without its line end: an empty message.
        cur = Some(Builder::new(from, pos, parse_from_date(&line)));
    } else if let Some(head) = line_start
        && !head.is_empty()
        && let Some(c) = cur.as_mut()
    {
        if blank {
            c.feed(b"\n");
        }
        c.feed(&head);
    }
    if let Some(c) = cur.take() {
        out.push(c.finish());
    }
    Ok(out)
}

/// Size and mtime of the mbox file.
pub(super) fn state(file: &File) -> io::Result<DiskState> {
    let m = file.metadata()?;
    Ok(DiskState {
        a: m.len() as i64,
        b: m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec(),
    })
}

/// A message to append: in memory, or a header `prefix` followed by the content of a file
/// (a big delivery, copied a chunk at a time).
pub(super) enum NewMessage {
    Bytes(Vec<u8>),
    File { prefix: Vec<u8>, body: PathBuf },
}

impl NewMessage {
    /// Quotes the message into `out`, handing each filled chunk to `sink`.
    fn quote_into(
        &self,
        quoter: &mut Quoter,
        out: &mut Vec<u8>,
        mut sink: impl FnMut(&mut Vec<u8>) -> io::Result<()>,
    ) -> io::Result<()> {
        match self {
            NewMessage::Bytes(bytes) => {
                for piece in bytes.chunks(CHUNK) {
                    quoter.feed(piece, out);
                    sink(out)?;
                }
            }
            NewMessage::File { prefix, body } => {
                quoter.feed(prefix, out);
                sink(out)?;
                let mut file = File::open(body)?;
                let mut buf = vec![0u8; CHUNK];
                loop {
                    let n = match file.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    quoter.feed(&buf[..n], out);
                    sink(out)?;
                }
            }
        }
        quoter.finish(out);
        sink(out)
    }
}

/// Appends messages (with their internal dates) at the end, quoted, each followed by an
/// empty line, and fsyncs. Returns where each went; `size` is the original length.
///
/// Written as it is quoted, a chunk at a time: a 40 MB message costs a few hundred KiB.
pub(super) fn append(file: &File, msgs: &[(NewMessage, i64)]) -> io::Result<Vec<Parsed>> {
    let end = file.metadata()?.len();
    let mut at = end;
    let written = (|| {
        let mut out = Vec::with_capacity(2 * CHUNK);
        let write = |out: &mut Vec<u8>, at: &mut u64| -> io::Result<()> {
            file.write_all_at(out, *at)?;
            *at += out.len() as u64;
            out.clear();
            Ok(())
        };
        // The previous message must end with an empty line before a new `From `.
        if end > 0 {
            let mut tail = [0u8; 2];
            let n = if end >= 2 { 2 } else { 1 };
            file.read_exact_at(&mut tail[..n], end - n as u64)?;
            let tail = &tail[..n];
            if tail == b"\n\n" || (n == 1 && tail == b"\n") {
            } else if tail.ends_with(b"\n") {
                out.push(b'\n');
            } else {
                out.extend_from_slice(b"\n\n");
            }
            write(&mut out, &mut at)?;
        }
        let mut placed = Vec::with_capacity(msgs.len());
        for (msg, date) in msgs {
            let from = at;
            out.extend_from_slice(from_line(*date).as_bytes());
            write(&mut out, &mut at)?;
            let off = at;
            // Same fingerprint as `parse` will compute for this entry.
            let mut b = Builder::new(from, off, Some(*date));
            let mut quoter = Quoter::default();
            msg.quote_into(&mut quoter, &mut out, |out| {
                b.feed(out);
                write(out, &mut at)
            })?;
            let len = at - off;
            if quoter.last.is_some_and(|l| l != b'\n') {
                out.push(b'\n');
                b.feed(b"\n");
            }
            out.push(b'\n');
            write(&mut out, &mut at)?;
            let mut p = b.finish();
            p.len = len;
            p.size = quoter.taken;
            placed.push(p);
        }
        file.sync_data()?;
        Ok(placed)
    })();
    if written.is_err() {
        // Leave the file as it was: a half-written message must not stay.
        let _ = file.set_len(end);
    }
    written
}

/// The original bytes of the message at `off`/`len`.
pub(super) fn read(file: &File, off: u64, len: u64) -> io::Result<Vec<u8>> {
    read_range(file, off, len, 0..u64::MAX)
}

/// Bytes `range` of the original message at `off`/`len` (fewer past its end). Unquoted as
/// it is read, a chunk at a time, and read only up to the end of the range: a partial read
/// of a big message costs what it returns plus a chunk.
pub(super) fn read_range(
    file: &File,
    off: u64,
    len: u64,
    range: std::ops::Range<u64>,
) -> io::Result<Vec<u8>> {
    let want = range.end.saturating_sub(range.start);
    let mut result = Vec::with_capacity(want.min(len) as usize);
    let mut unquoter = Unquoter::default();
    let mut buf = vec![0u8; CHUNK.min(len as usize)];
    let mut plain = Vec::with_capacity(CHUNK);
    let mut done = 0u64; // quoted bytes read
    let mut produced = 0u64; // original bytes produced
    let keep = |plain: &mut Vec<u8>, produced: &mut u64, result: &mut Vec<u8>| {
        let start = range
            .start
            .saturating_sub(*produced)
            .min(plain.len() as u64) as usize;
        let stop = range.end.saturating_sub(*produced).min(plain.len() as u64) as usize;
        result.extend_from_slice(&plain[start..stop.max(start)]);
        *produced += plain.len() as u64;
        plain.clear();
    };
    while done < len && produced < range.end {
        let n = (len - done).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], off + done)?;
        done += n as u64;
        unquoter.feed(&buf[..n], &mut plain);
        keep(&mut plain, &mut produced, &mut result);
    }
    if done == len {
        unquoter.finish(&mut plain);
        keep(&mut plain, &mut produced, &mut result);
    }
    Ok(result)
}

/// Writes a copy of the mbox `file` at `path` without the byte ranges (sorted, disjoint
/// `(start, end)`), fsyncs it, locks it (with `lock`) and renames it over `path`, then fsyncs
/// the directory. Returns the new file.
///
/// Why a new file: rewriting in place moves every kept message, and a power loss in the
/// middle loses some of them. With the rename, the old file stays whole until the new one is
/// on disk. The cost: a reader that opened the old file keeps reading it. Our own lockers
/// check after locking that they hold the file at the path and reopen if not
/// (`lock::open_locked`); mail tools that take the dotlock before opening (procmail, mutt,
/// Postfix local) are excluded by the dotlock we hold throughout.
pub(super) fn rewrite_without(
    path: &Path,
    file: &File,
    ranges: &[(u64, u64)],
    lock: impl FnOnce(&File) -> io::Result<()>,
) -> io::Result<File> {
    use std::os::unix::fs::PermissionsExt;
    let total = file.metadata()?.len();
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "mbox".to_string(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.expunge-{:016x}", rand::random::<u64>()));
    let mut new = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    let written = (|| {
        let meta = file.metadata()?;
        new.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        let mut keep_start = 0;
        for &(start, end) in ranges.iter().chain(std::iter::once(&(total, total))) {
            copy_range(file, &mut new, keep_start, start)?;
            keep_start = end;
        }
        new.sync_all()?;
        lock(&new)?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(new)
}

fn copy_range(from: &File, to: &mut File, start: u64, end: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 16];
    let mut p = start;
    while p < end {
        let n = ((end - p) as usize).min(buf.len());
        from.read_exact_at(&mut buf[..n], p)?;
        to.write_all(&buf[..n])?;
        p += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::mbox_fingerprint::tests::tricky_messages;
    use super::*;
    use std::io::{Seek, SeekFrom};

    #[test]
    fn big_and_tricky_messages_append_parse_and_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mbox");
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .unwrap();
        let originals = tricky_messages();
        // Half from memory, half from files behind a header prefix.
        let mut msgs = Vec::new();
        for (i, m) in originals.iter().enumerate() {
            if i % 2 == 0 {
                msgs.push((NewMessage::Bytes(m.clone()), 1000 + i as i64));
            } else {
                let cut = m.len() / 3;
                let body = dir.path().join(format!("body{i}"));
                std::fs::write(&body, &m[cut..]).unwrap();
                let prefix = m[..cut].to_vec();
                msgs.push((NewMessage::File { prefix, body }, 1000 + i as i64));
            }
        }
        let placed = append(&f, &msgs[..3]).unwrap();
        let mut all = placed;
        all.extend(append(&f, &msgs[3..]).unwrap());
        let parsed = parse(&f).unwrap();
        assert_eq!(all, parsed);
        let whole = std::fs::read(&p).unwrap();
        for (m, at) in originals.iter().zip(&parsed) {
            assert_eq!(read(&f, at.off, at.len).unwrap(), *m);
            assert_eq!(at.size, m.len() as u64);
            let mut expected = Vec::new();
            quote(m, &mut expected);
            assert_eq!(
                &whole[at.off as usize..(at.off + at.len) as usize],
                expected
            );
            let n = m.len() as u64;
            for range in [
                0..10,
                n / 2..n / 2 + 3 * CHUNK as u64,
                n - 5..n + 100,
                n + 1..n + 9,
            ] {
                let got = read_range(&f, at.off, at.len, range.clone()).unwrap();
                let (s, e) = (range.start.min(n) as usize, range.end.min(n) as usize);
                assert_eq!(got, m[s..e.max(s)], "range {range:?}");
            }
        }
    }

    #[test]
    fn mboxrd_quoting_round_trips() {
        let msg = b"Subject: x\r\n\r\nFrom here\r\n>From there\r\n>>From far\r\nFrom";
        let mut q = Vec::new();
        quote(msg, &mut q);
        assert_eq!(
            q,
            b"Subject: x\r\n\r\n>From here\r\n>>From there\r\n>>>From far\r\nFrom".to_vec()
        );
        assert_eq!(unquote(&q), msg.to_vec());
    }

    #[test]
    fn from_line_dates() {
        assert_eq!(
            from_line(0),
            "From MAILER-DAEMON Thu Jan  1 00:00:00 1970\n"
        );
        assert_eq!(
            from_line(1_700_000_000),
            "From MAILER-DAEMON Tue Nov 14 22:13:20 2023\n"
        );
        assert_eq!(
            parse_from_date(b"From a@b Tue Nov 14 22:13:20 2023\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn append_then_parse_agree() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mbox");
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .unwrap();
        let m1: &[u8] = b"Subject: 1\n\nFrom me\nbody\n";
        let m2: &[u8] = b"Subject: 2\r\n\r\n>From you\r\n";
        let new = |m: &[u8], d| (NewMessage::Bytes(m.to_vec()), d);
        let placed = append(&f, &[new(m1, 100), new(m2, 200)]).unwrap();
        let parsed = parse(&f).unwrap();
        assert_eq!(placed, parsed);
        assert_eq!(read(&f, parsed[0].off, parsed[0].len).unwrap(), m1);
        assert_eq!(read(&f, parsed[1].off, parsed[1].len).unwrap(), m2);
        assert_eq!(parsed[1].size, m2.len() as u64);
        // Removing the first message keeps the second readable at its new place, in a new
        // file renamed over the old one; the old file (still open) is untouched.
        let before = std::fs::read(&p).unwrap();
        let new = rewrite_without(&p, &f, &[(parsed[0].from, parsed[1].from)], |_| Ok(())).unwrap();
        let again = parse(&new).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].fingerprint, parsed[1].fingerprint);
        assert_eq!(read(&new, again[0].off, again[0].len).unwrap(), m2);
        let at_path = std::fs::read(&p).unwrap();
        assert_eq!(at_path.len() as u64, new.metadata().unwrap().len());
        assert_eq!(at_path, before[parsed[1].from as usize..]);
        let mut old = Vec::new();
        (&f).seek(SeekFrom::Start(0)).unwrap();
        (&f).read_to_end(&mut old).unwrap();
        assert_eq!(old, before, "the old file is never written");
        // Nothing but the mbox is left in the directory.
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
