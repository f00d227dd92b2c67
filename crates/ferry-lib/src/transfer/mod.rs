//! Moving content in and out of a store safely, the way git-annex does it on disk.
//!
//! - [`receive_into`]: the receiving side of every transfer. Content goes to
//!   `.git/annex/tmp/<keyFile>` (an existing partial file is resumed: its bytes are hashed, not
//!   fetched again), is hashed as a whole against the key (over the bytes written to the temp
//!   file; big content on a second thread while it arrives), fsynced (writeback starts while it
//!   arrives), and only then renamed into the store. Corrupt content never becomes an object.
//! - [`TransferGuard`]: git-annex's transfer info files
//!   (`.git/annex/transfer/{upload,download}/<uuid>/<keyFile>` plus `lck.<keyFile>` held with
//!   an exclusive fcntl lock while the transfer runs; failures under `failed/`). A transfer of
//!   the same key that is already running, by ferry or git-annex, is not started twice.
//! - [`lock_content`] / [`remove_object`]: the v10 content lock (`<keyFile>.lck` in the
//!   object's directory). Shared means "keep this content" (a drop elsewhere counts on it);
//!   exclusive is taken just before removing it.
//! - [`bwlimit`]: bandwidth limits (`annex.bwlimit`, `remote.NAME.annex-bwlimit`), applied as
//!   bytes move through [`Progress`].

pub mod bwlimit;

use crate::error::{Error, IoContext, Result};
use crate::hash::Hasher;
use crate::key::Key;
use crate::lock::{Lock, LockKind, try_lock};
use crate::logs::Timestamp;
use crate::remote::{Progress, TransferError, key_component, uuid_component};
use crate::store::{Ingested, Store};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// How long to wait between attempts at a lock someone else holds.
const LOCK_POLL: Duration = Duration::from_millis(50);

/// What [`receive_into`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Received {
    /// Bytes of a partial file from an earlier attempt that were kept (not transferred again).
    pub resumed_from: u64,
    /// Bytes that were transferred this time.
    pub transferred: u64,
    pub ingested: Ingested,
}

/// Where received bytes are hashed: in the writing thread, or (for big content) on a second
/// thread, so hashing overlaps with receiving and writing. That thread is handed the buffers
/// that were just written to the temp file (no copy), or, for bytes written from a borrowed
/// slice, the range of the temp file they went to, which it reads back from the page cache.
/// Either way it hashes exactly what is in the file.
enum HashPipe {
    None,
    Inline(Hasher),
    Thread {
        tx: std::sync::mpsc::Sender<Piece>,
        /// Buffers the thread is done with, for reuse.
        back: std::sync::mpsc::Receiver<Vec<u8>>,
        /// How many more buffers may be handed over before waiting for one to come back.
        spare: usize,
        handle: std::thread::JoinHandle<std::io::Result<Hasher>>,
    },
}

/// Work for the hashing thread, in content order.
enum Piece {
    /// Bytes that were written to the temp file (returned through `back` once hashed).
    Bytes(Vec<u8>),
    /// A range of the temp file (offset, length) that was written, to be read back and hashed.
    Range(u64, u64),
}

/// Content at least this big is hashed on a second thread.
const THREAD_HASH_MIN: u64 = 8 << 20;
/// Written ranges are handed to the hashing thread in pieces of at least this size.
const HASH_STEP: u64 = 1 << 20;
/// The hashing thread reads ranges back with a buffer this big (small enough to stay in the
/// CPU cache between the copy out of the page cache and the hashing).
const READ_BACK_BUF: usize = 256 << 10;
/// Buffers of [`CHUNK`] bytes that may wait for the hashing thread: the copying thread runs at
/// most this far ahead of the hashing.
const POOL: usize = 16;
/// Size of the buffers of [`copy_from_file`].
const CHUNK: usize = 1 << 20;
/// Writeback of received bytes is started every this many bytes, so the disk writes while
/// content is still arriving and the fsync at the end has little left to do.
const WRITEBACK_STEP: u64 = 8 << 20;
/// Bytes per `copy_file_range` call (content that is not hashed): the granularity of progress
/// and cancellation.
const COPY_CHUNK: usize = 8 << 20;

impl HashPipe {
    /// A pipe for content of `total` bytes received into `file`. With a thread, the first
    /// `prefix` bytes of the file (kept from an earlier attempt) are hashed there; otherwise
    /// the caller hashes them.
    fn new(hasher: Option<Hasher>, total: u64, file: &File, prefix: u64) -> std::io::Result<Self> {
        let mut h = match hasher {
            None => return Ok(HashPipe::None),
            Some(h) if total < THREAD_HASH_MIN => return Ok(HashPipe::Inline(h)),
            Some(h) => h,
        };
        // The same open file (a dup): reads through it see what was written.
        let f = file.try_clone()?;
        let (tx, rx) = std::sync::mpsc::channel::<Piece>();
        let (back_tx, back) = std::sync::mpsc::channel::<Vec<u8>>();
        let handle = std::thread::spawn(move || {
            use std::os::unix::fs::FileExt;
            let mut buf = Vec::new();
            for piece in rx {
                match piece {
                    Piece::Bytes(b) => {
                        h.update(&b);
                        let _ = back_tx.send(b);
                    }
                    Piece::Range(mut at, len) => {
                        buf.resize(READ_BACK_BUF, 0);
                        let end = at + len;
                        while at < end {
                            let want = (end - at).min(buf.len() as u64) as usize;
                            f.read_exact_at(&mut buf[..want], at)?;
                            h.update(&buf[..want]);
                            at += want as u64;
                        }
                    }
                }
            }
            Ok(h)
        });
        if prefix > 0 {
            let _ = tx.send(Piece::Range(0, prefix));
        }
        Ok(HashPipe::Thread {
            tx,
            back,
            spare: POOL,
            handle,
        })
    }

