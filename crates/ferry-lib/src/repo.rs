//! The repository handle everything starts from: where things are, who we are.

use crate::branch::Branch;
use crate::error::{Error, IoContext, Result};
use crate::git::Git;
use crate::logs::UuidLog;
use std::path::{Path, PathBuf};

pub struct Repo {
    /// Top of the work tree; `None` for a bare repository.
    pub top: Option<PathBuf>,
    /// Absolute git directory.
    pub git_dir: PathBuf,
    pub git: Git,
    pub branch: Branch,
    uuid: std::sync::OnceLock<Option<String>>,
    /// git config as it was when the repository was opened, or when first asked for with
    /// [`RepoOptions::lazy_config`] (`git config --list`, keys as git prints them). Long-lived
    /// users (the daemon) read config afresh where it may change.
    config: std::sync::OnceLock<std::collections::HashMap<String, String>>,
    /// The entries `config` was made from, when read at opening, and when: handed once to
    /// [`Repo::config_entries_now`] if still fresh, which saves a command that opens and then
    /// syncs a second `git config --list` a moment later.
    opened_with: std::sync::Mutex<Option<(std::time::Instant, ConfigStamp, ConfigEntries)>>,
}

/// Which `.git/config` file a config read saw (inode, size, modification time): git
/// rewrites the file whole and renames it into place, so any change made since shows here.
type ConfigStamp = Option<(u64, u64, std::time::SystemTime)>;

fn config_stamp(git_dir: &Path) -> ConfigStamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(git_dir.join("config")).ok()?;
    Some((m.ino(), m.len(), m.modified().ok()?))
}

/// git config entries in git's order ([`Git::config_entries`]).
type ConfigEntries = Vec<(String, String)>;

/// How old the config read at opening may be and still count as read now.
const FRESH_CONFIG: std::time::Duration = std::time::Duration::from_millis(500);

/// Options that the caller (the CLI) resolves from its environment.
#[derive(Clone, Debug, Default)]
pub struct RepoOptions {
    /// The command git runs as the annex filter process (`<ferry> filter-process`), set by
    /// `init` when no annex filter is configured yet.
    pub filter_command: Option<String>,
    /// `GIT_ANNEX_VECTOR_CLOCK`: a fixed clock for reproducible logs.
    pub fixed_clock: Option<u64>,
    /// No `GIT_DIR` / `GIT_WORK_TREE` in the environment: a directory with a `.git` directory
    /// in it is the top of its work tree (saves asking git).
    pub plain_env: bool,
    /// Read git config only when something asks for it (the filter process, which git starts
    /// for every command that cleans a file, often needs none).
    pub lazy_config: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum InitOutcome {
    Created,
    AlreadyInitialized,
}

impl Repo {
    /// Finds the repository containing `dir`.
    pub fn discover(dir: &Path, opts: &RepoOptions) -> Result<Repo> {
        // At the top of an ordinary work tree, no need to ask git where things are.
        if opts.plain_env && dir.is_absolute() && dir.join(".git/HEAD").is_file() {
            let top = dir.canonicalize().ctx("resolving", dir)?;
            let git_dir = top.join(".git");
            return Repo::assemble(Some(top), git_dir, opts);
        }
        let probe = Git::new(dir);
        let out = probe
            .run([
                "rev-parse",
                "--is-bare-repository",
                "--absolute-git-dir",
                "--show-toplevel",
            ])
            // In a bare repository git refuses --show-toplevel: ask again without it.
            .or_else(|_| probe.run(["rev-parse", "--is-bare-repository", "--absolute-git-dir"]))
            .map_err(|e| match e {
                Error::Git { .. } => Error::NotARepo(dir.to_path_buf()),
                e => e,
            })?;
        let out = String::from_utf8_lossy(&out);
        let mut lines = out.lines();
        let bare = lines.next() == Some("true");
        let git_dir = PathBuf::from(lines.next().unwrap_or_default());
        let top = if bare {
            None
        } else {
            lines.next().map(PathBuf::from)
        };
        Repo::assemble(top, git_dir, opts)
    }

