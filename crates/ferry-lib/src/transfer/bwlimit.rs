//! Bandwidth limits: git-annex's `annex.bwlimit` and `remote.NAME.annex-bwlimit`, and their
//! `-upload` / `-download` forms. A value is a size per second (`1MiB`, `500KiB`, `2MB`,
//! `10 megabytes`, optionally followed by `/s`); an empty value means no limit (set for a
//! remote, it lifts a global limit from that remote, as in git-annex).
//!
//! The setting that applies to a transfer is the first one set of, in git-annex's order:
//! `remote.NAME.annex-bwlimit-<direction>`, `annex.bwlimit-<direction>`,
//! `remote.NAME.annex-bwlimit`, `annex.bwlimit`. Each setting is one token bucket, shared by
//! every transfer it applies to: concurrent transfers under one limit split it between them.
//! A transfer takes its bytes from the bucket as they move ([`crate::remote::Progress::advance`]);
//! a take beyond what the bucket holds is a debt the taker sleeps off, so takers queue in turn
//! and each gets its share. Limited transfers move small chunks ([`chunk_for`]) so the sharing
//! is fine-grained; unlimited ones keep their big chunks and never touch a bucket.
//!
//! [`Limits::update`] applies changed settings in place: a bucket whose value changed gets the
//! new rate, and when settings appear or go, running transfers look theirs up again at their
//! next chunk. So a change takes effect for running transfers too.

use crate::error::{Error, Result};
use crate::transfer::Direction;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The longest single sleep of a limited transfer: a cancel is noticed at least this often.
const MAX_SLEEP: Duration = Duration::from_millis(50);

/// The setting names, after `annex.` (global) or `remote.NAME.annex-` (per remote).
const VARIANTS: [&str; 3] = ["bwlimit", "bwlimit-upload", "bwlimit-download"];

const HOW: &str = "write a size per second such as 1MiB or 500KiB (units B, kB, MB, GB, KiB, \
                   MiB, GiB; bytes when there is none), or an empty value for no limit";

/// Parses a limit (bytes per second). `None` for an empty value: no limit.
pub fn parse_rate(value: &str) -> std::result::Result<Option<u64>, String> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if v.starts_with('-') {
        return Err(format!("a limit cannot be negative; {HOW}"));
    }
    let lower = v.to_ascii_lowercase();
    let size = ["/second", "/sec", "/s"]
        .iter()
        .find_map(|s| lower.strip_suffix(s))
        .unwrap_or(&lower);
    match crate::matching::parse_size(size) {
        Some(0) => Err(format!("a limit of 0 would stop every transfer; {HOW}")),
        Some(n) => Ok(Some(n)),
        None => Err(format!("not a size per second; {HOW}")),
    }
}

/// Bytes a limited transfer moves between two takes: about 1/16 s at the limit (4 to 64 KiB),
/// so transfers sharing a limit interleave finely and a change is followed at once.
pub fn chunk_for(rate: u64) -> usize {
    (rate / 16).clamp(4 << 10, 64 << 10) as usize
}

/// A token bucket: `rate` bytes per second, holding at most one chunk's worth.
pub struct Bucket {
    /// Bytes per second, never 0.
    rate: AtomicU64,
    state: Mutex<Fill>,
}

struct Fill {
    /// Bytes that may move now; negative: a debt being slept off.
    tokens: f64,
    at: Instant,
}

fn capacity(rate: u64) -> f64 {
    chunk_for(rate) as f64
}

impl Bucket {
    pub fn new(rate: u64) -> Bucket {
        let rate = rate.max(1);
        Bucket {
            rate: AtomicU64::new(rate),
            state: Mutex::new(Fill {
                tokens: capacity(rate),
                at: Instant::now(),
            }),
        }
    }

    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// Adds what `rate` earned since the last look.
    fn refill(s: &mut Fill, rate: u64, now: Instant) {
        let earned = now.saturating_duration_since(s.at).as_secs_f64() * rate as f64;
        s.tokens = (s.tokens + earned).min(capacity(rate));
        s.at = now;
    }

    /// Changes the rate; what was earned at the old rate stays earned.
    pub fn set_rate(&self, rate: u64) {
        let rate = rate.max(1);
        let mut s = self.state.lock().unwrap();
        Bucket::refill(&mut s, self.rate(), Instant::now());
        self.rate.store(rate, Ordering::Relaxed);
        s.tokens = s.tokens.min(capacity(rate));
    }

