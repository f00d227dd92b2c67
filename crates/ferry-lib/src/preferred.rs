//! Preferred content: which repository wants which file, git-annex compatible.
//!
//! A repository's *preferred content* (`preferred-content.log`, set with `wanted`) says what it
//! wants to hold; its *required content* (`required-content.log`) what it must never drop.
//! Both are expressions over terms such as `include=*.mp3`, `copies=archive:1` or `standard`
//! (the expression of the repository's standard group, see [`STANDARD_GROUPS`]); groups come
//! from `group.log` and per-group expressions for `groupwanted` from
//! `group-preferred-content.log`. This module parses those logs and expressions and evaluates
//! them; it decides nothing by itself. The daemon and transfer planner are meant to use it as:
//!
//! ```no_run
//! # fn f(repo: &ferry_lib::Repo, key: &ferry_lib::Key, locs: &[String]) -> ferry_lib::Result<()> {
//! use ferry_lib::preferred::{FileInfo, Preferences};
//! let prefs = Preferences::load(repo)?; // once per scan, or when the branch changes
//! let file = FileInfo {
//!     path: Some(b"music/a.mp3"), key, locations: locs, present_here: true, numcopies_attr: None,
//! };
//! let here = repo.uuid();
//! if prefs.wants(here, &file) { /* get it */ }
//! if prefs.wants_drop(here, &file) && !prefs.requires_keeping(here, &file) { /* drop, if numcopies allows */ }
//! # Ok(()) }
//! ```
//!
//! Every expression is compiled once per repository (groups resolved to UUID sets, `standard`
//! and `groupwanted` expanded, numcopies read), so evaluating one file is a walk over a small
//! tree with no I/O and no allocation beyond a short list of live locations.
//!
//! Semantics follow git-annex 10.20230126, checked against `git annex find --want-get`,
//! `--want-drop` and `git annex matchexpression`:
//!
//! - operators apply left to right with no precedence, adjacent terms are joined with `and`
//!   (see [`crate::matching::build`]);
//! - a repository with no expression wants everything; an empty expression wants nothing;
//! - an expression that does not parse (or uses a term ferry cannot evaluate, such as
//!   `metadata=`) falls back, as in git-annex, to `present`: keep what is here, get nothing;
//!   so do `standard` for a repository in no (or several) standard groups and `groupwanted`
//!   for one without exactly one group expression;
//! - for a drop, the expression is evaluated as if the content were already gone from the
//!   repository that would drop it (`copies=2` lets a third copy go), except `present`;
//! - dead repositories never count as holding content; `copies=` counts untrusted ones unless
//!   a trust level is given, `lackingcopies=` does not;
//! - `include=`, `exclude=` and `inpreferreddir` do not match when there is no file name.
//!
//! Not supported (parsed so a log holding them is understood, evaluated through the fallback
//! above): `metadata=`. `unused` never matches: every file evaluated here is in the tree.

use crate::error::{Error, Result};
use crate::key::Key;
use crate::logs::{MapLog, UuidLog};
use crate::matching::{Combine, ParseError, build, glob_match, size_value};
use crate::ops::drop::{Trust, trust_levels};
use crate::repo::Repo;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// git-annex's standard groups and their built-in expressions (as `git annex vicfg` lists
/// them), in git-annex's order.
pub const STANDARD_GROUPS: [(&str, &str); 10] = [
    (
        "client",
        "(include=* and ((exclude=*/archive/* and exclude=archive/*) or (not (copies=archive:1 or copies=smallarchive:1)))) or approxlackingcopies=1",
    ),
    (
        "transfer",
        "(not (inallgroup=client and copies=client:2) and ((include=* and ((exclude=*/archive/* and exclude=archive/*) or (not (copies=archive:1 or copies=smallarchive:1)))) or approxlackingcopies=1)) or approxlackingcopies=1",
    ),
    ("backup", "anything"),
    (
        "incrementalbackup",
        "((not copies=backup:1) and (not copies=incrementalbackup:1)) or approxlackingcopies=1",
    ),
    (
        "smallarchive",
        "((include=*/archive/* or include=archive/*) and ((not (copies=archive:1 or copies=smallarchive:1)) or approxlackingcopies=1)) or approxlackingcopies=1",
    ),
    (
        "archive",
        "(not (copies=archive:1 or copies=smallarchive:1)) or approxlackingcopies=1",
    ),
    ("source", "not (copies=1)"),
    (
        "manual",
        "present and ((include=* and ((exclude=*/archive/* and exclude=archive/*) or (not (copies=archive:1 or copies=smallarchive:1)))) or approxlackingcopies=1)",
    ),
    ("public", "inpreferreddir"),
    ("unwanted", "not anything"),
];

/// The built-in expression of a standard group.
pub fn standard_expression(group: &str) -> Option<&'static str> {
    STANDARD_GROUPS
        .iter()
        .find(|(g, _)| *g == group)
        .map(|(_, e)| *e)
}

/// An expression tree; `Any` matches everything.
#[derive(Clone, Debug, PartialEq)]
pub enum Tree<T> {
    Any,
    Leaf(T),
    Not(Box<Tree<T>>),
    And(Box<Tree<T>>, Box<Tree<T>>),
    Or(Box<Tree<T>>, Box<Tree<T>>),
}

impl<T> Combine for Tree<T> {
    fn any() -> Self {
        Tree::Any
    }
    fn not(self) -> Self {
        Tree::Not(Box::new(self))
    }
    fn and(self, other: Self) -> Self {
        Tree::And(Box::new(self), Box::new(other))
    }
    fn or(self, other: Self) -> Self {
        Tree::Or(Box::new(self), Box::new(other))
    }
}

impl<T> Tree<T> {
    fn eval(&self, leaf: &mut impl FnMut(&T) -> bool) -> bool {
        match self {
            Tree::Any => true,
            Tree::Leaf(t) => leaf(t),
            Tree::Not(e) => !e.eval(leaf),
            Tree::And(a, b) => a.eval(leaf) && b.eval(leaf),
            Tree::Or(a, b) => a.eval(leaf) || b.eval(leaf),
        }
    }
}

/// Which copies `copies=` counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Among {
    All,
    /// `copies=trusted:N` (exactly that level) or `copies=semitrusted+:N` (that or better).
    Trust {
        level: Trust,
        or_better: bool,
    },
    Group(String),
}

/// One term of a preferred content expression, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Term {
    Include(Vec<u8>),
    Exclude(Vec<u8>),
    LargerThan(u64),
    SmallerThan(u64),
    Copies {
        n: i64,
        among: Among,
    },
    LackingCopies {
        n: i64,
        approx: bool,
    },
    InAllGroup(String),
    InBackend(String),
    SecureHash,
    Present,
    InPreferredDir,
    Standard,
    GroupWanted,
    Anything,
    Nothing,
    Unused,
    /// `metadata=…`: recognised, not evaluated (the whole expression falls back to `present`).
    Metadata(String),
}

