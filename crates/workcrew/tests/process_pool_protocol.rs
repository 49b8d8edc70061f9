//! The pool against `docs/protocol.md`: every MUST of the spec, one test each, named after its
//! section. Most run against a hand-written worker (`tests/support/raw_worker.py`, no SDK) that
//! sends exactly the bytes under test; a few against the Rust demo worker.
//!
//! | § | MUST | test |
//! |---|------|------|
//! | 1 | the worker exits when the pool closes its end (a worker that does not is killed) | [`s1_a_worker_that_ignores_the_end_of_its_channel_is_still_reaped`] |
//! | 2 | `length` at least 9 | [`s2_a_frame_length_below_9_breaks_the_channel`] |
//! | 2 | `length` at most `max_frame`, one rule both ways, checked at the header | [`s2_a_call_of_exactly_max_frame_is_sent_and_one_byte_more_is_refused`], [`s2_a_result_of_exactly_max_frame_is_taken_and_one_byte_more_breaks_the_channel`], [`s2_an_oversize_header_breaks_the_channel_without_waiting_for_its_body`] |
//! | 2 | `max_frame` announced at least 4096 | [`s2_the_announced_max_frame_is_at_least_4096`] |
//! | 2 | an unknown `type` breaks the channel | [`s2_an_unknown_frame_type_breaks_the_channel`] |
//! | 3.1 | `HELLO` first, within the ready timeout | `process_pool_faults`: `a_worker_that_never_says_hello_is_not_ready_and_is_reaped`, `a_worker_whose_first_frame_is_not_hello_fails_the_handshake` |
//! | 3.1 | `HELLO` id 0, `concurrency` at least 1 | [`s3_1_a_hello_with_an_id_other_than_0_fails_the_start`], [`s3_1_a_hello_announcing_concurrency_0_fails_the_start`] |
//! | 3.1 | unknown `HELLO` fields ignored | [`s3_1_unknown_hello_fields_are_ignored`] |
//! | 3.1 | no `CALL_MANY` to a worker without `batch` | [`s3_1_map_sends_no_call_many_to_a_worker_without_batch`] |
//! | 3.1 | no `CALL_FDS` nor descriptor to a worker without `fds` | [`s3_1_no_descriptor_goes_to_a_worker_without_fds`] |
//! | 3.2 | `WELCOME`: the lower version; a worker speaking none is refused | [`s3_2_welcome_speaks_the_lower_version_and_version_0_is_refused`] |
//! | 3.2 | nothing but `HELLO` before `WELCOME` | [`s3_2_a_frame_sent_before_welcome_is_a_protocol_violation`] |
//! | 3.3 | exactly one answer per call: repeated or unknown ids | [`s3_3_a_second_answer_to_a_call_is_a_protocol_violation`], [`s3_3_an_answer_to_a_call_never_sent_is_a_protocol_violation`] |
//! | 3.4 | a lost call names why and how its worker ended | [`s3_4_a_lost_call_says_why_and_how_its_worker_ended`] |
//! | 3.5 | unknown error kinds are `internal` | [`s3_5_an_unknown_error_kind_is_treated_as_internal`] |
//! | 3.6 | a cancel unanswered past the grace kills the worker; no more calls than its concurrency | `process_pool_endings` (drop, token, timeout), `process_pool_faults::a_hung_sync_call_times_out_and_its_worker_is_killed_and_replaced` |
//! | 3.6 | the worker answers a cancelled call only once its function ended; ignores an unknown `CANCEL` | worker side: `worker_sdk`, `python_worker` |
//! | 3.7 | `PONG` with the `PING`'s id | [`s3_7_pongs_with_the_wrong_nonce_do_not_count`], [`s3_7_an_idle_worker_answering_pings_is_kept`] |
//! | 3.8 | after `SHUTDOWN` the worker exits with status 0 | [`s3_8_a_worker_told_to_shut_down_exits_with_status_0`] |
//! | 3.8 | the stop sequence, each step bounded | `process_pool_endings` (stop), `process_pool_behaviour::stop_kills_a_worker_that_ignores_shutdown_and_sigterm` |
//! | 3.10 | descriptors and frames in step | worker side: `worker_sdk`, `python_worker` |
//! | 4 | one encoding for all the workers of a pool | [`s4_a_later_worker_that_does_not_accept_the_pool_s_encoding_fails_its_start`] |

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use workcrew::process::{
    CallError, ExitReason, ProcessEvent, ProcessExit, ProcessPool, ProcessPoolBuilder, StartError,
    WorkerCommand,
};
use workcrew::protocol::Encoding;

