//! The assistant daemon: keeps a repository in sync by itself.
//!
//! Threads, each owning its state and talking through channels:
//! - the **watcher** (inotify on the work tree and on the refs others push into) sends batches
//!   of changed paths and "refs changed";
//! - the **main loop** commits changed paths (annexing them as `ferry add` does), then merges
//!   what other clones pushed (the `ferry sync` machinery, conflicts resolved), then asks the
//!   pusher to push; commit and merge are done by this one thread, in that order, so a merge
//!   never runs over uncommitted local changes and the watcher's view of a merge's own writes
//!   finds nothing to commit (git's index already matches them);
//! - the **pusher** pushes to every remote at once after each commit or merge, retries failed
//!   pushes with exponential backoff, and hands non-fast-forward rejections back to the main
//!   loop (fetch, merge, push again).
//!
//! State and events are published through [`status`]. The daemon holds `.git/annex/daemon.pid`
//! locked (fcntl, like git-annex's assistant), so neither a second ferry daemon nor a git-annex
//! assistant runs on the same repository at the same time.

pub mod inotify;
pub mod status;
mod transfers;
pub mod watcher;

use transfers::Round;

use crate::error::{Error, IoContext, Result};
use crate::lock::{Lock, LockKind, try_lock};
use crate::ops::add::{AddEvent, AddOptions};
use crate::repo::Repo;
use status::{CommitInfo, Event, Publisher, Retry, Status, now_ms};
use std::collections::{BTreeSet, HashMap};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the daemon logs to (the CLI decides: stderr, or the rotated `daemon.log`).
pub type Logger = Arc<dyn Fn(&str) + Send + Sync>;

pub struct Options {
    /// `GIT_SSH_COMMAND` as the user set it (connection sharing is added to it).
    pub ssh_command: Option<String>,
    pub log: Logger,
}

/// Messages to the main loop.
pub enum Msg {
    Batch(watcher::Batch),
    /// A push to this remote was rejected as non-fast-forward.
    Rejected(String),
    WatchLimit,
    Stop,
}

/// Stops a running daemon (from a signal handler thread, a test, the web UI).
#[derive(Clone)]
pub struct Stopper(Sender<Msg>);

impl Stopper {
    pub fn stop(&self) {
        let _ = self.0.send(Msg::Stop);
    }
}

/// The pid file git-annex's assistant uses too; held locked while a daemon runs.
pub fn pid_file(repo: &Repo) -> std::path::PathBuf {
    repo.annex_dir().join("daemon.pid")
}

/// The pid of the daemon running on this repository (ferry's or git-annex's), if any.
pub fn running_pid(repo: &Repo) -> Option<u32> {
    let path = pid_file(repo);
    if !path.exists() {
        return None;
    }
    match crate::lock::is_locked(&path) {
        Ok(false) => None,
        Ok(true) => Some(
            std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0),
        ),
        Err(_) => None,
    }
}

struct Shared {
    status: Mutex<Status>,
    publisher: Mutex<Publisher>,
    log: Logger,
    /// `ferry.changehook`, and the directory it runs in.
    hook: Option<String>,
    dir: std::path::PathBuf,
}

impl Shared {
    fn publish(&self) {
        // The publisher is held while the status is read: threads that update at once write
        // their snapshots in the order they took them, so the last one written is the newest.
        let publisher = self.publisher.lock().unwrap();
        let mut s = self.status.lock().unwrap().clone();
        s.idle &= s.remotes.values().all(|r| !r.pushing);
        if let Err(e) = publisher.status(&s) {
            drop(publisher);
            (self.log)(&format!("cannot write status: {e}"));
        }
    }
    fn event(&self, e: Event) {
        if let Err(err) = self.publisher.lock().unwrap().event(&e) {
            (self.log)(&format!("cannot write event log: {err}"));
        }
    }
    fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap());
        self.publish();
    }

    /// A problem the daemon lives with: an event, and in the status (the last 20).
    fn problem(&self, message: String) {
        self.event(Event::Problem {
            message: message.clone(),
        });
        self.update(|s| {
            s.problems.push(message);
            let n = s.problems.len();
            if n > 20 {
                s.problems.drain(..n - 20);
            }
        });
    }

    /// Problems that are over leave the status.
    fn resolved(&self, messages: &[String]) {
        if !messages.is_empty() {
            self.update(|s| s.problems.retain(|p| !messages.contains(p)));
        }
    }

    /// Runs `ferry.changehook` without waiting for it; its failure is logged.
    fn hook(&self, kind: &str, commit: &str, remote: Option<&str>) {
        let Some(hook) = &self.hook else {
            return;
        };
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg(hook)
            .current_dir(&self.dir)
            .env("FERRY_EVENT", kind)
            .env("FERRY_COMMIT", commit)
            .env("FERRY_REPO", &self.dir)
            .stdin(std::process::Stdio::null());
        if let Some(r) = remote {
            cmd.env("FERRY_REMOTE", r);
        }
        let log = self.log.clone();
        let hook = hook.clone();
        match cmd.spawn() {
            Ok(mut child) => {
                let _ = std::thread::Builder::new()
                    .name("changehook".into())
                    .spawn(move || match child.wait() {
                        Ok(s) if s.success() => {}
                        Ok(s) => log(&format!("ferry.changehook {hook:?} failed: {s}")),
                        Err(e) => log(&format!("ferry.changehook {hook:?}: {e}")),
                    });
            }
            Err(e) => log(&format!("cannot run ferry.changehook {hook:?}: {e}")),
        }
    }
}

