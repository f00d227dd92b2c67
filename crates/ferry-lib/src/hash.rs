//! Hashing backends: turning content into a key, and checking content against one.
//!
//! SHA-256 comes from `sha2`, which uses the CPU's SHA extensions when present (about 4× the
//! speed of coreutils' `sha256sum` here), so hashing large files is bounded by the disk.

use crate::key::{Key, extension_for, hex};
use sha2::{Digest, Sha256, Sha512};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;

/// Read buffer: large enough to keep syscalls cheap, small enough to not matter for memory.
const BUF: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sha256,
    Sha256E,
    Sha512,
    Sha512E,
}

impl Backend {
    pub fn from_variety(v: &str) -> Option<Backend> {
        Some(match v {
            "SHA256" => Backend::Sha256,
            "SHA256E" => Backend::Sha256E,
            "SHA512" => Backend::Sha512,
            "SHA512E" => Backend::Sha512E,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sha256 => "SHA256",
            Backend::Sha256E => "SHA256E",
            Backend::Sha512 => "SHA512",
            Backend::Sha512E => "SHA512E",
        }
    }

    fn with_extension(self) -> bool {
        matches!(self, Backend::Sha256E | Backend::Sha512E)
    }

    /// The key for content of `size` bytes with digest `digest`, stored for `file_name`.
    pub fn key(self, size: u64, digest_hex: &str, file_name: &[u8]) -> Key {
        let mut name = digest_hex.as_bytes().to_vec();
        if self.with_extension() {
            name.extend_from_slice(&extension_for(file_name, 4));
        }
        Key {
            variety: self.name().to_string(),
            size: Some(size),
            mtime: None,
            chunk: None,
            name,
        }
    }
}

/// A streaming hasher for one backend.
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(b: Backend) -> Hasher {
        match b {
            Backend::Sha256 | Backend::Sha256E => Hasher::Sha256(Sha256::new()),
            Backend::Sha512 | Backend::Sha512E => Hasher::Sha512(Sha512::new()),
        }
    }
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }
    pub fn finish_hex(self) -> String {
        match self {
            Hasher::Sha256(h) => hex(&h.finalize()),
            Hasher::Sha512(h) => hex(&h.finalize()),
        }
    }
}

/// Identity of a file as seen by `fstat`: if any of it changes while we hash, the hash is void.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatStamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_ns: i64,
    pub ctime: i64,
    pub ctime_ns: i64,
}

impl StatStamp {
    pub fn of(m: &std::fs::Metadata) -> StatStamp {
        StatStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_ns: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_ns: m.ctime_nsec(),
        }
    }
}

/// Hashes a reader to its end with a buffer sized for `size_hint` bytes (small files get a small
/// buffer; a file that grows while read is still hashed to its end, and the count tells).
pub fn hash_file(b: Backend, r: &mut impl Read, size_hint: u64) -> io::Result<(String, u64)> {
    let cap = (size_hint.saturating_add(1)).clamp(4096, BUF as u64) as usize;
    let mut h = Hasher::new(b);
    let mut buf = vec![0u8; cap];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((h.finish_hex(), total))
}

/// Whether `path`'s content hashes to `key`. `None` when the key's backend cannot be checked
/// by ferry (then only the size is compared, by the caller).
pub fn verify_file(key: &Key, path: &std::path::Path) -> io::Result<Option<bool>> {
    let mut f = File::open(path)?;
    let size = f.metadata()?.len();
    if let Some(s) = key.size
        && s != size
    {
        return Ok(Some(false));
    }
    let Some(b) = key.hash_backend() else {
        return Ok(None);
    };
    let (hex, _) = hash_file(b, &mut f, size)?;
    let want = key.name.split(|&c| c == b'.').next().unwrap_or(&[]);
    Ok(Some(hex.as_bytes() == want))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256e_key_of_hello_world() {
        let (hex, n) = hash_file(Backend::Sha256E, &mut &b"hello world\n"[..], 0).unwrap();
        let k = Backend::Sha256E.key(n, &hex, b"dir/hello.txt");
        assert_eq!(
            k.to_string(),
            "SHA256E-s12--a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447.txt"
        );
        let k = Backend::Sha256.key(n, &hex, b"dir/hello.txt");
        assert_eq!(
            k.to_string(),
            "SHA256-s12--a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447"
        );
    }

    #[test]
    fn verify_detects_corruption() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"hello world\n").unwrap();
        let k = Key::parse_str(
            "SHA256E-s12--a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447.txt",
        )
        .unwrap();
        assert_eq!(verify_file(&k, &p).unwrap(), Some(true));
        std::fs::write(&p, b"hello wurld\n").unwrap();
        assert_eq!(verify_file(&k, &p).unwrap(), Some(false));
        std::fs::write(&p, b"short").unwrap();
        assert_eq!(verify_file(&k, &p).unwrap(), Some(false));
    }
}
