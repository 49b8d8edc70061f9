//! Integration tests for how `TaskPool` tasks end: every outcome through the handle, detached
//! failures in the drain report, and retries with their backoff on the paused clock.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;
use workcrew::task::{
    CancelReason, FailureKind, PoolEvent, RetryPolicy, TaskError, TaskFailure, TaskId, TaskPool,
};

use support::{
    build, detach, drain_ok, events_until, join, ms, ms_since, nap, ok, outcome, panicking, pool,
    settle, spawn, DropFlag, Live, Log,
};

/// Spawns a task that sets `started` and then never finishes; the returned flag is set when
/// the pool drops its future.
async fn spawn_hanging(
    pool: &TaskPool,
    started: &Arc<AtomicBool>,
) -> (workcrew::task::TaskHandle<()>, Arc<AtomicBool>) {
    let dropped = Arc::new(AtomicBool::new(false));
    let (started, flag) = (Arc::clone(started), DropFlag(Arc::clone(&dropped)));
    let handle = spawn(pool, async move {
        let _flag = flag;
        started.store(true, Ordering::SeqCst);
        std::future::pending::<()>().await;
    })
    .await;
    (handle, dropped)
}

/// The failure with id `id` in a report's list.
fn failure(failures: &[TaskFailure], id: TaskId) -> &TaskFailure {
    failures
        .iter()
        .find(|f| f.id == id)
        .unwrap_or_else(|| panic!("task {id} is missing from the failures {failures:?}"))
}

// ---- outcomes through the handle ----

#[tokio::test]
async fn a_completed_task_gives_its_value() {
    let pool = pool(2);
    assert_eq!(
        join(spawn(&pool, async { ok(42_u32) }).await).await.ok(),
        Some(42)
    );
    assert!(join(spawn(&pool, async {}).await).await.is_ok());
    assert_eq!(pool.stats().completed, 2);
}

#[tokio::test]
async fn a_failed_task_gives_its_own_error() {
    let pool = pool(2);
    let handle = spawn(&pool, async { Err::<u32, String>("disk full".into()) }).await;
    let err = join(handle).await.expect_err("the task failed");
    assert!(err.is_failed());
    assert!(!err.is_panic() && !err.is_cancelled() && !err.is_timeout());
    assert_eq!(err.into_failed().as_deref(), Some("disk full"));
    assert_eq!(pool.stats().failed, 1);
}

#[tokio::test]
async fn a_panic_is_an_outcome_and_the_pool_keeps_running() {
    // One worker: if the panic killed it, nothing after it could run.
    let pool = pool(1);
    let handle = spawn(&pool, panicking("index out of range")).await;
    match join(handle).await {
        Err(TaskError::Panicked(payload)) => {
            assert_eq!(payload.message(), Some("index out of range"));
            let raw = payload.into_inner();
            assert_eq!(raw.downcast_ref::<&str>(), Some(&"index out of range"));
        }
        other => panic!("expected Panicked, got {}", outcome(&other)),
    }

    // A formatted message (a `String` payload) is readable too.
    let row = 7;
    let handle = spawn(&pool, async move {
        if row > 0 {
            panic!("bad row {row}");
        }
    })
    .await;
    match join(handle).await {
        Err(e @ TaskError::Panicked(_)) => {
            assert!(e.is_panic());
            let TaskError::Panicked(payload) = e else {
                unreachable!()
            };
            assert_eq!(payload.message(), Some("bad row 7"));
        }
        other => panic!("expected Panicked, got {}", outcome(&other)),
    }

    // The same single worker slot still serves new tasks.
    for i in 0..3_u32 {
        assert_eq!(
            join(spawn(&pool, async move { ok(i) }).await).await.ok(),
            Some(i)
        );
    }
    let stats = pool.stats();
    assert_eq!((stats.panicked, stats.completed), (2, 3));
}

