//! Content transfers between local-path remotes: get, copy, move, drop, with ferry and real
//! git-annex on either side.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// A ferry repository `a` with the given files added (locked) and committed.
fn ferry_origin(env: &Env, files: &[(&str, &[u8])]) -> PathBuf {
    let a = env.ferry_repo("a");
    for (name, content) in files {
        write(&a, name, content);
    }
    env.ferry(&a, &["add", "."]).assert_ok();
    env.git(&a, &["commit", "-qm", "files"]).assert_ok();
    a
}

/// `git clone src name` + `ferry init name`.
fn ferry_clone(env: &Env, src: &str, name: &str) -> PathBuf {
    env.git(env.tmp.path(), &["clone", "-q", src, name])
        .assert_ok();
    let d = env.path(name);
    env.ferry(&d, &["init", name]).assert_ok();
    d
}

fn uuid(env: &Env, d: &Path) -> String {
    config(env, d, "annex.uuid")
}

/// Object path of the file's key in a non-bare repository (following the symlink).
fn object_of(d: &Path, file: &str) -> PathBuf {
    let t = std::fs::read_link(d.join(file)).unwrap();
    d.join(file).parent().unwrap().join(t)
}

/// UUIDs git-annex itself says hold the file, from `git annex whereis --json`.
fn annex_whereis(env: &Env, d: &Path, file: &str) -> Vec<String> {
    let r = env.annex(d, &["whereis", "--json", file]);
    let v: serde_json::Value = serde_json::from_str(r.stdout().lines().next().expect("output"))
        .unwrap_or_else(|e| panic!("{e}: {}", r.stdout()));
    let mut u: Vec<String> = v["whereis"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["uuid"].as_str().unwrap().to_string())
        .collect();
    u.sort();
    u
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn tmp_files(d: &Path) -> Vec<String> {
    std::fs::read_dir(d.join(".git/annex/tmp"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn get_from_ferry_clone_and_copy_back_updates_both_logs() {
    let env = Env::new();
    let a = env.ferry_repo("a");
    write(&a, "doc.txt", "locked content\n");
    write(&a, "sub/u.txt", "unlocked content\n");
    env.ferry(&a, &["add", "doc.txt"]).assert_ok();
    env.ferry(&a, &["add", "--unlocked", "sub/u.txt"])
        .assert_ok();
    env.git(&a, &["commit", "-qm", "files"]).assert_ok();
    let b = ferry_clone(&env, "a", "b");
    let (ua, ub) = (uuid(&env, &a), uuid(&env, &b));

    // Content is not there yet.
    assert!(std::fs::metadata(b.join("doc.txt")).is_err());
    let r = env.ferry(&b, &["get", "--json"]);
    r.assert_ok();
    let lines = r.json_lines();
    assert_eq!(lines.len(), 2, "{}", r.stdout());
    for l in &lines {
        assert_eq!(l["command"], "get");
        assert_eq!(l["success"], true);
        assert_eq!(l["note"], "from origin");
        assert!(l["key"].as_str().unwrap().starts_with("SHA256E-"));
    }
    assert_eq!(
        std::fs::read(b.join("doc.txt")).unwrap(),
        b"locked content\n"
    );
    // The unlocked file was populated and git still sees it as unmodified.
    assert_eq!(
        std::fs::read(b.join("sub/u.txt")).unwrap(),
        b"unlocked content\n"
    );
    assert_eq!(
        env.git(&b, &["status", "--porcelain"]).stdout(),
        "",
        "populated unlocked file shows as modified"
    );
    // The object is frozen the way git-annex leaves it.
    use std::os::unix::fs::PermissionsExt;
    let obj = object_of(&b, "doc.txt");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&obj), 0o444);
    assert_eq!(mode(obj.parent().unwrap()), 0o555);
    // A second get has nothing to do and says nothing.
    let r = env.ferry(&b, &["get", "--json"]);
    r.assert_ok();
    assert_eq!(r.stdout(), "");

    // Both ferry and git-annex agree on where the content is, and git-annex's fsck is happy.
    let both = sorted(vec![ua.clone(), ub.clone()]);
    assert_eq!(annex_whereis(&env, &b, "doc.txt"), both);
    env.annex(&b, &["fsck"]).assert_ok();

    // New content in b goes back with copy --to; the receiving repository records it itself.
    add_committed(&env, &b, "new.bin", "from b\n");
    env.git(&a, &["remote", "add", "b", "../b"]).assert_ok();
    env.git(&a, &["fetch", "-q", "b"]).assert_ok();
    env.git(&a, &["merge", "-q", "b/main"]).assert_ok();
    let r = env.ferry(&b, &["copy", "--to", "origin", "--json", "new.bin"]);
    r.assert_ok();
    assert_eq!(r.json_lines()[0]["note"], "to origin");
    assert_eq!(std::fs::read(a.join("new.bin")).unwrap(), b"from b\n");
    assert_eq!(annex_whereis(&env, &b, "new.bin"), both);
    // a's own branch says a has it: a recorded that itself (b's branch, fetched into a before
    // the copy, only knew about b).
    assert_eq!(annex_whereis(&env, &a, "new.bin"), both);
    env.annex(&a, &["fsck", "new.bin"]).assert_ok();
    // Files whose content is not here are skipped quietly by copy --to.
    env.ferry(&b, &["drop", "doc.txt"]).assert_ok();
    let r = env.ferry(&b, &["copy", "--to", "origin", "--json", "doc.txt"]);
    r.assert_ok();
    assert_eq!(r.stdout(), "");
}

#[test]
fn git_annex_gets_from_a_ferry_repo() {
    let env = Env::new();
    let a = ferry_origin(&env, &[("f.txt", b"made by ferry\n")]);
    env.git(env.tmp.path(), &["clone", "-q", "a", "g"])
        .assert_ok();
    let g = env.path("g");
    env.annex(&g, &["init", "-q", "g"]).assert_ok();
    env.annex(&g, &["get", "f.txt"]).assert_ok();
    assert_eq!(std::fs::read(g.join("f.txt")).unwrap(), b"made by ferry\n");
    env.annex(&g, &["fsck", "f.txt"]).assert_ok();
    assert_eq!(
        annex_whereis(&env, &g, "f.txt"),
        sorted(vec![uuid(&env, &a), uuid(&env, &g)])
    );
}

#[test]
fn ferry_gets_from_a_git_annex_repo_and_copies_to_it() {
    let env = Env::new();
    let g = env.annex_repo("g");
    write(&g, "a.txt", "made by git-annex\n");
    env.annex(&g, &["add", "a.txt"]).assert_ok();
    env.git(&g, &["commit", "-qm", "a"]).assert_ok();
    let b = ferry_clone(&env, "g", "b");
    let r = env.ferry(&b, &["get", "a.txt", "--json"]);
    r.assert_ok();
    assert_eq!(r.json_lines()[0]["success"], true);
    assert_eq!(
        std::fs::read(b.join("a.txt")).unwrap(),
        b"made by git-annex\n"
    );
    let (ug, ub) = (uuid(&env, &g), uuid(&env, &b));
    let both = sorted(vec![ug.clone(), ub.clone()]);
    assert_eq!(annex_whereis(&env, &b, "a.txt"), both);
    env.annex(&b, &["fsck"]).assert_ok();

    // And the other way: ferry sends to the git-annex repository, which can verify it.
    add_committed(&env, &b, "b.txt", "made by ferry\n");
    env.ferry(&b, &["copy", "--to", "origin", "b.txt"])
        .assert_ok();
    env.git(&g, &["pull", "-q", "../b", "main"]).assert_ok();
    assert_eq!(std::fs::read(g.join("b.txt")).unwrap(), b"made by ferry\n");
    env.annex(&g, &["fsck", "b.txt"]).assert_ok();
    assert_eq!(annex_whereis(&env, &g, "b.txt"), vec![ug.clone()]);
    // git-annex can drop its copy because ferry's copy in b is lockable (LOCKCONTENT on a
    // local remote = shared lock on our content lock file).
    env.git(&g, &["remote", "add", "b", "../b"]).assert_ok();
    env.annex(&g, &["sync", "-q", "--no-push", "b"]).assert_ok();
    env.annex(&g, &["drop", "b.txt"]).assert_ok();
    assert!(std::fs::metadata(g.join("b.txt")).is_err());
}

#[test]
fn bare_remote_in_both_directions() {
    let env = Env::new();
    let a = ferry_origin(&env, &[("x.bin", b"bare content\n")]);
    env.git(env.tmp.path(), &["clone", "-q", "--bare", "a", "c.git"])
        .assert_ok();
    let c = env.path("c.git");
    env.annex(&c, &["init", "-q", "central"]).assert_ok();
    env.git(&a, &["remote", "add", "c", "../c.git"]).assert_ok();
    env.ferry(&a, &["copy", "--to", "c", "x.bin"]).assert_ok();
    // Bare repositories use the lower-case hash directories.
    let key = link_key(&a.join("x.bin"));
    let lower = env
        .annex(&a, &["examinekey", &key, "--format=${hashdirlower}"])
        .assert_ok()
        .stdout();
    let obj = c
        .join("annex/objects")
        .join(lower.trim())
        .join(&key)
        .join(&key);
    assert_eq!(std::fs::read(&obj).unwrap(), b"bare content\n");
    // A new clone of the bare repository gets the content from it.
    env.ferry(&a, &["sync"]).assert_ok();
    let d = ferry_clone(&env, "c.git", "d");
    env.ferry(&d, &["get", "x.bin"]).assert_ok();
    assert_eq!(std::fs::read(d.join("x.bin")).unwrap(), b"bare content\n");
    env.annex(&d, &["fsck", "x.bin"]).assert_ok();
    env.annex(&a, &["fsck", "--from", "c", "x.bin"]).assert_ok();
}

#[test]
fn corrupt_source_content_is_rejected() {
    let env = Env::new();
    let a = ferry_origin(&env, &[("f.txt", b"the real content\n")]);
    let b = ferry_clone(&env, "a", "b");
    // Same size, different bytes, in a's store.
    let obj = object_of(&a, "f.txt");
    let dir = obj.parent().unwrap();
    env.cmd(&a, "chmod", &["u+w".as_ref(), dir.as_os_str()])
        .status()
        .unwrap();
    std::fs::remove_file(&obj).unwrap();
    std::fs::write(&obj, b"the fake content\n").unwrap();
    let r = env.ferry(&b, &["get", "--json", "f.txt"]);
    r.assert_fails();
    let l = &r.json_lines()[0];
    assert_eq!(l["success"], false);
    let err = l["error"].as_str().unwrap();
    assert!(err.contains("corrupt"), "{err}");
    assert!(std::fs::metadata(b.join("f.txt")).is_err());
    assert!(
        std::fs::read_dir(b.join(".git/annex/objects"))
            .map(|mut d| d.next().is_none())
            .unwrap_or(true),
        "nothing may enter the store"
    );
    assert_eq!(tmp_files(&b), Vec::<String>::new());
    // A failed download is recorded the way git-annex records it.
    let failed = b
        .join(".git/annex/transfer/failed/download")
        .join(uuid(&env, &a))
        .join(link_key(&b.join("f.txt")));
    let rec = std::fs::read_to_string(&failed).unwrap();
    assert!(rec.ends_with("s\nf.txt\n"), "{rec:?}");
    // The human-readable error says what happened.
    let r = env.ferry(&b, &["get", "f.txt"]);
    r.assert_fails();
    assert!(r.stderr().contains("corrupt"), "{}", r.stderr());
}

#[test]
fn a_partial_download_is_resumed() {
    let env = Env::new();
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let a = ferry_origin(&env, &[("big.bin", &content)]);
    let b = ferry_clone(&env, "a", "b");
    let key = link_key(&b.join("big.bin"));
    let tmp = b.join(".git/annex/tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join(&key), &content[..1_000_000]).unwrap();
    let r = env.ferry(&b, &["get", "--json", "big.bin"]);
    r.assert_ok();
    let l = &r.json_lines()[0];
    assert_eq!(l["resumed_from"], 1_000_000, "{l}");
    assert_eq!(l["bytes"], 2_000_000);
    assert_eq!(std::fs::read(b.join("big.bin")).unwrap(), content);
    assert_eq!(tmp_files(&b), Vec::<String>::new());
    env.annex(&b, &["fsck", "big.bin"]).assert_ok();

    // A partial file that does not match the content is not trusted: the download restarts.
    env.ferry(&b, &["drop", "big.bin"]).assert_ok();
    std::fs::write(tmp.join(&key), vec![0u8; 500_000]).unwrap();
    let r = env.ferry(&b, &["get", "--json", "big.bin"]);
    r.assert_ok();
    let l = &r.json_lines()[0];
    assert!(l.get("resumed_from").is_none(), "{l}");
    assert_eq!(l["bytes"], 3_000_000);
    assert_eq!(std::fs::read(b.join("big.bin")).unwrap(), content);
    let _ = a;
}

#[test]
fn drop_needs_a_verified_copy_elsewhere() {
    let env = Env::new();
    let a = ferry_origin(&env, &[("f.txt", b"precious\n")]);
    // The only copy is never dropped.
    let r = env.ferry(&a, &["drop", "f.txt"]);
    r.assert_fails();
    assert!(r.stderr().contains("unsafe to drop"), "{}", r.stderr());
    assert!(object_of(&a, "f.txt").exists());

    let b = ferry_clone(&env, "a", "b");
    env.ferry(&b, &["get", "f.txt"]).assert_ok();
    // The other copy's repository is not reachable: it does not count.
    std::fs::rename(&a, env.path("a-away")).unwrap();
    let r = env.ferry(&b, &["drop", "--json", "f.txt"]);
    r.assert_fails();
    let err = r.json_lines()[0]["error"].as_str().unwrap().to_string();
    assert!(err.contains("unsafe to drop"), "{err}");
    assert!(err.contains("origin is not available"), "{err}");
    assert_eq!(std::fs::read(b.join("f.txt")).unwrap(), b"precious\n");
    // Reachable again: the copy is verified (locked) and the drop goes ahead.
    std::fs::rename(env.path("a-away"), &a).unwrap();
    let r = env.ferry(&b, &["drop", "--json", "f.txt"]);
    r.assert_ok();
    assert_eq!(r.json_lines()[0]["success"], true);
    assert!(std::fs::metadata(b.join("f.txt")).is_err());
    assert_eq!(annex_whereis(&env, &b, "f.txt"), vec![uuid(&env, &a)]);
    env.annex(&b, &["fsck", "f.txt"]).assert_ok();

    // A copy in an untrusted repository does not count; a trusted one counts unchecked.
    env.ferry(&b, &["get", "f.txt"]).assert_ok();
    env.annex(&b, &["untrust", "origin"]).assert_ok();
    let r = env.ferry(&b, &["drop", "f.txt"]);
    r.assert_fails();
    assert!(r.stderr().contains("untrusted"), "{}", r.stderr());
    env.annex(&b, &["trust", "--force", "origin"]).assert_ok();
    std::fs::rename(&a, env.path("a-away")).unwrap();
    env.ferry(&b, &["drop", "f.txt"]).assert_ok();
    std::fs::rename(env.path("a-away"), &a).unwrap();

    // drop --from: b has it again, so a's copy may go; a's own log records that.
    env.annex(&b, &["semitrust", "origin"]).assert_ok();
    env.ferry(&b, &["get", "f.txt"]).assert_ok();
    env.ferry(&b, &["drop", "--from", "origin", "f.txt"])
        .assert_ok();
    assert!(std::fs::metadata(a.join("f.txt")).is_err());
    assert_eq!(annex_whereis(&env, &a, "f.txt"), Vec::<String>::new());
    assert_eq!(annex_whereis(&env, &b, "f.txt"), vec![uuid(&env, &b)]);
}

#[test]
fn numcopies_two_is_honoured() {
    let env = Env::new();
    let a = ferry_origin(&env, &[("f.txt", b"two copies\n")]);
    let b = ferry_clone(&env, "a", "b");
    env.ferry(&b, &["get", "f.txt"]).assert_ok();
    env.ferry(&b, &["numcopies", "2"]).assert_ok();
    assert_eq!(env.ferry(&b, &["numcopies"]).stdout().trim(), "2");
    // git-annex reads the same setting.
    assert!(
        env.annex(&b, &["numcopies"]).stdout().contains('2'),
        "git-annex does not see numcopies 2"
    );
    env.ferry(&b, &["mincopies", "2"]).assert_ok();
    assert!(
        env.annex(&b, &["mincopies"]).stdout().contains('2'),
        "git-annex does not see mincopies 2"
    );
    let r = env.ferry(&b, &["drop", "f.txt"]);
    r.assert_fails();
    assert!(r.stderr().contains("numcopies is 2"), "{}", r.stderr());
    assert!(b.join("f.txt").exists());
    // A third copy, reachable from b, makes the drop safe.
    let c = ferry_clone(&env, "a", "c");
    env.ferry(&c, &["get", "f.txt"]).assert_ok();
    env.git(&b, &["remote", "add", "c", "../c"]).assert_ok();
    env.git(&b, &["fetch", "-q", "c"]).assert_ok();
    env.ferry(&b, &["sync"]).assert_ok();
    env.ferry(&b, &["drop", "f.txt"]).assert_ok();
    assert!(std::fs::metadata(b.join("f.txt")).is_err());
    let _ = a;
}

/// Whether process `pid` has `path` open.
fn has_open(pid: u32, path: &Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.flatten()
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == path))
        })
        .unwrap_or(false)
}