mod support;
use support::processes::{all_gone, python, support_file, until, within};

const BOUND: Duration = Duration::from_secs(20);

/// The raw worker, one of it.
fn raw() -> ProcessPoolBuilder {
    ProcessPool::builder(python())
        .arg(support_file("raw_worker.py"))
        .workers(1)
}

fn raw_command() -> WorkerCommand {
    WorkerCommand::new(python()).arg(support_file("raw_worker.py"))
}

/// A pool under test and every worker pid it had.
struct Run {
    pool: ProcessPool,
    pids: Arc<Mutex<Vec<u32>>>,
    exits: Arc<Mutex<Vec<ProcessEvent>>>,
}

impl Run {
    async fn start(builder: ProcessPoolBuilder) -> Run {
        let pool = within("build", BOUND, builder.build())
            .await
            .expect("the raw worker starts");
        let pids = Arc::new(Mutex::new(pool.worker_pids()));
        let exits = Arc::new(Mutex::new(Vec::new()));
        let mut events = pool.events();
        let (p, e) = (Arc::clone(&pids), Arc::clone(&exits));
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                match &event {
                    ProcessEvent::Spawned { pid, .. } => p.lock().unwrap().push(*pid),
                    ProcessEvent::Exited { .. } => e.lock().unwrap().push(event),
                    _ => {}
                }
            }
        });
        Run { pool, pids, exits }
    }

    /// A call that must fail as lost: its reason.
    async fn lost(&self, function: &str, args: Value) -> ExitReason {
        match within("a call", BOUND, self.pool.call::<_, Value>(function, &args)).await {
            Err(CallError::WorkerLost { reason, .. }) => reason,
            other => panic!("expected WorkerLost, got {other:?}"),
        }
    }

    /// Stops the pool; no worker process is left.
    async fn finish(self) {
        within("stop", BOUND, self.pool.stop()).await;
        let pids = self.pids.lock().unwrap().clone();
        assert!(
            all_gone(&pids).await,
            "a worker of {pids:?} outlived the pool"
        );
    }
}

fn violation(reason: &ExitReason, mentions: &str) {
    match reason {
        ExitReason::ProtocolViolation { what } => {
            assert!(
                what.contains(mentions),
                "{what:?} should mention {mentions:?}"
            )
        }
        other => panic!("expected a protocol violation, got {other:?}"),
    }
}

/// A handshake that must fail: its reason.
async fn refused(builder: ProcessPoolBuilder) -> String {
    match within("build", BOUND, builder.build()).await {
        Err(StartError::Handshake { reason, .. }) => reason,
        Err(other) => panic!("expected a handshake error, got {other:?}"),
        Ok(pool) => {
            pool.stop().await;
            panic!("the worker started")
        }
    }
}

/// A file name no other test uses.
fn marker(name: &str) -> String {
    std::env::temp_dir()
        .join(format!("workcrew-protocol-{}-{name}", std::process::id()))
        .display()
        .to_string()
}

/// §1: a worker that ignores `SHUTDOWN` and the end of its channel is still reaped when its
/// pool is dropped (stop signal, then `SIGKILL`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_a_worker_that_ignores_the_end_of_its_channel_is_still_reaped() {
    let pool = within(
        "build",
        BOUND,
        raw()
            .env("RAW_ON_EOF", "sleep")
            .stop_timeout(Duration::from_millis(200))
            .build(),
    )
    .await
    .unwrap();
    let pids = pool.worker_pids();
    drop(pool);
    assert!(all_gone(&pids).await, "the worker outlived its pool");
}

/// §2: a frame `length` below 9 breaks the channel: the worker is killed and its call lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_a_frame_length_below_9_breaks_the_channel() {
    let run = Run::start(raw()).await;
    let reason = run.lost("send", json!("000000080000000000000000")).await;
    violation(&reason, "shorter");
    run.finish().await;
}

