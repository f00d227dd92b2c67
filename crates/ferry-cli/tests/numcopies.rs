//! numcopies and mincopies from `.gitattributes` (`annex.numcopies`, `annex.mincopies`), which
//! win over `numcopies.log`: drops, preferred content (`lackingcopies`), `sync --content`,
//! `explain` and `fsck`, each checked against real git-annex.

use crate::common::*;
use std::path::{Path, PathBuf};

/// A ferry repository `a` holding `files`, and its clone `b` (a remote of `a`) that got them
/// all: two copies of everything. numcopies.log says 1.
fn pair(env: &Env, files: &[(&str, &str)]) -> (PathBuf, PathBuf) {
    let a = env.ferry_repo("a");
    for (f, c) in files {
        write(&a, f, c);
    }
    env.ferry(&a, &["add", "."]).assert_ok();
    env.git(&a, &["commit", "-qm", "files"]).assert_ok();
    env.ferry(&a, &["numcopies", "1"]).assert_ok();
    env.git(env.tmp.path(), &["clone", "-q", "a", "b"])
        .assert_ok();
    let b = env.path("b");
    env.ferry(&b, &["init", "b"]).assert_ok();
    env.ferry(&b, &["get", "."]).assert_ok();
    env.ferry(&b, &["sync"]).assert_ok();
    env.git(&a, &["remote", "add", "b", "../b"]).assert_ok();
    env.ferry(&a, &["sync"]).assert_ok();
    (a, b)
}

#[test]
fn gitattributes_numcopies_and_mincopies_refuse_drops_as_git_annex_does() {
    let env = Env::new();
    let (a, _b) = pair(
        &env,
        &[
            ("f.bin", "needs two copies\n"),
            ("g.txt", "needs one\n"),
            ("m.min", "needs two locked copies\n"),
            ("same.bin", "shared content\n"),
            ("keep/same.bin", "shared content\n"),
        ],
    );
    assert_eq!(key(&a, "same.bin"), key(&a, "keep/same.bin"));
    // Not committed: git (and git-annex) read the work tree's file all the same.
    write(
        &a,
        ".gitattributes",
        "*.bin annex.numcopies=2\n*.min annex.mincopies=2\n",
    );
    write(&a, "keep/.gitattributes", "* annex.numcopies=3\n");
    // Overrides numcopies.log (1): only one other copy, and two are needed.
    for f in ["f.bin", "m.min", "same.bin"] {
        let r = env.annex(&a, &["drop", f]);
        r.assert_fails();
        assert!(
            r.stdout().contains("(unsafe)"),
            "git-annex: {}{}",
            r.stdout(),
            r.stderr()
        );
        let r = env.ferry(&a, &["drop", f]);
        r.assert_fails();
        assert!(has_key(&a, &key(&a, f)), "{f} is still here");
        let err = r.stderr();
        match f {
            "f.bin" => assert!(
                err.contains("numcopies is 2 (from .gitattributes annex.numcopies of f.bin)"),
                "{err}"
            ),
            "m.min" => assert!(
                err.contains("mincopies 2 (from .gitattributes annex.mincopies of m.min)"),
                "{err}"
            ),
            // same.bin has keep/same.bin's content, which wants 3 copies.
            _ => assert!(
                err.contains(
                    "numcopies is 3 (from .gitattributes annex.numcopies of keep/same.bin)"
                ),
                "{err}"
            ),
        }
    }
    // move refuses the same way: the content goes to b, the copy here stays.
    let r = env.ferry(&a, &["move", "--to", "b", "f.bin"]);
    r.assert_fails();
    assert!(has_key(&a, &key(&a, "f.bin")));
    // A file the attributes leave alone drops as numcopies.log allows.
    env.ferry(&a, &["drop", "g.txt"]).assert_ok();
    assert!(!has_key(&a, &key(&a, "g.txt")));

    // explain says where the number comes from.
    let v = explain_json(&env, &a, "f.bin");
    assert_eq!(v["numcopies"], 2, "{v}");
    assert_eq!(
        v["numcopies_from"],
        serde_json::json!({"kind": "gitattributes", "file": "f.bin"}),
        "{v}"
    );
    assert_eq!(v["mincopies_from"]["kind"], "default", "{v}");
    let text = env
        .ferry(&a, &["explain", "f.bin", "same.bin", "g.txt"])
        .assert_ok()
        .stdout();
    for line in [
        "numcopies is 2 (from .gitattributes) and mincopies 1 (default): 2 copies count",
        "numcopies is 3 (from .gitattributes of keep/same.bin, which has the same content)",
        "numcopies is 1 (from numcopies.log) and mincopies 1 (default): 1 copy count",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }

    // Raised above the copies there are: both fscks complain about that file only.
    write(&a, ".gitattributes", "f.bin annex.numcopies=3\n");
    let r = env.ferry(&a, &["fsck", "--fast", "f.bin", "g.txt", "--json"]);
    r.assert_fails();
    let reports = r.json_lines();
    let f = reports.iter().find(|l| l["file"] == "f.bin").unwrap();
    assert!(
        f.to_string()
            .contains("numcopies is 3 (from .gitattributes)"),
        "{f}"
    );
    assert!(
        reports
            .iter()
            .any(|l| l["file"] == "g.txt" && l["success"] == true),
        "{reports:?}"
    );
    env.annex(&a, &["fsck", "--fast", "f.bin"]).assert_fails();
    env.annex(&a, &["fsck", "--fast", "g.txt"]).assert_ok();
    // Lowered: the drop goes ahead (the attribute wins over numcopies.log 2 as well).
    env.ferry(&a, &["numcopies", "2"]).assert_ok();
    write(&a, ".gitattributes", "f.bin annex.numcopies=1\n");
    env.ferry(&a, &["drop", "f.bin"]).assert_ok();
    assert!(!has_key(&a, &key(&a, "f.bin")));
}

