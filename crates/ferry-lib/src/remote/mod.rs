//! Remotes: other places that hold annexed content, behind one [`Remote`] trait.
//!
//! One file per kind: [`local`] is a git-annex/ferry repository reachable as a local path
//! (non-bare clone or bare repository); [`memory`] is an in-memory fake for fast tests. ssh and
//! S3 remotes will implement the same trait. Every operation is synchronous and streaming; a
//! long-running caller (the daemon's transfer workers) runs it on a worker thread, watches it
//! through the [`Progress`] callback and stops it by setting the cancel flag. Nothing here keeps
//! process-global state.
//!
//! The *receiving* side of a transfer always goes through [`crate::transfer::receive_into`]:
//! `.git/annex/tmp/<keyFile>` (resumed when a partial file is there), fsync, hash check against
//! the key, rename into the store.

pub mod local;
pub mod memory;

use crate::error::Result;
use crate::key::Key;
use crate::transfer::bwlimit::Throttle;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Why a transfer (or a check needed for one) did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("remote {remote} is not available: {why}")]
    Unavailable { remote: String, why: String },
    #[error("{key} is not present in remote {remote}")]
    NotPresent { remote: String, key: String },
    #[error("received content for {key} is corrupt ({why}); it was not stored")]
    Corrupt { key: String, why: String },
    #[error("the transfer of {0} was cancelled")]
    Cancelled(String),
    #[error("refusing unsafe key {0:?}: it cannot be used as a file name")]
    UnsafeKey(String),
    /// Another transfer is receiving this content right now (a batch does not wait for it).
    #[error("{0} is being received by another transfer right now")]
    InProgress(String),
    #[error("{0}")]
    Other(String),
}

/// Progress reporting, cancellation and the bandwidth limit for one transfer.
///
/// `on_bytes` is called with the total number of bytes of the key that are in place at the
/// receiving end (including bytes resumed from an earlier partial transfer), at most every
/// chunk. [`Progress::advance`] returns an error once `cancel` is set, which makes the transfer
/// stop at the next chunk; the partial file stays for a later resume. Under a bandwidth limit
/// ([`Progress::throttled`]) `advance` also waits as long as the limit says, and
/// [`Progress::chunk`] tells the transfer to move smaller chunks.
pub struct Progress<'a> {
    on_bytes: &'a mut dyn FnMut(u64),
    cancel: &'a AtomicBool,
    done: u64,
    key: String,
    throttle: Option<Throttle<'a>>,
}

impl<'a> Progress<'a> {
    pub fn new(key: &Key, cancel: &'a AtomicBool, on_bytes: &'a mut dyn FnMut(u64)) -> Self {
        Progress {
            on_bytes,
            cancel,
            done: 0,
            key: key.to_string(),
            throttle: None,
        }
    }

    /// Holds the transfer to the bandwidth limit of `throttle` (none: unlimited).
    pub fn throttled(mut self, throttle: Option<Throttle<'a>>) -> Self {
        self.throttle = throttle;
        self
    }

    /// How many bytes to move next, at most `max` (fewer under a bandwidth limit).
    pub fn chunk(&mut self, max: usize) -> usize {
        match &mut self.throttle {
            Some(t) => t.chunk(max),
            None => max,
        }
    }

    /// Starts counting at `offset` (bytes already in place).
    pub fn start_at(&mut self, offset: u64) {
        self.done = offset;
        (self.on_bytes)(offset);
    }

    pub fn advance(&mut self, n: u64) -> Result<()> {
        self.done += n;
        (self.on_bytes)(self.done);
        if let Some(t) = &mut self.throttle {
            t.take(n, self.cancel);
        }
        self.check_cancel()
    }

    pub fn check_cancel(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(TransferError::Cancelled(self.key.clone()).into());
        }
        Ok(())
    }

    pub fn done(&self) -> u64 {
        self.done
    }
}

/// Held while some content must not vanish from a remote (drop verification elsewhere).
/// Dropping it releases the lock.
pub trait ContentLock: Send {}

/// What a store (upload) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// Bytes that were already at the remote from an earlier, interrupted transfer.
    pub resumed_from: u64,
    /// The remote already had the content; nothing was sent.
    pub already_present: bool,
}

