//! Operations shared by the command line and (later) the daemon. Each takes a [`crate::Repo`]
//! and reports per-file results through a callback or a returned value; none prints.

pub mod add;
pub mod content;
pub mod drop;
pub mod explain;
pub mod fsck;
pub mod info;
mod localpush;
pub mod plan;
pub mod sync;
pub mod unlock;
pub mod whereis;