#[tokio::test(start_paused = true)]
async fn abort_cancels_a_running_task_and_drops_its_future() {
    let pool = pool(1);
    let started = Arc::new(AtomicBool::new(false));
    let (handle, dropped) = spawn_hanging(&pool, &started).await;
    settle().await;
    assert!(started.load(Ordering::SeqCst));

    handle.abort();
    match join(handle).await {
        Err(TaskError::Cancelled(reason)) => assert_eq!(reason, CancelReason::Aborted),
        other => panic!("expected Cancelled(Aborted), got {}", outcome(&other)),
    }
    assert!(dropped.load(Ordering::SeqCst), "the future was dropped");
    settle().await;
    let stats = pool.stats();
    assert_eq!((stats.cancelled, stats.running), (1, 0));
    // The slot was given back.
    assert!(join(spawn(&pool, async {}).await).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn abort_cancels_a_queued_task_before_it_starts() {
    let pool = pool(1);
    pool.pause();
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    let handle = spawn(&pool, async move { flag.store(true, Ordering::SeqCst) }).await;
    let after = spawn(&pool, async { ok(1_u8) }).await;

    handle.abort();
    pool.resume();
    match join(handle).await {
        Err(TaskError::Cancelled(CancelReason::Aborted)) => {}
        other => panic!("expected Cancelled(Aborted), got {}", outcome(&other)),
    }
    assert!(
        !ran.load(Ordering::SeqCst),
        "an aborted queued task never runs"
    );
    assert_eq!(join(after).await.ok(), Some(1));
    let report = drain_ok(&pool).await;
    assert_eq!((report.cancelled, report.completed), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_cancel_token_cancels_running_and_queued_tasks() {
    let pool = pool(1);
    let token = CancellationToken::new();
    let start = Instant::now();

    let running = pool
        .task(nap(Duration::from_secs(10)))
        .cancel_token(token.clone())
        .spawn()
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    let queued = pool
        .task(async move { flag.store(true, Ordering::SeqCst) })
        .cancel_token(token.clone())
        .spawn()
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));

    sleep(ms(50)).await;
    token.cancel();
    for handle in [running, queued] {
        match join(handle).await {
            Err(TaskError::Cancelled(reason)) => assert_eq!(reason, CancelReason::Token),
            other => panic!("expected Cancelled(Token), got {}", outcome(&other)),
        }
    }
    assert_eq!(ms_since(start), 50, "cancellation takes effect at once");
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(pool.stats().cancelled, 2);
}

#[tokio::test(start_paused = true)]
async fn a_task_timeout_ends_the_task_as_timed_out() {
    let pool = pool(1);
    let start = Instant::now();
    let handle = pool
        .task(async {
            sleep(Duration::from_secs(1)).await;
            ok(1_u8)
        })
        .timeout(ms(100))
        .spawn()
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));
    let res = join(handle).await;
    assert!(
        matches!(res, Err(TaskError::TimedOut)),
        "got {}",
        outcome(&res)
    );
    assert!(res.err().is_some_and(|e| e.is_timeout()));
    assert_eq!(ms_since(start), 100);
    assert_eq!(pool.stats().timed_out, 1);
}

#[tokio::test(start_paused = true)]
async fn the_pool_task_timeout_is_a_default_that_tasks_can_override() {
    let pool = build(TaskPool::builder().max_concurrency(2).task_timeout(ms(50)));
    let start = Instant::now();
    let plain = spawn(&pool, nap(ms(200))).await;
    let longer = pool
        .task(nap(ms(200)))
        .timeout(ms(500))
        .spawn()
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));
    let quick = spawn(&pool, nap(ms(20))).await;

    let res = join(plain).await;
    assert!(
        matches!(res, Err(TaskError::TimedOut)),
        "got {}",
        outcome(&res)
    );
    assert_eq!(ms_since(start), 50);
    assert!(
        join(quick).await.is_ok(),
        "a task within the default finishes"
    );
    assert!(
        join(longer).await.is_ok(),
        "its own timeout replaces the default"
    );
    assert_eq!(ms_since(start), 200);
}

// ---- detached failures in the drain report ----

