//! `add`: annex new and changed files (locked: the work-tree file becomes a symlink into the
//! store), put small files and dotfiles into git, and record that the content is here.
//!
//! Order of work, chosen so that a crash at any point loses nothing and a rerun repairs:
//! 1. hash each file (in parallel) between two `fstat`s; any change of inode, size, mtime or
//!    ctime voids the hash, and the file is reported instead of stored under a wrong key;
//! 2. hard-link the file into the store (no copy; the object shares the inode);
//! 3. atomically replace the work-tree file by the annex symlink (symlink to a temp name, then
//!    rename over), so the path always names either the file or a link to the same content;
//! 4. stage everything with one `git update-index`, then write the location log through the
//!    journal and commit it to the `git-annex` branch once.
//!
//! A rerun after a crash finds untracked annex symlinks (stages them, logs the content) or the
//! original file (hashes it again; the object is already there).

use crate::annexed::literal_pathspec;
use crate::branch::location_log_path;
use crate::error::{Error, IoContext, Result};
use crate::filter::pointer_for;
use crate::hash::{Backend, StatStamp, hash_file};
use crate::inodecache::{InodeCache, Stamp};
use crate::key::Key;
use crate::lock::{LockKind, lock_wait};
use crate::logs::{LocationLog, Presence};
use crate::matching::Expr;
use crate::paths::is_dotfile;
use crate::repo::Repo;
use crate::store::{link_target, parse_link_target};
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

#[derive(Clone, Debug)]
pub struct AddOptions {
    /// Repo-relative paths (empty vec = the top); resolved by the caller.
    pub paths: Vec<Vec<u8>>,
    /// Hashing threads.
    pub jobs: usize,
    pub backend: Backend,
    /// `--force-large` / `--force-small`: override annex.largefiles.
    pub force: Option<bool>,
    /// Add as unlocked files: the work-tree file stays, git gets a pointer (`--unlocked`,
    /// `annex.addunlocked`).
    pub unlocked: bool,
    /// `annex.thin`: unlocked content is hard-linked into the store instead of copied.
    pub thin: bool,
    /// Also stage the removal of tracked files that are gone (the daemon's `git add -A`).
    pub deletions: bool,
    /// Settings to use instead of the snapshot taken when the repository was opened (the
    /// daemon's, reloaded when `.git/config` changes).
    pub config: Option<std::sync::Arc<std::collections::HashMap<String, String>>>,
    /// A long-running `git check-attr` for small batches (the daemon's); started on first use.
    pub attrs: Option<AttrServer>,
}

/// A `git check-attr --stdin annex.largefiles` kept running between adds: saves a process per
/// commit. Whoever owns it calls [`AttrServer::reset`] when a `.gitattributes` changes (a
/// running check-attr may keep what it read).
#[derive(Clone, Default)]
pub struct AttrServer(std::sync::Arc<std::sync::Mutex<Option<crate::git::CheckAttr>>>);

impl AttrServer {
    pub fn reset(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// `annex.largefiles` for each path, asked one by one.
    fn query(&self, repo: &Repo, paths: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(paths.len());
        for p in paths {
            if guard.is_none() {
                *guard = Some(crate::git::CheckAttr::start(&repo.git, "annex.largefiles")?);
            }
            match guard.as_mut().unwrap().get(p) {
                Ok(v) => out.push(v),
                Err(e) => {
                    *guard = None; // died: a fresh one next time
                    return Err(e);
                }
            }
        }
        Ok(out)
    }
}

impl std::fmt::Debug for AttrServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttrServer")
    }
}

/// Up to this many paths go through a running [`AttrServer`]; more are asked in one batch.
const ATTR_SERVER_MAX: usize = 64;

/// What ingesting one file produced.
struct Ingest {
    key: Key,
    bytes: u64,
    /// For an unlocked file: its stat after ingest (for the inode cache).
    unlocked: Option<Stamp>,
    /// A copy waiting in the temp dir to become the object (moved in for the whole batch at
    /// once, see [`crate::store::Store::ingest_temps`]).
    temp: Option<PathBuf>,
}

