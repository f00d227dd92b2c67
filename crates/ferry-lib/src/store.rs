//! The content store: `.git/annex/objects/<hashdir><keyFile>/<keyFile>`.
//!
//! Objects are read-only (file `0444`, key directory `0555`), as git-annex leaves them. An object
//! only ever appears at its final path whole: either as a new hard link to a file whose content
//! was just hashed (ingest of a work-tree file, no copy) or by renaming a fully written and
//! fsynced temp file (copies across file systems, and later downloads). So a crash can leave
//! stray temp files, never a half-written object.

use crate::error::{Error, IoContext, Result};
use crate::hash::{Backend, StatStamp};
use crate::key::Key;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub struct Store {
    annex_dir: PathBuf,
    bare: bool,
}

/// What happened when a file was ingested.
#[derive(Debug, PartialEq, Eq)]
pub enum Ingested {
    /// The store now has the content (new object).
    New,
    /// The store already had an object for this key.
    AlreadyPresent,
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

impl Store {
    pub fn new(annex_dir: PathBuf, bare: bool) -> Store {
        Store { annex_dir, bare }
    }

    pub fn objects_dir(&self) -> PathBuf {
        self.annex_dir.join("objects")
    }

    /// Where a new object for `key` goes (mixed hash dirs in a work-tree repo, lower when bare).
    pub fn object_path(&self, key: &Key) -> PathBuf {
        let hd = if self.bare {
            key.hash_dir_lower()
        } else {
            key.hash_dir_mixed()
        };
        self.object_path_in(key, &hd)
    }

    fn object_path_in(&self, key: &Key, hash_dir: &str) -> PathBuf {
        let kf = key.file_name();
        self.objects_dir()
            .join(hash_dir)
            .join(os(&kf))
            .join(os(&kf))
    }

    /// The object's path if the content is here (either hash layout).
    pub fn find(&self, key: &Key) -> Option<PathBuf> {
        let is_file = |p: &PathBuf| {
            fs::symlink_metadata(p)
                .map(|m| m.is_file())
                .unwrap_or(false)
        };
        // The other layout (and its md5) only when the usual one has nothing.
        type HashDir = fn(&Key) -> String;
        let (first, second): (HashDir, HashDir) = if self.bare {
            (Key::hash_dir_lower, Key::hash_dir_mixed)
        } else {
            (Key::hash_dir_mixed, Key::hash_dir_lower)
        };
        let p = self.object_path_in(key, &first(key));
        if is_file(&p) {
            return Some(p);
        }
        Some(self.object_path_in(key, &second(key))).filter(is_file)
    }

    /// Makes the object's key directory exist and be writable. The common case (a new key) is
    /// a single mkdir; parents are created only when missing.
    fn prepare_key_dir(&self, obj: &Path) -> Result<PathBuf> {
        let key_dir = obj.parent().expect("object has a dir").to_path_buf();
        match fs::create_dir(&key_dir) {
            Ok(()) => return Ok(key_dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let parent = key_dir.parent().expect("hash dir");
                fs::create_dir_all(parent).ctx("creating", parent)?;
                match fs::create_dir(&key_dir) {
                    Ok(()) => return Ok(key_dir),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(Error::io(format!("creating {}", key_dir.display()), e)),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(format!("creating {}", key_dir.display()), e)),
        }
        // It existed (frozen, from an earlier or concurrent ingest).
        thaw_dir(&key_dir)?;
        Ok(key_dir)
    }

    /// Puts the work-tree file at `path` (already hashed to `key`, with `stamp` taken before
    /// hashing) into the store *without copying*: a hard link, so until the caller replaces the
    /// work-tree file with a link, the content is reachable from both names and a crash loses
    /// nothing. Fails with [`Error::Unsupported`] on a cross-device link (caller copies instead).
    pub fn ingest_hardlink(&self, path: &Path, key: &Key, stamp: &StatStamp) -> Result<Ingested> {
        self.link_in(path, key, stamp, true)
    }

    fn link_in(
        &self,
        path: &Path,
        key: &Key,
        stamp: &StatStamp,
        freeze_file: bool,
    ) -> Result<Ingested> {
        let obj = self.object_path(key);
        if self.find(key).is_some() {
            return Ok(Ingested::AlreadyPresent);
        }
        let key_dir = self.prepare_key_dir(&obj)?;
        let mut r = fs::hard_link(path, &obj);
        if matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists)
            && self.find(key).is_none()
        {
            // Something that is not a regular file sits at the object path: clear it.
            let _ = fs::remove_file(&obj).or_else(|_| fs::remove_dir_all(&obj));
            r = fs::hard_link(path, &obj);
        } else if r.is_err() && self.find(key).is_some() {
            // A concurrent ingest of the same content won.
            freeze_dir(&key_dir);
            return Ok(Ingested::AlreadyPresent);
        }
        if let Err(e) = r {
            freeze_dir(&key_dir);
            if e.raw_os_error() == Some(libc::EXDEV)
                || e.kind() == std::io::ErrorKind::PermissionDenied
            {
                return Err(Error::Unsupported(format!(
                    "cannot hard-link {} into the store: {e}",
                    path.display()
                )));
            }
            return Err(Error::io(
                format!("linking {} into the store", path.display()),
                e,
            ));
        }
        // The name may have been replaced by another file between hashing and linking.
        let m = fs::symlink_metadata(&obj).ctx("checking", &obj)?;
        if m.ino() != stamp.ino
            || m.dev() != stamp.dev
            || StatStamp::of(&m).size != stamp.size
            || m.mtime() != stamp.mtime
            || m.mtime_nsec() != stamp.mtime_ns
        {
            let _ = fs::remove_file(&obj);
            freeze_dir(&key_dir);
            return Err(Error::Protocol(format!(
                "{} changed while it was being added; run ferry add again once it is stable",
                path.display()
            )));
        }
        if freeze_file {
            fs::set_permissions(&obj, fs::Permissions::from_mode(0o444)).ctx("freezing", &obj)?;
        }
        freeze_dir(&key_dir);
        Ok(Ingested::New)
    }