#[tokio::test(start_paused = true)]
async fn detached_failures_are_reported_by_the_next_drain_even_if_already_finished() {
    let pool = pool(4);
    detach(spawn(&pool, async { ok(()) }).await);
    let failed = pool
        .task(async { Err::<(), String>("disk full".into()) })
        .name("writer")
        .spawn()
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));
    let panicked = pool
        .task(panicking("index out of range"))
        .name("indexer")
        .spawn()
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));
    let timed_out = pool
        .task(nap(Duration::from_secs(1)))
        .name("slow")
        .timeout(ms(10))
        .spawn()
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));
    let unnamed = spawn(&pool, async { Err::<(), String>("no name".into()) }).await;
    let ids = [failed.id(), panicked.id(), timed_out.id(), unnamed.id()];
    // Fire and forget: nobody will ever await these handles.
    detach(failed);
    detach(panicked);
    detach(timed_out);
    detach(unnamed);

    // Everything ends well before anyone drains.
    sleep(ms(100)).await;
    let stats = pool.stats();
    assert_eq!((stats.queued, stats.running), (0, 0));

    let report = drain_ok(&pool).await;
    assert_eq!(report.completed, 1);
    assert_eq!(report.failed, 2);
    assert_eq!(report.panicked, 1);
    assert_eq!(report.timed_out, 1);
    assert_eq!(report.cancelled, 0);
    assert_eq!(report.failures.len(), 4);
    assert_eq!(report.failures_omitted, 0);
    assert!(!report.is_clean());

    let writer = failure(&report.failures, ids[0]);
    assert_eq!(writer.name.as_deref(), Some("writer"));
    assert_eq!(writer.kind, FailureKind::Failed);
    assert_eq!(writer.message, "disk full");
    let indexer = failure(&report.failures, ids[1]);
    assert_eq!(indexer.name.as_deref(), Some("indexer"));
    assert_eq!(indexer.kind, FailureKind::Panicked);
    assert!(
        indexer.message.contains("index out of range"),
        "{}",
        indexer.message
    );
    let slow = failure(&report.failures, ids[2]);
    assert_eq!(slow.name.as_deref(), Some("slow"));
    assert_eq!(slow.kind, FailureKind::TimedOut);
    assert!(!slow.message.is_empty());
    let anonymous = failure(&report.failures, ids[3]);
    assert_eq!(anonymous.name, None);
    assert_eq!(anonymous.message, "no name");

    // The report was taken: the next drain starts from zero.
    let next = drain_ok(&pool).await;
    assert_eq!(next.total(), 0);
    assert!(next.failures.is_empty());
    // Stats stay cumulative.
    assert_eq!(pool.stats().failed, 2);
}

#[tokio::test(start_paused = true)]
async fn max_reported_failures_caps_the_list_but_not_the_counts() {
    let pool = build(
        TaskPool::builder()
            .max_concurrency(1)
            .max_reported_failures(2),
    );
    let mut ids = Vec::new();
    for i in 0..5 {
        let handle = spawn(
            &pool,
            async move { Err::<(), String>(format!("error {i}")) },
        )
        .await;
        ids.push(handle.id());
        detach(handle);
    }
    for _ in 0..3 {
        detach(spawn(&pool, async {}).await);
    }
    let report = drain_ok(&pool).await;
    assert_eq!(report.failed, 5, "counts stay exact");
    assert_eq!(report.completed, 3);
    assert_eq!(report.failures.len(), 2);
    assert_eq!(report.failures_omitted, 3);
    // Oldest first: one worker runs them in spawn order.
    let listed: Vec<_> = report.failures.iter().map(|f| f.id).collect();
    assert_eq!(listed, ids[..2]);
    assert_eq!(report.failures[0].message, "error 0");
}

// ---- retries ----

/// A closure for `task_fn` that counts its calls and fails until attempt `succeed_on`.
fn flaky(
    calls: &Arc<AtomicU32>,
    succeed_on: u32,
) -> impl FnMut() -> futures::future::Ready<Result<u32, String>> + Send + 'static {
    let calls = Arc::clone(calls);
    move || {
        let attempt = calls.fetch_add(1, Ordering::SeqCst) + 1;
        futures::future::ready(if attempt >= succeed_on {
            Ok(attempt)
        } else {
            Err(format!("attempt {attempt} failed"))
        })
    }
}

