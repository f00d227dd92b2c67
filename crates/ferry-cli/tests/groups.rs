//! The standard groups (`git annex group X G` + `git annex wanted X standard`), each in three
//! clones that reach each other only through a bare transfer repository: what each group gets,
//! keeps and drops, by running daemons (client, backup, archive, source) or by
//! `ferry sync --content` (manual, unwanted, incrementalbackup, smallarchive). Outcomes are read
//! from the object stores and from git-annex's own `whereis`, waiting on conditions.

use crate::assistant::{Daemon, WAIT, fast_retries, logs};
use crate::common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A bare transfer repository `t` (group transfer, wanted standard) and three clones of it,
/// `a`, `b`, `c`, each in one standard group with `wanted standard`, each with `t` as its only
/// remote. Every clone knows every group.
struct Net {
    env: Env,
    a: PathBuf,
    b: PathBuf,
    c: PathBuf,
    t: PathBuf,
}

fn net(groups: [&str; 3]) -> Net {
    let env = Env::new();
    let a = env.ferry_repo("a");
    write(&a, ".keep", "a first commit\n");
    env.git(&a, &["add", ".keep"]).assert_ok();
    env.git(&a, &["commit", "-qm", "start"]).assert_ok();
    let t = transfer_repo(&env, &a);
    let clone = |name: &str| clone_of_transfer_repo(&env, name);
    let (b, c) = (clone("b"), clone("c"));
    for (d, g) in [(&a, groups[0]), (&b, groups[1]), (&c, groups[2])] {
        env.annex(d, &["group", ".", g]).assert_ok();
        env.annex(d, &["wanted", ".", "standard"]).assert_ok();
    }
    env.annex(&a, &["group", "t", "transfer"]).assert_ok();
    env.annex(&a, &["wanted", "t", "standard"]).assert_ok();
    for d in [&a, &b, &c, &a, &b] {
        env.ferry(d, &["sync"]).assert_ok();
    }
    Net { env, a, b, c, t }
}

fn uuid(env: &Env, d: &Path) -> String {
    config(env, d, "annex.uuid")
}

/// The key of a committed file (locked or unlocked), by git-annex.
fn key(env: &Env, d: &Path, f: &str) -> String {
    env.annex(d, &["lookupkey", f])
        .assert_ok()
        .stdout()
        .trim()
        .to_string()
}

