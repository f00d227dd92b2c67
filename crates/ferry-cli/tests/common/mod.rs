//! Hermetic test environment: a private HOME and git config, the real `ferry` binary, real git
//! and real git-annex (the oracle). Nothing here mocks anything.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Env {
    pub tmp: tempfile::TempDir,
    pub home: PathBuf,
}

pub struct Run {
    pub out: Output,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    pub fn ok(&self) -> bool {
        self.out.status.success()
    }
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.ok(),
            "command failed: {:?}\nstdout:\n{}\nstderr:\n{}",
            self.out.status,
            self.stdout(),
            self.stderr()
        );
        self
    }
    #[track_caller]
    pub fn assert_fails(&self) -> &Self {
        assert!(
            !self.ok(),
            "command should have failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
    /// stdout parsed as one JSON value per line.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect(l))
            .collect()
    }
}

pub fn ferry_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferry")
}

/// git-annex is the oracle; the test command installs it. Missing it is a loud failure.
pub fn require_annex() {
    let ok = Command::new("git-annex")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "git-annex is required for the interoperability tests: run scripts/test (as root it installs it) or apt-get install git-annex"
    );
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::Builder::new()
            .prefix("ferry-test-")
            .tempdir()
            .unwrap();
        let home = tmp.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(
            home.join(".gitconfig"),
            "[user]\n\tname = Ferry Test\n\temail = test@ferry.invalid\n[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n[safe]\n\tdirectory = *\n",
        )
        .unwrap();
        Env { tmp, home }
    }

    /// Points this process's git environment (HOME, global config) at the test's, for tests
    /// that call the library directly. Held for the test's duration; tests run in threads, so
    /// this takes a process-wide lock.
    pub fn enter(&self) -> std::sync::MutexGuard<'static, ()> {
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the lock above serialises the tests that change the environment; other
        // tests pass their environment to child processes explicitly and do not read it.
        unsafe {
            std::env::set_var("HOME", &self.home);
            std::env::set_var("GIT_CONFIG_GLOBAL", self.home.join(".gitconfig"));
            std::env::set_var("GIT_CONFIG_NOSYSTEM", "1");
        }
        g
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    fn prepare(&self, cmd: &mut Command, dir: &Path) {
        cmd.current_dir(dir);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("GIT_") {
                cmd.env_remove(&k);
            }
        }
        cmd.env("HOME", &self.home)
            .env("GIT_CONFIG_GLOBAL", self.home.join(".gitconfig"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("LC_ALL", "C.UTF-8")
            .env("USER", "tester")
            .stdin(Stdio::null());
    }

    pub fn cmd(&self, dir: &Path, program: &str, args: &[&OsStr]) -> Command {
        let mut c = Command::new(program);
        c.args(args);
        self.prepare(&mut c, dir);
        c
    }

    fn run_prog<S: AsRef<OsStr>>(&self, dir: &Path, program: &str, args: &[S]) -> Run {
        let args: Vec<&OsStr> = args.iter().map(|a| a.as_ref()).collect();
        let out = self
            .cmd(dir, program, &args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        Run { out }
    }

    pub fn ferry<S: AsRef<OsStr>>(&self, dir: &Path, args: &[S]) -> Run {
        self.run_prog(dir, ferry_bin(), args)
    }

    pub fn git<S: AsRef<OsStr>>(&self, dir: &Path, args: &[S]) -> Run {
        self.run_prog(dir, "git", args)
    }

    pub fn annex<S: AsRef<OsStr>>(&self, dir: &Path, args: &[S]) -> Run {
        require_annex();
        let mut all: Vec<&OsStr> = vec![OsStr::new("annex")];
        all.extend(args.iter().map(|a| a.as_ref()));
        self.run_prog(dir, "git", &all)
    }

    /// A new directory initialised with `ferry init`.
    pub fn ferry_repo(&self, name: &str) -> PathBuf {
        let d = self.mkdir(name);
        self.ferry(&d, &["init"]).assert_ok();
        d
    }

    /// A new directory initialised with `git annex init`.
    pub fn annex_repo(&self, name: &str) -> PathBuf {
        let d = self.mkdir(name);
        self.git(&d, &["init", "-q", "-b", "main"]).assert_ok();
        self.annex(&d, &["init", "-q", name]).assert_ok();
        d
    }
}

pub fn write(dir: &Path, rel: impl AsRef<[u8]>, content: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(OsStr::from_bytes(rel.as_ref()));
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, content).unwrap();
    p
}

