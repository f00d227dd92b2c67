//! Formats of the files on the `git-annex` branch and their rules.
//!
//! Two families matter here: per-key location logs (`TS STATUS UUID`) and UUID-keyed logs
//! (`UUID VALUE timestamp=TS`, e.g. `uuid.log`). Timestamps form a vector clock: a new entry for
//! a field is always newer than every existing entry for that field, even when the wall clock is
//! behind. Readers skip lines they cannot parse (a foreign or damaged line never stops ferry),
//! and for each UUID the entry with the greatest timestamp wins, the later line on a tie.

use std::collections::BTreeMap;
use std::fmt;

/// Seconds since the epoch with up to 12 fractional digits, as git-annex writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp {
    pub secs: u64,
    /// Fraction of a second in picoseconds (0..10^12).
    pub pico: u64,
}

const PICO: u64 = 1_000_000_000_000;

impl Timestamp {
    /// Parses `123.456s`, `123s`, `123.456` or `123`.
    pub fn parse(s: &str) -> Option<Timestamp> {
        let s = s.strip_suffix('s').unwrap_or(s);
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, f),
            None => (s, ""),
        };
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 12 {
            return None;
        }
        let secs = int.parse().ok()?;
        let pico = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<12}").parse().ok()?
        };
        Some(Timestamp { secs, pico })
    }

    pub fn from_system(t: std::time::SystemTime) -> Timestamp {
        let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Timestamp {
            secs: d.as_secs(),
            pico: d.subsec_nanos() as u64 * 1000,
        }
    }

    /// The next timestamp for a field whose newest existing entry is `prev`.
    pub fn next_after(now: Timestamp, prev: Option<Timestamp>) -> Timestamp {
        match prev {
            Some(p) if p >= now => Timestamp {
                secs: p.secs + 1,
                pico: p.pico,
            },
            _ => now,
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pico == 0 {
            return write!(f, "{}s", self.secs);
        }
        let frac = format!("{:012}", self.pico % PICO);
        write!(f, "{}.{}s", self.secs, frac.trim_end_matches('0'))
    }
}

/// Where content is, per the location log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    Present,
    Absent,
    Dead,
}

impl Presence {
    fn parse(s: &str) -> Option<Presence> {
        Some(match s {
            "1" => Presence::Present,
            "0" => Presence::Absent,
            "X" => Presence::Dead,
            _ => return None,
        })
    }
    fn as_str(self) -> &'static str {
        match self {
            Presence::Present => "1",
            Presence::Absent => "0",
            Presence::Dead => "X",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocationEntry {
    pub ts: Timestamp,
    pub status: Presence,
    pub uuid: String,
}

/// Splits log content into lines the way git-annex does: any run of `\r`/`\n` ends a line.
fn lines(content: &[u8]) -> impl Iterator<Item = &str> {
    content
        .split(|&b| b == b'\n' || b == b'\r')
        .filter(|l| !l.is_empty())
        .filter_map(|l| std::str::from_utf8(l).ok())
}

/// A per-key location log (`<hashdirlower><keyFile>.log`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocationLog {
    pub entries: Vec<LocationEntry>,
    /// Lines that did not parse; kept out of the current state, reported by callers.
    pub skipped: usize,
}

impl LocationLog {
    pub fn parse(content: &[u8]) -> LocationLog {
        let mut log = LocationLog::default();
        for line in lines(content) {
            let mut it = line.split(' ');
            let parsed = (|| {
                let ts = Timestamp::parse(it.next()?)?;
                let status = Presence::parse(it.next()?)?;
                let uuid = it.next()?;
                if uuid.is_empty() || it.next().is_some() {
                    return None;
                }
                Some(LocationEntry {
                    ts,
                    status,
                    uuid: uuid.to_string(),
                })
            })();
            match parsed {
                Some(e) => log.entries.push(e),
                None => log.skipped += 1,
            }
        }
        log
    }

