//! The daemon's transfer queue: what content has to move, and the workers that move it.
//!
//! - The **planner** (fed with content rounds: the files a commit or merge touched, or
//!   everything) turns files into queue items: a download for content that is not here, an
//!   upload to each reachable remote that lacks content that is here ("flood" mode until
//!   preferred content refines it). Items are de-duplicated by (direction, key, remote).
//! - **Workers** take items: small content (at most [`SMALL`] bytes) goes in batches of up to
//!   [`BATCH`] files through one flush (`download_many` / `upload_many`); big content one file
//!   at a time with byte progress. `annex.jobs` workers (default 1) take big files first; one
//!   more worker only ever takes small files, so a new small file is never held up behind a
//!   big transfer.
//! - A download comes from the cheapest reachable remote the location log says has the
//!   content; when it fails, that source is avoided at the next attempt and another one is
//!   tried. A failed item waits (backoff from 1 s, doubling, up to 10 min) and is tried again,
//!   up to [`MAX_ATTEMPTS`] times.
//! - After each batch the location changes are committed to the git-annex branch (here and in
//!   local remotes) and a push is asked for, so the other clones learn of them promptly.
//! - The queue is published in the daemon's status (`ferry status`, `ferry transfers`).

use super::status::{Event, TransferEntry, TransfersStatus, now_ms};
use super::{PushMsg, Shared, WHOLE_TREE_ABOVE};
use crate::annexed::{AnnexedFile, annexed_files};
use crate::key::Key;
use crate::ops::content::{ContentOptions, Events, FileOutcome};
use crate::remote::{Remote, Remotes, TransferError};
use crate::repo::Repo;
use crate::transfer::bwlimit::Limits;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Content up to this size is "small": batched, and served by a worker of its own.
pub const SMALL: u64 = 1 << 20;
/// Most files in one batch.
const BATCH: usize = 256;
/// An item that failed this often is given up (until a later round queues it again).
const MAX_ATTEMPTS: u32 = 8;
const RETRY_BASE: Duration = Duration::from_secs(1);
const RETRY_CAP: Duration = Duration::from_secs(600);
/// When content another transfer is receiving is looked at again.
const IN_PROGRESS_RECHECK: Duration = Duration::from_millis(300);
/// How often the progress of a running big transfer is published.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// What a content round looks at.
pub(super) enum Round {
    /// Every annexed file (at start, and after a round that could not reach everything).
    All,
    /// The files that differ between two commits of the branch (a merge).
    Between(String, String),
    /// Files this clone just annexed, and the commit (HEAD) that holds them.
    Files(Vec<AnnexedFile>, String),
    /// git config changed: read the remotes again, and look at everything.
    Reload,
    /// The git-annex branch moved: plan the files whose keys' location logs changed, or every
    /// known file when preferred content, groups, numcopies or trust changed.
    Annex,
    /// Something every file's plan may depend on changed outside the git-annex branch (a
    /// committed `.gitattributes`): plan every known file again.
    Policy,
}

/// How often the planner looks at the git-annex branch when nothing told it to (changes made
/// while no event reached the daemon, e.g. in a remote's repository by hand).
const ANNEX_CHECK_EVERY: Duration = Duration::from_secs(60);

/// The annexed files as the planner last saw them, by path and by key: a change to a key's
/// location log, or to preferred content, is planned without listing the tree again.
#[derive(Default)]
struct FileCache {
    /// Holds every annexed file of HEAD (false until a full listing, and after a round that
    /// was skipped or failed, when some change may not have reached it).
    complete: bool,
    by_path: HashMap<Vec<u8>, AnnexedFile>,
    by_key: HashMap<Key, BTreeSet<Vec<u8>>>,
}

impl FileCache {
    fn reset(&mut self, files: &[AnnexedFile]) {
        self.by_path.clear();
        self.by_key.clear();
        for f in files {
            self.insert(f.clone());
        }
    }

    fn insert(&mut self, f: AnnexedFile) {
        self.remove(&f.path);
        self.by_key
            .entry(f.key.clone())
            .or_default()
            .insert(f.path.clone());
        self.by_path.insert(f.path.clone(), f);
    }

    fn remove(&mut self, path: &[u8]) {
        if let Some(old) = self.by_path.remove(path)
            && let Some(paths) = self.by_key.get_mut(&old.key)
        {
            paths.remove(path);
            if paths.is_empty() {
                self.by_key.remove(&old.key);
            }
        }
    }

    /// `paths` changed; `now` are those of them that are annexed now.
    fn update(&mut self, paths: &BTreeSet<Vec<u8>>, now: &[AnnexedFile]) {
        for p in paths {
            self.remove(p);
        }
        for f in now {
            self.insert(f.clone());
        }
    }

    fn with_paths(&self, paths: &BTreeSet<Vec<u8>>) -> Vec<AnnexedFile> {
        paths
            .iter()
            .filter_map(|p| self.by_path.get(p).cloned())
            .collect()
    }

    fn with_keys<'a>(&self, keys: impl IntoIterator<Item = &'a Key>) -> Vec<AnnexedFile> {
        keys.into_iter()
            .filter_map(|k| self.by_key.get(k))
            .flatten()
            .filter_map(|p| self.by_path.get(p).cloned())
            .collect()
    }
}

/// What changed on the git-annex branch between two of its commits.
#[derive(Debug, Default, PartialEq)]
struct AnnexChanges {
    /// Keys whose location log changed.
    keys: BTreeSet<Key>,
    /// Preferred content, groups, numcopies, trust or repositories changed: every file's plan
    /// may differ.
    policy: bool,
}

/// Reads the branch diff `from..to` (names only: no log is read).
fn annex_changes(repo: &Repo, from: &str, to: &str) -> crate::Result<AnnexChanges> {
    let out = repo.git.run([
        "diff-tree",
        "-r",
        "-z",
        "--name-only",
        "--no-renames",
        from,
        to,
    ])?;
    Ok(classify_annex_paths(
        out.split(|&c| c == 0).filter(|p| !p.is_empty()),
    ))
}

