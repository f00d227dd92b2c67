//! The watcher: inotify on every directory of the work tree (and on the refs other clones push
//! into), turned into batches of changed repo-relative paths for the committer.
//!
//! Rules (each one keeps a change from being lost or added half-written):
//! - a regular file is reported when it is closed after writing, not when it is created, so a
//!   file still being written waits; symlinks and hard links (no write follows) are reported
//!   when created;
//! - a new directory is watched first and then reported as a whole (the committer lists what
//!   is in it), so files written into it before its watch existed are not missed;
//! - a directory moved away loses its watches; one moved in is watched and reported;
//! - a kernel queue overflow is reported as "rescan everything";
//! - `.git` is never watched as part of the tree.

use super::inotify::{self, Event, Inotify, WatchError};
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What one read of the kernel queue amounted to.
#[derive(Debug, Default)]
pub struct Batch {
    /// Repo-relative paths (files or directories) that changed.
    pub paths: Vec<Vec<u8>>,
    /// The kernel dropped events: everything must be looked at again.
    pub rescan: bool,
    /// A ref that others push into (or that fetch updates) changed.
    pub refs: bool,
    /// `.git/config` was rewritten.
    pub config: bool,
    /// Local remotes whose branches moved (name → git directory): another clone pushed there.
    pub remotes: std::collections::BTreeMap<String, PathBuf>,
    /// This repository's git-annex branch moved (a merge, a commit of location changes, a
    /// `git annex` or `ferry` command run by hand): content plans may have changed.
    pub annex: bool,
}

pub struct Watcher {
    ino: Inotify,
    top: PathBuf,
    git_dir: PathBuf,
    /// Work-tree directories: watch descriptor → repo-relative path ("" is the top).
    dirs: HashMap<i32, Vec<u8>>,
    /// Ref directories: watch descriptor → absolute path.
    ref_dirs: HashMap<i32, PathBuf>,
    /// Branch directories of remotes that are local paths: watch descriptor → remote name.
    remote_dirs: HashMap<i32, (String, PathBuf)>,
    /// The watched remotes' git directories, by name.
    remote_git_dirs: HashMap<String, PathBuf>,
    /// The watch for the git directory itself (for `packed-refs`).
    git_wd: Option<i32>,
    /// Set when the watch limit was hit: some directories are not watched.
    pub limited: bool,
    buf: Vec<u8>,
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
        p.extend_from_slice(dir);
        p.push(b'/');
        p.extend_from_slice(name);
        p
    }
}

