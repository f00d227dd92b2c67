//! A thin inotify binding with ferry's own mask (no `IN_OPEN`: on large trees a watcher that
//! asks for open events overflows the kernel queue with its own directory walk).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub const IN_ATTRIB: u32 = libc::IN_ATTRIB;
pub const IN_CLOSE_WRITE: u32 = libc::IN_CLOSE_WRITE;
pub const IN_CREATE: u32 = libc::IN_CREATE;
pub const IN_DELETE: u32 = libc::IN_DELETE;
pub const IN_DELETE_SELF: u32 = libc::IN_DELETE_SELF;
pub const IN_MOVE_SELF: u32 = libc::IN_MOVE_SELF;
pub const IN_MOVED_FROM: u32 = libc::IN_MOVED_FROM;
pub const IN_MOVED_TO: u32 = libc::IN_MOVED_TO;
pub const IN_ISDIR: u32 = libc::IN_ISDIR;
pub const IN_IGNORED: u32 = libc::IN_IGNORED;
pub const IN_Q_OVERFLOW: u32 = libc::IN_Q_OVERFLOW;
pub const IN_ONLYDIR: u32 = libc::IN_ONLYDIR;
pub const IN_DONT_FOLLOW: u32 = libc::IN_DONT_FOLLOW;

/// What the work-tree watcher asks for on each directory.
pub const TREE_MASK: u32 = IN_CREATE
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_DELETE
    | IN_ATTRIB
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW;

/// One event as read from the kernel.
#[derive(Debug, Clone)]
pub struct Event {
    pub wd: i32,
    pub mask: u32,
    pub cookie: u32,
    /// File name within the watched directory (empty for events about the directory itself).
    pub name: Vec<u8>,
}

pub struct Inotify {
    fd: OwnedFd,
}

/// Why a watch could not be added.
#[derive(Debug)]
pub enum WatchError {
    /// `fs.inotify.max_user_watches` reached (ENOSPC).
    Limit,
    /// The path is gone or not a directory (it changed under us): nothing to watch.
    Gone,
    Other(std::io::Error),
}

impl Inotify {
    pub fn new() -> std::io::Result<Inotify> {
        // SAFETY: plain syscall; the returned fd is owned below.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor we own.
        Ok(Inotify {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn add_watch(&self, path: &Path, mask: u32) -> Result<i32, WatchError> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|e| WatchError::Other(std::io::Error::other(e)))?;
        // SAFETY: valid fd and NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), mask) };
        if wd >= 0 {
            return Ok(wd);
        }
        let e = std::io::Error::last_os_error();
        Err(match e.raw_os_error() {
            Some(libc::ENOSPC) => WatchError::Limit,
            Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP) => WatchError::Gone,
            _ => WatchError::Other(e),
        })
    }

    pub fn rm_watch(&self, wd: i32) {
        // SAFETY: valid fd; an unknown wd just fails with EINVAL.
        unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
    }

    /// Blocks until events arrive, then returns all that are queued (one read).
    pub fn read(&self, buf: &mut [u8]) -> std::io::Result<Vec<Event>> {
        let n = loop {
            // SAFETY: buf is valid for buf.len() bytes.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len() as libc::size_t,
                )
            };
            if n >= 0 {
                break n as usize;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        Ok(parse(&buf[..n]))
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

/// Parses a buffer of `struct inotify_event` records.
fn parse(mut b: &[u8]) -> Vec<Event> {
    let mut out = Vec::new();
    const HDR: usize = 16;
    while b.len() >= HDR {
        let wd = i32::from_ne_bytes(b[0..4].try_into().unwrap());
        let mask = u32::from_ne_bytes(b[4..8].try_into().unwrap());
        let cookie = u32::from_ne_bytes(b[8..12].try_into().unwrap());
        let len = u32::from_ne_bytes(b[12..16].try_into().unwrap()) as usize;
        let end = (HDR + len).min(b.len());
        let raw = &b[HDR..end];
        let name = &raw[..raw.iter().position(|&c| c == 0).unwrap_or(raw.len())];
        out.push(Event {
            wd,
            mask,
            cookie,
            name: name.to_vec(),
        });
        b = &b[end..];
    }
    out
}

/// Waits until `fd` is readable or `timeout` passes (None: forever). Returns whether readable.
pub fn poll_readable(fds: &[i32], timeout: Option<std::time::Duration>) -> Vec<bool> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    loop {
        // SAFETY: p is a valid array of pollfd.
        let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
        if r >= 0 {
            break;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break;
        }
    }
    p.iter().map(|x| x.revents & libc::POLLIN != 0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_create_close_and_move() {
        let d = tempfile::tempdir().unwrap();
        let ino = Inotify::new().unwrap();
        let wd = ino.add_watch(d.path(), TREE_MASK).unwrap();
        std::fs::write(d.path().join("a"), b"x").unwrap();
        std::fs::rename(d.path().join("a"), d.path().join("b")).unwrap();
        let mut buf = vec![0u8; 65536];
        let mut got = Vec::new();
        while got.len() < 4 {
            got.extend(ino.read(&mut buf).unwrap());
        }
        assert!(got.iter().all(|e| e.wd == wd));
        let kinds: Vec<(u32, &[u8])> = got.iter().map(|e| (e.mask, &e.name[..])).collect();
        assert_eq!(kinds[0], (IN_CREATE, &b"a"[..]));
        assert_eq!(kinds[1], (IN_CLOSE_WRITE, &b"a"[..]));
        assert_eq!(kinds[2], (IN_MOVED_FROM, &b"a"[..]));
        assert_eq!(kinds[3], (IN_MOVED_TO, &b"b"[..]));
        assert_eq!(got[2].cookie, got[3].cookie);
    }
}
