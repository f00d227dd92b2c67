//! `get`, `copy`, `move`: content between this repository and its remotes, one key at a time,
//! on up to `jobs` threads. The same functions serve the CLI (called once) and, later, the
//! daemon's transfer workers: no global state, progress and results through [`Events`],
//! cancellation through a flag.
//!
//! Bookkeeping follows git-annex: a download records "present here" in our location log, an
//! upload records "present there" in ours and (for a git remote) the remote records it in its
//! own log. Logs are written to the journals and committed once at the end.

use crate::annexed::{AnnexedFile, annexed_files};
use crate::error::Result;
use crate::key::Key;
use crate::lock::LockKind;
use crate::logs::Presence;
use crate::remote::{Progress, Remote, TransferError, Unusable};
use crate::repo::Repo;
use crate::transfer::bwlimit::{Limits, Throttle};
use crate::transfer::{Direction, TransferGuard, lock_content, log_presence, receive_into};
use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// What to do with each file's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Get content that is not here, from the given remote or the cheapest one that has it.
    Get { from: Option<String> },
    /// Send content that is here to the remote.
    CopyTo(String),
    /// Send, then drop here (only if the drop is safe).
    MoveTo(String),
    /// Get from the remote, then drop it there (only if safe).
    MoveFrom(String),
}

impl Action {
    pub fn command(&self) -> &'static str {
        match self {
            Action::Get { from: None } => "get",
            Action::Get { from: Some(_) } => "copy",
            Action::CopyTo(_) => "copy",
            Action::MoveTo(_) | Action::MoveFrom(_) => "move",
        }
    }
}

pub struct ContentOptions<'a> {
    /// Parallel transfers.
    pub jobs: usize,
    /// Set to stop: running transfers end at their next chunk (partial files are kept for a
    /// resume), no new ones start.
    pub cancel: &'a AtomicBool,
    /// Bandwidth limits (`annex.bwlimit`, `remote.NAME.annex-bwlimit`), shared by every
    /// transfer.
    pub limits: &'a Limits,
}

impl ContentOptions<'_> {
    /// The bandwidth limit of a transfer with `remote`.
    fn throttle<'r>(&'r self, remote: &'r dyn Remote, direction: Direction) -> Throttle<'r> {
        self.limits.throttle(remote.name(), direction)
    }
}

/// The result for one file.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FileOutcome {
    #[serde(skip)]
    pub path: Vec<u8>,
    pub key: String,
    pub success: bool,
    /// What was done ("from origin", "to backup", ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Bytes of an earlier partial transfer that were kept, not sent again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<u64>,
    /// Bytes moved by this transfer.
    pub bytes: u64,
}

impl FileOutcome {
    /// A success for `f`, saying what was done.
    pub fn done(f: &AnnexedFile, note: impl Into<String>) -> FileOutcome {
        FileOutcome {
            path: f.path.clone(),
            key: f.key.to_string(),
            success: true,
            note: Some(note.into()),
            ..Default::default()
        }
    }

    /// A transfer of `f` that moved `bytes`, after `resumed_from` bytes kept from before.
    fn moved(f: &AnnexedFile, note: impl Into<String>, resumed_from: u64, bytes: u64) -> Self {
        FileOutcome {
            resumed_from: (resumed_from > 0).then_some(resumed_from),
            bytes,
            ..FileOutcome::done(f, note)
        }
    }

    /// A failure for `f`.
    pub fn failed(f: &AnnexedFile, e: impl std::fmt::Display) -> FileOutcome {
        FileOutcome {
            path: f.path.clone(),
            key: f.key.to_string(),
            success: false,
            error: Some(e.to_string()),
            ..Default::default()
        }
    }
}

/// Counts outcomes into a [`Summary`] and hands each to the [`Events`].
struct Tally<'e> {
    summary: Mutex<Summary>,
    events: &'e dyn Events,
}

impl<'e> Tally<'e> {
    fn new(events: &'e dyn Events) -> Self {
        Tally {
            summary: Mutex::new(Summary::default()),
            events,
        }
    }

    fn report(&self, o: FileOutcome) {
        let mut s = self.summary.lock().unwrap();
        if o.success {
            s.ok += 1;
        } else {
            s.failed += 1;
        }
        drop(s);
        self.events.done(&o);
    }

