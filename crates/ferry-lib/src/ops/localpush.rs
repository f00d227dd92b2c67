//! Pushing to remotes at local paths without `git push`: what `sync` pushes (see
//! [`super::sync::push`]) is written straight into the remote repository: the few missing
//! objects hard-linked from ours (or written as loose object files), then the refs moved as
//! `git update-ref` moves them there (`update_refs`: git's lock files, the compare-and-swap
//! under the locks, the reflogs), or by `git update-ref` itself when that cannot be done
//! exactly. What each remote lacks is found by one in-process walk over a `cat-file --batch`
//! shared by all (`walk`). One `git push` costs seven processes (push, a shell,
//! receive-pack, pack-objects, unpack-objects, rev-list, for-each-ref); this costs none per
//! remote in the common case. Each remote is read and written on a thread of its own.
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
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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

/// One ref for [`update_refs`] to move: its full name, its new value, and the value it must
/// have now (`Some(None)`: it must not exist; `None`: any).
struct RefMove {
    name: String,
    new: String,
    expect: Option<Option<String>>,
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
    /// How its refs can be moved without a `git update-ref` process, if they can.
    in_place: Option<InPlace>,
    /// The ref its `HEAD` points to (whose updates git logs in `HEAD`'s reflog as well).
    head_ref: Option<String>,
}

/// What moving a remote's refs ourselves needs to know to do what `git update-ref` run there
/// would do: whether it creates reflogs for branches (`core.logAllRefUpdates`: true by default
/// in a repository with a work tree, where it is also written in the config) or only appends
/// to those that exist, and the committer identity its reflog lines would carry.
#[derive(Clone)]
struct InPlace {
    create_logs: bool,
    /// `Name <email>`; `None` when git would have to make one up (or the date is set in the
    /// environment): then only a remote that writes no reflog line is done here.
    ident: Option<String>,
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
    let outer = outer_config(&repo.git_dir, config);
    // (Locks a killed push left are cleared by the callers first: `sync_lock`, `push_one`.)
    let intents = intents_dir(&repo.git_dir);
    let (Ok(Some(head)), Ok(Some(annex))) = (
        repo.git.rev_parse(&format!("refs/heads/{branch}")),
        repo.git.rev_parse("refs/heads/git-annex"),
    ) else {
        return Vec::new();
    };
    // (Each remote read on its own thread, as each is written on one below.)
    let mut plans: Vec<Plan> = super::parallel(remotes, |&(at, r)| {
        let outer = outer.as_ref().map(|c| c.outer.as_slice());
        plan(at, r, branch, &head, &annex, outer)
    })
    .into_iter()
    .flatten()
    .collect();

