//! The only place that runs `git`.
//!
//! Every call gets a controlled environment: inherited `GIT_DIR`/`GIT_WORK_TREE`/`GIT_INDEX_FILE`
//! are removed (ferry is often run from inside git hooks, where they point elsewhere), prompts are
//! off, and output is parsed with `-z` wherever git offers it so no file name is ever mangled.
//! Callers that talk to git often keep one long-running `cat-file --batch` ([`CatFile`]).

use crate::error::{Error, Result};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// A git object as read by `cat-file`: its type (`blob`, `tree`, ...) and content.
pub type Object = (String, Vec<u8>);

#[derive(Clone, Debug)]
pub struct Git {
    /// Directory git runs in (`-C`): the work tree top, or the git dir of a bare repo.
    pub dir: PathBuf,
    /// Extra environment, e.g. `GIT_INDEX_FILE` for the annex index.
    env: Vec<(String, PathBuf)>,
    /// The git directory, when known: lets [`Git::rev_parse`] read plain refs itself.
    git_dir: Option<PathBuf>,
}

impl Git {
    pub fn new(dir: impl Into<PathBuf>) -> Git {
        Git {
            dir: dir.into(),
            env: Vec::new(),
            git_dir: None,
        }
    }

    /// The same repository, told where its git directory is.
    pub fn with_git_dir(mut self, git_dir: &Path) -> Git {
        // Linked worktrees and the reftable backend keep refs elsewhere: leave those to git.
        if !git_dir.join("commondir").exists() && !git_dir.join("reftable").exists() {
            self.git_dir = Some(git_dir.to_path_buf());
        }
        self
    }

    /// The same repository with one more environment variable for git (e.g. `GIT_SSH_COMMAND`).
    pub fn with_env(&self, key: &str, value: &str) -> Git {
        let mut g = self.clone();
        g.env.push((key.to_string(), PathBuf::from(value)));
        g
    }