    fn summary(self) -> Summary {
        self.summary.into_inner().unwrap()
    }
}

/// Where results and progress go. Called from worker threads.
pub trait Events: Sync {
    /// The same transfer is already running (ferry elsewhere, or git-annex): waiting for it.
    fn waiting(&self, _file: &AnnexedFile) {}
    /// A transfer started (`what` is e.g. "from origin").
    fn started(&self, _file: &AnnexedFile, _what: &str) {}
    /// Bytes of the key in place at the receiving end (resumed bytes included).
    fn progress(&self, _file: &AnnexedFile, _done: u64) {}
    /// The file is done (files with nothing to do are not reported).
    fn done(&self, outcome: &FileOutcome);
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub ok: usize,
    pub failed: usize,
}

pub(crate) fn find_remote<'r>(
    remotes: &'r [Box<dyn Remote>],
    unusable: &[Unusable],
    name: &str,
) -> Result<&'r dyn Remote> {
    if let Some(r) = remotes.iter().find(|r| r.name() == name) {
        return Ok(r.as_ref());
    }
    if let Some(u) = unusable.iter().find(|u| u.name == name) {
        return Err(TransferError::Unavailable {
            remote: name.to_string(),
            why: u.why.clone(),
        }
        .into());
    }
    Err(TransferError::Other(format!(
        "there is no remote named {name:?} (see git remote -v; add one with git remote add {name} PATH)"
    ))
    .into())
}

/// Runs `action` on every annexed file under `pathspecs`.
pub fn transfer(
    repo: &Repo,
    remotes: &[Box<dyn Remote>],
    unusable: &[Unusable],
    pathspecs: &[Vec<u8>],
    action: &Action,
    opts: &ContentOptions,
    events: &dyn Events,
) -> Result<Summary> {
    // A named remote must exist before anything starts.
    let named = match action {
        Action::Get { from: Some(n) }
        | Action::CopyTo(n)
        | Action::MoveTo(n)
        | Action::MoveFrom(n) => Some(find_remote(remotes, unusable, n)?),
        Action::Get { from: None } => None,
    };
    if let (Some(r), Action::CopyTo(_) | Action::MoveTo(_) | Action::MoveFrom(_)) = (named, action)
        && r.readonly()
    {
        return Err(readonly_error(r));
    }
    // One transfer per key: other files with the same content are served by it (unlocked
    // ones are populated for the key), so parallel workers never wait on each other.
    let all = annexed_files(&repo.git, pathspecs)?;
    let policy = match action {
        Action::MoveTo(_) | Action::MoveFrom(_) => Some(crate::ops::drop::DropPolicy::load(
            repo,
            &all,
            crate::annexed::whole_tree(pathspecs),
        )?),
        _ => None,
    };
    let files = one_per_key(all);
    let policy = policy.as_ref();
    let run_one = |f: &AnnexedFile| -> Option<FileOutcome> {
        if opts.cancel.load(Ordering::Relaxed) {
            return None;
        }
        let r = match action {
            Action::Get { .. } => get_one(repo, remotes, unusable, named, f, opts, events),
            Action::CopyTo(_) => put_one(repo, named.unwrap(), f, opts, events),
            Action::MoveTo(_) => put_one(repo, named.unwrap(), f, opts, events).and_then(|o| {
                // Already there or just sent: either way the copy here goes, if that is safe.
                let dropped = crate::ops::drop::drop_here(repo, remotes, policy.unwrap(), &f.key)
                    .map_err(|e| {
                    TransferError::Other(format!(
                        "the content is in {} now, but the copy here was kept: {e}",
                        named.unwrap().name()
                    ))
                })?;
                if !dropped {
                    return Ok(o);
                }
                let mut o = o.unwrap_or_else(|| {
                    FileOutcome::done(f, format!("already in {}", named.unwrap().name()))
                });
                o.note = Some(format!("{}, dropped here", o.note.unwrap_or_default()));
                Ok(Some(o))
            }),
            Action::MoveFrom(_) => {
                let r = named.unwrap();
                get_one(repo, remotes, unusable, Some(r), f, opts, events).and_then(|o| {
                    if repo.store().find(&f.key).is_none() || !r.check_present(&f.key)? {
                        return Ok(o);
                    }
                    crate::ops::drop::drop_from(repo, remotes, policy.unwrap(), r, &f.key)
                        .map_err(|e| {
                            TransferError::Other(format!(
                                "the content is here now, but the copy in {} was kept: {e}",
                                r.name()
                            ))
                        })?;
                    let dropped = format!("dropped from {}", r.name());
                    let o = match o {
                        Some(mut o) => {
                            o.note = Some(format!("{}, {dropped}", o.note.unwrap_or_default()));
                            o
                        }
                        None => FileOutcome::done(f, dropped),
                    };
                    Ok(Some(o))
                })
            }
        };
        r.unwrap_or_else(|e| Some(FileOutcome::failed(f, e)))
    };
    let tally = Tally::new(events);
    run_pool(&files, opts.jobs, |f| {
        if let Some(o) = run_one(f) {
            tally.report(o);
        }
    });
    finish_bookkeeping(repo, remotes)?;
    Ok(tally.summary())
}

