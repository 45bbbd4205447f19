//! Sieve scripts on disk, for ManageSieve, `hermod sieve` and delivery.
//!
//! ```text
//! <data_dir>/sieve/<domain>/<localpart>/<name>.sieve   a user's scripts
//! <data_dir>/sieve/<domain>/<localpart>/.active        the active script's name (only)
//! <data_dir>/sieve/<domain>/<localpart>/.duplicate     RFC 7352 records (bounded)
//! <data_dir>/sieve/before.d/*.sieve                    admin scripts run before the user's
//! <data_dir>/sieve/after.d/*.sieve                     admin scripts run after it
//! ```
//!
//! Writes are atomic (temporary file, fsync, rename, directory fsync). Compiled scripts are
//! cached process-wide, keyed by path, modification time and size, and bounded in number.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use hashlink::LruCache;

use super::{CompileError, NamedScript, Script, compile};

/// The file extension of scripts.
const EXT: &str = "sieve";
const ACTIVE: &str = ".active";
const DUPLICATE: &str = ".duplicate";
/// Longest script name (characters).
pub const NAME_MAX: usize = 128;
/// Compiled scripts kept in memory, over all users.
const CACHE_ENTRIES: usize = 512;
/// How long the listing of `before.d`/`after.d` is trusted before it is read again.
const GLOBAL_TTL: Duration = Duration::from_secs(2);
/// Most duplicate-tracking records kept per user.
const DUPLICATE_RECORDS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum SieveStoreError {
    #[error("invalid script name")]
    InvalidName,
    #[error("invalid user name")]
    InvalidUser,
    #[error("no such script")]
    NotFound,
    #[error("a script with that name exists")]
    Exists,
    #[error("the script is active")]
    Active,
    #[error("{0}")]
    Compile(#[from] CompileError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

type Result<T> = std::result::Result<T, SieveStoreError>;

/// Where admin scripts run relative to the user's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Before,
    After,
}

impl Phase {
    fn dir(self) -> &'static str {
        match self {
            Phase::Before => "before.d",
            Phase::After => "after.d",
        }
    }
}

/// Checks a script name: 1..=128 characters, no control characters, no `/`, not starting
/// with a dot (so `.active` and temporary files can never be names).
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.chars().count() <= NAME_MAX
        && !name.starts_with('.')
        && !name
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '\\' || c == '\u{2028}' || c == '\u{2029}');
    if ok {
        Ok(())
    } else {
        Err(SieveStoreError::InvalidName)
    }
}

fn path_component(part: &str) -> Result<()> {
    let ok = !part.is_empty()
        && part != "."
        && part != ".."
        && part.len() <= 255
        && !part
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '\\');
    if ok {
        Ok(())
    } else {
        Err(SieveStoreError::InvalidUser)
    }
}

/// The scripts under `<data_dir>/sieve`. Cheap to create and clone (state is a path; the
/// compiled cache is process-wide).
#[derive(Debug, Clone)]
pub struct ScriptStore {
    root: PathBuf,
}

impl ScriptStore {
    pub fn new(data_dir: &Path) -> ScriptStore {
        ScriptStore {
            root: data_dir.join("sieve"),
        }
    }

    /// The directory of `localpart@domain`'s scripts (not created).
    pub fn user_dir(&self, localpart: &str, domain: &str) -> Result<PathBuf> {
        path_component(localpart)?;
        let domain = domain.to_ascii_lowercase();
        path_component(&domain)?;
        Ok(self.root.join(domain).join(localpart))
    }

    fn script_path(&self, localpart: &str, domain: &str, name: &str) -> Result<PathBuf> {
        validate_name(name)?;
        Ok(self
            .user_dir(localpart, domain)?
            .join(format!("{name}.{EXT}")))
    }

