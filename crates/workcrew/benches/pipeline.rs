//! The Go seed's pipeline workload through `Pipeline` and through a hand-written tokio `mpsc`
//! pipeline in the same process, plus trivial items through three no-op stages.
//!
//! ```text
//! cargo bench -p workcrew --bench pipeline
//! ```
//!
//! Workload (the seed's benchmark): every job is a map of 100 entries whose keys and values are
//! 100-character strings; each of 3 stages JSON-encodes the map and decodes it back
//! (`serde_json`, `HashMap<String, String>`), with `W` workers per stage; `J` jobs per run:
//! J1000/W10, J100/W10, J10/W5. The work is CPU-bound and both variants run it in async stage
//! workers on the runtime's 2 worker threads (no `spawn_blocking`), so they do the same work on
//! the same threads and differ only in the plumbing.
//!
//! - `pipeline`: `Pipeline::from_iter(..).stage(..) x3` with default buffers (32), unordered,
//!   drained with `StreamExt::next`.
//! - `handwritten`: what an experienced tokio user writes by hand: per stage `W` worker tasks
//!   sharing an `Arc<tokio::sync::Mutex<mpsc::Receiver>>`, `mpsc::channel(32)` between stages,
//!   one source task, the caller draining the last receiver.
//!
//! No-op figure: 1,000,000 `u64` items through 3 stages of `async move { Ok(n) }` with
//! concurrency 2 each (one worker per runtime thread), unordered, default buffers.
//!
//! Criterion reports its statistics first; then every variant runs again in [`ROUNDS`]
//! interleaved rounds and the medians are printed as `figure ...` and `ratio ...` lines. Run as
//! a test (`cargo test --benches`) everything runs once on small sizes and nothing is printed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use futures::StreamExt;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinSet;
use workcrew::pipeline::Pipeline;

/// Worker threads of the tokio runtime.
const WORKER_THREADS: usize = 2;
/// Rounds of the figure runs.
const ROUNDS: usize = 7;
/// Stages of every pipeline.
const STAGES: usize = 3;
/// Channel capacity between stages in both variants (the pipeline's default).
const BUFFER: usize = workcrew::pipeline::DEFAULT_BUFFER;
/// No-op items per run.
const NOOP_ITEMS: u64 = 1_000_000;
/// Workers per no-op stage.
const NOOP_CONCURRENCY: usize = 2;

type Job = HashMap<String, String>;

/// The seed's job: 100 entries, keys and values 100 characters.
fn template() -> Job {
    (0..100)
        .map(|i| (format!("{i:0>100}"), format!("{:x>100}", i * 7)))
        .collect()
}