    /// The same repository, with git's index replaced by `index` (used for the git-annex branch).
    pub fn with_index(&self, index: &Path) -> Git {
        let mut g = self.clone();
        g.env.push(("GIT_INDEX_FILE".into(), index.to_path_buf()));
        g
    }

    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new("git");
        c.arg("-C").arg(&self.dir);
        c.args(args);
        for v in ["GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_PREFIX"] {
            c.env_remove(v);
        }
        c.env("GIT_TERMINAL_PROMPT", "0");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs git and returns stdout; a non-zero exit is an error carrying stderr.
    pub fn run<I, S>(&self, args: I) -> Result<Vec<u8>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_with_input(args, &[])
    }

    pub fn run_with_input<I, S>(&self, args: I, input: &[u8]) -> Result<Vec<u8>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(args);
        let desc = describe(&cmd);
        cmd.stdin(if input.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| Error::GitMissing(e.to_string()))?;
        // Write on a thread so a large input cannot deadlock against a large output.
        let writer = child.stdin.take().map(|mut stdin| {
            let input = input.to_vec();
            std::thread::spawn(move || stdin.write_all(&input))
        });
        let out = child
            .wait_with_output()
            .map_err(|e| Error::io("running git", e))?;
        if let Some(w) = writer {
            let _ = w.join();
        }
        if !out.status.success() {
            return Err(Error::Git {
                command: desc,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out.stdout)
    }

    /// Runs git, returning stdout trimmed as a string.
    pub fn run_str<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Ok(String::from_utf8_lossy(&self.run(args)?)
            .trim_end()
            .to_string())
    }

    /// Runs git; `Ok(None)` when it exits 1 with nothing on stderr (git's "not found").
    pub fn run_opt<I, S>(&self, args: I) -> Result<Option<String>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(args);
        let desc = describe(&cmd);
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::GitMissing(e.to_string()))?;
        if out.status.success() {
            return Ok(Some(
                String::from_utf8_lossy(&out.stdout).trim_end().to_string(),
            ));
        }
        if out.status.code() == Some(1) && out.stderr.is_empty() {
            return Ok(None);
        }
        Err(Error::Git {
            command: desc,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }

    /// `git config --get NAME`, `None` when unset.
    pub fn config(&self, name: &str) -> Result<Option<String>> {
        self.run_opt(["config", "--get", name])
    }

    /// All configuration in one call (`git config --list -z`); later values win. Keys are as
    /// git prints them (section and variable lowercased, subsection as written).
    pub fn config_map(&self) -> Result<std::collections::HashMap<String, String>> {
        Ok(self.config_entries()?.into_iter().collect())
    }

    /// All configuration entries in git's order, a multi-valued variable once per value (keys
    /// as in [`Git::config_map`]).
    pub fn config_entries(&self) -> Result<Vec<(String, String)>> {
        let out = self.run(["config", "--list", "-z"])?;
        Ok(out
            .split(|&b| b == 0)
            .filter(|r| !r.is_empty())
            .map(|rec| {
                let rec = String::from_utf8_lossy(rec);
                // No newline: a variable written without `=`, which git reads as true.
                let (k, v) = rec.split_once('\n').unwrap_or((&rec, "true"));
                (k.to_string(), v.to_string())
            })
            .collect())
    }

    /// Refs matching `patterns` that are not reachable from `target` (one git call).
    pub fn refs_not_merged_into(&self, target: &str, patterns: &[String]) -> Result<Vec<String>> {
        let mut args = vec![
            "for-each-ref".to_string(),
            "--format=%(refname)".into(),
            format!("--no-merged={target}"),
        ];
        args.extend(patterns.iter().cloned());
        Ok(self.run_str(&args)?.lines().map(str::to_string).collect())
    }

    /// [`Git::refs_not_merged_into`] with the commit each ref names: (ref, commit id).
    pub fn refs_not_merged_into_ids(
        &self,
        target: &str,
        patterns: &[String],
    ) -> Result<Vec<(String, String)>> {
        let mut args = vec![
            "for-each-ref".to_string(),
            "--format=%(refname) %(objectname)".into(),
            format!("--no-merged={target}"),
        ];
        args.extend(patterns.iter().cloned());
        Ok(self
            .run_str(&args)?
            .lines()
            .filter_map(|l| l.rsplit_once(' '))
            .map(|(r, id)| (r.to_string(), id.to_string()))
            .collect())
    }

    pub fn config_bool(&self, name: &str, default: bool) -> Result<bool> {
        Ok(
            match self.run_opt(["config", "--type=bool", "--get", name])? {
                Some(v) => v == "true",
                None => default,
            },
        )
    }

    /// The commit a ref points at, `None` when the ref does not exist.
    pub fn rev_parse(&self, rev: &str) -> Result<Option<String>> {
        if let Some(gd) = &self.git_dir
            && let Some(r) = read_ref(gd, rev)
        {
            return Ok(r);
        }
        let out = self
            .command(["rev-parse", "--verify", "--quiet", rev])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::GitMissing(e.to_string()))?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()))
    }

    pub fn cat_file(&self) -> Result<CatFile> {
        CatFile::start(self)
    }
}

/// A boolean from a [`Git::config_map`], read with git's rules (true/yes/on/1, false/no/off/0,
/// other integers by their value); `default` when unset or unreadable.
pub fn config_flag(
    config: &std::collections::HashMap<String, String>,
    name: &str,
    default: bool,
) -> bool {
    match config.get(name).map(|v| v.to_ascii_lowercase()) {
        None => default,
        Some(v) => match v.as_str() {
            "true" | "yes" | "on" => true,
            "false" | "no" | "off" | "" => false,
            n => n.parse::<i64>().map(|i| i != 0).unwrap_or(default),
        },
    }
}