/// A deterministic policy with short delays.
fn quick_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy::new(max_attempts)
        .backoff(ms(10), Duration::from_secs(1))
        .jitter(0.0)
}

#[tokio::test(start_paused = true)]
async fn a_retried_task_succeeds_on_its_third_attempt() {
    let pool = pool(1);
    let mut events = pool.events();
    let calls = Arc::new(AtomicU32::new(0));
    let handle = pool
        .task_fn(flaky(&calls, 3))
        .retry(quick_retries(5))
        .spawn()
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));
    let id = handle.id();

    assert_eq!(join(handle).await.ok(), Some(3));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "no attempt after the success"
    );
    let stats = pool.stats();
    assert_eq!(stats.retried, 2);
    assert_eq!(
        (stats.completed, stats.failed),
        (1, 0),
        "one task, one outcome"
    );

    let seen = events_until(&mut events, |e| matches!(e, PoolEvent::TaskFinished { .. })).await;
    let retries: Vec<_> = seen
        .into_iter()
        .filter(|e| matches!(e, PoolEvent::TaskRetried { .. }))
        .collect();
    assert_eq!(
        retries,
        [
            PoolEvent::TaskRetried {
                id,
                attempt: 1,
                delay: ms(10)
            },
            PoolEvent::TaskRetried {
                id,
                attempt: 2,
                delay: ms(20)
            },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_fail_with_the_last_error() {
    let pool = pool(1);
    let calls = Arc::new(AtomicU32::new(0));
    let handle = pool
        .task_fn(flaky(&calls, u32::MAX))
        .retry(quick_retries(4))
        .spawn()
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));
    let res = join(handle).await;
    assert_eq!(
        res.err().and_then(TaskError::into_failed).as_deref(),
        Some("attempt 4 failed")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    let stats = pool.stats();
    assert_eq!((stats.failed, stats.retried), (1, 3));
}

#[tokio::test(start_paused = true)]
async fn retry_if_stops_at_a_non_retryable_error() {
    let pool = pool(1);
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let handle = pool
        .task_fn(move || {
            let attempt = counter.fetch_add(1, Ordering::SeqCst) + 1;
            // First a transient error, then a permanent one.
            let err = if attempt == 1 { "busy" } else { "not found" };
            futures::future::ready(Err::<(), String>(err.to_owned()))
        })
        .retry(quick_retries(10))
        .retry_if(|e: &String| e == "busy")
        .spawn()
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));
    let res = join(handle).await;
    assert_eq!(
        res.err().and_then(TaskError::into_failed).as_deref(),
        Some("not found")
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "no retry after the permanent error"
    );
    assert_eq!(pool.stats().retried, 1);
}

#[tokio::test(start_paused = true)]
async fn panics_are_not_retried() {
    let pool = pool(1);
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let handle = pool
        .task_fn(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            panicking("corrupt state")
        })
        .retry(quick_retries(5))
        .spawn()
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));
    let res: Result<(), _> = join(handle).await;
    assert!(
        matches!(res, Err(TaskError::Panicked(_))),
        "got {}",
        outcome(&res)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(pool.stats().retried, 0);
}

/// `timeout` is the task's deadline over all its attempts: when it fires, the task ends; no
/// retry follows.
#[tokio::test(start_paused = true)]
async fn the_task_timeout_is_not_retried() {
    let pool = pool(1);
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let start = Instant::now();
    let handle = pool
        .task_fn(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                sleep(Duration::from_secs(1)).await;
                Err::<(), String>("too late".into())
            }
        })
        .retry(quick_retries(5))
        .timeout(ms(100))
        .spawn()
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));
    let res = join(handle).await;
    assert!(
        matches!(res, Err(TaskError::TimedOut)),
        "got {}",
        outcome(&res)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(ms_since(start), 100);
    assert_eq!(pool.stats().retried, 0);
}

