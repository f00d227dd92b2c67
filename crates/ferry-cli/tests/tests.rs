//! One integration-test binary (one link step) for the whole CLI.

mod add;
mod assistant;
mod bad_input;
mod common;
mod convergence;
mod fsck;
mod groups;
mod init;
mod interop;
mod numcopies;
mod policy;
mod preferred;
mod sync;
mod transfer;
mod unlocked;
