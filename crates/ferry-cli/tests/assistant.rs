//! The assistant daemon, with real inotify, real git and real processes: each test starts
//! `ferry assistant` on its clones and waits for conditions (files, commits, status), never for
//! fixed times.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// A foreground daemon started by the test; stopped (SIGTERM, then SIGKILL) when dropped.
pub(crate) struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    pub(crate) fn start(env: &Env, dir: &Path) -> Daemon {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let log = env.path(&format!("{name}.daemon.log"));
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = env
            .cmd(
                dir,
                ferry_bin(),
                &[std::ffi::OsStr::new("assistant"), "--foreground".as_ref()],
            )
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        let pid = child.id();
        let d = Daemon {
            child: Some(child),
            log,
        };
        // Started means: it holds the pid file and has published its running state.
        let ok = wait_until(WAIT, || {
            let s = status(env, dir);
            s["state"] == "running" && s["running"] == true && s["pid"] == pid
        });
        assert!(ok, "daemon did not start; log:\n{}", d.log_text());
        d
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait for a clean exit.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().unwrap()
    }

    fn kill9(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            if !wait_until(Duration::from_secs(20), || {
                c.try_wait().ok().flatten().is_some()
            }) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Stops the process `pid` (SIGSTOP) and waits until every thread of it is stopped (the stop
/// takes effect asynchronously).
fn sigstop(pid: i32) {
    // SAFETY: signalling a child of the test.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let all_stopped = || {
        std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|rd| {
            rd.flatten().all(|t| {
                std::fs::read_to_string(t.path().join("stat")).is_ok_and(|st| {
                    // "pid (comm) S ...": the state follows the last ')'.
                    st.rsplit_once(')')
                        .is_some_and(|(_, rest)| rest.trim_start().starts_with(['T', 't']))
                })
            })
        })
    };
    assert!(wait_until(WAIT, all_stopped), "the daemon did not stop");
}

/// Every daemon's log, for a failure message.
pub(crate) fn logs(ds: &[&Daemon]) -> String {
    ds.iter()
        .map(|d| format!("--- {}\n{}", d.log.display(), d.log_text()))
        .collect()
}

pub(crate) fn status(env: &Env, dir: &Path) -> serde_json::Value {
    let r = env.ferry(dir, &["status", "--json"]);
    serde_json::from_str(r.stdout().trim()).unwrap_or(serde_json::Value::Null)
}

/// The transfers line of `ferry status` (the whole text when there is none).
fn transfers_line(env: &Env, dir: &Path) -> String {
    let text = env.ferry(dir, &["status"]).stdout();
    let line = text.lines().find(|l| l.starts_with("transfers: "));
    line.map_or(text.clone(), str::to_string)
}

fn head_files(env: &Env, dir: &Path) -> Vec<String> {
    let r = env.git(dir, &["ls-tree", "-r", "--name-only", "HEAD"]);
    if !r.ok() {
        return Vec::new();
    }
    r.stdout().lines().map(str::to_string).collect()
}

fn committed(env: &Env, dir: &Path, file: &str) -> bool {
    env.git(dir, &["cat-file", "-e", &format!("HEAD:{file}")])
        .ok()
}

/// The key a file of the branch points to, if the file is there and annexed.
fn head_key(env: &Env, dir: &Path, file: &str) -> Option<String> {
    let r = env.git(dir, &["cat-file", "-p", &format!("HEAD:{file}")]);
    let pointer = r.stdout();
    let key = pointer.trim().strip_prefix("/annex/objects/")?;
    (r.ok() && !key.contains('/')).then(|| key.to_string())
}

/// Repository "a" with `file` committed as an unlocked file.
fn seeded(env: &Env, file: &str, content: &str) -> PathBuf {
    let a = env.ferry_repo("a");
    write(&a, file, content);
    env.ferry(&a, &["add", "--unlocked"]).assert_ok();
    env.git(&a, &["commit", "-qm", "seed"]).assert_ok();
    a
}

/// A and B: B a clone of A, remotes both ways (A's "b", B's "origin"), synced once.
fn pair(env: &Env) -> (PathBuf, PathBuf) {
    let a = seeded(env, "seed.txt", "seed\n");
    let b = clone_b(env);
    env.git(&a, &["remote", "add", "b", "../b"]).assert_ok();
    env.ferry(&a, &["sync"]).assert_ok();
    env.ferry(&b, &["sync"]).assert_ok();
    (a, b)
}

pub(crate) fn fast_retries(env: &Env, dir: &Path) {
    env.git(dir, &["config", "ferry.retrydelay", "0.2"])
        .assert_ok();
}

#[test]
fn assistant_creates_the_repository_runs_detached_and_stops() {
    let env = Env::new();
    let dir = env.path("Sync");
    // Not there yet: created and initialised.
    let r = env.ferry(env.tmp.path(), &["assistant", "Sync"]);
    r.assert_ok();
    assert!(r.stdout().contains("assistant started"), "{}", r.stdout());
    assert!(dir.join(".git/annex").is_dir());
    assert!(dir.join(".git/annex/daemon.log").is_file());
    let st = status(&env, &dir);
    assert_eq!(st["running"], true, "{st}");
    // A second daemon on the same repository refuses, saying why.
    let again = env.ferry(&dir, &["assistant"]);
    again.assert_fails();
    assert!(
        again.stderr().contains("already running"),
        "{}",
        again.stderr()
    );
    // Files are added unlocked and committed at once.
    write(&dir, "notes.txt", "hello\n");
    assert!(wait_until(WAIT, || committed(&env, &dir, "notes.txt")));
    let blob = env
        .git(&dir, &["cat-file", "-p", "HEAD:notes.txt"])
        .stdout();
    assert!(blob.starts_with("/annex/objects/SHA256E-s6--"), "{blob}");
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "hello\n"
    );
    let text = env.ferry(&dir, &["status"]).stdout();
    assert!(text.contains("assistant: running"), "{text}");
    assert!(text.contains("last commit:"), "{text}");
    assert_eq!(transfers_line(&env, &dir), "transfers: none", "no remotes");
    // Stop: clean, nothing left locked.
    let r = env.ferry(&dir, &["assistant", "--stop"]);
    r.assert_ok();
    assert!(r.stdout().contains("stopped"), "{}", r.stdout());
    assert_eq!(status(&env, &dir)["running"], false);
    assert_eq!(status(&env, &dir)["state"], "stopped");
    assert!(!dir.join(".git/index.lock").exists());
    env.git(&dir, &["fsck", "--no-progress"]).assert_ok();
}

