//! Integration tests for the `TaskPool` lifecycle: drain, close, shutdown, the runtime limit,
//! stall detection, the rate limit, events and stats.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::{sleep, Instant};
use workcrew::task::{
    CancelReason, DrainError, DrainMode, OutcomeKind, PoolEvent, RateLimit, RunningTask, TaskError,
    TaskPool,
};

use support::{
    build, close_ok, detach, drain_ok, events_until, guard, join, ms, ms_since, nap, ok, outcome,
    panicking, pool, settle, spawn, DropFlag, Log,
};

/// Spawns `n` tasks that each sleep `each` and count themselves in `done`.
async fn spawn_sleepers(pool: &TaskPool, n: usize, each: Duration, done: &Arc<AtomicUsize>) {
    for _ in 0..n {
        let done = Arc::clone(done);
        detach(
            spawn(pool, async move {
                sleep(each).await;
                done.fetch_add(1, Ordering::SeqCst);
            })
            .await,
        );
    }
}

// ---- drain ----

#[tokio::test(start_paused = true)]
async fn drain_waits_for_queued_and_running_tasks_and_leaves_the_pool_open() {
    let pool = pool(2);
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    spawn_sleepers(&pool, 6, ms(10), &done).await;

    let report = drain_ok(&pool).await;
    assert_eq!(
        done.load(Ordering::SeqCst),
        6,
        "drain returned before the work was done"
    );
    assert_eq!(report.completed, 6);
    assert_eq!(ms_since(start), 30, "6 tasks of 10ms, 2 at a time");
    let stats = pool.stats();
    assert_eq!((stats.queued, stats.running), (0, 0));

    // Drain does not close.
    assert!(!pool.is_closed());
    assert_eq!(
        join(spawn(&pool, async { ok(5_u8) }).await).await.ok(),
        Some(5)
    );
    assert_eq!(drain_ok(&pool).await.completed, 1);
}

#[tokio::test(start_paused = true)]
async fn drain_on_an_idle_pool_returns_at_once() {
    let pool = pool(2);
    let start = Instant::now();
    let report = drain_ok(&pool).await;
    assert_eq!(report.total(), 0);
    assert_eq!(ms_since(start), 0);
}

