use crate::ui;
use ferry_lib::ops::sync::{Outcome, SyncOptions, sync};
use ferry_lib::transfer::bwlimit::Limits;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Remotes to sync with (default: all remotes whose annex-sync is not false)
    remotes: Vec<String>,
    /// Do not commit pending changes of tracked files first
    #[arg(long)]
    no_commit: bool,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
    /// Also transfer content as preferred content says (every file everywhere when none is
    /// set), and drop what is no longer wanted where numcopies allows (default: git config
    /// annex.synccontent; remote.NAME.annex-synccontent=false keeps a remote git-only)
    #[arg(long)]
    content: bool,
    /// Parallel transfers for --content
    #[arg(short = 'J', long = "jobs", default_value_t = 1)]
    jobs: usize,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let repo = ui::open_repo()?;
    let content = a.content || ferry_lib::ops::plan::synccontent(&repo).unwrap_or(false);
    // A bad bandwidth limit is an error before anything is synced.
    let limits = content
        .then(|| Limits::from_config(repo.config()))
        .transpose()?;
    let opts = SyncOptions {
        remotes: a.remotes,
        no_commit: a.no_commit,
        ssh_command: std::env::var("GIT_SSH_COMMAND").ok(),
    };
    let report = sync(&repo, &opts)?;
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["command"] = "sync".into();
        v["success"] = report.ok().into();
        println!("{v}");
    } else {
        if report.committed {
            println!("commit ok");
        }
        let word = |o: &Outcome| match o {
            Outcome::Ok => "ok",
            Outcome::Skipped => "skipped",
            Outcome::Unavailable => "unavailable",
            Outcome::Failed => "FAILED",
        };
        for r in &report.remotes {
            let msg = r
                .message
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default();
            println!(
                "sync {}: pull {}, push {}{msg}",
                r.remote,
                word(&r.pulled),
                word(&r.pushed)
            );
        }
        if report.remotes.is_empty() {
            println!("sync: no remotes to sync with (add one with git remote add)");
        }
        for e in &report.errors {
            eprintln!("ferry: error: {e}");
        }
    }
    let mut content_ok = true;
    if let Some(limits) = &limits {
        let (ok, moved) =
            crate::commands::content::sync_content(&repo, &opts.remotes, a.jobs, a.json, limits)?;
        content_ok = ok;
        if moved > 0 {
            // Tell the remotes what moved: push the updated location logs.
            let again = sync(
                &repo,
                &SyncOptions {
                    no_commit: true,
                    ..opts
                },
            )?;
            for e in &again.errors {
                eprintln!("ferry: error: {e}");
            }
            content_ok &= again.ok();
        }
    }
    Ok(if report.ok() && content_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
