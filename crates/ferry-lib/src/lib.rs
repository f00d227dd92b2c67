//! ferry's domain logic: a git-annex v10 compatible repository (keys, content store, the
//! `git-annex` branch and its logs) and the operations on it. No terminal I/O, no environment
//! reads: the binary resolves those and passes them in.

pub mod annexed;
pub mod branch;
pub mod copies;
pub mod daemon;
pub mod error;
pub mod filter;
pub mod git;
pub mod hash;
pub mod inodecache;
pub mod key;
pub mod lock;
pub mod logs;
pub mod matching;
pub mod ops;
pub mod paths;
pub mod pktline;
pub mod preferred;
pub mod remote;
pub mod repo;
pub mod store;
pub mod transfer;

pub use error::{Error, Result};
pub use key::Key;
pub use repo::{Repo, RepoOptions};
