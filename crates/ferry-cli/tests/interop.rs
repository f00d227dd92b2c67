//! ferry and real git-annex on the same repositories.

use crate::common::*;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Names whose keys exercise the extension rules, unicode and odd bytes.
fn tricky_names() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        "archive.tar.gz",
        "a.b.c.d",
        "we ird.JPEG",
        ".hidden.txt",
        "f.verylongext",
        "x.jpegg",
        "x.tar.gz.jpegg",
        "song.mp3.part",
        "file.a-b",
        "weird.tar.gz..",
        "x.ünï",
        "x. .y",
        "über.jpeg",
        "x.123",
        "noext",
        "empty.txt",
        "ünïcode名前.データ",
        "UPPER.TXT",
        "trailing.",
        "many.dots.in.this.name.ok",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    v.push(b"raw\xffbyte.bin".to_vec());
    v
}

#[test]
fn keys_match_git_annex_calckey() {
    let env = Env::new();
    let d = env.ferry_repo("ours");
    let oracle = env.annex_repo("oracle");
    env.git(&d, &["config", "annex.dotfiles", "true"])
        .assert_ok();
    for (i, n) in tricky_names().iter().enumerate() {
        let content = if n.starts_with(b"empty") {
            Vec::new()
        } else {
            format!("content {i}\n").into_bytes()
        };
        write(&d, n, &content);
        write(&oracle, n, &content);
    }
    env.ferry(&d, &["add"]).assert_ok();
    for n in tricky_names() {
        let name = OsStr::from_bytes(&n);
        let theirs = env
            .annex(&oracle, &[OsStr::new("calckey"), name])
            .assert_ok()
            .stdout()
            .trim()
            .to_string();
        let ours = link_key(&d.join(name));
        assert_eq!(ours, theirs, "key for {}", String::from_utf8_lossy(&n));
        let calc = env
            .ferry(&oracle, &[OsStr::new("calckey"), name])
            .assert_ok()
            .stdout()
            .trim()
            .to_string();
        assert_eq!(calc, theirs);
    }
    // Cross-check hash directories with git-annex's own formatting.
    let key = link_key(&d.join("archive.tar.gz"));
    let dirs = env
        .annex(
            &oracle,
            &[
                "examinekey",
                &key,
                "--format=${hashdirmixed} ${hashdirlower}\n",
            ],
        )
        .assert_ok()
        .stdout();
    let target = std::fs::read_link(d.join("archive.tar.gz")).unwrap();
    let mixed = dirs.split(' ').next().unwrap();
    assert!(
        target
            .to_str()
            .unwrap()
            .contains(&format!("objects/{mixed}{key}/")),
        "{dirs} vs {target:?}"
    );
    let lower = dirs.split(' ').nth(1).unwrap().trim();
    let branch_files = env
        .git(&d, &["ls-tree", "-r", "--name-only", "git-annex"])
        .stdout();
    assert!(
        branch_files.contains(&format!("{lower}{key}.log")),
        "{branch_files}"
    );
}

#[test]
fn git_annex_accepts_what_ferry_wrote() {
    let env = Env::new();
    let d = env.ferry_repo("r");
    for (i, n) in tricky_names().iter().enumerate() {
        write(&d, n, format!("c{i}"));
    }
    write(&d, "sub/dir/deep.txt", "deep");
    env.ferry(&d, &["add"]).assert_ok();
    env.git(&d, &["commit", "-qm", "ferry add"]).assert_ok();
    let uuid = config(&env, &d, "annex.uuid");
    // Before git-annex writes anything: no stray files on the branch: only uuid.log and location logs.
    let files = env
        .git(&d, &["ls-tree", "-r", "--name-only", "git-annex"])
        .stdout();
    for f in files.lines() {
        assert!(
            f == "uuid.log" || f.ends_with(".log") && f.matches('/').count() == 2,
            "stray branch file {f}"
        );
    }
    env.annex(&d, &["fsck", "--quiet"]).assert_ok();
    let whereis = env
        .annex(&d, &["whereis", "--json"])
        .assert_ok()
        .json_lines();
    let annexed_by_ferry = env
        .ferry(&d, &["whereis", "--json"])
        .assert_ok()
        .json_lines();
    assert_eq!(whereis.len(), annexed_by_ferry.len());
    assert!(whereis.len() >= tricky_names().len() - 1); // .hidden.txt went to git
    for w in &whereis {
        let uuids: Vec<&str> = w["whereis"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["uuid"].as_str().unwrap())
            .collect();
        assert_eq!(uuids, vec![uuid.as_str()], "{w}");
    }
    let info = env.annex(&d, &["info", "--json"]).assert_ok().stdout();
    assert!(info.contains("\"success\":true"), "{info}");
}

