//! `sync` (git level): commit, fetch every remote in parallel, union-merge the `git-annex`
//! branches, merge the remotes' branches, push to every remote in parallel. The conventions are
//! git-annex's (`synced/<branch>` refs), so ferry and git-annex clones sync with each other.
//!
//! A remote that is simply not there (a local path that does not exist: an unplugged drive) is
//! reported as unavailable and skipped; a real failure is reported and makes the sync fail; in
//! both cases every reachable remote is still synced.
//!
//! Conflicts where at least one side is annexed are resolved as git-annex resolves them (both
//! versions kept as `name.variant-XXXX.ext`); others are undone and reported.
//! Not yet here: the tagged-push fallback.

use crate::error::{Error, Result};
use crate::repo::Repo;
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

#[derive(Clone, Debug, Default)]
pub struct SyncOptions {
    /// Only these remotes (default: all with `annex-sync` not false).
    pub remotes: Vec<String>,
    /// Skip committing pending work-tree changes.
    pub no_commit: bool,
    /// The ssh command the user set (`GIT_SSH_COMMAND`), resolved by the caller; ferry adds
    /// connection sharing to it (or to `core.sshCommand`, or to plain `ssh`).
    pub ssh_command: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Skipped,
    Unavailable,
    Failed,
}

/// What happened with one remote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RemoteReport {
    pub remote: String,
    pub pulled: Outcome,
    pub pushed: Outcome,
    /// Why, for anything but Ok.
    pub message: Option<String>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SyncReport {
    pub committed: bool,
    pub remotes: Vec<RemoteReport>,
    /// Problems not tied to one remote (e.g. a merge conflict).
    pub errors: Vec<String>,
    /// Refs whose merge conflicted and was resolved automatically (variants kept).
    pub resolved: Vec<String>,
}

impl SyncReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
            && self
                .remotes
                .iter()
                .all(|r| r.pulled != Outcome::Failed && r.pushed != Outcome::Failed)
    }
}

pub(crate) struct Remote {
    pub(crate) name: String,
    /// Reached over ssh (ssh:// or host:path).
    ssh: bool,
    /// For an ssh remote, `[user@]host[:port]`: remotes on one host share a connection.
    host: Option<String>,
    pub(crate) readonly: bool,
    cost: f64,
    /// For a local remote: its path, to tell "not there" from "broken".
    pub(crate) local_path: Option<PathBuf>,
    /// `git fetch` and `git push` of this remote do nothing unusual: one URL and no push URL,
    /// the default fetch refspec, no custom upload-pack / receive-pack, no remote helper, no
    /// mirror, no tag pruning, no URL rewriting. Only then are a local remote's refs compared
    /// on disk to skip a fetch or a push that would change nothing.
    pub(crate) plain: bool,
    /// Its fetch prunes remote-tracking refs (`remote.<name>.prune`, else `fetch.prune`).
    prune: bool,
    /// Its fetch follows tags (`tagOpt` is not `--no-tags`).
    tags: bool,
}

pub(crate) fn remotes(repo: &Repo, only: &[String]) -> Result<Vec<Remote>> {
    remotes_from(repo, &repo.git.config_entries()?, only)
}

/// [`remotes`] from git config entries already read ([`crate::git::Git::config_entries`]).
pub(crate) fn remotes_from(
    repo: &Repo,
    entries: &[(String, String)],
    only: &[String],
) -> Result<Vec<Remote>> {
    let config: std::collections::HashMap<String, String> = entries.iter().cloned().collect();
    let count = |key: &str| entries.iter().filter(|(k, _)| k == key).count();
    let rewrites = entries.iter().any(|(k, _)| {
        k.starts_with("url.") && (k.ends_with(".insteadof") || k.ends_with(".pushinsteadof"))
    });
    let mut names: Vec<String> = config
        .keys()
        .filter_map(|k| {
            k.strip_prefix("remote.")
                .and_then(|k| k.strip_suffix(".url"))
        })
        .map(str::to_string)
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        let key = |k: &str| format!("remote.{name}.{}", k.to_ascii_lowercase());
        let cfg = |k: &str| config.get(&key(k)).cloned();
        if only.is_empty() && cfg("annex-sync").as_deref() == Some("false") {
            continue;
        }
        let url = cfg("url").unwrap_or_default();
        let local_path = crate::remote::local_path(repo, &url);
        let ssh = url.starts_with("ssh://")
            || url.starts_with("git+ssh://")
            || (local_path.is_none() && !url.contains("://"));
        let plain = !rewrites
            && count(&key("url")) == 1
            && count(&key("fetch")) == 1
            && cfg("fetch").as_deref() == Some(&format!("+refs/heads/*:refs/remotes/{name}/*"))
            && [
                "pushurl",
                "uploadpack",
                "receivepack",
                "vcs",
                "mirror",
                "prunetags",
            ]
            .iter()
            .all(|k| count(&key(k)) == 0)
            && !crate::git::config_flag(&config, "fetch.prunetags", false);
        let prune = match config.get(&key("prune")) {
            Some(_) => crate::git::config_flag(&config, &key("prune"), false),
            None => crate::git::config_flag(&config, "fetch.prune", false),
        };
        out.push(Remote {
            host: ssh.then(|| ssh_host(&url)),
            ssh,
            readonly: cfg("annex-readonly").as_deref() == Some("true"),
            cost: cfg("annex-cost")
                .and_then(|c| c.parse().ok())
                .unwrap_or(if local_path.is_some() { 100.0 } else { 200.0 }),
            local_path,
            plain,
            prune,
            tags: cfg("tagopt").as_deref() != Some("--no-tags"),
            name,
        });
    }
    out.sort_by(|a, b| a.cost.total_cmp(&b.cost).then(a.name.cmp(&b.name)));
    Ok(out)
}

/// This clone's remote-tracking refs and tags, what a fetch compares with: from disk, else
/// from one `git for-each-ref`. `None` if even that fails.
fn tracking_refs(repo: &Repo) -> Option<BTreeMap<String, String>> {
    if let Some(refs) = crate::git::read_refs(&repo.git_dir, &["refs/remotes/", "refs/tags/"]) {
        return Some(refs);
    }
    let out = repo
        .git
        .run_str([
            "for-each-ref",
            "--format=%(objectname) %(refname)",
            "refs/remotes/",
            "refs/tags/",
        ])
        .ok()?;
    Some(
        out.lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(sha, name)| (name.to_string(), sha.to_string()))
            .collect(),
    )
}

/// A local remote's git directory and its branches and tags as `git fetch` would see them,
/// read from disk. `None` when that is not certain (not a plain remote, an unusual layout, an
/// update under way: see [`crate::git::read_refs`]).
pub(crate) fn their_refs(r: &Remote) -> Option<(PathBuf, BTreeMap<String, String>)> {
    if !r.plain {
        return None;
    }
    let git_dir = crate::git::local_git_dir(r.local_path.as_ref()?)?;
    let refs = crate::git::read_refs(&git_dir, &["refs/heads/", "refs/tags/"])?;
    Some((git_dir, refs))
}

/// Whether `git fetch` of remote `r` would change nothing here: each of its branches is already
/// our remote-tracking ref of the same name at the same commit, each of its tags (when the
/// fetch follows tags) is a tag here with the same value, and, when the fetch prunes, we track
/// no branch it no longer has. `theirs` holds its `refs/heads/` and `refs/tags/`, `ours` our
/// `refs/remotes/` and `refs/tags/`.
fn fetch_changes_nothing(
    r: &Remote,
    theirs: &BTreeMap<String, String>,
    ours: &BTreeMap<String, String>,
) -> bool {
    let tracking = format!("refs/remotes/{}/", r.name);
    let same = theirs.iter().all(|(name, sha)| {
        if let Some(branch) = name.strip_prefix("refs/heads/") {
            ours.get(&format!("{tracking}{branch}")) == Some(sha)
        } else {
            !r.tags || ours.get(name) == Some(sha)
        }
    });
    let stale = r.prune
        && ours.keys().any(|name| {
            name.strip_prefix(&tracking).is_some_and(|branch| {
                branch != "HEAD" && !theirs.contains_key(&format!("refs/heads/{branch}"))
            })
        });
    same && !stale
}

