//! `drop`: remove content here or from a remote, only when enough *other* copies are proven
//! to exist right now (numcopies), of which at least mincopies are locked or trusted.
//! numcopies and mincopies are the key's: the highest over the files with that content, each
//! file's from `.gitattributes`, else the logs (see [`crate::copies`]).
//!
//! Proof, as git-annex does it: a trusted repository in the location log counts without a
//! check; an untrusted or dead one never counts; here counts by taking a shared lock on our
//! own content; a remote counts when its content lock can be taken (for a local remote: a
//! shared fcntl lock on its `<keyFile>.lck`, held until the drop is done, so the copy cannot
//! vanish meanwhile). A remote that cannot be reached does not count. The content being
//! dropped is itself locked exclusively first, so two repositories dropping at the same time
//! each see the other's copy as unprovable and at least one copy survives.

use crate::annexed::{AnnexedFile, annexed_files};
use crate::copies::FileCopies;
use crate::error::Result;
use crate::key::Key;
use crate::lock::LockKind;
use crate::logs::{Presence, Timestamp, UuidLog};
use crate::ops::content::{ContentOptions, Events, FileOutcome, Summary, find_remote};
use crate::remote::{ContentLock, Remote, TransferError, Unusable};
use crate::repo::Repo;
use crate::transfer::{lock_content, log_presence, remove_object};
use std::collections::HashMap;
use std::sync::atomic::Ordering;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    Trusted,
    SemiTrusted,
    Untrusted,
    Dead,
}

/// Trust levels from `trust.log`, overridden by `remote.<name>.annex-trustlevel`.
pub fn trust_levels(repo: &Repo) -> Result<HashMap<String, Trust>> {
    let log = UuidLog::parse(&repo.branch.read(b"trust.log")?.unwrap_or_default());
    let mut out: HashMap<String, Trust> = log
        .current()
        .into_iter()
        .map(|(u, e)| {
            let t = match e.value.as_str() {
                "1" | "" => Trust::Trusted,
                "0" => Trust::Untrusted,
                "X" => Trust::Dead,
                _ => Trust::SemiTrusted,
            };
            (u.to_string(), t)
        })
        .collect();
    for (uuid, name) in repo.remote_names()? {
        if let Some(v) = repo
            .config()
            .get(&format!("remote.{name}.annex-trustlevel"))
        {
            let t = match v.as_str() {
                "trusted" => Trust::Trusted,
                "untrusted" => Trust::Untrusted,
                "dead" => Trust::Dead,
                _ => Trust::SemiTrusted,
            };
            out.insert(uuid, t);
        }
    }
    Ok(out)
}

/// Sets `numcopies.log` or `mincopies.log` (git-annex's `TS N` format, one line) and commits.
pub fn set_copies_log(repo: &Repo, file: &str, n: u32) -> Result<()> {
    let path = file.as_bytes();
    let lock = repo.branch.lock_journal()?;
    let old = repo.branch.read(path)?.unwrap_or_default();
    let prev = String::from_utf8_lossy(&old)
        .lines()
        .filter_map(|l| Timestamp::parse(l.split(' ').next()?))
        .max();
    let ts = Timestamp::next_after(repo.branch.now(), prev);
    repo.branch
        .write(&lock, path, format!("{ts} {n}\n").as_bytes())?;
    repo.branch.commit(Some(&lock), "update")?;
    Ok(())
}

/// What decides whether a drop is safe: numcopies and mincopies of each key, trust levels
/// (and descriptions, for messages). Loaded once per command, not per file.
pub struct DropPolicy {
    pub copies: FileCopies,
    pub trust: HashMap<String, Trust>,
    descs: std::collections::BTreeMap<String, String>,
}

impl DropPolicy {
    /// For dropping the content of `files`: their attributes are read, and those of the other
    /// files with the same content (all of them are in `files` when `all_of_their_keys`).
    pub fn load(repo: &Repo, files: &[AnnexedFile], all_of_their_keys: bool) -> Result<DropPolicy> {
        DropPolicy::with_copies(repo, FileCopies::load(repo, files, all_of_their_keys)?)
    }

    pub fn with_copies(repo: &Repo, copies: FileCopies) -> Result<DropPolicy> {
        Ok(DropPolicy {
            copies,
            trust: trust_levels(repo)?,
            descs: repo.uuid_descriptions()?,
        })
    }
}