/// What happened to one path.
#[derive(Clone, Debug)]
pub enum AddEvent {
    /// Content annexed (or already in the store) and the path staged as a locked file.
    Annexed { path: Vec<u8>, key: Key, bytes: u64 },
    /// Added to git as it is (small file, dotfile, or a symlink that is not an annex link).
    ToGit { path: Vec<u8>, why: &'static str },
    /// An annex symlink that was already in the work tree, (re)staged.
    Restaged { path: Vec<u8>, key: Key },
    /// A tracked file that is gone: its removal staged (only with `deletions`).
    Removed { path: Vec<u8> },
    /// Nothing done, with the reason (not an error: a FIFO, a nested repository...).
    Skipped { path: Vec<u8>, reason: String },
    /// Could not be added; nothing about the file was changed.
    Failed { path: Vec<u8>, error: String },
    /// Before any work: how much there is to do.
    Planned { files: usize, bytes: u64 },
    /// Work stopped early; `remaining` files were not looked at.
    Stopped { remaining: usize, reason: String },
}

#[derive(Debug, Default, Clone, Copy)]
pub struct AddSummary {
    pub annexed: usize,
    pub to_git: usize,
    pub restaged: usize,
    pub skipped: usize,
    pub failed: usize,
}

enum Plan {
    Annex {
        path: Vec<u8>,
        size: u64,
    },
    Git {
        path: Vec<u8>,
        why: &'static str,
    },
    Restage {
        path: Vec<u8>,
        key: Key,
        target: Vec<u8>,
    },
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// The largefiles decision for the repository: git config, then `.gitattributes`, then the
/// branch's `config.log`; unset means "annex everything" for `add`.
struct LargeFiles {
    config: Option<Expr>,
    from_attrs: std::collections::HashMap<Vec<u8>, Expr>,
    branch: Option<Expr>,
}

impl LargeFiles {
    fn load(
        repo: &Repo,
        config: &std::collections::HashMap<String, String>,
        paths: &[Vec<u8>],
        server: Option<&AttrServer>,
    ) -> Result<LargeFiles> {
        let config = config
            .get("annex.largefiles")
            .map(|s| Expr::parse(s))
            .transpose()?;
        let branch = repo
            .branch
            .read(b"config.log")?
            .and_then(|c| crate::logs::parse_config_log(&c, "annex.largefiles"))
            .map(|s| Expr::parse(&s))
            .transpose()?;
        let mut from_attrs = std::collections::HashMap::new();
        // Few distinct expressions, many paths: parse each expression once.
        let mut cache: std::collections::HashMap<Vec<u8>, Expr> = std::collections::HashMap::new();
        let mut record = |path: &[u8], value: &[u8]| -> Result<()> {
            if !cache.contains_key(value) {
                cache.insert(
                    value.to_vec(),
                    Expr::parse(&String::from_utf8_lossy(value))?,
                );
            }
            from_attrs.insert(path.to_vec(), cache[value].clone());
            Ok(())
        };
        if let Some(server) = server.filter(|_| config.is_none() && paths.len() <= ATTR_SERVER_MAX)
        {
            for (p, v) in paths.iter().zip(server.query(repo, paths)?) {
                if let Some(v) = v {
                    record(p, &v)?;
                }
            }
        } else if config.is_none() && !paths.is_empty() {
            let mut input = Vec::new();
            for p in paths {
                input.extend_from_slice(p);
                input.push(0);
            }
            let out = repo
                .git
                .run_with_input(["check-attr", "-z", "--stdin", "annex.largefiles"], &input)?;
            let fields: Vec<&[u8]> = out.split(|&b| b == 0).collect();
            for rec in fields.chunks(3) {
                if let [path, _attr, value] = rec {
                    if *value == b"unspecified" || *value == b"unset" || value.is_empty() {
                        continue;
                    }
                    record(path, value)?;
                }
            }
        }
        Ok(LargeFiles {
            config,
            from_attrs,
            branch,
        })
    }

