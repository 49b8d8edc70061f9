//! The durable batch on SQLite against the parallel-worker seed's figure.
//!
//! Workload (the issue's): 1,000,000 ids in ranges of 100, 2 workers, a no-op
//! in-process handler, a fresh SQLite file per run. The seed (parallel-worker on
//! Redis, not durable: it keeps only a cursor) did 224,600 ids/s on this machine
//! for 100,000 ids in the same shape; that figure is a constant here (measured
//! once with its own Node.js program), since the seed cannot run inside this
//! bench.
//!
//! Prints criterion's statistics for one run, then
//! `figure batch_ids_per_s_sqlite` (median of 5 runs, default durability:
//! `synchronous=NORMAL` in WAL), `figure batch_ids_per_s_sqlite_full` (every
//! commit synced) and their `ratio batch_sqlite/seed` lines.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use criterion::Criterion;
use workcrew::batch::{BatchJob, Durability, SqliteStore};

/// The parallel-worker seed on Redis, measured on this machine (ids/s).
const SEED_IDS_PER_S: f64 = 224_600.0;
const IDS: i64 = 1_000_000;

fn fresh_path() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join("workcrew-batch-bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let n = N.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{}-{n}.db", std::process::id()));
    remove(&path);
    path
}

fn remove(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// One whole job; returns its wall time.
fn run_once(rt: &tokio::runtime::Runtime, durability: Durability) -> Duration {
    let path = fresh_path();
    let store = SqliteStore::builder(&path)
        .durability(durability)
        .open()
        .expect("open");
    let job = BatchJob::builder(store, "bench")
        .span(0..IDS)
        .range_size(100)
        .workers(2)
        .handler(|_range| async { Ok::<_, std::convert::Infallible>(()) })
        .build()
        .expect("job");
    let started = Instant::now();
    let summary = rt.block_on(job.run()).expect("run");
    let took = started.elapsed();
    assert_eq!(summary.ids_done, IDS as u64);
    remove(&path);
    took
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn bench(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let mut g = c.benchmark_group("batch");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("sqlite_1m_ids", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| run_once(rt, Durability::Normal)).sum())
    });
    g.finish();
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn figures(rt: &tokio::runtime::Runtime, runs: usize) {
    for (name, durability) in [
        ("sqlite", Durability::Normal),
        ("sqlite_full", Durability::Full),
    ] {
        run_once(rt, durability); // warm-up
        let rates: Vec<f64> = (0..runs)
            .map(|_| IDS as f64 / run_once(rt, durability).as_secs_f64())
            .collect();
        let rate = median(rates);
        println!("figure batch_ids_per_s_{name} {rate:.0} ids/s");
        println!("ratio batch_{name}/seed {:.2}", rate / SEED_IDS_PER_S);
    }
}

/// Raw store round trips: `tasks` tasks each loop on one step that finishes the
/// previous range and claims the next, with no engine around it.
fn steps_per_s(rt: &tokio::runtime::Runtime, tasks: usize) -> f64 {
    use std::sync::Arc;
    use workcrew::batch::{Finish, FinishOutcome, JobSpec, SourceSpec, Step, Store};
    let path = fresh_path();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).expect("open"));
    let steps = 20_000usize;
    let rate = rt.block_on(async {
        let spec = JobSpec {
            name: "steps".into(),
            source: SourceSpec::Span {
                start: 0,
                end: i64::MAX,
                size: 100,
            },
        };
        store.open(&spec).await.expect("open job");
        let started = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for t in 0..tasks {
            let store = Arc::clone(&store);
            set.spawn(async move {
                let mut finish = Vec::new();
                for _ in 0..steps / tasks {
                    let reply = store
                        .step(
                            "steps",
                            Step {
                                owner: format!("t{t}"),
                                now: 0,
                                lease_ms: 60_000,
                                finish: std::mem::take(&mut finish),
                                claim: 1,
                                at_most_once: false,
                            },
                        )
                        .await
                        .expect("step");
                    for l in reply.claimed {
                        finish.push(Finish {
                            range: l.range,
                            fence: l.fence,
                            outcome: FinishOutcome::Done { failed: vec![] },
                        });
                    }
                }
            });
        }
        while set.join_next().await.is_some() {}
        steps as f64 / started.elapsed().as_secs_f64()
    });
    drop(store);
    remove(&path);
    rate
}

fn main() {
    let rt = runtime();
    // `cargo bench` passes `--bench`; `-- --figures` skips criterion's part.
    let args: Vec<String> = std::env::args().collect();
    let benchmarking = args.iter().any(|a| a == "--bench");
    if benchmarking && !args.iter().any(|a| a == "--figures") {
        let mut criterion = Criterion::default().configure_from_args();
        bench(&mut criterion, &rt);
        criterion.final_summary();
    }
    // Under `cargo test --benches`, one run of each to prove the bench works.
    figures(&rt, if benchmarking { 5 } else { 1 });
    for tasks in [1, 2] {
        println!(
            "figure sqlite_steps_per_s_{tasks}_tasks {:.0} steps/s",
            steps_per_s(&rt, tasks)
        );
    }
}
