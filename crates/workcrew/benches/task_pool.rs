//! 1,000,000 no-op tasks at concurrency 4 on a tokio runtime with 2 worker threads, through
//! `TaskPool` and through the alternatives a user would otherwise write, in one process; then the
//! memory cost of 1,000,000 tasks queued but not yet started.
//!
//! ```text
//! cargo bench -p workcrew --bench task_pool
//! ```
//!
//! Variants (every one runs the same 1,000,000 `async {}` tasks):
//!
//! - `task_pool`: `pool.spawn(fut).await`, handle dropped (detached), then `pool.drain()`.
//! - `task_pool_try_spawn`: `pool.try_spawn(fut)`, falling back to `spawn` when the queue is full.
//! - `semaphore_joinset`: an `Arc<Semaphore>` with 4 permits and a `JoinSet`, finished tasks
//!   reaped with `try_join_next` so memory stays bounded (the hand-written pattern).
//! - `joinset_unbounded`: `JoinSet::spawn` of every task, no limit, then join all.
//! - `buffer_unordered`: `stream::iter(..).map(..).buffer_unordered(4)` driven by one task (no
//!   parallelism: the floor).
//! - `*_in_runtime`: `task_pool`, `semaphore_joinset` and `joinset_unbounded` again, with the
//!   spawning loop running as a task on the runtime's two worker threads (as a server handler
//!   does) rather than on `block_on`'s own thread. Printed as extra `ratio
//!   task_pool_in_runtime/<baseline>_in_runtime` lines.
//!
//! Criterion reports its statistics first. Then the bench times every variant again, in
//! [`ROUNDS`] interleaved rounds, each sample in a fresh process after a warm-up batch (see
//! `time_in_child`), and prints the median per task and the ratios as
//! `figure <name>_ns_per_task <v> ns` and `ratio task_pool/<baseline> <v>` (workcrew time divided
//! by baseline time). Every batch is driven from `Runtime::block_on`, as `#[tokio::main]` does.
//!
//! Memory is measured as resident-set growth (`VmRSS`/`VmHWM` in `/proc/self/status`, Linux only)
//! in a fresh child process per variant (this binary re-executed), so that memory freed by the
//! timing runs and kept by the allocator cannot hide growth. Over 1,000,000 tasks page
//! granularity is noise (a million 200-byte boxes measure 216 bytes each: payload, malloc
//! header, `Vec` slot). A counting `#[global_allocator]` would need `unsafe impl GlobalAlloc`,
//! which the workspace forbids, or one more dependency.
//!
//! Run as a test (`cargo test --benches`), every variant runs once with [`TEST_TASKS`] tasks and
//! no figures are printed.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use futures::StreamExt;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use workcrew::task::{TaskHandle, TaskPool};

/// Tasks per batch when benchmarking.
const TASKS: usize = 1_000_000;
/// Tasks per batch when the bench runs as a test (`cargo test --benches`).
const TEST_TASKS: usize = 10_000;
/// The concurrency limit every bounded variant uses.
const CONCURRENCY: usize = 4;
/// Worker threads of the tokio runtime.
const WORKER_THREADS: usize = 2;
/// Rounds of the figure runs; every variant runs once per round and the median is reported.
const ROUNDS: usize = 5;
/// Set in the child process that measures queued memory: `kept` or `detached` handles.
const MEMORY_ENV: &str = "WORKCREW_BENCH_QUEUED_MEMORY";
/// Set in a child process that times one sample of the named variant.
const VARIANT_ENV: &str = "WORKCREW_BENCH_VARIANT";
/// The batch size for that child.
const TASKS_ENV: &str = "WORKCREW_BENCH_TASKS";

/// One way of running a batch of no-op tasks at concurrency 4.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    TaskPool,
    TaskPoolTrySpawn,
    SemaphoreJoinSet,
    JoinSetUnbounded,
    BufferUnordered,
    /// The same three, with the spawning loop itself a task on the runtime (a server handler
    /// spawning background work) instead of `block_on`'s thread.
    TaskPoolInRuntime,
    SemaphoreJoinSetInRuntime,
    JoinSetUnboundedInRuntime,
}