#[test]
fn ferry_reads_repositories_made_by_git_annex() {
    let env = Env::new();
    let d = env.annex_repo("r");
    write(&d, "a.txt", "alpha");
    write(&d, "dir/b.bin", "beta");
    write(&d, "worm.dat", "w");
    env.annex(&d, &["add", "--quiet", "a.txt", "dir"])
        .assert_ok();
    env.annex(&d, &["add", "--quiet", "--backend=WORM", "worm.dat"])
        .assert_ok();
    env.git(&d, &["commit", "-qm", "x"]).assert_ok();
    let uuid = config(&env, &d, "annex.uuid");
    let (ours, theirs) = whereis_both(&env, &d);
    assert_eq!(ours.len(), 3);
    for (o, t) in ours.iter().zip(&theirs) {
        assert_eq!(o["file"], t["file"]);
        assert_eq!(o["key"], t["key"]);
        assert_eq!(o["whereis"][0]["uuid"], uuid.as_str());
        assert_eq!(
            o["whereis"][0]["description"],
            t["whereis"][0]["description"]
        );
    }
    let r = env.ferry(&d, &["fsck"]);
    r.assert_ok();
    assert!(
        r.stderr().contains("WORM cannot be re-hashed"),
        "{}",
        r.stderr()
    );
    let info = env.ferry(&d, &["info", "--json"]).assert_ok().json_lines();
    assert_eq!(info[0]["annexed_files"], 3);
    assert_eq!(info[0]["present_files"], 3);
}

#[test]
fn interleaved_adds_by_both_tools_agree() {
    let env = Env::new();
    let d = env.ferry_repo("r");
    write(&d, "by-ferry-1", "f1");
    env.ferry(&d, &["add"]).assert_ok();
    write(&d, "by-annex-1", "a1");
    env.annex(&d, &["add", "--quiet", "by-annex-1"]).assert_ok();
    write(&d, "by-ferry-2", "f2");
    env.ferry(&d, &["add", "by-ferry-2"]).assert_ok();
    write(&d, "by-annex-2", "a2");
    env.annex(&d, &["add", "--quiet", "by-annex-2"]).assert_ok();
    env.git(&d, &["commit", "-qm", "mixed"]).assert_ok();
    let (ours, theirs) = whereis_both(&env, &d);
    assert_eq!(ours.len(), 4);
    let summary = |v: &Vec<serde_json::Value>| {
        let mut s: Vec<(String, String, String)> = v
            .iter()
            .map(|j| {
                (
                    j["file"].to_string(),
                    j["key"].to_string(),
                    j["whereis"][0]["uuid"].to_string(),
                )
            })
            .collect();
        s.sort();
        s
    };
    assert_eq!(summary(&ours), summary(&theirs));
    env.annex(&d, &["fsck", "--quiet"]).assert_ok();
    env.ferry(&d, &["fsck"]).assert_ok();
}

/// `whereis --json` of ferry and of git-annex in `d`.
fn whereis_both(
    env: &Env,
    d: &std::path::Path,
) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    (
        env.ferry(d, &["whereis", "--json"])
            .assert_ok()
            .json_lines(),
        env.annex(d, &["whereis", "--json"])
            .assert_ok()
            .json_lines(),
    )
}