    fn is_large(&self, path: &[u8], size: u64) -> bool {
        if let Some(e) = &self.config {
            return e.matches(path, size);
        }
        if let Some(e) = self.from_attrs.get(path) {
            return e.matches(path, size);
        }
        if let Some(e) = &self.branch {
            return e.matches(path, size);
        }
        true
    }
}

/// Lists the paths `add` should look at: untracked (not ignored) and modified tracked files.
fn candidates(repo: &Repo, paths: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
    let specs: Vec<OsString> = if paths.is_empty() {
        vec![literal_pathspec(b"")]
    } else {
        paths.iter().map(|p| literal_pathspec(p)).collect()
    };
    // `diff-files` looks only at index entries inside the pathspecs (`ls-files --modified`
    // checks every racily-clean entry of the index, running the clean filter for each).
    let mut out: Vec<Vec<u8>> = Vec::new();
    for mode in [
        &["ls-files", "-z", "--others", "--exclude-standard"][..],
        &["diff-files", "-z", "--name-only", "--no-renames"][..],
    ] {
        let mut args: Vec<OsString> = mode.iter().map(OsString::from).collect();
        args.push("--".into());
        args.extend(specs.iter().cloned());
        let listed = repo.git.run(&args)?;
        out.extend(
            listed
                .split(|&b| b == 0)
                .filter(|p| !p.is_empty())
                .map(<[u8]>::to_vec),
        );
    }
    out.sort();
    out.dedup();
    Ok(out)
}

pub fn add(
    repo: &Repo,
    opts: &AddOptions,
    on_event: &(dyn Fn(&AddEvent) + Sync),
) -> Result<AddSummary> {
    let top = repo.work_tree()?.to_path_buf();
    let annex_dir = repo.annex_dir();
    std::fs::create_dir_all(&annex_dir).ctx("creating", &annex_dir)?;
    // One add at a time per repository: a second waits for the first.
    let _add_lock = lock_wait(&annex_dir.join("ferry-add.lck"), LockKind::Exclusive)?;

    let tmpdir = annex_dir.join("tmp");
    std::fs::create_dir_all(&tmpdir).ctx("creating", &tmpdir)?;
    if let Ok(rd) = std::fs::read_dir(&tmpdir) {
        for ent in rd.flatten() {
            if is_temp_link_name(ent.file_name().as_bytes()) {
                let _ = std::fs::remove_file(ent.path());
            }
        }
    }

    let mut summary = AddSummary::default();
    let emit = |e: AddEvent, s: &mut AddSummary| {
        match &e {
            AddEvent::Annexed { .. } => s.annexed += 1,
            AddEvent::ToGit { .. } => s.to_git += 1,
            AddEvent::Restaged { .. } => s.restaged += 1,
            AddEvent::Skipped { .. } => s.skipped += 1,
            AddEvent::Failed { .. } => s.failed += 1,
            AddEvent::Stopped { remaining, .. } => s.failed += remaining,
            AddEvent::Planned { .. } | AddEvent::Removed { .. } => {}
        }
        on_event(&e);
    };

    let listed = candidates(repo, &opts.paths)?;
    let config = opts.config.as_deref().unwrap_or(repo.config());
    let dotfiles = crate::git::config_flag(config, "annex.dotfiles", false);
    let large = LargeFiles::load(repo, config, &listed, opts.attrs.as_ref())?;

    let mut to_stage: Vec<Vec<u8>> = Vec::new();
    // Classify by lstat: never follow a symlink.
    let mut plans = Vec::with_capacity(listed.len());
    let mut planned_bytes = 0u64;
    for rel in listed {
        if rel.ends_with(b"/") {
            emit(
                AddEvent::Skipped {
                    path: rel,
                    reason: "a nested git repository; not added".into(),
                },
                &mut summary,
            );
            continue;
        }
        let abs = top.join(os(&rel));
        let md = match std::fs::symlink_metadata(&abs) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Deleted (or an untracked file that vanished: update-index ignores those).
                if opts.deletions {
                    to_stage.push(rel.clone());
                    emit(AddEvent::Removed { path: rel }, &mut summary);
                }
                continue;
            }
            Err(e) => {
                emit(
                    AddEvent::Failed {
                        path: rel,
                        error: e.to_string(),
                    },
                    &mut summary,
                );
                continue;
            }
        };
        let ft = md.file_type();
        if ft.is_symlink() && is_temp_link_name(&rel) {
            // A half-made link from a killed run (older layout): not user data.
            let _ = std::fs::remove_file(&abs);
            continue;
        }
        if ft.is_symlink() {
            let target = std::fs::read_link(&abs)
                .map(|t| t.into_os_string().into_vec())
                .unwrap_or_default();
            match parse_link_target(&target) {
                Some(key) => plans.push(Plan::Restage {
                    path: rel,
                    key,
                    target,
                }),
                None => plans.push(Plan::Git {
                    path: rel,
                    why: "symlink",
                }),
            }
        } else if ft.is_file() {
            let small = match opts.force {
                Some(large) => (!large).then_some("forced small"),
                None if is_dotfile(&rel) && !dotfiles => Some("dotfile"),
                None => (!large.is_large(&rel, md.len())).then_some("non-large file"),
            };
            if let Some(why) = small {
                plans.push(Plan::Git { path: rel, why });
            } else {
                planned_bytes += md.len();
                plans.push(Plan::Annex {
                    path: rel,
                    size: md.len(),
                });
            }
        } else {
            emit(
                AddEvent::Skipped {
                    path: rel,
                    reason: "not a regular file or symlink".into(),
                },
                &mut summary,
            );
        }
    }
    let annex_count = plans
        .iter()
        .filter(|p| matches!(p, Plan::Annex { .. }))
        .count();
    emit(
        AddEvent::Planned {
            files: annex_count,
            bytes: planned_bytes,
        },
        &mut summary,
    );