#[test]
fn changes_made_while_stopped_are_committed_at_start() {
    let env = Env::new();
    let a = seeded(&env, "old.txt", "old\n");
    write(&a, "new/deep/file.bin", "new\n");
    std::fs::remove_file(a.join("old.txt")).unwrap();
    let _d = Daemon::start(&env, &a);
    assert!(wait_until(WAIT, || {
        let f = head_files(&env, &a);
        f.contains(&"new/deep/file.bin".to_string()) && !f.contains(&"old.txt".to_string())
    }));
}

/// A tagged push (the git-annex assistant's fallback, into `refs/synced/<uuid>/`) into a
/// clone whose daemon runs is merged there at once, like a push into `synced/`.
#[test]
fn a_tagged_push_is_merged_by_the_running_daemon() {
    let env = Env::new();
    let a = seeded(&env, "seed.txt", "seed\n");
    let b = clone_b(&env);
    let ub = config(&env, &b, "annex.uuid");
    let branch = env.git(&a, &["symbolic-ref", "--short", "HEAD"]).stdout();
    let d = Daemon::start(&env, &a);
    write(&b, "news.txt", "from b\n");
    env.ferry(&b, &["add"]).assert_ok();
    env.git(&b, &["commit", "-qm", "news"]).assert_ok();
    tagged_push(&env, &b, &format!("refs/synced/{ub}/{}", branch.trim()));
    assert!(
        wait_until(WAIT, || committed(&env, &a, "news.txt")),
        "the tagged push was not merged; log:\n{}",
        logs(&[&d])
    );
}

#[test]
fn a_file_still_open_for_writing_waits_until_closed() {
    use std::io::Write;
    let env = Env::new();
    let a = env.ferry_repo("a");
    let _d = Daemon::start(&env, &a);
    let mut slow = std::fs::File::create(a.join("slow.dat")).unwrap();
    slow.write_all(b"first half ").unwrap();
    slow.flush().unwrap();
    // A later file is committed; the open one is not.
    write(&a, "marker.txt", "m\n");
    assert!(wait_until(WAIT, || committed(&env, &a, "marker.txt")));
    assert!(!committed(&env, &a, "slow.dat"));
    slow.write_all(b"second half").unwrap();
    drop(slow);
    assert!(wait_until(WAIT, || committed(&env, &a, "slow.dat")));
    let pointer = env.git(&a, &["cat-file", "-p", "HEAD:slow.dat"]).stdout();
    assert!(
        pointer.contains("-s22--"),
        "the whole file (22 bytes) is committed, got {pointer}"
    );
}

#[test]
fn changes_hop_along_a_chain_of_clones() {
    // A → B → C where A and C do not know each other.
    let env = Env::new();
    let (a, b) = pair(&env);
    env.git(env.tmp.path(), &["clone", "-q", "b", "c"])
        .assert_ok();
    let c = env.path("c");
    env.ferry(&c, &["init", "c"]).assert_ok();
    env.git(&b, &["remote", "add", "c", "../c"]).assert_ok();
    env.ferry(&b, &["sync"]).assert_ok();
    let da = Daemon::start(&env, &a);
    let db = Daemon::start(&env, &b);
    let dc = Daemon::start(&env, &c);
    let all = [&da, &db, &dc];

    write(&a, "docs/new.txt", "from a\n");
    assert!(
        wait_until(WAIT, || std::fs::symlink_metadata(c.join("docs/new.txt"))
            .is_ok()),
        "a new file in A reaches C through B; logs:\n{}",
        logs(&all)
    );
    std::fs::rename(a.join("docs/new.txt"), a.join("docs/renamed.txt")).unwrap();
    assert!(
        wait_until(WAIT, || {
            c.join("docs/renamed.txt").symlink_metadata().is_ok()
                && c.join("docs/new.txt").symlink_metadata().is_err()
        }),
        "a rename propagates; logs:\n{}",
        logs(&all)
    );
    std::fs::remove_file(a.join("docs/renamed.txt")).unwrap();
    assert!(
        wait_until(WAIT, || c
            .join("docs/renamed.txt")
            .symlink_metadata()
            .is_err()),
        "a deletion propagates; logs:\n{}",
        logs(&all)
    );
    // Something made in C travels back to A the same way.
    write(&c, "from-c.txt", "c\n");
    assert!(
        wait_until(WAIT, || a.join("from-c.txt").symlink_metadata().is_ok()),
        "a file made in C reaches A; logs:\n{}",
        logs(&all)
    );
    // And B's work tree did not pick up stray commits of the merges' own writes: every commit
    // on B's branch that is not a merge changed something.
    let log = env
        .git(&b, &["log", "--no-merges", "--format=%H", "HEAD"])
        .stdout();
    for c in log.lines() {
        let files = env
            .git(&b, &["show", "--format=", "--name-only", c])
            .stdout();
        let parents = env.git(&b, &["rev-list", "--parents", "-n1", c]).stdout();
        let root = parents.split_whitespace().count() == 1;
        assert!(root || !files.trim().is_empty(), "empty commit {c} in B");
    }
}

