//! Annex keys: the names content is stored under.
//!
//! A key is `VARIETY[-sSIZE][-mMTIME][-SCHUNKSIZE-CCHUNKNUM]--NAME`, serialized with the fields in
//! exactly that order (git-annex 10 rejects any other order). This module owns the grammar, the
//! extension rules of the `*E` backends, the "keyFile" escaping used wherever a key becomes one
//! path component, and the two hash-directory layouts. Everything here is pure and byte-exact:
//! the compatibility tests compare it with `git annex examinekey` / `calckey`.

use md5::{Digest as _, Md5};
use std::fmt;

/// A parsed key. `name` holds raw bytes (git-annex allows any byte but `\n`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub variety: String,
    pub size: Option<u64>,
    pub mtime: Option<u64>,
    pub chunk: Option<(u64, u64)>,
    pub name: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a valid annex key: {0:?}")]
pub struct BadKey(pub String);

impl Key {
    /// Parses a serialized key, with git-annex 10's strictness.
    pub fn parse(s: &[u8]) -> Result<Key, BadKey> {
        let bad = || BadKey(String::from_utf8_lossy(s).into_owned());
        if s.contains(&b'\n') {
            return Err(bad());
        }
        let sep = find(s, b"--").ok_or_else(bad)?;
        let (fields, name) = (&s[..sep], &s[sep + 2..]);
        let mut parts = fields.split(|&b| b == b'-');
        let variety = parts.next().filter(|v| !v.is_empty()).ok_or_else(bad)?;
        let variety = std::str::from_utf8(variety).map_err(|_| bad())?.to_string();
        let mut key = Key {
            variety,
            size: None,
            mtime: None,
            chunk: None,
            name: name.to_vec(),
        };
        let mut order = 0u8;
        let mut chunk_size = None;
        for p in parts {
            let (&letter, digits) = p.split_first().ok_or_else(bad)?;
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) || digits.len() > 20 {
                return Err(bad());
            }
            let n: u64 = std::str::from_utf8(digits)
                .unwrap()
                .parse()
                .map_err(|_| bad())?;
            let rank = match letter {
                b's' => 1,
                b'm' => 2,
                b'S' => 3,
                b'C' => 4,
                _ => return Err(bad()),
            };
            if rank <= order {
                return Err(bad());
            }
            order = rank;
            match letter {
                b's' => key.size = Some(n),
                b'm' => key.mtime = Some(n),
                b'S' => chunk_size = Some(n),
                _ => key.chunk = Some((chunk_size.ok_or_else(bad)?, n)),
            }
        }
        if chunk_size.is_some() && key.chunk.is_none() {
            return Err(bad());
        }
        if key.is_e_variety()
            && let Some(dot) = key.name.iter().position(|&b| b == b'.')
            && key.name.len() - dot > 64
        {
            return Err(bad());
        }
        Ok(key)
    }

    pub fn parse_str(s: &str) -> Result<Key, BadKey> {
        Key::parse(s.as_bytes())
    }

    /// The serialized form, as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.variety.as_bytes().to_vec();
        if let Some(s) = self.size {
            out.extend_from_slice(format!("-s{s}").as_bytes());
        }
        if let Some(m) = self.mtime {
            out.extend_from_slice(format!("-m{m}").as_bytes());
        }
        if let Some((cs, cn)) = self.chunk {
            out.extend_from_slice(format!("-S{cs}-C{cn}").as_bytes());
        }
        out.extend_from_slice(b"--");
        out.extend_from_slice(&self.name);
        out
    }

    /// The serialized form without chunk fields: what hash directories are computed over.
    fn hash_basis(&self) -> Vec<u8> {
        Key {
            chunk: None,
            ..self.clone()
        }
        .to_bytes()
    }

    pub fn is_e_variety(&self) -> bool {
        self.variety.ends_with('E')
    }

    /// The backend this key was made with, if ferry can verify it.
    pub fn hash_backend(&self) -> Option<crate::hash::Backend> {
        crate::hash::Backend::from_variety(&self.variety)
    }

    /// keyFile escaping: `&`→`&a`, `%`→`&s`, `:`→`&c`, `/`→`%`.
    pub fn file_name(&self) -> Vec<u8> {
        let raw = self.to_bytes();
        if !raw.iter().any(|b| b"&%:/".contains(b)) {
            return raw;
        }
        let mut out = Vec::with_capacity(raw.len() + 8);
        for b in raw {
            match b {
                b'&' => out.extend_from_slice(b"&a"),
                b'%' => out.extend_from_slice(b"&s"),
                b':' => out.extend_from_slice(b"&c"),
                b'/' => out.push(b'%'),
                _ => out.push(b),
            }
        }
        out
    }

    /// Inverse of [`Key::file_name`].
    pub fn from_file_name(f: &[u8]) -> Result<Key, BadKey> {
        let mut out = Vec::with_capacity(f.len());
        let mut i = 0;
        while i < f.len() {
            match f[i] {
                b'%' => out.push(b'/'),
                b'&' if i + 1 < f.len() => {
                    i += 1;
                    out.push(match f[i] {
                        b'a' => b'&',
                        b's' => b'%',
                        b'c' => b':',
                        _ => return Err(BadKey(String::from_utf8_lossy(f).into_owned())),
                    });
                }
                b => out.push(b),
            }
            i += 1;
        }
        Key::parse(&out)
    }

    /// `hashdirlower`: `abc/def/` from the lowercase md5 hex.
    pub fn hash_dir_lower(&self) -> String {
        let h = hex(&Md5::digest(self.hash_basis()));
        format!("{}/{}/", &h[0..3], &h[3..6])
    }

    /// `hashdirmixed`: two levels of two letters from git-annex's 32-symbol alphabet.
    pub fn hash_dir_mixed(&self) -> String {
        const ALPHA: &[u8; 32] = b"0123456789zqjxkmvwgpfZQJXKMVWGPF";
        let d = Md5::digest(self.hash_basis());
        let w = u32::from_le_bytes([d[0], d[1], d[2], d[3]]) as u64; // shifts past 32 bits give 0, as in git-annex
        let c: Vec<u8> = (0..8)
            .map(|i| ALPHA[((w >> (6 * i)) & 31) as usize])
            .collect();
        let s = [c[1], c[0], c[3], c[2], c[5], c[4], c[7], c[6]];
        let s = std::str::from_utf8(&s).unwrap();
        format!("{}/{}/", &s[0..2], &s[2..4])
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}

