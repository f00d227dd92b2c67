//! `explain`: everything that decides what happens to one annexed file, gathered for a person
//! to read: where its content is, who wants it and why, numcopies, what `sync --content` would
//! do now ([`crate::ops::plan`]), and what transfers are running, queued or failed for it (the
//! transfer info files under `.git/annex/transfer/` and the daemon's status snapshot).

use crate::copies::Origin;
use crate::daemon::status::TransferEntry;
use crate::error::Result;
use crate::ops::plan::{Planner, content_remotes};
use crate::ops::whereis::Whereis;
use crate::preferred::{FileInfo, Preferences};
use crate::remote::{Remote, Unusable, key_component, uuid_component};
use crate::repo::Repo;
use serde::Serialize;
use std::collections::BTreeMap;

/// One copy the location log knows of.
#[derive(Clone, Debug, Serialize)]
pub struct Copy {
    pub uuid: String,
    pub description: String,
    pub here: bool,
    pub remote: Option<String>,
    /// "trusted", "semitrusted", "untrusted" or "dead".
    pub trust: &'static str,
    /// Checked now: `Some(true)` it is really there, `Some(false)` it is not, `None` not
    /// checked (here: see [`Explanation::present_here`]; a remote that is unreachable or
    /// whose check is not cheap).
    pub verified: Option<bool>,
}

/// One repository's wish for the file.
#[derive(Clone, Debug, Serialize)]
pub struct Wish {
    pub uuid: String,
    /// "here", or the remote's name.
    pub name: String,
    /// The preferred content expression; `None`: not set (wants everything).
    pub expression: Option<String>,
    /// The standard group `standard` stands for, when it is used.
    pub standard_group: Option<&'static str>,
    pub wants: bool,
    pub required: Option<String>,
    pub requires: bool,
    /// Why the remote cannot be reached, if it cannot.
    pub unreachable: Option<String>,
}

/// What `sync --content` would do for the file now.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PlanView {
    pub download: bool,
    pub upload: Vec<String>,
    pub drop_from: Vec<String>,
    pub drop_here: bool,
    /// Remotes left out of content sync, with the reason.
    pub left_out: BTreeMap<String, String>,
}

/// A transfer info file under `.git/annex/transfer/`.
#[derive(Clone, Debug, Serialize)]
pub struct TransferRecord {
    /// "download" or "upload".
    pub direction: &'static str,
    pub uuid: String,
    pub remote: Option<String>,
    /// The info file's first line: start time (and bytes done, while running).
    pub info: String,
    /// A process holds the transfer's lock now (for failures: always false).
    pub running: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    pub file: String,
    pub key: String,
    pub size: Option<u64>,
    pub present_here: bool,
    pub copies: Vec<Copy>,
    pub wishes: Vec<Wish>,
    /// What a drop of the content needs (the highest over the files that have it).
    pub numcopies: u32,
    pub mincopies: u32,
    /// Where numcopies comes from: `{"kind": "default" | "git-config" | "log"}`, or
    /// `{"kind": "gitattributes", "file": ...}`.
    pub numcopies_from: Origin,
    pub mincopies_from: Origin,
    /// Copies that count for numcopies (not untrusted, not dead).
    pub counted_copies: usize,
    pub numcopies_met: bool,
    pub mincopies_met: bool,
    pub plan: PlanView,
    /// Transfers registered in `.git/annex/transfer/` now.
    pub transfers: Vec<TransferRecord>,
    /// Failures recorded under `.git/annex/transfer/failed/`.
    pub failures: Vec<TransferRecord>,
    /// The daemon's queue, for this file: running, queued, or waiting for a retry (with the
    /// last error and the time of the next attempt).
    pub daemon_running: Vec<TransferEntry>,
    pub daemon_queued: Vec<TransferEntry>,
    pub daemon_retrying: Vec<TransferEntry>,
}

fn trust_name(t: crate::ops::drop::Trust) -> &'static str {
    use crate::ops::drop::Trust::*;
    match t {
        Trusted => "trusted",
        SemiTrusted => "semitrusted",
        Untrusted => "untrusted",
        Dead => "dead",
    }
}