/// A parsed preferred content expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Expression {
    pub tree: Tree<Term>,
    /// No tokens at all: git-annex wants nothing for it (unlike no expression).
    pub empty: bool,
}

impl Expression {
    /// Reads an expression as git-annex does (lenient about structure: see
    /// [`crate::matching::build`]); fails on unknown terms and bad values.
    pub fn parse(s: &str) -> std::result::Result<Expression, ParseError> {
        Ok(Expression {
            tree: build(s, false, |w| term(w).map(Tree::Leaf))?,
            empty: s.split_whitespace().next().is_none(),
        })
    }

    /// Checks an expression before it is stored: also refuses dangling operators, unbalanced
    /// parentheses, an empty expression, and terms ferry cannot evaluate.
    pub fn validate(s: &str) -> std::result::Result<Expression, ParseError> {
        let tree = build(s, true, |w| match term(w)? {
            Term::Metadata(_) => Err("metadata= is not supported by ferry yet:".into()),
            t => Ok(Tree::Leaf(t)),
        })?;
        Ok(Expression { tree, empty: false })
    }

    fn any_term(&self, f: &impl Fn(&Term) -> bool) -> bool {
        fn walk(t: &Tree<Term>, f: &impl Fn(&Term) -> bool) -> bool {
            match t {
                Tree::Any => false,
                Tree::Leaf(x) => f(x),
                Tree::Not(a) => walk(a, f),
                Tree::And(a, b) | Tree::Or(a, b) => walk(a, f) || walk(b, f),
            }
        }
        walk(&self.tree, f)
    }
}

fn number(v: &str) -> std::result::Result<i64, String> {
    v.parse().map_err(|_| "bad number in".to_string())
}

fn trust_level(s: &str) -> Option<Trust> {
    Some(match s {
        "trusted" => Trust::Trusted,
        "semitrusted" => Trust::SemiTrusted,
        "untrusted" => Trust::Untrusted,
        "dead" => Trust::Dead,
        _ => return None,
    })
}

fn rank(t: Trust) -> u8 {
    match t {
        Trust::Dead => 0,
        Trust::Untrusted => 1,
        Trust::SemiTrusted => 2,
        Trust::Trusted => 3,
    }
}

fn term(w: &str) -> std::result::Result<Term, String> {
    let simple = match w {
        "present" => Some(Term::Present),
        "inpreferreddir" => Some(Term::InPreferredDir),
        "standard" => Some(Term::Standard),
        "groupwanted" => Some(Term::GroupWanted),
        "anything" => Some(Term::Anything),
        "nothing" => Some(Term::Nothing),
        "unused" => Some(Term::Unused),
        "securehash" => Some(Term::SecureHash),
        _ => None,
    };
    if let Some(t) = simple {
        return Ok(t);
    }
    let (name, value) = w.split_once('=').ok_or("unknown term")?;
    Ok(match name {
        "include" => Term::Include(value.as_bytes().to_vec()),
        "exclude" => Term::Exclude(value.as_bytes().to_vec()),
        "largerthan" => Term::LargerThan(size_value(value)?),
        "smallerthan" => Term::SmallerThan(size_value(value)?),
        "copies" => {
            let parts: Vec<&str> = value.split(':').collect();
            let (among, n) = match parts[..] {
                [n] => (Among::All, n),
                [spec, n] => {
                    let (level, or_better) = match spec.strip_suffix('+') {
                        Some(l) => (l, true),
                        None => (spec, false),
                    };
                    // A group named like a trust level is read as the trust level (as
                    // git-annex does).
                    let among = match trust_level(level) {
                        Some(level) => Among::Trust { level, or_better },
                        None => Among::Group(spec.to_string()),
                    };
                    (among, n)
                }
                _ => return Err("bad value in".into()),
            };
            Term::Copies {
                n: number(n)?,
                among,
            }
        }
        "lackingcopies" | "approxlackingcopies" => Term::LackingCopies {
            n: number(value)?,
            approx: name == "approxlackingcopies",
        },
        "inallgroup" => Term::InAllGroup(value.to_string()),
        "inbackend" => Term::InBackend(value.to_string()),
        "metadata" => Term::Metadata(value.to_string()),
        "in" => return Err("in= cannot be used in preferred content (use copies=GROUP:N):".into()),
        _ => return Err("unknown term".into()),
    })
}

/// Repository-wide facts an expression is compiled against.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// The repository ferry runs in (`present` for it means content present here).
    pub here: String,
    /// Trust levels; a UUID not listed is semitrusted.
    pub trust: HashMap<String, Trust>,
    /// Groups of each UUID (`group.log`).
    pub groups: BTreeMap<String, BTreeSet<String>>,
    /// `numcopies.log`, else 1: what `approxlackingcopies=` compares with, and
    /// `lackingcopies=` for a file without an `annex.numcopies` attribute (as in git-annex,
    /// neither looks at the `annex.numcopies` git config).
    pub numcopies: u32,
    /// `group-preferred-content.log`: group → expression.
    pub group_wanted: BTreeMap<String, String>,
    /// `preferreddir=` from `remote.log` (default `public`).
    pub preferred_dirs: HashMap<String, String>,
}

/// What is known about one annexed file.
#[derive(Clone, Copy, Debug)]
pub struct FileInfo<'a> {
    /// Path relative to the top of the work tree; `None` when there is none (bare repository,
    /// a key without a file), and then globs and `inpreferreddir` do not match.
    pub path: Option<&'a [u8]>,
    pub key: &'a Key,
    /// UUIDs the location log says hold the content.
    pub locations: &'a [String],
    /// Whether the content is in this repository's store (for `present` of here).
    pub present_here: bool,
    /// The file's `annex.numcopies` git attribute, if set (see [`crate::copies`]): what
    /// `lackingcopies=` compares with instead of [`Facts::numcopies`].
    pub numcopies_attr: Option<u32>,
}

/// A term bound to one repository and the repository-wide facts.
#[derive(Clone, Debug)]
pub enum Check {
    Const(bool),
    Include(Vec<u8>),
    Exclude(Vec<u8>),
    LargerThan(u64),
    SmallerThan(u64),
    Copies(i64, Counted),
    /// At least this many copies lacking to reach numcopies (`approx`: `numcopies.log`
    /// only, never the file's attribute).
    Lacking {
        n: i64,
        approx: bool,
    },
    InAllGroup(Vec<String>),
    InBackend(String),
    SecureHash,
    Present(String),
    InDir(String),
}

#[derive(Clone, Debug)]
pub enum Counted {
    All,
    Trust { rank: u8, or_better: bool },
    Uuids(HashSet<String>),
}

/// A compiled expression for one repository.
pub type Compiled = Tree<Check>;