#[test]
fn a_running_transfer_is_not_started_twice() {
    let env = Env::new();
    let content = vec![42u8; 4_000_000];
    let a = ferry_origin(&env, &[("big.bin", &content)]);
    let b = ferry_clone(&env, "a", "b");
    let key = link_key(&b.join("big.bin"));
    let dir = b.join(".git/annex/transfer/download").join(uuid(&env, &a));
    std::fs::create_dir_all(&dir).unwrap();
    let lck = dir.join(format!("lck.{key}"));
    // Another program (git-annex uses POSIX fcntl locks, as python's lockf does) is running
    // this download.
    let mut holder = std::process::Command::new("python3")
        .arg("-c")
        .arg("import fcntl,sys\nf=open(sys.argv[1],'w')\nfcntl.lockf(f,fcntl.LOCK_EX)\nprint('locked',flush=True)\nsys.stdin.read()")
        .arg(&lck)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(holder.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
    }
    let spawn = || {
        env.cmd(
            &b,
            ferry_bin(),
            &["get".as_ref(), "--json".as_ref(), "big.bin".as_ref()],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let g1 = spawn();
    let g2 = spawn();
    let lck_canon = lck.canonicalize().unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || has_open(g1.id(), &lck_canon)
            && has_open(g2.id(), &lck_canon)),
        "both gets should be waiting on the transfer lock"
    );
    // Both are waiting: nothing has been transferred while the other transfer runs.
    assert!(tmp_files(&b).is_empty(), "{:?}", tmp_files(&b));
    assert!(!dir.join(&key).exists(), "no info file while not running");
    drop(holder.stdin.take());
    holder.wait().unwrap();
    let o1 = g1.wait_with_output().unwrap();
    let o2 = g2.wait_with_output().unwrap();
    assert!(o1.status.success() && o2.status.success());
    for o in [&o1, &o2] {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("already running"), "{err}");
    }
    let bytes: u64 = [o1, o2]
        .iter()
        .flat_map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["bytes"]
                        .as_u64()
                        .unwrap()
                })
                .collect::<Vec<_>>()
        })
        .sum();
    assert_eq!(
        bytes, 4_000_000,
        "the content must be transferred exactly once"
    );
    assert_eq!(std::fs::read(b.join("big.bin")).unwrap(), content);
    // Info and lock files are gone.
    assert!(!dir.join(&key).exists());
    assert!(!lck.exists());
}

