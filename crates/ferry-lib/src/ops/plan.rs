//! What `sync --content` (and the daemon) should do with one annexed file, decided from
//! preferred content, the location log and numcopies; no I/O, nothing done here.
//!
//! The rules are git-annex's (`Command.Sync.syncFile` and `Annex.Drop.handleDropsFrom`,
//! 10.20230126), checked against `git annex sync --content`:
//!
//! 1. **download** when the content is not here, a content remote has it (per the location
//!    log) and this repository wants it;
//! 2. **upload** to each writable content remote that lacks it (per the location log) and
//!    wants it, when the content is here (or will be, after the download); each planned upload
//!    counts as a copy for the remotes after it, in the order given (cheapest first), as
//!    git-annex reads the log again before each;
//! 3. **drop from** each content remote holding it whose preferred content no longer wants it
//!    (evaluated as if its copy were gone), whose required content does not keep it, while
//!    the copies left would still satisfy numcopies and mincopies (untrusted copies do not
//!    count; dropping an untrusted copy needs numcopies, a counted one one more); the first
//!    remote whose drop would go below stops the remote drops, as in git-annex. numcopies and
//!    mincopies are the key's ([`crate::copies`]: `.gitattributes`, then the logs; the highest
//!    over the files with that content);
//! 4. **drop here** on the same terms, after the remote drops.
//!
//! Drops are decided on the locations the transfers of steps 1 and 2 would leave, so a
//! transfer repository lets go once the last client received the file. The counts here are
//! the location log's: whether a drop is actually safe is proven at drop time by
//! [`crate::ops::drop`] (locking the other copies). A repository with no preferred content
//! expression wants everything and never wants to drop, so without any configuration the
//! plan is git-annex's default: every file everywhere.
//!
//! Which remotes take part is decided by [`content_remotes`]: `remote.NAME.annex-sync=false`
//! leaves a remote out unless it is named, `remote.NAME.annex-synccontent=false` always (git
//! only for that remote); `annex.synccontent` is read by [`synccontent`].

use crate::copies::FileCopies;
use crate::preferred::{FileInfo, Preferences};
use crate::remote::Remote;

/// What should happen to one file. Remotes are indices into [`Planner::remotes`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub download: bool,
    pub upload: Vec<usize>,
    pub drop_from: Vec<usize>,
    pub drop_here: bool,
}

impl Plan {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        !self.download && !self.drop_here && self.upload.is_empty() && self.drop_from.is_empty()
    }
}

/// Everything a plan depends on besides the file; build once per round, call
/// [`Planner::plan`] per file.
pub struct Planner<'a> {
    pub prefs: &'a Preferences,
    /// This repository's UUID.
    pub here: &'a str,
    /// The content remotes (see [`content_remotes`]), in the order transfers should use them.
    pub remotes: &'a [&'a dyn Remote],
    /// numcopies and mincopies of each key (for drops), and the files' `annex.numcopies`
    /// attributes (for `lackingcopies=`).
    pub copies: &'a FileCopies,
}

/// Copies counted for a drop, as git-annex does: dead ones are never in the log given here,
/// untrusted ones do not count.
struct Count {
    have: i64,
    numcopies: u32,
    mincopies: u32,
}

