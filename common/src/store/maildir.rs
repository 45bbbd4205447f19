//! Maildir++ on disk: unique names, durable writes (tmp/, fsync, rename), flag suffixes,
//! directory scans. Blocking functions: callers run them on the blocking pool.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::index::DiskState;
use super::{Flag, Flags};

/// The keyword kept as the Maildir `P` (passed/forwarded) letter.
pub(super) const FORWARDED: &str = "$Forwarded";

/// tmp/ files older than this are leftovers of a crash (Maildir spec: 36 hours).
const TMP_MAX_AGE: Duration = Duration::from_secs(36 * 3600);

/// The directory of a mailbox: INBOX is the Maildir root, folders are `.Name.Sub`.
pub(super) fn mailbox_dir(root: &Path, disk_name: Option<&str>) -> PathBuf {
    match disk_name {
        None => root.to_path_buf(),
        Some(d) => root.join(format!(".{d}")),
    }
}

fn hostname() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: buf is valid for buf.len() bytes; gethostname NUL-terminates on success.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        let raw = if rc == 0 {
            let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..end]).into_owned()
        } else {
            "localhost".to_string()
        };
        // Maildir spec: '/' and ':' in the host name are written as octal escapes.
        raw.replace('/', "\\057").replace(':', "\\072")
    })
}

/// A new unique base name (`secs.M<usec>P<pid>Q<n>R<rand>.host,S=size`), per the Maildir
/// spec's recommendations: time, pid, a process counter and randomness.
pub(super) fn new_base(size: u64) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let r: u32 = rand::random();
    format!(
        "{}.M{}P{}Q{}R{:08x}.{},S={}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        n,
        r,
        hostname(),
        size
    )
}

/// The `:2,` letters for flags (sorted, as the spec asks): D F P R S T.
pub(super) fn letters(flags: Flags, keywords: &[String]) -> String {
    let mut s = String::new();
    if flags.contains(Flag::Draft) {
        s.push('D');
    }
    if flags.contains(Flag::Flagged) {
        s.push('F');
    }
    if keywords.iter().any(|k| k.eq_ignore_ascii_case(FORWARDED)) {
        s.push('P');
    }
    if flags.contains(Flag::Answered) {
        s.push('R');
    }
    if flags.contains(Flag::Seen) {
        s.push('S');
    }
    if flags.contains(Flag::Deleted) {
        s.push('T');
    }
    s
}

/// Flags from `:2,` letters, and whether `P` was set. Unknown letters are ignored.
pub(super) fn parse_letters(info: &str) -> (Flags, bool) {
    let mut f = Flags::EMPTY;
    let mut passed = false;
    for c in info.chars() {
        match c {
            'D' => f.insert(Flag::Draft),
            'F' => f.insert(Flag::Flagged),
            'P' => passed = true,
            'R' => f.insert(Flag::Answered),
            'S' => f.insert(Flag::Seen),
            'T' => f.insert(Flag::Deleted),
            _ => {}
        }
    }
    (f, passed)
}

/// The path of a message below its mailbox dir: `new/base` or `cur/base:2,LETTERS`.
pub(super) fn rel_path(base: &str, in_cur: bool, flags: Flags, keywords: &[String]) -> String {
    if in_cur {
        format!("cur/{base}:2,{}", letters(flags, keywords))
    } else {
        format!("new/{base}")
    }
}

/// Creates `dir/tmp/base` exclusively, writes `data`, sets its mtime to the internal date if
/// one is given (so it survives an index rebuild; a delivery's is "now" anyway) and fsyncs
/// it. Returns the tmp path.
pub(super) fn write_tmp(
    dir: &Path,
    base: &str,
    data: &[u8],
    internal_date: Option<i64>,
) -> io::Result<PathBuf> {
    write_tmp_with(dir, base, internal_date, |f| f.write_all(data))
}

/// [`write_tmp`] for a message that is `prefix` then the content of the file `body`: the
/// file is copied by the kernel (`copy_file_range`) or in bounded chunks, never read whole,
/// so a big queued message costs no memory to deliver.
pub(super) fn write_tmp_from_file(
    dir: &Path,
    base: &str,
    prefix: &[u8],
    body: &mut File,
) -> io::Result<PathBuf> {
    write_tmp_with(dir, base, None, |f| {
        f.write_all(prefix)?;
        io::copy(body, f).map(|_| ())
    })
}