/// The extension an `*E` backend appends for a file name (with `annex.maxextensionlength` 4).
pub fn extension_for(file_name: &[u8], max_len: usize) -> Vec<u8> {
    let base = match file_name.iter().rposition(|&b| b == b'/') {
        Some(i) => &file_name[i + 1..],
        None => file_name,
    };
    let base: &[u8] = {
        let start = base.iter().position(|&b| b != b'.').unwrap_or(base.len());
        &base[start..]
    };
    let Some(dot) = base.iter().position(|&b| b == b'.') else {
        return Vec::new();
    };
    let comps: Vec<&[u8]> = base[dot + 1..].split(|&b| b == b'.').collect();
    // Walk from the end; stop at the first component that is too long.
    let mut kept: Vec<&[u8]> = Vec::new();
    for c in comps.iter().rev() {
        if c.len() > max_len {
            break;
        }
        kept.push(c);
    }
    kept.reverse();
    let survivors: Vec<&[u8]> = kept
        .into_iter()
        .filter(|c| c.iter().all(|&b| b >= 0x80 || b.is_ascii_alphanumeric()))
        .collect();
    let last_two = &survivors[survivors.len().saturating_sub(2)..];
    let mut out = Vec::new();
    for c in last_two {
        if !c.is_empty() {
            out.push(b'.');
            out.extend_from_slice(c);
        }
    }
    out
}

pub fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_dirs_match_git_annex_examples() {
        let k = Key::parse_str(
            "SHA256E-s0--e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        )
        .unwrap();
        assert_eq!(k.hash_dir_lower(), "f87/4d5/");
        assert_eq!(k.hash_dir_mixed(), "pX/ZJ/");
        let k = Key::parse_str(
            "SHA256E-s12--a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447.txt",
        )
        .unwrap();
        assert_eq!(k.hash_dir_mixed(), "J7/0G/");
        assert_eq!(k.hash_dir_lower(), "e7d/d01/");
    }

    #[test]
    fn chunk_keys_share_parent_hash_dir() {
        let parent = Key::parse_str("SHA256E-s100000--79b3.tar.gz").unwrap();
        let chunk = Key::parse_str("SHA256E-s100000-S65536-C2--79b3.tar.gz").unwrap();
        assert_eq!(chunk.chunk, Some((65536, 2)));
        assert_eq!(parent.hash_dir_lower(), chunk.hash_dir_lower());
        assert_eq!(chunk.to_bytes(), b"SHA256E-s100000-S65536-C2--79b3.tar.gz");
    }

    #[test]
    fn parser_is_strict() {
        for bad in [
            "SHA256E-m1-s2--x",
            "SHA256E-q1--x",
            "SHA256E-sx--x",
            "nodashes",
            "-s1--x",
            "A-S5--x",
        ] {
            assert!(Key::parse_str(bad).is_err(), "{bad} should be rejected");
        }
        let long_ext = format!("SHA256E-s1--abc.{}", "x".repeat(70));
        assert!(Key::parse_str(&long_ext).is_err());
        let k = Key::parse_str("WORM-s5-m1700000000--dir,32with/sp/w,246rm,32file,,1.txt").unwrap();
        assert_eq!(k.mtime, Some(1700000000));
        assert_eq!(k.name, b"dir,32with/sp/w,246rm,32file,,1.txt");
    }

    #[test]
    fn key_file_escaping_round_trips() {
        let k = Key::parse_str("URL--http&c%%example.com%a%20b:c/x").unwrap();
        assert_eq!(k.file_name(), b"URL--http&ac&s&sexample.com&sa&s20b&cc%x");
        assert_eq!(Key::from_file_name(&k.file_name()).unwrap(), k);
    }

    #[test]
    fn extensions_follow_git_annex() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"archive.tar.gz", b".tar.gz"),
            (b"a.b.c.d", b".c.d"),
            (b"we ird.JPEG", b".JPEG"),
            (b".hidden.txt", b".txt"),
            (b"f.verylongext", b""),
            (b"x.jpegg", b""),
            (b"x.tar.gz.jpegg", b""),
            (b"song.mp3.part", b".mp3.part"),
            (b"file.a-b", b""),
            (b"weird.tar.gz..", b""),
            ("x.ünï".as_bytes(), b""),
            (b"x. .y", b".y"),
            ("über.jpeg".as_bytes(), b".jpeg"),
            (b"x.123", b".123"),
            (b"dir.d/noext", b""),
            (b"", b""),
        ];
        for (name, ext) in cases {
            assert_eq!(
                extension_for(name, 4),
                ext.to_vec(),
                "{}",
                String::from_utf8_lossy(name)
            );
        }
    }
}
