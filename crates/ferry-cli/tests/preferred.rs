//! Preferred content: the logs are shared with real git-annex both ways, and ferry's
//! evaluation agrees with `git annex find --want-get` / `--want-drop`.

use crate::common::*;
use ferry_lib::preferred::{FileInfo, Preferences};
use std::collections::BTreeSet;
use std::path::Path;

fn out(r: &Run) -> String {
    r.assert_ok().stdout().trim_end_matches('\n').to_string()
}

/// A git-annex repository "repo" with one committed file, and its git-annex clone "other"
/// (described "other desc"), known to it as remote `other` and synced once.
fn annex_pair(env: &Env) -> (std::path::PathBuf, std::path::PathBuf) {
    let d = env.annex_repo("repo");
    write(&d, "f", "x");
    env.git(&d, &["add", "f"]).assert_ok();
    env.git(&d, &["commit", "-qm", "f"]).assert_ok();
    let clone = env.path("other");
    env.git(
        &d,
        &["clone", "-q", d.to_str().unwrap(), clone.to_str().unwrap()],
    )
    .assert_ok();
    env.annex(&clone, &["init", "-q", "other desc"]).assert_ok();
    env.git(&d, &["remote", "add", "other", clone.to_str().unwrap()])
        .assert_ok();
    env.annex(&d, &["sync", "-q", "other"]).assert_ok();
    (d, clone)
}

