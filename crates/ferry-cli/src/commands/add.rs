use crate::ui;
use ferry_lib::hash::Backend;
use ferry_lib::ops::add::{AddEvent, AddOptions, add};
use indicatif::{ProgressBar, ProgressStyle};
use std::process::ExitCode;
use std::sync::Mutex;

#[derive(clap::Args)]
pub struct Args {
    /// Files or directories to add (default: the current directory)
    paths: Vec<std::path::PathBuf>,
    /// Hashing threads (default: number of cores)
    #[arg(short = 'J', long = "jobs")]
    jobs: Option<usize>,
    /// Key backend (default: annex.backend, else SHA256E)
    #[arg(long)]
    backend: Option<String>,
    /// Annex every file, ignoring annex.largefiles and the dotfile rule
    #[arg(long, conflicts_with = "force_small")]
    force_large: bool,
    /// Add every file to git, ignoring annex.largefiles
    #[arg(long)]
    force_small: bool,
    /// Add as unlocked files: the file stays an ordinary, editable file (default:
    /// annex.addunlocked)
    #[arg(long)]
    unlocked: bool,
    /// One JSON object per file on stdout
    #[arg(long)]
    json: bool,
    /// Print only errors
    #[arg(short, long)]
    quiet: bool,
}

pub fn parse_backend(name: &str) -> anyhow::Result<Backend> {
    Backend::from_variety(name).ok_or_else(|| {
        anyhow::anyhow!(
            "unsupported backend {name:?}; ferry supports SHA256E, SHA256, SHA512E and SHA512"
        )
    })
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let repo = ui::open_repo()?;
    let (paths, missing) = ui::resolve_paths(&repo, &a.paths)?;
    let backend = match a.backend.or(repo.config().get("annex.backend").cloned()) {
        Some(b) => parse_backend(&b)?,
        None => Backend::Sha256E,
    };
    let opts = AddOptions {
        paths,
        jobs: a.jobs.unwrap_or_else(ui::default_jobs),
        backend,
        unlocked: a.unlocked
            || ferry_lib::git::config_flag(repo.config(), "annex.addunlocked", false),
        thin: ferry_lib::git::config_flag(repo.config(), "annex.thin", false),
        deletions: false,
        config: None,
        attrs: None,
        force: if a.force_large {
            Some(true)
        } else if a.force_small {
            Some(false)
        } else {
            None
        },
    };
    if opts.unlocked && !ferry_lib::repo::filter_configured(&repo)? {
        anyhow::bail!(
            "unlocked files need the annex git filter, which is not configured in this repository; \
             run `ferry init` to configure it"
        );
    }
    let show_bar = !a.json && !a.quiet && ui::stderr_is_tty();
    let bar: Mutex<Option<ProgressBar>> = Mutex::new(None);
    let (json, quiet) = (a.json, a.quiet);
    let on_event = |e: &AddEvent| {
        let mut bar = bar.lock().unwrap();
        match e {
            AddEvent::Planned { files, bytes } => {
                if show_bar && (*files > 200 || *bytes > 256 << 20) {
                    let b = ProgressBar::new(*bytes);
                    b.set_style(
                        ProgressStyle::with_template(
                            "add {bytes}/{total_bytes} [{bar:30}] {bytes_per_sec} eta {eta}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    *bar = Some(b);
                }
            }
            AddEvent::Annexed { path, key, bytes } => {
                if let Some(b) = bar.as_ref() {
                    b.inc(*bytes);
                }
                line(
                    &bar,
                    json,
                    quiet,
                    serde_json::json!({"command":"add","file":ui::show(path),"key":key.to_string(),"success":true}),
                    || format!("add {} ok", ui::show(path)),
                );
            }
            AddEvent::Restaged { path, key } => line(
                &bar,
                json,
                quiet,
                serde_json::json!({"command":"add","file":ui::show(path),"key":key.to_string(),"success":true,"note":"annex link staged"}),
                || format!("add {} (annex link) ok", ui::show(path)),
            ),
            AddEvent::ToGit { path, why } => line(
                &bar,
                json,
                quiet,
                serde_json::json!({"command":"add","file":ui::show(path),"success":true,"note":format!("{why}; added to git")}),
                || format!("add {} ({why}; added to git) ok", ui::show(path)),
            ),
            AddEvent::Skipped { path, reason } => problem(
                &bar,
                json,
                format!("add {} skipped: {reason}", ui::show(path)),
                serde_json::json!({"command":"add","file":ui::show(path),"success":true,"skipped":reason}),
            ),
            AddEvent::Stopped { remaining, reason } => problem(
                &bar,
                json,
                format!("ferry: stopped: {reason} ({remaining} file(s) not added)"),
                serde_json::json!({"command":"add","success":false,"error":reason,"not_added":remaining}),
            ),
            AddEvent::Failed { path, error } => problem(
                &bar,
                json,
                format!("add {} failed: {error}", ui::show(path)),
                serde_json::json!({"command":"add","file":ui::show(path),"success":false,"error":error}),
            ),
            AddEvent::Removed { .. } => {} // only with `deletions`, which `ferry add` does not ask
        }
    };
    let summary = add(&repo, &opts, &on_event)?;
    if let Some(b) = bar.lock().unwrap().take() {
        b.finish_and_clear();
    }
    if !json && !quiet && (summary.annexed + summary.to_git + summary.restaged) > 0 {
        eprintln!(
            "added {} file(s) to the annex, {} to git{}; commit with `git commit` (or `ferry sync`)",
            summary.annexed + summary.restaged,
            summary.to_git,
            if summary.failed > 0 {
                format!("; {} failed", summary.failed)
            } else {
                String::new()
            }
        );
    }
    Ok(if summary.failed > 0 || missing {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn line(
    bar: &Option<ProgressBar>,
    json: bool,
    quiet: bool,
    j: serde_json::Value,
    text: impl FnOnce() -> String,
) {
    if json {
        println!("{j}");
    } else if !quiet {
        match bar {
            // With a bar, per-file lines would scroll it away; the bar shows progress instead.
            Some(_) => {}
            None => println!("{}", text()),
        }
    }
}

/// A message for a person on stderr (above the progress bar, if any), and its JSON object on
/// stdout when `--json` is on.
fn problem(bar: &Option<ProgressBar>, json: bool, msg: String, j: serde_json::Value) {
    match bar {
        Some(b) => b.suspend(|| eprintln!("{msg}")),
        None => eprintln!("{msg}"),
    }
    if json {
        println!("{j}");
    }
}
