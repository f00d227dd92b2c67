//! `sync --content` following preferred content set with git-annex (clients, a transfer
//! repository, an excluded directory, an upload-only and a git-only clone), and `explain`.

use crate::common::*;
use std::path::{Path, PathBuf};

/// Three clients of a bare transfer repository `t.git` (group transfer, `wanted standard`):
/// `a` (client, standard) with `f.txt` and `big/x.bin`, `b` (client, standard but not
/// `big/`), and `c` (no group). Only `a` has synced content so far.
struct Hub {
    env: Env,
    a: PathBuf,
    b: PathBuf,
    c: PathBuf,
    t: PathBuf,
}

fn hub() -> Hub {
    let env = Env::new();
    let a = env.ferry_repo("a");
    write(&a, "f.txt", "for every client\n");
    write(&a, "big/x.bin", "big, not for b\n");
    env.ferry(&a, &["add", "."]).assert_ok();
    env.git(&a, &["commit", "-qm", "files"]).assert_ok();
    let t = transfer_repo(&env, &a);
    for args in [
        &["group", ".", "client"][..],
        &["wanted", ".", "standard"],
        &["group", "t", "transfer"],
        &["wanted", "t", "standard"],
    ] {
        env.annex(&a, args).assert_ok();
    }
    let r = env.ferry(&a, &["sync", "--content"]);
    r.assert_ok();
    let out = r.stdout();
    assert!(out.contains("copy f.txt (to t) ok"), "{out}");
    assert!(out.contains("copy big/x.bin (to t) ok"), "{out}");
    let clone = |name: &str| clone_of_transfer_repo(&env, name);
    let b = clone("b");
    env.annex(&b, &["group", ".", "client"]).assert_ok();
    env.annex(&b, &["wanted", ".", "standard and exclude=big/*"])
        .assert_ok();
    let c = clone("c");
    Hub { env, a, b, c, t }
}

/// git-annex, run after ferry, finds nothing more to get, copy or drop.
fn annex_agrees(env: &Env, d: &Path) {
    let r = env.annex(d, &["sync", "--content", "--no-pull", "--no-push"]);
    r.assert_ok();
    let out = r.stdout();
    let moved: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("get ") || l.starts_with("copy ") || l.starts_with("drop "))
        .collect();
    assert!(moved.is_empty(), "git-annex still wanted to: {moved:?}");
}

#[test]
fn excluded_directory_is_never_downloaded_and_transfer_repo_lets_go_once_clients_have_it() {
    let Hub { env, a, b, t, .. } = hub();
    let (f, x) = (key(&a, "f.txt"), key(&a, "big/x.bin"));
    let r = env.ferry(&b, &["sync", "--content", "--json"]);
    r.assert_ok();
    let lines = r.json_lines();
    let cmd = |c: &str, file: &str| {
        lines
            .iter()
            .any(|l| l["command"] == c && l["file"] == file && l["success"] == true)
    };
    assert!(cmd("get", "f.txt"), "{lines:?}");
    // Both clients have f.txt now: the transfer repository's copy went (numcopies 1 holds).
    assert!(cmd("drop", "f.txt"), "{lines:?}");
    assert!(!cmd("get", "big/x.bin"), "{lines:?}");
    assert!(has_key(&b, &f));
    assert!(!has_key(&b, &x), "b does not want big/");
    assert!(!has_key(&t, &f), "t lets f.txt go once every client has it");
    assert!(has_key(&t, &x), "t keeps big/x.bin: client b lacks it");
    assert!(has_key(&a, &f) && has_key(&a, &x));
    annex_agrees(&env, &b);
    // A second run has nothing to do.
    let r = env.ferry(&b, &["sync", "--content", "--json"]);
    let acts: Vec<_> = r
        .json_lines()
        .into_iter()
        .filter(|l| l["command"] != "sync")
        .collect();
    assert!(acts.is_empty(), "{acts:?}");

    // explain says why.
    let v = explain_json(&env, &b, "big/x.bin");
    assert_eq!(wish(&v, "here")["wants"], false, "{v}");
    assert_eq!(
        wish(&v, "here")["expression"],
        "standard and exclude=big/*",
        "{v}"
    );
    assert_eq!(wish(&v, "here")["standard_group"], "client", "{v}");
    assert_eq!(wish(&v, "t")["wants"], true, "{v}");
    assert_eq!(v["plan"]["download"], false, "{v}");
    assert_eq!(v["numcopies_met"], true, "{v}");
    let text = env
        .ferry(&b, &["explain", "big/x.bin", "f.txt"])
        .assert_ok()
        .stdout();
    assert!(
        text.contains(
            "does not want it (by \"standard and exclude=big/*\", with standard for group client)"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "The location log says remote t has the content (semitrusted, checked: it is there)."
        ),
        "{text}"
    );
    assert!(
        text.contains("sync --content would do nothing for it now."),
        "{text}"
    );
}