pub struct Daemon {
    repo: Arc<Repo>,
    opts: Options,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    _pid_lock: Lock,
}

/// Settings read from git config at start.
struct Settings {
    add: AddOptions,
    retry_base: Duration,
    rescan_interval: Duration,
    hook: Option<String>,
    message: String,
    /// The remotes as sync sees them (for the fetch check of a local remote that moved).
    remotes: Vec<crate::ops::sync::Remote>,
}

impl Daemon {
    /// Takes the daemon lock; fails with a clear message when a daemon already runs here.
    pub fn new(repo: Repo, opts: Options) -> Result<Daemon> {
        repo.work_tree()?;
        let path = pid_file(&repo);
        let lock = match try_lock(&path, LockKind::Exclusive)? {
            Some(l) => l,
            None => {
                let pid = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(Error::Unsupported(format!(
                    "a daemon is already running on this repository (pid {}); stop it with `ferry assistant --stop`",
                    pid.trim()
                )));
            }
        };
        {
            use std::io::Write;
            let mut f = lock.file();
            f.set_len(0).ctx("writing", &path)?;
            f.write_all(format!("{}\n", std::process::id()).as_bytes())
                .ctx("writing", &path)?;
        }
        let (tx, rx) = channel();
        Ok(Daemon {
            repo: Arc::new(repo),
            opts,
            tx,
            rx,
            _pid_lock: lock,
        })
    }

    pub fn stopper(&self) -> Stopper {
        Stopper(self.tx.clone())
    }

