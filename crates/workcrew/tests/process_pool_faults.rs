//! The process pool's fault matrix against a Rust worker built with the SDK
//! (`src/bin/demo_worker.rs`, run as `workcrew-demo-worker`): values and every
//! error kind, crashes, aborts, hangs, timeouts, noisy output, garbage on the
//! channel, broken handshakes, concurrency, batches, fd passing, recycling and
//! resource limits.
//!
//! Every test ends by proving that no worker process it started outlives it
//! (`/proc`), and that the pool's capacity did not leak (it keeps serving).
//!
//! These run on real time with small durations and generous bounds, not on
//! tokio's paused clock: the workers are real processes whose timers and
//! deaths the pool's clock cannot pause.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use workcrew::process::{
    CallError, ExitReason, ProcessEvent, ProcessExit, ProcessPool, ProcessPoolBuilder,
    RecycleReason, StartError,
};

mod support;
use support::processes::{all_gone, replacement};

const MIB: u64 = 1024 * 1024;

fn worker() -> ProcessPoolBuilder {
    ProcessPool::builder(env!("CARGO_BIN_EXE_workcrew-demo-worker"))
}

async fn pool(workers: usize) -> ProcessPool {
    worker().workers(workers).build().await.unwrap()
}

/// Stops the pool and asserts that every worker it ever had (`seen`, plus the live ones) is
/// reaped.
async fn stop_and_reap(pool: ProcessPool, seen: &[u32]) {
    let mut pids = seen.to_vec();
    pids.extend(pool.worker_pids());
    pool.stop().await;
    assert!(all_gone(&pids).await, "a worker of {pids:?} outlived stop");
}

