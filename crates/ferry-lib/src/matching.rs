//! `annex.largefiles` expressions: which files are annexed and which go to git as they are.
//!
//! Supported terms: `include=GLOB`, `exclude=GLOB`, `largerthan=SIZE`, `smallerthan=SIZE`,
//! `anything`, `nothing`, combined with `and`, `or`, `not` and parentheses; adjacent terms
//! without an operator are joined with `and`, and operators apply left to right with no
//! precedence, as in git-annex ([`build`], shared with the preferred content expressions of
//! [`crate::preferred`]). Globs match the path relative to the top of the
//! work tree, and `*` matches `/` too (as in git-annex). Terms that need content inspection
//! (`mimetype=`, `mimeencoding=`) are refused with a clear error rather than guessed.

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Anything,
    Nothing,
    Include(Vec<u8>),
    Exclude(Vec<u8>),
    LargerThan(u64),
    SmallerThan(u64),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

impl Expr {
    pub fn parse(s: &str) -> Result<Expr> {
        build(s, true, |w| match w {
            "anything" => Ok(Expr::Anything),
            "nothing" => Ok(Expr::Nothing),
            _ => term(w),
        })
        .map_err(|e| Error::BadExpression {
            expr: s.to_string(),
            why: e.to_string(),
        })
    }

    /// Whether a file at `path` (relative to the top) of `size` bytes matches.
    pub fn matches(&self, path: &[u8], size: u64) -> bool {
        match self {
            Expr::Anything => true,
            Expr::Nothing => false,
            Expr::Include(g) => glob_match(g, path),
            Expr::Exclude(g) => !glob_match(g, path),
            Expr::LargerThan(n) => size > *n,
            Expr::SmallerThan(n) => size < *n,
            Expr::Not(e) => !e.matches(path, size),
            Expr::And(a, b) => a.matches(path, size) && b.matches(path, size),
            Expr::Or(a, b) => a.matches(path, size) || b.matches(path, size),
        }
    }
}

impl Combine for Expr {
    fn any() -> Expr {
        Expr::Anything
    }
    fn not(self) -> Expr {
        Expr::Not(Box::new(self))
    }
    fn and(self, other: Expr) -> Expr {
        Expr::And(Box::new(self), Box::new(other))
    }
    fn or(self, other: Expr) -> Expr {
        Expr::Or(Box::new(self), Box::new(other))
    }
}

/// A parse error that names where it is: the 1-based whitespace-separated word of the
/// expression (0 for the expression as a whole) and the token found there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub word: usize,
    pub token: String,
    pub why: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.word == 0 {
            write!(f, "{}", self.why)
        } else {
            write!(f, "{} {:?} at word {}", self.why, self.token, self.word)
        }
    }
}

/// The tree operations an expression is built with; `any` is the expression that matches
/// everything (what an empty group stands for).
pub trait Combine: Sized {
    fn any() -> Self;
    fn not(self) -> Self;
    fn and(self, other: Self) -> Self;
    fn or(self, other: Self) -> Self;
}

/// Splits an expression into tokens the way git-annex does: on whitespace, then `(` and `)`
/// become tokens of their own wherever they are (so a glob cannot hold a parenthesis). Each
/// token carries the 1-based number of the word it came from.
pub fn tokenize(s: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    for (n, word) in s.split_whitespace().enumerate() {
        let mut rest = word;
        while let Some(i) = rest.find(['(', ')']) {
            if i > 0 {
                out.push((n + 1, &rest[..i]));
            }
            out.push((n + 1, &rest[i..i + 1]));
            rest = &rest[i + 1..];
        }
        if !rest.is_empty() {
            out.push((n + 1, rest));
        }
    }
    out
}

enum Tok<T> {
    And,
    Or,
    Not,
    Leaf(T),
    Group(Vec<(usize, Tok<T>)>),
}