/// Writes `rel`, annexes it with `ferry add` and commits it.
pub fn add_committed(env: &Env, dir: &Path, rel: &str, content: &str) {
    write(dir, rel, content);
    env.ferry(dir, &["add", rel]).assert_ok();
    env.git(dir, &["commit", "-qm", rel]).assert_ok();
}

/// A new bare repository `<name>.git` beside `dir`, added to `dir` as remote `name`.
pub fn bare_remote(env: &Env, dir: &Path, name: &str) -> PathBuf {
    let bare = format!("{name}.git");
    env.git(env.tmp.path(), &["init", "-q", "--bare", &bare])
        .assert_ok();
    env.git(dir, &["remote", "add", name, &format!("../{bare}")])
        .assert_ok();
    env.path(&bare)
}

/// Installs the executable hook `name` (`pre-receive`, ...) in the git directory `git_dir`.
pub fn install_hook(git_dir: &Path, name: &str, script: &str) {
    let hook = git_dir.join("hooks").join(name);
    std::fs::write(&hook, script).unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// A small deterministic pseudo-random generator (xorshift64*): picks operations, and makes
/// big test content fast, without fixtures.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Writes `size` pseudo-random bytes (from `seed`, never 0) to `path`, 1 MiB at a time: a big
/// buffer in this shared test process would count in the peak RSS of the children that other
/// tests fork meanwhile.
pub fn write_random(path: &Path, size: u64, seed: u64) {
    use std::io::Write;
    let mut rng = Rng(seed);
    let mut f = std::fs::File::create(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        for word in buf[..n].chunks_mut(8) {
            let r = rng.next().to_le_bytes();
            word.copy_from_slice(&r[..word.len()]);
        }
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
}

/// The SHA-256 of a file, by coreutils' `sha256sum` (not ferry's own hashing).
pub fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The hash in a SHA256E key (`SHA256E-s<size>--<hex>[.ext]`).
pub fn key_hash(key: &str) -> &str {
    let name = key.split_once("--").map_or("", |(_, n)| n);
    name.split('.').next().unwrap_or_default()
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn config(env: &Env, dir: &Path, key: &str) -> String {
    env.git(dir, &["config", "--get", key])
        .stdout()
        .trim()
        .to_string()
}

/// The key an annex symlink points to.
pub fn link_key(path: &Path) -> String {
    let t = std::fs::read_link(path)
        .unwrap_or_else(|e| panic!("{} is not a symlink: {e}", path.display()));
    let t = t.as_os_str().as_bytes();
    String::from_utf8_lossy(t.rsplit(|&b| b == b'/').next().unwrap()).into_owned()
}

/// The key of the annexed file `f` in repository `d` (from its link).
pub fn key(d: &Path, f: &str) -> String {
    link_key(&d.join(f))
}

/// `ferry explain --json f` in `d`: its one object.
pub fn explain_json(env: &Env, d: &Path, f: &str) -> serde_json::Value {
    let r = env.ferry(d, &["explain", "--json", f]);
    r.assert_ok();
    r.json_lines().remove(0)
}

/// The wish of repository `name` ("here" or a remote) in `explain --json`.
pub fn wish<'v>(v: &'v serde_json::Value, name: &str) -> &'v serde_json::Value {
    v["wishes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("no wish of {name}: {v}"))
}

/// Runs a child to completion and returns (output, peak RSS in KiB) from wait4.
pub fn run_with_rss(mut cmd: Command) -> (std::process::ExitStatus, u64) {
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid);
    std::mem::forget(child);
    use std::os::unix::process::ExitStatusExt;
    (
        std::process::ExitStatus::from_raw(status),
        ru.ru_maxrss as u64,
    )
}

/// A real OpenSSH server on 127.0.0.1, with its own host key, config and authorized client key,
/// started by the test and stopped (by PID) when dropped.
pub struct TestSshd {
    child: std::process::Child,
    pub port: u16,
    pub dir: PathBuf,
    pub log: PathBuf,
}

impl TestSshd {
    pub fn start(env: &Env) -> TestSshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "sshd is needed for the ssh tests: run scripts/test as root (it installs openssh-server)"
        );
        let dir = env.mkdir("sshd");
        for key in ["host_key", "client_key"] {
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(key))
                .status()
                .unwrap();
            assert!(st.success());
        }
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        // sshd insists on its privilege-separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nUsePAM no\nStrictModes no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nLogLevel VERBOSE\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let log = dir.join("sshd.log");
        let child = Command::new(sshd)
            .arg("-D")
            .arg("-f")
            .arg(&config)
            .arg("-E")
            .arg(&log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let up = wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "sshd did not start listening on port {port}");
        TestSshd {
            child,
            port,
            dir,
            log,
        }
    }

    /// `GIT_SSH_COMMAND` for clients of this server.
    pub fn ssh_command(&self) -> String {
        format!(
            "ssh -p {} -i {}/client_key -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR",
            self.port,
            self.dir.display()
        )
    }

    /// How many logins the server has accepted so far.
    pub fn logins(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("Accepted publickey")
            .count()
    }
}

