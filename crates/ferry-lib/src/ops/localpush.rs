//! Pushing to remotes at local paths without `git push`: what `sync` pushes (see
//! [`super::sync::push`]) is written straight into the remote repository: the few missing
//! objects as loose object files, then the refs in one `git update-ref --stdin` transaction run
//! there (git does the locking, the compare-and-swap against the values read, the reflogs).
//! One `git push` costs seven processes (push, a shell, receive-pack, pack-objects,
//! unpack-objects, rev-list, for-each-ref); this costs one per remote, plus a few shared by all.
//!
//! It is only a shortcut for the plainest case. A remote is left to `git push` at any doubt:
//! hooks (which `git push` runs), a `receive.*` / `transfer.*` / `fsck.*` setting, shared
//! permissions, includes, repository extensions, linked worktrees, a shallow repository,
//! another owner, a layout [`crate::git::local_git_dir`] does not know, a ref update under way,
//! many loose objects already there (receive-pack would start `git gc --auto`), more objects
//! than receive-pack keeps loose (`receive.unpackLimit`, 100), an old value not known here (so
//! no fast-forward can be proven). The rules `git push` applies are kept: the sync ref moves only by
//! fast-forward (a rejection is left to `git push`, whose refusal the caller handles), the
//! direct pushes of `git-annex` and the branch are dropped when not fast-forwards, the branch
//! checked out in a non-bare remote is not touched (git's `receive.denyCurrentBranch`), and our
//! remote-tracking refs follow as they do after a push.

use super::sync::Remote;
use crate::repo::Repo;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// receive-pack keeps fewer objects than this loose (git's default `receive.unpackLimit`).
const MAX_OBJECTS: usize = 100;
/// Loose objects are written uncompressed (a stored zlib stream): keep them small.
const MAX_BYTES: usize = 4 << 20;
/// `git gc --auto` counts the loose objects in `objects/17`: above 6700 / 256 it packs them.
const MAX_LOOSE_IN_17: usize = 26;

/// One ref to set on the remote: `refs/heads/<name>` to `new`, from `old` (`None`: it must
/// not exist).
struct Update {
    name: String,
    new: String,
    old: Option<String>,
    /// Only as a fast-forward (not a forced refspec).
    ff: bool,
    /// The sync ref, which must land (a rejection is for `git push` to report and retry); the
    /// other refs are best effort, dropped when `git push` would reject them.
    must: bool,
}

/// What to do for one remote.
struct Plan {
    /// Index into the caller's list.
    at: usize,
    name: String,
    git_dir: PathBuf,
    /// The values of its branches and tags: objects reachable from them are there.
    haves: BTreeSet<String>,
    updates: Vec<Update>,
    /// Refs that already hold our value there (name under `refs/heads/`, value).
    same: Vec<(String, String)>,
}