    /// Takes `n` bytes; returns how long the taker must wait before moving more.
    pub fn take(&self, n: u64) -> Duration {
        let mut s = self.state.lock().unwrap();
        let rate = self.rate();
        Bucket::refill(&mut s, rate, Instant::now());
        s.tokens -= n as f64;
        if s.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.tokens / rate as f64)
        }
    }
}

/// The limits of one repository's settings, shared by all its transfers (a command's, or the
/// daemon's for as long as it runs).
#[derive(Default)]
pub struct Limits {
    /// By git config key, every limit setting that is set: its bucket, or `None` for an empty
    /// value (no limit).
    buckets: RwLock<HashMap<String, Option<Arc<Bucket>>>>,
    /// Bumped when settings appear or go, so throttles look their bucket up again.
    generation: AtomicU64,
}

/// What [`Limits::update`] found.
#[derive(Debug, Default)]
pub struct Applied {
    /// Settings that are not a limit; each is ignored (no limit from it).
    pub problems: Vec<Error>,
    /// The settings in effect, as `key = value`, sorted.
    pub active: Vec<String>,
}

/// Whether a git config key (as `git config --list` prints it) is a bandwidth limit.
fn is_setting(key: &str) -> bool {
    if let Some(v) = key.strip_prefix("annex.") {
        return VARIANTS.contains(&v);
    }
    key.strip_prefix("remote.")
        .and_then(|k| k.rsplit_once('.'))
        .and_then(|(_, v)| v.strip_prefix("annex-"))
        .is_some_and(|v| VARIANTS.contains(&v))
}

impl Limits {
    /// The limits for a command: a setting that is not a limit is an error, before anything
    /// moves.
    pub fn from_config(config: &HashMap<String, String>) -> Result<Limits> {
        let limits = Limits::default();
        match limits.update(config).problems.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(limits),
        }
    }

    /// Applies the settings in `config` (see the module docs); bad ones are reported and limit
    /// nothing.
    pub fn update(&self, config: &HashMap<String, String>) -> Applied {
        let mut applied = Applied::default();
        let mut wanted: HashMap<&str, Option<u64>> = HashMap::new();
        let mut settings: Vec<(&String, &String)> =
            config.iter().filter(|(k, _)| is_setting(k)).collect();
        settings.sort();
        for (key, value) in settings {
            match parse_rate(value) {
                Ok(rate) => {
                    wanted.insert(key, rate);
                    applied.active.push(format!("{key} = {value}"));
                }
                Err(why) => applied.problems.push(Error::BadSetting {
                    key: key.clone(),
                    value: value.clone(),
                    why,
                }),
            }
        }
        let mut buckets = self.buckets.write().unwrap();
        let mut moved = buckets.len() != wanted.len();
        buckets.retain(|k, _| wanted.contains_key(k.as_str()));
        for (key, rate) in wanted {
            match (buckets.get(key), rate) {
                (Some(Some(b)), Some(r)) => b.set_rate(r),
                (Some(None), None) => {}
                _ => {
                    moved = true;
                    buckets.insert(key.to_string(), rate.map(|r| Arc::new(Bucket::new(r))));
                }
            }
        }
        if moved {
            self.generation.fetch_add(1, Ordering::Release);
        }
        applied
    }

    /// The bucket of the setting that applies to a transfer with `remote` (none: no limit).
    fn lookup(&self, remote: &str, direction: Direction) -> Option<Arc<Bucket>> {
        let buckets = self.buckets.read().unwrap();
        if buckets.is_empty() {
            return None;
        }
        let d = match direction {
            Direction::Upload => "upload",
            Direction::Download => "download",
        };
        [
            format!("remote.{remote}.annex-bwlimit-{d}"),
            format!("annex.bwlimit-{d}"),
            format!("remote.{remote}.annex-bwlimit"),
            "annex.bwlimit".to_string(),
        ]
        .iter()
        .find_map(|k| buckets.get(k))
        .cloned()
        .flatten()
    }

    /// The limit (bytes per second) on a transfer with `remote` now.
    pub fn rate_for(&self, remote: &str, direction: Direction) -> Option<u64> {
        self.lookup(remote, direction).map(|b| b.rate())
    }

    /// The throttle for one transfer with `remote`.
    pub fn throttle<'a>(&'a self, remote: &'a str, direction: Direction) -> Throttle<'a> {
        Throttle {
            limits: self,
            remote,
            direction,
            seen: None,
            bucket: None,
        }
    }
}