    /// Runs until stopped. Changes pending at a stop are committed first.
    pub fn run(self) -> Result<()> {
        let log = self.opts.log.clone();
        let settings = settings(&self.repo)?;
        let repo = self.repo.clone();
        let top = repo.work_tree()?.to_path_buf();
        let shared = Arc::new(Shared {
            status: Mutex::new(Status {
                pid: std::process::id(),
                started_ms: now_ms(),
                state: "starting".into(),
                ..Default::default()
            }),
            publisher: Mutex::new(Publisher::new(&repo.annex_dir())?),
            log: log.clone(),
            hook: settings.hook.clone(),
            dir: top.clone(),
        });
        shared.event(Event::Started {
            pid: std::process::id(),
        });
        shared.publish();

        // Watch first, then scan: anything that changes meanwhile is seen by one or the other.
        let mut w = watcher::Watcher::new(&top, &repo.git_dir)
            .map_err(|e| Error::io("starting inotify", e))?;
        w.watch_refs();
        let t0 = Instant::now();
        if !w.watch_tree(b"") {
            log(&watch_limit_message());
            let _ = self.tx.send(Msg::WatchLimit);
        }
        let watched = w.watched_dirs();
        let limited = w.limited;
        shared.update(|s| {
            s.watcher.watched_dirs = watched;
            s.watcher.limited = limited;
        });
        w.watch_remotes(&local_remote_git_dirs(&repo));
        spawn_watcher(w, self.tx.clone(), shared.clone(), repo.clone());

        let (push_tx, push_rx) = channel();
        let (xfer_tx, xfer_rx) = channel::<Round>();
        let pusher = {
            let (repo, shared, main_tx, self_tx) = (
                repo.clone(),
                shared.clone(),
                self.tx.clone(),
                push_tx.clone(),
            );
            let ssh = self.opts.ssh_command.clone();
            let base = settings.retry_base;
            std::thread::Builder::new()
                .name("pusher".into())
                .spawn(move || {
                    let channels = (self_tx, main_tx, xfer_tx);
                    pusher(repo, push_rx, channels, shared, base, ssh)
                })
                .map_err(|e| Error::io("starting the pusher", e))?
        };

        let xfer_cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let transfers = transfers::start(
            repo.clone(),
            xfer_rx,
            push_tx.clone(),
            shared.clone(),
            xfer_cancel.clone(),
        )
        .map_err(|e| Error::io("starting the transfer threads", e))?;

        let mut main = MainLoop {
            repo: repo.clone(),
            settings,
            shared: shared.clone(),
            push_tx: push_tx.clone(),
            log: log.clone(),
            ssh: self.opts.ssh_command.clone(),
            retry_paths: BTreeSet::new(),
            retry_at: None,
            merge_retry_at: None,
            merge_failures: 0,
            periodic_rescan: None,
            merge_started: Instant::now(),
            last_commit: None,
            annexed: Vec::new(),
            attrs_committed: false,
        };

        // Startup: whatever changed while no daemon ran, then what others pushed meanwhile.
        let startup = main.commit(vec![Vec::new()]);
        let scan_ms = t0.elapsed().as_millis() as u64;
        shared.event(Event::Scanned {
            committed: startup,
            ms: scan_ms,
        });
        log(&format!(
            "watching {watched} directories; startup scan took {scan_ms} ms"
        ));
        main.startup_sync();
        let _ = push_tx.send(PushMsg::Content(Round::All));
        shared.update(|s| {
            s.state = "running".into();
            s.watcher.last_rescan_ms = Some(now_ms());
        });

        let mut pending: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut merge_wanted = false;
        let mut config_changed = false;
        let mut annex_changed = false;
        // Local remotes whose branches another clone moved.
        let mut remote_moved: std::collections::BTreeMap<String, std::path::PathBuf> =
            Default::default();
        let mut rejected: BTreeSet<String> = BTreeSet::new();
        let mut stop = false;
        loop {
            let deadline = [main.retry_at, main.merge_retry_at, main.periodic_rescan]
                .into_iter()
                .flatten()
                .min();
            shared.update(|s| s.idle = true);
            let first = match deadline {
                None => self.rx.recv().ok(),
                Some(d) => match self
                    .rx
                    .recv_timeout(d.saturating_duration_since(Instant::now()))
                {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => Some(Msg::Stop),
                },
            };
            let mut rescan = false;
            let mut take = |m: Msg| match m {
                Msg::Batch(b) => {
                    pending.extend(b.paths);
                    rescan |= b.rescan;
                    merge_wanted |= b.refs;
                    config_changed |= b.config;
                    annex_changed |= b.annex;
                    remote_moved.extend(b.remotes);
                }
                Msg::Rejected(r) => {
                    rejected.insert(r);
                }
                Msg::WatchLimit => {
                    main.periodic_rescan = Some(Instant::now() + main.settings.rescan_interval);
                }
                Msg::Stop => stop = true,
            };
            if let Some(m) = first {
                take(m);
            }
            while let Ok(m) = self.rx.try_recv() {
                take(m);
            }
            let now = Instant::now();
            if main.retry_at.is_some_and(|t| t <= now) {
                main.retry_at = None;
                pending.extend(std::mem::take(&mut main.retry_paths));
            }
            if main.merge_retry_at.is_some_and(|t| t <= now) {
                main.merge_retry_at = None;
                merge_wanted = true;
            }
            if main.periodic_rescan.is_some_and(|t| t <= now) {
                main.periodic_rescan = Some(now + main.settings.rescan_interval);
                rescan = true;
            }
            // Busy from here; the next update publishes it (idle is published while waiting).
            shared.status.lock().unwrap().idle = false;
            if rescan {
                shared.event(Event::Rescan {
                    reason:
                        "the kernel's event queue overflowed, or not every directory is watched"
                            .into(),
                });
                shared.update(|s| s.watcher.last_rescan_ms = Some(now_ms()));
                pending.clear();
                pending.insert(Vec::new());
            }
            if std::mem::take(&mut annex_changed) {
                // Location logs or preferred content changed: the planner looks at what.
                let _ = main.push_tx.send(PushMsg::Content(Round::Annex));
            }
            if std::mem::take(&mut config_changed) {
                let _ = main.push_tx.send(PushMsg::Reload);
                match self::settings(&main.repo) {
                    Ok(s) => {
                        log("git config changed: settings and remotes read again");
                        main.settings = s;
                    }
                    Err(e) => log(&format!("reading the changed git config failed: {e}")),
                }
            }
            // A running check-attr may keep what it read: a changed .gitattributes needs a new one.
            let attrs_changed = pending.iter().any(|p| is_gitattributes(p));
            if let Some(a) = main
                .settings
                .add
                .attrs
                .as_ref()
                .filter(|_| rescan || attrs_changed)
            {
                a.reset();
            }
            let head_before = main.heads().0;
            let mut changed = false;
            if !pending.is_empty() {
                let paths: Vec<Vec<u8>> = std::mem::take(&mut pending).into_iter().collect();
                changed |= main.commit(paths);
            }
            let head_mid = main.heads().0;
            // What this clone just annexed is known: its content moves without a diff.
            let annexed = std::mem::take(&mut main.annexed);
            if head_mid != head_before
                && let Some(head) = &head_mid
            {
                if !annexed.is_empty() {
                    let _ = main
                        .push_tx
                        .send(PushMsg::Content(Round::Files(annexed, head.clone())));
                }
                if std::mem::take(&mut main.attrs_committed) {
                    let _ = main.push_tx.send(PushMsg::Content(Round::Policy));
                }
            }
            for (remote, git_dir) in std::mem::take(&mut remote_moved) {
                // This clone's own pushes move them too: fetch only what differs.
                if !rejected.contains(&remote) && main.remote_differs(&remote, &git_dir) {
                    rejected.insert(remote);
                }
            }
            for remote in std::mem::take(&mut rejected) {
                changed |= main.fetch_merge(&remote);
            }
            if merge_wanted {
                merge_wanted = false;
                changed |= main.merge();
            }
            if changed {
                let _ = main.push_tx.send(PushMsg::Push);
            }
            // Content moves for the files this commit or merge touched.
            match (head_mid.or(head_before), main.heads().0) {
                (Some(b), Some(a)) if a != b => {
                    let _ = main.push_tx.send(PushMsg::Content(Round::Between(b, a)));
                }
                (None, Some(_)) => {
                    let _ = main.push_tx.send(PushMsg::Content(Round::All));
                }
                _ => {}
            }
            if stop {
                break;
            }
        }
        // Running transfers stop at their next chunk (partial files are kept for a resume);
        // the transfer thread ends when the pusher, which feeds it, has ended.
        xfer_cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = push_tx.send(PushMsg::Stop);
        let _ = pusher.join();
        for t in transfers {
            let _ = t.join();
        }
        shared.update(|s| {
            s.state = "stopped".into();
            s.idle = true;
        });
        shared.event(Event::Stopped);
        log("stopped");
        Ok(())
    }
}