#[test]
fn a_burst_of_1000_files_arrives_in_few_commits() {
    let env = Env::new();
    let (a, b) = pair(&env);
    let _da = Daemon::start(&env, &a);
    let _db = Daemon::start(&env, &b);
    let before: usize = env
        .git(&a, &["rev-list", "--count", "--no-merges", "HEAD"])
        .stdout()
        .trim()
        .parse()
        .unwrap();
    let dir = a.join("burst");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..1000 {
        std::fs::write(dir.join(format!("f{i:04}")), format!("file {i}\n")).unwrap();
    }
    let all_in_b = || {
        std::fs::read_dir(b.join("burst"))
            .map(|rd| rd.count() == 1000)
            .unwrap_or(false)
    };
    assert!(
        wait_until(Duration::from_secs(120), all_in_b),
        "all 1000 files reach B"
    );
    let after: usize = env
        .git(&a, &["rev-list", "--count", "--no-merges", "HEAD"])
        .stdout()
        .trim()
        .parse()
        .unwrap();
    assert!(
        after - before <= 100,
        "1000 files were coalesced into few commits, got {}",
        after - before
    );
    // Every file is a pointer to the right content in B's branch (a merge writes the work
    // tree before it moves the branch, so the names can be seen a moment before the commit).
    let pointer = || {
        env.git(&b, &["cat-file", "-p", "HEAD:burst/f0999"])
            .stdout()
            .starts_with("/annex/objects/SHA256E-s9--")
    };
    assert!(wait_until(WAIT, pointer), "B's branch has the files");
}

#[test]
fn killed_mid_burst_and_restarted_loses_nothing() {
    let env = Env::new();
    let a = env.ferry_repo("a");
    let mut d = Daemon::start(&env, &a);
    for i in 0..400 {
        write(&a, format!("k/f{i:03}.txt"), format!("content {i}\n"));
        if i == 200 {
            d.kill9();
        }
    }
    let mut d = Daemon::start(&env, &a);
    assert!(
        wait_until(WAIT, || {
            head_files(&env, &a)
                .iter()
                .filter(|f| f.starts_with("k/"))
                .count()
                == 400
        }),
        "log:\n{}",
        d.log_text()
    );
    assert!(wait_until(WAIT, || status(&env, &a)["idle"] == true));
    let st = env
        .git(&a, &["status", "--porcelain", "--untracked-files=all"])
        .stdout();
    assert_eq!(st, "", "work tree and index agree after recovery");
    assert!(d.stop().success());
    env.git(&a, &["fsck", "--no-progress"]).assert_ok();
}

#[test]
fn partitioned_clones_both_edit_a_file_and_end_with_both_versions() {
    let env = Env::new();
    let a = seeded(&env, "doc.txt", "v0\n");
    let b = clone_b(&env);
    // The remotes are reached through links that the test removes to partition the clones
    // (as when a drive is unplugged) and puts back to heal them.
    let (la, lb) = (env.path("link-a"), env.path("link-b"));
    std::os::unix::fs::symlink(&a, &la).unwrap();
    std::os::unix::fs::symlink(&b, &lb).unwrap();
    env.git(&a, &["remote", "add", "b", lb.to_str().unwrap()])
        .assert_ok();
    env.git(&b, &["remote", "set-url", "origin", la.to_str().unwrap()])
        .assert_ok();
    env.ferry(&a, &["sync"]).assert_ok();
    env.ferry(&b, &["sync"]).assert_ok();
    fast_retries(&env, &a);
    fast_retries(&env, &b);
    let da = Daemon::start(&env, &a);
    let db = Daemon::start(&env, &b);

    std::fs::remove_file(&la).unwrap();
    std::fs::remove_file(&lb).unwrap();
    write(&a, "doc.txt", "edited in a\n");
    write(&b, "doc.txt", "edited in b, longer\n");
    assert!(wait_until(WAIT, || {
        env.git(&a, &["cat-file", "-p", "HEAD:doc.txt"])
            .stdout()
            .contains("-s12--")
            && env
                .git(&b, &["cat-file", "-p", "HEAD:doc.txt"])
                .stdout()
                .contains("-s20--")
    }));
    // While apart, status shows the failing remote and the next retry.
    assert!(wait_until(WAIT, || {
        !status(&env, &a)["remotes"]["b"]["retry"].is_null()
    }));
    let text = env.ferry(&a, &["status"]).stdout();
    assert!(text.contains("push failed"), "{text}");

    // Heal: within seconds both hold both versions, under the same names.
    std::os::unix::fs::symlink(&a, &la).unwrap();
    std::os::unix::fs::symlink(&b, &lb).unwrap();
    let variants = |d: &Path| {
        let mut v: Vec<String> = head_files(&env, d)
            .into_iter()
            .filter(|f| f.starts_with("doc.variant-"))
            .collect();
        v.sort();
        v
    };
    assert!(
        wait_until(WAIT, || {
            variants(&a).len() == 2
                && variants(&a) == variants(&b)
                && env.git(&a, &["rev-parse", "HEAD^{tree}"]).stdout()
                    == env.git(&b, &["rev-parse", "HEAD^{tree}"]).stdout()
        }),
        "a: {:?} b: {:?}; logs:\n{}",
        head_files(&env, &a),
        head_files(&env, &b),
        logs(&[&da, &db])
    );
    let mut sizes: Vec<String> = variants(&a)
        .iter()
        .map(|v| {
            env.git(&a, &["cat-file", "-p", &format!("HEAD:{v}")])
                .stdout()
        })
        .collect();
    sizes.sort();
    assert!(
        sizes[0].contains("-s12--") && sizes[1].contains("-s20--"),
        "{sizes:?}"
    );
}