    /// The winning entry for each UUID.
    pub fn current(&self) -> BTreeMap<&str, &LocationEntry> {
        let mut m: BTreeMap<&str, &LocationEntry> = BTreeMap::new();
        for e in &self.entries {
            match m.get(e.uuid.as_str()) {
                Some(old) if old.ts > e.ts => {}
                _ => {
                    m.insert(&e.uuid, e);
                }
            }
        }
        m
    }

    /// UUIDs whose current status is present, in UUID order.
    pub fn present(&self) -> Vec<String> {
        self.current()
            .into_iter()
            .filter(|(_, e)| e.status == Presence::Present)
            .map(|(u, _)| u.to_string())
            .collect()
    }

    pub fn status_of(&self, uuid: &str) -> Option<Presence> {
        self.current().get(uuid).map(|e| e.status)
    }

    /// Records `status` for `uuid` at `now` (vector-clock adjusted). Appends when the UUID is new,
    /// otherwise rewrites the log compacted: one line per UUID, in UUID order.
    pub fn set(&mut self, uuid: &str, status: Presence, now: Timestamp) {
        let prev = self
            .entries
            .iter()
            .filter(|e| e.uuid == uuid)
            .map(|e| e.ts)
            .max();
        let ts = Timestamp::next_after(now, prev);
        let entry = LocationEntry {
            ts,
            status,
            uuid: uuid.to_string(),
        };
        if prev.is_none() {
            self.entries.push(entry);
            return;
        }
        let mut current: BTreeMap<String, LocationEntry> = self
            .current()
            .into_iter()
            .map(|(u, e)| (u.to_string(), e.clone()))
            .collect();
        current.insert(uuid.to_string(), entry);
        self.entries = current.into_values().collect();
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = String::new();
        for e in &self.entries {
            out.push_str(&format!("{} {} {}\n", e.ts, e.status.as_str(), e.uuid));
        }
        out.into_bytes()
    }
}

/// An entry of a UUID-keyed log such as `uuid.log` or `trust.log`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UuidEntry {
    pub uuid: String,
    pub value: String,
    pub ts: Option<Timestamp>,
}

#[derive(Clone, Debug, Default)]
pub struct UuidLog {
    pub entries: Vec<UuidEntry>,
    pub skipped: usize,
}

impl UuidLog {
    pub fn parse(content: &[u8]) -> UuidLog {
        let mut log = UuidLog::default();
        for line in lines(content) {
            let Some((uuid, rest)) = line.split_once(' ').or(Some((line, ""))) else {
                continue;
            };
            if uuid.is_empty() {
                log.skipped += 1;
                continue;
            }
            let (value, ts) = match rest
                .rsplit_once(" timestamp=")
                .map(|(v, t)| (v, Timestamp::parse(t)))
            {
                Some((v, Some(ts))) => (v, Some(ts)),
                _ => match rest.strip_prefix("timestamp=").and_then(Timestamp::parse) {
                    Some(ts) => ("", Some(ts)),
                    None => (rest, None),
                },
            };
            log.entries.push(UuidEntry {
                uuid: uuid.to_string(),
                value: value.to_string(),
                ts,
            });
        }
        log
    }

    /// The winning value for each UUID (no timestamp counts as oldest; later line wins ties).
    pub fn current(&self) -> BTreeMap<&str, &UuidEntry> {
        let mut m: BTreeMap<&str, &UuidEntry> = BTreeMap::new();
        for e in &self.entries {
            match m.get(e.uuid.as_str()) {
                Some(old) if old.ts > e.ts => {}
                _ => {
                    m.insert(&e.uuid, e);
                }
            }
        }
        m
    }

    pub fn get(&self, uuid: &str) -> Option<&str> {
        self.current().get(uuid).map(|e| e.value.as_str())
    }

