//! Output helpers shared by the commands: errors with hints, paths, progress.

use ferry_lib::{Error, Repo, RepoOptions};
use std::io::IsTerminal;
use std::path::PathBuf;

pub fn report_error(e: &anyhow::Error) {
    eprintln!("ferry: error: {e:#}");
    if let Some(hint) = e.downcast_ref::<Error>().and_then(hint) {
        eprintln!("hint: {hint}");
    }
}

fn hint(e: &Error) -> Option<&'static str> {
    Some(match e {
        Error::NotARepo(_) => "run `ferry init` here first, or cd into a ferry repository",
        Error::NotInitialized(_) => {
            "run `ferry init` to make this git repository a ferry repository"
        }
        Error::OutsideRepo { .. } => "only paths inside the repository's work tree can be used",
        Error::InGitDir(_) => "git's own files are never annexed; name files in the work tree",
        Error::GitMissing(_) => "install git (Debian: apt-get install git)",
        Error::BadExpression { .. } => {
            "fix annex.largefiles (git config, .gitattributes or the branch config)"
        }
        Error::BadPreferred { .. } => "see `man git-annex-preferred-content` for the terms",
        _ => return None,
    })
}

pub fn options() -> RepoOptions {
    RepoOptions {
        filter_command: std::env::current_exe().ok().map(|p| {
            format!(
                "'{}' filter-process",
                p.display().to_string().replace('\'', "'\\''")
            )
        }),
        fixed_clock: std::env::var("GIT_ANNEX_VECTOR_CLOCK")
            .ok()
            .and_then(|v| v.parse().ok()),
        plain_env: std::env::var_os("GIT_DIR").is_none()
            && std::env::var_os("GIT_WORK_TREE").is_none(),
        lazy_config: false,
    }
}

pub fn cwd() -> anyhow::Result<PathBuf> {
    Ok(std::env::current_dir()?)
}

pub fn open_repo() -> anyhow::Result<Repo> {
    Ok(Repo::open(&cwd()?, &options())?)
}

/// Turns command-line paths into repo-relative ones, refusing paths outside the work tree or
/// inside `.git`. Missing paths are reported and left out; the return says whether any was.
pub fn resolve_paths(repo: &Repo, args: &[PathBuf]) -> anyhow::Result<(Vec<Vec<u8>>, bool)> {
    let top = repo.work_tree()?;
    let cwd = cwd()?;
    let mut out = Vec::new();
    let mut missing = false;
    for p in args {
        match ferry_lib::paths::repo_relative(top, &repo.git_dir, &cwd, p) {
            Ok(rel) => out.push(rel),
            Err(Error::NoSuchPath(p)) => {
                eprintln!("ferry: error: {} does not exist", p.display());
                missing = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if args.is_empty() {
        // Default: the current directory.
        out.push(ferry_lib::paths::repo_relative(
            top,
            &repo.git_dir,
            &cwd,
            std::path::Path::new("."),
        )?);
    }
    Ok((out, missing))
}

/// Shows a repo-relative byte path the way a person can read it (lossy for non-UTF-8 names).
pub fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// A byte count in binary units ("1.5 MiB"), for sizes and rates.
pub fn human(n: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} {}", units[u])
    } else {
        format!("{v:.1} {}", units[u])
    }
}

pub fn stderr_is_tty() -> bool {
    std::io::stderr().is_terminal()
}

pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}