    /// Bytes that were just written, for a pipe that hashes inline.
    fn update(&mut self, data: &[u8]) {
        if let HashPipe::Inline(h) = self {
            h.update(data)
        }
    }

    /// The hashing thread may hash `len` bytes of the file from `at` on. A send can only fail
    /// when the thread stopped on an error, which `finish` reports.
    fn written(&mut self, at: u64, len: u64) {
        if let HashPipe::Thread { tx, .. } = self {
            let _ = tx.send(Piece::Range(at, len));
        }
    }

    /// Hands `buf` (bytes just written) to the hashing thread; returns a buffer to fill next,
    /// waiting for one when [`POOL`] buffers are already with the thread.
    fn hand_buffer(&mut self, buf: Vec<u8>) -> std::io::Result<Vec<u8>> {
        let HashPipe::Thread {
            tx, back, spare, ..
        } = self
        else {
            self.update(&buf);
            return Ok(buf);
        };
        let gone = || std::io::Error::other("the hashing thread stopped");
        tx.send(Piece::Bytes(buf)).map_err(|_| gone())?;
        if let Ok(b) = back.try_recv() {
            return Ok(b);
        }
        if *spare > 0 {
            *spare -= 1;
            return Ok(Vec::new());
        }
        back.recv().map_err(|_| gone())
    }

    /// The hex digest, or `None` for content that cannot be hashed.
    fn finish(self) -> Result<Option<String>> {
        Ok(match self {
            HashPipe::None => None,
            HashPipe::Inline(h) => Some(h.finish_hex()),
            HashPipe::Thread { tx, handle, .. } => {
                drop(tx);
                let h = handle
                    .join()
                    .map_err(|_| TransferError::Other("the hashing thread failed".into()))?
                    .map_err(|e| Error::io("reading back received content", e))?;
                Some(h.finish_hex())
            }
        })
    }
}

/// Where a [`Fill`] puts content: a [`Write`], plus two ways for a sink backed by a file to
/// take content with fewer copies.
pub trait Sink: Write {
    /// Writes all of `buf`; returns a buffer for the caller to fill next (empty, of any
    /// capacity). A sink that hashes on another thread hands `buf` itself to that thread.
    fn write_chunk(&mut self, buf: Vec<u8>) -> std::io::Result<Vec<u8>> {
        self.write_all(&buf)?;
        Ok(buf)
    }

    /// Copies `src` from byte `pos` on into the sink inside the kernel, when the sink does
    /// not need to see the bytes, until the end of `src` or until the kernel cannot (another
    /// file system, no `copy_file_range`). Returns the position in `src` reached; the caller
    /// writes the rest. The default copies nothing.
    fn copy_file_tail(&mut self, _src: &File, pos: u64, _progress: &mut Progress) -> Result<u64> {
        Ok(pos)
    }
}

/// Writes into the temp file from `start` on and feeds the hasher with exactly what was
/// written, and starts writeback of the written bytes as they accumulate.
struct HashingSink<'a> {
    file: &'a File,
    hasher: &'a mut HashPipe,
    start: u64,
    written: u64,
    /// Bytes (of `written`) handed to the hasher.
    handed: u64,
    /// Bytes (of `written`) whose writeback was started.
    flushed: u64,
}

impl HashingSink<'_> {
    /// Hands written ranges to the hashing thread (`all`: also the last one, smaller than
    /// [`HASH_STEP`]), and starts writeback every [`WRITEBACK_STEP`].
    fn hand_over(&mut self, all: bool) {
        let pending = self.written - self.handed;
        if pending > 0 && (all || pending >= HASH_STEP) {
            self.hasher.written(self.start + self.handed, pending);
            self.handed = self.written;
        }
        let dirty = self.written - self.flushed;
        if dirty >= WRITEBACK_STEP {
            start_writeback(self.file, self.start + self.flushed, dirty);
            self.flushed = self.written;
        }
    }
}