    /// Sets the value for `uuid`; the log is rewritten with one line per UUID, sorted.
    pub fn set(&mut self, uuid: &str, value: &str, now: Timestamp) {
        let prev = self
            .entries
            .iter()
            .filter(|e| e.uuid == uuid)
            .filter_map(|e| e.ts)
            .max();
        let ts = Timestamp::next_after(now, prev);
        let mut current: BTreeMap<String, UuidEntry> = self
            .current()
            .into_iter()
            .map(|(u, e)| (u.to_string(), e.clone()))
            .collect();
        current.insert(
            uuid.to_string(),
            UuidEntry {
                uuid: uuid.to_string(),
                value: value.to_string(),
                ts: Some(ts),
            },
        );
        self.entries = current.into_values().collect();
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = String::new();
        for e in &self.entries {
            match e.ts {
                Some(ts) => out.push_str(&format!("{} {} timestamp={}\n", e.uuid, e.value, ts)),
                None => out.push_str(&format!("{} {}\n", e.uuid, e.value)),
            }
        }
        out.into_bytes()
    }
}

/// An entry of a timestamp-first map log (`TS FIELD VALUE`), such as
/// `group-preferred-content.log` (FIELD is a group, VALUE an expression).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEntry {
    pub ts: Timestamp,
    pub field: String,
    pub value: String,
}

#[derive(Clone, Debug, Default)]
pub struct MapLog {
    pub entries: Vec<MapEntry>,
    pub skipped: usize,
}

impl MapLog {
    /// VALUE is everything after the field and one space, kept as written (it may hold
    /// spaces). Lines without a timestamp or a field are skipped.
    pub fn parse(content: &[u8]) -> MapLog {
        let mut log = MapLog::default();
        for line in lines(content) {
            let parsed = line.split_once(' ').and_then(|(ts, rest)| {
                let (field, value) = rest.split_once(' ').unwrap_or((rest, ""));
                Some(MapEntry {
                    ts: Timestamp::parse(ts)?,
                    field: (!field.is_empty()).then(|| field.to_string())?,
                    value: value.to_string(),
                })
            });
            match parsed {
                Some(e) => log.entries.push(e),
                None => log.skipped += 1,
            }
        }
        log
    }

    /// The newest entry for each field (the later line on a tie).
    pub fn current(&self) -> BTreeMap<&str, &MapEntry> {
        let mut m: BTreeMap<&str, &MapEntry> = BTreeMap::new();
        for e in &self.entries {
            match m.get(e.field.as_str()) {
                Some(old) if old.ts > e.ts => {}
                _ => {
                    m.insert(&e.field, e);
                }
            }
        }
        m
    }

    pub fn get(&self, field: &str) -> Option<&str> {
        self.current().get(field).map(|e| e.value.as_str())
    }

    /// Sets `field`; the log is rewritten with one line per field, sorted by field.
    pub fn set(&mut self, field: &str, value: &str, now: Timestamp) {
        let prev = self
            .entries
            .iter()
            .filter(|e| e.field == field)
            .map(|e| e.ts)
            .max();
        let mut current: BTreeMap<String, MapEntry> = self
            .current()
            .into_iter()
            .map(|(f, e)| (f.to_string(), e.clone()))
            .collect();
        current.insert(
            field.to_string(),
            MapEntry {
                ts: Timestamp::next_after(now, prev),
                field: field.to_string(),
                value: value.to_string(),
            },
        );
        self.entries = current.into_values().collect();
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = String::new();
        for e in &self.entries {
            out.push_str(&format!("{} {} {}\n", e.ts, e.field, e.value));
        }
        out.into_bytes()
    }
}

/// `numcopies.log`: `TS N`, the newest line wins.
pub fn parse_numcopies(content: &[u8]) -> Option<u32> {
    lines(content)
        .filter_map(|l| {
            let (ts, n) = l.split_once(' ')?;
            Some((Timestamp::parse(ts)?, n.trim().parse::<u32>().ok()?))
        })
        .max_by_key(|(ts, _)| *ts)
        .map(|(_, n)| n)
}

