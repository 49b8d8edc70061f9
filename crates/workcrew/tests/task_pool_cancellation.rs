//! Integration tests for cancelling a task that is still queued: by its own cancellation token
//! and by its handle's `abort`. Either way the task leaves the queue at once — its handle
//! resolves, its place is freed, stats and events show it and the next drain report counts
//! it, and its future is dropped without ever being polled — also on a paused pool, where no
//! worker will ever dequeue it.

mod support;

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use workcrew::task::{
    CancelReason, OutcomeKind, PoolEvent, TaskError, TaskHandle, TaskPool, TrySpawnError,
};

use support::{
    build, drain_ok, events_until, guard, join, ms_since, nap, outcome, probe, settle, spawn, Log,
    ProbeFlags,
};

/// A pool with one slot and room for `queue` queued tasks.
fn one_slot(queue: usize) -> TaskPool {
    build(TaskPool::builder().max_concurrency(1).queue_capacity(queue))
}

/// Queues a probe (see `support::Probe`) with its own `token`.
async fn queue_probe_with_token(
    pool: &TaskPool,
    token: &CancellationToken,
) -> (TaskHandle<()>, ProbeFlags) {
    let (body, flags) = probe();
    let handle = guard("spawn", pool.task(body).cancel_token(token.clone()).spawn())
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));
    (handle, flags)
}

/// Queues a probe without options.
async fn queue_probe(pool: &TaskPool) -> (TaskHandle<()>, ProbeFlags) {
    let (body, flags) = probe();
    (spawn(pool, body).await, flags)
}

/// A bound on a multi-thread test with real time, far above what it needs even on a loaded
/// machine, so that a hang fails the test instead of waiting out the hour-long hang guard.
const REAL_TIME_BOUND: Duration = Duration::from_secs(60);

/// Runs a multi-thread test body, failing it if it does not finish within [`REAL_TIME_BOUND`].
async fn bounded(body: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(REAL_TIME_BOUND, body).await.is_err() {
        panic!("the test did not finish within {REAL_TIME_BOUND:?}");
    }
}

/// Asserts that a handle resolved as cancelled for `reason`.
async fn expect_cancelled(handle: TaskHandle<()>, reason: CancelReason) {
    match join(handle).await {
        Err(TaskError::Cancelled(r)) => assert_eq!(r, reason),
        other => panic!("expected Cancelled({reason:?}), got {}", outcome(&other)),
    }
}

/// Asserts that a probe was dropped and never polled.
fn assert_dropped_unpolled(flags: &ProbeFlags) {
    assert!(flags.dropped(), "the cancelled task's future was dropped");
    assert!(
        !flags.polled(),
        "the cancelled task's future was never polled"
    );
}

/// Tries to queue a no-op task; true if the pool took it.
fn try_spawn_noop(pool: &TaskPool) -> bool {
    match pool.try_spawn(async {}) {
        Ok(_) => true,
        Err(TrySpawnError::Full(_)) => false,
        Err(e) => panic!("unexpected try_spawn error: {e}"),
    }
}

// ---- by its own token ----

/// The reviewer's scenario: one slot held by a long task, the queue (one place) held by a task
/// with its own token. When that token fires the queued task is gone at once, with no virtual
/// time passing: handle, stats, room, event, report, and its future.
#[tokio::test(start_paused = true)]
async fn a_queued_task_whose_own_token_fires_leaves_the_queue_at_once() {
    let pool = one_slot(1);
    let start = Instant::now();
    let long = spawn(&pool, nap(Duration::from_secs(10))).await;
    settle().await;
    let token = CancellationToken::new();
    let (queued, flags) = queue_probe_with_token(&pool, &token).await;
    assert!(
        !try_spawn_noop(&pool),
        "the queue is full before the token fires"
    );
    let mut events = pool.events();

    token.cancel();
    expect_cancelled(queued, CancelReason::Token).await;
    assert_eq!(
        ms_since(start),
        0,
        "cancelled at once, not when a worker got to it"
    );
    assert_dropped_unpolled(&flags);
    let stats = pool.stats();
    assert_eq!(
        (stats.queued, stats.running, stats.cancelled),
        (0, 1, 1),
        "the task left the queue and was counted; the long task still runs"
    );
    let seen = events_until(&mut events, |e| matches!(e, PoolEvent::TaskFinished { .. })).await;
    assert!(matches!(
        seen.last(),
        Some(PoolEvent::TaskFinished {
            outcome: OutcomeKind::Cancelled,
            run_time: Duration::ZERO,
            ..
        })
    ));
    assert!(try_spawn_noop(&pool), "its place in the queue was freed");
    assert!(!long.is_finished(), "the running task was not touched");

    let report = drain_ok(&pool).await;
    assert_eq!((report.cancelled, report.completed), (1, 2));
    assert_eq!(ms_since(start), 10_000);
}