/// Attempts that hang (for an hour) until attempt `succeed_on`, which returns its number.
/// Each attempt logs its start (ms since `start`) and is inside `live` while it exists.
fn hanging_until(
    calls: &Arc<AtomicU32>,
    succeed_on: u32,
    starts: &Log<u64>,
    live: &Live,
    start: Instant,
) -> impl FnMut() -> futures::future::BoxFuture<'static, Result<u32, String>> + Send + 'static {
    let (calls, starts, live) = (Arc::clone(calls), starts.clone(), live.clone());
    move || {
        let attempt = calls.fetch_add(1, Ordering::SeqCst) + 1;
        starts.push(ms_since(start));
        let inside = live.enter();
        Box::pin(async move {
            let _inside = inside;
            if attempt < succeed_on {
                sleep(Duration::from_secs(3600)).await;
            }
            Ok(attempt)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn an_attempt_timeout_retries_a_hung_attempt() {
    let pool = pool(1);
    let mut events = pool.events();
    let start = Instant::now();
    let (calls, starts, live) = (Arc::new(AtomicU32::new(0)), Log::default(), Live::default());
    let handle = pool
        .task_fn(hanging_until(&calls, 3, &starts, &live, start))
        .retry(quick_retries(5))
        .attempt_timeout(ms(100))
        .spawn()
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));
    let id = handle.id();

    assert_eq!(join(handle).await.ok(), Some(3));
    // Each hung attempt is cut at 100 ms, then the backoff (10, 20 ms) runs.
    assert_eq!(starts.snapshot(), [0, 110, 230]);
    assert_eq!(ms_since(start), 230);
    assert_eq!(
        live.max(),
        1,
        "a timed-out attempt is dropped before the next starts"
    );
    assert_eq!(live.now(), 0);
    let stats = pool.stats();
    assert_eq!((stats.completed, stats.timed_out, stats.retried), (1, 0, 2));
    let retried: Vec<PoolEvent> =
        events_until(&mut events, |e| matches!(e, PoolEvent::TaskFinished { .. }))
            .await
            .into_iter()
            .filter(|e| matches!(e, PoolEvent::TaskRetried { .. }))
            .collect();
    assert_eq!(
        retried,
        [
            PoolEvent::TaskRetried {
                id,
                attempt: 1,
                delay: ms(10)
            },
            PoolEvent::TaskRetried {
                id,
                attempt: 2,
                delay: ms(20)
            },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_last_attempt_timing_out_ends_the_task_as_timed_out() {
    let pool = pool(1);
    let start = Instant::now();
    let (calls, starts, live) = (Arc::new(AtomicU32::new(0)), Log::default(), Live::default());
    let handle = pool
        .task_fn(hanging_until(&calls, u32::MAX, &starts, &live, start))
        .name("hung")
        .retry(quick_retries(3))
        .attempt_timeout(ms(100))
        .spawn()
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));
    let id = handle.id();

    let res = join(handle).await;
    assert!(
        matches!(res, Err(TaskError::TimedOut)),
        "got {}",
        outcome(&res)
    );
    assert_eq!(starts.snapshot(), [0, 110, 230]);
    assert_eq!(ms_since(start), 330);
    assert_eq!(live.now(), 0);
    let stats = pool.stats();
    assert_eq!((stats.timed_out, stats.failed, stats.retried), (1, 0, 2));
    let report = drain_ok(&pool).await;
    let f = failure(&report.failures, id);
    assert_eq!(f.kind, FailureKind::TimedOut);
    assert_eq!(f.message, "attempt 3 of 3 timed out after 100ms");
}

#[tokio::test(start_paused = true)]
async fn the_task_timeout_is_a_deadline_over_all_attempts_and_backoff() {
    let pool = pool(1);
    let start = Instant::now();
    let (calls, starts, live) = (Arc::new(AtomicU32::new(0)), Log::default(), Live::default());
    let handle = pool
        .task_fn(hanging_until(&calls, u32::MAX, &starts, &live, start))
        .retry(quick_retries(10))
        .attempt_timeout(ms(100))
        .timeout(ms(250))
        .spawn()
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));
    let id = handle.id();

    let res = join(handle).await;
    assert!(
        matches!(res, Err(TaskError::TimedOut)),
        "got {}",
        outcome(&res)
    );
    // Attempts at 0 and 110 time out; the third, started at 230, is cut by the deadline.
    assert_eq!(starts.snapshot(), [0, 110, 230]);
    assert_eq!(ms_since(start), 250);
    assert_eq!(live.now(), 0, "the attempt in progress was dropped");
    let stats = pool.stats();
    assert_eq!((stats.timed_out, stats.retried), (1, 2));
    let report = drain_ok(&pool).await;
    assert_eq!(
        failure(&report.failures, id).message,
        "timed out after 250ms"
    );
}

#[tokio::test(start_paused = true)]
async fn the_pool_task_timeout_bounds_all_attempts_of_a_retried_task() {
    let pool = build(TaskPool::builder().max_concurrency(1).task_timeout(ms(250)));
    let start = Instant::now();
    let (calls, starts, live) = (Arc::new(AtomicU32::new(0)), Log::default(), Live::default());
    let handle = pool
        .task_fn(hanging_until(&calls, u32::MAX, &starts, &live, start))
        .retry(quick_retries(10))
        .attempt_timeout(ms(100))
        .spawn()
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));
    assert!(join(handle).await.is_err_and(|e| e.is_timeout()));
    assert_eq!(starts.snapshot(), [0, 110, 230]);
    assert_eq!(ms_since(start), 250);
}

