//! The process pool's behaviours, one test each, against real worker processes: the Python
//! worker in `tests/support/test_worker.py` (built on the reference module
//! `workers/python/workcrew_worker.py`), which has one function per behaviour or fault. The seed
//! bugs listed in the design notes (seeds "invoke-parallel" and "worker-pool") each have a regression test
//! here: a burst on one worker, fill starting from the last slot, uneven round-robin, no queue,
//! no per-worker limit, cancel tokens that never fire, retries the reverse of their docs, the
//! idle timer reaping a busy worker, idle checks on a 1 s tick, calls in flight never settling
//! on stop or recycle, no crash backoff, isolated pools leaking a process.
//!
//! # Time
//!
//! These tests run on tokio's real clock. Real processes cannot run on the paused clock: the
//! pool's ready timeout (and every other timer) would fire at once while a worker starts. So
//! durations are real and small (tens to hundreds of milliseconds), and every wait is either an
//! awaited event (the pool's `events()` stream, recorded by [`Events`]), an awaited call, or a
//! bounded polling loop on the pool's state ([`until`], [`all_gone`]); upper bounds are
//! generous so a loaded machine does not fail them. No sleep stands in for synchronisation.
//!
//! # Processes
//!
//! Every test ends by checking `/proc` that no worker process it started (the pool's first
//! workers and every `Spawned` event) still exists, zombies included.
//!
//! The interpreter is resolved once to its real executable (`sys.executable`) rather than run
//! through `python3` on `PATH`: a version-manager shim is a shell script that needs `PATH` (which
//! `env_clear` removes) and adds a slow start to every worker.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use futures::future::join_all;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use workcrew::process::{
    CallError, CallOptions, ExitReason, ProcessEvent, ProcessExit, ProcessPool, ProcessPoolBuilder,
    RecycleReason, Routing, StartError, WorkerCommand,
};

mod support;
use support::processes::{all_gone, exists};

/// A last resort against a hung test: far above any duration a test uses, so it never decides
/// a result on a healthy pool.
const BOUND: Duration = Duration::from_secs(20);

const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The Python interpreter's real executable.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 must be installed to run the test worker");
        assert!(out.status.success(), "python3 failed: {out:?}");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

fn test_worker() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/test_worker.py")
}

/// A pool builder for the test worker.
fn worker() -> ProcessPoolBuilder {
    ProcessPool::builder(python()).arg(test_worker())
}

/// The test worker's command, for `reload`.
fn command() -> WorkerCommand {
    WorkerCommand::new(python()).arg(test_worker())
}

/// A fresh, empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "workcrew-behaviour-{}-{nanos}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls `cond` (bounded by [`BOUND`]) until it holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < BOUND, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Awaits `fut`, failing the test if it takes longer than `within`.
async fn within<T>(what: &str, within: Duration, fut: impl Future<Output = T>) -> T {
    match timeout(within, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {within:?}"),
    }
}

/// Runs one call in its own task; returns its result and when it finished.
fn spawn_call<R>(
    pool: &ProcessPool,
    function: &'static str,
    args: Value,
) -> JoinHandle<(Result<R, CallError>, Instant)>
where
    R: DeserializeOwned + Send + 'static,
{
    let pool = pool.clone();
    tokio::spawn(async move {
        let r = pool.call::<Value, R>(function, &args).await;
        (r, Instant::now())
    })
}

/// Joins a call task, failing the test if it hangs.
async fn settle<R>(
    call: JoinHandle<(Result<R, CallError>, Instant)>,
) -> (Result<R, CallError>, Instant) {
    within("a call", BOUND, call)
        .await
        .expect("call task panicked")
}

/// What the worker holding the pool's calls has recorded: calls it received and calls it saw
/// cancelled (`seen` in the test worker).
async fn seen(pool: &ProcessPool) -> Value {
    pool.call("seen", &()).await.expect("seen")
}

/// Ids of the calls the worker received with these arguments.
fn received(seen: &Value, args: &Value) -> Vec<u64> {
    seen["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| &c["args"] == args)
        .map(|c| c["id"].as_u64().unwrap())
        .collect()
}

fn cancelled_on_worker(seen: &Value) -> Vec<u64> {
    seen["cancelled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect()
}

/// Everything a pool's event stream delivered so far, with arrival times.
#[derive(Clone, Debug, Default)]
struct Recorded {
    events: Vec<(Instant, ProcessEvent)>,
    /// The stream finished.
    ended: bool,
}

impl Recorded {
    /// One line per event, times relative to the first, for failure messages.
    fn dump(&self) -> String {
        let t0 = self.events.first().map(|(at, _)| *at);
        let mut out = String::new();
        for (at, e) in &self.events {
            let ms = t0.map_or(0, |t0| at.duration_since(t0).as_millis());
            let line = match e {
                ProcessEvent::Ready { worker, pid, .. } => {
                    format!("Ready {{ worker: {worker}, pid: {pid} }}")
                }
                other => format!("{other:?}"),
            };
            out.push_str(&format!("\n  +{ms:>5} ms  {line}"));
        }
        out
    }

    fn count(&self, f: impl Fn(&ProcessEvent) -> bool) -> usize {
        self.events.iter().filter(|(_, e)| f(e)).count()
    }

    fn position(&self, f: impl Fn(&ProcessEvent) -> bool) -> Option<usize> {
        self.events.iter().position(|(_, e)| f(e))
    }

    fn spawned(&self) -> Vec<u32> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                ProcessEvent::Spawned { pid, .. } => Some(*pid),
                _ => None,
            })
            .collect()
    }

    fn recycled(&self, reason: RecycleReason) -> Vec<(Instant, u32)> {
        self.events
            .iter()
            .filter_map(|(at, e)| match e {
                ProcessEvent::Recycled { pid, reason: r, .. } if *r == reason => Some((*at, *pid)),
                _ => None,
            })
            .collect()
    }
}

/// Records a pool's events in a task of its own, so a test can await a condition on them.
struct Events {
    rx: watch::Receiver<Recorded>,
}

impl Events {
    fn record(pool: &ProcessPool) -> Self {
        let mut stream = pool.events();
        let (tx, rx) = watch::channel(Recorded::default());
        tokio::spawn(async move {
            while let Some(event) = stream.next().await {
                let at = Instant::now();
                tx.send_modify(|r| r.events.push((at, event)));
            }
            tx.send_modify(|r| r.ended = true);
        });
        Events { rx }
    }

    fn now(&self) -> Recorded {
        self.rx.borrow().clone()
    }

    /// Waits until `cond` holds for the events so far; fails the test after `limit`.
    async fn wait(
        &self,
        what: &str,
        limit: Duration,
        mut cond: impl FnMut(&Recorded) -> bool,
    ) -> Recorded {
        let mut rx = self.rx.clone();
        let found = timeout(limit, async {
            rx.wait_for(|r| cond(r)).await.map(|r| r.clone())
        })
        .await;
        match found {
            Ok(Ok(r)) => r,
            _ => panic!(
                "{what}: not seen within {limit:?}; events:{}",
                self.rx.borrow().dump()
            ),
        }
    }
}