#[tokio::test(start_paused = true)]
async fn many_concurrent_drainers_all_resolve_with_the_same_report() {
    let pool = pool(2);
    let done = Arc::new(AtomicUsize::new(0));
    // A gate task keeps the pool busy until every drainer is surely waiting.
    let (open_gate, gate) = oneshot::channel::<()>();
    detach(
        spawn(&pool, async move {
            let _ = gate.await;
        })
        .await,
    );
    spawn_sleepers(&pool, 4, ms(10), &done).await;
    detach(spawn(&pool, async { Err::<(), String>("broken".into()) }).await);

    let drainers: Vec<_> = (0..10)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.drain().await })
        })
        .collect();
    settle().await;
    sleep(ms(100)).await; // the sleepers are done; only the gate task is left
    assert!(
        drainers.iter().all(|d| !d.is_finished()),
        "the pool is not idle yet"
    );
    open_gate.send(()).expect("gate task alive");

    let mut reports = Vec::new();
    for drainer in drainers {
        let res = guard("drainer", drainer).await.expect("drainer task");
        reports.push(support::expect_report("drain", res));
    }
    let first = &reports[0];
    assert_eq!(first.completed, 5);
    assert_eq!(first.failed, 1);
    assert_eq!(first.failures.len(), 1);
    assert_eq!(first.failures[0].message, "broken");
    assert!(
        reports.iter().all(|r| r == first),
        "every drainer gets the same report"
    );
    assert_eq!(done.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn handoff_mode_releases_older_drainers_with_superseded() {
    let pool = build(
        TaskPool::builder()
            .max_concurrency(1)
            .drain_mode(DrainMode::HandOff),
    );
    let start = Instant::now();
    detach(spawn(&pool, nap(ms(100))).await);

    // Three drainers, 10ms apart; each newer one takes the wait over from the older.
    let mut drainers = Vec::new();
    for i in 0..3_u64 {
        let p = pool.clone();
        drainers.push(tokio::spawn(async move {
            let res = p.drain().await;
            (ms_since(start), res)
        }));
        if i < 2 {
            sleep(ms(10)).await;
        }
    }
    let mut results = Vec::new();
    for drainer in drainers {
        results.push(guard("drainer", drainer).await.expect("drainer task"));
    }

    for (i, (released_at, res)) in results.iter().take(2).enumerate() {
        assert_eq!(
            *released_at,
            10 * (i as u64 + 1),
            "drainer {i} is released by the next"
        );
        match res {
            Err(DrainError::Superseded { stats }) => {
                assert_eq!(stats.running, 1, "the task was still running");
            }
            Err(e) => panic!("drainer {i}: expected Superseded, got {e}"),
            Ok(_) => panic!("drainer {i}: expected Superseded, got a report"),
        }
    }
    let (released_at, res) = &results[2];
    assert_eq!(*released_at, 100, "the newest drainer waits for the work");
    match res {
        Ok(report) => assert_eq!(report.completed, 1),
        Err(e) => panic!("the newest drainer failed: {e}"),
    }
}

// ---- close ----

#[tokio::test(start_paused = true)]
async fn close_stops_intake_waits_for_the_work_and_is_idempotent() {
    let pool = pool(2);
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    spawn_sleepers(&pool, 3, ms(10), &done).await;

    // Two concurrent closes.
    let (a, b) = tokio::join!(pool.close(), pool.close());
    let (a, b) = (
        support::expect_report("close", a),
        support::expect_report("close", b),
    );
    assert_eq!(
        ms_since(start),
        20,
        "close waits for queued and running tasks"
    );
    assert_eq!(done.load(Ordering::SeqCst), 3, "queued tasks still ran");
    assert_eq!(a.completed, 3);
    assert_eq!(a, b, "concurrent closers share the idle moment's report");
    assert!(pool.is_closed());
    assert!(pool.stats().closed);
    assert!(matches!(pool.try_spawn(async {}), Err(e) if e.is_closed()));

    // A later close returns at once with nothing new.
    let later = close_ok(&pool).await;
    assert_eq!(later.total(), 0);
    assert_eq!(ms_since(start), 20);
}

#[tokio::test(start_paused = true)]
async fn close_releases_spawners_waiting_for_queue_room_with_their_task() {
    let pool = build(TaskPool::builder().max_concurrency(1).queue_capacity(1));
    let start = Instant::now();
    let running = spawn(&pool, nap(ms(100))).await;
    settle().await;
    let queued = spawn(&pool, nap(ms(100))).await;

    let blocked = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let res = pool.spawn(async { ok(11_u32) }).await;
            (ms_since(start), res)
        })
    };
    settle().await;
    assert!(!blocked.is_finished(), "the queue is full");

    sleep(ms(10)).await;
    let closer = {
        let pool = pool.clone();
        tokio::spawn(async move { (pool.close().await, ms_since(start)) })
    };

    let (refused_at, res) = guard("blocked spawner", blocked)
        .await
        .expect("spawner task");
    assert_eq!(
        refused_at, 10,
        "the waiting spawner is released when close() starts"
    );
    let fut = match res {
        Ok(_) => panic!("a closing pool accepted a task"),
        Err(e) => e.into_inner(),
    };
    assert_eq!(fut.await, Ok(11), "the task came back intact");

    let (closed, closed_at) = guard("closer", closer).await.expect("closer task");
    assert_eq!(support::expect_report("close", closed).completed, 2);
    assert_eq!(closed_at, 200, "the accepted tasks still ran");
    assert!(join(running).await.is_ok() && join(queued).await.is_ok());
}

