//! numcopies and mincopies, per file, as git-annex decides them (10.20230126,
//! `Annex.NumCopies`, checked against `git annex drop` and `git annex find --want-drop`).
//!
//! Where the numbers come from, first found wins:
//!
//! - numcopies: the file's `annex.numcopies` git attribute (`.gitattributes`,
//!   `.git/info/attributes`, the global and system attribute files), then `numcopies.log` on
//!   the git-annex branch (`ferry numcopies`), then the deprecated `annex.numcopies` git
//!   config, then 1;
//! - mincopies: the `annex.mincopies` attribute, then `mincopies.log`, then (ferry only) the
//!   `annex.mincopies` git config, then 1.
//!
//! A value below 1 counts as 1. A **drop** must satisfy the highest numcopies and mincopies of
//! every file that has the same content (git-annex's `getSafestNumMinCopies`), so one file's
//! lower setting never lets a copy go that another file needs. The preferred content term
//! `lackingcopies=N` uses the file's own attribute, else `numcopies.log`, else 1 (not the git
//! config); `approxlackingcopies=N` only `numcopies.log`, else 1.
//!
//! Attributes cost a `git check-attr` over the files, which for 100,000 files takes a good
//! part of a second. So it runs only when some attribute file could set these attributes:
//! [`scope`] reads the `.gitattributes` files that can apply (those in the index, and those in
//! the work tree in the directories of the files asked about), `info/attributes` and the
//! global and system files, and looks for the words `numcopies` / `mincopies`. Without them
//! (nearly always) nothing more is run; with them, only the files under a directory whose
//! `.gitattributes` mentions them are checked, in one `check-attr` call. (A `.gitattributes`
//! git does not track, in a directory none of the files asked about is in, is not seen when
//! only some files are asked about; the daemon commits such a file at once.)

use crate::annexed::AnnexedFile;
use crate::error::Result;
use crate::key::Key;
use crate::repo::Repo;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};

/// Where a numcopies or mincopies value comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Origin {
    /// Nothing set: 1.
    Default,
    /// `annex.numcopies` / `annex.mincopies` in git config.
    GitConfig,
    /// `numcopies.log` / `mincopies.log` on the git-annex branch.
    Log,
    /// The `annex.numcopies` / `annex.mincopies` attribute of `file` (the file asked about, or
    /// another file with the same content whose setting is higher).
    Gitattributes { file: String },
}

impl Origin {
    /// Words for a person: "numcopies.log", "the annex.numcopies git config", ...
    pub fn describe(&self, what: &str) -> String {
        match self {
            Origin::Default => "default".to_string(),
            Origin::GitConfig => format!("git config annex.{what}"),
            Origin::Log => format!("{what}.log"),
            Origin::Gitattributes { file } => format!(".gitattributes annex.{what} of {file}"),
        }
    }
}

/// One resolved value and where it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Setting {
    pub n: u32,
    pub from: Origin,
}

impl Setting {
    /// The repository-wide value: the git-annex branch's log, else the (deprecated) git
    /// config, else 1.
    fn of(log: Option<u32>, config: Option<u32>) -> Setting {
        match (log, config) {
            (Some(n), _) => Setting {
                n,
                from: Origin::Log,
            },
            (None, Some(n)) => Setting {
                n,
                from: Origin::GitConfig,
            },
            (None, None) => Setting {
                n: 1,
                from: Origin::Default,
            },
        }
    }
}

/// numcopies and mincopies that apply to a file (or to dropping a key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Need {
    pub numcopies: Setting,
    pub mincopies: Setting,
}

/// A file's `annex.numcopies` / `annex.mincopies` attributes, when set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attrs {
    pub numcopies: Option<u32>,
    pub mincopies: Option<u32>,
}

impl Attrs {
    pub fn is_empty(&self) -> bool {
        self.numcopies.is_none() && self.mincopies.is_none()
    }
}

