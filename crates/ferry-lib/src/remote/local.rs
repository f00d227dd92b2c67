//! A git remote that is a local path: a non-bare clone (`<path>/.git/annex/objects`, mixed hash
//! dirs) or a bare repository (`<path>/annex/objects`, lower hash dirs), made by ferry or by
//! git-annex. Content is read from and written into its store directly, the way git-annex
//! treats local remotes: the receiving repository verifies, stores and records the content in
//! its own location log (journal, committed by [`LocalRemote::flush`]), and its unlocked files
//! are populated.

use super::{ContentLock, Progress, Remote, Stored, TransferError};
use crate::error::Result;
use crate::key::Key;
use crate::lock::{Lock, LockKind};
use crate::logs::Presence;
use crate::repo::{Repo, RepoOptions};
use crate::store::Store;
use crate::transfer::bwlimit::Throttle;
use crate::transfer::{
    Verified, copy_from_file, ingest_pending, lock_content, log_presence, log_presence_many,
    receive_into, receive_verified, remove_object,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

pub struct LocalRemote {
    name: String,
    uuid: String,
    path: PathBuf,
    cost: f64,
    readonly: bool,
    fixed_clock: Option<u64>,
    /// The remote repository, opened on first need (store/remove write to its branch).
    repo: Mutex<Option<Arc<Repo>>>,
    /// (dev, inode, mtime) of the config file that was found to name `uuid`: checked again
    /// only when that file changes (another repository, or a drive swapped at the same path).
    verified: Mutex<Option<(u64, u64, i64)>>,
}

struct LocalLock(#[allow(dead_code)] Lock);
impl ContentLock for LocalLock {}

impl LocalRemote {
    pub fn new(name: &str, uuid: &str, path: &Path, cost: f64, fixed_clock: Option<u64>) -> Self {
        LocalRemote {
            name: name.to_string(),
            uuid: uuid.to_string(),
            path: path.to_path_buf(),
            cost,
            readonly: false,
            fixed_clock,
            repo: Mutex::new(None),
            verified: Mutex::new(None),
        }
    }

    pub fn set_readonly(&mut self, readonly: bool) {
        self.readonly = readonly;
    }

    fn refuse_if_readonly(&self) -> Result<()> {
        if self.readonly {
            return Err(TransferError::Other(format!(
                "remote {} is read-only (remote.{}.annex-readonly); content is not stored to or removed from it",
                self.name, self.name
            ))
            .into());
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn unavailable(&self, why: impl Into<String>) -> crate::Error {
        TransferError::Unavailable {
            remote: self.name.clone(),
            why: why.into(),
        }
        .into()
    }

    /// (annex dir, bare) of the repository at the path.
    fn layout(&self) -> Result<(PathBuf, PathBuf, bool)> {
        let p = &self.path;
        if p.join(".git").is_dir() {
            return Ok((p.join(".git/annex"), p.join(".git/config"), false));
        }
        if p.join("HEAD").is_file() && p.join("objects").is_dir() {
            return Ok((p.join("annex"), p.join("config"), true));
        }
        if !p.exists() {
            return Err(self.unavailable(format!("{} does not exist", p.display())));
        }
        Err(self.unavailable(format!("{} is not a git repository", p.display())))
    }

    fn store_here(&self) -> Result<Store> {
        self.check_available()?;
        let (annex, _, bare) = self.layout()?;
        Ok(Store::new(annex, bare))
    }

    fn open_repo(&self) -> Result<Arc<Repo>> {
        self.check_available()?;
        let mut g = self.repo.lock().unwrap();
        if let Some(r) = g.as_ref() {
            return Ok(r.clone());
        }
        let opts = RepoOptions {
            fixed_clock: self.fixed_clock,
            plain_env: true,
            ..Default::default()
        };
        let abs = self
            .path
            .canonicalize()
            .map_err(|e| self.unavailable(e.to_string()))?;
        let r = Arc::new(Repo::open(&abs, &opts)?);
        *g = Some(r.clone());
        Ok(r)
    }
}

impl Remote for LocalRemote {
    fn name(&self) -> &str {
        &self.name
    }

    fn uuid(&self) -> &str {
        &self.uuid
    }

    fn cost(&self) -> f64 {
        self.cost
    }

    fn readonly(&self) -> bool {
        self.readonly
    }

    fn check_available(&self) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let (annex, config, _) = self.layout()?;
        let stamp = std::fs::metadata(&config)
            .map(|m| (m.dev(), m.ino(), m.mtime()))
            .map_err(|e| self.unavailable(format!("{}: {e}", config.display())))?;
        if *self.verified.lock().unwrap() == Some(stamp) {
            return Ok(());
        }
        let out = std::process::Command::new("git")
            .args(["config", "--file"])
            .arg(&config)
            .args(["--get", "annex.uuid"])
            .env_remove("GIT_DIR")
            .env_remove("GIT_CONFIG")
            .output()
            .map_err(|e| crate::Error::GitMissing(e.to_string()))?;
        let theirs = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if theirs.is_empty() {
            return Err(self.unavailable(format!(
                "{} has no annex.uuid (run `ferry init` or `git annex init` there)",
                self.path.display()
            )));
        }
        if theirs != self.uuid {
            return Err(self.unavailable(format!(
                "{} is repository {theirs}, not {} as remote.{}.annex-uuid says",
                self.path.display(),
                self.uuid,
                self.name
            )));
        }
        if !annex.is_dir() {
            return Err(self.unavailable(format!("{} has no annex directory", annex.display())));
        }
        *self.verified.lock().unwrap() = Some(stamp);
        Ok(())
    }

    fn check_present(&self, key: &Key) -> Result<bool> {
        Ok(self.store_here()?.find(key).is_some())
    }

    fn store(&self, key: &Key, src: &Path, progress: &mut Progress) -> Result<Stored> {
        self.refuse_if_readonly()?;
        let repo = self.open_repo()?;
        let store = repo.store();
        if store.find(key).is_none() {
            crate::transfer::check_free_space(&repo, key, 0)?;
        }
        let r = receive_into(&store, key, progress, &mut |off, sink, p| {
            copy_from_file(src, off, sink, p)
        })?;
        log_presence(&repo, key, repo.uuid(), Presence::Present)?;
        if !repo.is_bare() {
            // Unlocked files there that point to this key get the content, as git-annex does.
            let _ = crate::ops::unlock::populate(&repo, key);
        }
        Ok(Stored {
            resumed_from: r.resumed_from,
            already_present: r.ingested == crate::store::Ingested::AlreadyPresent,
        })
    }

    fn store_many(
        &self,
        items: &[(Key, PathBuf)],
        cancel: &AtomicBool,
        throttle: Option<&Throttle>,
    ) -> Vec<Result<Stored>> {
        let repo = match self.refuse_if_readonly().and_then(|()| self.open_repo()) {
            Ok(r) => r,
            Err(e) => {
                return crate::remote::fail_all(items.len(), &e);
            }
        };
        let store = repo.store();
        let already = || Stored {
            resumed_from: 0,
            already_present: true,
        };
        let mut out: Vec<Option<Result<Stored>>> = items.iter().map(|_| None).collect();
        let mut pending = Vec::new();
        let mut slots = Vec::new();
        for (i, (key, src)) in items.iter().enumerate() {
            if store.find(key).is_some() {
                out[i] = Some(Ok(already()));
                continue;
            }
            let mut cb = |_| {};
            let mut progress = Progress::new(key, cancel, &mut cb).throttled(throttle.cloned());
            let r = crate::transfer::check_free_space(&repo, key, 0).and_then(|()| {
                receive_verified(
                    &store,
                    key,
                    &mut progress,
                    &mut |off, sink, p| copy_from_file(src, off, sink, p),
                    false,
                )
            });
            match r {
                Ok(Verified::AlreadyPresent) => out[i] = Some(Ok(already())),
                Ok(Verified::Pending(p)) => {
                    slots.push(i);
                    pending.push(p);
                }
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        let mut arrived = Vec::new();
        for (i, r) in slots.into_iter().zip(ingest_pending(&store, pending)) {
            out[i] = Some(r.map(|r| {
                arrived.push(items[i].0.clone());
                Stored {
                    resumed_from: r.resumed_from,
                    already_present: r.ingested == crate::store::Ingested::AlreadyPresent,
                }
            }));
        }
        let present: Vec<Key> = items
            .iter()
            .zip(&out)
            .filter(|(_, r)| matches!(r, Some(Ok(_))))
            .map(|((key, _), _)| key.clone())
            .collect();
        if let Err(e) = log_presence_many(&repo, &present, repo.uuid(), Presence::Present) {
            let msg = e.to_string();
            for r in out.iter_mut().filter(|r| matches!(r, Some(Ok(_)))) {
                *r = Some(Err(TransferError::Other(msg.clone()).into()));
            }
        }
        if !repo.is_bare() {
            let _ = crate::ops::unlock::populate_many(&repo, &arrived);
        }
        out.into_iter()
            .map(|r| r.expect("every item has a result"))
            .collect()
    }

    fn cheap_presence(&self) -> bool {
        true
    }

    fn retrieve(
        &self,
        key: &Key,
        offset: u64,
        sink: &mut dyn crate::transfer::Sink,
        progress: &mut Progress,
    ) -> Result<()> {
        let store = self.store_here()?;
        let Some(obj) = store.find(key) else {
            return Err(TransferError::NotPresent {
                remote: self.name.clone(),
                key: key.to_string(),
            }
            .into());
        };
        copy_from_file(&obj, offset, sink, progress)
    }

    fn remove(&self, key: &Key) -> Result<()> {
        self.refuse_if_readonly()?;
        let repo = self.open_repo()?;
        let store = repo.store();
        if store.find(key).is_none() {
            log_presence(&repo, key, repo.uuid(), Presence::Absent)?;
            return Ok(());
        }
        let Some(lock) = lock_content(&store, key, LockKind::Exclusive)? else {
            if store.find(key).is_none() {
                return Ok(());
            }
            return Err(TransferError::Other(format!(
                "{key} is locked in remote {} (another process is counting on that copy); try again later",
                self.name
            ))
            .into());
        };
        if !repo.is_bare() {
            crate::ops::unlock::depopulate(&repo, key)?;
        }
        remove_object(&store, key, &lock)?;
        drop(lock);
        log_presence(&repo, key, repo.uuid(), Presence::Absent)?;
        Ok(())
    }

    fn lock_content(&self, key: &Key) -> Result<Option<Box<dyn ContentLock>>> {
        let store = self.store_here()?;
        Ok(lock_content(&store, key, LockKind::Shared)?
            .map(|l| Box::new(LocalLock(l)) as Box<dyn ContentLock>))
    }

    fn flush(&self) -> Result<()> {
        let repo = self.repo.lock().unwrap().clone();
        // A remote that vanished (a drive pulled) keeps its journal for the next time: no
        // directory is ever created at its path.
        if let Some(repo) = repo.filter(|r| r.git_dir.exists()) {
            repo.branch.commit(None, "update")?;
        }
        Ok(())
    }
}
