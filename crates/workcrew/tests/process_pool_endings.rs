//! Every way a call can end, against real workers (the Python test worker, and the Rust demo
//! worker where a fast start matters): the cells of the table of call states and endings in
//! `src/process/state.rs` that no other test file covers, and the defects of issue 9 they
//! exposed (each test says which item).

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use workcrew::process::{CallError, CallOptions, ExitReason, ProcessPool, ProcessPoolBuilder};

mod support;
use support::processes::{all_gone, python, support_file, until, within};

/// A last resort against a hung test.
const BOUND: Duration = Duration::from_secs(20);

fn worker() -> ProcessPoolBuilder {
    ProcessPool::builder(python()).arg(support_file("test_worker.py"))
}

async fn build(builder: ProcessPoolBuilder) -> ProcessPool {
    within("build", BOUND, builder.build())
        .await
        .expect("the test worker starts")
}

async fn seen(pool: &ProcessPool) -> Value {
    within("seen", BOUND, pool.call("seen", &()))
        .await
        .expect("seen")
}

fn received(seen: &Value, args: &Value) -> usize {
    seen["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| &c["args"] == args)
        .count()
}

/// Item 1: four calls given up by dropping their futures fill a worker of concurrency 4 that
/// ignores CANCEL; the worker is killed after the cancel grace and replaced, so a fifth call is
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_calls_on_a_worker_that_ignores_cancel_get_it_replaced_and_a_fifth_call_runs() {
    let pool = build(
        worker()
            .workers(1)
            .env("TEST_CONCURRENCY", "4")
            .cancel_grace(Duration::from_millis(300)),
    )
    .await;
    let first = pool.worker_pids();
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.call::<_, String>("hang", &60).await })
        })
        .collect();
    until("four calls are out", BOUND, || {
        let s = pool.stats();
        s.busy == 1 && s.queued == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for call in &calls {
        call.abort();
    }
    for call in calls {
        assert!(call.await.unwrap_err().is_cancelled());
    }
    let fifth: String = within("the fifth call", BOUND, pool.call("echo", "fifth"))
        .await
        .expect("the fifth call is served");
    assert_eq!(fifth, "fifth");
    assert!(
        all_gone(&first).await,
        "the worker that ignored CANCEL is gone"
    );
    let last = pool.worker_pids();
    within("stop", BOUND, pool.stop()).await;
    assert!(all_gone(&last).await);
}

/// Item 1, by token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_cancelled_by_token_on_a_worker_that_ignores_cancel_get_it_replaced() {
    let pool = build(
        worker()
            .workers(1)
            .env("TEST_CONCURRENCY", "4")
            .cancel_grace(Duration::from_millis(300)),
    )
    .await;
    let first = pool.worker_pids();
    let token = CancellationToken::new();
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            let options = CallOptions::new().token(token.clone());
            tokio::spawn(async move { pool.call_with::<_, String>("hang", &60, &options).await })
        })
        .collect();
    until("four calls are out", BOUND, || {
        let s = pool.stats();
        s.busy == 1 && s.queued == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    token.cancel();
    for call in calls {
        assert!(call.await.unwrap().unwrap_err().is_cancelled());
    }
    let fifth: String = within("the fifth call", BOUND, pool.call("echo", "fifth"))
        .await
        .expect("the fifth call is served");
    assert_eq!(fifth, "fifth");
    assert!(
        all_gone(&first).await,
        "the worker that ignored CANCEL is gone"
    );
    let last = pool.worker_pids();
    within("stop", BOUND, pool.stop()).await;
    assert!(all_gone(&last).await);
}

/// Item 3: `stop()` with a call that is never answered and no call timeout returns within its
/// bound (drain, SHUTDOWN, stop signal, each one stop timeout); the call settles as lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_returns_in_bounded_time_with_a_call_that_is_never_answered() {
    let pool = build(worker().workers(1).stop_timeout(Duration::from_millis(300))).await;
    let first = pool.worker_pids();
    let call = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.call::<_, String>("hang", &60).await })
    };
    until("the call runs", BOUND, || pool.stats().busy == 1).await;
    let started = Instant::now();
    within("stop", Duration::from_secs(10), pool.stop()).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let err = within("the call", BOUND, call).await.unwrap().unwrap_err();
    assert!(err.is_worker_lost(), "{err:?}");
    assert!(all_gone(&first).await);
}