#[test]
fn upload_only_and_git_only_clones() {
    let Hub { env, a, b, c, t } = hub();
    env.annex(&c, &["wanted", ".", "present"]).assert_ok();
    add_committed(&env, &c, "c.txt", "from the upload-only clone\n");
    let ck = key(&c, "c.txt");

    // Git only for t: the branch goes, the content does not.
    env.git(&c, &["config", "remote.t.annex-synccontent", "false"])
        .assert_ok();
    let out = env.ferry(&c, &["sync", "--content"]).assert_ok().stdout();
    assert!(!out.contains("copy c.txt"), "{out}");
    assert!(!has_key(&t, &ck));
    assert!(
        env.git(&t, &["ls-tree", "-r", "--name-only", "synced/main"])
            .assert_ok()
            .stdout()
            .contains("c.txt")
    );
    // annex.synccontent=false: a plain sync moves no content either, even with it on for t.
    env.git(&c, &["config", "--unset", "remote.t.annex-synccontent"])
        .assert_ok();
    env.git(&c, &["config", "annex.synccontent", "false"])
        .assert_ok();
    env.ferry(&c, &["sync"]).assert_ok();
    assert!(!has_key(&t, &ck));

    // Upload-only (wanted present): sends its file, gets nothing.
    let out = env.ferry(&c, &["sync", "--content"]).assert_ok().stdout();
    assert!(out.contains("copy c.txt (to t) ok"), "{out}");
    assert!(!out.contains("get "), "{out}");
    assert!(has_key(&t, &ck));
    assert!(!has_key(&c, &key(&a, "f.txt")));
    annex_agrees(&env, &c);

    // t keeps c.txt while a client lacks it; once both have it, a's sync drops it from t.
    env.ferry(&b, &["sync", "--content"]).assert_ok();
    assert!(has_key(&b, &ck) && has_key(&t, &ck));
    let out = env.ferry(&a, &["sync", "--content"]).assert_ok().stdout();
    assert!(out.contains("get c.txt (from t) ok"), "{out}");
    assert!(out.contains("drop c.txt (dropped from t) ok"), "{out}");
    assert!(!has_key(&t, &ck));
    for d in [&a, &b, &c] {
        assert!(has_key(d, &ck), "{}", d.display());
    }
}

#[test]
fn numcopies_keeps_the_transfer_copy() {
    let Hub { env, a, b, t, .. } = hub();
    env.ferry(&a, &["numcopies", "3"]).assert_ok();
    env.ferry(&a, &["sync"]).assert_ok();
    let f = key(&a, "f.txt");
    env.ferry(&b, &["sync", "--content"]).assert_ok();
    // t does not want it, but only three copies exist: none may go.
    assert!(has_key(&b, &f) && has_key(&t, &f));
    let v = explain_json(&env, &b, "f.txt");
    assert_eq!(wish(&v, "t")["wants"], false, "{v}");
    assert_eq!(v["numcopies"], 3, "{v}");
    assert_eq!(v["counted_copies"], 3, "{v}");
    assert_eq!(v["plan"]["drop_from"], serde_json::json!([]), "{v}");
    annex_agrees(&env, &b);
}