/// A number as git-annex reads one from a log, attribute or config: below 1 counts as 1, a
/// value that is not a number is not set.
pub fn parse_count(v: &str) -> Option<u32> {
    let n: i64 = v.trim().parse().ok()?;
    Some(n.clamp(1, i64::from(u32::MAX)) as u32)
}

/// The repository-wide values (no attributes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Global {
    pub numcopies_log: Option<u32>,
    pub numcopies_config: Option<u32>,
    pub mincopies_log: Option<u32>,
    pub mincopies_config: Option<u32>,
}

/// The count a `numcopies.log` / `mincopies.log` on the git-annex branch sets (journal
/// first; at least 1), if any.
pub fn log_count(repo: &Repo, log: &[u8]) -> Result<Option<u32>> {
    Ok(repo
        .branch
        .read(log)?
        .and_then(|c| crate::logs::parse_numcopies(&c))
        .map(|n| n.max(1)))
}

impl Global {
    /// Reads the logs (journal first) and git config (afresh: the daemon's repository handle
    /// lives long).
    pub fn load(repo: &Repo) -> Result<Global> {
        let mut g = Global {
            numcopies_log: log_count(repo, b"numcopies.log")?,
            mincopies_log: log_count(repo, b"mincopies.log")?,
            ..Default::default()
        };
        // One git for both settings.
        let out = repo
            .git
            .run_opt(["config", "--get-regexp", r"^annex\.(num|min)copies$"])?;
        for line in out.unwrap_or_default().lines() {
            let Some((k, v)) = line.split_once(' ') else {
                continue;
            };
            match k {
                "annex.numcopies" => g.numcopies_config = parse_count(v),
                "annex.mincopies" => g.mincopies_config = parse_count(v),
                _ => {}
            }
        }
        Ok(g)
    }

    pub fn numcopies(&self) -> Setting {
        Setting::of(self.numcopies_log, self.numcopies_config)
    }

    pub fn mincopies(&self) -> Setting {
        Setting::of(self.mincopies_log, self.mincopies_config)
    }

    pub fn need(&self) -> Need {
        Need {
            numcopies: self.numcopies(),
            mincopies: self.mincopies(),
        }
    }

    /// What `approxlackingcopies=` compares with: `numcopies.log`, else 1.
    pub fn approx_numcopies(&self) -> u32 {
        self.numcopies_log.unwrap_or(1)
    }

    /// The need of a file with attributes `a` (git-annex's `getFileNumMinCopies`).
    pub fn with_attrs(&self, path: &[u8], a: Attrs) -> Need {
        let from_attr = |n| Setting {
            n,
            from: Origin::Gitattributes {
                file: String::from_utf8_lossy(path).into_owned(),
            },
        };
        Need {
            numcopies: a.numcopies.map_or_else(|| self.numcopies(), from_attr),
            mincopies: a.mincopies.map_or_else(|| self.mincopies(), from_attr),
        }
    }
}

/// The higher of two settings; on a tie the first.
fn higher(a: Setting, b: Setting) -> Setting {
    if b.n > a.n { b } else { a }
}

/// numcopies and mincopies of a set of files: the repository-wide values, and the attributes
/// of the files that have any.
#[derive(Clone, Debug, Default)]
pub struct FileCopies {
    pub global: Global,
    /// Files whose attributes set numcopies or mincopies (usually none).
    attrs: HashMap<Vec<u8>, Attrs>,
    /// What a drop of each key needs, for keys one of whose files has attributes: the highest
    /// values over every file of the key.
    by_key: HashMap<Key, Need>,
}

impl FileCopies {
    /// Only the repository-wide values (no file has attributes).
    pub fn global_only(global: Global) -> FileCopies {
        FileCopies {
            global,
            ..Default::default()
        }
    }