impl Variant {
    const ALL: [Variant; 8] = [
        Variant::TaskPool,
        Variant::TaskPoolTrySpawn,
        Variant::SemaphoreJoinSet,
        Variant::JoinSetUnbounded,
        Variant::BufferUnordered,
        Variant::TaskPoolInRuntime,
        Variant::SemaphoreJoinSetInRuntime,
        Variant::JoinSetUnboundedInRuntime,
    ];

    /// In-runtime baselines `task_pool_in_runtime` is compared with.
    const IN_RUNTIME_BASELINES: [Variant; 2] = [
        Variant::SemaphoreJoinSetInRuntime,
        Variant::JoinSetUnboundedInRuntime,
    ];

    /// The baselines `task_pool` is compared with, in the order the ratios are printed.
    const BASELINES: [Variant; 3] = [
        Variant::SemaphoreJoinSet,
        Variant::JoinSetUnbounded,
        Variant::BufferUnordered,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::TaskPool => "task_pool",
            Variant::TaskPoolTrySpawn => "task_pool_try_spawn",
            Variant::SemaphoreJoinSet => "semaphore_joinset",
            Variant::JoinSetUnbounded => "joinset_unbounded",
            Variant::BufferUnordered => "buffer_unordered",
            Variant::TaskPoolInRuntime => "task_pool_in_runtime",
            Variant::SemaphoreJoinSetInRuntime => "semaphore_joinset_in_runtime",
            Variant::JoinSetUnboundedInRuntime => "joinset_unbounded_in_runtime",
        }
    }

    /// Runs one batch of `tasks` no-op tasks and returns the time it took, set-up included and
    /// tear-down (closing the pool) excluded.
    fn run(self, rt: &Runtime, tasks: usize) -> Duration {
        match self {
            Variant::TaskPool => rt.block_on(task_pool_spawn(tasks)),
            Variant::TaskPoolTrySpawn => rt.block_on(task_pool_try_spawn(tasks)),
            Variant::SemaphoreJoinSet => rt.block_on(semaphore_joinset(tasks)),
            Variant::JoinSetUnbounded => rt.block_on(joinset_unbounded(tasks)),
            Variant::BufferUnordered => rt.block_on(buffer_unordered(tasks)),
            Variant::TaskPoolInRuntime => in_runtime(rt, task_pool_spawn(tasks)),
            Variant::SemaphoreJoinSetInRuntime => in_runtime(rt, semaphore_joinset(tasks)),
            Variant::JoinSetUnboundedInRuntime => in_runtime(rt, joinset_unbounded(tasks)),
        }
    }
}

/// Runs `batch` as a task on one of the runtime's worker threads.
fn in_runtime(
    rt: &Runtime,
    batch: impl std::future::Future<Output = Duration> + Send + 'static,
) -> Duration {
    rt.block_on(async move { tokio::spawn(batch).await.expect("batch task") })
}

/// The task every variant runs: a future that does nothing.
async fn no_op() {}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn pool(queue_capacity: Option<usize>) -> TaskPool {
    let builder = TaskPool::builder().max_concurrency(CONCURRENCY);
    let builder = match queue_capacity {
        Some(capacity) => builder.queue_capacity(capacity),
        None => builder,
    };
    builder.build().expect("valid pool configuration")
}

/// Closes a pool whose work is done, so its workers end before the next batch.
async fn close(pool: TaskPool) {
    pool.close().await.expect("close an idle pool");
}

async fn task_pool_spawn(tasks: usize) -> Duration {
    let start = Instant::now();
    let pool = pool(None);
    for _ in 0..tasks {
        // The handle is dropped at once: the task is detached and keeps running.
        if pool.spawn(no_op()).await.is_err() {
            panic!("pool closed while spawning");
        }
    }
    let report = pool.drain().await.expect("drain");
    let elapsed = start.elapsed();
    assert_eq!(report.completed, tasks as u64, "every task completes");
    close(pool).await;
    elapsed
}

async fn task_pool_try_spawn(tasks: usize) -> Duration {
    let start = Instant::now();
    let pool = pool(None);
    for _ in 0..tasks {
        match pool.try_spawn(no_op()) {
            Ok(_detached) => {}
            // Queue full: wait for room with the task we got back.
            Err(full) if full.is_full() => {
                if pool.spawn(full.into_inner()).await.is_err() {
                    panic!("pool closed while spawning");
                }
            }
            Err(_) => panic!("pool closed while spawning"),
        }
    }
    let report = pool.drain().await.expect("drain");
    let elapsed = start.elapsed();
    assert_eq!(report.completed, tasks as u64, "every task completes");
    close(pool).await;
    elapsed
}