/// Explains each annexed file under `pathspecs` (see the module docs).
pub fn explain(
    repo: &Repo,
    remotes: &[Box<dyn Remote>],
    unusable: &[Unusable],
    pathspecs: &[Vec<u8>],
) -> Result<Vec<Explanation>> {
    let found = crate::ops::whereis::whereis(repo, pathspecs)?;
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let prefs = Preferences::load(repo)?;
    let files: Vec<crate::annexed::AnnexedFile> = found.iter().map(|w| w.file.clone()).collect();
    let policy =
        crate::ops::drop::DropPolicy::load(repo, &files, crate::annexed::whole_tree(pathspecs))?;
    let names = repo.remote_names()?;
    let available: BTreeMap<&str, std::result::Result<(), String>> = remotes
        .iter()
        .map(|r| (r.name(), r.check_available().map_err(|e| e.to_string())))
        .collect();
    let chosen: Vec<&dyn Remote> = content_remotes(repo, remotes, &[])
        .into_iter()
        .filter(|r| available[r.name()].is_ok())
        .collect();
    let mut left_out = BTreeMap::new();
    for r in remotes {
        if let Err(e) = &available[r.name()] {
            left_out.insert(r.name().to_string(), format!("cannot be reached: {e}"));
        } else if !chosen.iter().any(|c| c.name() == r.name()) {
            left_out.insert(
                r.name().to_string(),
                "remote.NAME.annex-sync or annex-synccontent is false".replace("NAME", r.name()),
            );
        }
    }
    for u in unusable {
        left_out.insert(u.name.clone(), u.why.clone());
    }
    let planner = Planner::new(&prefs, repo.uuid(), &chosen, &policy.copies);
    // Who is asked: here, then every remote with a known UUID.
    let mut asked: Vec<(String, String)> = vec![(repo.uuid().to_string(), "here".to_string())];
    asked.extend(names.iter().map(|(u, n)| (u.clone(), n.clone())));
    let mut exprs = BTreeMap::new();
    for (u, _) in &asked {
        exprs.insert(
            u.clone(),
            (
                crate::preferred::wanted(repo, u)?,
                crate::preferred::required(repo, u)?,
            ),
        );
    }
    let status = crate::daemon::status::read(&repo.annex_dir()).map(|s| s.transfers);
    let store = repo.store();
    let mut out = Vec::new();
    for Whereis { file, holders, .. } in found {
        let locations: Vec<String> = holders.iter().map(|h| h.uuid.clone()).collect();
        let present_here = store.find(&file.key).is_some();
        let info = FileInfo {
            path: Some(&file.path),
            key: &file.key,
            locations: &locations,
            present_here,
            numcopies_attr: policy.copies.attrs(&file.path).numcopies,
        };
        let trust = |u: &str| {
            policy
                .trust
                .get(u)
                .copied()
                .unwrap_or(crate::ops::drop::Trust::SemiTrusted)
        };
        let copies: Vec<Copy> = holders
            .iter()
            .map(|h| {
                let r = remotes.iter().find(|r| r.uuid() == h.uuid);
                let verified = r.and_then(|r| {
                    (available[r.name()].is_ok() && r.cheap_presence())
                        .then(|| r.check_present(&file.key).ok())
                        .flatten()
                });
                Copy {
                    uuid: h.uuid.clone(),
                    description: h.description.clone(),
                    here: h.here,
                    remote: h.remote.clone(),
                    trust: trust_name(trust(&h.uuid)),
                    verified: if h.here { Some(present_here) } else { verified },
                }
            })
            .collect();
        let wishes = asked
            .iter()
            .map(|(u, n)| {
                let (expression, required) = exprs[u].clone();
                Wish {
                    uuid: u.clone(),
                    name: n.clone(),
                    standard_group: expression
                        .as_deref()
                        .filter(|e| e.contains("standard"))
                        .and_then(|_| prefs.standard_group(u)),
                    expression,
                    wants: prefs.wants(u, &info),
                    required,
                    requires: prefs.requires(u, &info),
                    unreachable: remotes
                        .iter()
                        .find(|r| r.uuid() == u)
                        .and_then(|r| available[r.name()].clone().err())
                        .or_else(|| {
                            unusable
                                .iter()
                                .find(|x| x.name == *n)
                                .map(|x| x.why.clone())
                        }),
                }
            })
            .collect();
        let mut counted = locations
            .iter()
            .filter(|u| {
                !matches!(
                    trust(u),
                    crate::ops::drop::Trust::Untrusted | crate::ops::drop::Trust::Dead
                )
            })
            .count();
        if present_here && !locations.iter().any(|u| u == repo.uuid()) {
            counted += 1;
        }
        let plan = planner.plan(&info);
        let need = policy.copies.of_key(&file.key);
        let name_of = |i: &usize| chosen[*i].name().to_string();
        let kc = key_component(&file.key)?;
        let (transfers, failures) = transfer_records(repo, &kc, &names);
        let key = file.key.to_string();
        let mine = |v: &Option<Vec<TransferEntry>>| -> Vec<TransferEntry> {
            v.iter()
                .flatten()
                .filter(|e| e.key == key)
                .cloned()
                .collect()
        };
        out.push(Explanation {
            file: String::from_utf8_lossy(&file.path).into_owned(),
            key: key.clone(),
            size: file.key.size,
            present_here,
            copies,
            wishes,
            numcopies: need.numcopies.n,
            mincopies: need.mincopies.n,
            numcopies_from: need.numcopies.from.clone(),
            mincopies_from: need.mincopies.from.clone(),
            counted_copies: counted,
            numcopies_met: counted >= need.numcopies.n as usize,
            mincopies_met: counted >= need.mincopies.n as usize,
            plan: PlanView {
                download: plan.download,
                upload: plan.upload.iter().map(name_of).collect(),
                drop_from: plan.drop_from.iter().map(name_of).collect(),
                drop_here: plan.drop_here,
                left_out: left_out.clone(),
            },
            transfers,
            failures,
            daemon_running: mine(&status.as_ref().map(|s| s.running.clone())),
            daemon_queued: mine(&status.as_ref().map(|s| s.next.clone())),
            daemon_retrying: mine(&status.as_ref().map(|s| s.retrying.clone())),
        });
    }
    Ok(out)
}