/// Starts (does not wait for) writeback of a range of `file`: only a head start for the fsync
/// that follows, which reports any error.
fn start_writeback(file: &File, at: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor; the call only schedules I/O.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            at as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

impl Write for HashingSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.file.write_at(buf, self.start + self.written)?;
        if !matches!(self.hasher, HashPipe::Thread { .. }) {
            self.hasher.update(&buf[..n]);
            self.handed += n as u64;
        }
        self.written += n as u64;
        self.hand_over(false);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink for HashingSink<'_> {
    fn write_chunk(&mut self, buf: Vec<u8>) -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(&buf, self.start + self.written)?;
        let n = buf.len() as u64;
        // Ranges from earlier plain writes go first, to keep the content's order.
        self.hand_over(true);
        let mut next = self.hasher.hand_buffer(buf)?;
        self.written += n;
        self.handed += n;
        self.hand_over(false);
        next.clear();
        Ok(next)
    }

    fn copy_file_tail(&mut self, src: &File, mut pos: u64, progress: &mut Progress) -> Result<u64> {
        use std::os::fd::AsRawFd;
        // Only content that is not hashed can skip this process.
        if !matches!(self.hasher, HashPipe::None) {
            return Ok(pos);
        }
        loop {
            progress.check_cancel()?;
            let mut off_in = pos as libc::loff_t;
            let mut off_out = (self.start + self.written) as libc::loff_t;
            // SAFETY: valid descriptors, and offsets that live through the call.
            let n = unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    &mut off_in,
                    self.file.as_raw_fd(),
                    &mut off_out,
                    progress.chunk(COPY_CHUNK),
                    0,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {
                        return Ok(pos);
                    }
                    _ => return Err(Error::io("copying received content", e)),
                }
            }
            // 0 is the end of `src`, or a file system that copies nothing this way: the
            // caller's read finds out which.
            if n == 0 {
                return Ok(pos);
            }
            let n = n as u64;
            pos += n;
            self.written += n;
            self.handed += n;
            self.hand_over(false);
            progress.advance(n)?;
        }
    }
}

/// Source of content for [`receive_into`]: called with the offset to start at and the sink.
pub type Fill<'f> = dyn FnMut(u64, &mut dyn Sink, &mut Progress) -> Result<()> + 'f;

/// Receives `key` into `store` (see the module docs). `fill` is called to write the content
/// from the given offset on; if a resumed partial file turns out not to match, the file is
/// discarded and `fill` is called once more from offset 0.
pub fn receive_into(
    store: &Store,
    key: &Key,
    progress: &mut Progress,
    fill: &mut Fill,
) -> Result<Received> {
    match receive_verified(store, key, progress, fill, true)? {
        Verified::AlreadyPresent => Ok(Received {
            resumed_from: 0,
            transferred: 0,
            ingested: Ingested::AlreadyPresent,
        }),
        // ingest_temp fsyncs the file before the rename.
        Verified::Pending(p) => {
            let ingested = store.ingest_temp(&p.tmp, key)?;
            Ok(Received {
                resumed_from: p.resumed_from,
                transferred: p.transferred,
                ingested,
            })
        }
    }
}

/// Content received into `.git/annex/tmp` and verified against its key, but not yet flushed
/// to disk nor in the store: [`ingest_pending`] finishes a batch of them with two `syncfs`
/// calls instead of two `fsync`s per file. The temp file stays locked (no second receiver)
/// until this is dropped.
pub struct Pending {
    pub key: Key,
    pub tmp: PathBuf,
    pub resumed_from: u64,
    pub transferred: u64,
    _lock: Lock,
}

pub enum Verified {
    AlreadyPresent,
    Pending(Pending),
}

/// Makes received content objects, durably (see [`Store::ingest_temps`]); one result per
/// item, in order.
pub fn ingest_pending(store: &Store, items: Vec<Pending>) -> Vec<Result<Received>> {
    let pairs: Vec<(PathBuf, Key)> = items
        .iter()
        .map(|p| (p.tmp.clone(), p.key.clone()))
        .collect();
    let results = store.ingest_temps(&pairs);
    items
        .into_iter()
        .zip(results)
        .map(|(p, r)| {
            r.map(|ingested| Received {
                resumed_from: p.resumed_from,
                transferred: p.transferred,
                ingested,
            })
        })
        .collect()
}