/// Reads `HEAD` or a full ref name (`refs/...`) from the files backend without running git:
/// the loose file, else `packed-refs`. `None` means "ask git" (not a plain ref name, or
/// something unusual); `Some(None)` means the ref does not exist.
pub fn read_ref(git_dir: &Path, name: &str) -> Option<Option<String>> {
    let plain = name == "HEAD"
        || (name.starts_with("refs/")
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b))
            && !name.contains("..")
            && !name.ends_with(".lock"));
    if !plain {
        return None;
    }
    let mut name = name.to_string();
    for _ in 0..5 {
        match std::fs::read(git_dir.join(&name)) {
            Ok(c) => {
                let c = String::from_utf8(c).ok()?;
                let c = c.trim_end();
                if let Some(target) = c.strip_prefix("ref: ") {
                    if !target.starts_with("refs/") {
                        return None;
                    }
                    name = target.to_string();
                    continue;
                }
                return (c.len() == 40 && c.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| Some(c.to_string()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => return Some(None),
            Err(_) => return None,
        }
        return packed_ref(git_dir, &name);
    }
    None
}

/// The git directory of the repository at a local path, as `git fetch` / `git push` to that
/// path find it (`<path>/.git`, else `<path>` itself when bare), when its refs can be read from
/// disk. `None` for anything else: a `.git` file (linked worktree, separate git dir), a symlink,
/// a linked worktree's directory (`commondir`), the reftable backend, not a repository.
pub fn local_git_dir(path: &Path) -> Option<PathBuf> {
    let dotgit = path.join(".git");
    let dir = match std::fs::symlink_metadata(&dotgit) {
        Ok(m) if m.is_dir() => dotgit,
        Ok(_) => return None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => path.to_path_buf(),
        Err(_) => return None,
    };
    let is = |name: &str, dir_wanted: bool| {
        std::fs::symlink_metadata(dir.join(name))
            .is_ok_and(|m| if dir_wanted { m.is_dir() } else { m.is_file() })
    };
    let plain = is("HEAD", false)
        && is("refs", true)
        && is("objects", true)
        && !dir.join("commondir").exists()
        && !dir.join("reftable").exists();
    plain.then_some(dir)
}

/// Every ref whose name starts with one of `prefixes` (`refs/heads/`, ...), read from the files
/// backend without running git: the loose files first, then `packed-refs`, the order git's
/// own reader uses (a `pack-refs` running meanwhile makes a ref vanish, which reads as a
/// change, never as an older value). Symbolic refs resolve to their target's value.
/// `None` at the least doubt: a lock file (an update under way), a value that is not a SHA-1,
/// a name git would not accept, a dangling symbolic ref, an unreadable file or an unknown
/// `packed-refs` line, a linked worktree or reftable.
pub fn read_refs(
    git_dir: &Path,
    prefixes: &[&str],
) -> Option<std::collections::BTreeMap<String, String>> {
    use std::collections::BTreeMap;
    if git_dir.join("commondir").exists() || git_dir.join("reftable").exists() {
        return None;
    }
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    let mut symbolic: BTreeMap<String, String> = BTreeMap::new();
    let wanted = |name: &str| prefixes.iter().any(|p| name.starts_with(p));
    // Loose refs: walk each prefix's directory (prefixes end at a `/`; one inside another is
    // walked once).
    if prefixes
        .iter()
        .any(|p| !p.starts_with("refs/") || !p.ends_with('/'))
    {
        return None;
    }
    let mut dirs: Vec<String> = prefixes
        .iter()
        .filter(|p| !prefixes.iter().any(|q| q != *p && p.starts_with(q)))
        .map(|p| p.trim_end_matches('/').to_string())
        .collect();
    dirs.sort();
    dirs.dedup();
    while let Some(dir) = dirs.pop() {
        let rd = match std::fs::read_dir(git_dir.join(&dir)) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => return None,
        };
        for ent in rd {
            let ent = ent.ok()?;
            let file = ent.file_name().into_string().ok()?;
            let name = format!("{dir}/{file}");
            if !valid_ref_name(&name) {
                return None;
            }
            let ft = ent.file_type().ok()?;
            if ft.is_dir() {
                dirs.push(name);
                continue;
            }
            if !ft.is_file() {
                // A symlink (an old-style symbolic ref) or something stranger.
                return None;
            }
            // A file listed but gone: a concurrent pack-refs or deletion; say "unsure".
            let content = std::fs::read(ent.path()).ok()?;
            let content = String::from_utf8(content).ok()?;
            let content = content.trim_end();
            match content.strip_prefix("ref: ") {
                Some(target) if valid_ref_name(target) => {
                    symbolic.insert(name, target.to_string());
                }
                Some(_) => return None,
                None if is_sha1(content) => {
                    values.insert(name, content.to_string());
                }
                None => return None,
            }
        }
    }
    // Then packed refs; a loose ref of the same name wins.
    let packed = packed_refs(git_dir)?;
    for (name, sha) in &packed {
        if wanted(name) && !values.contains_key(name) && !symbolic.contains_key(name) {
            values.insert(name.clone(), sha.clone());
        }
    }
    let resolve = |start: &str| -> Option<String> {
        let mut t = start;
        for _ in 0..5 {
            match symbolic.get(t) {
                Some(next) => t = next,
                // A target outside the prefixes: its loose file was not read.
                None => return values.get(t).filter(|_| wanted(t)).cloned(),
            }
        }
        None
    };
    let resolved: Vec<(String, Option<String>)> = symbolic
        .keys()
        .map(|name| (name.clone(), resolve(name)))
        .collect();
    for (name, value) in resolved {
        values.insert(name, value?);
    }
    Some(values)
}

/// The refs of `packed-refs` (name → value; an absent file holds none). `None` when it cannot
/// be read or has a line git would not write.
pub(crate) fn packed_refs(git_dir: &Path) -> Option<std::collections::BTreeMap<String, String>> {
    let mut packed = std::collections::BTreeMap::new();
    each_packed_ref(git_dir, true, |name, sha| {
        packed.insert(name.to_string(), sha.to_string());
    })?;
    Some(packed)
}

/// The value of one ref in `packed-refs` (`None` inside: not there), `wanted` being a name
/// [`read_ref`] checked, without building the whole map: a `gc` may have packed thousands of
/// refs, and the daemon reads single refs often. Every line must have git's shape; the other
/// names are not checked (git reads a bad one as a broken ref, not as a broken file).
fn packed_ref(git_dir: &Path, wanted: &str) -> Option<Option<String>> {
    let mut found = None;
    each_packed_ref(git_dir, false, |name, sha| {
        if name == wanted {
            found = Some(sha.to_string());
        }
    })?;
    Some(found)
}

/// Calls `each(name, value)` for every ref of `packed-refs`; `None` when it cannot be read or
/// has a line git would not write (an absent file holds no refs), its names checked too
/// if `names`.
fn each_packed_ref(git_dir: &Path, names: bool, mut each: impl FnMut(&str, &str)) -> Option<()> {
    let data = match std::fs::read(git_dir.join("packed-refs")) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(()),
        Err(_) => return None,
    };
    for line in data.split(|&b| b == b'\n') {
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        let line = std::str::from_utf8(line).ok()?;
        if let Some(peeled) = line.strip_prefix('^') {
            if !is_sha1(peeled) {
                return None;
            }
            continue;
        }
        let (sha, name) = line.split_once(' ')?;
        if !is_sha1(sha) || (names && !valid_ref_name(name)) {
            return None;
        }
        each(name, sha);
    }
    Some(())
}