#[tokio::test(start_paused = true)]
async fn retry_if_is_not_asked_about_timed_out_attempts() {
    let pool = pool(1);
    let calls = Arc::new(AtomicU32::new(0));
    let asked: Log<String> = Log::default();
    let (counter, log) = (Arc::clone(&calls), asked.clone());
    let handle = pool
        .task_fn(move || {
            let attempt = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if attempt == 1 {
                    sleep(Duration::from_secs(3600)).await;
                }
                Err::<(), String>(format!("attempt {attempt}: permanent"))
            }
        })
        .retry(quick_retries(5))
        .retry_if(move |e: &String| {
            log.push(e.clone());
            false
        })
        .attempt_timeout(ms(100))
        .spawn()
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));
    let res = join(handle).await;
    // The timed-out first attempt was retried without asking; the second attempt's own
    // error was judged not retryable.
    assert_eq!(
        res.err().and_then(TaskError::into_failed).as_deref(),
        Some("attempt 2: permanent")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(asked.snapshot(), ["attempt 2: permanent"]);
    assert_eq!(pool.stats().retried, 1);
}

#[tokio::test(start_paused = true)]
async fn backoff_spaces_attempts_exponentially_on_the_paused_clock() {
    let pool = pool(1);
    let start = Instant::now();
    let attempts = Log::default();
    let log = attempts.clone();
    let handle = pool
        .task_fn(move || {
            log.push(ms_since(start));
            futures::future::ready(Err::<(), String>("unavailable".into()))
        })
        .retry(
            RetryPolicy::new(4)
                .backoff(ms(100), Duration::from_secs(10))
                .jitter(0.0),
        )
        .spawn()
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));
    let res = join(handle).await;
    assert!(res.is_err_and(|e| e.is_failed()));
    // Delays of 100, 200 and 400 ms between the four attempts.
    assert_eq!(attempts.snapshot(), [0, 100, 300, 700]);
    assert_eq!(ms_since(start), 700, "no wait after the last attempt");
}

#[tokio::test(start_paused = true)]
async fn a_retrying_task_keeps_its_slot_and_counts_once_for_the_limit() {
    // While a task waits out its backoff it still holds its slot (documented on RetryPolicy),
    // so with one slot the other task starts only after the retried one is done.
    let pool = pool(1);
    let start = Instant::now();
    let calls = Arc::new(AtomicU32::new(0));
    let retried = pool
        .task_fn(flaky(&calls, 2))
        .retry(quick_retries(3))
        .spawn()
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));
    let other_start = Log::default();
    let log = other_start.clone();
    let other = spawn(&pool, async move { log.push(ms_since(start)) }).await;
    assert_eq!(join(retried).await.ok(), Some(2));
    assert!(join(other).await.is_ok());
    assert_eq!(other_start.snapshot(), [10]);
}

