use crate::ui::{self, human};
use ferry_lib::daemon::status;
use ferry_lib::ops::explain::{ActiveTransfer, active_transfers};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Print the transfers as JSON
    #[arg(long)]
    json: bool,
}

/// Bytes per second since the start, and seconds left at that rate.
fn rate_eta(t: &ActiveTransfer) -> (Option<f64>, Option<u64>) {
    let (Some(bytes), Some(start)) = (t.bytes, t.started_ms) else {
        return (None, None);
    };
    let secs = status::now_ms().saturating_sub(start) as f64 / 1000.0;
    if secs <= 0.0 || bytes == 0 {
        return (None, None);
    }
    let rate = bytes as f64 / secs;
    let eta = t
        .size
        .map(|s| (s.saturating_sub(bytes) as f64 / rate).ceil() as u64);
    (Some(rate), eta)
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let repo = ui::open_repo()?;
    let running = active_transfers(&repo);
    let daemon = ferry_lib::daemon::running_pid(&repo)
        .and_then(|_| status::read(&repo.annex_dir()))
        .map(|s| s.transfers);
    if a.json {
        let running: Vec<serde_json::Value> = running
            .iter()
            .map(|t| {
                let (rate, eta) = rate_eta(t);
                let mut v = serde_json::to_value(t).unwrap_or_default();
                v["bytes_per_second"] = rate.map(|r| r.round() as u64).into();
                v["eta_seconds"] = eta.into();
                v
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "running": running, "daemon": daemon })
        );
        return Ok(ExitCode::SUCCESS);
    }
    if running.is_empty() {
        println!("no transfer is running");
    } else {
        println!("running:");
        for t in &running {
            let (rate, eta) = rate_eta(t);
            let towards = if t.record.direction == "download" {
                "from"
            } else {
                "to"
            };
            let remote = t.record.remote.clone().unwrap_or(t.record.uuid.clone());
            let done = match (t.bytes, t.size) {
                (Some(b), Some(s)) => format!("{} / {}", human(b as f64), human(s as f64)),
                (None, Some(s)) => format!("starting, {}", human(s as f64)),
                (Some(b), None) => human(b as f64),
                (None, None) => "starting".into(),
            };
            let speed = rate
                .map(|r| format!(", {}/s", human(r)))
                .unwrap_or_default();
            let eta = eta.map(|e| format!(", {e} s left")).unwrap_or_default();
            println!(
                "  {} {} {towards} {remote}: {done}{speed}{eta}",
                t.record.direction, t.file
            );
        }
    }
    match daemon {
        None => println!("the assistant is not running: nothing is queued"),
        Some(d) => {
            println!("queued in the assistant: {}", d.queued);
            for e in d.next.iter().take(10) {
                let remote = e
                    .remote
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                println!("  {} {}{remote}", e.direction, e.file);
            }
            if d.queued > 10 {
                println!("  ... and {} more", d.queued - 10);
            }
            if d.retrying_count > 0 {
                println!("waiting to be tried again: {}", d.retrying_count);
                for e in d.retrying.iter().take(10) {
                    let wait = e
                        .next_attempt_ms
                        .map(|t| t.saturating_sub(status::now_ms()).div_ceil(1000))
                        .unwrap_or(0);
                    println!(
                        "  {} {}: attempt {} failed: {}; next try in {wait} s",
                        e.direction,
                        e.file,
                        e.attempts,
                        e.error.as_deref().unwrap_or("unknown error")
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