/// Whether a fetch of local remote `r`, whose git directory is `git_dir`, would change nothing
/// here: its refs, read from disk, are what this clone last fetched or pushed there (the check
/// [`sync`] makes before fetching, for the daemon). False when unsure.
pub(crate) fn local_remote_unchanged(repo: &Repo, r: &Remote, git_dir: &std::path::Path) -> bool {
    if !r.plain {
        return false;
    }
    let theirs = crate::git::read_refs(git_dir, &["refs/heads/", "refs/tags/"]);
    match (theirs, tracking_refs(repo)) {
        (Some(theirs), Some(ours)) => fetch_changes_nothing(r, &theirs, &ours),
        _ => false,
    }
}

/// Our `<branch>` and `git-annex` commits, what a push sends (`None` if either is missing or
/// unreadable).
type OurTips = Option<(String, String)>;

fn our_tips(repo: &Repo, branch: &str) -> OurTips {
    match (
        repo.git.rev_parse(&format!("refs/heads/{branch}")),
        repo.git.rev_parse("refs/heads/git-annex"),
    ) {
        (Ok(Some(head)), Ok(Some(annex))) => Some((head, annex)),
        _ => None,
    }
}

/// Whether `git push` to local remote `r` (see [`push`]) would change nothing there: its sync
/// refs and `git-annex` already hold our commits, and its `<branch>` either does too or is
/// the branch checked out in its work tree, which a push is refused to update (a non-bare
/// remote that says so in its config, with no `receive.denyCurrentBranch` anywhere). Read
/// from disk; false when unsure.
fn push_changes_nothing(
    r: &Remote,
    branch: &str,
    ours: &OurTips,
    global: &std::collections::HashMap<String, String>,
) -> bool {
    let Some((head, annex)) = ours else {
        return false;
    };
    let Some((git_dir, theirs)) = their_refs(r) else {
        return false;
    };
    let has = |name: &str, sha: &str| theirs.get(name).map(String::as_str) == Some(sha);
    if !(has(&format!("refs/heads/synced/{branch}"), head)
        && has("refs/heads/synced/git-annex", annex)
        && has("refs/heads/git-annex", annex))
    {
        return false;
    }
    if has(&format!("refs/heads/{branch}"), head) {
        return true;
    }
    // The branch differs: only a refused push leaves it so (the branch checked out in a work
    // tree, with nothing that would change or see the refusal).
    let bare = r.local_path.as_ref() == Some(&git_dir);
    !bare
        && !global
            .keys()
            .any(|k| super::localpush::unusual_for_receiving(k))
        && super::localpush::plain_receiver(&git_dir, false)
            .is_some_and(|rc| rc.checked_out == Some(format!("refs/heads/{branch}")))
}

pub(crate) fn current_branch(repo: &Repo) -> Result<String> {
    // `HEAD` names the branch in the usual case; git answers the rest (and detached HEAD).
    let plain = std::fs::read_to_string(repo.git_dir.join("HEAD"))
        .ok()
        .and_then(|h| {
            h.trim_end()
                .strip_prefix("ref: refs/heads/")
                .map(str::to_string)
        });
    let branch = match plain {
        Some(b) => Some(b),
        None => repo
            .git
            .run_opt(["symbolic-ref", "--quiet", "--short", "HEAD"])?,
    };
    branch.ok_or_else(|| {
        Error::Unsupported(
            "HEAD is detached; check out a branch (git switch <branch>) before syncing".into(),
        )
    })
}

/// `[user@]host[:port]` of an ssh URL (`ssh://user@host:port/path` or `user@host:path`).
fn ssh_host(url: &str) -> String {
    match url.split_once("://") {
        Some((_, rest)) => rest.split('/').next().unwrap_or(rest).to_string(),
        None => url.split(':').next().unwrap_or(url).to_string(),
    }
}

/// `GIT_SSH_COMMAND` with OpenSSH connection sharing added: one ssh connection per host serves
/// every fetch and push of this sync (and of the next ones, for a minute). The user's own
/// command and ssh config are kept; only the multiplexing options are appended.
pub(crate) fn ssh_with_sharing(repo: &Repo, user: Option<&str>) -> Result<Option<String>> {
    let base = match user {
        Some(c) if !c.is_empty() => c.to_string(),
        _ => repo
            .git
            .config("core.sshCommand")?
            .unwrap_or_else(|| "ssh".into()),
    };
    let Some(dir) = ssh_socket_dir(repo) else {
        return Ok(None);
    };
    let quoted = dir.display().to_string().replace('\'', "'\\''");
    Ok(Some(format!(
        "{base} -o ControlMaster=auto -o ControlPersist=60 -o 'ControlPath={quoted}/%C'"
    )))
}

/// The longest directory a control socket can be made in: a Unix socket path holds at most
/// 107 bytes, and ssh adds `/` and `%C` (40) and, while it sets up a master, a temporary
/// suffix (`.` and 16 more).
const SSH_SOCKET_DIR_MAX: usize = 107 - 58;

