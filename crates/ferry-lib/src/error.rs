//! The library's error type. Each variant carries what is needed to explain it to a person;
//! only the binary turns them into messages with hints and exit codes.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not inside a git repository: {0}")]
    NotARepo(PathBuf),
    #[error("{0} is not a ferry/git-annex repository yet")]
    NotInitialized(PathBuf),
    #[error("{path} is outside the repository {repo}")]
    OutsideRepo { path: PathBuf, repo: PathBuf },
    #[error("{0} is inside the .git directory; ferry never adds git's own files")]
    InGitDir(PathBuf),
    #[error("{0} does not exist")]
    NoSuchPath(PathBuf),
    #[error("could not run git ({0}); is git installed and on PATH?")]
    GitMissing(String),
    #[error("{command} failed: {stderr}")]
    Git { command: String, stderr: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Protocol(String),
    #[error("invalid annex.largefiles expression {expr:?}: {why}")]
    BadExpression { expr: String, why: String },
    #[error("invalid preferred content expression {expr:?}: {why}")]
    BadPreferred { expr: String, why: String },
    #[error(
        "there is no repository named {0:?} (use here, a remote name, a UUID or a description)"
    )]
    NoSuchRepository(String),
    #[error("{0}")]
    Unsupported(String),
    /// A git config setting whose value ferry cannot use.
    #[error("{key} = {value:?}: {why}")]
    BadSetting {
        key: String,
        value: String,
        why: String,
    },
    #[error(
        "repository {0} has a newer or unknown annex.version {1}; this ferry supports version 10"
    )]
    BadVersion(PathBuf, String),
    #[error(transparent)]
    Transfer(#[from] crate::remote::TransferError),
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Adds a path to an io error's context.
pub trait IoContext<T> {
    fn ctx(self, what: &str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: &str, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io(format!("{what} {}", path.display()), e))
    }
}