    fn assemble(top: Option<PathBuf>, git_dir: PathBuf, opts: &RepoOptions) -> Result<Repo> {
        let git = Git::new(top.clone().unwrap_or_else(|| git_dir.clone())).with_git_dir(&git_dir);
        let branch = Branch::new(git.clone(), git_dir.join("annex"), opts.fixed_clock);
        let config = std::sync::OnceLock::new();
        let mut opened_with = None;
        if !opts.lazy_config {
            let stamp = config_stamp(&git_dir);
            let entries = git.config_entries()?;
            let _ = config.set(entries.iter().cloned().collect());
            opened_with = Some((std::time::Instant::now(), stamp, entries));
        }
        Ok(Repo {
            top,
            git_dir,
            git,
            branch,
            uuid: std::sync::OnceLock::new(),
            config,
            opened_with: std::sync::Mutex::new(opened_with),
        })
    }

    /// Like [`Repo::discover`], but the repository must already be initialised.
    pub fn open(dir: &Path, opts: &RepoOptions) -> Result<Repo> {
        let r = Repo::discover(dir, opts)?;
        if r.uuid().is_empty() {
            return Err(Error::NotInitialized(
                r.top.clone().unwrap_or_else(|| r.git_dir.clone()),
            ));
        }
        if let Some(v) = r.config().get("annex.version")
            && !matches!(v.as_str(), "8" | "9" | "10")
        {
            return Err(Error::BadVersion(r.git_dir.clone(), v.clone()));
        }
        r.branch.ensure_exists()?;
        Ok(r)
    }

    /// Creates a git repository in `dir` (branch `main`) when there is none, then makes it an
    /// annex. An already initialised repository keeps its UUID; only an explicitly given
    /// description is updated.
    pub fn init(
        dir: &Path,
        description: Option<&str>,
        default_description: &str,
        opts: &RepoOptions,
    ) -> Result<(Repo, InitOutcome)> {
        let probe = Git::new(dir);
        if probe.run(["rev-parse", "--git-dir"]).is_err() {
            probe.run(["init", "--quiet", "-b", "main"])?;
        }
        let mut repo = Repo::discover(dir, opts)?;
        std::fs::create_dir_all(repo.annex_dir().join("objects"))
            .ctx("creating", &repo.annex_dir())?;
        repo.learn_local_remote_uuids()?;
        repo.configure_filter(opts)?;
        if let Some(uuid) = Some(repo.uuid().to_string()).filter(|u| !u.is_empty()) {
            repo.branch.ensure_exists()?;
            if let Some(desc) = description {
                repo.describe(&uuid, desc)?;
            } else if repo.description(&uuid)?.is_none() {
                repo.describe(&uuid, default_description)?;
            }
            return Ok((repo, InitOutcome::AlreadyInitialized));
        }
        let uuid = uuid::Uuid::new_v4().to_string();
        repo.branch.ensure_exists()?;
        if repo.git.config("annex.version")?.is_none() {
            repo.git.run(["config", "annex.version", "10"])?;
        }
        repo.git.run(["config", "annex.uuid", &uuid])?;
        repo.uuid = std::sync::OnceLock::from(Some(uuid.clone()));
        repo.describe(&uuid, description.unwrap_or(default_description))?;
        Ok((repo, InitOutcome::Created))
    }

    fn describe(&self, uuid: &str, desc: &str) -> Result<()> {
        let lock = self.branch.lock_journal()?;
        let mut log = UuidLog::parse(&self.branch.read(b"uuid.log")?.unwrap_or_default());
        if log.get(uuid) == Some(desc) {
            return Ok(());
        }
        log.set(uuid, desc, self.branch.now());
        self.branch.write(&lock, b"uuid.log", &log.render())?;
        self.branch.commit(Some(&lock), "update")?;
        Ok(())
    }

    pub fn description(&self, uuid: &str) -> Result<Option<String>> {
        let log = UuidLog::parse(&self.branch.read(b"uuid.log")?.unwrap_or_default());
        Ok(log.get(uuid).map(str::to_string))
    }

    /// Every known repository: UUID → description.
    pub fn uuid_descriptions(&self) -> Result<std::collections::BTreeMap<String, String>> {
        let log = UuidLog::parse(&self.branch.read(b"uuid.log")?.unwrap_or_default());
        Ok(log
            .current()
            .into_iter()
            .map(|(u, e)| (u.to_string(), e.value.clone()))
            .collect())
    }