/// The id git gives an object of this kind (`blob`, `tree`, `commit`, `tag`) and content.
pub fn object_id(kind: &str, data: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    let mut h = Sha1::new();
    h.update(format!("{kind} {}\0", data.len()).as_bytes());
    h.update(data);
    crate::key::hex(&h.finalize())
}

pub(crate) fn is_sha1(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A full ref name git accepts (`git check-ref-format` rules, more strictly: no control
/// characters, spaces or `~^:?*[\\`, no `..` or `@{`, no component starting with `.` or ending
/// with `.lock`, no trailing `/` or `.`).
fn valid_ref_name(name: &str) -> bool {
    name.starts_with("refs/")
        && !name.ends_with('/')
        && !name.ends_with('.')
        && !name.contains("..")
        && !name.contains("@{")
        && !name
            .bytes()
            .any(|b| b < 0x20 || b == 0x7f || b" ~^:?*[\\".contains(&b))
        && name
            .split('/')
            .all(|c| !c.is_empty() && !c.starts_with('.') && !c.ends_with(".lock"))
}

fn describe(cmd: &Command) -> String {
    let args: Vec<String> = cmd
        .get_args()
        .skip(2)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    format!("git {}", args.join(" "))
}

/// Starts a git batch process with piped stdin/stdout (stderr goes to ours).
fn spawn_batch(git: &Git, args: &[&str]) -> Result<(Child, ChildStdin, BufReader<ChildStdout>)> {
    let mut child = git
        .command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::GitMissing(e.to_string()))?;
    let stdin = child.stdin.take().expect("piped");
    let stdout = BufReader::with_capacity(1 << 16, child.stdout.take().expect("piped"));
    Ok((child, stdin, stdout))
}

/// Reads one `cat-file --batch` reply: `None` for a missing object.
fn read_batch_object(stdout: &mut impl BufRead) -> Result<Option<Object>> {
    let broken = |e: std::io::Error| Error::io("reading from git cat-file", e);
    let mut header = Vec::new();
    stdout.read_until(b'\n', &mut header).map_err(broken)?;
    if header.is_empty() {
        return Err(Error::Protocol("git cat-file ended early".into()));
    }
    if header.ends_with(b" missing\n") || header.ends_with(b" ambiguous\n") {
        return Ok(None);
    }
    let h = String::from_utf8_lossy(&header);
    let mut parts = h.split_whitespace();
    let (Some(_), Some(kind), Some(size)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Error::Protocol(format!(
            "unexpected git cat-file output: {h:?}"
        )));
    };
    let size: usize = size
        .parse()
        .map_err(|_| Error::Protocol(format!("bad size in {h:?}")))?;
    let mut data = vec![0u8; size + 1];
    stdout.read_exact(&mut data).map_err(broken)?;
    data.pop();
    Ok(Some((kind.to_string(), data)))
}

