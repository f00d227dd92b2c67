//! Unlocked files: pointer blobs in git, ordinary files in the work tree, ferry's git filter.

use crate::common::*;
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::time::Duration;

fn staged_blob(env: &Env, d: &std::path::Path, path: &str) -> String {
    env.git(d, &["cat-file", "-p", &format!(":{path}")])
        .assert_ok()
        .stdout()
}

fn status(env: &Env, d: &std::path::Path) -> String {
    env.git(d, &["status", "--porcelain"]).assert_ok().stdout()
}

#[test]
fn unlocked_files_round_trip_through_git() {
    let env = Env::new();
    let d = env.ferry_repo("r");
    write(&d, "doc.txt", "version 1\n");
    write(&d, "other.bin", "other\n");
    env.ferry(&d, &["add", "--unlocked"]).assert_ok();
    assert!(
        std::fs::symlink_metadata(d.join("doc.txt"))
            .unwrap()
            .is_file()
    );
    let p1 = staged_blob(&env, &d, "doc.txt");
    assert!(p1.starts_with("/annex/objects/SHA256E-s10--"), "{p1}");
    env.git(&d, &["commit", "-qm", "v1"]).assert_ok();
    assert_eq!(status(&env, &d), "", "clean after commit");

    // Edit in place; git sees it; git add annexes the new version through the filter.
    write(&d, "doc.txt", "version 2 is longer\n");
    assert_eq!(status(&env, &d), " M doc.txt\n");
    env.git(&d, &["add", "doc.txt"]).assert_ok();
    let p2 = staged_blob(&env, &d, "doc.txt");
    assert!(
        p2.starts_with("/annex/objects/SHA256E-s20--") && p2 != p1,
        "{p2}"
    );
    env.git(&d, &["commit", "-qm", "v2"]).assert_ok();
    assert_eq!(status(&env, &d), "");
    // Both versions are in the store and logged.
    env.ferry(&d, &["fsck"]).assert_ok();

    // checkout / reset / stash / merge write content (present) through the smudge filter.
    env.git(&d, &["checkout", "-q", "HEAD~1", "--", "doc.txt"])
        .assert_ok();
    assert_eq!(
        std::fs::read_to_string(d.join("doc.txt")).unwrap(),
        "version 1\n"
    );
    env.git(&d, &["reset", "-q", "--hard"]).assert_ok();
    assert_eq!(
        std::fs::read_to_string(d.join("doc.txt")).unwrap(),
        "version 2 is longer\n"
    );
    assert_eq!(status(&env, &d), "");
    write(&d, "doc.txt", "uncommitted edit\n");
    env.git(&d, &["stash", "-q"]).assert_ok();
    assert_eq!(
        std::fs::read_to_string(d.join("doc.txt")).unwrap(),
        "version 2 is longer\n"
    );
    env.git(&d, &["stash", "pop", "-q"]).assert_ok();
    assert_eq!(
        std::fs::read_to_string(d.join("doc.txt")).unwrap(),
        "uncommitted edit\n"
    );
    env.git(&d, &["checkout", "-q", "--", "doc.txt"])
        .assert_ok();
    env.git(&d, &["checkout", "-q", "-b", "side"]).assert_ok();
    write(&d, "other.bin", "changed on side\n");
    env.git(&d, &["commit", "-qam", "side"]).assert_ok();
    env.git(&d, &["checkout", "-q", "main"]).assert_ok();
    assert_eq!(
        std::fs::read_to_string(d.join("other.bin")).unwrap(),
        "other\n"
    );
    env.git(&d, &["merge", "-q", "side"]).assert_ok();
    assert_eq!(
        std::fs::read_to_string(d.join("other.bin")).unwrap(),
        "changed on side\n"
    );
    assert!(staged_blob(&env, &d, "other.bin").starts_with("/annex/objects/"));
    assert_eq!(status(&env, &d), "");
    env.annex(&d, &["fsck", "--quiet"]).assert_ok();
}