    let mut present_keys: Vec<Key> = Vec::new();
    // (path, key) of every annex link made or restaged: their blobs go into the branch pack.
    let mut links: Vec<(Vec<u8>, Key)> = Vec::new();
    // Unlocked files: (path, key), and the work-tree stamps for the inode cache.
    let mut pointers: Vec<(Vec<u8>, Key)> = Vec::new();
    let mut stamps: Vec<(Stamp, Key)> = Vec::new();
    let mut annex_jobs: Vec<(Vec<u8>, u64)> = Vec::new();
    for p in plans {
        match p {
            Plan::Annex { path, size } => annex_jobs.push((path, size)),
            Plan::Git { path, why } => {
                to_stage.push(path.clone());
                emit(AddEvent::ToGit { path, why }, &mut summary);
            }
            Plan::Restage { path, key, target } => {
                // A moved annex link points at the wrong place: rewrite it before staging.
                let want = link_target(&path, &key);
                if target != want
                    && let Err(e) = replace_with_symlink(&tmpdir, &top.join(os(&path)), &want)
                {
                    emit(
                        AddEvent::Failed {
                            path,
                            error: e.to_string(),
                        },
                        &mut summary,
                    );
                    continue;
                }
                if repo.store().find(&key).is_some() {
                    present_keys.push(key.clone());
                }
                links.push((path.clone(), key.clone()));
                to_stage.push(path.clone());
                emit(AddEvent::Restaged { path, key }, &mut summary);
            }
        }
    }