fn classify_annex_paths<'a>(paths: impl Iterator<Item = &'a [u8]>) -> AnnexChanges {
    const POLICY: &[&[u8]] = &[
        b"preferred-content.log",
        b"required-content.log",
        b"group.log",
        b"group-preferred-content.log",
        b"numcopies.log",
        b"mincopies.log",
        b"trust.log",
        b"uuid.log",
        b"remote.log",
    ];
    let mut c = AnnexChanges::default();
    for p in paths {
        if POLICY.contains(&p) {
            c.policy = true;
            continue;
        }
        // A location log: `<hashdir>/<hashdir>/<keyFile>.log` (other per-key logs have longer
        // suffixes: `.log.met`, `.log.web`, ...).
        let name = p.rsplit(|&b| b == b'/').next().unwrap_or(p);
        if p.iter().filter(|&&b| b == b'/').count() == 2
            && let Some(file) = name.strip_suffix(b".log")
            && let Ok(k) = Key::from_file_name(file)
        {
            c.keys.insert(k);
        }
    }
    c
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Dir {
    Download,
    Upload,
    /// Drop the copy in a remote that does not want it (once that is safe).
    DropFrom,
    /// Drop the copy here (not wanted here, and safe).
    DropHere,
}

#[derive(Clone)]
struct Item {
    dir: Dir,
    file: AnnexedFile,
    /// Upload target (a remote name); downloads pick their source when they run.
    remote: Option<String>,
    /// For a drop: what the planner found it needs when a file's attributes set numcopies or
    /// mincopies (the other files of the key included); the drop needs at least that.
    need: Option<crate::copies::Need>,
    attempts: u32,
    /// Download sources that failed for this item.
    avoid: Vec<String>,
    last_error: Option<String>,
}

type ItemId = (Dir, Key, String);

impl Item {
    fn id(&self) -> ItemId {
        (
            self.dir,
            self.file.key.clone(),
            self.remote.clone().unwrap_or_default(),
        )
    }
    /// Small content, and drops (which move no bytes), go in batches.
    fn small(&self) -> bool {
        matches!(self.dir, Dir::DropFrom | Dir::DropHere)
            || self.file.key.size.is_some_and(|s| s <= SMALL)
    }
    fn entry(&self) -> TransferEntry {
        TransferEntry {
            direction: match self.dir {
                Dir::Download => "download".into(),
                Dir::Upload => "upload".into(),
                Dir::DropFrom | Dir::DropHere => "drop".into(),
            },
            file: String::from_utf8_lossy(&self.file.path).into_owned(),
            key: self.file.key.to_string(),
            remote: self.remote.clone(),
            size: self.file.key.size,
            attempts: self.attempts,
            error: self.last_error.clone(),
            ..Default::default()
        }
    }
}

#[derive(Default)]
struct QState {
    small: VecDeque<Item>,
    large: VecDeque<Item>,
    delayed: Vec<(Instant, Item)>,
    /// Queued, delayed or running.
    known: HashSet<ItemId>,
    running: BTreeMap<u64, TransferEntry>,
    next_run: u64,
    stop: bool,
}

impl QState {
    fn queued(&self) -> usize {
        self.small.len() + self.large.len()
    }
}

/// The queue, shared by the planner and the workers.
pub(super) struct Queue {
    st: Mutex<QState>,
    cv: Condvar,
}

impl Queue {
    fn new() -> Queue {
        Queue {
            st: Mutex::new(QState::default()),
            cv: Condvar::new(),
        }
    }

    /// Adds items not already queued, delayed or running; returns how many were new.
    fn push(&self, items: Vec<Item>) -> usize {
        let mut st = self.st.lock().unwrap();
        let mut n = 0;
        for it in items {
            if !st.known.insert(it.id()) {
                continue;
            }
            n += 1;
            if it.small() {
                st.small.push_back(it);
            } else {
                st.large.push_back(it);
            }
        }
        drop(st);
        if n > 0 {
            self.cv.notify_all();
        }
        n
    }

    /// Waits for work: a batch of small items, or one big item (never for `small_only`).
    /// `None` once the queue is stopped.
    fn take(&self, small_only: bool) -> Option<(u64, Vec<Item>)> {
        let mut st = self.st.lock().unwrap();
        loop {
            if st.stop {
                return None;
            }
            let now = Instant::now();
            if st.delayed.iter().any(|(t, _)| *t <= now) {
                let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut st.delayed)
                    .into_iter()
                    .partition(|(t, _)| *t <= now);
                st.delayed = later;
                for (_, it) in due {
                    if it.small() {
                        st.small.push_back(it);
                    } else {
                        st.large.push_back(it);
                    }
                }
            }
            let batch = if !small_only && let Some(it) = st.large.pop_front() {
                vec![it]
            } else {
                let n = st.small.len().min(BATCH);
                st.small.drain(..n).collect()
            };
            if !batch.is_empty() {
                let id = st.next_run;
                st.next_run += 1;
                let started = now_ms();
                let mut entry = batch[0].entry();
                entry.started_ms = Some(started);
                entry.files = batch.len();
                st.running.insert(id, entry);
                return Some((id, batch));
            }
            let next = st.delayed.iter().map(|(t, _)| *t).min();
            st = match next {
                None => self.cv.wait(st).unwrap(),
                Some(t) => {
                    self.cv
                        .wait_timeout(st, t.saturating_duration_since(now))
                        .unwrap()
                        .0
                }
            };
        }
    }

    /// Ends a run: items that succeeded (or were given up) are forgotten, failed ones wait
    /// for their retry.
    fn finish(&self, run: u64, done: Vec<Item>, retry: Vec<(Instant, Item)>) {
        let mut st = self.st.lock().unwrap();
        st.running.remove(&run);
        for it in done {
            st.known.remove(&it.id());
        }
        st.delayed.extend(retry);
        drop(st);
        self.cv.notify_all();
    }

    fn progress(&self, run: u64, bytes: u64) {
        if let Some(e) = self.st.lock().unwrap().running.get_mut(&run) {
            // A transfer reports where it starts first; it goes back only to start over.
            if e.resumed_from.is_none_or(|r| bytes < r) {
                e.resumed_from = Some(bytes);
            }
            e.bytes = bytes;
        }
    }

    /// Nothing queued, waiting for a retry or running.
    fn idle(&self) -> bool {
        let st = self.st.lock().unwrap();
        st.queued() == 0 && st.delayed.is_empty() && st.running.is_empty()
    }

    fn stop(&self) {
        self.st.lock().unwrap().stop = true;
        self.cv.notify_all();
    }

    /// What is queued and running, for the status (the first few of each list).
    fn snapshot(&self) -> TransfersStatus {
        const SHOWN: usize = 50;
        let st = self.st.lock().unwrap();
        let mut retrying: Vec<TransferEntry> = st
            .delayed
            .iter()
            .take(SHOWN)
            .map(|(t, it)| {
                let mut e = it.entry();
                e.next_attempt_ms =
                    Some(now_ms() + t.saturating_duration_since(Instant::now()).as_millis() as u64);
                e
            })
            .collect();
        retrying.sort_by_key(|e| e.next_attempt_ms);
        TransfersStatus {
            queued: st.queued(),
            retrying_count: st.delayed.len(),
            running: st.running.values().cloned().collect(),
            next: st
                .small
                .iter()
                .chain(st.large.iter())
                .take(SHOWN)
                .map(Item::entry)
                .collect(),
            retrying,
        }
    }
}

