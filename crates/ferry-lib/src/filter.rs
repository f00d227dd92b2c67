//! git's long-running clean/smudge filter (`filter.annex.process`), implemented by ferry itself.
//!
//! With `* filter=annex` in `.git/info/attributes`, git sends file content through this process:
//! - **clean** (`git add`, `git status` on a changed file): content of an annexed path (already
//!   annexed in the index, or matched by `annex.largefiles`) is hashed into the store and git
//!   records the pointer `/annex/objects/<key>`; other content passes through into git as is. A
//!   work-tree file whose inode, size and mtime are in the inode cache is answered without
//!   re-hashing.
//! - **smudge** (`checkout`, `merge`, `reset`): a pointer whose content is present (and, for a
//!   thin object, still intact) becomes the content; otherwise the pointer is written.
//!
//! Content is streamed through a temp file, never held in memory. Location-log updates go to the
//! journal and are committed once, when git closes the pipe.

use crate::error::{Error, IoContext, Result};
use crate::git::CheckAttr;
use crate::hash::{Backend, Hasher};
use crate::inodecache::{InodeCache, Stamp};
use crate::key::Key;
use crate::logs::Presence;
use crate::matching::Expr;
use crate::paths::is_dotfile;
use crate::pktline::{
    MAX_DATA, Packet, read_kv_list, read_packet, write_data, write_flush, write_text,
};
use crate::repo::Repo;
use crate::store::parse_pointer;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// The pointer text git stores for an unlocked file.
pub fn pointer_for(key: &Key) -> Vec<u8> {
    let mut p = b"/annex/objects/".to_vec();
    p.extend_from_slice(&key.file_name());
    p.push(b'\n');
    p
}

struct Settings {
    backend: Backend,
    thin: bool,
    dotfiles: bool,
    largefiles_config: Option<Expr>,
}

impl Settings {
    fn load(repo: &Repo) -> Result<Settings> {
        let cfg = |k: &str| repo.config().get(k).map(String::as_str);
        let flag = |k: &str| crate::git::config_flag(repo.config(), k, false);
        Ok(Settings {
            backend: cfg("annex.backend")
                .and_then(Backend::from_variety)
                .unwrap_or(Backend::Sha256E),
            thin: flag("annex.thin"),
            dotfiles: flag("annex.dotfiles"),
            largefiles_config: cfg("annex.largefiles").map(Expr::parse).transpose()?,
        })
    }
}

struct Filter<'a> {
    repo: &'a Repo,
    top: PathBuf,
    inodes: InodeCache,
    /// From git config, read when a decision first needs it: a filter that only answers from
    /// the inode cache (git re-checking files it just staged) never reads config at all.
    settings: Option<Settings>,
    /// Read lazily: `None` until needed, then `Some(the branch's expression, if any)`.
    largefiles_branch: Option<Option<Expr>>,
    check_attr: Option<CheckAttr>,
    annexed_paths: Option<HashSet<Vec<u8>>>,
    present: Vec<Key>,
    lost: Vec<Key>,
}

/// Serves git on `input`/`output` until git closes the pipe.
pub fn run(repo: &Repo, input: impl Read, output: impl Write) -> Result<()> {
    let mut r = BufReader::with_capacity(MAX_DATA + 4, input);
    let mut w = BufWriter::with_capacity(MAX_DATA + 4, output);
    let io = |e: std::io::Error| Error::io("talking to git (filter protocol)", e);
    // Handshake.
    let hello = read_kv_list(&mut r).map_err(io)?;
    if hello.first().map(|(k, _)| k.as_str()) != Some("git-filter-client")
        || !hello.iter().any(|(k, v)| k == "version" && v == "2")
    {
        return Err(Error::Protocol(format!(
            "unexpected filter handshake from git: {hello:?}"
        )));
    }
    write_text(&mut w, "git-filter-server").map_err(io)?;
    write_text(&mut w, "version=2").map_err(io)?;
    write_flush(&mut w).map_err(io)?;
    w.flush().map_err(io)?; // git answers only after seeing this
    let caps = read_kv_list(&mut r).map_err(io)?;
    for cap in ["clean", "smudge"] {
        if caps.iter().any(|(k, v)| k == "capability" && v == cap) {
            write_text(&mut w, &format!("capability={cap}")).map_err(io)?;
        }
    }
    write_flush(&mut w).map_err(io)?;
    w.flush().map_err(io)?;

    let annex_dir = repo.annex_dir();
    // Settings come from one `git config --list` when first needed; the branch's config.log
    // is read only when a decision needs it.
    let mut f = Filter {
        repo,
        top: repo.work_tree()?.to_path_buf(),
        inodes: InodeCache::load(&annex_dir),
        settings: None,
        largefiles_branch: None,
        check_attr: None,
        annexed_paths: None,
        present: Vec::new(),
        lost: Vec::new(),
    };
    let served = f.serve(&mut r, &mut w);
    // Whatever happened, record what was stored.
    let recorded = f.finish();
    served.and(recorded)
}