/// Builds an expression with git-annex's rules (its `Utility.Matcher`), which are not the
/// usual ones:
///
/// - there is no precedence: `a or b and c` is `(a or b) and c`, operators apply left to
///   right; `not` applies to the one term or parenthesised group after it;
/// - adjacent terms or groups are joined with `and`;
/// - an operator with nothing after it stands for "anything" (`a or` matches everything,
///   `not` alone matches nothing), a missing `)` is supplied and a stray `)` ignored.
///
/// `strict` refuses what those last rules forgive (dangling operators, unbalanced
/// parentheses, an empty expression or group), for checking an expression before it is
/// stored; reading one that git-annex stored must not be strict. `leaf` turns any other
/// token into a term; its error becomes a [`ParseError`] at that token.
pub fn build<T: Combine>(
    s: &str,
    strict: bool,
    mut leaf: impl FnMut(&str) -> std::result::Result<T, String>,
) -> std::result::Result<T, ParseError> {
    let words = tokenize(s);
    if strict && words.is_empty() {
        return Err(ParseError {
            word: 0,
            token: String::new(),
            why: "empty expression".into(),
        });
    }
    let mut pos = 0;
    let toks = group(&words, &mut pos, 0, strict, &mut leaf)?;
    Ok(process(toks, strict)?.unwrap_or_else(T::any))
}

fn err(word: usize, token: &str, why: &str) -> ParseError {
    ParseError {
        word,
        token: token.to_string(),
        why: why.to_string(),
    }
}

/// Reads tokens up to the `)` closing a group opened at word `open` (0: the top level).
fn group<T>(
    words: &[(usize, &str)],
    pos: &mut usize,
    open: usize,
    strict: bool,
    leaf: &mut impl FnMut(&str) -> std::result::Result<T, String>,
) -> std::result::Result<Vec<(usize, Tok<T>)>, ParseError> {
    let mut out: Vec<(usize, Tok<T>)> = Vec::new();
    while let Some(&(n, w)) = words.get(*pos) {
        *pos += 1;
        let tok = match w {
            ")" if open > 0 => return Ok(out),
            ")" if strict => return Err(err(n, w, "unbalanced parenthesis")),
            ")" => continue,
            "(" => {
                let inner = group(words, pos, n, strict, leaf)?;
                if strict && inner.is_empty() {
                    return Err(err(n, w, "empty parentheses"));
                }
                Tok::Group(inner)
            }
            "and" => Tok::And,
            "or" => Tok::Or,
            "not" => Tok::Not,
            _ => Tok::Leaf(leaf(w).map_err(|why| err(n, w, &why))?),
        };
        // Implicit `and` between adjacent terms or groups.
        let operand = |t: &Tok<T>| matches!(t, Tok::Leaf(_) | Tok::Group(_));
        if operand(&tok) && out.last().is_some_and(|(_, t)| operand(t)) {
            out.push((n, Tok::And));
        }
        out.push((n, tok));
    }
    if strict && open > 0 {
        return Err(err(open, "(", "unbalanced parenthesis"));
    }
    Ok(out)
}

/// Folds tokens left to right; `None` is "anything" (an empty group, a missing operand).
fn process<T: Combine>(
    toks: Vec<(usize, Tok<T>)>,
    strict: bool,
) -> std::result::Result<Option<T>, ParseError> {
    let mut it = toks.into_iter().peekable();
    let mut m = None;
    while it.peek().is_some() {
        m = consume(m, &mut it, strict)?;
    }
    Ok(m)
}

/// One step: a term or group joins `m` with `and`; an operator takes the step after it as its
/// operand (git-annex's `consume`).
fn consume<T: Combine>(
    m: Option<T>,
    it: &mut std::iter::Peekable<std::vec::IntoIter<(usize, Tok<T>)>>,
    strict: bool,
) -> std::result::Result<Option<T>, ParseError> {
    let Some((n, tok)) = it.next() else {
        return Ok(m);
    };
    let name = match tok {
        Tok::Leaf(t) => return Ok(and(m, Some(t))),
        Tok::Group(g) => return Ok(and(m, process(g, strict)?)),
        Tok::And => "and",
        Tok::Or => "or",
        Tok::Not => "not",
    };
    if strict && m.is_none() && name != "not" {
        return Err(err(n, name, "nothing before"));
    }
    if strict && it.peek().is_none() {
        return Err(err(n, name, "nothing after"));
    }
    let p = consume(None, it, strict)?;
    Ok(match name {
        "and" => and(m, p),
        "or" => match (m, p) {
            (Some(a), Some(b)) => Some(a.or(b)),
            _ => None,
        },
        _ => and(m, Some(p.unwrap_or_else(T::any).not())),
    })
}