#[test]
fn git_annex_sees_a_running_get_and_a_killed_get_resumes() {
    let env = Env::new();
    // Written in chunks: a 150 MB buffer in this (shared) test process would show up in the
    // peak RSS of children other tests fork meanwhile.
    let a = env.ferry_repo("a");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(a.join("big.bin")).unwrap());
        let chunk: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        for _ in 0..150 {
            f.write_all(&chunk).unwrap();
        }
        f.flush().unwrap();
    }
    env.ferry(&a, &["add", "big.bin"]).assert_ok();
    env.git(&a, &["commit", "-qm", "big"]).assert_ok();
    let b = ferry_clone(&env, "a", "b");
    let key = link_key(&b.join("big.bin"));
    let info = b
        .join(".git/annex/transfer/download")
        .join(uuid(&env, &a))
        .join(&key);
    let tmp = b.join(".git/annex/tmp").join(&key);
    let mut child = env
        .cmd(&b, ferry_bin(), &["get".as_ref(), "big.bin".as_ref()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    // Pause ferry as soon as its transfer is registered (info file written, lock held).
    assert!(wait_until(Duration::from_secs(60), || info.exists()));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let paused_mid_transfer = info.exists()
        && std::fs::metadata(&tmp).map_or(0, |m| m.len()) < 150_000_000
        && !has_key(&b, &key);
    if paused_mid_transfer {
        // git-annex's format: "<started>s[ <bytes>]\n<file>\n".
        let s = std::fs::read_to_string(&info).unwrap();
        let mut lines = s.lines();
        let first = lines.next().unwrap();
        let ts = first.split(' ').next().unwrap();
        assert!(
            ts.ends_with('s') && ts[..ts.len() - 1].parse::<f64>().is_ok(),
            "{s:?}"
        );
        assert_eq!(lines.next(), Some("big.bin"));
        assert!(s.ends_with('\n'));
        // git-annex parses the info file: it lists the transfer as in progress.
        let r = env.annex(&b, &["info", "--json", "--fast"]);
        let v: serde_json::Value = serde_json::from_str(r.stdout().trim()).unwrap();
        let running = v["transfers in progress"].as_array().unwrap();
        assert_eq!(running.len(), 1, "{v}");
        assert_eq!(running[0]["file"], "big.bin");
        assert_eq!(running[0]["key"], key.as_str());
        assert_eq!(running[0]["transfer"], "download");
        assert_eq!(running[0]["remote"], uuid(&env, &a).as_str());
        // ferry transfers lists it too, by file, remote and key.
        let r = env.ferry(&b, &["transfers", "--json"]);
        r.assert_ok();
        let v: serde_json::Value = serde_json::from_str(r.stdout().trim()).unwrap();
        let running = v["running"].as_array().unwrap();
        assert_eq!(running.len(), 1, "{v}");
        assert_eq!(running[0]["file"], "big.bin");
        assert_eq!(running[0]["key"], key.as_str());
        assert_eq!(running[0]["direction"], "download");
        assert_eq!(running[0]["remote"], "origin");
        assert_eq!(running[0]["size"], 150_000_000);
        assert!(v["daemon"].is_null(), "no assistant runs here: {v}");
        let text = env.ferry(&b, &["transfers"]).stdout();
        assert!(text.contains("download big.bin from origin"), "{text}");
        // git-annex sees the transfer running and does not start it again.
        let r = env.annex(&b, &["get", "--json", "big.bin"]);
        assert!(
            !r.ok(),
            "git-annex must not run the same download: {}",
            r.stdout()
        );
        let theirs = r.stdout() + &r.stderr();
        assert!(theirs.contains("transfer already in progress"), "{theirs}");
    }
    assert!(
        paused_mid_transfer,
        "ferry finished before it could be paused"
    );
    // Let it copy some bytes, then interrupt it (^C): it stops cleanly, keeps the partial
    // file, removes its info and lock files and records the failure, as git-annex does.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(wait_until(Duration::from_secs(60), || {
        std::fs::metadata(&tmp).is_ok_and(|m| m.len() >= 1 << 20)
    }));
    unsafe { libc::kill(pid, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let first = std::fs::metadata(&tmp).unwrap().len();
    assert!(first < 150_000_000, "interrupted too late");
    assert!(!info.exists());
    assert!(!info.with_file_name(format!("lck.{key}")).exists());
    let failed = b
        .join(".git/annex/transfer/failed/download")
        .join(uuid(&env, &a))
        .join(&key);
    assert!(failed.exists());
    // Again, and this time kill it outright: the partial file and a stale info file stay.
    let mut child = env
        .cmd(&b, ferry_bin(), &["get".as_ref(), "big.bin".as_ref()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(60), || {
        std::fs::metadata(&tmp).is_ok_and(|m| m.len() >= first + (1 << 20))
    }));
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    child.wait().unwrap();
    assert!(info.exists(), "a killed transfer leaves its info file");
    let partial = std::fs::metadata(&tmp).unwrap().len();
    assert!(partial < 150_000_000, "killed too late");
    assert!(!has_key(&b, &key));
    // The next get resumes where the killed one stopped, despite its stale info file.
    let r = env.ferry(&b, &["get", "--json", "big.bin"]);
    r.assert_ok();
    let l = &r.json_lines()[0];
    let resumed = l["resumed_from"].as_u64().unwrap();
    assert!(resumed >= 1 << 20 && resumed <= partial, "{l}");
    assert_eq!(l["bytes"].as_u64().unwrap(), 150_000_000 - resumed);
    assert!(!info.exists());
    assert!(!failed.exists(), "a success clears the failure record");
    env.annex(&b, &["fsck", "big.bin"]).assert_ok();
}

#[test]
fn keys_with_slashes_and_dots_never_escape_the_store() {
    let env = Env::new();
    let g = env.annex_repo("g");
    let evil_key = "WORM-s6-m1--../../../escaped";
    write(&g, "payload", "pwned\n");
    env.annex(&g, &["setkey", evil_key, "payload"]).assert_ok();
    env.annex(&g, &["fromkey", "--force", evil_key, "evil"])
        .assert_ok();
    env.git(&g, &["commit", "-qm", "evil"]).assert_ok();
    let b = ferry_clone(&env, "g", "b");
    let r = env.ferry(&b, &["get", "--json", "evil"]);
    r.assert_ok();
    assert_eq!(std::fs::read(b.join("evil")).unwrap(), b"pwned\n");
    // The object is inside the store, under the escaped name.
    let obj = object_of(&b, "evil").canonicalize().unwrap();
    assert!(
        obj.starts_with(b.join(".git/annex/objects").canonicalize().unwrap()),
        "{}",
        obj.display()
    );
    assert!(
        obj.to_string_lossy()
            .ends_with("WORM-s6-m1--..%..%..%escaped")
    );
    for p in [
        env.path("escaped"),
        b.join("escaped"),
        b.join(".git/escaped"),
        b.join(".git/annex/escaped"),
        env.tmp.path().parent().unwrap().join("escaped"),
    ] {
        assert!(!p.exists(), "{} was written", p.display());
    }
    env.annex(&b, &["fsck", "evil"]).assert_ok();
}

#[test]
fn move_and_parallel_copies() {
    let env = Env::new();
    let mut files: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("d/f{i}.txt"), format!("file {i}\n").into_bytes()))
        .collect();
    // Same content as f5: one key, one transfer.
    files.push(("d/same-as-f5.txt".into(), b"file 5\n".to_vec()));
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_slice()))
        .collect();
    let a = ferry_origin(&env, &refs);
    let b = ferry_clone(&env, "a", "b");
    let r = env.ferry(
        &b.join("d"),
        &["copy", "--from", "origin", "-J", "3", "--json"],
    );
    r.assert_ok();
    assert_eq!(r.json_lines().len(), 6, "{}", r.stdout());
    assert!(!r.stderr().contains("waiting"), "{}", r.stderr());
    for (n, c) in &files {
        assert_eq!(&std::fs::read(b.join(n)).unwrap(), c);
    }
    // move --to: the content leaves b once it is safely in a (a already has it: b just drops).
    let r = env.ferry(&b, &["move", "--to", "origin", "--json", "d/f0.txt"]);
    r.assert_ok();
    assert!(std::fs::metadata(b.join("d/f0.txt")).is_err());
    // move --from: content comes to b and leaves a.
    let r = env.ferry(&b, &["move", "--from", "origin", "--json", "d/f1.txt"]);
    r.assert_ok();
    assert_eq!(std::fs::read(b.join("d/f1.txt")).unwrap(), b"file 1\n");
    assert!(std::fs::metadata(a.join("d/f1.txt")).is_err());
    assert_eq!(annex_whereis(&env, &b, "d/f1.txt"), vec![uuid(&env, &b)]);
    // Not enough room (annex.diskreserve): refused before anything is written.
    env.ferry(&b, &["drop", "d/f3.txt"]).assert_ok();
    env.git(&b, &["config", "annex.diskreserve", "100000 terabytes"])
        .assert_ok();
    let r = env.ferry(&b, &["get", "d/f3.txt"]);
    r.assert_fails();
    assert!(
        r.stderr().contains("not enough free space"),
        "{}",
        r.stderr()
    );
    assert!(tmp_files(&b).is_empty());
    env.git(&b, &["config", "--unset", "annex.diskreserve"])
        .assert_ok();
    env.ferry(&b, &["get", "d/f3.txt"]).assert_ok();
    // A move that would leave too few copies sends the content but keeps the source copy.
    env.ferry(&b, &["numcopies", "2"]).assert_ok();
    let r = env.ferry(&b, &["move", "--from", "origin", "d/f4.txt"]);
    r.assert_fails();
    assert!(
        r.stderr()
            .contains("the content is here now, but the copy in origin was kept"),
        "{}",
        r.stderr()
    );
    assert!(a.join("d/f4.txt").exists() && b.join("d/f4.txt").exists());
    env.ferry(&b, &["numcopies", "1"]).assert_ok();
    // A read-only remote is never written to.
    env.git(&b, &["config", "remote.origin.annex-readonly", "true"])
        .assert_ok();
    let r = env.ferry(&b, &["copy", "--to", "origin", "d/f0.txt"]);
    r.assert_fails();
    assert!(r.stderr().contains("read-only"), "{}", r.stderr());
    let r = env.ferry(&b, &["drop", "--from", "origin", "d/f2.txt"]);
    r.assert_fails();
    assert!(a.join("d/f2.txt").exists());
    env.git(&b, &["config", "--unset", "remote.origin.annex-readonly"])
        .assert_ok();
    // A remote that does not exist is a clear error.
    let r = env.ferry(&b, &["copy", "--to", "nowhere"]);
    r.assert_fails();
    assert!(r.stderr().contains("no remote named"), "{}", r.stderr());
}