/// A pool under test, its event recording, and its first workers.
struct Run {
    pool: ProcessPool,
    events: Events,
    first: Vec<u32>,
}

async fn run(builder: ProcessPoolBuilder) -> Run {
    let pool = within("build", BOUND, builder.build())
        .await
        .expect("the test worker starts");
    let events = Events::record(&pool);
    let first = pool.worker_pids();
    Run {
        pool,
        events,
        first,
    }
}

impl Run {
    /// Every worker process this pool ever had (that the test can know of).
    fn pids(&self) -> Vec<u32> {
        let mut pids = self.first.clone();
        pids.extend(self.events.now().spawned());
        pids.extend(self.pool.worker_pids());
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Stops the pool and checks that its event stream ended with `Stopped` and that no worker
    /// process is left.
    async fn finish(self) -> Recorded {
        within("stop", BOUND, self.pool.stop()).await;
        let recorded = self
            .events
            .wait("the event stream's end", BOUND, |r| r.ended)
            .await;
        assert_eq!(
            recorded.events.last().map(|(_, e)| e),
            Some(&ProcessEvent::Stopped),
            "the last event is Stopped"
        );
        let pids = self.pids();
        assert!(
            all_gone(&pids).await,
            "worker processes outlived the pool: {:?}",
            pids.iter().filter(|&&p| exists(p)).collect::<Vec<_>>()
        );
        recorded
    }
}

fn counts(pids: &[u32]) -> HashMap<u32, usize> {
    let mut m = HashMap::new();
    for &p in pids {
        *m.entry(p).or_insert(0) += 1;
    }
    m
}

// ---------------------------------------------------------------------------------------------
// Routing and capacity
// ---------------------------------------------------------------------------------------------

/// Seed bug "fill starting from the last slot": fill puts calls on the first workers in start
/// order, up to `full` each, and leaves the last one idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fill_routing_fills_workers_in_start_order_from_the_first() {
    let run = run(worker().workers(3).routing(Routing::Fill { full: 2 })).await;
    let order = run.pool.worker_pids();
    assert_eq!(order.len(), 3);
    // All four are routed (and counted in flight) before any answers: `join_all` polls them
    // in order, and each routes on its first poll.
    let served: Vec<u32> = join_all((0..4).map(|_| run.pool.call::<_, u32>("pid", &0.3)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        served,
        vec![order[0], order[0], order[1], order[1]],
        "workers in start order: {order:?}"
    );
    assert!(!served.contains(&order[2]), "the last worker stays idle");
    run.finish().await;
}

/// Seed bug "uneven round-robin": each call goes to the next worker in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_routing_gives_every_worker_the_same_share() {
    let run = run(worker().workers(3).routing(Routing::RoundRobin)).await;
    let order = run.pool.worker_pids();
    let served: Vec<u32> = join_all((0..6).map(|_| run.pool.call::<_, u32>("pid", &0.3)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let per_worker = counts(&served);
    for p in &order {
        assert_eq!(
            per_worker.get(p),
            Some(&2),
            "served {served:?}, workers {order:?}"
        );
    }
    assert_eq!(&served[..3], &order[..], "in turn, in start order");
    assert_eq!(&served[3..], &order[..], "and around again");
    run.finish().await;
}

/// Seed bug "a burst routed to one worker": random and power-of-two-choices routing spread a
/// burst over every worker (routing counts calls in flight at the moment of routing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_two_choices_routing_spread_a_burst_over_every_worker() {
    for routing in [Routing::Random, Routing::PowerOfTwoChoices] {
        let run = run(worker().workers(3).routing(routing)).await;
        let order = run.pool.worker_pids();
        let served: Vec<u32> = join_all((0..40).map(|_| run.pool.call::<_, u32>("pid", &0.1)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let per_worker = counts(&served);
        // 3 workers x concurrency 4: the first 12 calls of the burst fill every slot.
        for p in &order {
            assert!(
                per_worker.get(p).copied().unwrap_or(0) >= 4,
                "{routing:?}: worker {p} got {per_worker:?}"
            );
        }
        run.finish().await;
    }
}

/// Seed bug "no per-worker limit": `max_per_worker(1)` caps a worker that announced
/// concurrency 4 at one call at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_per_worker_caps_calls_below_the_announced_concurrency() {
    // Control: without the cap the worker does take four at once.
    let free = run(worker().workers(1)).await;
    let seen: Vec<u32> = join_all((0..4).map(|_| free.pool.call::<_, u32>("inflight", &0.2)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        seen.iter().max(),
        Some(&4),
        "the worker announces 4: {seen:?}"
    );
    free.finish().await;

    let capped = run(worker().workers(1).max_per_worker(1)).await;
    let seen: Vec<u32> = join_all((0..4).map(|_| capped.pool.call::<_, u32>("inflight", &0.05)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(seen, vec![1, 1, 1, 1], "the worker held one call at a time");
    capped.finish().await;
}

/// One worker of concurrency 1 and a queue of 1, both full: a call of 0.5 s running and one of
/// 0.1 s queued behind it (their handles, in that order).
async fn full_queue() -> (
    Run,
    JoinHandle<(Result<String, CallError>, Instant)>,
    JoinHandle<(Result<String, CallError>, Instant)>,
) {
    let run = run(worker()
        .workers(1)
        .env("TEST_CONCURRENCY", "1")
        .queue_capacity(1))
    .await;
    let pool = &run.pool;
    let running = spawn_call::<String>(pool, "sleep", json!(0.5));
    until("the first call runs", || pool.stats().busy == 1).await;
    let queued = spawn_call::<String>(pool, "sleep", json!(0.1));
    until("the second call queues", || pool.stats().queued == 1).await;
    (run, running, queued)
}

/// Seed bug "no queue": with the worker busy and the bounded queue full, `try_call` fails at
/// once with `QueueFull`, and `call` waits for room and then succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_fails_try_call_at_once_and_makes_call_wait_for_room() {
    let (run, running, queued) = full_queue().await;
    let pool = &run.pool;

    let err = within(
        "try_call on a full queue",
        Duration::from_secs(1),
        pool.try_call::<_, String>("echo", "no room"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CallError::QueueFull), "got {err:?}");

    let waiting = spawn_call::<String>(pool, "echo", json!("waited"));
    let (a, a_done) = settle(running).await;
    let (b, b_done) = settle(queued).await;
    let (c, c_done) = settle(waiting).await;
    assert_eq!(a.unwrap(), "slept");
    assert_eq!(b.unwrap(), "slept");
    assert_eq!(c.unwrap(), "waited");
    assert!(
        a_done <= b_done && b_done <= c_done,
        "the waiting call ran only once room freed"
    );
    let s = pool.stats();
    assert_eq!((s.queued, s.completed), (0, 3), "{s:?}");
    run.finish().await;
}

/// A call with a timeout that waits for room in a full queue: the deadline counts from its
/// start, so it fails with `TimedOut` while still waiting and never reaches the worker; the
/// calls ahead of it are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waiting_for_room_times_out_and_never_reaches_the_worker() {
    let (run, running, queued) = full_queue().await;
    let pool = &run.pool;

    let options = CallOptions::new().timeout(Duration::from_millis(100));
    let err = within(
        "a call waiting for room",
        BOUND,
        pool.call_with::<_, String>("echo", "too late", &options),
    )
    .await
    .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(settle(running).await.0.unwrap(), "slept");
    assert_eq!(settle(queued).await.0.unwrap(), "slept");
    let seen = seen(pool).await;
    assert!(
        received(&seen, &json!("too late")).is_empty(),
        "the timed-out call reached the worker: {seen}"
    );
    let s = pool.stats();
    assert_eq!((s.queued, s.in_flight, s.timed_out), (0, 0, 1), "{s:?}");
    run.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Elasticity and idle reaping
// ---------------------------------------------------------------------------------------------

/// The pool grows to `max` while calls wait, and idle workers above `min` are reaped again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_grows_the_pool_to_max_and_idle_workers_are_reaped_back_to_min() {
    let run = run(worker()
        .min(1)
        .max(3)
        .idle_timeout(Duration::from_millis(300))
        .env("TEST_CONCURRENCY", "1"))
    .await;
    let pool = &run.pool;
    assert_eq!(run.first.len(), 1);
    let served: Vec<u32> = within(
        "the burst",
        BOUND,
        join_all((0..6).map(|_| pool.call::<_, u32>("pid", &0.5))),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    let rec = run
        .events
        .wait("two workers added", BOUND, |r| {
            r.count(|e| matches!(e, ProcessEvent::Ready { pid, .. } if !run.first.contains(pid)))
                >= 2
        })
        .await;
    // The stream also starts with the first worker's `Ready` (live when it subscribed).
    assert_eq!(
        rec.count(|e| matches!(e, ProcessEvent::Ready { pid, .. } if !run.first.contains(pid))),
        2,
        "the pool grew from 1 to 3 workers, no further: {}",
        rec.dump()
    );
    assert!(
        counts(&served).len() >= 2,
        "the burst used the new workers: {served:?}"
    );

    // Back to `min`: two idle workers reaped, and their processes gone.
    let rec = run
        .events
        .wait("two idle workers reaped", Duration::from_secs(5), |r| {
            r.recycled(RecycleReason::Idle).len() >= 2
        })
        .await;
    let reaped: Vec<u32> = rec
        .recycled(RecycleReason::Idle)
        .iter()
        .map(|&(_, p)| p)
        .collect();
    until("the pool is back to one worker", || {
        pool.worker_pids().len() == 1
    })
    .await;
    assert!(all_gone(&reaped).await, "reaped workers exit");
    assert_eq!(pool.stats().workers, 1);
    run.finish().await;
}

/// With `min(0)` the build still starts one worker; idle, it is reaped to none; a later call
/// starts one again, which is reaped again once idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_with_min_zero_reaps_its_last_worker_and_starts_one_on_demand() {
    let run = run(worker()
        .min(0)
        .max(1)
        .idle_timeout(Duration::from_millis(200)))
    .await;
    let pool = &run.pool;
    assert_eq!(
        run.first.len(),
        1,
        "build starts one worker even with min 0"
    );
    run.events
        .wait("the first worker reaped", Duration::from_secs(5), |r| {
            r.recycled(RecycleReason::Idle)
                .iter()
                .any(|&(_, p)| p == run.first[0])
        })
        .await;
    until("no worker is left", || pool.worker_pids().is_empty()).await;
    assert!(all_gone(&run.first).await);

    // A call longer than the idle timeout: the worker must be reaped after it, not during it.
    let pid: u32 = within("a call on an empty pool", BOUND, pool.call("pid", &0.5))
        .await
        .expect("a call starts a worker");
    assert_ne!(pid, run.first[0]);
    run.events
        .wait(
            "the on-demand worker reaped once idle",
            Duration::from_secs(5),
            |r| {
                r.recycled(RecycleReason::Idle)
                    .iter()
                    .any(|&(_, p)| p == pid)
            },
        )
        .await;
    until("no worker is left again", || pool.worker_pids().is_empty()).await;
    run.finish().await;
}

/// Seed bug "idle timer killing a worker that has calls in flight": calls much longer than the
/// idle timeout, on a worker above `min`, finish normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_timer_never_reaps_a_worker_holding_a_call() {
    let run = run(worker()
        .min(1)
        .max(2)
        .idle_timeout(Duration::from_millis(100))
        .env("TEST_CONCURRENCY", "1"))
    .await;
    let pool = &run.pool;
    let served: Vec<u32> = within(
        "two long calls",
        BOUND,
        join_all((0..2).map(|_| pool.call::<_, u32>("pid", &1.0))),
    )
    .await
    .into_iter()
    .map(|r| r.expect("no call is lost to idle reaping"))
    .collect();
    assert_ne!(
        served[0], served[1],
        "the second call ran on the grown worker"
    );
    let rec = run.events.now();
    assert_eq!(
        rec.count(|e| matches!(e, ProcessEvent::Exited { lost_calls, .. } if *lost_calls > 0)),
        0,
        "{}",
        rec.dump()
    );
    assert_eq!(pool.stats().lost, 0);
    run.finish().await;
}

/// Seed bug "idle checks on a 1 s tick": a worker idle past the idle timeout is reaped promptly
/// after its last call, not at the next tick of a coarse timer (nor never).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_is_reaped_soon_after_its_idle_timeout() {
    let run = run(worker()
        .min(1)
        .max(2)
        .idle_timeout(Duration::from_millis(100))
        .env("TEST_CONCURRENCY", "1"))
    .await;
    let pool = &run.pool;
    // Calls long enough for a second worker to start while the first call runs, even on a
    // loaded machine (a Python start took over 1.5 s at a load of 11).
    let served: Vec<u32> = join_all((0..2).map(|_| pool.call::<_, u32>("pid", &5.0)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let done = Instant::now();
    assert_ne!(served[0], served[1], "the pool grew to two workers");
    let rec = run
        .events
        .wait("an idle worker reaped", Duration::from_secs(3), |r| {
            !r.recycled(RecycleReason::Idle).is_empty()
        })
        .await;
    let (at, _) = rec.recycled(RecycleReason::Idle)[0];
    assert!(
        at.duration_since(done) < Duration::from_millis(700),
        "reaped {:?} after the last call ended (idle timeout 100 ms)",
        at.duration_since(done)
    );
    run.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Cancellation
// ---------------------------------------------------------------------------------------------

/// Seed bug "cancel tokens that never fire": a running call whose token fires fails with
/// `Cancelled` at once, its worker is told (it records the CANCEL) and goes on serving; a
/// running call whose future is dropped is cancelled on the worker too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_call_is_cancelled_by_its_token_or_by_dropping_it_and_the_worker_stays() {
    let run = run(worker().workers(1)).await;
    let pool = &run.pool;
    let token = CancellationToken::new();
    let call = {
        let pool = pool.clone();
        let options = CallOptions::new().token(token.clone());
        tokio::spawn(async move { pool.call_with::<_, String>("sleep", &30, &options).await })
    };
    until("the call runs", || pool.stats().busy == 1).await;
    let fired = Instant::now();
    token.cancel();
    let err = within("the cancelled call", Duration::from_secs(2), call)
        .await
        .unwrap()
        .unwrap_err();
    assert!(fired.elapsed() < Duration::from_secs(1));
    let CallError::Cancelled { call_id, function } = err else {
        panic!("expected Cancelled, got {err:?}")
    };
    assert_eq!(function, "sleep");
    // The worker got CANCEL for that very call (its `sleep` ended early).
    let mut told = false;
    for _ in 0..200 {
        if cancelled_on_worker(&seen(pool).await).contains(&call_id) {
            told = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(told, "the worker was told to cancel call {call_id}");

    // Dropping a running call's future cancels it on the worker as well.
    {
        let dropped = pool.call::<_, String>("sleep", &31);
        tokio::pin!(dropped);
        let reached = async {
            loop {
                if !received(&seen(pool).await, &json!(31)).is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::select! {
            r = &mut dropped => panic!("a 31 s sleep answered: {r:?}"),
            () = within("the call reaching its worker", BOUND, reached) => {}
        }
    }
    let id = received(&seen(pool).await, &json!(31))[0];
    let mut told = false;
    for _ in 0..200 {
        if cancelled_on_worker(&seen(pool).await).contains(&id) {
            told = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(told, "dropping the call cancelled call {id} on the worker");

    let pid: u32 = pool.call("pid", &0).await.unwrap();
    assert_eq!(vec![pid], run.first, "the same worker serves the next call");
    until("nothing is in flight", || pool.stats().busy == 0).await;
    run.finish().await;
}

/// A queued call whose token fires, or whose future is dropped, is withdrawn: it fails (or
/// goes away) at once, leaves the queue, and never reaches a worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_call_withdrawn_by_its_token_or_by_dropping_it_never_reaches_the_worker() {
    let run = run(worker().workers(1).env("TEST_CONCURRENCY", "1")).await;
    let pool = &run.pool;
    let blocker = CancellationToken::new();
    let running = {
        let pool = pool.clone();
        let options = CallOptions::new().token(blocker.clone());
        tokio::spawn(async move { pool.call_with::<_, String>("sleep", &30, &options).await })
    };
    until("the blocking call runs", || pool.stats().busy == 1).await;

    // By token.
    let token = CancellationToken::new();
    let queued = {
        let pool = pool.clone();
        let options = CallOptions::new().token(token.clone());
        tokio::spawn(async move {
            pool.call_with::<_, String>("echo", "withdrawn by token", &options)
                .await
        })
    };
    until("the call queues", || pool.stats().queued == 1).await;
    token.cancel();
    let err = within("the withdrawn call", Duration::from_secs(1), queued)
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.is_cancelled(), "got {err:?}");
    assert_eq!(pool.stats().queued, 0, "the withdrawn call left the queue");

    // By dropping its future.
    {
        let dropped = pool.call::<_, String>("echo", "withdrawn by drop");
        tokio::pin!(dropped);
        tokio::select! {
            r = &mut dropped => panic!("the call ran while the only slot was taken: {r:?}"),
            () = until("the call queues", || pool.stats().queued == 1) => {}
        }
    }
    assert_eq!(pool.stats().queued, 0, "the dropped call left the queue");

    // Free the slot; a later call runs, and the withdrawn ones never did.
    blocker.cancel();
    assert!(settle_plain(running).await.unwrap_err().is_cancelled());
    let after: String = pool.call("echo", "after").await.unwrap();
    assert_eq!(after, "after");
    let seen = seen(pool).await;
    assert!(
        received(&seen, &json!("withdrawn by token")).is_empty(),
        "{seen}"
    );
    assert!(
        received(&seen, &json!("withdrawn by drop")).is_empty(),
        "{seen}"
    );
    assert_eq!(received(&seen, &json!("after")).len(), 1);
    run.finish().await;
}

async fn settle_plain<T>(call: JoinHandle<T>) -> T {
    within("a call", BOUND, call)
        .await
        .expect("call task panicked")
}

// ---------------------------------------------------------------------------------------------
// Crashes, retries, re-routing
// ---------------------------------------------------------------------------------------------

/// Seed bug "retry semantics the reverse of their docs": `retries(n)` sends a call whose worker
/// died again, up to n times; without it the call fails with `WorkerLost` naming the exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_allowing_retries_is_sent_again_when_its_worker_dies_and_others_fail_as_lost() {
    let run = run(worker()
        .workers(1)
        .restart_budget(20, Duration::from_secs(60)))
    .await;
    let pool = &run.pool;
    let dir = scratch("retries");

    let marker = dir.join("first");
    let v: String = within(
        "a retried call",
        BOUND,
        pool.call_with(
            "crash_once",
            marker.to_str().unwrap(),
            &CallOptions::new().retries(1),
        ),
    )
    .await
    .expect("the retry succeeds on the replacement");
    assert_eq!(v, "ok");
    run.events
        .wait("CallRetried", BOUND, |r| {
            r.count(|e| {
                matches!(e, ProcessEvent::CallRetried { function, retries_left: 0, .. } if function == "crash_once")
            }) == 1
        })
        .await;
    assert_eq!(pool.stats().retried, 1);

    // No retries (the default): lost, naming the exit code; it ran exactly once.
    let marker = dir.join("second");
    let err = pool
        .call::<_, String>("crash_once", marker.to_str().unwrap())
        .await
        .unwrap_err();
    match &err {
        CallError::WorkerLost { reason, .. } => {
            assert_eq!(*reason, ExitReason::Ended(ProcessExit::Code(7)))
        }
        other => panic!("expected WorkerLost, got {other:?}"),
    }
    assert!(marker.exists(), "the call ran");
    assert_eq!(pool.stats().retried, 1, "no retry without asking for one");

    // `retries(1)` is one more attempt, not an endless loop: a call that always crashes its
    // worker fails after two attempts.
    let err = within(
        "a call that always crashes",
        BOUND,
        pool.call_with::<_, ()>("crash", &9, &CallOptions::new().retries(1)),
    )
    .await
    .unwrap_err();
    match &err {
        CallError::WorkerLost { reason, .. } => {
            assert_eq!(*reason, ExitReason::Ended(ProcessExit::Code(9)))
        }
        other => panic!("expected WorkerLost, got {other:?}"),
    }
    assert_eq!(pool.stats().retried, 2);
    let rec = run
        .events
        .wait("the crash call retried", BOUND, |r| {
            r.count(
                |e| matches!(e, ProcessEvent::CallRetried { function, .. } if function == "crash"),
            ) >= 1
        })
        .await;
    assert_eq!(
        rec.count(
            |e| matches!(e, ProcessEvent::CallRetried { function, .. } if function == "crash")
        ),
        1
    );
    until("a replacement worker", || pool.worker_pids().len() == 1).await;
    let _ = std::fs::remove_dir_all(&dir);
    run.finish().await;
}

/// `retry_function` on the builder works like the per-call option, and a per-call
/// `retries(0)` overrides it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_function_on_the_builder_retries_that_function_unless_a_call_says_otherwise() {
    let run = run(worker().workers(1).retry_function("crash_once", 1)).await;
    let pool = &run.pool;
    let dir = scratch("retry-function");

    let v: String = within(
        "a retried call",
        BOUND,
        pool.call("crash_once", dir.join("first").to_str().unwrap()),
    )
    .await
    .expect("the builder's retry applies");
    assert_eq!(v, "ok");
    assert_eq!(pool.stats().retried, 1);

    let err = within(
        "a call that refuses retries",
        BOUND,
        pool.call_with::<_, String>(
            "crash_once",
            dir.join("second").to_str().unwrap(),
            &CallOptions::new().retries(0),
        ),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            &err,
            CallError::WorkerLost {
                status: ProcessExit::Code(7),
                ..
            }
        ),
        "got {err:?}"
    );
    assert_eq!(pool.stats().retried, 1);
    until("a replacement worker", || pool.worker_pids().len() == 1).await;
    let _ = std::fs::remove_dir_all(&dir);
    run.finish().await;
}

/// Calls queued (not yet sent) when the only worker crashes are not lost: the crash fails only
/// the call the worker held, and the queued ones run on its replacement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_queued_when_the_only_worker_crashes_run_on_its_replacement() {
    let run = run(worker().workers(1).env("TEST_CONCURRENCY", "1")).await;
    let pool = &run.pool;
    let dir = scratch("reroute");
    let trigger = dir.join("crash-now");
    let crash = spawn_call::<()>(
        pool,
        "crash_on_marker",
        json!([trigger.to_str().unwrap(), 3]),
    );
    until("the crashing call runs", || pool.stats().busy == 1).await;
    let queued: Vec<_> = (0..3)
        .map(|_| spawn_call::<u32>(pool, "pid", json!(0)))
        .collect();
    until("three calls queue", || pool.stats().queued == 3).await;
    std::fs::write(&trigger, b"").unwrap();

    let (err, _) = settle(crash).await;
    match err.unwrap_err() {
        CallError::WorkerLost { pid, reason, .. } => {
            assert_eq!(pid, run.first[0]);
            assert_eq!(reason, ExitReason::Ended(ProcessExit::Code(3)));
        }
        other => panic!("expected WorkerLost, got {other:?}"),
    }
    for q in queued {
        let pid = settle(q).await.0.expect("a queued call survives the crash");
        assert_ne!(pid, run.first[0], "it ran on the replacement");
    }
    assert_eq!(pool.stats().lost, 1);
    let _ = std::fs::remove_dir_all(&dir);
    run.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Recycling
// ---------------------------------------------------------------------------------------------

/// `recycle_after_calls(3)`: after three calls the worker is replaced; no call fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_is_recycled_after_its_number_of_calls_without_failing_any() {
    let run = run(worker().workers(1).recycle_after_calls(3)).await;
    let pool = &run.pool;
    let mut served = Vec::new();
    for _ in 0..6 {
        served.push(
            within("a call", BOUND, pool.call::<_, u32>("pid", &0))
                .await
                .expect("no call fails while workers recycle"),
        );
    }
    let p1 = run.first[0];
    assert_eq!(&served[..3], &[p1, p1, p1], "{served:?}");
    let p2 = served[3];
    assert_ne!(p2, p1);
    assert_eq!(&served[3..], &[p2, p2, p2], "{served:?}");
    let rec = run
        .events
        .wait("both workers recycled by calls", BOUND, |r| {
            r.recycled(RecycleReason::Calls).len() == 2
        })
        .await;
    assert_eq!(
        rec.recycled(RecycleReason::Calls)
            .iter()
            .map(|&(_, p)| p)
            .collect::<Vec<_>>(),
        vec![p1, p2]
    );
    run.events
        .wait("the first worker exits as planned", BOUND, |r| {
            r.count(|e| {
                matches!(e, ProcessEvent::Exited { pid, expected: true, lost_calls: 0, .. } if *pid == p1)
            }) == 1
        })
        .await;
    assert!(all_gone(&[p1]).await);
    assert_eq!(pool.stats().failed, 0);
    run.finish().await;
}

/// `max_age`: workers are replaced once they reach their age (plus jitter), while calls keep
/// succeeding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_recycled_by_age_while_calls_keep_succeeding() {
    let built = Instant::now();
    let run = run(worker()
        .workers(1)
        .max_age(Duration::from_millis(200), Duration::from_millis(50)))
    .await;
    let pool = &run.pool;
    let mut served = HashSet::new();
    let start = Instant::now();
    // Keep calling until two workers have retired by age (bounded).
    while run.events.now().recycled(RecycleReason::Age).len() < 2 {
        assert!(start.elapsed() < BOUND, "workers did not retire by age");
        let pid: u32 = within("a call", BOUND, pool.call("pid", &0.02))
            .await
            .expect("calls succeed while workers retire by age");
        served.insert(pid);
    }
    let rec = run.events.now();
    let (at, pid) = rec.recycled(RecycleReason::Age)[0];
    assert_eq!(pid, run.first[0]);
    let age = at.duration_since(built);
    assert!(
        age >= Duration::from_millis(200) && age < Duration::from_secs(2),
        "the first worker retired at {age:?} (max age 200 ms + up to 50 ms jitter)"
    );
    assert!(
        served.len() >= 2,
        "calls ran on successive workers: {served:?}"
    );
    assert_eq!(pool.stats().failed, 0);
    run.finish().await;
}

/// `max_rss`: a worker whose resident memory passes the limit is replaced (reason `Memory`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_above_the_memory_limit_is_recycled() {
    let run = run(worker().workers(1).max_rss(64 * MIB)).await;
    let pool = &run.pool;
    let size: u64 = pool.call("alloc", &200).await.unwrap();
    assert_eq!(size, 200 * MIB);
    run.events
        .wait("a memory recycle", Duration::from_secs(10), |r| {
            r.recycled(RecycleReason::Memory)
                .iter()
                .any(|&(_, p)| p == run.first[0])
        })
        .await;
    assert!(all_gone(&run.first).await, "the big worker exits");
    until("a replacement worker", || pool.worker_pids().len() == 1).await;
    let echoed: String = pool.call("echo", "fresh").await.unwrap();
    assert_eq!(echoed, "fresh");
    assert_ne!(pool.worker_pids(), run.first);
    run.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Hot reload
// ---------------------------------------------------------------------------------------------

/// Seed bug "calls in flight never settling on recycle": `reload` starts the new generation,
/// the old one finishes the call it holds (which returns its value) and exits; later calls and
/// later replacements use the new command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_lets_calls_in_flight_finish_and_switches_to_the_new_command() {
    let run = run(worker().workers(2)).await;
    let pool = &run.pool;
    let old = run.first.clone();
    let in_flight = spawn_call::<String>(pool, "sleep", json!(0.5));
    until("a call runs on the old generation", || {
        pool.stats().busy == 1
    })
    .await;

    within("reload", BOUND, pool.reload(command().env("GEN", "2")))
        .await
        .expect("the new generation starts");
    assert_eq!(settle(in_flight).await.0.unwrap(), "slept");
    assert!(all_gone(&old).await, "the old generation exited");
    let new = pool.worker_pids();
    assert_eq!(new.len(), 2);
    assert!(
        new.iter().all(|p| !old.contains(p)),
        "old {old:?}, new {new:?}"
    );

    let ids: Vec<Value> = join_all((0..2).map(|_| pool.call::<_, Value>("identity", &0.2)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for id in &ids {
        assert_eq!(id["gen"], json!("2"), "{ids:?}");
    }
    let rec = run
        .events
        .wait("the old generation's exits", BOUND, |r| {
            r.count(|e| matches!(e, ProcessEvent::Exited { .. })) == 2
        })
        .await;
    for p in &old {
        assert!(
            rec.count(|e| matches!(e, ProcessEvent::Recycled { pid, reason: RecycleReason::Reload, .. } if pid == p)) == 1
                && rec.count(|e| matches!(e, ProcessEvent::Exited { pid, expected: true, lost_calls: 0, reason: ExitReason::Recycled(RecycleReason::Reload), status: ProcessExit::Code(0), .. } if pid == p)) == 1,
            "{}",
            rec.dump()
        );
    }

    // A replacement started after the reload uses the new command too.
    assert!(pool
        .call::<_, ()>("crash", &1)
        .await
        .unwrap_err()
        .is_worker_lost());
    until("a replacement worker", || {
        let now = pool.worker_pids();
        now.len() == 2 && now.iter().any(|p| !new.contains(p))
    })
    .await;
    let ids: Vec<Value> = join_all((0..2).map(|_| pool.call::<_, Value>("identity", &0.2)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for id in &ids {
        assert_eq!(id["gen"], json!("2"), "{ids:?}");
    }
    run.finish().await;
}

/// `recycle` replaces every worker with a new process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recycle_replaces_every_worker() {
    let run = run(worker().workers(2)).await;
    let pool = &run.pool;
    within("recycle", BOUND, pool.recycle())
        .await
        .expect("recycle");
    let new = pool.worker_pids();
    assert_eq!(new.len(), 2);
    assert!(
        new.iter().all(|p| !run.first.contains(p)),
        "old {:?}, new {new:?}",
        run.first
    );
    assert!(all_gone(&run.first).await);
    let served: HashSet<u32> = join_all((0..8).map(|_| pool.call::<_, u32>("pid", &0.1)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(
        served.iter().all(|p| new.contains(p)),
        "{served:?} vs {new:?}"
    );
    run.finish().await;
}

/// A reload to a program that cannot start fails with `StartError`, and the old generation
/// keeps serving, with its command (its replacements too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reload_keeps_the_old_generation_serving() {
    let run = run(worker().workers(1).env("GEN", "1")).await;
    let pool = &run.pool;
    let err = within(
        "a failing reload",
        BOUND,
        pool.reload(WorkerCommand::new("/no/such/program")),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StartError::Spawn { .. }), "got {err:?}");
    assert_eq!(pool.worker_pids(), run.first);
    let id: Value = pool.call("identity", &0).await.unwrap();
    assert_eq!(id["gen"], json!("1"));

    // The old command is still the pool's: a crash is replaced by a working worker.
    assert!(pool
        .call::<_, ()>("crash", &1)
        .await
        .unwrap_err()
        .is_worker_lost());
    let id: Value = within("a call after the crash", BOUND, pool.call("identity", &0))
        .await
        .unwrap();
    assert_eq!(id["gen"], json!("1"));
    assert_ne!(id["pid"], json!(run.first[0]));
    run.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Stop
// ---------------------------------------------------------------------------------------------

/// Seed bug "calls in flight never settling on stop": `stop` lets running and queued calls
/// finish with their values, then stops the workers; a later call fails with `Stopped`; the
/// event stream ends with `Stopped`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_settles_running_and_queued_calls_with_their_values() {
    let run = run(worker().workers(2).env("TEST_CONCURRENCY", "1")).await;
    let pool = &run.pool;
    let calls: Vec<_> = (0..4)
        .map(|_| spawn_call::<String>(pool, "sleep", json!(0.3)))
        .collect();
    until("two calls run and two queue", || {
        let s = pool.stats();
        s.busy == 2 && s.queued == 2
    })
    .await;
    within("stop", BOUND, pool.stop()).await;
    for c in calls {
        assert_eq!(
            settle(c).await.0.expect("the call settles with its value"),
            "slept"
        );
    }
    assert!(all_gone(&run.first).await, "stop reaps every worker");
    assert!(matches!(
        pool.call::<_, String>("echo", "late").await,
        Err(CallError::Stopped)
    ));
    let first = run.first.clone();
    let rec = run.finish().await;
    for p in &first {
        assert_eq!(
            rec.count(|e| matches!(e, ProcessEvent::Exited { pid, expected: true, lost_calls: 0, .. } if pid == p)),
            1,
            "{}",
            rec.dump()
        );
    }
    assert_eq!(
        rec.count(|e| matches!(e, ProcessEvent::Exited { .. })),
        2,
        "{}",
        rec.dump()
    );
}

/// A worker that outlives `SHUTDOWN` and ignores `SIGTERM` is killed (`SIGKILL`) one stop
/// timeout after the stop signal; `stop` returns within a bound and the process is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_a_worker_that_ignores_shutdown_and_sigterm() {
    let run = run(worker().workers(1).stop_timeout(Duration::from_millis(200))).await;
    let pool = &run.pool;
    let ignoring: bool = pool.call("ignore_term", &30).await.unwrap();
    assert!(ignoring, "the worker ignores SIGTERM now");
    let started = Instant::now();
    within("stop", Duration::from_secs(10), pool.stop()).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        started.elapsed()
    );
    assert!(
        all_gone(&run.first).await,
        "the stubborn worker is killed and reaped"
    );
    let rec = run.finish().await;
    assert_eq!(
        rec.count(|e| matches!(
            e,
            ProcessEvent::Exited {
                status: ProcessExit::Signal(9),
                reason: ExitReason::Stopped,
                expected: true,
                ..
            }
        )),
        1,
        "{}",
        rec.dump()
    );
}

// ---------------------------------------------------------------------------------------------
// Worker environment and resource limits
// ---------------------------------------------------------------------------------------------

/// Workers get the configured variables (on top of the pool's environment, or alone with
/// `env_clear`) and working directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_get_the_configured_environment_and_directory() {
    let dir = scratch("cwd");
    let run1 = run(worker().workers(1).env("COLOUR", "green").cwd(&dir)).await;
    let pool = &run1.pool;
    let colour: Option<String> = pool.call("env", "COLOUR").await.unwrap();
    assert_eq!(colour.as_deref(), Some("green"));
    let path: Option<String> = pool.call("env", "PATH").await.unwrap();
    assert_eq!(
        path,
        std::env::var("PATH").ok(),
        "the pool's environment is inherited"
    );
    let cwd: String = pool.call("cwd", &()).await.unwrap();
    assert_eq!(
        std::fs::canonicalize(cwd).unwrap(),
        std::fs::canonicalize(&dir).unwrap()
    );
    run1.finish().await;

    let run2 = run(worker().workers(1).env_clear().env("ONLY", "this")).await;
    let mut names: Vec<String> = run2.pool.call("environ", &()).await.unwrap();
    // Python itself adds LC_CTYPE when it starts without a locale (PEP 538 locale coercion).
    names.retain(|n| n != "LC_CTYPE");
    assert_eq!(names, vec!["ONLY", "WORKCREW_PROTOCOL"]);
    let only: Option<String> = run2.pool.call("env", "ONLY").await.unwrap();
    assert_eq!(only.as_deref(), Some("this"));
    run2.finish().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `limit_cpu_time`: a worker past its CPU time is killed by the system; its call fails with
/// `WorkerLost` naming the signal, and it is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_past_its_cpu_time_limit_is_killed_and_replaced() {
    let run = run(worker().workers(1).limit_cpu_time(1)).await;
    let pool = &run.pool;
    let err = within("a CPU-bound call", BOUND, pool.call::<_, u64>("spin", &5))
        .await
        .unwrap_err();
    match &err {
        CallError::WorkerLost { pid, reason, .. } => {
            assert_eq!(*pid, run.first[0]);
            assert!(
                matches!(
                    reason,
                    ExitReason::Ended(ProcessExit::Signal(24) | ProcessExit::Signal(9))
                ),
                "SIGXCPU or SIGKILL, got {reason:?}"
            );
        }
        other => panic!("expected WorkerLost, got {other:?}"),
    }
    assert!(all_gone(&run.first).await);
    let echoed: String = within("a call after the kill", BOUND, pool.call("echo", "next"))
        .await
        .unwrap();
    assert_eq!(echoed, "next");
    assert_ne!(pool.worker_pids(), run.first);
    run.finish().await;
}

/// `limit_address_space`: an allocation past the limit fails inside the worker (`MemoryError`,
/// reported as `Panicked`), and the worker goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allocation_past_the_address_space_limit_fails_the_call_not_the_worker() {
    let run = run(worker().workers(1).limit_address_space(300 * MIB)).await;
    let pool = &run.pool;
    let err = pool.call::<_, u64>("alloc", &1000).await.unwrap_err();
    match &err {
        CallError::Panicked { function, message } => {
            assert_eq!(function, "alloc");
            assert!(message.contains("MemoryError"), "{message}");
        }
        other => panic!("expected Panicked (MemoryError), got {other:?}"),
    }
    let size: u64 = pool.call("alloc", &10).await.unwrap();
    assert_eq!(size, 10 * MIB);
    assert_eq!(pool.worker_pids(), run.first, "the same worker serves on");
    run.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

/// Bytes that are no frame on the channel: the pool kills the worker, fails the call it held
/// as `WorkerLost`, and replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_channel_kills_the_worker_fails_its_call_and_replaces_it() {
    let run = run(worker().workers(1)).await;
    let pool = &run.pool;
    let err = within(
        "a call whose worker sends garbage",
        BOUND,
        pool.call::<_, String>("garbage", &()),
    )
    .await
    .unwrap_err();
    match &err {
        CallError::WorkerLost {
            pid,
            reason,
            status,
            ..
        } => {
            assert_eq!(*pid, run.first[0]);
            assert_eq!(*status, ProcessExit::Signal(9));
            assert!(
                matches!(reason, ExitReason::ProtocolViolation { .. }),
                "{reason:?}"
            );
        }
        other => panic!("expected WorkerLost, got {other:?}"),
    }
    assert!(
        all_gone(&run.first).await,
        "the worker is killed and reaped"
    );
    let echoed: String = within("a call after the kill", BOUND, pool.call("echo", "clean"))
        .await
        .unwrap();
    assert_eq!(echoed, "clean");
    run.events
        .wait("the unplanned exit", BOUND, |r| {
            r.count(|e| {
                matches!(
                    e,
                    ProcessEvent::Exited {
                        expected: false,
                        lost_calls: 1,
                        ..
                    }
                )
            }) == 1
        })
        .await;
    run.finish().await;
}