    // What each remote lacks, and whether our commits descend from its old values: one walk
    // per distinct set of what remotes have, in-process over one `cat-file --batch` (see
    // `walk`); a walk that gives up leaves its group to `rev-list`, and an old value no walk
    // reached is settled by `merge-base`.
    // (No git process at all when no remote needs anything.)
    let mut store = match plans.iter().any(|p| !p.updates.is_empty()) {
        true => match Store::open(&repo.git) {
            Some(s) => Some(s),
            None => return Vec::new(),
        },
        false => None,
    };
    let mut walks: BTreeMap<BTreeSet<String>, Option<Walk>> = BTreeMap::new();
    for p in plans.iter().filter(|p| !p.updates.is_empty()) {
        if let (false, Some(store)) = (walks.contains_key(&p.haves), store.as_mut()) {
            let w = walk(store, [&head, &annex], &p.haves);
            walks.insert(p.haves.clone(), w);
        }
    }
    let reached = |p: &Plan, u: &Update| {
        let side = usize::from(u.new != head);
        match (walks.get(&p.haves), &u.old) {
            (Some(Some(w)), Some(old)) => w.reached[side].contains(old),
            _ => false,
        }
    };
    // Fast-forwards not proven by a walk: one `merge-base --independent` per side (our
    // branch, our git-annex) for those old values, both sides at the same time; see `behind`.
    let sides: Vec<(&String, BTreeSet<String>)> = [&head, &annex]
        .into_iter()
        .map(|new| {
            let olds: BTreeSet<String> = plans
                .iter()
                .flat_map(|p| p.updates.iter().map(move |u| (p, u)))
                .filter(|(p, u)| u.ff && u.new == *new && !reached(p, u))
                .filter_map(|(_, u)| u.old.clone())
                .collect();
            (new, olds)
        })
        .filter(|(_, olds)| !olds.is_empty())
        .collect();
    let verdicts = super::parallel(&sides, |(new, olds)| {
        behind(repo, new, &olds.iter().map(String::as_str).collect())
    });
    for ((new, _), (rejected, unsure)) in sides.iter().zip(verdicts) {
        plans.retain_mut(|p| {
            let on_side = |u: &Update, set: &BTreeSet<String>| {
                u.ff && u.new == **new && u.old.as_ref().is_some_and(|o| set.contains(o))
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

    // Groups whose walk gave up: one rev-list each, all at once.
    let unwalked: Vec<&BTreeSet<String>> = plans
        .iter()
        .filter(|p| !p.updates.is_empty() && matches!(walks.get(&p.haves), Some(None) | None))
        .map(|p| &p.haves)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let lists = super::parallel(&unwalked, |haves| {
        let mut input = format!("{head}\n{annex}\n");
        for h in *haves {
            input.push_str(&format!("^{h}\n"));
        }
        repo.git
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
            .filter(|ids| ids.len() <= MAX_OBJECTS)
    });
    let listed: BTreeMap<&BTreeSet<String>, Option<Vec<String>>> =
        unwalked.into_iter().zip(lists).collect();
    let needs: Vec<Option<Vec<String>>> = plans
        .iter()
        .map(|p| match (walks.get(&p.haves), listed.get(&p.haves)) {
            _ if p.updates.is_empty() => Some(Vec::new()),
            (Some(Some(w)), _) => Some(w.ids.clone()),
            (_, Some(ids)) => ids.clone(),
            _ => None,
        })
        .collect();
    let wanted: BTreeSet<&String> = needs.iter().flatten().flatten().collect();
    let objects = match store.as_mut() {
        Some(store) => store.read_all(&wanted),
        None => Some(BTreeMap::new()),
    };

    // How our remote-tracking refs move after a push, as `git push` moves them: in place
    // when our repository is plain enough (see `in_place`), else by `git update-ref`.
    let ours = &repo.git_dir;
    let tracking_how = outer.as_ref().and_then(|c| {
        let plain = crate::git::local_git_dir(ours.parent()?)? == *ours;
        plain.then(|| in_place(&c.ours, &c.outer, false)).flatten()
    });
    let our_head = std::fs::read_to_string(ours.join("HEAD")).ok();
    let our_head = our_head
        .as_deref()
        .and_then(|h| h.trim_end().strip_prefix("ref: "));

    // Our remote-tracking refs for each remote, as they are after a push there.
    let trackings: Vec<Vec<RefMove>> = plans
        .iter()
        .map(|p| {
            let pushed = p.updates.iter().map(|u| (&u.name, &u.new));
            p.same
                .iter()
                .map(|(b, v)| (b, v))
                .chain(pushed)
                .map(|(b, value)| RefMove {
                    name: format!("refs/remotes/{}/{b}", p.name),
                    new: value.clone(),
                    expect: None,
                })
                .collect()
        })
        .collect();
    // Every lock this push may take, in their repositories and in ours, noted at once (see
    // `note_locks`): one note, not one per transaction. (If it cannot be written, each
    // transaction tries its own.)
    let theirs = plans.iter().flat_map(|p| {
        let lock = |u: &Update| p.git_dir.join(format!("refs/heads/{}.lock", u.name));
        p.updates.iter().map(move |u| (lock(u), u.new.as_str()))
    });
    let mine = trackings
        .iter()
        .flatten()
        .map(|m| (ours.join(format!("{}.lock", m.name)), m.new.as_str()));
    let note = note_locks(&intents, theirs.chain(mine));
    let notes = match note {
        Some(_) => Notes::Taken,
        None => Notes::In(&intents),
    };

    // Each remote on its own thread: write what it lacks, move its refs, then move our
    // remote-tracking refs for it. Returns whether it was done, and the tracking refs left
    // for git to move.
    let each: Vec<usize> = (0..plans.len()).collect();
    let results: Vec<(bool, &[RefMove])> = super::parallel(&each, |&i| {
        let (p, need, tracking) = (&plans[i], &needs[i], &trackings[i]);
        let done = match (need, &objects) {
            _ if p.updates.is_empty() => true,
            (Some(ids), Some(objects)) => apply(p, ids, objects, ours, notes),
            _ => false,
        };
        let none: &[RefMove] = &[];
        if !done {
            return (false, none);
        }
        let moved = tracking_how.as_ref().is_some_and(|how| {
            update_refs(ours, tracking, how, our_head, "update by push", notes).unwrap_or(false)
        });
        (true, if moved { none } else { tracking.as_slice() })
    });
    if let Some(note) = note {
        let _ = std::fs::remove_file(note);
    }
    let left: String = results
        .iter()
        .flat_map(|(_, left)| left.iter())
        .map(|m| format!("update {} {}\n", m.name, m.new))
        .collect();
    if !left.is_empty() {
        let _ = repo.git.run_with_input(
            ["update-ref", "-m", "update by push", "--stdin"],
            left.as_bytes(),
        );
    }
    plans
        .iter()
        .zip(results)
        .filter(|(_, (done, _))| *done)
        .map(|(p, _)| p.at)
        .collect()
}

/// The plan for one remote, `None` when it is for `git push`. `outer`: the system and global
/// git config (see [`outer_config`]), which git run in the remote would read too.
fn plan(
    at: usize,
    r: &Remote,
    branch: &str,
    head: &str,
    annex: &str,
    outer: Option<&[(String, String)]>,
) -> Option<Plan> {
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
    if git_dir.join("shallow").exists()
        || non_empty_dir(&git_dir.join("worktrees"))?
        || loose_in_17(&git_dir)? > MAX_LOOSE_IN_17
    {
        return None;
    }
    let Receiver {
        config,
        checked_out,
    } = plain_receiver(&git_dir, bare)?;
    let checked_out = checked_out.as_deref();

    let in_place = outer.and_then(|outer| in_place(&config, outer, bare));
    let mut p = Plan {
        at,
        name: r.name.clone(),
        git_dir: git_dir.clone(),
        haves: refs.values().cloned().collect(),
        updates: Vec::new(),
        same: Vec::new(),
        in_place,
        head_ref: checked_out.map(str::to_string),
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

/// How a repository receives a push, when that is plain enough to be known without git.
pub(crate) struct Receiver {
    /// Its own config file (see [`simple_config`]).
    config: Vec<(String, String)>,
    /// The ref its `HEAD` names (the branch checked out in a work tree).
    pub(crate) checked_out: Option<String>,
}

/// How the repository whose git directory is `git_dir` (`bare`: it has no work tree) receives
/// a push: `None` unless it is plain: no hooks (which a push runs), a simple config file that
/// agrees on `core.bare` and sets nothing that changes receiving (see [`unusual_key`]), a
/// known repository format.
pub(crate) fn plain_receiver(git_dir: &Path, bare: bool) -> Option<Receiver> {
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
    if hooks {
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
    let head = std::fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let checked_out = head.trim_end().strip_prefix("ref: ").map(str::to_string);
    Some(Receiver {
        config,
        checked_out,
    })
}

/// Whether a config key (as git lists it) of the pushing repository, which receive-pack reads
/// too (global and system entries), changes how a push is received.
pub(crate) fn unusual_for_receiving(key: &str) -> bool {
    unusual_key(key, true)
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
fn apply(
    p: &Plan,
    ids: &[String],
    objects: &BTreeMap<String, (String, Vec<u8>)>,
    ours: &Path,
    notes: Notes<'_>,
) -> bool {
    let objects_dir = p.git_dir.join("objects");
    let our_objects = ours.join("objects");
    for id in ids {
        let Some((kind, data)) = objects.get(id) else {
            return false;
        };
        if !link_loose_object(&our_objects, &objects_dir, id)
            && write_loose_object(&objects_dir, id, kind, data).is_err()
        {
            return false;
        }
    }
    if let Some(how) = &p.in_place {
        let moves: Vec<RefMove> = p
            .updates
            .iter()
            .map(|u| RefMove {
                name: format!("refs/heads/{}", u.name),
                new: u.new.clone(),
                expect: Some(u.old.clone()),
            })
            .collect();
        match update_refs(
            &p.git_dir,
            &moves,
            how,
            p.head_ref.as_deref(),
            "push",
            notes,
        ) {
            Ok(true) => return true,
            // Nothing changed (a ref locked or moved meanwhile, or a reflog line that needs
            // git): let git try.
            Ok(false) => {}
            // Part done: `git push` starts over and settles it.
            Err(_) => return false,
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

/// The system and global git config entries, which git run in another repository reads as
/// well: `config` (this repository's whole config, as `git config --list` gives it, in order)
/// without its tail, the entries of our own config file (returned too). `None` when that cannot be told
/// apart with certainty (a config file that is not simple, includes, config given in the
/// environment).
fn outer_config(git_dir: &Path, config: &[(String, String)]) -> Option<ConfigSplit> {
    if ["GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT", "GIT_CONFIG"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
    {
        return None;
    }
    let ours = simple_config(&std::fs::read(git_dir.join("config")).ok()?)?;
    let split = config.len().checked_sub(ours.len())?;
    let tail_matches = config[split..]
        .iter()
        .zip(&ours)
        .all(|((k, _), (o, _))| k.eq_ignore_ascii_case(o));
    (tail_matches && !ours.iter().any(|(k, _)| k.starts_with("include"))).then(|| ConfigSplit {
        outer: config[..split].to_vec(),
        ours,
    })
}

/// Our config list told apart (see [`outer_config`]).
struct ConfigSplit {
    /// System and global entries.
    outer: Vec<(String, String)>,
    /// Those of our own config file.
    ours: Vec<(String, String)>,
}

/// How refs are moved in a remote whose own config is `local` (see [`InPlace`]); `None` when
/// that is for git to do.
fn in_place(local: &[(String, String)], outer: &[(String, String)], bare: bool) -> Option<InPlace> {
    let get = |k: &str| {
        local
            .iter()
            .rev()
            .chain(outer.iter().rev())
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    let create_logs = match get("core.logallrefupdates").map(str::to_ascii_lowercase) {
        None => !bare,
        Some(v) => match v.as_str() {
            "always" | "true" | "yes" | "on" | "1" => true,
            "false" | "no" | "off" | "0" | "" => false,
            _ => return None,
        },
    };
    let env = |v: &str| std::env::var(v).ok();
    let clean = |s: &str| {
        let crud = |c: char| c <= ' ' || ".,:;<>\"\\'".contains(c);
        !s.is_empty() && !s.starts_with(crud) && !s.ends_with(crud) && !s.contains(['<', '>', '\n'])
    };
    let name = env("GIT_COMMITTER_NAME")
        .or_else(|| get("committer.name").map(str::to_string))
        .or_else(|| get("user.name").map(str::to_string));
    let email = env("GIT_COMMITTER_EMAIL")
        .or_else(|| get("committer.email").map(str::to_string))
        .or_else(|| get("user.email").map(str::to_string))
        .or_else(|| env("EMAIL"));
    let ident = match (name, email) {
        (Some(n), Some(e)) if clean(&n) && clean(&e) && env("GIT_COMMITTER_DATE").is_none() => {
            Some(format!("{n} <{e}>"))
        }
        _ => None,
    };
    Some(InPlace { create_logs, ident })
}

/// Moves the refs of `moves` in the repository at `git_dir` as one `git update-ref --stdin`
/// would with the files backend: no packed ref in the way of a new one (`refs/heads/x` where
/// `refs/heads/x/y` would go, or below it), every `<ref>.lock` taken first (exclusive create:
/// git's lock), each value checked while locked (the loose file, else `packed-refs`), the
/// reflog lines appended (to `HEAD`'s too for the ref `head_ref` it names), then each lock
/// renamed onto its ref. A ref already at its value is neither written nor logged, as in git.
/// `Ok(false)` when nothing was changed and git should try (a lock held, a value moved, a
/// reflog line git would have to make up an identity for); `Err` when it failed part way.
fn update_refs(
    git_dir: &Path,
    moves: &[RefMove],
    how: &InPlace,
    head_ref: Option<&str>,
    msg: &str,
    notes: Notes<'_>,
) -> std::io::Result<bool> {
    let Some(before) = crate::git::packed_refs(git_dir) else {
        return Ok(false);
    };
    let in_the_way = before.keys().any(|other| {
        moves.iter().any(|m| {
            other.starts_with(&format!("{}/", m.name)) || m.name.starts_with(&format!("{other}/"))
        })
    });
    if in_the_way {
        return Ok(false);
    }

    // Refs already at their value (and free to be anything) are left alone without a lock.
    let moves: Vec<&RefMove> = moves
        .iter()
        .filter(|m| {
            m.expect.is_some()
                || std::fs::read(git_dir.join(&m.name))
                    .map_or(true, |c| c.trim_ascii_end() != m.new.as_bytes())
        })
        .collect();

    // Lock them all: each lock created exclusively (git's lock) and its new value written at
    // once; each is noted first in `intents`, so that a sync killed while holding it lets a
    // later one remove it (see `clear_stale_locks`), where git would refuse that ref until it
    // is removed by hand.
    let lock_of = |name: &str| git_dir.join(format!("{name}.lock"));
    let note = match notes {
        Notes::In(intents) => {
            let locks = moves.iter().map(|m| (lock_of(&m.name), m.new.as_str()));
            match note_locks(intents, locks) {
                Some(note) => Some(note),
                None => return Ok(false),
            }
        }
        Notes::Taken => None,
    };
    let forget = || {
        if let Some(note) = &note {
            let _ = std::fs::remove_file(note);
        }
    };
    let mut held: Vec<&RefMove> = Vec::new();
    let release = |held: &[&RefMove]| {
        for m in held {
            let _ = std::fs::remove_file(lock_of(&m.name));
        }
        forget();
    };
    for m in &moves {
        let lock = lock_of(&m.name);
        let create = || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock)
        };
        let file = match create() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => lock
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| create()),
            other => other,
        };
        let Ok(mut file) = file else {
            release(&held);
            return Ok(false);
        };
        held.push(m);
        if std::io::Write::write_all(&mut file, format!("{}\n", m.new).as_bytes()).is_err() {
            release(&held);
            return Ok(false);
        }
    }

    // Their values now, under the locks.
    // (packed-refs read again: a `pack-refs` may have moved a value there before we locked.)
    let mut packed: Option<BTreeMap<String, String>> = None;
    let mut writes: Vec<(&RefMove, Option<String>)> = Vec::new();
    for m in moves {
        let now = match std::fs::read(git_dir.join(&m.name)) {
            Ok(c) => {
                let c = String::from_utf8_lossy(&c);
                let c = c.trim_end();
                if !crate::git::is_sha1(c) {
                    release(&held);
                    return Ok(false);
                }
                Some(c.to_string())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if packed.is_none() {
                    packed = crate::git::packed_refs(git_dir);
                }
                let Some(packed) = &packed else {
                    release(&held);
                    return Ok(false);
                };
                packed.get(&m.name).cloned()
            }
            Err(_) => {
                release(&held);
                return Ok(false);
            }
        };
        if m.expect
            .as_ref()
            .is_some_and(|e| now.as_deref() != e.as_deref())
        {
            release(&held);
            return Ok(false);
        }
        if now.as_deref() == Some(m.new.as_str()) {
            // Already there: git writes neither the ref nor a reflog line.
            let _ = std::fs::remove_file(lock_of(&m.name));
            held.retain(|h| h.name != m.name);
            continue;
        }
        writes.push((m, now));
    }

    // The reflogs each write goes to.
    let log_of = |name: &str| {
        let path = git_dir.join("logs").join(name);
        (how.create_logs || path.is_file()).then_some(path)
    };
    let mut lines: Vec<(PathBuf, String)> = Vec::new();
    let zero = "0".repeat(40);
    let stamp = now_stamp();
    for (m, before) in &writes {
        let mut logs: Vec<PathBuf> = log_of(&m.name).into_iter().collect();
        if head_ref == Some(m.name.as_str()) {
            logs.extend(log_of("HEAD"));
        }
        if logs.is_empty() {
            continue;
        }
        let Some(ident) = &how.ident else {
            release(&held);
            return Ok(false);
        };
        let old = before.as_deref().unwrap_or(&zero);
        for log in logs {
            lines.push((log, format!("{old} {} {ident} {stamp}\t{msg}\n", m.new)));
        }
    }

    let prepared = (|| -> std::io::Result<()> {
        for (log, line) in &lines {
            let open = || {
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(log)
            };
            // (Its directory is made only when missing: one system call, not three.)
            let mut f = match open() {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    log.parent().map_or(Ok(()), std::fs::create_dir_all)?;
                    open()?
                }
                other => other?,
            };
            std::io::Write::write_all(&mut f, line.as_bytes())?;
        }
        Ok(())
    })();
    if let Err(e) = prepared {
        release(&held);
        return Err(e);
    }
    for (i, (m, _)) in writes.iter().enumerate() {
        if let Err(e) = std::fs::rename(lock_of(&m.name), git_dir.join(&m.name)) {
            let rest: Vec<&RefMove> = writes[i..].iter().map(|(m, _)| *m).collect();
            release(&rest);
            return Err(e);
        }
    }
    forget();
    Ok(true)
}

/// Where [`update_refs`] notes the ref locks it is about to take.
#[derive(Clone, Copy)]
enum Notes<'a> {
    /// In a note of its own in this directory (see [`note_locks`]).
    In(&'a Path),
    /// Already noted by the caller (one note for all the transactions of a push).
    Taken,
}

/// Notes the ref locks about to be taken (each lock's path and the value it will hold) in a
/// new file in `intents`, named after this process, so that a later sync can remove them if
/// this process is killed holding them (see [`clear_stale_locks`]). The note's path, `None`
/// if it could not be written.
fn note_locks<'a>(
    intents: &Path,
    locks: impl Iterator<Item = (PathBuf, &'a str)>,
) -> Option<PathBuf> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let note = intents.join(format!("{}-{seq}", std::process::id()));
    let mut text = String::new();
    for (lock, value) in locks {
        text.push_str(&format!("{}\t{value}\n", lock.display()));
    }
    std::fs::write(&note, &text)
        .or_else(|_| {
            std::fs::create_dir_all(intents)?;
            std::fs::write(&note, &text)
        })
        .ok()?;
    Some(note)
}

/// Where a repository notes the ref locks it is about to take (see [`update_refs`]).
fn intents_dir(git_dir: &Path) -> PathBuf {
    git_dir.join("annex/ferry/reflocks")
}

/// How long a lock must have stood, unchanged, before [`clear_stale_locks`] takes it for one a
/// killed process left. git and ferry hold a ref lock for milliseconds; this leaves room for a
/// slow disk or a `reference-transaction` hook.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

/// Removes the ref locks a killed ferry process left in other repositories (and in this
/// one): those noted (in this repository's `intents_dir`) by a process that is gone, not older
/// than the note, still holding the value that process was to write (or nothing: killed
/// between creating and writing it), and standing unchanged for [`STALE_AFTER`]. A lock
/// another process took since holds its own value, and is left alone; so is one it holds
/// with the same value (or before writing it), the killed process having died before taking
/// that lock: such a lock is gone or another file once its holder is done, and a lock younger
/// than [`STALE_AFTER`] is looked at again once it is that old (a sync right after a crash
/// waits up to that long; later ones not at all).
pub(crate) fn clear_stale_locks(git_dir: &Path) {
    let Ok(rd) = std::fs::read_dir(intents_dir(git_dir)) else {
        return;
    };
    // Locks that look left behind: (path, what identifies that file).
    let mut stale: Vec<(PathBuf, LockFile)> = Vec::new();
    let mut notes: Vec<PathBuf> = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only asks whether the process exists.
        let alive = pid as u32 == std::process::id()
            || unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if alive {
            continue;
        }
        let noted = e.metadata().and_then(|m| m.modified()).ok();
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        for line in text.lines() {
            let Some((lock, value)) = line.split_once('\t') else {
                continue;
            };
            let Ok(meta) = std::fs::metadata(lock) else {
                continue;
            };
            // Its value, or nothing yet (killed between creating and writing it).
            let ours = meta.modified().ok().zip(noted).is_some_and(|(l, n)| l >= n)
                && std::fs::read_to_string(lock)
                    .is_ok_and(|c| c.is_empty() || c == format!("{value}\n"));
            if ours {
                stale.push((PathBuf::from(lock), LockFile::of(&meta)));
            }
        }
        notes.push(e.path());
    }
    // Those not yet known to have stood that long are looked at again once they have.
    let young = stale
        .iter()
        .filter_map(|(_, f)| {
            f.age()
                .map_or(Some(STALE_AFTER), |a| STALE_AFTER.checked_sub(a))
        })
        .max();
    if let Some(wait) = young {
        std::thread::sleep(wait);
    }
    for (lock, was) in stale {
        if std::fs::metadata(&lock).is_ok_and(|m| LockFile::of(&m) == was) {
            let _ = std::fs::remove_file(&lock);
        }
    }
    for note in notes {
        let _ = std::fs::remove_file(note);
    }
}

/// What tells one lock file from another at the same path, and from itself once written to.
#[derive(PartialEq, Eq)]
struct LockFile {
    ino: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl LockFile {
    fn of(meta: &std::fs::Metadata) -> LockFile {
        use std::os::unix::fs::MetadataExt;
        LockFile {
            ino: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }

    /// How long ago it was last written, `None` if unknown (or in the future).
    fn age(&self) -> Option<std::time::Duration> {
        self.modified?.elapsed().ok()
    }
}

/// Now as git writes it in an identity: seconds since the epoch and the local time zone's
/// offset (`1700000000 +0100`).
fn now_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let t = secs as libc::time_t;
    // SAFETY: an all-zero `tm` is a valid value; localtime_r only writes into it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is the thread-safe form.
    let ok = !unsafe { libc::localtime_r(&t, &mut tm) }.is_null();
    let off = if ok { tm.tm_gmtoff / 60 } else { 0 };
    let sign = if off < 0 { '-' } else { '+' };
    format!("{secs} {sign}{:02}{:02}", off.abs() / 60, off.abs() % 60)
}

/// Objects of our repository read through one `cat-file --batch`, kept by id, each checked
/// against its id.
struct Store {
    cat: crate::git::CatFile,
    got: HashMap<String, (String, Vec<u8>)>,
    /// Bytes read so far.
    bytes: usize,
}

impl Store {
    fn open(git: &crate::git::Git) -> Option<Store> {
        Some(Store {
            cat: git.cat_file().ok()?,
            got: HashMap::new(),
            bytes: 0,
        })
    }

    /// Object `id`; `None` if missing, wrong, or past the size limit.
    fn get(&mut self, id: &str) -> Option<&(String, Vec<u8>)> {
        if !self.got.contains_key(id) {
            let (kind, data) = self.cat.get(id.as_bytes()).ok()??;
            self.bytes += data.len();
            if self.bytes > MAX_BYTES || crate::git::object_id(&kind, &data) != id {
                return None;
            }
            self.got.insert(id.to_string(), (kind, data));
        }
        self.got.get(id)
    }

    /// Objects `ids`, all of them or `None`.
    fn read_all(&mut self, ids: &BTreeSet<&String>) -> Option<BTreeMap<String, (String, Vec<u8>)>> {
        let mut out = BTreeMap::new();
        for id in ids {
            let obj = self.get(id)?.clone();
            out.insert((*id).clone(), obj);
        }
        Some(out)
    }

    /// The tree and parents of commit `id`.
    fn commit(&mut self, id: &str) -> Option<(String, Vec<String>)> {
        let (kind, data) = self.get(id)?;
        if kind != "commit" {
            return None;
        }
        // The header: up to the blank line before the message.
        let end = data
            .windows(2)
            .position(|w| w == b"\n\n")
            .unwrap_or(data.len());
        let text = std::str::from_utf8(&data[..end]).ok()?;
        let mut tree = None;
        let mut parents = Vec::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("tree ") {
                tree = Some(t.to_string());
            } else if let Some(p) = line.strip_prefix("parent ") {
                parents.push(p.to_string());
            }
        }
        Some((tree?, parents))
    }

    /// The entries of tree `id`.
    fn tree(&mut self, id: &str) -> Option<Vec<TreeEntry>> {
        let (kind, data) = self.get(id)?;
        if kind != "tree" {
            return None;
        }
        let mut out = Vec::new();
        let mut rest = &data[..];
        while !rest.is_empty() {
            let sp = rest.iter().position(|&b| b == b' ')?;
            let nul = rest.iter().position(|&b| b == 0)?;
            if nul < sp || rest.len() < nul + 21 {
                return None;
            }
            let entry = (
                rest[..sp].to_vec(),
                rest[sp + 1..nul].to_vec(),
                crate::key::hex(&rest[nul + 1..nul + 21]),
            );
            out.push(entry);
            rest = &rest[nul + 21..];
        }
        Some(out)
    }
}

/// One entry of a tree: mode (`40000` for a tree), name, object id.
type TreeEntry = (Vec<u8>, Vec<u8>, String);

/// Commits more than this many behind a remote are left to `rev-list`.
const MAX_COMMITS: usize = 64;

/// What a remote that has the commits `haves` (and all they reach) lacks of our two tips.
struct Walk {
    /// Every object it may lack, commits first where they were met (a superset: an object it
    /// has may be among them, which costs a rewrite, never a loss).
    ids: Vec<String>,
    /// The commits of `haves` met walking down from each tip: each is an ancestor of that tip.
    reached: [BTreeSet<String>; 2],
}

/// Walks down from each of `tips` through parents, stopping at the commits of `haves`, and
/// lists each commit met with the trees and blobs it has that its first parent has not at the
/// same path. Every object reachable from a tip but not from `haves` is then listed: the
/// commits on the way to it are not reachable from `haves` either, so the walk meets them,
/// and an object a commit shares with its first parent is listed under that parent (met too,
/// unless it is one of `haves`, which would make the object reachable from them). `None`
/// past [`MAX_COMMITS`] commits or [`MAX_OBJECTS`] objects, at a root commit's full tree of
/// many objects, or when an object cannot be read: then `rev-list` decides.
fn walk(store: &mut Store, tips: [&str; 2], haves: &BTreeSet<String>) -> Option<Walk> {
    let mut ids: Vec<String> = Vec::new();
    let mut listed: HashSet<String> = HashSet::new();
    let mut reached: [BTreeSet<String>; 2] = Default::default();
    let mut commits = 0;
    for (side, tip) in tips.into_iter().enumerate() {
        let mut stack = vec![tip.to_string()];
        let mut seen: HashSet<String> = HashSet::new();
        while let Some(c) = stack.pop() {
            if haves.contains(&c) {
                reached[side].insert(c);
                continue;
            }
            if !seen.insert(c.clone()) {
                continue;
            }
            commits += 1;
            if commits > MAX_COMMITS {
                return None;
            }
            let (tree, parents) = store.commit(&c)?;
            if listed.insert(c.clone()) {
                ids.push(c);
            }
            let base = match parents.first() {
                Some(p) => Some(store.commit(p)?.0),
                None => None,
            };
            tree_diff(store, &tree, base.as_deref(), &mut ids, &mut listed)?;
            if ids.len() > MAX_OBJECTS {
                return None;
            }
            stack.extend(parents);
        }
    }
    Some(Walk { ids, reached })
}

/// Lists tree `new` and what it holds that tree `old` does not hold at the same path (a
/// subtree with the same id holds the same things). Submodule commits are not objects of
/// this repository and are left out.
fn tree_diff(
    store: &mut Store,
    new: &str,
    old: Option<&str>,
    ids: &mut Vec<String>,
    listed: &mut HashSet<String>,
) -> Option<()> {
    if old == Some(new) {
        return Some(());
    }
    if listed.insert(new.to_string()) {
        ids.push(new.to_string());
    }
    if ids.len() > MAX_OBJECTS {
        return None;
    }
    let entries = store.tree(new)?;
    let before: HashMap<Vec<u8>, (Vec<u8>, String)> = match old {
        Some(old) => store
            .tree(old)?
            .into_iter()
            .map(|(mode, name, id)| (name, (mode, id)))
            .collect(),
        None => HashMap::new(),
    };
    for (mode, name, id) in entries {
        let was = before.get(&name);
        if was.is_some_and(|(_, old_id)| *old_id == id) {
            continue;
        }
        match mode.as_slice() {
            b"40000" => {
                let old_sub = was.filter(|(m, _)| m == b"40000").map(|(_, i)| i.as_str());
                tree_diff(store, &id, old_sub, ids, listed)?;
            }
            b"160000" => {}
            _ => {
                if listed.insert(id.clone()) {
                    ids.push(id);
                }
            }
        }
        if ids.len() > MAX_OBJECTS {
            return None;
        }
    }
    Some(())
}

/// Writes one loose object as git does (without fsync, as git does by default for loose
/// objects): a temporary file in `objects/xx/`, created read-only, renamed to its name unless
/// that exists already (same id, same content: kept). Four system calls for an object in the
/// common case (create, write, close, rename); `objects/xx/` is made only when missing. The
/// zlib stream uses stored (uncompressed) blocks, which every zlib reader accepts; `git gc`
/// compresses later.
pub(crate) fn write_loose_object(
    objects_dir: &Path,
    id: &str,
    kind: &str,
    data: &[u8],
) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = objects_dir.join(&id[..2]);
    let path = dir.join(&id[2..]);
    let tmp = dir.join(format!(
        "tmp_obj_ferry_{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut raw = format!("{kind} {}\0", data.len()).into_bytes();
    raw.extend_from_slice(data);
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&tmp)
    };
    let mut file = match create() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            create()?
        }
        other => other?,
    };
    let written = std::io::Write::write_all(&mut file, &zlib_stored(&raw));
    drop(file);
    let placed = written.and_then(|()| rename_noreplace(&tmp, &path));
    match placed {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

/// Places object `id` into `objects_dir` as a hard link to our own loose file of it, as
/// `git clone --local` shares objects (object files are never changed, only removed, and each
/// repository removes only its own name). One system call; false when that cannot be done
/// (our copy is packed, another file system) and the object is to be written.
fn link_loose_object(ours: &Path, objects_dir: &Path, id: &str) -> bool {
    let (dir, rest) = id.split_at(2);
    let from = ours.join(dir).join(rest);
    let to_dir = objects_dir.join(dir);
    let to = to_dir.join(rest);
    match std::fs::hard_link(&from, &to) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && from.is_file() => {
            std::fs::create_dir(&to_dir).is_ok() && std::fs::hard_link(&from, &to).is_ok()
        }
        Err(_) => false,
    }
}

/// Renames `from` to `to` unless `to` exists (`AlreadyExists` then): `renameat2` with
/// `RENAME_NOREPLACE`, or a hard link and an unlink where the file system lacks it.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes());
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: both are valid NUL-terminated paths, relative to the working directory.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EINVAL) {
        std::fs::hard_link(from, to)?;
        return std::fs::remove_file(from);
    }
    Err(e)
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
/// Keys come back as git lists them: `section.key`, or `section.subsection.key` with the
/// subsection as written and the rest lowercased; `None` otherwise.
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
            let (name, sub) = match h.split_once([' ', '\t']) {
                None => (h, None),
                Some((name, rest)) => {
                    let sub = rest.trim_start().strip_prefix('"')?.strip_suffix('"')?;
                    if sub.contains(['"', '\\']) {
                        return None;
                    }
                    (name, Some(sub))
                }
            };
            if name.is_empty() || name.contains('.') {
                return None;
            }
            section = name.to_ascii_lowercase();
            if let Some(sub) = sub {
                section = format!("{section}.{sub}");
            }
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

    /// Runs git in `dir` with a fixed identity; its stdout, trimmed.
    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_COMMITTER_NAME", "T Tester")
            .env("GIT_COMMITTER_EMAIL", "t@ferry.invalid")
            .env("GIT_AUTHOR_NAME", "T Tester")
            .env("GIT_AUTHOR_EMAIL", "t@ferry.invalid")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn commit_file(dir: &Path, path: &str, text: &str) -> String {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "-qm", path]);
        git(dir, &["rev-parse", "HEAD"])
    }