    let mut deferred: Vec<(Vec<u8>, Ingest)> = Vec::new();
    // Hash and ingest in parallel; results come back in completion order.
    let store = repo.store();
    let next = AtomicUsize::new(0);
    let disk_full = std::sync::atomic::AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(Vec<u8>, std::result::Result<Ingest, String>)>();
    let jobs = opts.jobs.max(1).min(annex_jobs.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..jobs {
            let tx = tx.clone();
            let (annex_jobs, next, store, top, disk_full, tmpdir) =
                (&annex_jobs, &next, &store, &top, &disk_full, &tmpdir);
            s.spawn(move || {
                loop {
                    // After a full disk, stop taking work: one clear message beats thousands.
                    if disk_full.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((rel, size)) = annex_jobs.get(i) else {
                        break;
                    };
                    let r = if opts.unlocked {
                        ingest_unlocked(store, top, rel, *size, opts.backend, opts.thin)
                    } else {
                        ingest_one(store, tmpdir, top, rel, *size, opts.backend).map(
                            |(key, bytes)| Ingest {
                                key,
                                bytes,
                                unlocked: None,
                                temp: None,
                            },
                        )
                    };
                    let r = r.map_err(|e| {
                        if is_disk_full(&e) {
                            disk_full.store(true, Ordering::Relaxed);
                        }
                        e.to_string()
                    });
                    if tx.send((rel.clone(), r)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (rel, r) in rx {
            match r {
                Ok(ing) if ing.temp.is_some() => deferred.push((rel, ing)),
                Ok(Ingest {
                    key,
                    bytes,
                    unlocked,
                    temp: _,
                }) => {
                    match unlocked {
                        Some(stamp) => {
                            stamps.push((stamp, key.clone()));
                            pointers.push((rel.clone(), key.clone()));
                        }
                        None => {
                            links.push((rel.clone(), key.clone()));
                            to_stage.push(rel.clone());
                        }
                    }
                    present_keys.push(key.clone());
                    emit(
                        AddEvent::Annexed {
                            path: rel,
                            key,
                            bytes,
                        },
                        &mut summary,
                    );
                }
                Err(error) => emit(AddEvent::Failed { path: rel, error }, &mut summary),
            }
        }
    });

    // Copies made for unlocked files become objects together: one flush for the batch.
    let items: Vec<(PathBuf, Key)> = deferred
        .iter()
        .map(|(_, ing)| (ing.temp.clone().unwrap(), ing.key.clone()))
        .collect();
    for ((rel, ing), r) in deferred.into_iter().zip(store.ingest_temps(&items)) {
        match r {
            Ok(_) => {
                let stamp = ing.unlocked.expect("unlocked ingest");
                stamps.push((stamp, ing.key.clone()));
                pointers.push((rel.clone(), ing.key.clone()));
                present_keys.push(ing.key.clone());
                emit(
                    AddEvent::Annexed {
                        path: rel,
                        key: ing.key,
                        bytes: ing.bytes,
                    },
                    &mut summary,
                );
            }
            Err(e) => emit(
                AddEvent::Failed {
                    path: rel,
                    error: e.to_string(),
                },
                &mut summary,
            ),
        }
    }

    let started = next.load(Ordering::Relaxed).min(annex_jobs.len());
    if started < annex_jobs.len() {
        emit(
            AddEvent::Stopped {
                remaining: annex_jobs.len() - started,
                reason: "the disk is full; free some space and run ferry add again".into(),
            },
            &mut summary,
        );
    }

    let mut blobs = links
        .iter()
        .map(|(p, k)| link_target(p, k))
        .chain(pointers.iter().map(|(_, k)| pointer_for(k)));
    let stage_all = || -> Result<()> {
        stage(repo, &to_stage)?;
        if !pointers.is_empty() {
            InodeCache::load(&annex_dir).record(&stamps)?;
            stage_pointers(repo, &pointers)?;
        }
        Ok(())
    };
    if present_keys.len() > JOURNAL_MAX {
        // Log the content first (with the link blobs in the same pack), then stage: a crash
        // in between leaves untracked annex links, which the next add stages.
        set_presence(
            repo,
            repo.uuid(),
            &present_keys,
            Presence::Present,
            &mut blobs,
        )?;
        stage_all()?;
    } else {
        // A few keys (the daemon's usual case): their logs go into the journal first, which
        // survives a crash and is read by git-annex too; then the branch commit and the
        // staging run at the same time.
        let lock = repo.branch.lock_journal()?;
        for (path, content) in
            presence_changes(repo, repo.uuid(), &present_keys, Presence::Present)?
        {
            repo.branch.write(&lock, &path, &content)?;
        }
        let (branch, staged) = std::thread::scope(|s| {
            // The thread owns the lock and lets it go as soon as the branch is committed: the
            // clean filter that staging runs may need it (a file changed since it was hashed).
            let branch = s.spawn(move || {
                let r =
                    repo.branch
                        .commit_changes(&lock, &Default::default(), &mut blobs, "update");
                drop(lock);
                r
            });
            let staged = stage_all();
            (branch.join(), staged)
        });
        staged?;
        branch.map_err(|_| Error::Protocol("the branch commit panicked".into()))??;
    }
    Ok(summary)
}

/// Up to this many keys, an add records them through the journal and commits the branch while
/// staging; more go straight into one branch commit (thousands of journal files cost more).
const JOURNAL_MAX: usize = 64;

/// Opens a work-tree file for ingesting (never following a symlink) and stamps it.
fn open_regular(abs: &Path) -> Result<(std::fs::File, std::fs::Metadata, StatStamp)> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(abs)
        .ctx("opening", abs)?;
    let md = f.metadata().ctx("reading", abs)?;
    if !md.is_file() {
        return Err(Error::Unsupported(format!(
            "{} is no longer a regular file",
            abs.display()
        )));
    }
    let stamp = StatStamp::of(&md);
    Ok((f, md, stamp))
}

/// After reading `n` bytes: the file must be the same inode, unchanged, and still at its path;
/// otherwise the hash is void. Returns the metadata after reading.
fn check_unchanged(
    f: &std::fs::File,
    abs: &Path,
    before: &StatStamp,
    n: u64,
) -> Result<std::fs::Metadata> {
    let md = f.metadata().ctx("reading", abs)?;
    let after = StatStamp::of(&md);
    let now_at_path = std::fs::symlink_metadata(abs)
        .map(|m| (m.dev(), m.ino()))
        .ok();
    if *before != after || n != after.size || now_at_path != Some((after.dev, after.ino)) {
        return Err(Error::Protocol(format!(
            "{} changed while it was being added; run ferry add again once it is stable",
            abs.display()
        )));
    }
    Ok(md)
}

/// Hashes one file and moves it into the store, leaving an annex symlink in its place.
fn ingest_one(
    store: &crate::store::Store,
    tmpdir: &Path,
    top: &Path,
    rel: &[u8],
    size: u64,
    backend: Backend,
) -> Result<(Key, u64)> {
    let abs = top.join(os(rel));
    let (mut f, _, before) = open_regular(&abs)?;
    let (hex, n) = hash_file(backend, &mut f, size).ctx("reading", &abs)?;
    let after = StatStamp::of(&check_unchanged(&f, &abs, &before, n)?);
    let key = backend.key(n, &hex, rel);
    // The link is made before the content moves: it is what needs new space (an inode and a
    // block), so a full disk stops us here with nothing changed.
    let target = link_target(rel, &key);
    let tmp = make_temp_symlink(tmpdir, &abs, &target)?;
    let ingested = match store.ingest_hardlink(&abs, &key, &after) {
        Err(Error::Unsupported(_)) => store.ingest_copy(&abs, &key, backend),
        r => r,
    };
    if let Err(e) = ingested {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    put_link(&tmp, &abs, &target)?;
    Ok((key, n))
}

/// Ingests one file as an unlocked file: the work-tree file stays as it is; the store gets a
/// copy (temp file, fsync, rename), or with `thin` a hard link. The key is computed over exactly
/// the bytes copied, and the file's stat is checked around it.
fn ingest_unlocked(
    store: &crate::store::Store,
    top: &Path,
    rel: &[u8],
    size: u64,
    backend: Backend,
    thin: bool,
) -> Result<Ingest> {
    let abs = top.join(os(rel));
    let (mut f, _, before) = open_regular(&abs)?;
    let (key, n, tmp) = if thin {
        let (hex, n) = hash_file(backend, &mut f, size).ctx("reading", &abs)?;
        (backend.key(n, &hex, rel), n, None)
    } else {
        let dir = store.tmp_dir()?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir).ctx("creating temp file in", &dir)?;
        let mut h = crate::hash::Hasher::new(backend);
        let mut buf = vec![0u8; (size as usize + 1).clamp(4096, 1 << 20)];
        let mut n = 0u64;
        loop {
            let got = match f.read(&mut buf) {
                Ok(0) => break,
                Ok(g) => g,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(format!("reading {}", abs.display()), e)),
            };
            h.update(&buf[..got]);
            tmp.write_all(&buf[..got]).ctx("writing", tmp.path())?;
            n += got as u64;
        }
        (backend.key(n, &h.finish_hex(), rel), n, Some(tmp))
    };
    let after_md = check_unchanged(&f, &abs, &before, n)?;
    let after = StatStamp::of(&after_md);
    let temp = match tmp {
        Some(tmp) => {
            let (_, path) = tmp
                .keep()
                .map_err(|e| Error::io("keeping temp file", e.error))?;
            Some(path)
        }
        None => {
            store.ingest_hardlink_thin(&abs, &key, &after)?;
            None
        }
    };
    Ok(Ingest {
        key,
        bytes: n,
        unlocked: Some(Stamp::of(&after_md)),
        temp,
    })
}

/// Stages unlocked files: git runs the content through ferry's clean filter, which finds the
/// file's stat in the inode cache (recorded just before) and answers with the pointer without
/// hashing again; the index gets the pointer and the file's stat data in one step.
/// `annex.largefiles=anything` keeps the path annexed even if it changed in between (then the
/// filter hashes the new content).
fn stage_pointers(repo: &Repo, pointers: &[(Vec<u8>, Key)]) -> Result<()> {
    let paths: Vec<Vec<u8>> = pointers.iter().map(|(p, _)| p.clone()).collect();
    stage_with(repo, &paths, "anything")
}

/// The id git gives a blob with this content.
pub fn git_blob_id(content: &[u8]) -> String {
    crate::git::object_id("blob", content)
}

/// Whether an error means the disk (or quota) is full.
pub fn is_disk_full(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)))
}