/// A worker that exits before its handshake fails `build` at once with `Handshake`, naming its
/// exit code (not after the ready timeout), and leaves no process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_exiting_before_hello_fails_the_build_with_its_exit_code() {
    let started = Instant::now();
    let err = within(
        "build",
        BOUND,
        worker()
            .workers(1)
            .env("TEST_MODE", "exit_before_hello")
            .build(),
    )
    .await
    .unwrap_err();
    match &err {
        StartError::Handshake { pid, reason } => {
            assert!(reason.contains("exit code 3"), "{reason}");
            assert!(all_gone(&[*pid]).await);
        }
        StartError::NotReady { pid, .. } => {
            assert!(all_gone(&[*pid]).await);
            panic!(
                "expected Handshake naming exit code 3, got {err:?} after {:?}: the worker's exit \
                 went unnoticed until the ready timeout",
                started.elapsed()
            );
        }
        other => panic!("expected Handshake, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the exit is noticed at once, not at the ready timeout (10 s): {:?}",
        started.elapsed()
    );
}

/// A worker that never says `HELLO` fails `build` with `NotReady` after the ready timeout, and
/// is killed and reaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_never_says_hello_fails_the_build_when_the_ready_timeout_passes() {
    let err = within(
        "build",
        BOUND,
        worker()
            .workers(2)
            .env("TEST_MODE", "never_ready")
            .ready_timeout(Duration::from_millis(300))
            .build(),
    )
    .await
    .unwrap_err();
    match &err {
        StartError::NotReady { pid, timeout } => {
            assert_eq!(*timeout, Duration::from_millis(300));
            assert!(all_gone(&[*pid]).await);
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
    // Both workers were started at once; the one not named in the error is reaped too.
    let stragglers: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| {
                    env.split(|&b| b == 0)
                        .any(|kv| kv == b"TEST_MODE=never_ready")
                })
                .unwrap_or(false)
        })
        .collect();
    assert!(
        all_gone(&stragglers).await,
        "never-ready workers left: {stragglers:?}"
    );
}