/// Pushes our `branch` and `git-annex` to those of `remotes` (index, remote) that qualify, as
/// [`super::sync::push`] would. Returns the indices done; the others are for `git push`.
/// `config` is this repository's git config (which includes the user's global config, which
/// receive-pack would read too).
pub(crate) fn push_local(
    repo: &Repo,
    remotes: &[(usize, &Remote)],
    branch: &str,
    config: &[(String, String)],
) -> Vec<usize> {
    if remotes.is_empty() || config.iter().any(|(k, _)| unusual_key(k, true)) {
        return Vec::new();
    }
    if repo.git_dir.join("shallow").exists() {
        return Vec::new();
    }
    let (Ok(Some(head)), Ok(Some(annex))) = (
        repo.git.rev_parse(&format!("refs/heads/{branch}")),
        repo.git.rev_parse("refs/heads/git-annex"),
    ) else {
        return Vec::new();
    };
    let mut plans: Vec<Plan> = remotes
        .iter()
        .filter_map(|&(at, r)| plan(at, r, branch, &head, &annex))
        .collect();

    // Fast-forwards, all at once: one `merge-base --independent` per side (our branch, our
    // git-annex) for the old values of every remote; see `behind`.
    for new in [&head, &annex] {
        let olds: BTreeSet<&str> = plans
            .iter()
            .flat_map(|p| &p.updates)
            .filter(|u| u.ff && u.new == *new)
            .filter_map(|u| u.old.as_deref())
            .collect();
        if olds.is_empty() {
            continue;
        }
        let (rejected, unsure) = behind(repo, new, &olds);
        plans.retain_mut(|p| {
            let on_side = |u: &Update, set: &BTreeSet<String>| {
                u.ff && u.new == *new && u.old.as_ref().is_some_and(|o| set.contains(o))
            };
            if p.updates
                .iter()
                .any(|u| on_side(u, &unsure) || (u.must && on_side(u, &rejected)))
            {
                return false; // for git push
            }
            // What git push would reject, it does not push.
            p.updates.retain(|u| !on_side(u, &rejected));
            true
        });
    }

    // The objects each remote lacks: one rev-list per distinct set of what remotes have.
    let mut groups: BTreeMap<&BTreeSet<String>, Vec<usize>> = BTreeMap::new();
    for (i, p) in plans.iter().enumerate() {
        if !p.updates.is_empty() {
            groups.entry(&p.haves).or_default().push(i);
        }
    }
    let mut needs: Vec<Option<Vec<String>>> = vec![Some(Vec::new()); plans.len()];
    for (haves, members) in &groups {
        let mut input = format!("{head}\n{annex}\n");
        for h in *haves {
            input.push_str(&format!("^{h}\n"));
        }
        let ids: Option<Vec<String>> = repo
            .git
            .run_with_input(
                ["rev-list", "--objects", "--ignore-missing", "--stdin"],
                input.as_bytes(),
            )
            .ok()
            .map(|out| {
                String::from_utf8_lossy(&out)
                    .lines()
                    .filter_map(|l| l.split(' ').next())
                    .map(str::to_string)
                    .collect::<Vec<String>>()
            })
            .filter(|ids| ids.len() <= MAX_OBJECTS);
        for &m in members {
            needs[m] = ids.clone();
        }
    }
    let wanted: BTreeSet<&String> = needs.iter().flatten().flatten().collect();
    let objects = read_objects(repo, &wanted);

    // Write, then move the refs: each remote on its own thread (its update-ref is a process).
    let done: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = plans
            .iter()
            .zip(&needs)
            .map(|(p, need)| {
                let objects = &objects;
                s.spawn(move || match (need, objects) {
                    _ if p.updates.is_empty() => true,
                    (Some(ids), Some(objects)) => apply(p, ids, objects),
                    _ => false,
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(false))
            .collect()
    });

    // Our remote-tracking refs follow, as after `git push`.
    let mut tracking = String::new();
    for (p, _) in plans.iter().zip(&done).filter(|(_, d)| **d) {
        let pushed = p.updates.iter().map(|u| (&u.name, &u.new));
        for (b, value) in p.same.iter().map(|(b, v)| (b, v)).chain(pushed) {
            tracking.push_str(&format!("update refs/remotes/{}/{b} {value}\n", p.name));
        }
    }
    if !tracking.is_empty() {
        let _ = repo.git.run_with_input(
            ["update-ref", "-m", "update by push", "--stdin"],
            tracking.as_bytes(),
        );
    }
    plans
        .iter()
        .zip(done)
        .filter(|(_, d)| *d)
        .map(|(p, _)| p.at)
        .collect()
}

/// The plan for one remote, `None` when it is for `git push`.
fn plan(at: usize, r: &Remote, branch: &str, head: &str, annex: &str) -> Option<Plan> {
    let path = r.local_path.as_ref()?;
    // Its branches and tags (what a fetch sees; `None` unless a plain remote, a known layout,
    // no update under way).
    let (git_dir, refs) = super::sync::their_refs(r)?;
    let bare = git_dir == *path;
    // Someone else's repository: git would ask for safe.directory; leave it to git.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    for d in [
        git_dir.clone(),
        git_dir.join("refs"),
        git_dir.join("objects"),
    ] {
        if std::fs::symlink_metadata(&d).ok()?.uid() != me {
            return None;
        }
    }
    let hooks = match std::fs::read_dir(git_dir.join("hooks")) {
        Ok(rd) => rd
            .map(|e| e.map(|e| !e.file_name().as_encoded_bytes().ends_with(b".sample")))
            .collect::<std::io::Result<Vec<bool>>>()
            .ok()?
            .into_iter()
            .any(|h| h),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(_) => return None,
    };
    if hooks
        || git_dir.join("shallow").exists()
        || non_empty_dir(&git_dir.join("worktrees"))?
        || loose_in_17(&git_dir)? > MAX_LOOSE_IN_17
    {
        return None;
    }
    let config = simple_config(&std::fs::read(git_dir.join("config")).ok()?)?;
    if config.iter().any(|(k, _)| unusual_key(k, false)) {
        return None;
    }
    let get = |k: &str| {
        config
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let bare_cfg = get("core.bare").map(|v| v.eq_ignore_ascii_case("true"));
    if bare_cfg != Some(bare)
        || !matches!(
            get("core.repositoryformatversion"),
            None | Some("0") | Some("1")
        )
    {
        return None;
    }
    let checked_out = std::fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let checked_out = checked_out.trim_end().strip_prefix("ref: ");

    let mut p = Plan {
        at,
        name: r.name.clone(),
        git_dir: git_dir.clone(),
        haves: refs.values().cloned().collect(),
        updates: Vec::new(),
        same: Vec::new(),
    };
    // (name under refs/heads/, our value, forced, must land)
    let wanted = [
        (format!("synced/{branch}"), head, false, true),
        ("synced/git-annex".to_string(), annex, true, false),
        ("git-annex".to_string(), annex, false, false),
        (branch.to_string(), head, false, false),
    ];
    for (name, new, forced, must) in wanted {
        let dest = format!("refs/heads/{name}");
        let old = refs.get(&dest).cloned();
        if old.as_deref() == Some(new) {
            p.same.push((name, new.to_string()));
            continue;
        }
        if name == branch && !bare && checked_out == Some(dest.as_str()) {
            // Refused by receive.denyCurrentBranch (refuse, the default): nothing changes.
            continue;
        }
        p.updates.push(Update {
            ff: !forced && old.is_some(),
            name,
            new: new.to_string(),
            old,
            must,
        });
    }
    Some(p)
}

/// Which of `olds` are not ancestors of `new`: (surely not, unsure). One `merge-base
/// --independent`: every old value it lists is surely not an ancestor; when it lists more than
/// `new` alone, the others may hang below one of those, and a second call over them settles it
/// (else they count as unsure, like all of them when git fails).
fn behind(repo: &Repo, new: &str, olds: &BTreeSet<&str>) -> (BTreeSet<String>, BTreeSet<String>) {
    let independent = |olds: &BTreeSet<&str>| -> Option<BTreeSet<String>> {
        let mut args = vec!["merge-base", "--independent", new];
        args.extend(olds.iter());
        let out = repo.git.run_str(&args).ok()?;
        Some(out.lines().map(str::to_string).collect())
    };
    let all = || olds.iter().map(|s| s.to_string()).collect();
    let Some(first) = independent(olds) else {
        return (BTreeSet::new(), all());
    };
    let rejected: BTreeSet<String> = first.iter().filter(|s| *s != new).cloned().collect();
    let rest: BTreeSet<&str> = olds
        .iter()
        .filter(|o| !rejected.contains(**o))
        .copied()
        .collect();
    if rejected.is_empty() || rest.is_empty() {
        return (rejected, BTreeSet::new());
    }
    match independent(&rest) {
        Some(second) if second.len() == 1 && second.contains(new) => (rejected, BTreeSet::new()),
        _ => (rejected, rest.iter().map(|s| s.to_string()).collect()),
    }
}

/// Writes the objects `ids` into the remote, then runs its ref transaction. False if anything
/// failed (the caller then pushes with git, which starts over and reports what is wrong).
fn apply(p: &Plan, ids: &[String], objects: &BTreeMap<String, (String, Vec<u8>)>) -> bool {
    let objects_dir = p.git_dir.join("objects");
    for id in ids {
        let Some((kind, data)) = objects.get(id) else {
            return false;
        };
        if write_loose_object(&objects_dir, id, kind, data).is_err() {
            return false;
        }
    }
    let zero = "0".repeat(40);
    let mut input = String::new();
    for u in &p.updates {
        input.push_str(&format!(
            "update refs/heads/{} {} {}\n",
            u.name,
            u.new,
            u.old.as_deref().unwrap_or(&zero)
        ));
    }
    crate::git::Git::new(&p.git_dir)
        .run_with_input(["update-ref", "-m", "push", "--stdin"], input.as_bytes())
        .is_ok()
}

/// The objects `ids` from our repository (one `cat-file --batch`), each checked against its
/// id; `None` if one is missing or wrong, or all of them together are too big.
fn read_objects(
    repo: &Repo,
    ids: &BTreeSet<&String>,
) -> Option<BTreeMap<String, (String, Vec<u8>)>> {
    let revs: Vec<Vec<u8>> = ids.iter().map(|id| id.as_bytes().to_vec()).collect();
    let got = crate::git::cat_many(&repo.git, &revs).ok()?;
    let mut out = BTreeMap::new();
    let mut bytes = 0;
    for (id, obj) in ids.iter().zip(got) {
        let (kind, data) = obj?;
        bytes += data.len();
        if bytes > MAX_BYTES || object_id(&kind, &data) != **id {
            return None;
        }
        out.insert((*id).clone(), (kind, data));
    }
    Some(out)
}

/// A git object's SHA-1 id.
fn object_id(kind: &str, data: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    let mut h = Sha1::new();
    h.update(format!("{kind} {}\0", data.len()).as_bytes());
    h.update(data);
    crate::key::hex(&h.finalize())
}

/// Writes one loose object as git does: a temporary file in `objects/xx/`, read-only, linked
/// to its name (an object already there is kept: same id, same content). The zlib stream uses
/// stored (uncompressed) blocks, which every zlib reader accepts; `git gc` compresses later.
pub(crate) fn write_loose_object(
    objects_dir: &Path,
    id: &str,
    kind: &str,
    data: &[u8],
) -> std::io::Result<()> {
    let dir = objects_dir.join(&id[..2]);
    let path = dir.join(&id[2..]);
    if path.exists() {
        return Ok(());
    }
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let mut raw = format!("{kind} {}\0", data.len()).into_bytes();
    raw.extend_from_slice(data);
    let mut tmp = tempfile::Builder::new()
        .prefix("tmp_obj_")
        .tempfile_in(&dir)?;
    std::io::Write::write_all(&mut tmp, &zlib_stored(&raw))?;
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o444),
    )?;
    match tmp.persist_noclobber(&path) {
        Ok(_) => Ok(()),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e.error),
    }
}