#[test]
fn unchanged_files_do_not_reach_the_filter_on_status() {
    let env = Env::new();
    let d = env.ferry_repo("r");
    for i in 0..50 {
        write(&d, format!("f{i}"), format!("{i}"));
    }
    // Files older than the index, so that git has no "racily clean" entries to re-check (git
    // re-reads files modified in the same second as the index was written, annexed or not).
    assert!(
        std::process::Command::new("sh")
            .arg("-c")
            .arg("touch -d '-30 seconds' f*")
            .current_dir(&d)
            .status()
            .unwrap()
            .success()
    );
    env.ferry(&d, &["add", "--unlocked"]).assert_ok();
    env.git(&d, &["commit", "-qm", "x"]).assert_ok();
    // Point the filter at a command that fails: status must not need it.
    let r = env.git(
        &d,
        &[
            "-c",
            "filter.annex.process=false",
            "-c",
            "filter.annex.required=true",
            "status",
            "--porcelain",
        ],
    );
    r.assert_ok();
    assert_eq!(r.stdout(), "");
}

#[test]
fn lock_and_unlock_never_lose_edits() {
    let env = Env::new();
    let d = env.ferry_repo("r");
    write(&d, "a.txt", "original\n");
    env.ferry(&d, &["add"]).assert_ok();
    env.git(&d, &["commit", "-qm", "locked"]).assert_ok();
    let k1 = link_key(&d.join("a.txt"));
    env.ferry(&d, &["unlock", "a.txt"]).assert_ok();
    let md = std::fs::symlink_metadata(d.join("a.txt")).unwrap();
    assert!(
        md.is_file() && md.mode() & 0o200 != 0,
        "an ordinary, writable file"
    );
    env.git(&d, &["commit", "-qm", "unlocked"]).assert_ok();
    assert_eq!(status(&env, &d), "");
    write(&d, "a.txt", "edited after unlock\n");
    let r = env.ferry(&d, &["lock", "--json", "a.txt"]);
    r.assert_ok();
    let j = &r.json_lines()[0];
    assert!(j["note"].as_str().unwrap().contains("new version"), "{j}");
    let k2 = link_key(&d.join("a.txt"));
    assert_ne!(k1, k2);
    assert_eq!(
        std::fs::read_to_string(d.join("a.txt")).unwrap(),
        "edited after unlock\n"
    );
    env.git(&d, &["commit", "-qm", "relocked"]).assert_ok();
    assert_eq!(status(&env, &d), "");
    // The first version is still in the store.
    env.git(&d, &["checkout", "-q", "HEAD~2", "--", "a.txt"])
        .assert_ok();
    assert_eq!(
        std::fs::read_to_string(d.join("a.txt")).unwrap(),
        "original\n"
    );
    env.git(&d, &["reset", "-q", "--hard"]).assert_ok();
    env.ferry(&d, &["fsck"]).assert_ok();
    env.annex(&d, &["fsck", "--quiet"]).assert_ok();
}

#[test]
fn a_small_file_that_looks_like_a_pointer_stays_as_it_is() {
    let env = Env::new();
    let d = env.ferry_repo("r");
    let text = "/annex/objects/SHA256E-s3--0000000000000000000000000000000000000000000000000000000000000000\n";
    write(&d, "looks-like-pointer", text);
    env.git(&d, &["add", "looks-like-pointer"]).assert_ok();
    env.git(&d, &["commit", "-qm", "x"]).assert_ok();
    std::fs::remove_file(d.join("looks-like-pointer")).unwrap();
    env.git(&d, &["checkout", "-q", "--", "looks-like-pointer"])
        .assert_ok();
    assert_eq!(
        std::fs::read_to_string(d.join("looks-like-pointer")).unwrap(),
        text
    );
    assert_eq!(status(&env, &d), "");
}

