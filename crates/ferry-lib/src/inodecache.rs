//! Inode cache: "this inode, with this size and mtime, holds the content of that key".
//!
//! It lets the clean filter answer for an unchanged work-tree file without re-hashing it (git
//! asks again after every `update-index --refresh`, checkout or touch), and it is how a thin
//! (hard-linked) object that was edited in place through the work tree is noticed: its stat no
//! longer matches what was recorded when it was stored.
//!
//! Stored as an append-only text file, `.git/annex/ferry/inodecache`, one record a line:
//! `<dev> <ino> <size> <mtime_s> <mtime_ns> <key>`. Later lines win. Appends take an OFD lock.

use crate::error::{IoContext, Result};
use crate::key::Key;
use crate::lock::{LockKind, lock_wait};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Stamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_ns: i64,
}

impl Stamp {
    pub fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_ns: m.mtime_nsec(),
        }
    }
    pub fn of_path(p: &Path) -> Option<Stamp> {
        std::fs::symlink_metadata(p)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| Stamp::of(&m))
    }
}

pub struct InodeCache {
    path: PathBuf,
    map: HashMap<(u64, u64), (Stamp, Key)>,
}

impl InodeCache {
    pub fn load(annex_dir: &Path) -> InodeCache {
        let path = annex_dir.join("ferry").join("inodecache");
        let mut map = HashMap::new();
        if let Ok(content) = std::fs::read(&path) {
            for line in content.split(|&b| b == b'\n') {
                if let Some((stamp, key)) = parse_line(line) {
                    map.insert((stamp.dev, stamp.ino), (stamp, key));
                }
            }
        }
        InodeCache { path, map }
    }

    /// The key recorded for a file with exactly this stamp.
    pub fn lookup(&self, stamp: &Stamp) -> Option<&Key> {
        self.map
            .get(&(stamp.dev, stamp.ino))
            .filter(|(s, _)| s == stamp)
            .map(|(_, k)| k)
    }

    /// Whether the stamp recorded for this inode still matches (for objects).
    pub fn matches(&self, stamp: &Stamp, key: &Key) -> Option<bool> {
        self.map
            .get(&(stamp.dev, stamp.ino))
            .map(|(s, k)| s == stamp && k == key)
    }

    pub fn record(&mut self, entries: &[(Stamp, Key)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let dir = self.path.parent().expect("has dir");
        std::fs::create_dir_all(dir).ctx("creating", dir)?;
        let _lock = lock_wait(&dir.join("inodecache.lck"), LockKind::Exclusive)?;
        let mut buf = Vec::new();
        for (s, k) in entries {
            buf.extend_from_slice(
                format!("{} {} {} {} {} ", s.dev, s.ino, s.size, s.mtime, s.mtime_ns).as_bytes(),
            );
            buf.extend_from_slice(&k.to_bytes());
            buf.push(b'\n');
            self.map.insert((s.dev, s.ino), (*s, k.clone()));
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .ctx("opening", &self.path)?;
        f.write_all(&buf).ctx("writing", &self.path)?;
        Ok(())
    }
}

fn parse_line(line: &[u8]) -> Option<(Stamp, Key)> {
    let mut it = line.splitn(6, |&b| b == b' ');
    let mut num = || -> Option<i64> { std::str::from_utf8(it.next()?).ok()?.parse().ok() };
    let (dev, ino, size, mtime, mtime_ns) = (num()?, num()?, num()?, num()?, num()?);
    let key = Key::parse(it.next()?).ok()?;
    Some((
        Stamp {
            dev: dev as u64,
            ino: ino as u64,
            size: size as u64,
            mtime,
            mtime_ns,
        },
        key,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reload_and_stale_stamps_miss() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let s = Stamp::of_path(&f).unwrap();
        let k = Key::parse_str(
            "SHA256E-s1--2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881",
        )
        .unwrap();
        let mut c = InodeCache::load(d.path());
        c.record(&[(s, k.clone())]).unwrap();
        let c = InodeCache::load(d.path());
        assert_eq!(c.lookup(&s), Some(&k));
        let changed = Stamp { size: 2, ..s };
        assert_eq!(c.lookup(&changed), None);
        assert_eq!(c.matches(&changed, &k), Some(false));
    }
}