    /// The walk lists every object `rev-list --objects tips --not haves` lists (and only
    /// objects reachable from the tips), over history with subdirectories, a merge of two
    /// branches, a removed and a re-added file, and haves of every kind: none, a tip's
    /// ancestor, one on the other branch of the merge, an unknown id.
    #[test]
    fn walks_list_what_rev_list_lists() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        git(r, &["init", "-q", "-b", "main"]);
        let c1 = commit_file(r, "a/b/one.txt", "1");
        let c2 = commit_file(r, "a/two.txt", "2");
        git(r, &["checkout", "-qb", "side"]);
        let s1 = commit_file(r, "a/b/side.txt", "s");
        git(r, &["checkout", "-q", "main"]);
        let c3 = commit_file(r, "top.txt", "3");
        git(r, &["merge", "-q", "--no-edit", "side"]);
        git(r, &["rm", "-q", "a/two.txt"]);
        git(r, &["commit", "-qm", "rm"]);
        let c4 = commit_file(r, "a/two.txt", "2");
        let tip = git(r, &["rev-parse", "HEAD"]);
        git(r, &["checkout", "-q", "--orphan", "other"]);
        git(r, &["rm", "-rqf", "."]);
        let o1 = commit_file(r, "x/y.log", "log");
        let other = commit_file(r, "x/z.log", "log2");
        let unknown = "1".repeat(40);
        let cases: Vec<Vec<&str>> = vec![
            vec![],
            vec![&c1],
            vec![&c2, &o1],
            vec![&s1],
            vec![&c3, &unknown],
            vec![&c4],
            vec![&tip, &other],
        ];
        for haves in cases {
            let haves: BTreeSet<String> = haves.iter().map(|s| s.to_string()).collect();
            let mut store = Store::open(&crate::git::Git::new(r)).unwrap();
            let w = walk(&mut store, [&tip, &other], &haves).expect("walks");
            let mut input = format!("{tip}\n{other}\n");
            for h in &haves {
                input.push_str(&format!("^{h}\n"));
            }
            let lacking: BTreeSet<String> = crate::git::Git::new(r)
                .run_with_input(
                    ["rev-list", "--objects", "--ignore-missing", "--stdin"],
                    input.as_bytes(),
                )
                .map(|o| {
                    String::from_utf8_lossy(&o)
                        .lines()
                        .map(|l| l[..40].to_string())
                        .collect()
                })
                .unwrap();
            let listed: BTreeSet<String> = w.ids.iter().cloned().collect();
            assert_eq!(listed.len(), w.ids.len(), "listed once each");
            assert!(
                lacking.is_subset(&listed),
                "haves {haves:?}: missing {:?}",
                lacking.difference(&listed).collect::<Vec<_>>()
            );
            let all: BTreeSet<String> = git(r, &["rev-list", "--objects", &tip, &other])
                .lines()
                .map(|l| l[..40].to_string())
                .collect();
            assert!(listed.is_subset(&all), "haves {haves:?}");
            // Each have met on the way down from a tip is an ancestor of it.
            for (side, t) in [&tip, &other].into_iter().enumerate() {
                for h in &w.reached[side] {
                    let base = git(r, &["merge-base", h, t]);
                    assert_eq!(&base, h, "{h} reached from {t}");
                }
            }
            if haves.contains(&c4) {
                assert!(w.reached[0].contains(&c4), "the direct parent is reached");
            }
        }
        // Too much history: left to rev-list.
        let mut store = Store::open(&crate::git::Git::new(r)).unwrap();
        for i in 0..MAX_COMMITS {
            commit_file(r, "x/z.log", &format!("v{i}"));
        }
        let many = git(r, &["rev-parse", "HEAD"]);
        assert!(walk(&mut store, [&many, &tip], &BTreeSet::from([o1.clone()])).is_none());
    }

    /// Refs moved in place end as `git update-ref` leaves them, reflog lines included; a held
    /// lock, a value that moved, a packed ref in the way change nothing and say so; a packed
    /// value counts as the old one; a ref already at its value is left without a reflog line.
    #[test]
    fn refs_moved_in_place_match_git_update_ref() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        git(r, &["init", "-q", "-b", "main"]);
        let c1 = commit_file(r, "f", "1");
        let c2 = commit_file(r, "f", "2");
        let g = r.join(".git");
        let notes = intents_dir(&g);
        let how = InPlace {
            create_logs: true,
            ident: Some("T Tester <t@ferry.invalid>".into()),
        };
        let mv = |name: &str, new: &str, expect: Option<Option<&str>>| RefMove {
            name: name.into(),
            new: new.into(),
            expect: expect.map(|e| e.map(str::to_string)),
        };
        // New refs, and main (which HEAD names) moved back from c2 to c1.
        let moves = [
            mv("refs/heads/synced/main", &c2, Some(None)),
            mv("refs/heads/main", &c1, Some(Some(&c2))),
        ];
        assert!(
            update_refs(
                &g,
                &moves,
                &how,
                Some("refs/heads/main"),
                "push",
                Notes::In(&notes)
            )
            .unwrap()
        );
        // The same through git, on twin refs.
        git(
            r,
            &[
                "update-ref",
                "-m",
                "push",
                "refs/heads/twin/main",
                &c2,
                &"0".repeat(40),
            ],
        );
        assert_eq!(
            git(r, &["rev-parse", "synced/main", "main"]),
            format!("{c2}\n{c1}")
        );
        let mask = |line: &str| {
            // Drop the timestamp and zone: "<old> <new> <ident> <ts> <tz>\t<msg>".
            let (head, msg) = line.split_once('\t').unwrap();
            let fields: Vec<&str> = head.rsplitn(3, ' ').collect();
            format!("{}\t{msg}", fields[2])
        };
        let log = |p: &str| std::fs::read_to_string(g.join("logs").join(p)).unwrap();
        assert_eq!(
            mask(log("refs/heads/synced/main").trim_end()),
            mask(log("refs/heads/twin/main").trim_end())
        );
        let main_log = log("refs/heads/main");
        let last = main_log.lines().last().unwrap();
        assert_eq!(
            mask(last),
            format!("{c2} {c1} T Tester <t@ferry.invalid>\tpush")
        );
        assert!(
            log("HEAD")
                .lines()
                .last()
                .unwrap()
                .starts_with(&format!("{c2} {c1} "))
        );
        let stamp = last
            .split('\t')
            .next()
            .unwrap()
            .rsplitn(3, ' ')
            .collect::<Vec<_>>();
        assert_eq!(stamp[0].len(), 5, "zone like +0100: {last}");
        assert!(stamp[1].parse::<u64>().unwrap() > 1_600_000_000);
        // git reads it all back.
        git(r, &["reflog", "show", "refs/heads/synced/main"]);
        git(r, &["fsck", "--strict", "--no-dangling"]);

        // A held lock: nothing changes.
        std::fs::write(g.join("refs/heads/main.lock"), "").unwrap();
        let back = [
            mv("refs/heads/synced/main", &c1, Some(Some(&c2))),
            mv("refs/heads/main", &c2, Some(Some(&c1))),
        ];
        assert!(!update_refs(&g, &back, &how, None, "push", Notes::In(&notes)).unwrap());
        std::fs::remove_file(g.join("refs/heads/main.lock")).unwrap();
        assert_eq!(
            git(r, &["rev-parse", "synced/main", "main"]),
            format!("{c2}\n{c1}")
        );
        assert!(!g.join("refs/heads/synced/main.lock").exists());
        // A value that moved meanwhile: nothing changes.
        let stale = [mv("refs/heads/synced/main", &c1, Some(Some(&c1)))];
        assert!(!update_refs(&g, &stale, &how, None, "push", Notes::In(&notes)).unwrap());
        assert_eq!(git(r, &["rev-parse", "synced/main"]), c2);
        // Packed refs: the packed value is the old one.
        git(r, &["pack-refs", "--all", "--prune"]);
        assert!(!g.join("refs/heads/synced/main").exists());
        let from_packed = [mv("refs/heads/synced/main", &c1, Some(Some(&c2)))];
        assert!(update_refs(&g, &from_packed, &how, None, "push", Notes::In(&notes)).unwrap());
        assert_eq!(git(r, &["rev-parse", "synced/main"]), c1);
        // A packed ref where a directory would go: left to git.
        git(r, &["update-ref", "refs/heads/pk", &c1]);
        git(r, &["pack-refs", "--all", "--prune"]);
        let below = [mv("refs/heads/pk/x", &c1, Some(None))];
        assert!(!update_refs(&g, &below, &how, None, "push", Notes::In(&notes)).unwrap());
        assert!(!g.join("refs/heads/pk").exists());
        // Already there: no new reflog line.
        let lines = log("refs/heads/synced/main").lines().count();
        let same = [mv("refs/heads/synced/main", &c1, None)];
        assert!(update_refs(&g, &same, &how, None, "push", Notes::In(&notes)).unwrap());
        assert_eq!(log("refs/heads/synced/main").lines().count(), lines);
        // A reflog git would need an identity for: left to git.
        let anonymous = InPlace {
            create_logs: true,
            ident: None,
        };
        let new = [mv("refs/heads/n", &c1, Some(None))];
        assert!(!update_refs(&g, &new, &anonymous, None, "push", Notes::In(&notes)).unwrap());
        let quiet = InPlace {
            create_logs: false,
            ident: None,
        };
        assert!(update_refs(&g, &new, &quiet, None, "push", Notes::In(&notes)).unwrap());
        assert!(!g.join("logs/refs/heads/n").exists());
        git(r, &["fsck", "--strict", "--no-dangling"]);
    }

    /// A lock left by a ferry process killed in the middle of moving refs is removed by the
    /// next one; a lock another process holds (another value, a live process) is not.
    #[test]
    fn locks_left_by_a_killed_process_are_cleared() {
        let (d, c1, notes) = repo_with_notes();
        let r = d.path();
        let g = r.join(".git");
        // A process that is gone.
        let dead = a_dead_pid();
        let lock = g.join("refs/heads/main.lock");
        let empty = g.join("refs/heads/empty.lock");
        let other = g.join("refs/heads/other.lock");
        std::fs::write(
            notes.join(format!("{dead}-0")),
            format!(
                "{}\t{c1}\n{}\t{c1}\n{}\t{c1}\n",
                lock.display(),
                empty.display(),
                other.display(),
            ),
        )
        .unwrap();
        std::fs::write(&lock, format!("{c1}\n")).unwrap();
        std::fs::write(&empty, "").unwrap();
        std::fs::write(&other, "someone else's\n").unwrap();
        // And one of a live process (this one).
        let live_lock = g.join("refs/heads/live.lock");
        std::fs::write(&live_lock, format!("{c1}\n")).unwrap();
        std::fs::write(
            notes.join(format!("{}-9", std::process::id())),
            format!("{}\t{c1}\n", live_lock.display()),
        )
        .unwrap();
        clear_stale_locks(&g);
        assert!(!lock.exists() && !empty.exists());
        assert!(other.exists(), "another value: not ours");
        assert!(live_lock.exists(), "a live process's lock");
        assert!(!notes.join(format!("{dead}-0")).exists());
        // git can move main again.
        git(r, &["update-ref", "refs/heads/main", &c1]);
    }

    /// A repository with one commit (its id) and its directory of lock notes.
    fn repo_with_notes() -> (tempfile::TempDir, String, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        git(d.path(), &["init", "-q", "-b", "main"]);
        let c1 = commit_file(d.path(), "f", "1");
        let notes = intents_dir(&d.path().join(".git"));
        std::fs::create_dir_all(&notes).unwrap();
        (d, c1, notes)
    }

    /// A process that is gone (its id, for a note).
    fn a_dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        dead
    }

    /// A process killed after noting a lock but before taking it: another process that takes
    /// that lock since (with the same value) and holds it for a moment keeps it; a lock that
    /// has stood long enough is removed without waiting.
    #[test]
    fn a_noted_lock_another_process_holds_is_left_to_it() {
        let (d, c1, notes) = repo_with_notes();
        let r = d.path();
        let g = r.join(".git");
        let lock = g.join("refs/heads/x.lock");
        std::fs::write(
            notes.join(format!("{}-0", a_dead_pid())),
            format!("{}\t{c1}\n", lock.display()),
        )
        .unwrap();
        // The other process: takes the lock, writes the same value, commits it a moment later.
        std::fs::write(&lock, format!("{c1}\n")).unwrap();
        let holder = {
            let (lock, g) = (lock.clone(), g.clone());
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(300));
                std::fs::rename(&lock, g.join("refs/heads/x"))
            })
        };
        clear_stale_locks(&g);
        holder
            .join()
            .unwrap()
            .expect("the holder's lock was taken from it");
        assert_eq!(git(r, &["rev-parse", "refs/heads/x"]), c1);
        assert!(std::fs::read_dir(&notes).unwrap().next().is_none());

        // A lock (and note) written long ago: removed at once.
        let old = std::time::SystemTime::now() - STALE_AFTER * 4;
        let note = notes.join(format!("{}-1", a_dead_pid()));
        std::fs::write(&note, format!("{}\t{c1}\n", lock.display())).unwrap();
        std::fs::write(&lock, format!("{c1}\n")).unwrap();
        for f in [&note, &lock] {
            let f = std::fs::File::options().write(true).open(f).unwrap();
            f.set_modified(old).unwrap();
        }
        let t = std::time::Instant::now();
        clear_stale_locks(&g);
        assert!(!lock.exists());
        assert!(
            t.elapsed() < STALE_AFTER,
            "waited for a lock that had stood long enough"
        );
    }

    /// What git run in another repository would read: the system and global entries of our
    /// config list, without our own file's; includes or config from the environment: unsure.
    #[test]
    fn the_outer_config_is_the_list_without_our_own_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("config"),
            "[core]\n\tbare = false\n[user]\n\tname = Local\n",
        )
        .unwrap();
        let e = |k: &str, v: &str| (k.to_string(), v.to_string());
        let list = vec![
            e("user.name", "Global"),
            e("core.logallrefupdates", "false"),
            e("core.bare", "false"),
            e("user.name", "Local"),
        ];
        let split = outer_config(d.path(), &list).unwrap();
        assert_eq!(
            split.outer,
            vec![
                e("user.name", "Global"),
                e("core.logallrefupdates", "false")
            ]
        );
        assert_eq!(
            split.ours,
            vec![e("core.bare", "false"), e("user.name", "Local")]
        );
        // The tail does not match our file: unsure.
        let other = vec![
            e("user.name", "Global"),
            e("core.bare", "false"),
            e("x.y", "z"),
        ];
        assert!(outer_config(d.path(), &other).is_none());
        // A bare remote without its own setting follows the global one; a clone its own.
        let outer = [
            e("core.logallrefupdates", "false"),
            e("user.name", "G"),
            e("user.email", "g@x"),
        ];
        let bare = in_place(&[], &outer, true).unwrap();
        assert!(!bare.create_logs);
        let clone = in_place(&[e("core.logallrefupdates", "true")], &outer, false).unwrap();
        assert!(clone.create_logs);
        assert!(in_place(&[], &[], false).unwrap().create_logs);
        assert!(in_place(&[e("core.logallrefupdates", "sometimes")], &[], false).is_none());
        if std::env::var_os("GIT_COMMITTER_NAME").is_none()
            && std::env::var_os("GIT_COMMITTER_EMAIL").is_none()
        {
            assert_eq!(clone.ident.as_deref(), Some("G <g@x>"));
            let odd = in_place(&[e("user.name", "Bob.")], &outer, false).unwrap();
            assert_eq!(odd.ident, None, "git would trim the name: left to git");
        }
    }

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
            let id = crate::git::object_id("blob", &data);
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
        assert!(c.contains(&("remote.origin.url".into(), "/x/y".into())));
        let c = simple_config(b"[Branch \"Main.x\"]\n\tRemote = o\n").unwrap();
        assert_eq!(c, vec![("branch.Main.x.remote".into(), "o".into())]);
        assert!(simple_config(b"[branch.main]\n\tremote = o\n").is_none());
        assert!(simple_config(b"[branch \"a\\\"b\"]\n\tremote = o\n").is_none());
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