/// On a paused pool no worker will ever dequeue the task: the token alone must end it, and
/// the pool, with nothing else queued, is idle at once.
#[tokio::test(start_paused = true)]
async fn a_token_cancels_a_queued_task_of_a_paused_pool() {
    let pool = one_slot(4);
    pool.pause();
    let token = CancellationToken::new();
    let (queued, flags) = queue_probe_with_token(&pool, &token).await;
    let start = Instant::now();

    token.cancel();
    expect_cancelled(queued, CancelReason::Token).await;
    assert_dropped_unpolled(&flags);
    let report = drain_ok(&pool).await;
    assert_eq!(report.cancelled, 1);
    assert_eq!(
        ms_since(start),
        0,
        "a paused pool with nothing queued is idle at once"
    );
    let stats = pool.stats();
    assert_eq!((stats.queued, stats.cancelled), (0, 1));
}

/// The same on the multi-thread runtime with real time: the watcher of the token runs on
/// another thread than the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_cancels_a_queued_task_of_a_paused_pool_on_the_multi_thread_runtime() {
    bounded(token_cancels_on_a_paused_pool()).await;
}

async fn token_cancels_on_a_paused_pool() {
    let pool = one_slot(64);
    pool.pause();
    let mut queued = Vec::new();
    let tokens: Vec<CancellationToken> = (0..32).map(|_| CancellationToken::new()).collect();
    for token in &tokens {
        queued.push(queue_probe_with_token(&pool, token).await);
    }
    for token in &tokens {
        token.cancel();
    }
    for (handle, flags) in queued {
        expect_cancelled(handle, CancelReason::Token).await;
        assert_dropped_unpolled(&flags);
    }
    let report = drain_ok(&pool).await;
    assert_eq!(report.cancelled, 32);
    assert_eq!(pool.stats().queued, 0);
}

/// Only the task whose token fired leaves; the others keep their places and their order.
#[tokio::test(start_paused = true)]
async fn only_the_task_whose_token_fired_leaves_the_queue() {
    let pool = one_slot(8);
    pool.pause();
    let order = Log::default();
    let tokens: Vec<CancellationToken> = (0..4).map(|_| CancellationToken::new()).collect();
    let mut handles = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let log = order.clone();
        let handle = pool
            .task(async move { log.push(i) })
            .cancel_token(token.clone())
            .spawn()
            .await
            .unwrap_or_else(|_| panic!("spawn refused"));
        handles.push(handle);
    }

    tokens[1].cancel();
    settle().await;
    assert_eq!(pool.stats().queued, 3);
    pool.resume();
    let outcomes: Vec<&str> = {
        let mut v = Vec::new();
        for handle in handles {
            v.push(outcome(&join(handle).await));
        }
        v
    };
    assert_eq!(outcomes, ["Ok", "Cancelled", "Ok", "Ok"]);
    assert_eq!(order.snapshot(), [0, 2, 3]);
    let report = drain_ok(&pool).await;
    assert_eq!((report.completed, report.cancelled), (3, 1));
}

/// One token shared by many queued tasks: all of them leave when it fires, in any priority.
#[tokio::test(start_paused = true)]
async fn a_shared_token_empties_the_queue_of_its_tasks() {
    let pool = one_slot(256);
    pool.pause();
    let token = CancellationToken::new();
    let mut queued = Vec::new();
    for i in 0..200_i32 {
        let (body, flags) = probe();
        let handle = pool
            .task(body)
            .priority(i % 3)
            .cancel_token(token.clone())
            .spawn()
            .await
            .unwrap_or_else(|_| panic!("spawn refused"));
        queued.push((handle, flags));
    }
    let bystander = spawn(&pool, async {}).await;

    token.cancel();
    for (handle, flags) in queued {
        expect_cancelled(handle, CancelReason::Token).await;
        assert_dropped_unpolled(&flags);
    }
    let stats = pool.stats();
    assert_eq!((stats.queued, stats.cancelled), (1, 200));
    pool.resume();
    assert!(join(bystander).await.is_ok());
    let report = drain_ok(&pool).await;
    assert_eq!((report.cancelled, report.completed), (200, 1));
}

/// A token that fired before the task was spawned ends it as soon as it is queued.
#[tokio::test(start_paused = true)]
async fn a_token_that_already_fired_ends_the_task_once_queued() {
    let pool = one_slot(4);
    pool.pause();
    let token = CancellationToken::new();
    token.cancel();
    let (queued, flags) = queue_probe_with_token(&pool, &token).await;
    expect_cancelled(queued, CancelReason::Token).await;
    assert_dropped_unpolled(&flags);
    assert_eq!(drain_ok(&pool).await.cancelled, 1);
}