/// Where the ssh control sockets go: `.git/annex/ssh`, as git-annex keeps them, when its path
/// is short enough for a socket; else a private directory of this user's (in
/// `$XDG_RUNTIME_DIR`, else `/tmp/ferry-ssh-<uid>`), made mode 0700 and used only if it is
/// ours, a directory and closed to others. `None`: no connection sharing.
fn ssh_socket_dir(repo: &Repo) -> Option<PathBuf> {
    let fits = |d: &std::path::Path| d.as_os_str().len() <= SSH_SOCKET_DIR_MAX;
    let ours = repo.annex_dir().join("ssh");
    if fits(&ours) {
        return std::fs::create_dir_all(&ours).is_ok().then_some(ours);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let candidates = [
        std::env::var_os("XDG_RUNTIME_DIR").map(|d| PathBuf::from(d).join("ferry-ssh")),
        Some(PathBuf::from(format!("/tmp/ferry-ssh-{me}"))),
    ];
    candidates.into_iter().flatten().find(|d| {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        let _ = std::fs::DirBuilder::new().mode(0o700).create(d);
        fits(d)
            && std::fs::symlink_metadata(d)
                .is_ok_and(|m| m.is_dir() && m.uid() == me && m.mode() & 0o077 == 0)
    })
}

/// Runs git, returning Ok or the trimmed stderr.
pub(crate) fn git_try(git: &crate::git::Git, args: &[&str]) -> std::result::Result<(), String> {
    git.run(args).map(|_| ()).map_err(stderr_of)
}

/// What a failed git call said (its stderr), or the error itself.
fn stderr_of(e: Error) -> String {
    match e {
        Error::Git { stderr, .. } => stderr,
        e => e.to_string(),
    }
}

pub fn sync(repo: &Repo, opts: &SyncOptions) -> Result<SyncReport> {
    repo.work_tree()?;
    let branch = current_branch(repo)?;
    let mut report = SyncReport::default();
    let _sync_lock = sync_lock(repo)?;

    // 1. Commit what is pending in tracked files.
    let has_head = repo.git.rev_parse("HEAD")?.is_some();
    if !opts.no_commit && has_head {
        let dirty = repo
            .git
            .run(["status", "--porcelain", "--untracked-files=no", "-z"])?;
        if !dirty.is_empty() {
            let desc = repo.description(repo.uuid())?.unwrap_or_default();
            repo.git.run_index(
                [
                    "commit",
                    "-a",
                    "-q",
                    "--no-verify",
                    "-m",
                    &format!("git-annex in {desc}"),
                ],
                &[],
            )?;
            report.committed = true;
        }
    }

    // 2. Fetch every remote at once.
    let config = repo.learn_local_remote_uuids_entries()?;
    let all = remotes_from(repo, &config, &opts.remotes)?;
    let net_git = match all.iter().any(|r| r.ssh) {
        true => match ssh_with_sharing(repo, opts.ssh_command.as_deref())? {
            Some(cmd) => repo.git.with_env("GIT_SSH_COMMAND", &cmd),
            None => repo.git.clone(),
        },
        false => repo.git.clone(),
    };
    let net = &net_git;
    for name in &opts.remotes {
        if !all.iter().any(|r| &r.name == name) {
            return Err(Error::Unsupported(format!(
                "there is no remote named {name:?} (see git remote -v)"
            )));
        }
    }
    let mut reports: Vec<RemoteReport> = all
        .iter()
        .map(|r| RemoteReport {
            remote: r.name.clone(),
            pulled: Outcome::Ok,
            pushed: Outcome::Ok,
            message: None,
        })
        .collect();
    let available: Vec<bool> = all
        .iter()
        .map(|r| r.local_path.as_ref().is_none_or(|p| p.exists()))
        .collect();
    // A local remote whose branches and tags, read from disk, are what we already have from it
    // is not fetched: the fetch would change nothing (and costs a git, an upload-pack and a
    // rev-list). Any doubt and it is fetched.
    let ours = match all.iter().any(|r| r.plain && r.local_path.is_some()) {
        true => tracking_refs(repo),
        false => None,
    };
    let checked: Vec<usize> = (0..all.len())
        .filter(|&i| available[i] && ours.is_some() && all[i].plain)
        .collect();
    let same = super::parallel(&checked, |&i| {
        let r = &all[i];
        ours.as_ref().is_some_and(|ours| {
            their_refs(r).is_some_and(|(_, theirs)| fetch_changes_nothing(r, &theirs, ours))
        })
    });
    let mut current = vec![false; all.len()];
    for (i, same) in checked.into_iter().zip(same) {
        current[i] = same;
    }
    // One thread per host: of the remotes on one ssh host, the first is fetched alone (it opens
    // the shared connection), then the others at once over it; different hosts and local
    // remotes in parallel.
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, r) in all.iter().enumerate() {
        let g = r
            .host
            .clone()
            .unwrap_or_else(|| format!("local:{}", r.name));
        match groups.iter_mut().find(|(k, _)| *k == g) {
            Some((_, v)) => v.push(i),
            None => groups.push((g, vec![i])),
        }
    }
    // (Only the remotes to fetch: an unchanged or missing one costs no thread.)
    let groups: Vec<Vec<usize>> = groups
        .into_iter()
        .map(|(_, members)| {
            members
                .into_iter()
                .filter(|&i| available[i] && !current[i])
                .collect::<Vec<usize>>()
        })
        .filter(|members| !members.is_empty())
        .collect();
    let mut fetched: Vec<std::result::Result<(), String>> = vec![Ok(()); all.len()];
    let fetch = |&i: &usize| (i, git_try(net, &["fetch", "--quiet", &all[i].name]));
    let results = super::parallel(&groups, |members| {
        let (first, rest) = members.split_first().expect("groups are not empty");
        let mut done = vec![fetch(first)];
        done.extend(super::parallel(rest, fetch));
        done
    });
    for (i, r) in results.into_iter().flatten() {
        fetched[i] = r;
    }
    for (i, r) in fetched.into_iter().enumerate() {
        if !available[i] {
            reports[i].pulled = Outcome::Unavailable;
            reports[i].pushed = Outcome::Unavailable;
            reports[i].message = Some(format!(
                "{} is not there (not mounted?)",
                all[i].local_path.as_ref().unwrap().display()
            ));
        } else if let Err(e) = r {
            reports[i].pulled = Outcome::Failed;
            reports[i].pushed = Outcome::Skipped;
            reports[i].message = Some(e);
        }
    }

    // 3. Merge: the git-annex branches, then the work-tree branch.
    merge_all(repo, &branch, &mut report)?;

    // 4. Push to every remote that was fetched, at once.
    advance_synced(repo, &branch);
    let push_to: Vec<usize> = (0..all.len())
        .filter(|&i| reports[i].pulled == Outcome::Ok && !all[i].readonly)
        .collect();
    // A local remote that already has everything a push would send is not pushed to; the
    // plainest local remotes get what is missing written straight in (ops/localpush.rs).
    // (Each remote's refs read on its own thread: with many remotes, that file-system work
    // is most of a sync.)
    let global: std::collections::HashMap<String, String> = config.iter().cloned().collect();
    let tips = our_tips(repo, &branch);
    let unchanged = super::parallel(&push_to, |&i| {
        push_changes_nothing(&all[i], &branch, &tips, &global)
    });
    let push_to: Vec<usize> = push_to
        .into_iter()
        .zip(unchanged)
        .filter(|(_, unchanged)| !unchanged)
        .map(|(i, _)| i)
        .collect();
    let local: Vec<(usize, &Remote)> = push_to
        .iter()
        .filter(|&&i| all[i].local_path.is_some())
        .map(|&i| (i, &all[i]))
        .collect();
    let written = match repo.git.rev_parse("HEAD")? {
        Some(_) => super::localpush::push_local(repo, &local, &branch, &config),
        None => Vec::new(),
    };
    let push_to: Vec<usize> = push_to
        .into_iter()
        .filter(|i| !written.contains(i))
        .collect();
    for i in 0..all.len() {
        if all[i].readonly && reports[i].pulled == Outcome::Ok {
            reports[i].pushed = Outcome::Skipped;
            reports[i].message = Some("read-only remote (annex-readonly)".into());
        }
    }
    if repo.git.rev_parse("HEAD")?.is_some() {
        let pushed = super::parallel(&push_to, |&i| push(net, &all[i].name, &branch));
        for (&i, r) in push_to.iter().zip(pushed) {
            if let Err(e) = r {
                // Rejected as non-fast-forward: someone pushed meanwhile. Pull, merge, retry.
                // A ref there locked by another push (a daemon's) is waited for a moment.
                let mut last = e;
                let mut ok = false;
                for attempt in 0..2u32 {
                    if held_by_another_push(&last) {
                        std::thread::sleep(std::time::Duration::from_millis(250 << (2 * attempt)));
                    }
                    if git_try(net, &["fetch", "--quiet", &all[i].name]).is_err() {
                        break;
                    }
                    merge_all(repo, &branch, &mut report)?;
                    advance_synced(repo, &branch);
                    match push(net, &all[i].name, &branch) {
                        Ok(()) => {
                            ok = true;
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                if !ok {
                    reports[i].pushed = Outcome::Failed;
                    if held_by_another_push(&last) {
                        last.push_str(
                            " (a ref there stayed locked: the next sync tries again; if no git or \
                             ferry works on that repository, remove the stale <ref>.lock file \
                             under its refs/ directory)",
                        );
                    }
                    reports[i].message = Some(last);
                }
            }
        }
    } else {
        for &i in &push_to {
            reports[i].pushed = Outcome::Skipped;
            reports[i].message = Some("nothing committed here yet".into());
        }
    }
    report.remotes = reports;
    Ok(report)
}

/// Whether a push failed because another one was moving the same ref there at that moment
/// (git's ref lock): worth a short wait before trying again.
fn held_by_another_push(error: &str) -> bool {
    [
        "failed to update ref",
        "cannot lock ref",
        "failed to lock",
        "unable to lock",
        ".lock': File exists",
    ]
    .iter()
    .any(|m| error.contains(m))
}

/// Pushes to one remote as [`push`] does, writing straight into a plain local remote when
/// it qualifies (ops/localpush.rs: no `git push` and its seven processes), else with
/// `git push`. The daemon's pusher uses it after each commit, with the remotes and `config`
/// (git config entries) it read once.
pub(crate) fn push_one(
    repo: &Repo,
    net: &crate::git::Git,
    r: &Remote,
    config: &[(String, String)],
    branch: &str,
) -> std::result::Result<(), String> {
    if r.local_path.is_some() {
        // (The daemon's pusher holds no sync lock, which clears these for a sync.)
        super::localpush::clear_stale_locks(&repo.git_dir);
        let global: std::collections::HashMap<String, String> = config.iter().cloned().collect();
        if push_changes_nothing(r, branch, &our_tips(repo, branch), &global)
            || !super::localpush::push_local(repo, &[(0, r)], branch, config).is_empty()
        {
            return Ok(());
        }
    }
    push(net, &r.name, branch)
}

/// One `git push` per remote: the sync refs (which must land), and best-effort direct pushes of
/// the branch and `git-annex` (for bare repositories; a non-bare remote refuses a push to its
/// checked-out branch, which is expected). Per-ref results come from `--porcelain`.
pub(crate) fn push(
    net: &crate::git::Git,
    remote: &str,
    branch: &str,
) -> std::result::Result<(), String> {
    let synced = format!("refs/heads/synced/{branch}");
    let out = net
        .command([
            "push",
            "--porcelain",
            remote,
            &format!("refs/heads/{branch}:{synced}"),
            "+refs/heads/git-annex:refs/heads/synced/git-annex",
            "refs/heads/git-annex:refs/heads/git-annex",
            &format!("refs/heads/{branch}:refs/heads/{branch}"),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Porcelain lines: "<flag>\t<from>:<to>\t<summary>"; '!' means rejected.
    let failed: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with('!'))
        .filter(|l| {
            l.contains(&format!(":{synced}\t")) || l.contains(":refs/heads/synced/git-annex\t")
        })
        .collect();
    let reported = stdout.lines().any(|l| l.contains(&format!(":{synced}\t")));
    if !failed.is_empty() || !reported {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{}{}",
            failed.join("; "),
            if reported {
                String::new()
            } else {
                stderr.trim().to_string()
            }
        ));
    }
    Ok(())
}

/// Points the local `synced/<branch>` at `<branch>` (as git-annex does), but only when
/// everything it holds is merged, and by compare-and-swap: other clones push into this ref at
/// any moment, and a push that lands between the merge and this update must never be
/// overwritten (it would be lost until the other clone changes again).
fn advance_synced(repo: &Repo, branch: &str) {
    let synced = format!("refs/heads/synced/{branch}");
    let local = format!("refs/heads/{branch}");
    let Ok(Some(head)) = repo.git.rev_parse(&local) else {
        return;
    };
    let old = match repo.git.rev_parse(&synced) {
        Ok(Some(old)) if old == head => return,
        Ok(Some(_)) => {
            // Its value if (and only if) the branch contains it: one git call for both.
            match repo.git.run_str([
                "for-each-ref",
                "--format=%(objectname)",
                &format!("--merged={local}"),
                &synced,
            ]) {
                Ok(v) if !v.is_empty() => v,
                _ => return, // not merged yet: the next merge takes it
            }
        }
        Ok(None) => String::new(), // create, only if still absent
        Err(_) => return,
    };
    let _ = repo.git.run(["update-ref", &synced, &head, &old]);
}

/// Takes the per-repository sync lock (the daemon and a manual `ferry sync` may overlap),
/// undoes a merge left by a killed sync, and refuses to work over a merge started by hand.
pub(crate) fn sync_lock(repo: &Repo) -> Result<crate::lock::Lock> {
    let lockdir = repo.annex_dir().join("ferry");
    std::fs::create_dir_all(&lockdir)
        .map_err(|e| Error::io(format!("creating {}", lockdir.display()), e))?;
    let lock = crate::lock::lock_wait(&lockdir.join("sync.lck"), crate::lock::LockKind::Exclusive)?;
    // Ref locks a killed sync left here (our remote-tracking refs) would make the fetches fail.
    super::localpush::clear_stale_locks(&repo.git_dir);
    recover_interrupted_merge(repo)?;
    if repo.git_dir.join("MERGE_HEAD").exists() {
        return Err(Error::Unsupported(
            "a merge is in progress; finish it (git commit) or abort it (git merge --abort), then sync again".into(),
        ));
    }
    Ok(lock)
}

/// Merges what has arrived (pushed `synced/` refs, fetched remote-tracking refs) without
/// fetching: the daemon's merger. Returns the report of the merge (errors, resolved refs).
pub fn merge_incoming(repo: &Repo) -> Result<SyncReport> {
    let branch = current_branch(repo)?;
    let _lock = sync_lock(repo)?;
    let mut report = SyncReport::default();
    merge_all(repo, &branch, &mut report)?;
    advance_synced(repo, &branch);
    Ok(report)
}

/// Fetches one remote and merges what it has: the daemon's answer to a push rejected as
/// non-fast-forward.
pub fn fetch_and_merge(
    repo: &Repo,
    remote: &str,
    ssh_command: Option<&str>,
) -> Result<std::result::Result<SyncReport, String>> {
    let net = match ssh_with_sharing(repo, ssh_command)? {
        Some(cmd) => repo.git.with_env("GIT_SSH_COMMAND", &cmd),
        None => repo.git.clone(),
    };
    if let Err(e) = git_try(&net, &["fetch", "--quiet", remote]) {
        return Ok(Err(e));
    }
    Ok(Ok(merge_incoming(repo)?))
}

fn merge_all(repo: &Repo, branch: &str, report: &mut SyncReport) -> Result<()> {
    // The daemon's transfer workers stage files while this merges: one index writer at a time.
    let _index = crate::git::index_lock();
    let lock = repo.branch.lock_journal()?;
    repo.branch.merge_siblings(&lock)?;
    drop(lock);

    let patterns = vec![
        format!("refs/heads/synced/{branch}"),
        format!("refs/remotes/*/{branch}"),
        format!("refs/remotes/*/synced/{branch}"),
        // The git-annex assistant's tagged pushes, with or without their base64 component
        // (a `*` stops at a `/`).
        format!("refs/synced/*/{branch}"),
        format!("refs/synced/*/*/{branch}"),
    ];
    let candidates = match repo.git.rev_parse("HEAD")? {
        Some(_) => repo.git.refs_not_merged_into_ids("HEAD", &patterns)?,
        None => {
            // Nothing committed here yet: take the first of theirs, then merge the rest.
            let all = repo.git.run_str(
                ["for-each-ref", "--format=%(refname)"]
                    .into_iter()
                    .chain(patterns.iter().map(String::as_str)),
            )?;
            let Some(first) = all.lines().next() else {
                return Ok(());
            };
            repo.git
                .run_index(["checkout", "-q", "-B", branch, first], &[])?;
            repo.git.refs_not_merged_into_ids("HEAD", &patterns)?
        }
    };
    // Several refs often name one commit; and one may contain another (a clone that merged
    // what a third one pushed): only the tips none of the others contains are merged, found in
    // one call. Merging them brings the others along, unless a merge is undone; from then on
    // each ref is checked against HEAD on its own, as it is merged.
    let mut seen = std::collections::HashSet::new();
    let candidates: Vec<(String, String)> = candidates
        .into_iter()
        .filter(|(_, sha)| seen.insert(sha.clone()))
        .collect();
    let independent: Option<std::collections::HashSet<String>> = match candidates.len() {
        0 | 1 => None,
        _ => {
            let mut args = vec!["merge-base", "--independent"];
            args.extend(candidates.iter().map(|(_, sha)| sha.as_str()));
            repo.git
                .run_str(&args)
                .ok()
                .map(|out| out.lines().map(str::to_string).collect())
        }
    };
    let mut undone = false;
    let mut queue: std::collections::VecDeque<(String, String)> = candidates.into();
    let mut deferred = Vec::new();
    let mut first = true;
    while let Some((c, sha)) = queue.pop_front() {
        let skip = match (&independent, undone) {
            (Some(tips), false) => {
                let contained = !tips.contains(&sha);
                if contained {
                    // Merged with the tip that contains it, unless that merge is undone.
                    deferred.push((c.clone(), sha.clone()));
                }
                contained
            }
            _ => {
                !first
                    && !repo
                        .git
                        .refs_not_merged_into("HEAD", std::slice::from_ref(&c))?
                        .contains(&c)
            }
        };
        first = false;
        if skip {
            continue;
        }
        // No rename detection: an annex link renamed to a variant name has the same blob as the
        // original when both sit in one directory, and git would carry the other side's edit of
        // the original over to the variant, replacing the version the variant was made to keep.
        // git 2.47's default strategy (ort) still pairs exact renames under -Xno-renames (found by
        // the convergence test), so the recursive strategy is named explicitly.
        let merge = [
            "-c",
            "merge.directoryRenames=false",
            "-c",
            "merge.renames=false",
            "merge",
            "-q",
            "--no-edit",
            "-s",
            "recursive",
            "-Xno-renames",
            "--allow-unrelated-histories",
            &c,
        ];
        let marker = merge_marker(repo);
        let _ = std::fs::create_dir_all(marker.parent().unwrap());
        std::fs::write(&marker, format!("{}\n", std::process::id()))
            .map_err(|e| Error::io(format!("writing {}", marker.display()), e))?;
        let started = std::time::SystemTime::now();
        // git takes the index lock before it changes anything: a merge refused for a busy
        // lock is simply waited for and run again (run_index).
        let merged = repo
            .git
            .run_index(merge, &[])
            .map(|_| ())
            .map_err(stderr_of);
        if let Err(e) = merged {
            let conflicted = repo.git_dir.join("MERGE_HEAD").exists();
            let resolved = if conflicted {
                resolve_conflicts(repo, &c, started)
            } else {
                Ok(false)
            };
            match resolved {
                Ok(true) => {
                    let _ = std::fs::remove_file(&marker);
                    report.resolved.push(c.clone());
                    continue;
                }
                Ok(false) => {
                    if !undone {
                        undone = true;
                        queue.extend(deferred.drain(..));
                    }
                    let _ = abort_merge(repo, started);
                    let _ = std::fs::remove_file(&marker);
                    report.errors.push(if conflicted {
                        format!(
                            "merging {c} failed and was undone ({}); conflicts between files that are not annexed are left to you (git merge {c})",
                            e.lines().last().filter(|l| !l.is_empty()).unwrap_or("conflicting changes")
                        )
                    } else {
                        // git refused before merging (its last line is just "Aborting"):
                        // what it said names the files in the way.
                        let said: Vec<&str> = e
                            .lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty() && *l != "Aborting")
                            .collect();
                        format!(
                            "merging {c} was refused by git ({}); move, commit or remove the files it names, then sync again",
                            said.join(" ")
                        )
                    });
                }
                Err(err) => {
                    // Resolving failed part way (a full disk, a lock): undo the whole merge so
                    // the next attempt starts clean, and say why.
                    let _ = abort_merge(repo, started);
                    let _ = std::fs::remove_file(&marker);
                    return Err(err);
                }
            }
        } else {
            let _ = std::fs::remove_file(&marker);
        }
    }
    Ok(())
}

/// Written (with our pid) while sync runs a merge, removed after: a marker left by a process
/// that no longer runs means a sync was killed mid-merge.
fn merge_marker(repo: &Repo) -> PathBuf {
    repo.annex_dir().join("ferry").join("sync-merging")
}

/// Undoes the half-done merge of a sync that was killed (`kill -9`, power loss) or that failed
/// part way, so the next sync starts clean and redoes it. Called with the sync lock held: every
/// merge runs under it, so a marker seen now belongs to no running merge (not even when it holds
/// this process's pid: that is an earlier attempt of this daemon). A merge someone started by
/// hand (no marker) is never touched.
fn recover_interrupted_merge(repo: &Repo) -> Result<()> {
    let marker = merge_marker(repo);
    if !marker.exists() {
        return Ok(());
    }
    if repo.git_dir.join("MERGE_HEAD").exists() {
        // The marker is written just before the merge starts.
        let started = std::fs::metadata(&marker)
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| std::time::SystemTime::now() + std::time::Duration::from_secs(1));
        abort_merge(repo, started)?;
    }
    let _ = std::fs::remove_file(&marker);
    Ok(())
}