/// Temp names of links being made; never user data, so leftovers of a killed run are removed.
const TEMP_LINK_PREFIX: &str = ".ferry-link.";

fn is_temp_link_name(rel: &[u8]) -> bool {
    let base = rel.rsplit(|&b| b == b'/').next().unwrap_or(rel);
    base.starts_with(TEMP_LINK_PREFIX.as_bytes()) && base.ends_with(b".tmp")
}

/// Creates a symlink to `target` under a temp name in `tmpdir` (`.git/annex/tmp`, so the work
/// tree never shows half-made links); returns the temp path.
fn make_temp_symlink(tmpdir: &Path, path: &Path, target: &[u8]) -> Result<PathBuf> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let tmp: PathBuf = tmpdir.join(format!(
        "{TEMP_LINK_PREFIX}{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let name =
        String::from_utf8_lossy(path.file_name().map(OsStrExt::as_bytes).unwrap_or_default())
            .into_owned();
    let fail = |e: std::io::Error| Error::io(format!("cannot make the annex link for {name}"), e);
    if let Err(e) = std::os::unix::fs::symlink(os(target), &tmp) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(fail(e));
        }
        // Left over from a killed run with the same pid: replace it.
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(os(target), &tmp).map_err(fail)?;
    }
    Ok(tmp)
}