/// The daemon's settings, from git config (read again when `.git/config` changes).
fn settings(repo: &Repo) -> Result<Settings> {
    let entries = repo.git.config_entries()?;
    let remotes = crate::ops::sync::remotes_from(repo, &entries, &[])?;
    let config: HashMap<String, String> = entries.into_iter().collect();
    let get = |k: &str| config.get(k).map(String::as_str);
    let flag = |k: &str, d: bool| crate::git::config_flag(&config, k, d);
    let secs = |k: &str, d: f64| {
        Duration::from_secs_f64(
            get(k)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| *v > 0.0)
                .unwrap_or(d),
        )
    };
    let backend = match get("annex.backend") {
            Some(b) => crate::hash::Backend::from_variety(b).ok_or_else(|| {
                Error::Unsupported(format!(
                    "unsupported annex.backend {b:?}; ferry supports SHA256E, SHA256, SHA512E and SHA512"
                ))
            })?,
            None => crate::hash::Backend::Sha256E,
        };
    // The assistant adds unlocked files (editable in place), as git-annex's does.
    let unlocked = flag("annex.addunlocked", true) && crate::repo::filter_configured(repo)?;
    let desc = repo.description(repo.uuid())?.unwrap_or_default();
    Ok(Settings {
        add: AddOptions {
            paths: Vec::new(),
            jobs: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            backend,
            force: None,
            unlocked,
            thin: flag("annex.thin", false),
            deletions: true,
            config: Some(Arc::new(config.clone())),
            attrs: Some(crate::ops::add::AttrServer::default()),
        },
        retry_base: secs("ferry.retrydelay", 1.0),
        rescan_interval: secs("ferry.rescaninterval", 60.0),
        hook: get("ferry.changehook")
            .filter(|h| !h.is_empty())
            .map(str::to_string),
        message: format!("git-annex in {desc}"),
        remotes,
    })
}

fn watch_limit_message() -> String {
    "the inotify watch limit (fs.inotify.max_user_watches) is reached: some directories are not \
     watched and are scanned periodically instead; raise it with \
     `sysctl fs.inotify.max_user_watches=524288`"
        .into()
}

/// The bare repositories among the remotes synced with that are local paths (see
/// [`watcher::Watcher::watch_remotes`]): a central repository on a share or a drive, where
/// nobody runs a daemon and changes arrive only as other clones' pushes. A clone with a work
/// tree is left out: its own daemon pushes here, and fetching each of its commits as well would
/// do the work twice.
fn local_remote_git_dirs(repo: &Repo) -> Vec<(String, std::path::PathBuf)> {
    crate::ops::sync::remotes(repo, &[])
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| {
            let p = r.local_path?;
            (!p.join(".git").exists() && p.join("refs/heads").is_dir()).then_some((r.name, p))
        })
        .collect()
}

