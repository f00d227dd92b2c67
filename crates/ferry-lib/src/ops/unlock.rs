//! Unlocked files: `lock` / `unlock`, and `populate` / `depopulate`, which the transfer code
//! calls when content arrives or is dropped.
//!
//! An unlocked file is staged as a pointer blob. In the work tree it is either the content
//! (populated) or the pointer text itself (content not here). Work-tree files are only ever
//! replaced whole (temp file, rename), never written in place, so a thin object that shares its
//! inode with a work-tree file is never modified by ferry.

use crate::annexed::{AnnexedFile, annexed_files};
use crate::error::{Error, IoContext, Result};
use crate::filter::pointer_for;
use crate::inodecache::{InodeCache, Stamp};
use crate::key::Key;
use crate::logs::Presence;
use crate::ops::add::{git_blob_id, set_presence};
use crate::repo::Repo;
use crate::store::{link_target, parse_pointer};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// What happened to one path.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Changed {
    #[serde(skip)]
    pub path: Vec<u8>,
    pub key: String,
    /// "unlocked", "locked", "populated", "depopulated", or why nothing was done.
    pub action: String,
    pub ok: bool,
}

impl Changed {
    fn from_result(path: Vec<u8>, key: &Key, r: Result<&'static str>) -> Changed {
        let (action, ok) = match r {
            Ok(a) => (a.to_string(), true),
            Err(e) => (e.to_string(), false),
        };
        Changed {
            path,
            key: key.to_string(),
            action,
            ok,
        }
    }
}

/// Unlocked files by key, from the index. Cached in `.git/annex/ferry/keys`, stamped with the
/// index file's size, mtime and checksum, and rebuilt whenever the index changed.
pub fn keys_index(repo: &Repo) -> Result<HashMap<Key, Vec<Vec<u8>>>> {
    let index = repo.git_dir.join("index");
    let stamp = index_stamp(&index);
    let cache = repo.annex_dir().join("ferry").join("keys");
    if let (Some(stamp), Ok(content)) = (&stamp, std::fs::read(&cache))
        && let Some(rest) = content.strip_prefix(stamp.as_bytes())
    {
        let mut map: HashMap<Key, Vec<Vec<u8>>> = HashMap::new();
        let mut fields = rest.split(|&b| b == 0);
        while let (Some(k), Some(p)) = (fields.next(), fields.next()) {
            if let Ok(k) = Key::parse(k) {
                map.entry(k).or_default().push(p.to_vec());
            }
        }
        return Ok(map);
    }
    let mut map: HashMap<Key, Vec<Vec<u8>>> = HashMap::new();
    for f in annexed_files(&repo.git, &[])?
        .into_iter()
        .filter(|f| !f.locked)
    {
        map.entry(f.key).or_default().push(f.path);
    }
    if let Some(stamp) = stamp {
        let mut out = stamp.into_bytes();
        for (k, paths) in &map {
            for p in paths {
                out.extend_from_slice(&k.to_bytes());
                out.push(0);
                out.extend_from_slice(p);
                out.push(0);
            }
        }
        if let Some(dir) = cache.parent() {
            let _ = std::fs::create_dir_all(dir);
            let tmp = dir.join(format!("keys.{}", std::process::id()));
            if std::fs::write(&tmp, &out).is_ok() {
                let _ = std::fs::rename(&tmp, &cache);
            }
        }
    }
    Ok(map)
}

fn index_stamp(index: &Path) -> Option<String> {
    let m = std::fs::metadata(index).ok()?;
    let mut f = std::fs::File::open(index).ok()?;
    use std::io::{Read, Seek, SeekFrom};
    f.seek(SeekFrom::End(-20)).ok()?;
    let mut sum = [0u8; 20];
    f.read_exact(&mut sum).ok()?;
    Some(format!(
        "{} {} {} {}\n",
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        crate::key::hex(&sum)
    ))
}

/// Whether the work-tree file at `p` is exactly the pointer for `key` (content not here).
fn is_pointer_file(p: &Path, key: &Key) -> bool {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_file() && m.len() < 32 * 1024 => {
            std::fs::read(p)
                .ok()
                .and_then(|c| parse_pointer(&c))
                .as_ref()
                == Some(key)
        }
        _ => false,
    }
}