/// Preferred and required content of every repository, compiled; see the module docs.
#[derive(Clone, Debug, Default)]
pub struct Preferences {
    facts: Facts,
    wanted: HashMap<String, Compiled>,
    required: HashMap<String, Compiled>,
    /// Expressions that did not parse or could not be expanded, for the user to see.
    pub warnings: Vec<String>,
}

impl Preferences {
    /// Reads the logs from the `git-annex` branch (with the journal) and compiles every
    /// repository's expressions.
    pub fn load(repo: &Repo) -> Result<Preferences> {
        let read = |p: &[u8]| -> Result<Vec<u8>> { Ok(repo.branch.read(p)?.unwrap_or_default()) };
        let groups = UuidLog::parse(&read(b"group.log")?)
            .current()
            .into_iter()
            .map(|(u, e)| (u.to_string(), parse_groups(&e.value)))
            .collect();
        let group_wanted = MapLog::parse(&read(b"group-preferred-content.log")?)
            .current()
            .into_iter()
            .map(|(g, e)| (g.to_string(), e.value.clone()))
            .collect();
        let preferred_dirs = UuidLog::parse(&read(b"remote.log")?)
            .current()
            .into_iter()
            .filter_map(|(u, e)| {
                let dir = e
                    .value
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix("preferreddir="))?;
                Some((u.to_string(), unescape_remote_value(dir)))
            })
            .collect();
        let facts = Facts {
            here: repo.uuid().to_string(),
            trust: trust_levels(repo)?,
            groups,
            // (approxlackingcopies: the log, never git config; see `Global::approx_numcopies`.)
            numcopies: crate::copies::log_count(repo, b"numcopies.log")?.unwrap_or(1),
            group_wanted,
            preferred_dirs,
        };
        let exprs = |file: &[u8]| -> Result<BTreeMap<String, String>> {
            Ok(UuidLog::parse(&read(file)?)
                .current()
                .into_iter()
                .map(|(u, e)| (u.to_string(), e.value.clone()))
                .collect())
        };
        Ok(Preferences::new(
            facts,
            &exprs(b"preferred-content.log")?,
            &exprs(b"required-content.log")?,
        ))
    }

    /// Compiles `preferred` and `required` (UUID → expression as stored) against `facts`.
    pub fn new(
        facts: Facts,
        preferred: &BTreeMap<String, String>,
        required: &BTreeMap<String, String>,
    ) -> Preferences {
        let mut p = Preferences {
            facts,
            ..Default::default()
        };
        for (u, e) in preferred {
            let c = p.compile(u, e, true, true);
            p.wanted.insert(u.clone(), c);
        }
        for (u, e) in required {
            let c = p.compile(u, e, true, true);
            p.required.insert(u.clone(), c);
        }
        p
    }

    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    /// Whether `uuid` has a preferred content expression (without one it wants everything).
    pub fn is_configured(&self, uuid: &str) -> bool {
        self.wanted.contains_key(uuid)
    }

    /// Whether `uuid` wants the file (to get it, or to keep it). No expression: yes.
    pub fn wants(&self, uuid: &str, file: &FileInfo) -> bool {
        self.wanted
            .get(uuid)
            .is_none_or(|c| self.eval(c, file, None))
    }

    /// Whether `uuid` would rather not hold the file: its expression does not match once the
    /// content is assumed gone from `uuid`. No expression: no.
    pub fn wants_drop(&self, uuid: &str, file: &FileInfo) -> bool {
        self.wanted
            .get(uuid)
            .is_some_and(|c| !self.eval(c, file, Some(uuid)))
    }

    /// Whether `uuid`'s required content matches the file (as it is now).
    pub fn requires(&self, uuid: &str, file: &FileInfo) -> bool {
        self.required
            .get(uuid)
            .is_some_and(|c| self.eval(c, file, None))
    }

    /// Whether required content forbids dropping the file from `uuid`: it still matches once
    /// the content is assumed gone from `uuid`.
    pub fn requires_keeping(&self, uuid: &str, file: &FileInfo) -> bool {
        self.required
            .get(uuid)
            .is_some_and(|c| self.eval(c, file, Some(uuid)))
    }

    /// Compiles `expr` as the expression of `uuid` (what `wanted` would do with it).
    pub fn compile_for(&mut self, uuid: &str, expr: &str) -> Compiled {
        self.compile(uuid, expr, true, true)
    }

    /// Evaluates a compiled expression; `assume_gone` is a UUID whose copy is not counted.
    pub fn eval(&self, c: &Compiled, file: &FileInfo, assume_gone: Option<&str>) -> bool {
        let live: Vec<&str> = file
            .locations
            .iter()
            .map(String::as_str)
            .filter(|u| self.trust_of(u) != Trust::Dead)
            .collect();
        let counted = || live.iter().filter(|u| Some(**u) != assume_gone);
        c.eval(&mut |check| match check {
            Check::Const(b) => *b,
            Check::Include(g) => file.path.is_some_and(|p| glob_match(g, p)),
            Check::Exclude(g) => file.path.is_some_and(|p| !glob_match(g, p)),
            Check::LargerThan(n) => file.key.size.is_some_and(|s| s > *n),
            Check::SmallerThan(n) => file.key.size.is_some_and(|s| s < *n),
            Check::Copies(n, among) => {
                let count = match among {
                    Counted::All => counted().count(),
                    Counted::Trust { rank: r, or_better } => counted()
                        .filter(|u| {
                            let t = rank(self.trust_of(u));
                            if *or_better { t >= *r } else { t == *r }
                        })
                        .count(),
                    Counted::Uuids(set) => counted().filter(|u| set.contains(**u)).count(),
                };
                count as i64 >= *n
            }
            Check::Lacking { n, approx } => {
                let numcopies = match (approx, file.numcopies_attr) {
                    (false, Some(attr)) => attr,
                    _ => self.facts.numcopies,
                };
                let have = counted()
                    .filter(|u| self.trust_of(u) != Trust::Untrusted)
                    .count();
                i64::from(numcopies) - have as i64 >= *n
            }
            Check::InAllGroup(members) => {
                members.iter().all(|m| Some(m.as_str()) != assume_gone)
                    && members.iter().all(|m| live.contains(&m.as_str()))
            }
            Check::InBackend(b) => file.key.variety == *b,
            Check::SecureHash => secure_hash(&file.key.variety),
            Check::Present(u) if *u == self.facts.here => file.present_here,
            Check::Present(u) => live.contains(&u.as_str()),
            Check::InDir(d) => file.path.is_some_and(|p| {
                // Any directory the file is in, not the file's own name.
                let mut parts = p.split(|&b| b == b'/');
                parts.next_back();
                parts.any(|c| c == d.as_bytes())
            }),
        })
    }

    fn trust_of(&self, uuid: &str) -> Trust {
        self.facts
            .trust
            .get(uuid)
            .copied()
            .unwrap_or(Trust::SemiTrusted)
    }

    /// The standard group `uuid` is in, when it is in exactly one.
    pub fn standard_group(&self, uuid: &str) -> Option<&'static str> {
        let groups = self.facts.groups.get(uuid)?;
        let mut std = STANDARD_GROUPS
            .iter()
            .map(|(g, _)| *g)
            .filter(|g| groups.contains(*g));
        match (std.next(), std.next()) {
            (Some(g), None) => Some(g),
            _ => None,
        }
    }

    fn compile(&mut self, uuid: &str, text: &str, standard: bool, groupwanted: bool) -> Compiled {
        let present = Tree::Leaf(Check::Present(uuid.to_string()));
        match Expression::parse(text) {
            Ok(e) if e.any_term(&|t| matches!(t, Term::Metadata(_))) => {
                self.warnings.push(format!(
                    "preferred content of {uuid}: {text:?} uses metadata=, which ferry cannot \
                     evaluate; treating it as \"present\""
                ));
                present
            }
            Ok(e) if e.empty => Tree::Leaf(Check::Const(false)),
            Ok(e) => self.compile_tree(uuid, e.tree, standard, groupwanted),
            Err(err) => {
                self.warnings.push(format!(
                    "preferred content of {uuid}: {text:?} does not parse ({err}); treating it \
                     as \"present\""
                ));
                present
            }
        }
    }

    fn compile_tree(
        &mut self,
        uuid: &str,
        t: Tree<Term>,
        standard: bool,
        groupwanted: bool,
    ) -> Compiled {
        let mut sub =
            |t: Box<Tree<Term>>| Box::new(self.compile_tree(uuid, *t, standard, groupwanted));
        match t {
            Tree::Any => Tree::Any,
            Tree::Not(a) => Tree::Not(sub(a)),
            Tree::And(a, b) => {
                let a = sub(a);
                Tree::And(a, sub(b))
            }
            Tree::Or(a, b) => {
                let a = sub(a);
                Tree::Or(a, sub(b))
            }
            Tree::Leaf(term) => self.compile_term(uuid, term, standard, groupwanted),
        }
    }

    fn compile_term(&mut self, uuid: &str, t: Term, standard: bool, groupwanted: bool) -> Compiled {
        let present = Tree::Leaf(Check::Present(uuid.to_string()));
        let check = match t {
            Term::Include(g) => Check::Include(g),
            Term::Exclude(g) => Check::Exclude(g),
            Term::LargerThan(n) => Check::LargerThan(n),
            Term::SmallerThan(n) => Check::SmallerThan(n),
            Term::Copies { n, among } => Check::Copies(
                n,
                match among {
                    Among::All => Counted::All,
                    Among::Trust { level, or_better } => Counted::Trust {
                        rank: rank(level),
                        or_better,
                    },
                    Among::Group(g) => Counted::Uuids(self.members(&g).into_iter().collect()),
                },
            ),
            Term::LackingCopies { n, approx } => Check::Lacking { n, approx },
            Term::InAllGroup(g) => Check::InAllGroup(self.members(&g)),
            Term::InBackend(b) => Check::InBackend(b),
            Term::SecureHash => Check::SecureHash,
            Term::Present => Check::Present(uuid.to_string()),
            Term::InPreferredDir => Check::InDir(
                self.facts
                    .preferred_dirs
                    .get(uuid)
                    .cloned()
                    .unwrap_or_else(|| "public".into()),
            ),
            Term::Anything => Check::Const(true),
            Term::Nothing | Term::Unused => Check::Const(false),
            Term::Metadata(_) => return present,
            Term::Standard => {
                return match self.standard_group(uuid).filter(|_| standard) {
                    Some(g) => {
                        self.compile(uuid, standard_expression(g).unwrap_or(""), false, false)
                    }
                    None => {
                        self.warnings.push(format!(
                            "{uuid}: \"standard\" needs the repository in exactly one standard \
                             group; treating it as \"present\""
                        ));
                        present
                    }
                };
            }
            Term::GroupWanted => {
                let exprs: Vec<String> = match self.facts.groups.get(uuid) {
                    Some(gs) if groupwanted => gs
                        .iter()
                        .filter_map(|g| self.facts.group_wanted.get(g).cloned())
                        .collect(),
                    _ => Vec::new(),
                };
                return match &exprs[..] {
                    [e] => self.compile(uuid, e, true, false),
                    _ => {
                        self.warnings.push(format!(
                            "{uuid}: \"groupwanted\" needs exactly one of the repository's \
                             groups to have an expression; treating it as \"present\""
                        ));
                        present
                    }
                };
            }
        };
        Tree::Leaf(check)
    }

    /// UUIDs in `group`.
    fn members(&self, group: &str) -> Vec<String> {
        self.facts
            .groups
            .iter()
            .filter(|(_, gs)| gs.contains(group))
            .map(|(u, _)| u.clone())
            .collect()
    }
}

