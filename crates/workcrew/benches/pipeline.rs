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
//! concurrency 2 each (one worker per runtime thread), unordered, default buffers, drained by a
//! task on the runtime (`figure noop_items_per_s`: the shape of the Go program, whose draining
//! main goroutine runs on Go's scheduler like its stages) and from `block_on`'s own thread
//! (`figure noop_block_on_items_per_s`: a third thread on two cores, as a `#[tokio::main]` body
//! drains it; each item batch then costs that thread a wake-up).
//!
//! Baselines in the same run:
//!
//! - Go: `benches/go/noop/main.go`, the same no-op shape with Go channels of capacity 32 and 2
//!   goroutines per stage (what pipeline users compare with). The bench builds it with `go build`
//!   (build cache under the target directory) and runs it once per round; `ratio noop/go_noop`
//!   is workcrew's items/s over Go's. Where `go` is missing it prints one line saying so and
//!   skips that comparison (Debian: `apt-get install golang-go`).
//! - Well-kept MPMC channels, the candidates to replace the pipeline's hand-written channel
//!   (issue 10): flume, kanal and async-channel, each in the hand-written pipeline shape (every
//!   worker of a stage holds a clone of the stage's receiver), on the no-op and J1000/W10
//!   workloads.
//!
//! Criterion reports its statistics first; then every variant runs again in [`ROUNDS`]
//! interleaved rounds and the medians are printed as `figure ...` and `ratio ...` lines.
//! Arguments that are not options filter the figures by name as they do criterion's groups
//! (`cargo bench -p workcrew --bench pipeline -- noop`). Run as a test (`cargo test --benches`)
//! everything runs once on small sizes and nothing is printed.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
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
    let mut stream = p.run().unwrap();
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
        .run()
        .unwrap();
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

/// A bounded MPMC channel crate, for the hand-written baselines.
trait Mpmc {
    const NAME: &'static str;
    type Tx<T: Send + 'static>: Clone + Send + 'static;
    type Rx<T: Send + 'static>: Clone + Send + 'static;

    fn bounded<T: Send + 'static>(capacity: usize) -> (Self::Tx<T>, Self::Rx<T>);
    /// False once every receiver is gone.
    fn send<T: Send + 'static>(tx: &Self::Tx<T>, item: T) -> impl Future<Output = bool> + Send;
    /// `None` once every sender is gone and the channel is empty.
    fn recv<T: Send + 'static>(rx: &Self::Rx<T>) -> impl Future<Output = Option<T>> + Send;
}

struct Flume;
struct Kanal;
struct AsyncChannel;

impl Mpmc for Flume {
    const NAME: &'static str = "flume";
    type Tx<T: Send + 'static> = flume::Sender<T>;
    type Rx<T: Send + 'static> = flume::Receiver<T>;

    fn bounded<T: Send + 'static>(capacity: usize) -> (Self::Tx<T>, Self::Rx<T>) {
        flume::bounded(capacity)
    }
    async fn send<T: Send + 'static>(tx: &Self::Tx<T>, item: T) -> bool {
        tx.send_async(item).await.is_ok()
    }
    async fn recv<T: Send + 'static>(rx: &Self::Rx<T>) -> Option<T> {
        rx.recv_async().await.ok()
    }
}

impl Mpmc for Kanal {
    const NAME: &'static str = "kanal";
    type Tx<T: Send + 'static> = kanal::AsyncSender<T>;
    type Rx<T: Send + 'static> = kanal::AsyncReceiver<T>;

    fn bounded<T: Send + 'static>(capacity: usize) -> (Self::Tx<T>, Self::Rx<T>) {
        kanal::bounded_async(capacity)
    }
    async fn send<T: Send + 'static>(tx: &Self::Tx<T>, item: T) -> bool {
        tx.send(item).await.is_ok()
    }
    async fn recv<T: Send + 'static>(rx: &Self::Rx<T>) -> Option<T> {
        rx.recv().await.ok()
    }
}

impl Mpmc for AsyncChannel {
    const NAME: &'static str = "async_channel";
    type Tx<T: Send + 'static> = async_channel::Sender<T>;
    type Rx<T: Send + 'static> = async_channel::Receiver<T>;

    fn bounded<T: Send + 'static>(capacity: usize) -> (Self::Tx<T>, Self::Rx<T>) {
        // async-channel has no rendezvous: 0 would panic (the bench uses 32).
        async_channel::bounded(capacity.max(1))
    }
    async fn send<T: Send + 'static>(tx: &Self::Tx<T>, item: T) -> bool {
        tx.send(item).await.is_ok()
    }
    async fn recv<T: Send + 'static>(rx: &Self::Rx<T>) -> Option<T> {
        rx.recv().await.ok()
    }
}