impl Filter<'_> {
    fn settings(&mut self) -> Result<&Settings> {
        if self.settings.is_none() {
            self.settings = Some(Settings::load(self.repo)?);
        }
        Ok(self.settings.as_ref().unwrap())
    }

    fn serve(&mut self, r: &mut impl Read, w: &mut impl Write) -> Result<()> {
        let io = |e: std::io::Error| Error::io("talking to git (filter protocol)", e);
        loop {
            let header = match read_packet(r).map_err(io)? {
                None => return Ok(()), // git is done
                Some(Packet::Flush) => continue,
                Some(Packet::Data(d)) => d,
            };
            let fields = read_fields(r, header).map_err(io)?;
            let get = |name: &[u8]| {
                fields
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let command = String::from_utf8_lossy(&get(b"command")).into_owned();
            let path = get(b"pathname");
            let mut tmp = self.receive(r)?;
            let result = match command.as_str() {
                "clean" => self.clean(&path, &mut tmp),
                "smudge" => self.smudge(&mut tmp),
                other => Err(Error::Protocol(format!(
                    "git asked the filter for unknown command {other:?}"
                ))),
            };
            match result {
                Ok(Output::File(p, remove)) => {
                    let sent = send_file(w, &p);
                    if remove {
                        let _ = std::fs::remove_file(&p);
                    }
                    sent?;
                }
                Ok(Output::Bytes(b)) => {
                    write_text(w, "status=success").map_err(io)?;
                    write_flush(w).map_err(io)?;
                    write_data(w, &b).map_err(io)?;
                    write_flush(w).map_err(io)?;
                    write_flush(w).map_err(io)?;
                }
                Err(e) => {
                    eprintln!(
                        "ferry filter: {command} {}: {e}",
                        String::from_utf8_lossy(&path)
                    );
                    write_text(w, "status=error").map_err(io)?;
                    write_flush(w).map_err(io)?;
                }
            }
            if let Received::File(p) = &tmp {
                let _ = std::fs::remove_file(p);
            }
            w.flush().map_err(io)?;
        }
    }

    /// Reads the content packets: small content stays in memory (no temp file to create and
    /// delete for each of many small files); larger content is spilled to a temp file.
    fn receive(&self, r: &mut impl Read) -> Result<Received> {
        let mut mem: Vec<u8> = Vec::new();
        let mut file: Option<(std::fs::File, PathBuf)> = None;
        loop {
            match read_packet(r).map_err(|e| Error::io("reading content from git", e))? {
                None => {
                    if let Some((_, p)) = file {
                        let _ = std::fs::remove_file(p);
                    }
                    return Err(Error::Protocol(
                        "git closed the pipe in the middle of a file".into(),
                    ));
                }
                Some(Packet::Flush) => break,
                Some(Packet::Data(d)) => match &mut file {
                    Some((f, p)) => f.write_all(&d).ctx("writing", p)?,
                    None if mem.len() + d.len() <= IN_MEMORY => mem.extend_from_slice(&d),
                    None => {
                        let (mut f, p) = self.temp_file()?;
                        f.write_all(&mem).ctx("writing", &p)?;
                        f.write_all(&d).ctx("writing", &p)?;
                        mem = Vec::new();
                        file = Some((f, p));
                    }
                },
            }
        }
        Ok(match file {
            Some((_, p)) => Received::File(p),
            None => Received::Mem(mem),
        })
    }

    fn temp_file(&self) -> Result<(std::fs::File, PathBuf)> {
        let dir = self.repo.store().tmp_dir()?;
        tempfile::Builder::new()
            .prefix("filter.")
            .tempfile_in(&dir)
            .ctx("creating temp file in", &dir)?
            .keep()
            .map_err(|e| Error::io("keeping temp file", e.error))
    }

    /// The received content as a temp file (written now if it was kept in memory).
    fn materialize(&self, rec: &mut Received) -> Result<PathBuf> {
        if let Received::Mem(m) = rec {
            let (mut f, p) = self.temp_file()?;
            f.write_all(m).ctx("writing", &p)?;
            *rec = Received::File(p);
        }
        match rec {
            Received::File(p) => Ok(p.clone()),
            Received::Mem(_) => unreachable!(),
        }
    }

    fn is_annexed_path(&mut self, path: &[u8]) -> Result<bool> {
        if self.annexed_paths.is_none() {
            let files = crate::annexed::annexed_files(&self.repo.git, &[])?;
            self.annexed_paths = Some(files.into_iter().map(|f| f.path).collect());
        }
        Ok(self.annexed_paths.as_ref().unwrap().contains(path))
    }

    /// Whether new content at `path` of `size` bytes is annexed. As in git-annex, with no
    /// annex.largefiles anywhere, `git add` of a path that is not annexed yet puts it in git.
    fn wants_annex(&mut self, path: &[u8], size: u64) -> Result<bool> {
        if self.is_annexed_path(path)? {
            return Ok(true);
        }
        let settings = self.settings()?;
        if is_dotfile(path) && !settings.dotfiles {
            return Ok(false);
        }
        if let Some(e) = &settings.largefiles_config {
            return Ok(e.matches(path, size));
        }
        if self.check_attr.is_none() {
            self.check_attr = Some(CheckAttr::start(&self.repo.git, "annex.largefiles")?);
        }
        if let Some(v) = self.check_attr.as_mut().unwrap().get(path)? {
            return Ok(Expr::parse(&String::from_utf8_lossy(&v))?.matches(path, size));
        }
        if self.largefiles_branch.is_none() {
            self.largefiles_branch = Some(
                self.repo
                    .branch
                    .read(b"config.log")?
                    .and_then(|c| crate::logs::parse_config_log(&c, "annex.largefiles"))
                    .map(|s| Expr::parse(&s))
                    .transpose()?,
            );
        }
        Ok(self
            .largefiles_branch
            .as_ref()
            .and_then(Option::as_ref)
            .is_some_and(|e| e.matches(path, size)))
    }

    fn clean(&mut self, path: &[u8], rec: &mut Received) -> Result<Output> {
        let size = match &*rec {
            Received::Mem(m) => m.len() as u64,
            Received::File(p) => std::fs::metadata(p).ctx("reading", p)?.len(),
        };
        if size < 32 * 1024 {
            let content = match &*rec {
                Received::Mem(m) => m.clone(),
                Received::File(p) => std::fs::read(p).ctx("reading", p)?,
            };
            if parse_pointer(&content).is_some() {
                return Ok(Output::Bytes(content)); // already a pointer: keep it
            }
        }
        let work = self.top.join(OsStr::from_bytes(path));
        let before = Stamp::of_path(&work);
        // An unchanged file whose content ferry annexed: it stays annexed (as in git-annex),
        // and there is no need to hash it again.
        if let Some(stamp) = before.filter(|s| s.size == size)
            && let Some(key) = self.inodes.lookup(&stamp).cloned()
            && self.repo.store().find(&key).is_some()
        {
            return Ok(Output::Bytes(pointer_for(&key)));
        }
        if !self.wants_annex(path, size)? {
            return Ok(match rec {
                Received::Mem(m) => Output::Bytes(std::mem::take(m)),
                Received::File(p) => Output::File(p.clone(), false),
            });
        }
        let (backend, thin) = {
            let s = self.settings()?;
            (s.backend, s.thin)
        };
        let tmp = &self.materialize(rec)?;
        let mut h = Hasher::new(backend);
        let mut file = std::fs::File::open(tmp).ctx("reading", tmp)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).ctx("reading", tmp)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let key = backend.key(size, &h.finish_hex(), path);
        let store = self.repo.store();
        let after = Stamp::of_path(&work);
        let stable = before.is_some() && before == after && after.map(|s| s.size) == Some(size);
        if thin && stable {
            // Thin: the work-tree file itself becomes the object (a hard link, no copy).
            let st = crate::hash::StatStamp::of(
                &std::fs::symlink_metadata(&work).ctx("reading", &work)?,
            );
            if store.ingest_hardlink_thin(&work, &key, &st).is_err() {
                store.ingest_temp(&self.copy_of(tmp)?, &key)?;
            }
        } else {
            store.ingest_temp(&self.copy_of(tmp)?, &key)?;
        }
        if let (true, Some(stamp)) = (stable, after) {
            let mut rec = vec![(stamp, key.clone())];
            if let Some(obj) = store.find(&key)
                && let Ok(m) = std::fs::metadata(&obj)
            {
                rec.push((Stamp::of(&m), key.clone()));
            }
            self.inodes.record(&rec)?;
        }
        self.present.push(key.clone());
        Ok(Output::Bytes(pointer_for(&key)))
    }

    /// A second temp file with the same content (the first one is removed by the caller).
    fn copy_of(&self, tmp: &PathBuf) -> Result<PathBuf> {
        let dir = self.repo.store().tmp_dir()?;
        let (_, path) = tempfile::Builder::new()
            .prefix("ingest.")
            .tempfile_in(&dir)
            .ctx("creating temp file in", &dir)?
            .keep()
            .map_err(|e| Error::io("keeping temp file", e.error))?;
        // A hard link is enough: the filter's temp file is never written again.
        let _ = std::fs::remove_file(&path);
        if std::fs::hard_link(tmp, &path).is_err() {
            std::fs::copy(tmp, &path).ctx("copying", tmp)?;
        }
        Ok(path)
    }

    fn smudge(&mut self, rec: &mut Received) -> Result<Output> {
        let content = match rec {
            Received::File(p) => return Ok(Output::File(p.clone(), false)), // not a pointer
            Received::Mem(m) if m.len() >= 32 * 1024 => {
                return Ok(Output::Bytes(std::mem::take(m)));
            }
            Received::Mem(m) => std::mem::take(m),
        };
        let Some(key) = parse_pointer(&content) else {
            return Ok(Output::Bytes(content));
        };
        let store = self.repo.store();
        let had = store.find(&key).is_some();
        match store.find_valid(&key, &self.inodes)? {
            Some(obj) => Ok(Output::File(obj, false)),
            None => {
                if had {
                    self.lost.push(key);
                }
                Ok(Output::Bytes(content))
            }
        }
    }

    fn finish(&mut self) -> Result<()> {
        if self.present.is_empty() && self.lost.is_empty() {
            return Ok(()); // nothing to record (and no need to read config for the uuid)
        }
        let uuid = self.repo.uuid().to_string();
        if uuid.is_empty() {
            return Err(Error::NotInitialized(self.top.clone()));
        }
        crate::ops::add::set_presence(
            self.repo,
            &uuid,
            &self.present,
            Presence::Present,
            &mut std::iter::empty(),
        )?;
        crate::ops::add::set_presence(
            self.repo,
            &uuid,
            &self.lost,
            Presence::Absent,
            &mut std::iter::empty(),
        )
    }
}

