//! fcntl open-file-description (OFD) locks.
//!
//! git-annex locks with POSIX `fcntl` locks. On Linux, `flock` locks (std's `File::lock`, fs4,
//! fd-lock) do not exclude those, so ferry uses `F_OFD_SETLK[W]`, which conflicts with classic
//! POSIX record locks and, unlike them, belongs to the open file (safe across threads and not
//! dropped when some other descriptor of the same file is closed).

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    Shared,
    Exclusive,
}

/// A held lock; released when dropped (the file is closed).
#[derive(Debug)]
pub struct Lock {
    _file: File,
    pub path: PathBuf,
}

impl Lock {
    /// The locked file (e.g. to write a pid into it).
    pub fn file(&self) -> &File {
        &self._file
    }
}

fn fcntl_lock(file: &File, kind: LockKind, wait: bool) -> std::io::Result<bool> {
    // SAFETY: a zeroed flock is a valid value; every field we rely on is set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = match kind {
        LockKind::Shared => libc::F_RDLCK,
        LockKind::Exclusive => libc::F_WRLCK,
    } as _;
    fl.l_whence = libc::SEEK_SET as _;
    fl.l_start = 0;
    fl.l_len = 0;
    fl.l_pid = 0; // required to be 0 for OFD locks
    let cmd = if wait {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    loop {
        // SAFETY: fd is valid for the life of `file`, and `fl` is a valid flock.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &fl) };
        if r == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EACCES) if !wait => return Ok(false),
            _ => return Err(e),
        }
    }
}

fn open_lock_file(path: &Path) -> Result<File> {
    let mut o = OpenOptions::new();
    // Write access for creating the file (and for F_WRLCK); F_RDLCK needs only read.
    o.read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644);
    o.open(path)
        .map_err(|e| Error::io(format!("opening lock file {}", path.display()), e))
}

/// Takes the lock, waiting for other holders (ferry's or git-annex's) to release it.
pub fn lock_wait(path: &Path, kind: LockKind) -> Result<Lock> {
    let file = open_lock_file(path)?;
    fcntl_lock(&file, kind, true)
        .map_err(|e| Error::io(format!("locking {}", path.display()), e))?;
    Ok(Lock {
        _file: file,
        path: path.to_path_buf(),
    })
}

/// Takes the lock if nobody holds a conflicting one; `None` otherwise.
pub fn try_lock(path: &Path, kind: LockKind) -> Result<Option<Lock>> {
    let file = open_lock_file(path)?;
    let got = fcntl_lock(&file, kind, false)
        .map_err(|e| Error::io(format!("locking {}", path.display()), e))?;
    Ok(got.then(|| Lock {
        _file: file,
        path: path.to_path_buf(),
    }))
}

/// Whether anyone (ferry, or git-annex with a POSIX lock) holds a lock on `path`, asked
/// without taking one (`F_OFD_GETLK`): a probe that took the lock, even shared and for a
/// moment, would make a process that wants it exclusively at that moment fail.
pub fn is_locked(path: &Path) -> Result<bool> {
    let file = File::open(path)
        .map_err(|e| Error::io(format!("opening lock file {}", path.display()), e))?;
    // SAFETY: a zeroed flock is a valid value; every field we rely on is set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    fl.l_start = 0;
    fl.l_len = 0;
    fl.l_pid = 0; // required to be 0 for OFD locks
    // SAFETY: fd is valid for the life of `file`, and `fl` is a valid flock.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if r != 0 {
        return Err(Error::io(
            format!("asking about the lock on {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(i32::from(fl.l_type) != libc::F_UNLCK)
}

/// Opens a lock file for repeated [`try_lock_file`] attempts (a waiter that keeps it open is
/// visible in `/proc/<pid>/fd`, and does not reopen it every time).
pub fn open_for_lock(path: &Path) -> Result<File> {
    open_lock_file(path)
}

/// Takes the lock on an already opened lock file if nobody holds a conflicting one; gives the
/// file back otherwise.
pub fn try_lock_file(
    file: File,
    path: &Path,
    kind: LockKind,
) -> Result<std::result::Result<Lock, File>> {
    let got = fcntl_lock(&file, kind, false)
        .map_err(|e| Error::io(format!("locking {}", path.display()), e))?;
    Ok(if got {
        Ok(Lock {
            _file: file,
            path: path.to_path_buf(),
        })
    } else {
        Err(file)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_excludes_within_one_process() {
        // OFD locks conflict between open file descriptions even in one process, unlike
        // classic POSIX locks; this is what makes them usable from threads.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.lck");
        let a = try_lock(&p, LockKind::Exclusive).unwrap();
        assert!(a.is_some());
        assert!(try_lock(&p, LockKind::Exclusive).unwrap().is_none());
        assert!(try_lock(&p, LockKind::Shared).unwrap().is_none());
        drop(a);
        let s1 = try_lock(&p, LockKind::Shared).unwrap();
        let s2 = try_lock(&p, LockKind::Shared).unwrap();
        assert!(s1.is_some() && s2.is_some());
        assert!(try_lock(&p, LockKind::Exclusive).unwrap().is_none());
    }

    #[test]
    fn asking_whether_a_file_is_locked_takes_no_lock() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("daemon.pid");
        std::fs::write(&p, "1\n").unwrap();
        assert!(!is_locked(&p).unwrap());
        // Asking holds nothing: an exclusive lock is still free to take, and while it is held
        // the question sees it (shared holders too).
        let held = try_lock(&p, LockKind::Exclusive).unwrap();
        assert!(held.is_some());
        assert!(is_locked(&p).unwrap());
        drop(held);
        let shared = try_lock(&p, LockKind::Shared).unwrap();
        assert!(is_locked(&p).unwrap());
        drop(shared);
        assert!(!is_locked(&p).unwrap());
        // git-annex's assistant holds a classic POSIX lock: seen as well.
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        // SAFETY: a zeroed flock is valid; fields set below; fd valid while `f` lives.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as _;
        fl.l_whence = libc::SEEK_SET as _;
        assert_eq!(unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &fl) }, 0);
        assert!(is_locked(&p).unwrap());
    }
}