/// A call that must succeed: the pool still serves.
async fn add(pool: &ProcessPool, a: i64, b: i64) -> i64 {
    pool.call("add", &(a, b)).await.unwrap()
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i64,
    y: i64,
    label: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_values_round_trip_in_postcard() {
    let pool = pool(1).await;
    assert_eq!(add(&pool, 40, 2).await, 42);
    assert_eq!(add(&pool, i64::MIN + 1, -1).await, i64::MIN);
    let p: Point = pool
        .call(
            "swap",
            &Point {
                x: 1,
                y: -2,
                label: "é".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        p,
        Point {
            x: -2,
            y: 1,
            label: "é".into()
        }
    );
    let slept: u64 = pool.call("sleep", &0u64).await.unwrap();
    assert_eq!(slept, 0);
    stop_and_reap(pool, &[]).await;
}

/// BUG (reported): a Rust worker function taking `serde_json::Value` cannot be called through
/// the pool. The SDK always offers postcard first and the pool always accepts it, postcard is
/// not self-describing (`deserialize_any` is unsupported), and neither side lets a user choose
/// JSON; so `echo` answers `bad_args` for every value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_value_round_trips_through_echo_when_the_pool_speaks_json() {
    // Postcard is not self-describing: a `serde_json::Value` argument needs JSON.
    let pool = worker()
        .workers(1)
        .encoding(workcrew::protocol::Encoding::Json)
        .build()
        .await
        .unwrap();
    let n = pool.call::<_, u64>("echo", &7u64).await;
    let v = pool
        .call::<_, serde_json::Value>("echo", &serde_json::json!({"a": [1, 2]}))
        .await;
    stop_and_reap(pool, &[]).await;
    assert_eq!(n.unwrap(), 7);
    assert_eq!(v.unwrap(), serde_json::json!({"a": [1, 2]}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_error_is_failed_with_its_message() {
    let pool = pool(1).await;
    match pool.call::<_, ()>("fail", "no luck").await {
        Err(CallError::Failed {
            function,
            message,
            data,
        }) => {
            assert_eq!((function.as_str(), message.as_str()), ("fail", "no luck"));
            assert_eq!(data, None);
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(add(&pool, 1, 1).await, 2);
    stop_and_reap(pool, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_panicked_with_its_message_and_the_same_worker_keeps_serving() {
    let pool = pool(1).await;
    let before = pool.worker_pids();
    match pool.call::<_, ()>("panic", "kaboom 42").await {
        Err(CallError::Panicked { function, message }) => {
            assert_eq!(function, "panic");
            assert!(message.contains("kaboom 42"), "{message:?}");
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    let pid: u32 = pool.call("pid", &0u64).await.unwrap();
    assert_eq!(vec![pid], before, "the worker that panicked answers");
    stop_and_reap(pool, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_function_is_unknown_function() {
    let pool = pool(1).await;
    assert!(matches!(
        pool.call::<_, ()>("no_such_function", &()).await,
        Err(CallError::UnknownFunction(name)) if name == "no_such_function"
    ));
    assert_eq!(add(&pool, 1, 2).await, 3);
    stop_and_reap(pool, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_that_do_not_decode_are_bad_args() {
    let pool = pool(1).await;
    // Too few bytes for `(i64, i64)`.
    let short = pool.call::<_, i64>("add", &()).await;
    assert!(
        matches!(&short, Err(CallError::BadArgs { function, .. }) if function == "add"),
        "got {short:?}"
    );
    assert_eq!(add(&pool, 2, 2).await, 4);
    stop_and_reap(pool, &[]).await;
}

/// BUG (reported): postcard decoding ignores trailing bytes (`postcard::from_bytes` in
/// `Encoding::decode`), so a string passed to `add` decodes as two small integers and is
/// answered with a sum instead of `bad_args`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_string_passed_to_add_is_bad_args() {
    let pool = pool(1).await;
    let text = pool.call::<_, i64>("add", "text").await;
    stop_and_reap(pool, &[]).await;
    assert!(
        matches!(&text, Err(CallError::BadArgs { function, .. }) if function == "add"),
        "got {text:?}"
    );
}

/// BUG (reported), the same trailing bytes on the way back: a `Point` result read as an `i64`
/// decodes its first field and drops the rest, instead of failing as a payload error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_of_another_type_is_a_payload_error() {
    let pool = pool(1).await;
    let point = Point {
        x: 1,
        y: -2,
        label: "p".into(),
    };
    let wrong = pool.call::<_, i64>("swap", &point).await;
    stop_and_reap(pool, &[]).await;
    assert!(
        matches!(&wrong, Err(CallError::Payload { function, .. }) if function == "swap"),
        "got {wrong:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_fails_only_its_call_with_the_exit_code_and_the_worker_is_replaced() {
    let pool = pool(2).await;
    let before = pool.worker_pids();
    // `join!` polls in order: the crash is routed first, so the sleep goes to the other worker
    // (fewest in flight) and is still running when the crash lands.
    let (crashed, other) = tokio::join!(
        pool.call::<_, ()>("crash", &5),
        pool.call::<_, u32>("pid", &100u64)
    );
    let survivor = other.unwrap();
    match crashed {
        Err(CallError::WorkerLost { pid, reason, .. }) => {
            assert_eq!(reason, ExitReason::Ended(ProcessExit::Code(5)));
            assert!(before.contains(&pid) && before.contains(&survivor));
            assert_ne!(pid, survivor, "the crash took only its own worker");
        }
        other => panic!("expected WorkerLost, got {other:?}"),
    }
    let after = replacement(&pool, &before).await;
    assert_eq!(after.len(), 2);
    assert!(after.contains(&survivor));
    assert_eq!(add(&pool, 3, 4).await, 7);
    stop_and_reap(pool, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_is_worker_lost_naming_signal_6() {
    let pool = pool(1).await;
    let before = pool.worker_pids();
    match pool.call::<_, ()>("abort", &()).await {
        Err(CallError::WorkerLost { reason, status, .. }) => {
            assert_eq!(reason, ExitReason::Ended(ProcessExit::Signal(6)));
            assert_eq!(status, ProcessExit::Signal(6));
        }
        other => panic!("expected WorkerLost, got {other:?}"),
    }
    replacement(&pool, &before).await;
    assert_eq!(add(&pool, 1, 1).await, 2);
    stop_and_reap(pool, &before).await;
}

/// The worker is wedged (an async function blocks its serving thread: no `CANCEL` is read, no
/// `PING` answered): after the timeout and the cancel grace it is killed and replaced; a call
/// on the other worker is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_worker_times_out_and_is_killed_and_replaced() {
    let pool = worker()
        .workers(2)
        .call_timeout(Duration::from_millis(200))
        .cancel_grace(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let before = pool.worker_pids();
    let (frozen, other) = tokio::join!(
        pool.call::<_, ()>("freeze", &()),
        pool.call::<_, u64>("sleep", &100u64)
    );
    let err = frozen.unwrap_err();
    assert!(err.is_timeout(), "got {err:?}");
    assert_eq!(other.unwrap(), 100);
    let after = replacement(&pool, &before).await;
    let killed: Vec<u32> = before
        .iter()
        .copied()
        .filter(|p| !after.contains(p))
        .collect();
    assert_eq!(killed.len(), 1, "before {before:?}, after {after:?}");
    assert!(all_gone(&killed).await, "the wedged worker is reaped");
    assert_eq!(add(&pool, 1, 1).await, 2);
    stop_and_reap(pool, &before).await;
}

/// `hang` is a sync function that never returns and ignores its cancellation. The SDK cannot
/// stop its thread, so it does not answer the `CANCEL` (the function has not ended): the call
/// times out, the worker finishes its other call, then is killed after the cancel grace and
/// replaced. It never runs more calls than its concurrency (1 here): the call sent after the
/// timeout goes to the replacement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_sync_call_times_out_and_its_worker_is_killed_and_replaced() {
    let pool = worker()
        .workers(1)
        .env("WORKCREW_DEMO_CONCURRENCY", "2")
        .call_timeout(Duration::from_millis(200))
        .cancel_grace(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let before = pool.worker_pids();
    let (hung, other) = tokio::join!(
        pool.call::<_, ()>("hang", &()),
        pool.call::<_, u64>("sleep", &50u64)
    );
    let err = hung.unwrap_err();
    assert!(err.is_timeout(), "got {err:?}");
    assert_eq!(other.unwrap(), 50);
    assert!(
        all_gone(&before).await,
        "the worker running the runaway call is killed"
    );
    let pid: u32 = pool.call("pid", &0u64).await.unwrap();
    assert!(!before.contains(&pid), "a new worker serves");
    stop_and_reap(pool, &before).await;
}

/// `coop` is a sync function that sees its cancel and returns: a call cancelled by its token
/// is answered, so the worker is not killed; past the cancel grace the same worker serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_call_that_sees_its_cancel_keeps_its_worker() {
    let pool = worker()
        .workers(1)
        .cancel_grace(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let before = pool.worker_pids();
    let token = workcrew::CancellationToken::new();
    let options = workcrew::process::CallOptions::new().token(token.clone());
    let call = tokio::spawn(pool.call_owned_with::<_, u64>("coop", 60_000u64, options));
    while pool.stats().busy == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    token.cancel();
    let err = call.await.unwrap().unwrap_err();
    assert!(err.is_cancelled(), "got {err:?}");
    tokio::time::sleep(Duration::from_millis(400)).await; // past the cancel grace
    let pid: u32 = pool.call("pid", &0u64).await.unwrap();
    assert_eq!(vec![pid], before, "no kill: the function ended");
    assert_eq!(pool.stats().crashed, 0);
    stop_and_reap(pool, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_async_call_is_cancelled_and_the_same_worker_keeps_serving() {
    let pool = worker()
        .workers(1)
        .call_timeout(Duration::from_millis(200))
        .cancel_grace(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let before = pool.worker_pids();
    let started = std::time::Instant::now();
    let err = pool.call::<_, u64>("sleep", &10_000u64).await.unwrap_err();
    assert!(err.is_timeout(), "got {err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(400)).await; // past the cancel grace
    let pid: u32 = pool.call("pid", &0u64).await.unwrap();
    assert_eq!(vec![pid], before, "no kill: the SDK dropped the call");
    stop_and_reap(pool, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_spam_does_not_corrupt_the_channel() {
    let pool = pool(1).await;
    let before = pool.worker_pids();
    let n: u32 = pool.call("spam", &1000u32).await.unwrap();
    assert_eq!(n, 1000);
    assert_eq!(add(&pool, 5, 5).await, 10);
    let (a, b) = tokio::join!(
        pool.call::<_, u32>("spam", &1000u32),
        pool.call::<_, i64>("add", &(1, 2))
    );
    assert_eq!((a.unwrap(), b.unwrap()), (1000, 3));
    assert_eq!(pool.worker_pids(), before);
    stop_and_reap(pool, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_channel_loses_the_call_and_the_worker_is_killed_and_replaced() {
    let pool = pool(1).await;
    let before = pool.worker_pids();
    let err = pool.call::<_, ()>("garbage", &()).await.unwrap_err();
    assert!(
        matches!(&err, CallError::WorkerLost { pid, .. } if before.contains(pid)),
        "got {err:?}"
    );
    assert!(all_gone(&before).await, "the worker is killed and reaped");
    replacement(&pool, &before).await;
    assert_eq!(add(&pool, 2, 3).await, 5);
    stop_and_reap(pool, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_never_says_hello_is_not_ready_and_is_reaped() {
    let err = worker()
        .env("WORKCREW_DEMO_MODE", "never_ready")
        .workers(1)
        .ready_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap_err();
    match err {
        StartError::NotReady { pid, timeout } => {
            assert_eq!(timeout, Duration::from_millis(300));
            assert!(all_gone(&[pid]).await, "the unready worker is reaped");
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
}

/// Starts a pool whose worker runs in `mode`; returns its handshake error, after checking the
/// worker was reaped.
async fn handshake_failure(mode: &str) -> String {
    let err = worker()
        .env("WORKCREW_DEMO_MODE", mode)
        .workers(1)
        .ready_timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap_err();
    match err {
        StartError::Handshake { pid, reason } => {
            assert!(all_gone(&[pid]).await, "worker {pid} ({mode}) is reaped");
            reason
        }
        other => panic!("{mode}: expected Handshake, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_exits_before_hello_fails_the_handshake_naming_its_exit_code() {
    let reason = handshake_failure("exit_before_hello").await;
    assert!(reason.contains("exit code 3"), "{reason:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_first_frame_is_not_hello_fails_the_handshake() {
    let reason = handshake_failure("bad_hello").await;
    assert!(reason.contains("HELLO"), "{reason:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_sends_garbage_before_hello_fails_the_handshake() {
    let reason = handshake_failure("garbage_hello").await;
    assert!(reason.contains("HELLO"), "{reason:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_never_gets_more_calls_than_its_concurrency() {
    let pool = worker()
        .env("WORKCREW_DEMO_CONCURRENCY", "2")
        .workers(1)
        .build()
        .await
        .unwrap();
    let seen =
        futures::future::join_all((0..8).map(|_| pool.call::<_, usize>("inflight", &50u64))).await;
    let seen: Vec<usize> = seen.into_iter().map(|r| r.unwrap()).collect();
    assert!(
        seen.iter().all(|&n| n <= 2),
        "worker saw {seen:?} calls at once"
    );
    assert!(seen.contains(&2), "both slots were used: {seen:?}");
    stop_and_reap(pool, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_returns_results_in_input_order() {
    let pool = pool(2).await;
    let sums: Vec<i64> = pool
        .map("add", (0..100_000i64).map(|i| (i, i)))
        .await
        .unwrap();
    assert_eq!(sums, (0..100_000).map(|i| 2 * i).collect::<Vec<_>>());
    let checked: Vec<i64> = pool.map("check", 0..3000i64).await.unwrap();
    assert_eq!(checked, (0..3000).collect::<Vec<_>>());
    stop_and_reap(pool, &[]).await;
}

/// `Item { index }` names the first failing item, counted from the start of the input, also
/// across `CALL_MANY` chunk boundaries (1024 items each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_map_item_is_named_by_its_index_in_the_input() {
    let pool = pool(2).await;
    let item = |r: Result<Vec<i64>, CallError>| match r {
        Err(CallError::Item { index, source }) => (index, *source),
        other => panic!("expected Item, got {other:?}"),
    };
    let (index, source) = item(pool.map("check", [1i64, 2, -3, 4]).await);
    assert_eq!(index, 2);
    assert!(
        matches!(&source, CallError::Failed { message, .. } if message == "negative: -3"),
        "{source:?}"
    );
    let (index, source) = item(
        pool.map(
            "check",
            (0..5000i64).map(|i| if i == 4321 { -i } else { i }),
        )
        .await,
    );
    assert_eq!(index, 4321);
    assert!(
        matches!(&source, CallError::Failed { message, .. } if message == "negative: -4321"),
        "{source:?}"
    );
    match pool
        .map::<_, (), _>("fail", (0..3000).map(|i| format!("item {i}")))
        .await
    {
        Err(CallError::Item { index, source }) => {
            assert_eq!(index, 0);
            assert!(
                matches!(&*source, CallError::Failed { message, .. } if message == "item 0"),
                "{source:?}"
            );
        }
        other => panic!("expected Item, got {other:?}"),
    }
    match pool
        .map::<_, (), _>("panic", (0..3000).map(|i| format!("item {i}")))
        .await
    {
        Err(CallError::Item { index, source }) => {
            assert_eq!(index, 0);
            assert!(
                matches!(&*source, CallError::Panicked { message, .. } if message.contains("item 0")),
                "{source:?}"
            );
        }
        other => panic!("expected Item, got {other:?}"),
    }
    assert_eq!(add(&pool, 1, 1).await, 2);
    stop_and_reap(pool, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typed_function_handle_calls_the_function() {
    let pool = pool(1).await;
    let add = pool.function::<(i64, i64), i64>("add");
    assert_eq!(add.name(), "add");
    assert_eq!(add.call(&(2, 3)).await.unwrap(), 5);
    assert_eq!(add.map([(1, 1), (2, 2)]).await.unwrap(), [2, 4]);
    stop_and_reap(pool, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_connection_is_passed_to_a_worker_and_served_there() {
    use std::io::Read;
    let pool = pool(1).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let served: u32 = pool
        .call_with_fds("greet_fd", "x", vec![accepted.into()])
        .await
        .unwrap();
    assert_eq!(served, 1);
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut greeting = String::new();
    client.read_to_string(&mut greeting).unwrap();
    assert_eq!(greeting, "hello x");
    // A function that takes no descriptors refuses them; the worker goes on.
    let (_, extra) = std::os::unix::net::UnixStream::pair().unwrap();
    assert!(matches!(
        pool.call_with_fds::<_, i64>("add", &(1, 1), vec![extra.into()])
            .await,
        Err(CallError::BadArgs { .. })
    ));
    assert_eq!(add(&pool, 1, 1).await, 2);
    stop_and_reap(pool, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_gets_the_configured_environment_and_directory() {
    let dir = std::env::temp_dir().canonicalize().unwrap();
    let pool = worker()
        .env("DEMO_GREETING", "hi there")
        .cwd(&dir)
        .workers(1)
        .build()
        .await
        .unwrap();
    let greeting: Option<String> = pool.call("env", "DEMO_GREETING").await.unwrap();
    assert_eq!(greeting.as_deref(), Some("hi there"));
    let protocol: Option<String> = pool.call("env", "WORKCREW_PROTOCOL").await.unwrap();
    assert_eq!(protocol.as_deref(), Some("1"));
    let missing: Option<String> = pool.call("env", "DEMO_NOT_SET").await.unwrap();
    assert_eq!(missing, None);
    let cwd: String = pool.call("cwd", &()).await.unwrap();
    assert_eq!(Path::new(&cwd), dir);
    stop_and_reap(pool, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_recycled_after_a_number_of_calls() {
    let pool = worker()
        .workers(1)
        .recycle_after_calls(5)
        .build()
        .await
        .unwrap();
    let mut served = Vec::new();
    for _ in 0..12 {
        served.push(pool.call::<_, u32>("pid", &0u64).await.unwrap());
    }
    let distinct: HashSet<u32> = served.iter().copied().collect();
    assert!(distinct.len() >= 2, "served by {served:?}");
    stop_and_reap(pool, &served).await;
}

/// Waits (bounded) for an event matching `wanted`.
async fn event(
    events: &mut (impl futures::Stream<Item = ProcessEvent> + Unpin),
    wanted: impl Fn(&ProcessEvent) -> bool,
) -> ProcessEvent {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.next().await {
                Some(e) if wanted(&e) => return e,
                Some(_) => {}
                None => panic!("the event stream ended"),
            }
        }
    })
    .await
    .expect("the event came")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_above_the_memory_limit_is_recycled() {
    let pool = worker()
        .workers(1)
        .max_rss(100 * MIB)
        .build()
        .await
        .unwrap();
    let mut events = pool.events();
    let before = pool.worker_pids();
    let held: u64 = pool.call("alloc", &300u64).await.unwrap();
    assert_eq!(held, 300 * MIB);
    let recycled = event(&mut events, |e| matches!(e, ProcessEvent::Recycled { .. })).await;
    assert!(
        matches!(
            recycled,
            ProcessEvent::Recycled { pid, reason: RecycleReason::Memory, .. } if pid == before[0]
        ),
        "{recycled:?}"
    );
    let after = replacement(&pool, &before).await;
    assert!(all_gone(&before).await, "the recycled worker exits");
    let pid: u32 = pool.call("pid", &0u64).await.unwrap();
    assert_eq!(vec![pid], after);
    stop_and_reap(pool, &before).await;
}

/// An allocation past the address-space limit aborts a Rust process (`handle_alloc_error`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allocation_past_the_address_space_limit_loses_only_that_worker() {
    let pool = worker()
        .workers(1)
        .limit_address_space(256 * MIB)
        .build()
        .await
        .unwrap();
    let before = pool.worker_pids();
    assert_eq!(add(&pool, 1, 1).await, 2);
    match pool.call::<_, u64>("alloc", &1024u64).await {
        Err(CallError::WorkerLost { reason, .. }) => {
            assert!(
                matches!(reason, ExitReason::Ended(ProcessExit::Signal(_))),
                "{reason:?}"
            )
        }
        Err(CallError::Panicked { .. }) => {}
        other => panic!("expected WorkerLost or Panicked, got {other:?}"),
    }
    let held: u64 = pool.call("alloc", &16u64).await.unwrap();
    assert!(held >= 16 * MIB);
    assert_eq!(add(&pool, 2, 2).await, 4);
    stop_and_reap(pool, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_past_its_cpu_time_limit_is_lost_naming_the_signal() {
    let pool = worker().workers(1).limit_cpu_time(1).build().await.unwrap();
    let before = pool.worker_pids();
    let started = std::time::Instant::now();
    // `spin` counts wall-clock time: 30 s of it is over 1 s of CPU time even on a loaded
    // machine; unloaded, the worker is killed after about 1 s.
    match pool.call::<_, u64>("spin", &30_000u64).await {
        Err(CallError::WorkerLost { reason, .. }) => assert!(
            matches!(
                reason,
                ExitReason::Ended(ProcessExit::Signal(24) | ProcessExit::Signal(9))
            ),
            "{reason:?}"
        ),
        other => panic!("expected WorkerLost, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(25));
    replacement(&pool, &before).await;
    assert_eq!(add(&pool, 1, 1).await, 2);
    stop_and_reap(pool, &before).await;
}