/// Content git sent: up to [`IN_MEMORY`] bytes in memory, more in a temp file.
enum Received {
    Mem(Vec<u8>),
    File(PathBuf),
}

const IN_MEMORY: usize = 1 << 20;

enum Output {
    /// Send this file's content; remove it afterwards if the flag is set.
    File(PathBuf, bool),
    Bytes(Vec<u8>),
}

fn send_file(w: &mut impl Write, p: &PathBuf) -> Result<()> {
    let io = |e: std::io::Error| Error::io("talking to git (filter protocol)", e);
    let mut f = match std::fs::File::open(p) {
        Ok(f) => f,
        Err(e) => {
            write_text(w, "status=error").map_err(io)?;
            write_flush(w).map_err(io)?;
            return Err(Error::io(format!("reading {}", p.display()), e));
        }
    };
    write_text(w, "status=success").map_err(io)?;
    write_flush(w).map_err(io)?;
    let mut buf = vec![0u8; MAX_DATA];
    loop {
        let n = f.read(&mut buf).ctx("reading", p)?;
        if n == 0 {
            break;
        }
        write_data(w, &buf[..n]).map_err(io)?;
    }
    write_flush(w).map_err(io)?;
    write_flush(w).map_err(io)
}

/// Reads `key=value` packets up to a flush, keeping raw bytes (path names need not be UTF-8).
fn read_fields(r: &mut impl Read, first: Vec<u8>) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let split = |d: &[u8]| {
        let d = d.strip_suffix(b"\n").unwrap_or(d);
        match d.iter().position(|&b| b == b'=') {
            Some(i) => (d[..i].to_vec(), d[i + 1..].to_vec()),
            None => (d.to_vec(), Vec::new()),
        }
    };
    let mut out = vec![split(&first)];
    loop {
        match read_packet(r)? {
            None => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "git closed the filter pipe",
                ));
            }
            Some(Packet::Flush) => return Ok(out),
            Some(Packet::Data(d)) => out.push(split(&d)),
        }
    }
}
