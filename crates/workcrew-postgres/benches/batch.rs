//! Durable batch on Postgres: the issue's workload through the real engine.
//!
//! ```text
//! cargo bench -p workcrew-postgres --bench batch
//! ```
//!
//! Needs the server at `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! works in a schema of its own (`wcbench_<pid>`) and drops it at the end.
//!
//! Criterion reports its statistics first (group `postgres_batch`: one step round trip,
//! a job of 100,000 ids). Then the figures, each the median of 3 runs:
//!
//! - `batch_ids_per_s_postgres`: 1,000,000 ids in ranges of 100, 2 workers, a no-op
//!   in-process handler, [`BatchJob`] on a [`PostgresStore`] with the default durability
//!   (the server's `synchronous_commit`, `on`: every step waits for its commit's flush).
//!   `ratio batch_postgres/seed` divides it by the parallel-worker seed's 224,600 ids/s,
//!   a constant: the seed's figure measured on this machine (100,000 ids, ranges of 100,
//!   2 workers, no-op handler, on Redis, not durable), which this bench does not rerun.
//! - `batch_ids_per_s_postgres_async`: the same with [`Durability::Async`]
//!   (`synchronous_commit = off` on the store's connections).
//! - `postgres_steps_per_s` (and `_async`): raw [`Store::step`] round trips, each
//!   finishing one range and claiming the next, from 2 concurrent callers, no engine:
//!   the cost of one step. (The engine carries several ranges per step when its handler
//!   is quick, so its ids per second are not this times the range size.)
//! - `postgres_server_cpu_us_per_range` and `batch_client_cpu_us_per_range` (and
//!   `_async`): CPU time per range of the store's server backend (its
//!   `/proc/<pid>/schedstat`; the server must run on this machine, else the line is left
//!   out) and of this process (engine, handler and driver: `/proc/self/stat`), over the
//!   median job run. On a loaded machine the wall-clock figures mostly measure waiting
//!   for a CPU at every round trip; these do not.

use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use tokio::runtime::Runtime;
use workcrew::batch::{BatchJob, Finish, FinishOutcome, JobSpec, Lease, SourceSpec, Step, Store};
use workcrew_postgres::{Durability, PostgresStore};

/// The parallel-worker seed on Redis, measured on this machine (see the module docs).
const SEED_IDS_PER_S: f64 = 224_600.0;
const IDS: i64 = 1_000_000;
const RANGE: u64 = 100;
const WORKERS: usize = 2;
const ROUNDS: usize = 3;

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn schema() -> String {
    format!("wcbench_{}", std::process::id())
}

async fn store(durability: Durability) -> PostgresStore {
    PostgresStore::builder(&database_url())
        .schema(schema())
        .application_name(format!("{}_{durability:?}", schema()))
        .durability(durability)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("the bench needs the Postgres server (DATABASE_URL): {e}"))
}

/// CPU used so far by this process, in microseconds (`/proc/self/stat`: user + system
/// clock ticks of 10 ms).
fn own_cpu_us() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 10_000.0)
}

/// CPU used so far by the server backends named `application_name`, in microseconds
/// (`/proc/<pid>/schedstat`): only when the server runs on this machine.
async fn server_cpu_us(admin: &tokio_postgres::Client, application_name: &str) -> Option<f64> {
    let rows = admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
            &[&application_name],
        )
        .await
        .ok()?;
    let mut ns = 0.0;
    for row in rows {
        let pid: i32 = row.get(0);
        let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
        ns += text.split_whitespace().next()?.parse::<f64>().ok()?;
    }
    Some(ns / 1000.0)
}

/// One run of the workload through the engine; returns its time.
async fn run_job(store: &PostgresStore, name: &str, ids: i64) -> Duration {
    let job = BatchJob::builder(store.clone(), name)
        .span(0..ids)
        .range_size(RANGE)
        .workers(WORKERS)
        .handler(|_range| async { Ok::<_, String>(()) })
        .build()
        .expect("job");
    job.reset().await.expect("reset");
    let started = Instant::now();
    let summary = job.run().await.expect("run");
    let took = started.elapsed();
    assert!(summary.complete, "the job ran to its end");
    assert_eq!(summary.ids_done, ids as u64, "every id once");
    job.reset().await.expect("reset");
    took
}