/// The receiving half of [`receive_into`]: fetches (or resumes) the content into the temp
/// file and checks it against the key. Nothing is flushed yet. When another receiver holds
/// the key's temp file, waits for it, or (without `wait`) fails at once with
/// [`TransferError::InProgress`].
pub fn receive_verified(
    store: &Store,
    key: &Key,
    progress: &mut Progress,
    fill: &mut Fill,
    wait: bool,
) -> Result<Verified> {
    let kc = key_component(key)?;
    let already = Verified::AlreadyPresent;
    if store.find(key).is_some() {
        return Ok(already);
    }
    let tmp = store.tmp_dir()?.join(&kc);
    // One receiver per key: the temp file itself is locked. A second receiver waits, then
    // finds the object in place.
    let lock = loop {
        if let Some(l) = try_lock(&tmp, LockKind::Exclusive)? {
            // The holder we waited for may have renamed the file into the store: the lock is
            // only good if the path still names the file we locked.
            let same = match (l.file().metadata(), fs::symlink_metadata(&tmp)) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if same {
                break l;
            }
        }
        if store.find(key).is_some() {
            return Ok(already);
        }
        if !wait {
            return Err(TransferError::InProgress(key.to_string()).into());
        }
        progress.check_cancel()?;
        std::thread::sleep(LOCK_POLL);
    };
    if store.find(key).is_some() {
        let _ = fs::remove_file(&tmp);
        return Ok(already);
    }
    let file = lock.file();
    let mut len = file.metadata().ctx("checking", &tmp)?.len();
    if key.size.is_some_and(|s| len > s) {
        file.set_len(0).ctx("truncating", &tmp)?;
        len = 0;
    }
    let mut attempt_offset = len;
    loop {
        let hasher = key.hash_backend().map(Hasher::new);
        let total = key.size.unwrap_or(u64::MAX);
        let mut pipe = HashPipe::new(hasher, total, file, attempt_offset).ctx("reading", &tmp)?;
        if attempt_offset > 0
            && let HashPipe::Inline(h) = &mut pipe
        {
            hash_prefix(file, attempt_offset, h).ctx("reading", &tmp)?;
        }
        progress.start_at(attempt_offset);
        let mut sink = HashingSink {
            file,
            hasher: &mut pipe,
            start: attempt_offset,
            written: 0,
            handed: 0,
            flushed: 0,
        };
        let filled = fill(attempt_offset, &mut sink, progress);
        sink.hand_over(true);
        let transferred = sink.written;
        if let Err(e) = filled {
            // The hashing thread ends before the lock is released.
            let _ = pipe.finish();
            // Keep a partial file for a resume; an empty one is only clutter.
            if attempt_offset + transferred == 0 {
                let _ = fs::remove_file(&tmp);
            }
            return Err(e);
        }
        // Big content: flushed now, while the hashing thread finishes (writeback started
        // early, so little is left). Small content is flushed by the caller, a batch at once.
        if transferred >= THREAD_HASH_MIN {
            file.sync_all().ctx("syncing", &tmp)?;
        }
        let total = attempt_offset + transferred;
        let digest = pipe.finish()?;
        let bad = match (key.size, digest) {
            (Some(s), _) if s != total => Some(format!("got {total} bytes, expected {s}")),
            (_, Some(hex)) => {
                let want = key.name.split(|&c| c == b'.').next().unwrap_or(&[]);
                (hex.as_bytes() != want).then(|| "checksum does not match the key".to_string())
            }
            // WORM, URL and other keys that cannot be verified are accepted, as git-annex does.
            (_, None) => None,
        };
        if let Some(why) = bad {
            if attempt_offset > 0 {
                // The kept prefix was wrong (or the source changed): start over once.
                file.set_len(0).ctx("truncating", &tmp)?;
                attempt_offset = 0;
                continue;
            }
            let _ = fs::remove_file(&tmp);
            return Err(TransferError::Corrupt {
                key: key.to_string(),
                why,
            }
            .into());
        }
        return Ok(Verified::Pending(Pending {
            key: key.clone(),
            tmp,
            resumed_from: attempt_offset,
            transferred,
            _lock: lock,
        }));
    }
}

fn hash_prefix(file: &File, n: u64, h: &mut Hasher) -> std::io::Result<()> {
    let mut f = file;
    f.seek(SeekFrom::Start(0))?;
    let mut left = n;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let got = f.read(&mut buf[..want])?;
        if got == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "partial file shrank",
            ));
        }
        h.update(&buf[..got]);
        left -= got as u64;
    }
    Ok(())
}

/// Copies `src` from `offset` on into `sink` (inside the kernel when the sink can, else in 1 MiB
/// chunks, smaller under a bandwidth limit), reporting progress and honouring cancellation
/// between chunks.
pub fn copy_from_file(
    src: &Path,
    offset: u64,
    sink: &mut dyn Sink,
    progress: &mut Progress,
) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = File::open(src).ctx("reading", src)?;
    // SAFETY: a valid descriptor; only a hint to the kernel's readahead.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
    // Inside the kernel when the sink can, then (or else) through buffers.
    let mut offset = sink.copy_file_tail(&f, offset, progress)?;
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
    loop {
        progress.check_cancel()?;
        let chunk = progress.chunk(CHUNK);
        buf.clear();
        buf.reserve(chunk);
        // SAFETY: the kernel writes at most `chunk` bytes into the spare capacity, and
        // `set_len` covers only the bytes it reports as read.
        let n = unsafe {
            libc::pread(
                f.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                chunk,
                offset as libc::off_t,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::io(format!("reading {}", src.display()), e));
        }
        if n == 0 {
            return Ok(());
        }
        // SAFETY: see above.
        unsafe { buf.set_len(n as usize) };
        offset += n as u64;
        buf = sink
            .write_chunk(buf)
            .map_err(|e| Error::io("writing received content", e))?;
        progress.advance(n as u64)?;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Upload,
    Download,
}

impl Direction {
    fn dir_name(self) -> &'static str {
        match self {
            Direction::Upload => "upload",
            Direction::Download => "download",
        }
    }
}