/// Renames the temp link over `path`. If the work tree is on another file system than `.git`,
/// the link is remade next to `path` first.
fn put_link(tmp: &Path, path: &Path, target: &[u8]) -> Result<()> {
    let fail = |e: std::io::Error| {
        Error::io(
            format!("replacing {} with its annex link", path.display()),
            e,
        )
    };
    match std::fs::rename(tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let _ = std::fs::remove_file(tmp);
            let dir = path.parent().unwrap_or(Path::new("."));
            let local = make_temp_symlink(dir, path, target)?;
            std::fs::rename(&local, path).map_err(|e| {
                let _ = std::fs::remove_file(&local);
                fail(e)
            })
        }
        Err(e) => {
            let _ = std::fs::remove_file(tmp);
            Err(fail(e))
        }
    }
}

/// Annexes the file at `rel` as a locked file (hash, link into the store, replace by the
/// symlink); returns its key. Used by `lock` for modified unlocked files.
pub(crate) fn ingest_locked(
    store: &crate::store::Store,
    top: &Path,
    rel: &[u8],
    size: u64,
    backend: Backend,
) -> Result<Key> {
    let tmpdir = store.tmp_dir()?;
    ingest_one(store, &tmpdir, top, rel, size, backend).map(|(k, _)| k)
}

