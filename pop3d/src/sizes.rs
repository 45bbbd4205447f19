//! A cache of message sizes as POP3 sends them, kept in the user's directory.
//!
//! LIST and STAT must tell the size RETR sends, with CRLF line ends (RFC 1939 section 11),
//! which differs from the stored size when a message has bare LF line ends (mbox, files
//! dropped in by other tools). Knowing it means reading the message once. A message never
//! changes under its UID, so the size is computed once per (UIDVALIDITY, UID) and kept in
//! `pop3-sizes` beside the index; a login then reads only new messages. The file is only
//! written under the maildrop lock. A missing, foreign or damaged file is simply rebuilt.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use hermod_common::store::Uid;

/// The cache file's name in the user's directory.
pub const SIZES_FILE: &str = "pop3-sizes";
const MAGIC: &str = "hermod-pop3-sizes 1";

/// Wire sizes by UID for one UIDVALIDITY of a user's INBOX.
#[derive(Debug)]
pub struct SizeCache {
    path: PathBuf,
    uidvalidity: u32,
    sizes: HashMap<Uid, u64>,
    dirty: bool,
}

impl SizeCache {
    /// Read the cache of `user_dir`; empty when absent, damaged or of another UIDVALIDITY.
    pub fn load(user_dir: &Path, uidvalidity: u32) -> SizeCache {
        let path = user_dir.join(SIZES_FILE);
        let sizes = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| parse(&text, uidvalidity))
            .unwrap_or_default();
        SizeCache {
            path,
            uidvalidity,
            sizes,
            dirty: false,
        }
    }

    pub fn get(&self, uid: Uid) -> Option<u64> {
        self.sizes.get(&uid).copied()
    }

    pub fn insert(&mut self, uid: Uid, size: u64) {
        if self.sizes.insert(uid, size) != Some(size) {
            self.dirty = true;
        }
    }

    /// Forget messages that are gone, so the file does not grow forever.
    pub fn retain(&mut self, keep: impl Fn(Uid) -> bool) {
        let before = self.sizes.len();
        self.sizes.retain(|uid, _| keep(*uid));
        if self.sizes.len() != before {
            self.dirty = true;
        }
    }

    /// Write the file if anything changed (temp file + rename: readers never see half a
    /// file). Not fsynced: losing it only costs a re-read.
    pub fn save(&mut self) -> std::io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let mut uids: Vec<(&Uid, &u64)> = self.sizes.iter().collect();
        uids.sort_unstable();
        let mut text = String::with_capacity(32 + uids.len() * 16);
        text.push_str(&format!("{MAGIC} {}\n", self.uidvalidity));
        for (uid, size) in uids {
            text.push_str(&format!("{uid} {size}\n"));
        }
        let tmp = self.path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        drop(file);
        std::fs::rename(&tmp, &self.path)?;
        self.dirty = false;
        Ok(())
    }
}

fn parse(text: &str, uidvalidity: u32) -> Option<HashMap<Uid, u64>> {
    let mut lines = text.lines();
    let header = lines.next()?;
    let v: u32 = header.strip_prefix(MAGIC)?.trim().parse().ok()?;
    if v != uidvalidity {
        return None;
    }
    let mut sizes = HashMap::new();
    for line in lines {
        let (uid, size) = line.split_once(' ')?;
        sizes.insert(uid.parse().ok()?, size.parse().ok()?);
    }
    Some(sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_sizes_come_back_for_the_same_uidvalidity_only() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cache = SizeCache::load(tmp.path(), 77);
        assert_eq!(cache.get(1), None);
        cache.insert(1, 100);
        cache.insert(5, 5000);
        cache.save().unwrap();
        let mut again = SizeCache::load(tmp.path(), 77);
        assert_eq!(again.get(1), Some(100));
        assert_eq!(again.get(5), Some(5000));
        again.retain(|uid| uid != 1);
        again.save().unwrap();
        assert_eq!(SizeCache::load(tmp.path(), 77).get(1), None);
        assert_eq!(SizeCache::load(tmp.path(), 77).get(5), Some(5000));
        // A new UIDVALIDITY means new UIDs: nothing is reused.
        assert_eq!(SizeCache::load(tmp.path(), 78).get(5), None);
    }

    #[test]
    fn damaged_file_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(SIZES_FILE), "hermod-pop3-sizes 1 7\n1 x\n").unwrap();
        assert_eq!(SizeCache::load(tmp.path(), 7).get(1), None);
        std::fs::write(tmp.path().join(SIZES_FILE), b"\xff\xfe").unwrap();
        assert_eq!(SizeCache::load(tmp.path(), 7).get(1), None);
    }
}