/// One stage's work: encode to JSON, decode back.
fn round_trip(job: Job) -> Result<Job, String> {
    let text = serde_json::to_string(&job).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

async fn pipeline(jobs: usize, workers: usize, template: Arc<Job>) -> Duration {
    let start = Instant::now();
    let source = (0..jobs).map(move |_| (*template).clone());
    let mut p = Pipeline::from_iter(source).stage("s0", workers, |j| async move { round_trip(j) });
    for s in 1..STAGES {
        p = p.stage(format!("s{s}"), workers, |j| async move { round_trip(j) });
    }
    let mut stream = p.run();
    let mut n = 0;
    while let Some(job) = stream.next().await {
        assert_eq!(job.expect("round trip").len(), 100);
        n += 1;
    }
    let elapsed = start.elapsed();
    assert_eq!(n, jobs);
    elapsed
}

async fn handwritten(jobs: usize, workers: usize, template: Arc<Job>) -> Duration {
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    let (tx, mut rx) = mpsc::channel::<Job>(BUFFER);
    tasks.spawn(async move {
        for _ in 0..jobs {
            if tx.send((*template).clone()).await.is_err() {
                return;
            }
        }
    });
    for _ in 0..STAGES {
        let (next_tx, next_rx) = mpsc::channel::<Job>(BUFFER);
        let input = Arc::new(Mutex::new(rx));
        for _ in 0..workers {
            let (input, out) = (Arc::clone(&input), next_tx.clone());
            tasks.spawn(async move {
                loop {
                    let job = input.lock().await.recv().await;
                    let Some(job) = job else { return };
                    let job = round_trip(job).expect("round trip");
                    if out.send(job).await.is_err() {
                        return;
                    }
                }
            });
        }
        rx = next_rx;
    }
    let mut n = 0;
    while let Some(job) = rx.recv().await {
        assert_eq!(job.len(), 100);
        n += 1;
    }
    let elapsed = start.elapsed();
    assert_eq!(n, jobs);
    while tasks.join_next().await.is_some() {}
    elapsed
}

async fn noop_pipeline(items: u64) -> Duration {
    let start = Instant::now();
    let mut stream = Pipeline::from_iter(0..items)
        .stage("a", NOOP_CONCURRENCY, |n| async move { Ok::<_, ()>(n) })
        .stage("b", NOOP_CONCURRENCY, |n| async move { Ok(n) })
        .stage("c", NOOP_CONCURRENCY, |n| async move { Ok(n) })
        .run();
    let mut n = 0;
    while let Some(item) = stream.next().await {
        item.expect("no-op");
        n += 1;
    }
    let elapsed = start.elapsed();
    assert_eq!(n, items);
    elapsed
}

async fn noop_handwritten(items: u64) -> Duration {
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    let (tx, mut rx) = mpsc::channel::<u64>(BUFFER);
    tasks.spawn(async move {
        for n in 0..items {
            if tx.send(n).await.is_err() {
                return;
            }
        }
    });
    for _ in 0..STAGES {
        let (next_tx, next_rx) = mpsc::channel::<u64>(BUFFER);
        let input = Arc::new(Mutex::new(rx));
        for _ in 0..NOOP_CONCURRENCY {
            let (input, out) = (Arc::clone(&input), next_tx.clone());
            tasks.spawn(async move {
                loop {
                    let item = input.lock().await.recv().await;
                    let Some(item) = item else { return };
                    if out.send(item).await.is_err() {
                        return;
                    }
                }
            });
        }
        rx = next_rx;
    }
    let mut n = 0;
    while rx.recv().await.is_some() {
        n += 1;
    }
    let elapsed = start.elapsed();
    assert_eq!(n, items);
    while tasks.join_next().await.is_some() {}
    elapsed
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// (name, jobs, workers) of the seed's workloads.
const WORKLOADS: [(&str, usize, usize); 3] = [
    ("j1000w10", 1000, 10),
    ("j100w10", 100, 10),
    ("j10w5", 10, 5),
];

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn bench_criterion(c: &mut Criterion, rt: &Runtime, template: &Arc<Job>, noop_items: u64) {
    let mut group = c.benchmark_group("go_workload_j100w10");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("pipeline", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| rt.block_on(pipeline(100, 10, Arc::clone(template))))
                .sum()
        });
    });
    group.bench_function("handwritten", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| rt.block_on(handwritten(100, 10, Arc::clone(template))))
                .sum()
        });
    });
    group.finish();
    let mut group = c.benchmark_group("noop_3_stages");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("pipeline", |b| {
        b.iter_custom(|n| (0..n).map(|_| rt.block_on(noop_pipeline(noop_items))).sum());
    });
    group.finish();
}

fn print_figures(rt: &Runtime, template: &Arc<Job>) {
    println!();
    println!("median of {ROUNDS} interleaved rounds, {WORKER_THREADS} worker threads:");
    let mut pipeline_total = Duration::ZERO;
    let mut handwritten_total = Duration::ZERO;
    for (name, jobs, workers) in WORKLOADS {
        let mut p = Vec::with_capacity(ROUNDS);
        let mut h = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            p.push(rt.block_on(pipeline(jobs, workers, Arc::clone(template))));
            h.push(rt.block_on(handwritten(jobs, workers, Arc::clone(template))));
        }
        let (p, h) = (median(p), median(h));
        pipeline_total += p;
        handwritten_total += h;
        println!(
            "figure go_workload_{name}_ms {:.2} ms",
            p.as_secs_f64() * 1000.0
        );
        println!(
            "figure go_workload_{name}_handwritten_ms {:.2} ms",
            h.as_secs_f64() * 1000.0
        );
        println!(
            "ratio pipeline/handwritten_{name} {:.3}",
            p.as_secs_f64() / h.as_secs_f64()
        );
    }
    println!(
        "ratio pipeline/handwritten {:.3}",
        pipeline_total.as_secs_f64() / handwritten_total.as_secs_f64()
    );
    let mut p = Vec::with_capacity(ROUNDS);
    let mut h = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        p.push(rt.block_on(noop_pipeline(NOOP_ITEMS)));
        h.push(rt.block_on(noop_handwritten(NOOP_ITEMS)));
    }
    let (p, h) = (median(p), median(h));
    println!(
        "figure noop_items_per_s {:.0} items/s",
        NOOP_ITEMS as f64 / p.as_secs_f64()
    );
    println!(
        "figure noop_handwritten_items_per_s {:.0} items/s",
        NOOP_ITEMS as f64 / h.as_secs_f64()
    );
    println!(
        "ratio pipeline/handwritten_noop {:.3}",
        p.as_secs_f64() / h.as_secs_f64()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    let args: Vec<String> = std::env::args().collect();
    let benchmarking =
        args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list");
    let rt = runtime();
    let template = Arc::new(template());
    if !benchmarking {
        rt.block_on(pipeline(10, 5, Arc::clone(&template)));
        rt.block_on(handwritten(10, 5, Arc::clone(&template)));
        rt.block_on(noop_pipeline(10_000));
        rt.block_on(noop_handwritten(10_000));
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    bench_criterion(&mut criterion, &rt, &template, NOOP_ITEMS);
    criterion.final_summary();
    print_figures(&rt, &template);
}