#[test]
fn wanted_group_groupwanted_round_trip_with_git_annex() {
    let env = Env::new();
    let (d, clone) = annex_pair(&env);
    let other_uuid = config(&env, &clone, "annex.uuid");

    // git-annex writes, ferry reads.
    env.annex(&d, &["wanted", "here", "include=*.mp3 or largerthan=1mb"])
        .assert_ok();
    env.annex(&d, &["required", "here", "include=keep/*"])
        .assert_ok();
    env.annex(&d, &["group", "here", "client"]).assert_ok();
    env.annex(&d, &["group", "here", "backup"]).assert_ok();
    env.annex(&d, &["group", "other", "archive"]).assert_ok();
    env.annex(&d, &["wanted", "other", "groupwanted"])
        .assert_ok();
    env.annex(&d, &["groupwanted", "archive", "not  copies=archive:2"])
        .assert_ok();
    assert_eq!(
        out(&env.ferry(&d, &["wanted", "here"])),
        "include=*.mp3 or largerthan=1mb"
    );
    assert_eq!(
        out(&env.ferry(&d, &["wanted", "."])),
        "include=*.mp3 or largerthan=1mb"
    );
    assert_eq!(out(&env.ferry(&d, &["required", "here"])), "include=keep/*");
    assert_eq!(out(&env.ferry(&d, &["group", "here"])), "backup client");
    // A remote by name, by UUID and by description.
    for r in ["other", other_uuid.as_str(), "other desc"] {
        assert_eq!(out(&env.ferry(&d, &["group", r])), "archive", "{r}");
        assert_eq!(out(&env.ferry(&d, &["wanted", r])), "groupwanted", "{r}");
    }
    assert_eq!(
        out(&env.ferry(&d, &["groupwanted", "archive"])),
        "not  copies=archive:2"
    );
    assert_eq!(out(&env.ferry(&d, &["groupwanted", "nosuch"])), "");
    let e = env.ferry(&d, &["wanted", "nosuchrepo"]);
    assert!(
        e.assert_fails().stderr().contains("nosuchrepo"),
        "{}",
        e.stderr()
    );

    // ferry writes, git-annex reads.
    env.ferry(
        &d,
        &[
            "wanted",
            "here",
            "exclude=archive/* and (standard or present)",
        ],
    )
    .assert_ok();
    env.ferry(&d, &["ungroup", "here", "backup"]).assert_ok();
    env.ferry(&d, &["group", "other", "smallarchive"])
        .assert_ok();
    env.ferry(&d, &["groupwanted", "archive", "standard"])
        .assert_ok();
    env.ferry(&d, &["required", "other", "largerthan=10kb"])
        .assert_ok();
    assert_eq!(
        out(&env.annex(&d, &["wanted", "here"])),
        "exclude=archive/* and (standard or present)"
    );
    assert_eq!(out(&env.annex(&d, &["group", "here"])), "client");
    assert_eq!(
        out(&env.annex(&d, &["group", "other"])),
        "archive smallarchive"
    );
    assert_eq!(out(&env.annex(&d, &["groupwanted", "archive"])), "standard");
    assert_eq!(
        out(&env.annex(&d, &["required", "other"])),
        "largerthan=10kb"
    );
    // And git-annex's own check of the branch finds nothing wrong with what ferry wrote.
    let cfg = env
        .cmd(&d, "git", &["annex".as_ref(), "vicfg".as_ref()])
        .env("EDITOR", "cat")
        .output()
        .unwrap();
    let cfg = String::from_utf8_lossy(&cfg.stdout).into_owned();
    assert!(
        cfg.contains(&format!("required {other_uuid} = largerthan=10kb")),
        "{cfg}"
    );

    // Setting refuses a bad expression, naming the word and the token, and stores nothing.
    let r = env.ferry(&d, &["wanted", "here", "include=*.mp3 or foo=1"]);
    assert!(
        r.assert_fails()
            .stderr()
            .contains(r#"unknown term "foo=1" at word 3"#),
        "{}",
        r.stderr()
    );
    let r = env.ferry(&d, &["wanted", "here", "include=*.mp3 or"]);
    assert!(
        r.assert_fails()
            .stderr()
            .contains(r#"nothing after "or" at word 2"#)
    );
    assert_eq!(
        out(&env.annex(&d, &["wanted", "here"])),
        "exclude=archive/* and (standard or present)"
    );
}

/// The files, sizes and copies the evaluation test runs on.
const FILES: &[(&str, usize)] = &[
    ("music/a.mp3", 10),
    ("music/big.flac", 5000),
    ("archive/old.txt", 20),
    ("docs/archive/older.txt", 30),
    ("public/share.bin", 40),
    ("x/public/deep.bin", 50),
    ("publicity.txt", 60),
    ("top.txt", 3000),
];

#[test]
fn evaluation_agrees_with_git_annex_find() {
    let env = Env::new();
    let d = env.annex_repo("main");
    for (i, (f, size)) in FILES.iter().enumerate() {
        write(&d, f, format!("{i}").repeat(*size));
    }
    env.annex(&d, &["add", "-q", "."]).assert_ok();
    env.git(&d, &["commit", "-qm", "files"]).assert_ok();
    let mut uuids = Vec::new();
    for name in ["arch", "cli", "untr", "gone"] {
        let c = env.path(name);
        env.git(
            &d,
            &["clone", "-q", d.to_str().unwrap(), c.to_str().unwrap()],
        )
        .assert_ok();
        env.annex(&c, &["init", "-q", name]).assert_ok();
        env.git(&d, &["remote", "add", name, c.to_str().unwrap()])
            .assert_ok();
        uuids.push(config(&env, &c, "annex.uuid"));
    }
    env.annex(&d, &["sync", "-q", "--no-push"]).assert_ok();
    env.annex(&d, &["group", "arch", "archive"]).assert_ok();
    env.annex(&d, &["group", "cli", "client"]).assert_ok();
    env.annex(&d, &["untrust", "untr"]).assert_ok();
    env.annex(&d, &["dead", "gone"]).assert_ok();
    env.annex(&d, &["numcopies", "2"]).assert_ok();
    // Copies elsewhere, recorded in the location logs; some content gone from here.
    let key_of = |f: &str| out(&env.annex(&d, &["lookupkey", f]));
    let holders: &[(&str, &[usize])] = &[
        ("music/a.mp3", &[0, 1]),
        ("archive/old.txt", &[0]),
        ("docs/archive/older.txt", &[1, 2]),
        ("public/share.bin", &[2, 3]),
        ("top.txt", &[0, 1, 2]),
    ];
    for (f, who) in holders {
        let k = key_of(f);
        for &i in *who {
            env.annex(&d, &["setpresentkey", &k, &uuids[i], "1"])
                .assert_ok();
        }
    }
    env.annex(&d, &["drop", "-q", "--force", "top.txt", "music/big.flac"])
        .assert_ok();

    let exprs = [
        "include=*.mp3 or largerthan=1kb",
        "exclude=*/archive/* and exclude=archive/*",
        "include=music/* and not smallerthan=100",
        "copies=2",
        "copies=3",
        "copies=trusted:1",
        "copies=semitrusted+:2",
        "copies=untrusted:1",
        "copies=archive:1",
        "copies=client:1 or copies=dead:1",
        "lackingcopies=1",
        "approxlackingcopies=2",
        "inallgroup=client",
        "present",
        "not present",
        "inpreferreddir",
        "unused or nothing",
        "anything",
        "include=music/* or include=top.txt and copies=2",
        "include=*.txt include=top*",
        "not include=*.txt and largerthan=25",
        "securehash and inbackend=SHA256E",
        "(include=music/*",
        "include=nothing or",
        "",
    ];
    // Every answer is checked; this makes sure the answers differ enough to mean something.
    let mut seen = BTreeSet::new();
    for e in exprs {
        env.annex(&d, &["wanted", "here", e]).assert_ok();
        seen.insert(compare(&env, &d, e));
    }
    assert!(seen.len() >= 15, "only {} different outcomes", seen.len());
    for group in [
        "client",
        "archive",
        "backup",
        "source",
        "manual",
        "public",
        "unwanted",
        "incrementalbackup",
        "smallarchive",
        "transfer",
    ] {
        env.annex(&d, &["group", "here", group]).assert_ok();
        env.annex(&d, &["wanted", "here", "standard"]).assert_ok();
        seen.insert(compare(&env, &d, &format!("standard ({group})")));
        env.annex(&d, &["wanted", "here", "standard or include=top*"])
            .assert_ok();
        compare(&env, &d, &format!("standard or include=top* ({group})"));
        env.annex(&d, &["ungroup", "here", group]).assert_ok();
    }
    assert!(seen.len() >= 20, "only {} different outcomes", seen.len());
    // groupwanted, with standard inside it.
    env.annex(&d, &["group", "here", "client"]).assert_ok();
    env.annex(&d, &["group", "here", "mine"]).assert_ok();
    env.annex(&d, &["groupwanted", "mine", "standard and exclude=music/*"])
        .assert_ok();
    env.annex(&d, &["wanted", "here", "groupwanted"])
        .assert_ok();
    compare(&env, &d, "groupwanted");
    // In two standard groups: `standard` falls back to present.
    env.annex(&d, &["group", "here", "archive"]).assert_ok();
    env.annex(&d, &["wanted", "here", "standard"]).assert_ok();
    compare(&env, &d, "standard (client and archive)");
}

/// ferry's wants / wants_drop for here, for every file, against git-annex's find.
pub(crate) fn compare(env: &Env, d: &Path, what: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let find = |flag: &str| -> BTreeSet<String> {
        out(&env.annex(d, &["find", flag]))
            .lines()
            .map(str::to_string)
            .collect()
    };
    let (want_get, want_drop) = (find("--want-get"), find("--want-drop"));
    let _g = env.enter();
    let repo = ferry_lib::Repo::open(d, &Default::default()).unwrap();
    let prefs = Preferences::load(&repo).unwrap();
    let here = repo.uuid().to_string();
    let (mut get, mut dropped) = (BTreeSet::new(), BTreeSet::new());
    let files = ferry_lib::annexed::annexed_files(&repo.git, &[]).unwrap();
    let copies = ferry_lib::copies::FileCopies::load(&repo, &files, true).unwrap();
    for f in files {
        let log = repo
            .branch
            .read(&ferry_lib::branch::location_log_path(&f.key))
            .unwrap()
            .unwrap_or_default();
        let locations = ferry_lib::logs::LocationLog::parse(&log).present();
        let file = FileInfo {
            path: Some(&f.path),
            key: &f.key,
            locations: &locations,
            present_here: repo.store().find(&f.key).is_some(),
            numcopies_attr: copies.attrs(&f.path).numcopies,
        };
        let name = String::from_utf8(f.path.clone()).unwrap();
        if prefs.wants(&here, &file) {
            get.insert(name.clone());
        }
        if prefs.wants_drop(&here, &file) {
            dropped.insert(name);
        }
    }
    assert_eq!(get, want_get, "--want-get for {what:?}");
    assert_eq!(dropped, want_drop, "--want-drop for {what:?}");
    (get, dropped)
}

fn json(r: &Run) -> serde_json::Value {
    let lines = r.json_lines();
    assert_eq!(lines.len(), 1, "one object expected: {}", r.stdout());
    lines.into_iter().next().unwrap()
}

#[test]
fn json_shows_and_sets_what_git_annex_stores() {
    let env = Env::new();
    let (d, clone) = annex_pair(&env);
    let (here, other) = (
        config(&env, &d, "annex.uuid"),
        config(&env, &clone, "annex.uuid"),
    );
    // git-annex sets, ferry --json reads.
    for args in [
        &["wanted", "here", "include=*.mp3 or largerthan=1mb"][..],
        &["group", "here", "client"],
        &["group", "other", "archive"],
        &["wanted", "other", "standard"],
        &["required", "other", "include=keep/*"],
        &["groupwanted", "archive", "not copies=archive:2"],
        &["numcopies", "2"],
    ] {
        env.annex(&d, args).assert_ok();
    }
    let v = json(&env.ferry(&d, &["wanted", "here", "--json"]));
    assert_eq!(
        v,
        serde_json::json!({
            "command": "wanted", "success": true, "set": false,
            "repository": "here", "uuid": here, "description": "repo",
            "expression": "include=*.mp3 or largerthan=1mb", "standard_group": "client",
        })
    );
    // A remote by name, UUID or description: named by its remote name.
    for r in ["other", other.as_str(), "other desc"] {
        let v = json(&env.ferry(&d, &["wanted", r, "--json"]));
        assert_eq!(v["repository"], "other", "{r}: {v}");
        assert_eq!(v["uuid"], other.as_str(), "{v}");
        assert_eq!(v["description"], "other desc", "{v}");
        assert_eq!(v["expression"], "standard", "{v}");
        assert_eq!(v["standard_group"], "archive", "{v}");
    }
    let v = json(&env.ferry(&d, &["required", "other", "--json"]));
    assert_eq!(v["command"], "required");
    assert_eq!(v["expression"], "include=keep/*", "{v}");
    // Not set: null, not an empty string.
    let v = json(&env.ferry(&d, &["required", "here", "--json"]));
    assert!(v["expression"].is_null(), "{v}");
    let v = json(&env.ferry(&d, &["group", "other", "--json"]));
    assert_eq!(v["groups"], serde_json::json!(["archive"]), "{v}");
    assert_eq!(v["standard_group"], "archive", "{v}");
    let v = json(&env.ferry(&d, &["groupwanted", "archive", "--json"]));
    assert_eq!(
        v,
        serde_json::json!({
            "command": "groupwanted", "success": true, "set": false,
            "group": "archive", "expression": "not copies=archive:2",
        })
    );
    assert!(json(&env.ferry(&d, &["groupwanted", "nosuch", "--json"]))["expression"].is_null());
    let v = json(&env.ferry(&d, &["numcopies", "--json"]));
    assert_eq!(
        v,
        serde_json::json!({
            "command": "numcopies", "success": true, "set": false,
            "numcopies": 2, "source": "numcopies.log",
        })
    );
    let v = json(&env.ferry(&d, &["mincopies", "--json"]));
    assert_eq!(
        (&v["mincopies"], &v["source"]),
        (&1.into(), &"default".into())
    );

    // ferry --json sets: the object is what is stored now, and git-annex reads the same.
    let v = json(&env.ferry(&d, &["wanted", "other", "exclude=tmp/*", "--json"]));
    assert_eq!(
        (&v["set"], &v["expression"]),
        (&true.into(), &"exclude=tmp/*".into())
    );
    assert_eq!(out(&env.annex(&d, &["wanted", "other"])), "exclude=tmp/*");
    let v = json(&env.ferry(&d, &["group", "here", "backup", "--json"]));
    assert_eq!(v["groups"], serde_json::json!(["backup", "client"]), "{v}");
    // In two standard groups, `standard` means nothing.
    assert!(v["standard_group"].is_null(), "{v}");
    assert_eq!(out(&env.annex(&d, &["group", "here"])), "backup client");
    let v = json(&env.ferry(&d, &["ungroup", "here", "client", "--json"]));
    assert_eq!(v["groups"], serde_json::json!(["backup"]), "{v}");
    assert_eq!(v["was_in_group"], true, "{v}");
    assert_eq!(out(&env.annex(&d, &["group", "here"])), "backup");
    let v = json(&env.ferry(&d, &["groupwanted", "backup", "present", "--json"]));
    assert_eq!(v["expression"], "present", "{v}");
    assert_eq!(out(&env.annex(&d, &["groupwanted", "backup"])), "present");
    let v = json(&env.ferry(&d, &["numcopies", "3", "--json"]));
    assert_eq!((&v["numcopies"], &v["set"]), (&3.into(), &true.into()));
    assert_eq!(out(&env.annex(&d, &["numcopies"])), "3");

    // Refusals are objects too (and change nothing).
    let r = env.ferry(&d, &["wanted", "here", "include=a or foo=1", "--json"]);
    r.assert_fails();
    let v = json(&r);
    assert_eq!(v["success"], false, "{v}");
    assert!(
        v["error-messages"][0]
            .as_str()
            .is_some_and(|m| m.contains(r#"unknown term "foo=1" at word 3"#)),
        "{v}"
    );
    assert_eq!(
        out(&env.annex(&d, &["wanted", "here"])),
        "include=*.mp3 or largerthan=1mb"
    );
    let r = env.ferry(&d, &["group", "nosuchrepo", "--json"]);
    r.assert_fails();
    assert!(
        json(&r)["error-messages"][0]
            .as_str()
            .is_some_and(|m| m.contains("nosuchrepo"))
    );

    // Where numcopies comes from without the log: git config, else the default.
    let fresh = env.ferry_repo("fresh");
    let v = json(&env.ferry(&fresh, &["numcopies", "--json"]));
    assert_eq!(
        (&v["numcopies"], &v["source"]),
        (&1.into(), &"default".into())
    );
    env.git(&fresh, &["config", "annex.numcopies", "4"])
        .assert_ok();
    let v = json(&env.ferry(&fresh, &["numcopies", "--json"]));
    assert_eq!(
        (&v["numcopies"], &v["source"]),
        (&4.into(), &"git config annex.numcopies".into())
    );
}