#[test]
fn a_conflict_between_files_in_git_is_left_to_the_user_and_retried_ever_more_slowly() {
    // Text files kept in git (annex.largefiles=nothing) edited on both sides: like git-annex,
    // the daemon does not resolve it. It undoes the merge (this clone's version stays, no
    // conflict markers, no merge in progress), goes on committing, and tries the merge again
    // after a wait that doubles each time.
    let env = Env::new();
    let (a, b) = pair(&env);
    for d in [&a, &b] {
        env.git(d, &["config", "annex.largefiles", "nothing"])
            .assert_ok();
    }
    write(&a, "notes.txt", "base\n");
    env.ferry(&a, &["add", "notes.txt"]).assert_ok();
    env.git(&a, &["commit", "-qm", "notes"]).assert_ok();
    env.ferry(&b, &["sync"]).assert_ok();
    write(&a, "notes.txt", "edited in a\n");
    env.git(&a, &["commit", "-qam", "a's edit"]).assert_ok();
    write(&b, "notes.txt", "edited in b\n");
    env.git(&b, &["commit", "-qam", "b's edit"]).assert_ok();
    assert!(
        env.git(&b, &["cat-file", "-p", "HEAD:notes.txt"])
            .stdout()
            .contains("edited in b"),
        "notes.txt is kept in git"
    );
    fast_retries(&env, &b);
    let db = Daemon::start(&env, &b);
    // The first failure waits 2 s, the second 4 s.
    assert!(
        wait_until(WAIT, || db.log_text().contains("trying again in 4 s")),
        "{}",
        db.log_text()
    );
    assert!(
        db.log_text().contains("left to you (git merge "),
        "{}",
        db.log_text()
    );
    assert_eq!(
        std::fs::read_to_string(b.join("notes.txt")).unwrap(),
        "edited in b\n"
    );
    assert!(
        !b.join(".git/MERGE_HEAD").exists(),
        "no merge left in progress"
    );
    let text = env.ferry(&b, &["status"]).stdout();
    assert!(text.contains("left to you"), "{text}");
    // The daemon goes on: a new file is committed.
    write(&b, "later.txt", "later\n");
    assert!(
        wait_until(WAIT, || committed(&env, &b, "later.txt")),
        "{}",
        db.log_text()
    );
}

#[test]
fn change_hook_runs_after_a_commit_and_a_push_with_the_event_in_its_environment() {
    let env = Env::new();
    let (a, _b) = pair(&env);
    let out = env.path("hook.out");
    env.git(
        &a,
        &[
            "config",
            "ferry.changehook",
            &format!(
                "echo \"$FERRY_EVENT $FERRY_COMMIT $FERRY_REMOTE\" >> '{}'",
                out.display()
            ),
        ],
    )
    .assert_ok();
    let _d = Daemon::start(&env, &a);
    write(&a, "x.txt", "x\n");
    assert!(wait_until(WAIT, || committed(&env, &a, "x.txt")));
    let head = env.git(&a, &["rev-parse", "HEAD"]).stdout();
    let head = head.trim();
    assert!(
        wait_until(WAIT, || {
            let log = std::fs::read_to_string(&out).unwrap_or_default();
            log.contains(&format!("commit {head} \n")) && log.contains(&format!("push {head} b\n"))
        }),
        "{}",
        std::fs::read_to_string(&out).unwrap_or_default()
    );
}

#[test]
fn kernel_queue_overflow_is_answered_by_a_full_rescan() {
    // A tiny kernel queue for the daemon's inotify instance, and the daemon stopped (SIGSTOP)
    // while 100 files are written: the queue overflows for sure. After SIGCONT the daemon must
    // rescan and commit every file it has no event for.
    let knob = Path::new("/proc/sys/fs/inotify/max_queued_events");
    // A value this low can only be a leftover of this test (killed before it put the value
    // back): put the kernel's default back instead, or every later burst overflows.
    let old = match std::fs::read_to_string(knob).unwrap().trim() {
        v if v.parse::<u32>().is_ok_and(|n| n < 1024) => "16384".to_string(),
        v => v.to_string(),
    };
    if std::fs::write(knob, "16").is_err() {
        panic!(
            "this test needs root (it lowers fs.inotify.max_queued_events); run scripts/test as root"
        );
    }
    let env = Env::new();
    let a = env.ferry_repo("a");
    let started =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Daemon::start(&env, &a)));
    std::fs::write(knob, old.trim()).unwrap();
    let d = started.unwrap();
    let pid = d.pid();
    // The directory exists and is watched (a file in it is committed) before the flood.
    write(&a, "flood/first", "0\n");
    assert!(wait_until(WAIT, || committed(&env, &a, "flood/first")));
    // Flood only once every thread is stopped, or a busy machine lets the watcher keep
    // draining the queue.
    sigstop(pid);
    for i in 0..100 {
        write(&a, format!("flood/f{i:03}"), format!("{i}\n"));
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(
        wait_until(WAIT, || {
            head_files(&env, &a)
                .iter()
                .filter(|f| f.starts_with("flood/f0"))
                .count()
                == 100
        }),
        "log:\n{}",
        d.log_text()
    );
    let events = std::fs::read_to_string(a.join(".git/annex/ferry/daemon/events.jsonl")).unwrap();
    assert!(events.contains("\"event\":\"rescan\""), "{events}");
}

