//! The Redis store's batch figures, on the issue's workload:
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo bench -p workcrew-redis --bench batch [-- --figures]
//! ```
//!
//! Criterion first measures a 100,000-id job (group `batch_redis`; `--figures`
//! skips it). Then the figures, each the median of 3 runs (one each under
//! `cargo test --benches`, to prove the bench works):
//!
//! - `batch_ids_per_s_redis`: 1,000,000 ids in ranges of 100 through the real
//!   engine ([`BatchJob`], 2 workers, a no-op in-process handler), durable in
//!   Redis; `ratio batch_redis/seed` divides it by the parallel-worker seed's
//!   224,600 ids/s on the same workload with 100,000 ids (a constant: the seed is
//!   Node.js and was measured once on this machine, see the issue).
//! - `redis_steps_per_s`: raw [`Store::step`] round trips (finish the previous
//!   range and claim the next, as the engine does) from 2 tasks, no engine: the
//!   ceiling the store puts on the engine (ids/s = steps/s × 100);
//!   `redis_steps_per_s_1_task` from one task (one round trip at a time).
//!
//! Every run uses a job of its own under the key prefix
//! `workcrew-bench:<pid>` and deletes it afterwards.

use std::time::{Duration, Instant};

use criterion::Criterion;
use tokio::runtime::Runtime;
use workcrew::batch::{
    BatchJob, Finish, FinishOutcome, JobSpec, SourceSpec, Step, Store, StoreError,
};
use workcrew_redis::RedisStore;

/// The parallel-worker seed on Redis, measured on this machine (see the issue).
const SEED_IDS_PER_S: f64 = 224_600.0;
const IDS: i64 = 1_000_000;
const RANGE: u64 = 100;
const WORKERS: usize = 2;
const ROUNDS: usize = 3;

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

async fn connect() -> RedisStore {
    let url = url();
    RedisStore::builder(&url)
        .key_prefix(format!("workcrew-bench:{}", std::process::id()))
        .connect()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the redis server at {} (REDIS_URL) does not answer: {e}",
                workcrew::batch::redact_url(&url)
            )
        })
}

/// Runs a fresh job of `ids` ids through the engine; returns how long it took.
async fn engine_run(store: &RedisStore, name: &str, ids: i64) -> Duration {
    store.reset(name).await.expect("reset");
    let job = BatchJob::builder(store.clone(), name)
        .span(0..ids)
        .range_size(RANGE)
        .workers(WORKERS)
        .handler(|_range| async { Ok::<_, std::io::Error>(()) })
        .build()
        .expect("job");
    let started = Instant::now();
    let summary = job.run().await.expect("run");
    let took = started.elapsed();
    assert!(summary.complete, "the job finished");
    assert_eq!(summary.ids_done, ids as u64, "every id done once");
    store.reset(name).await.expect("reset");
    took
}

/// Drives `Store::step` from `tasks` tasks over a fresh job of `IDS` ids, as
/// the engine would with a handler that takes no time; returns steps and time.
async fn raw_steps(store: &RedisStore, name: &str, tasks: usize) -> (u64, Duration) {
    store.reset(name).await.expect("reset");
    let spec = JobSpec {
        name: name.to_owned(),
        source: SourceSpec::Span {
            start: 0,
            end: IDS,
            size: RANGE,
        },
    };
    store.open(&spec).await.expect("open");
    let now = store.now().await.expect("now");
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for worker in 0..tasks {
        let store = store.clone();
        let name = name.to_owned();
        set.spawn(async move {
            let owner = format!("bench-{worker}");
            let mut finish: Vec<Finish> = Vec::new();
            let mut steps = 0u64;
            loop {
                let reply = store
                    .step(
                        &name,
                        Step {
                            owner: owner.clone(),
                            now,
                            lease_ms: 30_000,
                            finish: std::mem::take(&mut finish),
                            claim: 1,
                            at_most_once: false,
                        },
                    )
                    .await?;
                steps += 1;
                let Some(lease) = reply.claimed.into_iter().next() else {
                    return Ok::<_, StoreError>(steps);
                };
                finish.push(Finish {
                    range: lease.range,
                    fence: lease.fence,
                    outcome: FinishOutcome::Done { failed: Vec::new() },
                });
            }
        });
    }
    let mut steps = 0;
    while let Some(done) = set.join_next().await {
        steps += done.expect("task").expect("step");
    }
    let took = started.elapsed();
    let p = store.progress(name).await.expect("progress");
    assert_eq!(p.ids_done, IDS as u64, "every id done once");
    store.reset(name).await.expect("reset");
    (steps, took)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let rt: Runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let store = rt.block_on(connect());
    // `cargo bench` passes `--bench`; `-- --figures` skips criterion's part.
    let args: Vec<String> = std::env::args().collect();
    let benchmarking = args.iter().any(|a| a == "--bench");
    if benchmarking && !args.iter().any(|a| a == "--figures") {
        let mut c = Criterion::default()
            .configure_from_args()
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(5));
        let mut group = c.benchmark_group("batch_redis");
        group.throughput(criterion::Throughput::Elements(100_000));
        group.bench_function("engine_100k_ids", |b| {
            b.iter(|| rt.block_on(engine_run(&store, "bench-criterion", 100_000)));
        });
        group.finish();
        c.final_summary();
    }
    let rounds = if benchmarking { ROUNDS } else { 1 };

    let mut rates = Vec::new();
    for round in 0..rounds {
        let took = rt.block_on(engine_run(&store, "bench-engine", IDS));
        let rate = IDS as f64 / took.as_secs_f64();
        println!("run {round}: {IDS} ids in {took:.2?}: {rate:.0} ids/s");
        rates.push(rate);
    }
    let mut steps_rates = Vec::new();
    for tasks in [WORKERS, 1] {
        let mut rates = Vec::new();
        for round in 0..rounds {
            let (steps, took) = rt.block_on(raw_steps(&store, "bench-steps", tasks));
            let rate = steps as f64 / took.as_secs_f64();
            println!(
                "raw round {round}, {tasks} tasks: {steps} steps in {took:.2?}: {rate:.0} steps/s"
            );
            rates.push(rate);
        }
        steps_rates.push(median(rates));
    }
    let ids_per_s = median(rates);
    println!("figure batch_ids_per_s_redis {ids_per_s:.0} ids/s");
    println!("ratio batch_redis/seed {:.2}", ids_per_s / SEED_IDS_PER_S);
    println!("figure redis_steps_per_s {:.0} steps/s", steps_rates[0]);
    println!(
        "figure redis_steps_per_s_1_task {:.0} steps/s",
        steps_rates[1]
    );
}