/// `data` as a zlib stream of stored deflate blocks (RFC 1950 / 1951).
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 65535 * 5 + 11);
    out.extend_from_slice(&[0x78, 0x01]);
    let mut chunks = data.chunks(65535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(c) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let len = c.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

/// Config keys that change what receiving a push means (or that this code does not model);
/// `global`: this repository's config as git lists it, where `core.*` keys of our own are fine.
fn unusual_key(key: &str, global: bool) -> bool {
    let section = key.split('.').next().unwrap_or("");
    let core_unusual = [
        "core.hookspath",
        "core.sharedrepository",
        "core.fsync",
        "core.fsyncobjectfiles",
        "core.fsyncmethod",
        "core.worktree",
        "core.alternaterefscommand",
        "core.alternaterefsprefixes",
    ];
    ["receive", "transfer", "fsck", "includeif"].contains(&section)
        || (!global && ["include", "extensions"].contains(&section))
        || core_unusual.contains(&key)
}

/// A repository's own config file, when it is simple enough to be read here: `[section]` or
/// `[section "sub"]` headers and `key = value` lines without quotes, escapes or continuations.
/// Keys come back as `section.key` (subsection left out), lowercased; `None` otherwise.
fn simple_config(text: &[u8]) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(text).ok()?;
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(h) = line.strip_prefix('[') {
            let h = h.strip_suffix(']')?;
            let name = h.split([' ', '\t']).next()?;
            if name.is_empty() || name.contains('.') && !h.contains(' ') {
                return None;
            }
            section = name.to_ascii_lowercase();
            continue;
        }
        if section.is_empty() || line.contains(['"', '\\']) || line.ends_with('\\') {
            return None;
        }
        let (k, v) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (line, "true"),
        };
        let v = v.split([';', '#']).next().unwrap_or("").trim();
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return None;
        }
        out.push((
            format!("{section}.{}", k.to_ascii_lowercase()),
            v.to_string(),
        ));
    }
    Some(out)
}

