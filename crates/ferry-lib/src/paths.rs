//! Turning user-given paths into repository-relative byte paths, refusing what must be refused.

use crate::error::{Error, Result};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Makes `p` absolute against `cwd` and removes `.`/`..` lexically, without following the last
/// component (a symlink given on the command line is the link itself, never its target).
pub fn absolutize(cwd: &Path, p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c.as_os_str()),
        }
    }
    out
}

/// Resolves `p` to a path relative to `top` (empty for the top itself).
///
/// The parent directory is canonicalized (so `..` through symlinked dirs is handled as the
/// kernel sees it); the last component is kept as is.
pub fn repo_relative(top: &Path, git_dir: &Path, cwd: &Path, p: &Path) -> Result<Vec<u8>> {
    let abs = absolutize(cwd, p);
    if std::fs::symlink_metadata(&abs).is_err() {
        return Err(Error::NoSuchPath(p.to_path_buf()));
    }
    let canon_top = top.canonicalize().unwrap_or_else(|_| top.to_path_buf());
    let canon_git = git_dir
        .canonicalize()
        .unwrap_or_else(|_| git_dir.to_path_buf());
    let full = match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => parent
            .canonicalize()
            .map(|c| c.join(name))
            .unwrap_or(abs.clone()),
        _ => abs.canonicalize().unwrap_or(abs.clone()),
    };
    if full.starts_with(&canon_git) || full.components().any(|c| c.as_os_str() == ".git") {
        return Err(Error::InGitDir(p.to_path_buf()));
    }
    let rel = full
        .strip_prefix(&canon_top)
        .map_err(|_| Error::OutsideRepo {
            path: p.to_path_buf(),
            repo: top.to_path_buf(),
        })?;
    Ok(rel.as_os_str().as_bytes().to_vec())
}

/// Whether any component of a repo-relative path starts with a dot.
pub fn is_dotfile(rel: &[u8]) -> bool {
    rel.split(|&b| b == b'/').any(|c| c.first() == Some(&b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotfiles() {
        assert!(is_dotfile(b".hidden"));
        assert!(is_dotfile(b"dir/.config/x"));
        assert!(!is_dotfile(b"dir/file.txt"));
    }

    #[test]
    fn lexical_absolutize() {
        assert_eq!(
            absolutize(Path::new("/a/b"), Path::new("../c/./d")),
            PathBuf::from("/a/c/d")
        );
        assert_eq!(
            absolutize(Path::new("/a"), Path::new("/x/y")),
            PathBuf::from("/x/y")
        );
    }
}