fn and<T: Combine>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.and(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

fn term(t: &str) -> std::result::Result<Expr, String> {
    let (name, value) = t.split_once('=').ok_or("unknown term")?;
    match name {
        "include" => Ok(Expr::Include(value.as_bytes().to_vec())),
        "exclude" => Ok(Expr::Exclude(value.as_bytes().to_vec())),
        "largerthan" => Ok(Expr::LargerThan(size_value(value)?)),
        "smallerthan" => Ok(Expr::SmallerThan(size_value(value)?)),
        "mimetype" | "mimeencoding" => Err(format!(
            "{name}= is not supported by ferry yet (use include=/exclude= globs):"
        )),
        _ => Err("unknown term (or one annex.largefiles cannot use)".into()),
    }
}

/// A size for `largerthan=` / `smallerthan=`, with the error a term parser reports.
pub fn size_value(value: &str) -> std::result::Result<u64, String> {
    parse_size(value).ok_or_else(|| "bad size in".to_string())
}

/// Sizes like `100`, `100kb`, `1.5MiB`, `2 gigabytes` (decimal and binary units, any case).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.trim_end_matches('s');
    let mult: f64 = match unit {
        "" | "b" | "byte" => 1.0,
        "k" | "kb" | "kilobyte" => 1e3,
        "m" | "mb" | "megabyte" => 1e6,
        "g" | "gb" | "gigabyte" => 1e9,
        "t" | "tb" | "terabyte" => 1e12,
        "p" | "pb" | "petabyte" => 1e15,
        "kib" | "kibibyte" => 1024.0,
        "mib" | "mebibyte" => 1024.0 * 1024.0,
        "gib" | "gibibyte" => 1024.0 * 1024.0 * 1024.0,
        "tib" | "tebibyte" => 1024f64.powi(4),
        // Bandwidth units (bits, powers of ten), as git-annex reads them.
        "kbit" | "kilobit" => 125.0,
        "mbit" | "megabit" => 125e3,
        "gbit" | "gigabit" => 125e6,
        "tbit" | "terabit" => 125e9,
        _ => return None,
    };
    Some((num * mult).round() as u64)
}