#[test]
fn settings_changed_while_running_take_effect() {
    // The daemon keeps its settings, its remotes and a check-attr process between commits:
    // each must follow a change made while it runs.
    let env = Env::new();
    let a = seeded(&env, "seed.txt", "seed\n");
    let d = Daemon::start(&env, &a);

    // A first file starts the daemon's check-attr; a .gitattributes written after it decides
    // where the next file goes.
    write(&a, "first.small", "annexed: no attribute yet\n");
    assert!(wait_until(WAIT, || committed(&env, &a, "first.small")));
    write(&a, ".gitattributes", "*.small annex.largefiles=nothing\n");
    assert!(wait_until(WAIT, || committed(&env, &a, ".gitattributes")));
    write(&a, "notes.small", "kept in git\n");
    write(&a, "big.dat", "annexed\n");
    assert!(
        wait_until(WAIT, || committed(&env, &a, "notes.small")
            && committed(&env, &a, "big.dat")),
        "log:\n{}",
        d.log_text()
    );
    let blob = env
        .git(&a, &["cat-file", "-p", "HEAD:notes.small"])
        .stdout();
    assert_eq!(
        blob, "kept in git\n",
        "the new attribute put the file in git"
    );
    let pointer = env.git(&a, &["cat-file", "-p", "HEAD:big.dat"]).stdout();
    assert!(
        pointer.starts_with("/annex/objects/"),
        "still annexed: {pointer}"
    );

    // A remote added now receives the next change.
    let b = clone_b(&env);
    env.git(&a, &["remote", "add", "b", "../b"]).assert_ok();
    write(&a, "after-remote.txt", "x\n");
    assert!(
        wait_until(WAIT, || {
            let head = env.git(&a, &["rev-parse", "HEAD"]).stdout();
            let pushed = env.git(&b, &["rev-parse", "refs/heads/synced/main"]);
            committed(&env, &a, "after-remote.txt") && pushed.ok() && pushed.stdout() == head
        }),
        "the new remote gets the push; log:\n{}",
        d.log_text()
    );
}

#[test]
fn a_missing_remote_is_pushed_to_as_soon_as_it_is_back() {
    // The retry delay is ten minutes: only noticing the path come back can deliver in time.
    let env = Env::new();
    let (a, b) = pair(&env);
    env.git(&a, &["config", "ferry.retrydelay", "600"])
        .assert_ok();
    let d = Daemon::start(&env, &a);
    let away = env.path("b-unplugged");
    std::fs::rename(&b, &away).unwrap();
    write(&a, "while-away.txt", "x\n");
    assert!(
        wait_until(WAIT, || !status(&env, &a)["remotes"]["b"]["retry"]
            .is_null()),
        "the push fails while b is away; log:\n{}",
        d.log_text()
    );
    // Nothing was made at the missing remote's path (on a drive's mount point, that would
    // write to the wrong disk).
    assert!(
        !b.exists(),
        "a directory was created where the missing remote was; log:\n{}",
        d.log_text()
    );
    std::fs::rename(&away, &b).unwrap();
    let back = std::time::Instant::now();
    assert!(
        wait_until(WAIT, || {
            let head = env.git(&a, &["rev-parse", "HEAD"]).stdout();
            env.git(&b, &["rev-parse", "refs/heads/synced/main"])
                .stdout()
                == head
        }),
        "b gets the push once it is back; log:\n{}",
        d.log_text()
    );
    assert!(
        back.elapsed() < Duration::from_secs(30),
        "pushed {:?} after b came back, long before the 10-minute retry",
        back.elapsed()
    );
}

#[test]
fn content_follows_the_files_between_running_daemons() {
    // A new file's content reaches B (its unlocked file is filled in), and what is made in B
    // reaches A; both location logs say so, as real git-annex reads them.
    let env = Env::new();
    let (a, b) = pair(&env);
    let da = Daemon::start(&env, &a);
    let db = Daemon::start(&env, &b);
    write(&a, "photo.jpg", "pixels from a\n");
    assert!(
        wait_until(WAIT, || std::fs::read_to_string(b.join("photo.jpg"))
            .is_ok_and(|c| c == "pixels from a\n")),
        "the content arrives in B; logs:\n{}",
        logs(&[&da, &db])
    );
    write(&b, "from-b.txt", "made in b\n");
    assert!(
        wait_until(WAIT, || std::fs::read_to_string(a.join("from-b.txt"))
            .is_ok_and(|c| c == "made in b\n")),
        "content made in B arrives in A; logs:\n{}",
        logs(&[&da, &db])
    );
    // git-annex, in A, knows both copies of both files once the logs have travelled.
    let uuid = |d: &Path| {
        env.git(d, &["config", "annex.uuid"])
            .stdout()
            .trim()
            .to_string()
    };
    let (ua, ub) = (uuid(&a), uuid(&b));
    for f in ["photo.jpg", "from-b.txt"] {
        assert!(
            wait_until(WAIT, || {
                let text = env.git(&a, &["annex", "whereis", "--json", f]).stdout();
                text.contains(&ua) && text.contains(&ub)
            }),
            "git annex whereis {f} in A lists both clones; logs:\n{}",
            logs(&[&da, &db])
        );
    }
}