/// A worker program that does not exist fails `build` with `Spawn`, naming the program.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_worker_program_fails_the_build_with_a_spawn_error() {
    let err = within(
        "build",
        BOUND,
        ProcessPool::builder("/no/such/worker/program").build(),
    )
    .await
    .unwrap_err();
    match &err {
        StartError::Spawn { program, .. } => assert_eq!(program, "/no/such/worker/program"),
        other => panic!("expected Spawn, got {other:?}"),
    }
}

/// Seed bug "no crash backoff": replacements that fail to start are retried after a delay that
/// starts at the first backoff and doubles (up to the max), and the restart budget ends the
/// loop with `CrashLoop`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_replacements_back_off_exponentially_and_end_in_a_crash_loop() {
    let dir = scratch("backoff");
    let marker = dir.join("broken");
    let run = run(worker()
        .workers(1)
        .env("TEST_MODE", "crash_if_marker")
        .env("TEST_MARKER", &marker)
        .spawn_backoff(Duration::from_millis(50), Duration::from_millis(400))
        .restart_budget(5, Duration::from_secs(60))
        // Bounds how long a failed start takes to be noticed, whatever the way.
        .ready_timeout(Duration::from_millis(1000)))
    .await;
    let pool = &run.pool;
    std::fs::write(&marker, b"").unwrap();
    assert!(pool
        .call::<_, ()>("crash", &1)
        .await
        .unwrap_err()
        .is_worker_lost());
    let rec = run
        .events
        .wait("the crash loop", BOUND, |r| {
            r.count(|e| matches!(e, ProcessEvent::CrashLoop { .. })) == 1
        })
        .await;
    // Attempts: (Spawned, SpawnFailed) pairs after the crash.
    let mut spawned = Vec::new();
    let mut failed = Vec::new();
    for (at, e) in &rec.events {
        match e {
            ProcessEvent::Spawned { .. } => spawned.push(*at),
            ProcessEvent::SpawnFailed { .. } => failed.push(*at),
            _ => {}
        }
    }
    assert_eq!(
        failed.len(),
        5,
        "the budget allows 5 restarts: {}",
        rec.dump()
    );
    assert_eq!(spawned.len(), 5);
    // The delay between a failed start and the next attempt.
    let delays: Vec<Duration> = (1..5)
        .map(|k| spawned[k].duration_since(failed[k - 1]))
        .collect();
    let expected = [50u64, 100, 200, 400].map(Duration::from_millis);
    for (k, (d, e)) in delays.iter().zip(expected).enumerate() {
        assert!(
            *d >= e.mul_f64(0.8),
            "retry {} came {d:?} after the failure, expected a backoff of {e:?} (all delays: {delays:?})",
            k + 1
        );
    }
    let err = pool.call::<_, String>("echo", "x").await.unwrap_err();
    assert!(
        matches!(err, CallError::CrashLoop { restarts: 5, .. }),
        "got {err:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    run.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Events and drop
// ---------------------------------------------------------------------------------------------

/// The event stream tells a worker's life: `Spawned` then `Ready` for each new worker,
/// `Recycled` and an expected `Exited` for each replaced one, expected `Exited` for each worker
/// on stop, then `Stopped`, and the stream ends.
///
/// The first workers' `Spawned` happens inside `build`, before anyone can subscribe (their
/// `Ready` is replayed at subscription, see `tests/process_pool.rs`), so the new ones are made
/// with `recycle`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_each_worker_from_spawn_to_exit_and_end_with_stopped() {
    let run = run(worker().workers(2)).await;
    let pool = &run.pool;
    pool.recycle().await.unwrap();
    let new = pool.worker_pids();
    let rec = run
        .events
        .wait("both old workers' exits", BOUND, |r| {
            r.count(|e| matches!(e, ProcessEvent::Exited { .. })) == 2
        })
        .await;
    for p in &new {
        let spawned = rec.position(|e| matches!(e, ProcessEvent::Spawned { pid, .. } if pid == p));
        let ready = rec.position(|e| matches!(e, ProcessEvent::Ready { pid, functions, .. } if pid == p && functions.iter().any(|f| f == "echo")));
        assert!(
            matches!((spawned, ready), (Some(s), Some(r)) if s < r),
            "Spawned then Ready for {p}: {}",
            rec.dump()
        );
    }
    for p in &run.first {
        let recycled = rec.position(|e| matches!(e, ProcessEvent::Recycled { pid, reason: RecycleReason::Reload, .. } if pid == p));
        let exited = rec.position(|e| matches!(e, ProcessEvent::Exited { pid, expected: true, lost_calls: 0, .. } if pid == p));
        assert!(
            matches!((recycled, exited), (Some(r), Some(x)) if r < x),
            "Recycled then Exited for {p}: {}",
            rec.dump()
        );
    }
    let before_stop = rec.events.len();
    let rec = run.finish().await;
    let tail: Vec<&ProcessEvent> = rec.events[before_stop..].iter().map(|(_, e)| e).collect();
    for p in &new {
        assert!(
            tail.iter().any(|e| matches!(e, ProcessEvent::Exited { pid, expected: true, lost_calls: 0, .. } if pid == p)),
            "{tail:?}"
        );
    }
    assert_eq!(tail.last(), Some(&&ProcessEvent::Stopped));
    assert!(rec.ended);
    assert_eq!(rec.count(|e| matches!(e, ProcessEvent::Stopped)), 1);
}

