//! `get`, `copy`, `move`, `drop`: moving content between this repository and its remotes.

use crate::ui;
use ferry_lib::annexed::AnnexedFile;
use ferry_lib::ops::content::{Action, ContentOptions, Events, FileOutcome, transfer};
use ferry_lib::transfer::bwlimit::Limits;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

/// Set by SIGINT/SIGTERM: running transfers stop at their next chunk (partial files are kept
/// for a resume, the transfer is recorded as failed) and no new ones start. A second signal
/// kills the process as usual.
static CANCEL: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    // Storing to an atomic is async-signal-safe.
    CANCEL.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn cancel_on_interrupt() -> &'static AtomicBool {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic; SA_RESETHAND restores the default
        // action, so a second signal ends the process.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_interrupt as *const () as usize;
            sa.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    &CANCEL
}

/// Exit status for an interrupted command, after saying how to go on.
fn interrupted(command: &str) -> Option<ExitCode> {
    CANCEL.load(std::sync::atomic::Ordering::Relaxed).then(|| {
        eprintln!(
            "ferry: {command} interrupted; partial transfers are kept, run it again to resume"
        );
        ExitCode::from(130)
    })
}

/// Files at least this big get a progress bar on a terminal.
const BAR_MIN: u64 = 8 << 20;

#[derive(clap::Args)]
pub struct GetArgs {
    /// Files or directories (default: the current directory)
    paths: Vec<PathBuf>,
    /// Get the content from this remote only
    #[arg(long)]
    from: Option<String>,
    /// Parallel transfers
    #[arg(short = 'J', long = "jobs", default_value_t = 1)]
    jobs: usize,
    /// One JSON object per file on stdout
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("dir").required(true).args(["to", "from"])))]
pub struct CopyArgs {
    /// Files or directories (default: the current directory)
    paths: Vec<PathBuf>,
    /// Send content that is here to this remote
    #[arg(long)]
    to: Option<String>,
    /// Get content from this remote
    #[arg(long)]
    from: Option<String>,
    /// Parallel transfers
    #[arg(short = 'J', long = "jobs", default_value_t = 1)]
    jobs: usize,
    /// One JSON object per file on stdout
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct DropArgs {
    /// Files or directories (default: the current directory)
    paths: Vec<PathBuf>,
    /// Drop the content from this remote instead of from here
    #[arg(long)]
    from: Option<String>,
    /// One JSON object per file on stdout
    #[arg(long)]
    json: bool,
}

struct Printer {
    /// "sync" prints "get"/"copy" per file, by direction.
    command: &'static str,
    json: bool,
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<Vec<u8>, ProgressBar>>,
}

impl Printer {
    fn new(command: &'static str, json: bool) -> Printer {
        Printer {
            command,
            json,
            multi: (!json && ui::stderr_is_tty()).then(MultiProgress::new),
            bars: Mutex::new(HashMap::new()),
        }
    }
}

impl Events for Printer {
    fn started(&self, f: &AnnexedFile, what: &str) {
        let (Some(multi), Some(size)) = (&self.multi, f.key.size) else {
            return;
        };
        if size < BAR_MIN {
            return;
        }
        let bar = multi.add(ProgressBar::new(size));
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} {bar:30} {percent:>3}% {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style);
        }
        bar.set_message(format!("{} {} ({what})", self.command, ui::show(&f.path)));
        self.bars.lock().unwrap().insert(f.path.clone(), bar);
    }

    fn waiting(&self, f: &AnnexedFile) {
        let line = format!(
            "{} {}: the same transfer is already running (another ferry or git-annex); waiting for it",
            self.command,
            ui::show(&f.path)
        );
        match &self.multi {
            Some(m) => {
                let _ = m.println(&line);
            }
            None => eprintln!("{line}"),
        }
    }

    fn progress(&self, f: &AnnexedFile, done: u64) {
        if let Some(b) = self.bars.lock().unwrap().get(&f.path) {
            b.set_position(done);
        }
    }

    fn done(&self, o: &FileOutcome) {
        if let Some(b) = self.bars.lock().unwrap().remove(&o.path) {
            b.finish_and_clear();
        }
        let file = ui::show(&o.path);
        let command = match (self.command, o.note.as_deref()) {
            ("sync", Some(n)) if n.starts_with("to ") => "copy",
            ("sync", Some(n)) if n.starts_with("drop") => "drop",
            ("sync", _) => "get",
            (c, _) => c,
        };
        if self.json {
            let mut v = serde_json::to_value(o).unwrap_or_default();
            v["command"] = command.into();
            v["file"] = file.into();
            // git-annex's --json names: the input path and a list of error messages.
            v["input"] = serde_json::json!([v["file"].clone()]);
            v["error-messages"] = serde_json::json!(o.error.iter().collect::<Vec<_>>());
            println!("{v}");
            return;
        }
        let note = o
            .note
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        let line = if o.success {
            format!("{command} {file}{note} ok")
        } else {
            format!("{command} {file}{note} failed")
        };
        match &self.multi {
            Some(m) => {
                let _ = m.println(&line);
            }
            None => println!("{line}"),
        }
        if let Some(e) = &o.error {
            eprintln!("ferry: error: {file}: {e}");
        }
    }
}

