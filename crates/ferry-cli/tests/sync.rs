//! Git-level sync between clones, ferry with ferry and ferry with git-annex.

use crate::common::*;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

fn holders(env: &Env, d: &Path, file: &str) -> Vec<String> {
    let w = env.ferry(d, &["whereis", "--json", file]).json_lines();
    let mut v: Vec<String> = w[0]["whereis"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["uuid"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn two_ferry_clones_exchange_files_and_location_logs() {
    let env = Env::new();
    let a = env.ferry_repo("a");
    write(&a, "from-a.txt", "a\n");
    write(&a, "same.txt", "identical\n");
    env.ferry(&a, &["add"]).assert_ok();
    env.git(&a, &["commit", "-qm", "a"]).assert_ok();
    let b = clone_b(&env);
    env.git(&a, &["remote", "add", "b", "../b"]).assert_ok();
    // b adds its own file and the same content under another name (same key).
    write(&b, "from-b.txt", "b\n");
    write(&b, "copy-of-same.txt", "identical\n");
    env.ferry(&b, &["add"]).assert_ok();
    env.git(&b, &["commit", "-qm", "b"]).assert_ok();
    let r = env.ferry(&b, &["sync", "--json"]);
    r.assert_ok();
    assert_eq!(r.json_lines()[0]["remotes"][0]["pushed"], "ok");
    env.ferry(&a, &["sync"]).assert_ok();
    assert!(
        std::fs::symlink_metadata(a.join("from-b.txt"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let (ua, ub) = (
        config(&env, &a, "annex.uuid"),
        config(&env, &b, "annex.uuid"),
    );
    let mut both = vec![ua.clone(), ub.clone()];
    both.sort();
    // The shared key's location log is the union of both clones' lines.
    assert_eq!(holders(&env, &a, "same.txt"), both);
    assert_eq!(holders(&env, &a, "from-b.txt"), vec![ub.clone()]);
    env.ferry(&b, &["sync"]).assert_ok();
    assert_eq!(holders(&env, &b, "same.txt"), both);
    assert_eq!(
        env.git(&a, &["rev-parse", "HEAD^{tree}"]).stdout(),
        env.git(&b, &["rev-parse", "HEAD^{tree}"]).stdout()
    );
    // Real git-annex reads the merged branch the same way.
    let aw = env.annex(&a, &["whereis", "same.txt"]).assert_ok().stdout();
    assert!(aw.contains("(2 copies)"), "{aw}");
    env.annex(&a, &["fsck", "--fast", "--quiet"]).assert_ok();
}

#[test]
fn mixed_network_with_git_annex_sync() {
    let env = Env::new();
    let a = env.ferry_repo("a");
    write(&a, "ferry-file", "from ferry\n");
    env.ferry(&a, &["add"]).assert_ok();
    env.git(&a, &["commit", "-qm", "ferry"]).assert_ok();
    env.git(env.tmp.path(), &["clone", "-q", "a", "c"])
        .assert_ok();
    let c = env.path("c");
    env.annex(&c, &["init", "-q", "annex-clone"]).assert_ok();
    env.git(&a, &["remote", "add", "c", "../c"]).assert_ok();
    write(&c, "annex-file", "from git-annex\n");
    env.annex(&c, &["add", "--quiet", "annex-file"]).assert_ok();
    env.annex(&c, &["sync", "--quiet"]).assert_ok();
    env.ferry(&a, &["sync"]).assert_ok();
    assert!(
        a.join("annex-file").symlink_metadata().is_ok(),
        "git-annex's file reached ferry"
    );
    let uc = config(&env, &c, "annex.uuid");
    assert_eq!(holders(&env, &a, "annex-file"), vec![uc.clone()]);
    write(&a, "second", "more from ferry\n");
    env.ferry(&a, &["add"]).assert_ok();
    env.git(&a, &["commit", "-qm", "second"]).assert_ok();
    env.ferry(&a, &["sync"]).assert_ok();
    env.annex(&c, &["sync", "--quiet"]).assert_ok();
    assert!(
        c.join("second").symlink_metadata().is_ok(),
        "ferry's file reached git-annex"
    );
    let ua = config(&env, &a, "annex.uuid");
    let cw = env.annex(&c, &["whereis", "second"]).assert_ok().stdout();
    assert!(cw.contains(&ua), "{cw}");
    assert_eq!(
        env.git(&a, &["rev-parse", "HEAD^{tree}"]).stdout(),
        env.git(&c, &["rev-parse", "HEAD^{tree}"]).stdout()
    );
    env.annex(&a, &["fsck", "--fast", "--quiet"]).assert_ok();
    env.annex(&c, &["fsck", "--fast", "--quiet"]).assert_ok();
}

#[test]
fn unavailable_remotes_are_skipped_and_broken_ones_fail_without_stopping_the_rest() {
    let env = Env::new();
    let a = env.ferry_repo("a");
    write(&a, "f", "x");
    env.ferry(&a, &["add"]).assert_ok();
    env.git(&a, &["commit", "-qm", "f"]).assert_ok();
    env.git(env.tmp.path(), &["clone", "-q", "a", "good"])
        .assert_ok();
    env.ferry(&env.path("good"), &["init"]).assert_ok();
    env.mkdir("not-a-repo");
    env.git(&a, &["remote", "add", "good", "../good"])
        .assert_ok();
    env.git(&a, &["remote", "add", "usb", "../unplugged-drive"])
        .assert_ok();
    env.git(&a, &["remote", "add", "broken", "../not-a-repo"])
        .assert_ok();
    let r = env.ferry(&a, &["sync", "--json"]);
    r.assert_fails();
    let j = &r.json_lines()[0];
    let by = |name: &str| {
        j["remotes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["remote"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(by("usb")["pulled"], "unavailable");
    assert_eq!(by("broken")["pulled"], "failed");
    assert_eq!(by("good")["pushed"], "ok");
    assert_eq!(
        env.git(&env.path("good"), &["rev-parse", "refs/heads/synced/main"])
            .stdout(),
        env.git(&a, &["rev-parse", "HEAD"]).stdout()
    );
    // Without the broken remote, the unplugged drive alone is not an error.
    env.git(&a, &["remote", "remove", "broken"]).assert_ok();
    env.ferry(&a, &["sync"]).assert_ok();
}

#[test]
fn a_change_travels_along_a_chain() {
    let env = Env::new();
    let a = env.ferry_repo("a");
    write(&a, "seed", "s");
    env.ferry(&a, &["add"]).assert_ok();
    env.git(&a, &["commit", "-qm", "seed"]).assert_ok();
    env.git(env.tmp.path(), &["clone", "-q", "a", "b"])
        .assert_ok();
    let b = env.path("b");
    env.ferry(&b, &["init"]).assert_ok();
    env.git(env.tmp.path(), &["clone", "-q", "b", "c"])
        .assert_ok();
    let c = env.path("c");
    env.ferry(&c, &["init"]).assert_ok();
    write(&a, "news", "from a\n");
    env.ferry(&a, &["add"]).assert_ok();
    env.git(&a, &["commit", "-qm", "news"]).assert_ok();
    env.ferry(&b, &["sync"]).assert_ok(); // b pulls from a (origin)
    env.ferry(&c, &["sync"]).assert_ok(); // c knows only b
    assert!(c.join("news").symlink_metadata().is_ok());
    assert_eq!(
        holders(&env, &c, "news"),
        vec![config(&env, &a, "annex.uuid")]
    );
}

/// Conflicting edits on a ferry clone and a git-annex clone: both keep every version under the
/// same variant names, and the clones end with identical trees.
#[test]
fn conflicts_resolve_to_the_same_tree_as_git_annex() {
    let env = Env::new();
    let a = env.ferry_repo("a");
    write(&a, "doc.txt", "base\n");
    write(&a, "gone.txt", "will be deleted on one side\n");
    env.ferry(&a, &["add"]).assert_ok();
    env.git(&a, &["commit", "-qm", "base"]).assert_ok();
    env.git(env.tmp.path(), &["clone", "-q", "a", "c"])
        .assert_ok();
    let c = env.path("c");
    env.annex(&c, &["init", "-q", "annex-clone"]).assert_ok();
    env.git(&a, &["remote", "add", "c", "../c"]).assert_ok();

    // ferry side: new doc.txt, new same.txt, deletes gone.txt, mixed.dat annexed.
    std::fs::remove_file(a.join("doc.txt")).unwrap();
    write(&a, "doc.txt", "ferry's edit\n");
    write(&a, "same.txt", "ferry wrote this\n");
    write(&a, "mixed.dat", "annexed by ferry\n");
    write(&a, "fd", "a file on the ferry side\n");
    env.ferry(&a, &["add"]).assert_ok();
    env.git(&a, &["rm", "-q", "gone.txt"]).assert_ok();
    env.git(&a, &["commit", "-qm", "ferry side"]).assert_ok();
    // git-annex side: other doc.txt, other same.txt, modifies gone.txt, mixed.dat in git.
    env.annex(&c, &["unlock", "doc.txt", "gone.txt"])
        .assert_ok();
    write(&c, "doc.txt", "annex's edit\n");
    write(&c, "gone.txt", "modified on the annex side\n");
    write(&c, "same.txt", "git-annex wrote that\n");
    write(&c, "fd/inner.txt", "a directory on the annex side\n");
    env.annex(
        &c,
        &["add", "--quiet", "doc.txt", "gone.txt", "same.txt", "fd"],
    )
    .assert_ok();
    write(&c, "mixed.dat", "plain git on the annex side\n");
    env.git(&c, &["add", "mixed.dat"]).assert_ok();
    env.git(
        &c,
        &[
            "-c",
            "annex.largefiles=nothing",
            "commit",
            "-qm",
            "annex side",
        ],
    )
    .assert_ok();

    for _ in 0..2 {
        env.ferry(&a, &["sync"]);
        env.annex(&c, &["sync", "--quiet"]);
    }
    env.ferry(&a, &["sync"]).assert_ok();
    let tree = |d: &Path| {
        env.git(d, &["ls-tree", "-r", "--name-only", "HEAD"])
            .stdout()
    };
    assert_eq!(tree(&a), tree(&c), "both clones end with the same tree");
    let names = tree(&a);
    assert!(
        !names.lines().any(|l| l == "doc.txt" || l == "same.txt"),
        "{names}"
    );
    assert_eq!(
        names
            .lines()
            .filter(|l| l.starts_with("doc.variant-"))
            .count(),
        2,
        "{names}"
    );
    assert_eq!(
        names
            .lines()
            .filter(|l| l.starts_with("same.variant-"))
            .count(),
        2,
        "{names}"
    );
    assert!(
        names.lines().any(|l| l == "mixed.dat"),
        "the non-annexed side keeps the name: {names}"
    );
    assert!(
        names.lines().any(|l| l.starts_with("mixed.variant-")),
        "{names}"
    );
    assert!(
        names.lines().any(|l| l.starts_with("gone.variant-")),
        "the modified side survives: {names}"
    );
    assert_eq!(
        std::fs::read_to_string(a.join("mixed.dat")).unwrap(),
        "plain git on the annex side\n"
    );
    // File against directory: the directory keeps the name, the file lives on as a variant of
    // the name git moved it aside to (ferry merged first, with the file on its side: `fd~HEAD`),
    // as git-annex names it, and nothing git moved aside is left in the work tree.
    assert!(names.lines().any(|l| l == "fd/inner.txt"), "{names}");
    assert!(
        names.lines().any(|l| is_variant_of(l, "fd~HEAD")),
        "{names}"
    );
    for d in [&a, &c] {
        let st = env.git(d, &["status", "--porcelain"]).stdout();
        assert_eq!(st, "", "{}: clean work tree", d.display());
    }
    env.annex(&a, &["fsck", "--fast", "--quiet"]).assert_ok();
    env.annex(&c, &["fsck", "--fast", "--quiet"]).assert_ok();
}

/// Names of every shape (dotfiles, a dotfile in a directory, several dots, a trailing dot, no
/// extension, a file in a dot-directory) changed on both sides: a ferry clone and a git-annex
/// clone each resolve the conflict on their own. ferry makes exactly the tree git-annex makes
/// from the same merge (checked against git-annex resolving a copy of the ferry clone), with
/// git-annex's variant names (`.hidden` → `.variant-XXXX.hidden`), and the same names as the
/// git-annex clone; after syncing both ways the trees are identical.
#[test]
fn conflicts_of_every_name_shape_get_git_annex_variant_names() {
    // Each name with the prefix and suffix git-annex 10 puts around the four hex digits.
    const SHAPES: [(&str, &str, &str); 8] = [
        (".hidden", ".variant-", ".hidden"),
        ("dir/.env.local", "dir/.env.variant-", ".local"),
        (".config.yml", ".config.variant-", ".yml"),
        ("..dots", "..variant-", ".dots"),
        ("a.tar.gz", "a.tar.variant-", ".gz"),
        ("trail.", "trail.variant-", "."),
        ("noext", "noext.variant-", ""),
        (".d/f", ".d/f.variant-", ""),
    ];
    let env = Env::new();
    let a = env.ferry_repo("a");
    env.git(&a, &["config", "annex.dotfiles", "true"])
        .assert_ok();
    for (f, _, _) in SHAPES {
        write(&a, f, format!("base {f}\n"));
    }
    env.ferry(&a, &["add"]).assert_ok();
    env.git(&a, &["commit", "-qm", "base"]).assert_ok();
    env.git(env.tmp.path(), &["clone", "-q", "a", "c"])
        .assert_ok();
    let c = env.path("c");
    env.annex(&c, &["init", "-q", "annex-clone"]).assert_ok();
    env.git(&c, &["config", "annex.dotfiles", "true"])
        .assert_ok();
    env.git(&a, &["remote", "add", "c", "../c"]).assert_ok();
    let files: Vec<&str> = SHAPES.iter().map(|(f, _, _)| *f).collect();
    for (f, _, _) in SHAPES {
        std::fs::remove_file(a.join(f)).unwrap();
        write(&a, f, format!("ferry's {f}\n"));
    }
    env.ferry(&a, &["add"]).assert_ok();
    env.git(&a, &["commit", "-qm", "ferry side"]).assert_ok();
    let mut unlock = vec!["unlock", "--quiet"];
    unlock.extend(&files);
    env.annex(&c, &unlock).assert_ok();
    for (f, _, _) in SHAPES {
        write(&c, f, format!("git-annex's {f}\n"));
    }
    let mut add = vec!["add", "--quiet"];
    add.extend(&files);
    env.annex(&c, &add).assert_ok();
    env.git(&c, &["commit", "-qm", "annex side"]).assert_ok();
    // Every key on each side, to check that no version is lost.
    let keys = |d: &Path| -> Vec<String> {
        env.ferry(d, &["whereis", "--json"])
            .json_lines()
            .iter()
            .map(|j| j["key"].as_str().unwrap().to_string())
            .collect()
    };
    let mut all_keys = keys(&a);
    all_keys.extend(keys(&c));
    assert_eq!(all_keys.len(), 2 * SHAPES.len(), "{all_keys:?}");

    // The git-annex clone's commit reaches the ferry clone (as its sync would push it); then
    // the git-annex clone pulls the ferry clone's commit and resolves, without pushing.
    env.git(&c, &["push", "-q", "origin", "main:synced/main"])
        .assert_ok();
    env.annex(&c, &["sync", "--quiet", "--no-push"]);
    assert_clean(&env, &c);

    // The ferry clone resolves on its own; git-annex resolves a copy of it: the oracle.
    resolves_as_git_annex_would(&env, &a, "ferry resolves to git-annex's tree");
    let names = head_names(&env, &a);
    assert_eq!(names, head_names(&env, &c), "the git-annex clone's names");
    for (f, prefix, suffix) in SHAPES {
        let variants = names
            .iter()
            .filter(|n| {
                n.strip_prefix(prefix)
                    .and_then(|r| r.strip_suffix(suffix))
                    .is_some_and(|h| h.len() == 4 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            })
            .count();
        assert_eq!(variants, 2, "{f} as {prefix}XXXX{suffix}: {names:?}");
    }
    assert_eq!(names.len(), 2 * SHAPES.len(), "{names:?}");
    assert_clean(&env, &a);
    env.git(&a, &["config", "--unset", "remote.c.annex-sync"])
        .assert_ok();

    // Both ways: the two resolutions agree, so nothing is renamed again.
    env.ferry(&a, &["sync"]).assert_ok();
    env.annex(&c, &["sync", "--quiet"]).assert_ok();
    env.ferry(&a, &["sync"]).assert_ok();
    assert_eq!(head_tree(&env, &a), head_tree(&env, &c), "identical trees");
    assert_eq!(head_names(&env, &a), names, "the same names");
    let mut kept = keys(&a);
    kept.sort();
    all_keys.sort();
    assert_eq!(kept, all_keys, "every version is kept");
    for d in [&a, &c] {
        assert_clean(&env, d);
    }
    env.annex(&a, &["fsck", "--fast", "--quiet"]).assert_ok();
    env.annex(&c, &["fsck", "--fast", "--quiet"]).assert_ok();
}

/// `ferry sync` in `dir` with `sshd`'s client settings, which must succeed; the logins it cost.
fn sync_over_ssh(env: &Env, sshd: &TestSshd, dir: &Path) -> usize {
    let before = sshd.logins();
    let mut c = env.cmd(dir, ferry_bin(), &["sync".as_ref(), "--json".as_ref()]);
    c.env("GIT_SSH_COMMAND", sshd.ssh_command());
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    sshd.logins() - before
}

/// Sync over ssh with a real sshd on loopback, to a bare hub and to a clone; one ssh connection
/// serves all of a sync's fetches and pushes to a host.
#[test]
fn sync_over_ssh_to_a_bare_hub_and_a_clone_shares_one_connection() {
    let env = Env::new();
    let sshd = TestSshd::start(&env);
    let a = env.ferry_repo("a");
    write(&a, "over-ssh.txt", "carried by ssh\n");
    env.ferry(&a, &["add"]).assert_ok();
    env.git(&a, &["commit", "-qm", "a"]).assert_ok();
    env.git(env.tmp.path(), &["init", "-q", "--bare", "hub.git"])
        .assert_ok();
    env.git(env.tmp.path(), &["clone", "-q", "a", "peer"])
        .assert_ok();
    let peer = env.path("peer");
    env.ferry(&peer, &["init", "peer"]).assert_ok();
    let url = |p: &str| format!("ssh://root@127.0.0.1{}", env.path(p).display());
    env.git(&a, &["remote", "add", "hub", &url("hub.git")])
        .assert_ok();
    env.git(&a, &["remote", "add", "peer", &url("peer")])
        .assert_ok();
    let used = sync_over_ssh(&env, &sshd, &a);
    // Two remotes on one host, each fetched and pushed: one login serves them all.
    assert_eq!(
        used, 1,
        "expected one shared ssh connection, saw {used} logins"
    );
    assert_eq!(
        env.git(&env.path("hub.git"), &["rev-parse", "main"])
            .stdout(),
        env.git(&a, &["rev-parse", "HEAD"]).stdout()
    );
    assert!(
        env.git(
            &env.path("hub.git"),
            &["rev-parse", "--verify", "git-annex"]
        )
        .ok()
    );
    assert_eq!(
        env.git(&peer, &["rev-parse", "synced/main"]).stdout(),
        env.git(&a, &["rev-parse", "HEAD"]).stdout()
    );
    // The clone picks up what arrived over ssh with a local sync.
    env.ferry(&peer, &["sync", "--no-commit"]);
    let w = env
        .ferry(&peer, &["whereis", "--json", "over-ssh.txt"])
        .json_lines();
    assert_eq!(
        w[0]["whereis"][0]["uuid"],
        config(&env, &a, "annex.uuid").as_str()
    );
}

/// A repository deep enough that `.git/annex/ssh/<hash>` is too long for a Unix socket (ssh
/// refuses to make the control socket and the whole connection fails): the sockets go to a
/// short private directory instead, the sync works and still uses one connection for its three
/// remotes on that host (the first fetched alone, opening it; the other two at once over it). The path
/// is chosen in the range that once broke (a directory of 55 bytes: short enough to be used,
/// too long for ssh's temporary socket name).
#[test]
fn sync_over_ssh_from_a_deep_path_still_shares_one_connection() {
    let env = Env::new();
    let sshd = TestSshd::start(&env);
    let tail = "/.git/annex/ssh".len() + 1;
    let base = env.tmp.path().as_os_str().len();
    assert!(
        base + tail + 8 <= 55,
        "temporary directory too long for this test"
    );
    let name = "d".repeat(55 - base - tail);
    let a = env.ferry_repo(&name);
    assert_eq!(a.join(".git/annex/ssh").as_os_str().len(), 55);
    add_committed(&env, &a, "deep.txt", "from deep\n");
    env.git(env.tmp.path(), &["init", "-q", "--bare", "hub.git"])
        .assert_ok();
    let hub = format!("ssh://root@127.0.0.1{}", env.path("hub.git").display());
    env.git(&a, &["remote", "add", "hub", &hub]).assert_ok();
    env.git(&a, &["remote", "add", "hub2", &hub]).assert_ok();
    env.git(&a, &["remote", "add", "hub3", &hub]).assert_ok();
    let used = sync_over_ssh(&env, &sshd, &a);
    assert_eq!(
        used, 1,
        "expected one shared ssh connection, saw {used} logins"
    );
    assert_eq!(
        env.git(&env.path("hub.git"), &["rev-parse", "synced/main"])
            .stdout(),
        env.git(&a, &["rev-parse", "HEAD"]).stdout()
    );
    // No socket was made in the repository's own directory.
    let in_repo = std::fs::read_dir(a.join(".git/annex/ssh"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(in_repo, 0);
}

/// `kill -9` at arbitrary points of a sync (mid-fetch, mid-merge, mid-push) leaves nothing that
/// blocks the next sync, which completes the work.
#[test]
fn syncs_killed_at_random_points_are_completed_by_the_next_one() {
    let env = Env::new();
    let a = env.ferry_repo("a");
    write(&a, "base.txt", "base\n");
    env.ferry(&a, &["add"]).assert_ok();
    env.git(&a, &["commit", "-qm", "base"]).assert_ok();
    let b = clone_b(&env);
    env.git(&a, &["remote", "add", "b", "../b"]).assert_ok();
    for round in 0..6u64 {
        // Conflicting work on both sides, so the sync has a merge with conflicts to resolve.
        for (d, who) in [(&a, "a"), (&b, "b")] {
            let p = d.join("base.txt");
            let _ = std::fs::remove_file(&p);
            write(d, "base.txt", format!("{who} round {round}\n"));
            write(d, format!("{who}-{round}.txt"), format!("{who} {round}\n"));
            env.ferry(d, &["add"]).assert_ok();
            env.git(d, &["commit", "-qm", &format!("{who} {round}")])
                .assert_ok();
        }
        env.ferry(&b, &["sync"]).assert_ok();
        let mut child = env
            .cmd(&a, ferry_bin(), &["sync".as_ref()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10 + round * 17 % 90));
        let kids = descendants(child.id());
        let _ = child.kill();
        let _ = child.wait();
        // The killed sync's git children finish on their own; wait for them.
        let gone = wait_until(std::time::Duration::from_secs(30), || {
            kids.iter().all(|p| {
                !Path::new(&format!("/proc/{p}")).exists()
                    || std::fs::read_to_string(format!("/proc/{p}/stat"))
                        .map(|s| s.contains(") Z"))
                        .unwrap_or(true)
            })
        });
        assert!(gone, "git processes of the killed sync did not finish");
        let r = env.ferry(&a, &["sync"]);
        assert!(
            r.ok(),
            "round {round}: the next sync must complete\n{}\n{}",
            r.stdout(),
            r.stderr()
        );
        env.ferry(&b, &["sync"]).assert_ok();
        env.ferry(&a, &["sync"]).assert_ok();
        assert_eq!(
            env.git(&a, &["rev-parse", "HEAD^{tree}"]).stdout(),
            env.git(&b, &["rev-parse", "HEAD^{tree}"]).stdout(),
            "round {round}"
        );
        assert!(!a.join(".git/MERGE_HEAD").exists());
    }
    env.git(&a, &["fsck", "--no-progress"]).assert_ok();
    env.annex(&a, &["fsck", "--fast", "--quiet"]).assert_ok();
}

#[test]
fn sync_bad_states_explain_themselves_and_an_empty_clone_takes_the_remote() {
    let env = Env::new();
    let a = env.ferry_repo("a");
    write(&a, "f", "x");
    env.ferry(&a, &["add"]).assert_ok();
    env.git(&a, &["commit", "-qm", "f"]).assert_ok();

    // A repository with no commits yet takes what the remote has.
    let e = env.mkdir("empty");
    env.git(&e, &["init", "-q", "-b", "main"]).assert_ok();
    env.ferry(&e, &["init"]).assert_ok();
    env.git(&e, &["remote", "add", "a", "../a"]).assert_ok();
    env.ferry(&e, &["sync"]).assert_ok();
    assert!(
        e.join("f")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // Detached HEAD: refused with what to do.
    let head = env
        .git(&a, &["rev-parse", "HEAD"])
        .stdout()
        .trim()
        .to_string();
    env.git(&a, &["checkout", "-q", &head]).assert_ok();
    let r = env.ferry(&a, &["sync"]);
    r.assert_fails();
    assert!(
        r.stderr().contains("detached") && r.stderr().contains("git switch"),
        "{}",
        r.stderr()
    );
    env.git(&a, &["checkout", "-q", "main"]).assert_ok();

    // Another git holds the index: the sync says so, and nothing is lost.
    write(&a, "g", "y");
    env.ferry(&a, &["add"]).assert_ok();
    std::fs::write(a.join(".git/index.lock"), "").unwrap();
    let r = env.ferry(&a, &["sync"]);
    r.assert_fails();
    assert!(r.stderr().contains("index.lock"), "{}", r.stderr());
    std::fs::remove_file(a.join(".git/index.lock")).unwrap();
    env.ferry(&a, &["sync"]).assert_ok();
    assert!(
        env.git(&a, &["ls-tree", "-r", "--name-only", "HEAD"])
            .stdout()
            .lines()
            .any(|l| l == "g")
    );

    // A merge someone started by hand is left alone, with advice.
    env.git(&a, &["checkout", "-q", "-b", "side", "HEAD~1"])
        .assert_ok();
    write(&a, "g", "conflicting plain file");
    env.git(&a, &["-c", "annex.largefiles=nothing", "add", "g"])
        .assert_ok();
    env.git(&a, &["commit", "-qm", "side"]).assert_ok();
    env.git(&a, &["checkout", "-q", "main"]).assert_ok();
    let _ = env.git(&a, &["merge", "-q", "side"]);
    assert!(a.join(".git/MERGE_HEAD").exists());
    let r = env.ferry(&a, &["sync"]);
    r.assert_fails();
    assert!(
        r.stderr().contains("merge is in progress"),
        "{}",
        r.stderr()
    );
    assert!(
        a.join(".git/MERGE_HEAD").exists(),
        "the user's merge is not touched"
    );
}

/// Someone else's push lands on the hub between our fetch and our push: the push is refused,
/// and sync fetches, merges and pushes again, ending with success and both changes everywhere.
#[test]
fn a_push_refused_because_the_hub_moved_is_merged_and_retried() {
    let env = Env::new();
    let a = env.ferry_repo("a");
    add_committed(&env, &a, "seed", "s");
    let hub = bare_remote(&env, &a, "hub");
    env.ferry(&a, &["sync"]).assert_ok();
    env.git(env.tmp.path(), &["clone", "-q", "hub.git", "c"])
        .assert_ok();
    let c = env.path("c");
    env.git(&c, &["checkout", "-q", "-B", "main", "origin/synced/main"])
        .assert_ok();
    env.ferry(&c, &["init", "c"]).assert_ok();
    // C's change waits on the hub under a side name...
    write(&c, "from-c", "c\n");
    env.ferry(&c, &["add"]).assert_ok();
    env.git(&c, &["commit", "-qm", "from c"]).assert_ok();
    env.git(&c, &["push", "-q", "origin", "HEAD:refs/heads/pending"])
        .assert_ok();
    // ...and a hook moves it into synced/main at the moment A's push arrives (once).
    install_hook(
        &hub,
        "pre-receive",
        "#!/bin/sh\ncat >/dev/null\n[ -e moved ] && exit 0\ntouch moved\nenv -u GIT_QUARANTINE_PATH git update-ref refs/heads/synced/main refs/heads/pending\n",
    );
    write(&a, "from-a", "a\n");
    env.ferry(&a, &["add"]).assert_ok();
    let r = env.ferry(&a, &["sync", "--json"]);
    r.assert_ok();
    assert!(
        hub.join("moved").exists(),
        "the hook ran: the race happened\n{}\n{}",
        r.stdout(),
        r.stderr()
    );
    // The hub's synced/main holds both changes, and A's tree has C's file.
    let files = env
        .git(
            &hub,
            &["ls-tree", "-r", "--name-only", "refs/heads/synced/main"],
        )
        .stdout();
    assert!(
        files.contains("from-a") && files.contains("from-c"),
        "{files}\n{}",
        r.stdout()
    );
    assert!(a.join("from-c").symlink_metadata().is_ok());
}

/// The hub's sync ref is locked by another push (a daemon's) at the moment ours arrives: sync
/// waits a moment and tries again, instead of failing (or retrying at once into the same lock).
#[test]
fn a_push_that_finds_the_ref_locked_by_another_push_waits_and_lands() {
    let env = Env::new();
    let a = env.ferry_repo("a");
    add_committed(&env, &a, "seed", "s");
    let hub = bare_remote(&env, &a, "hub");
    env.ferry(&a, &["sync"]).assert_ok();
    // Another push holds synced/main's lock for 0.6 s from the moment ours arrives (once).
    install_hook(
        &hub,
        "pre-receive",
        "#!/bin/sh\ncat >/dev/null\n[ -e held ] && exit 0\ntouch held\n: > refs/heads/synced/main.lock\n(sleep 0.6; rm -f refs/heads/synced/main.lock) >/dev/null 2>&1 &\n",
    );
    write(&a, "from-a", "a\n");
    env.ferry(&a, &["add"]).assert_ok();
    let r = env.ferry(&a, &["sync", "--json"]);
    assert!(
        hub.join("held").exists(),
        "the lock was held\n{}",
        r.stdout()
    );
    r.assert_ok();
    assert_eq!(
        env.git(&hub, &["rev-parse", "refs/heads/synced/main"])
            .stdout(),
        env.git(&a, &["rev-parse", "HEAD"]).stdout()
    );
    // A lock that stays (left by a killed git): the failure says what to do.
    std::fs::write(hub.join("refs/heads/synced/main.lock"), "").unwrap();
    add_committed(&env, &a, "later", "l\n");
    let r = env.ferry(&a, &["sync", "--json"]);
    r.assert_fails();
    let j = &r.json_lines()[0];
    let msg = j["remotes"][0]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("remove the stale <ref>.lock"), "{j}");
}

/// `git ls-tree -r HEAD`: every path with its mode and blob (for annexed files: link or pointer,
/// so the key), to compare whole trees.
/// Ferry clone `a` (remote `c`, the git-annex clone, left out) resolves the conflict of its
/// incoming `synced/main`; git-annex resolves a copy of `a` in the same state (the oracle):
/// the two trees must be the same.
fn resolves_as_git_annex_would(env: &Env, a: &Path, what: &str) {
    env.git(a, &["config", "remote.c.annex-sync", "false"])
        .assert_ok();
    let oracle = env.path("oracle");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(a)
        .arg(&oracle)
        .status()
        .unwrap();
    assert!(cp.success());
    env.annex(&oracle, &["sync", "--quiet"]);
    let r = env.ferry(a, &["sync", "--json"]);
    r.assert_ok();
    assert_eq!(
        r.json_lines()[0]["resolved"],
        serde_json::json!(["refs/heads/synced/main"])
    );
    assert_eq!(head_tree(env, a), head_tree(env, &oracle), "{what}");
}

fn head_tree(env: &Env, d: &Path) -> String {
    env.git(d, &["ls-tree", "-r", "HEAD"]).stdout()
}

fn head_names(env: &Env, d: &Path) -> std::collections::BTreeSet<String> {
    env.git(d, &["ls-tree", "-r", "--name-only", "HEAD"])
        .stdout()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Whether `name` is git-annex's variant of `of` (`dir/stem.variant-XXXX.ext`, four hex digits;
/// `dir/.variant-XXXX.name` for a dotfile).
fn is_variant_of(name: &str, of: &str) -> bool {
    let (dir, base) = of.rsplit_once('/').map_or(("", of), |(d, b)| (d, b));
    // Split as Haskell's `takeExtension` does: from the last dot, even a leading one.
    let (stem, ext) = base
        .rfind('.')
        .map_or((base, ""), |i| (&base[..i], &base[i..]));
    let prefix = if dir.is_empty() {
        format!("{stem}.variant-")
    } else {
        format!("{dir}/{stem}.variant-")
    };
    name.strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(ext))
        .is_some_and(|h| h.len() == 4 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The file side of a file/directory conflict: `x` locked, `u` unlocked, `sub/y.txt` locked (a
/// name with an extension, in a subdirectory), dotfiles `.dot` and `sub/.e.txt` locked (annexed:
/// `annex.dotfiles` is set); the directory side has a directory at each.
const FD_FILES: [&str; 5] = ["x", "u", "sub/y.txt", ".dot", "sub/.e.txt"];

fn make_file_side(env: &Env, d: &Path, ferry: bool) -> Vec<String> {
    env.git(d, &["config", "annex.dotfiles", "true"])
        .assert_ok();
    for f in FD_FILES {
        write(d, f, format!("the file {f}\n"));
    }
    if ferry {
        env.ferry(d, &["add"]).assert_ok();
        env.ferry(d, &["unlock", "u"]).assert_ok();
    } else {
        env.annex(d, &["add", "--quiet", "."]).assert_ok();
        env.annex(d, &["unlock", "--quiet", "u"]).assert_ok();
    }
    env.git(d, &["commit", "-qm", "files"]).assert_ok();
    let w = env.ferry(d, &["whereis", "--json"]).json_lines();
    FD_FILES
        .iter()
        .map(|f| {
            w.iter()
                .find(|j| j["file"] == *f)
                .unwrap_or_else(|| panic!("{f} is annexed: {w:?}"))["key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn make_dir_side(env: &Env, d: &Path, ferry: bool) {
    env.git(d, &["config", "annex.dotfiles", "true"])
        .assert_ok();
    for f in FD_FILES {
        write(
            d,
            format!("{f}/inner"),
            format!("inside the directory {f}\n"),
        );
    }
    if ferry {
        env.ferry(d, &["add"]).assert_ok();
    } else {
        env.annex(d, &["add", "--quiet", "."]).assert_ok();
    }
    env.git(d, &["commit", "-qm", "directories"]).assert_ok();
}

/// Asserts that `names` resolve the file/directory conflicts as git-annex does when the file
/// was moved aside under `aside` (`HEAD` or the flattened ref): every directory kept, each file
/// only as the variant of its moved-aside name, nothing else.
#[track_caller]
fn assert_resolved_as(names: &std::collections::BTreeSet<String>, aside: &str) {
    for f in FD_FILES {
        assert!(
            names.contains(&format!("{f}/inner")),
            "{f}/ kept: {names:?}"
        );
        let moved = format!("{f}~{aside}");
        let variants: Vec<&String> = names.iter().filter(|n| is_variant_of(n, &moved)).collect();
        assert_eq!(variants.len(), 1, "{f} as a variant of {moved}: {names:?}");
    }
    assert_eq!(names.len(), 1 + 2 * FD_FILES.len(), "{names:?}");
}

#[track_caller]
fn assert_clean(env: &Env, d: &Path) {
    let st = env.git(d, &["status", "--porcelain", "--ignored"]).stdout();
    assert_eq!(st, "", "{}: clean work tree", d.display());
}

/// A ferry clone and a git-annex clone on opposite sides of file/directory conflicts each
/// resolve them before seeing the other's resolution. Each makes exactly the tree git-annex
/// makes in its place (checked against git-annex resolving a copy of the ferry clone), and once
/// they sync both ways the trees are identical, every version is kept and no work tree holds
/// what git moved aside.
fn independent_file_directory_resolution(ferry_has_file: bool, ferry_merges_first: bool) {
    let env = Env::new();
    let a = env.ferry_repo("a");
    add_committed(&env, &a, "base.txt", "base\n");
    env.git(env.tmp.path(), &["clone", "-q", "a", "c"])
        .assert_ok();
    let c = env.path("c");
    env.annex(&c, &["init", "-q", "annex-clone"]).assert_ok();
    env.git(&a, &["remote", "add", "c", "../c"]).assert_ok();
    let keys = if ferry_has_file {
        make_dir_side(&env, &c, false);
        make_file_side(&env, &a, true)
    } else {
        make_dir_side(&env, &a, true);
        make_file_side(&env, &c, false)
    };

    // The git-annex clone's commit reaches the ferry clone (as its sync would push it); then
    // the git-annex clone pulls the ferry clone's commit and resolves, without pushing.
    env.git(&c, &["push", "-q", "origin", "main:synced/main"])
        .assert_ok();
    env.annex(&c, &["sync", "--quiet", "--no-push"]);
    let c_names = head_names(&env, &c);
    assert_resolved_as(
        &c_names,
        if ferry_has_file {
            "refs_remotes_origin_main"
        } else {
            "HEAD"
        },
    );
    assert_clean(&env, &c);

    // The ferry clone resolves what it has (not yet the git-annex clone's resolution); git-annex
    // resolves a copy of it in the same state: the oracle.
    resolves_as_git_annex_would(
        &env,
        &a,
        "ferry resolves file against directory to git-annex's tree",
    );
    let a_names = head_names(&env, &a);
    assert_resolved_as(
        &a_names,
        if ferry_has_file {
            "HEAD"
        } else {
            "refs_heads_synced_main"
        },
    );
    assert_clean(&env, &a);
    env.git(&a, &["config", "--unset", "remote.c.annex-sync"])
        .assert_ok();

    // Both ways, twice.
    for _ in 0..2 {
        if ferry_merges_first {
            env.ferry(&a, &["sync"]).assert_ok();
            env.annex(&c, &["sync", "--quiet"]).assert_ok();
        } else {
            env.annex(&c, &["sync", "--quiet"]).assert_ok();
            env.ferry(&a, &["sync"]).assert_ok();
        }
    }
    assert_eq!(head_tree(&env, &a), head_tree(&env, &c), "identical trees");
    let names = head_names(&env, &a);
    if ferry_merges_first {
        // ferry merges the two resolutions without rename detection: both variants stay.
        let both: std::collections::BTreeSet<String> = a_names.union(&c_names).cloned().collect();
        assert_eq!(names, both, "both resolutions, nothing renamed again");
    }
    // When git-annex merges the two resolutions first, its rename detection sees each file's
    // two variants as one file renamed two ways, and its resolution of that renames them again
    // (variants of variants), exactly as between two git-annex clones; ferry takes that tree
    // as it is (a fast-forward). The versions are all still there.
    let w = env.ferry(&a, &["whereis", "--json"]).json_lines();
    for k in &keys {
        assert!(
            w.iter().any(|j| j["key"] == *k),
            "the file's version {k} is still in the tree: {names:?}"
        );
    }
    for d in [&a, &c] {
        assert_clean(&env, d);
    }
    env.annex(&a, &["fsck", "--fast", "--quiet"]).assert_ok();
    env.annex(&c, &["fsck", "--fast", "--quiet"]).assert_ok();
}

#[test]
fn file_against_directory_resolved_independently_file_on_ferry_side() {
    independent_file_directory_resolution(true, true);
    independent_file_directory_resolution(true, false);
}

#[test]
fn file_against_directory_resolved_independently_file_on_git_annex_side() {
    independent_file_directory_resolution(false, true);
    independent_file_directory_resolution(false, false);
}

/// A ferry clone and a git-annex clone on the same side of file/directory conflicts each resolve
/// them on their own and make the same tree, so once everything syncs there is one variant per
/// file and no further conflict: the mixed network ends as an all-git-annex one does.
fn same_side_file_directory_resolution(file_side: bool) {
    let env = Env::new();
    let a = env.ferry_repo("a");
    add_committed(&env, &a, "base.txt", "base\n");
    env.git(env.tmp.path(), &["clone", "-q", "a", "c"])
        .assert_ok();
    let c = env.path("c");
    env.annex(&c, &["init", "-q", "other side"]).assert_ok();
    let mut keys = if file_side {
        make_file_side(&env, &a, true)
    } else {
        make_dir_side(&env, &a, true);
        Vec::new()
    };
    env.git(env.tmp.path(), &["clone", "-q", "a", "b"])
        .assert_ok();
    let b = env.path("b");
    env.annex(&b, &["init", "-q", "same side"]).assert_ok();
    if file_side {
        make_dir_side(&env, &c, false);
    } else {
        keys = make_file_side(&env, &c, false);
    }
    // The other side's commit reaches both (as its sync would push it); each resolves on its
    // own, before hearing of the other.
    for to in ["../a", "../b"] {
        env.git(&c, &["push", "-q", to, "main:synced/main"])
            .assert_ok();
    }
    let r = env.ferry(&a, &["sync", "--json"]);
    r.assert_ok();
    assert_eq!(
        r.json_lines()[0]["resolved"],
        serde_json::json!(["refs/heads/synced/main"])
    );
    env.git(&b, &["config", "remote.origin.annex-sync", "false"])
        .assert_ok();
    env.annex(&b, &["sync", "--quiet"]);
    env.git(&b, &["config", "--unset", "remote.origin.annex-sync"])
        .assert_ok();
    assert_eq!(
        head_tree(&env, &a),
        head_tree(&env, &b),
        "ferry and git-annex resolve the same merge to the same tree"
    );
    let aside = if file_side {
        "HEAD"
    } else {
        "refs_heads_synced_main"
    };
    assert_resolved_as(&head_names(&env, &a), aside);

    env.git(&a, &["remote", "add", "b", "../b"]).assert_ok();
    env.git(&a, &["remote", "add", "c", "../c"]).assert_ok();
    env.git(&b, &["remote", "add", "c", "../c"]).assert_ok();
    for _ in 0..2 {
        env.ferry(&a, &["sync"]).assert_ok();
        env.annex(&b, &["sync", "--quiet"]).assert_ok();
        env.annex(&c, &["sync", "--quiet"]).assert_ok();
    }
    let tree = head_tree(&env, &a);
    for d in [&b, &c] {
        assert_eq!(head_tree(&env, d), tree, "{}: the same tree", d.display());
    }
    assert_resolved_as(&head_names(&env, &a), aside);
    let w = env.ferry(&a, &["whereis", "--json"]).json_lines();
    for k in &keys {
        assert!(w.iter().any(|j| j["key"] == *k), "{k} kept: {tree}");
    }
    for d in [&a, &b, &c] {
        assert_clean(&env, d);
        env.annex(d, &["fsck", "--fast", "--quiet"]).assert_ok();
    }
}

#[test]
fn ferry_and_git_annex_on_the_file_side_resolve_file_against_directory_alike() {
    same_side_file_directory_resolution(true);
}

#[test]
fn ferry_and_git_annex_on_the_directory_side_resolve_file_against_directory_alike() {
    same_side_file_directory_resolution(false);
}

/// A file in git (not annexed) against a directory: git-annex does not resolve it (its sync
/// fails and leaves the merge to the user), nor does ferry, which undoes the merge and says so.
/// The copies git wrote while trying (`x~HEAD`) do not stay behind, so repeated attempts (the
/// daemon's) leave no pile of `x~HEAD_0`, `x~HEAD_1`…
#[test]
fn a_file_in_git_against_a_directory_is_left_to_the_user_without_debris() {
    let env = Env::new();
    let a = env.ferry_repo("a");
    add_committed(&env, &a, "base.txt", "base\n");
    env.git(env.tmp.path(), &["clone", "-q", "a", "c"])
        .assert_ok();
    let c = env.path("c");
    env.annex(&c, &["init", "-q", "annex-clone"]).assert_ok();
    env.git(&a, &["remote", "add", "c", "../c"]).assert_ok();
    write(&a, "x", "a small file in git\n");
    env.git(&a, &["add", "x"]).assert_ok();
    // In the same merge, an unlocked annexed file against a directory: resolvable alone, but
    // the merge as a whole is not.
    write(&a, "u", "an unlocked annexed file\n");
    env.ferry(&a, &["add", "u"]).assert_ok();
    env.ferry(&a, &["unlock", "u"]).assert_ok();
    env.git(&a, &["commit", "-qm", "x in git, u annexed"])
        .assert_ok();
    write(&c, "x/inner", "a directory on the annex side\n");
    write(&c, "u/inner", "another directory\n");
    env.annex(&c, &["add", "--quiet", "x", "u"]).assert_ok();
    env.git(&c, &["commit", "-qm", "directories"]).assert_ok();

    let head = env.git(&a, &["rev-parse", "HEAD"]).stdout();
    let attempt = |status: &str| {
        let r = env.ferry(&a, &["sync"]);
        r.assert_fails();
        assert!(r.stderr().contains("left to you"), "{}", r.stderr());
        assert_eq!(env.git(&a, &["rev-parse", "HEAD"]).stdout(), head);
        assert!(!a.join(".git/MERGE_HEAD").exists());
        assert_eq!(
            env.git(&a, &["status", "--porcelain", "--ignored"])
                .stdout(),
            status
        );
        assert_eq!(
            std::fs::read_to_string(a.join("x")).unwrap(),
            "a small file in git\n"
        );
        assert_eq!(
            std::fs::read_to_string(a.join("u")).unwrap(),
            "an unlocked annexed file\n"
        );
    };
    for _ in 0..3 {
        attempt("");
    }
    // A file of the user's with git's name for the copy is not git's copy: it stays.
    write(&a, "x~HEAD", "the user's own file of that name\n");
    attempt("?? x~HEAD\n");
    assert_eq!(
        std::fs::read_to_string(a.join("x~HEAD")).unwrap(),
        "the user's own file of that name\n"
    );
    // git-annex does not resolve it either.
    env.annex(&c, &["sync", "--quiet"]).assert_fails();
    assert!(
        !env.git(&c, &["ls-files", "-u"]).stdout().is_empty(),
        "git-annex leaves the conflict to the user"
    );
}

/// `ferry sync` in `dir` with `GIT_TRACE` on: its result and every git command it ran.
fn traced_sync(env: &Env, dir: &Path, trace: &str) -> (Run, String) {
    let file = env.path(trace);
    let _ = std::fs::remove_file(&file);
    let out = env
        .cmd(
            dir,
            ferry_bin(),
            &[OsStr::new("sync"), OsStr::new("--json")],
        )
        .env("GIT_TRACE", &file)
        .output()
        .unwrap();
    (
        Run { out },
        std::fs::read_to_string(&file).unwrap_or_default(),
    )
}

/// A clone `b` of ferry repository `a` (with a committed annexed file), synced once so that
/// b's remote-tracking refs are what `a` has: the state in which sync skips fetching `a`.
fn synced_pair(env: &Env) -> (PathBuf, PathBuf) {
    let a = env.ferry_repo("a");
    add_committed(env, &a, "seed", "s\n");
    let b = clone_b(env);
    env.ferry(&b, &["sync"]).assert_ok();
    (a, b)
}

#[test]
fn an_unchanged_local_remote_is_not_fetched_but_a_changed_one_is() {
    let env = Env::new();
    let (a, b) = synced_pair(&env);
    // Nothing changed in a: no fetch (and nothing to push either).
    let (r, trace) = traced_sync(&env, &b, "t1");
    r.assert_ok();
    assert!(!trace.contains("git fetch "), "{trace}");
    assert!(!trace.contains("git push "), "{trace}");
    assert!(!trace.contains("update-ref"), "{trace}");
    assert_eq!(r.json_lines()[0]["remotes"][0]["pulled"], "ok");
    // A change in a: fetched and merged.
    add_committed(&env, &a, "news", "n\n");
    let (r, trace) = traced_sync(&env, &b, "t2");
    r.assert_ok();
    assert!(trace.contains("git fetch "), "{trace}");
    assert!(b.join("news").symlink_metadata().is_ok());
}

#[test]
fn a_branch_moved_only_in_packed_refs_is_fetched() {
    let env = Env::new();
    let (a, b) = synced_pair(&env);
    // a's refs all packed (no loose files), then main moved by rewriting packed-refs alone.
    env.git(&a, &["pack-refs", "--all"]).assert_ok();
    assert!(!a.join(".git/refs/heads/main").exists());
    write(&a, "packed-news", "p\n");
    env.git(&a, &["add", "packed-news"]).assert_ok();
    let tree = env.git(&a, &["write-tree"]).stdout();
    let old = env.git(&a, &["rev-parse", "main"]).stdout();
    let new = env
        .git(
            &a,
            &["commit-tree", "-p", old.trim(), "-m", "packed", tree.trim()],
        )
        .stdout();
    let packed = std::fs::read_to_string(a.join(".git/packed-refs")).unwrap();
    let line = format!("{} refs/heads/main\n", old.trim());
    assert!(packed.contains(&line), "{packed}");
    std::fs::write(
        a.join(".git/packed-refs"),
        packed.replace(&line, &format!("{} refs/heads/main\n", new.trim())),
    )
    .unwrap();
    assert_eq!(env.git(&a, &["rev-parse", "main"]).stdout(), new);
    env.ferry(&b, &["sync"]).assert_ok();
    assert_eq!(
        env.git(&b, &["rev-parse", "refs/remotes/origin/main"])
            .stdout(),
        new
    );
    assert!(b.join("packed-news").exists(), "a's new commit is merged");
}

#[test]
fn a_new_branch_or_tag_or_a_deleted_branch_on_a_local_remote_is_fetched() {
    let env = Env::new();
    let (a, b) = synced_pair(&env);
    env.git(&a, &["branch", "feature"]).assert_ok();
    env.ferry(&b, &["sync"]).assert_ok();
    assert_eq!(
        env.git(&b, &["rev-parse", "refs/remotes/origin/feature"])
            .stdout(),
        env.git(&a, &["rev-parse", "feature"]).stdout()
    );
    env.git(&a, &["tag", "v1"]).assert_ok();
    env.ferry(&b, &["sync"]).assert_ok();
    assert_eq!(
        env.git(&b, &["rev-parse", "refs/tags/v1"]).stdout(),
        env.git(&a, &["rev-parse", "v1"]).stdout()
    );
    // A branch deleted there, with fetch.prune set here: fetched, so the stale ref goes.
    env.git(&a, &["branch", "-D", "feature"]).assert_ok();
    env.git(&b, &["config", "fetch.prune", "true"]).assert_ok();
    env.ferry(&b, &["sync"]).assert_ok();
    let left = env
        .git(&b, &["for-each-ref", "refs/remotes/origin/feature"])
        .stdout();
    assert_eq!(left, "", "pruned");
}

#[test]
fn a_remote_whose_sync_ref_went_back_is_pushed_again() {
    let env = Env::new();
    let (a, b) = synced_pair(&env);
    add_committed(&env, &b, "from-b", "b\n");
    env.ferry(&b, &["sync"]).assert_ok();
    let head = env.git(&b, &["rev-parse", "HEAD"]).stdout();
    assert_eq!(env.git(&a, &["rev-parse", "synced/main"]).stdout(), head);
    // Someone resets a's sync refs, one at a time: b has nothing new, yet pushes each again.
    let annex = env.git(&b, &["rev-parse", "git-annex"]).stdout();
    env.git(&a, &["update-ref", "-d", "refs/heads/synced/git-annex"])
        .assert_ok();
    env.ferry(&b, &["sync"]).assert_ok();
    assert_eq!(
        env.git(&a, &["rev-parse", "synced/git-annex"]).stdout(),
        annex
    );
    env.git(&a, &["update-ref", "refs/heads/synced/main", "main"])
        .assert_ok();
    env.ferry(&b, &["sync"]).assert_ok();
    assert_eq!(env.git(&a, &["rev-parse", "synced/main"]).stdout(), head);
}

/// Pushes to plain local clones and bare repositories are written straight in: the result is
/// what `git push` leaves (refs, reflogs, remote-tracking refs, a sound repository), without
/// running it; a remote with a hook still gets a real `git push`, so the hook runs.
#[test]
fn pushes_to_plain_local_remotes_match_git_push_and_hooks_still_run() {
    let env = Env::new();
    let (a, b) = synced_pair(&env);
    let hub = bare_remote(&env, &b, "hub");
    let hooked = bare_remote(&env, &b, "hooked");
    install_hook(&hooked, "post-receive", "#!/bin/sh\ncat >> received\n");
    // Both bare repositories keep reflogs, to compare what each way of pushing logs.
    for d in [&hub, &hooked] {
        env.git(d, &["config", "core.logAllRefUpdates", "true"])
            .assert_ok();
    }
    add_committed(&env, &b, "from-b", "b\n");
    let (r, trace) = traced_sync(&env, &b, "t1");
    r.assert_ok();
    let pushes: Vec<&str> = trace.lines().filter(|l| l.contains("git push ")).collect();
    assert!(
        pushes.len() == 1 && pushes[0].contains(" hooked "),
        "only the hooked remote is pushed with git push: {pushes:?}"
    );
    // Nor is git run to move refs or to find what to send: ferry does both itself.
    let helpers: Vec<&str> = trace
        .lines()
        .filter(|l| {
            l.contains("built-in: git update-ref -m")
                || l.contains("built-in: git rev-list --objects --ignore-missing")
                || l.contains("built-in: git merge-base --independent")
        })
        .collect();
    assert!(helpers.is_empty(), "{helpers:?}");
    let hooked_log = std::fs::read_to_string(hooked.join("received")).unwrap();
    assert!(
        hooked_log.contains("refs/heads/synced/main"),
        "{hooked_log}"
    );
    let rev = |d: &Path, r: &str| env.git(d, &["rev-parse", "--verify", "-q", r]).stdout();
    let (head, annex) = (rev(&b, "HEAD"), rev(&b, "git-annex"));
    for d in [&a, &hub, &hooked] {
        assert_eq!(rev(d, "refs/heads/synced/main"), head, "{}", d.display());
        assert_eq!(
            rev(d, "refs/heads/synced/git-annex"),
            annex,
            "{}",
            d.display()
        );
        assert_eq!(rev(d, "refs/heads/git-annex"), annex, "{}", d.display());
        env.git(d, &["fsck", "--strict", "--no-dangling"])
            .assert_ok();
    }
    // The checked-out branch of the non-bare clone is left alone (git refuses that push); the
    // bare repositories get it.
    assert_ne!(rev(&a, "refs/heads/main"), head);
    assert_eq!(rev(&hub, "refs/heads/main"), head);
    assert_eq!(rev(&hooked, "refs/heads/main"), head);
    // a keeps reflogs (a clone logs ref updates), as after a real push.
    let log = env
        .git(
            &a,
            &[
                "reflog",
                "show",
                "--format=%H %gs",
                "refs/heads/synced/main",
            ],
        )
        .stdout();
    assert!(log.starts_with(&format!("{} push", head.trim())), "{log}");
    // hub's reflogs (written by ferry) say what hooked's (written by git push) say, but for
    // the time: the same files, the same lines.
    let logs = |d: &Path| -> std::collections::BTreeMap<String, Vec<String>> {
        let mut out = std::collections::BTreeMap::new();
        let mut dirs = vec![d.join("logs")];
        while let Some(dir) = dirs.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    dirs.push(e.path());
                    continue;
                }
                let text = std::fs::read_to_string(e.path()).unwrap();
                let lines = text
                    .lines()
                    .map(|l| {
                        // "<old> <new> <name> <email> <time> <zone>\t<message>"
                        let (who, msg) = l.split_once('\t').unwrap_or((l, ""));
                        let parts: Vec<&str> = who.rsplitn(3, ' ').collect();
                        assert!(parts[1].parse::<u64>().is_ok(), "{l}");
                        format!("{}\t{msg}", parts[2])
                    })
                    .collect();
                let rel = e.path().strip_prefix(d).unwrap().display().to_string();
                out.insert(rel, lines);
            }
        }
        out
    };
    let hub_logs = logs(&hub);
    assert!(
        hub_logs.contains_key("logs/refs/heads/synced/main"),
        "{hub_logs:?}"
    );
    assert!(hub_logs.contains_key("logs/HEAD"), "{hub_logs:?}");
    assert_eq!(hub_logs, logs(&hooked));
    // Our remote-tracking refs follow, as after git push, with the same reflog lines.
    for remote in ["origin", "hub", "hooked"] {
        assert_eq!(
            rev(&b, &format!("refs/remotes/{remote}/synced/main")),
            head,
            "{remote}"
        );
    }
    let ours = logs(&b.join(".git"));
    for r in ["synced/main", "synced/git-annex", "git-annex", "main"] {
        assert_eq!(
            ours[&format!("logs/refs/remotes/hub/{r}")],
            ours[&format!("logs/refs/remotes/hooked/{r}")],
            "{r}"
        );
    }
    // a's work tree can take what b pushed.
    env.ferry(&a, &["sync"]).assert_ok();
    assert!(a.join("from-b").symlink_metadata().is_ok());
    env.annex(&a, &["fsck", "--fast", "--quiet"]).assert_ok();
}

/// A sync ref on the remote that is not behind ours (a conflict sync could not merge) is never
/// overwritten: the push is refused and reported, as with git push.
#[test]
fn a_sync_ref_that_is_not_behind_is_never_overwritten() {
    let env = Env::new();
    let (a, b) = synced_pair(&env);
    for (d, text) in [(&a, "a's line\n"), (&b, "b's line\n")] {
        write(d, "plain.txt", text);
        env.git(d, &["add", "plain.txt"]).assert_ok();
        env.git(d, &["commit", "-qm", text]).assert_ok();
    }
    env.git(&a, &["update-ref", "refs/heads/synced/main", "main"])
        .assert_ok();
    let theirs = env.git(&a, &["rev-parse", "synced/main"]).stdout();
    let r = env.ferry(&b, &["sync", "--json"]);
    r.assert_fails();
    let j = &r.json_lines()[0];
    assert_eq!(j["remotes"][0]["pushed"], "failed", "{j}");
    assert_eq!(env.git(&a, &["rev-parse", "synced/main"]).stdout(), theirs);
}

/// Two remotes, one a step ahead of the other; that step conflicts here with a file git-annex
/// does not resolve. The merge of the newer one is undone, and the older one, which it
/// contains, is still merged on its own.
#[test]
fn when_a_merge_is_undone_the_commits_it_contains_are_still_merged() {
    let env = Env::new();
    let a = env.ferry_repo("a");
    add_committed(&env, &a, "seed", "s\n");
    write(&a, "plain.txt", "base\n");
    env.git(&a, &["add", "plain.txt"]).assert_ok();
    env.git(&a, &["commit", "-qm", "plain"]).assert_ok();
    let b = clone_b(&env);
    add_committed(&env, &b, "from-b", "b\n");
    let older = env.git(&b, &["rev-parse", "HEAD"]).stdout();
    env.git(env.tmp.path(), &["clone", "-q", "b", "b2"])
        .assert_ok();
    let b2 = env.path("b2");
    env.ferry(&b2, &["init", "b2"]).assert_ok();
    write(&b2, "plain.txt", "b2's line\n");
    env.git(&b2, &["commit", "-qam", "b2"]).assert_ok();
    let newer = env.git(&b2, &["rev-parse", "HEAD"]).stdout();
    write(&a, "plain.txt", "a's line\n");
    env.git(&a, &["commit", "-qam", "a"]).assert_ok();
    env.git(&a, &["remote", "add", "b", "../b"]).assert_ok();
    env.git(&a, &["remote", "add", "b2", "../b2"]).assert_ok();
    let r = env.ferry(&a, &["sync", "--json"]);
    r.assert_fails();
    let is_ancestor = |c: &str| {
        env.git(&a, &["merge-base", "--is-ancestor", c.trim(), "HEAD"])
            .ok()
    };
    assert!(is_ancestor(&older), "b's commit is merged\n{}", r.stdout());
    assert!(!is_ancestor(&newer), "b2's conflicting one is not");
    assert!(a.join("from-b").symlink_metadata().is_ok());
    assert_eq!(
        std::fs::read_to_string(a.join("plain.txt")).unwrap(),
        "a's line\n"
    );
}

/// A bare hub whose branch went its own way (a commit that does not merge here): the sync ref
/// still lands there, and the branch is left as it is, as `git push` would leave it.
#[test]
fn a_diverged_branch_on_a_bare_remote_is_left_alone_while_the_sync_ref_lands() {
    let env = Env::new();
    let (a, b) = synced_pair(&env);
    write(&b, "plain.txt", "base\n");
    env.git(&b, &["add", "plain.txt"]).assert_ok();
    env.git(&b, &["commit", "-qm", "plain"]).assert_ok();
    let hub = bare_remote(&env, &b, "hub");
    env.ferry(&b, &["sync"]).assert_ok();
    // Someone pushes a conflicting main straight to the hub.
    env.git(env.tmp.path(), &["clone", "-q", "hub.git", "other"])
        .assert_ok();
    let other = env.path("other");
    env.git(&other, &["checkout", "-q", "main"]).assert_ok();
    write(&other, "plain.txt", "other's line\n");
    env.git(&other, &["commit", "-qam", "other"]).assert_ok();
    env.git(&other, &["push", "-q", "origin", "main"])
        .assert_ok();
    let theirs = env.git(&hub, &["rev-parse", "main"]).stdout();
    write(&b, "plain.txt", "b's line\n");
    env.git(&b, &["commit", "-qam", "b"]).assert_ok();
    add_committed(&env, &b, "more", "m\n");
    let (r, trace) = traced_sync(&env, &b, "t1");
    // The merge of the hub's main conflicts (not annexed): reported, undone.
    r.assert_fails();
    let j = &r.json_lines()[0];
    let hub_report = j["remotes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["remote"] == "hub")
        .unwrap()
        .clone();
    assert_eq!(hub_report["pushed"], "ok", "{j}");
    assert!(!trace.contains("git push "), "{trace}");
    let head = env.git(&b, &["rev-parse", "HEAD"]).stdout();
    assert_eq!(env.git(&hub, &["rev-parse", "synced/main"]).stdout(), head);
    assert_eq!(env.git(&hub, &["rev-parse", "main"]).stdout(), theirs);
    env.git(&hub, &["fsck", "--strict", "--no-dangling"])
        .assert_ok();
    let _ = a;
}

/// Every `*.lock` file under `dir` (a repository's `refs/`).
fn ref_locks(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension() == Some(OsStr::new("lock")) {
                out.push(p);
            }
        }
    }
    out
}

/// A sync killed while it holds ref locks (in a remote it writes into, then in this
/// repository, for the remote-tracking refs) leaves locks git would refuse to work past; the
/// next sync removes them, as the killed process noted them, and completes the push. The
/// sync is held at the right moment by a FIFO where it appends a reflog line: opening it
/// blocks after the locks are taken.
#[test]
fn a_sync_killed_holding_ref_locks_leaves_nothing_the_next_one_cannot_clear() {
    let env = Env::new();
    let a = env.ferry_repo("a");
    add_committed(&env, &a, "seed", "s\n");
    let b = clone_b(&env);
    env.git(&a, &["remote", "add", "b", "../b"]).assert_ok();
    env.ferry(&a, &["sync"]).assert_ok();
    let held = [
        // b's sync ref (b's locks), then our tracking ref of it (our locks).
        (b.join(".git"), "refs/heads/synced/main"),
        (a.join(".git"), "refs/remotes/b/synced/main"),
    ];
    for (round, (git_dir, name)) in held.iter().enumerate() {
        let log = git_dir.join("logs").join(name);
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&log);
        let made = std::process::Command::new("mkfifo")
            .arg(&log)
            .status()
            .unwrap();
        assert!(made.success());
        add_committed(&env, &a, &format!("new-{round}"), "n\n");
        let mut child = env
            .cmd(&a, ferry_bin(), &["sync".as_ref()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let lock = git_dir.join(format!("{name}.lock"));
        let took = wait_until(std::time::Duration::from_secs(20), || lock.exists());
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            took,
            "round {round}: the sync never took {}",
            lock.display()
        );
        assert!(
            lock.exists(),
            "round {round}: the killed sync left its lock"
        );
        std::fs::remove_file(&log).unwrap();

        let r = env.ferry(&a, &["sync", "--json"]);
        assert!(
            r.ok(),
            "round {round}: the next sync must clear the locks and push\n{}\n{}",
            r.stdout(),
            r.stderr()
        );
        let head = env.git(&a, &["rev-parse", "HEAD"]).stdout();
        for (dir, reference) in [
            (&b, "refs/heads/synced/main"),
            (&a, "refs/remotes/b/synced/main"),
        ] {
            assert_eq!(
                env.git(dir, &["rev-parse", reference]).stdout(),
                head,
                "round {round}"
            );
            let left = ref_locks(&dir.join(".git/refs"));
            assert!(left.is_empty(), "round {round}: locks left {left:?}");
        }
        env.git(&b, &["fsck", "--no-progress"]).assert_ok();
    }
}

/// A merge git refuses before starting (an untracked file here where the incoming commit has
/// one) is reported with the files git names and what to do, not with git's last line
/// ("Aborting") and advice about conflicts; once the file is moved away, the next sync merges.
#[test]
fn a_merge_refused_for_an_untracked_file_says_which_file_and_what_to_do() {
    let env = Env::new();
    let a = env.ferry_repo("a");
    add_committed(&env, &a, "seed", "s\n");
    let b = clone_b(&env);
    for d in [&a, &b] {
        env.git(d, &["config", "annex.largefiles", "nothing"])
            .assert_ok();
    }
    write(&a, "in-the-way.txt", "committed in a\n");
    env.git(&a, &["add", "in-the-way.txt"]).assert_ok();
    env.git(&a, &["commit", "-qm", "a file in git"]).assert_ok();
    write(&b, "in-the-way.txt", "untracked in b\n");
    let r = env.ferry(&b, &["sync", "--json"]);
    r.assert_fails();
    let j = &r.json_lines()[0];
    let msg = j["errors"][0].as_str().unwrap_or_default();
    assert!(
        msg.contains("refused by git") && msg.contains("in-the-way.txt"),
        "{j}"
    );
    assert!(msg.contains("move, commit or remove"), "{j}");
    assert!(!msg.contains("Aborting"), "{j}");
    assert_eq!(
        std::fs::read_to_string(b.join("in-the-way.txt")).unwrap(),
        "untracked in b\n"
    );
    std::fs::rename(b.join("in-the-way.txt"), b.join("moved.txt")).unwrap();
    env.ferry(&b, &["sync"]).assert_ok();
    assert_eq!(
        std::fs::read_to_string(b.join("in-the-way.txt")).unwrap(),
        "committed in a\n"
    );
}

/// What the git-annex assistant pushes when a normal push is refused: its branches into a
/// namespace of its own, `refs/synced/<uuid>/git-annex` and `refs/synced/<uuid>/<branch>` (or
/// `refs/synced/<uuid>/<base64>/<branch>`), which no other clone writes. `ferry sync` merges
/// both; a tagged push of another branch is left alone.
#[test]
fn tagged_pushes_of_the_git_annex_assistant_are_merged() {
    let env = Env::new();
    let a = env.ferry_repo("a");
    write(&a, "seed", "s");
    env.ferry(&a, &["add"]).assert_ok();
    env.git(&a, &["commit", "-qm", "seed"]).assert_ok();
    let branch = env.git(&a, &["symbolic-ref", "--short", "HEAD"]).stdout();
    let branch = branch.trim();
    let b = clone_b(&env);
    let ub = config(&env, &b, "annex.uuid");
    let tagged_push = |file: &str, to: &str| {
        write(&b, file, file);
        env.ferry(&b, &["add"]).assert_ok();
        env.git(&b, &["commit", "-qm", file]).assert_ok();
        tagged_push(&env, &b, to);
    };
    tagged_push("one", &format!("refs/synced/{ub}/{branch}"));
    env.ferry(&a, &["sync"]).assert_ok();
    assert!(a.join("one").symlink_metadata().is_ok(), "not merged");
    assert_eq!(holders(&env, &a, "one"), vec![ub.clone()]);

    tagged_push("two", &format!("refs/synced/{ub}/aW5mbw/{branch}"));
    env.git(&b, &["checkout", "-q", "-b", "elsewhere"])
        .assert_ok();
    tagged_push("three", &format!("refs/synced/{ub}/elsewhere"));
    env.ferry(&a, &["sync"]).assert_ok();
    assert!(
        a.join("two").symlink_metadata().is_ok(),
        "base64 form not merged"
    );
    assert!(
        a.join("three").symlink_metadata().is_err(),
        "another branch's tagged push was merged"
    );
    // git-annex reads the merged location log the same way.
    let w = env.annex(&a, &["whereis", "--json", "two"]).stdout();
    assert!(w.contains(&ub), "{w}");
}