/// The UUIDs git-annex, in `d`, says hold `f`.
fn whereis(env: &Env, d: &Path, f: &str) -> BTreeSet<String> {
    let r = env.annex(d, &["whereis", "--json", f]);
    r.json_lines()
        .first()
        .and_then(|v| v["whereis"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|h| h["uuid"].as_str().map(str::to_string))
        .collect()
}

/// The set of UUIDs of `repos`.
fn uuids(env: &Env, repos: &[&Path]) -> BTreeSet<String> {
    repos.iter().map(|d| uuid(env, d)).collect()
}

/// Which of `repos` hold `key` in their object store, by name.
fn holding(key: &str, repos: &[(&str, &Path)]) -> Vec<String> {
    repos
        .iter()
        .filter(|(_, d)| has_key(d, key))
        .map(|(n, _)| n.to_string())
        .collect()
}

#[test]
fn client_backup_and_archive_with_running_daemons() {
    // a client, b backup, c archive. New files come from b; c archives what no archive has;
    // a, started once c has archived archive/old.txt, gets every file except that one;
    // b never lets anything go; a file written in the client reaches the backup and the
    // archive.
    let Net { env, a, b, c, t } = net(["client", "backup", "archive"]);
    for d in [&a, &b, &c] {
        fast_retries(&env, d);
    }
    let db = Daemon::start(&env, &b);
    let dc = Daemon::start(&env, &c);
    write(&b, "new.txt", "for everyone\n");
    write(&b, "archive/old.txt", "for the archive\n");
    assert!(
        wait_until(WAIT, || ["new.txt", "archive/old.txt"].iter().all(|f| env
            .git(&c, &["cat-file", "-e", &format!("HEAD:{f}")])
            .ok())),
        "b's files reach c's branch; logs:\n{}",
        logs(&[&db, &dc])
    );
    let (new, old) = (key(&env, &c, "new.txt"), key(&env, &c, "archive/old.txt"));
    let all: [(&str, &Path); 4] = [("a", &a), ("b", &b), ("c", &c), ("t", &t)];
    // The archive gets both (no archive had them); the transfer repository lets the archived
    // archive/ file go (no client wants it any more) and keeps new.txt for client a.
    assert!(
        wait_until(WAIT, || holding(&new, &all) == ["b", "c", "t"]
            && holding(&old, &all) == ["b", "c"]),
        "new.txt in {:?}, archive/old.txt in {:?}; logs:\n{}",
        holding(&new, &all),
        holding(&old, &all),
        logs(&[&db, &dc])
    );
    // git-annex, in a (once it has the branches), reads the same. (A sync may find t's refs
    // locked by a daemon's push: it is tried again.)
    assert!(
        wait_until(WAIT, || {
            env.ferry(&a, &["sync"]).ok()
                && whereis(&env, &a, "archive/old.txt") == uuids(&env, &[&b, &c])
        }),
        "git-annex in a: archive/old.txt in {:?}",
        whereis(&env, &a, "archive/old.txt")
    );
    // The client does not want an archive/ file an archive has; it wants the rest.
    let want = env.annex(&a, &["find", "--want-get"]).assert_ok().stdout();
    assert_eq!(want.lines().collect::<Vec<_>>(), ["new.txt"], "{want}");

    let da = Daemon::start(&env, &a);
    assert!(
        wait_until(WAIT, || has_key(&a, &new)),
        "client a gets new.txt; logs:\n{}",
        logs(&[&da, &db, &dc])
    );
    // A file written in the client: the backup and the archive get it.
    write(&a, "from-a.txt", "written in the client\n");
    assert!(
        wait_until(WAIT, || env
            .git(&a, &["cat-file", "-e", "HEAD:from-a.txt"])
            .ok()),
        "a commits from-a.txt; log:\n{}",
        logs(&[&da])
    );
    let fa = key(&env, &a, "from-a.txt");
    assert!(
        wait_until(WAIT, || has_key(&b, &fa) && has_key(&c, &fa)),
        "from-a.txt reaches the backup and the archive; in {:?}; logs:\n{}",
        holding(&fa, &all),
        logs(&[&da, &db, &dc])
    );
    assert!(
        wait_until(WAIT, || crate::numcopies::idle(&env, &a)
            && crate::numcopies::idle(&env, &b)
            && crate::numcopies::idle(&env, &c)),
        "the daemons settle; logs:\n{}",
        logs(&[&da, &db, &dc])
    );
    // The backup keeps everything, though every file has another copy (numcopies 1).
    for k in [&new, &old, &fa] {
        assert!(has_key(&b, k), "backup b keeps {k}");
    }
    assert!(!has_key(&a, &old), "client a never got archive/old.txt");
    // What git-annex in b says agrees with the stores (b's branch follows t's).
    let b_sees = |f: &str, holders: &[&Path]| whereis(&env, &b, f) == uuids(&env, holders);
    assert!(
        wait_until(WAIT, || {
            env.ferry(&b, &["sync"]).ok()
                && b_sees("new.txt", &[&a, &b, &c, &t])
                && b_sees("archive/old.txt", &[&b, &c])
                && b_sees("from-a.txt", &[&a, &b, &c, &t])
        }),
        "git-annex in b: new.txt {:?}, archive/old.txt {:?}, from-a.txt {:?}",
        whereis(&env, &b, "new.txt"),
        whereis(&env, &b, "archive/old.txt"),
        whereis(&env, &b, "from-a.txt")
    );
}

#[test]
fn source_and_two_archives_with_running_daemons() {
    // a source, b and c archives. The source lets its file go once the transfer repository
    // has it; archive b takes it (no archive had it). Archive c, given it by hand, lets its
    // copy go because another archive (b) has it; b, seeing c's copy gone, keeps its own.
    let Net { env, a, b, c, t } = net(["source", "archive", "archive"]);
    for d in [&a, &b, &c] {
        fast_retries(&env, d);
    }
    let da = Daemon::start(&env, &a);
    let mut db = Some(Daemon::start(&env, &b));
    write(&a, "s.txt", "from the source\n");
    assert!(
        wait_until(WAIT, || env.git(&a, &["cat-file", "-e", "HEAD:s.txt"]).ok()),
        "a commits s.txt; log:\n{}",
        logs(&[&da])
    );
    let s = key(&env, &a, "s.txt");
    let all: [(&str, &Path); 4] = [("a", &a), ("b", &b), ("c", &c), ("t", &t)];
    assert!(
        wait_until(WAIT, || holding(&s, &all) == ["b", "t"]),
        "s.txt leaves the source for t and archive b: in {:?}; logs:\n{}",
        holding(&s, &all),
        logs(&[&da, db.as_ref().unwrap()])
    );
    // The record of b's copy reaches c through t.
    assert!(
        wait_until(WAIT, || env.ferry(&c, &["sync"]).ok()
            && whereis(&env, &c, "s.txt") == uuids(&env, &[&b, &t])),
        "git-annex in c: s.txt in {:?}; logs:\n{}",
        whereis(&env, &c, "s.txt"),
        logs(&[&da, db.as_ref().unwrap()])
    );
    drop(db.take());

    // c gets it by hand, while b's daemon is stopped; then c's daemon lets it go.
    env.ferry(&c, &["get", "s.txt"]).assert_ok();
    env.ferry(&c, &["sync"]).assert_ok();
    assert!(has_key(&c, &s));
    let want_drop = env.annex(&c, &["find", "--want-drop"]).assert_ok().stdout();
    assert!(want_drop.lines().any(|l| l == "s.txt"), "{want_drop}");
    let dc = Daemon::start(&env, &c);
    assert!(
        wait_until(WAIT, || !has_key(&c, &s)),
        "archive c drops s.txt: archive b has it; log:\n{}",
        logs(&[&dc])
    );
    // b learns that c's copy is gone before its daemon runs again: with the old view (c has a
    // copy) archive b would leave the content to c, just as c left it to b.
    assert!(
        wait_until(WAIT, || env.ferry(&b, &["sync"]).ok()
            && whereis(&env, &b, "s.txt") == uuids(&env, &[&b, &t])),
        "git-annex in b: s.txt in {:?}; log:\n{}",
        whereis(&env, &b, "s.txt"),
        logs(&[&dc])
    );
    let db = Daemon::start(&env, &b);
    // git-annex in c agrees, and finds nothing more for c to get or drop. (`find --want-drop`
    // alone lists s.txt: c would not want it, had it a copy.)
    let settled = || {
        env.ferry(&c, &["sync"]).ok()
            && whereis(&env, &c, "s.txt") == uuids(&env, &[&b, &t])
            && crate::numcopies::idle(&env, &b)
            && crate::numcopies::idle(&env, &c)
            && [
                &["find", "--want-get"][..],
                &["find", "--want-drop", "--in", "here"],
            ]
            .iter()
            .all(|args| env.annex(&c, args).stdout().trim().is_empty())
    };
    assert!(
        wait_until(WAIT, settled),
        "git-annex in c: s.txt in {:?}, wants {:?}; logs:\n{}",
        whereis(&env, &c, "s.txt"),
        env.annex(&c, &["find", "--want-get"]).stdout(),
        logs(&[&da, &db, &dc])
    );
    assert_eq!(
        holding(&s, &all),
        ["b", "t"],
        "logs:\n{}",
        logs(&[&da, &db, &dc])
    );
}

/// git-annex's `get` / `copy` / `drop` lines.
fn moves(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with("get ") || l.starts_with("copy ") || l.starts_with("drop "))
        .map(str::to_string)
        .collect()
}