    /// Remote names by UUID, from `remote.<name>.annex-uuid`.
    pub fn remote_names(&self) -> Result<std::collections::BTreeMap<String, String>> {
        let out = self
            .git
            .run_opt(["config", "--get-regexp", r"^remote\..*\.annex-uuid$"])?
            .unwrap_or_default();
        let mut m = std::collections::BTreeMap::new();
        for line in out.lines() {
            if let Some((k, v)) = line.split_once(' ') {
                let name = k
                    .strip_prefix("remote.")
                    .and_then(|k| k.strip_suffix(".annex-uuid"));
                if let Some(name) = name {
                    m.insert(v.to_string(), name.to_string());
                }
            }
        }
        Ok(m)
    }

    /// Configures git's long-running annex filter to be ferry (unless an annex filter, ferry's or
    /// git-annex's, is already configured) and `* filter=annex` in `.git/info/attributes`.
    fn configure_filter(&self, opts: &RepoOptions) -> Result<()> {
        if self.is_bare() {
            return Ok(());
        }
        let Some(cmd) = &opts.filter_command else {
            return Ok(());
        };
        if self.git.config("filter.annex.process")?.is_none()
            && self.git.config("filter.annex.clean")?.is_none()
        {
            self.git.run(["config", "filter.annex.process", cmd])?;
            // If the filter dies, git must fail rather than fall back to storing the raw
            // content in git (a multi-GiB blob that was meant for the annex).
            self.git.run(["config", "filter.annex.required", "true"])?;
        }
        let info = self.git_dir.join("info");
        std::fs::create_dir_all(&info).ctx("creating", &info)?;
        let attrs = info.join("attributes");
        let current = std::fs::read_to_string(&attrs).unwrap_or_default();
        if !current.lines().any(|l| l.trim() == "* filter=annex") {
            let mut new = current.clone();
            if !new.is_empty() && !new.ends_with('\n') {
                new.push('\n');
            }
            new.push_str("\n* filter=annex\n");
            std::fs::write(&attrs, new).ctx("writing", &attrs)?;
        }
        Ok(())
    }

    /// Records `remote.<name>.annex-uuid` for remotes that are local paths, by reading their
    /// config (as git-annex does for local remotes). Remotes that are not there are left alone.
    /// Returns the git config as it is afterwards (read again only if something was recorded).
    pub fn learn_local_remote_uuids(&self) -> Result<std::collections::HashMap<String, String>> {
        Ok(self
            .learn_local_remote_uuids_entries()?
            .into_iter()
            .collect())
    }

    /// [`Repo::learn_local_remote_uuids`], returning the config as entries in git's order
    /// ([`Git::config_entries`]: a multi-valued variable once per value).
    pub fn learn_local_remote_uuids_entries(&self) -> Result<Vec<(String, String)>> {
        let entries = self.config_entries_now()?;
        let config: std::collections::HashMap<String, String> = entries.iter().cloned().collect();
        let mut learned = false;
        for (k, url) in &config {
            let Some(name) = k
                .strip_prefix("remote.")
                .and_then(|k| k.strip_suffix(".url"))
            else {
                continue;
            };
            if config.contains_key(&format!("remote.{name}.annex-uuid")) {
                continue;
            }
            let path = match url.strip_prefix("file://") {
                Some(p) => PathBuf::from(p),
                None if url.starts_with('/') || url.starts_with('.') || !url.contains(':') => {
                    let base = self.top.clone().unwrap_or_else(|| self.git_dir.clone());
                    base.join(url)
                }
                None => continue,
            };
            let cfg = [path.join(".git/config"), path.join("config")]
                .into_iter()
                .find(|p| p.is_file());
            let Some(cfg) = cfg else { continue };
            let uuid = Git::new(&self.git.dir).run_opt([
                "config",
                "--file",
                &cfg.to_string_lossy(),
                "--get",
                "annex.uuid",
            ]);
            if let Ok(Some(uuid)) = uuid
                && !uuid.is_empty()
            {
                self.git
                    .run(["config", &format!("remote.{name}.annex-uuid"), &uuid])?;
                learned = true;
            }
        }
        if learned {
            return self.git.config_entries();
        }
        Ok(entries)
    }