/// §2: a `CALL` whose `length` is exactly `max_frame` is sent; one byte more is refused before
/// it is sent, naming its `length`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_a_call_of_exactly_max_frame_is_sent_and_one_byte_more_is_refused() {
    let pool = ProcessPool::builder(env!("CARGO_BIN_EXE_workcrew-demo-worker"))
        .workers(1)
        .max_frame(4096)
        .encoding(Encoding::Json)
        .build()
        .await
        .unwrap();
    // length = 9 (type, id) + 2 (name length) + 4 ("echo") + the JSON string (k + 2 bytes).
    let at_limit = "a".repeat(4096 - 17);
    let echoed = within(
        "a call at the limit",
        BOUND,
        pool.call::<_, String>("echo", &at_limit),
    )
    .await;
    let over = within(
        "a call over the limit",
        BOUND,
        pool.call::<_, String>("echo", &"a".repeat(4096 - 16)),
    )
    .await;
    let pids = pool.worker_pids();
    within("stop", BOUND, pool.stop()).await;
    assert!(all_gone(&pids).await);
    assert_eq!(
        echoed.expect("a call of exactly max_frame is sent"),
        at_limit
    );
    match over {
        Err(CallError::TooLarge { size, max, .. }) => assert_eq!((size, max), (4097, 4096)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

/// §2, the other way: a `RESULT` whose `length` is exactly `max_frame` is taken; one byte more
/// breaks the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_a_result_of_exactly_max_frame_is_taken_and_one_byte_more_breaks_the_channel() {
    let run = Run::start(raw().max_frame(4096)).await;
    let at_limit: String = within("at the limit", BOUND, run.pool.call("result_of", &4096))
        .await
        .expect("a result of exactly max_frame is taken");
    assert_eq!(at_limit.len(), 4096 - 11);
    let reason = run.lost("result_of", json!(4097)).await;
    violation(&reason, "exceeds the maximum frame size of 4096");
    run.finish().await;
}

/// §2: a header announcing more than `max_frame` breaks the channel at once: the pool does not
/// wait for (nor read) a body that never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_an_oversize_header_breaks_the_channel_without_waiting_for_its_body() {
    let run = Run::start(raw()).await;
    // length 16 MiB + 1, type RESULT, id 1: nothing follows.
    let reason = run.lost("send", json!("01000001040000000000000001")).await;
    violation(&reason, "exceeds the maximum frame size");
    run.finish().await;
}

/// §2: `max_frame` is announced at least 4096, even when the pool is configured lower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_the_announced_max_frame_is_at_least_4096() {
    let run = Run::start(raw().max_frame(100)).await;
    let welcome: Value = within("welcome", BOUND, run.pool.call("welcome", &()))
        .await
        .unwrap();
    assert_eq!(welcome["max_frame"], 4096);
    run.finish().await;
}

/// §2: an unknown frame `type` breaks the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_an_unknown_frame_type_breaks_the_channel() {
    let run = Run::start(raw()).await;
    let reason = run.lost("send", json!("00000009630000000000000000")).await;
    violation(&reason, "unknown frame type 99");
    run.finish().await;
}

/// §3.1: a `HELLO` whose id is not 0 fails the worker's start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_1_a_hello_with_an_id_other_than_0_fails_the_start() {
    let reason = refused(raw().env("RAW_HELLO_ID", "7")).await;
    assert!(reason.contains("id 7"), "{reason}");
}

/// §3.1: a `HELLO` announcing `concurrency: 0` fails the worker's start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_1_a_hello_announcing_concurrency_0_fails_the_start() {
    let reason = refused(raw().env("RAW_HELLO", r#"{"concurrency": 0}"#)).await;
    assert!(reason.contains("concurrency 0"), "{reason}");
}

/// §3.1: unknown `HELLO` fields are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_1_unknown_hello_fields_are_ignored() {
    let run = Run::start(raw().env(
        "RAW_HELLO",
        r#"{"colour": "teal", "future": {"nested": [1, 2]}}"#,
    ))
    .await;
    let echoed: String = within("echo", BOUND, run.pool.call("echo", "fine"))
        .await
        .unwrap();
    assert_eq!(echoed, "fine");
    run.finish().await;
}