/// Copies proven to exist, with the locks that keep them there until dropped.
struct Proof {
    count: u32,
    /// Locked or trusted copies (what mincopies counts).
    strong: u32,
    _locks: Vec<Box<dyn ContentLock>>,
    _here: Option<crate::lock::Lock>,
    /// Why other copies in the log did not count.
    notes: Vec<String>,
}

fn prove_copies(
    repo: &Repo,
    remotes: &[Box<dyn Remote>],
    policy: &DropPolicy,
    key: &Key,
    excluding: &str,
) -> Result<Proof> {
    let log = repo.branch.location_log(key)?;
    let (trust, descs) = (&policy.trust, &policy.descs);
    let mut p = Proof {
        count: 0,
        strong: 0,
        _locks: Vec::new(),
        _here: None,
        notes: Vec::new(),
    };
    let mut holders = log.present();
    // Here may hold it even if the log lags (e.g. just received): check it directly.
    if excluding != repo.uuid() && !holders.iter().any(|u| u == repo.uuid()) {
        holders.push(repo.uuid().to_string());
    }
    for uuid in holders {
        if uuid == excluding {
            continue;
        }
        let name = remotes
            .iter()
            .find(|r| r.uuid() == uuid)
            .map(|r| r.name().to_string())
            .unwrap_or_else(|| match descs.get(&uuid) {
                Some(d) if !d.is_empty() => format!("{uuid} ({d})"),
                _ => uuid.clone(),
            });
        match trust.get(&uuid).copied().unwrap_or(Trust::SemiTrusted) {
            Trust::Dead => continue,
            Trust::Untrusted => {
                p.notes.push(format!("{name} is untrusted"));
                continue;
            }
            Trust::Trusted => {
                p.count += 1;
                p.strong += 1;
                continue;
            }
            Trust::SemiTrusted => {}
        }
        if uuid == repo.uuid() {
            if let Some(l) = lock_content(&repo.store(), key, LockKind::Shared)? {
                p._here = Some(l);
                p.count += 1;
                p.strong += 1;
            }
            continue;
        }
        let Some(r) = remotes.iter().find(|r| r.uuid() == uuid) else {
            p.notes.push(format!(
                "{name} is not a remote here, so its copy cannot be checked"
            ));
            continue;
        };
        if let Err(e) = r.check_available() {
            p.notes.push(e.to_string());
            continue;
        }
        match r.lock_content(key) {
            Ok(Some(l)) => {
                p._locks.push(l);
                p.count += 1;
                p.strong += 1;
            }
            Ok(None) => p.notes.push(format!(
                "{name} does not have it now (or is dropping it), though the location log says so"
            )),
            Err(e) => p.notes.push(format!("{name}: {e}")),
        }
    }
    Ok(p)
}

fn check_safe(policy: &DropPolicy, key: &Key, p: &Proof) -> Result<()> {
    let need = policy.copies.of_key(key);
    let (n, min) = (need.numcopies.n, need.mincopies.n);
    if p.count >= n.max(1) && p.strong >= min.max(1) {
        return Ok(());
    }
    let from = |s: &crate::copies::Setting, what: &str| match s.from {
        crate::copies::Origin::Gitattributes { .. } => {
            format!(" (from {})", s.from.describe(what))
        }
        _ => String::new(),
    };
    let mut msg = format!(
        "unsafe to drop: {} other cop{} verified, numcopies is {n}{}{}",
        p.count,
        if p.count == 1 { "y" } else { "ies" },
        from(&need.numcopies, "numcopies"),
        if min > 1 {
            format!(", mincopies {min}{}", from(&need.mincopies, "mincopies"))
        } else {
            String::new()
        }
    );
    if !p.notes.is_empty() {
        msg.push_str(&format!(" ({})", p.notes.join("; ")));
    }
    msg.push_str(". Copy it to another repository first (ferry copy --to REMOTE), or make a remote that has it reachable");
    Err(TransferError::Other(msg).into())
}

/// Drops `key` here if that is safe. `Ok(false)` when the content was not here.
pub fn drop_here(
    repo: &Repo,
    remotes: &[Box<dyn Remote>],
    policy: &DropPolicy,
    key: &Key,
) -> Result<bool> {
    let store = repo.store();
    if store.find(key).is_none() {
        return Ok(false);
    }
    let Some(excl) = lock_content(&store, key, LockKind::Exclusive)? else {
        if store.find(key).is_none() {
            return Ok(false);
        }
        return Err(TransferError::Other(
            "the content is locked by another process (a drop elsewhere is counting on this copy, or a transfer is reading it); try again later".into(),
        )
        .into());
    };
    let proof = prove_copies(repo, remotes, policy, key, repo.uuid())?;
    check_safe(policy, key, &proof)?;
    if !repo.is_bare() {
        crate::ops::unlock::depopulate(repo, key)?;
    }
    remove_object(&store, key, &excl)?;
    std::mem::drop(excl);
    log_presence(repo, key, repo.uuid(), Presence::Absent)?;
    std::mem::drop(proof);
    Ok(true)
}