/// `steps` raw steps from 2 concurrent callers, each finishing its previous range and
/// claiming the next; returns their time.
async fn raw_steps(store: &PostgresStore, name: &str, steps: u64) -> Duration {
    store.reset(name).await.expect("reset");
    store
        .open(&JobSpec {
            name: name.to_owned(),
            source: SourceSpec::Span {
                start: 0,
                end: i64::MAX,
                size: RANGE,
            },
        })
        .await
        .expect("open");
    let now = store.now().await.expect("now");
    let started = Instant::now();
    let callers = (0..2u64).map(|caller| {
        let store = store.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            let mut held: Option<Lease> = None;
            for _ in 0..steps / 2 {
                let finish = held
                    .take()
                    .map(|l| Finish {
                        range: l.range,
                        fence: l.fence,
                        outcome: FinishOutcome::Done { failed: Vec::new() },
                    })
                    .into_iter()
                    .collect();
                let reply = store
                    .step(
                        &name,
                        Step {
                            owner: format!("bench-{caller}"),
                            now,
                            lease_ms: 60_000,
                            finish,
                            claim: 1,
                            at_most_once: false,
                        },
                    )
                    .await
                    .expect("step");
                held = reply.claimed.into_iter().next();
            }
        })
    });
    for caller in callers.collect::<Vec<_>>() {
        caller.await.expect("caller");
    }
    let took = started.elapsed();
    store.reset(name).await.expect("reset");
    took
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn bench_criterion(c: &mut Criterion, rt: &Runtime, store: &PostgresStore) {
    let mut group = c.benchmark_group("postgres_batch");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("step_round_trip", |b| {
        b.iter_custom(|n| rt.block_on(raw_steps(store, "criterion-steps", n.max(2))));
    });
    group.bench_function("job_100k_ids", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| rt.block_on(run_job(store, "criterion-job", 100_000)))
                .sum()
        });
    });
    group.finish();
}

fn print_figures(rt: &Runtime, store: &PostgresStore, fast: &PostgresStore) {
    println!();
    println!(
        "median of {ROUNDS} runs; {IDS} ids in ranges of {RANGE}, {WORKERS} workers, no-op handler:"
    );
    let admin = rt.block_on(async {
        let (client, connection) =
            tokio_postgres::connect(&database_url(), tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok::<_, tokio_postgres::Error>(client)
    });
    let ranges = IDS as f64 / RANGE as f64;
    for (suffix, store) in [("", store), ("_async", fast)] {
        // (time, server CPU us, own CPU us) per run; the figures come from the median run.
        let mut runs: Vec<(Duration, Option<f64>, Option<f64>)> = (0..ROUNDS)
            .map(|_| {
                rt.block_on(async {
                    let name = store.application_name();
                    let server = match &admin {
                        Ok(admin) => server_cpu_us(admin, name).await,
                        Err(_) => None,
                    };
                    let own = own_cpu_us();
                    let took = run_job(store, "figure-job", IDS).await;
                    let server = match (&admin, server) {
                        (Ok(admin), Some(before)) => {
                            server_cpu_us(admin, name).await.map(|after| after - before)
                        }
                        _ => None,
                    };
                    (took, server, own_cpu_us().zip(own).map(|(b, a)| b - a))
                })
            })
            .collect();
        runs.sort_by_key(|r| r.0);
        let (took, server_us, own_us) = runs[runs.len() / 2];
        let ids_per_s = IDS as f64 / took.as_secs_f64();
        println!("figure batch_ids_per_s_postgres{suffix} {ids_per_s:.0} ids/s");
        println!(
            "ratio batch_postgres{suffix}/seed {:.3}",
            ids_per_s / SEED_IDS_PER_S
        );
        if let Some(us) = server_us {
            println!(
                "figure postgres_server_cpu_us_per_range{suffix} {:.1} us",
                us / ranges
            );
        }
        if let Some(us) = own_us {
            println!(
                "figure batch_client_cpu_us_per_range{suffix} {:.1} us",
                us / ranges
            );
        }
        // About as many steps as the job above made.
        let steps = (IDS as u64 / RANGE).max(2);
        let runs = (0..ROUNDS)
            .map(|_| rt.block_on(raw_steps(store, "figure-steps", steps)))
            .collect();
        println!(
            "figure postgres_steps_per_s{suffix} {:.0} steps/s",
            steps as f64 / median(runs).as_secs_f64()
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then a small smoke run.
    let args: Vec<String> = std::env::args().collect();
    let benchmarking =
        args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list");
    let rt = runtime();
    let store = rt.block_on(store(Durability::Server));
    let fast = rt.block_on(self::store(Durability::Async));
    if benchmarking {
        let mut criterion = Criterion::default().configure_from_args();
        bench_criterion(&mut criterion, &rt, &store);
        criterion.final_summary();
        print_figures(&rt, &store, &fast);
    } else {
        rt.block_on(run_job(&store, "smoke-job", 10_000));
        rt.block_on(raw_steps(&fast, "smoke-steps", 100));
    }
    drop((store, fast));
    let done = rt.block_on(async {
        let (client, connection) =
            tokio_postgres::connect(&database_url(), tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", schema()))
            .await
    });
    if let Err(e) = done {
        eprintln!("could not drop the bench schema {}: {e}", schema());
    }
}
