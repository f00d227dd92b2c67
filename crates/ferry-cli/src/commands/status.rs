use crate::ui;
use ferry_lib::daemon::{self, status};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Print the status as JSON
    #[arg(long)]
    json: bool,
}

fn ago(ms: Option<u64>) -> String {
    match ms {
        None => "never".into(),
        Some(t) => {
            let d = status::now_ms().saturating_sub(t);
            if d < 1000 {
                format!("{d} ms ago")
            } else if d < 120_000 {
                format!("{} s ago", d / 1000)
            } else {
                format!("{} min ago", d / 60_000)
            }
        }
    }
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let repo = ui::open_repo()?;
    let pid = daemon::running_pid(&repo);
    let mut st = status::read(&repo.annex_dir());
    // A snapshot left by a daemon that is gone (killed) says nothing about now.
    if pid.is_none()
        && let Some(s) = &mut st
        && s.state != "stopped"
    {
        s.state = "dead".into();
    }
    if a.json {
        let mut v = serde_json::to_value(&st)?;
        if v.is_null() {
            v = serde_json::json!({});
        }
        v["running"] = pid.is_some().into();
        v["daemon_pid"] = pid.into();
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    match (pid, &st) {
        (None, None) => println!("assistant: not running (never started here)"),
        (None, Some(s)) if s.state == "dead" => {
            println!(
                "assistant: not running (it was killed; `ferry assistant` restarts it and recovers)"
            )
        }
        (None, Some(_)) => println!("assistant: not running"),
        (Some(p), s) => println!(
            "assistant: running (pid {p}){}",
            match s {
                Some(s) if s.pid == p && s.idle => ", idle",
                Some(s) if s.pid == p => ", busy",
                _ => " (a daemon that does not publish ferry status: git-annex's assistant?)",
            }
        ),
    }
    let Some(s) = st.filter(|s| pid.is_some_and(|p| p == s.pid)) else {
        return Ok(ExitCode::SUCCESS);
    };
    match &s.last_commit {
        Some(c) => println!(
            "last commit: {} ({})",
            &c.commit[..12.min(c.commit.len())],
            ago(Some(c.at_ms))
        ),
        None => println!("last commit: none since start"),
    }
    println!(
        "watcher: {} directories watched{}; last full scan {}",
        s.watcher.watched_dirs,
        if s.watcher.limited {
            " (watch limit reached: the rest is scanned periodically)"
        } else {
            ""
        },
        ago(s.watcher.last_rescan_ms)
    );
    for (name, r) in &s.remotes {
        let mut line = format!(
            "remote {name}: pushed {}, pulled {}",
            ago(r.last_push_ms),
            ago(r.last_pull_ms)
        );
        if r.pushing {
            line.push_str(", pushing now");
        }
        if let Some(retry) = &r.retry {
            let wait = retry.next_attempt_ms.saturating_sub(status::now_ms());
            line.push_str(&format!(
                "; push failed {} time(s): {}; next try in {:.1} s",
                retry.failures,
                retry.reason,
                wait as f64 / 1000.0
            ));
        }
        println!("{line}");
    }
    for p in &s.problems {
        println!("problem: {p}");
    }
    Ok(ExitCode::SUCCESS)
}