#[test]
fn a_restarted_daemon_plans_only_what_changed_while_it_was_stopped() {
    // Once everything it planned is done, a daemon saves a checkpoint (HEAD and git-annex
    // branch as planned). Started again, it plans only the commits and location changes made
    // since, not every file, and those still move.
    let env = Env::new();
    let (a, b) = pair(&env);
    let checkpoint = |d: &Path| d.join(".git/annex/ferry/planned");
    let log_of = |name: &str| std::fs::read_to_string(env.path(name)).unwrap_or_default();
    {
        let da = Daemon::start(&env, &a);
        let db = Daemon::start(&env, &b);
        write(&a, "one.txt", "one\n");
        assert!(
            wait_until(WAIT, || std::fs::read_to_string(b.join("one.txt"))
                .is_ok_and(|c| c == "one\n")),
            "one.txt arrives in B; logs:\n{}",
            logs(&[&da, &db])
        );
        assert!(
            wait_until(WAIT, || checkpoint(&a).exists() && checkpoint(&b).exists()),
            "both daemons save a checkpoint once their queues are empty; logs:\n{}",
            logs(&[&da, &db])
        );
        // Without a checkpoint (the first start), every file was planned.
        assert!(da.log_text().contains("planned all "), "{}", da.log_text());
    }
    let (a_seen, b_seen) = (log_of("a.daemon.log").len(), log_of("b.daemon.log").len());
    // While both are stopped: B drops its copy of one.txt (a location change), A commits a
    // new file.
    env.ferry(&b, &["drop", "one.txt"]).assert_ok();
    assert!(
        !filled_in(&b, "one.txt", 4),
        "the drop emptied one.txt in B"
    );
    write(&a, "two.txt", "two\n");
    env.ferry(&a, &["add", "--unlocked", "two.txt"]).assert_ok();
    env.git(&a, &["commit", "-qm", "two"]).assert_ok();

    // B alone first: it fetches both contents itself (A's daemon, not running, sends none).
    let db = Daemon::start(&env, &b);
    for (f, c) in [("one.txt", "one\n"), ("two.txt", "two\n")] {
        assert!(
            wait_until(WAIT, || std::fs::read_to_string(b.join(f))
                .is_ok_and(|t| t == c)),
            "{f}'s content is in B again; log:\n{}",
            db.log_text()
        );
    }
    let da = Daemon::start(&env, &a);
    for (name, file, seen) in [("A", "a.daemon.log", a_seen), ("B", "b.daemon.log", b_seen)] {
        let planned = || {
            let text = log_of(file)[seen..].to_string();
            (text.contains("continuing from the last complete round")
                || text.contains("planned all "))
            .then_some(text)
        };
        assert!(wait_until(WAIT, || planned().is_some()), "{name} planned");
        let text = planned().unwrap();
        assert!(
            text.contains("continuing from the last complete round"),
            "{name} went on from its checkpoint:\n{text}"
        );
        assert!(
            !text.contains("planned all "),
            "{name} did not plan every file again:\n{text}"
        );
    }
    // A config change makes a checkpoint stale: the next start plans everything.
    drop((da, db));
    env.git(&b, &["config", "annex.jobs", "2"]).assert_ok();
    let b_seen = log_of("b.daemon.log").len();
    let db = Daemon::start(&env, &b);
    assert!(
        wait_until(WAIT, || log_of("b.daemon.log")[b_seen..]
            .contains("planned all ")),
        "B planned every file after its config changed; log:\n{}",
        db.log_text()
    );
}

#[test]
fn running_daemons_follow_preferred_content() {
    // B wants everything but big/: A's daemon does not send big/ there, B's does not fetch it,
    // and the rest still flows.
    let env = Env::new();
    let (a, b) = pair(&env);
    env.ferry(&b, &["wanted", "here", "exclude=big/*"])
        .assert_ok();
    env.ferry(&b, &["sync"]).assert_ok();
    env.ferry(&a, &["sync"]).assert_ok();
    let da = Daemon::start(&env, &a);
    let db = Daemon::start(&env, &b);
    write(&a, "big/skip.bin", "not for b\n");
    write(&a, "keep.txt", "for b\n");
    assert!(
        wait_until(WAIT, || std::fs::read_to_string(b.join("keep.txt"))
            .is_ok_and(|c| c == "for b\n")),
        "wanted content arrives in B; logs:\n{}",
        logs(&[&da, &db])
    );
    assert!(
        wait_until(WAIT, || b.join("big/skip.bin").exists()),
        "the unwanted file itself is in B's tree"
    );
    // Both daemons are done with everything they had to do.
    let settled = |d: &Path| {
        let s = status(&env, d);
        s["idle"] == true
            && s["transfers"]["queued"] == 0
            && s["transfers"]["running"]
                .as_array()
                .is_some_and(|r| r.is_empty())
            && s["transfers"]["retrying_count"] == 0
    };
    assert!(
        wait_until(WAIT, || settled(&a) && settled(&b)),
        "both daemons settle; logs:\n{}",
        logs(&[&da, &db])
    );
    let key = head_key(&env, &a, "big/skip.bin").unwrap();
    assert!(has_key(&a, &key), "A keeps its copy");
    assert!(
        !has_key(&b, &key),
        "the excluded file's content never reached B; logs:\n{}",
        logs(&[&da, &db])
    );
    assert_eq!(
        std::fs::read_to_string(b.join("big/skip.bin")).unwrap(),
        format!("/annex/objects/{key}\n"),
        "B's unwanted file stays a pointer"
    );

    // B changes its mind while both run: the new expression is planned without a restart.
    env.ferry(&b, &["wanted", "here", "anything"]).assert_ok();
    assert!(
        wait_until(WAIT, || std::fs::read_to_string(b.join("big/skip.bin"))
            .is_ok_and(|c| c == "not for b\n")),
        "B fetches what it now wants; logs:\n{}",
        logs(&[&da, &db])
    );
    assert!(
        wait_until(WAIT, || db
            .log_text()
            .contains("trust changed: planned 3 files again")),
        "B re-planned from its file cache; logs:\n{}",
        logs(&[&db])
    );
}