/// A running transfer's info file and lock (git-annex's `.git/annex/transfer/` layout).
/// Dropping it without [`TransferGuard::finish`] counts as a failure.
pub struct TransferGuard {
    lock: Option<Lock>,
    info: PathBuf,
    failed: PathBuf,
    started: Timestamp,
    file: Vec<u8>,
    last_write: Instant,
    last_bytes: Option<u64>,
}

/// How often the bytes-done field of the info file is rewritten while bytes move.
const INFO_INTERVAL: Duration = Duration::from_millis(500);

impl TransferGuard {
    /// Registers a transfer of `key` with the repository whose annex dir is `annex_dir`.
    /// If the same transfer (direction, remote, key) is already running, waits for it to end
    /// when `wait` is set (returning `None` if `cancel` is set meanwhile), else returns `None`.
    #[allow(clippy::too_many_arguments)]
    pub fn begin(
        annex_dir: &Path,
        direction: Direction,
        remote_uuid: &str,
        key: &Key,
        file: &[u8],
        now: Timestamp,
        wait: bool,
        cancel: &AtomicBool,
    ) -> Result<Option<TransferGuard>> {
        let kc = key_component(key)?;
        let uuid = uuid_component(remote_uuid)?;
        let dir = annex_dir
            .join("transfer")
            .join(direction.dir_name())
            .join(&uuid);
        fs::create_dir_all(&dir).ctx("creating", &dir)?;
        let mut lck_name = std::ffi::OsString::from("lck.");
        lck_name.push(&kc);
        let lck = dir.join(lck_name);
        // The lock file stays open while waiting (one open, many attempts).
        let mut lf = crate::lock::open_for_lock(&lck)?;
        let lock = loop {
            match crate::lock::try_lock_file(lf, &lck, LockKind::Exclusive)? {
                Ok(l) => {
                    // A finishing holder deletes the lock file; ours must still be the one
                    // there, else try again with the new one.
                    let same = match (l.file().metadata(), fs::symlink_metadata(&lck)) {
                        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                        _ => false,
                    };
                    if same {
                        break l;
                    }
                    drop(l);
                    lf = crate::lock::open_for_lock(&lck)?;
                    continue;
                }
                Err(f) => lf = f,
            }
            if !wait || cancel.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(None);
            }
            std::thread::sleep(LOCK_POLL);
        };
        let failed = annex_dir
            .join("transfer")
            .join("failed")
            .join(direction.dir_name())
            .join(&uuid)
            .join(&kc);
        let g = TransferGuard {
            lock: Some(lock),
            info: dir.join(&kc),
            failed,
            started: now,
            file: file.to_vec(),
            last_write: Instant::now(),
            last_bytes: None,
        };
        g.write_info(&g.info.clone())?;
        Ok(Some(g))
    }

    fn render(&self) -> Vec<u8> {
        let mut v = match self.last_bytes {
            Some(b) => format!("{} {b}\n", self.started).into_bytes(),
            None => format!("{}\n", self.started).into_bytes(),
        };
        v.extend_from_slice(&self.file);
        v.push(b'\n');
        v
    }

    fn write_info(&self, path: &Path) -> Result<()> {
        // Small and rewritten often: written in place, as git-annex does.
        fs::write(path, self.render()).ctx("writing", path)
    }

    /// Records progress; the info file is rewritten at most every half second.
    pub fn update(&mut self, bytes: u64) {
        if self.last_bytes == Some(bytes) {
            return;
        }
        self.last_bytes = Some(bytes);
        if self.last_write.elapsed() >= INFO_INTERVAL {
            self.last_write = Instant::now();
            let _ = self.write_info(&self.info.clone());
        }
    }

    /// Ends the transfer: removes the info and lock files; a failure is recorded under
    /// `failed/`, a success clears an earlier failure record.
    pub fn finish(mut self, ok: bool) {
        self.end(Some(ok));
    }

    /// [`TransferGuard::finish`] by the transfer's result. Content that another transfer is
    /// receiving right now ([`TransferError::InProgress`]) is no failure of this one: the
    /// failure record is left as it was.
    pub fn finish_with<T>(self, r: &Result<T>) {
        match r {
            Ok(_) => self.finish(true),
            Err(e) => self.failed(e),
        }
    }

    /// Ends the transfer with the error `e` (see [`TransferGuard::finish_with`]).
    pub fn failed(mut self, e: &Error) {
        let in_progress = matches!(e, Error::Transfer(TransferError::InProgress(_)));
        self.end((!in_progress).then_some(false));
    }

    /// `ok`: `None` leaves the failure record alone.
    fn end(&mut self, ok: Option<bool>) {
        let Some(lock) = self.lock.take() else {
            return;
        };
        if ok == Some(true) {
            let _ = fs::remove_file(&self.failed);
        } else if ok == Some(false)
            && let Some(d) = self.failed.parent()
        {
            let _ = fs::create_dir_all(d);
            let mut v = format!("{}\n", self.started).into_bytes();
            v.extend_from_slice(&self.file);
            v.push(b'\n');
            let _ = fs::write(&self.failed, v);
        }
        let _ = fs::remove_file(&self.info);
        let _ = fs::remove_file(&lock.path);
        drop(lock);
    }
}

