//! `fsck`: check that present content matches its key, and that the location log tells the truth
//! about this repository. Repairs what it can: corrupt objects go to `.git/annex/bad/` and the
//! log is corrected both ways. Anything found, repaired or not, makes the run fail.

use crate::annexed::{AnnexedFile, annexed_files};
use crate::error::Result;
use crate::hash::verify_file;
use crate::key::Key;
use crate::logs::Presence;
use crate::ops::add::set_presence;
use crate::ops::whereis::location_logs;
use crate::repo::Repo;
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Clone, Debug, Default)]
pub struct FsckOptions {
    /// Check presence only; do not re-hash content.
    pub fast: bool,
    pub jobs: usize,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct FsckReport {
    #[serde(skip)]
    pub path: Vec<u8>,
    pub key: String,
    pub present: bool,
    /// Problems found (each also says what was done about it).
    pub problems: Vec<String>,
    /// Notes that are not problems (e.g. a backend ferry cannot re-hash).
    pub notes: Vec<String>,
}

impl FsckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Clone, Debug)]
enum ContentCheck {
    Absent,
    Good,
    SizeOnly,
    Bad(String),
}

pub fn fsck(
    repo: &Repo,
    pathspecs: &[Vec<u8>],
    opts: &FsckOptions,
    on_report: &(dyn Fn(&FsckReport) + Sync),
) -> Result<usize> {
    let files = annexed_files(&repo.git, pathspecs)?;
    let store = repo.store();
    let mut keys: Vec<&Key> = files.iter().map(|f| &f.key).collect();
    keys.sort();
    keys.dedup();

    // Check each distinct key once, in parallel.
    let next = AtomicUsize::new(0);
    let results: Vec<(Key, ContentCheck)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..opts.jobs.max(1).min(keys.len().max(1)))
            .map(|_| {
                s.spawn(|| {
                    let mut local = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(key) = keys.get(i) else { break };
                        local.push(((*key).clone(), check_content(&store, key, opts.fast)));
                    }
                    local
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let checks: HashMap<Key, ContentCheck> = results.into_iter().collect();

    let logs = location_logs(repo, &keys)?;
    let logs: HashMap<&Key, _> = keys.iter().copied().zip(logs).collect();
    // Each file's own numcopies (its attribute, else the logs), as git-annex's fsck checks.
    let numcopies = crate::copies::FileCopies::load(repo, &files, true)?;
    let mut copies_of: HashMap<&Key, usize> = HashMap::new();
    let here = repo.uuid().to_string();

    let mut now_present = Vec::new();
    let mut now_absent = Vec::new();
    let mut key_problems: HashMap<Key, Vec<String>> = HashMap::new();
    for key in &keys {
        let log = &logs[key];
        let logged_here = log.status_of(&here) == Some(Presence::Present);
        let mut problems = Vec::new();
        let present = match &checks[*key] {
            ContentCheck::Bad(why) => {
                let moved = store.quarantine(key)?;
                problems.push(match moved {
                    Some(p) => format!("content is corrupt ({why}); moved to {}", p.display()),
                    None => format!("content is corrupt ({why}); removed from the store"),
                });
                false
            }
            ContentCheck::Absent => false,
            ContentCheck::Good | ContentCheck::SizeOnly => true,
        };
        if present && !logged_here {
            problems.push("content is here but the location log did not say so; log fixed".into());
            now_present.push((*key).clone());
        }
        if !present && logged_here {
            if !matches!(checks[*key], ContentCheck::Bad(_)) {
                problems.push(
                    "the location log said the content is here, but it is missing; log fixed"
                        .into(),
                );
            }
            now_absent.push((*key).clone());
        }
        let mut copies = log.present().len();
        if present && !logged_here {
            copies += 1;
        }
        if !present && logged_here {
            copies -= 1;
        }
        copies_of.insert(key, copies);
        key_problems.insert((*key).clone(), problems);
    }
    set_presence(
        repo,
        &here,
        &now_present,
        Presence::Present,
        &mut std::iter::empty(),
    )?;
    set_presence(
        repo,
        &here,
        &now_absent,
        Presence::Absent,
        &mut std::iter::empty(),
    )?;

    let inodes = crate::inodecache::InodeCache::load(&repo.annex_dir());
    let top = repo.top.clone();
    let mut failed = 0;
    for AnnexedFile { path, key, locked } in &files {
        let check = &checks[key];
        let mut notes = Vec::new();
        if let (false, Some(top)) = (*locked, &top)
            && let Some(n) = unlocked_note(
                &top.join(std::ffi::OsStr::from_bytes(path)),
                key,
                &inodes,
                opts.fast,
            )
        {
            notes.push(n);
        }
        if matches!(check, ContentCheck::SizeOnly) && !opts.fast {
            notes.push(format!(
                "backend {} cannot be re-hashed by ferry; size checked only",
                key.variety
            ));
        }
        let mut problems = key_problems[key].clone();
        let copies = copies_of[key];
        let need = numcopies.of_file(path).numcopies;
        if (copies as u32) < need.n {
            problems.push(format!(
                "only {copies} known cop{} of this content; numcopies is {}{}",
                if copies == 1 { "y" } else { "ies" },
                need.n,
                match need.from {
                    crate::copies::Origin::Gitattributes { .. } => " (from .gitattributes)",
                    _ => "",
                }
            ));
        }
        let report = FsckReport {
            path: path.clone(),
            key: key.to_string(),
            present: matches!(check, ContentCheck::Good | ContentCheck::SizeOnly),
            problems,
            notes,
        };
        if !report.ok() {
            failed += 1;
        }
        on_report(&report);
    }
    Ok(failed)
}

/// For an unlocked file: a note when the work-tree file no longer holds its key's content
/// (an edit not yet added: not a problem of the store).
fn unlocked_note(
    work: &std::path::Path,
    key: &Key,
    inodes: &crate::inodecache::InodeCache,
    fast: bool,
) -> Option<String> {
    let stamp = crate::inodecache::Stamp::of_path(work)?;
    if stamp.size < 32 * 1024
        && std::fs::read(work)
            .ok()
            .and_then(|c| crate::store::parse_pointer(&c))
            .as_ref()
            == Some(key)
    {
        return None; // pointer file: content not here
    }
    if inodes.lookup(&stamp) == Some(key) || fast && Some(stamp.size) == key.size {
        return None;
    }
    match verify_file(key, work) {
        Ok(Some(false)) => Some("modified in the work tree (not yet added; `git add` or `ferry add` records the new version)".into()),
        _ => None,
    }
}

fn check_content(store: &crate::store::Store, key: &Key, fast: bool) -> ContentCheck {
    let Some(obj) = store.find(key) else {
        return ContentCheck::Absent;
    };
    if fast {
        return ContentCheck::Good;
    }
    match verify_file(key, &obj) {
        Ok(Some(true)) => ContentCheck::Good,
        Ok(Some(false)) => {
            let thin = std::fs::metadata(&obj)
                .map(|m| std::os::unix::fs::MetadataExt::nlink(&m) > 1)
                .unwrap_or(false);
            ContentCheck::Bad(if thin {
                "its checksum does not match the key: it was edited in place through a thin (hard-linked) unlocked file".into()
            } else {
                "its checksum does not match the key".into()
            })
        }
        Ok(None) => ContentCheck::SizeOnly,
        Err(e) => ContentCheck::Bad(format!("cannot be read: {e}")),
    }
}