/// A long-running `git cat-file --batch`: one process for any number of blob reads.
pub struct CatFile {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl CatFile {
    fn start(git: &Git) -> Result<CatFile> {
        let (child, stdin, stdout) = spawn_batch(git, &["cat-file", "--batch"])?;
        Ok(CatFile {
            child,
            stdin,
            stdout,
        })
    }

    /// The content of `rev` (e.g. `git-annex:uuid.log` or a blob id), `None` if it is missing.
    pub fn get(&mut self, rev: &[u8]) -> Result<Option<Object>> {
        let broken = |e: std::io::Error| Error::io("talking to git cat-file", e);
        if rev.contains(&b'\n') {
            return Ok(None);
        }
        self.stdin.write_all(rev).map_err(broken)?;
        self.stdin.write_all(b"\n").map_err(broken)?;
        self.stdin.flush().map_err(broken)?;
        read_batch_object(&mut self.stdout)
    }
}

impl Drop for CatFile {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads many objects in one pipelined `git cat-file --batch` run: all requests are written on a
/// thread while the replies are read, so there is no round trip per object.
/// Returns, per request, `(type, content)` or `None` when missing.
pub fn cat_many(git: &Git, revs: &[Vec<u8>]) -> Result<Vec<Option<Object>>> {
    if revs.is_empty() {
        return Ok(Vec::new());
    }
    let (mut child, mut stdin, mut stdout) = spawn_batch(git, &["cat-file", "--batch"])?;
    let mut input = Vec::with_capacity(revs.len() * 64);
    for r in revs {
        // A name with a newline cannot be asked for; ask for something that is surely missing.
        input.extend_from_slice(if r.contains(&b'\n') {
            b"0000000000000000000000000000000000000000"
        } else {
            r
        });
        input.push(b'\n');
    }
    let writer = std::thread::spawn(move || {
        let r = stdin.write_all(&input);
        drop(stdin);
        r
    });
    let mut out = Vec::with_capacity(revs.len());
    for _ in revs {
        out.push(read_batch_object(&mut stdout)?);
    }
    let _ = writer.join();
    let _ = child.wait();
    Ok(out)
}

/// Sizes of many objects in one pipelined `git cat-file --batch-check` run.
pub fn sizes_many(git: &Git, shas: &[&str]) -> Result<Vec<Option<u64>>> {
    if shas.is_empty() {
        return Ok(Vec::new());
    }
    let mut input = String::with_capacity(shas.len() * 41);
    for s in shas {
        input.push_str(s);
        input.push('\n');
    }
    let out = git.run_with_input(
        ["cat-file", "--batch-check=%(objectsize)"],
        input.as_bytes(),
    )?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .map(|l| l.parse().ok())
        .collect())
}

/// A long-running `git check-attr -z --stdin <attr>` for one attribute, queried path by path.
pub struct CheckAttr {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl CheckAttr {
    pub fn start(git: &Git, attr: &str) -> Result<CheckAttr> {
        let (child, stdin, stdout) = spawn_batch(git, &["check-attr", "-z", "--stdin", attr])?;
        Ok(CheckAttr {
            child,
            stdin,
            stdout,
        })
    }

