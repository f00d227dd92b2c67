use crate::ui;
use std::process::ExitCode;

/// Serves git's filter protocol on stdin/stdout. Messages go to stderr, which git shows.
pub fn run() -> anyhow::Result<ExitCode> {
    let repo = ui::open_repo()?;
    ferry_lib::filter::run(&repo, std::io::stdin().lock(), std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}
