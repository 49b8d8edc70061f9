//! The Node.js worker (`workers/node/serve.js`) under the real process pool: the fault matrix of
//! `process_pool_faults.rs` and `python_worker.rs`, where it applies to Node. The served modules
//! are in `tests/support/node/` (CommonJS, ESM, a `"type": "module"` package, a default export,
//! a program that calls `serve` itself); `functions.js` has one function per behaviour or fault
//! and a `state` function that tells what ran in the worker. The worker's side of the protocol
//! (malformed frames, ids, exit codes) is tested over a raw socket in `node_worker_protocol.rs`.
//!
//! `node` (18 or newer) must be on `PATH`: without it these tests fail, they do not skip.
//!
//! Real time, small durations and generous bounds (the workers are real processes). Every test
//! ends by checking in `/proc` that no worker process it started is left, zombies included.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use workcrew::process::{
    CallError, CallOptions, ProcessEvent, ProcessPool, ProcessPoolBuilder, StartError,
};

mod support;
use support::node::{module, node, serve_js};
use support::processes::{all_gone, replacement};

/// A last resort against a hung test; far above any duration a test uses.
const BOUND: Duration = Duration::from_secs(30);

/// A pool of `node serve.js <module>` workers.
fn worker(name: &str) -> ProcessPoolBuilder {
    ProcessPool::builder(node())
        .arg(serve_js())
        .arg(module(name))
}

/// Awaits `fut`, failing the test instead of hanging.
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match timeout(BOUND, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {BOUND:?}"),
    }
}

/// Stops the pool and checks that every worker it had (`seen`, and the live ones) is reaped.
async fn stop_and_reap(pool: ProcessPool, seen: &[u32]) {
    let mut pids = seen.to_vec();
    pids.extend(pool.worker_pids());
    within("stop", pool.stop()).await;
    assert!(all_gone(&pids).await, "a worker of {pids:?} outlived stop");
}

/// What ran in the (only) worker: `{running, peak, aborted, ids}` from `functions.js`.
async fn state(pool: &ProcessPool) -> Value {
    within("state", pool.call("state", &()))
        .await
        .expect("state")
}