pub(crate) fn readonly_error(r: &dyn Remote) -> crate::Error {
    TransferError::Other(format!(
        "remote {} is read-only (remote.{}.annex-readonly=true): content is never stored to or removed from it",
        r.name(),
        r.name()
    ))
    .into()
}

/// Commits the location logs written during a command, here and in the remotes.
pub fn finish_bookkeeping(repo: &Repo, remotes: &[Box<dyn Remote>]) -> Result<()> {
    let mut first_err = None;
    for r in remotes {
        if let Err(e) = r.flush() {
            first_err.get_or_insert(e);
        }
    }
    repo.branch.commit(None, "update")?;
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn get_one(
    repo: &Repo,
    remotes: &[Box<dyn Remote>],
    unusable: &[Unusable],
    from: Option<&dyn Remote>,
    f: &AnnexedFile,
    opts: &ContentOptions,
    events: &dyn Events,
) -> Result<Option<FileOutcome>> {
    if repo.store().find(&f.key).is_some() {
        return Ok(None);
    }
    let holders: HashSet<String> = repo
        .branch
        .location_log(&f.key)?
        .present()
        .into_iter()
        .collect();
    let candidates: Vec<&dyn Remote> = match from {
        Some(r) => vec![r],
        None => remotes
            .iter()
            .filter(|r| holders.contains(r.uuid()))
            .map(|r| r.as_ref())
            .collect(),
    };
    match download_first(repo, candidates, f, opts, events) {
        Some(r) => r.map(Some),
        None => Err(no_source_error(repo, unusable, &holders)?),
    }
}

/// Downloads `f` from the first of `candidates` that succeeds (all errors are reported when
/// none does); `None` when there is no candidate.
fn download_first<'r>(
    repo: &Repo,
    candidates: impl IntoIterator<Item = &'r dyn Remote>,
    f: &AnnexedFile,
    opts: &ContentOptions,
    events: &dyn Events,
) -> Option<Result<FileOutcome>> {
    let mut errors = Vec::new();
    for r in candidates {
        match download(repo, r, f, opts, events) {
            Ok(o) => return Some(Ok(o)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    (!errors.is_empty()).then(|| Err(TransferError::Other(errors.join("; ")).into()))
}

fn no_source_error(
    repo: &Repo,
    unusable: &[Unusable],
    holders: &HashSet<String>,
) -> Result<crate::Error> {
    if holders.is_empty() {
        return Ok(TransferError::Other(
            "no repository is known to have this content (not in any location log)".into(),
        )
        .into());
    }
    let descs = repo.uuid_descriptions()?;
    let names = repo.remote_names()?;
    let mut where_: Vec<String> = holders
        .iter()
        .map(|u| {
            let d = descs.get(u).cloned().unwrap_or_default();
            match names.get(u) {
                Some(n) => {
                    let why = unusable
                        .iter()
                        .find(|x| &x.name == n)
                        .map(|x| format!(": {}", x.why))
                        .unwrap_or_default();
                    format!("{u} -- {d} [remote {n}{why}]")
                }
                None => format!("{u} -- {d}"),
            }
        })
        .collect();
    where_.sort();
    Ok(TransferError::Other(format!(
        "no usable remote has this content; it is in: {}. Add one of these repositories as a remote (git remote add NAME PATH) and try again",
        where_.join(", ")
    ))
    .into())
}

/// Registers the transfer (git-annex's info file and lock). When the same transfer already runs
/// (ferry elsewhere, or git-annex), says so and waits for it; a cancel while waiting is an error.
/// Runs one file's transfer `body` as git-annex sees it: a transfer info file (waiting while
/// another process moves the same key), byte progress to it and to `events`, the bandwidth
/// limit for the direction, and a failure record if it fails.
fn tracked<T>(
    (repo, remote, f, opts, events): (
        &Repo,
        &dyn Remote,
        &AnnexedFile,
        &ContentOptions,
        &dyn Events,
    ),
    direction: Direction,
    note: &str,
    body: impl FnOnce(&mut Progress) -> Result<T>,
) -> Result<T> {
    let mut guard = begin_transfer(repo, direction, remote, f, opts, events)?;
    events.started(f, note);
    let r = {
        let mut cb = |n: u64| {
            guard.update(n);
            events.progress(f, n);
        };
        let mut progress = Progress::new(&f.key, opts.cancel, &mut cb)
            .throttled(Some(opts.throttle(remote, direction)));
        body(&mut progress)
    };
    guard.finish_with(&r);
    r
}

fn begin_transfer(
    repo: &Repo,
    direction: Direction,
    remote: &dyn Remote,
    f: &AnnexedFile,
    opts: &ContentOptions,
    events: &dyn Events,
) -> Result<TransferGuard> {
    let begin = |wait| {
        TransferGuard::begin(
            &repo.annex_dir(),
            direction,
            remote.uuid(),
            &f.key,
            &f.path,
            repo.branch.now(),
            wait,
            opts.cancel,
        )
    };
    let guard = match begin(false)? {
        Some(g) => Some(g),
        None => {
            events.waiting(f);
            begin(true)?
        }
    };
    guard.ok_or_else(|| TransferError::Cancelled(f.key.to_string()).into())
}

/// Downloads `f`'s content from `remote` into this repository.
pub fn download(
    repo: &Repo,
    remote: &dyn Remote,
    f: &AnnexedFile,
    opts: &ContentOptions,
    events: &dyn Events,
) -> Result<FileOutcome> {
    remote.check_available()?;
    let store = repo.store();
    let partial = crate::remote::key_component(&f.key)
        .ok()
        .and_then(|kc| std::fs::metadata(repo.annex_dir().join("tmp").join(kc)).ok())
        .map_or(0, |m| m.len());
    crate::transfer::check_free_space(repo, &f.key, partial)?;
    let note = format!("from {}", remote.name());
    let r = tracked(
        (repo, remote, f, opts, events),
        Direction::Download,
        &note,
        |progress| {
            receive_into(&store, &f.key, progress, &mut |off, sink, p| {
                remote.retrieve(&f.key, off, sink, p)
            })
        },
    )?;
    log_presence(repo, &f.key, repo.uuid(), Presence::Present)?;
    let mut outcome = FileOutcome::moved(f, note, r.resumed_from, r.transferred);
    if !repo.is_bare()
        && let Err(e) = crate::ops::unlock::populate(repo, &f.key)
    {
        outcome.note = Some(format!(
            "{}; the content is here, but unlocked files could not be updated: {e}",
            outcome.note.unwrap_or_default()
        ));
    }
    Ok(outcome)
}

fn put_one(
    repo: &Repo,
    remote: &dyn Remote,
    f: &AnnexedFile,
    opts: &ContentOptions,
    events: &dyn Events,
) -> Result<Option<FileOutcome>> {
    let store = repo.store();
    if store.find(&f.key).is_none() {
        return Ok(None); // nothing to send: skipped quietly, as git-annex does
    }
    remote.check_available()?;
    if remote.check_present(&f.key)? {
        log_presence(repo, &f.key, remote.uuid(), Presence::Present)?;
        return Ok(None);
    }
    upload(repo, remote, f, opts, events).map(Some)
}

/// Uploads `f`'s content (which must be here) to `remote`.
pub fn upload(
    repo: &Repo,
    remote: &dyn Remote,
    f: &AnnexedFile,
    opts: &ContentOptions,
    events: &dyn Events,
) -> Result<FileOutcome> {
    let store = repo.store();
    // Keep the content from being dropped here while it is being sent.
    let Some(_keep) = lock_content(&store, &f.key, LockKind::Shared)? else {
        return Err(TransferError::Other(format!(
            "the content of {} is not here (or is being dropped right now)",
            String::from_utf8_lossy(&f.path)
        ))
        .into());
    };
    let obj = store
        .find(&f.key)
        .ok_or_else(|| TransferError::Other("content vanished".into()))?;
    let note = format!("to {}", remote.name());
    let (stored, done) = tracked(
        (repo, remote, f, opts, events),
        Direction::Upload,
        &note,
        |progress| {
            remote
                .store(&f.key, &obj, progress)
                .map(|s| (s, progress.done()))
        },
    )?;
    log_presence(repo, &f.key, remote.uuid(), Presence::Present)?;
    Ok(FileOutcome::moved(
        f,
        note,
        stored.resumed_from,
        done.saturating_sub(stored.resumed_from),
    ))
}

/// [`download`] for a batch of small files from one remote: each is received and verified,
/// then the whole batch is flushed and moved into the store at once
/// ([`crate::transfer::ingest_pending`]), recorded, and the unlocked files are populated in
/// one step. One result per file, in order.
pub fn download_many(
    repo: &Repo,
    remote: &dyn Remote,
    files: &[&AnnexedFile],
    opts: &ContentOptions,
    events: &dyn Events,
) -> Vec<Result<FileOutcome>> {
    if let Err(e) = remote.check_available() {
        return crate::remote::fail_all(files.len(), &e);
    }
    let store = repo.store();
    let note = format!("from {}", remote.name());
    let mut out: Vec<Option<Result<FileOutcome>>> = files.iter().map(|_| None).collect();
    let mut pending = Vec::new();
    let mut held = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let r = crate::transfer::check_free_space(repo, &f.key, 0)
            .and_then(|()| begin_transfer(repo, Direction::Download, remote, f, opts, events))
            .and_then(|mut guard| {
                events.started(f, &note);
                let mut cb = |n: u64| guard.update(n);
                let mut progress = Progress::new(&f.key, opts.cancel, &mut cb)
                    .throttled(Some(opts.throttle(remote, Direction::Download)));
                let r = crate::transfer::receive_verified(
                    &store,
                    &f.key,
                    &mut progress,
                    &mut |off, sink, p| remote.retrieve(&f.key, off, sink, p),
                    false,
                );
                match r {
                    Ok(v) => Ok((v, guard)),
                    Err(e) => {
                        guard.failed(&e);
                        Err(e)
                    }
                }
            });
        match r {
            Ok((crate::transfer::Verified::AlreadyPresent, guard)) => {
                guard.finish(true);
                out[i] = Some(Ok(FileOutcome::done(f, "already here")));
            }
            Ok((crate::transfer::Verified::Pending(p), guard)) => {
                held.push((i, guard));
                pending.push(p);
            }
            Err(e) => out[i] = Some(Err(e)),
        }
    }
    let mut arrived = Vec::new();
    let ingested = crate::transfer::ingest_pending(&store, pending);
    let ok_keys: Vec<Key> = held
        .iter()
        .zip(&ingested)
        .filter(|(_, r)| r.is_ok())
        .map(|((i, _), _)| files[*i].key.clone())
        .collect();
    let logged = crate::transfer::log_presence_many(repo, &ok_keys, repo.uuid(), Presence::Present)
        .map_err(|e| e.to_string());
    for ((i, guard), r) in held.into_iter().zip(ingested) {
        let f = files[i];
        let r = r.and_then(|r| match &logged {
            Ok(()) => Ok(r),
            Err(e) => Err(TransferError::Other(e.clone()).into()),
        });
        guard.finish_with(&r);
        out[i] = Some(r.map(|r| {
            arrived.push(f.key.clone());
            FileOutcome::moved(f, &note, r.resumed_from, r.transferred)
        }));
    }
    if !repo.is_bare()
        && let Err(e) = crate::ops::unlock::populate_many(repo, &arrived)
    {
        for o in out.iter_mut().flatten().flatten() {
            o.note = Some(format!(
                "{}; the content is here, but unlocked files could not be updated: {e}",
                o.note.take().unwrap_or_default()
            ));
        }
    }
    for (o, f) in out.iter().zip(files) {
        if let Some(Ok(o)) = o {
            events.progress(f, f.key.size.unwrap_or(o.bytes));
        }
    }
    out.into_iter()
        .map(|r| r.expect("every file has a result"))
        .collect()
}

/// [`put_one`] for a batch of small files to one remote ([`Remote::store_many`]). `Ok(None)`
/// for a file with nothing to do (content not here, or already there).
pub fn upload_many(
    repo: &Repo,
    remote: &dyn Remote,
    files: &[&AnnexedFile],
    opts: &ContentOptions,
    events: &dyn Events,
) -> Vec<Result<Option<FileOutcome>>> {
    let mut out: Vec<Option<Result<Option<FileOutcome>>>> = files.iter().map(|_| None).collect();
    if let Err(e) = remote.check_available() {
        return crate::remote::fail_all(files.len(), &e);
    }
    let store = repo.store();
    let note = format!("to {}", remote.name());
    let mut items = Vec::new();
    let mut held = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let r = (|| -> Result<Option<_>> {
            // Keep the content from being dropped here while it is being sent.
            let Some(keep) = lock_content(&store, &f.key, LockKind::Shared)? else {
                return Ok(None);
            };
            let Some(obj) = store.find(&f.key) else {
                return Ok(None);
            };
            if remote.check_present(&f.key)? {
                log_presence(repo, &f.key, remote.uuid(), Presence::Present)?;
                return Ok(None);
            }
            let guard = begin_transfer(repo, Direction::Upload, remote, f, opts, events)?;
            events.started(f, &note);
            Ok(Some((obj, keep, guard)))
        })();
        match r {
            Ok(Some((obj, keep, guard))) => {
                items.push((f.key.clone(), obj));
                held.push((i, keep, guard));
            }
            Ok(None) => out[i] = Some(Ok(None)),
            Err(e) => out[i] = Some(Err(e)),
        }
    }
    let throttle = opts.throttle(remote, Direction::Upload);
    let results = remote.store_many(&items, opts.cancel, Some(&throttle));
    let ok_keys: Vec<Key> = items
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_ok())
        .map(|((k, _), _)| k.clone())
        .collect();
    let logged =
        crate::transfer::log_presence_many(repo, &ok_keys, remote.uuid(), Presence::Present)
            .map_err(|e| e.to_string());
    for ((i, keep, guard), r) in held.into_iter().zip(results) {
        let f = files[i];
        let r = r.and_then(|stored| match &logged {
            Ok(()) => Ok(stored),
            Err(e) => Err(TransferError::Other(e.clone()).into()),
        });
        guard.finish_with(&r);
        drop(keep);
        out[i] = Some(r.map(|stored| {
            events.progress(f, f.key.size.unwrap_or(0));
            Some(FileOutcome::moved(
                f,
                &note,
                stored.resumed_from,
                f.key.size.unwrap_or(0).saturating_sub(stored.resumed_from),
            ))
        }));
    }
    out.into_iter()
        .map(|r| r.expect("every file has a result"))
        .collect()
}

