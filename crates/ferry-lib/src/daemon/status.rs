//! What the daemon is doing, published for `ferry status`, tests and (later) the web UI:
//! a snapshot (`.git/annex/ferry/daemon/status.json`, replaced atomically on every change)
//! and a typed event stream (`events.jsonl` next to it, one JSON object per line, rotated).

use crate::error::{IoContext, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CommitInfo {
    pub commit: String,
    pub at_ms: u64,
    /// Paths looked at for this commit.
    pub paths: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RemoteStatus {
    pub last_push_ms: Option<u64>,
    pub last_pull_ms: Option<u64>,
    /// The last push failed and will be retried.
    pub retry: Option<Retry>,
    pub pushing: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Retry {
    pub reason: String,
    pub failures: u32,
    pub next_attempt_ms: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct WatcherStatus {
    pub watched_dirs: usize,
    /// The inotify watch limit was reached: the rest of the tree is scanned periodically.
    pub limited: bool,
    pub last_rescan_ms: Option<u64>,
}

/// A transfer that is running, queued or waiting for its retry.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TransferEntry {
    /// "download" or "upload".
    pub direction: String,
    pub file: String,
    pub key: String,
    /// The remote (uploads; a download picks its source when it runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// Files in this run (small files move in batches); 0 for a queued entry.
    #[serde(default)]
    pub files: usize,
    pub size: Option<u64>,
    /// Bytes done (running big transfers, updated about once a second).
    #[serde(default)]
    pub bytes: u64,
    /// Bytes that were in place when the running transfer started (a partial file an earlier
    /// attempt left): of `bytes`, only those above this moved in this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The daemon's transfer queue.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TransfersStatus {
    /// Items waiting for a worker.
    pub queued: usize,
    /// Items waiting for a retry after a failure.
    #[serde(default)]
    pub retrying_count: usize,
    pub running: Vec<TransferEntry>,
    /// The first queued items, in order.
    #[serde(default)]
    pub next: Vec<TransferEntry>,
    /// The first items waiting for a retry, soonest first.
    #[serde(default)]
    pub retrying: Vec<TransferEntry>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub pid: u32,
    pub started_ms: u64,
    /// "starting", "running" or "stopped".
    pub state: String,
    /// Nothing queued: no changes waiting to be committed, no merge or push under way.
    pub idle: bool,
    pub branch: Option<String>,
    pub last_commit: Option<CommitInfo>,
    pub commits: u64,
    pub merges: u64,
    pub remotes: BTreeMap<String, RemoteStatus>,
    pub watcher: WatcherStatus,
    /// Problems the daemon is living with (a path it cannot read, a merge it could not do).
    pub problems: Vec<String>,
    #[serde(default)]
    pub transfers: TransfersStatus,
}

/// One thing that happened.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Started {
        pid: u32,
    },
    Scanned {
        committed: bool,
        ms: u64,
    },
    Committed {
        commit: String,
        paths: usize,
    },
    Merged {
        commit: String,
        resolved: Vec<String>,
    },
    Pushed {
        remote: String,
        ms: u64,
    },
    PushFailed {
        remote: String,
        error: String,
        retry_in_ms: u64,
    },
    Rescan {
        reason: String,
    },
    /// A content round moved `ok` files (to or from remotes); `failed` did not move.
    Transferred {
        ok: usize,
        failed: usize,
        ms: u64,
    },
    Problem {
        message: String,
    },
    Stopped,
}

#[derive(Serialize, Deserialize)]
struct Stamped<'a> {
    at_ms: u64,
    #[serde(flatten)]
    event: std::borrow::Cow<'a, Event>,
}

pub fn dir(annex_dir: &Path) -> PathBuf {
    annex_dir.join("ferry").join("daemon")
}

/// Writes the snapshot and the event log.
pub struct Publisher {
    dir: PathBuf,
    events: Option<std::fs::File>,
    events_len: u64,
}

const EVENTS_MAX: u64 = 4 << 20;

impl Publisher {
    pub fn new(annex_dir: &Path) -> Result<Publisher> {
        let dir = dir(annex_dir);
        std::fs::create_dir_all(&dir).ctx("creating", &dir)?;
        Ok(Publisher {
            dir,
            events: None,
            events_len: 0,
        })
    }

    pub fn status(&self, s: &Status) -> Result<()> {
        let path = self.dir.join("status.json");
        let tmp = self.dir.join("status.json.tmp");
        let body = serde_json::to_vec_pretty(s).unwrap_or_default();
        std::fs::write(&tmp, body).ctx("writing", &tmp)?;
        std::fs::rename(&tmp, &path).ctx("writing", &path)
    }

    pub fn event(&mut self, e: &Event) -> Result<()> {
        let path = self.dir.join("events.jsonl");
        if self.events.is_none() || self.events_len > EVENTS_MAX {
            if self.events_len > EVENTS_MAX {
                let _ = std::fs::rename(&path, self.dir.join("events.jsonl.1"));
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .ctx("opening", &path)?;
            self.events_len = f.metadata().map(|m| m.len()).unwrap_or(0);
            self.events = Some(f);
        }
        let mut line = serde_json::to_vec(&Stamped {
            at_ms: now_ms(),
            event: std::borrow::Cow::Borrowed(e),
        })
        .unwrap_or_default();
        line.push(b'\n');
        self.events_len += line.len() as u64;
        self.events
            .as_mut()
            .unwrap()
            .write_all(&line)
            .ctx("writing", &path)
    }
}

/// Reads the last published snapshot, if any.
pub fn read(annex_dir: &Path) -> Option<Status> {
    let body = std::fs::read(dir(annex_dir).join("status.json")).ok()?;
    serde_json::from_slice(&body).ok()
}

/// Reads the event log (oldest first), skipping lines that do not parse.
pub fn read_events(annex_dir: &Path) -> Vec<(u64, Event)> {
    let Ok(body) = std::fs::read(dir(annex_dir).join("events.jsonl")) else {
        return Vec::new();
    };
    body.split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice::<Stamped>(l).ok())
        .map(|s| (s.at_ms, s.event.into_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_the_log() {
        let d = tempfile::tempdir().unwrap();
        let mut p = Publisher::new(d.path()).unwrap();
        let e = Event::Committed {
            commit: "abc".into(),
            paths: 3,
        };
        p.event(&e).unwrap();
        p.event(&Event::Stopped).unwrap();
        let got: Vec<Event> = read_events(d.path()).into_iter().map(|(_, e)| e).collect();
        assert_eq!(got, vec![e, Event::Stopped]);
        let s = Status {
            pid: 7,
            state: "running".into(),
            ..Default::default()
        };
        p.status(&s).unwrap();
        assert_eq!(read(d.path()), Some(s));
    }
}
