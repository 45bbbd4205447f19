//! mboxrd files: `From ` separator lines, `>From ` quoting, parsing, appending and
//! compaction. Blocking functions over an already locked file.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use super::index::DiskState;

/// Headers other tools (mutt, Dovecot, UW) rewrite to store state; ignored when
/// recognising a message after its file was rewritten.
const VOLATILE_HEADERS: [&[u8]; 8] = [
    b"status:",
    b"x-status:",
    b"x-keywords:",
    b"x-uid:",
    b"x-imap:",
    b"x-imapbase:",
    b"content-length:",
    b"lines:",
];

/// True for lines mboxrd quotes: `^>*From `.
fn is_from_like(line: &[u8]) -> bool {
    let rest = line
        .iter()
        .position(|b| *b != b'>')
        .map_or(&[][..], |i| &line[i..]);
    rest.starts_with(b"From ")
}

/// mboxrd quoting: every line matching `^>*From ` gets one more `>`.
pub(super) fn quote(msg: &[u8], out: &mut Vec<u8>) {
    for line in msg.split_inclusive(|b| *b == b'\n') {
        if is_from_like(line) {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
}

/// Reverses [`quote`]: every line matching `^>+From ` loses one `>`.
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

/// 64-bit FNV-1a over the message lines (line ends as `\n`), skipping volatile header lines
/// and their continuations, so a message is still recognised after mutt rewrote it
/// (`Status:`, `Content-Length:`, `Lines:` added, header block with LF line ends).
#[derive(Default)]
struct Builder {
    from: u64,
    off: u64,
    len: u64,
    quoted_lines: u64,
    hash: u64,
    in_header: bool,
    skipping: bool,
    date: Option<i64>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Builder {
    fn new(from: u64, off: u64, date: Option<i64>) -> Self {
        Builder {
            from,
            off,
            hash: FNV_OFFSET,
            in_header: true,
            date,
            ..Default::default()
        }
    }

    fn feed(&mut self, line: &[u8]) {
        self.len += line.len() as u64;
        if line.first() == Some(&b'>') && is_from_like(line) {
            self.quoted_lines += 1;
        }
        if self.in_header {
            if line == b"\n" || line == b"\r\n" {
                self.in_header = false;
                self.skipping = false;
            } else if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                if self.skipping {
                    return;
                }
            } else {
                let lower: Vec<u8> = line.iter().take(16).map(u8::to_ascii_lowercase).collect();
                self.skipping = VOLATILE_HEADERS.iter().any(|h| lower.starts_with(h));
                if self.skipping {
                    return;
                }
            }
        }
        // Line ends count as "\n": mutt rewrites the header block with bare LFs.
        let text = line
            .strip_suffix(b"\n")
            .map_or(line, |l| l.strip_suffix(b"\r").unwrap_or(l));
        for b in text.iter().chain(line.ends_with(b"\n").then_some(&b'\n')) {
            self.hash = (self.hash ^ u64::from(*b)).wrapping_mul(FNV_PRIME);
        }
    }

    fn finish(self) -> Parsed {
        Parsed {
            from: self.from,
            off: self.off,
            len: self.len,
            size: self.len - self.quoted_lines,
            fingerprint: self.hash,
            date: self.date,
        }
    }
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

/// Parses a whole mbox: a line starting with `From ` begins a message; the empty line
/// before the next one is the separator, not part of the message.
pub(super) fn parse(file: &File) -> io::Result<Vec<Parsed>> {
    let mut f = file;
    f.seek(SeekFrom::Start(0))?;
    let mut r = BufReader::with_capacity(1 << 16, f);
    let mut out = Vec::new();
    let mut cur: Option<Builder> = None;
    let mut pending: Option<Vec<u8>> = None;
    let mut line = Vec::new();
    let mut pos = 0u64;
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        if line.starts_with(b"From ") {
            if let Some(mut b) = cur.take() {
                if let Some(p) = pending.take()
                    && p != b"\n"
                {
                    b.feed(&p);
                }
                out.push(b.finish());
            }
            pending = None;
            cur = Some(Builder::new(pos, pos + n as u64, parse_from_date(&line)));
        } else if let Some(b) = cur.as_mut()
            && let Some(p) = pending.replace(line.clone())
        {
            b.feed(&p);
        }
        pos += n as u64;
    }
    if let Some(mut b) = cur.take() {
        if let Some(p) = pending.take()
            && p != b"\n"
        {
            b.feed(&p);
        }
        out.push(b.finish());
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

/// Appends messages (`(bytes, internal date)`) at the end, quoted, each followed by an
/// empty line, and fsyncs. Returns where each went; `size` is the original length.
pub(super) fn append(file: &File, msgs: &[(&[u8], i64)]) -> io::Result<Vec<Parsed>> {
    let end = file.metadata()?.len();
    let mut buf = Vec::new();
    // The previous message must end with an empty line before a new `From `.
    if end > 0 {
        let mut tail = [0u8; 2];
        let n = if end >= 2 { 2 } else { 1 };
        file.read_exact_at(&mut tail[..n], end - n as u64)?;
        let tail = &tail[..n];
        if tail == b"\n\n" || (n == 1 && tail == b"\n") {
        } else if tail.ends_with(b"\n") {
            buf.push(b'\n');
        } else {
            buf.extend_from_slice(b"\n\n");
        }
    }
    let mut placed = Vec::with_capacity(msgs.len());
    for (msg, date) in msgs {
        let from = end + buf.len() as u64;
        buf.extend_from_slice(from_line(*date).as_bytes());
        let off = end + buf.len() as u64;
        let start = buf.len();
        quote(msg, &mut buf);
        let len = (buf.len() - start) as u64;
        // Same fingerprint as `parse` will compute for this entry.
        let mut b = Builder::new(from, off, Some(*date));
        for line in buf[start..].split_inclusive(|c| *c == b'\n') {
            b.feed(line);
        }
        if !msg.ends_with(b"\n") {
            buf.push(b'\n');
            b.feed(b"\n");
        }
        buf.push(b'\n');
        let mut p = b.finish();
        p.len = len;
        p.size = msg.len() as u64;
        placed.push(p);
    }
    let mut f = file;
    f.seek(SeekFrom::Start(end))?;
    if let Err(e) = f.write_all(&buf).and_then(|()| file.sync_data()) {
        // Leave the file as it was: a half-written message must not stay.
        let _ = file.set_len(end);
        return Err(e);
    }
    Ok(placed)
}

/// The original bytes of the message at `off`/`len`.
pub(super) fn read(file: &File, off: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut q = vec![0u8; len as usize];
    file.read_exact_at(&mut q, off)?;
    Ok(unquote(&q))
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
    use super::*;
    use std::io::Read;

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
        let placed = append(&f, &[(m1, 100), (m2, 200)]).unwrap();
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