/// Transfer info files for the key (`kc` is its file name): running ones, and failures.
fn transfer_records(
    repo: &Repo,
    kc: &std::ffi::OsStr,
    names: &BTreeMap<String, String>,
) -> (Vec<TransferRecord>, Vec<TransferRecord>) {
    let (running, failed): (Vec<_>, Vec<_>) = list_transfers(repo, Some(kc), names)
        .into_iter()
        .partition(|(_, failure, _)| !failure);
    (
        running.into_iter().map(|(r, _, _)| r).collect(),
        failed.into_iter().map(|(r, _, _)| r).collect(),
    )
}

/// A transfer registered in `.git/annex/transfer/` (by ferry or git-annex, this process or
/// another), for `ferry transfers`.
#[derive(Clone, Debug, Serialize)]
pub struct ActiveTransfer {
    #[serde(flatten)]
    pub record: TransferRecord,
    pub key: String,
    /// The work-tree file, from the info file's second line.
    pub file: String,
    pub size: Option<u64>,
    /// Bytes done (the info file is rewritten about twice a second while bytes move).
    pub bytes: Option<u64>,
    /// When it started, in ms since the epoch.
    pub started_ms: Option<u64>,
}

/// Every transfer running now (a process holds its lock), here.
pub fn active_transfers(repo: &Repo) -> Vec<ActiveTransfer> {
    let names: BTreeMap<String, String> = repo
        .remote_names()
        .map(|m| m.into_iter().collect())
        .unwrap_or_default();
    list_transfers(repo, None, &names)
        .into_iter()
        .filter(|(r, failure, _)| !failure && r.running)
        .map(|(record, _, (key, file))| {
            let k = crate::key::Key::parse(key.as_bytes()).ok();
            let mut first = record.info.split_whitespace();
            let started_ms = first
                .next()
                .and_then(|t| t.trim_end_matches('s').parse::<f64>().ok())
                .map(|t| (t * 1000.0) as u64);
            let bytes = first.next().and_then(|b| b.parse().ok());
            ActiveTransfer {
                record,
                size: k.as_ref().and_then(|k| k.size),
                key,
                file,
                bytes,
                started_ms,
            }
        })
        .collect()
}

/// Info files under `.git/annex/transfer/` (of one key, or all), each with whether it is a
/// failure record, and its key and file.
fn list_transfers(
    repo: &Repo,
    only: Option<&std::ffi::OsStr>,
    names: &BTreeMap<String, String>,
) -> Vec<(TransferRecord, bool, (String, String))> {
    let base = repo.annex_dir().join("transfer");
    let mut out = Vec::new();
    for direction in ["download", "upload"] {
        for (dir, is_failure) in [
            (base.join(direction), false),
            (base.join("failed").join(direction), true),
        ] {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let uuid = e.file_name().to_string_lossy().into_owned();
                let kcs: Vec<std::ffi::OsString> = match only {
                    Some(kc) => vec![kc.to_owned()],
                    None => std::fs::read_dir(e.path())
                        .map(|rd| {
                            rd.flatten()
                                .map(|f| f.file_name())
                                .filter(|n| !n.to_string_lossy().starts_with("lck."))
                                .collect()
                        })
                        .unwrap_or_default(),
                };
                for kc in kcs {
                    let Ok(body) = std::fs::read(e.path().join(&kc)) else {
                        continue;
                    };
                    let text = String::from_utf8_lossy(&body);
                    let mut lines = text.lines();
                    let info = lines.next().unwrap_or_default().to_string();
                    let file = lines.next().unwrap_or_default().to_string();
                    let remote = names
                        .iter()
                        .find(|(u, _)| uuid_component(u).ok().as_deref() == Some(uuid.as_str()))
                        .map(|(_, n)| n.clone());
                    let mut lck = std::ffi::OsString::from("lck.");
                    lck.push(&kc);
                    // Asked without locking: a probe that took the lock could make the
                    // transfer that is starting just then think it runs already.
                    let busy =
                        !is_failure && crate::lock::is_locked(&e.path().join(lck)).unwrap_or(false);
                    let rec = TransferRecord {
                        direction: if direction == "download" {
                            "download"
                        } else {
                            "upload"
                        },
                        uuid: uuid.clone(),
                        remote,
                        info,
                        running: busy,
                    };
                    out.push((rec, is_failure, (kc.to_string_lossy().into_owned(), file)));
                }
            }
        }
    }
    out
}