async fn semaphore_joinset(tasks: usize) -> Duration {
    let start = Instant::now();
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut running = JoinSet::new();
    for _ in 0..tasks {
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        let task = no_op();
        running.spawn(async move {
            task.await;
            drop(permit);
        });
        // Reap what has finished so the set stays small.
        while let Some(done) = running.try_join_next() {
            done.expect("no-op task");
        }
    }
    while let Some(done) = running.join_next().await {
        done.expect("no-op task");
    }
    start.elapsed()
}

async fn joinset_unbounded(tasks: usize) -> Duration {
    let start = Instant::now();
    let mut running = JoinSet::new();
    for _ in 0..tasks {
        running.spawn(no_op());
    }
    while let Some(done) = running.join_next().await {
        done.expect("no-op task");
    }
    start.elapsed()
}

async fn buffer_unordered(tasks: usize) -> Duration {
    let start = Instant::now();
    let done = futures::stream::iter(0..tasks)
        .map(|_| no_op())
        .buffer_unordered(CONCURRENCY)
        .count()
        .await;
    let elapsed = start.elapsed();
    assert_eq!(done, tasks, "every task completes");
    elapsed
}

/// Criterion statistics: every sample runs whole batches (flat sampling, so a slow variant runs
/// 10 batches rather than criterion's linear 55).
fn bench_throughput(c: &mut Criterion, rt: &Runtime, tasks: usize) {
    let mut group = c.benchmark_group("no_op_tasks_concurrency_4");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(tasks as u64));
    for variant in Variant::ALL {
        group.bench_function(variant.name(), |b| {
            b.iter_custom(|batches| (0..batches).map(|_| variant.run(rt, tasks)).sum());
        });
    }
    group.finish();
}

/// Times every variant in interleaved rounds (so drift hits all alike) and prints the median
/// time per task and the ratios.
fn print_time_figures(tasks: usize) {
    let exe = std::env::current_exe().expect("path of the bench binary");
    let mut samples = vec![Vec::with_capacity(ROUNDS); Variant::ALL.len()];
    for _ in 0..ROUNDS {
        for (i, variant) in Variant::ALL.into_iter().enumerate() {
            samples[i].push(time_in_child(&exe, variant, tasks));
        }
    }
    let ns_per_task = |variant: Variant| {
        let i = Variant::ALL
            .iter()
            .position(|&v| v == variant)
            .expect("variant is listed in ALL");
        let mut runs = samples[i].clone();
        runs.sort();
        runs[runs.len() / 2].as_nanos() as f64 / tasks as f64
    };
    println!();
    println!(
        "median of {ROUNDS} rounds of {tasks} no-op tasks, concurrency {CONCURRENCY}, \
         {WORKER_THREADS} worker threads:"
    );
    for variant in Variant::ALL {
        println!(
            "figure {}_ns_per_task {:.1} ns",
            variant.name(),
            ns_per_task(variant)
        );
    }
    let pool_ns = ns_per_task(Variant::TaskPool);
    for baseline in Variant::BASELINES {
        println!(
            "ratio task_pool/{} {:.3}",
            baseline.name(),
            pool_ns / ns_per_task(baseline)
        );
    }
    let pool_ns = ns_per_task(Variant::TaskPoolInRuntime);
    for baseline in Variant::IN_RUNTIME_BASELINES {
        println!(
            "ratio task_pool_in_runtime/{} {:.3}",
            baseline.name(),
            pool_ns / ns_per_task(baseline)
        );
    }
}

/// Times one batch of `variant` in a fresh process (this binary re-executed), after a warm-up
/// batch of a tenth of the size. A fresh process per sample keeps one variant's leftovers (a heap
/// grown by a million live tasks, runtime queues) from slowing the next: measured, a `TaskPool`
/// batch run right after a million-task `JoinSet` batch in the same runtime took up to 40% longer.
fn time_in_child(exe: &std::path::Path, variant: Variant, tasks: usize) -> Duration {
    let output = Command::new(exe)
        .env(VARIANT_ENV, variant.name())
        .env(TASKS_ENV, tasks.to_string())
        .output()
        .expect("start the bench binary for one sample");
    assert!(
        output.status.success(),
        "sample of {} failed: {}",
        variant.name(),
        String::from_utf8_lossy(&output.stderr)
    );
    let nanos: u64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("the child prints the batch time in nanoseconds");
    Duration::from_nanos(nanos)
}