#[test]
fn sync_content_floods_every_reachable_remote() {
    let env = Env::new();
    let a = ferry_origin(&env, &[("fa.txt", b"from a\n")]);
    let b = ferry_clone(&env, "a", "b");
    let c = ferry_clone(&env, "a", "c");
    add_committed(&env, &b, "fb.txt", "from b\n");
    add_committed(&env, &c, "fc.txt", "from c\n");
    env.git(&b, &["remote", "add", "c", "../c"]).assert_ok();
    // A remote that is not there is skipped, not fatal for the content part.
    env.git(&b, &["remote", "add", "gone", "../gone"])
        .assert_ok();
    let r = env.ferry(&b, &["sync", "--content", "-J", "2"]);
    let out = r.stdout();
    assert!(out.contains("get fa.txt (from origin) ok"), "{out}");
    assert!(out.contains("get fc.txt (from c) ok"), "{out}");
    assert!(out.contains("copy fb.txt (to origin) ok"), "{out}");
    let keys: Vec<String> = ["fa.txt", "fb.txt", "fc.txt"]
        .iter()
        .map(|f| link_key(&b.join(f)))
        .collect();
    for (name, d) in [("a", &a), ("b", &b), ("c", &c)] {
        for k in &keys {
            assert!(has_key(d, k), "{name} lacks {k}\n{out}");
        }
    }
    // The location logs say so too, as git-annex reads them in b (pushed to a and c).
    let all = sorted(vec![uuid(&env, &a), uuid(&env, &b), uuid(&env, &c)]);
    for f in ["fa.txt", "fb.txt", "fc.txt"] {
        assert_eq!(annex_whereis(&env, &b, f), all, "{f}");
    }
    env.annex(&b, &["fsck", "--fast"]).assert_ok();
    // A second run has nothing to move.
    let r = env.ferry(&b, &["sync", "--content", "--json"]);
    let moved: Vec<_> = r
        .json_lines()
        .into_iter()
        .filter(|l| l["command"] == "get" || l["command"] == "copy")
        .collect();
    assert!(moved.is_empty(), "{moved:?}");
}