    /// From known attributes (tests, and callers that read them another way).
    pub fn with_attrs<'a>(
        global: Global,
        files: impl IntoIterator<Item = (&'a AnnexedFile, Attrs)>,
    ) -> FileCopies {
        let mut c = FileCopies::global_only(global);
        let files: Vec<(&AnnexedFile, Attrs)> = files.into_iter().collect();
        for (f, a) in &files {
            if !a.is_empty() {
                c.attrs.insert(f.path.clone(), *a);
            }
        }
        let keys: HashSet<&Key> = files
            .iter()
            .filter(|(_, a)| !a.is_empty())
            .map(|(f, _)| &f.key)
            .collect();
        for (f, _) in files.iter().filter(|(f, _)| keys.contains(&f.key)) {
            let need = c.of_file(&f.path);
            let merged = match c.by_key.remove(&f.key) {
                None => need,
                Some(n) => Need {
                    numcopies: higher(n.numcopies, need.numcopies),
                    mincopies: higher(n.mincopies, need.mincopies),
                },
            };
            c.by_key.insert(f.key.clone(), merged);
        }
        c
    }

    /// Reads the repository-wide values and the attributes of `files`, which must hold every
    /// file of each of their keys when `all_of_their_keys` (else, when attributes are in use,
    /// the other files of those keys are found in a listing of the whole tree).
    pub fn load(repo: &Repo, files: &[AnnexedFile], all_of_their_keys: bool) -> Result<FileCopies> {
        let outside = if files.is_empty() {
            OutsideFiles::default()
        } else {
            OutsideFiles::find(repo)?
        };
        FileCopies::load_with(repo, files, all_of_their_keys, &outside)
    }

    /// [`FileCopies::load`] with the attribute files outside the work tree found earlier (the
    /// daemon finds them once, and again when git config changes).
    pub fn load_with(
        repo: &Repo,
        files: &[AnnexedFile],
        all_of_their_keys: bool,
        outside: &OutsideFiles,
    ) -> Result<FileCopies> {
        let global = Global::load(repo)?;
        if files.is_empty() {
            return Ok(FileCopies::global_only(global));
        }
        let paths: Vec<&[u8]> = files.iter().map(|f| f.path.as_slice()).collect();
        let mut sc = scope(repo, &paths, outside)?;
        if sc == Scope::Nowhere {
            return Ok(FileCopies::global_only(global));
        }
        let extra;
        let files: Vec<&AnnexedFile> = if all_of_their_keys {
            files.iter().collect()
        } else {
            let keys: HashSet<&Key> = files.iter().map(|f| &f.key).collect();
            let have: HashSet<&[u8]> = paths.iter().copied().collect();
            extra = crate::annexed::annexed_files(&repo.git, &[])?;
            let more: Vec<&AnnexedFile> = extra
                .iter()
                .filter(|f| keys.contains(&f.key) && !have.contains(f.path.as_slice()))
                .collect();
            if !more.is_empty() && sc != Scope::Everywhere {
                // Their directories may hold attribute files git does not track.
                let all: Vec<&[u8]> = paths
                    .iter()
                    .copied()
                    .chain(more.iter().map(|f| f.path.as_slice()))
                    .collect();
                sc = scope(repo, &all, outside)?;
            }
            files.iter().chain(more).collect()
        };
        let asked: Vec<&[u8]> = files
            .iter()
            .map(|f| f.path.as_slice())
            .filter(|p| sc.covers(p))
            .collect();
        let attrs = check_attrs(repo, &asked)?;
        Ok(FileCopies::with_attrs(
            global,
            files.into_iter().map(|f| {
                let a = attrs.get(f.path.as_slice()).copied().unwrap_or_default();
                (f, a)
            }),
        ))
    }

    /// Whether any file has attributes (else every answer is the repository-wide one).
    pub fn any_attrs(&self) -> bool {
        !self.attrs.is_empty()
    }

    /// The attributes of `path` (none when it has none, or was not among the files loaded).
    pub fn attrs(&self, path: &[u8]) -> Attrs {
        if self.attrs.is_empty() {
            return Attrs::default();
        }
        self.attrs.get(path).copied().unwrap_or_default()
    }

    /// What applies to the file itself (fsck's check; git-annex's `getFileNumMinCopies`).
    pub fn of_file(&self, path: &[u8]) -> Need {
        self.global.with_attrs(path, self.attrs(path))
    }