#[test]
fn a_bandwidth_limit_changed_while_running_applies_to_the_running_transfer() {
    // The upload to b starts under b's 1 MiB/s limit (16 s for 16 MiB); raising the limit
    // while it runs finishes it in a fraction of that. A bad limit is reported, not fatal.
    let env = Env::new();
    let (a, b) = pair(&env);
    env.git(&a, &["config", "annex.bwlimit", "fast"])
        .assert_ok();
    env.git(&a, &["config", "remote.b.annex-bwlimit", "1MiB"])
        .assert_ok();
    let d = Daemon::start(&env, &a);
    let reported = || {
        status(&env, &a)["problems"].as_array().is_some_and(|p| {
            p.iter().any(|p| {
                p.as_str()
                    .is_some_and(|p| p.contains("annex.bwlimit = \"fast\": not a size"))
            })
        })
    };
    assert!(
        wait_until(WAIT, reported),
        "the bad limit is in the status; log:\n{}",
        d.log_text()
    );
    let content: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
    write(&a, "big.bin", &content);
    assert!(wait_until(WAIT, || committed(&env, &a, "big.bin")));
    let pointer = env.git(&a, &["cat-file", "-p", "HEAD:big.bin"]).stdout();
    let key = pointer.trim().rsplit('/').next().unwrap().to_string();
    let partial = b.join(".git/annex/tmp").join(&key);
    assert!(
        wait_until(WAIT, || std::fs::metadata(&partial)
            .is_ok_and(|m| m.len() >= 1 << 20)),
        "the upload runs; log:\n{}",
        d.log_text()
    );
    let done = std::fs::metadata(&partial).map_or(0, |m| m.len());
    assert!(!has_key(&b, &key), "not done at 1 MiB/s yet");
    env.git(&a, &["config", "remote.b.annex-bwlimit", "1GiB"])
        .assert_ok();
    env.git(&a, &["config", "--unset", "annex.bwlimit"])
        .assert_ok();
    let changed = std::time::Instant::now();
    assert!(
        wait_until(WAIT, || has_key(&b, &key)),
        "the content arrives; log:\n{}",
        d.log_text()
    );
    // At 1 MiB/s the rest would have taken this long (about 15 s).
    let old_rate = Duration::from_secs_f64((content.len() as u64 - done) as f64 / (1 << 20) as f64);
    assert!(
        changed.elapsed() < old_rate / 2,
        "the new limit did not apply to the running upload: {:?} after the change, {old_rate:?} at the old limit; log:\n{}",
        changed.elapsed(),
        d.log_text()
    );
    assert!(
        wait_until(WAIT, || !reported()),
        "the fixed setting leaves the status; log:\n{}",
        d.log_text()
    );
    let log = d.log_text();
    assert!(
        log.contains("bandwidth limits: remote.b.annex-bwlimit = 1GiB"),
        "{log}"
    );
}

/// The big file of the content tests: 256 MiB, pseudo-random.
const BIG: u64 = 256 << 20;
/// How long a big file may take (debug builds, a busy 2-core machine).
const BIG_WAIT: Duration = Duration::from_secs(120);

/// Whether `git status` finds nothing to report (without the index refresh that would take
/// `index.lock` from under the daemon while polling).
fn status_clean(env: &Env, dir: &Path) -> bool {
    let r = env.git(dir, &["--no-optional-locks", "status", "--porcelain"]);
    r.ok() && r.stdout().is_empty()
}

/// Whether B's work tree file `file` holds all of `size` bytes of content (an unlocked file is
/// filled in by a rename, so the full size means complete).
fn filled_in(dir: &Path, file: &str, size: u64) -> bool {
    std::fs::metadata(dir.join(file)).is_ok_and(|m| m.len() == size)
}

#[test]
fn a_256_mib_file_written_in_a_arrives_intact_in_b() {
    let env = Env::new();
    let (a, b) = pair(&env);
    let da = Daemon::start(&env, &a);
    let db = Daemon::start(&env, &b);
    let t0 = Instant::now();
    write_random(&a.join("big.bin"), BIG, 0x5eed_0001);
    let written = t0.elapsed();
    assert!(
        wait_until(BIG_WAIT, || {
            head_key(&env, &b, "big.bin").is_some_and(|k| has_key(&b, &k))
                && filled_in(&b, "big.bin", BIG)
        }),
        "256 MiB did not reach B's store and work tree within {BIG_WAIT:?}; logs:\n{}",
        logs(&[&da, &db])
    );
    eprintln!(
        "256 MiB: written in {written:?}, in B's work tree after {:?}",
        t0.elapsed()
    );
    let key = head_key(&env, &b, "big.bin").unwrap();
    assert!(key.starts_with(&format!("SHA256E-s{BIG}--")), "{key}");
    assert_eq!(
        sha256_file(&a.join("big.bin")),
        key_hash(&key),
        "A's daemon keyed the bytes that were written"
    );
    assert_eq!(
        sha256_file(&b.join("big.bin")),
        key_hash(&key),
        "B's file holds the same bytes"
    );
    // The file is filled in first, then its new stat is staged (git runs the clean filter
    // over the content for that): git status agrees a moment later.
    assert!(
        wait_until(WAIT, || status_clean(&env, &b)),
        "B's filled-in unlocked file stays modified to git: {}",
        env.git(&b, &["status", "--porcelain"]).stdout()
    );
    eprintln!("256 MiB test: {:?} in all", t0.elapsed());
}