/// `n` bytes of content that differs by `seed`.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

/// Asserts that moving `bytes` took as long as a limit of `limit` bytes per second says: a
/// limit is an upper bound, so never more than 10% faster; a busy machine may be slower, but
/// not by half.
#[track_caller]
fn assert_limited(what: &str, took: Duration, bytes: u64, limit: u64) {
    let expected = bytes as f64 / limit as f64;
    let secs = took.as_secs_f64();
    let rate = bytes as f64 / secs;
    assert!(
        secs >= 0.9 * expected,
        "{what}: {secs:.3} s, expected {expected:.3} s"
    );
    assert!(
        rate <= 1.1 * limit as f64,
        "{what}: {rate:.0} B/s over a limit of {limit} B/s"
    );
    assert!(
        secs <= 1.5 * expected,
        "{what}: {secs:.3} s, far slower than the {expected:.3} s expected"
    );
}

#[test]
fn a_bandwidth_limit_holds_a_20_mib_copy_and_get() {
    // 20 MiB at 10 MiB/s: 2 s each way, the upload held by the remote's limit, the download by
    // the global one.
    const SIZE: usize = 20 << 20;
    const LIMIT: u64 = 10 << 20;
    let env = Env::new();
    let a = ferry_origin(&env, &[("big.bin", &pattern(SIZE, 1))]);
    let key = link_key(&a.join("big.bin"));
    let b = ferry_clone(&env, "a", "b");
    let c = ferry_clone(&env, "a", "c");
    env.git(&a, &["remote", "add", "b", "../b"]).assert_ok();
    env.git(&a, &["config", "remote.b.annex-bwlimit", "10MiB"])
        .assert_ok();
    env.git(&c, &["config", "annex.bwlimit", "10 MiB"])
        .assert_ok();
    let timed = |dir: &Path, args: &[&str]| {
        let t0 = std::time::Instant::now();
        env.ferry(dir, args).assert_ok();
        t0.elapsed()
    };
    let up = timed(&a, &["copy", "--to", "b", "big.bin"]);
    assert!(has_key(&b, &key));
    let down = timed(&c, &["get", "big.bin"]);
    assert_eq!(std::fs::read(c.join("big.bin")).unwrap().len(), SIZE);
    assert_limited("copy --to", up, SIZE as u64, LIMIT);
    assert_limited("get", down, SIZE as u64, LIMIT);
}