/// Polls the worker's state (bounded) until `done` holds; returns it.
async fn until_state(pool: &ProcessPool, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let s = state(pool).await;
        if done(&s) {
            return s;
        }
        assert!(
            start.elapsed() < BOUND,
            "timed out waiting until {what}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The functions the first worker announced (its `Ready` event).
async fn announced(pool: &ProcessPool) -> Vec<String> {
    let mut events = pool.events();
    loop {
        match within("a Ready event", events.next()).await {
            Some(ProcessEvent::Ready { functions, .. }) => return functions,
            Some(_) => {}
            None => panic!("the event stream ended"),
        }
    }
}

async fn add(pool: &ProcessPool, a: i64, b: i64) -> i64 {
    within("add", pool.call("add", &(a, b))).await.expect("add")
}

// ---------------------------------------------------------------------------------------------
// Values and the calling convention
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_values_round_trip_and_an_array_payload_is_the_argument_list() {
    let pool = worker("functions.js").workers(1).build().await.unwrap();
    for v in [
        json!("héllo ✓ \u{1F600}"),
        json!({"a": [1, 2, {"b": null}], "c": "d"}),
        json!(null),
        json!(true),
        json!(-1.5),
        json!(9_007_199_254_740_991_i64),
    ] {
        let back: Value = pool.call("echo", &v).await.unwrap();
        assert_eq!(back, v);
    }
    // A tuple is the argument list: `(2, 3)` calls `add(2, 3)`.
    assert_eq!(add(&pool, 2, 3).await, 5);
    // So an array is spread too; one array argument travels as a one-element tuple.
    assert_eq!(pool.call::<_, i64>("echo", &[7, 8]).await.unwrap(), 7);
    let list: Vec<i64> = pool.call("echo", &(vec![1, 2, 3],)).await.unwrap();
    assert_eq!(list, [1, 2, 3]);
    // Async functions are awaited.
    let greeting: String = pool.call("greet", "ann").await.unwrap();
    assert_eq!(greeting, "hello ann");
    let functions = announced(&pool).await;
    for f in ["add", "echo", "greet", "state", "wait", "square"] {
        assert!(functions.iter().any(|g| g == f), "{f} in {functions:?}");
    }
    stop_and_reap(pool, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn esm_modules_default_exports_and_a_program_calling_serve_are_served() {
    // ESM (.mjs): named exports and the functions of an object default export (`this` is it).
    let esm = worker("esm_functions.mjs")
        .workers(1)
        .build()
        .await
        .unwrap();
    assert_eq!(announced(&esm).await, ["later", "mark", "shout", "triple"]);
    assert_eq!(esm.call::<_, i64>("triple", &4).await.unwrap(), 12);
    let later: Value = esm.call("later", &5).await.unwrap();
    assert_eq!(later, json!({"x": 5, "aborted": false}));
    assert_eq!(esm.call::<_, String>("shout", "hi").await.unwrap(), "HI!");
    stop_and_reap(esm, &[]).await;

    // CommonJS `module.exports = fn`: `default`, and its function properties.
    let cjs = worker("default_function.cjs")
        .workers(1)
        .build()
        .await
        .unwrap();
    assert_eq!(announced(&cjs).await, ["default", "twice"]);
    assert_eq!(cjs.call::<_, i64>("default", &1).await.unwrap(), 2);
    assert_eq!(cjs.call::<_, i64>("twice", &4).await.unwrap(), 8);
    stop_and_reap(cjs, &[]).await;

    // ESM in a `.js` file of a `"type": "module"` package.
    let typed = worker("type_module/functions.js")
        .workers(1)
        .build()
        .await
        .unwrap();
    assert_eq!(typed.call::<_, i64>("negate", &3).await.unwrap(), -3);
    stop_and_reap(typed, &[]).await;

    // A program of its own that imports `serve` (CommonJS) from ESM.
    let own = ProcessPool::builder(node())
        .arg(module("programmatic.mjs"))
        .workers(1)
        .build()
        .await
        .unwrap();
    assert_eq!(announced(&own).await, ["concat"]);
    assert_eq!(
        own.call::<_, String>("concat", &("a", 1)).await.unwrap(),
        "a1"
    );
    stop_and_reap(own, &[]).await;
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thrown_errors_are_failed_with_message_and_data_and_the_same_worker_keeps_serving() {
    let pool = worker("functions.js").workers(1).build().await.unwrap();
    let before = pool.worker_pids();
    match pool.call::<_, ()>("fail", "no luck").await {
        Err(CallError::Failed {
            function,
            message,
            data,
        }) => {
            assert_eq!((function.as_str(), message.as_str()), ("fail", "no luck"));
            assert_eq!(data, Some(json!({"reason": "no luck"})));
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    match pool.call::<_, ()>("failAsync", "rejected").await {
        Err(CallError::Failed { message, data, .. }) => {
            assert_eq!((message.as_str(), data), ("rejected", None));
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    match pool.call::<_, ()>("throwString", &()).await {
        Err(CallError::Failed { message, .. }) => assert_eq!(message, "a plain string"),
        other => panic!("expected Failed, got {other:?}"),
    }
    // A result JSON cannot carry (a BigInt) is the worker's `internal` error.
    match pool.call::<_, Value>("bigint", &()).await {
        Err(CallError::Worker { message, .. }) => {
            assert!(message.contains("not JSON"), "{message}")
        }
        other => panic!("expected Worker, got {other:?}"),
    }
    // Unknown names are answered by the pool from the worker's HELLO.
    assert!(matches!(
        pool.call::<_, ()>("no_such_function", &()).await,
        Err(CallError::UnknownFunction(name)) if name == "no_such_function"
    ));
    let pid: u32 = pool.call("pid", &()).await.unwrap();
    assert_eq!(vec![pid], before, "the same worker answers");
    stop_and_reap(pool, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_above_the_maximum_frame_is_too_large_and_the_worker_keeps_serving() {
    let pool = worker("functions.js")
        .workers(1)
        .max_frame(4096)
        .build()
        .await
        .unwrap();
    let before = pool.worker_pids();
    match pool.call::<_, String>("repeat", &10_000).await {
        Err(CallError::Worker { message, .. }) => {
            assert!(message.contains("maximum frame size"), "{message}")
        }
        other => panic!("expected the worker's too_large error, got {other:?}"),
    }
    let fits: String = pool.call("repeat", &4000).await.unwrap();
    assert_eq!(fits.len(), 4000);
    assert_eq!(pool.worker_pids(), before);
    stop_and_reap(pool, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_descriptors_are_refused_before_reaching_a_node_worker() {
    let pool = worker("functions.js").workers(1).build().await.unwrap();
    let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    assert!(matches!(
        pool.call_with_fds::<_, String>("echo", "x", vec![ours.into()]).await,
        Err(CallError::NoFdPassing(name)) if name == "echo"
    ));
    assert_eq!(add(&pool, 1, 1).await, 2);
    stop_and_reap(pool, &[]).await;
}

// ---------------------------------------------------------------------------------------------
// Crashes and faults
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_exit_fails_only_its_call_with_the_exit_code_and_the_worker_is_replaced() {
    let pool = worker("functions.js").workers(2).build().await.unwrap();
    let before = pool.worker_pids();
    // `join!` polls in order: the crash is routed first, the wait to the other worker.
    let (crashed, other) = tokio::join!(
        pool.call::<_, ()>("crash", &3),
        pool.call::<_, String>("wait", &300)
    );
    assert_eq!(
        other.unwrap(),
        "waited",
        "the other worker's call is unaffected"
    );
    let err = crashed.unwrap_err();
    assert!(
        matches!(&err, CallError::WorkerLost { pid, .. } if before.contains(pid)),
        "{err:?}"
    );
    assert!(err.to_string().contains("exit code 3"), "{err}");
    replacement(&pool, &before).await;
    assert_eq!(add(&pool, 3, 4).await, 7);
    stop_and_reap(pool, &before).await;
}

/// An exception thrown from a timer, or a rejection nobody handles, is no call's error: Node
/// ends the process with exit code 1, and the call it held fails as lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_outside_any_call_ends_the_worker_with_exit_code_1() {
    let pool = worker("functions.js").workers(1).build().await.unwrap();
    let mut seen = pool.worker_pids();
    for function in ["throwLater", "rejectLater"] {
        let before = pool.worker_pids();
        let err = within(function, pool.call::<_, ()>(function, &()))
            .await
            .unwrap_err();
        assert!(err.is_worker_lost(), "{function}: {err:?}");
        assert!(err.to_string().contains("exit code 1"), "{function}: {err}");
        seen.extend(replacement(&pool, &before).await);
    }
    assert_eq!(add(&pool, 1, 1).await, 2);
    stop_and_reap(pool, &seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_abort_is_worker_lost_naming_signal_6() {
    let pool = worker("functions.js").workers(1).build().await.unwrap();
    let before = pool.worker_pids();
    let err = pool.call::<_, ()>("abort", &()).await.unwrap_err();
    assert!(err.is_worker_lost(), "{err:?}");
    assert!(err.to_string().contains("signal 6"), "{err}");
    replacement(&pool, &before).await;
    assert_eq!(add(&pool, 1, 1).await, 2);
    stop_and_reap(pool, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_channel_loses_the_call_and_the_worker_is_killed_and_replaced() {
    let pool = worker("functions.js").workers(1).build().await.unwrap();
    let before = pool.worker_pids();
    let err = within("garbage", pool.call::<_, ()>("garbage", &()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::WorkerLost { pid, .. } if before.contains(pid)),
        "{err:?}"
    );
    assert!(all_gone(&before).await, "the worker is killed and reaped");
    replacement(&pool, &before).await;
    assert_eq!(add(&pool, 2, 3).await, 5);
    stop_and_reap(pool, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_spam_on_stdout_and_stderr_does_not_disturb_the_channel() {
    let pool = worker("functions.js").workers(1).build().await.unwrap();
    let before = pool.worker_pids();
    let (spammed, sum) = tokio::join!(
        pool.call::<_, u32>("spam", &2000),
        pool.call::<_, i64>("add", &(1, 2))
    );
    assert_eq!((spammed.unwrap(), sum.unwrap()), (2000, 3));
    assert_eq!(add(&pool, 5, 5).await, 10);
    assert_eq!(pool.worker_pids(), before);
    stop_and_reap(pool, &before).await;
}

// ---------------------------------------------------------------------------------------------
// Timeouts, cancellation, heartbeats
// ---------------------------------------------------------------------------------------------

/// The cancel rule: on `CANCEL` the call's `AbortSignal` fires; the function ends (here by
/// rejecting with the abort reason) and only then is the call answered, so the worker is not
/// killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_call_sees_its_signal_ends_and_the_worker_stays() {
    let grace = Duration::from_millis(500);
    let pool = worker("functions.js")
        .env("WORKCREW_NODE_CONCURRENCY", "4")
        .workers(1)
        .cancel_grace(grace)
        .build()
        .await
        .unwrap();
    let before = pool.worker_pids();
    let options = CallOptions::new().timeout(Duration::from_millis(300));
    let err = within(
        "wait",
        pool.call_with::<_, String>("wait", &60_000, &options),
    )
    .await
    .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let s = until_state(&pool, "the call saw its signal", |s| {
        s["aborted"].as_array().unwrap().len() == 1
    })
    .await;
    assert_eq!(s["running"], 0, "the function ended: {s}");
    tokio::time::sleep(grace * 2).await; // past the cancel grace: no kill came
    let pid: u32 = pool.call("pid", &()).await.unwrap();
    assert_eq!(
        vec![pid],
        before,
        "the worker answered the cancel and stays"
    );
    stop_and_reap(pool, &before).await;
}

/// A function that ignores its signal is not answered "cancelled" while it runs on: the pool
/// kills the worker after its cancel grace and replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_ignores_its_signal_is_killed_after_the_grace_and_replaced() {
    let pool = worker("functions.js")
        .workers(1)
        .cancel_grace(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let before = pool.worker_pids();
    let options = CallOptions::new().timeout(Duration::from_millis(300));
    let err = within("ignore", pool.call_with::<_, ()>("ignore", &(), &options))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    replacement(&pool, &before).await;
    assert!(all_gone(&before).await, "the worker is killed and reaped");
    assert_eq!(add(&pool, 1, 1).await, 2);
    stop_and_reap(pool, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cancelled_by_its_token_or_by_dropping_it_stops_in_the_worker() {
    let pool = worker("functions.js")
        .env("WORKCREW_NODE_CONCURRENCY", "4")
        .workers(1)
        .build()
        .await
        .unwrap();
    let before = pool.worker_pids();

    let token = CancellationToken::new();
    let by_token = {
        let (pool, token) = (pool.clone(), token.clone());
        tokio::spawn(async move {
            let options = CallOptions::new().token(token);
            pool.call_with::<_, String>("wait", &60_000, &options).await
        })
    };
    until_state(&pool, "the call runs", |s| s["running"] == 1).await;
    token.cancel();
    let err = within("the cancelled call", by_token)
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.is_cancelled(), "{err:?}");
    let s = until_state(&pool, "the function ended", |s| s["running"] == 0).await;
    assert_eq!(s["aborted"].as_array().unwrap().len(), 1, "{s}");

    let dropped = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.call::<_, String>("wait", &60_000).await })
    };
    until_state(&pool, "the call runs", |s| s["running"] == 1).await;
    dropped.abort(); // drops the call's future
    assert!(within("the aborted task", dropped).await.is_err());
    let s = until_state(&pool, "the function ended", |s| s["running"] == 0).await;
    assert_eq!(s["aborted"].as_array().unwrap().len(), 2, "{s}");

    assert_eq!(pool.worker_pids(), before, "cancelling killed nothing");
    stop_and_reap(pool, &before).await;
}

/// A synchronous function blocks Node's event loop: a long one leaves `PING`s unanswered and
/// the pool kills the worker as hung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_synchronous_call_misses_heartbeats_and_its_worker_is_replaced() {
    let pool = worker("functions.js")
        .workers(1)
        .heartbeat(Some(Duration::from_millis(250)))
        .build()
        .await
        .unwrap();
    let before = pool.worker_pids();
    let err = within("freeze", pool.call::<_, u64>("freeze", &()))
        .await
        .unwrap_err();
    assert!(err.is_worker_lost(), "{err:?}");
    replacement(&pool, &before).await;
    assert!(all_gone(&before).await, "the frozen worker is reaped");
    assert_eq!(add(&pool, 1, 1).await, 2);
    stop_and_reap(pool, &before).await;
}

/// Calls held by one worker start one slice at a time: between two synchronous calls the
/// event loop reads the channel, so `PING`s are answered. Six calls of 300 ms (1.8 s in all)
/// on a worker whose heartbeat kills after 1.2 s of silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_between_synchronous_calls() {
    let pool = worker("functions.js")
        .env("WORKCREW_NODE_CONCURRENCY", "6")
        .workers(1)
        .heartbeat(Some(Duration::from_millis(400)))
        .build()
        .await
        .unwrap();
    let before = pool.worker_pids();
    let results = within(
        "six busy calls",
        futures::future::join_all((0..6).map(|_| pool.call::<_, u64>("busy", &300))),
    )
    .await;
    for r in results {
        r.unwrap();
    }
    assert_eq!(pool.worker_pids(), before, "no heartbeat kill");
    stop_and_reap(pool, &before).await;
}

// ---------------------------------------------------------------------------------------------
// Start-up
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_never_says_hello_is_not_ready_and_is_reaped() {
    let err = worker("functions.js")
        .env("NODE_TEST_MODE", "never_ready")
        .workers(1)
        .ready_timeout(Duration::from_millis(800))
        .build()
        .await
        .unwrap_err();
    match err {
        StartError::NotReady { pid, timeout } => {
            assert_eq!(timeout, Duration::from_millis(800));
            assert!(all_gone(&[pid]).await, "the unready worker is reaped");
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
}

/// Starts one worker that must fail its handshake; returns the reason, after checking that the
/// worker was reaped.
async fn handshake_failure(builder: ProcessPoolBuilder) -> String {
    match within("build", builder.workers(1).build()).await {
        Err(StartError::Handshake { pid, reason }) => {
            assert!(all_gone(&[pid]).await, "worker {pid} is reaped");
            reason
        }
        other => panic!("expected Handshake, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_failures_fail_the_build_naming_the_exit_code() {
    let exited =
        handshake_failure(worker("functions.js").env("NODE_TEST_MODE", "exit_before_hello")).await;
    assert!(exited.contains("exit code 3"), "{exited}");
    // The module cannot be loaded: 66.
    let threw =
        handshake_failure(worker("functions.js").env("NODE_TEST_MODE", "throw_on_load")).await;
    assert!(threw.contains("exit code 66"), "{threw}");
    let missing = handshake_failure(worker("no_such_module.js")).await;
    assert!(missing.contains("exit code 66"), "{missing}");
    // Usage errors: 64.
    let empty = handshake_failure(worker("no_functions.js")).await;
    assert!(empty.contains("exit code 64"), "{empty}");
    let zero =
        handshake_failure(worker("functions.js").env("WORKCREW_NODE_CONCURRENCY", "0")).await;
    assert!(zero.contains("exit code 64"), "{zero}");
    let no_module = handshake_failure(ProcessPool::builder(node()).arg(serve_js())).await;
    assert!(no_module.contains("exit code 64"), "{no_module}");
}

// ---------------------------------------------------------------------------------------------
// Concurrency and batches
// ---------------------------------------------------------------------------------------------

/// Eight calls of 100 ms on one worker: the worker itself counts the most that ran at once.
async fn peak_in_flight(builder: ProcessPoolBuilder) -> u64 {
    let pool = builder.workers(1).build().await.unwrap();
    let results = within(
        "eight calls",
        futures::future::join_all((0..8).map(|_| pool.call::<_, u32>("inflight", &100))),
    )
    .await;
    for r in results {
        r.unwrap();
    }
    let peak = state(&pool).await["peak"].as_u64().unwrap();
    stop_and_reap(pool, &[]).await;
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_never_runs_more_calls_than_the_concurrency_it_announced() {
    assert_eq!(peak_in_flight(worker("functions.js")).await, 1, "default 1");
    let by_env = worker("functions.js").env("WORKCREW_NODE_CONCURRENCY", "3");
    assert_eq!(peak_in_flight(by_env).await, 3);
    // The flag wins over the environment.
    let by_flag = ProcessPool::builder(node())
        .arg(serve_js())
        .arg("--concurrency")
        .arg("2")
        .arg(module("functions.js"))
        .env("WORKCREW_NODE_CONCURRENCY", "5");
    assert_eq!(peak_in_flight(by_flag).await, 2);
}

/// A module of `async` functions only: the worker holds many calls by default (1024), so all
/// eight run at once; one synchronous function among them (`functions.js`) keeps the default 1
/// (above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_of_async_functions_holds_many_calls_by_default() {
    assert_eq!(peak_in_flight(worker("async_functions.js")).await, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_sends_chunks_that_the_worker_runs_in_order() {
    let pool = worker("functions.js").workers(1).build().await.unwrap();
    let squares: Vec<i64> = within("map", pool.map("square", 0..5000i64)).await.unwrap();
    assert_eq!(squares, (0..5000).map(|i| i * i).collect::<Vec<_>>());
    // One call id per CALL_MANY chunk (1024 items), not one per item.
    let echoed: Vec<i64> = within("map", pool.map("recordId", 0..5000i64))
        .await
        .unwrap();
    assert_eq!(echoed, (0..5000).collect::<Vec<_>>());
    let ids = state(&pool).await["ids"].as_u64().unwrap();
    assert!((1..=10).contains(&ids), "{ids} call ids for 5000 items");
    // An async function, awaited item by item.
    let greetings: Vec<String> = pool.map("greet", ["a", "b", "c"]).await.unwrap();
    assert_eq!(greetings, ["hello a", "hello b", "hello c"]);
    // The first failing item, counted from the start of the input across chunks.
    match pool
        .map::<_, i64, _>(
            "square",
            (0..5000i64).map(|i| if i == 4321 { -i } else { i }),
        )
        .await
    {
        Err(CallError::Item { index, source }) => {
            assert_eq!(index, 4321);
            assert!(
                matches!(&*source, CallError::Failed { message, .. } if message == "negative: -4321"),
                "{source:?}"
            );
        }
        other => panic!("expected Item, got {other:?}"),
    }
    assert_eq!(add(&pool, 1, 1).await, 2);
    stop_and_reap(pool, &[]).await;
}

// ---------------------------------------------------------------------------------------------
// Stop
// ---------------------------------------------------------------------------------------------

/// The pool's `SHUTDOWN` makes each worker exit by itself: with a 30 s stop timeout, a worker
/// that ignored it would hold `stop` for 30 s before the stop signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sends_shutdown_and_every_worker_exits_by_itself() {
    let pool = worker("functions.js")
        .workers(2)
        .stop_timeout(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    let pids = pool.worker_pids();
    let mut events = pool.events();
    assert_eq!(add(&pool, 1, 2).await, 3);
    let started = Instant::now();
    within("stop", pool.stop()).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stop took {:?}: a worker waited for the stop signal",
        started.elapsed()
    );
    assert!(all_gone(&pids).await, "{pids:?} reaped");
    let mut exited = Vec::new();
    while let Some(e) = within("events", events.next()).await {
        if let ProcessEvent::Exited { pid, expected, .. } = e {
            assert!(expected, "worker {pid} exited as the pool meant it to");
            exited.push(pid);
        }
    }
    exited.sort_unstable();
    let mut pids = pids;
    pids.sort_unstable();
    assert_eq!(exited, pids);
}