    /// What dropping `key` needs: the highest values over the files that have it.
    pub fn of_key(&self, key: &Key) -> Need {
        if self.by_key.is_empty() {
            return self.global.need();
        }
        self.by_key
            .get(key)
            .cloned()
            .unwrap_or_else(|| self.global.need())
    }

    /// [`FileCopies::of_key`] as numbers (numcopies, mincopies), without copying names.
    pub fn counts_for_key(&self, key: &Key) -> (u32, u32) {
        match self.by_key.get(key) {
            Some(n) => (n.numcopies.n, n.mincopies.n),
            None => (self.global.numcopies().n, self.global.mincopies().n),
        }
    }

    /// Makes a drop of `key` need at least `need` (a value planned earlier, from files that
    /// are not among those loaded now).
    pub fn raise(&mut self, key: &Key, need: &Need) {
        let cur = self.of_key(key);
        let merged = Need {
            numcopies: higher(cur.numcopies, need.numcopies.clone()),
            mincopies: higher(cur.mincopies, need.mincopies.clone()),
        };
        if merged == self.global.need() {
            self.by_key.remove(key);
        } else {
            self.by_key.insert(key.clone(), merged);
        }
    }
}

/// Which files attributes could give numcopies or mincopies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// No attribute file mentions them: no file has them.
    Nowhere,
    /// Every file may have them (the top-level `.gitattributes`, `info/attributes`, the global
    /// or system file mention them, or the repository is bare).
    Everywhere,
    /// Files under these directories (repo-relative, no trailing slash).
    Under(BTreeSet<Vec<u8>>),
}

impl Scope {
    /// Whether `path` may have the attributes.
    pub fn covers(&self, path: &[u8]) -> bool {
        match self {
            Scope::Nowhere => false,
            Scope::Everywhere => true,
            Scope::Under(dirs) => ancestors(path).any(|d| dirs.contains(d)),
        }
    }
}

/// The directories a path is in, innermost first, without the top (`a/b/f` → `a/b`, `a`).
fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut end = path.len();
    std::iter::from_fn(move || {
        let i = path[..end].iter().rposition(|&b| b == b'/')?;
        end = i;
        Some(&path[..i])
    })
}

/// Whether an attribute file's text could set numcopies or mincopies (also through a macro:
/// a macro is defined in the top-level file, which is then found to mention them).
fn mentions(text: &[u8]) -> bool {
    let lower = text.to_ascii_lowercase();
    [&b"numcopies"[..], b"mincopies"]
        .iter()
        .any(|w| lower.windows(w.len()).any(|x| x == *w))
}

/// The attribute files outside the work tree: `info/attributes`, the global and the system
/// file (where git says they are; their content is read each time).
#[derive(Clone, Debug, Default)]
pub struct OutsideFiles {
    files: Vec<std::path::PathBuf>,
    /// git could not say where they are: every file may have attributes.
    unknown: bool,
}

impl OutsideFiles {
    pub fn find(repo: &Repo) -> Result<OutsideFiles> {
        let mut o = OutsideFiles {
            files: vec![repo.git_dir.join("info").join("attributes")],
            unknown: false,
        };
        for var in ["GIT_ATTR_GLOBAL", "GIT_ATTR_SYSTEM"] {
            match repo.git.run_opt(["var", var]) {
                Ok(Some(p)) if !p.is_empty() => o.files.push(p.into()),
                Ok(_) => {}
                // A git too old to tell: assume the worst.
                Err(_) => o.unknown = true,
            }
        }
        Ok(o)
    }
}

