//! `wanted`, `required`, `group`, `ungroup`, `groupwanted`: show or set what a repository
//! wants (git-annex's commands of the same names, same logs).

use crate::ui;
use ferry_lib::preferred;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ExprArgs {
    /// The repository: here (or .), a remote name, a UUID or a description
    repo: String,
    /// The new expression (shows the current one when left out)
    expr: Option<String>,
}

#[derive(clap::Args)]
pub struct GroupArgs {
    /// The repository: here (or .), a remote name, a UUID or a description
    repo: String,
    /// The group to add it to (shows its groups when left out)
    group: Option<String>,
}

#[derive(clap::Args)]
pub struct UngroupArgs {
    /// The repository: here (or .), a remote name, a UUID or a description
    repo: String,
    /// The group to remove it from
    group: String,
}

#[derive(clap::Args)]
pub struct GroupWantedArgs {
    /// The group
    group: String,
    /// The new expression (shows the current one when left out)
    expr: Option<String>,
}

/// `wanted` (preferred content) or `required` (required content).
pub fn expr(a: ExprArgs, required: bool) -> anyhow::Result<ExitCode> {
    let repo = ui::open_repo()?;
    let uuid = preferred::resolve_repo(&repo, &a.repo)?;
    match a.expr {
        None => {
            let cur = if required {
                preferred::required(&repo, &uuid)?
            } else {
                preferred::wanted(&repo, &uuid)?
            };
            println!("{}", cur.unwrap_or_default());
        }
        Some(e) => {
            if required {
                preferred::set_required(&repo, &uuid, &e)?;
            } else {
                preferred::set_wanted(&repo, &uuid, &e)?;
            }
            let name = if required { "required" } else { "wanted" };
            println!("{name} {} ok", a.repo);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn group(a: GroupArgs) -> anyhow::Result<ExitCode> {
    let repo = ui::open_repo()?;
    let uuid = preferred::resolve_repo(&repo, &a.repo)?;
    match a.group {
        None => {
            let gs: Vec<String> = preferred::groups(&repo, &uuid)?.into_iter().collect();
            println!("{}", gs.join(" "));
        }
        Some(g) => {
            preferred::add_group(&repo, &uuid, &g)?;
            println!("group {} ok", a.repo);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn ungroup(a: UngroupArgs) -> anyhow::Result<ExitCode> {
    let repo = ui::open_repo()?;
    let uuid = preferred::resolve_repo(&repo, &a.repo)?;
    if !preferred::remove_group(&repo, &uuid, &a.group)? {
        eprintln!("ferry: {} is not in group {}", a.repo, a.group);
    }
    println!("ungroup {} ok", a.repo);
    Ok(ExitCode::SUCCESS)
}

pub fn groupwanted(a: GroupWantedArgs) -> anyhow::Result<ExitCode> {
    let repo = ui::open_repo()?;
    match a.expr {
        None => println!(
            "{}",
            preferred::group_wanted(&repo, &a.group)?.unwrap_or_default()
        ),
        Some(e) => {
            preferred::set_group_wanted(&repo, &a.group, &e)?;
            println!("groupwanted {} ok", a.group);
        }
    }
    Ok(ExitCode::SUCCESS)
}
