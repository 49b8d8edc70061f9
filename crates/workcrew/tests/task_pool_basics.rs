//! Integration tests for the basic `TaskPool` surface: configuration, the concurrency limit,
//! the bounded queue, priorities, pause/resume, sharing the pool, and the Send/Sync contract.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::time::{sleep, Instant};
use workcrew::task::{
    BuildError, DrainError, DrainReport, EventStream, PanicPayload, PoolEvent, PoolStats,
    RateLimit, RetryPolicy, RunningTask, SpawnError, TaskError, TaskFailure, TaskHandle, TaskId,
    TaskPool, TaskPoolBuilder, TrySpawnError,
};

use support::{
    build, detach, drain_ok, join, ms, ms_since, nap, ok, pool, settle, spawn, Live, Log,
};

// ---- the concurrency limit ----

#[tokio::test(start_paused = true)]
async fn concurrency_limit_is_reached_but_never_exceeded() {
    let pool = pool(3);
    let live = Live::default();
    let start = Instant::now();

    for _ in 0..20 {
        let live = live.clone();
        spawn(&pool, async move {
            let _inside = live.enter();
            sleep(ms(10)).await;
        })
        .await;
    }
    let report = drain_ok(&pool).await;

    assert_eq!(live.max(), 3, "exactly `max_concurrency` tasks run at once");
    assert_eq!(live.entered(), 20);
    assert_eq!(report.completed, 20);
    // 20 tasks of 10ms, 3 at a time: 7 rounds. A free worker starts the next task at once.
    assert_eq!(ms_since(start), 70);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_holds_with_real_parallelism() {
    const LIMIT: usize = 4;
    const TASKS: usize = 40;
    let pool = pool(LIMIT);
    let live = Live::default();
    // Tasks meet in groups of exactly LIMIT: the group only passes the barrier once LIMIT tasks
    // run at the same moment, so reaching the limit is proven, and any task started beyond the
    // limit shows up in `live.max()`. TASKS is a multiple of LIMIT so the last group completes.
    let barrier = Arc::new(tokio::sync::Barrier::new(LIMIT));

    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let (live, barrier) = (live.clone(), Arc::clone(&barrier));
        handles.push(
            spawn(&pool, async move {
                let _inside = live.enter();
                barrier.wait().await;
                tokio::task::yield_now().await;
            })
            .await,
        );
    }
    // Real time here (multi-thread runtimes cannot pause the clock); only a hang guard.
    let all = futures::future::join_all(handles);
    let results = tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("tasks did not all finish: fewer than LIMIT ran at once");

    assert!(results.iter().all(Result::is_ok));
    assert_eq!(live.max(), LIMIT);
    assert_eq!(live.entered(), TASKS);
    assert_eq!(drain_ok(&pool).await.completed, TASKS as u64);
}

// ---- configuration ----

#[test]
fn build_rejects_zero_concurrency_and_zero_queue_capacity() {
    // No runtime here on purpose: build() must not need one.
    assert!(matches!(
        TaskPool::builder().max_concurrency(0).build(),
        Err(BuildError::ZeroConcurrency)
    ));
    assert!(matches!(
        TaskPool::builder().queue_capacity(0).build(),
        Err(BuildError::ZeroQueueCapacity)
    ));
    assert!(matches!(
        TaskPool::builder()
            .rate_limit(RateLimit::per(0, Duration::from_secs(1)))
            .build(),
        Err(BuildError::InvalidRateLimit(_))
    ));
    assert!(matches!(
        TaskPool::builder()
            .rate_limit(RateLimit::per(1, Duration::ZERO))
            .build(),
        Err(BuildError::InvalidRateLimit(_))
    ));
    assert!(matches!(
        TaskPool::builder()
            .rate_limit(RateLimit::per(1, Duration::from_secs(1)).burst(0))
            .build(),
        Err(BuildError::InvalidRateLimit(_))
    ));

    let pool = build(TaskPool::builder().max_concurrency(1).queue_capacity(1));
    assert_eq!(pool.max_concurrency(), 1);
    assert!(TaskPool::builder().build().is_ok(), "defaults are valid");
    assert!(TaskPoolBuilder::default().build().is_ok());
    assert_eq!(
        build(TaskPool::builder()).max_concurrency(),
        4,
        "documented default"
    );
}

