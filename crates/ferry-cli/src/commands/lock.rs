use crate::ui;
use ferry_lib::ops::unlock::Changed;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Files or directories (default: the current directory)
    paths: Vec<std::path::PathBuf>,
    /// One JSON object per file on stdout
    #[arg(long)]
    json: bool,
}

/// `ferry lock` (locked = true) and `ferry unlock`.
pub fn run(a: Args, locking: bool) -> anyhow::Result<ExitCode> {
    let repo = ui::open_repo()?;
    let (paths, missing) = ui::resolve_paths(&repo, &a.paths)?;
    if !locking && !ferry_lib::repo::filter_configured(&repo)? {
        anyhow::bail!(
            "unlocked files need the annex git filter, which is not configured here; run `ferry init` to configure it"
        );
    }
    let command = if locking { "lock" } else { "unlock" };
    let json = a.json;
    let mut on = |c: &Changed| {
        let file = ui::show(&c.path);
        if json {
            println!(
                "{}",
                serde_json::json!({"command": command, "file": file, "key": c.key, "success": c.ok, "note": c.action})
            );
        } else if c.ok {
            println!("{command} {file} ok ({})", c.action);
        } else {
            eprintln!("{command} {file} failed: {}", c.action);
        }
    };
    let failed = if locking {
        ferry_lib::ops::unlock::lock(&repo, &paths, &mut on)?
    } else {
        ferry_lib::ops::unlock::unlock(&repo, &paths, &mut on)?
    };
    Ok(if failed > 0 || missing {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