/// Shell-style glob where `*` also matches `/`; `?` one byte; `[abc]`, `[a-z]`, `[!x]`.
pub fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() {
            match pat[p] {
                b'*' => {
                    star = Some((p, i));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some((ok, next)) = class(pat, p, s[i]) {
                        if ok {
                            p = next;
                            i += 1;
                            continue;
                        }
                    } else if s[i] == b'[' {
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pat.len() && pat[p + 1] == s[i] => {
                    p += 2;
                    i += 1;
                    continue;
                }
                c if c == s[i] => {
                    p += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, si)) => {
                p = sp + 1;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// Matches a `[...]` class at `pat[p]`; returns (matched, index after the class).
fn class(pat: &[u8], p: usize, c: u8) -> Option<(bool, usize)> {
    let mut j = p + 1;
    let negate = matches!(pat.get(j), Some(b'!') | Some(b'^'));
    if negate {
        j += 1;
    }
    let mut matched = false;
    let mut first = true;
    while j < pat.len() && (first || pat[j] != b']') {
        first = false;
        if j + 2 < pat.len() && pat[j + 1] == b'-' && pat[j + 2] != b']' {
            if pat[j] <= c && c <= pat[j + 2] {
                matched = true;
            }
            j += 3;
        } else {
            if pat[j] == c {
                matched = true;
            }
            j += 1;
        }
    }
    if j >= pat.len() {
        return None;
    }
    Some((matched != negate, j + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("100kb"), Some(100_000));
        assert_eq!(parse_size("1KiB"), Some(1024));
        assert_eq!(parse_size("1.5 MB"), Some(1_500_000));
        assert_eq!(parse_size("2gigabytes"), Some(2_000_000_000));
        assert_eq!(parse_size("lots"), None);
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"*.mp3", b"music/a.mp3"));
        assert!(!glob_match(b"*.mp3", b"music/a.mp4"));
        assert!(glob_match(b"archive/*", b"archive/x/y"));
        assert!(glob_match(b"file?.[ch]", b"file1.c"));
        assert!(!glob_match(b"file?.[!ch]", b"file1.c"));
        assert!(glob_match(b"[a-c]*", b"banana"));
        assert!(glob_match(b"*", b""));
    }

    #[test]
    fn expressions() {
        let e = Expr::parse("largerthan=1kb and not (include=*.txt or include=*.md)").unwrap();
        assert!(e.matches(b"a.bin", 2000));
        assert!(!e.matches(b"a.bin", 10));
        assert!(!e.matches(b"doc/a.txt", 5000));
        let e = Expr::parse("include=*.jpg or smallerthan=10").unwrap();
        assert!(e.matches(b"x.jpg", 1 << 20));
        assert!(e.matches(b"x.bin", 1));
        assert!(!e.matches(b"x.bin", 100));
        let e = Expr::parse("exclude=*.txt largerthan=5").unwrap();
        assert!(e.matches(b"a.bin", 6));
        assert!(!e.matches(b"a.txt", 6));
        assert_eq!(Expr::parse("anything").unwrap(), Expr::Anything);
        assert!(Expr::parse("mimetype=text/*").is_err());
        assert!(Expr::parse("( include=*").is_err());
        assert!(Expr::parse("bogus").is_err());
        assert!(Expr::parse("").is_err());
    }

    #[test]
    fn operators_apply_left_to_right_as_in_git_annex() {
        // git-annex has no and-before-or precedence: this is (a or b) and c.
        let e = Expr::parse("include=a or include=b and include=c").unwrap();
        assert!(!e.matches(b"a", 1));
        let e = Expr::parse("include=a or (include=b and include=c)").unwrap();
        assert!(e.matches(b"a", 1));
        // `not` takes only the next term.
        let e = Expr::parse("not include=a and include=b").unwrap();
        assert!(e.matches(b"b", 1));
        assert!(!e.matches(b"a", 1));
    }

    #[test]
    fn errors_name_the_word_and_token() {
        let e = Expr::parse("include=a and foo=1").unwrap_err().to_string();
        assert!(
            e.contains(r#"unknown term (or one annex.largefiles cannot use) "foo=1" at word 3"#),
            "{e}"
        );
        let e = Expr::parse("include=a and largerthan=lots")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(r#"bad size in "largerthan=lots" at word 3"#),
            "{e}"
        );
        let e = Expr::parse("include=a and").unwrap_err().to_string();
        assert!(e.contains(r#"nothing after "and" at word 2"#), "{e}");
        let e = Expr::parse("(include=a or include=b")
            .unwrap_err()
            .to_string();
        assert!(e.contains(r#"unbalanced parenthesis "(" at word 1"#), "{e}");
        let e = Expr::parse("or include=b").unwrap_err().to_string();
        assert!(e.contains(r#"nothing before "or" at word 1"#), "{e}");
    }

    #[test]
    fn lenient_building_follows_git_annex() {
        let any = |s: &str| build(s, false, |w| Ok(Expr::Include(w.as_bytes().to_vec())));
        let m = |s: &str, f: &[u8]| any(s).unwrap().matches(f, 0);
        // Verified with `git annex matchexpression`: a dangling `or` makes everything match,
        // a lone `not` nothing, unbalanced parentheses are forgiven.
        assert!(m("x or", b"a"));
        assert!(!m("not", b"a"));
        assert!(m("(a", b"a"));
        assert!(m("b) or a", b"a"));
        assert!(m("", b"a"));
        assert!(!m("a not", b"a"));
        assert!(m("a and or b", b"a"));
        assert_eq!(
            tokenize("(a b)) c"),
            vec![(1, "("), (1, "a"), (2, "b"), (2, ")"), (2, ")"), (3, "c")]
        );
    }
}