#[tokio::test(start_paused = true)]
async fn set_max_concurrency_raises_the_limit_at_once() {
    let pool = pool(1);
    let starts = Log::default();
    let start = Instant::now();
    for _ in 0..6 {
        let starts = starts.clone();
        spawn(&pool, async move {
            starts.push(ms_since(start));
            sleep(ms(10)).await;
        })
        .await;
    }
    settle().await;
    assert_eq!(pool.stats().running, 1);

    pool.set_max_concurrency(3)
        .unwrap_or_else(|_| panic!("3 is valid"));
    assert_eq!(pool.max_concurrency(), 3);
    drain_ok(&pool).await;

    // The two extra slots are filled immediately, not when the running task ends.
    assert_eq!(starts.snapshot(), [0, 0, 0, 10, 10, 10]);
    assert_eq!(ms_since(start), 20);
}

#[tokio::test(start_paused = true)]
async fn set_max_concurrency_lowers_the_limit_without_aborting_running_tasks() {
    let pool = pool(3);
    let starts = Log::default();
    let completed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    for _ in 0..9 {
        let (starts, completed) = (starts.clone(), Arc::clone(&completed));
        spawn(&pool, async move {
            starts.push(ms_since(start));
            sleep(ms(10)).await;
            completed.fetch_add(1, Ordering::SeqCst);
        })
        .await;
    }
    settle().await;
    assert_eq!(pool.stats().running, 3);

    pool.set_max_concurrency(1)
        .unwrap_or_else(|_| panic!("1 is valid"));
    assert_eq!(pool.max_concurrency(), 1);
    assert_eq!(pool.stats().max_concurrency, 1);
    let report = drain_ok(&pool).await;

    // The three running tasks finish (none is aborted); after that one at a time.
    assert_eq!(report.completed, 9);
    assert_eq!(completed.load(Ordering::SeqCst), 9);
    assert_eq!(starts.snapshot(), [0, 0, 0, 10, 20, 30, 40, 50, 60]);
    assert_eq!(ms_since(start), 70);
}

#[tokio::test]
async fn set_max_concurrency_rejects_zero_and_keeps_the_old_limit() {
    let pool = pool(2);
    assert!(matches!(
        pool.set_max_concurrency(0),
        Err(BuildError::ZeroConcurrency)
    ));
    assert_eq!(pool.max_concurrency(), 2);
    // The pool still works after the rejected change.
    assert!(join(spawn(&pool, async {}).await).await.is_ok());
}

// ---- the bounded queue ----

#[tokio::test(start_paused = true)]
async fn spawn_waits_for_queue_room_and_proceeds_when_room_appears() {
    // One worker and one queue slot: A runs, B waits in the queue, C must wait for room.
    let pool = build(TaskPool::builder().max_concurrency(1).queue_capacity(1));
    let start = Instant::now();
    let a = spawn(&pool, nap(ms(100))).await;
    settle().await; // A leaves the queue for the worker
    let b = spawn(&pool, nap(ms(100))).await;

    let spawner = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let res = pool.spawn(async { ok(3_u8) }).await.ok();
            (ms_since(start), res)
        })
    };
    settle().await;
    assert!(
        !spawner.is_finished(),
        "spawn must wait while the queue is full"
    );
    assert_eq!(pool.stats().queued, 1);

    // At t=100ms A ends, B moves to the worker, and C gets B's queue slot.
    let (accepted_at, c) = spawner.await.expect("spawner task");
    assert_eq!(accepted_at, 100);
    let c = c.expect("C accepted once room appeared");
    assert!(join(a).await.is_ok());
    assert!(join(b).await.is_ok());
    assert!(matches!(join(c).await, Ok(3)));
    assert_eq!(ms_since(start), 200);
}

#[tokio::test(start_paused = true)]
async fn try_spawn_on_a_full_queue_gives_the_future_back() {
    let pool = build(TaskPool::builder().max_concurrency(1).queue_capacity(1));
    let running = spawn(&pool, nap(ms(50))).await;
    settle().await;
    // The per-task builder has the same non-waiting form.
    let queued = match pool.task(async { ok(1_u8) }).name("fits").try_spawn() {
        Ok(h) => h,
        Err(_) => panic!("one queue slot is free"),
    };
    let refused = pool.task(async { ok(0_u8) }).name("too many").try_spawn();
    assert!(matches!(refused, Err(ref e) if e.is_full()));

    let ran = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&ran);
    let err = match pool.try_spawn(async move {
        counted.fetch_add(1, Ordering::SeqCst);
        ok(2_u8)
    }) {
        Ok(_) => panic!("the queue is full"),
        Err(e) => e,
    };
    assert!(err.is_full());
    assert!(!err.is_closed());
    assert!(matches!(err, TrySpawnError::Full(_)));
    // The pool never touched the refused future: we can still run it ourselves.
    assert!(matches!(err.into_inner().await, Ok(2)));
    assert_eq!(ran.load(Ordering::SeqCst), 1);

    assert!(join(running).await.is_ok());
    assert!(matches!(join(queued).await, Ok(1)));
    // There is room again.
    let again = pool
        .try_spawn(async { ok(4_u8) })
        .unwrap_or_else(|_| panic!("room after the queue emptied"));
    assert!(matches!(join(again).await, Ok(4)));
}