/// The hand-written pipeline over an MPMC channel: a source task, `workers` tasks per stage
/// each with a clone of the stage's receiver, the caller draining the last channel.
async fn mpmc_pipeline<C: Mpmc, T, F>(
    items: impl Iterator<Item = T> + Send + 'static,
    workers: usize,
    work: F,
) -> (Duration, usize)
where
    T: Send + 'static,
    F: Fn(T) -> T + Send + Sync + Copy + 'static,
{
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    let (tx, mut rx) = C::bounded::<T>(BUFFER);
    tasks.spawn(async move {
        for item in items {
            if !C::send(&tx, item).await {
                return;
            }
        }
    });
    for _ in 0..STAGES {
        let (next_tx, next_rx) = C::bounded::<T>(BUFFER);
        for _ in 0..workers {
            let (input, out) = (rx.clone(), next_tx.clone());
            tasks.spawn(async move {
                while let Some(item) = C::recv(&input).await {
                    if !C::send(&out, work(item)).await {
                        return;
                    }
                }
            });
        }
        rx = next_rx;
    }
    let mut n = 0;
    while C::recv(&rx).await.is_some() {
        n += 1;
    }
    let elapsed = start.elapsed();
    while tasks.join_next().await.is_some() {}
    (elapsed, n)
}

async fn noop_mpmc<C: Mpmc>(items: u64) -> Duration {
    let (elapsed, n) = mpmc_pipeline::<C, u64, _>(0..items, NOOP_CONCURRENCY, |n| n).await;
    assert_eq!(n as u64, items);
    elapsed
}

async fn go_workload_mpmc<C: Mpmc>(jobs: usize, workers: usize, template: Arc<Job>) -> Duration {
    let source = (0..jobs).map(move |_| (*template).clone());
    let (elapsed, n) =
        mpmc_pipeline::<C, Job, _>(source, workers, |job| round_trip(job).expect("round trip"))
            .await;
    assert_eq!(n, jobs);
    elapsed
}

/// The Go no-op program, built once per bench run.
struct GoNoop {
    binary: PathBuf,
}

