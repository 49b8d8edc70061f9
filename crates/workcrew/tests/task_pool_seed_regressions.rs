//! Regression tests for the known bugs of the promise-pool seed (`shared/seeds/000_*`, listed
//! at the end of `DESIGN.md`). Each test names the seed bug it guards against and why the
//! seed's behaviour would make it fail.

mod support;

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep, Instant};
use workcrew::task::{BuildError, DrainError, RetryPolicy, TaskError, TaskPool};

use support::{
    build, close_ok, detach, drain_ok, expect_report, guard, join, ms, ms_since, nap, ok, outcome,
    panicking, pool, spawn, Live,
};

// ---- seed bug 1: drain/done races that lose tasks added late ----

/// Seed bug: promise-pool's `drain()` resolved from a snapshot of the pending tasks, so a task
/// added by a running task, or by someone else while `drain()` was waiting, could be missed:
/// drain resolved early and the late task was never awaited (or never run). Here drain must
/// wait for both late tasks, and every task runs exactly once.
#[tokio::test(start_paused = true)]
async fn tasks_added_while_drain_waits_are_waited_for_and_run_once() {
    let pool = pool(2);
    let start = Instant::now();
    let runs: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());

    // A spawns B from inside the pool while it runs.
    let (inner_pool, a_runs) = (pool.clone(), Arc::clone(&runs));
    detach(
        spawn(&pool, async move {
            a_runs[0].fetch_add(1, Ordering::SeqCst);
            sleep(ms(10)).await;
            let b_runs = Arc::clone(&a_runs);
            detach(
                spawn(&inner_pool, async move {
                    sleep(ms(10)).await;
                    b_runs[1].fetch_add(1, Ordering::SeqCst);
                })
                .await,
            );
        })
        .await,
    );
    // Someone outside the pool adds C at 15ms, while drain() below is already waiting.
    let (outer_pool, c_runs) = (pool.clone(), Arc::clone(&runs));
    let outsider = tokio::spawn(async move {
        sleep(ms(15)).await;
        detach(
            spawn(&outer_pool, async move {
                sleep(ms(10)).await;
                c_runs[2].fetch_add(1, Ordering::SeqCst);
            })
            .await,
        );
    });

    let report = drain_ok(&pool).await;
    assert_eq!(
        ms_since(start),
        25,
        "drain waited for the late tasks B and C"
    );
    assert_eq!(report.completed, 3);
    let counts: Vec<_> = runs.iter().map(|r| r.load(Ordering::SeqCst)).collect();
    assert_eq!(counts, [1, 1, 1]);
    outsider.await.expect("outsider task");

    // A task added right after drain returned is not lost either: it runs, and the next
    // drain reports it.
    let late = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&late);
    detach(
        spawn(&pool, async move {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .await,
    );
    let report = drain_ok(&pool).await;
    assert_eq!(report.completed, 1);
    assert_eq!(late.load(Ordering::SeqCst), 1);
}

/// Seed bug (same as above, under real parallelism): spawns racing drains lost tasks. Four
/// spawners add 1000 tasks while a drainer drains in a loop; afterwards every task ran
/// exactly once and the drain reports together count each task exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawns_racing_drains_lose_no_task() {
    const SPAWNERS: usize = 4;
    const PER_SPAWNER: usize = 250;
    let pool = pool(3);
    let runs: Arc<Vec<AtomicU8>> = Arc::new(
        (0..SPAWNERS * PER_SPAWNER)
            .map(|_| AtomicU8::new(0))
            .collect(),
    );

    let spawners: Vec<_> = (0..SPAWNERS)
        .map(|s| {
            let (pool, runs) = (pool.clone(), Arc::clone(&runs));
            tokio::spawn(async move {
                for i in 0..PER_SPAWNER {
                    let (runs, slot) = (Arc::clone(&runs), s * PER_SPAWNER + i);
                    detach(
                        spawn(&pool, async move {
                            runs[slot].fetch_add(1, Ordering::SeqCst);
                        })
                        .await,
                    );
                    if i % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    let all_spawned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drainer = {
        let (pool, all_spawned) = (pool.clone(), Arc::clone(&all_spawned));
        tokio::spawn(async move {
            let mut reported = 0;
            while !all_spawned.load(Ordering::SeqCst) {
                reported += expect_report("drain", pool.drain().await).completed;
                tokio::task::yield_now().await;
            }
            reported
        })
    };
    for s in spawners {
        s.await.expect("spawner task");
    }
    all_spawned.store(true, Ordering::SeqCst);
    // Real time (multi-thread runtime): only a hang guard, never a timing assertion.
    let mut reported = tokio::time::timeout(Duration::from_secs(60), drainer)
        .await
        .expect("the drain loop hung")
        .expect("drainer task");
    reported += drain_ok(&pool).await.completed;

    let never_or_twice: Vec<_> = runs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.load(Ordering::SeqCst) != 1)
        .map(|(i, _)| i)
        .collect();
    assert!(
        never_or_twice.is_empty(),
        "tasks not run exactly once: {never_or_twice:?}"
    );
    assert_eq!(
        reported,
        (SPAWNERS * PER_SPAWNER) as u64,
        "each task reported once"
    );
}

// ---- seed bug 2: a bad task breaking the pool for good ----

/// Seed bug: in promise-pool a rejected task's error escaped the worker loop, leaving the
/// pool wedged (later tasks never ran and drain never resolved). Here a panic, an error, a
/// timeout and a panicking retried task come first, through a single slot; everything after
/// them still runs, and no slot is leaked.
#[tokio::test(start_paused = true)]
async fn bad_tasks_do_not_break_the_pool() {
    let pool = pool(1);
    let bad = [
        outcome(&join(spawn(&pool, panicking("first task panics")).await).await),
        outcome(&join(spawn(&pool, async { Err::<(), String>("fails".into()) }).await).await),
        outcome(
            &join(
                pool.task(nap(Duration::from_secs(60)))
                    .timeout(ms(5))
                    .spawn()
                    .await
                    .unwrap_or_else(|_| panic!("spawn refused")),
            )
            .await,
        ),
        outcome(
            &join(
                pool.task_fn(|| panicking("retried task panics"))
                    .retry(RetryPolicy::new(3))
                    .spawn()
                    .await
                    .unwrap_or_else(|_| panic!("spawn refused")),
            )
            .await,
        ),
    ];
    assert_eq!(bad, ["Panicked", "Failed", "TimedOut", "Panicked"]);

    let mut later = Vec::new();
    for i in 0..5_u32 {
        later.push(spawn(&pool, async move { ok(i) }).await);
    }
    for (i, handle) in later.into_iter().enumerate() {
        assert_eq!(join(handle).await.ok(), Some(i as u32));
    }
    let report = drain_ok(&pool).await;
    assert_eq!(report.completed, 5);
    assert_eq!(
        (report.panicked, report.failed, report.timed_out),
        (2, 1, 1)
    );
}

/// Seed bug (capacity side): a failing task that never released its worker slot shrank the
/// pool for good. After ten panics through two slots, two tasks still run at once.
#[tokio::test(start_paused = true)]
async fn panics_do_not_leak_worker_slots() {
    let pool = pool(2);
    for _ in 0..10 {
        detach(spawn(&pool, panicking("boom")).await);
    }
    assert_eq!(drain_ok(&pool).await.panicked, 10);

    let live = Live::default();
    let start = Instant::now();
    for _ in 0..4 {
        let live = live.clone();
        detach(
            spawn(&pool, async move {
                let _inside = live.enter();
                sleep(ms(10)).await;
            })
            .await,
        );
    }
    assert_eq!(drain_ok(&pool).await.completed, 4);
    assert_eq!(live.max(), 2, "both slots are still there");
    assert_eq!(ms_since(start), 20);
}

// ---- seed bug 3: done() during drain() not closing ----

/// Seed bug: promise-pool's `done()` called while a `drain()` was pending only joined the
/// drain and never finalized the pool, so tasks could still be added afterwards. Here close()
/// during a waiting drain() stops intake at once, both calls resolve when the work is done,
/// and the pool ends up closed.
#[tokio::test(start_paused = true)]
async fn close_while_a_drain_waits_still_closes_the_pool() {
    let pool = pool(1);
    let start = Instant::now();
    let a = spawn(&pool, nap(ms(100))).await;
    let b = spawn(&pool, async { ok("queued before close") }).await;

    let drainer = {
        let pool = pool.clone();
        tokio::spawn(async move { (pool.drain().await, ms_since(start)) })
    };
    sleep(ms(10)).await;
    let closer = {
        let pool = pool.clone();
        tokio::spawn(async move { (pool.close().await, ms_since(start)) })
    };
    sleep(ms(1)).await;
    assert!(
        pool.is_closed(),
        "close() stops intake at once, even with a drain waiting"
    );
    assert!(pool.spawn(async {}).await.is_err());

    let (drained, drained_at) = guard("drainer", drainer).await.expect("drainer task");
    let (closed, closed_at) = guard("closer", closer).await.expect("closer task");
    let (drained, closed) = (
        expect_report("drain", drained),
        expect_report("close", closed),
    );
    assert_eq!((drained_at, closed_at), (100, 100));
    assert_eq!(drained.completed, 2);
    assert_eq!(drained, closed, "both waited for the same idle moment");
    assert!(join(a).await.is_ok());
    assert_eq!(join(b).await.ok(), Some("queued before close"));
    assert!(pool.is_closed());
}

// ---- seed bug 4: max_workers = 0 hanging ----

/// Seed bug: promise-pool accepted `maxWorkers: 0` and then hung forever on the first drain,
/// since no worker could ever run a task. Here the configuration is rejected up front (no
/// runtime involved), and so is lowering a live pool to 0.
#[test]
fn zero_concurrency_is_an_error_not_a_hang() {
    let err = match TaskPool::builder().max_concurrency(0).build() {
        Ok(_) => panic!("a pool of 0 workers was built"),
        Err(e) => e,
    };
    assert_eq!(err, BuildError::ZeroConcurrency);
    assert!(err.to_string().contains("max_concurrency"), "{err}");

    let pool = build(TaskPool::builder().max_concurrency(3));
    assert_eq!(
        pool.set_max_concurrency(0),
        Err(BuildError::ZeroConcurrency)
    );
    assert_eq!(pool.max_concurrency(), 3);
}

// ---- seed bug 5: the advertised runtime limit and idle timeout did not exist ----

/// Seed bug: promise-pool advertised a "total runtime limit" that was never implemented, so a
/// hung task held `drain()` forever. Here `max_runtime` ends a hung task and releases the
/// drainer on time.
#[tokio::test(start_paused = true)]
async fn the_runtime_limit_exists_and_releases_a_hung_pool() {
    let pool = build(TaskPool::builder().max_runtime(ms(500)));
    let start = Instant::now();
    let hung = spawn(&pool, std::future::pending::<()>()).await;
    match guard("drain", pool.drain()).await {
        Err(DrainError::RuntimeExceeded {
            aborted_running, ..
        }) => assert_eq!(aborted_running, 1),
        Err(e) => panic!("expected RuntimeExceeded, got {e}"),
        Ok(report) => panic!("expected RuntimeExceeded, got a report {report:?}"),
    }
    assert_eq!(ms_since(start), 500);
    assert!(join(hung).await.is_err_and(|e| e.is_cancelled()));
}

/// Seed bug: promise-pool advertised an "idle timeout" to catch orphaned or zombie work that
/// did not exist. Here `stall_timeout` releases a closer stuck behind a task that never
/// finishes, names that task, and the pool is closed all the same.
#[tokio::test(start_paused = true)]
async fn the_stall_timeout_exists_and_releases_a_stuck_closer() {
    let pool = build(TaskPool::builder().stall_timeout(ms(200)));
    let start = Instant::now();
    let zombie = pool
        .task(std::future::pending::<()>())
        .name("zombie")
        .spawn()
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));
    match guard("close", pool.close()).await {
        Err(DrainError::Stalled { oldest, .. }) => {
            let oldest = oldest.expect("a task is running");
            assert_eq!(oldest.id, zombie.id());
            assert_eq!(oldest.name.as_deref(), Some("zombie"));
        }
        Err(e) => panic!("expected Stalled, got {e}"),
        Ok(report) => panic!("expected Stalled, got a report {report:?}"),
    }
    assert_eq!(ms_since(start), 200);
    assert!(pool.is_closed());
    zombie.abort();
    assert!(matches!(join(zombie).await, Err(TaskError::Cancelled(_))));
}

// ---- seed bug 6: completion found by polling ----

/// Seed bug: promise-pool found finished tasks by polling on a timer tick, so `drain()`
/// resolved up to one tick late. On the paused clock any polling tick shows up as elapsed
/// virtual time (the clock jumps to the tick's deadline); event-driven completion shows none.
#[tokio::test(start_paused = true)]
async fn completion_is_event_driven_not_polled() {
    let pool = pool(2);
    let start = Instant::now();

    let handle = spawn(&pool, async { ok(1_u8) }).await;
    assert_eq!(join(handle).await.ok(), Some(1));
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "a handle resolves without any tick"
    );

    detach(spawn(&pool, async {}).await);
    let report = drain_ok(&pool).await;
    assert_eq!(report.completed, 2);
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "drain returns without any tick"
    );

    // Odd durations: a task ending at 7ms or 13ms is seen at exactly that moment, not at the
    // next multiple of some polling interval.
    let seven = spawn(&pool, nap(ms(7))).await;
    detach(spawn(&pool, nap(ms(13))).await);
    assert!(join(seven).await.is_ok());
    assert_eq!(start.elapsed(), ms(7));
    drain_ok(&pool).await;
    assert_eq!(start.elapsed(), ms(13));

    // The same holds for close().
    detach(spawn(&pool, nap(ms(3))).await);
    close_ok(&pool).await;
    assert_eq!(start.elapsed(), ms(16));
}
