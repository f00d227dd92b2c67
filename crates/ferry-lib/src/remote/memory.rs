//! An in-memory [`Remote`] for fast library tests: strict (it verifies what it is sent, like
//! a real receiving repository), and able to inject failures: unavailability, a connection that
//! breaks after some bytes, corrupt content.

use super::{ContentLock, Progress, Remote, Stored, TransferError};
use crate::error::Result;
use crate::key::Key;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct MemoryRemote {
    pub name: String,
    pub uuid: String,
    pub objects: Mutex<HashMap<Key, Vec<u8>>>,
    /// When set, every operation fails as "not available" with this reason.
    pub unavailable: Mutex<Option<String>>,
    /// When set, a retrieve fails after sending this many bytes (a broken connection).
    pub break_after: Mutex<Option<u64>>,
    /// Shared locks currently held, per key.
    locks: Arc<Mutex<HashMap<Key, usize>>>,
    /// Bytes sent by retrieve, in total.
    pub bytes_sent: AtomicUsize,
    /// What [`Remote::readonly`] says.
    pub readonly: bool,
}

struct MemLock {
    key: Key,
    locks: Arc<Mutex<HashMap<Key, usize>>>,
}
impl ContentLock for MemLock {}
impl Drop for MemLock {
    fn drop(&mut self) {
        let mut l = self.locks.lock().unwrap();
        if let Some(n) = l.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                l.remove(&self.key);
            }
        }
    }
}

impl MemoryRemote {
    pub fn new(name: &str, uuid: &str) -> MemoryRemote {
        MemoryRemote {
            name: name.into(),
            uuid: uuid.into(),
            ..Default::default()
        }
    }

    pub fn insert(&self, key: &Key, data: &[u8]) {
        self.objects
            .lock()
            .unwrap()
            .insert(key.clone(), data.to_vec());
    }

    fn avail(&self) -> Result<()> {
        match self.unavailable.lock().unwrap().clone() {
            Some(why) => Err(TransferError::Unavailable {
                remote: self.name.clone(),
                why,
            }
            .into()),
            None => Ok(()),
        }
    }
}

impl Remote for MemoryRemote {
    fn name(&self) -> &str {
        &self.name
    }
    fn uuid(&self) -> &str {
        &self.uuid
    }
    fn cost(&self) -> f64 {
        50.0
    }
    fn readonly(&self) -> bool {
        self.readonly
    }
    fn check_available(&self) -> Result<()> {
        self.avail()
    }
    fn check_present(&self, key: &Key) -> Result<bool> {
        self.avail()?;
        Ok(self.objects.lock().unwrap().contains_key(key))
    }
    fn store(&self, key: &Key, src: &Path, progress: &mut Progress) -> Result<Stored> {
        self.avail()?;
        let data = std::fs::read(src).map_err(|e| crate::Error::io("reading", e))?;
        progress.advance(data.len() as u64)?;
        if crate::hash::verify_file(key, src).ok().flatten() == Some(false) {
            return Err(TransferError::Corrupt {
                key: key.to_string(),
                why: "checksum does not match the key".into(),
            }
            .into());
        }
        self.insert(key, &data);
        Ok(Stored::default())
    }
    fn retrieve(
        &self,
        key: &Key,
        offset: u64,
        sink: &mut dyn crate::transfer::Sink,
        progress: &mut Progress,
    ) -> Result<()> {
        self.avail()?;
        let data = self
            .objects
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .ok_or_else(|| TransferError::NotPresent {
                remote: self.name.clone(),
                key: key.to_string(),
            })?;
        let mut rest = &data[(offset as usize).min(data.len())..];
        if let Some(limit) = *self.break_after.lock().unwrap() {
            let n = (limit as usize).min(rest.len());
            sink.write_all(&rest[..n])
                .map_err(|e| crate::Error::io("writing", e))?;
            self.bytes_sent.fetch_add(n, Ordering::Relaxed);
            progress.advance(n as u64)?;
            return Err(TransferError::Other("connection broken".into()).into());
        }
        while !rest.is_empty() {
            let n = rest.len().min(progress.chunk(64 * 1024));
            sink.write_all(&rest[..n])
                .map_err(|e| crate::Error::io("writing", e))?;
            self.bytes_sent.fetch_add(n, Ordering::Relaxed);
            progress.advance(n as u64)?;
            rest = &rest[n..];
        }
        Ok(())
    }
    fn remove(&self, key: &Key) -> Result<()> {
        self.avail()?;
        if self.locks.lock().unwrap().contains_key(key) {
            return Err(TransferError::Other(format!("{key} is locked")).into());
        }
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }
    fn lock_content(&self, key: &Key) -> Result<Option<Box<dyn ContentLock>>> {
        self.avail()?;
        if !self.objects.lock().unwrap().contains_key(key) {
            return Ok(None);
        }
        *self.locks.lock().unwrap().entry(key.clone()).or_default() += 1;
        Ok(Some(Box::new(MemLock {
            key: key.clone(),
            locks: self.locks.clone(),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{Backend, hash_file};
    use crate::store::Store;
    use crate::transfer::receive_into;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn an_interrupted_retrieve_resumes_without_resending() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::new(d.path().join("annex"), false);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let (hex, n) = hash_file(Backend::Sha256E, &mut &data[..], 0).unwrap();
        let key = Backend::Sha256E.key(n, &hex, b"x.bin");
        let r = MemoryRemote::new("mem", "u-mem");
        r.insert(&key, &data);
        *r.break_after.lock().unwrap() = Some(100_000);
        let cancel = AtomicBool::new(false);
        let mut cb = |_| {};
        let mut p = Progress::new(&key, &cancel, &mut cb);
        let e = receive_into(&store, &key, &mut p, &mut |off, sink, p| {
            r.retrieve(&key, off, sink, p)
        });
        assert!(e.is_err());
        assert!(store.find(&key).is_none());
        *r.break_after.lock().unwrap() = None;
        let got = receive_into(&store, &key, &mut p, &mut |off, sink, p| {
            r.retrieve(&key, off, sink, p)
        })
        .unwrap();
        assert_eq!(got.resumed_from, 100_000);
        assert_eq!(r.bytes_sent.load(Ordering::Relaxed), 300_000);
        assert_eq!(std::fs::read(store.find(&key).unwrap()).unwrap(), data);
    }

    #[test]
    fn cancellation_stops_a_transfer_and_keeps_the_partial_file() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::new(d.path().join("annex"), false);
        let data = vec![3u8; 1 << 20];
        let (hex, n) = hash_file(Backend::Sha256E, &mut &data[..], 0).unwrap();
        let key = Backend::Sha256E.key(n, &hex, b"x.bin");
        let r = MemoryRemote::new("mem", "u-mem");
        r.insert(&key, &data);
        let cancel = AtomicBool::new(false);
        let mut cb = |done: u64| {
            if done >= 128 * 1024 {
                cancel.store(true, Ordering::Relaxed);
            }
        };
        let mut p = Progress::new(&key, &cancel, &mut cb);
        let e = receive_into(&store, &key, &mut p, &mut |off, sink, p| {
            r.retrieve(&key, off, sink, p)
        })
        .unwrap_err();
        assert!(e.to_string().contains("cancelled"), "{e}");
        assert!(store.find(&key).is_none());
        let tmp = store
            .tmp_dir()
            .unwrap()
            .join(crate::remote::key_component(&key).unwrap());
        assert_eq!(std::fs::metadata(tmp).unwrap().len(), 128 * 1024);
    }
}