/// In the child process: warm up, then time one batch and print its nanoseconds.
fn run_one_sample(name: &str, tasks: usize) {
    let variant = Variant::ALL
        .into_iter()
        .find(|v| v.name() == name)
        .expect("a known variant name");
    let rt = runtime();
    variant.run(&rt, (tasks / 10).max(1));
    println!("{}", variant.run(&rt, tasks).as_nanos());
}

/// Runs the queued-memory measurement in child processes and relays their output.
fn print_memory_figures() {
    let exe = std::env::current_exe().expect("path of the bench binary");
    for mode in ["kept", "detached"] {
        let output = Command::new(&exe).env(MEMORY_ENV, mode).output();
        match output {
            Ok(output) if output.status.success() => {
                print!("{}", String::from_utf8_lossy(&output.stdout));
            }
            Ok(output) => eprintln!(
                "queued memory ({mode} handles) failed: {}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(err) => eprintln!("queued memory ({mode} handles): cannot start {exe:?}: {err}"),
        }
    }
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`), in bytes.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// In the child process: `tasks` tasks queued in a paused pool, handles kept or dropped.
fn measure_queued_memory(keep_handles: bool, tasks: usize) {
    let rt = runtime();
    rt.block_on(async {
        let future_bytes = std::mem::size_of_val(&no_op());
        let mut handles: Vec<TaskHandle<()>> =
            Vec::with_capacity(if keep_handles { tasks } else { 0 });
        let handles_vec_bytes = handles.capacity() * std::mem::size_of::<TaskHandle<()>>();

        // Reset the peak (VmHWM) to the current RSS; if that is not allowed the peak since start
        // is used, which here is only the runtime's start-up.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let Some(before) = status_bytes("VmRSS") else {
            eprintln!("no VmRSS in /proc/self/status: queued memory not measured");
            return;
        };

        let pool = pool(Some(tasks));
        pool.pause();
        for _ in 0..tasks {
            let Ok(handle) = pool.try_spawn(no_op()) else {
                panic!("queue_capacity {tasks} holds {tasks} tasks");
            };
            if keep_handles {
                handles.push(handle);
            }
        }
        let queued = pool.stats().queued;
        let now = status_bytes("VmRSS").unwrap_or(0);
        let peak = status_bytes("VmHWM").unwrap_or(0).max(now);

        let growth = peak.saturating_sub(before) as f64;
        let per_task = (growth - handles_vec_bytes as f64) / tasks as f64 - future_bytes as f64;
        let (figure, what) = if keep_handles {
            ("queued_task_bytes", "handles kept")
        } else {
            ("queued_task_bytes_detached", "handles dropped")
        };
        let mib = |bytes: f64| bytes / (1024.0 * 1024.0);
        println!(
            "queued memory, {what}: {tasks} tasks ({queued} queued), RSS +{:.1} MiB at peak, \
             +{:.1} MiB after queueing; minus {future_bytes} B future per task and \
             {handles_vec_bytes} B of handle Vec",
            mib(growth),
            mib(now.saturating_sub(before) as f64),
        );
        println!("figure {figure} {per_task:.0} bytes");

        pool.resume();
        let report = pool.close().await.expect("close");
        assert_eq!(
            report.completed, tasks as u64,
            "every queued task completes"
        );
        drop(handles);
    });
}

fn main() {
    if let Ok(mode) = std::env::var(MEMORY_ENV) {
        measure_queued_memory(mode == "kept", TASKS);
        return;
    }
    if let Ok(name) = std::env::var(VARIANT_ENV) {
        let tasks = std::env::var(TASKS_ENV)
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(TASKS);
        run_one_sample(&name, tasks);
        return;
    }

    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and criterion then runs
    // each benchmark once as a smoke test.
    let args: Vec<String> = std::env::args().collect();
    let benchmarking =
        args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list");
    let tasks = if benchmarking { TASKS } else { TEST_TASKS };

    let rt = runtime();
    let mut criterion = Criterion::default().configure_from_args();
    bench_throughput(&mut criterion, &rt, tasks);
    criterion.final_summary();

    if benchmarking {
        print_time_figures(tasks);
        print_memory_figures();
    }
}
