//! `ferry`: the command line. Parses arguments, resolves the environment (cwd, clock, terminal),
//! calls the library, prints results, and maps errors to messages with hints and exit codes.

mod commands;
mod ui;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Continuous, git-annex compatible file sync",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make the current directory a ferry repository (creating a git repository if needed)
    Init(commands::init::Args),
    /// Annex files (or add small files and dotfiles to git) and stage them
    Add(commands::add::Args),
    /// Show which repositories hold the content of annexed files
    Whereis(commands::whereis::Args),
    /// Explain what happens to files' content: where it is, who wants it and why, numcopies,
    /// what sync --content would do, and transfers running, queued or failed
    Explain(commands::explain::Args),
    /// Summarize the repository: identity, annexed files, sizes, what is present here
    Info(commands::info::Args),
    /// Commit, pull from and push to every remote (git level: branches and location logs)
    Sync(commands::sync::Args),
    /// Keep a folder in sync by itself: watch, commit, push and merge (creates the repository
    /// if needed)
    Assistant(commands::assistant::Args),
    /// Show what the assistant daemon is doing
    Status(commands::status::Args),
    /// List running transfers (any process, git-annex too) and the assistant's queue, with
    /// bytes done, rate and time left
    Transfers(commands::transfers::Args),
    /// Make unlocked files locked: symlinks into the store (modified content is annexed first)
    Lock(commands::lock::Args),
    /// Make locked files unlocked: ordinary, editable files (staged as pointers)
    Unlock(commands::lock::Args),
    /// Verify annexed content and fix the location log
    Fsck(commands::fsck::Args),
    /// Print the key a file's content would get, without adding it
    Calckey(commands::calckey::Args),
    /// Get the content of annexed files from a remote that has it
    Get(commands::content::GetArgs),
    /// Copy content to (--to) or from (--from) a remote
    Copy(commands::content::CopyArgs),
    /// Move content to (--to) or from (--from) a remote (dropped at the source, if safe)
    Move(commands::content::CopyArgs),
    /// Remove content here (or from a remote with --from), if enough other copies are verified
    Drop(commands::content::DropArgs),
    /// Show or set how many copies of each file must exist (numcopies.log)
    Numcopies(commands::content::CopiesArgs),
    /// Show or set how many copies must be verified by locking (mincopies.log)
    Mincopies(commands::content::CopiesArgs),
    /// Show or set a repository's preferred content expression (preferred-content.log)
    Wanted(commands::preferred::ExprArgs),
    /// Show or set a repository's required content expression (required-content.log)
    Required(commands::preferred::ExprArgs),
    /// Show a repository's groups, or add it to a group (group.log)
    Group(commands::preferred::GroupArgs),
    /// Remove a repository from a group
    Ungroup(commands::preferred::UngroupArgs),
    /// Show or set the expression `groupwanted` means for a group
    Groupwanted(commands::preferred::GroupWantedArgs),
    /// git's long-running clean/smudge filter (configured by `ferry init`; run by git)
    #[command(hide = true)]
    FilterProcess,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Init(a) => commands::init::run(a),
        Command::Add(a) => commands::add::run(a),
        Command::Whereis(a) => commands::whereis::run(a),
        Command::Explain(a) => commands::explain::run(a),
        Command::Info(a) => commands::info::run(a),
        Command::Fsck(a) => commands::fsck::run(a),
        Command::Sync(a) => commands::sync::run(a),
        Command::Assistant(a) => commands::assistant::run(a),
        Command::Status(a) => commands::status::run(a),
        Command::Transfers(a) => commands::transfers::run(a),
        Command::Lock(a) => commands::lock::run(a, true),
        Command::Unlock(a) => commands::lock::run(a, false),
        Command::Calckey(a) => commands::calckey::run(a),
        Command::Get(a) => commands::content::get(a),
        Command::Copy(a) => commands::content::copy(a, false),
        Command::Move(a) => commands::content::copy(a, true),
        Command::Drop(a) => commands::content::drop(a),
        Command::Numcopies(a) => commands::content::copies(a, false),
        Command::Mincopies(a) => commands::content::copies(a, true),
        Command::Wanted(a) => commands::preferred::expr(a, false),
        Command::Required(a) => commands::preferred::expr(a, true),
        Command::Group(a) => commands::preferred::group(a),
        Command::Ungroup(a) => commands::preferred::ungroup(a),
        Command::Groupwanted(a) => commands::preferred::groupwanted(a),
        Command::FilterProcess => commands::filter::run(),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            ui::report_error(&e);
            ExitCode::from(1)
        }
    }
}
