use crate::ui;
use ferry_lib::ops::fsck::{FsckOptions, FsckReport, fsck};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Files or directories (default: the current directory)
    paths: Vec<std::path::PathBuf>,
    /// Only check that content is present; do not re-hash it
    #[arg(long)]
    fast: bool,
    /// Hashing threads (default: number of cores)
    #[arg(short = 'J', long = "jobs")]
    jobs: Option<usize>,
    /// One JSON object per file on stdout
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let repo = ui::open_repo()?;
    let (paths, missing) = ui::resolve_paths(&repo, &a.paths)?;
    let opts = FsckOptions {
        fast: a.fast,
        jobs: a.jobs.unwrap_or_else(ui::default_jobs),
    };
    let json = a.json;
    let on_report = |r: &FsckReport| {
        let file = ui::show(&r.path);
        if json {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            v["command"] = "fsck".into();
            v["file"] = file.into();
            v["success"] = r.ok().into();
            println!("{v}");
            return;
        }
        for n in &r.notes {
            eprintln!("fsck {file}: note: {n}");
        }
        if r.ok() {
            println!("fsck {file} ok");
        } else {
            for p in &r.problems {
                eprintln!("fsck {file}: {p}");
            }
            println!("fsck {file} failed");
        }
    };
    let failed = fsck(&repo, &paths, &opts, &on_report)?;
    if failed > 0 && !json {
        eprintln!("fsck: {failed} file(s) with problems");
    }
    Ok(if failed > 0 || missing {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