/// `git merge --abort`, and the removal of the copies git wrote beside a directory when it moved
/// a conflicting file aside (`name~HEAD`, `name~<ref>`): the abort leaves them in the work tree,
/// and every later attempt at the same merge would add one more (`name~HEAD_0`, `_1`…). Removed
/// are only files git does not track, written since `started`, whose content is exactly one side
/// of the conflict: a committed blob, so nothing is lost.
fn abort_merge(repo: &Repo, started: std::time::SystemTime) -> Result<()> {
    let debris = unmerged_entries(repo)
        .and_then(|u| merge_debris(repo, &u, started))
        .unwrap_or_default();
    repo.git.run_index(["merge", "--abort"], &[])?;
    remove_untracked(repo, debris);
    Ok(())
}

/// One index entry of a conflicted path (`git ls-files -u`).
struct Unmerged {
    path: Vec<u8>,
    mode: String,
    sha: String,
    /// 1 the merge base, 2 ours, 3 theirs.
    stage: u8,
}

/// The index entries of the conflicted paths: one `git ls-files -u`.
fn unmerged_entries(repo: &Repo) -> Result<Vec<Unmerged>> {
    let out = repo.git.run(["ls-files", "-u", "-z"])?;
    Ok(out
        .split(|&b| b == 0)
        .filter_map(|rec| {
            let tab = rec.iter().position(|&b| b == b'\t')?;
            let meta = std::str::from_utf8(&rec[..tab]).ok()?;
            let mut it = meta.split(' ');
            let (mode, sha, stage) = (it.next()?, it.next()?, it.next()?.parse().ok()?);
            Some(Unmerged {
                path: rec[tab + 1..].to_vec(),
                mode: mode.to_string(),
                sha: sha.to_string(),
                stage,
            })
        })
        .collect())
}

