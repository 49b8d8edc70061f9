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

/// The Python interpreter's real executable (`sys.executable`), resolved once: a
/// version-manager shim on `PATH` is a shell script that needs `PATH` and slows every start.
pub(crate) fn python() -> &'static std::path::Path {
    static PYTHON: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 must be installed to run the test workers");
        assert!(out.status.success(), "python3 failed: {out:?}");
        std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// A file under `tests/support/`.
pub(crate) fn support_file(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(name)
}

/// Awaits `fut`, failing the test if it takes longer than `limit`.
pub(crate) async fn within<T>(
    what: &str,
    limit: Duration,
    fut: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

/// Polls `cond` every 5 ms until it holds; fails the test after `limit`.
pub(crate) async fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