/// After ferry, git-annex in `d` finds nothing more to move.
fn annex_agrees(env: &Env, d: &Path) {
    let r = env.annex(d, &["sync", "--content", "--no-pull", "--no-push"]);
    r.assert_ok();
    assert!(
        moves(&r.stdout()).is_empty(),
        "git-annex in {}: {}",
        d.display(),
        r.stdout()
    );
}

#[test]
fn manual_unwanted_incrementalbackup_and_smallarchive_with_sync_content() {
    let Net { env, a, b, c, t } = net(["client", "manual", "unwanted"]);
    for (f, content) in [
        ("f.txt", "everyday\n"),
        ("g.txt", "also everyday\n"),
        ("archive/old.txt", "archived\n"),
    ] {
        write(&a, f, content);
    }
    env.ferry(&a, &["add", "."]).assert_ok();
    env.git(&a, &["commit", "-qm", "files"]).assert_ok();
    env.ferry(&a, &["sync", "--content"]).assert_ok();
    let k = |f: &str| key(&env, &a, f);
    let (f, g, old) = (k("f.txt"), k("g.txt"), k("archive/old.txt"));
    for key in [&f, &g, &old] {
        assert!(has_key(&t, key), "t holds {key} for the clients");
    }
    let sync = |d: &Path| env.ferry(d, &["sync", "--content"]).assert_ok().stdout();

    // manual: gets nothing by itself; keeps what it was given.
    let out = sync(&b);
    assert!(!out.contains("get "), "{out}");
    env.ferry(&b, &["get", "f.txt"]).assert_ok();
    let out = sync(&b);
    assert!(!out.contains("drop "), "{out}");
    assert!(has_key(&b, &f) && !has_key(&b, &g) && !has_key(&b, &old));
    annex_agrees(&env, &b);

    // unwanted: what it holds goes (t has it), and it gets nothing.
    env.ferry(&c, &["sync"]).assert_ok();
    env.ferry(&c, &["get", "."]).assert_ok();
    for key in [&f, &g, &old] {
        assert!(has_key(&c, key), "c got {key} by hand");
    }
    let out = sync(&c);
    assert!(out.contains("drop f.txt (dropped here) ok"), "{out}");
    for key in [&f, &g, &old] {
        assert!(!has_key(&c, key), "unwanted c still holds {key}");
    }
    annex_agrees(&env, &c);

    // incrementalbackup: whatever no backup or incremental backup has. b (was manual) takes
    // the rest; then c (was unwanted) finds nothing left to take.
    env.annex(&b, &["ungroup", ".", "manual"]).assert_ok();
    env.annex(&b, &["group", ".", "incrementalbackup"])
        .assert_ok();
    let out = sync(&b);
    assert!(out.contains("get g.txt"), "{out}");
    assert!(out.contains("get archive/old.txt"), "{out}");
    annex_agrees(&env, &b);
    env.annex(&c, &["ungroup", ".", "unwanted"]).assert_ok();
    env.annex(&c, &["group", ".", "incrementalbackup"])
        .assert_ok();
    env.ferry(&c, &["sync"]).assert_ok();
    let out = sync(&c);
    assert!(!out.contains("get "), "{out}");
    annex_agrees(&env, &c);

    // smallarchive: only archive/ directories, until an archive has them; and once one has
    // archive/old.txt, the transfer repository no longer keeps it for the client.
    env.annex(&c, &["ungroup", ".", "incrementalbackup"])
        .assert_ok();
    env.annex(&c, &["group", ".", "smallarchive"]).assert_ok();
    let out = sync(&c);
    assert!(out.contains("get archive/old.txt"), "{out}");
    assert!(
        out.contains("drop archive/old.txt (dropped from t) ok"),
        "{out}"
    );
    assert!(
        !out.contains("get f.txt") && !out.contains("get g.txt"),
        "{out}"
    );
    annex_agrees(&env, &c);
    assert!(has_key(&c, &old) && !has_key(&c, &f) && !has_key(&c, &g));
    assert!(!has_key(&t, &old) && has_key(&t, &f) && has_key(&t, &g));
    assert_eq!(
        whereis(&env, &c, "archive/old.txt"),
        uuids(&env, &[&a, &b, &c]),
        "git-annex in c"
    );
}
