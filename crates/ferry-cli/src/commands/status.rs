use crate::ui::{self, human};
use ferry_lib::daemon::status::{TransferEntry, TransfersStatus};
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

/// One running transfer: "download big.bin 40% of 256.0 MiB, 120.0 MiB/s", "upload 37 files
/// to b".
fn running(e: &TransferEntry) -> String {
    let mut s = if e.files > 1 {
        format!("{} {} files", e.direction, e.files)
    } else {
        format!("{} {}", e.direction, e.file)
    };
    if let Some(r) = &e.remote {
        let towards = if e.direction == "upload" {
            "to"
        } else {
            "from"
        };
        s.push_str(&format!(" {towards} {r}"));
    }
    match (e.files, e.size) {
        (1, Some(size)) if e.bytes > 0 => {
            s.push_str(&format!(
                " {}% of {}",
                e.bytes.min(size) * 100 / size.max(1),
                human(size as f64)
            ));
            // The rate of this run: bytes kept from an earlier attempt did not move now.
            let moved = e.bytes.saturating_sub(e.resumed_from.unwrap_or(0));
            let ms = e
                .started_ms
                .map_or(0, |t| status::now_ms().saturating_sub(t));
            if moved > 0 && ms > 0 {
                s.push_str(&format!(", {}/s", human(moved as f64 * 1000.0 / ms as f64)));
            }
        }
        (1, Some(size)) => s.push_str(&format!(" ({})", human(size as f64))),
        _ => {}
    }
    s
}

/// The transfer queue in one line: "transfers: 1 running (...), 14 queued, 1 retrying (next in
/// 3 s: ...)".
fn transfers_line(t: &TransfersStatus) -> String {
    let mut parts = Vec::new();
    if !t.running.is_empty() {
        let each: Vec<String> = t.running.iter().map(running).collect();
        parts.push(format!("{} running ({})", t.running.len(), each.join("; ")));
    }
    if t.queued > 0 {
        parts.push(format!("{} queued", t.queued));
    }
    if t.retrying_count > 0 {
        let next = t.retrying.first().map(|e| {
            let wait = e
                .next_attempt_ms
                .map_or(0, |n| n.saturating_sub(status::now_ms()).div_ceil(1000));
            let error = e.error.as_deref().unwrap_or("unknown error");
            let error = error.lines().next().unwrap_or_default();
            format!(" (next in {wait} s: {} {}: {error})", e.direction, e.file)
        });
        parts.push(format!(
            "{} retrying{}",
            t.retrying_count,
            next.unwrap_or_default()
        ));
    }
    if parts.is_empty() {
        parts.push("none".into());
    }
    format!("transfers: {}", parts.join(", "))
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
                // Idle means nothing at all to do: git work done and no content to move.
                Some(s)
                    if s.pid == p
                        && s.idle
                        && s.transfers.queued == 0
                        && s.transfers.running.is_empty() =>
                {
                    if s.transfers.retrying_count == 0 {
                        ", idle"
                    } else {
                        ", idle until transfers are retried"
                    }
                }
                Some(s) if s.pid == p && s.idle => ", moving content",
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
    println!("{}", transfers_line(&s.transfers));
    for p in &s.problems {
        println!("problem: {p}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(file: &str, size: u64) -> TransferEntry {
        TransferEntry {
            direction: "download".into(),
            file: file.into(),
            key: format!("SHA256E-s{size}--00"),
            files: 1,
            size: Some(size),
            ..Default::default()
        }
    }

    #[test]
    fn the_transfers_line_is_compact_and_counts_only_bytes_moved_now() {
        assert_eq!(
            transfers_line(&TransfersStatus::default()),
            "transfers: none"
        );
        // 100 MiB in place after 4 s, 60 MiB of them kept from an earlier attempt: 10 MiB/s.
        let mut big = entry("big.bin", 256 << 20);
        big.bytes = 100 << 20;
        big.resumed_from = Some(60 << 20);
        big.started_ms = Some(status::now_ms() - 4000);
        let mut batch = entry("a.txt", 10);
        batch.direction = "upload".into();
        batch.remote = Some("b".into());
        batch.files = 37;
        let mut failed = entry("doc.txt", 17);
        failed.attempts = 2;
        failed.error = Some("corrupt content\nmore detail".into());
        failed.next_attempt_ms = Some(status::now_ms() + 2900);
        let t = TransfersStatus {
            queued: 14,
            retrying_count: 1,
            running: vec![big, batch, entry("new.bin", 2 << 20)],
            next: Vec::new(),
            retrying: vec![failed],
        };
        let line = transfers_line(&t);
        let (head, rest) = line
            .split_once(" MiB/s; ")
            .unwrap_or_else(|| panic!("{line}"));
        let (head, rate) = head.rsplit_once(", ").unwrap();
        assert_eq!(
            head,
            "transfers: 3 running (download big.bin 39% of 256.0 MiB"
        );
        let rate: f64 = rate.parse().unwrap();
        assert!((8.0..=10.0).contains(&rate), "{line}");
        assert_eq!(
            rest,
            "upload 37 files to b; download new.bin (2.0 MiB)), 14 queued, \
             1 retrying (next in 3 s: download doc.txt: corrupt content)"
        );
    }
}