/// A place content can be sent to and fetched from.
pub trait Remote: Send + Sync {
    /// The git remote name (`origin`).
    fn name(&self) -> &str;
    /// The remote repository's annex UUID.
    fn uuid(&self) -> &str;
    /// Lower is preferred (git-annex: local 100, ssh 200).
    fn cost(&self) -> f64;
    /// Content is never stored to or removed from a read-only remote (`annex-readonly`).
    fn readonly(&self) -> bool {
        false
    }
    /// Whether the remote can be reached now; the error says why not.
    fn check_available(&self) -> Result<()>;
    /// Whether the remote has the content now (a real check, not the location log).
    fn check_present(&self, key: &Key) -> Result<bool>;
    /// Sends the content of `key`, read from the local file `src`. The remote verifies it
    /// before it becomes visible there, and resumes an interrupted earlier store. A remote that
    /// keeps its own location log (a git-annex repository) records that it has the content.
    fn store(&self, key: &Key, src: &Path, progress: &mut Progress) -> Result<Stored>;
    /// [`Remote::store`] for many (small) items at once, where the remote can do better than
    /// one by one (a local repository flushes the whole batch with one `syncfs`). One result
    /// per item, in order. No byte progress: the items are small. Each item is held to the
    /// bandwidth limit of `throttle`.
    fn store_many(
        &self,
        items: &[(Key, PathBuf)],
        cancel: &AtomicBool,
        throttle: Option<&Throttle>,
    ) -> Vec<Result<Stored>> {
        items
            .iter()
            .map(|(key, src)| {
                let mut cb = |_| {};
                let mut progress = Progress::new(key, cancel, &mut cb).throttled(throttle.cloned());
                self.store(key, src, &mut progress)
            })
            .collect()
    }
    /// Whether [`Remote::check_present`] is cheap (a `stat` on a local disk), so a planner may
    /// ask it for every file instead of queueing work that turns out to be done.
    fn cheap_presence(&self) -> bool {
        false
    }
    /// Writes the content of `key` from byte `offset` on into `sink`.
    fn retrieve(
        &self,
        key: &Key,
        offset: u64,
        sink: &mut dyn crate::transfer::Sink,
        progress: &mut Progress,
    ) -> Result<()>;
    /// Removes the content (taking the remote's exclusive content lock, so it fails while a
    /// drop elsewhere holds the content locked). Absent content is not an error.
    fn remove(&self, key: &Key) -> Result<()>;
    /// Locks the content so it cannot be removed until the returned guard is dropped. `None`
    /// when the content is not there or cannot be locked (being removed right now).
    fn lock_content(&self, key: &Key) -> Result<Option<Box<dyn ContentLock>>>;
    /// Makes bookkeeping done by earlier calls durable (e.g. commits the remote repository's
    /// location-log journal). Called at the end of a command, or periodically by the daemon.
    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// One copy of `e` (as text) for each of `n` items: a whole batch failing for one reason.
pub fn fail_all<T>(n: usize, e: &crate::Error) -> Vec<Result<T>> {
    let msg = e.to_string();
    (0..n)
        .map(|_| Err(TransferError::Other(msg.clone()).into()))
        .collect()
}

/// Remotes usable for content, cheapest first.
pub type Remotes = Vec<Box<dyn Remote>>;

/// A shared remote is a remote (tests keep a handle on the remotes they hand over).
impl<T: Remote + ?Sized> Remote for std::sync::Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn uuid(&self) -> &str {
        (**self).uuid()
    }
    fn cost(&self) -> f64 {
        (**self).cost()
    }
    fn readonly(&self) -> bool {
        (**self).readonly()
    }
    fn check_available(&self) -> Result<()> {
        (**self).check_available()
    }
    fn check_present(&self, key: &Key) -> Result<bool> {
        (**self).check_present(key)
    }
    fn store(&self, key: &Key, src: &Path, progress: &mut Progress) -> Result<Stored> {
        (**self).store(key, src, progress)
    }
    fn store_many(
        &self,
        items: &[(Key, PathBuf)],
        cancel: &AtomicBool,
        throttle: Option<&Throttle>,
    ) -> Vec<Result<Stored>> {
        (**self).store_many(items, cancel, throttle)
    }
    fn cheap_presence(&self) -> bool {
        (**self).cheap_presence()
    }
    fn retrieve(
        &self,
        key: &Key,
        offset: u64,
        sink: &mut dyn crate::transfer::Sink,
        progress: &mut Progress,
    ) -> Result<()> {
        (**self).retrieve(key, offset, sink, progress)
    }
    fn remove(&self, key: &Key) -> Result<()> {
        (**self).remove(key)
    }
    fn lock_content(&self, key: &Key) -> Result<Option<Box<dyn ContentLock>>> {
        (**self).lock_content(key)
    }
    fn flush(&self) -> Result<()> {
        (**self).flush()
    }
}