/// What the planner and the workers share.
pub(super) struct Ctx {
    repo: Arc<Repo>,
    shared: Arc<Shared>,
    push_tx: Sender<PushMsg>,
    cancel: Arc<AtomicBool>,
    queue: Queue,
    /// The remotes content moves with, read again by each planning round.
    remotes: RwLock<Arc<Remotes>>,
    /// git's attribute files outside the work tree, found with the remotes (for the workers'
    /// drop policies: finding them costs two `git var`).
    outside: RwLock<Arc<crate::copies::OutsideFiles>>,
    /// Bandwidth limits, updated in place when git config changes.
    limits: Limits,
    last_publish: Mutex<Instant>,
    /// Items given up so far (a checkpoint is saved only once a full round queued them again).
    gave_up: AtomicU64,
}

impl Ctx {
    fn publish(&self) {
        *self.last_publish.lock().unwrap() = Instant::now();
        // Snapshot under the status lock: workers publish at once when they take work, and a
        // snapshot taken before another worker's must not be written after it.
        self.shared.update(|s| s.transfers = self.queue.snapshot());
    }
}

/// Starts the planner and the workers; returns their handles (they end when `rx` is closed
/// or `cancel` is set).
pub(super) fn start(
    repo: Arc<Repo>,
    rx: Receiver<Round>,
    push_tx: Sender<PushMsg>,
    shared: Arc<Shared>,
    cancel: Arc<AtomicBool>,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let jobs = repo
        .config()
        .get("annex.jobs")
        .and_then(|j| match j.as_str() {
            "cpus" => std::thread::available_parallelism().ok().map(|n| n.get()),
            n => n.parse::<usize>().ok(),
        })
        .unwrap_or(1)
        .clamp(1, 32);
    let ctx = Arc::new(Ctx {
        repo,
        shared,
        push_tx,
        cancel,
        queue: Queue::new(),
        remotes: RwLock::new(Arc::new(Vec::new())),
        outside: RwLock::new(Arc::default()),
        limits: Limits::default(),
        last_publish: Mutex::new(Instant::now()),
        gave_up: AtomicU64::new(0),
    });
    let mut handles = Vec::new();
    for i in 0..=jobs {
        let ctx = ctx.clone();
        // Worker 0 takes only small files.
        handles.push(
            std::thread::Builder::new()
                .name(format!("transfer {i}"))
                .spawn(move || worker(&ctx, i == 0))?,
        );
    }
    let planner_ctx = ctx.clone();
    handles.push(
        std::thread::Builder::new()
            .name("transfer planner".into())
            .spawn(move || {
                planner(&planner_ctx, rx);
                planner_ctx.queue.stop();
            })?,
    );
    Ok(handles)
}