fn under(path: &[u8], dir: &[u8]) -> bool {
    dir.is_empty()
        || path == dir
        || (path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/')
}

impl Watcher {
    pub fn new(top: &Path, git_dir: &Path) -> std::io::Result<Watcher> {
        Ok(Watcher {
            ino: Inotify::new()?,
            top: top.to_path_buf(),
            git_dir: git_dir.to_path_buf(),
            dirs: HashMap::new(),
            ref_dirs: HashMap::new(),
            remote_dirs: HashMap::new(),
            remote_git_dirs: HashMap::new(),
            git_wd: None,
            limited: false,
            buf: vec![0u8; 256 * 1024],
        })
    }

    pub fn watched_dirs(&self) -> usize {
        self.dirs.len()
    }

    pub fn raw_fd(&self) -> i32 {
        self.ino.raw_fd()
    }

    /// Watches `rel` and every directory below it (not `.git`). Returns false when the watch
    /// limit stopped it.
    pub fn watch_tree(&mut self, rel: &[u8]) -> bool {
        let mut stack = vec![rel.to_vec()];
        while let Some(d) = stack.pop() {
            let abs = self.top.join(std::ffi::OsStr::from_bytes(&d));
            match self.ino.add_watch(&abs, inotify::TREE_MASK) {
                Ok(wd) => {
                    self.dirs.insert(wd, d.clone());
                }
                Err(WatchError::Limit) => {
                    self.limited = true;
                    return false;
                }
                Err(WatchError::Gone) => continue,
                Err(WatchError::Other(_)) => continue, // e.g. permission denied: skipped
            }
            let Ok(rd) = std::fs::read_dir(&abs) else {
                continue;
            };
            for ent in rd.flatten() {
                let name = ent.file_name();
                if name.as_bytes() == b".git" {
                    continue;
                }
                if ent.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(join(&d, name.as_bytes()));
                }
            }
        }
        true
    }

    /// Watches the places other clones push into and fetches update: `refs/heads` (and its
    /// `synced/`), `refs/remotes/**`, `refs/synced/**` (the git-annex assistant's tagged
    /// pushes), and the git directory for `packed-refs`.
    pub fn watch_refs(&mut self) {
        let heads = self.git_dir.join("refs/heads");
        let _ = std::fs::create_dir_all(heads.join("synced"));
        if let Ok(wd) = self
            .ino
            .add_watch(&self.git_dir, inotify::IN_MOVED_TO | inotify::IN_ONLYDIR)
        {
            self.git_wd = Some(wd);
        }
        self.watch_ref_tree(heads);
        for others in ["refs/remotes", "refs/synced"] {
            let _ = std::fs::create_dir_all(self.git_dir.join(others));
            self.watch_ref_tree(self.git_dir.join(others));
        }
    }

    /// Watches a ref directory and every directory below it.
    fn watch_ref_tree(&mut self, root: PathBuf) {
        for (wd, d) in self.add_ref_watches(root) {
            self.ref_dirs.insert(wd, d);
        }
    }

    fn add_ref_watches(&self, root: PathBuf) -> Vec<(i32, PathBuf)> {
        const REF_MASK: u32 = inotify::IN_CREATE
            | inotify::IN_MOVED_TO
            | inotify::IN_DELETE
            | inotify::IN_CLOSE_WRITE
            | inotify::IN_ONLYDIR;
        let mut added = Vec::new();
        let mut stack = vec![root];
        while let Some(d) = stack.pop() {
            if let Ok(wd) = self.ino.add_watch(&d, REF_MASK) {
                added.push((wd, d.clone()));
            }
            if let Ok(rd) = std::fs::read_dir(&d) {
                for ent in rd.flatten() {
                    if ent.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(ent.path());
                    }
                }
            }
        }
        added
    }

    /// Watches the branches of the remotes that are local paths (a bare repository on a
    /// server share or a drive, another clone), given as (name, git directory): a push there
    /// by another clone is fetched and merged here at once, not at this clone's next push.
    /// Replaces the previous set (git config changed).
    pub fn watch_remotes(&mut self, remotes: &[(String, PathBuf)]) {
        for (wd, _) in std::mem::take(&mut self.remote_dirs) {
            self.ino.rm_watch(wd);
        }
        self.remote_git_dirs = remotes.iter().cloned().collect();
        for (name, git_dir) in remotes {
            for (wd, d) in self.add_ref_watches(git_dir.join("refs/heads")) {
                self.remote_dirs.insert(wd, (name.clone(), d));
            }
        }
    }

    /// Blocks until the kernel has events, and turns them into a batch.
    pub fn next_batch(&mut self) -> std::io::Result<Batch> {
        let mut buf = std::mem::take(&mut self.buf);
        let events = self.ino.read(&mut buf);
        self.buf = buf;
        let mut batch = Batch::default();
        for ev in events? {
            self.handle(ev, &mut batch);
        }
        Ok(batch)
    }

    fn handle(&mut self, ev: Event, batch: &mut Batch) {
        use inotify::*;
        if ev.mask & IN_Q_OVERFLOW != 0 {
            batch.rescan = true;
            return;
        }
        if Some(ev.wd) == self.git_wd {
            match &ev.name[..] {
                b"packed-refs" => batch.refs = true,
                b"config" => batch.config = true,
                _ => {}
            }
            return;
        }
        if let Some((name, dir)) = self.remote_dirs.get(&ev.wd).cloned() {
            if ev.mask & IN_IGNORED != 0 {
                self.remote_dirs.remove(&ev.wd);
                return;
            }
            if ev.name.ends_with(b".lock") || ev.name.is_empty() {
                return;
            }
            if ev.mask & IN_ISDIR != 0 && ev.mask & (IN_CREATE | IN_MOVED_TO) != 0 {
                for (wd, d) in self.add_ref_watches(dir.join(std::ffi::OsStr::from_bytes(&ev.name)))
                {
                    self.remote_dirs.insert(wd, (name.clone(), d));
                }
            }
            let git_dir = self.remote_git_dirs.get(&name).cloned().unwrap_or_default();
            batch.remotes.insert(name, git_dir);
            return;
        }
        if let Some(dir) = self.ref_dirs.get(&ev.wd).cloned() {
            if ev.mask & IN_IGNORED != 0 {
                self.ref_dirs.remove(&ev.wd);
                return;
            }
            if ev.name.ends_with(b".lock") || ev.name.is_empty() {
                return;
            }
            if ev.mask & IN_ISDIR != 0 && ev.mask & (IN_CREATE | IN_MOVED_TO) != 0 {
                // A new remote or a new ref namespace: watch it, and look at what it holds.
                self.watch_ref_tree(dir.join(std::ffi::OsStr::from_bytes(&ev.name)));
            } else if dir == self.git_dir.join("refs/heads") {
                // This repository's own branches (its commits and merges): nothing to merge.
                // What others push arrives under `synced/`.
                batch.annex |= ev.name == b"git-annex";
                return;
            }
            batch.refs = true;
            return;
        }
        let Some(dir) = self.dirs.get(&ev.wd).cloned() else {
            return;
        };
        if ev.mask & IN_IGNORED != 0 {
            self.dirs.remove(&ev.wd);
            return;
        }
        if ev.name.is_empty() || ev.name == b".git" {
            return; // about the directory itself (its parent reports it), or a nested .git
        }
        let rel = join(&dir, &ev.name);
        if ev.mask & IN_ISDIR != 0 {
            if ev.mask & IN_MOVED_FROM != 0 {
                // Moved away (maybe out of the tree): its watches would report under the old
                // names. Drop them; if it moved within the tree, MOVED_TO watches it again.
                let gone: Vec<i32> = self
                    .dirs
                    .iter()
                    .filter(|(_, p)| under(p, &rel))
                    .map(|(wd, _)| *wd)
                    .collect();
                for wd in gone {
                    self.dirs.remove(&wd);
                    self.ino.rm_watch(wd);
                }
                batch.paths.push(rel);
            } else if ev.mask & (IN_CREATE | IN_MOVED_TO) != 0 {
                self.watch_tree(&rel);
                batch.paths.push(rel);
            } else if ev.mask & IN_DELETE != 0 {
                batch.paths.push(rel);
            }
            return;
        }
        if ev.mask & IN_CREATE != 0 {
            // A regular file is reported when closed after writing; symlinks and hard links
            // are complete when they appear.
            let abs = self.top.join(std::ffi::OsStr::from_bytes(&rel));
            match std::fs::symlink_metadata(&abs) {
                Ok(m) if m.file_type().is_symlink() || (m.is_file() && m.nlink() > 1) => {
                    batch.paths.push(rel)
                }
                _ => {}
            }
            return;
        }
        if ev.mask & (IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE | IN_ATTRIB) != 0 {
            batch.paths.push(rel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(w: &mut Watcher, want: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut got: Vec<Vec<u8>> = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !want.iter().all(|p| got.iter().any(|g| g == p)) {
            assert!(std::time::Instant::now() < deadline, "only saw {got:?}");
            let r = inotify::poll_readable(&[w.raw_fd()], Some(std::time::Duration::from_secs(5)));
            if r[0] {
                got.extend(w.next_batch().unwrap().paths);
            }
        }
        got
    }

    #[test]
    fn new_directory_with_files_written_at_once_is_reported() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join(".git")).unwrap();
        let mut w = Watcher::new(d.path(), &d.path().join(".git")).unwrap();
        assert!(w.watch_tree(b""));
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f"), b"x").unwrap();
        let got = collect(&mut w, &[b"a"]);
        assert!(got.contains(&b"a".to_vec()));
        // And the new directories are now watched.
        std::fs::write(d.path().join("a/b/g"), b"y").unwrap();
        collect(&mut w, &[b"a/b/g"]);
    }

    #[test]
    fn file_is_reported_on_close_not_on_create() {
        let d = tempfile::tempdir().unwrap();
        let mut w = Watcher::new(d.path(), &d.path().join(".git")).unwrap();
        w.watch_tree(b"");
        let f = std::fs::File::create(d.path().join("slow")).unwrap();
        // Only a create so far: nothing reported.
        let r = inotify::poll_readable(&[w.raw_fd()], Some(std::time::Duration::from_secs(5)));
        assert!(r[0]);
        assert!(w.next_batch().unwrap().paths.is_empty());
        drop(f);
        collect(&mut w, &[b"slow"]);
    }

    /// Reads batches until one matches `want`, or fails after 5 s.
    fn batch_until(w: &mut Watcher, want: impl Fn(&Batch) -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            assert!(std::time::Instant::now() < deadline, "no such batch");
            let r = inotify::poll_readable(&[w.raw_fd()], Some(std::time::Duration::from_secs(5)));
            if r[0] && want(&w.next_batch().unwrap()) {
                return;
            }
        }
    }

    #[test]
    fn pushes_config_and_own_branches_are_told_apart() {
        let d = tempfile::tempdir().unwrap();
        let git = d.path().join(".git");
        std::fs::create_dir_all(git.join("refs/heads")).unwrap();
        let mut w = Watcher::new(d.path(), &git).unwrap();
        w.watch_refs();
        // git writes a ref as <name>.lock, then renames it.
        let put = |rel: &str| {
            let p = git.join(rel);
            std::fs::write(p.with_extension("lock"), b"0\n").unwrap();
            std::fs::rename(p.with_extension("lock"), &p).unwrap();
        };
        // This repository's own commit: no merge wanted. Then a push into synced/: wanted.
        put("refs/heads/main");
        put("refs/heads/synced/main");
        batch_until(&mut w, |b| b.refs);
        // A tagged push (a new directory per pushing clone): wanted.
        std::fs::create_dir_all(git.join("refs/synced/some-uuid")).unwrap();
        put("refs/synced/some-uuid/main");
        batch_until(&mut w, |b| b.refs);
        // Only the push counts: a batch with just the own branch says nothing of refs.
        put("refs/heads/main");
        put("config");
        batch_until(&mut w, |b| {
            assert!(!b.refs, "an own branch moving is not a push");
            b.config
        });
    }

    #[test]
    fn queue_overflow_asks_for_a_rescan() {
        let d = tempfile::tempdir().unwrap();
        let mut w = Watcher::new(d.path(), &d.path().join(".git")).unwrap();
        let mut b = Batch::default();
        w.handle(
            Event {
                wd: -1,
                mask: inotify::IN_Q_OVERFLOW,
                cookie: 0,
                name: Vec::new(),
            },
            &mut b,
        );
        assert!(b.rescan);
    }

    #[test]
    fn moved_directory_is_watched_under_its_new_name() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("x/y")).unwrap();
        let mut w = Watcher::new(d.path(), &d.path().join(".git")).unwrap();
        w.watch_tree(b"");
        std::fs::rename(d.path().join("x"), d.path().join("z")).unwrap();
        collect(&mut w, &[b"x", b"z"]);
        std::fs::write(d.path().join("z/y/f"), b"1").unwrap();
        let got = collect(&mut w, &[b"z/y/f"]);
        assert!(!got.iter().any(|p| p.starts_with(b"x/")), "{got:?}");
    }
}