/// Whether a backend hashes with a cryptographically secure function.
fn secure_hash(variety: &str) -> bool {
    let v = variety.strip_suffix('E').unwrap_or(variety);
    [
        "SHA224", "SHA256", "SHA384", "SHA512", "SHA3_", "SKEIN", "BLAKE2",
    ]
    .iter()
    .any(|p| v.starts_with(p))
}

/// `remote.log` escapes whitespace and `&` in values as `&<decimal>;`.
fn unescape_remote_value(v: &str) -> String {
    let mut out = String::new();
    let mut rest = v;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 1..];
        match tail
            .split_once(';')
            .and_then(|(n, r)| Some((char::from_u32(n.parse().ok()?)?, r)))
        {
            Some((c, r)) => {
                out.push(c);
                rest = r;
            }
            None => {
                out.push('&');
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The groups in a `group.log` value.
pub fn parse_groups(value: &str) -> BTreeSet<String> {
    value.split_whitespace().map(str::to_string).collect()
}

// ---- reading and writing the logs ----

fn bad(expr: &str, e: ParseError) -> Error {
    Error::BadPreferred {
        expr: expr.to_string(),
        why: e.to_string(),
    }
}

fn update_uuid_log(repo: &Repo, file: &str, uuid: &str, value: &str) -> Result<()> {
    let lock = repo.branch.lock_journal()?;
    let mut log = UuidLog::parse(&repo.branch.read(file.as_bytes())?.unwrap_or_default());
    log.set(uuid, value, repo.branch.now());
    repo.branch.write(&lock, file.as_bytes(), &log.render())?;
    repo.branch.commit(Some(&lock), "update")?;
    Ok(())
}

fn read_uuid_value(repo: &Repo, file: &str, uuid: &str) -> Result<Option<String>> {
    let log = UuidLog::parse(&repo.branch.read(file.as_bytes())?.unwrap_or_default());
    Ok(log.get(uuid).map(str::to_string))
}

/// The preferred content expression of `uuid`, as stored.
pub fn wanted(repo: &Repo, uuid: &str) -> Result<Option<String>> {
    read_uuid_value(repo, "preferred-content.log", uuid)
}

/// The required content expression of `uuid`, as stored.
pub fn required(repo: &Repo, uuid: &str) -> Result<Option<String>> {
    read_uuid_value(repo, "required-content.log", uuid)
}

/// Validates and stores the preferred content expression of `uuid`.
pub fn set_wanted(repo: &Repo, uuid: &str, expr: &str) -> Result<()> {
    Expression::validate(expr).map_err(|e| bad(expr, e))?;
    update_uuid_log(repo, "preferred-content.log", uuid, expr)
}

/// Validates and stores the required content expression of `uuid`.
pub fn set_required(repo: &Repo, uuid: &str, expr: &str) -> Result<()> {
    Expression::validate(expr).map_err(|e| bad(expr, e))?;
    update_uuid_log(repo, "required-content.log", uuid, expr)
}

/// The groups `uuid` is in.
pub fn groups(repo: &Repo, uuid: &str) -> Result<BTreeSet<String>> {
    Ok(read_uuid_value(repo, "group.log", uuid)?
        .map(|v| parse_groups(&v))
        .unwrap_or_default())
}

fn check_group_name(group: &str) -> Result<()> {
    if group.is_empty() || group.contains(char::is_whitespace) {
        return Err(Error::Unsupported(format!(
            "bad group name {group:?}: a group name is one word"
        )));
    }
    Ok(())
}

/// Adds `uuid` to `group` (sorted, space separated, as git-annex writes them).
pub fn add_group(repo: &Repo, uuid: &str, group: &str) -> Result<()> {
    check_group_name(group)?;
    let mut gs = groups(repo, uuid)?;
    if gs.insert(group.to_string()) {
        update_uuid_log(repo, "group.log", uuid, &join(&gs))?;
    }
    Ok(())
}

/// Removes `uuid` from `group`; returns whether it was in it.
pub fn remove_group(repo: &Repo, uuid: &str, group: &str) -> Result<bool> {
    let mut gs = groups(repo, uuid)?;
    let was = gs.remove(group);
    if was {
        update_uuid_log(repo, "group.log", uuid, &join(&gs))?;
    }
    Ok(was)
}

fn join(gs: &BTreeSet<String>) -> String {
    gs.iter().map(String::as_str).collect::<Vec<_>>().join(" ")
}

/// The expression of `group` for `groupwanted`, as stored.
pub fn group_wanted(repo: &Repo, group: &str) -> Result<Option<String>> {
    let log = MapLog::parse(
        &repo
            .branch
            .read(b"group-preferred-content.log")?
            .unwrap_or_default(),
    );
    Ok(log.get(group).map(str::to_string))
}

/// Validates and stores the expression of `group` (`groupwanted` cannot be used in it).
pub fn set_group_wanted(repo: &Repo, group: &str, expr: &str) -> Result<()> {
    check_group_name(group)?;
    let e = Expression::validate(expr).map_err(|e| bad(expr, e))?;
    if e.any_term(&|t| *t == Term::GroupWanted) {
        return Err(Error::BadPreferred {
            expr: expr.to_string(),
            why: "\"groupwanted\" cannot be used in a group's own expression".into(),
        });
    }
    let file = b"group-preferred-content.log";
    let lock = repo.branch.lock_journal()?;
    let mut log = MapLog::parse(&repo.branch.read(file)?.unwrap_or_default());
    log.set(group, expr, repo.branch.now());
    repo.branch.write(&lock, file, &log.render())?;
    repo.branch.commit(Some(&lock), "update")?;
    Ok(())
}

/// Finds a repository the way git-annex's `wanted`/`group` do: `here` or `.`, a remote name,
/// a UUID, or a description (which must name only one repository).
pub fn resolve_repo(repo: &Repo, name: &str) -> Result<String> {
    if name == "here" || name == "." {
        return Ok(repo.uuid().to_string());
    }
    if let Some((u, _)) = repo.remote_names()?.into_iter().find(|(_, n)| n == name) {
        return Ok(u);
    }
    let descs = repo.uuid_descriptions()?;
    if descs.contains_key(name) {
        return Ok(name.to_string());
    }
    let by_desc: Vec<&String> = descs
        .iter()
        .filter(|(_, d)| d.as_str() == name)
        .map(|(u, _)| u)
        .collect();
    match by_desc[..] {
        [u] => Ok(u.clone()),
        [] if looks_like_uuid(name) => Ok(name.to_string()),
        [] => Err(Error::NoSuchRepository(name.to_string())),
        _ => Err(Error::Unsupported(format!(
            "{name:?} describes several repositories; use a UUID"
        ))),
    }
}

fn looks_like_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: &str = "00000000-aaaa-4000-8000-000000000001";
    const A1: &str = "00000000-aaaa-4000-8000-0000000000a1";
    const A2: &str = "00000000-aaaa-4000-8000-0000000000a2";
    const C1: &str = "00000000-aaaa-4000-8000-0000000000c1";
    const UT: &str = "00000000-aaaa-4000-8000-0000000000f1";
    const DEAD: &str = "00000000-aaaa-4000-8000-0000000000f2";

    fn key(size: u64) -> Key {
        Key::parse_str(&format!("SHA256E-s{size}--{}.bin", "0".repeat(64))).unwrap()
    }

    fn facts() -> Facts {
        let mut f = Facts {
            here: HERE.into(),
            numcopies: 2,
            ..Default::default()
        };
        for (u, g) in [
            (A1, "archive"),
            (A2, "archive"),
            (C1, "client"),
            (HERE, "client"),
        ] {
            f.groups.entry(u.into()).or_default().insert(g.into());
        }
        f.trust.insert(UT.into(), Trust::Untrusted);
        f.trust.insert(DEAD.into(), Trust::Dead);
        f.trust.insert(A1.into(), Trust::Trusted);
        f
    }

    /// Evaluates `expr` as the expression of `uuid` for a file at `path` of `size` bytes held by
    /// `locs` (and here when `here` is set).
    fn check(expr: &str, uuid: &str, path: &str, size: u64, locs: &[&str], here: bool) -> bool {
        let mut p = Preferences::new(facts(), &BTreeMap::new(), &BTreeMap::new());
        let c = p.compile_for(uuid, expr);
        let locs: Vec<String> = locs.iter().map(|s| s.to_string()).collect();
        let k = key(size);
        let file = FileInfo {
            path: Some(path.as_bytes()),
            key: &k,
            locations: &locs,
            present_here: here,
            numcopies_attr: None,
        };
        p.eval(&c, &file, None)
    }

    fn m(expr: &str, path: &str, size: u64, locs: &[&str]) -> bool {
        check(expr, HERE, path, size, locs, locs.contains(&HERE))
    }

    #[test]
    fn every_term_parses() {
        let t = |s: &str| match Expression::validate(s).unwrap().tree {
            Tree::Leaf(t) => t,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(t("include=*.mp3"), Term::Include(b"*.mp3".to_vec()));
        assert_eq!(t("exclude=a/*"), Term::Exclude(b"a/*".to_vec()));
        assert_eq!(t("largerthan=1kb"), Term::LargerThan(1000));
        assert_eq!(t("smallerthan=2KiB"), Term::SmallerThan(2048));
        assert_eq!(
            t("copies=2"),
            Term::Copies {
                n: 2,
                among: Among::All
            }
        );
        assert_eq!(
            t("copies=trusted:1"),
            Term::Copies {
                n: 1,
                among: Among::Trust {
                    level: Trust::Trusted,
                    or_better: false
                }
            }
        );
        assert_eq!(
            t("copies=semitrusted+:3"),
            Term::Copies {
                n: 3,
                among: Among::Trust {
                    level: Trust::SemiTrusted,
                    or_better: true
                }
            }
        );
        assert_eq!(
            t("copies=archive:1"),
            Term::Copies {
                n: 1,
                among: Among::Group("archive".into())
            }
        );
        assert_eq!(
            t("lackingcopies=1"),
            Term::LackingCopies {
                n: 1,
                approx: false
            }
        );
        assert_eq!(
            t("approxlackingcopies=2"),
            Term::LackingCopies { n: 2, approx: true }
        );
        assert_eq!(t("inallgroup=client"), Term::InAllGroup("client".into()));
        assert_eq!(t("inbackend=SHA256E"), Term::InBackend("SHA256E".into()));
        for (w, term) in [
            ("present", Term::Present),
            ("inpreferreddir", Term::InPreferredDir),
            ("standard", Term::Standard),
            ("groupwanted", Term::GroupWanted),
            ("anything", Term::Anything),
            ("nothing", Term::Nothing),
            ("unused", Term::Unused),
            ("securehash", Term::SecureHash),
        ] {
            assert_eq!(t(w), term);
        }
        // Readable in a log, refused when set.
        assert!(Expression::parse("metadata=tag=x").is_ok());
        assert!(Expression::validate("metadata=tag=x").is_err());
    }

    #[test]
    fn errors_name_the_word_and_the_token() {
        let e = |s: &str| Expression::validate(s).unwrap_err().to_string();
        assert_eq!(
            e("include=a and foo=1"),
            r#"unknown term "foo=1" at word 3"#
        );
        assert_eq!(e("copies=x"), r#"bad number in "copies=x" at word 1"#);
        assert_eq!(
            e("copies=a:b:1"),
            r#"bad value in "copies=a:b:1" at word 1"#
        );
        assert_eq!(
            e("present (largerthan=big)"),
            r#"bad size in "largerthan=big" at word 2"#
        );
        assert_eq!(
            e("lackingcopies=many"),
            r#"bad number in "lackingcopies=many" at word 1"#
        );
        assert!(
            e("in=here").contains(r#""in=here" at word 1"#),
            "{}",
            e("in=here")
        );
        assert_eq!(e("present or"), r#"nothing after "or" at word 2"#);
        assert_eq!(e("and present"), r#"nothing before "and" at word 1"#);
        assert_eq!(e("present )"), r#"unbalanced parenthesis ")" at word 2"#);
        assert_eq!(e("not (present"), r#"unbalanced parenthesis "(" at word 2"#);
        assert_eq!(e("present ()"), r#"empty parentheses "(" at word 2"#);
        assert_eq!(e("  "), "empty expression");
        // Lenient reading forgives structure, not unknown terms.
        assert!(Expression::parse("present or").is_ok());
        assert!(Expression::parse("(present").is_ok());
        assert_eq!(
            Expression::parse("a foo").unwrap_err().to_string(),
            r#"unknown term "a" at word 1"#
        );
    }

    #[test]
    fn globs_sizes_and_left_to_right_operators() {
        assert!(m("include=*.mp3", "music/x.mp3", 1, &[]));
        assert!(!m("include=*.mp3", "music/x.ogg", 1, &[]));
        assert!(m("exclude=archive/*", "music/x.ogg", 1, &[]));
        assert!(!m("exclude=*/archive/*", "a/archive/x", 1, &[]));
        assert!(m("largerthan=10", "f", 11, &[]) && !m("largerthan=10", "f", 10, &[]));
        assert!(m("smallerthan=10", "f", 9, &[]) && !m("smallerthan=10", "f", 10, &[]));
        // (a or b) and c, not a or (b and c).
        assert!(!m("include=a or include=b and include=c", "a", 1, &[]));
        assert!(m("include=a or (include=b and include=c)", "a", 1, &[]));
        assert!(!m("include=a include=b", "a", 1, &[]));
        assert!(m("not include=a and include=b", "b", 1, &[]));
        assert!(m("anything", "a", 1, &[]) && !m("nothing", "a", 1, &[]));
        assert!(!m("unused", "a", 1, &[]));
        assert!(m("inbackend=SHA256E and securehash", "a", 1, &[]));
        assert!(!m("inbackend=MD5E", "a", 1, &[]));
    }

    #[test]
    fn copies_count_trust_groups_and_skip_dead() {
        let locs = [HERE, A1, UT, DEAD];
        assert!(m("copies=3", "f", 1, &locs));
        assert!(!m("copies=4", "f", 1, &locs));
        assert!(m("copies=trusted:1", "f", 1, &locs));
        assert!(!m("copies=trusted:2", "f", 1, &locs));
        assert!(m("copies=semitrusted+:2", "f", 1, &locs));
        assert!(!m("copies=semitrusted+:3", "f", 1, &locs));
        assert!(m("copies=untrusted+:3", "f", 1, &locs));
        assert!(m("copies=untrusted:1", "f", 1, &locs));
        assert!(!m("copies=dead:1", "f", 1, &locs));
        assert!(m("copies=archive:1", "f", 1, &locs));
        assert!(!m("copies=archive:2", "f", 1, &locs));
        assert!(m("copies=archive:2", "f", 1, &[A1, A2]));
        assert!(m("copies=nosuchgroup:0", "f", 1, &[]));
        // numcopies 2; untrusted and dead copies do not count.
        assert!(m("lackingcopies=1", "f", 1, &[HERE, UT, DEAD]));
        assert!(!m("lackingcopies=1", "f", 1, &[HERE, A1]));
        assert!(m("approxlackingcopies=2", "f", 1, &[]));
        // inallgroup: every member holds it; an empty group always matches.
        assert!(m("inallgroup=client", "f", 1, &[HERE, C1]));
        assert!(!m("inallgroup=client", "f", 1, &[HERE]));
        assert!(m("inallgroup=empty", "f", 1, &[]));
    }

    #[test]
    fn lackingcopies_uses_the_files_attribute_and_approxlackingcopies_does_not() {
        // numcopies.log 2 (facts); one counted copy.
        let mut p = Preferences::new(facts(), &BTreeMap::new(), &BTreeMap::new());
        let k = key(1);
        let locs = vec![A1.to_string()];
        let file = |attr| FileInfo {
            path: Some(b"f"),
            key: &k,
            locations: &locs,
            present_here: false,
            numcopies_attr: attr,
        };
        let strict = p.compile_for(HERE, "lackingcopies=2");
        let approx = p.compile_for(HERE, "approxlackingcopies=2");
        assert!(!p.eval(&strict, &file(None), None));
        assert!(p.eval(&strict, &file(Some(3)), None));
        assert!(!p.eval(&approx, &file(Some(3)), None));
        // An attribute below numcopies.log counts too.
        let one = p.compile_for(HERE, "lackingcopies=1");
        assert!(p.eval(&one, &file(None), None) && !p.eval(&one, &file(Some(1)), None));
    }

    #[test]
    fn present_and_preferred_dir() {
        // For here: the store; for another repository: the location log.
        assert!(check("present", HERE, "f", 1, &[], true));
        assert!(!check("present", HERE, "f", 1, &[HERE], false));
        assert!(check("present", C1, "f", 1, &[C1], false));
        assert!(!check("present", C1, "f", 1, &[HERE], true));
        assert!(m("inpreferreddir", "a/public/f", 1, &[]));
        assert!(m("inpreferreddir", "public/f", 1, &[]));
        assert!(!m("inpreferreddir", "a/public", 1, &[]));
        assert!(!m("inpreferreddir", "publicfile", 1, &[]));
        let mut f = facts();
        f.preferred_dirs.insert(C1.into(), "out".into());
        let mut p = Preferences::new(f, &BTreeMap::new(), &BTreeMap::new());
        let c = p.compile_for(C1, "inpreferreddir");
        let k = key(1);
        let file = FileInfo {
            path: Some(b"x/out/y"),
            key: &k,
            locations: &[],
            present_here: false,
            numcopies_attr: None,
        };
        assert!(p.eval(&c, &file, None));
        // No path: globs and directories do not match, either way.
        let file = FileInfo { path: None, ..file };
        for e in ["include=*", "exclude=*", "inpreferreddir"] {
            let c = p.compile_for(C1, e);
            assert!(!p.eval(&c, &file, None), "{e}");
        }
    }

    fn prefs(wanted: &[(&str, &str)], f: Facts) -> Preferences {
        let w = wanted
            .iter()
            .map(|(u, e)| (u.to_string(), e.to_string()))
            .collect();
        Preferences::new(f, &w, &BTreeMap::new())
    }

    #[test]
    fn standard_groups_and_groupwanted() {
        for (g, _) in STANDARD_GROUPS {
            assert!(
                Expression::validate(standard_expression(g).unwrap()).is_ok(),
                "{g}"
            );
        }
        let k = key(5);
        fn at<'a>(k: &'a Key, path: &'a str, locs: &'a [String]) -> FileInfo<'a> {
            FileInfo {
                path: Some(path.as_bytes()),
                key: k,
                locations: locs,
                present_here: false,
                numcopies_attr: None,
            }
        }
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<String>>();
        let mut f = facts();
        f.groups.get_mut(C1).unwrap().insert("mine".into());
        f.group_wanted
            .insert("mine".into(), "standard and exclude=out/*".into());
        f.group_wanted
            .insert("archive".into(), "include=keep/*".into());
        let p = prefs(
            &[
                (C1, "groupwanted"),
                (A1, "standard"),
                (A2, "groupwanted"),
                (HERE, "standard"),
            ],
            f,
        );
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        // client: everything outside archive dirs; inside them only while no archive has it.
        assert!(p.wants(HERE, &at(&k, "a/x", &v(&[]))));
        assert!(p.wants(HERE, &at(&k, "archive/x", &v(&[C1]))));
        assert!(!p.wants(HERE, &at(&k, "archive/x", &v(&[A2, C1]))));
        // ... unless copies are lacking (numcopies 2).
        assert!(p.wants(HERE, &at(&k, "archive/x", &v(&[A2]))));
        // archive: until one archive has it.
        assert!(p.wants(A1, &at(&k, "a/x", &v(&[HERE]))));
        assert!(!p.wants(A1, &at(&k, "a/x", &v(&[HERE, A2, C1]))));
        // groupwanted with standard inside: client rules minus out/.
        assert!(p.wants(C1, &at(&k, "a/x", &v(&[]))));
        assert!(!p.wants(C1, &at(&k, "out/x", &v(&[]))));
        assert!(p.wants(A2, &at(&k, "keep/x", &v(&[A1, A2, C1]))));
        assert!(!p.wants(A2, &at(&k, "other/x", &v(&[]))));
        // Not configured: wants everything, drops nothing.
        assert!(p.wants(UT, &at(&k, "x", &v(&[]))) && !p.wants_drop(UT, &at(&k, "x", &v(&[UT]))));
    }

    #[test]
    fn other_standard_groups() {
        let k = key(5);
        let locs: Vec<String> = vec![HERE.into(), A1.into(), C1.into()];
        let file = FileInfo {
            path: Some(b"d/f"),
            key: &k,
            locations: &locs,
            present_here: true,
            numcopies_attr: None,
        };
        let with = |g: &str| {
            let mut f = facts();
            f.groups.insert(HERE.into(), [g.to_string()].into());
            prefs(&[(HERE, "standard")], f)
        };
        assert!(with("backup").wants(HERE, &file));
        assert!(!with("unwanted").wants(HERE, &file));
        assert!(!with("source").wants(HERE, &file));
        assert!(with("source").wants(
            HERE,
            &FileInfo {
                locations: &[],
                ..file
            }
        ));
        assert!(with("manual").wants(HERE, &file));
        assert!(!with("manual").wants(
            HERE,
            &FileInfo {
                present_here: false,
                ..file
            }
        ));
        assert!(!with("public").wants(HERE, &file));
        assert!(with("public").wants(
            HERE,
            &FileInfo {
                path: Some(b"public/f"),
                ..file
            }
        ));
        assert!(!with("incrementalbackup").wants(HERE, &file)); // numcopies met, a copy exists
        // transfer: not wanted once every client and 2 client copies have it.
        let mut f = facts();
        f.groups.insert(A2.into(), ["transfer".to_string()].into());
        let p = prefs(&[(A2, "standard")], f);
        assert!(!p.wants(A2, &file));
        assert!(p.wants(
            A2,
            &FileInfo {
                locations: &[HERE.to_string()],
                ..file
            }
        ));
    }

    #[test]
    fn fallbacks_follow_git_annex() {
        let k = key(5);
        let file = FileInfo {
            path: Some(b"f"),
            key: &k,
            locations: &[],
            present_here: true,
            numcopies_attr: None,
        };
        let gone = FileInfo {
            present_here: false,
            ..file
        };
        // Unparseable, metadata=, `standard` for a repository in two standard groups,
        // `groupwanted` for one whose group has no expression: all "present".
        let mut f = facts();
        f.groups.get_mut(HERE).unwrap().insert("archive".into());
        for expr in ["bogus=1", "metadata=tag=x", "standard", "groupwanted"] {
            let p = prefs(&[(HERE, expr)], f.clone());
            assert!(p.wants(HERE, &file), "{expr}");
            assert!(!p.wants(HERE, &gone), "{expr}");
            assert!(!p.warnings.is_empty(), "{expr}");
        }
        // Only the `standard` term falls back, not the whole expression.
        let p = prefs(&[(HERE, "standard or include=g*")], f.clone());
        assert!(p.wants(
            HERE,
            &FileInfo {
                path: Some(b"g"),
                ..gone
            }
        ));
        assert!(!p.wants(HERE, &gone));
        // The empty expression wants nothing (unlike no expression).
        let p = prefs(&[(HERE, " ")], facts());
        assert!(!p.wants(HERE, &file) && p.wants_drop(HERE, &file));
    }

    #[test]
    fn drops_assume_the_copy_gone_and_required_content_holds() {
        let k = key(5);
        let locs: Vec<String> = vec![HERE.into(), C1.into()];
        let file = FileInfo {
            path: Some(b"f.txt"),
            key: &k,
            locations: &locs,
            present_here: true,
            numcopies_attr: None,
        };
        let p = prefs(&[(HERE, "copies=2"), (C1, "present")], facts());
        // Two copies now, one if here dropped it: wanted, and also wanted to drop.
        assert!(p.wants(HERE, &file) && p.wants_drop(HERE, &file));
        let p = prefs(&[(HERE, "copies=1")], facts());
        assert!(!p.wants_drop(HERE, &file));
        // present ignores the assumption: a manual repository never drops by itself.
        let p = prefs(&[(C1, "present")], facts());
        assert!(!p.wants_drop(C1, &file));
        let req: BTreeMap<String, String> = [(
            HERE.to_string(),
            "include=*.txt and not copies=2".to_string(),
        )]
        .into();
        let p = Preferences::new(facts(), &BTreeMap::new(), &req);
        assert!(!p.requires(HERE, &file));
        assert!(p.requires_keeping(HERE, &file));
        assert!(!p.requires_keeping(C1, &file));
    }

    #[test]
    fn logs_round_trip_and_damage_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        let (repo, _) = Repo::init(d.path(), None, "test", &Default::default()).unwrap();
        let here = repo.uuid().to_string();
        set_wanted(&repo, &here, "standard").unwrap();
        add_group(&repo, &here, "client").unwrap();
        add_group(&repo, &here, "backup").unwrap();
        add_group(&repo, C1, "archive").unwrap();
        assert!(remove_group(&repo, &here, "backup").unwrap());
        assert!(!remove_group(&repo, &here, "backup").unwrap());
        set_group_wanted(&repo, "archive", "include=keep/*  or  standard").unwrap();
        set_required(&repo, C1, "include=*.txt").unwrap();
        // Refused before anything is written.
        let e = set_wanted(&repo, &here, "include=a and foo=1")
            .unwrap_err()
            .to_string();
        assert!(e.contains(r#"unknown term "foo=1" at word 3"#), "{e}");
        assert!(set_group_wanted(&repo, "archive", "groupwanted").is_err());
        assert!(add_group(&repo, &here, "two words").is_err());
        assert_eq!(wanted(&repo, &here).unwrap().as_deref(), Some("standard"));
        assert_eq!(
            group_wanted(&repo, "archive").unwrap().as_deref(),
            Some("include=keep/*  or  standard")
        );
        let g = String::from_utf8(repo.branch.read(b"group.log").unwrap().unwrap()).unwrap();
        assert!(g.contains(&format!("{here} client timestamp=")), "{g}");

        // Damage, as a union merge or a newer git-annex could leave it.
        let lock = repo.branch.lock_journal().unwrap();
        let mut pc = repo.branch.read(b"preferred-content.log").unwrap().unwrap();
        pc.extend_from_slice(
            format!("\n\n{A1} bogus=1 timestamp=5s\n{A2} present\n timestamp=9s\n").as_bytes(),
        );
        repo.branch
            .write(&lock, b"preferred-content.log", &pc)
            .unwrap();
        let mut gp = repo
            .branch
            .read(b"group-preferred-content.log")
            .unwrap()
            .unwrap();
        gp.extend_from_slice(b"junk\n12x archive nothing\n");
        repo.branch
            .write(&lock, b"group-preferred-content.log", &gp)
            .unwrap();
        drop(lock);

        let p = Preferences::load(&repo).unwrap();
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(p.warnings[0].contains("bogus=1"), "{:?}", p.warnings);
        assert!(p.is_configured(&here) && p.is_configured(A1) && p.is_configured(A2));
        assert_eq!(p.standard_group(&here), Some("client"));
        assert_eq!(p.standard_group(C1), Some("archive"));
        let k = key(3);
        let file = FileInfo {
            path: Some(b"a.txt"),
            key: &k,
            locations: &[],
            present_here: false,
            numcopies_attr: None,
        };
        assert!(p.wants(&here, &file)); // client, nothing archived
        assert!(!p.wants(A1, &file)); // bogus: present, and it is not there
        assert!(p.requires(C1, &file));
        assert!(!p.requires(&here, &file));
    }

    #[test]
    fn remote_log_values_unescape() {
        assert_eq!(unescape_remote_value("my&32;dir&38;x"), "my dir&x");
        assert_eq!(unescape_remote_value("a&b"), "a&b");
    }

    /// 100,000 files against the standard client expression. Prints the time; the bound is
    /// loose so that a debug build on a busy machine passes (release: ~tens of ms).
    #[test]
    fn evaluates_100k_files_quickly() {
        let mut f = facts();
        f.groups.insert(HERE.into(), ["client".into()].into());
        let p = prefs(&[(HERE, "standard"), (A1, "groupwanted")], f);
        let keys: Vec<Key> = (0..100u64).map(key).collect();
        let locs: Vec<Vec<String>> = vec![vec![], vec![HERE.into()], vec![A1.into(), C1.into()]];
        let paths: Vec<Vec<u8>> = (0..100_000)
            .map(|i| format!("dir{}/archive/file{i}.bin", i % 7).into_bytes())
            .collect();
        let start = std::time::Instant::now();
        let mut wanted = 0;
        for (i, path) in paths.iter().enumerate() {
            let file = FileInfo {
                path: Some(path),
                key: &keys[i % 100],
                locations: &locs[i % 3],
                present_here: i % 3 == 1,
                numcopies_attr: None,
            };
            wanted += p.wants(HERE, &file) as usize + p.wants_drop(HERE, &file) as usize;
        }
        let took = start.elapsed();
        eprintln!("evaluated 100000 files twice in {took:?}");
        assert!(wanted > 0);
        assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    }
}