/// Whether the work-tree file at `p` holds `key`'s content (inode cache first, else re-hash).
fn holds_content(p: &Path, key: &Key, inodes: &InodeCache) -> Result<bool> {
    let Some(stamp) = Stamp::of_path(p) else {
        return Ok(false);
    };
    if Some(stamp.size) != key.size && key.size.is_some() {
        return Ok(false);
    }
    if inodes.lookup(&stamp) == Some(key) {
        return Ok(true);
    }
    Ok(crate::hash::verify_file(key, p).ctx("reading", p)? == Some(true))
}

/// Replaces `dest` whole with a copy of `src` (or a hard link when `link`), keeping `mode`.
fn replace_with_copy(tmpdir: &Path, src: &Path, dest: &Path, mode: u32, link: bool) -> Result<()> {
    let (tmp, copied) = copy_to_temp(tmpdir, src, mode, link)?;
    if copied && let Err(e) = std::fs::File::open(&tmp).and_then(|f| f.sync_all()) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(format!("syncing {}", tmp.display()), e));
    }
    move_into_place(&tmp, dest)
}

/// A copy of `src` (or a hard link when `link`) under a temp name in `tmpdir`, with `mode`,
/// not yet flushed; the bool says whether bytes were copied.
fn copy_to_temp(
    tmpdir: &Path,
    src: &Path,
    mode: u32,
    link: bool,
) -> Result<(std::path::PathBuf, bool)> {
    let mut tmp = tempfile::Builder::new()
        .prefix("populate.")
        .tempfile_in(tmpdir)
        .ctx("creating temp file in", tmpdir)?;
    if link {
        let p = tmp.path().to_path_buf();
        drop(tmp);
        let _ = std::fs::remove_file(&p);
        std::fs::hard_link(src, &p).ctx("linking", src)?;
        return Ok((p, false));
    }
    let mut input = std::fs::File::open(src).ctx("reading", src)?;
    std::io::copy(&mut input, tmp.as_file_mut()).ctx("copying", src)?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))
        .ctx("setting mode of", tmp.path())?;
    let (_, p) = tmp
        .keep()
        .map_err(|e| Error::io("keeping temp file", e.error))?;
    Ok((p, true))
}

/// Replaces `dest` whole with `content`.
fn replace_with_bytes(tmpdir: &Path, dest: &Path, content: &[u8], mode: u32) -> Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix("pointer.")
        .tempfile_in(tmpdir)
        .ctx("creating temp file in", tmpdir)?;
    tmp.write_all(content).ctx("writing", tmp.path())?;
    put_temp(tmp, dest, mode)
}

/// Makes a fully written temp file durable, gives it `mode`, and renames it over `dest`.
fn put_temp(tmp: tempfile::NamedTempFile, dest: &Path, mode: u32) -> Result<()> {
    tmp.as_file().sync_all().ctx("syncing", tmp.path())?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))
        .ctx("setting mode of", tmp.path())?;
    let (_, p) = tmp
        .keep()
        .map_err(|e| Error::io("keeping temp file", e.error))?;
    move_into_place(&p, dest)
}

fn move_into_place(tmp: &Path, dest: &Path) -> Result<()> {
    match std::fs::rename(tmp, dest) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            // Work tree on another file system than .git: copy next to it, then rename.
            let dir = dest.parent().unwrap_or(Path::new("."));
            let local = dir.join(format!(".ferry-tmp.{}", std::process::id()));
            std::fs::copy(tmp, &local).ctx("copying to", &local)?;
            let _ = std::fs::remove_file(tmp);
            std::fs::rename(&local, dest).ctx("replacing", dest)
        }
        Err(e) => {
            let _ = std::fs::remove_file(tmp);
            Err(Error::io(format!("replacing {}", dest.display()), e))
        }
    }
}

/// Writes `key`'s content into every unmodified unlocked file that points to it and still holds
/// the pointer text. Returns the paths populated.
pub fn populate(repo: &Repo, key: &Key) -> Result<Vec<Vec<u8>>> {
    populate_many(repo, std::slice::from_ref(key))
}