/// git-annex's output lines that move or drop content.
fn moves(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with("get ") || l.starts_with("copy ") || l.starts_with("drop "))
        .map(str::to_string)
        .collect()
}

#[test]
fn gitattributes_numcopies_changes_what_is_dropped_as_in_git_annex() {
    let env = Env::new();
    let (a, b) = pair(
        &env,
        &[
            ("keep/k.bin", "kept: two copies wanted\n"),
            ("other/o.bin", "may go\n"),
            ("docs/d.txt", "lacking copies\n"),
            ("docs/e.txt", "not lacking\n"),
        ],
    );
    write(&a, "keep/.gitattributes", "* annex.numcopies=2\n");
    write(&a, "docs/.gitattributes", "d.txt annex.numcopies=3\n");
    env.git(&a, &["add", "keep/.gitattributes", "docs/.gitattributes"])
        .assert_ok();
    env.git(&a, &["commit", "-qm", "attributes"]).assert_ok();

    // Preferred content: lackingcopies uses the file's attribute. With two copies, d.txt lacks
    // one once here's copy is gone (3 wanted), e.txt does not (numcopies.log 1).
    env.annex(
        &a,
        &["wanted", "here", "lackingcopies=1 and include=docs/*"],
    )
    .assert_ok();
    let want_drop = env.annex(&a, &["find", "--want-drop"]).assert_ok().stdout();
    let want_drop: Vec<&str> = want_drop.lines().collect();
    assert!(!want_drop.contains(&"docs/d.txt"), "{want_drop:?}");
    assert!(want_drop.contains(&"docs/e.txt"), "{want_drop:?}");
    crate::preferred::compare(&env, &a, "lackingcopies=1 with an attribute");
    // approxlackingcopies does not look at attributes.
    env.annex(
        &a,
        &["wanted", "here", "approxlackingcopies=1 and include=docs/*"],
    )
    .assert_ok();
    let (_, dropped) = crate::preferred::compare(&env, &a, "approxlackingcopies=1");
    assert!(dropped.contains("docs/d.txt"), "{dropped:?}");

    // The planner: here wants no .bin and only docs lacking copies. keep/k.bin must keep 2
    // copies, so it stays; other/o.bin may go (b has it). git-annex decides the same for
    // k.bin first (drop --auto leaves it).
    env.annex(
        &a,
        &[
            "wanted",
            "here",
            "exclude=*.bin and lackingcopies=1 and include=docs/*",
        ],
    )
    .assert_ok();
    let r = env.annex(&a, &["drop", "--auto", "keep/k.bin"]);
    r.assert_ok();
    assert!(moves(&r.stdout()).is_empty(), "{}", r.stdout());
    let v = explain_json(&env, &a, "keep/k.bin");
    assert_eq!(v["plan"]["drop_here"], false, "{v}");
    assert_eq!(wish(&v, "here")["wants"], false, "{v}");
    let out = env.ferry(&a, &["sync", "--content"]).assert_ok().stdout();
    assert!(out.contains("drop other/o.bin (dropped here) ok"), "{out}");
    assert!(out.contains("drop docs/e.txt (dropped here) ok"), "{out}");
    assert!(!out.contains("keep/k.bin"), "{out}");
    assert!(!out.contains("docs/d.txt"), "{out}");
    for (f, here) in [
        ("keep/k.bin", true),
        ("other/o.bin", false),
        ("docs/d.txt", true),
        ("docs/e.txt", false),
    ] {
        assert_eq!(has_key(&a, &key(&b, f)), here, "{f}");
        assert!(has_key(&b, &key(&b, f)), "b keeps {f}");
    }
    // git-annex finds nothing more to drop or get.
    let r = env.annex(&a, &["sync", "--content", "--no-pull", "--no-push"]);
    r.assert_ok();
    assert!(moves(&r.stdout()).is_empty(), "{}", r.stdout());
    let r = env.annex(&a, &["drop", "--auto"]);
    r.assert_ok();
    assert!(moves(&r.stdout()).is_empty(), "{}", r.stdout());
}