impl Drop for TransferGuard {
    fn drop(&mut self) {
        self.end(Some(false));
    }
}

/// The content lock file of an object: `<objectdir>/<keyFile>/<keyFile>.lck`.
fn content_lock_path(obj: &Path) -> PathBuf {
    let mut name = obj.file_name().unwrap_or_default().to_os_string();
    name.push(".lck");
    obj.with_file_name(name)
}

/// Takes the content lock of `key` in `store` without waiting. `None` when the content is not
/// there or someone holds a conflicting lock (a drop in progress, or a drop elsewhere that is
/// counting on this copy).
pub fn lock_content(store: &Store, key: &Key, kind: LockKind) -> Result<Option<Lock>> {
    key_component(key)?;
    let Some(obj) = store.find(key) else {
        return Ok(None);
    };
    let lck = content_lock_path(&obj);
    let key_dir = obj.parent().expect("object has a directory");
    let lock = if fs::symlink_metadata(&lck).is_ok() {
        try_lock(&lck, kind)?
    } else {
        // Creating the lock file needs the (frozen) key directory writable for a moment.
        let mode = fs::metadata(key_dir).ctx("checking", key_dir)?.mode() & 0o7777;
        fs::set_permissions(key_dir, fs::Permissions::from_mode(mode | 0o700))
            .ctx("making writable", key_dir)?;
        let r = try_lock(&lck, kind);
        let _ = fs::set_permissions(key_dir, fs::Permissions::from_mode(mode));
        r?
    };
    // The content may have been removed while we were getting the lock.
    Ok(lock.filter(|_| store.find(key).is_some()))
}

/// Removes `key`'s object from `store`. The caller holds the exclusive content lock.
pub fn remove_object(store: &Store, key: &Key, _held: &Lock) -> Result<()> {
    key_component(key)?;
    let Some(obj) = store.find(key) else {
        return Ok(());
    };
    let key_dir = obj.parent().expect("object has a directory").to_path_buf();
    fs::set_permissions(&key_dir, fs::Permissions::from_mode(0o755))
        .ctx("making writable", &key_dir)?;
    fs::remove_file(&obj).ctx("removing", &obj)?;
    let _ = fs::remove_file(content_lock_path(&obj));
    let _ = fs::remove_dir(&key_dir);
    if let Some(h2) = key_dir.parent() {
        let _ = fs::remove_dir(h2);
        if let Some(h1) = h2.parent() {
            let _ = fs::remove_dir(h1);
            if let Ok(f) = File::open(h1) {
                let _ = f.sync_all();
            }
        }
    }
    Ok(())
}

/// A transfer's file name for the info file: the path relative to the top, or empty.
pub fn info_file_name(path: Option<&Path>) -> Vec<u8> {
    path.map(|p| p.as_os_str().as_bytes().to_vec())
        .unwrap_or_default()
}

/// Sets `uuid`'s presence for `key` in `repo`'s location log, in the journal only (committed
/// by the caller's next [`crate::branch::Branch::commit`], as git-annex commits at the end of
/// a command). Nothing is written when the log already says so.
pub fn log_presence(
    repo: &crate::repo::Repo,
    key: &Key,
    uuid: &str,
    status: crate::logs::Presence,
) -> Result<()> {
    log_presence_many(repo, std::slice::from_ref(key), uuid, status)
}

/// [`log_presence`] for many keys under one hold of the journal lock (a batch of transfers).
pub fn log_presence_many(
    repo: &crate::repo::Repo,
    keys: &[Key],
    uuid: &str,
    status: crate::logs::Presence,
) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let lock = repo.branch.lock_journal()?;
    for key in keys {
        let mut log = repo.branch.location_log(key)?;
        if log.status_of(uuid) == Some(status) {
            continue;
        }
        log.set(uuid, status, repo.branch.now());
        let path = crate::branch::location_log_path(key);
        repo.branch.write(&lock, &path, &log.render())?;
    }
    Ok(())
}