/// Turns content rounds into queue items. Requests that arrive while a round is planned are
/// merged into the next one. A round that could not reach every remote makes the next one
/// look at everything. The git-annex branch is followed from the commit the last round saw:
/// only files whose keys' location logs changed are planned again (all known files when the
/// policy changed), from a cache of the tree's annexed files, so neither a copy made elsewhere
/// nor a new `wanted` expression needs a listing of the tree.
fn planner(ctx: &Ctx, rx: Receiver<Round>) {
    let repo = &ctx.repo;
    let log = |m: &str| (ctx.shared.log)(m);
    let mut all_next = false;
    // The remotes, read at the first round and again after git config changed (and with them
    // where git's attribute files outside the work tree are).
    let mut loaded: Option<(Arc<Remotes>, bool)> = None;
    let mut outside = crate::copies::OutsideFiles::default();
    let mut last_warnings: Vec<String> = Vec::new();
    let mut cache = FileCache::default();
    // The git-annex branch commit the last completed round planned against.
    let mut annex_seen: Option<String> = None;
    // The HEAD commit every change up to which has been planned.
    let mut head_planned: Option<String> = None;
    // Where the last run ended with everything planned and done: its first round goes on
    // from there instead of planning every file.
    let mut checkpoint = Checkpoint::load(repo);
    let mut written = checkpoint.clone();
    let mut planned_once = false;
    // Give-ups forgiven by the last full round (which queued those items again).
    let mut gave_up_seen = 0;
    let mut limits_seen = LimitsSeen::default();
    reload_limits(ctx, &mut limits_seen);
    loop {
        let first = match rx.recv_timeout(ANNEX_CHECK_EVERY) {
            Ok(r) => r,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Round::Annex,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut all = std::mem::take(&mut all_next) || !planned_once;
        let mut ranges = Vec::new();
        let mut known: Vec<AnnexedFile> = Vec::new();
        let mut head_now: Option<String> = None;
        let mut policy = false;
        for r in std::iter::once(first).chain(rx.try_iter()) {
            match r {
                Round::All => all = true,
                Round::Between(b, a) => {
                    head_now = Some(a.clone());
                    ranges.push((b, a));
                }
                Round::Files(f, head) => {
                    head_now = Some(head);
                    known.extend(f);
                }
                // A new remote, or one that was set to sync again, gets what it lacks.
                Round::Reload => {
                    loaded = None;
                    all = true;
                    checkpoint = None;
                    reload_limits(ctx, &mut limits_seen);
                }
                Round::Policy => policy = true,
                Round::Annex => {}
            }
        }
        if ctx.cancel.load(Ordering::Relaxed) {
            return;
        }
        // Until this round completes, the cache may miss a change.
        let cache_ok = std::mem::take(&mut cache.complete);
        // annex.synccontent=false: git only (a config change brings a full round).
        if crate::ops::plan::synccontent(repo) == Some(false) {
            continue;
        }
        if loaded.is_none() {
            match crate::remote::configured(repo) {
                Ok((remotes, unusable)) => {
                    outside = match crate::copies::OutsideFiles::find(repo) {
                        Ok(o) => o,
                        Err(e) => {
                            log(&format!("asking git for its attribute files failed: {e}"));
                            all_next = true;
                            continue;
                        }
                    };
                    *ctx.outside.write().unwrap() = Arc::new(outside.clone());
                    let remotes = Arc::new(remotes);
                    *ctx.remotes.write().unwrap() = remotes.clone();
                    loaded = Some((remotes, !unusable.is_empty()));
                }
                Err(e) => {
                    log(&format!("listing remotes for transfers failed: {e}"));
                    all_next = true;
                    continue;
                }
            }
        }
        let (remotes, some_unusable) = loaded.clone().expect("loaded above");
        if remotes.is_empty() {
            all_next = some_unusable;
            continue;
        }
        let gave_up = ctx.gave_up.load(Ordering::Relaxed);
        // At start, a checkpoint stands for a round that planned everything: what changed
        // since (commits, the git-annex branch) is all there is to plan.
        let mut resumed = false;
        if all
            && !planned_once
            && let Some(c) = checkpoint.take()
            && let Some(head) = c.usable(repo)
        {
            log(&format!(
                "continuing from the last complete round (HEAD {}, git-annex {}): planning only \
                 what changed since",
                short(&c.head),
                short(&c.annex)
            ));
            if head != c.head {
                ranges.push((c.head.clone(), head.clone()));
            }
            head_now = Some(head);
            annex_seen = Some(c.annex);
            all = false;
            resumed = true;
        }
        if all {
            // Everything is listed below: the HEAD read now is covered by it.
            head_now = repo.git.rev_parse("HEAD").ok().flatten();
        }
        // What the git-annex branch says changed since the last round.
        let annex_now = repo.git.rev_parse("refs/heads/git-annex").ok().flatten();
        let mut changes = AnnexChanges::default();
        if !all
            && let (Some(seen), Some(now)) = (&annex_seen, &annex_now)
            && seen != now
        {
            match annex_changes(repo, seen, now) {
                Ok(c) => changes = c,
                Err(_) => all = true,
            }
        }
        changes.policy |= policy;
        let mut paths: BTreeSet<Vec<u8>> = BTreeSet::new();
        if !all && !ranges.is_empty() {
            for (b, a) in &ranges {
                match repo
                    .git
                    .run(["diff-tree", "-r", "-z", "--name-only", "--no-renames", b, a])
                {
                    Ok(out) => paths.extend(
                        out.split(|&c| c == 0)
                            .filter(|p| !p.is_empty())
                            .map(<[u8]>::to_vec),
                    ),
                    Err(_) => all = true,
                }
            }
            all |= paths.len() > WHOLE_TREE_ABOVE;
            // A changed .gitattributes may change any file's numcopies.
            changes.policy |= paths.iter().any(|p| super::is_gitattributes(p));
        }
        // Without a complete cache, the files of changed keys (or every file, for a policy
        // change) are only known from a full listing. A cache is incomplete only at start or
        // after a round that failed, and such a round makes the next one plan everything
        // anyway (`all_next`), so listing without planning everything misses nothing.
        let listing = Instant::now();
        let mut relist = all || (!cache_ok && changes.policy);
        let mut listed_paths = None;
        if !relist && !cache_ok && !changes.keys.is_empty() {
            // Keys held by the changed files (a commit made while no daemon ran logs its new
            // keys too) need no full listing; only keys no changed file holds do.
            let l = if paths.is_empty() {
                Ok(Vec::new())
            } else {
                annexed_files(&repo.git, &paths.iter().cloned().collect::<Vec<_>>())
            };
            match l {
                Ok(l) => {
                    let held: HashSet<&Key> = l.iter().chain(&known).map(|f| &f.key).collect();
                    relist = changes.keys.iter().any(|k| !held.contains(k));
                    listed_paths = Some(l);
                }
                Err(_) => relist = true,
            }
        }
        let listed = if relist {
            annexed_files(&repo.git, &[])
        } else if let Some(l) = listed_paths {
            Ok(l)
        } else if paths.is_empty() {
            Ok(Vec::new())
        } else {
            annexed_files(&repo.git, &paths.iter().cloned().collect::<Vec<_>>())
        };
        let listed = match listed {
            Ok(f) => f,
            Err(e) => {
                log(&format!("listing annexed files for transfers failed: {e}"));
                all_next = true;
                continue;
            }
        };
        let listed_in = listing.elapsed();
        // The other files of the keys planned: a drop needs the highest numcopies of them all.
        let with_siblings = |cache: &FileCache, mut files: Vec<AnnexedFile>| {
            let keys: BTreeSet<&Key> = files.iter().map(|f| &f.key).collect();
            let siblings = cache.with_keys(keys);
            files.extend(siblings);
            files
        };
        let files = if relist {
            cache.reset(&listed);
            if all || changes.policy {
                listed
            } else {
                let mut files = cache.with_paths(&paths);
                files.extend(known);
                files.extend(cache.with_keys(&changes.keys));
                with_siblings(&cache, files)
            }
        } else {
            cache.update(&paths, &listed);
            for f in &known {
                cache.insert(f.clone());
            }
            if changes.policy {
                cache.by_path.values().cloned().collect()
            } else {
                let mut files = listed;
                files.extend(known);
                files.extend(cache.with_keys(&changes.keys));
                with_siblings(&cache, files)
            }
        };
        let mut files = files;
        if !all {
            // A file can be here both for its path and for its key.
            let mut seen = HashSet::new();
            files.retain(|f| seen.insert(f.path.clone()));
        }
        let (started, n) = (Instant::now(), files.len());
        // Every file of each key is among `files` when the cache holds every file.
        let whole = cache_ok || relist;
        if !files.is_empty()
            && !plan_round(
                ctx,
                repo,
                &remotes,
                files,
                whole,
                &outside,
                &mut last_warnings,
            )
        {
            all_next = true;
            continue;
        }
        if all {
            log(&format!(
                "planned all {n} annexed files ({} ms, listing included)",
                listed_in.as_millis() + started.elapsed().as_millis()
            ));
        } else if changes.policy {
            log(&format!(
                "preferred content, groups, numcopies or trust changed: planned {n} files again \
                 ({} ms)",
                started.elapsed().as_millis()
            ));
        } else if resumed {
            log(&format!(
                "planned {n} files changed since the last complete round ({} ms, listing \
                 included)",
                listed_in.as_millis() + started.elapsed().as_millis()
            ));
        }
        all_next |= some_unusable;
        // Complete again when this round started from a complete cache or listed everything.
        cache.complete = cache_ok || relist;
        annex_seen = annex_now;
        planned_once = true;
        if head_now.is_some() {
            head_planned = head_now;
        }
        if all {
            // Items given up before this round were queued again by it.
            gave_up_seen = gave_up;
        }
        // Everything planned so far is done: a restart can go on from here.
        if !all_next
            && ctx.gave_up.load(Ordering::Relaxed) == gave_up_seen
            && ctx.queue.idle()
            && let (Some(head), Some(annex)) = (&head_planned, &annex_seen)
        {
            let c = Checkpoint {
                head: head.clone(),
                annex: annex.clone(),
                config: Checkpoint::config_hash(repo),
            };
            if written.as_ref() != Some(&c) {
                match c.save(repo) {
                    Ok(()) => written = Some(c),
                    Err(e) => log(&format!("saving the planning checkpoint failed: {e}")),
                }
            }
        }
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(10)]
}

/// Where a daemon stood when everything it had planned was done: HEAD and the git-annex
/// branch as planned, and the git config then (`.git/annex/ferry/planned`). A daemon that
/// starts again plans only what changed since (a diff of each), not every file. It is not
/// used when git config changed (remotes, preferred-content settings), when the git-annex
/// journal holds changes not committed, or when either commit is gone; a transfer given up
/// removes it, so that a restart tries that transfer again.
#[derive(Clone, Debug, PartialEq)]
struct Checkpoint {
    head: String,
    annex: String,
    config: String,
}

impl Checkpoint {
    fn path(repo: &Repo) -> std::path::PathBuf {
        repo.annex_dir().join("ferry").join("planned")
    }

    fn load(repo: &Repo) -> Option<Checkpoint> {
        let text = std::fs::read_to_string(Self::path(repo)).ok()?;
        let mut fields: HashMap<&str, &str> = HashMap::new();
        for line in text.lines() {
            let (k, v) = line.split_once(' ')?;
            fields.insert(k, v);
        }
        let valid = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
        let c = Checkpoint {
            head: fields.get("head")?.to_string(),
            annex: fields.get("annex")?.to_string(),
            config: fields.get("config")?.to_string(),
        };
        (valid(&c.head) && valid(&c.annex) && valid(&c.config)).then_some(c)
    }

    /// The current HEAD when this checkpoint can stand for a full round now.
    fn usable(&self, repo: &Repo) -> Option<String> {
        if Self::config_hash(repo) != self.config || !repo.branch.journal_is_empty().ok()? {
            return None;
        }
        let head = repo.git.rev_parse("HEAD").ok()??;
        let exists = |c: &str| {
            repo.git
                .run(["cat-file", "-e", &format!("{c}^{{commit}}")])
                .is_ok()
        };
        (exists(&self.head) && exists(&self.annex)).then_some(head)
    }

    fn config_hash(repo: &Repo) -> String {
        let mut h = crate::hash::Hasher::new(crate::hash::Backend::Sha256);
        h.update(&std::fs::read(repo.git_dir.join("config")).unwrap_or_default());
        h.finish_hex()
    }

    fn save(&self, repo: &Repo) -> std::io::Result<()> {
        let path = Self::path(repo);
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(
            &tmp,
            format!(
                "head {}\nannex {}\nconfig {}\n",
                self.head, self.annex, self.config
            ),
        )?;
        std::fs::rename(&tmp, &path)
    }

    fn remove(repo: &Repo) {
        let _ = std::fs::remove_file(Self::path(repo));
    }
}

/// Plans `files` and queues what has to move; false when some of it could not be planned
/// (an unreachable remote, a log that could not be read): the next round looks at everything.
/// `whole`: `files` holds every file of each of their keys (else numcopies attributes, when
/// in use, are looked up for the others too); `outside`: git's attribute files outside the
/// work tree.
fn plan_round(
    ctx: &Ctx,
    repo: &Repo,
    remotes: &Remotes,
    files: Vec<AnnexedFile>,
    whole: bool,
    outside: &crate::copies::OutsideFiles,
    last_warnings: &mut Vec<String>,
) -> bool {
    let log = |m: &str| (ctx.shared.log)(m);
    let prefs = match crate::preferred::Preferences::load(repo) {
        Ok(p) => p,
        Err(e) => {
            log(&format!("reading preferred content failed: {e}"));
            return false;
        }
    };
    if prefs.warnings != *last_warnings {
        for w in &prefs.warnings {
            log(&format!("preferred content: {w}"));
        }
        *last_warnings = prefs.warnings.clone();
    }
    let mut complete = true;
    let copies = match crate::copies::FileCopies::load_with(repo, &files, whole, outside) {
        Ok(c) => c,
        Err(e) => {
            log(&format!("reading numcopies and mincopies failed: {e}"));
            return false;
        }
    };
    let content: Vec<&dyn Remote> = crate::ops::plan::content_remotes(repo, remotes, &[])
        .into_iter()
        .filter(|r| match r.check_available() {
            Ok(()) => true,
            Err(_) => {
                complete = false;
                false
            }
        })
        .collect();
    let planner = crate::ops::plan::Planner::new(&prefs, repo.uuid(), &content, &copies);
    let mut items = Vec::new();
    let files = crate::ops::content::one_per_key(files);
    // All at once: one listing of the git-annex branch serves every file (the logs of 100,000
    // files are ~10 MiB).
    match planner.plan_files(repo, &files) {
        Ok(plans) => {
            for (f, plan) in files.iter().zip(plans) {
                let need = copies.any_attrs().then(|| copies.of_key(&f.key));
                push_items(&mut items, f, &plan, &content, need);
            }
        }
        Err(e) => {
            log(&format!("planning transfers failed: {e}"));
            complete = false;
        }
    }
    if ctx.queue.push(items) > 0 {
        ctx.publish();
    }
    complete
}

/// The queue items of one file's plan.
fn push_items(
    items: &mut Vec<Item>,
    f: &AnnexedFile,
    plan: &crate::ops::plan::Plan,
    content: &[&dyn Remote],
    need: Option<crate::copies::Need>,
) {
    let item = |dir, remote: Option<&dyn Remote>| Item {
        dir,
        file: f.clone(),
        remote: remote.map(|r| r.name().to_string()),
        need: match dir {
            Dir::DropFrom | Dir::DropHere => need.clone(),
            _ => None,
        },
        attempts: 0,
        avoid: Vec::new(),
        last_error: None,
    };
    if plan.download {
        items.push(item(Dir::Download, None));
    }
    for &i in &plan.upload {
        items.push(item(Dir::Upload, Some(content[i])));
    }
    for &i in &plan.drop_from {
        items.push(item(Dir::DropFrom, Some(content[i])));
    }
    if plan.drop_here {
        items.push(item(Dir::DropHere, None));
    }
}

/// The bandwidth limits last applied: the settings in effect and the bad ones.
#[derive(Default)]
struct LimitsSeen {
    active: Vec<String>,
    problems: Vec<String>,
}

/// Reads the bandwidth limits from git config again; running transfers follow at their next
/// chunk. A bad setting is logged and listed in the status's problems until it is fixed, and
/// limits nothing: the daemon carries on without it rather than stop.
fn reload_limits(ctx: &Ctx, seen: &mut LimitsSeen) {
    let log = |m: &str| (ctx.shared.log)(m);
    let config = match ctx.repo.git.config_map() {
        Ok(c) => c,
        Err(e) => return log(&format!("reading bandwidth limits failed: {e}")),
    };
    let applied = ctx.limits.update(&config);
    if applied.active != seen.active {
        if applied.active.is_empty() {
            log("bandwidth limits: none");
        } else {
            log(&format!("bandwidth limits: {}", applied.active.join(", ")));
        }
        seen.active = applied.active;
    }
    let problems: Vec<String> = applied
        .problems
        .iter()
        .map(|e| format!("{e} (ignored: transfers run without this limit)"))
        .collect();
    let over: Vec<String> = seen
        .problems
        .iter()
        .filter(|p| !problems.contains(p))
        .cloned()
        .collect();
    ctx.shared.resolved(&over);
    for p in problems.iter().filter(|p| !seen.problems.contains(p)) {
        log(p);
        ctx.shared.problem(p.clone());
    }
    seen.problems = problems;
}

/// The pusher's doubling backoff, with a lower cap (content is retried sooner than a push
/// that keeps failing).
fn backoff(attempts: u32) -> Duration {
    super::backoff(RETRY_BASE, attempts).min(RETRY_CAP)
}

/// Progress of a worker's run, into the queue's status (published at most once a second).
struct Report<'a> {
    ctx: &'a Ctx,
    run: u64,
}