impl GoNoop {
    /// Builds `benches/go/noop/main.go` into the target directory; `None` (after saying why on
    /// one line) where `go` is missing or the build fails.
    fn build() -> Option<GoNoop> {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/go/noop/main.go");
        // The bench binary is target/<profile>/deps/pipeline-<hash>.
        let target = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("go-bench")))
            .unwrap_or_else(|| std::env::temp_dir().join("workcrew-go-bench"));
        let binary = target.join("noop");
        let built = Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&binary)
            .arg(&source)
            .env("GOCACHE", target.join("cache"))
            .env("GOPATH", target.join("gopath"))
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "")
            .output();
        match built {
            Ok(out) if out.status.success() => Some(GoNoop { binary }),
            Ok(out) => {
                println!(
                    "skipped go_noop: `go build` failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                println!(
                    "skipped go_noop: `go` not found ({e}); install Go (Debian: golang-go) to compare with Go channels"
                );
                None
            }
        }
    }

    /// One run of `items` items; the Go program's items per second.
    fn run(&self, items: u64) -> f64 {
        let out = Command::new(&self.binary)
            .arg(items.to_string())
            .output()
            .expect("run the Go no-op program");
        assert!(out.status.success(), "Go no-op program failed: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .strip_prefix("items_per_s ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected Go output: {text}"))
    }
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

/// Whether the figures named `name` were asked for (no filter: all of them).
fn wanted(filters: &[String], name: &str) -> bool {
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}

fn per_s(items: u64, d: Duration) -> f64 {
    items as f64 / d.as_secs_f64()
}

fn print_figures(rt: &Runtime, template: &Arc<Job>, filters: &[String]) {
    println!();
    println!("median of {ROUNDS} interleaved rounds, {WORKER_THREADS} worker threads:");
    if wanted(filters, "go_workload") {
        print_go_workload(rt, template);
    }
    if wanted(filters, "noop") {
        print_noop(rt);
    }
}

fn print_go_workload(rt: &Runtime, template: &Arc<Job>) {
    let mut pipeline_total = Duration::ZERO;
    let mut handwritten_total = Duration::ZERO;
    for (name, jobs, workers) in WORKLOADS {
        let mut p = Vec::with_capacity(ROUNDS);
        let mut h = Vec::with_capacity(ROUNDS);
        // The channel candidates on the biggest workload only (they cost minutes otherwise).
        let mut c: [Vec<Duration>; 3] = Default::default();
        for _ in 0..ROUNDS {
            p.push(rt.block_on(pipeline(jobs, workers, Arc::clone(template))));
            h.push(rt.block_on(handwritten(jobs, workers, Arc::clone(template))));
            if name == "j1000w10" {
                c[0].push(rt.block_on(go_workload_mpmc::<Flume>(
                    jobs,
                    workers,
                    Arc::clone(template),
                )));
                c[1].push(rt.block_on(go_workload_mpmc::<Kanal>(
                    jobs,
                    workers,
                    Arc::clone(template),
                )));
                c[2].push(rt.block_on(go_workload_mpmc::<AsyncChannel>(
                    jobs,
                    workers,
                    Arc::clone(template),
                )));
            }
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
        if name == "j1000w10" {
            for (channel, runs) in [Flume::NAME, Kanal::NAME, AsyncChannel::NAME]
                .into_iter()
                .zip(c)
            {
                let d = median(runs);
                println!(
                    "figure go_workload_{name}_{channel}_ms {:.2} ms",
                    d.as_secs_f64() * 1000.0
                );
                println!(
                    "ratio pipeline/{channel}_{name} {:.3}",
                    p.as_secs_f64() / d.as_secs_f64()
                );
            }
        }
    }
    println!(
        "ratio pipeline/handwritten {:.3}",
        pipeline_total.as_secs_f64() / handwritten_total.as_secs_f64()
    );
}

fn print_noop(rt: &Runtime) {
    let go = GoNoop::build();
    let mut p = Vec::with_capacity(ROUNDS);
    let mut h = Vec::with_capacity(ROUNDS);
    let mut c: [Vec<Duration>; 3] = Default::default();
    let mut g = Vec::with_capacity(ROUNDS);
    let mut b = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        // The consumer as a runtime task, as Go's draining main goroutine is one of
        // its scheduler's goroutines; and from `block_on`'s own thread (a third
        // thread on two cores), as a `#[tokio::main]` body drains it.
        p.push(rt.block_on(async {
            tokio::spawn(noop_pipeline(NOOP_ITEMS))
                .await
                .expect("no-op run")
        }));
        b.push(rt.block_on(noop_pipeline(NOOP_ITEMS)));
        h.push(rt.block_on(noop_handwritten(NOOP_ITEMS)));
        c[0].push(rt.block_on(noop_mpmc::<Flume>(NOOP_ITEMS)));
        c[1].push(rt.block_on(noop_mpmc::<Kanal>(NOOP_ITEMS)));
        c[2].push(rt.block_on(noop_mpmc::<AsyncChannel>(NOOP_ITEMS)));
        if let Some(go) = &go {
            g.push(go.run(NOOP_ITEMS));
        }
    }
    let (p, h) = (median(p), median(h));
    let noop = per_s(NOOP_ITEMS, p);
    let noop_block_on = per_s(NOOP_ITEMS, median(b));
    println!("figure noop_items_per_s {noop:.0} items/s");
    println!("figure noop_block_on_items_per_s {noop_block_on:.0} items/s");
    println!(
        "figure noop_handwritten_items_per_s {:.0} items/s",
        per_s(NOOP_ITEMS, h)
    );
    println!(
        "ratio pipeline/handwritten_noop {:.3}",
        p.as_secs_f64() / h.as_secs_f64()
    );
    for (channel, runs) in [Flume::NAME, Kanal::NAME, AsyncChannel::NAME]
        .into_iter()
        .zip(c)
    {
        let rate = per_s(NOOP_ITEMS, median(runs));
        println!("figure noop_{channel}_items_per_s {rate:.0} items/s");
        println!("ratio noop/{channel}_noop {:.3}", noop / rate);
    }
    if !g.is_empty() {
        g.sort_by(f64::total_cmp);
        let go = g[g.len() / 2];
        println!("figure go_noop_items_per_s {go:.0} items/s");
        println!("ratio noop/go_noop {:.3}", noop / go);
        println!("ratio noop_block_on/go_noop {:.3}", noop_block_on / go);
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let benchmarking =
        args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list");
    let filters: Vec<String> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .cloned()
        .collect();
    let rt = runtime();
    let template = Arc::new(template());
    if !benchmarking {
        rt.block_on(pipeline(10, 5, Arc::clone(&template)));
        rt.block_on(handwritten(10, 5, Arc::clone(&template)));
        rt.block_on(noop_pipeline(10_000));
        rt.block_on(noop_handwritten(10_000));
        rt.block_on(noop_mpmc::<Flume>(10_000));
        rt.block_on(noop_mpmc::<Kanal>(10_000));
        rt.block_on(noop_mpmc::<AsyncChannel>(10_000));
        rt.block_on(go_workload_mpmc::<Kanal>(10, 5, Arc::clone(&template)));
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    bench_criterion(&mut criterion, &rt, &template, NOOP_ITEMS);
    criterion.final_summary();
    print_figures(&rt, &template, &filters);
}