/// Refuses to receive `key` into `repo` when that would leave less than `annex.diskreserve`
/// (default 100 MB, as git-annex) free on its file system. `have` bytes are already there.
pub fn check_free_space(repo: &crate::repo::Repo, key: &Key, have: u64) -> Result<()> {
    let Some(size) = key.size else {
        return Ok(());
    };
    let reserve = repo
        .config()
        .get("annex.diskreserve")
        .and_then(|v| crate::matching::parse_size(v))
        .unwrap_or(100_000_000);
    let dir = repo.annex_dir();
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return Ok(());
    };
    // SAFETY: statvfs fills the plain-data struct for a valid NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Ok(()); // cannot tell: let the write itself fail if it must
    }
    let free = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
    let need = size.saturating_sub(have);
    if free < need.saturating_add(reserve) {
        return Err(TransferError::Other(format!(
            "not enough free space in {}: {need} bytes needed, {free} free, and annex.diskreserve keeps {reserve} free; free some space or lower annex.diskreserve",
            dir.display()
        ))
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{Backend, hash_file};

    fn key_for(data: &[u8]) -> Key {
        let (hex, n) = hash_file(Backend::Sha256E, &mut &data[..], 0).unwrap();
        Backend::Sha256E.key(n, &hex, b"f.bin")
    }

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::new(d.path().join("annex"), false);
        (d, s)
    }

    fn receive(s: &Store, key: &Key, data: &[u8]) -> Result<Received> {
        let cancel = AtomicBool::new(false);
        let mut cb = |_| {};
        let mut p = Progress::new(key, &cancel, &mut cb);
        receive_into(s, key, &mut p, &mut |off, sink, p| {
            let src = &data[off as usize..];
            sink.write_all(src).unwrap();
            p.advance(src.len() as u64)
        })
    }

    #[test]
    fn resumes_a_correct_partial_file() {
        let (_d, s) = store();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let key = key_for(&data);
        let tmp = s.tmp_dir().unwrap().join(key_component(&key).unwrap());
        fs::write(&tmp, &data[..40_000]).unwrap();
        let r = receive(&s, &key, &data).unwrap();
        assert_eq!(r.resumed_from, 40_000);
        assert_eq!(r.transferred, 60_000);
        assert_eq!(fs::read(s.find(&key).unwrap()).unwrap(), data);
        assert!(!tmp.exists());
    }

    #[test]
    fn a_wrong_partial_file_is_discarded_and_refetched() {
        let (_d, s) = store();
        let data = vec![7u8; 50_000];
        let key = key_for(&data);
        let tmp = s.tmp_dir().unwrap().join(key_component(&key).unwrap());
        fs::write(&tmp, vec![1u8; 10_000]).unwrap();
        let r = receive(&s, &key, &data).unwrap();
        assert_eq!(r.resumed_from, 0);
        assert_eq!(fs::read(s.find(&key).unwrap()).unwrap(), data);
    }

    #[test]
    fn big_content_is_hashed_on_a_second_thread_and_still_verified() {
        let (_d, s) = store();
        let data: Vec<u8> = (0..(9u32 << 20)).map(|i| (i % 241) as u8).collect();
        let key = key_for(&data);
        let mut bad = data.clone();
        bad[5 << 20] ^= 1;
        let e = receive(&s, &key, &bad).unwrap_err();
        assert!(e.to_string().contains("corrupt"), "{e}");
        assert!(s.find(&key).is_none());
        let tmp = s.tmp_dir().unwrap().join(key_component(&key).unwrap());
        fs::write(&tmp, &data[..(3 << 20)]).unwrap();
        let r = receive(&s, &key, &data).unwrap();
        assert_eq!(r.resumed_from, 3 << 20);
        assert_eq!(fs::read(s.find(&key).unwrap()).unwrap(), data);
    }

    /// Receives `key` by copying the file `src` (the local-remote path).
    fn receive_file(s: &Store, key: &Key, src: &Path) -> Result<Received> {
        let cancel = AtomicBool::new(false);
        let mut cb = |_| {};
        let mut p = Progress::new(key, &cancel, &mut cb);
        receive_into(s, key, &mut p, &mut |off, sink, p| {
            copy_from_file(src, off, sink, p)
        })
    }

    #[test]
    fn big_files_are_copied_through_pooled_buffers_and_verified() {
        let (d, s) = store();
        // More than POOL buffers of CHUNK bytes, and not a multiple of CHUNK.
        let len = (POOL + 5) * CHUNK + 12_345;
        let data: Vec<u8> = (0..len as u32).map(|i| (i % 253) as u8).collect();
        let key = key_for(&data);
        let src = d.path().join("src.bin");
        let mut bad = data.clone();
        bad[len - 3] ^= 1;
        fs::write(&src, &bad).unwrap();
        let e = receive_file(&s, &key, &src).unwrap_err();
        assert!(e.to_string().contains("corrupt"), "{e}");
        assert!(s.find(&key).is_none());
        // A kept partial file is hashed on the thread, the rest is copied.
        fs::write(&src, &data).unwrap();
        let tmp = s.tmp_dir().unwrap().join(key_component(&key).unwrap());
        fs::write(&tmp, &data[..(10 << 20) + 7]).unwrap();
        let r = receive_file(&s, &key, &src).unwrap();
        assert_eq!(r.resumed_from, (10 << 20) + 7);
        assert_eq!(r.transferred, len as u64 - r.resumed_from);
        assert_eq!(fs::read(s.find(&key).unwrap()).unwrap(), data);
    }

    #[test]
    fn plain_writes_and_handed_buffers_are_hashed_in_order() {
        let (_d, s) = store();
        let data: Vec<u8> = (0..(12u32 << 20)).map(|i| (i % 239) as u8).collect();
        let key = key_for(&data);
        let cancel = AtomicBool::new(false);
        let mut cb = |_| {};
        let mut p = Progress::new(&key, &cancel, &mut cb);
        receive_into(&s, &key, &mut p, &mut |off, sink, p| {
            let mut rest = &data[off as usize..];
            let mut i = 0;
            while !rest.is_empty() {
                // Alternate odd-sized borrowed writes with owned buffers.
                let n = rest.len().min(if i % 2 == 0 { 300_001 } else { CHUNK });
                if i % 2 == 0 {
                    sink.write_all(&rest[..n]).unwrap();
                } else {
                    sink.write_chunk(rest[..n].to_vec()).unwrap();
                }
                p.advance(n as u64)?;
                rest = &rest[n..];
                i += 1;
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(fs::read(s.find(&key).unwrap()).unwrap(), data);
    }

    #[test]
    fn unhashed_content_is_copied_in_the_kernel_and_resumes() {
        let (d, s) = store();
        let data: Vec<u8> = (0..(9u32 << 20) + 5).map(|i| (i % 247) as u8).collect();
        let key = Key {
            variety: "WORM".into(),
            size: Some(data.len() as u64),
            mtime: Some(1),
            chunk: None,
            name: b"f.bin".to_vec(),
        };
        let src = d.path().join("src.bin");
        fs::write(&src, &data).unwrap();
        let tmp = s.tmp_dir().unwrap().join(key_component(&key).unwrap());
        fs::write(&tmp, &data[..1000]).unwrap();
        let r = receive_file(&s, &key, &src).unwrap();
        assert_eq!(r.resumed_from, 1000);
        assert_eq!(fs::read(s.find(&key).unwrap()).unwrap(), data);
    }

    #[test]
    fn sizes_parse_like_git_annex() {
        assert_eq!(
            crate::matching::parse_size("100 megabytes"),
            Some(100_000_000)
        );
        assert_eq!(crate::matching::parse_size("1GB"), Some(1_000_000_000));
        assert_eq!(crate::matching::parse_size("512MiB"), Some(512 << 20));
        assert_eq!(crate::matching::parse_size("2000"), Some(2000));
        assert_eq!(crate::matching::parse_size("1.5 kb"), Some(1500));
        assert_eq!(crate::matching::parse_size("lots"), None);
    }

    #[test]
    fn corrupt_content_never_enters_the_store() {
        let (_d, s) = store();
        let key = key_for(b"good content");
        let e = receive(&s, &key, b"evil content").unwrap_err();
        assert!(e.to_string().contains("corrupt"), "{e}");
        assert!(s.find(&key).is_none());
        let tmp = s.tmp_dir().unwrap().join(key_component(&key).unwrap());
        assert!(!tmp.exists());
    }

    #[test]
    fn content_received_elsewhere_is_no_failure_of_this_transfer() {
        let d = tempfile::tempdir().unwrap();
        let key = key_for(b"x");
        let cancel = AtomicBool::new(false);
        let begin = || {
            TransferGuard::begin(
                d.path(),
                Direction::Upload,
                "u-1",
                &key,
                b"f",
                Timestamp { secs: 1, pico: 0 },
                false,
                &cancel,
            )
            .unwrap()
            .unwrap()
        };
        let failed = d
            .path()
            .join("transfer/failed/upload/u-1")
            .join(key.to_string());
        begin().failed(&TransferError::InProgress(key.to_string()).into());
        assert!(!failed.exists(), "a busy receiver is not a failure");
        begin().finish_with::<()>(&Err(TransferError::Other("disk full".into()).into()));
        assert!(failed.exists(), "a real failure is recorded");
        begin().failed(&TransferError::InProgress(key.to_string()).into());
        assert!(failed.exists(), "and stays until a success");
        begin().finish_with(&Ok(()));
        assert!(!failed.exists());
    }

    #[test]
    fn transfer_info_is_exclusive_and_cleaned_up() {
        let d = tempfile::tempdir().unwrap();
        let key = key_for(b"x");
        let cancel = AtomicBool::new(false);
        let now = Timestamp {
            secs: 1000,
            pico: 0,
        };
        let g = TransferGuard::begin(
            d.path(),
            Direction::Download,
            "u-1",
            &key,
            b"dir/f.bin",
            now,
            false,
            &cancel,
        )
        .unwrap()
        .unwrap();
        let info = d.path().join("transfer/download/u-1").join(key.to_string());
        assert_eq!(fs::read(&info).unwrap(), b"1000s\ndir/f.bin\n");
        let again = TransferGuard::begin(
            d.path(),
            Direction::Download,
            "u-1",
            &key,
            b"",
            now,
            false,
            &cancel,
        )
        .unwrap();
        assert!(again.is_none());
        // Progress is written at most every INFO_INTERVAL, with the bytes done.
        let mut g = g;
        g.update(10);
        assert_eq!(fs::read(&info).unwrap(), b"1000s\ndir/f.bin\n");
        g.last_write -= INFO_INTERVAL;
        g.update(20);
        assert_eq!(fs::read(&info).unwrap(), b"1000s 20\ndir/f.bin\n");
        g.finish(false);
        assert!(!info.exists());
        let failed = d
            .path()
            .join("transfer/failed/download/u-1")
            .join(key.to_string());
        assert_eq!(fs::read(&failed).unwrap(), b"1000s\ndir/f.bin\n");
    }
}
