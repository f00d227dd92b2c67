//! `whereis`: which repositories hold each annexed file's content, per the location log.

use crate::annexed::{AnnexedFile, annexed_files};
use crate::branch::location_log_path;
use crate::error::Result;
use crate::key::Key;
use crate::logs::LocationLog;
use crate::repo::Repo;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Holder {
    pub uuid: String,
    pub description: String,
    pub here: bool,
    /// The git remote with this UUID, when one is configured.
    pub remote: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Whereis {
    pub file: AnnexedFile,
    pub holders: Vec<Holder>,
    /// Log lines that could not be parsed (reported as a warning, otherwise ignored).
    pub skipped_lines: usize,
}

/// Location logs for many keys at once.
pub fn location_logs(repo: &Repo, keys: &[&Key]) -> Result<Vec<LocationLog>> {
    let paths: Vec<Vec<u8>> = keys.iter().map(|k| location_log_path(k)).collect();
    Ok(repo
        .branch
        .read_many(&paths)?
        .into_iter()
        .map(|c| LocationLog::parse(&c.unwrap_or_default()))
        .collect())
}

pub fn whereis(repo: &Repo, pathspecs: &[Vec<u8>]) -> Result<Vec<Whereis>> {
    let files = annexed_files(&repo.git, pathspecs)?;
    let descs = repo.uuid_descriptions()?;
    let remotes = repo.remote_names()?;
    let logs = location_logs(repo, &files.iter().map(|f| &f.key).collect::<Vec<_>>())?;
    let mut out = Vec::with_capacity(files.len());
    for (file, log) in files.into_iter().zip(logs) {
        let holders = log
            .present()
            .into_iter()
            .map(|uuid| Holder {
                description: descs.get(&uuid).cloned().unwrap_or_default(),
                here: uuid == repo.uuid(),
                remote: remotes.get(&uuid).cloned(),
                uuid,
            })
            .collect();
        out.push(Whereis {
            file,
            holders,
            skipped_lines: log.skipped,
        });
    }
    Ok(out)
}