// ---- shutdown ----

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_queued_and_aborts_running_tasks_after_the_grace_period() {
    let pool = pool(1);
    let start = Instant::now();
    // A finishes inside the grace period; B is running when it ends; C never starts.
    let a = spawn(&pool, nap(ms(50))).await;
    let b_dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(Arc::clone(&b_dropped));
    let b = spawn(&pool, async move {
        let _flag = flag;
        sleep(Duration::from_secs(10)).await;
    })
    .await;
    let c_ran = Arc::new(AtomicBool::new(false));
    let ran = Arc::clone(&c_ran);
    let c = spawn(&pool, async move { ran.store(true, Ordering::SeqCst) }).await;
    let d = spawn(&pool, async {}).await;

    let report = guard("shutdown", pool.shutdown(ms(100))).await;
    assert_eq!(ms_since(start), 100);
    assert_eq!(report.completed, 1);
    assert_eq!(report.cancelled, 3);
    assert!(pool.is_closed());

    assert!(join(a).await.is_ok());
    for (name, handle) in [("B", b), ("C", c), ("D", d)] {
        match join(handle).await {
            Err(TaskError::Cancelled(reason)) => assert_eq!(reason, CancelReason::Shutdown),
            other => panic!(
                "{name}: expected Cancelled(Shutdown), got {}",
                outcome(&other)
            ),
        }
    }
    assert!(
        b_dropped.load(Ordering::SeqCst),
        "the running task was aborted"
    );
    assert!(!c_ran.load(Ordering::SeqCst), "the queued task never ran");
    let stats = pool.stats();
    assert_eq!((stats.queued, stats.running), (0, 0));
    assert!(
        pool.spawn(async {}).await.is_err(),
        "a shut down pool is closed"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_returns_as_soon_as_the_work_is_done() {
    let pool = pool(2);
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    spawn_sleepers(&pool, 4, ms(15), &done).await;
    let report = guard("shutdown", pool.shutdown(Duration::from_secs(60))).await;
    assert_eq!(ms_since(start), 30, "no need to wait out the grace period");
    assert_eq!((report.completed, report.cancelled), (4, 0));
    assert_eq!(done.load(Ordering::SeqCst), 4);
}

// ---- max_runtime ----

#[tokio::test(start_paused = true)]
async fn max_runtime_cancels_the_rest_and_the_pool_takes_new_work_afterwards() {
    let pool = build(
        TaskPool::builder()
            .max_concurrency(1)
            .max_runtime(Duration::from_secs(1)),
    );
    let mut events = pool.events();
    let start = Instant::now();
    let a = spawn(&pool, nap(ms(300))).await; // completes in time
    let b = spawn(&pool, nap(Duration::from_secs(10))).await; // running at the limit
    let c = spawn(&pool, nap(ms(10))).await; // queued at the limit
    let d = spawn(&pool, nap(ms(10))).await; // queued at the limit

    match guard("drain", pool.drain()).await {
        Err(DrainError::RuntimeExceeded {
            limit,
            cancelled_queued,
            aborted_running,
            report,
        }) => {
            assert_eq!(limit, Duration::from_secs(1));
            assert_eq!(cancelled_queued, 2);
            assert_eq!(aborted_running, 1);
            assert_eq!(report.completed, 1);
            assert_eq!(report.cancelled, 3);
        }
        Err(e) => panic!("expected RuntimeExceeded, got {e}"),
        Ok(report) => panic!("expected RuntimeExceeded, got a report {report:?}"),
    }
    assert_eq!(ms_since(start), 1000, "the limit is enforced on time");
    assert!(join(a).await.is_ok());
    for (name, handle) in [("B", b), ("C", c), ("D", d)] {
        match join(handle).await {
            Err(TaskError::Cancelled(reason)) => {
                assert_eq!(reason, CancelReason::RuntimeLimit, "task {name}");
            }
            other => panic!(
                "{name}: expected Cancelled(RuntimeLimit), got {}",
                outcome(&other)
            ),
        }
    }
    let seen = events_until(&mut events, |e| {
        matches!(e, PoolEvent::RuntimeExceeded { .. })
    })
    .await;
    assert_eq!(
        seen.last(),
        Some(&PoolEvent::RuntimeExceeded {
            cancelled_queued: 2,
            aborted_running: 1
        })
    );

    // Still open. A new busy period starts the clock again: 900ms of work fits in the 1s
    // limit even though the pool was built well over a second ago.
    assert!(!pool.is_closed());
    let e = spawn(&pool, async {
        sleep(ms(900)).await;
        ok("done")
    })
    .await;
    let report = drain_ok(&pool).await;
    assert_eq!((report.completed, report.cancelled), (1, 0));
    assert_eq!(join(e).await.ok(), Some("done"));
    assert_eq!(ms_since(start), 1900);
}

// ---- stall detection ----

#[tokio::test(start_paused = true)]
async fn a_stalled_pool_releases_drainers_naming_the_oldest_running_task() {
    let pool = build(
        TaskPool::builder()
            .max_concurrency(3)
            .stall_timeout(Duration::from_secs(1)),
    );
    let mut events = pool.events();
    let start = Instant::now();
    let hung = pool
        .task(std::future::pending::<()>())
        .name("hung")
        .spawn()
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));
    let quick = spawn(&pool, nap(ms(100))).await;
    sleep(ms(50)).await;
    let younger = spawn(&pool, std::future::pending::<()>()).await;

    // `quick` finishing at 100ms restarts the stall timer: the stall is at 1100ms.
    let expected = RunningTask {
        id: hung.id(),
        name: Some("hung".to_owned()),
        running_for: ms(1100),
    };
    match guard("drain", pool.drain()).await {
        Err(DrainError::Stalled {
            stall_timeout,
            oldest,
        }) => {
            assert_eq!(stall_timeout, Duration::from_secs(1));
            assert_eq!(oldest.as_ref(), Some(&expected));
        }
        Err(e) => panic!("expected Stalled, got {e}"),
        Ok(report) => panic!("expected Stalled, got a report {report:?}"),
    }
    assert_eq!(ms_since(start), 1100);
    let seen = events_until(&mut events, |e| matches!(e, PoolEvent::Stalled { .. })).await;
    assert_eq!(
        seen.last(),
        Some(&PoolEvent::Stalled {
            oldest: Some(expected)
        })
    );

    // Stalled tasks keep running until someone acts.
    assert!(join(quick).await.is_ok());
    assert!(!hung.is_finished() && !younger.is_finished());
    hung.abort();
    younger.abort();
    let report = drain_ok(&pool).await;
    assert_eq!((report.completed, report.cancelled), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn no_stall_while_tasks_keep_finishing() {
    // Work is pending for 600ms, far past the 100ms stall timeout, but a task ends every 60ms.
    let pool = build(
        TaskPool::builder()
            .max_concurrency(1)
            .stall_timeout(ms(100)),
    );
    let mut events = pool.events();
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    spawn_sleepers(&pool, 10, ms(60), &done).await;
    let report = drain_ok(&pool).await;
    assert_eq!(report.completed, 10);
    assert_eq!(ms_since(start), 600);
    let seen = events_until(&mut events, |e| matches!(e, PoolEvent::Idle)).await;
    assert!(
        !seen.iter().any(|e| matches!(e, PoolEvent::Stalled { .. })),
        "unexpected stall: {seen:?}"
    );
}

// ---- rate limit ----

#[tokio::test(start_paused = true)]
async fn rate_limited_starts_follow_the_gcra_schedule() {
    // 2 starts per second with a burst of 2: emission interval T = 500ms, tolerance
    // tau = (burst - 1) * T = 500ms. A start at `now` is allowed when TAT - tau <= now, then
    // TAT = max(TAT, now) + T. From an empty limiter: starts 1 and 2 at t=0 (TAT 500, 1000),
    // start 3 waits until TAT - tau = 500ms, and every later one another 500ms.
    let pool = build(
        TaskPool::builder()
            .max_concurrency(10)
            .rate_limit(RateLimit::per(2, Duration::from_secs(1)).burst(2)),
    );
    let start = Instant::now();
    let starts = Log::default();
    for _ in 0..10 {
        let starts = starts.clone();
        detach(spawn(&pool, async move { starts.push(ms_since(start)) }).await);
    }
    let report = drain_ok(&pool).await;
    assert_eq!(report.completed, 10);
    assert_eq!(
        starts.snapshot(),
        [0, 0, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000]
    );
    assert_eq!(ms_since(start), 4000);
}

// ---- events ----

#[tokio::test(start_paused = true)]
async fn events_describe_a_simple_run_in_order() {
    let pool = pool(1);
    let mut events = pool.events();
    pool.pause();
    let job = pool
        .task(nap(ms(10)))
        .name("job")
        .spawn()
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));
    let id = job.id();
    pool.resume();
    assert!(join(job).await.is_ok());
    drain_ok(&pool).await;
    pool.set_max_concurrency(2)
        .unwrap_or_else(|_| panic!("2 is valid"));
    close_ok(&pool).await;

    let seen = events_until(&mut events, |e| matches!(e, PoolEvent::Closed)).await;
    assert_eq!(
        seen,
        [
            PoolEvent::Paused,
            PoolEvent::Resumed,
            PoolEvent::TaskStarted {
                id,
                name: Some("job".to_owned())
            },
            PoolEvent::TaskFinished {
                id,
                outcome: OutcomeKind::Completed,
                run_time: ms(10)
            },
            PoolEvent::Idle,
            PoolEvent::ConcurrencyChanged { from: 1, to: 2 },
            PoolEvent::Closed,
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn task_finished_events_carry_each_outcome() {
    let pool = pool(1);
    let mut events = pool.events();
    let handles = [
        spawn(&pool, async { ok(()) }).await,
        spawn(&pool, async { Err::<(), String>("x".into()) }).await,
    ];
    let ids: Vec<_> = handles.iter().map(|h| h.id()).collect();
    for h in handles {
        detach(h);
    }
    let panicked = spawn(&pool, panicking("p")).await.id();
    drain_ok(&pool).await;
    let seen = events_until(&mut events, |e| matches!(e, PoolEvent::Idle)).await;
    let finished: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            PoolEvent::TaskFinished { id, outcome, .. } => Some((*id, *outcome)),
            _ => None,
        })
        .collect();
    assert_eq!(
        finished,
        [
            (ids[0], OutcomeKind::Completed),
            (ids[1], OutcomeKind::Failed),
            (panicked, OutcomeKind::Panicked),
        ]
    );
}

// ---- stats ----

#[tokio::test(start_paused = true)]
async fn stats_count_every_outcome() {
    let pool = pool(2);
    let completed = spawn(&pool, async { ok(1) }).await;
    let failed = spawn(&pool, async { Err::<u8, String>("no".into()) }).await;
    let panicked = spawn(&pool, panicking("oops")).await;
    let timed_out = pool
        .task(nap(Duration::from_secs(5)))
        .timeout(ms(10))
        .spawn()
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));
    let cancelled = spawn(&pool, std::future::pending::<()>()).await;
    settle().await;
    cancelled.abort();
    let _ = join(completed).await;
    let _ = join(failed).await;
    let _ = join(panicked).await;
    let _ = join(timed_out).await;
    let _ = join(cancelled).await;
    drain_ok(&pool).await;

    let stats = pool.stats();
    assert_eq!(stats.completed, 1);
    assert_eq!(stats.failed, 1);
    assert_eq!(stats.panicked, 1);
    assert_eq!(stats.timed_out, 1);
    assert_eq!(stats.cancelled, 1);
    assert_eq!(stats.retried, 0);
    assert_eq!((stats.queued, stats.running), (0, 0));
    assert_eq!(stats.max_concurrency, 2);
    assert!(stats.workers <= 2);
    assert!(!stats.paused && !stats.closed);
}

