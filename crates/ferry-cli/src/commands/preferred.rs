//! `wanted`, `required`, `group`, `ungroup`, `groupwanted`: show or set what a repository
//! wants (git-annex's commands of the same names, same logs). With `--json`, one object: the
//! repository (`repository`: "here", its remote name or its description; `uuid`,
//! `description`) and the value as it is stored after the command.

use crate::ui;
use ferry_lib::preferred;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ExprArgs {
    /// The repository: here (or .), a remote name, a UUID or a description
    repo: String,
    /// The new expression (shows the current one when left out)
    expr: Option<String>,
    /// Print the result as one JSON object
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct GroupArgs {
    /// The repository: here (or .), a remote name, a UUID or a description
    repo: String,
    /// The group to add it to (shows its groups when left out)
    group: Option<String>,
    /// Print the result as one JSON object
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct UngroupArgs {
    /// The repository: here (or .), a remote name, a UUID or a description
    repo: String,
    /// The group to remove it from
    group: String,
    /// Print the result as one JSON object
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct GroupWantedArgs {
    /// The group
    group: String,
    /// The new expression (shows the current one when left out)
    expr: Option<String>,
    /// Print the result as one JSON object
    #[arg(long)]
    json: bool,
}

/// Prints `value` (adding `command` and `success`), or in JSON mode an error as an object with
/// `error-messages`; without `--json` errors go the usual way.
fn finish(
    json: bool,
    command: &str,
    r: anyhow::Result<(serde_json::Value, String)>,
) -> anyhow::Result<ExitCode> {
    match r {
        Ok((mut v, text)) => {
            if json {
                v["command"] = command.into();
                v["success"] = true.into();
                println!("{v}");
            } else {
                println!("{text}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if json => {
            let v = serde_json::json!({
                "command": command,
                "success": false,
                "error-messages": [format!("{e:#}")],
            });
            println!("{v}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e),
    }
}

/// How a repository is named for a person: "here", its remote name, else its description
/// (else its UUID); with its UUID and description.
fn repository(repo: &ferry_lib::Repo, uuid: &str) -> anyhow::Result<serde_json::Value> {
    let description = repo.description(uuid)?.unwrap_or_default();
    let name = if uuid == repo.uuid() {
        "here".to_string()
    } else if let Some(n) = repo.remote_names()?.remove(uuid) {
        n
    } else if !description.is_empty() {
        description.clone()
    } else {
        uuid.to_string()
    };
    Ok(serde_json::json!({
        "repository": name,
        "uuid": uuid,
        "description": description,
    }))
}

/// `wanted` (preferred content) or `required` (required content).
pub fn expr(a: ExprArgs, required: bool) -> anyhow::Result<ExitCode> {
    let name = if required { "required" } else { "wanted" };
    let r = (|| {
        let repo = ui::open_repo()?;
        let uuid = preferred::resolve_repo(&repo, &a.repo)?;
        if let Some(e) = &a.expr {
            if required {
                preferred::set_required(&repo, &uuid, e)?;
            } else {
                preferred::set_wanted(&repo, &uuid, e)?;
            }
        }
        // As stored now (after setting: what was written).
        let cur = if required {
            preferred::required(&repo, &uuid)?
        } else {
            preferred::wanted(&repo, &uuid)?
        };
        let mut v = repository(&repo, &uuid)?;
        v["expression"] = cur.clone().into();
        if !required {
            // What `standard` stands for, when the expression uses it.
            let prefs = preferred::Preferences::load(&repo)?;
            v["standard_group"] = prefs.standard_group(&uuid).into();
        }
        let text = match &a.expr {
            None => cur.unwrap_or_default(),
            Some(_) => format!("{name} {} ok", a.repo),
        };
        v["set"] = a.expr.is_some().into();
        Ok((v, text))
    })();
    finish(a.json, name, r)
}

pub fn group(a: GroupArgs) -> anyhow::Result<ExitCode> {
    let r = (|| {
        let repo = ui::open_repo()?;
        let uuid = preferred::resolve_repo(&repo, &a.repo)?;
        if let Some(g) = &a.group {
            preferred::add_group(&repo, &uuid, g)?;
        }
        let gs: Vec<String> = preferred::groups(&repo, &uuid)?.into_iter().collect();
        let prefs = preferred::Preferences::load(&repo)?;
        let mut v = repository(&repo, &uuid)?;
        v["groups"] = gs.clone().into();
        v["standard_group"] = prefs.standard_group(&uuid).into();
        v["added"] = a.group.clone().into();
        let text = match &a.group {
            None => gs.join(" "),
            Some(_) => format!("group {} ok", a.repo),
        };
        Ok((v, text))
    })();
    finish(a.json, "group", r)
}

pub fn ungroup(a: UngroupArgs) -> anyhow::Result<ExitCode> {
    let r = (|| {
        let repo = ui::open_repo()?;
        let uuid = preferred::resolve_repo(&repo, &a.repo)?;
        let was = preferred::remove_group(&repo, &uuid, &a.group)?;
        if !was && !a.json {
            eprintln!("ferry: {} is not in group {}", a.repo, a.group);
        }
        let gs: Vec<String> = preferred::groups(&repo, &uuid)?.into_iter().collect();
        let mut v = repository(&repo, &uuid)?;
        v["groups"] = gs.into();
        v["removed"] = a.group.clone().into();
        v["was_in_group"] = was.into();
        Ok((v, format!("ungroup {} ok", a.repo)))
    })();
    finish(a.json, "ungroup", r)
}

pub fn groupwanted(a: GroupWantedArgs) -> anyhow::Result<ExitCode> {
    let r = (|| {
        let repo = ui::open_repo()?;
        if let Some(e) = &a.expr {
            preferred::set_group_wanted(&repo, &a.group, e)?;
        }
        let cur = preferred::group_wanted(&repo, &a.group)?;
        let v = serde_json::json!({
            "group": a.group,
            "expression": cur,
            "set": a.expr.is_some(),
        });
        let text = match &a.expr {
            None => cur.unwrap_or_default(),
            Some(_) => format!("groupwanted {} ok", a.group),
        };
        Ok((v, text))
    })();
    finish(a.json, "groupwanted", r)
}

/// `numcopies` / `mincopies`: the value for the repository as a whole and where it comes from
/// (`numcopies.log`, git config, or the default; files may override it in `.gitattributes`).
pub fn copies(n: Option<u32>, json: bool, min: bool) -> anyhow::Result<ExitCode> {
    let (file, name) = if min {
        ("mincopies.log", "mincopies")
    } else {
        ("numcopies.log", "numcopies")
    };
    let r = (|| {
        let repo = ui::open_repo()?;
        match n {
            Some(0) => anyhow::bail!("{name} must be at least 1"),
            Some(n) => ferry_lib::ops::drop::set_copies_log(&repo, file, n)?,
            None => {}
        }
        let g = ferry_lib::copies::Global::load(&repo)?;
        let s = if min { g.mincopies() } else { g.numcopies() };
        let v =
            serde_json::json!({ name: s.n, "source": s.from.describe(name), "set": n.is_some() });
        let text = match n {
            None => s.n.to_string(),
            Some(n) => format!("{name} {n} ok"),
        };
        Ok((v, text))
    })();
    finish(json, name, r)
}