/// Item 4: a call whose token is already cancelled fails `Cancelled` and is never routed: it
/// never reaches a worker, nor counts as a call sent to one (here a worker is recycled after 10
/// calls, which 50 such calls must not bring about).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_with_an_already_cancelled_token_is_never_routed() {
    let pool = build(worker().workers(1).recycle_after_calls(10)).await;
    let first = pool.worker_pids();
    let token = CancellationToken::new();
    token.cancel();
    let options = CallOptions::new().token(token);
    for i in 0..25 {
        let r = pool
            .call_with::<_, Value>("echo", &json!(["pre-cancelled", i]), &options)
            .await;
        assert!(matches!(r, Err(CallError::Cancelled { .. })), "{r:?}");
    }
    let at_once = (25..50).map(|i| {
        let pool = pool.clone();
        let options = options.clone();
        tokio::spawn(async move {
            pool.call_with::<_, Value>("echo", &json!(["pre-cancelled", i]), &options)
                .await
        })
    });
    for r in futures::future::join_all(at_once).await {
        let r = r.unwrap();
        assert!(matches!(r, Err(CallError::Cancelled { .. })), "{r:?}");
    }
    let s = seen(&pool).await;
    let reached: usize = (0..50)
        .map(|i| received(&s, &json!(["pre-cancelled", i])))
        .sum();
    let now = pool.worker_pids();
    within("stop", BOUND, pool.stop()).await;
    assert!(all_gone(&first).await && all_gone(&now).await);
    assert_eq!(reached, 0, "calls with a cancelled token reached a worker");
    assert_eq!(now, first, "calls never sent counted towards recycling");
}

/// Item 5: when a call fails with `WorkerLost`, its worker is already out of `worker_pids()`
/// and the stats. (The old order failed this about one round in three: the calls settled
/// before the worker left the list.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_worker_is_out_of_the_pool_when_its_calls_fail() {
    let pool = build(
        ProcessPool::builder(env!("CARGO_BIN_EXE_workcrew-demo-worker"))
            .workers(1)
            .restart_budget(100, Duration::from_secs(60)),
    )
    .await;
    let mut seen = Vec::new();
    for round in 0..15 {
        let first = pool.worker_pids();
        seen.extend(&first);
        // Two calls written to the worker (not just routed: those would go to the
        // replacement), then one that kills it.
        let held: Vec<_> = (0..2)
            .map(|_| tokio::spawn(pool.call_owned::<_, u64>("sleep", 10_000u64)))
            .collect();
        until("two calls run", BOUND, || pool.stats().in_flight == 2).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let crashed = within("the crash", BOUND, pool.call::<_, ()>("crash", &4)).await;
        assert!(
            crashed.as_ref().is_err_and(CallError::is_worker_lost),
            "{crashed:?}"
        );
        for h in held {
            let r = within("a held call", BOUND, h).await.unwrap();
            assert!(r.as_ref().is_err_and(CallError::is_worker_lost), "{r:?}");
        }
        let (pids, stats) = (pool.worker_pids(), pool.stats());
        assert!(
            !pids.contains(&first[0]),
            "round {round}: the dead worker is still listed: {pids:?}"
        );
        assert_eq!(stats.busy, 0, "round {round}: {stats:?}");
        assert_eq!(stats.crashed, round + 1, "round {round}: {stats:?}");
        support::processes::replacement(&pool, &first).await;
    }
    seen.extend(pool.worker_pids());
    within("stop", BOUND, pool.stop()).await;
    assert!(all_gone(&seen).await);
}

/// Item 5: `restarts` counts replacements after a death only: growth is not a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growth_is_not_counted_as_a_restart() {
    let pool = build(worker().min(1).max(2).env("TEST_CONCURRENCY", "1")).await;
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.call::<_, String>("sleep", &0.5).await })
        })
        .collect();
    for c in calls {
        assert_eq!(within("a call", BOUND, c).await.unwrap().unwrap(), "slept");
    }
    let stats = pool.stats();
    let pids = pool.worker_pids();
    within("stop", BOUND, pool.stop()).await;
    assert!(all_gone(&pids).await);
    assert_eq!(stats.restarts, 0, "{stats:?}");
    assert_eq!(stats.growth_starts, 1, "{stats:?}");
}

