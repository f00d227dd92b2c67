use crate::ui;
use ferry_lib::copies::Origin;
use ferry_lib::ops::explain::{Explanation, TransferRecord, explain};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Files or directories
    #[arg(required = true)]
    paths: Vec<std::path::PathBuf>,
    /// One JSON object per file on stdout
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let repo = ui::open_repo()?;
    let (remotes, unusable) = ferry_lib::remote::configured(&repo)?;
    let mut failed = false;
    for p in &a.paths {
        let (paths, missing) = ui::resolve_paths(&repo, std::slice::from_ref(p))?;
        if missing {
            failed = true;
            continue;
        }
        let found = explain(&repo, &remotes, &unusable, &paths)?;
        if found.is_empty() {
            failed = true;
            use std::os::unix::ffi::OsStrExt;
            let mut args: Vec<&std::ffi::OsStr> = ["ls-files", "-z", "--"]
                .into_iter()
                .map(std::ffi::OsStr::new)
                .collect();
            args.extend(paths.iter().map(|p| std::ffi::OsStr::from_bytes(p)));
            let tracked = !repo.git.run(args)?.is_empty();
            let why = if tracked {
                "is stored in git itself, not annexed: it has no content to sync"
            } else {
                "is not tracked: add it with ferry add"
            };
            if a.json {
                let v = serde_json::json!({
                    "command": "explain", "file": p.display().to_string(),
                    "success": false, "error-messages": [format!("not an annexed file: {why}")],
                });
                println!("{v}");
            } else {
                eprintln!("ferry: error: {} {why}", p.display());
            }
            continue;
        }
        for e in &found {
            if a.json {
                let mut v = serde_json::to_value(e)?;
                v["command"] = "explain".into();
                v["success"] = true.into();
                println!("{v}");
            } else {
                for line in sentences(e) {
                    println!("{line}");
                }
                println!();
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn list(v: &[String]) -> String {
    v.join(", ")
}

fn at_ms(ms: u64) -> String {
    let now = ferry_lib::daemon::status::now_ms();
    if ms > now {
        format!("in {}s", (ms - now).div_ceil(1000))
    } else {
        "now".to_string()
    }
}

fn record(r: &TransferRecord) -> String {
    let dir = if r.direction == "download" {
        "download from"
    } else {
        "upload to"
    };
    let whom = r.remote.clone().unwrap_or_else(|| r.uuid.clone());
    format!("{dir} {whom} (started {})", r.info)
}

/// The explanation in plain sentences.
fn sentences(e: &Explanation) -> Vec<String> {
    let mut out = vec![format!("{} (key {})", e.file, e.key)];
    // Where the content is.
    if e.copies.is_empty() {
        out.push("  No repository is known to have its content.".into());
    }
    for c in &e.copies {
        let who = match (&c.remote, c.here) {
            (_, true) => "here".to_string(),
            (Some(r), _) => format!("remote {r}"),
            (None, _) => format!("{} ({})", c.uuid, c.description),
        };
        let check = match c.verified {
            Some(true) => "checked: it is there",
            Some(false) => "checked: it is NOT there",
            None if c.remote.is_some() => "not checked now",
            None => "not a remote here, not checked",
        };
        out.push(format!(
            "  The location log says {who} has the content ({}, {check}).",
            c.trust
        ));
    }
    if e.present_here && !e.copies.iter().any(|c| c.here) {
        out.push("  The content is here, though the location log does not say so.".into());
    }
    // Who wants it.
    for w in &e.wishes {
        let who = if w.name == "here" {
            format!("This repository ({})", w.uuid)
        } else {
            format!("Remote {} ({})", w.name, w.uuid)
        };
        let why = match (&w.expression, w.standard_group) {
            (None, _) => "no preferred content set: wants everything".to_string(),
            (Some(x), Some(g)) => format!("by \"{x}\", with standard for group {g}"),
            (Some(x), None) => format!("by \"{x}\""),
        };
        let verb = if w.wants {
            "wants it"
        } else {
            "does not want it"
        };
        let mut s = format!("  {who} {verb} ({why})");
        if let Some(r) = &w.required {
            s.push_str(&format!(
                "; its required content \"{r}\" {}",
                if w.requires {
                    "requires it"
                } else {
                    "does not require it"
                }
            ));
        }
        if let Some(u) = &w.unreachable {
            s.push_str(&format!("; it cannot be reached: {u}"));
        }
        s.push('.');
        out.push(s);
    }
    // numcopies, and where it comes from.
    let from = |o: &Origin, what: &str| match o {
        Origin::Default => "default".to_string(),
        Origin::GitConfig => format!("from git config annex.{what}"),
        Origin::Log => format!("from {what}.log"),
        Origin::Gitattributes { file } if *file == e.file => "from .gitattributes".to_string(),
        Origin::Gitattributes { file } => {
            format!("from .gitattributes of {file}, which has the same content")
        }
    };
    out.push(format!(
        "  numcopies is {} ({}) and mincopies {} ({}): {} cop{} count, so numcopies is {} and mincopies {}.",
        e.numcopies,
        from(&e.numcopies_from, "numcopies"),
        e.mincopies,
        from(&e.mincopies_from, "mincopies"),
        e.counted_copies,
        if e.counted_copies == 1 { "y" } else { "ies" },
        if e.numcopies_met { "met" } else { "NOT met" },
        if e.mincopies_met { "met" } else { "NOT met" },
    ));
    // The plan.
    let p = &e.plan;
    let mut acts = Vec::new();
    if p.download {
        acts.push("download it here".to_string());
    }
    if !p.upload.is_empty() {
        acts.push(format!("upload it to {}", list(&p.upload)));
    }
    if !p.drop_from.is_empty() {
        acts.push(format!("drop it from {}", list(&p.drop_from)));
    }
    if p.drop_here {
        acts.push("drop it here".to_string());
    }
    if acts.is_empty() {
        out.push("  sync --content would do nothing for it now.".into());
    } else {
        out.push(format!(
            "  sync --content would {} (drops only if enough other copies are verified then).",
            acts.join(", then ")
        ));
    }
    for (r, why) in &p.left_out {
        out.push(format!("  Remote {r} is left out of content sync: {why}."));
    }
    // Transfers.
    for t in &e.transfers {
        out.push(format!(
            "  Transfer {}: {}.",
            record(t),
            if t.running {
                "running now"
            } else {
                "registered, but no process runs it"
            }
        ));
    }
    let via = |t: &ferry_lib::daemon::status::TransferEntry| {
        let r = t.remote.as_ref().map(|r| format!(" ({r})"));
        format!("{}{}", t.direction, r.unwrap_or_default())
    };
    for (list, state) in [(&e.daemon_running, "running"), (&e.daemon_queued, "queued")] {
        for t in list {
            out.push(format!("  The daemon has a {} of it {state}.", via(t)));
        }
    }
    for t in &e.failures {
        out.push(format!("  The last {} failed.", record(t)));
    }
    for t in &e.daemon_retrying {
        out.push(format!(
            "  The daemon's {} failed {} time{}{}; next attempt {}.",
            via(t),
            t.attempts,
            if t.attempts == 1 { "" } else { "s" },
            t.error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default(),
            t.next_attempt_ms
                .map(at_ms)
                .unwrap_or_else(|| "not planned".into()),
        ));
    }
    if e.transfers.is_empty()
        && e.daemon_running.is_empty()
        && e.daemon_queued.is_empty()
        && e.daemon_retrying.is_empty()
    {
        out.push("  No transfer of it is running or queued.".into());
    }
    out
}