#[tokio::test]
async fn spawning_after_close_returns_closed_with_the_task() {
    let pool = pool(2);
    support::close_ok(&pool).await;
    assert!(pool.is_closed());

    let err = match pool.spawn(async { ok(7_u32) }).await {
        Ok(_) => panic!("closed pool accepted a task"),
        Err(e) => e,
    };
    assert!(matches!(err, SpawnError::Closed(_)));
    assert_eq!(
        err.into_inner().await,
        Ok(7),
        "the refused future still runs"
    );

    let err = match pool.try_spawn(async { ok(8_u32) }) {
        Ok(_) => panic!("closed pool accepted a task"),
        Err(e) => e,
    };
    assert!(err.is_closed());
    assert!(!err.is_full());
    assert_eq!(err.into_inner().await, Ok(8));

    // The per-task builders give their input back too.
    let err = match pool.task(async { ok(9_u32) }).name("late").spawn().await {
        Ok(_) => panic!("closed pool accepted a task"),
        Err(e) => e,
    };
    assert_eq!(err.into_inner().await, Ok(9));
    let err = match pool
        .task_fn(|| async { Ok::<u32, String>(10) })
        .retry(RetryPolicy::new(2))
        .spawn()
        .await
    {
        Ok(_) => panic!("closed pool accepted a task"),
        Err(e) => e,
    };
    let mut make = err.into_inner();
    assert!(matches!(make().await, Ok(10)), "the closure comes back");
}

// ---- priorities ----

#[tokio::test(start_paused = true)]
async fn higher_priority_runs_first_and_fifo_within_a_priority() {
    let pool = pool(1);
    let order = Log::default();
    pool.pause(); // queue everything up before anything can start
    let tasks: [(&str, Option<i32>); 7] = [
        ("low-a", Some(1)),
        ("high-a", Some(5)),
        ("low-b", Some(1)),
        ("high-b", Some(5)),
        ("mid", Some(3)),
        ("default", None),
        ("negative", Some(-1)),
    ];
    for (name, priority) in tasks {
        let order = order.clone();
        let task = pool.task(async move { order.push(name) }).name(name);
        let task = match priority {
            Some(p) => task.priority(p),
            None => task,
        };
        if task.spawn().await.is_err() {
            panic!("spawn refused");
        }
    }
    settle().await;
    assert!(order.snapshot().is_empty(), "nothing starts while paused");

    pool.resume();
    drain_ok(&pool).await;
    assert_eq!(
        order.snapshot(),
        ["high-a", "high-b", "mid", "low-a", "low-b", "default", "negative"]
    );
}

#[tokio::test(start_paused = true)]
async fn default_priority_applies_to_tasks_that_set_none() {
    let pool = build(TaskPool::builder().max_concurrency(1).default_priority(10));
    let order = Log::default();
    pool.pause();
    for (name, priority) in [("five", Some(5)), ("default", None), ("twenty", Some(20))] {
        let order = order.clone();
        let task = pool.task(async move { order.push(name) });
        let task = match priority {
            Some(p) => task.priority(p),
            None => task,
        };
        if task.spawn().await.is_err() {
            panic!("spawn refused");
        }
    }
    // A plain spawn() also gets the pool default (FIFO after the earlier priority-10 task).
    let plain = order.clone();
    spawn(&pool, async move { plain.push("plain") }).await;

    pool.resume();
    drain_ok(&pool).await;
    assert_eq!(order.snapshot(), ["twenty", "default", "plain", "five"]);
}

// ---- pause / resume ----

#[tokio::test(start_paused = true)]
async fn pause_holds_queued_tasks_and_resume_releases_them() {
    let pool = pool(2);
    let ran = Arc::new(AtomicUsize::new(0));
    assert!(!pool.is_paused());
    pool.pause();
    assert!(pool.is_paused());
    assert!(pool.stats().paused);

    for _ in 0..3 {
        let ran = Arc::clone(&ran);
        spawn(&pool, async move {
            ran.fetch_add(1, Ordering::SeqCst);
        })
        .await;
    }
    // Let a whole virtual second pass: still nothing may start.
    sleep(Duration::from_secs(1)).await;
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(pool.stats().queued, 3);
    assert_eq!(pool.stats().running, 0);

    pool.resume();
    assert!(!pool.is_paused());
    let report = drain_ok(&pool).await;
    assert_eq!(ran.load(Ordering::SeqCst), 3);
    assert_eq!(report.completed, 3);
}

