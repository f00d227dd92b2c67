use crate::common::*;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn paths_outside_or_in_git_dir_are_refused_and_missing_ones_reported() {
    let env = Env::new();
    let d = env.ferry_repo("r");
    write(&d, "ok.txt", "fine");
    let outside = write(env.tmp.path(), "elsewhere.txt", "x");
    let r = env.ferry(&d, &[std::ffi::OsStr::new("add"), outside.as_os_str()]);
    r.assert_fails();
    assert!(
        r.stderr().contains("outside the repository"),
        "{}",
        r.stderr()
    );
    let r = env.ferry(&d, &["add", "../elsewhere.txt"]);
    r.assert_fails();
    let r = env.ferry(&d, &["add", ".git/config"]);
    r.assert_fails();
    assert!(r.stderr().contains(".git directory"), "{}", r.stderr());
    assert!(
        env.git(&d, &["ls-files", "-s"]).stdout().is_empty(),
        "nothing staged after a refusal"
    );
    // A missing path is reported; the others are still added; the exit status says so.
    let r = env.ferry(&d, &["add", "nope.txt", "ok.txt"]);
    r.assert_fails();
    assert!(
        r.stderr().contains("nope.txt does not exist"),
        "{}",
        r.stderr()
    );
    assert!(
        std::fs::symlink_metadata(d.join("ok.txt"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn a_file_that_changes_while_hashed_is_never_stored_under_a_wrong_key() {
    let env = Env::new();
    let d = env.ferry_repo("r");
    let p = d.join("growing.bin");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(1 << 30).unwrap(); // takes the hasher a while
    drop(f);
    let mut child = env
        .cmd(&d, ferry_bin(), &["add".as_ref(), "--json".as_ref()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Keep writing into the file for as long as ferry runs.
    let mut w = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    let mut n = 0u64;
    while child.try_wait().unwrap().is_none() {
        use std::os::unix::fs::FileExt;
        w.write_at(b"changed!", (n * 4096) % (1 << 30)).unwrap();
        w.flush().unwrap();
        n += 1;
        std::thread::sleep(Duration::from_micros(200));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the add must report the unstable file\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("changed while it was being added"),
        "{stderr}"
    );
    // The file is untouched: still a regular file with the writes in it; nothing in the store.
    let md = std::fs::symlink_metadata(&p).unwrap();
    assert!(md.is_file());
    assert_eq!(md.len(), 1 << 30);
    let objects = std::process::Command::new("find")
        .arg(d.join(".git/annex/objects"))
        .arg("-type")
        .arg("f")
        .output()
        .unwrap();
    assert!(
        objects.stdout.is_empty(),
        "no object may be stored: {}",
        String::from_utf8_lossy(&objects.stdout)
    );
    // Once stable, it adds fine and the key matches the content.
    env.ferry(&d, &["add"]).assert_ok();
    env.ferry(&d, &["fsck"]).assert_ok();
}

#[test]
fn kill_9_during_add_loses_nothing_and_a_rerun_repairs() {
    let env = Env::new();
    let d = env.ferry_repo("r");
    let n = 3000;
    for i in 0..n {
        write(
            &d,
            format!("d{}/f{i}", i % 30),
            format!("file number {i}\n"),
        );
    }
    let mut child = env
        .cmd(&d, ferry_bin(), &["add".as_ref(), "-J1".as_ref()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once it is visibly in the middle of the work.
    let started = wait_until(Duration::from_secs(60), || {
        (0..n).step_by(97).any(|i| {
            std::fs::symlink_metadata(d.join(format!("d{}/f{i}", i % 30)))
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false)
        })
    });
    assert!(started, "ferry add never started replacing files");
    child.kill().unwrap();
    child.wait().unwrap();
    // Every file's content is intact: as the file itself, or behind its annex link.
    for i in 0..n {
        let p = d.join(format!("d{}/f{i}", i % 30));
        assert_eq!(
            std::fs::read(&p).unwrap_or_default(),
            format!("file number {i}\n").into_bytes(),
            "{}",
            p.display()
        );
    }
    env.ferry(&d, &["add"]).assert_ok();
    for i in 0..n {
        let p = d.join(format!("d{}/f{i}", i % 30));
        assert!(
            std::fs::symlink_metadata(&p)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read(&p).unwrap(),
            format!("file number {i}\n").into_bytes()
        );
    }
    env.git(&d, &["commit", "-qm", "all"]).assert_ok();
    assert_eq!(env.git(&d, &["ls-files"]).stdout().lines().count(), n);
    env.ferry(&d, &["fsck", "--fast"]).assert_ok();
    env.annex(&d, &["fsck", "--fast", "--quiet"]).assert_ok();
}

#[test]
fn two_adds_at_once_are_serialised() {
    let env = Env::new();
    let d = env.ferry_repo("r");
    for i in 0..400 {
        write(&d, format!("f{i}"), format!("{i}"));
    }
    let spawn = || {
        env.cmd(&d, ferry_bin(), &["add".as_ref()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (ra, rb) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(
        ra.status.success(),
        "{}",
        String::from_utf8_lossy(&ra.stderr)
    );
    assert!(
        rb.status.success(),
        "{}",
        String::from_utf8_lossy(&rb.stderr)
    );
    env.git(&d, &["commit", "-qm", "x"]).assert_ok();
    assert_eq!(env.git(&d, &["ls-files"]).stdout().lines().count(), 400);
    env.ferry(&d, &["fsck"]).assert_ok();
    env.annex(&d, &["fsck", "--quiet"]).assert_ok();
}

#[test]
fn corrupt_and_foreign_log_lines_are_skipped_with_a_warning() {
    let env = Env::new();
    let d = env.ferry_repo("r");
    write(&d, "f", "data");
    env.ferry(&d, &["add"]).assert_ok();
    env.git(&d, &["commit", "-qm", "f"]).assert_ok();
    let key = link_key(&d.join("f"));
    let uuid = config(&env, &d, "annex.uuid");
    // Damage the branch copy of the location log with a commit of our own.
    let log_path = env
        .git(&d, &["ls-tree", "-r", "--name-only", "git-annex"])
        .stdout()
        .lines()
        .find(|l| l.contains(&key))
        .unwrap()
        .to_string();
    let good = env
        .git(&d, &["show", &format!("git-annex:{log_path}")])
        .stdout();
    let bad = format!(
        "garbage without structure\n\u{0}\u{1}binary junk\n{good}12 1\nnot-a-ts 1 {uuid}\n"
    );
    let blob = {
        let mut c = env
            .cmd(
                &d,
                "git",
                &["hash-object".as_ref(), "-w".as_ref(), "--stdin".as_ref()],
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(bad.as_bytes()).unwrap();
        String::from_utf8(c.wait_with_output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string()
    };
    let idx = env.path("idx");
    let mut c = env.cmd(&d, "git", &["read-tree".as_ref(), "git-annex".as_ref()]);
    c.env("GIT_INDEX_FILE", &idx);
    assert!(c.status().unwrap().success());
    let mut c = env.cmd(
        &d,
        "git",
        &[
            "update-index".as_ref(),
            "--cacheinfo".as_ref(),
            format!("100644,{blob},{log_path}").as_ref(),
        ],
    );
    c.env("GIT_INDEX_FILE", &idx);
    assert!(c.status().unwrap().success());
    let mut c = env.cmd(&d, "git", &["write-tree".as_ref()]);
    c.env("GIT_INDEX_FILE", &idx);
    let tree = String::from_utf8(c.output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    let commit = env
        .git(
            &d,
            &["commit-tree", &tree, "-p", "git-annex", "-m", "damage"],
        )
        .assert_ok()
        .stdout()
        .trim()
        .to_string();
    env.git(&d, &["update-ref", "refs/heads/git-annex", &commit])
        .assert_ok();

    let r = env.ferry(&d, &["whereis", "--json", "f"]);
    r.assert_ok();
    assert!(r.stderr().contains("unreadable line"), "{}", r.stderr());
    assert_eq!(r.json_lines()[0]["whereis"][0]["uuid"], uuid.as_str());
    env.ferry(&d, &["fsck", "--fast"]).assert_ok();
    env.ferry(&d, &["info"]).assert_ok();
}

/// An unreadable file is reported, the others are still added. Needs a non-root user (root can
/// read anything), so the add runs as `nobody` through setpriv.
#[test]
fn unreadable_file_is_reported_and_others_still_added() {
    let env = Env::new();
    let d = env.ferry_repo("r");
    write(&d, "readable", "yes");
    let secret = write(&d, "secret", "no");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let setpriv = std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok();
    if !root {
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
        let r = env.ferry(&d, &["add"]);
        r.assert_fails();
        assert!(r.stderr().contains("secret"), "{}", r.stderr());
    } else {
        assert!(
            setpriv,
            "setpriv (util-linux) is needed to run this test as root"
        );
        // Hand the tree to nobody, except the secret file.
        assert!(
            std::process::Command::new("chown")
                .arg("-R")
                .arg("65534:65534")
                .arg(env.tmp.path())
                .status()
                .unwrap()
                .success()
        );
        std::fs::set_permissions(env.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(
            std::process::Command::new("chown")
                .arg("0:0")
                .arg(&secret)
                .status()
                .unwrap()
                .success()
        );
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut c = env.cmd(
            &d,
            "setpriv",
            &[
                "--reuid=65534".as_ref(),
                "--regid=65534".as_ref(),
                "--clear-groups".as_ref(),
                ferry_bin().as_ref(),
                "add".as_ref(),
            ],
        );
        let out = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr.contains("secret") && stderr.contains("ermission denied"),
            "{stderr}"
        );
    }
    assert!(
        std::fs::symlink_metadata(d.join("readable"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(std::fs::symlink_metadata(&secret).unwrap().is_file());
    if root {
        assert_eq!(std::fs::read(&secret).unwrap(), b"no");
    }
}

/// Disk full in the middle of an add: every file stays readable with its content, and after
/// space is freed a rerun completes. Needs to mount a small tmpfs (root); otherwise it says so.
#[test]
fn disk_full_loses_nothing_and_a_rerun_completes() {
    let env = Env::new();
    let mnt = env.mkdir("small-fs");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m,nr_inodes=4000", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!(
            "SKIPPED disk_full_loses_nothing_and_a_rerun_completes: cannot mount a tmpfs here (needs root)"
        );
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let d = mnt.join("r");
    std::fs::create_dir(&d).unwrap();
    env.ferry(&d, &["init"]).assert_ok();
    let n = 300;
    for i in 0..n {
        write(
            &d,
            format!("dir{}/file{i}", i % 7),
            format!("payload {i} ").repeat(200),
        );
    }
    // Fill what is left, so the add runs out of space part-way.
    let filler = mnt.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0x55u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let first = env.ferry(&d, &["add"]);
    assert!(
        !first.ok(),
        "the add should run out of space\n{}",
        first.stderr()
    );
    for i in 0..n {
        let p = d.join(format!("dir{}/file{i}", i % 7));
        assert_eq!(
            std::fs::read(&p).unwrap_or_default(),
            format!("payload {i} ").repeat(200).into_bytes(),
            "{}",
            p.display()
        );
    }
    std::fs::remove_file(&filler).unwrap();
    env.ferry(&d, &["add"]).assert_ok();
    for i in 0..n {
        let p = d.join(format!("dir{}/file{i}", i % 7));
        assert!(
            std::fs::symlink_metadata(&p)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{}",
            p.display()
        );
        assert_eq!(
            std::fs::read(&p).unwrap(),
            format!("payload {i} ").repeat(200).into_bytes()
        );
    }
    env.git(&d, &["commit", "-qm", "after disk full"])
        .assert_ok();
    env.ferry(&d, &["fsck"]).assert_ok();
    env.annex(&d, &["fsck", "--quiet"]).assert_ok();
}