#[test]
fn git_annex_clone_gets_ferry_unlocked_files_and_ferry_reads_annex_ones() {
    let env = Env::new();
    let a = env.ferry_repo("a");
    write(&a, "photo.jpg", vec![9u8; 3000]);
    env.ferry(&a, &["add", "--unlocked"]).assert_ok();
    env.git(&a, &["commit", "-qm", "photo"]).assert_ok();
    env.git(env.tmp.path(), &["clone", "-q", "a", "b"])
        .assert_ok();
    let b = env.path("b");
    env.annex(&b, &["init", "-q", "b"]).assert_ok();
    // Content absent in the clone: the pointer is checked out.
    assert!(
        std::fs::read_to_string(b.join("photo.jpg"))
            .unwrap()
            .starts_with("/annex/objects/")
    );
    env.annex(&b, &["get", "--quiet", "photo.jpg"]).assert_ok();
    assert_eq!(std::fs::read(b.join("photo.jpg")).unwrap(), vec![9u8; 3000]);
    assert_eq!(status(&env, &b), "");

    // The other way: git-annex's unlocked files, handled by ferry.
    let c = env.annex_repo("c");
    env.git(&c, &["config", "annex.addunlocked", "true"])
        .assert_ok();
    write(&c, "u.dat", "annex unlocked\n");
    env.annex(&c, &["add", "--quiet", "u.dat"]).assert_ok();
    env.git(&c, &["commit", "-qm", "u"]).assert_ok();
    let w = env
        .ferry(&c, &["whereis", "--json"])
        .assert_ok()
        .json_lines();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0]["copies"], 1);
    env.ferry(&c, &["fsck"]).assert_ok();
    env.ferry(&c, &["lock", "u.dat"]).assert_ok();
    assert!(
        std::fs::symlink_metadata(c.join("u.dat"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read_to_string(c.join("u.dat")).unwrap(),
        "annex unlocked\n"
    );
    env.git(&c, &["commit", "-qm", "locked by ferry"])
        .assert_ok();
    env.annex(&c, &["fsck", "--quiet"]).assert_ok();
}

#[test]
fn thin_objects_edited_in_place_are_never_served_as_valid() {
    let env = Env::new();
    let d = env.ferry_repo("r");
    env.git(&d, &["config", "annex.thin", "true"]).assert_ok();
    write(&d, "thin.txt", "thin content\n");
    env.ferry(&d, &["add", "--unlocked"]).assert_ok();
    env.git(&d, &["commit", "-qm", "thin"]).assert_ok();
    let md = std::fs::metadata(d.join("thin.txt")).unwrap();
    assert_eq!(md.nlink(), 2, "work-tree file and object share the inode");
    assert!(md.mode() & 0o200 != 0, "thin files stay writable");
    // Edit in place (same inode): the object for the old key changes too.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(d.join("thin.txt"))
            .unwrap();
        f.write_all(b"appended in place\n").unwrap();
    }
    let r = env.ferry(&d, &["fsck", "--json"]);
    r.assert_fails();
    let j = &r.json_lines()[0];
    assert!(j["problems"][0].as_str().unwrap().contains("thin"), "{j}");
    // The edit itself is intact, and the old key is no longer claimed.
    assert_eq!(
        std::fs::read_to_string(d.join("thin.txt")).unwrap(),
        "thin content\nappended in place\n"
    );
    assert_eq!(
        env.ferry(&d, &["whereis", "--json"]).json_lines()[0]["copies"],
        0
    );
    env.git(&d, &["add", "thin.txt"]).assert_ok();
    env.git(&d, &["commit", "-qm", "edit"]).assert_ok();
    let md = std::fs::metadata(d.join("thin.txt")).unwrap();
    assert!(
        md.mode() & 0o200 != 0,
        "git add through the filter keeps a thin file writable"
    );
    assert_eq!(md.nlink(), 2, "the new version is hard-linked again");
    env.ferry(&d, &["fsck"]).assert_ok();
}