fn write_tmp_with(
    dir: &Path,
    base: &str,
    internal_date: Option<i64>,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<PathBuf> {
    let path = dir.join("tmp").join(base);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    let res = (|| {
        write(&mut f)?;
        if let Some(date) = internal_date.filter(|d| *d >= 0) {
            f.set_modified(UNIX_EPOCH + Duration::from_secs(date as u64))?;
        }
        f.sync_all()
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// fsync a directory, making renames and links in it durable.
pub(super) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn mtime_ns(m: &fs::Metadata) -> i64 {
    m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec()
}

/// Directory mtimes of new/ and cur/.
pub(super) fn disk_state(dir: &Path) -> io::Result<DiskState> {
    Ok(DiskState {
        a: mtime_ns(&fs::metadata(dir.join("new"))?),
        b: mtime_ns(&fs::metadata(dir.join("cur"))?),
    })
}

/// Does this file system give a directory a new mtime for every change made after someone
/// looked at it (Linux >= 6.13 "multigrain" timestamps on ext4, xfs, btrfs, tmpfs)? Then a
/// recorded mtime can be trusted at once; with coarse (jiffy) timestamps a change in the
/// same tick as our `stat` would go unseen, so recent states are re-checked later.
/// Probed three times: coarse clocks cannot pass all three by luck.
pub(super) fn fine_grained_mtimes(parent: &Path) -> bool {
    let probe = parent.join(format!(
        ".hermod-mtime-probe.{:016x}",
        rand::random::<u64>()
    ));
    let res = (|| -> io::Result<bool> {
        fs::create_dir(&probe)?;
        let mut fine = true;
        for i in 0..3 {
            let before = mtime_ns(&fs::metadata(&probe)?);
            File::create(probe.join(i.to_string()))?;
            fine &= mtime_ns(&fs::metadata(&probe)?) != before;
        }
        Ok(fine)
    })();
    let _ = fs::remove_dir_all(&probe);
    res.unwrap_or(false)
}

/// The newest mtime in a state, ns.
pub(super) fn newest(s: DiskState) -> i64 {
    s.a.max(s.b)
}

/// A message file found by a scan.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub base: String,
    pub in_cur: bool,
    pub flags: Flags,
    pub passed: bool,
    pub file_name: String,
}

fn parse_entry(name: &str, in_cur: bool) -> Option<Entry> {
    if name.starts_with('.') {
        return None;
    }
    let (base, flags, passed) = match name.split_once(":2,") {
        Some((b, info)) => {
            let (f, p) = parse_letters(info);
            (b, f, p)
        }
        None => (name, Flags::EMPTY, false),
    };
    Some(Entry {
        base: base.to_string(),
        in_cur,
        flags,
        passed,
        file_name: name.to_string(),
    })
}

/// Scans new/ and cur/ (state first, so a change during the scan shows as a new state).
/// A base in both (a MUA crashed mid-rename) counts once, from cur/.
pub(super) fn scan(dir: &Path) -> io::Result<(DiskState, Vec<Entry>)> {
    let state = disk_state(dir)?;
    let mut by_base: std::collections::HashMap<String, Entry> = std::collections::HashMap::new();
    for (sub, in_cur) in [("new", false), ("cur", true)] {
        for de in fs::read_dir(dir.join(sub))? {
            let de = de?;
            let Ok(name) = de.file_name().into_string() else {
                continue;
            };
            if let Some(e) = parse_entry(&name, in_cur) {
                by_base.insert(e.base.clone(), e);
            }
        }
    }
    Ok((state, by_base.into_values().collect()))
}

/// Size and mtime (secs) of a message file.
pub(super) fn stat_file(path: &Path) -> io::Result<(u64, i64)> {
    let m = fs::metadata(path)?;
    Ok((m.len(), m.mtime()))
}

/// Finds a message whose name no longer matches the index (renamed by another tool).
pub(super) fn locate(dir: &Path, base: &str) -> io::Result<Option<PathBuf>> {
    let with_info = format!("{base}:2,");
    for sub in ["cur", "new"] {
        for de in fs::read_dir(dir.join(sub))? {
            let de = de?;
            let name = de.file_name();
            let Some(name) = name.to_str() else { continue };
            if name == base || name.starts_with(&with_info) {
                return Ok(Some(de.path()));
            }
        }
    }
    Ok(None)
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Removes tmp/ files untouched for 36 hours (crash leftovers); errors are only logged.
pub(super) fn clean_tmp(dir: &Path) {
    clean_tmp_as_of(dir, SystemTime::now());
}

/// [`clean_tmp`] as if it were `now` (tests cannot age a file's ctime).
fn clean_tmp_as_of(dir: &Path, now: SystemTime) {
    let Ok(rd) = fs::read_dir(dir.join("tmp")) else {
        return;
    };
    let now = unix_secs(now);
    for de in rd.flatten() {
        let Ok(m) = de.metadata() else { continue };
        // The status-change time, not the mtime: `write_tmp` sets the mtime to the internal
        // date (an APPEND of a 2007 message), which would make a file being written look
        // stale to another session's cleanup and vanish before its rename.
        let old = now.saturating_sub(m.ctime()) > TMP_MAX_AGE.as_secs() as i64;
        if old
            && m.is_file()
            && let Err(e) = fs::remove_file(de.path())
        {
            tracing::warn!(path = %de.path().display(), error = %e, "cannot remove stale tmp file");
        }
    }
}

/// Creates a Maildir (`cur`, `new`, `tmp`, and `maildirfolder` for a folder), durable.
/// `AlreadyExists` if `dir` exists.
pub(super) fn create(dir: &Path, folder: bool) -> io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.mode(0o700);
    b.create(dir)?;
    for sub in ["cur", "new", "tmp"] {
        b.create(dir.join(sub))?;
    }
    if folder {
        File::create(dir.join("maildirfolder"))?;
    }
    for sub in ["cur", "new", "tmp"] {
        fsync_dir(&dir.join(sub))?;
    }
    fsync_dir(dir)?;
    if let Some(parent) = dir.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

/// Creates the INBOX Maildir if missing (the root itself).
pub(super) fn ensure_root(root: &Path) -> io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.mode(0o700).recursive(true);
    for sub in ["cur", "new", "tmp"] {
        b.create(root.join(sub))?;
    }
    Ok(())
}

/// True if `dir` looks like a Maildir (has cur/).
pub(super) fn is_maildir(dir: &Path) -> bool {
    dir.join("cur").is_dir()
}

/// Lists folder directory names (without the leading dot) in the Maildir root; also removes
/// leftovers of interrupted deletes (`..hermod-deleted.*`).
pub(super) fn list_folders(root: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for de in fs::read_dir(root)? {
        let de = de?;
        let Ok(name) = de.file_name().into_string() else {
            continue;
        };
        if name.starts_with(DELETED_PREFIX) {
            if let Err(e) = fs::remove_dir_all(de.path()) {
                tracing::warn!(path = %de.path().display(), error = %e, "cannot remove deleted folder");
            }
            continue;
        }
        let Some(rest) = name.strip_prefix('.') else {
            continue;
        };
        if rest.is_empty() || rest == "." || !de.file_type()?.is_dir() {
            continue;
        }
        if is_maildir(&de.path()) {
            out.push(rest.to_string());
        }
    }
    Ok(out)
}

/// Prefix of folders being deleted: never a valid folder name (empty first level).
const DELETED_PREFIX: &str = "..hermod-deleted.";

/// Deletes a folder: first renamed away (so it vanishes at once for everybody), then removed.
pub(super) fn delete_folder(root: &Path, dir: &Path) -> io::Result<()> {
    let r: u64 = rand::random();
    let gone = root.join(format!("{DELETED_PREFIX}{r:016x}"));
    fs::rename(dir, &gone)?;
    fsync_dir(root)?;
    fs::remove_dir_all(&gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_are_sorted_and_parse_back() {
        let mut f = Flags::EMPTY;
        for fl in [
            Flag::Seen,
            Flag::Draft,
            Flag::Deleted,
            Flag::Answered,
            Flag::Flagged,
        ] {
            f.insert(fl);
        }
        let l = letters(f, &[FORWARDED.to_string()]);
        assert_eq!(l, "DFPRST");
        assert_eq!(parse_letters(&l), (f, true));
        assert_eq!(
            rel_path("b", true, Flags::from_flags(&[Flag::Seen]), &[]),
            "cur/b:2,S"
        );
        assert_eq!(rel_path("b", false, Flags::EMPTY, &[]), "new/b");
    }

    #[test]
    fn cleanup_keeps_a_tmp_file_with_an_old_internal_date() {
        let dir = std::env::temp_dir().join(format!("hermod-tmp-{:016x}", rand::random::<u64>()));
        fs::create_dir_all(dir.join("tmp")).unwrap();
        let old_date = 1_175_000_000; // March 2007, as imaptest's APPENDs carry
        let tmp = write_tmp(&dir, &new_base(3), b"abc", Some(old_date)).unwrap();
        clean_tmp(&dir);
        let kept = tmp.exists();
        let _ = fs::remove_dir_all(&dir);
        assert!(
            kept,
            "an APPEND in progress lost its tmp file to another session's cleanup"
        );
    }

    #[test]
    fn cleanup_removes_crash_leftovers_after_36_hours() {
        let dir = std::env::temp_dir().join(format!("hermod-tmp-{:016x}", rand::random::<u64>()));
        fs::create_dir_all(dir.join("tmp")).unwrap();
        let tmp = write_tmp(&dir, &new_base(3), b"abc", None).unwrap();
        clean_tmp_as_of(&dir, SystemTime::now() + Duration::from_secs(35 * 3600));
        let kept_young = tmp.exists();
        clean_tmp_as_of(&dir, SystemTime::now() + Duration::from_secs(37 * 3600));
        let kept_old = tmp.exists();
        let _ = fs::remove_dir_all(&dir);
        assert!(kept_young && !kept_old, "{kept_young} {kept_old}");
    }

    #[test]
    fn unique_names_differ_and_carry_size() {
        let a = new_base(5);
        let b = new_base(5);
        assert_ne!(a, b);
        assert!(a.ends_with(",S=5"));
        assert!(!a.contains('/') && !a.contains(':'));
    }
}