/// Finds which files could have the attributes (see the module docs). `paths` are the files
/// about to be asked about: the work-tree `.gitattributes` of their directories are read even
/// when git does not track them (git honours those too).
pub fn scope(repo: &Repo, paths: &[&[u8]], outside: &OutsideFiles) -> Result<Scope> {
    let Some(top) = repo.top.as_deref() else {
        // A bare repository reads attributes from its tree: ask git about every file.
        return Ok(Scope::Everywhere);
    };
    if outside.unknown
        || outside
            .files
            .iter()
            .any(|p| std::fs::read(p).is_ok_and(|t| mentions(&t)))
    {
        return Ok(Scope::Everywhere);
    }
    // Directories that have a .gitattributes, in the index or in the work tree.
    let listed = repo
        .git
        .run(["ls-files", "-z", "--", ":(top,glob)**/.gitattributes"])?;
    let in_index: HashSet<Vec<u8>> = listed
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| p.to_vec())
        .collect();
    let mut dirs: BTreeSet<Vec<u8>> = BTreeSet::new();
    dirs.insert(Vec::new());
    for p in &in_index {
        dirs.insert(ancestors(p).next().unwrap_or_default().to_vec());
    }
    let mut seen: HashSet<&[u8]> = HashSet::new();
    for p in paths {
        for d in ancestors(p) {
            if !seen.insert(d) {
                break; // its ancestors are in already
            }
            dirs.insert(d.to_vec());
        }
    }
    let file_of = |d: &[u8]| -> Vec<u8> {
        let mut f = d.to_vec();
        if !f.is_empty() {
            f.push(b'/');
        }
        f.extend_from_slice(b".gitattributes");
        f
    };
    let mut found = BTreeSet::new();
    for d in dirs {
        use std::os::unix::ffi::OsStrExt;
        let rel = file_of(&d);
        let text = match std::fs::read(top.join(std::ffi::OsStr::from_bytes(&rel))) {
            Ok(t) => Some(t),
            // git falls back to the index when the work tree lacks the file.
            Err(_) if in_index.contains(&rel) => {
                let mut spec = b":".to_vec();
                spec.extend_from_slice(&rel);
                repo.git
                    .run([
                        std::ffi::OsStr::new("cat-file"),
                        "blob".as_ref(),
                        std::ffi::OsStr::from_bytes(&spec),
                    ])
                    .ok()
            }
            Err(_) => None,
        };
        if text.is_some_and(|t| mentions(&t)) {
            if d.is_empty() {
                return Ok(Scope::Everywhere);
            }
            found.insert(d);
        }
    }
    Ok(if found.is_empty() {
        Scope::Nowhere
    } else {
        Scope::Under(found)
    })
}