#[test]
fn killing_the_filter_mid_file_commits_nothing_and_a_rerun_works() {
    let env = Env::new();
    let d = env.ferry_repo("r");
    env.git(&d, &["config", "annex.largefiles", "anything"])
        .assert_ok();
    let f = std::fs::File::create(d.join("big.img")).unwrap();
    f.set_len(3 << 30).unwrap();
    drop(f);
    let git = env
        .cmd(&d, "git", &["add".as_ref(), "big.img".as_ref()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the filter is receiving the file, then kill it.
    let tmp = d.join(".git/annex/tmp");
    let receiving = wait_until(Duration::from_secs(60), || {
        std::fs::read_dir(&tmp)
            .map(|rd| {
                rd.flatten().any(|e| {
                    e.file_name().to_string_lossy().starts_with("filter.")
                        && e.metadata().map(|m| m.len() > 0).unwrap_or(false)
                })
            })
            .unwrap_or(false)
    });
    assert!(receiving, "the filter never started receiving");
    // Kill only our own git's filter (a descendant of the git we started).
    let filter = descendants(git.id()).into_iter().find(|&p| {
        std::fs::read(format!("/proc/{p}/cmdline"))
            .map(|c| c.starts_with(ferry_bin().as_bytes()) && c.ends_with(b"filter-process\0"))
            .unwrap_or(false)
    });
    let filter = filter.expect("git's filter process");
    // SAFETY: kill has no memory-safety preconditions; the pid is our own descendant.
    assert_eq!(
        unsafe { libc::kill(filter as libc::pid_t, libc::SIGKILL) },
        0
    );
    let out = git.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "git add must fail when its filter dies"
    );
    assert_eq!(
        env.git(&d, &["ls-files", "-s"]).stdout(),
        "",
        "nothing staged"
    );
    assert!(std::fs::metadata(d.join("big.img")).unwrap().len() == 3 << 30);
    env.git(&d, &["add", "big.img"]).assert_ok();
    assert!(staged_blob(&env, &d, "big.img").starts_with("/annex/objects/SHA256E-s3221225472--"));
    env.git(&d, &["commit", "-qm", "big"]).assert_ok();
    env.ferry(&d, &["fsck", "--fast"]).assert_ok();
}

/// The clean filter streams: a large file passes through in constant memory. Driven directly
/// over git's pkt-line protocol so the filter's own peak RSS is measured.
#[test]
fn clean_filter_streams_large_files_in_constant_memory() {
    let env = Env::new();
    let d = env.ferry_repo("r");
    env.git(&d, &["config", "annex.largefiles", "anything"])
        .assert_ok();
    let mut cmd = env.cmd(&d, ferry_bin(), &["filter-process".as_ref()]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap();
    // The filter's own high-water mark, sampled while it runs. (`wait4`'s ru_maxrss would also
    // count the test process's memory: the child is spawned with vfork, and the kernel records
    // the shared memory's peak at exec.)
    let hwm_pid = child.id();
    let hwm = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let hwm = hwm.clone();
        std::thread::spawn(move || {
            while let Ok(st) = std::fs::read_to_string(format!("/proc/{hwm_pid}/status")) {
                let Some(kib) = st
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                else {
                    break; // a zombie: no memory any more
                };
                hwm.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut all).unwrap();
        all
    });
    use std::io::Write;
    let pkt = |w: &mut dyn Write, s: &[u8]| {
        write!(w, "{:04x}", s.len() + 4).unwrap();
        w.write_all(s).unwrap();
    };
    pkt(&mut stdin, b"git-filter-client\n");
    pkt(&mut stdin, b"version=2\n");
    stdin.write_all(b"0000").unwrap();
    pkt(&mut stdin, b"capability=clean\n");
    pkt(&mut stdin, b"capability=smudge\n");
    stdin.write_all(b"0000").unwrap();
    pkt(&mut stdin, b"command=clean\n");
    pkt(&mut stdin, b"pathname=huge.bin\n");
    stdin.write_all(b"0000").unwrap();
    let chunk = vec![0xabu8; 65516];
    let total: u64 = 1 << 30;
    let mut sent = 0u64;
    while sent < total {
        let n = chunk.len().min((total - sent) as usize);
        pkt(&mut stdin, &chunk[..n]);
        sent += n as u64;
    }
    stdin.write_all(b"0000").unwrap();
    drop(stdin);
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain data filled by wait4 for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut ru) }, pid);
    std::mem::forget(child);
    let reply = reader.join().unwrap();
    let text = String::from_utf8_lossy(&reply);
    assert!(text.contains("status=success"), "{text}");
    assert!(
        text.contains("/annex/objects/SHA256E-s1073741824--"),
        "{text}"
    );
    sampler.join().unwrap();
    let peak = hwm.load(std::sync::atomic::Ordering::Relaxed);
    assert!(peak > 0, "the filter's memory was sampled");
    assert!(
        peak < 64 * 1024,
        "filter peak RSS {peak} KiB for 1 GiB (wait4 says {} KiB)",
        ru.ru_maxrss
    );
}