/// Drops `key` from `remote` if that is safe. `Ok(false)` when the remote did not have it.
pub fn drop_from(
    repo: &Repo,
    remotes: &[Box<dyn Remote>],
    policy: &DropPolicy,
    remote: &dyn Remote,
    key: &Key,
) -> Result<bool> {
    remote.check_available()?;
    if !remote.check_present(key)? {
        log_presence(repo, key, remote.uuid(), Presence::Absent)?;
        return Ok(false);
    }
    let proof = prove_copies(repo, remotes, policy, key, remote.uuid())?;
    check_safe(policy, key, &proof)?;
    remote.remove(key)?;
    log_presence(repo, key, remote.uuid(), Presence::Absent)?;
    std::mem::drop(proof);
    Ok(true)
}

/// `drop [--from REMOTE]` over every annexed file under `pathspecs`.
pub fn drop(
    repo: &Repo,
    remotes: &[Box<dyn Remote>],
    unusable: &[Unusable],
    pathspecs: &[Vec<u8>],
    from: Option<&str>,
    opts: &ContentOptions,
    events: &dyn Events,
) -> Result<Summary> {
    let remote = from
        .map(|n| find_remote(remotes, unusable, n))
        .transpose()?;
    if let Some(r) = remote
        && r.readonly()
    {
        return Err(crate::ops::content::readonly_error(r));
    }
    let files = annexed_files(&repo.git, pathspecs)?;
    let policy = DropPolicy::load(repo, &files, crate::annexed::whole_tree(pathspecs))?;
    let mut summary = Summary::default();
    let mut seen = std::collections::HashSet::new();
    for f in &files {
        if opts.cancel.load(Ordering::Relaxed) {
            break;
        }
        let r = match remote {
            Some(r) => drop_from(repo, remotes, &policy, r, &f.key),
            None => drop_here(repo, remotes, &policy, &f.key),
        };
        let first = seen.insert(f.key.clone());
        let o = match r {
            Ok(false) if !first => continue,
            Ok(false) => continue,
            Ok(true) => FileOutcome {
                path: f.path.clone(),
                key: f.key.to_string(),
                success: true,
                note: remote.map(|r| format!("from {}", r.name())),
                ..Default::default()
            },
            Err(e) => FileOutcome {
                path: f.path.clone(),
                key: f.key.to_string(),
                success: false,
                error: Some(e.to_string()),
                ..Default::default()
            },
        };
        if o.success {
            summary.ok += 1;
        } else {
            summary.failed += 1;
        }
        events.done(&o);
    }
    crate::ops::content::finish_bookkeeping(repo, remotes)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drops `key` here under the repository's own numcopies and mincopies.
    fn drop_now(repo: &Repo, remotes: &[Box<dyn Remote>], key: &Key) -> Result<bool> {
        drop_here(
            repo,
            remotes,
            &DropPolicy::load(repo, &[], true).unwrap(),
            key,
        )
    }
    use crate::hash::{Backend, hash_file};
    use crate::remote::Progress;
    use crate::remote::memory::MemoryRemote;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    const M: &str = "11111111-2222-4333-8444-555555555555";
    const N: &str = "66666666-2222-4333-8444-555555555555";

    /// A repository holding `data` (in the store and in its location log), and memory remotes
    /// that hold it too (and are logged as holding it).
    fn setup(
        data: &[u8],
    ) -> (
        tempfile::TempDir,
        Repo,
        Key,
        Arc<MemoryRemote>,
        Arc<MemoryRemote>,
    ) {
        let d = tempfile::tempdir().unwrap();
        let (repo, _) = Repo::init(d.path(), None, "test", &Default::default()).unwrap();
        let (hex, n) = hash_file(Backend::Sha256E, &mut &data[..], 0).unwrap();
        let key = Backend::Sha256E.key(n, &hex, b"f.txt");
        let cancel = AtomicBool::new(false);
        let mut cb = |_| {};
        let mut p = Progress::new(&key, &cancel, &mut cb);
        crate::transfer::receive_into(&repo.store(), &key, &mut p, &mut |off, sink, p| {
            sink.write_all(&data[off as usize..])
                .map_err(|e| crate::Error::io("test", e))?;
            p.advance(data.len() as u64 - off)
        })
        .unwrap();
        log_presence(&repo, &key, repo.uuid(), Presence::Present).unwrap();
        let (m, n) = (
            Arc::new(MemoryRemote::new("m", M)),
            Arc::new(MemoryRemote::new("n", N)),
        );
        for r in [&m, &n] {
            r.insert(&key, data);
            log_presence(&repo, &key, r.uuid(), Presence::Present).unwrap();
        }
        (d, repo, key, m, n)
    }

    #[test]
    fn a_drop_counts_only_copies_it_can_lock_now() {
        let (_d, repo, key, m, n) = setup(b"content\n");
        let remotes: Vec<Box<dyn Remote>> = vec![Box::new(m.clone()), Box::new(n.clone())];
        // Both remotes unreachable: nothing is proven, nothing is dropped.
        *m.unavailable.lock().unwrap() = Some("unplugged".into());
        *n.unavailable.lock().unwrap() = Some("unplugged".into());
        let e = drop_now(&repo, &remotes, &key).unwrap_err().to_string();
        assert!(
            e.contains("unsafe to drop") && e.contains("unplugged"),
            "{e}"
        );
        assert!(repo.store().find(&key).is_some());
        // The log says m has it, but it does not: still not proven.
        *m.unavailable.lock().unwrap() = None;
        m.objects.lock().unwrap().clear();
        let e = drop_now(&repo, &remotes, &key).unwrap_err().to_string();
        assert!(e.contains("does not have it now"), "{e}");
        // n reachable and holding it: the drop goes ahead and the log says so.
        *n.unavailable.lock().unwrap() = None;
        assert!(drop_now(&repo, &remotes, &key).unwrap());
        assert!(repo.store().find(&key).is_none());
        let log = repo.branch.location_log(&key).unwrap();
        assert_eq!(log.status_of(repo.uuid()), Some(Presence::Absent));
    }

    #[test]
    fn numcopies_and_trust_decide_what_counts() {
        let (_d, repo, key, m, n) = setup(b"more content\n");
        let remotes: Vec<Box<dyn Remote>> = vec![Box::new(m.clone()), Box::new(n.clone())];
        set_copies_log(&repo, "numcopies.log", 3).unwrap();
        let e = drop_now(&repo, &remotes, &key).unwrap_err().to_string();
        assert!(e.contains("2 other copies verified, numcopies is 3"), "{e}");
        // A trusted repository counts without being reachable.
        let lock = repo.branch.lock_journal().unwrap();
        let mut t = UuidLog::default();
        t.set(
            "77777777-2222-4333-8444-555555555555",
            "1",
            repo.branch.now(),
        );
        t.set(N, "0", repo.branch.now());
        repo.branch.write(&lock, b"trust.log", &t.render()).unwrap();
        std::mem::drop(lock);
        log_presence(
            &repo,
            &key,
            "77777777-2222-4333-8444-555555555555",
            Presence::Present,
        )
        .unwrap();
        // Untrusted n no longer counts: m + the trusted one = 2 < 3.
        let e = drop_now(&repo, &remotes, &key).unwrap_err().to_string();
        assert!(e.contains("n is untrusted"), "{e}");
        set_copies_log(&repo, "numcopies.log", 2).unwrap();
        assert!(drop_now(&repo, &remotes, &key).unwrap());
    }

    #[test]
    fn a_remote_copy_locked_by_a_drop_elsewhere_cannot_be_removed() {
        let (_d, repo, key, m, n) = setup(b"locked\n");
        let remotes: Vec<Box<dyn Remote>> = vec![Box::new(m.clone()), Box::new(n.clone())];
        // Someone is counting on m's copy right now.
        let held = m.lock_content(&key).unwrap().unwrap();
        let e = drop_from(
            &repo,
            &remotes,
            &DropPolicy::load(&repo, &[], true).unwrap(),
            m.as_ref(),
            &key,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("locked"), "{e}");
        assert!(m.check_present(&key).unwrap());
        std::mem::drop(held);
        assert!(
            drop_from(
                &repo,
                &remotes,
                &DropPolicy::load(&repo, &[], true).unwrap(),
                m.as_ref(),
                &key
            )
            .unwrap()
        );
        assert!(!m.check_present(&key).unwrap());
    }
}