#[test]
fn parallel_transfers_share_one_bandwidth_limit() {
    // Two 8 MiB files at once under one 8 MiB/s limit take 2 s together, and neither gets
    // ahead of the other: each gets half, so both finish near the end.
    const SIZE: usize = 8 << 20;
    let env = Env::new();
    let a = ferry_origin(
        &env,
        &[
            ("one.bin", &pattern(SIZE, 1)),
            ("two.bin", &pattern(SIZE, 2)),
        ],
    );
    let _b = ferry_clone(&env, "a", "b");
    env.git(&a, &["remote", "add", "b", "../b"]).assert_ok();
    env.git(&a, &["config", "annex.bwlimit", "8MiB"])
        .assert_ok();
    let t0 = std::time::Instant::now();
    let mut child = env
        .cmd(
            &a,
            ferry_bin(),
            &["copy", "--to", "b", "-J", "2", "--json"].map(std::ffi::OsStr::new),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let finished: Vec<(Duration, String)> = std::io::BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| (t0.elapsed(), l.unwrap()))
        .collect();
    assert!(child.wait().unwrap().success());
    assert_eq!(finished.len(), 2, "{finished:?}");
    assert!(finished.iter().all(|(_, l)| l.contains("\"success\":true")));
    let (first, last) = (finished[0].0, finished[1].0);
    assert_limited("copy -J 2", last, 2 * SIZE as u64, 8 << 20);
    assert!(
        first.as_secs_f64() >= 0.8 * last.as_secs_f64(),
        "one transfer got ahead: done after {first:?}, the other after {last:?}"
    );
}