impl<'a> Planner<'a> {
    pub fn new(
        prefs: &'a Preferences,
        here: &'a str,
        remotes: &'a [&'a dyn Remote],
        copies: &'a FileCopies,
    ) -> Planner<'a> {
        Planner {
            prefs,
            here,
            remotes,
            copies,
        }
    }

    fn trust(&self, uuid: &str) -> crate::ops::drop::Trust {
        self.prefs
            .facts()
            .trust
            .get(uuid)
            .copied()
            .unwrap_or(crate::ops::drop::Trust::SemiTrusted)
    }

    fn untrusted(&self, uuid: &str) -> bool {
        self.trust(uuid) == crate::ops::drop::Trust::Untrusted
    }

    /// git-annex's `checkcopies`: may a copy in `uuid` go, with `c` copies counted?
    fn enough(&self, c: &Count, uuid: &str) -> bool {
        let need = i64::from(c.numcopies.max(1));
        let min = i64::from(c.mincopies.max(1));
        if self.untrusted(uuid) {
            c.have >= need && c.have >= min
        } else {
            c.have > need && c.have > min
        }
    }

    /// Whether `uuid` would drop the file (not wanted once gone, not required).
    fn unwanted(&self, uuid: &str, file: &FileInfo) -> bool {
        self.prefs.wants_drop(uuid, file) && !self.prefs.requires_keeping(uuid, file)
    }

    /// The plan for an annexed file of `repo`: its location log (journal first) and whether
    /// its content is in the store are read here.
    pub fn plan_file(
        &self,
        repo: &crate::repo::Repo,
        f: &crate::annexed::AnnexedFile,
    ) -> crate::Result<Plan> {
        let locations = repo.branch.location_log(&f.key)?.present();
        Ok(self.plan(&FileInfo {
            path: Some(&f.path),
            key: &f.key,
            locations: &locations,
            present_here: repo.store().find(&f.key).is_some(),
            numcopies_attr: self.copies.attrs(&f.path).numcopies,
        }))
    }

    /// [`Planner::plan_file`] for many files, with their location logs read in one pipelined
    /// `cat-file` run (a round trip per file made re-planning 100,000 files take a minute).
    pub fn plan_files(
        &self,
        repo: &crate::repo::Repo,
        files: &[crate::annexed::AnnexedFile],
    ) -> crate::Result<Vec<Plan>> {
        let paths: Vec<Vec<u8>> = files
            .iter()
            .map(|f| crate::branch::location_log_path(&f.key))
            .collect();
        let store = repo.store();
        // Whether each key is here (a stat each) while git reads the logs.
        let (logs, here) = std::thread::scope(|s| {
            let here = s.spawn(|| {
                files
                    .iter()
                    .map(|f| store.find(&f.key).is_some())
                    .collect::<Vec<bool>>()
            });
            let logs = repo.branch.read_many(&paths);
            (logs, here.join().expect("stat thread"))
        });
        Ok(files
            .iter()
            .zip(logs?)
            .zip(here)
            .map(|((f, log), present_here)| {
                let locations = crate::logs::LocationLog::parse(&log.unwrap_or_default()).present();
                self.plan(&FileInfo {
                    path: Some(&f.path),
                    key: &f.key,
                    locations: &locations,
                    present_here,
                    numcopies_attr: self.copies.attrs(&f.path).numcopies,
                })
            })
            .collect())
    }

    /// The plan for one file. `file.locations` is the location log (the present UUIDs),
    /// `file.present_here` whether the content is in this repository's store.
    pub fn plan(&self, file: &FileInfo) -> Plan {
        let mut plan = Plan::default();
        let dead = |u: &str| self.trust(u) == crate::ops::drop::Trust::Dead;
        let logged = |u: &str| file.locations.iter().any(|l| l == u);
        let mut locs: Vec<String> = file
            .locations
            .iter()
            .filter(|u| !dead(u))
            .cloned()
            .collect();
        let mut here = file.present_here;
        if here && !locs.iter().any(|u| u == self.here) {
            locs.push(self.here.to_string());
        } else if !here {
            locs.retain(|u| u != self.here);
        }
        fn info<'f>(file: &FileInfo<'f>, locs: &'f [String], here: bool) -> FileInfo<'f> {
            FileInfo {
                path: file.path,
                key: file.key,
                locations: locs,
                present_here: here,
                numcopies_attr: file.numcopies_attr,
            }
        }

        // 1. Get.
        if !here
            && self.remotes.iter().any(|r| logged(r.uuid()))
            && self.prefs.wants(self.here, &info(file, &locs, false))
        {
            plan.download = true;
            here = true;
            locs.push(self.here.to_string());
        }

        // 2. Put.
        if here {
            for (i, r) in self.remotes.iter().enumerate() {
                if r.readonly() || locs.iter().any(|u| u == r.uuid()) {
                    continue;
                }
                if self.prefs.wants(r.uuid(), &info(file, &locs, here)) {
                    plan.upload.push(i);
                    locs.push(r.uuid().to_string());
                }
            }
        }

        // 3. Drop from remotes, then 4. here.
        let (numcopies, mincopies) = self.copies.counts_for_key(file.key);
        let mut count = Count {
            have: locs.iter().filter(|u| !self.untrusted(u)).count() as i64,
            numcopies,
            mincopies,
        };
        let here_may_go = self.enough(&count, self.here);
        for (i, r) in self.remotes.iter().enumerate() {
            let u = r.uuid();
            if !locs.iter().any(|l| l == u) {
                continue;
            }
            if !self.enough(&count, u) {
                break;
            }
            if !r.readonly() && self.unwanted(u, &info(file, &locs, here)) {
                plan.drop_from.push(i);
                if !self.untrusted(u) {
                    count.have -= 1;
                }
                locs.retain(|l| l != u);
            }
        }
        if here
            && here_may_go
            && self.enough(&count, self.here)
            && self.unwanted(self.here, &info(file, &locs, here))
        {
            plan.drop_here = true;
        }
        plan
    }
}

