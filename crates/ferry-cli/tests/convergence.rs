//! Convergence: random edits on several clones and a bare hub, synced in random orders and with
//! partial connectivity; after final sync rounds every clone has the same tree and the same
//! git-annex branch (as sets of log lines), `git fsck` passes, and no committed version is lost
//! (every key ever committed is still referenced, unless a user operation replaced or deleted it).
//!
//! CI runs a few seeds; `cargo test -p ferry-cli --test tests -- --ignored convergence_many`
//! runs 2,000 cases of 60 steps (hours: 3-10 s a case). `FERRY_CONVERGENCE_CASES` sets how
//! many, `FERRY_CONVERGENCE_FIRST` the first seed, so that one run per core can take its own
//! range of seeds.

use crate::common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const NAMES: &[&str] = &[
    "a.txt",
    "b.txt",
    "c.bin",
    "dir/x.txt",
    "dir/y.dat",
    "dir/sub/z",
];

fn annexed_keys(env: &Env, d: &Path) -> BTreeMap<String, String> {
    env.ferry(d, &["whereis", "--json"])
        .json_lines()
        .into_iter()
        .map(|j| {
            (
                j["file"].as_str().unwrap().to_string(),
                j["key"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn branch_lines(env: &Env, d: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files = env
        .git(d, &["ls-tree", "-r", "--name-only", "git-annex"])
        .stdout();
    let mut out = BTreeMap::new();
    for f in files.lines() {
        let content = env.git(d, &["show", &format!("git-annex:{f}")]).stdout();
        out.insert(f.to_string(), content.lines().map(str::to_string).collect());
    }
    out
}

fn run_case(seed: u64, steps: usize) {
    let env = Env::new();
    let mut rng = Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1);
    let first = env.ferry_repo("c0");
    write(&first, "seed.txt", "seed\n");
    env.ferry(&first, &["add"]).assert_ok();
    env.git(&first, &["commit", "-qm", "seed"]).assert_ok();
    bare_remote(&env, &first, "hub");
    env.ferry(&first, &["sync"]).assert_ok();
    let mut clones: Vec<PathBuf> = vec![first];
    for i in 1..3 {
        env.git(
            env.tmp.path(),
            &["clone", "-q", "hub.git", &format!("c{i}")],
        )
        .assert_ok();
        let d = env.path(&format!("c{i}"));
        env.ferry(&d, &["init", &format!("clone {i}")]).assert_ok();
        env.git(&d, &["remote", "rename", "origin", "hub"])
            .assert_ok();
        clones.push(d);
    }
    // A direct link between two clones besides the hub.
    env.git(&clones[1], &["remote", "add", "c2", "../c2"])
        .assert_ok();
    env.git(&clones[2], &["remote", "add", "c1", "../c1"])
        .assert_ok();

    let mut committed: BTreeSet<String> = BTreeSet::new();
    let mut retired: BTreeSet<String> = BTreeSet::new();
    for step in 0..steps {
        let c = rng.below(clones.len());
        let d = clones[c].clone();
        let current = annexed_keys(&env, &d);
        let name = NAMES[rng.below(NAMES.len())];
        let op = rng.below(6);
        eprintln!("step {step}: clone {c} op {op} name {name}");
        match op {
            0 | 1 => {
                // Create or replace a file.
                if let Some(old) = current.get(name) {
                    retired.insert(old.clone());
                    std::fs::remove_file(d.join(name)).unwrap();
                }
                write(&d, name, format!("seed {seed} step {step} clone {c}\n"));
                env.ferry(&d, &["add", name]).assert_ok();
            }
            2 => {
                if let Some(old) = current.get(name) {
                    retired.insert(old.clone());
                    env.git(&d, &["rm", "-q", name]).assert_ok();
                }
            }
            3 => {
                let to = NAMES[rng.below(NAMES.len())];
                if current.contains_key(name) && !current.contains_key(to) && name != to {
                    if let Some(parent) = d.join(to).parent() {
                        std::fs::create_dir_all(parent).unwrap();
                    }
                    eprintln!("  mv to {to}");
                    env.git(&d, &["mv", name, to]).assert_ok();
                    env.ferry(&d, &["add", to]).assert_ok(); // fix the moved link's target
                }
            }
            _ => {
                // Sync with everyone, or only with one remote (a partition).
                let remotes = env.git(&d, &["remote"]).stdout();
                let remotes: Vec<&str> = remotes.lines().collect();
                if rng.below(2) == 0 {
                    env.ferry(&d, &["sync"]).assert_ok();
                } else {
                    let r = remotes[rng.below(remotes.len())];
                    eprintln!("  sync with {r}");
                    env.ferry(&d, &["sync", r]).assert_ok();
                }
            }
        }
        env.git(&d, &["commit", "-qm", &format!("step {step}")]);
        let now = annexed_keys(&env, &d);
        eprintln!("  files now: {now:?}");
        committed.extend(now.into_values());
    }
    // Final rounds over a connected graph.
    for _ in 0..3 {
        for d in &clones {
            let r = env.ferry(d, &["sync"]);
            eprintln!(
                "final sync {}: {:?} {}",
                d.display(),
                annexed_keys(&env, d).keys().collect::<Vec<_>>(),
                r.stderr()
            );
            assert!(
                r.ok(),
                "seed {seed}: final sync failed:\n{}\n{}",
                r.stdout(),
                r.stderr()
            );
        }
    }
    let tree = |d: &Path| env.git(d, &["rev-parse", "HEAD^{tree}"]).stdout();
    let lines0 = branch_lines(&env, &clones[0]);
    for d in &clones[1..] {
        assert_eq!(tree(d), tree(&clones[0]), "seed {seed}: trees differ");
        assert_eq!(
            branch_lines(&env, d),
            lines0,
            "seed {seed}: git-annex branches differ"
        );
    }
    for d in &clones {
        env.git(d, &["fsck", "--no-progress"]).assert_ok();
    }
    let fin: BTreeSet<String> = annexed_keys(&env, &clones[0]).into_values().collect();
    let lost: Vec<&String> = committed
        .iter()
        .filter(|k| !fin.contains(*k) && !retired.contains(*k))
        .collect();
    if !lost.is_empty() {
        let d = &clones[0];
        eprintln!("KEEP {}", env.tmp.path().display());
        let t = env.git(d, &["ls-tree", "-r", "HEAD"]).stdout();
        eprintln!("TREE {t}");
        std::mem::forget(env);
        panic!("seed {seed}: committed versions lost: {lost:?}");
    }
}

#[test]
fn convergence_few_seeds() {
    for seed in 1..=3 {
        run_case(seed, 30);
    }
}

#[test]
#[ignore]
fn convergence_many() {
    let cases: u64 = std::env::var("FERRY_CONVERGENCE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let first: u64 = std::env::var("FERRY_CONVERGENCE_FIRST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    for seed in first..first + cases {
        run_case(seed, 60);
    }
}
