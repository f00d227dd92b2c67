//! The `git-annex` branch: journal, reads, and commits, the way git-annex does them.
//!
//! Writes never touch the branch directly. A changed file's *full new content* goes into
//! `.git/annex/journal/<mangled path>` (temp file in `othertmp/`, then rename) under an
//! exclusive fcntl lock on `journal.lck`, the same lock git-annex takes, so both tools can write
//! to one repository. Readers prefer the journal copy. [`Branch::commit`] stages the journal into
//! `.git/annex/index`, commits with the old tip as parent, moves the ref only if it still points
//! at that parent, and then empties the journal. If another writer moved the ref meanwhile, the
//! journal is union-merged with the new tip and the commit is retried, so no writer's lines are
//! ever lost.

use crate::error::{Error, IoContext, Result};
use crate::git::{CatFile, Git};
use crate::lock::{Lock, LockKind, lock_wait};
use crate::logs::Timestamp;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::sync::Mutex;

pub const BRANCH: &str = "refs/heads/git-annex";

pub struct Branch {
    git: Git,
    annex_dir: PathBuf,
    cat: Mutex<Option<CatFile>>,
    /// Fixed clock for reproducible logs (`GIT_ANNEX_VECTOR_CLOCK`), else the system clock.
    fixed_clock: Option<u64>,
    /// The committer identity, asked of git once.
    ident: std::sync::OnceLock<String>,
    /// Blobs read by [`Branch::read_many`]'s listing path, by object id: a long-running
    /// process (the daemon re-planning after a preferred-content change) reads only the logs
    /// that changed since. Objects never change, so the cache is never stale; it is emptied
    /// when it grows past [`BLOB_CACHE_MAX`].
    blobs: Mutex<std::collections::HashMap<Vec<u8>, Vec<u8>>>,
}

/// Most blobs [`Branch::read_many`] keeps (location logs are ~100 bytes: ~100 MiB at most).
const BLOB_CACHE_MAX: usize = 1_000_000;

/// `/` → `_`, `_` → `__` (on bytes: branch paths may hold any byte a key name holds).
pub fn mangle(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len() + 4);
    for &c in path {
        match c {
            b'_' => out.extend_from_slice(b"__"),
            b'/' => out.push(b'_'),
            c => out.push(c),
        }
    }
    out
}

pub fn unmangle(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        if name[i] == b'_' {
            if name.get(i + 1) == Some(&b'_') {
                i += 1;
                out.push(b'_');
            } else {
                out.push(b'/');
            }
        } else {
            out.push(name[i]);
        }
        i += 1;
    }
    out
}