/// `config.log`: `TS NAME VALUE`; the newest line for `name` wins, an empty value means unset.
pub fn parse_config_log(content: &[u8], name: &str) -> Option<String> {
    lines(content)
        .filter_map(|l| {
            let (ts, rest) = l.split_once(' ')?;
            let (n, v) = rest.split_once(' ').unwrap_or((rest, ""));
            (n == name).then(|| (Timestamp::parse(ts), v.to_string()))
        })
        .filter_map(|(ts, v)| Some((ts?, v)))
        .max_by_key(|(ts, _)| *ts)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn timestamps_round_trip() {
        for s in [
            "1795343304.61671586s",
            "1000s",
            "1000.5s",
            "1.000000000001s",
        ] {
            assert_eq!(ts(s).to_string(), s);
        }
        assert_eq!(ts("1000").to_string(), "1000s");
        assert!(Timestamp::parse("abc").is_none());
        assert!(Timestamp::parse("1.2.3s").is_none());
        assert!(ts("1000.5s") > ts("1000.25s"));
    }

    #[test]
    fn vector_clock_moves_past_newer_entries() {
        let mut log = LocationLog::parse(b"1000.5s 1 u1\n");
        log.set("u1", Presence::Absent, ts("900s"));
        assert_eq!(log.render(), b"1001.5s 0 u1\n");
    }

    #[test]
    fn location_log_appends_then_compacts() {
        let mut log = LocationLog::default();
        log.set("b", Presence::Present, ts("10s"));
        log.set("a", Presence::Present, ts("11s"));
        assert_eq!(log.render(), b"10s 1 b\n11s 1 a\n");
        log.set("b", Presence::Absent, ts("12s"));
        assert_eq!(log.render(), b"11s 1 a\n12s 0 b\n");
        assert_eq!(log.present(), vec!["a".to_string()]);
    }

    #[test]
    fn union_merged_logs_resolve_by_timestamp_and_skip_junk() {
        let log =
            LocationLog::parse(b"20s 0 u\r\ngarbage line here too\n10s 1 u\n\n5s 1 v\nx 1 w\n");
        assert_eq!(log.status_of("u"), Some(Presence::Absent));
        assert_eq!(log.present(), vec!["v".to_string()]);
        assert_eq!(log.skipped, 2);
    }

    #[test]
    fn uuid_log_values_may_hold_spaces() {
        let mut log = UuidLog::parse(b"u2 laptop A timestamp=1795343271.403693689s\nu1 old\n");
        assert_eq!(log.get("u2"), Some("laptop A"));
        assert_eq!(log.get("u1"), Some("old"));
        log.set("u1", "new desc", ts("5s"));
        assert_eq!(
            String::from_utf8(log.render()).unwrap(),
            "u1 new desc timestamp=5s\nu2 laptop A timestamp=1795343271.403693689s\n"
        );
    }

    #[test]
    fn map_log_keeps_values_verbatim_and_newest_wins() {
        // As git-annex wrote it (`git annex groupwanted`), plus damage.
        let mut log = MapLog::parse(
            b"1000s mygroup include=a/*  and  largerthan=1kb\n1001s archive anything\n\
              900s archive nothing\nnotatimestamp archive x\n1002s\n",
        );
        assert_eq!(log.skipped, 2);
        assert_eq!(log.get("mygroup"), Some("include=a/*  and  largerthan=1kb"));
        assert_eq!(log.get("archive"), Some("anything"));
        log.set("archive", "not copies=archive:1", ts("500s"));
        assert_eq!(
            String::from_utf8(log.render()).unwrap(),
            "1002s archive not copies=archive:1\n1000s mygroup include=a/*  and  largerthan=1kb\n"
        );
    }

    #[test]
    fn numcopies_and_config_newest_wins() {
        assert_eq!(parse_numcopies(b"10s 2\n5s 3\n"), Some(2));
        let c = b"10s annex.largefiles largerthan=1kb\n20s annex.largefiles \n5s other x\n";
        assert_eq!(parse_config_log(c, "annex.largefiles"), None);
        assert_eq!(parse_config_log(c, "other"), Some("x".into()));
    }
}