/// A spawner waiting for room in a full queue gets the place a token cancellation freed,
/// on a paused pool (no worker frees places there) and with a queue large enough that the
/// pool wakes spawners in batches when workers take tasks.
#[tokio::test(start_paused = true)]
async fn a_spawner_waiting_for_room_gets_a_place_freed_by_a_token() {
    let pool = one_slot(8);
    pool.pause();
    let token = CancellationToken::new();
    let (doomed, _flags) = queue_probe_with_token(&pool, &token).await;
    for _ in 0..7 {
        drop(queue_probe(&pool).await);
    }
    let start = Instant::now();
    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move { pool.spawn(async {}).await.is_ok() }
    });
    settle().await;
    assert!(!waiting.is_finished(), "the queue is full");

    token.cancel();
    expect_cancelled(doomed, CancelReason::Token).await;
    assert!(guard("waiting spawner", waiting)
        .await
        .expect("spawner task"));
    assert_eq!(ms_since(start), 0);
    assert_eq!(pool.stats().queued, 8);
}

/// The watcher a token-bearing task gets while queued goes away when the task is dequeued or
/// cancelled: running many such tasks leaves no task behind on the runtime.
#[tokio::test(start_paused = true)]
async fn token_watchers_do_not_outlive_the_queue() {
    let pool = one_slot(128);
    let metrics = tokio::runtime::Handle::current().metrics();
    // Start the pool's one worker, so that it is part of the baseline.
    assert!(join(spawn(&pool, async {}).await).await.is_ok());
    settle().await;
    let baseline = metrics.num_alive_tasks();

    pool.pause();
    let kept = CancellationToken::new();
    let fired = CancellationToken::new();
    let mut handles = Vec::new();
    for i in 0..100 {
        let token = if i % 2 == 0 { &kept } else { &fired };
        handles.push(queue_probe_with_token(&pool, token).await.0);
    }
    settle().await;
    assert_eq!(
        metrics.num_alive_tasks(),
        baseline + 100,
        "one watcher per queued token-bearing task (documented cost)"
    );
    fired.cancel();
    settle().await;
    assert_eq!(metrics.num_alive_tasks(), baseline + 50);

    // The rest start (and never finish: they are probes); abort them as they run.
    pool.resume();
    settle().await;
    for handle in &handles {
        handle.abort();
    }
    drain_ok(&pool).await;
    settle().await;
    assert_eq!(
        metrics.num_alive_tasks(),
        baseline,
        "no watcher outlived its task's time in the queue"
    );
    let stats = pool.stats();
    assert_eq!((stats.cancelled, stats.queued, stats.running), (100, 0, 0));
}

// ---- by its handle ----

/// `abort` of a queued task: the handle resolves, the place is free for `try_spawn`, stats,
/// event and report show it, and the future is dropped unpolled — all before `abort` returns.
#[tokio::test(start_paused = true)]
async fn aborting_a_queued_task_frees_its_place_at_once() {
    let pool = one_slot(1);
    let start = Instant::now();
    let long = spawn(&pool, nap(Duration::from_secs(10))).await;
    settle().await;
    let (queued, flags) = queue_probe(&pool).await;
    assert!(!try_spawn_noop(&pool), "the queue is full before the abort");
    let mut events = pool.events();

    queued.abort();
    // No await in between: all of this happened inside `abort`.
    assert!(queued.is_finished());
    assert_dropped_unpolled(&flags);
    let stats = pool.stats();
    assert_eq!((stats.queued, stats.running, stats.cancelled), (0, 1, 1));
    assert!(try_spawn_noop(&pool), "the aborted task's place was freed");

    expect_cancelled(queued, CancelReason::Aborted).await;
    let seen = events_until(&mut events, |e| matches!(e, PoolEvent::TaskFinished { .. })).await;
    assert!(matches!(
        seen.last(),
        Some(PoolEvent::TaskFinished {
            outcome: OutcomeKind::Cancelled,
            ..
        })
    ));
    assert!(!long.is_finished());
    let report = drain_ok(&pool).await;
    assert_eq!((report.cancelled, report.completed), (1, 2));
    assert_eq!(ms_since(start), 10_000);
}

/// On a paused pool, aborting the only queued task leaves the pool idle at once.
#[tokio::test(start_paused = true)]
async fn aborting_the_queued_task_of_a_paused_pool_leaves_it_idle() {
    let pool = one_slot(4);
    pool.pause();
    let (queued, flags) = queue_probe(&pool).await;
    let start = Instant::now();
    let drainer = tokio::spawn({
        let pool = pool.clone();
        async move { pool.drain().await.map(|r| r.cancelled) }
    });
    settle().await;
    assert!(
        !drainer.is_finished(),
        "a paused pool with a queued task is not idle"
    );

    queued.abort();
    assert_dropped_unpolled(&flags);
    let cancelled = guard("drain", drainer).await.expect("drainer task");
    assert_eq!(cancelled.ok(), Some(1));
    assert_eq!(ms_since(start), 0);
    expect_cancelled(queued, CancelReason::Aborted).await;
}