#[test]
fn a_bad_bandwidth_limit_stops_a_command_before_anything_moves() {
    let env = Env::new();
    let a = ferry_origin(&env, &[("f.txt", b"content\n")]);
    let b = ferry_clone(&env, "a", "b");
    for (key, value, says) in [
        ("annex.bwlimit", "fast", "not a size per second"),
        (
            "remote.origin.annex-bwlimit",
            "0",
            "a limit of 0 would stop every transfer",
        ),
        (
            "annex.bwlimit-download",
            "-5MiB",
            "a limit cannot be negative",
        ),
    ] {
        env.git(&b, &["config", key, value]).assert_ok();
        for args in [
            &["get"][..],
            &["copy", "--from", "origin"],
            &["move", "--from", "origin"],
            &["sync", "--content"],
        ] {
            let r = env.ferry(&b, args);
            r.assert_fails();
            let err = r.stderr();
            assert!(
                err.contains(&format!("{key} = \"{value}\": {says}; write"))
                    && err.contains("1MiB"),
                "{args:?} with {key}={value}: {err}"
            );
            assert!(!b.join("f.txt").exists(), "{args:?} moved content");
            assert!(tmp_files(&b).is_empty(), "{args:?} started a transfer");
        }
        env.git(&b, &["config", "--unset", key]).assert_ok();
    }
    // sync --content stopped before the git-level sync too.
    assert!(
        !env.git(
            &a,
            &["rev-parse", "--verify", "-q", "refs/heads/synced/main"]
        )
        .ok()
    );
    env.git(&b, &["config", "annex.bwlimit", "1MiB/s"])
        .assert_ok();
    env.ferry(&b, &["get"]).assert_ok();
    assert_eq!(std::fs::read(b.join("f.txt")).unwrap(), b"content\n");
}