#[test]
fn explain_reports_unreachable_failed_and_queued() {
    let Hub { env, a, b, t, .. } = hub();
    let x = key(&a, "big/x.bin");
    // A failed download: t's copy of big/x.bin is corrupt.
    let obj = {
        let lower = env
            .annex(&a, &["examinekey", &x, "--format=${hashdirlower}"])
            .assert_ok()
            .stdout();
        t.join("annex/objects").join(lower.trim()).join(&x)
    };
    let mode = |p: &Path, m: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    };
    mode(&obj, 0o755);
    mode(&obj.join(&x), 0o644);
    std::fs::write(obj.join(&x), "corrupt, not the content\n").unwrap();
    env.ferry(&b, &["get", "big/x.bin"]).assert_fails();
    let text = env
        .ferry(&b, &["explain", "big/x.bin"])
        .assert_ok()
        .stdout();
    assert!(
        text.contains("The last download from t (started "),
        "{text}"
    );
    let v = explain_json(&env, &b, "big/x.bin");
    assert_eq!(v["failures"][0]["direction"], "download", "{v}");
    assert_eq!(v["failures"][0]["remote"], "t", "{v}");

    // The daemon's queue, as its status snapshot publishes it.
    let status = b.join(".git/annex/ferry/daemon");
    std::fs::create_dir_all(&status).unwrap();
    use ferry_lib::daemon::status::{Status, TransferEntry, now_ms};
    let mut body = Status::default();
    body.transfers.retrying_count = 1;
    body.transfers.retrying.push(TransferEntry {
        direction: "download".into(),
        file: "big/x.bin".into(),
        key: x.clone(),
        attempts: 2,
        next_attempt_ms: Some(now_ms() + 60_000),
        error: Some("checksum mismatch from t".into()),
        ..Default::default()
    });
    let body = serde_json::to_string(&body).unwrap();
    std::fs::write(status.join("status.json"), body).unwrap();
    let text = env
        .ferry(&b, &["explain", "big/x.bin"])
        .assert_ok()
        .stdout();
    assert!(
        text.contains(
            "The daemon's download failed 2 times: checksum mismatch from t; next attempt in "
        ),
        "{text}"
    );

    // t cannot be reached.
    std::fs::rename(&t, env.path("t-away.git")).unwrap();
    let v = explain_json(&env, &b, "f.txt");
    assert!(wish(&v, "t")["unreachable"].is_string(), "{v}");
    assert!(
        v["plan"]["left_out"]["t"]
            .as_str()
            .is_some_and(|s| s.starts_with("cannot be reached")),
        "{v}"
    );
    let text = env.ferry(&b, &["explain", "f.txt"]).assert_ok().stdout();
    assert!(
        text.contains("Remote t is left out of content sync: cannot be reached"),
        "{text}"
    );

    // Paths that are not annexed.
    write(&b, "plain.txt", "in git\n");
    env.git(&b, &["add", "plain.txt"]).assert_ok();
    let r = env.ferry(&b, &["explain", "plain.txt"]);
    r.assert_fails();
    assert!(
        r.stderr()
            .contains("plain.txt is stored in git itself, not annexed"),
        "{}",
        r.stderr()
    );
    let r = env.ferry(&b, &["explain", "nope.txt"]);
    r.assert_fails();
    assert!(
        r.stderr().contains("nope.txt does not exist"),
        "{}",
        r.stderr()
    );
}

#[test]
fn running_daemons_carry_content_through_the_transfer_repo_and_drain_it() {
    // a and b reach each other only through the bare transfer repository t: a push there by
    // one is fetched by the other's daemon at once, the content goes through t, and t lets it
    // go as soon as both clients have it.
    use crate::assistant::{Daemon, WAIT, fast_retries, logs};
    let Hub { env, a, b, t, .. } = hub();
    env.ferry(&b, &["sync"]).assert_ok();
    fast_retries(&env, &a);
    fast_retries(&env, &b);
    let da = Daemon::start(&env, &a);
    let db = Daemon::start(&env, &b);
    // What a had before: b fetches f.txt (not big/), and t drops f.txt.
    let (f, x) = (key(&a, "f.txt"), key(&a, "big/x.bin"));
    assert!(
        wait_until(WAIT, || has_key(&b, &f) && !has_key(&t, &f)),
        "f.txt reaches b through t, and t lets it go; logs:\n{}",
        logs(&[&da, &db])
    );
    // New in a while both run.
    write(&a, "new.txt", "written while both run\n");
    assert!(
        wait_until(WAIT, || std::fs::read_to_string(b.join("new.txt"))
            .is_ok_and(|c| c == "written while both run\n")),
        "new.txt reaches b through t; logs:\n{}",
        logs(&[&da, &db])
    );
    // The daemon annexes new files unlocked: the key is in the committed pointer.
    let n = env.git(&a, &["cat-file", "-p", "HEAD:new.txt"]).stdout();
    let n = n.trim().rsplit('/').next().unwrap().to_string();
    assert!(
        wait_until(WAIT, || !has_key(&t, &n)),
        "t drops new.txt once both clients have it; logs:\n{}",
        logs(&[&da, &db])
    );
    assert!(has_key(&a, &n) && has_key(&b, &n));
    assert!(
        has_key(&t, &x),
        "t keeps big/x.bin: client b does not have it"
    );
    assert!(!has_key(&b, &x));
    // git-annex reads the same story from b's location logs, once a's record of its own copy
    // (pushed to t with a's next git-annex push) has been fetched by b.
    let whereis = || env.annex(&b, &["whereis", "new.txt"]).stdout();
    assert!(
        wait_until(WAIT, || whereis().contains("(2 copies)")),
        "{}; logs:\n{}",
        whereis(),
        logs(&[&da, &db])
    );
}
