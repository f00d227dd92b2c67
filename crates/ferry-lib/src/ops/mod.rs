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

/// `f` of each of `items`, each on its own thread (they run git or wait on other
/// repositories), in order; one item runs on this thread. A panic in one is raised here.
pub(crate) fn parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if items.len() <= 1 {
        return items.iter().map(f).collect();
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = items.iter().map(|i| s.spawn(|| f(i))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}
