//! `annex.largefiles` expressions: which files are annexed and which go to git as they are.
//!
//! Supported terms: `include=GLOB`, `exclude=GLOB`, `largerthan=SIZE`, `smallerthan=SIZE`,
//! `anything`, `nothing`, combined with `and`, `or`, `not` and parentheses; adjacent terms
//! without an operator are joined with `and`. Globs match the path relative to the top of the
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
        let bad = |why: String| Error::BadExpression {
            expr: s.to_string(),
            why,
        };
        let tokens = tokenize(s);
        if tokens.is_empty() {
            return Err(bad("empty expression".into()));
        }
        let mut p = Parser {
            toks: &tokens,
            pos: 0,
        };
        let e = p.or().map_err(bad)?;
        if p.pos != tokens.len() {
            return Err(bad(format!("unexpected {:?}", tokens[p.pos])));
        }
        Ok(e)
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

fn tokenize(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    for word in s.split_whitespace() {
        let mut w = word;
        while let Some(rest) = w.strip_prefix('(') {
            out.push("(".into());
            w = rest;
        }
        let mut closing = 0;
        while w.ends_with(')') && !w.contains('[') {
            w = &w[..w.len() - 1];
            closing += 1;
        }
        if !w.is_empty() {
            out.push(w.to_string());
        }
        out.extend(std::iter::repeat_n(")".to_string(), closing));
    }
    out
}

struct Parser<'a> {
    toks: &'a [String],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&str> {
        self.toks.get(self.pos).map(String::as_str)
    }
    fn or(&mut self) -> std::result::Result<Expr, String> {
        let mut e = self.and()?;
        while self.peek() == Some("or") {
            self.pos += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }
    fn and(&mut self) -> std::result::Result<Expr, String> {
        let mut e = self.unary()?;
        loop {
            match self.peek() {
                Some("and") => {
                    self.pos += 1;
                    e = Expr::And(Box::new(e), Box::new(self.unary()?));
                }
                Some(t) if t != "or" && t != ")" => {
                    e = Expr::And(Box::new(e), Box::new(self.unary()?));
                }
                _ => return Ok(e),
            }
        }
    }
    fn unary(&mut self) -> std::result::Result<Expr, String> {
        let t = self.peek().ok_or("expression ends too early")?.to_string();
        self.pos += 1;
        match t.as_str() {
            "not" => Ok(Expr::Not(Box::new(self.unary()?))),
            "(" => {
                let e = self.or()?;
                if self.peek() != Some(")") {
                    return Err("missing )".into());
                }
                self.pos += 1;
                Ok(e)
            }
            "anything" => Ok(Expr::Anything),
            "nothing" => Ok(Expr::Nothing),
            _ => term(&t),
        }
    }
}

fn term(t: &str) -> std::result::Result<Expr, String> {
    let (name, value) = t
        .split_once('=')
        .ok_or_else(|| format!("unknown term {t:?}"))?;
    match name {
        "include" => Ok(Expr::Include(value.as_bytes().to_vec())),
        "exclude" => Ok(Expr::Exclude(value.as_bytes().to_vec())),
        "largerthan" => Ok(Expr::LargerThan(
            parse_size(value).ok_or_else(|| format!("bad size {value:?}"))?,
        )),
        "smallerthan" => Ok(Expr::SmallerThan(
            parse_size(value).ok_or_else(|| format!("bad size {value:?}"))?,
        )),
        "mimetype" | "mimeencoding" => Err(format!(
            "{name}= is not supported by ferry yet; use include=/exclude= globs"
        )),
        _ => Err(format!(
            "{name}= cannot be used in annex.largefiles (or is unknown)"
        )),
    }
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
}