    /// Like [`Store::ingest_hardlink`] for an unlocked file in `annex.thin` mode: the work-tree
    /// file and the object share one inode, so the file keeps its permissions (it stays
    /// editable); in-place edits are caught by the inode cache ([`Store::find_valid`]).
    pub fn ingest_hardlink_thin(
        &self,
        path: &Path,
        key: &Key,
        stamp: &StatStamp,
    ) -> Result<Ingested> {
        self.link_in(path, key, stamp, false)
    }

    /// Copies `src` into the store durably (temp file, fsync, verify, rename, fsync dir).
    /// Used when a hard link is impossible. The copy is re-hashed before it becomes the object.
    pub fn ingest_copy(&self, src: &Path, key: &Key, backend: Backend) -> Result<Ingested> {
        if self.find(key).is_some() {
            return Ok(Ingested::AlreadyPresent);
        }
        let tmpdir = self.annex_dir.join("tmp");
        fs::create_dir_all(&tmpdir).ctx("creating", &tmpdir)?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(&tmpdir).ctx("creating temp file in", &tmpdir)?;
        let mut input = fs::File::open(src).ctx("reading", src)?;
        std::io::copy(&mut input, tmp.as_file_mut()).ctx("copying", src)?;
        tmp.as_file_mut().flush().ctx("writing", tmp.path())?;
        tmp.as_file().sync_all().ctx("syncing", tmp.path())?;
        let mut reread = fs::File::open(tmp.path()).ctx("reading", tmp.path())?;
        let (hex, n) = crate::hash::hash_file(backend, &mut reread, key.size.unwrap_or(0))
            .ctx("hashing", tmp.path())?;
        let want = backend.key(n, &hex, &[]);
        if Some(n) != key.size || !key.name.starts_with(&want.name) {
            return Err(Error::Protocol(format!(
                "{} changed while it was being copied into the store",
                src.display()
            )));
        }
        let obj = self.object_path(key);
        let key_dir = self.prepare_key_dir(&obj)?;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o444))
            .ctx("freezing", tmp.path())?;
        tmp.persist(&obj)
            .map_err(|e| Error::io(format!("moving into {}", obj.display()), e.error))?;
        fsync_dir(&key_dir);
        freeze_dir(&key_dir);
        Ok(Ingested::New)
    }

    /// The temp directory for content being received (`.git/annex/tmp`).
    pub fn tmp_dir(&self) -> Result<PathBuf> {
        let t = self.annex_dir.join("tmp");
        fs::create_dir_all(&t).ctx("creating", &t)?;
        Ok(t)
    }

    /// Makes a fully written temp file (in [`Store::tmp_dir`]) the object for `key`: fsync, freeze,
    /// rename into place, fsync the directory. The caller has verified its hash. If the object
    /// is already present the temp file is removed.
    pub fn ingest_temp(&self, tmp: &Path, key: &Key) -> Result<Ingested> {
        if self.find(key).is_some() {
            let _ = fs::remove_file(tmp);
            return Ok(Ingested::AlreadyPresent);
        }
        fs::File::open(tmp)
            .and_then(|f| f.sync_all())
            .ctx("syncing", tmp)?;
        fs::set_permissions(tmp, fs::Permissions::from_mode(0o444)).ctx("freezing", tmp)?;
        let obj = self.object_path(key);
        let key_dir = self.prepare_key_dir(&obj)?;
        let r = fs::rename(tmp, &obj).ctx("moving into", &obj);
        fsync_dir(&key_dir);
        freeze_dir(&key_dir);
        r?;
        Ok(Ingested::New)
    }

    /// [`Store::ingest_temp`] for many temp files at once, with two `syncfs` calls for the
    /// whole batch instead of two `fsync`s per file: the first makes every temp file's content
    /// durable before any of them appears under its object name, the second makes the renames
    /// durable. One result per item, in order. A few files are flushed one by one instead:
    /// `syncfs` also waits for every other writer's dirty data on that file system.
    pub fn ingest_temps(&self, items: &[(PathBuf, Key)]) -> Vec<Result<Ingested>> {
        if items.len() <= 4 {
            return items
                .iter()
                .map(|(tmp, key)| self.ingest_temp(tmp, key))
                .collect();
        }
        let synced = self.syncfs();
        let out = items
            .iter()
            .map(|(tmp, key)| {
                if let Err(e) = &synced {
                    let _ = fs::remove_file(tmp);
                    return Err(Error::io(
                        format!("syncing {}", tmp.display()),
                        std::io::Error::new(e.kind(), e.to_string()),
                    ));
                }
                if self.find(key).is_some() {
                    let _ = fs::remove_file(tmp);
                    return Ok(Ingested::AlreadyPresent);
                }
                fs::set_permissions(tmp, fs::Permissions::from_mode(0o444)).ctx("freezing", tmp)?;
                let obj = self.object_path(key);
                let key_dir = self.prepare_key_dir(&obj)?;
                let r = fs::rename(tmp, &obj).ctx("moving into", &obj);
                freeze_dir(&key_dir);
                r.map(|_| Ingested::New)
            })
            .collect();
        let _ = self.syncfs();
        out
    }

    /// Flushes the file system holding the store.
    pub fn syncfs(&self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let f = fs::File::open(&self.annex_dir)?;
        // SAFETY: a valid descriptor for the call's duration.
        if unsafe { libc::syncfs(f.as_raw_fd()) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// The object for `key` if present *and* still what was stored. Thin (hard-linked) objects
    /// share their inode with a work-tree file that may have been edited in place; those are
    /// checked against the inode cache and, if their stat changed, re-hashed. Content that no
    /// longer matches is quarantined and `None` is returned, so it is never served as valid.
    pub fn find_valid(
        &self,
        key: &Key,
        inodes: &crate::inodecache::InodeCache,
    ) -> Result<Option<PathBuf>> {
        let Some(obj) = self.find(key) else {
            return Ok(None);
        };
        let md = fs::metadata(&obj).ctx("checking", &obj)?;
        if md.nlink() <= 1 {
            return Ok(Some(obj));
        }
        let stamp = crate::inodecache::Stamp::of(&md);
        if inodes.matches(&stamp, key) == Some(true) {
            return Ok(Some(obj));
        }
        match crate::hash::verify_file(key, &obj).ctx("verifying", &obj)? {
            Some(false) => {
                self.quarantine(key)?;
                Ok(None)
            }
            _ => Ok(Some(obj)),
        }
    }

    /// Moves a corrupt object to `.git/annex/bad/<keyFile>`; returns where it went.
    pub fn quarantine(&self, key: &Key) -> Result<Option<PathBuf>> {
        let Some(obj) = self.find(key) else {
            return Ok(None);
        };
        let bad = self.annex_dir.join("bad");
        fs::create_dir_all(&bad).ctx("creating", &bad)?;
        let dest = bad.join(os(&key.file_name()));
        let key_dir = obj.parent().unwrap().to_path_buf();
        thaw_dir(&key_dir)?;
        let shared = fs::metadata(&obj).map(|m| m.nlink() > 1).unwrap_or(false);
        if shared {
            // A thin object: the inode is also a work-tree file, whose (edited) content belongs
            // to the user. Only the store's name for it goes; nothing is kept in bad/.
            fs::remove_file(&obj).ctx("removing", &obj)?;
        } else {
            fs::rename(&obj, &dest).ctx("moving to", &dest)?;
        }
        let _ = fs::remove_file(key_dir.join(os(&[key.file_name(), b".lck".to_vec()].concat())));
        let _ = fs::remove_dir(&key_dir);
        for up in [key_dir.parent(), key_dir.parent().and_then(Path::parent)]
            .into_iter()
            .flatten()
        {
            let _ = fs::remove_dir(up);
        }
        Ok((!shared).then_some(dest))
    }
}

fn thaw_dir(d: &Path) -> Result<()> {
    fs::set_permissions(d, fs::Permissions::from_mode(0o755)).ctx("making writable", d)
}

fn freeze_dir(d: &Path) {
    let _ = fs::set_permissions(d, fs::Permissions::from_mode(0o555));
}

fn fsync_dir(d: &Path) {
    if let Ok(f) = fs::File::open(d) {
        let _ = f.sync_all();
    }
}

/// The symlink target for an annexed file at `rel` (relative to the work-tree top), pointing
/// into the mixed-layout store at the canonical `.git` location.
pub fn link_target(rel: &[u8], key: &Key) -> Vec<u8> {
    let depth = rel.iter().filter(|&&b| b == b'/').count();
    let mut t = Vec::new();
    for _ in 0..depth {
        t.extend_from_slice(b"../");
    }
    t.extend_from_slice(b".git/annex/objects/");
    t.extend_from_slice(key.hash_dir_mixed().as_bytes());
    let kf = key.file_name();
    t.extend_from_slice(&kf);
    t.push(b'/');
    t.extend_from_slice(&kf);
    t
}

/// The key an annex symlink target or pointer file names, if it is one.
/// Accepts `…/annex/objects/…/<keyFile>` targets and `/annex/objects/<keyFile>` pointers.
pub fn parse_link_target(target: &[u8]) -> Option<Key> {
    let target = match target.iter().position(|&b| b == b'\n' || b == b'\r') {
        Some(i) => &target[..i],
        None => target,
    };
    let needle = b"annex/objects/";
    let idx = target.windows(needle.len()).position(|w| w == needle)?;
    if idx > 0 && target[idx - 1] != b'/' {
        return None;
    }
    let last = target.rsplit(|&b| b == b'/').next()?;
    if last.is_empty() {
        return None;
    }
    Key::from_file_name(last).ok()
}

/// Parses pointer-file content (an unlocked file's git blob): `/annex/objects/<key>\n`, possibly
/// with `\r\n`, no final newline, or extra lines that each contain `/annex/`. At most 32 KiB.
pub fn parse_pointer(content: &[u8]) -> Option<Key> {
    if content.len() >= 32 * 1024 || !content.starts_with(b"/annex/objects/") {
        return None;
    }
    let mut lines = content.split(|&b| b == b'\n');
    let first = lines.next()?;
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    for extra in lines {
        if !extra.is_empty() && !extra.windows(7).any(|w| w == b"/annex/") {
            return None;
        }
    }
    Key::from_file_name(&first[b"/annex/objects/".len()..]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets_are_relative_and_parse_back() {
        let k = Key::parse_str(
            "SHA256E-s12--a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447.txt",
        )
        .unwrap();
        let t = link_target(b"hello.txt", &k);
        assert_eq!(
            String::from_utf8(t.clone()).unwrap(),
            format!(".git/annex/objects/J7/0G/{k}/{k}")
        );
        assert!(link_target(b"sub/dir/f", &k).starts_with(b"../../.git/annex/objects/"));
        assert_eq!(parse_link_target(&t), Some(k.clone()));
        assert_eq!(parse_link_target(b"/etc/passwd"), None);
        assert_eq!(parse_link_target(b"../notannex/objects/x"), None);
    }

    #[test]
    fn pointer_files_parse_strictly() {
        let k = Key::parse_str("SHA256E-s3--abc.txt").unwrap();
        assert_eq!(
            parse_pointer(b"/annex/objects/SHA256E-s3--abc.txt\n"),
            Some(k.clone())
        );
        assert_eq!(
            parse_pointer(b"/annex/objects/SHA256E-s3--abc.txt\r\n"),
            Some(k.clone())
        );
        assert_eq!(
            parse_pointer(b"/annex/objects/SHA256E-s3--abc.txt"),
            Some(k.clone())
        );
        assert_eq!(
            parse_pointer(b"/annex/objects/SHA256E-s3--abc.txt\nhello\n"),
            None
        );
        assert_eq!(
            parse_pointer(b"just text /annex/objects/SHA256E-s3--abc.txt\n"),
            None
        );
    }
}