impl Drop for TestSshd {
    /// Stops the server and the sessions it forked (which outlive it otherwise): a client's
    /// shared connection (ControlPersist) then ends too, with no `ssh -O exit` per test.
    fn drop(&mut self) {
        let sessions = descendants(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        for p in sessions {
            // SAFETY: kill has no memory-safety preconditions; these are our descendants.
            unsafe { libc::kill(p as libc::pid_t, libc::SIGTERM) };
        }
    }
}

/// All descendants of `pid`, from /proc.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces; split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        if let Some(ppid) = rest
            .split_whitespace()
            .nth(1)
            .and_then(|x| x.parse::<u32>().ok())
        {
            parent_of.push((p, ppid));
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let cur = out[i];
        out.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == cur)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out.remove(0);
    out
}

/// Whether a repository's store (non-bare `.git/annex/objects` or bare `annex/objects`) holds
/// `key`, in either hash layout.
pub fn has_key(d: &Path, key: &str) -> bool {
    [d.join(".git/annex/objects"), d.join("annex/objects")]
        .iter()
        .any(|objects| {
            std::fs::read_dir(objects).is_ok_and(|l1| {
                l1.flatten().any(|a| {
                    std::fs::read_dir(a.path()).is_ok_and(|l2| {
                        l2.flatten().any(|b| b.path().join(key).join(key).is_file())
                    })
                })
            })
        })
}

/// A bare git-annex repository `t.git` cloned from ferry repository `a` (described
/// "transfer"), added to `a` as remote `t` and synced once.
pub fn transfer_repo(env: &Env, a: &Path) -> std::path::PathBuf {
    env.git(
        env.tmp.path(),
        &["clone", "-q", "--bare", a.to_str().unwrap(), "t.git"],
    )
    .assert_ok();
    let t = env.path("t.git");
    env.annex(&t, &["init", "-q", "transfer"]).assert_ok();
    env.git(a, &["remote", "add", "t", "../t.git"]).assert_ok();
    env.ferry(a, &["sync"]).assert_ok();
    t
}

/// A ferry clone `name` of `t.git` (its remote `t`).
pub fn clone_of_transfer_repo(env: &Env, name: &str) -> std::path::PathBuf {
    env.git(env.tmp.path(), &["clone", "-q", "-o", "t", "t.git", name])
        .assert_ok();
    let d = env.path(name);
    env.ferry(&d, &["init", name]).assert_ok();
    d
}

/// "b", a ferry clone of "a" (remote "origin"; no remote back yet).
/// Pushes the git-annex branch and HEAD of `dir` to its `origin` the way the git-annex
/// assistant does when a normal push is refused (its "tagged push"): into a namespace of the
/// pushing clone's own, `refs/synced/<uuid>/git-annex`, and `to` for the branch.
pub fn tagged_push(env: &Env, dir: &Path, to: &str) {
    let uuid = config(env, dir, "annex.uuid");
    env.git(
        dir,
        &[
            "push",
            "-q",
            "origin",
            &format!("+git-annex:refs/synced/{uuid}/git-annex"),
            &format!("HEAD:{to}"),
        ],
    )
    .assert_ok();
}

pub fn clone_b(env: &Env) -> PathBuf {
    env.git(env.tmp.path(), &["clone", "-q", "a", "b"])
        .assert_ok();
    let b = env.path("b");
    env.ferry(&b, &["init", "b"]).assert_ok();
    b
}