#[tokio::test(start_paused = true)]
async fn pause_does_not_stop_running_tasks() {
    let pool = pool(1);
    let start = Instant::now();
    let running = spawn(&pool, async { sleep(ms(30)).await }).await;
    settle().await;
    pool.pause();
    let queued = spawn(&pool, async {}).await;

    assert!(join(running).await.is_ok());
    assert_eq!(ms_since(start), 30, "the running task was not held up");
    sleep(ms(100)).await;
    assert!(!queued.is_finished(), "the queued one waits for resume()");
    pool.resume();
    assert!(join(queued).await.is_ok());
}

// ---- sharing ----

#[tokio::test(start_paused = true)]
async fn clones_share_the_same_pool() {
    let pool = pool(1);
    let other = pool.clone();
    let live = Live::default();

    // Tasks spawned through either clone share one concurrency limit.
    for p in [&pool, &other, &pool, &other] {
        let live = live.clone();
        spawn(p, async move {
            let _inside = live.enter();
            sleep(ms(5)).await;
        })
        .await;
    }
    // A drain through one clone waits for tasks spawned through the other.
    let report = drain_ok(&other).await;
    assert_eq!(report.completed, 4);
    assert_eq!(live.max(), 1);

    other
        .set_max_concurrency(3)
        .unwrap_or_else(|_| panic!("3 is valid"));
    assert_eq!(pool.max_concurrency(), 3);
    other.pause();
    assert!(pool.is_paused());
    other.resume();
    assert_eq!(pool.stats().completed, 4);

    support::close_ok(&other).await;
    assert!(pool.is_closed());
}

static POOL: LazyLock<TaskPool> =
    LazyLock::new(|| build(TaskPool::builder().name("global").max_concurrency(2)));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_lazylock_pool_serves_many_tasks() {
    // Two independent tokio tasks use the process-wide pool, like two request handlers would.
    let users: Vec<_> = (0..2_u32)
        .map(|i| {
            tokio::spawn(async move {
                let handle = spawn(&POOL, async move { Ok::<u32, String>(i * 10) }).await;
                join(handle).await.ok()
            })
        })
        .collect();
    let mut got = Vec::new();
    for user in users {
        got.push(user.await.expect("user task"));
    }
    assert_eq!(got, [Some(0), Some(10)]);
    let report = drain_ok(&POOL).await;
    assert_eq!(report.completed, 2);
    assert_eq!(POOL.stats().completed, 2);
}

// ---- handles and ids ----

#[tokio::test(start_paused = true)]
async fn handles_report_ids_and_finish_state() {
    let pool = pool(2);
    let a = spawn(&pool, nap(ms(10))).await;
    let b = spawn(&pool, nap(ms(20))).await;
    let (id_a, id_b) = (a.id(), b.id());
    assert_ne!(id_a, id_b, "every task has its own id");
    assert_eq!(id_a.to_string(), format!("#{}", id_a.as_u64()));
    assert!(!a.is_finished());

    sleep(ms(15)).await;
    assert!(a.is_finished());
    assert!(!b.is_finished());
    assert!(join(a).await.is_ok());
    assert!(join(b).await.is_ok());
}

#[tokio::test]
async fn drain_report_is_clean_only_without_failures() {
    let pool = pool(2);
    detach(spawn(&pool, async { Ok::<(), String>(()) }).await);
    let report = drain_ok(&pool).await;
    assert!(report.is_clean());
    assert_eq!(report.completed, 1);

    detach(spawn(&pool, async { Err::<(), String>("nope".into()) }).await);
    let report = drain_ok(&pool).await;
    assert!(!report.is_clean());
    assert_eq!(report.failed, 1);
}

// ---- errors ----

