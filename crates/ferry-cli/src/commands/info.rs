use crate::ui;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let repo = ui::open_repo()?;
    let info = ferry_lib::ops::info::info(&repo)?;
    if a.json {
        println!("{}", serde_json::to_string(&info)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("repository: {} -- {}", info.uuid, info.description);
    println!(
        "annexed files: {} ({} distinct keys, {})",
        info.annexed_files,
        info.keys,
        human(info.size)
    );
    println!(
        "present here: {} files ({} keys, {})",
        info.present_files,
        info.present_keys,
        human(info.present_size)
    );
    println!("numcopies: {}", info.numcopies);
    println!("repositories:");
    for r in &info.repositories {
        println!(
            "  {} -- {}{}",
            r.uuid,
            r.description,
            if r.here { " [here]" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn human(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