/// §3.1: `map` sends a worker that did not announce `batch: true` one `CALL` per item, never a
/// `CALL_MANY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_1_map_sends_no_call_many_to_a_worker_without_batch() {
    let run = Run::start(raw()).await;
    let out: Vec<u32> = within("map", BOUND, run.pool.map("echo", 0..50u32))
        .await
        .unwrap();
    assert_eq!(out, (0..50).collect::<Vec<_>>());
    let frames: Value = within("frames", BOUND, run.pool.call("frames", &()))
        .await
        .unwrap();
    let types: Vec<u64> = serde_json::from_value(frames["types"].clone()).unwrap();
    assert!(
        types.iter().all(|&t| t == 3),
        "frame types received: {types:?}"
    );
    assert_eq!(types.len(), 51);
    run.finish().await;
}

/// §3.1: a call with descriptors is not sent to a worker that did not announce `fds: true`: it
/// fails with `NoFdPassing`, and the worker got no `CALL_FDS` and no descriptor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_1_no_descriptor_goes_to_a_worker_without_fds() {
    let run = Run::start(raw()).await;
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let sent = within(
        "a call with a descriptor",
        BOUND,
        run.pool
            .call_with_fds::<_, Value>("echo", "x", vec![a.into()]),
    )
    .await;
    assert!(
        matches!(&sent, Err(CallError::NoFdPassing(f)) if f == "echo"),
        "{sent:?}"
    );
    let frames: Value = within("frames", BOUND, run.pool.call("frames", &()))
        .await
        .unwrap();
    assert_eq!(frames, json!({"types": [3], "fds": 0}));
    run.finish().await;
}

/// §3.2: `WELCOME` speaks the lower of the two versions; a worker that speaks only version 0
/// is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_2_welcome_speaks_the_lower_version_and_version_0_is_refused() {
    let run = Run::start(raw().env("RAW_HELLO", r#"{"protocol": 7}"#)).await;
    let welcome: Value = within("welcome", BOUND, run.pool.call("welcome", &()))
        .await
        .unwrap();
    assert_eq!(welcome["protocol"], 1);
    assert_eq!(welcome["encoding"], "json");
    run.finish().await;
    let reason = refused(raw().env("RAW_HELLO", r#"{"protocol": 0}"#)).await;
    assert!(reason.contains("protocol"), "{reason}");
}

/// §3.2: a worker that sends a frame other than `HELLO` before its `WELCOME` (here an answer
/// to a call it cannot have) is killed as a protocol violation, and replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_2_a_frame_sent_before_welcome_is_a_protocol_violation() {
    let once = marker("early");
    let run = Run::start(
        raw()
            .env("RAW_ONCE", &once)
            // RESULT id 1, body `1`.
            .env("RAW_EARLY", "0000000a04000000000000000131"),
    )
    .await;
    until("the early worker is killed", BOUND, || {
        !run.exits.lock().unwrap().is_empty()
    })
    .await;
    let exited = run.exits.lock().unwrap()[0].clone();
    match exited {
        ProcessEvent::Exited {
            reason, expected, ..
        } => {
            violation(&reason, "does not hold");
            assert!(!expected);
        }
        other => panic!("{other:?}"),
    }
    let echoed: String = within("the replacement", BOUND, run.pool.call("echo", "next"))
        .await
        .unwrap();
    assert_eq!(echoed, "next");
    run.finish().await;
    let _ = std::fs::remove_file(once);
}

/// §3.3: a second answer to a call is a protocol violation: the worker is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_3_a_second_answer_to_a_call_is_a_protocol_violation() {
    let run = Run::start(raw()).await;
    let first = run.pool.worker_pids();
    // The first answer is the call's; the second is read with it, or just after.
    let answered = within("twice", BOUND, run.pool.call::<_, u32>("twice", &())).await;
    assert_eq!(answered.unwrap(), 1);
    until("the worker is killed", BOUND, || {
        !run.exits.lock().unwrap().is_empty()
    })
    .await;
    match &run.exits.lock().unwrap()[0] {
        ProcessEvent::Exited { reason, pid, .. } => {
            assert_eq!(*pid, first[0]);
            violation(reason, "already answered");
        }
        other => panic!("{other:?}"),
    }
    assert!(all_gone(&first).await);
    run.finish().await;
}

/// §3.3: an answer for a call id the worker never got is a protocol violation: the worker is
/// killed and the call it held fails as lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_3_an_answer_to_a_call_never_sent_is_a_protocol_violation() {
    let run = Run::start(raw()).await;
    let reason = run.lost("stray", json!(null)).await;
    violation(&reason, "call 999999");
    run.finish().await;
}