#[tokio::test(start_paused = true)]
async fn stats_show_queued_and_running_tasks_while_paused() {
    let pool = pool(2);
    let done = Arc::new(AtomicUsize::new(0));
    spawn_sleepers(&pool, 2, ms(100), &done).await;
    settle().await;
    pool.pause();
    spawn_sleepers(&pool, 3, ms(10), &done).await;
    settle().await;

    let stats = pool.stats();
    assert_eq!(stats.running, 2, "pause does not stop running tasks");
    assert_eq!(stats.queued, 3);
    assert!(stats.paused);
    assert!(stats.workers >= 1 && stats.workers <= 2);

    // The running two finish; the queued three stay queued.
    sleep(ms(200)).await;
    let stats = pool.stats();
    assert_eq!((stats.running, stats.queued, stats.completed), (0, 3, 2));

    pool.resume();
    drain_ok(&pool).await;
    let stats = pool.stats();
    assert_eq!((stats.running, stats.queued, stats.completed), (0, 0, 5));
    assert_eq!(done.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn stats_percentiles_follow_the_paused_clock() {
    // One slot and four tasks of 10ms: run times are all 10ms, waits 0, 10, 20 and 30ms.
    let pool = pool(1);
    let done = Arc::new(AtomicUsize::new(0));
    spawn_sleepers(&pool, 4, ms(10), &done).await;
    drain_ok(&pool).await;

    let stats = pool.stats();
    let (run, wait) = (stats.run_time, stats.wait_time);
    assert_eq!(run.count, 4);
    assert_eq!(wait.count, 4);
    // The histograms keep two significant figures (1% precision, documented on
    // `Percentiles`), and report the top of a value's bucket.
    let within_1_percent = |got: Duration, want: Duration| got >= want && got <= want.mul_f64(1.01);
    assert!(within_1_percent(run.p50, ms(10)), "run p50 {:?}", run.p50);
    assert!(within_1_percent(run.p99, ms(10)), "run p99 {:?}", run.p99);
    assert!(within_1_percent(run.max, ms(10)), "run max {:?}", run.max);
    assert!(
        within_1_percent(wait.max, ms(30)),
        "wait max {:?}",
        wait.max
    );
    assert!(wait.p50 >= ms(10), "wait p50 {:?}", wait.p50);
    assert!(wait.p50 <= wait.p90 && wait.p90 <= wait.p99 && wait.p99 <= wait.max);
}

/// `while let Some(ev) = events.next().await` must terminate: the stream ends once the pool is
/// closed and idle, after the last task's `TaskFinished`, `Closed` and `Idle`.
#[tokio::test(start_paused = true)]
async fn event_stream_ends_once_the_pool_is_closed_and_idle() {
    use futures::StreamExt;

    let pool = pool(2);
    let events = pool.events();
    for _ in 0..3 {
        detach(spawn(&pool, nap(ms(10))).await);
    }
    let closer = {
        let pool = pool.clone();
        tokio::spawn(async move { close_ok(&pool).await })
    };
    let seen: Vec<PoolEvent> = guard("event stream end", events.collect()).await;
    closer.await.expect("close task");

    let finished = seen
        .iter()
        .filter(|e| {
            matches!(
                e,
                PoolEvent::TaskFinished {
                    outcome: OutcomeKind::Completed,
                    ..
                }
            )
        })
        .count();
    assert_eq!(
        finished, 3,
        "every task's end is seen before the stream ends: {seen:?}"
    );
    assert!(seen.contains(&PoolEvent::Closed));
    assert_eq!(
        seen.last(),
        Some(&PoolEvent::Idle),
        "idle is the last event"
    );

    // A stream made after the end is empty at once.
    let late: Vec<PoolEvent> = guard("late stream", pool.events().collect()).await;
    assert!(late.is_empty());
}