/// [`populate`] for many keys at once (content that arrived in one batch): one look at the
/// keys index and the inode cache, all copies written to temp files first, flushed with one
/// `syncfs` when there are many (an `fsync` each when there are few), then renamed over the
/// pointer files, and staged with one `git update-index`. Returns the paths changed.
pub fn populate_many(repo: &Repo, keys: &[Key]) -> Result<Vec<Vec<u8>>> {
    let index = keys_index(repo)?;
    let wanted: Vec<(&Key, &Vec<Vec<u8>>)> = keys
        .iter()
        .filter_map(|k| index.get(k).map(|p| (k, p)))
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let mut inodes = InodeCache::load(&repo.annex_dir());
    let store = repo.store();
    let top = repo.work_tree()?.to_path_buf();
    let tmpdir = store.tmp_dir()?;
    let thin = repo.git.config_bool("annex.thin", false)?;
    let mut temps: Vec<(std::path::PathBuf, std::path::PathBuf, Vec<u8>, Key)> = Vec::new();
    let mut first_err = None;
    let mut copies = 0;
    for (key, paths) in wanted {
        let Some(obj) = store.find_valid(key, &inodes)? else {
            continue;
        };
        for (i, rel) in paths.iter().enumerate() {
            let work = top.join(os(rel));
            if !is_pointer_file(&work, key) {
                continue; // modified by the user, or already populated: leave it alone
            }
            let mode = std::fs::metadata(&work)
                .map(|m| m.mode() & 0o7777)
                .unwrap_or(0o644);
            match copy_to_temp(&tmpdir, &obj, mode, thin && i == 0) {
                Ok((tmp, copied)) => {
                    copies += usize::from(copied);
                    temps.push((tmp, work, rel.clone(), key.clone()));
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
    }
    // Content first, then the names: a crash never leaves a work-tree file half written.
    if copies > 4 {
        store.syncfs().ctx("syncing", &tmpdir)?;
    } else {
        for (tmp, ..) in &temps {
            std::fs::File::open(tmp)
                .and_then(|f| f.sync_all())
                .ctx("syncing", tmp)?;
        }
    }
    let mut done = Vec::new();
    let mut stamps = Vec::new();
    for (tmp, work, rel, key) in temps {
        // The user may have written the file meanwhile: only a pointer is replaced.
        if !is_pointer_file(&work, &key) {
            let _ = std::fs::remove_file(&tmp);
            continue;
        }
        match move_into_place(&tmp, &work) {
            Ok(()) => {
                if let Some(s) = Stamp::of_path(&work) {
                    stamps.push((s, key));
                }
                done.push(rel);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    inodes.record(&stamps)?;
    crate::ops::add::stage(repo, &done)?;
    match first_err {
        Some(e) if done.is_empty() => Err(e),
        _ => Ok(done),
    }
}

/// Turns every unlocked file holding `key`'s unmodified content back into the pointer text
/// (before the content is dropped). Modified files are left alone. Returns the paths changed.
pub fn depopulate(repo: &Repo, key: &Key) -> Result<Vec<Vec<u8>>> {
    let index = keys_index(repo)?;
    let Some(paths) = index.get(key) else {
        return Ok(Vec::new());
    };
    let inodes = InodeCache::load(&repo.annex_dir());
    let top = repo.work_tree()?.to_path_buf();
    let tmpdir = repo.store().tmp_dir()?;
    let mut done = Vec::new();
    for rel in paths {
        let work = top.join(os(rel));
        if !holds_content(&work, key, &inodes)? {
            continue;
        }
        let mode = std::fs::metadata(&work)
            .map(|m| m.mode() & 0o7777)
            .unwrap_or(0o644);
        replace_with_bytes(&tmpdir, &work, &pointer_for(key), mode)?;
        done.push(rel.clone());
    }
    crate::ops::add::stage(repo, &done)?;
    Ok(done)
}

/// `unlock`: locked files (symlinks) become ordinary files with their content (or the pointer
/// text when the content is not here), staged as pointers.
pub fn unlock(repo: &Repo, pathspecs: &[Vec<u8>], on: &mut dyn FnMut(&Changed)) -> Result<usize> {
    let files = annexed_files(&repo.git, pathspecs)?;
    let top = repo.work_tree()?.to_path_buf();
    let store = repo.store();
    let tmpdir = store.tmp_dir()?;
    let mut inodes = InodeCache::load(&repo.annex_dir());
    let (mut staged, mut stamps, mut failed) = (Vec::new(), Vec::new(), 0);
    for AnnexedFile { path, key, locked } in files {
        if !locked {
            continue;
        }
        let work = top.join(os(&path));
        let r = (|| -> Result<&'static str> {
            if !std::fs::symlink_metadata(&work)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false)
            {
                return Err(Error::Unsupported(
                    "the work-tree file is not the annex link; add it first".into(),
                ));
            }
            match store.find_valid(&key, &inodes)? {
                Some(obj) => {
                    replace_with_copy(&tmpdir, &obj, &work, 0o644, false)?;
                    if let Some(s) = Stamp::of_path(&work) {
                        stamps.push((s, key.clone()));
                    }
                    Ok("unlocked")
                }
                None => {
                    replace_with_bytes(&tmpdir, &work, &pointer_for(&key), 0o644)?;
                    Ok("unlocked (content not here: pointer file)")
                }
            }
        })();
        if r.is_ok() {
            staged.push((path.clone(), key.clone()));
        } else {
            failed += 1;
        }
        on(&Changed::from_result(path, &key, r));
    }
    inodes.record(&stamps)?;
    let mut info = Vec::new();
    for (path, key) in &staged {
        info.extend_from_slice(format!("100644 {}\t", git_blob_id(&pointer_for(key))).as_bytes());
        info.extend_from_slice(path);
        info.push(0);
    }
    // The pointer blobs must exist before the index names them.
    let lock = repo.branch.lock_journal()?;
    repo.branch.commit_changes(
        &lock,
        &Default::default(),
        &mut staged.iter().map(|(_, k)| pointer_for(k)),
        "update",
    )?;
    drop(lock);
    if !info.is_empty() {
        repo.git
            .run_index(["update-index", "-z", "--index-info"], &info)?;
        crate::ops::add::stage(
            repo,
            &staged.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
        )?;
    }
    Ok(failed)
}

/// `lock`: unlocked files become symlinks into the store. A file whose content was modified is
/// annexed first (new key), so no edit is lost; a pointer file becomes a (dangling) link.
pub fn lock(repo: &Repo, pathspecs: &[Vec<u8>], on: &mut dyn FnMut(&Changed)) -> Result<usize> {
    let files = annexed_files(&repo.git, pathspecs)?;
    let top = repo.work_tree()?.to_path_buf();
    let store = repo.store();
    let inodes = InodeCache::load(&repo.annex_dir());
    let backend = repo
        .git
        .config("annex.backend")?
        .and_then(|b| crate::hash::Backend::from_variety(&b))
        .unwrap_or(crate::hash::Backend::Sha256E);
    let (mut staged, mut present, mut links, mut failed) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for AnnexedFile { path, key, locked } in files {
        if locked {
            continue;
        }
        let work = top.join(os(&path));
        let r = (|| -> Result<(Key, &'static str)> {
            let md = std::fs::symlink_metadata(&work).ctx("reading", &work)?;
            if !md.is_file() {
                return Err(Error::Unsupported(
                    "not a regular file in the work tree".into(),
                ));
            }
            if is_pointer_file(&work, &key) {
                crate::ops::add::replace_with_link(
                    &store.tmp_dir()?,
                    &work,
                    &link_target(&path, &key),
                )?;
                return Ok((key.clone(), "locked (content not here)"));
            }
            if holds_content(&work, &key, &inodes)? && store.find_valid(&key, &inodes)?.is_some() {
                crate::ops::add::replace_with_link(
                    &store.tmp_dir()?,
                    &work,
                    &link_target(&path, &key),
                )?;
                return Ok((key.clone(), "locked"));
            }
            // Modified (or the store lacks the content): annex what is in the file now.
            let new = crate::ops::add::ingest_locked(&store, &top, &path, md.len(), backend)?;
            let action = if new == key {
                "locked"
            } else {
                "locked (modified content annexed as a new version)"
            };
            Ok((new, action))
        })();
        match r {
            Ok((k, action)) => {
                if store.find(&k).is_some() {
                    present.push(k.clone());
                }
                links.push(link_target(&path, &k));
                staged.push(path.clone());
                on(&Changed::from_result(path, &k, Ok(action)));
            }
            Err(e) => {
                failed += 1;
                on(&Changed::from_result(path, &key, Err(e)));
            }
        }
    }
    set_presence(
        repo,
        repo.uuid(),
        &present,
        Presence::Present,
        &mut links.into_iter(),
    )?;
    crate::ops::add::stage(repo, &staged)?;
    Ok(failed)
}