/// Union merge of two log files: the sorted, deduplicated set of their lines.
pub fn union_lines(a: &[u8], b: &[u8]) -> Vec<u8> {
    let set: BTreeSet<&[u8]> = a
        .split(|&c| c == b'\n')
        .chain(b.split(|&c| c == b'\n'))
        .filter(|l| !l.is_empty())
        .collect();
    let mut out = Vec::with_capacity(a.len() + b.len());
    for l in set {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out
}

/// Held while writing journal files; the same lock git-annex takes.
pub struct JournalLock(#[allow(dead_code)] Lock);

impl Branch {
    pub fn new(git: Git, annex_dir: PathBuf, fixed_clock: Option<u64>) -> Branch {
        Branch {
            git,
            annex_dir,
            cat: Mutex::new(None),
            fixed_clock,
            ident: std::sync::OnceLock::new(),
            blobs: Mutex::new(Default::default()),
        }
    }

    /// The fixed clock (`GIT_ANNEX_VECTOR_CLOCK`) this branch writes with, if any.
    pub fn fixed_clock(&self) -> Option<u64> {
        self.fixed_clock
    }

    pub fn now(&self) -> Timestamp {
        match self.fixed_clock {
            Some(s) => Timestamp { secs: s, pico: 0 },
            None => Timestamp::from_system(std::time::SystemTime::now()),
        }
    }

    fn journal_dir(&self) -> PathBuf {
        self.annex_dir.join("journal")
    }

    pub fn lock_journal(&self) -> Result<JournalLock> {
        std::fs::create_dir_all(&self.annex_dir).ctx("creating", &self.annex_dir)?;
        Ok(JournalLock(lock_wait(
            &self.annex_dir.join("journal.lck"),
            LockKind::Exclusive,
        )?))
    }

    pub fn exists(&self) -> Result<bool> {
        Ok(self.git.rev_parse(BRANCH)?.is_some())
    }

    /// Creates the branch: from `origin/git-annex` (or another remote's) when a clone has one,
    /// otherwise as an empty root commit "branch created", as git-annex does.
    pub fn ensure_exists(&self) -> Result<()> {
        if self.exists()? {
            return Ok(());
        }
        let from_remote = match self.git.rev_parse("refs/remotes/origin/git-annex")? {
            Some(c) => Some(c),
            None => {
                let refs = self.git.run_str([
                    "for-each-ref",
                    "--format=%(objectname)",
                    "refs/remotes/*/git-annex",
                ])?;
                refs.lines().next().map(str::to_string)
            }
        };
        let commit =
            match from_remote {
                Some(c) => c,
                None => {
                    let tree = self.git.run_str(["mktree"])?;
                    String::from_utf8_lossy(&self.git.run_with_input(
                        ["commit-tree", "--no-gpg-sign", &tree],
                        b"branch created\n",
                    )?)
                    .trim()
                    .to_string()
                }
            };
        // Expect the ref to be absent: never clobber a branch another process just made.
        self.git.run(["update-ref", BRANCH, &commit, ""])?;
        Ok(())
    }

    /// The current content of a branch file: the journal's copy if any, else the branch's.
    pub fn read(&self, path: &[u8]) -> Result<Option<Vec<u8>>> {
        let j = self
            .journal_dir()
            .join(std::ffi::OsStr::from_bytes(&mangle(path)));
        match std::fs::read(&j) {
            Ok(c) => return Ok(Some(c)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("reading {}", j.display()), e)),
        }
        self.read_committed(path)
    }

    /// The location log of `key` (journal first), empty when there is none.
    pub fn location_log(&self, key: &crate::key::Key) -> Result<crate::logs::LocationLog> {
        Ok(crate::logs::LocationLog::parse(
            &self.read(&location_log_path(key))?.unwrap_or_default(),
        ))
    }

    /// Like [`Branch::read`] for many files, with one git process for the committed ones.
    pub fn read_many(&self, paths: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let jdir = self.journal_dir();
        let mut out: Vec<Option<Vec<u8>>> = Vec::with_capacity(paths.len());
        let mut from_branch = Vec::new();
        // For many paths, one listing of the journal (usually empty, or a few files) instead of
        // an open that fails for nearly every path.
        let journaled: Option<std::collections::HashSet<Vec<u8>>> = (paths.len() > 32)
            .then(|| match std::fs::read_dir(&jdir) {
                Ok(rd) => Some(
                    rd.flatten()
                        .map(|e| e.file_name().into_encoded_bytes())
                        .collect(),
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(Default::default()),
                Err(_) => None,
            })
            .flatten();
        for (i, p) in paths.iter().enumerate() {
            let name = mangle(p);
            if journaled.as_ref().is_some_and(|j| !j.contains(&name)) {
                out.push(None);
                from_branch.push(i);
                continue;
            }
            let j = jdir.join(std::ffi::OsStr::from_bytes(&name));
            match std::fs::read(&j) {
                Ok(c) => out.push(Some(c)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    out.push(None);
                    from_branch.push(i);
                }
                Err(e) => return Err(Error::io(format!("reading {}", j.display()), e)),
            }
        }
        // A few: ask the long-running cat-file (no process to start); many: one pipelined run.
        if from_branch.len() <= 32 {
            for i in from_branch {
                out[i] = self.read_committed(&paths[i])?;
            }
            return Ok(out);
        }
        let paths_from_branch: Vec<Vec<u8>> =
            from_branch.iter().map(|&i| paths[i].clone()).collect();
        for (i, blob) in from_branch
            .into_iter()
            .zip(self.read_committed_many(&paths_from_branch)?)
        {
            out[i] = blob;
        }
        Ok(out)
    }

    /// The branch's committed copy only.
    pub fn read_committed(&self, path: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut guard = self.cat.lock().unwrap();
        if guard.is_none() {
            *guard = Some(self.git.cat_file()?);
        }
        let mut rev = format!("{BRANCH}:").into_bytes();
        rev.extend_from_slice(path);
        Ok(guard
            .as_mut()
            .unwrap()
            .get(&rev)?
            .filter(|(k, _)| k == "blob")
            .map(|(_, d)| d))
    }

    /// Writes a file's full new content into the journal. The caller holds the journal lock.
    pub fn write(&self, _lock: &JournalLock, path: &[u8], content: &[u8]) -> Result<()> {
        let jdir = self.journal_dir();
        let tmpdir = self.annex_dir.join("othertmp");
        for d in [&jdir, &tmpdir] {
            if !d.is_dir() {
                std::fs::create_dir_all(d).ctx("creating", d)?;
            }
        }
        let name = std::ffi::OsString::from_vec(mangle(path));
        let mut tmpname = name.clone();
        tmpname.push(format!(".{}", std::process::id()));
        let tmp = tmpdir.join(tmpname);
        let mut f = std::fs::File::create(&tmp).ctx("writing", &tmp)?;
        f.write_all(content).ctx("writing", &tmp)?;
        drop(f);
        let dest = jdir.join(&name);
        std::fs::rename(&tmp, &dest).ctx("renaming into", &dest)?;
        Ok(())
    }

    /// Journal entries waiting to be committed: (branch path, journal file).
    fn journal_files(&self) -> Result<Vec<(Vec<u8>, PathBuf)>> {
        let dir = self.journal_dir();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
        };
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.ctx("listing", &dir)?;
            out.push((unmangle(ent.file_name().as_bytes()), ent.path()));
        }
        out.sort();
        Ok(out)
    }

    pub fn journal_is_empty(&self) -> Result<bool> {
        Ok(self.journal_files()?.is_empty())
    }

    /// Commits the journal to the branch. Returns the new commit, or `None` if nothing was
    /// pending. Takes the journal lock itself unless the caller passes the one it holds.
    pub fn commit(&self, held: Option<&JournalLock>, message: &str) -> Result<Option<String>> {
        if held.is_none() && self.journal_is_empty()? {
            // Nothing to commit, and nothing created: this may be another repository's branch
            // (a remote's), whose path must not be made anew if it vanished (a drive pulled).
            return Ok(None);
        }
        let own;
        let lock = match held {
            Some(l) => l,
            None => {
                own = self.lock_journal()?;
                &own
            }
        };
        self.commit_changes(lock, &BTreeMap::new(), &mut std::iter::empty(), message)
    }

    /// Commits `changes` (branch path → full new content, computed from [`Branch::read`]) together
    /// with everything pending in the journal, in one commit whose parent is the current tip.
    /// `extra_blobs` are written into the same pack (used for work-tree symlink blobs, so that the
    /// following `git update-index` finds them and writes no loose objects).
    ///
    /// All objects go through one `git fast-import` run, which writes a single pack instead of
    /// one loose object per log file and per tree (tens of thousands for a large add). The ref
    /// only moves if it still points at the parent; if another writer (git-annex) moved it, our
    /// files are union-merged with theirs and the commit is made again.
    pub fn commit_changes(
        &self,
        _lock: &JournalLock,
        changes: &BTreeMap<Vec<u8>, Vec<u8>>,
        extra_blobs: &mut dyn Iterator<Item = Vec<u8>>,
        message: &str,
    ) -> Result<Option<String>> {
        let journal = self.journal_files()?;
        let mut extra_blobs = extra_blobs.peekable();
        if journal.is_empty() && changes.is_empty() && extra_blobs.peek().is_none() {
            return Ok(None);
        }
        self.ensure_exists()?;
        let mut files: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for (path, jf) in &journal {
            files.insert(path.clone(), std::fs::read(jf).ctx("reading", jf)?);
        }
        for (path, content) in changes {
            files.insert(path.clone(), content.clone());
        }
        let ident = self.committer_ident()?;
        for attempt in 0..10 {
            let tip = self
                .git
                .rev_parse(BRANCH)?
                .ok_or_else(|| Error::Protocol("git-annex branch vanished".into()))?;
            if attempt > 0 {
                // Someone else committed meanwhile: fold their version of our files in.
                let paths: Vec<Vec<u8>> = files.keys().cloned().collect();
                let theirs = self.read_committed_many(&paths)?;
                for (path, theirs) in paths.into_iter().zip(theirs) {
                    if let Some(theirs) = theirs {
                        let ours = files.get_mut(&path).expect("same keys");
                        *ours = union_lines(ours, &theirs);
                    }
                }
            }
            // Blobs go in with the first attempt only; a retry needs just the commit.
            let r = self.fast_import(|w| {
                write_fast_import(w, &ident, &tip, &[], &files, &mut extra_blobs, message)
            });
            match r {
                Ok(_) if files.is_empty() => return Ok(None), // blobs only
                Ok(_) => {
                    let new = self.git.rev_parse(BRANCH)?.unwrap_or_default();
                    if new == tip {
                        return Err(Error::Protocol(
                            "git fast-import did not advance the git-annex branch".into(),
                        ));
                    }
                    for (_, jf) in &journal {
                        let _ = std::fs::remove_file(jf);
                    }
                    return Ok(Some(new));
                }
                Err(Error::Git { .. })
                    if attempt < 9
                        && self.git.rev_parse(BRANCH)?.as_deref() != Some(tip.as_str()) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Protocol(
            "the git-annex branch kept changing while ferry tried to commit to it".into(),
        ))
    }

    /// Union-merges the other clones' `git-annex` branches that have something ours lacks (see
    /// [`Branch::sibling_refs`]) into ours, as git-annex does: a file present on one side only
    /// is taken as is (deletions never propagate), a file on both sides becomes the sorted,
    /// deduplicated union of their lines. Fast-forwards when it can. Returns the refs that
    /// brought something new.
    pub fn merge_siblings(&self, lock: &JournalLock) -> Result<Vec<String>> {
        self.ensure_exists()?;
        // Pending journal entries first, so they are part of the base the merge unions with.
        self.commit(Some(lock), "update")?;
        let Some(tip) = self.git.rev_parse(BRANCH)? else {
            return Err(Error::Protocol("the git-annex branch is missing".into()));
        };
        // The refs ours does not contain yet, with their commits, in one call; whether ours is
        // simply behind, in one more: however many clones sent something, a handful of git
        // calls in all.
        let listed = self.siblings_not_in(&tip)?;
        let mut merged_names = Vec::new();
        let mut parents: Vec<String> = Vec::new();
        for (name, sha) in listed {
            if !parents.contains(&sha) {
                parents.push(sha);
            }
            merged_names.push(name);
        }
        if parents.is_empty() {
            return Ok(merged_names);
        }
        let mut args = vec!["merge-base", "--independent", tip.as_str()];
        args.extend(parents.iter().map(String::as_str));
        let independent = self.git.run_str(&args)?;
        if let [newest] = independent.lines().collect::<Vec<_>>()[..]
            && newest != tip
        {
            // One of theirs contains ours and all the others: fast-forward, moving the ref
            // only if it is still where we saw it.
            self.git.run([
                "update-ref",
                "-m",
                "fast-forward git-annex",
                BRANCH,
                newest,
                &tip,
            ])?;
            return Ok(merged_names);
        }
        // What each of theirs changed from ours (one diff-tree for all), then both sides' files
        // in one cat-file. D means only we have it: keep ours.
        let mut input = String::new();
        for p in &parents {
            input.push_str(&format!("{p} {tip}\n"));
        }
        let diff = self.git.run_with_input(
            ["diff-tree", "--stdin", "-z", "-r", "--no-renames"],
            input.as_bytes(),
        )?;
        let mut changed: Vec<(usize, Vec<u8>)> = Vec::new(); // (parent, path)
        let mut current: Option<usize> = None;
        let mut it = diff.split(|&b| b == 0).filter(|t| !t.is_empty());
        while let Some(tok) = it.next() {
            if tok[0] != b':' {
                // The header naming the commit whose diff follows.
                current = parents.iter().position(|p| p.as_bytes() == tok);
                if current.is_none() {
                    return Err(Error::Protocol(format!(
                        "unexpected git diff-tree output {:?}",
                        String::from_utf8_lossy(tok)
                    )));
                }
                continue;
            }
            let (Some(path), Some(i)) = (it.next(), current) else {
                return Err(Error::Protocol("truncated git diff-tree output".into()));
            };
            if tok.last() != Some(&b'D') {
                changed.push((i, path.to_vec()));
            }
        }
        let paths: BTreeSet<&Vec<u8>> = changed.iter().map(|(_, p)| p).collect();
        let paths: Vec<&Vec<u8>> = paths.into_iter().collect();
        let rev =
            |base: &str, path: &[u8]| [format!("{base}:").into_bytes(), path.to_vec()].concat();
        let mut revs: Vec<Vec<u8>> = changed.iter().map(|(i, p)| rev(&parents[*i], p)).collect();
        revs.extend(paths.iter().map(|p| rev(&tip, p)));
        let mut blobs = crate::git::cat_many(&self.git, &revs)?.into_iter();
        let theirs: Vec<Option<crate::git::Object>> = blobs.by_ref().take(changed.len()).collect();
        let ours: BTreeMap<&Vec<u8>, Vec<u8>> = paths
            .iter()
            .zip(blobs)
            .filter_map(|(p, o)| o.map(|(_, d)| (*p, d)))
            .collect();
        let mut changes: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        // Tip by tip, in the order of the refs, as one union per file.
        for ((_, path), theirs) in changed.iter().zip(theirs) {
            let Some((_, theirs)) = theirs else { continue };
            let base = changes
                .get(path)
                .cloned()
                .or_else(|| ours.get(path).cloned());
            let new = match base {
                Some(b) => union_lines(&b, &theirs),
                None => theirs,
            };
            changes.insert(path.clone(), new);
        }
        let message = format!("merging {} into git-annex", merged_names.join(" "));
        let ident = self.committer_ident()?;
        let r = self.fast_import(|w| {
            write_fast_import(
                w,
                &ident,
                &tip,
                &parents,
                &changes,
                &mut std::iter::empty(),
                &message,
            )
        });
        match r {
            Ok(()) => Ok(merged_names),
            // The branch moved under us: merging again from the new tip is always correct.
            Err(_) if self.git.rev_parse(BRANCH)?.as_deref() != Some(tip.as_str()) => {
                self.merge_siblings(lock)
            }
            Err(e) => Err(e),
        }
    }

    /// Sibling `git-annex` refs (as `git show-ref git-annex`) with something not in ours yet,
    /// with the commit each names: (ref, commit).
    #[cfg(test)]
    fn sibling_refs(&self) -> Result<Vec<(String, String)>> {
        self.ensure_exists()?;
        match self.git.rev_parse(BRANCH)? {
            Some(tip) => self.siblings_not_in(&tip),
            None => Err(Error::Protocol("the git-annex branch is missing".into())),
        }
    }

    /// Sibling `git-annex` refs naming a commit `tip` does not contain: (ref, commit).
    fn siblings_not_in(&self, tip: &str) -> Result<Vec<(String, String)>> {
        // git-annex takes every ref ending in `/git-annex`; a `*` here stops at a `/`, so the
        // deeper shapes are named: a remote's `synced/` (or a remote with a `/` in its name),
        // and a tagged push with its base64 component (`refs/synced/<uuid>/<base64>/...`).
        let patterns = [
            "refs/remotes/*/git-annex",
            "refs/remotes/*/*/git-annex",
            "refs/heads/synced/git-annex",
            "refs/synced/*/git-annex",
            "refs/synced/*/*/git-annex",
        ];
        let listed = self.git.run_str(
            [
                "for-each-ref",
                "--format=%(refname) %(objectname) %(objecttype)",
                &format!("--no-merged={tip}"),
            ]
            .into_iter()
            .chain(patterns),
        )?;
        Ok(listed
            .lines()
            .filter_map(|line| {
                let mut it = line.rsplitn(3, ' ');
                let (Some("commit"), Some(sha), Some(name)) = (it.next(), it.next(), it.next())
                else {
                    return None;
                };
                // A name without `*` also matches the refs below it.
                name.ends_with("/git-annex")
                    .then(|| (name.to_string(), sha.to_string()))
            })
            .collect())
    }

    /// Runs `git fast-import`, streaming its input from `write` (nothing is buffered whole).
    fn fast_import(&self, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
        let mut child = self
            .git
            .command(["fast-import", "--quiet", "--date-format=raw", "--done"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| Error::GitMissing(e.to_string()))?;
        let stdin = child.stdin.take().expect("piped");
        let mut w = std::io::BufWriter::with_capacity(1 << 16, stdin);
        let wrote = write(&mut w).and_then(|_| w.flush());
        drop(w);
        let out = child
            .wait_with_output()
            .map_err(|e| Error::io("running git fast-import", e))?;
        if !out.status.success() || wrote.is_err() {
            let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if let Err(e) = wrote {
                stderr = format!("{stderr} (writing its input: {e})");
            }
            return Err(Error::Git {
                command: "git fast-import".into(),
                stderr,
            });
        }
        Ok(())
    }

    /// `Name <email> ` for branch commits: the user's git identity, or a neutral fallback so
    /// bookkeeping commits never fail for want of one.
    fn committer_ident(&self) -> Result<String> {
        Ok(self
            .ident
            .get_or_init(|| match self.git.run_opt(["var", "GIT_COMMITTER_IDENT"]) {
                Ok(Some(v)) => {
                    // "Name <email> 1700000000 +0000": keep up to the closing '>'.
                    let end = v.rfind('>').map(|i| i + 1).unwrap_or(v.len());
                    v[..end].to_string()
                }
                _ => "ferry <ferry@localhost>".to_string(),
            })
            .clone())
    }

    /// The committed copies of many branch files, resolved against one tree (no ref lookups).
    fn read_committed_many(&self, paths: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let Some(tree) = self.git.rev_parse(&format!("{BRANCH}^{{tree}}"))? else {
            return Ok(vec![None; paths.len()]);
        };
        if paths.len() <= 1000 {
            let revs: Vec<Vec<u8>> = paths
                .iter()
                .map(|p| {
                    let mut r = format!("{tree}:").into_bytes();
                    r.extend_from_slice(p);
                    r
                })
                .collect();
            return Ok(crate::git::cat_many(&self.git, &revs)?
                .into_iter()
                .map(|b| b.filter(|(k, _)| k == "blob").map(|(_, d)| d))
                .collect());
        }
        // `<tree>:<path>` makes cat-file walk the trees from the top for every path (with
        // 100,000 keys that took minutes); for many paths, one listing of the branch names the
        // blobs instead, and blobs read before are not read again.
        let listing = self
            .git
            .run(["ls-tree", "-r", "-z", "--full-tree", &tree])?;
        let mut ids: std::collections::HashMap<&[u8], &[u8]> = std::collections::HashMap::new();
        for rec in listing.split(|&b| b == 0) {
            // "<mode> blob <id>\t<path>"
            let Some(tab) = rec.iter().position(|&b| b == b'\t') else {
                continue;
            };
            if let Some(id) = rec[..tab].rsplit(|&b| b == b' ').next() {
                ids.insert(&rec[tab + 1..], id);
            }
        }
        let wanted: Vec<Option<&[u8]>> = paths
            .iter()
            .map(|p| ids.get(p.as_slice()).copied())
            .collect();
        let mut cache = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        let mut missing: Vec<Vec<u8>> = wanted
            .iter()
            .flatten()
            .filter(|id| !cache.contains_key(**id))
            .map(|id| id.to_vec())
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if cache.len() + missing.len() > BLOB_CACHE_MAX {
            cache.clear();
            missing = wanted.iter().flatten().map(|id| id.to_vec()).collect();
            missing.sort_unstable();
            missing.dedup();
        }
        let read = crate::git::cat_many(&self.git, &missing)?;
        for (id, blob) in missing.into_iter().zip(read) {
            if let Some((kind, data)) = blob
                && kind == "blob"
            {
                cache.insert(id, data);
            }
        }
        Ok(wanted
            .into_iter()
            .map(|id| id.and_then(|id| cache.get(id).cloned()))
            .collect())
    }
}

/// Where a key's location log lives on the branch.
pub fn location_log_path(key: &crate::key::Key) -> Vec<u8> {
    let mut p = key.hash_dir_lower().into_bytes();
    p.extend_from_slice(&key.file_name());
    p.extend_from_slice(b".log");
    p
}

/// Writes a `git fast-import` stream: blobs, then one commit on the branch from `parent`.
fn write_fast_import(
    w: &mut dyn Write,
    ident: &str,
    parent: &str,
    merged: &[String],
    files: &BTreeMap<Vec<u8>, Vec<u8>>,
    extra_blobs: &mut dyn Iterator<Item = Vec<u8>>,
    message: &str,
) -> std::io::Result<()> {
    for b in extra_blobs {
        write!(w, "blob\ndata {}\n", b.len())?;
        w.write_all(&b)?;
        w.write_all(b"\n")?;
    }
    if !files.is_empty() || !merged.is_empty() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        write!(w, "commit {BRANCH}\ncommitter {ident} {now} +0000\n")?;
        write!(w, "data {}\n{message}\n", message.len())?;
        writeln!(w, "from {parent}")?;
        for m in merged {
            writeln!(w, "merge {m}")?;
        }
        for (path, content) in files {
            w.write_all(b"M 100644 inline ")?;
            w.write_all(&quote_path(path))?;
            write!(w, "\ndata {}\n", content.len())?;
            w.write_all(content)?;
            w.write_all(b"\n")?;
        }
        w.write_all(b"\n")?;
    }
    w.write_all(b"done\n")
}

/// C-style quoting for fast-import paths that need it (starting with `"`, or holding LF or `\`).
fn quote_path(p: &[u8]) -> Vec<u8> {
    if !p.starts_with(b"\"") && !p.iter().any(|&b| b == b'\n' || b == b'\\') {
        return p.to_vec();
    }
    let mut out = vec![b'"'];
    for &b in p {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b => out.push(b),
        }
    }
    out.push(b'"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committing_an_empty_journal_creates_nothing() {
        // A remote's branch whose path vanished (a drive pulled): nothing may be made there.
        let d = tempfile::tempdir().unwrap();
        let gone = d.path().join("unplugged");
        let b = Branch::new(Git::new(&gone), gone.join(".git/annex"), None);
        assert_eq!(b.commit(None, "update").unwrap(), None);
        assert!(!gone.exists());
    }

    #[test]
    fn many_reads_by_listing_agree_with_single_reads() {
        let d = tempfile::tempdir().unwrap();
        let (repo, _) =
            crate::repo::Repo::init(d.path(), None, "test", &Default::default()).unwrap();
        let b = &repo.branch;
        let changes: BTreeMap<Vec<u8>, Vec<u8>> = (0..1500)
            .map(|i| {
                (
                    format!("{:03x}/{:03x}/k{i}.log", i % 7, i % 11).into_bytes(),
                    format!("content {i}\n").into_bytes(),
                )
            })
            .collect();
        let lock = b.lock_journal().unwrap();
        b.commit_changes(&lock, &changes, &mut std::iter::empty(), "test")
            .unwrap();
        drop(lock);
        let mut paths: Vec<Vec<u8>> = changes.keys().cloned().collect();
        paths.push(b"000/000/absent.log".to_vec());
        paths.push(b"uuid.log".to_vec());
        let many = b.read_many(&paths).unwrap();
        assert_eq!(many.len(), paths.len());
        for (p, got) in paths.iter().zip(&many) {
            assert_eq!(
                got,
                &b.read_committed(p).unwrap(),
                "{}",
                String::from_utf8_lossy(p)
            );
        }
        assert_eq!(many[1499].as_deref(), Some(&changes[&paths[1499]][..]));
        assert_eq!(many[1500], None);
        // Again, with one log changed: the cache serves the rest, the change is seen.
        let lock = b.lock_journal().unwrap();
        let one: BTreeMap<Vec<u8>, Vec<u8>> = [(paths[7].clone(), b"changed\n".to_vec())].into();
        b.commit_changes(&lock, &one, &mut std::iter::empty(), "test")
            .unwrap();
        drop(lock);
        let again = b.read_many(&paths).unwrap();
        assert_eq!(again[7].as_deref(), Some(&b"changed\n"[..]));
        assert_eq!(again[..7], many[..7]);
        assert_eq!(again[8..], many[8..]);
    }

    /// A commit on `parent` with `files` (path, content) added or replaced, made with git.
    fn commit_on(dir: &std::path::Path, parent: &str, files: &[(&str, &str)]) -> String {
        let index = dir.join(".git/test-index");
        let git = |args: &[&str], input: &str| -> String {
            let mut c = std::process::Command::new("git");
            c.args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .current_dir(dir)
                .env("GIT_INDEX_FILE", &index)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped());
            let mut child = c.spawn().unwrap();
            std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "git {args:?}");
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        git(&["read-tree", parent], "");
        for (path, content) in files {
            let blob = git(&["hash-object", "-w", "--stdin"], content);
            git(
                &[
                    "update-index",
                    "--add",
                    "--cacheinfo",
                    &format!("100644,{blob},{path}"),
                ],
                "",
            );
        }
        let tree = git(&["write-tree"], "");
        let _ = std::fs::remove_file(&index);
        git(&["commit-tree", &tree, "-p", parent, "-m", "theirs"], "")
    }

    #[test]
    fn incoming_branches_are_union_merged_in_one_commit_or_fast_forwarded() {
        let d = tempfile::tempdir().unwrap();
        let (repo, _) =
            crate::repo::Repo::init(d.path(), None, "test", &Default::default()).unwrap();
        let b = &repo.branch;
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .args(args)
                .current_dir(d.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "git {args:?}: {out:?}");
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        let lock = b.lock_journal().unwrap();
        let base: BTreeMap<Vec<u8>, Vec<u8>> = [(b"a.log".to_vec(), b"1 x\n".to_vec())].into();
        b.commit_changes(&lock, &base, &mut std::iter::empty(), "test")
            .unwrap();
        let tip0 = git(&["rev-parse", BRANCH]);
        // Two clones changed the same log and others; a third went on from the first; one
        // more ref holds what we already have.
        let r1 = commit_on(
            d.path(),
            &tip0,
            &[("a.log", "1 x\n2 y\n"), ("b.log", "b\n")],
        );
        let r2 = commit_on(
            d.path(),
            &tip0,
            &[("a.log", "1 x\n3 z\n"), ("c.log", "c\n")],
        );
        let r3 = commit_on(d.path(), &r1, &[("d.log", "d\n")]);
        for (name, sha) in [("one", &r1), ("two", &r2), ("three", &r3), ("old", &tip0)] {
            git(&["update-ref", &format!("refs/remotes/{name}/git-annex"), sha]);
        }
        let siblings = b.sibling_refs().unwrap();
        assert_eq!(siblings.len(), 3, "{siblings:?}");
        let mut merged = b.merge_siblings(&lock).unwrap();
        merged.sort();
        assert_eq!(
            merged,
            ["one", "three", "two"].map(|n| format!("refs/remotes/{n}/git-annex"))
        );
        let tip = git(&["rev-parse", BRANCH]);
        for r in [&r1, &r2, &r3, &tip0] {
            git(&["merge-base", "--is-ancestor", r, &tip]);
        }
        assert_eq!(
            git(&["rev-list", "--count", &format!("{tip0}..{tip}"), "--merges"]),
            "1"
        );
        let read = |p: &str| git(&["cat-file", "blob", &format!("{tip}:{p}")]);
        assert_eq!(read("a.log"), "1 x\n2 y\n3 z");
        assert_eq!(
            (read("b.log"), read("c.log"), read("d.log")),
            ("b".into(), "c".into(), "d".into())
        );
        assert_eq!(
            read("uuid.log"),
            git(&["cat-file", "blob", &format!("{tip0}:uuid.log")])
        );
        assert!(b.sibling_refs().unwrap().is_empty());

        // Theirs contains ours (and the other one): a fast-forward, no merge commit.
        let r4 = commit_on(d.path(), &tip, &[("e.log", "e\n")]);
        let r5 = commit_on(d.path(), &r4, &[("f.log", "f\n")]);
        git(&["update-ref", "refs/remotes/one/git-annex", &r4]);
        git(&["update-ref", "refs/remotes/two/git-annex", &r5]);
        b.merge_siblings(&lock).unwrap();
        assert_eq!(git(&["rev-parse", BRANCH]), r5);

        // The deeper shapes git-annex also takes: a tagged push with a base64 component, a
        // remote with a `/` in its name.
        let r6 = commit_on(d.path(), &r5, &[("g.log", "g\n")]);
        git(&["update-ref", "refs/synced/u/aW5mbw/git-annex", &r6]);
        git(&["update-ref", "refs/remotes/a/b/git-annex", &r6]);
        let mut deep: Vec<String> = b
            .sibling_refs()
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        deep.sort();
        assert_eq!(
            deep,
            [
                "refs/remotes/a/b/git-annex",
                "refs/synced/u/aW5mbw/git-annex"
            ]
        );
    }

    #[test]
    fn mangling_round_trips() {
        let p = b"028/edc/SHA256E-s13--f285_x.txt.log";
        assert_eq!(mangle(p), b"028_edc_SHA256E-s13--f285__x.txt.log");
        assert_eq!(unmangle(&mangle(p)), p);
    }

    #[test]
    fn fast_import_paths_are_quoted_only_when_needed() {
        assert_eq!(quote_path(b"abc/def/K.log"), b"abc/def/K.log");
        assert_eq!(quote_path(b"\"x\\y\nz"), b"\"\\\"x\\\\y\\nz\"");
    }

    #[test]
    fn union_is_sorted_and_deduplicated() {
        assert_eq!(union_lines(b"b\na\n", b"c\na\n"), b"a\nb\nc\n");
        assert_eq!(union_lines(b"", b"x"), b"x\n");
    }
}
