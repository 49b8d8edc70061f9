//! A worker's output cannot grow the pool's memory: a line without end is forwarded cut to a
//! bounded length. Alone in its test binary, so the pool process's resident memory is this
//! test's alone.

use std::time::Duration;

use workcrew::process::ProcessPool;

mod support;
use support::processes::{all_gone, within};

const MIB: u64 = 1024 * 1024;

/// The resident memory of this process, from `/proc/self/status`.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Item 6: a worker writing 64 MiB to stdout with no newline raises the pool's resident memory
/// by far less than that; the pool keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_line_without_end_does_not_grow_the_pool() {
    let pool = ProcessPool::builder(env!("CARGO_BIN_EXE_workcrew-demo-worker"))
        .workers(1)
        .build()
        .await
        .unwrap();
    let pids = pool.worker_pids();
    let before = rss();
    let written: u64 = within(
        "the unterminated output",
        Duration::from_secs(60),
        pool.call("unterminated", &64u64),
    )
    .await
    .unwrap();
    assert_eq!(written, 64);
    // The worker's writes returned, so the pool has read all of it but a pipe's worth.
    let grown = rss().saturating_sub(before);
    let sum: i64 = pool.call("add", &(1i64, 2i64)).await.unwrap();
    assert_eq!(sum, 3);
    within("stop", Duration::from_secs(20), pool.stop()).await;
    assert!(all_gone(&pids).await);
    assert!(
        grown < 16 * MIB,
        "the pool's memory grew by {} MiB for a 64 MiB line",
        grown / MIB
    );
}