/// §3.4: a lost call names why its worker ended and how: here a signal the pool did not send
/// (the test's `SIGKILL`) ended it while it held the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_4_a_lost_call_says_why_and_how_its_worker_ended() {
    let run = Run::start(raw()).await;
    let pid = run.pool.worker_pids()[0];
    let call = tokio::spawn({
        let pool = run.pool.clone();
        async move { pool.call::<_, Value>("sleep", &60).await }
    });
    until("the call runs", BOUND, || run.pool.stats().busy == 1).await;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    match within("the call", BOUND, call).await.unwrap() {
        Err(CallError::WorkerLost {
            pid: lost,
            reason,
            status,
            ..
        }) => {
            assert_eq!(lost, pid);
            assert_eq!(reason, ExitReason::Ended(ProcessExit::Signal(9)));
            assert_eq!(status, ProcessExit::Signal(9));
        }
        other => panic!("expected WorkerLost, got {other:?}"),
    }
    run.finish().await;
}

/// §3.5: an error kind the pool does not know is treated as `internal`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_5_an_unknown_error_kind_is_treated_as_internal() {
    let run = Run::start(raw()).await;
    let err = within(
        "error_kind",
        BOUND,
        run.pool.call::<_, Value>("error_kind", "weird"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, CallError::Worker { message, .. } if message == "odd kind"),
        "{err:?}"
    );
    // The worker goes on serving.
    let echoed: String = within("echo", BOUND, run.pool.call("echo", "on"))
        .await
        .unwrap();
    assert_eq!(echoed, "on");
    run.finish().await;
}

/// §3.7: `PONG`s that do not carry the `PING`'s id do not count: the worker is killed as hung
/// after three heartbeat intervals, and its call fails as lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_7_pongs_with_the_wrong_nonce_do_not_count() {
    let run = Run::start(
        raw()
            .env("RAW_PONG_ADD", "1000")
            .heartbeat(Some(Duration::from_millis(100))),
    )
    .await;
    let reason = run.lost("sleep", json!(60)).await;
    assert_eq!(reason, ExitReason::HeartbeatMissed);
    run.finish().await;
}

/// §3.7: a worker that answers its pings is kept, idle or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_7_an_idle_worker_answering_pings_is_kept() {
    let run = Run::start(raw().heartbeat(Some(Duration::from_millis(50)))).await;
    let first = run.pool.worker_pids();
    tokio::time::sleep(Duration::from_millis(600)).await; // a dozen heartbeats
    let slept: String = within("sleep", BOUND, run.pool.call("sleep", &0.3))
        .await
        .unwrap();
    assert_eq!(slept, "slept");
    assert_eq!(run.pool.worker_pids(), first);
    assert_eq!(run.pool.stats().crashed, 0);
    run.finish().await;
}

/// §3.8: a worker told to shut down exits with status 0; the pool reports it as stopped, as it
/// meant to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_8_a_worker_told_to_shut_down_exits_with_status_0() {
    let run = Run::start(raw()).await;
    let pid = run.pool.worker_pids()[0];
    let exits = Arc::clone(&run.exits);
    run.finish().await;
    until("the Exited event", BOUND, || {
        !exits.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(
        exits.lock().unwrap()[0],
        ProcessEvent::Exited {
            worker: 1,
            pid,
            status: ProcessExit::Code(0),
            reason: ExitReason::Stopped,
            expected: true,
            lost_calls: 0,
        }
    );
}

/// §4: the pool's encoding is settled by its first workers; a later worker that does not accept
/// it fails its start (here a reload to workers that accept only postcard).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_a_later_worker_that_does_not_accept_the_pool_s_encoding_fails_its_start() {
    let run = Run::start(raw()).await;
    let postcard_only = raw_command().env("RAW_HELLO", r#"{"encodings": ["postcard"]}"#);
    match within("reload", BOUND, run.pool.reload(postcard_only)).await {
        Err(StartError::Handshake { reason, .. }) => {
            assert!(reason.contains("encoding"), "{reason}")
        }
        other => panic!("expected a handshake error, got {other:?}"),
    }
    let echoed: String = within("echo", BOUND, run.pool.call("echo", "old generation"))
        .await
        .unwrap();
    assert_eq!(echoed, "old generation");
    run.finish().await;
}