/// Atomically replaces `path` by a symlink to `target`.
pub(crate) fn replace_with_link(tmpdir: &Path, path: &Path, target: &[u8]) -> Result<()> {
    replace_with_symlink(tmpdir, path, target)
}

/// Atomically replaces `path` by a symlink to `target`.
fn replace_with_symlink(tmpdir: &Path, path: &Path, target: &[u8]) -> Result<()> {
    let tmp = make_temp_symlink(tmpdir, path, target)?;
    put_link(&tmp, path, target)
}

/// Stages paths with one `git update-index`. Waits a little for another git's `index.lock`.
pub(crate) fn stage(repo: &Repo, paths: &[Vec<u8>]) -> Result<()> {
    stage_with(repo, paths, "nothing")
}

/// [`stage`], telling the annex clean filter (if git runs it) what annex.largefiles to apply.
fn stage_with(repo: &Repo, paths: &[Vec<u8>], largefiles: &str) -> Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let mut input = Vec::new();
    for p in paths {
        input.extend_from_slice(p);
        input.push(0);
    }
    // annex.largefiles=nothing: if git-annex's clean filter is configured, files we decided
    // to put in git must go to git.
    let setting = format!("annex.largefiles={largefiles}");
    let r = repo.git.run_index(
        [
            "-c",
            setting.as_str(),
            "update-index",
            "--add",
            "--remove",
            "-z",
            "--stdin",
        ],
        &input,
    );
    match r {
        Ok(_) => Ok(()),
        Err(Error::Git { command, stderr }) => Err(Error::Git {
            command,
            stderr: format!(
                "{stderr}\n(the content is safe in the store; run ferry add again to stage it)"
            ),
        }),
        Err(e) => Err(e),
    }
}

/// Sets `uuid`'s presence for each key where it differs, with one branch commit at the end.
/// `blobs` are written into the same pack (see [`crate::branch::Branch::commit_changes`]).
pub fn set_presence(
    repo: &Repo,
    uuid: &str,
    keys: &[Key],
    status: Presence,
    blobs: &mut dyn Iterator<Item = Vec<u8>>,
) -> Result<()> {
    let mut blobs = blobs.peekable();
    if keys.is_empty() && blobs.peek().is_none() {
        return Ok(());
    }
    let lock = repo.branch.lock_journal()?;
    let changes = presence_changes(repo, uuid, keys, status)?;
    repo.branch
        .commit_changes(&lock, &changes, &mut blobs, "update")?;
    Ok(())
}

/// The location logs that change when `uuid` gets `status` for `keys`: branch path → new
/// content (logs already saying so are left out).
fn presence_changes(
    repo: &Repo,
    uuid: &str,
    keys: &[Key],
    status: Presence,
) -> Result<std::collections::BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut keys = keys.to_vec();
    keys.sort();
    keys.dedup();
    let paths: Vec<Vec<u8>> = keys.iter().map(location_log_path).collect();
    let logs = repo.branch.read_many(&paths)?;
    let now = repo.branch.now();
    let mut changes = std::collections::BTreeMap::new();
    for (path, content) in paths.into_iter().zip(logs) {
        let mut log = LocationLog::parse(&content.unwrap_or_default());
        if log.status_of(uuid) == Some(status) {
            continue;
        }
        log.set(uuid, status, now);
        changes.insert(path, log.render());
    }
    Ok(changes)
}
