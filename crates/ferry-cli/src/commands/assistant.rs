use crate::ui;
use anyhow::Context;
use ferry_lib::Repo;
use ferry_lib::daemon::{self, Daemon, Logger};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// The folder to keep in sync (default: the current repository). Created and made a
    /// ferry repository if it is not one yet.
    dir: Option<PathBuf>,
    /// Stay attached to the terminal and log to stderr
    #[arg(long)]
    foreground: bool,
    /// Stop the daemon running on this repository
    #[arg(long, conflicts_with = "foreground")]
    stop: bool,
    /// Log to this file, rotated (used by the detached daemon)
    #[arg(long, hide = true)]
    log_file: Option<PathBuf>,
}

fn target_dir(a: &Args) -> anyhow::Result<PathBuf> {
    let cwd = ui::cwd()?;
    Ok(match &a.dir {
        Some(d) if d.is_absolute() => d.clone(),
        Some(d) => cwd.join(d),
        None => cwd,
    })
}

/// Opens the repository at `dir`, creating and initialising it when needed.
fn open_or_create(dir: &Path) -> anyhow::Result<Repo> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    match Repo::open(dir, &ui::options()) {
        Ok(r) => Ok(r),
        Err(ferry_lib::Error::NotARepo(_)) | Err(ferry_lib::Error::NotInitialized(_)) => {
            let desc = super::init::default_description(dir);
            let (repo, _) = Repo::init(dir, None, &desc, &ui::options())?;
            eprintln!(
                "ferry: made {} a ferry repository (uuid {})",
                dir.display(),
                repo.uuid()
            );
            Ok(repo)
        }
        Err(e) => Err(e.into()),
    }
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let dir = target_dir(&a)?;
    if a.stop {
        let repo = Repo::open(&dir, &ui::options())?;
        return stop(&repo);
    }
    let repo = open_or_create(&dir)?;
    if a.foreground {
        return foreground(repo, a.log_file);
    }
    if let Some(pid) = daemon::running_pid(&repo) {
        anyhow::bail!(
            "a daemon is already running on this repository (pid {pid}); stop it with `ferry assistant --stop`"
        );
    }
    let log = repo.annex_dir().join("daemon.log");
    rotate(&log);
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("opening {}", log.display()))?;
    let top = repo.work_tree()?.to_path_buf();
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("assistant")
        .arg("--foreground")
        .arg("--log-file")
        .arg(&log)
        .arg(&top)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from our session.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the daemon")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let last: Vec<&str> = tail.lines().rev().take(5).collect();
            anyhow::bail!(
                "the daemon exited at once ({status}); last lines of {}:\n{}",
                log.display(),
                last.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if daemon::running_pid(&repo) == Some(child.id()) {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the daemon (pid {}) did not start within 30 s; see {}",
                child.id(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "assistant started on {} (pid {}); log: {}",
        top.display(),
        child.id(),
        log.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn stop(repo: &Repo) -> anyhow::Result<ExitCode> {
    let Some(pid) = daemon::running_pid(repo) else {
        println!("no daemon is running on this repository");
        return Ok(ExitCode::SUCCESS);
    };
    if pid == 0 {
        anyhow::bail!(
            "a daemon holds {} but its pid is unreadable; find it with `fuser {}` and stop it",
            daemon::pid_file(repo).display(),
            daemon::pid_file(repo).display()
        );
    }
    // SAFETY: plain kill(2).
    if unsafe { libc::kill(pid as i32, libc::SIGTERM) } != 0 {
        anyhow::bail!(
            "cannot signal the daemon (pid {pid}): {}",
            std::io::Error::last_os_error()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while daemon::running_pid(repo).is_some() {
        if Instant::now() > deadline {
            anyhow::bail!("the daemon (pid {pid}) did not stop within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("assistant stopped (pid {pid})");
    Ok(ExitCode::SUCCESS)
}

/// Keeps `daemon.log` and up to four older ones (`daemon.log.1` newest).
fn rotate(log: &Path) {
    const MAX: u64 = 1 << 20;
    if std::fs::metadata(log).map(|m| m.len()).unwrap_or(0) < MAX {
        return;
    }
    for i in (1..4).rev() {
        let _ = std::fs::rename(
            log.with_extension(format!("log.{i}")),
            log.with_extension(format!("log.{}", i + 1)),
        );
    }
    let _ = std::fs::rename(log, log.with_extension("log.1"));
}

fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{:03}", now.subsec_millis())
}

fn logger(file: Option<PathBuf>) -> Logger {
    match file {
        None => Arc::new(|line: &str| eprintln!("[{}] {line}", timestamp())),
        Some(path) => {
            let lock = std::sync::Mutex::new(());
            Arc::new(move |line: &str| {
                let _g = lock.lock();
                rotate(&path);
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                {
                    let _ = writeln!(f, "[{}] {line}", timestamp());
                }
            })
        }
    }
}

fn foreground(repo: Repo, log_file: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let log = logger(log_file);
    let d = Daemon::new(
        repo,
        daemon::Options {
            ssh_command: std::env::var("GIT_SSH_COMMAND").ok(),
            log: log.clone(),
        },
    )?;
    let stopper = d.stopper();
    on_termination(move || stopper.stop())?;
    log(&format!("assistant started (pid {})", std::process::id()));
    d.run()?;
    Ok(ExitCode::SUCCESS)
}

static SIGNAL_PIPE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_signal(_: libc::c_int) {
    let fd = SIGNAL_PIPE.load(std::sync::atomic::Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the byte's value does not matter.
        unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
    }
}

/// Calls `f` (once, on a thread) when SIGTERM or SIGINT arrives.
fn on_termination(f: impl FnOnce() + Send + 'static) -> anyhow::Result<()> {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid 2-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        anyhow::bail!("pipe: {}", std::io::Error::last_os_error());
    }
    SIGNAL_PIPE.store(fds[1], std::sync::atomic::Ordering::Relaxed);
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: installing a handler that only calls async-signal-safe write(2).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    let rfd = fds[0];
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut b = [0u8; 1];
            // SAFETY: reading one byte into a valid buffer.
            while unsafe { libc::read(rfd, b.as_mut_ptr().cast(), 1) } < 0 {}
            f();
        })?;
    Ok(())
}