#[test]
fn delay_for_grows_by_the_multiplier_and_is_capped() {
    let policy = RetryPolicy::new(6)
        .backoff(ms(100), Duration::from_secs(10))
        .jitter(0.0);
    let delays: Vec<_> = (1..=5).map(|n| policy.delay_for(n)).collect();
    assert_eq!(delays, [ms(100), ms(200), ms(400), ms(800), ms(1600)]);

    let tripling = policy.clone().multiplier(3.0);
    assert_eq!(tripling.delay_for(3), ms(900));

    let capped = RetryPolicy::new(6).backoff(ms(100), ms(250));
    let delays: Vec<_> = (1..=4).map(|n| capped.delay_for(n)).collect();
    assert_eq!(delays, [ms(100), ms(200), ms(250), ms(250)]);
    // Far out, the growth saturates at the cap rather than overflowing.
    assert_eq!(capped.delay_for(u32::MAX), ms(250));

    // Defaults: 100 ms doubling up to 10 s.
    let default = RetryPolicy::new(3);
    assert_eq!(default.delay_for(1), ms(100));
    assert_eq!(default.delay_for(2), ms(200));
    assert_eq!(default.delay_for(30), Duration::from_secs(10));
}

proptest! {
    /// `delay_for` starts at `initial`, never shrinks from one attempt to the next, and never
    /// exceeds `max`.
    #[test]
    fn delay_for_is_monotonic_and_capped(
        initial_ms in 1_u64..5_000,
        extra_ms in 0_u64..60_000,
        multiplier in 1.0_f64..4.0,
        attempt in 1_u32..64,
    ) {
        let (initial, max) = (ms(initial_ms), ms(initial_ms + extra_ms));
        let policy = RetryPolicy::new(10).backoff(initial, max).multiplier(multiplier);
        prop_assert_eq!(policy.delay_for(1), initial);
        let (d, next) = (policy.delay_for(attempt), policy.delay_for(attempt + 1));
        prop_assert!(d <= next, "delay_for({}) = {:?} > delay_for({}) = {:?}", attempt, d, attempt + 1, next);
        prop_assert!(next <= max);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The real backoff of a retried task, as announced in `TaskRetried` and as measured
    /// between attempts on the paused clock, lies in `[d * (1 - jitter), d]` for
    /// `d = delay_for(attempt)` (the bound documented on `RetryPolicy`).
    #[test]
    fn jittered_backoff_stays_within_the_documented_bound(
        initial_ms in 1_u64..2_000,
        extra_ms in 0_u64..5_000,
        multiplier in 1.0_f64..3.0,
        jitter in 0.0_f64..=1.0,
        max_attempts in 2_u32..6,
    ) {
        let policy = RetryPolicy::new(max_attempts)
            .backoff(ms(initial_ms), ms(initial_ms + extra_ms))
            .multiplier(multiplier)
            .jitter(jitter);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        let (announced, gaps) = rt.block_on(observed_backoff(policy.clone()));

        prop_assert_eq!(announced.len() as u32, max_attempts - 1);
        prop_assert_eq!(gaps.len(), announced.len());
        for (i, (&(attempt, delay), &gap)) in announced.iter().zip(&gaps).enumerate() {
            prop_assert_eq!(attempt, i as u32 + 1);
            let d = policy.delay_for(attempt);
            // 1ns of slack for the float rounding in `mul_f64`.
            let floor = d.mul_f64(1.0 - jitter).saturating_sub(Duration::from_nanos(1));
            prop_assert!(delay <= d && delay >= floor, "delay {:?} outside [{:?}, {:?}]", delay, floor, d);
            // Tokio timers fire on whole milliseconds, so a sleep of `delay` ends at `delay`
            // rounded up to the next millisecond.
            prop_assert!(gap >= delay && gap < delay + ms(1), "gap {:?} for delay {:?}", gap, delay);
        }
    }
}

/// Runs one always-failing task under `policy`; returns the `(attempt, delay)` of each
/// `TaskRetried` event and the measured time between consecutive attempts.
async fn observed_backoff(policy: RetryPolicy) -> (Vec<(u32, Duration)>, Vec<Duration>) {
    let pool = pool(1);
    let mut events = pool.events();
    let starts: Log<Instant> = Log::default();
    let log = starts.clone();
    let handle = pool
        .task_fn(move || {
            log.push(Instant::now());
            futures::future::ready(Err::<(), String>("nope".into()))
        })
        .retry(policy)
        .spawn()
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));
    assert!(join(handle).await.is_err());

    let seen = events_until(&mut events, |e| matches!(e, PoolEvent::TaskFinished { .. })).await;
    let announced = seen
        .into_iter()
        .filter_map(|e| match e {
            PoolEvent::TaskRetried { attempt, delay, .. } => Some((attempt, delay)),
            _ => None,
        })
        .collect();
    let starts = starts.snapshot();
    let gaps = starts.windows(2).map(|w| w[1] - w[0]).collect();
    (announced, gaps)
}