/// The daemon's transfer queue is empty: nothing queued, running or waiting for a retry.
pub(crate) fn idle(env: &Env, d: &Path) -> bool {
    let s = crate::assistant::status(env, d);
    let t = &s["transfers"];
    t["queued"] == 0
        && t["retrying_count"] == 0
        && t["running"].as_array().is_some_and(|r| r.is_empty())
}

#[test]
fn the_daemon_follows_a_committed_gitattributes_change() {
    // a's daemon drops what it does not want once b holds it, unless .gitattributes asks for
    // two copies; raising it later keeps new content, lowering it lets the copy go.
    use crate::assistant::{Daemon, WAIT, fast_retries, logs};
    let env = Env::new();
    let (a, b) = pair(&env, &[("x.bin", "x\n"), ("y.bin", "y\n")]);
    write(&a, ".gitattributes", "y.bin annex.numcopies=2\n");
    env.git(&a, &["add", ".gitattributes"]).assert_ok();
    env.git(&a, &["commit", "-qm", "attributes"]).assert_ok();
    env.annex(&a, &["wanted", "here", "exclude=*.bin"])
        .assert_ok();
    fast_retries(&env, &a);
    let (x, y) = (key(&a, "x.bin"), key(&a, "y.bin"));
    let da = Daemon::start(&env, &a);
    // Dropped, and the daemon has nothing left to do (y.bin's drop would have been in the
    // same batch).
    assert!(
        wait_until(WAIT, || !has_key(&a, &x) && idle(&env, &a)),
        "x.bin is dropped here (b has it); log:\n{}",
        logs(&[&da])
    );
    assert!(has_key(&a, &y), "y.bin needs two copies");
    // The attribute goes: the daemon commits the change and lets y.bin go too.
    write(&a, ".gitattributes", "");
    assert!(
        wait_until(WAIT, || !has_key(&a, &y)),
        "y.bin is dropped once .gitattributes no longer asks for two copies; log:\n{}",
        logs(&[&da])
    );
    assert!(has_key(&b, &x) && has_key(&b, &y));
    drop(da);
    // git-annex's record agrees: one copy each, in b.
    let r = env.annex(&a, &["whereis", "--json", "x.bin", "y.bin"]);
    for v in r.json_lines() {
        assert_eq!(v["whereis"].as_array().unwrap().len(), 1, "{v}");
        assert_eq!(
            v["whereis"][0]["uuid"],
            config(&env, &b, "annex.uuid").as_str()
        );
    }
}