    /// The user's scripts, sorted by name, with whether each is the active one.
    pub fn list(&self, localpart: &str, domain: &str) -> Result<Vec<(String, bool)>> {
        let dir = self.user_dir(localpart, domain)?;
        let active = self.active(localpart, domain)?;
        let mut names = script_names(&dir)?;
        names.sort();
        Ok(names
            .into_iter()
            .map(|n| {
                let is_active = active.as_deref() == Some(n.as_str());
                (n, is_active)
            })
            .collect())
    }

    /// The source of script `name`.
    pub fn get(&self, localpart: &str, domain: &str, name: &str) -> Result<String> {
        let path = self.script_path(localpart, domain, name)?;
        match fs::read(&path) {
            Ok(bytes) => String::from_utf8(bytes)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8").into()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SieveStoreError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    /// The size in bytes of every script of the user (for quotas).
    pub fn total_size(&self, localpart: &str, domain: &str) -> Result<u64> {
        let dir = self.user_dir(localpart, domain)?;
        let mut total = 0;
        for name in script_names(&dir)? {
            if let Ok(m) = fs::metadata(dir.join(format!("{name}.{EXT}"))) {
                total += m.len();
            }
        }
        Ok(total)
    }

    /// Stores script `name` (replacing one of that name) after compiling it: a script that
    /// does not compile is refused with its error.
    pub fn put(&self, localpart: &str, domain: &str, name: &str, source: &str) -> Result<()> {
        compile(source)?;
        let path = self.script_path(localpart, domain, name)?;
        let dir = self.user_dir(localpart, domain)?;
        fs::create_dir_all(&dir)?;
        write_atomic(&dir, &path, source.as_bytes())
    }

    /// Deletes script `name`; the active script cannot be deleted (RFC 5804).
    pub fn delete(&self, localpart: &str, domain: &str, name: &str) -> Result<()> {
        let path = self.script_path(localpart, domain, name)?;
        if self.active(localpart, domain)?.as_deref() == Some(name) {
            return Err(SieveStoreError::Active);
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SieveStoreError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    /// Renames script `from` to `to` (which must not exist); the active mark follows it.
    pub fn rename(&self, localpart: &str, domain: &str, from: &str, to: &str) -> Result<()> {
        let old = self.script_path(localpart, domain, from)?;
        let new = self.script_path(localpart, domain, to)?;
        if !old.exists() {
            return Err(SieveStoreError::NotFound);
        }
        if new.exists() {
            return Err(SieveStoreError::Exists);
        }
        let was_active = self.active(localpart, domain)?.as_deref() == Some(from);
        fs::rename(&old, &new)?;
        let dir = self.user_dir(localpart, domain)?;
        sync_dir(&dir)?;
        if was_active {
            self.activate(localpart, domain, to)?;
        }
        Ok(())
    }

    /// Makes `name` the active script (it must exist).
    pub fn activate(&self, localpart: &str, domain: &str, name: &str) -> Result<()> {
        let path = self.script_path(localpart, domain, name)?;
        if !path.exists() {
            return Err(SieveStoreError::NotFound);
        }
        let dir = self.user_dir(localpart, domain)?;
        write_atomic(&dir, &dir.join(ACTIVE), name.as_bytes())
    }

    /// No active script: deliveries file as without Sieve.
    pub fn deactivate(&self, localpart: &str, domain: &str) -> Result<()> {
        let dir = self.user_dir(localpart, domain)?;
        match fs::remove_file(dir.join(ACTIVE)) {
            Ok(()) => sync_dir(&dir).map_err(Into::into),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The name of the active script, if any (one read of `.active`; no other file access).
    pub fn active(&self, localpart: &str, domain: &str) -> Result<Option<String>> {
        let dir = self.user_dir(localpart, domain)?;
        match fs::read(dir.join(ACTIVE)) {
            Ok(bytes) => {
                let name = String::from_utf8_lossy(&bytes).trim_end().to_string();
                Ok(validate_name(&name).is_ok().then_some(name))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The active script, compiled (from the cache when unchanged on disk).
    pub fn active_script(&self, localpart: &str, domain: &str) -> Result<Option<NamedScript>> {
        let Some(name) = self.active(localpart, domain)? else {
            return Ok(None);
        };
        let path = self.script_path(localpart, domain, &name)?;
        match load_compiled(&path) {
            Ok(script) => Ok(Some(NamedScript { name, script })),
            Err(SieveStoreError::Io(e)) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The user's script `name`, compiled (for `include :personal`).
    pub fn personal_script(&self, localpart: &str, domain: &str, name: &str) -> Result<Script> {
        load_compiled(&self.script_path(localpart, domain, name)?)
    }

    /// The admin script `name` (for `include :global`): `<data_dir>/sieve/global/<name>.sieve`.
    pub fn global_script(&self, name: &str) -> Result<Script> {
        validate_name(name)?;
        load_compiled(&self.root.join("global").join(format!("{name}.{EXT}")))
    }

    /// The admin scripts of `phase`, in name order, compiled. A script that does not compile
    /// is logged and skipped (the user's mail still flows).
    pub fn admin_scripts(&self, phase: Phase) -> Vec<NamedScript> {
        let dir = self.root.join(phase.dir());
        let names = global_listing(&dir);
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let path = dir.join(format!("{name}.{EXT}"));
            match load_compiled(&path) {
                Ok(script) => out.push(NamedScript {
                    name: format!("{}/{name}", phase.dir()),
                    script,
                }),
                Err(e) => tracing::error!("sieve: admin script {} is skipped: {e}", path.display()),
            }
        }
        out
    }

    /// RFC 7352: whether `id` was seen by this user's scripts within `period` seconds of
    /// `now`; records the sighting. At most [`DUPLICATE_RECORDS`] records are kept.
    pub fn duplicate(
        &self,
        localpart: &str,
        domain: &str,
        id: &str,
        period: u64,
        last: bool,
        now: i64,
    ) -> Result<bool> {
        let dir = self.user_dir(localpart, domain)?;
        let path = dir.join(DUPLICATE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        let key = hash_id(id);
        // Lines: "<key> <expiry>", oldest first.
        let mut records: Vec<(String, i64)> = text
            .lines()
            .filter_map(|l| {
                let (k, t) = l.split_once(' ')?;
                Some((k.to_string(), t.parse().ok()?))
            })
            .filter(|(_, expiry)| *expiry > now)
            .collect();
        let expiry = now.saturating_add(period.min(i64::MAX as u64) as i64);
        let seen = match records.iter().position(|(k, _)| *k == key) {
            Some(i) => {
                if last {
                    records.remove(i);
                    records.push((key, expiry));
                }
                true
            }
            None => {
                records.push((key, expiry));
                false
            }
        };
        if records.len() > DUPLICATE_RECORDS {
            let excess = records.len() - DUPLICATE_RECORDS;
            records.drain(..excess);
        }
        let mut out = String::with_capacity(records.len() * 40);
        for (k, t) in &records {
            out.push_str(&format!("{k} {t}\n"));
        }
        fs::create_dir_all(&dir)?;
        write_atomic(&dir, &path, out.as_bytes())?;
        Ok(seen)
    }
}

/// A stable, short key for a duplicate id (FNV-1a, 64 bits, twice with different seeds:
/// the id may be long and hold anything).
fn hash_id(id: &str) -> String {
    let fnv = |seed: u64| {
        id.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
}

/// The names of the `*.sieve` files in `dir` (none if it does not exist).
fn script_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        if let Some(name) = file.strip_suffix(&format!(".{EXT}"))
            && validate_name(name).is_ok()
        {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

/// The sorted names in an admin directory, re-read at most every [`GLOBAL_TTL`].
fn global_listing(dir: &Path) -> Vec<String> {
    type Listing = Vec<(PathBuf, Instant, Vec<String>)>;
    static LISTINGS: OnceLock<Mutex<Listing>> = OnceLock::new();
    let listings = LISTINGS.get_or_init(|| Mutex::new(Vec::new()));
    {
        let cached = listings.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, at, names)) = cached.iter().find(|(p, _, _)| p.as_path() == dir)
            && at.elapsed() < GLOBAL_TTL
        {
            return names.clone();
        }
    }
    let mut names = script_names(dir).unwrap_or_else(|e| {
        tracing::error!("sieve: cannot list {}: {e}", dir.display());
        Vec::new()
    });
    names.sort();
    let mut cached = listings.lock().unwrap_or_else(|e| e.into_inner());
    cached.retain(|(p, _, _)| p.as_path() != dir);
    if cached.len() >= 16 {
        cached.remove(0);
    }
    cached.push((dir.to_path_buf(), Instant::now(), names.clone()));
    names
}

type CacheKey = (PathBuf, Option<SystemTime>, u64);

fn cache() -> &'static Mutex<LruCache<CacheKey, Script>> {
    static CACHE: OnceLock<Mutex<LruCache<CacheKey, Script>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(LruCache::new(CACHE_ENTRIES)))
}

/// Compiles the script at `path`, or takes it from the cache when its modification time and
/// size are unchanged.
fn load_compiled(path: &Path) -> Result<Script> {
    let meta = fs::metadata(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            SieveStoreError::NotFound
        } else {
            e.into()
        }
    })?;
    let key = (path.to_path_buf(), meta.modified().ok(), meta.len());
    if let Some(script) = cache().lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(script.clone());
    }
    let bytes = fs::read(path)?;
    let source = String::from_utf8(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "script is not UTF-8"))?;
    let script = compile(&source)?;
    cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, script.clone());
    Ok(script)
}

/// Writes `path` atomically: a temporary file in `dir`, fsynced, renamed, `dir` fsynced.
fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(
        ".tmp-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = write_and_rename(dir, &tmp, path, bytes);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(Into::into)
}

fn write_and_rename(dir: &Path, tmp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::File::create(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(tmp, path)?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_or_hide() {
        for bad in [
            "",
            ".active",
            "../x",
            "a/b",
            "a\nb",
            "a\u{7}",
            &"x".repeat(129),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        for good in ["main", "Vacation rules", "été", &"x".repeat(128)] {
            assert!(validate_name(good).is_ok(), "{good:?}");
        }
        let store = ScriptStore::new(Path::new("/nonexistent"));
        assert!(store.user_dir("..", "example.org").is_err());
        assert!(store.user_dir("alice", "../etc").is_err());
    }

    #[test]
    fn put_activate_rename_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = ScriptStore::new(dir.path());
        let (l, d) = ("alice", "Example.org");
        assert_eq!(store.active(l, d).unwrap(), None);
        let err = store.put(l, d, "bad", "if true {").unwrap_err();
        assert!(matches!(err, SieveStoreError::Compile(_)), "{err}");
        store.put(l, d, "main", "keep;").unwrap();
        store.put(l, d, "other", "discard;").unwrap();
        store.activate(l, d, "main").unwrap();
        assert_eq!(
            store.list(l, d).unwrap(),
            vec![("main".to_string(), true), ("other".to_string(), false)]
        );
        assert!(matches!(
            store.delete(l, d, "main"),
            Err(SieveStoreError::Active)
        ));
        store.rename(l, d, "main", "renamed").unwrap();
        assert_eq!(store.active(l, d).unwrap().as_deref(), Some("renamed"));
        assert_eq!(store.get(l, d, "renamed").unwrap(), "keep;");
        assert!(store.active_script(l, d).unwrap().is_some());
        store.deactivate(l, d).unwrap();
        store.delete(l, d, "renamed").unwrap();
        assert!(matches!(
            store.get(l, d, "renamed"),
            Err(SieveStoreError::NotFound)
        ));
        assert!(
            dir.path()
                .join("sieve/example.org/alice/other.sieve")
                .exists()
        );
    }

    #[test]
    fn duplicate_records_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = ScriptStore::new(dir.path());
        let dup = |now| {
            store
                .duplicate("a", "x.org", "<id@x>", 100, false, now)
                .unwrap()
        };
        assert!(!dup(1000));
        assert!(dup(1050));
        assert!(!dup(1101));
    }
}