/// `annex.numcopies` and `annex.mincopies` of `paths`, in one `git check-attr` run (paths in
/// sorted order: git reads each directory's attributes once per run of paths in it). Only
/// paths with a value are in the result.
pub fn check_attrs(repo: &Repo, paths: &[&[u8]]) -> Result<HashMap<Vec<u8>, Attrs>> {
    let mut out = HashMap::new();
    if paths.is_empty() {
        return Ok(out);
    }
    let mut sorted: Vec<&[u8]> = paths.iter().copied().filter(|p| !p.contains(&0)).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut input = Vec::with_capacity(sorted.iter().map(|p| p.len() + 1).sum());
    for p in &sorted {
        input.extend_from_slice(p);
        input.push(0);
    }
    let res = repo.git.run_with_input(
        [
            "check-attr",
            "-z",
            "--stdin",
            "annex.numcopies",
            "annex.mincopies",
        ],
        &input,
    )?;
    let fields: Vec<&[u8]> = res.split(|&b| b == 0).collect();
    for rec in fields.chunks(3) {
        let [path, attr, value] = rec else { continue };
        let value = String::from_utf8_lossy(value);
        let Some(n) = parse_count(&value) else {
            continue; // unspecified, unset, set (no value) or not a number
        };
        let a: &mut Attrs = out.entry(path.to_vec()).or_default();
        match *attr {
            b"annex.numcopies" => a.numcopies = Some(n),
            b"annex.mincopies" => a.mincopies = Some(n),
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, k: &str) -> AnnexedFile {
        AnnexedFile {
            path: path.as_bytes().to_vec(),
            key: Key::parse_str(&format!("SHA256E-s1--{}.bin", k.repeat(64))).unwrap(),
            locked: true,
        }
    }

    #[test]
    fn counts_parse_as_git_annex_reads_them() {
        assert_eq!(parse_count("2"), Some(2));
        assert_eq!(parse_count("0"), Some(1));
        assert_eq!(parse_count("-3"), Some(1));
        assert_eq!(parse_count("set"), None);
        assert_eq!(parse_count("unspecified"), None);
    }

    #[test]
    fn precedence_attribute_log_config_default() {
        let mut g = Global::default();
        assert_eq!(g.numcopies().from, Origin::Default);
        g.numcopies_config = Some(4);
        assert_eq!(g.numcopies().n, 4);
        assert_eq!(g.numcopies().from, Origin::GitConfig);
        g.numcopies_log = Some(2);
        assert_eq!(g.numcopies().n, 2);
        assert_eq!(g.numcopies().from, Origin::Log);
        // approxlackingcopies: the log, never git config.
        assert_eq!(g.approx_numcopies(), 2);
        g.numcopies_log = None;
        assert_eq!(g.approx_numcopies(), 1);
        // An attribute wins over everything, also when lower.
        let n = g.with_attrs(
            b"a/f",
            Attrs {
                numcopies: Some(1),
                mincopies: None,
            },
        );
        assert_eq!(n.numcopies.n, 1);
        assert_eq!(
            n.numcopies.from,
            Origin::Gitattributes { file: "a/f".into() }
        );
        assert_eq!(n.mincopies.from, Origin::Default);
    }

    #[test]
    fn a_drop_needs_the_highest_setting_of_every_file_of_the_key() {
        let g = Global {
            numcopies_log: Some(2),
            ..Default::default()
        };
        let (a, b, c, d) = (
            file("a.bin", "1"),
            file("b.txt", "1"),
            file("c.bin", "2"),
            file("d.bin", "3"),
        );
        let three = Attrs {
            numcopies: Some(3),
            mincopies: Some(2),
        };
        let one = Attrs {
            numcopies: Some(1),
            mincopies: None,
        };
        let fc = FileCopies::with_attrs(
            g.clone(),
            [
                (&a, Attrs::default()),
                (&b, three),
                (&c, one),
                (&d, Attrs::default()),
            ],
        );
        // a shares its key with b: b's 3 and 2 apply to a drop of either.
        let n = fc.of_key(&a.key);
        assert_eq!((n.numcopies.n, n.mincopies.n), (3, 2));
        assert_eq!(
            n.numcopies.from,
            Origin::Gitattributes {
                file: "b.txt".into()
            }
        );
        // A file's own check is its own.
        assert_eq!(fc.of_file(b"a.bin").numcopies.n, 2);
        // c's attribute lowers its numcopies to 1.
        assert_eq!(fc.of_key(&c.key).numcopies.n, 1);
        assert_eq!(fc.of_key(&d.key), g.need());
        // A need planned earlier can only raise it.
        let mut fc = fc;
        fc.raise(&c.key, &g.need());
        assert_eq!(fc.of_key(&c.key).numcopies.n, 2);
    }

    #[test]
    fn ancestors_and_scope() {
        let a: Vec<&[u8]> = ancestors(b"a/b/f").collect();
        assert_eq!(a, vec![&b"a/b"[..], b"a"]);
        assert_eq!(ancestors(b"f").count(), 0);
        let s = Scope::Under([b"a".to_vec()].into());
        assert!(s.covers(b"a/b/f") && s.covers(b"a/f"));
        assert!(!s.covers(b"ab/f") && !s.covers(b"f") && !s.covers(b"b/a/f"));
        assert!(mentions(b"*.bin annex.numcopies=2\n"));
        assert!(mentions(b"[attr]keep annex.MinCopies=2\n"));
        assert!(!mentions(b"* annex.largefiles=anything\n"));
    }

    /// 100,000 files in 500 directories: without attributes no `check-attr` runs; with one
    /// directory's `.gitattributes` setting numcopies, only that directory's files are asked
    /// about. Prints the times; the bounds are loose for debug builds on a busy machine.
    #[test]
    fn loading_100k_files_is_cheap() {
        let d = tempfile::tempdir().unwrap();
        let (repo, _) = Repo::init(d.path(), None, "test", &Default::default()).unwrap();
        let keys: Vec<Key> = (0..100u64)
            .map(|i| Key::parse_str(&format!("SHA256E-s{i}--{}.bin", "0".repeat(64))).unwrap())
            .collect();
        let files: Vec<AnnexedFile> = (0..100_000)
            .map(|i| AnnexedFile {
                path: format!("dir{}/sub/file{i}.bin", i % 500).into_bytes(),
                key: keys[i % 100].clone(),
                locked: true,
            })
            .collect();
        let start = std::time::Instant::now();
        let c = FileCopies::load(&repo, &files, true).unwrap();
        let none = start.elapsed();
        assert!(!c.any_attrs());
        std::fs::create_dir_all(d.path().join("dir7")).unwrap();
        std::fs::write(
            d.path().join("dir7/.gitattributes"),
            "* annex.numcopies=3\n",
        )
        .unwrap();
        let start = std::time::Instant::now();
        let c = FileCopies::load(&repo, &files, true).unwrap();
        let some = start.elapsed();
        eprintln!("100000 files: {none:?} without attributes, {some:?} with one directory's");
        assert_eq!(c.attrs.len(), 200);
        assert_eq!(c.attrs(b"dir7/sub/file7.bin").numcopies, Some(3));
        // The files in dir7 all have key 7 (i % 500 == 7 means i % 100 == 7); key 8 none.
        assert_eq!(c.of_key(&keys[7]).numcopies.n, 3);
        assert_eq!(c.of_key(&keys[8]).numcopies.n, 1);
        assert!(none < std::time::Duration::from_secs(3), "{none:?}");
        assert!(some < std::time::Duration::from_secs(5), "{some:?}");
    }

    #[test]
    fn scope_and_check_attr_in_a_repository() {
        let d = tempfile::tempdir().unwrap();
        let (repo, _) = Repo::init(d.path(), None, "test", &Default::default()).unwrap();
        let top = d.path();
        let o = OutsideFiles::find(&repo).unwrap();
        let paths: Vec<&[u8]> = vec![b"a/f.bin", b"b/c/g.bin", b"h.txt"];
        assert_eq!(scope(&repo, &paths, &o).unwrap(), Scope::Nowhere);
        // Unrelated attributes: still nothing to check.
        std::fs::write(top.join(".gitattributes"), "* annex.largefiles=anything\n").unwrap();
        assert_eq!(scope(&repo, &paths, &o).unwrap(), Scope::Nowhere);
        // An untracked file in b/c, for the files there only.
        std::fs::create_dir_all(top.join("b/c")).unwrap();
        std::fs::write(top.join("b/c/.gitattributes"), "*.bin annex.numcopies=3\n").unwrap();
        assert_eq!(
            scope(&repo, &paths, &o).unwrap(),
            Scope::Under([b"b/c".to_vec()].into())
        );
        // Staged, then deleted from the work tree: git still reads it from the index.
        repo.git.run(["add", "b/c/.gitattributes"]).unwrap();
        std::fs::remove_file(top.join("b/c/.gitattributes")).unwrap();
        assert_eq!(
            scope(&repo, &[b"h.txt"], &o).unwrap(),
            Scope::Under([b"b/c".to_vec()].into())
        );
        let got = check_attrs(&repo, &paths).unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[&b"b/c/g.bin"[..]].numcopies, Some(3));
        // info/attributes applies everywhere.
        std::fs::create_dir_all(repo.git_dir.join("info")).unwrap();
        std::fs::write(
            repo.git_dir.join("info/attributes"),
            "h.txt annex.mincopies=2\n",
        )
        .unwrap();
        assert_eq!(scope(&repo, &paths, &o).unwrap(), Scope::Everywhere);
        let got = check_attrs(&repo, &paths).unwrap();
        assert_eq!(
            got[&b"h.txt"[..]],
            Attrs {
                numcopies: None,
                mincopies: Some(2)
            }
        );
    }
}
