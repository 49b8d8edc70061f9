//! A stress test on a real multi-threaded runtime: several producers spawn while the pool is
//! paused, resumed, resized and drained at random. It checks the exactly-once guarantees that the
//! exhaustive model check in `src/task/core/model.rs` proves for single operations, under real
//! thread interleavings (including spawns that skip the pool lock through the inbox).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use workcrew::task::{TaskError, TaskPool};

const PRODUCERS: usize = 4;
const TASKS_PER_PRODUCER: usize = 5_000;

/// A small deterministic generator, so a failure can be replayed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_task_runs_once_and_is_reported_once_under_churn() {
    let pool = TaskPool::builder()
        .max_concurrency(3)
        .queue_capacity(64)
        .build()
        .expect("valid pool");
    let runs: Arc<Vec<AtomicUsize>> = Arc::new(
        (0..PRODUCERS * TASKS_PER_PRODUCER)
            .map(|_| AtomicUsize::new(0))
            .collect(),
    );

    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let (pool, runs) = (pool.clone(), Arc::clone(&runs));
        producers.push(tokio::spawn(async move {
            let mut seed = 0x9E37_79B9_7F4A_7C15 ^ (p as u64 + 1);
            let mut handles = Vec::new();
            for i in 0..TASKS_PER_PRODUCER {
                let slot = p * TASKS_PER_PRODUCER + i;
                let r = next(&mut seed);
                let runs = Arc::clone(&runs);
                let fails = r % 7 == 0;
                let body = async move {
                    runs[slot].fetch_add(1, Ordering::SeqCst);
                    if r % 5 == 0 {
                        tokio::task::yield_now().await;
                    }
                    if fails {
                        Err(format!("task {slot} failed"))
                    } else {
                        Ok(slot)
                    }
                };
                let task = pool.task(body).priority((r % 3) as i32 - 1);
                let handle = task.spawn().await.expect("the pool is open");
                // Keep some handles, detach the rest.
                if r % 2 == 0 {
                    handles.push((slot, fails, handle));
                }
            }
            for (slot, fails, handle) in handles {
                match handle.await {
                    Ok(got) => assert!(!fails && got == slot),
                    Err(TaskError::Failed(msg)) => assert!(fails, "unexpected failure {msg}"),
                    Err(other) => panic!("task {slot} ended as {other}"),
                }
            }
        }));
    }

    // Churn while the producers run.
    let churn = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut seed = 42;
            for _ in 0..200 {
                match next(&mut seed) % 4 {
                    0 => {
                        pool.pause();
                        tokio::time::sleep(Duration::from_micros(50)).await;
                        pool.resume();
                    }
                    1 => pool
                        .set_max_concurrency(1 + (next(&mut seed) % 4) as usize)
                        .expect("non-zero"),
                    2 => {
                        let _ = pool.drain().await;
                    }
                    _ => tokio::task::yield_now().await,
                }
            }
            pool.resume();
        })
    };

    for p in producers {
        p.await.expect("producer");
    }
    churn.await.expect("churn");
    // Reports taken by the churn's drains are gone; totals come from stats.
    let _ = tokio::time::timeout(Duration::from_secs(30), pool.close())
        .await
        .expect("close finishes");

    for (slot, count) in runs.iter().enumerate() {
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "task {slot} ran {count:?} times"
        );
    }
    let stats = pool.stats();
    let total = (PRODUCERS * TASKS_PER_PRODUCER) as u64;
    let failing = {
        let mut n = 0;
        for p in 0..PRODUCERS {
            let mut seed = 0x9E37_79B9_7F4A_7C15 ^ (p as u64 + 1);
            for _ in 0..TASKS_PER_PRODUCER {
                n += u64::from(next(&mut seed) % 7 == 0);
            }
        }
        n
    };
    assert_eq!(stats.completed + stats.failed, total, "{stats:?}");
    assert_eq!(stats.failed, failing);
    assert_eq!((stats.queued, stats.running), (0, 0));
    assert_eq!(stats.panicked + stats.cancelled + stats.timed_out, 0);
}