/// Removes those of `files` (absolute paths in the work tree) that git's index does not
/// have: one `git ls-files` for all; none when that cannot be told.
fn remove_untracked(repo: &Repo, files: Vec<PathBuf>) {
    let Ok(top) = repo.work_tree() else {
        return;
    };
    let rel: Vec<&[u8]> = files
        .iter()
        .filter_map(|p| p.strip_prefix(top).ok())
        .map(|r| r.as_os_str().as_bytes())
        .collect();
    if rel.is_empty() || rel.len() != files.len() {
        return;
    }
    let mut args = vec![
        std::ffi::OsString::from("ls-files"),
        "-z".into(),
        "--".into(),
    ];
    args.extend(rel.iter().map(|r| crate::annexed::literal_pathspec(r)));
    let Ok(tracked) = repo.git.run(&args) else {
        return;
    };
    let tracked: std::collections::HashSet<&[u8]> = tracked
        .split(|&b| b == 0)
        .filter(|t| !t.is_empty())
        .collect();
    for (p, r) in files.iter().zip(rel) {
        if !tracked.contains(r) {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The copies git wrote beside a directory when it moved a conflicting file aside during the
/// merge in progress (`name~HEAD`, `name~<ref>`, maybe with `_0`…): files written since
/// `started` that hold exactly one side of the conflict, either its blob (a link, a pointer, a
/// file in git) or the content of the annexed key it points to (an unlocked file), the latter
/// only while the store has that content too. Whether git tracks them is for the caller to
/// check once the index is settled.
fn merge_debris(
    repo: &Repo,
    unmerged: &[Unmerged],
    started: std::time::SystemTime,
) -> Result<Vec<PathBuf>> {
    use std::os::unix::fs::MetadataExt;
    let top = repo.work_tree()?;
    let store = repo.store();
    // Stage entries of the conflicted paths: the blobs a moved-aside copy can hold.
    let mut blobs: std::collections::BTreeMap<&[u8], Vec<String>> = Default::default();
    for u in unmerged {
        blobs.entry(&u.path).or_default().push(u.sha.clone());
    }
    // ctime is kept with a coarse clock: allow a second of slack.
    let since = started
        .checked_sub(std::time::Duration::from_secs(1))
        .unwrap_or(started)
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut out = Vec::new();
    for (path, shas) in blobs {
        let dir = top.join(std::ffi::OsStr::from_bytes(path));
        if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let refs: Vec<&str> = shas.iter().map(String::as_str).collect();
        let sizes = crate::git::sizes_many(&repo.git, &refs)?;
        let small: Vec<Vec<u8>> = shas
            .iter()
            .zip(&sizes)
            .filter(|(_, s)| s.is_some_and(|s| s < 32 * 1024))
            .map(|(sha, _)| sha.as_bytes().to_vec())
            .collect();
        let keys: Vec<crate::key::Key> = crate::git::cat_many(&repo.git, &small)?
            .into_iter()
            .flatten()
            .filter_map(|(_, data)| crate::store::parse_pointer(&data))
            .collect();
        for (p, m) in moved_aside_files(&dir) {
            let ctime = std::time::Duration::new(m.ctime().max(0) as u64, m.ctime_nsec() as u32);
            if ctime < since {
                continue;
            }
            let content = if m.file_type().is_symlink() {
                std::fs::read_link(&p)
                    .ok()
                    .map(|t| t.as_os_str().as_bytes().to_vec())
            } else if m.is_file() && sizes.contains(&Some(m.len())) {
                std::fs::read(&p).ok()
            } else {
                None
            };
            let same_blob =
                content.is_some_and(|c| shas.contains(&crate::ops::add::git_blob_id(&c)));
            let same_content = || {
                m.is_file()
                    && keys.iter().any(|k| {
                        k.size == Some(m.len())
                            && store.find(k).is_some()
                            && matches!(crate::hash::verify_file(k, &p), Ok(Some(true)))
                    })
            };
            if same_blob || same_content() {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// The entries beside `dir` named like git's moved-aside copies of a file of that name
/// (`dir~…`), with their metadata (not followed).
fn moved_aside_files(dir: &std::path::Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Vec::new();
    };
    let prefix = [name.as_bytes(), b"~"].concat();
    let Ok(rd) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.file_name().as_bytes().starts_with(&prefix))
        .filter_map(|e| {
            let p = e.path();
            std::fs::symlink_metadata(&p).ok().map(|m| (p, m))
        })
        .collect()
}

/// For each conflicted path that is an annexed file on one side and a directory on the other,
/// the name git moved the file aside to, as git's default (ort) strategy names it and git-annex
/// then resolves it: `path~HEAD` for our file, `path~<theirs>` for theirs, with `/` in the ref
/// written as `_`, and `_0`, `_1`… appended while the name is taken in either side or the
/// merge base.
fn moved_aside_names(
    repo: &Repo,
    paths: &std::collections::BTreeMap<Vec<u8>, [Option<Side>; 2]>,
    theirs: &str,
) -> Result<std::collections::BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut out = std::collections::BTreeMap::new();
    // One-sided conflicts (a file against a deletion or against a directory), asked about the
    // other side.
    let one_sided: Vec<(&Vec<u8>, bool)> = paths
        .iter()
        .filter_map(|(p, sides)| match sides {
            [Some(s), None] if s.key.is_some() => Some((p, true)),
            [None, Some(s)] if s.key.is_some() => Some((p, false)),
            _ => None,
        })
        .collect();
    if one_sided.is_empty() {
        return Ok(out);
    }
    let revs: Vec<Vec<u8>> = one_sided
        .iter()
        .map(|(p, ours)| [if *ours { "MERGE_HEAD:" } else { "HEAD:" }.as_bytes(), p].concat())
        .collect();
    let types = object_types(repo, &revs)?;
    let against_dir: Vec<(&Vec<u8>, bool)> = one_sided
        .into_iter()
        .zip(types)
        .filter(|(_, t)| t.as_deref() == Some("tree"))
        .map(|(x, _)| x)
        .collect();
    if against_dir.is_empty() {
        return Ok(out);
    }
    let mut trees = vec!["HEAD".to_string(), "MERGE_HEAD".to_string()];
    if let Ok(bases) = repo
        .git
        .run_str(["merge-base", "--all", "HEAD", "MERGE_HEAD"])
    {
        trees.extend(bases.lines().map(str::to_string));
    }
    for (path, ours) in against_dir {
        let branch = if ours { "HEAD" } else { theirs };
        let base = [path.as_slice(), b"~", branch.replace('/', "_").as_bytes()].concat();
        let mut name = base.clone();
        for n in 0.. {
            let revs: Vec<Vec<u8>> = trees
                .iter()
                .map(|t| [t.as_bytes(), b":", &name].concat())
                .collect();
            if object_types(repo, &revs)?.iter().all(Option::is_none) || n > 1000 {
                break;
            }
            name = [base.as_slice(), format!("_{n}").as_bytes()].concat();
        }
        out.insert(path.clone(), name);
    }
    Ok(out)
}

/// The type of each object named (`HEAD:path`…), `None` when there is none: one
/// `git cat-file --batch-check` run.
fn object_types(repo: &Repo, revs: &[Vec<u8>]) -> Result<Vec<Option<String>>> {
    let mut input = Vec::new();
    for r in revs {
        // A name with a newline cannot be asked for; ask for something that is surely missing.
        input.extend_from_slice(if r.contains(&b'\n') {
            b"0000000000000000000000000000000000000000"
        } else {
            r
        });
        input.push(b'\n');
    }
    let out = repo
        .git
        .run_with_input(["cat-file", "--batch-check=%(objecttype)"], &input)?;
    // A found object is one word; anything else ("<name> missing", "ambiguous") is not there.
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .map(|l| (!l.contains(' ')).then(|| l.to_string()))
        .chain(std::iter::repeat(None))
        .take(revs.len())
        .collect())
}

/// The name git-annex gives one side of a conflicted annexed file:
/// `dir/stem.variant-XXXX.ext`, where XXXX is the first 4 hex digits of the md5 of the key
/// (the whole keyFile when the name is already a variant) and `.ext` the file name from its
/// last dot, as Haskell's `takeExtension` has it: a dotfile is all extension (`.hidden` →
/// `.variant-XXXX.hidden`), and a moved-aside `y.txt~HEAD` has the extension `.txt~HEAD`.
pub fn variant_name(path: &[u8], key: &crate::key::Key) -> Vec<u8> {
    use md5::{Digest, Md5};
    let (dir, base) = match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => (&path[..0], path),
    };
    let (stem, ext) = match base.iter().rposition(|&b| b == b'.') {
        Some(i) => (&base[..i], &base[i..]),
        None => (base, &base[base.len()..]),
    };
    let marker = b".variant-";
    let h: Vec<u8> = if path.windows(marker.len()).any(|w| w == marker) {
        key.file_name()
    } else {
        crate::key::hex(&Md5::digest(key.to_bytes())).as_bytes()[..4].to_vec()
    };
    [dir, stem, marker, &h, ext].concat()
}

/// One side of a conflicted path, from the index's stage 2 (ours) or 3 (theirs).
struct Side {
    mode: String,
    sha: String,
    key: Option<crate::key::Key>,
}

/// Resolves a failed merge the way git-annex does, when every conflicted path has at least one
/// annexed side: both versions of an annexed file are kept under variant names; an annexed file
/// conflicting with a non-annexed one becomes a variant and the other keeps the name; a modified
/// annexed file conflicting with a deletion survives as a variant; an annexed file conflicting
/// with a directory becomes a variant of the name git moved it aside to (`name~HEAD` when it is
/// ours, `name~<merged ref>` when it is theirs) and the directory keeps the name. The result is
/// the tree git-annex makes from the same merge, so ferry and git-annex clones that resolve the
/// same conflict agree. Returns false (touching nothing) when some conflict is not of these
/// kinds. `theirs` is the ref as it was given to `git merge`, `started` when that merge began.
fn resolve_conflicts(repo: &Repo, theirs: &str, started: std::time::SystemTime) -> Result<bool> {
    let unmerged = unmerged_entries(repo)?;
    let mut paths: std::collections::BTreeMap<Vec<u8>, [Option<Side>; 2]> = Default::default();
    let mut shas = Vec::new();
    for u in &unmerged {
        let slot = match u.stage {
            2 => 0,
            3 => 1,
            _ => continue,
        };
        let entry = paths.entry(u.path.clone()).or_insert([None, None]);
        entry[slot] = Some(Side {
            mode: u.mode.clone(),
            sha: u.sha.clone(),
            key: None,
        });
        shas.push(u.sha.as_bytes().to_vec());
    }
    if paths.is_empty() {
        return Ok(false);
    }
    // For a conflict between different types (file vs symlink), git records one side under
    // `path~<branch>`; put it back with its twin, as git-annex does.
    let cruft: Vec<Vec<u8>> = paths
        .keys()
        .filter(|p| {
            p.iter()
                .rposition(|&b| b == b'~')
                .is_some_and(|i| !p[i..].contains(&b'/') && paths.contains_key(&p[..i]) && i > 0)
        })
        .cloned()
        .collect();
    for c in &cruft {
        let twin = c[..c.iter().rposition(|&b| b == b'~').unwrap()].to_vec();
        let moved = paths.remove(c).unwrap();
        let entry = paths.get_mut(&twin).unwrap();
        for (slot, side) in moved.into_iter().enumerate() {
            if let Some(side) = side {
                entry[slot] = Some(side);
            }
        }
    }
    let blobs = crate::git::cat_many(&repo.git, &shas)?;
    let contents: std::collections::HashMap<Vec<u8>, Vec<u8>> = shas
        .into_iter()
        .zip(blobs)
        .filter_map(|(s, b)| b.map(|(_, d)| (s, d)))
        .collect();
    for sides in paths.values_mut() {
        for side in sides.iter_mut().flatten() {
            let data = contents
                .get(side.sha.as_bytes())
                .map(Vec::as_slice)
                .unwrap_or_default();
            side.key = if side.mode == "120000" {
                crate::store::parse_link_target(data)
            } else {
                crate::store::parse_pointer(data)
            };
        }
    }
    // Only conflicts with an annexed side are ours to resolve.
    if !paths
        .values()
        .all(|s| s.iter().flatten().any(|x| x.key.is_some()))
    {
        return Ok(false);
    }
    let aside = moved_aside_names(repo, &paths, theirs)?;
    // What git moved aside for a file against a directory: removed once the file lives on as
    // its variant (while the index still says which blobs were in conflict).
    let debris = merge_debris(repo, &unmerged, started)?;
    let top = repo.work_tree()?.to_path_buf();
    let store = repo.store();
    let mut info = Vec::new(); // update-index --index-info lines
    let mut remove: Vec<Vec<u8>> = cruft;
    for (path, sides) in &paths {
        remove.push(path.clone());
        let [ours, theirs] = sides;
        let same_key = match (ours, theirs) {
            (Some(a), Some(b)) => a.key.is_some() && a.key == b.key,
            _ => false,
        };
        if same_key {
            // Both sides the same content: keep the name; unlocked wins over locked.
            let (a, b) = (ours.as_ref().unwrap(), theirs.as_ref().unwrap());
            let pick = if a.mode != "120000" { a } else { b };
            info.push((
                pick.mode.clone(),
                pick.sha.clone(),
                path.clone(),
                pick.key.clone(),
            ));
            continue;
        }
        // The name the variant is made from: git's moved-aside name for a file that met a
        // directory (as git-annex, which resolves the index entry git left there).
        let named = aside.get(path).unwrap_or(path);
        for side in sides.iter().flatten() {
            match &side.key {
                Some(k) => info.push((
                    side.mode.clone(),
                    String::new(),
                    variant_name(named, k),
                    Some(k.clone()),
                )),
                // The non-annexed side keeps the name.
                None => info.push((side.mode.clone(), side.sha.clone(), path.clone(), None)),
            }
        }
    }
    // Clear the conflicted entries and their work-tree files, then stage and write the results.
    let mut rm_input = Vec::new();
    for p in &remove {
        rm_input.extend_from_slice(p);
        rm_input.push(0);
        let w = top.join(std::ffi::OsStr::from_bytes(p));
        // A file against a directory: the directory stays (git's copy of the file is among
        // the debris).
        if std::fs::symlink_metadata(&w).is_ok_and(|m| !m.is_dir()) {
            let _ = std::fs::remove_file(&w);
        }
    }
    repo.git.run_index(
        ["update-index", "-z", "--force-remove", "--stdin"],
        &rm_input,
    )?;
    let tmpdir = store.tmp_dir()?;
    let mut stage_input = Vec::new();
    let mut link_blobs = Vec::new();
    for (mode, sha, path, key) in &info {
        let w = top.join(std::ffi::OsStr::from_bytes(path));
        if let Some(parent) = w.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        let sha = match (key, mode.as_str()) {
            (Some(k), "120000") => {
                let target = crate::store::link_target(path, k);
                let _ = std::fs::remove_file(&w);
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &w)
                    .map_err(|e| Error::io(format!("creating {}", w.display()), e))?;
                link_blobs.push(target.clone());
                crate::ops::add::git_blob_id(&target)
            }
            (Some(k), _) => {
                let pointer = crate::filter::pointer_for(k);
                let content = match store.find(k) {
                    Some(obj) => std::fs::read(&obj)
                        .map_err(|e| Error::io(format!("reading {}", obj.display()), e))?,
                    None => pointer.clone(),
                };
                let mut tmp = tempfile::NamedTempFile::new_in(&tmpdir)
                    .map_err(|e| Error::io("creating temp file", e))?;
                std::io::Write::write_all(&mut tmp, &content)
                    .map_err(|e| Error::io("writing temp file", e))?;
                tmp.persist(&w)
                    .map_err(|e| Error::io(format!("writing {}", w.display()), e.error))?;
                link_blobs.push(pointer.clone());
                crate::ops::add::git_blob_id(&pointer)
            }
            (None, _) => {
                // The non-annexed side: its blob as committed (read above).
                let Some(blob) = contents.get(sha.as_bytes()) else {
                    return Err(Error::Protocol(format!(
                        "the conflicted blob {sha} could not be read from git; `git fsck` says what is damaged"
                    )));
                };
                if mode == "120000" {
                    let _ = std::fs::remove_file(&w);
                    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(blob), &w)
                        .map_err(|e| Error::io(format!("creating {}", w.display()), e))?;
                } else {
                    std::fs::write(&w, blob)
                        .map_err(|e| Error::io(format!("writing {}", w.display()), e))?;
                }
                sha.clone()
            }
        };
        stage_input.extend_from_slice(format!("{mode} {sha}\t").as_bytes());
        stage_input.extend_from_slice(path);
        stage_input.push(0);
    }
    // The link and pointer blobs must exist before the index names them.
    let lock = repo.branch.lock_journal()?;
    repo.branch.commit_changes(
        &lock,
        &Default::default(),
        &mut link_blobs.into_iter(),
        "update",
    )?;
    drop(lock);
    repo.git
        .run_index(["update-index", "-z", "--index-info"], &stage_input)?;
    let paths_to_refresh: Vec<Vec<u8>> = info.iter().map(|(_, _, p, _)| p.clone()).collect();
    let _ = crate::ops::add::stage(repo, &paths_to_refresh);
    repo.git.run_index(
        [
            "commit",
            "--no-verify",
            "-q",
            "-m",
            "git-annex automatic merge conflict fix",
        ],
        &[],
    )?;
    remove_untracked(repo, debris);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs git in `dir` as a user would; `check`: fail the test when git fails.
    fn git_in(dir: &std::path::Path, args: &[&str], check: bool) -> String {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(!check || out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    #[test]
    fn local_synced_ref_never_moves_over_an_unmerged_push() {
        let d = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| git_in(d.path(), args, true);
        let (repo, _) = Repo::init(d.path(), None, "test", &Default::default()).unwrap();
        git(&["commit", "-q", "--allow-empty", "-m", "one"]);
        let one = git(&["rev-parse", "HEAD"]);
        git(&["commit", "-q", "--allow-empty", "-m", "two"]);
        let two = git(&["rev-parse", "HEAD"]);
        let synced = || git(&["rev-parse", "refs/heads/synced/main"]);

        // Absent: created at the branch.
        advance_synced(&repo, "main");
        assert_eq!(synced(), two);
        // Behind the branch (merged): moved up.
        git(&["update-ref", "refs/heads/synced/main", &one]);
        advance_synced(&repo, "main");
        assert_eq!(synced(), two);
        // A push that is not merged yet (another clone's commit): left alone.
        let theirs = git(&[
            "commit-tree",
            "-p",
            &one,
            "-m",
            "theirs",
            &format!("{one}^{{tree}}"),
        ]);
        git(&["update-ref", "refs/heads/synced/main", &theirs]);
        advance_synced(&repo, "main");
        assert_eq!(synced(), theirs);
    }

    /// Debris removal takes only files git does not track, asked of git in one call, names
    /// with spaces, a `~` or in subdirectories included.
    #[test]
    fn only_untracked_debris_is_removed() {
        let d = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| git_in(d.path(), args, true);
        let (repo, _) = Repo::init(d.path(), None, "test", &Default::default()).unwrap();
        let top = repo.work_tree().unwrap().to_path_buf();
        std::fs::create_dir_all(top.join("sub dir")).unwrap();
        let names = [
            "x~HEAD",
            "sub dir/y~HEAD_0",
            "z~refs_heads_synced_main",
            "*~HEAD",
        ];
        for n in names {
            std::fs::write(top.join(n), n).unwrap();
        }
        git(&["add", "--", "x~HEAD", "sub dir/y~HEAD_0"]);
        git(&["commit", "-q", "-m", "tracked ones"]);
        remove_untracked(&repo, names.iter().map(|n| top.join(n)).collect());
        let left: Vec<bool> = names.iter().map(|n| top.join(n).exists()).collect();
        assert_eq!(left, [true, true, false, false]);
    }

    #[test]
    fn a_merge_left_half_done_by_this_very_process_is_undone_and_redone() {
        // A daemon whose merge failed part way once left its own pid in the marker and then
        // refused every later merge ("another ferry sync (pid <itself>) is merging").
        let d = tempfile::tempdir().unwrap();
        // `git merge` of the conflict exits non-zero: that is the point.
        let git = |args: &[&str]| git_in(d.path(), args, false);
        let (repo, _) = Repo::init(d.path(), None, "test", &Default::default()).unwrap();
        std::fs::write(d.path().join("f.txt"), "base\n").unwrap();
        git(&["add", "f.txt"]);
        git(&["commit", "-q", "-m", "base"]);
        git(&["checkout", "-q", "-b", "other"]);
        std::fs::write(d.path().join("f.txt"), "theirs\n").unwrap();
        git(&["commit", "-q", "-am", "theirs"]);
        let theirs = git(&["rev-parse", "HEAD"]);
        git(&["checkout", "-q", "main"]);
        std::fs::write(d.path().join("f.txt"), "ours\n").unwrap();
        git(&["commit", "-q", "-am", "ours"]);
        git(&["update-ref", "refs/heads/synced/main", &theirs]);
        git(&["merge", "-q", &theirs]); // conflicts: MERGE_HEAD is left
        assert!(repo.git_dir.join("MERGE_HEAD").exists());
        let marker = merge_marker(&repo);
        std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
        std::fs::write(&marker, format!("{}\n", std::process::id())).unwrap();

        let report = merge_incoming(&repo).expect("the stale merge is undone, not waited for");
        assert!(!repo.git_dir.join("MERGE_HEAD").exists());
        assert!(!marker.exists());
        // The redone merge of a conflict between non-annexed files is undone and reported.
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        assert_eq!(
            std::fs::read_to_string(d.path().join("f.txt")).unwrap(),
            "ours\n"
        );
    }

    #[test]
    fn variant_names_match_git_annex() {
        // git-annex 10.20230126 named the variants of this key `a.tar.variant-a2d8.gz` (the
        // first 4 hex digits of the md5 of the key). The name is split the way Haskell's
        // `takeExtension` splits it: the extension is everything from the last dot of the file
        // name, even when that dot is the first character (`.hidden` is all extension). Each
        // name below has the shape git-annex gave the variants of that name (seen with other
        // keys: the four digits depend on the key only).
        let k = crate::key::Key::parse_str(
            "SHA256E-s11--66400487ed3a61022788fe06c2ae69b03cea37a4b2ded536857c6dab6645474c.tar.gz",
        )
        .unwrap();
        for (name, variant) in [
            ("a.tar.gz", "a.tar.variant-a2d8.gz"),
            ("dir/x.y.z", "dir/x.y.variant-a2d8.z"),
            ("noext", "noext.variant-a2d8"),
            ("trail.", "trail.variant-a2d8."),
            (".hidden", ".variant-a2d8.hidden"),
            ("dir/.hidden", "dir/.variant-a2d8.hidden"),
            ("dir/.env.local", "dir/.env.variant-a2d8.local"),
            (".config.yml", ".config.variant-a2d8.yml"),
            ("..dots", "..variant-a2d8.dots"),
            (".d/f", ".d/f.variant-a2d8"),
            // Names git moved aside (a file against a directory).
            ("x~HEAD", "x~HEAD.variant-a2d8"),
            ("sub/y.txt~HEAD", "sub/y.variant-a2d8.txt~HEAD"),
            (".dot~HEAD", ".variant-a2d8.dot~HEAD"),
            ("sub/.e.txt~HEAD", "sub/.e.variant-a2d8.txt~HEAD"),
        ] {
            assert_eq!(
                String::from_utf8(variant_name(name.as_bytes(), &k)).unwrap(),
                variant,
                "{name}"
            );
        }
        // A name that already is a variant gets the whole key.
        let again = String::from_utf8(variant_name(b"a.variant-1234.txt", &k)).unwrap();
        assert_eq!(
            again,
            format!(
                "a.variant-1234.variant-{}.txt",
                String::from_utf8(k.file_name()).unwrap()
            )
        );
    }
}