fn run_action(
    command: &'static str,
    paths: &[PathBuf],
    action: Action,
    jobs: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let repo = ui::open_repo()?;
    // A bad bandwidth limit is an error before anything moves.
    let limits = Limits::from_config(repo.config())?;
    let (paths, missing) = ui::resolve_paths(&repo, paths)?;
    let (remotes, unusable) = ferry_lib::remote::configured(&repo)?;
    let printer = Printer::new(command, json);
    let opts = ContentOptions {
        jobs: jobs.max(1),
        cancel: cancel_on_interrupt(),
        limits: &limits,
    };
    let s = transfer(&repo, &remotes, &unusable, &paths, &action, &opts, &printer)?;
    if let Some(code) = interrupted(command) {
        return Ok(code);
    }
    if s.failed > 0 && !json {
        eprintln!("{command}: {} file(s) failed", s.failed);
    }
    Ok(if s.failed > 0 || missing {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn get(a: GetArgs) -> anyhow::Result<ExitCode> {
    run_action(
        "get",
        &a.paths,
        Action::Get { from: a.from },
        a.jobs,
        a.json,
    )
}

pub fn copy(a: CopyArgs, moving: bool) -> anyhow::Result<ExitCode> {
    let action = match (a.to, a.from, moving) {
        (Some(to), _, false) => Action::CopyTo(to),
        (Some(to), _, true) => Action::MoveTo(to),
        (None, Some(from), false) => Action::Get { from: Some(from) },
        (None, Some(from), true) => Action::MoveFrom(from),
        (None, None, _) => anyhow::bail!("say where: --to REMOTE or --from REMOTE"),
    };
    let command = if moving { "move" } else { "copy" };
    run_action(command, &a.paths, action, a.jobs, a.json)
}

pub fn drop(a: DropArgs) -> anyhow::Result<ExitCode> {
    let repo = ui::open_repo()?;
    let (paths, missing) = ui::resolve_paths(&repo, &a.paths)?;
    let (remotes, unusable) = ferry_lib::remote::configured(&repo)?;
    let printer = Printer::new("drop", a.json);
    let opts = ContentOptions {
        jobs: 1,
        cancel: cancel_on_interrupt(),
        limits: &Limits::default(),
    };
    let s = ferry_lib::ops::drop::drop(
        &repo,
        &remotes,
        &unusable,
        &paths,
        a.from.as_deref(),
        &opts,
        &printer,
    )?;
    if s.failed > 0 && !a.json {
        eprintln!("drop: {} file(s) not dropped", s.failed);
    }
    Ok(if s.failed > 0 || missing {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(clap::Args)]
pub struct CopiesArgs {
    /// The new value (shows the current one when left out)
    n: Option<u32>,
    /// Print the result as one JSON object (the value and where it comes from)
    #[arg(long)]
    json: bool,
}

/// `numcopies` / `mincopies`.
pub fn copies(a: CopiesArgs, min: bool) -> anyhow::Result<ExitCode> {
    super::preferred::copies(a.n, a.json, min)
}

/// The content part of `sync --content`: returns (all ok, files transferred).
pub fn sync_content(
    repo: &ferry_lib::Repo,
    only: &[String],
    jobs: usize,
    json: bool,
    limits: &Limits,
) -> anyhow::Result<(bool, usize)> {
    let (remotes, _unusable) = ferry_lib::remote::configured(repo)?;
    let printer = Printer::new("sync", json);
    let opts = ContentOptions {
        jobs: jobs.max(1),
        cancel: cancel_on_interrupt(),
        limits,
    };
    let s = ferry_lib::ops::content::sync_content(repo, &remotes, only, &[], &opts, &printer)?;
    Ok((s.failed == 0, s.ok))
}