/// A configured git remote that ferry cannot move content with (yet), and why.
#[derive(Clone, Debug)]
pub struct Unusable {
    pub name: String,
    pub why: String,
}

/// The remotes content can be moved with, cheapest first, and the others with the reason.
/// Remotes with `annex-ignore` set are left out. UUIDs of local remotes are learned (and
/// cached in git config, as git-annex does) on the way.
pub fn configured(repo: &crate::repo::Repo) -> Result<(Remotes, Vec<Unusable>)> {
    let config = repo.learn_local_remote_uuids()?;
    let mut names: Vec<&str> = config
        .keys()
        .filter_map(|k| {
            k.strip_prefix("remote.")
                .and_then(|k| k.strip_suffix(".url"))
        })
        .collect();
    names.sort();
    let mut usable: Vec<Box<dyn Remote>> = Vec::new();
    let mut unusable = Vec::new();
    for name in names {
        let get = |k: &str| config.get(&format!("remote.{name}.{k}")).cloned();
        if get("annex-ignore").as_deref() == Some("true") {
            continue;
        }
        let url = get("url").unwrap_or_default();
        let Some(path) = local_path(repo, &url) else {
            unusable.push(Unusable {
                name: name.to_string(),
                why: format!(
                    "{url} is not a local path; ferry moves content only with local remotes so far"
                ),
            });
            continue;
        };
        let Some(uuid) = get("annex-uuid").filter(|u| !u.is_empty()) else {
            unusable.push(Unusable {
                name: name.to_string(),
                why: format!(
                    "its annex UUID is unknown ({} is missing or not initialised with ferry init / git annex init)",
                    path.display()
                ),
            });
            continue;
        };
        let cost = get("annex-cost")
            .and_then(|c| c.parse().ok())
            .unwrap_or(100.0);
        let mut r = local::LocalRemote::new(name, &uuid, &path, cost, repo.branch.fixed_clock());
        r.set_readonly(get("annex-readonly").as_deref() == Some("true"));
        usable.push(Box::new(r));
    }
    usable.sort_by(|a, b| a.cost().total_cmp(&b.cost()).then(a.name().cmp(b.name())));
    Ok((usable, unusable))
}

/// The path of a remote URL that names a local repository.
pub(crate) fn local_path(repo: &crate::repo::Repo, url: &str) -> Option<std::path::PathBuf> {
    if let Some(p) = url.strip_prefix("file://") {
        return Some(p.into());
    }
    if url.contains("://") || url.split('/').next().unwrap_or("").contains(':') {
        return None;
    }
    let p = std::path::PathBuf::from(url);
    Some(if p.is_absolute() {
        p
    } else {
        repo.top
            .clone()
            .unwrap_or_else(|| repo.git_dir.clone())
            .join(p)
    })
}

/// The key as one path component (keyFile escaping), refusing anything that could name
/// another directory: a key from a location log or a remote never escapes the store.
pub fn key_component(key: &Key) -> Result<OsString> {
    let kf = key.file_name();
    if kf.is_empty()
        || kf.contains(&b'/')
        || kf.contains(&0)
        || kf == b"."
        || kf == b".."
        || kf.len() > 255
    {
        return Err(TransferError::UnsafeKey(key.to_string()).into());
    }
    Ok(OsString::from_vec(kf))
}

/// A UUID as one path component (git-annex strips `/`; we also refuse `.`/`..`).
pub fn uuid_component(uuid: &str) -> Result<String> {
    let u: String = uuid.chars().filter(|&c| c != '/' && c != '\0').collect();
    if u.is_empty() || u == "." || u == ".." {
        return Err(TransferError::Other(format!("invalid repository UUID {uuid:?}")).into());
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_with_slashes_and_dots_stay_one_component() {
        for k in ["WORM--../../etc/passwd", "URL--..", "WORM-s1--a/../../b"] {
            let key = Key::parse_str(k).unwrap();
            let c = key_component(&key).unwrap();
            let p = std::path::Path::new("/store").join(&c);
            assert_eq!(p.parent(), Some(std::path::Path::new("/store")), "{k}");
            assert_eq!(p.components().count(), 3);
        }
    }
}