impl Events for Report<'_> {
    fn progress(&self, _file: &AnnexedFile, done: u64) {
        self.ctx.queue.progress(self.run, done);
        if self.ctx.last_publish.lock().unwrap().elapsed() >= PUBLISH_EVERY {
            self.ctx.publish();
        }
    }
    fn done(&self, _outcome: &FileOutcome) {}
}

fn worker(ctx: &Ctx, small_only: bool) {
    while let Some((run, batch)) = ctx.queue.take(small_only) {
        ctx.publish();
        let t0 = Instant::now();
        let remotes = ctx.remotes.read().unwrap().clone();
        let big = batch.len() == 1 && !batch[0].small();
        let Booked {
            done,
            retry,
            ok,
            failed,
        } = if big {
            // Big content moves on a thread of low CPU priority (its hashing thread and its
            // git helpers inherit it): commits, merges, pushes and small files, which run at
            // the normal priority, are not held up while it copies and hashes.
            std::thread::scope(|s| {
                s.spawn(|| {
                    lower_thread_priority();
                    run_batch(ctx, run, &remotes, batch)
                })
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
        } else {
            run_batch(ctx, run, &remotes, batch)
        };
        ctx.queue.finish(run, done, retry);
        if ok + failed > 0 {
            if let Err(e) = crate::ops::content::finish_bookkeeping(&ctx.repo, &remotes) {
                (ctx.shared.log)(&format!("recording the new locations failed: {e}"));
            }
            let ms = t0.elapsed().as_millis() as u64;
            (ctx.shared.log)(&format!(
                "content: {ok} transferred, {failed} failed ({ms} ms)"
            ));
            ctx.shared.event(Event::Transferred { ok, failed, ms });
            if ok > 0 {
                let _ = ctx.push_tx.send(PushMsg::Push);
            }
        }
        ctx.publish();
        // All done: the planner looks once more (this batch's own location changes), and
        // saves a checkpoint.
        if ctx.queue.idle() {
            let _ = ctx.push_tx.send(PushMsg::Content(Round::Annex));
        }
    }
}

/// Nice value of the threads that move big content.
const BIG_NICE: libc::c_int = 10;

/// Lowers the calling thread's CPU priority to [`BIG_NICE`] (Linux sets it per thread).
fn lower_thread_priority() {
    // SAFETY: setpriority on this thread's own id changes only its scheduling priority.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, BIG_NICE);
    }
}

/// What became of a batch's items.
#[derive(Default)]
struct Booked {
    /// Done, or given up: forgotten by the queue.
    done: Vec<Item>,
    /// To be tried again, and when.
    retry: Vec<(Instant, Item)>,
    /// Items that moved or dropped content, and failures.
    ok: usize,
    failed: usize,
}

/// Runs one batch.
fn run_batch(ctx: &Ctx, run: u64, remotes: &Remotes, batch: Vec<Item>) -> Booked {
    let repo = &ctx.repo;
    let opts = ContentOptions {
        jobs: 1,
        cancel: &ctx.cancel,
        limits: &ctx.limits,
    };
    let events = Report { ctx, run };
    let by_name: HashMap<&str, &dyn Remote> =
        remotes.iter().map(|r| (r.name(), r.as_ref())).collect();
    let mut booked = Booked::default();
    // Groups: (direction, remote name) -> items.
    let mut groups: BTreeMap<(Dir, String), Vec<Item>> = BTreeMap::new();
    let store = repo.store();
    for it in batch {
        match it.dir {
            Dir::Download => {
                if store.find(&it.file.key).is_some() {
                    booked.done.push(it);
                    continue;
                }
                match pick_source(repo, remotes, &it) {
                    Some(src) => groups.entry((Dir::Download, src)).or_default().push(it),
                    // No reachable remote has it: a later round (a remote back, new locations)
                    // queues it again.
                    None => booked.done.push(it),
                }
            }
            Dir::Upload | Dir::DropFrom => {
                let name = it.remote.clone().unwrap_or_default();
                if by_name.contains_key(name.as_str()) {
                    groups.entry((it.dir, name)).or_default().push(it);
                } else {
                    booked.done.push(it); // the remote is gone from the config
                }
            }
            Dir::DropHere => groups
                .entry((Dir::DropHere, String::new()))
                .or_default()
                .push(it),
        }
    }
    // Drops: the files' attributes now, and at least what the planner found for their keys.
    let policy = groups
        .iter()
        .any(|((d, _), _)| matches!(d, Dir::DropFrom | Dir::DropHere))
        .then(|| {
            let drops: Vec<&Item> = groups
                .iter()
                .filter(|((d, _), _)| matches!(d, Dir::DropFrom | Dir::DropHere))
                .flat_map(|(_, items)| items)
                .collect();
            let files: Vec<AnnexedFile> = drops.iter().map(|i| i.file.clone()).collect();
            // (All of their keys: every other file of these keys only raises what `need`
            // already holds, which the planner found over all of them.)
            let outside = ctx.outside.read().unwrap().clone();
            let copies = crate::copies::FileCopies::load_with(repo, &files, true, &outside)?;
            let mut p = crate::ops::drop::DropPolicy::with_copies(repo, copies)?;
            for it in &drops {
                if let Some(need) = &it.need {
                    p.copies.raise(&it.file.key, need);
                }
            }
            Ok::<_, crate::Error>(p)
        });
    for ((dir, name), items) in groups {
        let files: Vec<&AnnexedFile> = items.iter().map(|i| &i.file).collect();
        let remote = by_name.get(name.as_str()).copied();
        let drops = |drop: &dyn Fn(&crate::ops::drop::DropPolicy, &Key) -> crate::Result<bool>| {
            match policy.as_ref().expect("loaded when there are drops") {
                Ok(p) => files.iter().map(|f| drop(p, &f.key)).collect(),
                Err(e) => crate::remote::fail_all(files.len(), e),
            }
        };
        let results: Vec<crate::Result<bool>> = match (dir, remote) {
            (Dir::DropHere, _) => {
                drops(&|p, key| crate::ops::drop::drop_here(repo, remotes, p, key))
            }
            // Grouped by a configured remote above, so not expected: forget them.
            (_, None) => {
                booked.done.extend(items);
                continue;
            }
            (Dir::DropFrom, Some(remote)) => {
                drops(&|p, key| crate::ops::drop::drop_from(repo, remotes, p, remote, key))
            }
            (Dir::Download, Some(remote)) if items.len() == 1 && !items[0].small() => {
                vec![
                    crate::ops::content::download(repo, remote, files[0], &opts, &events)
                        .map(|o| log_resumed(ctx, &o)),
                ]
            }
            (Dir::Download, Some(remote)) => {
                crate::ops::content::download_many(repo, remote, &files, &opts, &events)
                    .into_iter()
                    .map(|r| r.map(|o| log_resumed(ctx, &o)))
                    .collect()
            }
            (Dir::Upload, Some(remote)) => {
                crate::ops::content::upload_many(repo, remote, &files, &opts, &events)
                    .into_iter()
                    .map(|r| r.map(|o| o.is_some_and(|o| log_resumed(ctx, &o))))
                    .collect()
            }
        };
        booked.settle(ctx, dir, &name, items, results);
    }
    booked
}

/// Logs a transfer that went on from the partial content an earlier attempt left (one that
/// was interrupted, or a daemon that was killed): those bytes were not moved again. True: the
/// content moved.
fn log_resumed(ctx: &Ctx, o: &FileOutcome) -> bool {
    if let Some(from) = o.resumed_from {
        (ctx.shared.log)(&format!(
            "{} ({}): resumed at byte {from}, {} more bytes moved",
            String::from_utf8_lossy(&o.path),
            o.note.as_deref().unwrap_or_default(),
            o.bytes
        ));
    }
    true
}

impl Booked {
    /// Books the results of one group: successes are done, failures wait for a retry (or are
    /// given up), content another transfer is receiving is looked at again soon.
    fn settle(
        &mut self,
        ctx: &Ctx,
        dir: Dir,
        name: &str,
        items: Vec<Item>,
        results: Vec<crate::Result<bool>>,
    ) {
        let Booked {
            done,
            retry,
            ok,
            failed,
        } = self;
        for (mut it, r) in items.into_iter().zip(results) {
            match r {
                Ok(moved) => {
                    *ok += usize::from(moved);
                    done.push(it);
                }
                Err(_) if ctx.cancel.load(Ordering::Relaxed) => done.push(it),
                // Someone else (this clone's other side, or git-annex) is delivering it: look
                // again shortly, without counting an attempt.
                Err(crate::Error::Transfer(TransferError::InProgress(_))) => {
                    retry.push((Instant::now() + IN_PROGRESS_RECHECK, it));
                }
                Err(e) => {
                    let e = e.to_string();
                    *failed += 1;
                    it.attempts += 1;
                    let (what, towards) = match dir {
                        Dir::Download => ("download of", "from"),
                        Dir::Upload => ("upload of", "to"),
                        Dir::DropFrom => ("drop of", "from"),
                        Dir::DropHere => ("drop of", "in"),
                    };
                    (ctx.shared.log)(&format!(
                        "{what} {} {towards} {name} failed (attempt {}): {e}",
                        String::from_utf8_lossy(&it.file.path),
                        it.attempts
                    ));
                    if dir == Dir::Download {
                        it.avoid.push(name.to_string());
                    }
                    it.last_error = Some(e);
                    if it.attempts >= MAX_ATTEMPTS {
                        // A restart must try it again: no checkpoint stands for it as done.
                        ctx.gave_up.fetch_add(1, Ordering::Relaxed);
                        Checkpoint::remove(&ctx.repo);
                        (ctx.shared.log)(&format!(
                            "giving up on {} after {} attempts (a later change or a restart tries again)",
                            String::from_utf8_lossy(&it.file.path),
                            it.attempts
                        ));
                        done.push(it);
                    } else {
                        retry.push((Instant::now() + backoff(it.attempts), it));
                    }
                }
            }
        }
    }
}

/// The remote to download `it` from: the cheapest reachable one the location log says has
/// the content, preferring sources that have not failed for this item.
fn pick_source(repo: &Repo, remotes: &Remotes, it: &Item) -> Option<String> {
    let log = repo.branch.location_log(&it.file.key).ok()?;
    let holders: HashSet<String> = log.present().into_iter().collect();
    let candidates: Vec<&Box<dyn Remote>> = remotes
        .iter()
        .filter(|r| holders.contains(r.uuid()) && r.check_available().is_ok())
        .collect();
    candidates
        .iter()
        .find(|r| !it.avoid.iter().any(|a| a == r.name()))
        .or_else(|| {
            // Every source failed once: start over with the one tried longest ago.
            it.avoid
                .iter()
                .find_map(|a| candidates.iter().find(|r| r.name() == a))
        })
        .map(|r| r.name().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(size: u64, n: u8) -> Item {
        let key = Key::parse(format!("SHA256E-s{size}--{:064x}", n).as_bytes()).unwrap();
        Item {
            dir: Dir::Download,
            file: AnnexedFile {
                path: format!("f{n}").into_bytes(),
                key,
                locked: false,
            },
            remote: None,
            need: None,
            attempts: 0,
            avoid: Vec::new(),
            last_error: None,
        }
    }

    #[test]
    fn git_annex_branch_paths_are_sorted_into_keys_and_policy() {
        let k = item(5, 1).file.key;
        let log = crate::branch::location_log_path(&k);
        let met = [log.clone(), b".met".to_vec()].concat();
        let c = classify_annex_paths(
            [
                log.as_slice(),
                met.as_slice(),
                b"uuid.log".as_slice(),
                b"a/b/not a key.log".as_slice(),
            ]
            .into_iter(),
        );
        assert_eq!(c.keys.into_iter().collect::<Vec<_>>(), vec![k]);
        assert!(
            c.policy,
            "uuid.log names repositories that preferred content refers to"
        );
        let c = classify_annex_paths([met.as_slice()].into_iter());
        assert!(!c.policy && c.keys.is_empty());
        for policy in [
            "preferred-content.log",
            "group.log",
            "group-preferred-content.log",
            "required-content.log",
            "numcopies.log",
            "trust.log",
        ] {
            assert!(classify_annex_paths([policy.as_bytes()].into_iter()).policy);
        }
    }

    #[test]
    fn the_file_cache_follows_renames_deletions_and_shared_keys() {
        let a = item(5, 1).file;
        let mut b = a.clone();
        b.path = b"copy".to_vec(); // same key, second path
        let c = item(6, 2).file;
        let mut cache = FileCache::default();
        cache.reset(&[a.clone(), b.clone(), c.clone()]);
        let paths = |v: Vec<AnnexedFile>| {
            let mut p: Vec<_> = v.into_iter().map(|f| f.path).collect();
            p.sort();
            p
        };
        assert_eq!(
            paths(cache.with_keys([&a.key])),
            vec![b"copy".to_vec(), b"f1".to_vec()]
        );
        // "f1" deleted, "f2" now holds a's key.
        let mut moved = a.clone();
        moved.path = b"f2".to_vec();
        let changed: BTreeSet<Vec<u8>> = [b"f1".to_vec(), b"f2".to_vec()].into();
        cache.update(&changed, &[moved]);
        assert_eq!(
            paths(cache.with_keys([&a.key])),
            vec![b"copy".to_vec(), b"f2".to_vec()]
        );
        assert!(
            cache.with_keys([&c.key]).is_empty(),
            "f2 no longer holds c's key"
        );
        assert_eq!(cache.by_path.len(), 2);
    }

    #[test]
    fn small_files_never_wait_behind_a_big_one() {
        let q = Queue::new();
        assert_eq!(
            q.push(vec![item(1 << 30, 1), item(10, 2), item(10, 3)]),
            2 + 1
        );
        // The same item again is not queued twice.
        assert_eq!(q.push(vec![item(10, 2)]), 0);
        // A general worker takes the big file ...
        let (big_run, big) = q.take(false).unwrap();
        assert_eq!(big.len(), 1);
        assert_eq!(big[0].file.key.size, Some(1 << 30));
        // ... while the small-only worker gets both small files in one batch, at once.
        let (run, small) = q.take(true).unwrap();
        assert_eq!(small.len(), 2);
        assert_eq!(q.snapshot().running.len(), 2);
        // Still running: not queued again.
        assert_eq!(q.push(vec![item(10, 3)]), 0);
        q.finish(run, small, Vec::new());
        q.finish(big_run, Vec::new(), vec![(Instant::now(), big[0].clone())]);
        // Done items can be queued again; the failed big one comes back when due.
        assert_eq!(q.push(vec![item(10, 3)]), 1);
        let (_, again) = q.take(false).unwrap();
        assert_eq!(again[0].file.key.size, Some(1 << 30));
        q.stop();
        assert!(q.take(true).is_none());
    }

    #[test]
    fn retries_back_off_and_are_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(30), RETRY_CAP);
    }
}
