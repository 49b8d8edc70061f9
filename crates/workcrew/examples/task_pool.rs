//! Fetch 200 items through a `TaskPool`: at most 8 at a time, at most 100 starts per second,
//! transient errors retried with backoff, a missing item not retried, and one task that panics
//! without taking the pool down. Progress comes from the pool's event stream; at the end the
//! drain report lists what failed and the stats give wait and run time percentiles.
//!
//! ```text
//! cargo run --release --example task_pool
//! ```
//!
//! The "network" is simulated with `tokio::time::sleep`, so the example needs no server.

use std::fmt;
use std::time::{Duration, Instant};

use futures::StreamExt;
use workcrew::task::{
    OutcomeKind, PoolEvent, RateLimit, RetryPolicy, TaskError, TaskHandle, TaskPool,
};

const ITEMS: u64 = 200;

/// A fetched item.
struct Page {
    bytes: u64,
}

/// Why a fetch failed.
#[derive(Debug)]
enum FetchError {
    /// Worth another try (a timeout, a 503).
    Unavailable { item: u64, attempt: u32 },
    /// Retrying will not help.
    NotFound { item: u64 },
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Unavailable { item, attempt } => {
                write!(f, "item {item} unavailable on attempt {attempt}")
            }
            FetchError::NotFound { item } => write!(f, "item {item} not found"),
        }
    }
}

/// Pretends to download `item`. Deterministic, so every run prints the same counts:
/// every 7th item fails once, every 23rd twice, every 50th does not exist, item 123 hits a bug.
async fn fetch(item: u64, attempt: u32) -> Result<Page, FetchError> {
    tokio::time::sleep(Duration::from_millis(10 + item * 37 % 41)).await;
    if item % 50 == 49 {
        return Err(FetchError::NotFound { item });
    }
    if item == 123 {
        panic!("parser bug on item {item}");
    }
    let failures = match item {
        i if i % 23 == 5 => 2,
        i if i % 7 == 3 => 1,
        _ => 0,
    };
    if attempt <= failures {
        return Err(FetchError::Unavailable { item, attempt });
    }
    Ok(Page {
        bytes: 1_000 + item * 97 % 4_000,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let pool = TaskPool::builder()
        .name("fetch")
        .max_concurrency(8)
        .rate_limit(RateLimit::per(100, Duration::from_secs(1)).burst(10))
        .task_timeout(Duration::from_secs(5))
        .build()?;
    println!("fetching {ITEMS} items: 8 at a time, at most 100 starts/s, 3 attempts each");

    // Progress from the event stream, in its own task.
    let mut events = pool.events();
    let progress = tokio::spawn(async move {
        let (mut finished, mut retries) = (0, 0);
        while finished < ITEMS {
            match events.next().await {
                Some(PoolEvent::TaskFinished { outcome, .. }) => {
                    finished += 1;
                    if finished % 50 == 0 {
                        println!("  {finished:>3}/{ITEMS} finished, {retries} retries so far");
                    }
                    if outcome == OutcomeKind::Panicked {
                        println!("  a task panicked; the pool carries on");
                    }
                }
                Some(PoolEvent::TaskRetried { .. }) => retries += 1,
                Some(PoolEvent::Lagged { missed }) => finished += missed,
                Some(_) => {}
                None => break,
            }
        }
    });

    // A retried task is given as a closure: each attempt calls it for a fresh future.
    let mut handles: Vec<TaskHandle<Result<Page, FetchError>>> = Vec::new();
    for item in 0..ITEMS {
        let mut attempt = 0;
        let handle = pool
            .task_fn(move || {
                attempt += 1;
                fetch(item, attempt)
            })
            .name(format!("item-{item}"))
            .retry(
                RetryPolicy::new(3).backoff(Duration::from_millis(20), Duration::from_millis(200)),
            )
            .retry_if(|err| matches!(err, FetchError::Unavailable { .. }))
            .spawn()
            .await?;
        handles.push(handle);
    }

    // Awaiting a handle gives the task's own result, or how it ended otherwise.
    let (mut fetched, mut bytes, mut failed, mut panicked, mut other) = (0, 0, 0, 0, 0);
    for handle in handles {
        match handle.await {
            Ok(page) => {
                fetched += 1;
                bytes += page.bytes;
            }
            Err(TaskError::Failed(_)) => failed += 1,
            Err(err) if err.is_panic() => panicked += 1,
            Err(_) => other += 1, // cancelled or timed out
        }
    }

    let report = pool.close().await?;
    // Every event is sent by now; give the printer a moment to catch up.
    let _ = tokio::time::timeout(Duration::from_secs(1), progress).await;

    println!(
        "results: {fetched} fetched ({} KiB), {failed} failed, {panicked} panicked, {other} other",
        bytes / 1024
    );
    println!(
        "report: {} completed, {} failed, {} panicked, {} cancelled, {} timed out",
        report.completed, report.failed, report.panicked, report.cancelled, report.timed_out
    );
    for failure in &report.failures {
        println!("  {failure}");
    }
    let stats = pool.stats();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "wait ms: p50 {:.0}  p90 {:.0}  p99 {:.0}  | run ms: p50 {:.0}  p90 {:.0}  p99 {:.0}",
        ms(stats.wait_time.p50),
        ms(stats.wait_time.p90),
        ms(stats.wait_time.p99),
        ms(stats.run_time.p50),
        ms(stats.run_time.p90),
        ms(stats.run_time.p99),
    );
    println!(
        "{} retries; done in {:.2} s",
        stats.retried,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