/// Item 5: a call cancelled by its token is not counted as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_is_not_counted_as_failed() {
    let pool = build(worker().workers(1)).await;
    let token = CancellationToken::new();
    let call = {
        let pool = pool.clone();
        let options = CallOptions::new().token(token.clone());
        tokio::spawn(async move { pool.call_with::<_, String>("sleep", &30, &options).await })
    };
    until("the call runs", BOUND, || pool.stats().busy == 1).await;
    token.cancel();
    assert!(call.await.unwrap().unwrap_err().is_cancelled());
    let stats = pool.stats();
    let pids = pool.worker_pids();
    within("stop", BOUND, pool.stop()).await;
    assert!(all_gone(&pids).await);
    assert_eq!(stats.failed, 0, "{stats:?}");
}

// ---------------------------------------------------------------------------------------------
// Stop, stop_with, stop_now
// ---------------------------------------------------------------------------------------------

fn demo() -> ProcessPoolBuilder {
    ProcessPool::builder(env!("CARGO_BIN_EXE_workcrew-demo-worker"))
}

/// A running call (spawned) and a queued one behind it, on a worker of concurrency 1.
async fn running_and_queued<A>(
    pool: &ProcessPool,
    running: &'static str,
    args: A,
) -> (
    tokio::task::JoinHandle<Result<u64, CallError>>,
    tokio::task::JoinHandle<Result<u64, CallError>>,
)
where
    A: serde::Serialize + Send + Sync + 'static,
{
    let a = tokio::spawn(pool.call_owned::<_, u64>(running, args));
    until("the call runs", BOUND, || pool.stats().busy == 1).await;
    let b = tokio::spawn(pool.call_owned::<_, u64>("inc", 1u64));
    until("the call queues", BOUND, || pool.stats().queued == 1).await;
    (a, b)
}

fn lost_to_stop(r: Result<u64, CallError>) {
    match r {
        Err(CallError::WorkerLost { reason, .. }) => assert_eq!(reason, ExitReason::Stopped),
        other => panic!("expected WorkerLost (stopped), got {other:?}"),
    }
}

/// `stop_with(grace)`: after the drain (one grace) the queued call fails `Stopped`; the running
/// call that never ends holds its worker through `SHUTDOWN` and the stop signal, and fails as
/// lost (stopped) when its worker is killed; every step took one grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_with_a_grace_fails_the_queued_call_and_loses_the_call_that_never_ends() {
    let pool = build(demo().workers(1).env("WORKCREW_DEMO_CONCURRENCY", "1")).await;
    let first = pool.worker_pids();
    let (running, queued) = running_and_queued(&pool, "hang", ()).await;
    let started = Instant::now();
    within(
        "stop_with",
        BOUND,
        pool.stop_with(Duration::from_millis(300)),
    )
    .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(600),
        "drain and SHUTDOWN: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    let queued = within("the queued call", BOUND, queued).await.unwrap();
    assert!(matches!(queued, Err(CallError::Stopped)), "{queued:?}");
    lost_to_stop(within("the running call", BOUND, running).await.unwrap());
    assert!(all_gone(&first).await);
}

/// `stop_now`: the queued call fails `Stopped` and the worker is killed at once, failing its
/// call as lost (stopped), long before that call (60 s) could end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_now_fails_queued_calls_and_kills_the_workers_at_once() {
    let pool = build(demo().workers(1).env("WORKCREW_DEMO_CONCURRENCY", "1")).await;
    let first = pool.worker_pids();
    let (running, queued) = running_and_queued(&pool, "sleep", 60_000u64).await;
    let started = Instant::now();
    within("stop_now", BOUND, pool.stop_now()).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let queued = within("the queued call", BOUND, queued).await.unwrap();
    assert!(matches!(queued, Err(CallError::Stopped)), "{queued:?}");
    lost_to_stop(within("the running call", BOUND, running).await.unwrap());
    assert!(all_gone(&first).await);
    assert!(matches!(
        pool.call::<_, u64>("inc", &1u64).await,
        Err(CallError::Stopped)
    ));
}

/// `stop_now` during a `stop` with a long stop timeout shortens it: both return soon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_now_shortens_a_stop_under_way() {
    let pool = build(demo().workers(1).stop_timeout(Duration::from_secs(60))).await;
    let first = pool.worker_pids();
    let running = tokio::spawn(pool.call_owned::<_, u64>("hang", ()));
    until("the call runs", BOUND, || pool.stats().busy == 1).await;
    let stop = tokio::spawn({
        let pool = pool.clone();
        async move { pool.stop().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    within("stop_now", BOUND, pool.stop_now()).await;
    within("the first stop", BOUND, stop).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    lost_to_stop(within("the running call", BOUND, running).await.unwrap());
    assert!(all_gone(&first).await);
}

// ---------------------------------------------------------------------------------------------
// Answered, not yet read by the caller
// ---------------------------------------------------------------------------------------------

/// Submits a call by polling its future once, then waits until the worker has answered it
/// (the answer waits in the call's receiver: the future is not polled again).
async fn answered_unread<'a>(
    pool: &'a ProcessPool,
    options: &'a CallOptions,
) -> std::pin::Pin<Box<impl std::future::Future<Output = Result<u64, CallError>> + 'a>> {
    let mut call = Box::pin(pool.call_with::<_, u64>("sleep", &0u64, options));
    assert!(futures::poll!(&mut call).is_pending());
    until("the worker answers", BOUND, || {
        let s = pool.stats();
        s.in_flight == 0 && s.latency.count >= 1
    })
    .await;
    // The answer is handed over in the same turn that counts it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    call
}