// ---- every outcome is counted once ----

#[tokio::test(start_paused = true)]
async fn each_task_ends_in_exactly_one_outcome_and_no_slot_leaks() {
    // A fault matrix through a 2-slot pool: tasks that succeed, fail, panic, hang (timed out),
    // and get aborted, interleaved; afterwards the counts add up and both slots still work.
    let pool = pool(2);
    let live = Live::default();
    let mut handles = Vec::new();
    for i in 0..20_u32 {
        let guard_live = live.clone();
        let task = pool.task(async move {
            let _inside = guard_live.enter();
            match i % 5 {
                0 => Ok(i),
                1 => Err(format!("failure {i}")),
                2 => panic!("panic {i}"),
                3 => {
                    sleep(Duration::from_secs(3600)).await;
                    Ok(i)
                }
                _ => {
                    sleep(ms(5)).await;
                    Ok(i)
                }
            }
        });
        let task = if i % 5 == 3 {
            task.timeout(ms(20))
        } else {
            task
        };
        handles.push(
            task.spawn()
                .await
                .unwrap_or_else(|_| panic!("spawn refused")),
        );
    }
    // Abort the last two (still queued by now).
    handles[18].abort();
    handles[19].abort();

    let mut kinds = std::collections::HashMap::<&str, usize>::new();
    for handle in handles {
        *kinds.entry(outcome(&join(handle).await)).or_default() += 1;
    }
    assert_eq!(kinds.get("Ok"), Some(&7));
    assert_eq!(kinds.get("Failed"), Some(&4));
    assert_eq!(kinds.get("Panicked"), Some(&4));
    assert_eq!(kinds.get("TimedOut"), Some(&3));
    assert_eq!(kinds.get("Cancelled"), Some(&2));

    let report = drain_ok(&pool).await;
    assert_eq!(report.total(), 20);
    let stats = pool.stats();
    assert_eq!(
        (
            stats.completed,
            stats.failed,
            stats.panicked,
            stats.timed_out,
            stats.cancelled
        ),
        (7, 4, 4, 3, 2)
    );
    assert_eq!((stats.queued, stats.running), (0, 0));
    assert_eq!(live.now(), 0, "every task's future was dropped");
    assert!(live.max() <= 2);

    // Both slots are still there.
    let both = Live::default();
    let (a, b) = (both.clone(), both.clone());
    let h1 = spawn(&pool, async move {
        let _in = a.enter();
        sleep(ms(10)).await;
    })
    .await;
    let h2 = spawn(&pool, async move {
        let _in = b.enter();
        sleep(ms(10)).await;
    })
    .await;
    assert!(join(h1).await.is_ok() && join(h2).await.is_ok());
    assert_eq!(both.max(), 2);
}
