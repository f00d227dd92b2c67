use crate::ui;
use std::process::ExitCode;

/// Serves git's filter protocol on stdin/stdout. Messages go to stderr, which git shows.
pub fn run() -> anyhow::Result<ExitCode> {
    // git starts a filter for every command that cleans or smudges a file; config is read
    // only if a request needs it.
    let opts = ferry_lib::repo::RepoOptions {
        lazy_config: true,
        ..ui::options()
    };
    let repo = ferry_lib::repo::Repo::discover(&ui::cwd()?, &opts)?;
    ferry_lib::filter::run(&repo, std::io::stdin().lock(), std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}