/// An answer that arrived stands, whatever happens before its caller reads it: its timeout
/// passing, its token firing, its worker dying, the pool stopping at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_not_yet_read_stands_past_its_timeout_token_worker_s_death_and_stop_now() {
    let pool = build(demo().workers(1)).await;
    let mut pids = pool.worker_pids();

    let options = CallOptions::new().timeout(Duration::from_millis(300));
    let call = answered_unread(&pool, &options).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // past its timeout
    assert_eq!(within("read", BOUND, call).await.unwrap(), 0);

    let token = CancellationToken::new();
    let options = CallOptions::new().token(token.clone());
    let call = answered_unread(&pool, &options).await;
    token.cancel();
    assert_eq!(within("read", BOUND, call).await.unwrap(), 0);

    let plain = CallOptions::new();
    let call = answered_unread(&pool, &plain).await;
    let worker = pool.worker_pids()[0];
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &worker.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(all_gone(&[worker]).await);
    assert_eq!(within("read", BOUND, call).await.unwrap(), 0);

    let replaced = support::processes::replacement(&pool, &[worker]).await;
    pids.extend(&replaced);
    let call = answered_unread(&pool, &plain).await;
    within("stop_now", BOUND, pool.stop_now()).await;
    assert_eq!(within("read", BOUND, call).await.unwrap(), 0);
    assert!(all_gone(&pids).await);
}

/// Dropping a call whose answer arrived but was not read cancels nothing: its worker is not
/// killed (it holds no such call), and serves on past the cancel grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_an_answered_call_before_reading_it_kills_nothing() {
    let pool = build(demo().workers(1).cancel_grace(Duration::from_millis(200))).await;
    let first = pool.worker_pids();
    let plain = CallOptions::new();
    let call = answered_unread(&pool, &plain).await;
    drop(call);
    tokio::time::sleep(Duration::from_millis(500)).await; // past the cancel grace
    let pid: u32 = pool.call("pid", &0u64).await.unwrap();
    assert_eq!(vec![pid], first);
    assert_eq!(pool.stats().crashed, 0);
    within("stop", BOUND, pool.stop()).await;
    assert!(all_gone(&first).await);
}

// ---------------------------------------------------------------------------------------------
// Recycling with calls queued
// ---------------------------------------------------------------------------------------------

/// A worker recycled after two calls finishes the calls it was given (the second one marked it
/// retiring when it was routed), and the calls queued meanwhile run on its replacements: none
/// fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_calls_go_to_the_replacements_of_recycled_workers() {
    let pool = build(
        demo()
            .workers(1)
            .env("WORKCREW_DEMO_CONCURRENCY", "1")
            .recycle_after_calls(2),
    )
    .await;
    let mut pids = pool.worker_pids();
    let calls: Vec<_> = (0..6)
        .map(|_| tokio::spawn(pool.call_owned::<_, u32>("pid", 50u64)))
        .collect();
    let mut served = Vec::new();
    for c in calls {
        served.push(
            within("a call", BOUND, c)
                .await
                .unwrap()
                .expect("no call fails"),
        );
    }
    let mut distinct = served.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "two calls per worker: {served:?}");
    for p in &distinct {
        assert_eq!(served.iter().filter(|s| *s == p).count(), 2, "{served:?}");
    }
    pids.extend(distinct);
    pids.extend(pool.worker_pids());
    // Three workers served two calls each and were replaced: the third by a fourth.
    let stats = pool.stats();
    assert_eq!(
        (
            stats.recycle_starts,
            stats.restarts,
            stats.growth_starts,
            stats.crashed
        ),
        (3, 0, 0, 0),
        "{stats:?}"
    );
    within("stop", BOUND, pool.stop()).await;
    assert!(all_gone(&pids).await);
}
