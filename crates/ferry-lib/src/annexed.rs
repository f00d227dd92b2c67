//! Which files in the index are annexed, and under which key.
//!
//! Locked files are symlinks (mode 120000) whose target names a key; unlocked files are regular
//! blobs holding a pointer (`/annex/objects/<key>`). Both are read from git's index with a
//! constant number of git processes, however many files there are.

use crate::error::Result;
use crate::git::{Git, cat_many, sizes_many};
use crate::key::Key;
use crate::store::{parse_link_target, parse_pointer};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnexedFile {
    /// Path relative to the work-tree top, raw bytes.
    pub path: Vec<u8>,
    pub key: Key,
    /// true for a locked file (symlink), false for an unlocked pointer file.
    pub locked: bool,
}

struct IndexEntry {
    mode: String,
    sha: String,
    path: Vec<u8>,
}

fn ls_files(git: &Git, pathspecs: &[Vec<u8>]) -> Result<Vec<IndexEntry>> {
    let mut args: Vec<std::ffi::OsString> =
        vec!["ls-files".into(), "-z".into(), "-s".into(), "--".into()];
    for p in pathspecs {
        args.push(literal_pathspec(p));
    }
    let out = git.run(&args)?;
    let mut entries = Vec::new();
    for rec in out.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        // "<mode> <sha> <stage>\t<path>"
        let Some(tab) = rec.iter().position(|&b| b == b'\t') else {
            continue;
        };
        let meta = String::from_utf8_lossy(&rec[..tab]);
        let mut it = meta.split(' ');
        let (Some(mode), Some(sha), Some(stage)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if stage != "0" && stage != "2" {
            continue; // during a conflict, look at "ours" only
        }
        entries.push(IndexEntry {
            mode: mode.to_string(),
            sha: sha.to_string(),
            path: rec[tab + 1..].to_vec(),
        });
    }
    Ok(entries)
}

/// A pathspec that matches `p` literally (no globbing), relative to the top.
pub fn literal_pathspec(p: &[u8]) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let mut v = b":(top,literal)".to_vec();
    v.extend_from_slice(p); // empty: the whole tree
    std::ffi::OsString::from_vec(v)
}

/// Whether `pathspecs` (as [`annexed_files`] takes them) name the whole tree.
pub fn whole_tree(pathspecs: &[Vec<u8>]) -> bool {
    pathspecs.is_empty() || pathspecs.iter().any(|p| p.is_empty())
}

/// Annexed files staged in the index under `pathspecs` (repo-relative; empty = everything).
pub fn annexed_files(git: &Git, pathspecs: &[Vec<u8>]) -> Result<Vec<AnnexedFile>> {
    let entries = ls_files(git, pathspecs)?;
    // Symlinks are always worth reading; regular blobs only when small enough to be pointers.
    let regular: Vec<&str> = entries
        .iter()
        .filter(|e| e.mode.starts_with("100"))
        .map(|e| e.sha.as_str())
        .collect();
    let sizes = sizes_many(git, &regular)?;
    let mut small = std::collections::HashSet::new();
    for (sha, size) in regular.iter().zip(sizes) {
        if size.is_some_and(|s| s < 32 * 1024) {
            small.insert(*sha);
        }
    }
    let wanted: Vec<&IndexEntry> = entries
        .iter()
        .filter(|e| e.mode == "120000" || small.contains(e.sha.as_str()))
        .collect();
    let blobs = cat_many(
        git,
        &wanted
            .iter()
            .map(|e| e.sha.as_bytes().to_vec())
            .collect::<Vec<_>>(),
    )?;
    let mut out = Vec::new();
    for (e, blob) in wanted.into_iter().zip(blobs) {
        let Some((_, data)) = blob else { continue };
        let locked = e.mode == "120000";
        let key = if locked {
            parse_link_target(&data)
        } else {
            parse_pointer(&data)
        };
        if let Some(key) = key {
            out.push(AnnexedFile {
                path: e.path.clone(),
                key,
                locked,
            });
        }
    }
    Ok(out)
}