    /// The attribute's value for `path`; `None` when unspecified or unset.
    pub fn get(&mut self, path: &[u8]) -> Result<Option<Vec<u8>>> {
        let broken = |e: std::io::Error| Error::io("talking to git check-attr", e);
        self.stdin.write_all(path).map_err(broken)?;
        self.stdin.write_all(b"\0").map_err(broken)?;
        self.stdin.flush().map_err(broken)?;
        let mut field = Vec::new();
        let mut value = Vec::new();
        for i in 0..3 {
            field.clear();
            self.stdout.read_until(0, &mut field).map_err(broken)?;
            if field.last() != Some(&0) {
                return Err(Error::Protocol("git check-attr ended early".into()));
            }
            field.pop();
            if i == 2 {
                value = field.clone();
            }
        }
        Ok((value != b"unspecified" && value != b"unset" && !value.is_empty()).then_some(value))
    }
}

impl Drop for CheckAttr {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_flags_follow_gits_boolean_rules() {
        let m: std::collections::HashMap<String, String> = [
            ("a", "Yes"),
            ("b", "off"),
            ("c", "2"),
            ("d", "0"),
            ("e", ""),
            ("f", "maybe"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert!(config_flag(&m, "a", false));
        assert!(!config_flag(&m, "b", true));
        assert!(config_flag(&m, "c", false));
        assert!(!config_flag(&m, "d", true));
        assert!(!config_flag(&m, "e", true));
        assert!(config_flag(&m, "f", true) && !config_flag(&m, "f", false));
        assert!(config_flag(&m, "unset", true));
    }

    #[test]
    fn plain_refs_are_read_from_files_and_packed_refs() {
        let d = tempfile::tempdir().unwrap();
        let g = d.path();
        std::fs::create_dir_all(g.join("refs/heads")).unwrap();
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        std::fs::write(g.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(g.join("refs/heads/main"), format!("{a}\n")).unwrap();
        std::fs::write(
            g.join("packed-refs"),
            format!("# pack-refs with: peeled fully-peeled sorted\n{b} refs/heads/old\n"),
        )
        .unwrap();
        assert_eq!(read_ref(g, "HEAD"), Some(Some(a.clone())));
        assert_eq!(read_ref(g, "refs/heads/old"), Some(Some(b.clone())));
        assert_eq!(read_ref(g, "refs/heads/none"), Some(None));
        assert_eq!(read_ref(g, "HEAD^{tree}"), None, "not a plain ref: ask git");
        // A peeled tag line is read past; a line git would not write anywhere: ask git.
        let c = "c".repeat(40);
        let packed = format!("{b} refs/heads/old\n{c} refs/tags/t\n^{a}\n");
        std::fs::write(g.join("packed-refs"), &packed).unwrap();
        assert_eq!(read_ref(g, "refs/tags/t"), Some(Some(c)));
        std::fs::write(
            g.join("packed-refs"),
            format!("{packed}xyz refs/heads/bad\n"),
        )
        .unwrap();
        assert_eq!(read_ref(g, "refs/heads/old"), None);
    }

    /// Runs git in `dir` (no user config needed: identities are given).
    fn git_in(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "init.defaultBranch=main",
            ])
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn all_refs_read_from_disk_are_what_git_lists() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        git_in(r, &["init", "-q"]);
        for i in 0..3 {
            git_in(r, &["commit", "-q", "--allow-empty", "-m", &i.to_string()]);
            git_in(r, &["branch", &format!("b{i}")]);
            git_in(r, &["branch", &format!("deep/er/b{i}")]);
        }
        git_in(r, &["tag", "-a", "-m", "annotated", "v1", "b0"]);
        git_in(r, &["tag", "light", "b1"]);
        git_in(r, &["update-ref", "refs/remotes/origin/main", "b2"]);
        git_in(
            r,
            &[
                "symbolic-ref",
                "refs/remotes/origin/HEAD",
                "refs/remotes/origin/main",
            ],
        );
        // Some packed, then some moved again as loose refs over their packed value.
        git_in(r, &["pack-refs", "--all"]);
        git_in(r, &["update-ref", "refs/heads/b0", "b2"]);
        git_in(r, &["branch", "new-loose", "b1"]);
        let g = r.join(".git");
        assert!(!g.join("refs/heads/b1").exists() && g.join("refs/heads/b0").exists());
        let listed = |prefixes: &[&str]| -> BTreeMap<String, String> {
            let mut args = vec!["for-each-ref", "--format=%(refname) %(objectname)"];
            args.extend(prefixes);
            git_in(r, &args)
                .lines()
                .map(|l| {
                    let (n, v) = l.split_once(' ').unwrap();
                    (n.to_string(), v.to_string())
                })
                .collect()
        };
        use std::collections::BTreeMap;
        for prefixes in [
            &["refs/"][..],
            &["refs/heads/", "refs/tags/"],
            &["refs/remotes/"],
            &["refs/heads/deep/", "refs/heads/"],
        ] {
            assert_eq!(
                read_refs(&g, prefixes).as_ref(),
                Some(&listed(prefixes)),
                "{prefixes:?}"
            );
        }
        assert_eq!(local_git_dir(r), Some(g.clone()));
        assert_eq!(
            local_git_dir(&g),
            Some(g.clone()),
            "a git dir given as is (bare)"
        );

        // Doubts: an update under way, a dangling symbolic ref, a value that is not an id.
        std::fs::write(g.join("refs/heads/b2.lock"), "x").unwrap();
        assert_eq!(read_refs(&g, &["refs/heads/"]), None);
        assert!(
            read_refs(&g, &["refs/tags/"]).is_some(),
            "only what is read counts"
        );
        std::fs::remove_file(g.join("refs/heads/b2.lock")).unwrap();
        git_in(
            r,
            &["symbolic-ref", "refs/heads/dangling", "refs/heads/nowhere"],
        );
        assert_eq!(read_refs(&g, &["refs/heads/"]), None);
        std::fs::remove_file(g.join("refs/heads/dangling")).unwrap();
        std::fs::write(g.join("refs/heads/broken"), "not an id\n").unwrap();
        assert_eq!(read_refs(&g, &["refs/heads/"]), None);
        std::fs::remove_file(g.join("refs/heads/broken")).unwrap();
        assert!(read_refs(&g, &["refs/heads/"]).is_some());

        // Layouts left to git: a linked worktree (a .git file), reftable, not a repository.
        let wt = d.path().join("wt");
        git_in(r, &["worktree", "add", "-q", wt.to_str().unwrap(), "b1"]);
        assert_eq!(local_git_dir(&wt), None);
        assert_eq!(read_refs(&g.join("worktrees/wt"), &["refs/heads/"]), None);
        let rt = d.path().join("rt");
        git_in(d.path(), &["init", "-q", "--ref-format=reftable", "rt"]);
        assert_eq!(local_git_dir(&rt), None);
        assert_eq!(local_git_dir(&d.path().join("nothing")), None);
    }
}

/// One writer of the work tree's index at a time within this process: the daemon's committer,
/// merger and transfer workers all touch it, and git refuses (`index.lock: File exists`) rather
/// than waits. Reentrant, so a merge that holds it can stage files.
pub struct IndexGuard(());

static INDEX_OWNER: std::sync::Mutex<(Option<std::thread::ThreadId>, usize)> =
    std::sync::Mutex::new((None, 0));
static INDEX_FREED: std::sync::Condvar = std::sync::Condvar::new();

/// Takes this process's index lock (see [`IndexGuard`]); released on drop.
pub fn index_lock() -> IndexGuard {
    let me = std::thread::current().id();
    let mut owner = INDEX_OWNER.lock().unwrap_or_else(|e| e.into_inner());
    while owner.0.is_some_and(|t| t != me) {
        owner = INDEX_FREED.wait(owner).unwrap_or_else(|e| e.into_inner());
    }
    owner.0 = Some(me);
    owner.1 += 1;
    IndexGuard(())
}

impl Drop for IndexGuard {
    fn drop(&mut self) {
        let mut owner = INDEX_OWNER.lock().unwrap_or_else(|e| e.into_inner());
        owner.1 -= 1;
        if owner.1 == 0 {
            owner.0 = None;
            INDEX_FREED.notify_all();
        }
    }
}

/// Whether a git failure is another process holding the index lock (a user's `git status`
/// refreshing the index, git-annex): worth waiting for.
pub fn is_index_lock_busy(e: &Error) -> bool {
    matches!(e, Error::Git { stderr, .. } if stderr.contains("index.lock") && stderr.contains("File exists"))
}

impl Git {
    /// Runs a git command that writes the index: holds this process's index lock, and waits
    /// (up to 10 s) while another process holds git's.
    pub fn run_index<I, S>(&self, args: I, input: &[u8]) -> Result<Vec<u8>>
    where
        I: IntoIterator<Item = S> + Clone,
        S: AsRef<OsStr>,
    {
        let _guard = index_lock();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut pause = std::time::Duration::from_millis(5);
        loop {
            match self.run_with_input(args.clone(), input) {
                Err(e) if is_index_lock_busy(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(100));
                }
                r => return r,
            }
        }
    }
}

#[cfg(test)]
mod index_lock_tests {
    use super::*;

    #[test]
    fn index_lock_is_reentrant_and_excludes_other_threads() {
        let outer = index_lock();
        let inner = index_lock(); // same thread: no deadlock
        let taken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let t = {
            let taken = taken.clone();
            std::thread::spawn(move || {
                let _g = index_lock();
                taken.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!taken.load(std::sync::atomic::Ordering::SeqCst));
        drop(inner);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !taken.load(std::sync::atomic::Ordering::SeqCst),
            "still held once"
        );
        drop(outer);
        t.join().unwrap();
        assert!(taken.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn run_index_waits_for_another_processes_index_lock() {
        let d = tempfile::tempdir().unwrap();
        let git = Git::new(d.path());
        git.run(["init", "-q"]).unwrap();
        std::fs::write(d.path().join("f"), "x").unwrap();
        let lock = d.path().join(".git/index.lock");
        std::fs::write(&lock, "").unwrap();
        let l = lock.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            std::fs::remove_file(l).unwrap();
        });
        git.run_index(["add", "f"], &[]).unwrap();
        t.join().unwrap();
        assert!(git.run_str(["ls-files"]).unwrap().contains('f'));
    }
}