/// Seed bug "isolated pools leaking a process": a pool dropped without `stop` — with a call in
/// flight and a worker still starting — leaves no process behind, and another pool is not
/// disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_dropped_without_stop_leaves_no_process_behind() {
    let other = run(worker().workers(1)).await;

    let pool = within(
        "build",
        BOUND,
        worker()
            .min(1)
            .max(2)
            .env("TEST_CONCURRENCY", "1")
            .stop_timeout(Duration::from_millis(300))
            .build(),
    )
    .await
    .unwrap();
    let events = Events::record(&pool);
    let first = pool.worker_pids();
    let holding = spawn_call::<String>(&pool, "hang", json!(30));
    until("a call runs", || pool.stats().busy == 1).await;
    let queued = spawn_call::<u32>(&pool, "pid", json!(0));
    // The queued call makes the pool grow: drop it while the new worker starts.
    events
        .wait("a second worker spawned", BOUND, |r| {
            !r.spawned().is_empty()
        })
        .await;
    holding.abort();
    queued.abort();
    let _ = holding.await;
    let _ = queued.await;
    drop(pool);

    let mut pids = first.clone();
    pids.extend(events.now().spawned());
    assert_eq!(pids.len(), 2);
    assert!(
        all_gone(&pids).await,
        "processes left by the dropped pool: {:?}",
        pids.iter().filter(|&&p| exists(p)).collect::<Vec<_>>()
    );

    let echoed: String = other.pool.call("echo", "undisturbed").await.unwrap();
    assert_eq!(echoed, "undisturbed");
    assert_eq!(other.pool.worker_pids(), other.first);
    other.finish().await;
}
