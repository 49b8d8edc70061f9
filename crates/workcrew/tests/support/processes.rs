//! Helpers shared by the process pool's integration tests: whether a worker process still
//! exists, and waits (bounded) for workers to be gone or replaced.

use std::path::Path;
use std::time::Duration;

use workcrew::process::ProcessPool;

/// Whether process `pid` still exists (a zombie counts: it must be reaped too).
pub(crate) fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits (bounded, 5 s) until none of `pids` exists.
pub(crate) async fn all_gone(pids: &[u32]) -> bool {
    for _ in 0..500 {
        if pids.iter().all(|&p| !exists(p)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Waits (bounded, 10 s) until the pool is back to `before.len()` workers with at least one
/// new pid; returns the current pids.
pub(crate) async fn replacement(pool: &ProcessPool, before: &[u32]) -> Vec<u32> {
    for _ in 0..1000 {
        let now = pool.worker_pids();
        if now.len() == before.len() && now.iter().any(|p| !before.contains(p)) {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "no replacement worker appeared (before {before:?}, now {:?})",
        pool.worker_pids()
    );
}