/// Whether a git config value is false (`false`, `no`, `off`, `0`).
fn config_false(v: Option<&String>) -> bool {
    v.is_some_and(|v| {
        matches!(
            v.to_ascii_lowercase().as_str(),
            "false" | "no" | "off" | "0"
        )
    })
}

/// The remotes content is synced with: those named in `only` (all when empty, leaving out
/// `remote.NAME.annex-sync=false`), without the ones with `remote.NAME.annex-synccontent=false`
/// (git only). Order is kept (cheapest first, as [`crate::remote::configured`] gives them).
pub fn content_remotes<'r, R: AsRef<dyn Remote>>(
    repo: &crate::repo::Repo,
    remotes: &'r [R],
    only: &[String],
) -> Vec<&'r dyn Remote> {
    let config = repo.config();
    let get = |r: &dyn Remote, k: &str| config.get(&format!("remote.{}.{k}", r.name()));
    remotes
        .iter()
        .map(|r| r.as_ref())
        .filter(|r| {
            if only.is_empty() {
                !config_false(get(*r, "annex-sync"))
            } else {
                only.iter().any(|n| n == r.name())
            }
        })
        .filter(|r| !config_false(get(*r, "annex-synccontent")))
        .collect()
}

/// `annex.synccontent` when set (`None`: unset; `sync` then syncs content only with
/// `--content`, the daemon always).
pub fn synccontent(repo: &crate::repo::Repo) -> Option<bool> {
    repo.config()
        .get("annex.synccontent")
        .map(|v| !config_false(Some(v)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annexed::AnnexedFile;
    use crate::copies::{Attrs, Global};
    use crate::key::Key;
    use crate::ops::drop::Trust;
    use crate::preferred::Facts;
    use crate::remote::memory::MemoryRemote;
    use std::collections::{BTreeMap, BTreeSet};

    fn fake(name: &str) -> MemoryRemote {
        MemoryRemote::new(name, &format!("{name}-uuid"))
    }

    fn key() -> Key {
        Key::parse_str(
            "SHA256E-s5--5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03.txt",
        )
        .unwrap()
    }

    /// Preferences for here ("here-uuid") and remotes `a`, `b`, `t`: `wanted` maps a name to
    /// its expression, `groups` a name to its groups.
    fn prefs(wanted: &[(&str, &str)], groups: &[(&str, &str)], numcopies: u32) -> Preferences {
        let u = |n: &str| format!("{n}-uuid");
        let facts = Facts {
            here: u("here"),
            numcopies,
            groups: groups
                .iter()
                .map(|(n, g)| (u(n), BTreeSet::from([g.to_string()])))
                .collect(),
            ..Default::default()
        };
        let wanted: BTreeMap<String, String> =
            wanted.iter().map(|(n, e)| (u(n), e.to_string())).collect();
        Preferences::new(facts, &wanted, &BTreeMap::new())
    }

    fn locs(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| format!("{n}-uuid")).collect()
    }

    /// numcopies.log as the preferences were given it, nothing else set.
    fn copies_of(p: &Preferences) -> FileCopies {
        FileCopies::global_only(Global {
            numcopies_log: Some(p.facts().numcopies),
            ..Default::default()
        })
    }

    fn run(p: &Preferences, remotes: &[MemoryRemote], path: &str, at: &[&str], here: bool) -> Plan {
        let k = key();
        let l = locs(at);
        let rs: Vec<&dyn Remote> = remotes.iter().map(|r| r as &dyn Remote).collect();
        let copies = copies_of(p);
        let planner = Planner::new(p, "here-uuid", &rs, &copies);
        planner.plan(&FileInfo {
            path: Some(path.as_bytes()),
            key: &k,
            locations: &l,
            present_here: here,
            numcopies_attr: None,
        })
    }

    #[test]
    fn without_expressions_everything_goes_everywhere_and_nothing_is_dropped() {
        let p = prefs(&[], &[], 1);
        let rs = [fake("a"), fake("b")];
        let plan = run(&p, &rs, "f", &["a"], false);
        assert_eq!(
            plan,
            Plan {
                download: true,
                upload: vec![1],
                ..Default::default()
            }
        );
        let plan = run(&p, &rs, "f", &["here"], true);
        assert_eq!(plan.upload, vec![0, 1]);
        assert!(!plan.drop_here && plan.drop_from.is_empty());
    }

    #[test]
    fn excluded_file_is_not_downloaded_but_still_uploaded_elsewhere() {
        let p = prefs(&[("here", "exclude=big/*")], &[], 1);
        let rs = [fake("a"), fake("b")];
        assert!(!run(&p, &rs, "big/x", &["a"], false).download);
        assert!(run(&p, &rs, "small/x", &["a"], false).download);
        // Present here although unwanted: dropped, since a has it (numcopies 1).
        let plan = run(&p, &rs, "big/x", &["a", "here"], true);
        assert!(plan.drop_here);
        assert_eq!(plan.upload, vec![1]);
    }

    #[test]
    fn no_source_no_download() {
        let p = prefs(&[], &[], 1);
        let rs = [fake("a")];
        // Only an unknown repository has it.
        assert!(!run(&p, &rs, "f", &["elsewhere"], false).download);
    }

    #[test]
    fn the_last_copy_is_never_planned_to_go() {
        let p = prefs(&[("here", "nothing"), ("a", "nothing")], &[], 1);
        let rs = [fake("a")];
        let plan = run(&p, &rs, "f", &["here"], true);
        assert_eq!(plan, Plan::default());
        // Two copies, both unwanted: one may go (the remote, first), not both.
        let plan = run(&p, &rs, "f", &["here", "a"], true);
        assert_eq!(plan.drop_from, vec![0]);
        assert!(!plan.drop_here);
    }

    #[test]
    fn numcopies_two_keeps_two() {
        let p = prefs(&[("here", "nothing")], &[], 2);
        let rs = [fake("a"), fake("b")];
        let plan = run(&p, &rs, "f", &["here", "a"], true);
        // b wants it (no expression): after the upload there are three copies, one may go.
        assert_eq!(plan.upload, vec![1]);
        assert!(plan.drop_here);
        let rs = [fake("a")];
        assert!(!run(&p, &rs, "f", &["here", "a"], true).drop_here);
    }

    #[test]
    fn a_files_gitattributes_numcopies_decides_its_drops_and_lackingcopies() {
        // numcopies.log 1; here does not want *.bin; a and b hold everything.
        let p = prefs(
            &[("here", "exclude=*.bin"), ("b", "lackingcopies=1")],
            &[],
            1,
        );
        let rs = [fake("a"), fake("b")];
        let dyns: Vec<&dyn Remote> = rs.iter().map(|r| r as &dyn Remote).collect();
        let k = key();
        let other = Key::parse_str(&format!("SHA256E-s1--{}.bin", "7".repeat(64))).unwrap();
        let f = |path: &str, key: &Key| AnnexedFile {
            path: path.as_bytes().to_vec(),
            key: key.clone(),
            locked: true,
        };
        let (x, y, z) = (f("x.bin", &k), f("y.txt", &k), f("z.bin", &other));
        let three = Attrs {
            numcopies: Some(3),
            mincopies: None,
        };
        let plan_of = |copies: &FileCopies, file: &AnnexedFile| {
            let l = locs(&["here", "a", "b"]);
            Planner::new(&p, "here-uuid", &dyns, copies).plan(&FileInfo {
                path: Some(&file.path),
                key: &file.key,
                locations: &l,
                present_here: true,
                numcopies_attr: copies.attrs(&file.path).numcopies,
            })
        };
        let global = Global {
            numcopies_log: Some(1),
            ..Default::default()
        };
        // No attributes: here lets x.bin go (2 other copies, numcopies 1); b, whose
        // lackingcopies=1 is not met (3 copies), lets its copy go first.
        let none = FileCopies::with_attrs(global.clone(), [(&x, Attrs::default())]);
        let plan = plan_of(&none, &x);
        assert_eq!(plan.drop_from, vec![1]);
        assert!(plan.drop_here);
        // y.txt, with the same content, wants 3 copies: nothing of that key may go, and b's
        // lackingcopies=1 holds for y.txt (3 wanted, 2 once b's copy is gone).
        let attr = FileCopies::with_attrs(global.clone(), [(&x, Attrs::default()), (&y, three)]);
        let plan = plan_of(&attr, &x);
        assert!(plan.drop_from.is_empty() && !plan.drop_here, "{plan:?}");
        assert!(p.wants(
            "b-uuid",
            &FileInfo {
                path: Some(b"y.txt"),
                key: &k,
                locations: &locs(&["here", "a"]),
                present_here: true,
                numcopies_attr: Some(3),
            }
        ));
        // Another key is not affected.
        let plan = plan_of(
            &FileCopies::with_attrs(global, [(&y, three), (&z, Attrs::default())]),
            &z,
        );
        assert!(plan.drop_here && plan.drop_from == vec![1], "{plan:?}");
    }

    #[test]
    fn transfer_repository_lets_go_once_every_client_has_it() {
        let groups = [("here", "client"), ("a", "client"), ("t", "transfer")];
        let p = prefs(&[("t", "standard")], &groups, 1);
        let rs = [fake("t")];
        // Only a has it: here gets it from t; t still wanted until both clients hold it,
        // which they will after this download, so t's copy is planned to go.
        let plan = run(&p, &rs, "f", &["a", "t"], false);
        assert!(plan.download);
        assert_eq!(plan.drop_from, vec![0]);
        // Here has it, a does not: t wants it.
        let plan = run(&p, &rs, "f", &["here"], true);
        assert_eq!(plan.upload, vec![0]);
        assert!(plan.drop_from.is_empty());
    }

    #[test]
    fn upload_only_repository_keeps_what_it_has_and_gets_nothing() {
        let p = prefs(&[("here", "present")], &[], 1);
        let rs = [fake("a")];
        assert!(!run(&p, &rs, "f", &["a"], false).download);
        let plan = run(&p, &rs, "g", &["here"], true);
        assert_eq!(plan.upload, vec![0]);
        assert!(!plan.drop_here);
    }

    #[test]
    fn readonly_remotes_get_no_uploads_and_no_drops() {
        let p = prefs(&[("a", "nothing")], &[], 1);
        let mut a = fake("a");
        a.readonly = true;
        let rs = [a, fake("b")];
        let plan = run(&p, &rs, "f", &["here", "a"], true);
        assert_eq!(plan.upload, vec![1]);
        assert!(plan.drop_from.is_empty());
    }

    #[test]
    fn untrusted_copies_do_not_count() {
        let mut p = prefs(&[("here", "nothing")], &[], 1);
        let mut facts = p.facts().clone();
        facts.trust.insert("a-uuid".into(), Trust::Untrusted);
        let wanted = BTreeMap::from([("here-uuid".to_string(), "nothing".to_string())]);
        p = Preferences::new(facts, &wanted, &BTreeMap::new());
        let rs = [fake("a")];
        assert!(!run(&p, &rs, "f", &["here", "a"], true).drop_here);
    }

    #[test]
    fn planning_is_cheap() {
        let groups = [("here", "client"), ("a", "client"), ("t", "transfer")];
        let p = prefs(
            &[
                ("t", "standard"),
                ("here", "exclude=big/* and largerthan=1"),
            ],
            &groups,
            1,
        );
        let rs = [fake("a"), fake("t")];
        let dyns: Vec<&dyn Remote> = rs.iter().map(|r| r as &dyn Remote).collect();
        let copies = copies_of(&p);
        let planner = Planner::new(&p, "here-uuid", &dyns, &copies);
        let k = key();
        let sets = [
            locs(&["a"]),
            locs(&["here", "t"]),
            locs(&["a", "t", "here"]),
        ];
        let paths: Vec<String> = (0..100_000)
            .map(|i| format!("dir{}/file{i}", i % 50))
            .collect();
        let start = std::time::Instant::now();
        let mut n = 0;
        for (i, path) in paths.iter().enumerate() {
            let l = &sets[i % 3];
            let plan = planner.plan(&FileInfo {
                path: Some(path.as_bytes()),
                key: &k,
                locations: l,
                present_here: l.iter().any(|u| u == "here-uuid"),
                numcopies_attr: None,
            });
            n += usize::from(!plan.is_empty());
        }
        let took = start.elapsed();
        eprintln!("planned 100000 files in {took:?}");
        assert!(n > 0);
        // Loose: well under a second in release builds, a few times more in debug ones.
        assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    }
}