/// A spawner waiting for room gets the place an abort freed (paused pool, batch-sized queue).
#[tokio::test(start_paused = true)]
async fn a_spawner_waiting_for_room_gets_a_place_freed_by_abort() {
    let pool = one_slot(8);
    pool.pause();
    let (doomed, _flags) = queue_probe(&pool).await;
    for _ in 0..7 {
        drop(queue_probe(&pool).await);
    }
    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move { pool.spawn(async {}).await.is_ok() }
    });
    settle().await;
    assert!(!waiting.is_finished(), "the queue is full");

    doomed.abort();
    assert!(guard("waiting spawner", waiting)
        .await
        .expect("spawner task"));
    assert_eq!(pool.stats().queued, 8);
}

/// Abort and token on the same queued task: one outcome, the first cause wins, counted once.
#[tokio::test(start_paused = true)]
async fn abort_then_token_counts_the_task_once() {
    let pool = one_slot(4);
    pool.pause();
    let token = CancellationToken::new();
    let (queued, flags) = queue_probe_with_token(&pool, &token).await;
    queued.abort();
    token.cancel();
    settle().await;
    expect_cancelled(queued, CancelReason::Aborted).await;
    assert_dropped_unpolled(&flags);
    assert_eq!(drain_ok(&pool).await.cancelled, 1);
    assert_eq!(pool.stats().cancelled, 1);
}

/// Aborting a task that already ended, or aborting twice, changes nothing.
#[tokio::test(start_paused = true)]
async fn abort_after_the_end_or_twice_changes_nothing() {
    let pool = one_slot(4);
    let done = spawn(&pool, async { Ok::<_, String>(5) }).await;
    settle().await;
    assert!(done.is_finished());
    done.abort();
    assert_eq!(join(done).await.ok(), Some(5));

    pool.pause();
    let (queued, _flags) = queue_probe(&pool).await;
    queued.abort();
    queued.abort();
    expect_cancelled(queued, CancelReason::Aborted).await;
    let stats = pool.stats();
    assert_eq!((stats.completed, stats.cancelled, stats.queued), (1, 1, 0));
}

/// A handle that outlives its pool finds no pool to take its task from, and in particular
/// never a newer pool's task with the same id.
#[tokio::test(start_paused = true)]
async fn abort_through_a_handle_of_a_dropped_pool_touches_no_other_pool() {
    let old = one_slot(4);
    old.pause();
    let (stale, _flags) = queue_probe(&old).await;
    drop(old);
    assert!(
        stale.is_finished(),
        "the pool's queue went with it, resolving the handle"
    );

    let new = one_slot(4);
    new.pause();
    let (fresh, flags) = queue_probe(&new).await;
    assert_eq!(stale.id(), fresh.id(), "task ids are per pool");
    stale.abort();
    assert!(
        !fresh.is_finished(),
        "the other pool's task is still queued"
    );
    assert!(!flags.dropped());
    assert_eq!(new.stats().queued, 1);
    fresh.abort();
    expect_cancelled(fresh, CancelReason::Aborted).await;
}

/// Aborts and token cancellations racing the workers on a multi-thread runtime: every task
/// ends exactly once, the counts add up and nothing stays queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellations_racing_the_workers_end_every_task_once() {
    bounded(cancellations_racing_the_workers()).await;
}

async fn cancellations_racing_the_workers() {
    let pool = build(TaskPool::builder().max_concurrency(2).queue_capacity(64));
    let mut handles = Vec::new();
    let mut tokens = Vec::new();
    for i in 0..400_u32 {
        let token = CancellationToken::new();
        let handle = guard(
            "spawn",
            pool.task(async move {
                tokio::task::yield_now().await;
                Ok::<_, String>(i)
            })
            .cancel_token(token.clone())
            .spawn(),
        )
        .await
        .unwrap_or_else(|_| panic!("spawn refused"));
        match i % 3 {
            0 => handle.abort(),
            1 => token.cancel(),
            _ => {}
        }
        tokens.push(token);
        handles.push(handle);
    }
    let (mut ok, mut cancelled) = (0_u64, 0_u64);
    for handle in handles {
        match join(handle).await {
            Ok(_) => ok += 1,
            Err(TaskError::Cancelled(_)) => cancelled += 1,
            other => panic!("unexpected outcome {}", outcome(&other)),
        }
    }
    assert_eq!(ok + cancelled, 400);
    let report = drain_ok(&pool).await;
    let stats = pool.stats();
    assert_eq!((stats.completed, stats.cancelled), (ok, cancelled));
    assert_eq!(report.completed + report.cancelled, 400);
    assert_eq!((stats.queued, stats.running), (0, 0));
    drop(tokens);
}