/// What holds one transfer to its limit: the bucket of the setting that applies, looked up
/// again when the settings change.
#[derive(Clone)]
pub struct Throttle<'a> {
    limits: &'a Limits,
    remote: &'a str,
    direction: Direction,
    /// The generation `bucket` was looked up at.
    seen: Option<u64>,
    bucket: Option<Arc<Bucket>>,
}

impl Throttle<'_> {
    fn bucket(&mut self) -> Option<&Bucket> {
        let g = self.limits.generation.load(Ordering::Acquire);
        if self.seen != Some(g) {
            self.bucket = self.limits.lookup(self.remote, self.direction);
            self.seen = Some(g);
        }
        self.bucket.as_deref()
    }

    /// The chunk size to move next: `max`, or less under a limit.
    pub fn chunk(&mut self, max: usize) -> usize {
        match self.bucket() {
            Some(b) => max.min(chunk_for(b.rate())),
            None => max,
        }
    }

    /// Counts `n` bytes that moved against the limit, sleeping as long as it says (until
    /// `cancel` is set).
    pub fn take(&mut self, n: u64, cancel: &AtomicBool) {
        let Some(b) = self.bucket() else {
            return;
        };
        let mut wait = b.take(n);
        while !wait.is_zero() && !cancel.load(Ordering::Relaxed) {
            let step = wait.min(MAX_SLEEP);
            std::thread::sleep(step);
            wait -= step;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn rates_parse_like_git_annex_sizes() {
        let ok = |s: &str| parse_rate(s).unwrap();
        assert_eq!(ok("1MiB"), Some(1 << 20));
        assert_eq!(ok("100KiB"), Some(100 << 10));
        assert_eq!(ok("2MB"), Some(2_000_000));
        assert_eq!(ok("10 MiB"), Some(10 << 20));
        assert_eq!(ok("10 megabytes"), Some(10_000_000));
        assert_eq!(ok("1.5 kb"), Some(1500));
        assert_eq!(ok("5mib/s"), Some(5 << 20));
        assert_eq!(ok("5 MiB/sec"), Some(5 << 20));
        assert_eq!(ok("8Mbit"), Some(1_000_000));
        assert_eq!(ok("4096"), Some(4096));
        assert_eq!(ok(""), None);
        for (bad, says) in [
            ("fast", "not a size per second"),
            ("1MiB/min", "not a size per second"),
            ("0", "0 would stop every transfer"),
            ("0KiB", "0 would stop every transfer"),
            ("-1MiB", "cannot be negative"),
            ("10 parsecs", "not a size per second"),
        ] {
            let e = parse_rate(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(e.contains("1MiB"), "{bad}: says what to write: {e}");
        }
    }

    #[test]
    fn the_most_specific_setting_applies() {
        let l = Limits::from_config(&config(&[
            ("annex.bwlimit", "1MiB"),
            ("remote.slow.annex-bwlimit", "100KiB"),
            ("remote.slow.annex-bwlimit-download", "200KiB"),
            ("remote.free.annex-bwlimit", ""),
            ("remote.other.url", "../x"),
        ]))
        .unwrap();
        let (up, down) = (Direction::Upload, Direction::Download);
        assert_eq!(l.rate_for("slow", up), Some(100 << 10));
        assert_eq!(l.rate_for("slow", down), Some(200 << 10));
        assert_eq!(l.rate_for("other", up), Some(1 << 20));
        assert_eq!(
            l.rate_for("free", down),
            None,
            "empty lifts the global limit"
        );
        assert_eq!(Limits::default().rate_for("x", up), None);
        // git-annex's order: a global limit for one direction beats a remote's general one.
        l.update(&config(&[
            ("annex.bwlimit-upload", "3MiB"),
            ("remote.slow.annex-bwlimit", "100KiB"),
        ]));
        assert_eq!(l.rate_for("slow", up), Some(3 << 20));
        assert_eq!(l.rate_for("slow", down), Some(100 << 10));
        assert_eq!(l.rate_for("other", down), None);
    }

    #[test]
    fn bad_settings_are_named_and_limit_nothing() {
        let e = Limits::from_config(&config(&[("remote.nas.annex-bwlimit", "fast")]))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("remote.nas.annex-bwlimit = \"fast\": not a size per second; write"),
            "{e}"
        );
        let l = Limits::default();
        let applied = l.update(&config(&[
            ("annex.bwlimit", "0"),
            ("remote.nas.annex-bwlimit", "2MiB"),
        ]));
        assert_eq!(applied.problems.len(), 1);
        assert!(
            applied.problems[0]
                .to_string()
                .contains("annex.bwlimit = \"0\"")
        );
        assert_eq!(applied.active, ["remote.nas.annex-bwlimit = 2MiB"]);
        assert_eq!(l.rate_for("other", Direction::Upload), None);
        assert_eq!(l.rate_for("nas", Direction::Upload), Some(2 << 20));
    }

    #[test]
    fn a_running_throttle_follows_changed_settings() {
        let l = Limits::default();
        let cancel = AtomicBool::new(false);
        let mut t = l.throttle("r", Direction::Upload);
        assert_eq!(t.chunk(1 << 20), 1 << 20, "unlimited: big chunks");
        l.update(&config(&[("annex.bwlimit", "10MiB")]));
        assert_eq!(t.chunk(1 << 20), 64 << 10, "a new limit is picked up");
        let bucket = t.bucket.clone().unwrap();
        // A changed value updates the same bucket in place.
        l.update(&config(&[("annex.bwlimit", "32KiB")]));
        assert_eq!(bucket.rate(), 32 << 10);
        assert_eq!(t.chunk(1 << 20), 4 << 10);
        // A per-remote setting now applies instead.
        l.update(&config(&[
            ("annex.bwlimit", "32KiB"),
            ("remote.r.annex-bwlimit", "1MiB"),
        ]));
        assert_eq!(t.chunk(1 << 20), 64 << 10);
        l.update(&config(&[]));
        assert_eq!(t.chunk(1 << 20), 1 << 20, "unset: unlimited again");
        let t0 = Instant::now();
        t.take(100 << 20, &cancel);
        assert!(t0.elapsed() < Duration::from_millis(50));
    }

    #[test]
    fn a_limit_is_held_and_a_cancel_ends_the_wait() {
        let rate = 4u64 << 20;
        let b = Bucket::new(rate);
        let t0 = Instant::now();
        let mut moved = 0u64;
        while moved < rate / 2 {
            std::thread::sleep(b.take(64 << 10));
            moved += 64 << 10;
        }
        let took = t0.elapsed().as_secs_f64();
        let expected = (moved as f64 - capacity(rate)) / rate as f64;
        assert!(took >= expected * 0.95, "{took} s for {expected} s");
        assert!(took <= expected * 1.5, "{took} s for {expected} s");
        // A taker whose debt is long returns soon after a cancel.
        let l = Limits::from_config(&config(&[("annex.bwlimit", "1KiB")])).unwrap();
        let cancel = AtomicBool::new(false);
        let t0 = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| l.throttle("r", Direction::Download).take(1 << 20, &cancel));
            std::thread::sleep(Duration::from_millis(100));
            cancel.store(true, Ordering::Relaxed);
        });
        assert!(t0.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn concurrent_transfers_share_a_limit_fairly() {
        // Two transfers to one remote under its 4 MiB/s limit for about a second: together
        // they get the limit, and each about half of it.
        let rate = 4u64 << 20;
        let l = Limits::from_config(&config(&[("remote.r.annex-bwlimit", "4MiB")])).unwrap();
        let cancel = AtomicBool::new(false);
        let run = Duration::from_millis(1000);
        let t0 = Instant::now();
        let counts: Vec<u64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let (l, cancel) = (&l, &cancel);
                    s.spawn(move || {
                        let mut t = l.throttle("r", Direction::Upload);
                        let mut n = 0u64;
                        while t0.elapsed() < run {
                            let c = t.chunk(1 << 20) as u64;
                            n += c;
                            t.take(c, cancel);
                        }
                        n
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let secs = t0.elapsed().as_secs_f64();
        let total = (counts[0] + counts[1]) as f64;
        let rate_seen = (total - capacity(rate)) / secs;
        assert!(
            rate_seen <= rate as f64 * 1.1,
            "{rate_seen} B/s over a {rate} B/s limit"
        );
        assert!(
            rate_seen >= rate as f64 * 0.8,
            "{rate_seen} B/s, far under a {rate} B/s limit"
        );
        let share = counts[0] as f64 / total;
        assert!(
            (0.4..=0.6).contains(&share),
            "unfair split: {counts:?} ({share:.2})"
        );
    }
}