/// The first file of each key: the same content under two names moves once.
pub(crate) fn one_per_key(files: Vec<AnnexedFile>) -> Vec<AnnexedFile> {
    let mut seen = HashSet::new();
    files
        .into_iter()
        .filter(|f| seen.insert(f.key.clone()))
        .collect()
}

/// Runs `f` on every item, on up to `jobs` threads.
fn run_pool<T: Sync>(items: &[T], jobs: usize, f: impl Fn(&T) + Sync) {
    let next = AtomicUsize::new(0);
    let workers = jobs.max(1).min(items.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    f(item);
                }
            });
        }
    });
}

/// `sync --content`: for every annexed file, what [`crate::ops::plan`] decides from preferred
/// content (everything everywhere when none is configured): downloads from the cheapest
/// reachable remote that has it, uploads to the remotes that want it, then drops from remotes
/// and here what is no longer wanted, each drop proven safe by [`crate::ops::drop`] (numcopies,
/// mincopies; never the last copy). Remotes that cannot be reached and content that no
/// reachable remote has are skipped quietly (the git-level sync reports unreachable remotes).
/// `only` limits the remotes (default: see [`crate::ops::plan::content_remotes`]); `paths` the
/// files (repo-relative; default: all).
pub fn sync_content(
    repo: &Repo,
    remotes: &[Box<dyn Remote>],
    only: &[String],
    paths: &[Vec<u8>],
    opts: &ContentOptions,
    events: &dyn Events,
) -> Result<Summary> {
    use crate::ops::plan::{Plan, Planner, content_remotes};
    let chosen: Vec<&dyn Remote> = content_remotes(repo, remotes, only)
        .into_iter()
        .filter(|r| r.check_available().is_ok())
        .collect();
    let prefs = crate::preferred::Preferences::load(repo)?;
    let all = annexed_files(&repo.git, paths)?;
    let policy = crate::ops::drop::DropPolicy::load(repo, &all, crate::annexed::whole_tree(paths))?;
    let planner = Planner::new(&prefs, repo.uuid(), &chosen, &policy.copies);
    let store = repo.store();
    let tally = Tally::new(events);
    let files = one_per_key(all);
    let plans = planner.plan_files(repo, &files)?;
    let planned: Vec<(AnnexedFile, Plan)> = files
        .into_iter()
        .zip(plans)
        .filter(|(_, p)| !p.is_empty())
        .collect();

    // 1. Get what here wants from the cheapest reachable remote that has it.
    run_pool(&planned, opts.jobs, |(f, plan)| {
        if !plan.download || opts.cancel.load(Ordering::Relaxed) || store.find(&f.key).is_some() {
            return;
        }
        let holders: HashSet<String> = match repo.branch.location_log(&f.key) {
            Ok(l) => l.present().into_iter().collect(),
            Err(e) => return tally.report(FileOutcome::failed(f, e)),
        };
        let sources = chosen
            .iter()
            .copied()
            .filter(|r| holders.contains(r.uuid()));
        match download_first(repo, sources, f, opts, events) {
            Some(Ok(o)) => tally.report(o),
            Some(Err(e)) => tally.report(FileOutcome::failed(f, e)),
            None => {}
        }
    });

    // 2. Send to every remote that wants it (when the content is here by now).
    let chosen = &chosen;
    let pairs: Vec<(&AnnexedFile, &dyn Remote)> = planned
        .iter()
        .flat_map(|(f, p)| p.upload.iter().map(move |&i| (f, chosen[i])))
        .collect();
    run_pool(&pairs, opts.jobs, |(f, r)| {
        if opts.cancel.load(Ordering::Relaxed) {
            return;
        }
        match put_one(repo, *r, f, opts, events) {
            Ok(Some(o)) => tally.report(o),
            Ok(None) => {}
            Err(e) => tally.report(FileOutcome::failed(f, e)),
        }
    });

    // 3. Drops, planned again on the locations the transfers actually left.
    let dropped = |f: &AnnexedFile, from: Option<&dyn Remote>, r: Result<bool>| {
        let note = match from {
            Some(r) => format!("dropped from {}", r.name()),
            None => "dropped here".to_string(),
        };
        match r {
            Ok(false) => {}
            Ok(true) => tally.report(FileOutcome::done(f, note)),
            Err(e) => tally.report(FileOutcome {
                note: Some(note.replace("dropped", "drop")),
                ..FileOutcome::failed(f, e)
            }),
        }
    };
    for (f, _) in &planned {
        if opts.cancel.load(Ordering::Relaxed) {
            break;
        }
        let plan = match planner.plan_file(repo, f) {
            Ok(p) => p,
            Err(e) => {
                tally.report(FileOutcome::failed(f, e));
                continue;
            }
        };
        for &i in &plan.drop_from {
            let r = chosen[i];
            dropped(
                f,
                Some(r),
                crate::ops::drop::drop_from(repo, remotes, &policy, r, &f.key),
            );
        }
        if plan.drop_here {
            dropped(
                f,
                None,
                crate::ops::drop::drop_here(repo, remotes, &policy, &f.key),
            );
        }
    }
    finish_bookkeeping(repo, remotes)?;
    Ok(tally.summary())
}