/// Whether `dir` has entries (`false` when it does not exist; `None` when unreadable).
fn non_empty_dir(dir: &Path) -> Option<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut rd) => Some(rd.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(false),
        Err(_) => None,
    }
}

/// Loose objects in `objects/17`, the sample `git gc --auto` takes.
fn loose_in_17(git_dir: &Path) -> Option<usize> {
    match std::fs::read_dir(git_dir.join("objects/17")) {
        Ok(rd) => Some(rd.flatten().filter(|e| e.file_name().len() == 38).count()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(0),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_zlib_streams_are_read_by_git() {
        // A blob written this way is read back by git, whatever its size (block boundaries).
        let d = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("git")
            .args(["init", "-q", "--bare"])
            .arg(d.path())
            .status()
            .unwrap();
        assert!(st.success());
        for size in [0usize, 1, 65535, 65536, 200_000] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let id = object_id("blob", &data);
            write_loose_object(&d.path().join("objects"), &id, "blob", &data).unwrap();
            let out = std::process::Command::new("git")
                .arg("-C")
                .arg(d.path())
                .args(["cat-file", "blob", &id])
                .output()
                .unwrap();
            assert!(out.status.success(), "{size}: {out:?}");
            assert_eq!(out.stdout, data, "{size}");
        }
        let fsck = std::process::Command::new("git")
            .arg("-C")
            .arg(d.path())
            .args(["fsck", "--strict"])
            .output()
            .unwrap();
        assert!(fsck.status.success(), "{fsck:?}");
    }

    #[test]
    fn only_simple_configs_are_read() {
        let c = simple_config(
            b"[core]\n\trepositoryformatversion = 0\n\tbare = false\n\tlogallrefupdates\n[remote \"origin\"]\n\turl = /x/y\n",
        )
        .unwrap();
        assert!(c.contains(&("core.bare".into(), "false".into())));
        assert!(c.contains(&("core.logallrefupdates".into(), "true".into())));
        assert!(c.contains(&("remote.url".into(), "/x/y".into())));
        assert!(simple_config(b"[core]\n\tbare = \"false\"\n").is_none());
        assert!(simple_config(b"[core]\n\tx = a\\\n b\n").is_none());
        assert!(simple_config(b"bare = true\n").is_none());
        assert!(unusual_key("receive.denycurrentbranch", false));
        assert!(unusual_key("include.path", false));
        assert!(!unusual_key("include.path", true));
        assert!(unusual_key("core.hookspath", true));
        assert!(!unusual_key("core.bare", false));
    }
}
