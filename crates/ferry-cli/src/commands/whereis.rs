use crate::ui;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Files or directories (default: the current directory)
    paths: Vec<std::path::PathBuf>,
    /// One JSON object per file on stdout
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let repo = ui::open_repo()?;
    let (paths, missing) = ui::resolve_paths(&repo, &a.paths)?;
    let results = ferry_lib::ops::whereis::whereis(&repo, &paths)?;
    let mut failed = missing;
    for w in &results {
        let file = ui::show(&w.file.path);
        if w.skipped_lines > 0 {
            eprintln!(
                "ferry: warning: {} unreadable line(s) in the location log of {file} were ignored",
                w.skipped_lines
            );
        }
        if w.holders.is_empty() {
            failed = true;
        }
        if a.json {
            let v = serde_json::json!({
                "command": "whereis",
                "file": file,
                "key": w.file.key.to_string(),
                "copies": w.holders.len(),
                "whereis": w.holders,
                "success": !w.holders.is_empty(),
            });
            println!("{v}");
        } else {
            let n = w.holders.len();
            println!(
                "whereis {file} ({n} cop{})",
                if n == 1 { "y" } else { "ies" }
            );
            for h in &w.holders {
                let mut tags = Vec::new();
                if h.here {
                    tags.push("here".to_string());
                }
                if let Some(r) = &h.remote {
                    tags.push(r.clone());
                }
                let tags = if tags.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", tags.join(", "))
                };
                println!("  \t{} -- {}{tags}", h.uuid, h.description);
            }
            if n == 0 {
                println!("  (no known copies)");
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