fn spawn_watcher(mut w: watcher::Watcher, tx: Sender<Msg>, shared: Arc<Shared>, repo: Arc<Repo>) {
    let _ = std::thread::Builder::new()
        .name("watcher".into())
        .spawn(move || {
            let mut was_limited = w.limited;
            loop {
                match w.next_batch() {
                    Ok(b) => {
                        if w.limited && !was_limited {
                            was_limited = true;
                            (shared.log)(&watch_limit_message());
                            let _ = tx.send(Msg::WatchLimit);
                        }
                        let dirs = w.watched_dirs();
                        if let Ok(mut s) = shared.status.lock() {
                            s.watcher.watched_dirs = dirs;
                            s.watcher.limited = w.limited;
                        }
                        if b.config {
                            // A remote added, removed or moved: watch the new set.
                            w.watch_remotes(&local_remote_git_dirs(&repo));
                        }
                        if (b.paths.is_empty()
                            && !b.rescan
                            && !b.refs
                            && !b.config
                            && !b.annex
                            && b.remotes.is_empty())
                            || tx.send(Msg::Batch(b)).is_ok()
                        {
                            continue;
                        }
                        return;
                    }
                    Err(e) => {
                        (shared.log)(&format!("inotify read failed: {e}; rescanning"));
                        let _ = tx.send(Msg::Batch(watcher::Batch {
                            rescan: true,
                            ..Default::default()
                        }));
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        });
}

struct MainLoop {
    repo: Arc<Repo>,
    settings: Settings,
    shared: Arc<Shared>,
    push_tx: Sender<PushMsg>,
    log: Logger,
    ssh: Option<String>,
    /// Paths that failed (unreadable, disk full): looked at again at `retry_at`.
    retry_paths: BTreeSet<Vec<u8>>,
    retry_at: Option<Instant>,
    merge_retry_at: Option<Instant>,
    /// Merges in a row that reported errors (their retries back off).
    merge_failures: u32,
    periodic_rescan: Option<Instant>,
    merge_started: Instant,
    /// The last commit made here and its tree (saves asking git for HEAD's tree).
    last_commit: Option<(String, String)>,
    /// Files annexed (or locked files moved) by the commits since the last content round.
    annexed: Vec<crate::annexed::AnnexedFile>,
    /// A `.gitattributes` was committed since the last content round (numcopies may differ
    /// for any file).
    attrs_committed: bool,
}

/// More paths than this in one batch: look at the whole tree instead (one `ls-files` walk is
/// cheaper than a huge pathspec).
const WHOLE_TREE_ABOVE: usize = 2000;

impl MainLoop {
    /// Commits the changes under `paths` ("" = everything); returns whether a commit was made.
    fn commit(&mut self, paths: Vec<Vec<u8>>) -> bool {
        let n = paths.len();
        let t0 = Instant::now();
        match self.try_commit(paths) {
            Ok(Some(commit)) => {
                (self.log)(&format!(
                    "committed {} ({n} paths, {} ms)",
                    &commit[..12.min(commit.len())],
                    t0.elapsed().as_millis()
                ));
                self.shared.event(Event::Committed {
                    commit: commit.clone(),
                    paths: n,
                });
                self.shared.update(|s| {
                    s.commits += 1;
                    s.last_commit = Some(CommitInfo {
                        commit: commit.clone(),
                        at_ms: now_ms(),
                        paths: n,
                    });
                });
                self.shared.hook("commit", &commit, None);
                true
            }
            Ok(None) => false,
            Err(e) => {
                (self.log)(&format!("commit failed: {e}; retrying"));
                self.problem(format!("commit failed: {e}"));
                self.retry_paths.insert(Vec::new());
                self.schedule_retry();
                false
            }
        }
    }

    fn schedule_retry(&mut self) {
        let d = self.settings.retry_base.max(Duration::from_secs(5));
        self.retry_at.get_or_insert(Instant::now() + d);
    }

    fn problem(&self, message: String) {
        self.shared.problem(message);
    }

    fn try_commit(&mut self, paths: Vec<Vec<u8>>) -> Result<Option<String>> {
        let repo = self.repo.clone();
        let repo = &*repo;
        let whole = paths.len() > WHOLE_TREE_ABOVE || paths.iter().any(|p| p.is_empty());
        // Drop paths inside a directory that is itself in the batch.
        let mut specs: Vec<Vec<u8>> = Vec::new();
        if !whole {
            for p in paths {
                if p.split(|&b| b == b'/').any(|c| c == b".git") {
                    continue;
                }
                if let Some(last) = specs.last()
                    && p.len() > last.len()
                    && p.starts_with(last)
                    && p[last.len()] == b'/'
                {
                    continue;
                }
                specs.push(p);
            }
            if specs.is_empty() {
                return Ok(None);
            }
        }
        let mut opts = self.settings.add.clone();
        opts.paths = specs.clone();
        let failed: Mutex<Vec<(Vec<u8>, String)>> = Mutex::new(Vec::new());
        let stopped: Mutex<Option<String>> = Mutex::new(None);
        let staged = std::sync::atomic::AtomicUsize::new(0);
        let annexed = Mutex::new(Vec::new());
        let attrs = std::sync::atomic::AtomicBool::new(false);
        crate::ops::add::add(repo, &opts, &|e: &AddEvent| match e {
            AddEvent::Failed { path, error } => {
                failed.lock().unwrap().push((path.clone(), error.clone()))
            }
            AddEvent::Stopped { reason, .. } => *stopped.lock().unwrap() = Some(reason.clone()),
            AddEvent::Annexed { path, key, .. } => {
                annexed.lock().unwrap().push(crate::annexed::AnnexedFile {
                    path: path.clone(),
                    key: key.clone(),
                    locked: false,
                });
                staged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            // A locked file moved or renamed: where it is now may change who wants it.
            AddEvent::Restaged { path, key } => {
                annexed.lock().unwrap().push(crate::annexed::AnnexedFile {
                    path: path.clone(),
                    key: key.clone(),
                    locked: true,
                });
                staged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            AddEvent::ToGit { path, .. } => {
                if is_gitattributes(path) {
                    attrs.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                staged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            AddEvent::Removed { path } => {
                if is_gitattributes(path) {
                    attrs.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                staged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            _ => {}
        })?;
        for (path, error) in failed.into_inner().unwrap() {
            (self.log)(&format!(
                "cannot add {}: {error}; will try again",
                String::from_utf8_lossy(&path)
            ));
            self.problem(format!(
                "cannot add {}: {error}",
                String::from_utf8_lossy(&path)
            ));
            self.retry_paths.insert(path);
            self.schedule_retry();
        }
        if let Some(reason) = stopped.into_inner().unwrap() {
            (self.log)(&format!("adding stopped: {reason}; will try again"));
            self.problem(reason);
            self.retry_paths.insert(Vec::new());
            self.schedule_retry();
        }
        if staged.into_inner() == 0 && !whole {
            return Ok(None);
        }
        let commit = self.commit_index()?;
        if commit.is_some() {
            self.annexed.extend(annexed.into_inner().unwrap());
            self.attrs_committed |= attrs.into_inner();
        }
        Ok(commit)
    }

    /// Commits the index if it differs from HEAD; returns the new commit.
    fn commit_index(&mut self) -> Result<Option<String>> {
        let repo = &self.repo;
        let tree = String::from_utf8_lossy(&repo.git.run_index(["write-tree"], &[])?)
            .trim_end()
            .to_string();
        let head = repo.git.rev_parse("HEAD")?;
        let head_tree = match (&head, &self.last_commit) {
            (Some(h), Some((c, t))) if h == c => Some(t.clone()),
            (Some(h), _) => repo.git.rev_parse(&format!("{h}^{{tree}}"))?,
            (None, _) => None,
        };
        if head.is_some() && head_tree.as_deref() == Some(tree.as_str()) {
            return Ok(None);
        }
        let mut args = vec!["commit-tree".to_string(), tree.clone(), "-m".into()];
        args.push(self.settings.message.clone());
        if let Some(h) = &head {
            args.push("-p".into());
            args.push(h.clone());
        }
        let commit = repo.git.run_str(&args)?;
        repo.git.run([
            "update-ref",
            "-m",
            "ferry assistant: commit",
            "HEAD",
            &commit,
            head.as_deref().unwrap_or(""),
        ])?;
        self.last_commit = Some((commit.clone(), tree));
        Ok(Some(commit))
    }

    fn heads(&self) -> (Option<String>, Option<String>) {
        (
            self.repo.git.rev_parse("HEAD").ok().flatten(),
            self.repo
                .git
                .rev_parse("refs/heads/git-annex")
                .ok()
                .flatten(),
        )
    }

    /// Merges what others pushed; returns whether anything changed here.
    fn merge(&mut self) -> bool {
        let before = self.heads();
        self.merge_started = Instant::now();
        match crate::ops::sync::merge_incoming(&self.repo) {
            Ok(report) => self.after_merge(before, report),
            Err(e) => {
                (self.log)(&format!("merge failed: {e}; will try again"));
                self.problem(format!("merge failed: {e}"));
                self.merge_retry_at =
                    Some(Instant::now() + self.settings.retry_base.max(Duration::from_secs(2)));
                false
            }
        }
    }

    fn after_merge(
        &mut self,
        before: (Option<String>, Option<String>),
        report: crate::ops::sync::SyncReport,
    ) -> bool {
        if report.errors.is_empty() {
            self.merge_failures = 0;
        } else {
            // E.g. a file being written here that the merge would overwrite: once it is
            // closed and committed, the merge is tried again. A conflict left to the user
            // (files kept in git) fails every time: the wait doubles, up to 10 minutes (a new
            // push from that clone is merged at once anyway).
            let base = self.settings.retry_base.max(Duration::from_secs(2));
            self.merge_failures += 1;
            let wait = backoff(base, self.merge_failures).min(Duration::from_secs(600));
            self.merge_retry_at = Some(Instant::now() + wait);
            for e in &report.errors {
                (self.log)(&format!(
                    "merge: {e}; trying again in {} s",
                    wait.as_secs_f64()
                ));
                self.problem(e.clone());
            }
        }
        let after = self.heads();
        if after == before {
            return false;
        }
        if after.0 != before.0
            && let Some(c) = &after.0
        {
            (self.log)(&format!(
                "merged; now at {} ({} ms)",
                &c[..12.min(c.len())],
                self.merge_started.elapsed().as_millis()
            ));
            self.shared.event(Event::Merged {
                commit: c.clone(),
                resolved: report.resolved.clone(),
            });
            self.shared.update(|s| s.merges += 1);
            self.shared.hook("merge", c, None);
        }
        true
    }

    /// Whether a local remote's branches or tags differ from what this clone last fetched or
    /// pushed there (its remote-tracking refs): the check `sync` makes before fetching.
    fn remote_differs(&self, remote: &str, git_dir: &std::path::Path) -> bool {
        match self.settings.remotes.iter().find(|r| r.name == remote) {
            Some(r) => !crate::ops::sync::local_remote_unchanged(&self.repo, r, git_dir),
            None => true,
        }
    }

    fn fetch_merge(&mut self, remote: &str) -> bool {
        let before = self.heads();
        match crate::ops::sync::fetch_and_merge(&self.repo, remote, self.ssh.as_deref()) {
            Ok(Ok(report)) => {
                self.shared.update(|s| {
                    s.remotes
                        .entry(remote.to_string())
                        .or_default()
                        .last_pull_ms = Some(now_ms())
                });
                self.after_merge(before, report);
                // Push again even when nothing changed here: the remote moved.
                true
            }
            Ok(Err(e)) => {
                (self.log)(&format!("fetching {remote} failed: {e}"));
                false
            }
            Err(e) => {
                (self.log)(&format!("merging {remote} failed: {e}"));
                self.problem(format!("merging {remote} failed: {e}"));
                false
            }
        }
    }

    /// At start: fetch every remote and merge (changes made elsewhere while no daemon ran),
    /// then push what is here.
    fn startup_sync(&mut self) {
        let before = self.heads();
        let opts = crate::ops::sync::SyncOptions {
            remotes: Vec::new(),
            no_commit: true,
            ssh_command: self.ssh.clone(),
        };
        match crate::ops::sync::sync(&self.repo, &opts) {
            Ok(report) => {
                let now = now_ms();
                self.shared.update(|s| {
                    for r in &report.remotes {
                        let e = s.remotes.entry(r.remote.clone()).or_default();
                        if r.pulled == crate::ops::sync::Outcome::Ok {
                            e.last_pull_ms = Some(now);
                        }
                        if r.pushed == crate::ops::sync::Outcome::Ok {
                            e.last_push_ms = Some(now);
                        }
                    }
                });
                let failed = report
                    .remotes
                    .iter()
                    .any(|r| r.pushed != crate::ops::sync::Outcome::Ok);
                self.after_merge(before, report);
                if failed {
                    // The pusher owns retries.
                    let _ = self.push_tx.send(PushMsg::Push);
                }
            }
            Err(e) => {
                (self.log)(&format!("startup sync failed: {e}"));
                self.problem(format!("startup sync failed: {e}"));
                let _ = self.push_tx.send(PushMsg::Push);
            }
        }
    }
}

// ---- pusher ----------------------------------------------------------------------------------

enum PushMsg {
    Push,
    /// git config changed: read the remotes again at the next push.
    Reload,
    /// Content to move: handed to the transfer thread once no push is under way, so the
    /// transfers never compete with getting the commit to the other clones.
    Content(Round),
    Done(String, PushResult),
    Stop,
}

enum PushResult {
    Ok,
    /// A local remote whose path is not there: the message and the path.
    Unavailable(String, std::path::PathBuf),
    Rejected(String),
    Failed(String),
}

#[derive(Default)]
struct PushState {
    /// When the push under way started, and the commit it pushes.
    in_flight: Option<(Instant, String)>,
    dirty: bool,
    failures: u32,
    rejections: u32,
    next: Option<Instant>,
    /// The local path of a remote that was not there at the last attempt (a drive not
    /// plugged in): looked at every [`MISSING_POLL`], and pushed to as soon as it is back.
    missing: Option<std::path::PathBuf>,
}

/// How often the path of a missing local remote is looked at (one `stat`; inotify would not
/// see a drive being mounted).
const MISSING_POLL: Duration = Duration::from_secs(1);

const RETRY_CAP: Duration = Duration::from_secs(30 * 60);

fn backoff(base: Duration, failures: u32) -> Duration {
    let f = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
    (base * f).min(RETRY_CAP)
}

/// Where to push: the remotes (name, local path), read from git config at the first push and
/// after config changes, and the branch, read at every push.
struct Targets {
    remotes: Vec<Arc<crate::ops::sync::Remote>>,
    /// The git config entries they were read from (a push to a local remote checks them).
    config: Arc<Vec<(String, String)>>,
    branch: String,
}

fn load_targets(repo: &Repo) -> Option<Targets> {
    let config = repo.git.config_entries().ok()?;
    let remotes = crate::ops::sync::remotes_from(repo, &config, &[]).ok()?;
    Some(Targets {
        remotes: remotes
            .into_iter()
            .filter(|r| !r.readonly)
            .map(Arc::new)
            .collect(),
        config: Arc::new(config),
        branch: crate::ops::sync::current_branch(repo).ok()?,
    })
}

struct Pusher {
    repo: Arc<Repo>,
    net: crate::git::Git,
    self_tx: Sender<PushMsg>,
    main_tx: Sender<Msg>,
    shared: Arc<Shared>,
    base: Duration,
    state: HashMap<String, PushState>,
    /// Where content rounds go once no push is under way.
    xfer_tx: Sender<Round>,
}

impl Pusher {
    fn start(
        &mut self,
        remote: &Arc<crate::ops::sync::Remote>,
        config: &Arc<Vec<(String, String)>>,
        branch: &str,
    ) {
        let name = remote.name.as_str();
        let Some(head) = self.repo.git.rev_parse("HEAD").ok().flatten() else {
            return; // nothing committed yet
        };
        let st = self.state.entry(name.to_string()).or_default();
        st.in_flight = Some((Instant::now(), head));
        st.dirty = false;
        let (tx, repo, net, remote, config, name, branch) = (
            self.self_tx.clone(),
            self.repo.clone(),
            self.net.clone(),
            remote.clone(),
            config.clone(),
            name.to_string(),
            branch.to_string(),
        );
        self.shared
            .update(|s| s.remotes.entry(name.clone()).or_default().pushing = true);
        let _ = std::thread::Builder::new()
            .name(format!("push {name}"))
            .spawn(move || {
                let r = match &remote.local_path {
                    Some(p) if !p.exists() => PushResult::Unavailable(
                        format!("{} is not there (not mounted?)", p.display()),
                        p.clone(),
                    ),
                    _ => match crate::ops::sync::push_one(&repo, &net, &remote, &config, &branch) {
                        Ok(()) => PushResult::Ok,
                        Err(e) if e.contains("non-fast-forward") || e.contains("fetch first") => {
                            PushResult::Rejected(e)
                        }
                        Err(e) => PushResult::Failed(e),
                    },
                };
                let _ = tx.send(PushMsg::Done(name, r));
            });
    }

    fn done(&mut self, name: String, r: PushResult) {
        let shared = self.shared.clone();
        let st = self.state.entry(name.clone()).or_default();
        let (started, commit) = st
            .in_flight
            .take()
            .unwrap_or((Instant::now(), String::new()));
        let took = started.elapsed().as_millis() as u64;
        let failure = match r {
            PushResult::Ok => {
                st.failures = 0;
                st.rejections = 0;
                st.next = None;
                (shared.log)(&format!("pushed to {name} ({took} ms)"));
                shared.event(Event::Pushed {
                    remote: name.clone(),
                    ms: took,
                });
                shared.update(|s| {
                    let e = s.remotes.entry(name.clone()).or_default();
                    e.pushing = false;
                    e.retry = None;
                    e.last_push_ms = Some(now_ms());
                });
                shared.hook("push", &commit, Some(&name));
                return;
            }
            PushResult::Rejected(e) if st.rejections < 3 => {
                st.rejections += 1;
                shared.update(|s| s.remotes.entry(name.clone()).or_default().pushing = false);
                (shared.log)(&format!(
                    "push to {name} rejected ({e}); fetching and merging"
                ));
                let _ = self.main_tx.send(Msg::Rejected(name));
                return;
            }
            PushResult::Unavailable(e, path) => {
                st.missing = Some(path);
                e
            }
            PushResult::Rejected(e) | PushResult::Failed(e) => e,
        };
        st.failures += 1;
        st.rejections = 0;
        st.dirty = true;
        let wait = backoff(self.base, st.failures);
        st.next = Some(Instant::now() + wait);
        let failures = st.failures;
        let back = if st.missing.is_some() {
            ", or as soon as it is back"
        } else {
            ""
        };
        (shared.log)(&format!(
            "push to {name} failed: {failure}; retrying in {:.1} s{back}",
            wait.as_secs_f64()
        ));
        shared.event(Event::PushFailed {
            remote: name.clone(),
            error: failure.clone(),
            retry_in_ms: wait.as_millis() as u64,
        });
        shared.update(|s| {
            let r = s.remotes.entry(name).or_default();
            r.pushing = false;
            r.retry = Some(Retry {
                reason: failure,
                failures,
                next_attempt_ms: now_ms() + wait.as_millis() as u64,
            });
        });
    }
}

fn pusher(
    repo: Arc<Repo>,
    rx: Receiver<PushMsg>,
    channels: (Sender<PushMsg>, Sender<Msg>, Sender<Round>),
    shared: Arc<Shared>,
    base: Duration,
    ssh: Option<String>,
) {
    let net = match crate::ops::sync::ssh_with_sharing(&repo, ssh.as_deref()) {
        Ok(Some(cmd)) => repo.git.with_env("GIT_SSH_COMMAND", &cmd),
        _ => repo.git.clone(),
    };
    let (self_tx, main_tx, xfer_tx) = channels;
    let mut p = Pusher {
        repo,
        net,
        self_tx,
        main_tx,
        shared,
        base,
        state: HashMap::new(),
        xfer_tx,
    };
    let mut stopping = false;
    let mut targets: Option<Targets> = None;
    let mut rounds: Vec<Round> = Vec::new();
    loop {
        if !stopping && p.state.values().all(|s| s.in_flight.is_none()) {
            for r in rounds.drain(..) {
                let _ = p.xfer_tx.send(r);
            }
        }
        let busy = p.state.values().any(|s| s.in_flight.is_some());
        if stopping && !busy {
            return;
        }
        // A missing remote that is back is due now, whatever its backoff says.
        let now = Instant::now();
        for st in p.state.values_mut() {
            if st.missing.as_ref().is_some_and(|m| m.exists()) {
                st.missing = None;
                st.next = Some(now);
                // Content that could not move while it was away moves now too.
                rounds.push(Round::All);
            }
        }
        let waiting = p
            .state
            .values()
            .filter(|s| s.dirty && s.in_flight.is_none());
        let next = waiting
            .clone()
            .filter_map(|s| s.next)
            .chain(
                waiting
                    .filter(|s| s.missing.is_some())
                    .map(|_| now + MISSING_POLL),
            )
            .min();
        let msg = match (stopping, next) {
            (true, _) => rx.recv_timeout(Duration::from_secs(30)).ok(),
            (false, None) => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => return,
            },
            (false, Some(t)) => {
                match rx.recv_timeout(t.saturating_duration_since(Instant::now())) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        };
        let mut want_push = false;
        match msg {
            Some(PushMsg::Stop) => stopping = true,
            Some(PushMsg::Push) => {
                want_push = true;
                // The remotes come from git config, read again only after it changed; the
                // branch is read each time (HEAD is one small file).
                match (&mut targets, crate::ops::sync::current_branch(&p.repo)) {
                    (Some(t), Ok(branch)) => t.branch = branch,
                    _ => targets = load_targets(&p.repo),
                }
            }
            Some(PushMsg::Reload) => {
                targets = None;
                let _ = p.xfer_tx.send(Round::Reload);
            }
            Some(PushMsg::Content(r)) => rounds.push(r),
            Some(PushMsg::Done(name, r)) => p.done(name, r),
            None => {}
        }
        if stopping {
            continue;
        }
        let Some(t) = &targets else {
            continue;
        };
        // Start what is due.
        let now = Instant::now();
        for r in &t.remotes {
            let st = p.state.entry(r.name.clone()).or_default();
            st.dirty |= want_push;
            if st.dirty && st.in_flight.is_none() && st.next.is_none_or(|n| n <= now) {
                p.start(r, &t.config, &t.branch);
            }
        }
    }
}

/// A path names a `.gitattributes` file (at the top or in a directory).
pub(crate) fn is_gitattributes(path: &[u8]) -> bool {
    path.rsplit(|&b| b == b'/').next() == Some(b".gitattributes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped_at_30_minutes() {
        let b = Duration::from_secs(1);
        assert_eq!(backoff(b, 1), Duration::from_secs(1));
        assert_eq!(backoff(b, 2), Duration::from_secs(2));
        assert_eq!(backoff(b, 5), Duration::from_secs(16));
        assert_eq!(backoff(b, 12), RETRY_CAP);
        assert_eq!(backoff(b, 1000), RETRY_CAP);
    }
}
