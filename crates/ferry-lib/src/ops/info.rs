//! `info`: a summary of the repository.

use crate::annexed::annexed_files;
use crate::error::Result;
use crate::repo::Repo;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Info {
    pub uuid: String,
    pub description: String,
    pub annexed_files: usize,
    /// Distinct keys referenced by the annexed files.
    pub keys: usize,
    /// Total size of the distinct keys (keys without a size count as 0).
    pub size: u64,
    pub present_files: usize,
    pub present_keys: usize,
    pub present_size: u64,
    pub numcopies: u32,
    pub repositories: Vec<RepoInfo>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RepoInfo {
    pub uuid: String,
    pub description: String,
    pub here: bool,
}

pub fn info(repo: &Repo) -> Result<Info> {
    let files = if repo.is_bare() {
        Vec::new()
    } else {
        annexed_files(&repo.git, &[])?
    };
    let store = repo.store();
    let mut keys = std::collections::BTreeMap::new();
    for f in &files {
        keys.entry(f.key.clone())
            .or_insert_with(|| store.find(&f.key).is_some());
    }
    let present_files = files.iter().filter(|f| keys[&f.key]).count();
    let size = keys.keys().map(|k| k.size.unwrap_or(0)).sum();
    let present_size = keys
        .iter()
        .filter(|(_, p)| **p)
        .map(|(k, _)| k.size.unwrap_or(0))
        .sum();
    let descs = repo.uuid_descriptions()?;
    Ok(Info {
        uuid: repo.uuid().to_string(),
        description: descs.get(repo.uuid()).cloned().unwrap_or_default(),
        annexed_files: files.len(),
        keys: keys.len(),
        size,
        present_files,
        present_keys: keys.values().filter(|p| **p).count(),
        present_size,
        numcopies: repo.numcopies()?,
        repositories: descs
            .into_iter()
            .map(|(uuid, description)| RepoInfo {
                here: uuid == repo.uuid(),
                uuid,
                description,
            })
            .collect(),
    })
}