    pub fn uuid(&self) -> &str {
        self.uuid
            .get_or_init(|| {
                self.config()
                    .get("annex.uuid")
                    .filter(|u| !u.is_empty())
                    .cloned()
            })
            .as_deref()
            .unwrap_or("")
    }

    /// git config entries as they are now: those read at opening if that was a moment ago,
    /// `.git/config` has not changed since, and they were not handed out before; else read
    /// again.
    pub fn config_entries_now(&self) -> Result<ConfigEntries> {
        let opened = self
            .opened_with
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match opened {
            Some((at, stamp, entries))
                if at.elapsed() < FRESH_CONFIG
                    && stamp.is_some()
                    && stamp == config_stamp(&self.git_dir) =>
            {
                Ok(entries)
            }
            _ => self.git.config_entries(),
        }
    }

    /// git config (see the field); read now if it was left for later.
    pub fn config(&self) -> &std::collections::HashMap<String, String> {
        self.config.get_or_init(|| {
            self.git.config_map().unwrap_or_else(|e| {
                eprintln!("ferry: reading git config failed: {e}");
                Default::default()
            })
        })
    }

    pub fn is_bare(&self) -> bool {
        self.top.is_none()
    }

    pub fn annex_dir(&self) -> PathBuf {
        self.git_dir.join("annex")
    }

    /// The work tree top; errors for a bare repository.
    pub fn work_tree(&self) -> Result<&Path> {
        self.top.as_deref().ok_or_else(|| {
            Error::Unsupported("this command needs a work tree; the repository is bare".into())
        })
    }

    pub fn store(&self) -> crate::store::Store {
        crate::store::Store::new(self.annex_dir(), self.is_bare())
    }

    /// numcopies for the repository as a whole: `numcopies.log` on the branch, else
    /// `annex.numcopies` git config, else 1 (a file's `.gitattributes` may say otherwise: see
    /// [`crate::copies`]).
    pub fn numcopies(&self) -> Result<u32> {
        Ok(crate::copies::Global::load(self)?.numcopies().n)
    }
}

/// Whether an annex filter (ferry's or git-annex's) is configured and applies to the work tree.
pub fn filter_configured(repo: &Repo) -> Result<bool> {
    let has_cmd = repo.git.config("filter.annex.process")?.is_some()
        || repo.git.config("filter.annex.clean")?.is_some();
    if !has_cmd {
        return Ok(false);
    }
    let out = repo
        .git
        .run(["check-attr", "filter", "--", "a-file-that-need-not-exist"])?;
    Ok(String::from_utf8_lossy(&out)
        .trim_end()
        .ends_with(": annex"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(entries: &[(String, String)], key: &str, value: &str) -> bool {
        entries.iter().any(|(k, v)| k == key && v == value)
    }

    /// The config read at opening is handed out once, and never when `.git/config` changed
    /// since (by ferry or anyone): then it is read again.
    #[test]
    fn config_read_at_opening_is_reused_only_while_unchanged() {
        let d = tempfile::tempdir().unwrap();
        let (init, _) = Repo::init(d.path(), None, "test", &Default::default()).unwrap();
        drop(init);
        let open = || Repo::open(d.path(), &Default::default()).unwrap();

        // Unchanged: the entries read at opening, handed out (no second read).
        let repo = open();
        let stored = repo.opened_with.lock().unwrap().as_ref().unwrap().2.clone();
        assert!(stored.iter().any(|(k, _)| k == "annex.uuid"));
        assert_eq!(repo.config_entries_now().unwrap(), stored);
        assert!(
            repo.opened_with.lock().unwrap().is_none(),
            "handed out once"
        );

        // Changed after opening: read again, the change seen at once.
        let repo = open();
        Git::new(d.path())
            .run(["config", "ferry.test", "changed"])
            .unwrap();
        assert!(has(
            &repo.config_entries_now().unwrap(),
            "ferry.test",
            "changed"
        ));

        // Handed out once: a second call reads again (and sees a later change).
        let repo = open();
        assert!(has(
            &repo.config_entries_now().unwrap(),
            "ferry.test",
            "changed"
        ));
        let git = Git::new(d.path());
        git.run(["config", "ferry.test", "again"]).unwrap();
        assert!(has(
            &repo.config_entries_now().unwrap(),
            "ferry.test",
            "again"
        ));
    }
}