#[test]
fn a_daemon_killed_mid_download_resumes_where_it_stopped() {
    let env = Env::new();
    let (a, b) = pair(&env);
    // B's branch has a big file whose content is only in A; only B's daemon runs, so it is the
    // one that moves the content.
    write_random(&a.join("big.bin"), BIG, 0x5eed_0002);
    env.ferry(&a, &["add", "--unlocked", "big.bin"]).assert_ok();
    env.git(&a, &["commit", "-qm", "big"]).assert_ok();
    env.ferry(&a, &["sync"]).assert_ok();
    let key = head_key(&env, &a, "big.bin").unwrap();
    let tmp = b.join(".git/annex/tmp").join(&key);
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut db = Daemon::start(&env, &b);
    // Paused as soon as the first bytes are in B's partial file: caught mid-transfer.
    assert!(
        wait_until(BIG_WAIT, || size(&tmp) > 0),
        "B's daemon did not start the download; log:\n{}",
        db.log_text()
    );
    sigstop(db.pid());
    let partial = size(&tmp);
    assert!(
        partial < BIG && !has_key(&b, &key),
        "the download ended before it could be paused ({partial} bytes)"
    );
    // ferry status says what is running (the small seed.txt may be on its way too).
    let line = transfers_line(&env, &b);
    assert!(
        line.contains(" running (")
            && line.contains("download big.bin ")
            && line.contains("256.0 MiB"),
        "{line}"
    );
    db.kill9();
    let text = env.ferry(&b, &["status"]).stdout();
    assert!(text.contains("it was killed"), "{text}");
    assert_eq!(size(&tmp), partial, "the partial file is kept");

    let db = Daemon::start(&env, &b);
    let t0 = Instant::now();
    assert!(
        wait_until(BIG_WAIT, || has_key(&b, &key)
            && filled_in(&b, "big.bin", BIG)),
        "the content did not arrive after the restart; log:\n{}",
        db.log_text()
    );
    eprintln!(
        "killed with {partial} of {BIG} bytes in place; the rest arrived {:?} after the restart",
        t0.elapsed()
    );
    // The restarted daemon went on from the partial file: those bytes were not copied again
    // (they were hashed in place, and the whole content checked against the key).
    let resumed = format!(
        "big.bin (from origin): resumed at byte {partial}, {} more bytes moved",
        BIG - partial
    );
    assert!(
        wait_until(WAIT, || db.log_text().contains(&resumed)),
        "{}",
        db.log_text()
    );
    assert_eq!(sha256_file(&b.join("big.bin")), key_hash(&key));
    // Consistent afterwards: the file is unmodified to git (once its new stat is staged),
    // nothing is left in the temp and transfer directories, the daemon goes idle, and
    // git-annex's fsck agrees.
    assert!(
        wait_until(WAIT, || status_clean(&env, &b)),
        "{}",
        env.git(&b, &["status", "--porcelain"]).stdout()
    );
    assert!(
        wait_until(WAIT, || {
            let s = status(&env, &b);
            s["idle"] == true
                && s["transfers"]["running"]
                    .as_array()
                    .is_some_and(|r| r.is_empty())
        }),
        "B's daemon settles; log:\n{}",
        db.log_text()
    );
    assert_eq!(transfers_line(&env, &b), "transfers: none");
    assert!(!tmp.exists());
    let info = b
        .join(".git/annex/transfer/download")
        .join(config(&env, &a, "annex.uuid"))
        .join(&key);
    assert!(!info.exists(), "the killed transfer's info file is gone");
    env.annex(&b, &["fsck", "--fast", "big.bin"]).assert_ok();
}

#[test]
fn a_failed_download_waits_for_its_retry_and_status_says_why() {
    let env = Env::new();
    let (a, b) = pair(&env);
    add_committed(&env, &a, "doc.txt", "the real content\n");
    env.ferry(&a, &["sync"]).assert_ok();
    // A's copy goes bad (same size, other bytes): B's download fails its check.
    let link = a.join("doc.txt");
    let obj = link
        .parent()
        .unwrap()
        .join(std::fs::read_link(&link).unwrap());
    let dir = obj.parent().unwrap().to_path_buf();
    let set_mode = |m| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(m)).unwrap()
    };
    set_mode(0o755);
    std::fs::remove_file(&obj).unwrap();
    std::fs::write(&obj, "the fake content\n").unwrap();
    let db = Daemon::start(&env, &b);
    assert!(
        wait_until(WAIT, || status(&env, &b)["transfers"]["retrying_count"]
            == 1),
        "log:\n{}",
        db.log_text()
    );
    let line = transfers_line(&env, &b);
    assert!(
        line.starts_with("transfers: 1 retrying (next in ")
            && line.contains(" s: download doc.txt: ")
            && line.contains("corrupt"),
        "{line}"
    );
    // With only a retry left, the daemon is not called plain idle.
    let assistant_line = || {
        let text = env.ferry(&b, &["status"]).stdout();
        text.lines().next().unwrap_or_default().to_string()
    };
    assert!(
        wait_until(WAIT, || assistant_line()
            .ends_with(", idle until transfers are retried")),
        "{}",
        assistant_line()
    );
    // Repaired: a later attempt brings the content.
    std::fs::remove_file(&obj).unwrap();
    std::fs::write(&obj, "the real content\n").unwrap();
    set_mode(0o555);
    assert!(
        wait_until(WAIT, || std::fs::read_to_string(b.join("doc.txt"))
            .is_ok_and(|c| c == "the real content\n")),
        "log:\n{}",
        db.log_text()
    );
    assert!(wait_until(
        WAIT,
        || status(&env, &b)["transfers"]["retrying_count"] == 0
    ));
    assert!(
        wait_until(WAIT, || assistant_line().ends_with(", idle")),
        "{}",
        assistant_line()
    );
}