/// `populate` / `depopulate`, the library operations transfers use when content arrives or
/// leaves: unmodified files switch between content and pointer, edits are never touched, and
/// git sees no change either way.
#[test]
fn populate_and_depopulate_follow_the_content() {
    let env = Env::new();
    let d = env.ferry_repo("r");
    write(&d, "one.txt", "shared content\n");
    write(&d, "two.txt", "shared content\n");
    write(&d, "edited.txt", "will be edited\n");
    env.ferry(&d, &["add", "--unlocked"]).assert_ok();
    env.git(&d, &["commit", "-qm", "x"]).assert_ok();
    write(&d, "edited.txt", "my local edit\n");
    let pointer_key = |p: &str| {
        let blob = staged_blob(&env, &d, p);
        ferry_lib::store::parse_pointer(blob.as_bytes()).unwrap()
    };
    let shared = pointer_key("one.txt");
    let edited = pointer_key("edited.txt");
    // The library reads git through the environment of the test process: point it at ours.
    let _guard = env.enter();
    let repo = ferry_lib::Repo::open(&d, &Default::default()).unwrap();
    let mut gone = ferry_lib::ops::unlock::depopulate(&repo, &shared).unwrap();
    gone.sort();
    assert_eq!(gone, vec![b"one.txt".to_vec(), b"two.txt".to_vec()]);
    assert!(
        std::fs::read_to_string(d.join("one.txt"))
            .unwrap()
            .starts_with("/annex/objects/")
    );
    assert!(
        ferry_lib::ops::unlock::depopulate(&repo, &edited)
            .unwrap()
            .is_empty(),
        "an edit is never replaced"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("edited.txt")).unwrap(),
        "my local edit\n"
    );
    assert_eq!(status(&env, &d), " M edited.txt\n");
    let mut back = ferry_lib::ops::unlock::populate(&repo, &shared).unwrap();
    back.sort();
    assert_eq!(back.len(), 2);
    assert_eq!(
        std::fs::read_to_string(d.join("two.txt")).unwrap(),
        "shared content\n"
    );
    assert_eq!(status(&env, &d), " M edited.txt\n");
}

/// A clone initialised by ferry checks out pointer files for content it does not have (ferry's
/// smudge filter), stays clean, and git-annex can fill them in through ferry's filter.
#[test]
fn ferry_clone_checks_out_pointers_and_git_annex_fills_them_in() {
    let env = Env::new();
    let a = env.ferry_repo("a");
    write(&a, "song.mp3", vec![3u8; 5000]);
    env.ferry(&a, &["add", "--unlocked"]).assert_ok();
    env.git(&a, &["commit", "-qm", "song"]).assert_ok();
    env.git(env.tmp.path(), &["clone", "-q", "--no-checkout", "a", "b"])
        .assert_ok();
    let b = env.path("b");
    env.ferry(&b, &["init", "b"]).assert_ok();
    env.git(&b, &["checkout", "-q", "main"]).assert_ok();
    let content = std::fs::read_to_string(b.join("song.mp3")).unwrap();
    assert!(
        content.starts_with("/annex/objects/SHA256E-s5000--"),
        "{content}"
    );
    assert_eq!(status(&env, &b), "");
    let w = env
        .ferry(&b, &["whereis", "--json"])
        .assert_ok()
        .json_lines();
    assert_eq!(w[0]["whereis"][0]["remote"], "origin");
    // git-annex works in a repository whose filter is ferry's.
    env.annex(&b, &["get", "--quiet", "song.mp3"]).assert_ok();
    assert_eq!(std::fs::read(b.join("song.mp3")).unwrap(), vec![3u8; 5000]);
    assert_eq!(status(&env, &b), "");
    env.ferry(&b, &["fsck"]).assert_ok();
}
