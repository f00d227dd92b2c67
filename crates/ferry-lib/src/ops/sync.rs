//! `sync` (git level): commit, fetch every remote in parallel, union-merge the `git-annex`
//! branches, merge the remotes' branches, push to every remote in parallel. The conventions are
//! git-annex's (`synced/<branch>` refs), so ferry and git-annex clones sync with each other.
//!
//! A remote that is simply not there (a local path that does not exist: an unplugged drive) is
//! reported as unavailable and skipped; a real failure is reported and makes the sync fail; in
//! both cases every reachable remote is still synced.
//!
//! Not yet here: automatic resolution of merge conflicts (a conflicting merge is aborted and
//! reported), ssh connection sharing, and the tagged-push fallback.

use crate::error::{Error, Result};
use crate::repo::Repo;
use std::path::PathBuf;

#[derive(Clone, Debug, Default)]
pub struct SyncOptions {
    /// Only these remotes (default: all with `annex-sync` not false).
    pub remotes: Vec<String>,
    /// Skip committing pending work-tree changes.
    pub no_commit: bool,
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

struct Remote {
    name: String,
    readonly: bool,
    cost: f64,
    /// For a local remote: its path, to tell "not there" from "broken".
    local_path: Option<PathBuf>,
}

fn remotes(repo: &Repo, only: &[String]) -> Result<Vec<Remote>> {
    let names = repo.git.run_str(["remote"])?;
    let mut out = Vec::new();
    for name in names.lines().map(str::to_string) {
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        let cfg = |k: &str| repo.git.config(&format!("remote.{name}.{k}"));
        if only.is_empty() && cfg("annex-sync")?.as_deref() == Some("false") {
            continue;
        }
        let url = cfg("url")?.unwrap_or_default();
        let local_path = match url.strip_prefix("file://") {
            Some(p) => Some(PathBuf::from(p)),
            None if !url.contains("://") && !url.split('/').next().unwrap_or("").contains(':') => {
                let p = PathBuf::from(&url);
                Some(if p.is_absolute() {
                    p
                } else {
                    repo.top
                        .clone()
                        .unwrap_or_else(|| repo.git_dir.clone())
                        .join(p)
                })
            }
            None => None,
        };
        out.push(Remote {
            readonly: cfg("annex-readonly")?.as_deref() == Some("true"),
            cost: cfg("annex-cost")?
                .and_then(|c| c.parse().ok())
                .unwrap_or(if local_path.is_some() { 100.0 } else { 200.0 }),
            local_path,
            name,
        });
    }
    out.sort_by(|a, b| a.cost.total_cmp(&b.cost).then(a.name.cmp(&b.name)));
    Ok(out)
}

fn current_branch(repo: &Repo) -> Result<String> {
    repo.git
        .run_opt(["symbolic-ref", "--quiet", "--short", "HEAD"])?
        .ok_or_else(|| {
            Error::Unsupported(
                "HEAD is detached; check out a branch (git switch <branch>) before syncing".into(),
            )
        })
}

/// Runs git, returning Ok or the trimmed stderr.
fn git_try(repo: &Repo, args: &[&str]) -> std::result::Result<(), String> {
    repo.git.run(args).map(|_| ()).map_err(|e| match e {
        Error::Git { stderr, .. } => stderr,
        e => e.to_string(),
    })
}

pub fn sync(repo: &Repo, opts: &SyncOptions) -> Result<SyncReport> {
    repo.work_tree()?;
    let branch = current_branch(repo)?;
    let mut report = SyncReport::default();
    if repo.git_dir.join("MERGE_HEAD").exists() {
        return Err(Error::Unsupported(
            "a merge is in progress; finish it (git commit) or abort it (git merge --abort), then sync again".into(),
        ));
    }

    // 1. Commit what is pending in tracked files.
    let has_head = repo.git.rev_parse("HEAD")?.is_some();
    if !opts.no_commit && has_head {
        let dirty = repo
            .git
            .run(["status", "--porcelain", "--untracked-files=no", "-z"])?;
        if !dirty.is_empty() {
            let desc = repo.description(repo.uuid())?.unwrap_or_default();
            repo.git.run([
                "commit",
                "-a",
                "-q",
                "--no-verify",
                "-m",
                &format!("git-annex in {desc}"),
            ])?;
            report.committed = true;
        }
    }

    // 2. Fetch every remote at once.
    repo.learn_local_remote_uuids()?;
    let all = remotes(repo, &opts.remotes)?;
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
    let fetched: Vec<std::result::Result<(), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = all
            .iter()
            .zip(&available)
            .map(|(r, &avail)| {
                s.spawn(move || {
                    if avail {
                        git_try(repo, &["fetch", "--quiet", &r.name])
                    } else {
                        Ok(())
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("fetch thread panicked".into()))
            })
            .collect()
    });
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
    let _ = repo
        .git
        .run(["branch", "-f", &format!("synced/{branch}"), &branch]);
    let push_to: Vec<usize> = (0..all.len())
        .filter(|&i| reports[i].pulled == Outcome::Ok && !all[i].readonly)
        .collect();
    for i in 0..all.len() {
        if all[i].readonly && reports[i].pulled == Outcome::Ok {
            reports[i].pushed = Outcome::Skipped;
            reports[i].message = Some("read-only remote (annex-readonly)".into());
        }
    }
    if repo.git.rev_parse("HEAD")?.is_some() {
        let pushed: Vec<std::result::Result<(), String>> = std::thread::scope(|s| {
            let branch = &branch;
            let handles: Vec<_> = push_to
                .iter()
                .map(|&i| {
                    let name = &all[i].name;
                    s.spawn(move || push(repo, name, branch))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("push thread panicked".into()))
                })
                .collect()
        });
        for (&i, r) in push_to.iter().zip(pushed) {
            if let Err(e) = r {
                // Rejected as non-fast-forward: someone pushed meanwhile. Pull, merge, retry.
                let mut last = e;
                let mut ok = false;
                for _ in 0..2 {
                    if git_try(repo, &["fetch", "--quiet", &all[i].name]).is_err() {
                        break;
                    }
                    merge_all(repo, &branch, &mut report)?;
                    let _ = repo
                        .git
                        .run(["branch", "-f", &format!("synced/{branch}"), &branch]);
                    match push(repo, &all[i].name, &branch) {
                        Ok(()) => {
                            ok = true;
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                if !ok {
                    reports[i].pushed = Outcome::Failed;
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

/// The sync push, then best-effort direct pushes (for bare repositories).
fn push(repo: &Repo, remote: &str, branch: &str) -> std::result::Result<(), String> {
    git_try(
        repo,
        &[
            "push",
            "--quiet",
            remote,
            &format!("refs/heads/{branch}:refs/heads/synced/{branch}"),
            "+refs/heads/git-annex:refs/heads/synced/git-annex",
        ],
    )?;
    // A non-bare remote refuses a push to its checked-out branch; that is expected.
    let _ = git_try(
        repo,
        &[
            "push",
            "--quiet",
            remote,
            "refs/heads/git-annex:refs/heads/git-annex",
        ],
    );
    let _ = git_try(
        repo,
        &[
            "push",
            "--quiet",
            remote,
            &format!("refs/heads/{branch}:refs/heads/{branch}"),
        ],
    );
    Ok(())
}

fn merge_all(repo: &Repo, branch: &str, report: &mut SyncReport) -> Result<()> {
    let lock = repo.branch.lock_journal()?;
    let siblings = repo.branch.sibling_refs()?;
    repo.branch.merge_refs(&lock, &siblings)?;
    drop(lock);

    let mut candidates = vec![format!("refs/heads/synced/{branch}")];
    for r in repo.git.run_str(["remote"])?.lines() {
        candidates.push(format!("refs/remotes/{r}/{branch}"));
        candidates.push(format!("refs/remotes/{r}/synced/{branch}"));
    }
    for c in candidates {
        let Some(sha) = repo.git.rev_parse(&format!("{c}^{{commit}}"))? else {
            continue;
        };
        let head = repo.git.rev_parse("HEAD")?;
        if let Some(head) = &head {
            let contained = repo
                .git
                .command(["merge-base", "--is-ancestor", &sha, head])
                .stdin(std::process::Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if contained {
                continue;
            }
        } else {
            // Nothing committed here yet: take theirs.
            repo.git.run(["checkout", "-q", "-B", branch, &sha])?;
            continue;
        }
        if let Err(e) = git_try(
            repo,
            &[
                "merge",
                "-q",
                "--no-edit",
                "--allow-unrelated-histories",
                &c,
            ],
        ) {
            let _ = repo.git.run(["merge", "--abort"]);
            report.errors.push(format!(
                "merging {c} failed and was undone: {}; resolve by hand (git merge {c}) — automatic conflict resolution is not in this version",
                e.lines().last().unwrap_or("")
            ));
        }
    }
    Ok(())
}