#[test]
fn errors_are_std_errors_with_lowercase_messages() {
    fn assert_error<E: std::error::Error + Send + 'static>(e: &E) -> String {
        e.to_string()
    }
    type Fut = std::future::Ready<()>;
    let messages = [
        assert_error(&BuildError::ZeroConcurrency),
        assert_error(&BuildError::ZeroQueueCapacity),
        assert_error(&BuildError::InvalidRateLimit(
            "burst must be at least 1".into(),
        )),
        assert_error(&DrainError::RuntimeExceeded {
            limit: Duration::from_secs(1),
            cancelled_queued: 2,
            aborted_running: 1,
            report: DrainReport::default(),
        }),
        assert_error(&DrainError::Stalled {
            stall_timeout: Duration::from_secs(1),
            oldest: None,
        }),
        assert_error(&SpawnError::Closed(std::future::ready(()))),
        assert_error(&TrySpawnError::<Fut>::Full(std::future::ready(()))),
        assert_error(&TrySpawnError::<Fut>::Closed(std::future::ready(()))),
        assert_error(&TaskError::Failed("disk full".to_owned())),
        assert_error(&TaskError::<String>::TimedOut),
    ];
    // STYLE.md: messages are lowercase with no trailing period.
    for message in &messages {
        let first = message.chars().next().expect("non-empty message");
        assert!(!first.is_uppercase(), "{message:?} starts upper-case");
        assert!(!message.ends_with('.'), "{message:?} ends with a period");
    }
    // The inner error is in the message.
    assert!(messages[8].contains("disk full"), "{}", messages[8]);
    assert!(
        messages[3].contains('2') && messages[3].contains('1'),
        "{}",
        messages[3]
    );
}

// ---- Send / Sync ----

fn assert_send<T: Send>(_: &T) {}
fn assert_send_sync_type<T: Send + Sync>() {}
fn assert_send_type<T: Send>() {}
fn assert_unpin_type<T: Unpin>() {}

#[test]
fn public_types_are_send_and_sync() {
    assert_send_sync_type::<TaskPool>();
    assert_send_sync_type::<TaskPoolBuilder>();
    assert_send_sync_type::<TaskHandle<()>>();
    assert_send_sync_type::<TaskHandle<Result<Vec<u8>, String>>>();
    assert_send_sync_type::<TaskId>();
    assert_send_sync_type::<DrainReport>();
    assert_send_sync_type::<TaskFailure>();
    assert_send_sync_type::<PoolStats>();
    assert_send_sync_type::<RunningTask>();
    assert_send_sync_type::<PoolEvent>();
    assert_send_sync_type::<RetryPolicy>();
    assert_send_sync_type::<RateLimit>();
    assert_send_sync_type::<BuildError>();
    assert_send_sync_type::<DrainError>();
    // A panic payload is `Box<dyn Any + Send>`: Send, deliberately not Sync.
    assert_send_type::<PanicPayload>();
    assert_send_type::<TaskError<String>>();
    assert_send_type::<SpawnError<std::future::Ready<()>>>();
    assert_send_type::<TrySpawnError<std::future::Ready<()>>>();
    assert_send_type::<EventStream>();
    assert_unpin_type::<TaskHandle<()>>();
    assert_unpin_type::<EventStream>();
}

#[tokio::test]
async fn builders_handles_and_pool_futures_are_send() {
    let pool = pool(1);
    let task = pool.task(async {}).name("x").priority(1);
    assert_send(&task);
    let spawning = task.spawn();
    assert_send(&spawning);
    let task_fn = pool
        .task_fn(|| async { Ok::<(), String>(()) })
        .retry(RetryPolicy::new(2));
    assert_send(&task_fn);
    assert_send(&task_fn.spawn());

    assert_send(&pool.spawn(async {}));
    assert_send(&pool.drain());
    assert_send(&pool.close());
    assert_send(&pool.shutdown(Duration::from_secs(1)));

    let handle = spawn(&pool, async {}).await;
    assert_send(&handle);
    assert!(join(handle).await.is_ok());
    // None of the futures above was polled: the pool is still open, and dropping the unpolled
    // `spawning` future queues nothing (only `handle`'s task ever ran).
    drop(spawning);
    assert!(!pool.is_closed());
    assert_eq!(drain_ok(&pool).await.completed, 1);
}

#[tokio::test]
async fn drain_error_and_task_error_values_move_across_tasks() {
    // A JoinHandle output must be Send: a drain result and a task result can be returned from
    // a spawned tokio task.
    let pool = pool(1);
    let p = pool.clone();
    let drained: Result<DrainReport, DrainError> = tokio::spawn(async move { p.drain().await })
        .await
        .expect("drainer task");
    assert!(drained.is_ok());

    let handle = spawn(&pool, async { Err::<(), String>("e".into()) }).await;
    let res = tokio::spawn(handle).await.expect("awaiting task");
    assert!(matches!(res, Err(TaskError::Failed(ref e)) if e == "e"));
}
