//! The process pool against real worker processes (the Python reference worker): calls and
//! typed errors, a burst spreading over the workers, a crash failing only its call, a worker
//! that never becomes ready, and no worker process outliving `stop` or the pool.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use workcrew::process::{CallError, ExitReason, ProcessExit, ProcessPool, StartError};

mod support;
use support::processes::{all_gone, replacement};

fn demo_worker() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../workers/python/demo_worker.py")
}

async fn pool(workers: usize) -> ProcessPool {
    ProcessPool::builder("python3")
        .arg(demo_worker())
        .workers(workers)
        .build()
        .await
        .expect("python3 must be installed to run the reference worker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_return_values_and_typed_errors() {
    let pool = pool(2).await;
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 2);

    let v: serde_json::Value = pool
        .call("echo", &serde_json::json!({"a": [1, 2]}))
        .await
        .unwrap();
    assert_eq!(v, serde_json::json!({"a": [1, 2]}));
    let s: String = pool.call("echo", "hi").await.unwrap();
    assert_eq!(s, "hi");

    match pool.call::<_, ()>("fail", &[7]).await {
        Err(CallError::Failed {
            function,
            message,
            data,
        }) => {
            assert_eq!(
                (function.as_str(), message.as_str()),
                ("fail", "asked to fail")
            );
            assert_eq!(data, Some(serde_json::json!({"args": [7]})));
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(matches!(
        pool.call::<_, ()>("panic", &()).await,
        Err(CallError::Panicked { .. })
    ));
    assert!(matches!(
        pool.call::<_, ()>("no_such_function", &()).await,
        Err(CallError::UnknownFunction(name)) if name == "no_such_function"
    ));
    // A result that is not the requested type is a payload error, not a panic.
    assert!(matches!(
        pool.call::<_, u32>("echo", "text").await,
        Err(CallError::Payload { .. })
    ));

    pool.stop().await;
    assert!(all_gone(&pids).await, "stop reaps every worker");
    assert!(matches!(
        pool.call::<_, String>("echo", "x").await,
        Err(CallError::Stopped)
    ));
}

/// Calls whose answers are already in all complete in one poll of the caller's task: a call's
/// wait for its answer spends none of tokio's cooperative budget (128 operations per task
/// poll). When it did (a `tokio::sync::oneshot`), many calls in one `FuturesUnordered` or
/// `join_all` inside a task took 128 answers per poll and spun on the rest: bursts from a task
/// ran 20-40 times slower than from `block_on` (`echo_in_task` in the process pool bench).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_calls_all_complete_in_one_poll_of_the_callers_task() {
    let pool = pool(2).await;
    let pids = pool.worker_pids();
    let in_task = pool.clone();
    let (in_one_poll, values) = tokio::spawn(async move {
        let pool = in_task;
        let n = 500u32;
        let mut calls: Vec<_> = (0..n)
            .map(|i| {
                let pool = &pool;
                Box::pin(async move { pool.call::<_, u32>("echo", &i).await })
            })
            .collect();
        // Each call is sent when first polled.
        for call in &mut calls {
            assert!(futures::poll!(call.as_mut()).is_pending());
        }
        // Then, without polling them, until the pool holds none (every answer read).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let stats = pool.stats();
            if stats.in_flight + stats.queued == 0 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{stats:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        // One pass, in one poll of this task (no await that yields in between).
        let mut values = vec![None; calls.len()];
        let mut in_one_poll = 0;
        for (i, call) in calls.iter_mut().enumerate() {
            if let std::task::Poll::Ready(v) = futures::poll!(call.as_mut()) {
                values[i] = Some(v.unwrap());
                in_one_poll += 1;
            }
        }
        for (i, call) in calls.iter_mut().enumerate() {
            if values[i].is_none() {
                values[i] = Some(call.await.unwrap());
            }
        }
        (in_one_poll, values)
    })
    .await
    .unwrap();
    assert!(
        in_one_poll > 128,
        "{in_one_poll} of 500 answered calls completed in one poll of their task"
    );
    assert!(values.iter().enumerate().all(|(i, v)| *v == Some(i as u32)));
    pool.stop().await;
    assert!(all_gone(&pids).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_spreads_over_the_workers() {
    let pool = pool(2).await;
    let calls = (0..20).map(|_| pool.call::<_, u32>("pid", &0.05));
    let served: std::collections::HashSet<u32> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let pids: std::collections::HashSet<u32> = pool.worker_pids().into_iter().collect();
    assert_eq!(served, pids, "both workers took calls from one burst");
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_fails_only_its_call_and_names_the_exit_code() {
    let pool = pool(2).await;
    let pids = pool.worker_pids();
    // `join!` polls in order: the crash call is routed (and counted) first, so the echo goes
    // to the other worker, the one with fewer calls in flight.
    let (crashed, other) = tokio::join!(
        pool.call::<_, ()>("crash", &3),
        pool.call::<_, String>("echo", "alive")
    );
    match crashed {
        Err(CallError::WorkerLost { reason, status, .. }) => {
            assert_eq!(reason, ExitReason::Ended(ProcessExit::Code(3)));
            assert_eq!(status, ProcessExit::Code(3));
        }
        other => panic!("expected WorkerLost, got {other:?}"),
    }
    assert_eq!(other.unwrap(), "alive");
    let s: String = pool.call("echo", "still serving").await.unwrap();
    assert_eq!(s, "still serving");
    // The pool returns to its size by itself, with a new process.
    let replaced = replacement(&pool, &pids).await;
    pool.stop().await;
    assert!(all_gone(&pids).await && all_gone(&replaced).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_call_is_cancelled_and_a_worker_that_ignores_it_is_killed_and_replaced() {
    let pool = ProcessPool::builder("python3")
        .arg(demo_worker())
        .workers(1)
        .call_timeout(Duration::from_millis(300))
        .cancel_grace(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let before = pool.worker_pids();
    // A worker that honours CANCEL answers and stays.
    let err = pool.call::<_, String>("sleep", &60).await.unwrap_err();
    assert!(err.is_timeout(), "got {err:?}");
    let s: String = pool.call("echo", "same worker").await.unwrap();
    assert_eq!(s, "same worker");
    assert_eq!(pool.worker_pids(), before);
    // One that ignores it is killed after the grace period and replaced.
    let err = pool.call::<_, String>("hang", &60).await.unwrap_err();
    assert!(err.is_timeout(), "got {err:?}");
    assert!(
        all_gone(&before).await,
        "the hung worker is killed and reaped"
    );
    let after = replacement(&pool, &before).await;
    let s: String = pool.call("echo", "new worker").await.unwrap();
    assert_eq!(s, "new worker");
    pool.stop().await;
    assert!(all_gone(&after).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_ends_with_a_clear_error_instead_of_spinning() {
    let pool = ProcessPool::builder("python3")
        .arg(demo_worker())
        .workers(1)
        .restart_budget(1, Duration::from_secs(600))
        .build()
        .await
        .unwrap();
    let first = pool.worker_pids();
    assert!(pool
        .call::<_, ()>("crash", &1)
        .await
        .unwrap_err()
        .is_worker_lost());
    let second = replacement(&pool, &first).await;
    assert!(pool
        .call::<_, ()>("crash", &1)
        .await
        .unwrap_err()
        .is_worker_lost());
    // The budget (1 restart) is spent: no third worker, and calls say why.
    let mut err = None;
    for _ in 0..500 {
        match pool.call::<_, String>("echo", "x").await {
            Err(CallError::CrashLoop { restarts, .. }) => {
                err = Some(restarts);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert_eq!(err, Some(1));
    assert!(pool.worker_pids().is_empty());
    assert!(all_gone(&first).await && all_gone(&second).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_never_says_hello_is_not_ready_and_is_reaped() {
    let err = ProcessPool::builder("sleep")
        .arg("30")
        .workers(1)
        .ready_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap_err();
    match err {
        StartError::NotReady { pid, timeout } => {
            assert_eq!(timeout, Duration::from_millis(300));
            assert!(
                all_gone(&[pid]).await,
                "the unready worker is killed and reaped"
            );
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
    let missing = ProcessPool::builder("/no/such/program")
        .build()
        .await
        .unwrap_err();
    assert!(matches!(missing, StartError::Spawn { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_pool_stops_its_workers() {
    let pool = pool(2).await;
    let pids = pool.worker_pids();
    drop(pool);
    assert!(all_gone(&pids).await, "no worker outlives its pool");
}

/// A pipeline stage backed by the process pool: items go through a worker function in order,
/// and a failing call stops the run with the stage's name and the item's index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_stage_runs_in_worker_processes() {
    use workcrew::pipeline::{Pipeline, PipelineError};

    let pool = pool(2).await;
    let out = Pipeline::from_iter(0..50u32)
        .stage_process("remote-echo", 4, pool.clone(), "echo")
        .stage(
            "double",
            2,
            |n: u32| async move { Ok::<_, CallError>(n * 2) },
        )
        .ordered()
        .collect()
        .await
        .unwrap();
    assert_eq!(out, (0..50).map(|n| n * 2).collect::<Vec<_>>());

    let err = Pipeline::from_iter(0..5u32)
        .stage_process::<()>("remote-fail", 1, pool.clone(), "fail")
        .collect()
        .await
        .unwrap_err();
    match err {
        PipelineError::Failed {
            stage,
            index,
            error: CallError::Failed { message, .. },
        } => {
            assert_eq!(
                (stage.as_str(), index, message.as_str()),
                ("remote-fail", 0, "asked to fail")
            );
        }
        other => panic!("expected the first call's failure, got {other:?}"),
    }
    let pids = pool.worker_pids();
    pool.stop().await;
    assert!(all_gone(&pids).await);
}

/// The pool never sends a worker more calls than the concurrency it announced in `HELLO`; the
/// rest wait in the pool (protocol section 3.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_never_gets_more_calls_than_its_concurrency() {
    let pool = ProcessPool::builder("python3")
        .arg(demo_worker())
        .env("DEMO_CONCURRENCY", "2")
        .workers(1)
        .build()
        .await
        .unwrap();
    let seen =
        futures::future::join_all((0..8).map(|_| pool.call::<_, u32>("inflight", &0.05))).await;
    let seen: Vec<u32> = seen.into_iter().map(|r| r.unwrap()).collect();
    assert!(
        seen.iter().all(|&n| n <= 2),
        "worker saw {seen:?} calls at once"
    );
    assert!(seen.contains(&2), "both slots were used: {seen:?}");
    let pids = pool.worker_pids();
    pool.stop().await;
    assert!(all_gone(&pids).await);
}

/// A worker that stops answering heartbeats (here: frozen with SIGSTOP) while it holds a call is
/// treated as hung: killed, its call failed as lost, and replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_stops_answering_heartbeats_is_killed_and_replaced() {
    let pool = ProcessPool::builder("python3")
        .arg(demo_worker())
        .workers(1)
        .heartbeat(Some(Duration::from_millis(100)))
        .build()
        .await
        .unwrap();
    let before = pool.worker_pids();
    let call = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.call::<_, String>("sleep", &30).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await; // let the call reach the worker
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &before[0].to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let err = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("the call ends")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            &err,
            CallError::WorkerLost {
                reason: ExitReason::HeartbeatMissed,
                status: ProcessExit::Signal(9),
                ..
            }
        ),
        "got {err:?}"
    );
    assert!(
        all_gone(&before).await,
        "the hung worker is killed and reaped"
    );
    let after = replacement(&pool, &before).await;
    let s: String = pool.call("echo", "back").await.unwrap();
    assert_eq!(s, "back");
    pool.stop().await;
    assert!(all_gone(&after).await);
}

/// Stats: waiting calls and busy workers while calls queue behind a worker's concurrency, then
/// outcome counts, timeouts (waiting in the pool counts against the timeout too), lost calls and
/// restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_follow_queueing_outcomes_and_restarts() {
    let pool = ProcessPool::builder("python3")
        .arg(demo_worker())
        .env("DEMO_CONCURRENCY", "1")
        .workers(1)
        .call_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.call::<_, String>("sleep", &30).await })
        })
        .collect();
    let mut seen_queue = false;
    for _ in 0..200 {
        let s = pool.stats();
        if s.queued == 2 && s.busy == 1 {
            seen_queue = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        seen_queue,
        "two calls wait while one runs: {:?}",
        pool.stats()
    );
    for call in calls {
        assert!(call.await.unwrap().unwrap_err().is_timeout());
    }
    let _: String = pool.call("echo", "x").await.unwrap();
    let s = pool.stats();
    assert_eq!((s.workers, s.busy, s.queued), (1, 0, 0));
    assert_eq!((s.completed, s.failed, s.timed_out, s.lost), (1, 3, 3, 0));
    // Latency counts calls a worker answered: the running call (answered
    // `cancelled` after its timeout) and the echo; a queued call that timed out
    // unsent was withdrawn, but one may have been sent in the instant between the
    // first answer and its own timeout (then it was answered `cancelled` too).
    assert!((2..=4).contains(&s.latency.count), "{:?}", s.latency);

    let before = pool.worker_pids();
    assert!(pool
        .call::<_, ()>("crash", &1)
        .await
        .unwrap_err()
        .is_worker_lost());
    let after = replacement(&pool, &before).await;
    let s = pool.stats();
    assert_eq!((s.failed, s.lost, s.restarts), (4, 1, 1));
    pool.stop().await;
    assert!(all_gone(&before).await && all_gone(&after).await);
}

/// A TCP connection accepted by the pool's process is passed with a call and served by a
/// worker (protocol section 3.10): the client reads the worker's greeting, then end of file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_connection_is_passed_to_a_worker_and_served_there() {
    use std::io::Read;
    let pool = pool(1).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let served: u32 = pool
        .call_with_fds("greet_fd", "from a worker", vec![accepted.into()])
        .await
        .unwrap();
    assert_eq!(served, 1);
    let mut greeting = String::new();
    client.read_to_string(&mut greeting).unwrap();
    assert_eq!(greeting, "hello from a worker");
    // A function that takes no descriptors refuses them; the pool goes on.
    let (_, extra) = std::os::unix::net::UnixStream::pair().unwrap();
    assert!(matches!(
        pool.call_with_fds::<_, String>("echo", "x", vec![extra.into()])
            .await,
        Err(CallError::BadArgs { .. })
    ));
    let s: String = pool.call("echo", "still here").await.unwrap();
    assert_eq!(s, "still here");
    let pids = pool.worker_pids();
    pool.stop().await;
    assert!(all_gone(&pids).await);
}

/// A call that ignores its cancel past the grace period gets its worker killed, but only after
/// the other calls that worker holds have finished: only the timed-out call fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_for_an_ignored_cancel_first_finishes_its_other_calls() {
    use workcrew::process::{CallOptions, ProcessEvent, RecycleReason};
    let pool = ProcessPool::builder("python3")
        .arg(demo_worker())
        .env("DEMO_CONCURRENCY", "2")
        .workers(1)
        .cancel_grace(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let mut events = pool.events();
    let before = pool.worker_pids();
    let hung = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let options = CallOptions::new().timeout(Duration::from_millis(200));
            pool.call_with::<_, String>("hang", &30, &options).await
        })
    };
    let other = {
        let pool = pool.clone();
        // Still running when the hung call's grace ends (500 ms), done well before
        // the worker's last grace (800 ms).
        tokio::spawn(async move { pool.call::<_, String>("sleep", &0.65).await })
    };
    assert!(hung.await.unwrap().unwrap_err().is_timeout());
    // The other call ran to its end on the doomed worker, well past the grace.
    assert_eq!(other.await.unwrap().unwrap(), "slept");
    let mut retired = false;
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(10), events.next()).await {
        match event {
            ProcessEvent::Recycled { reason, .. } => {
                retired = reason == RecycleReason::Unresponsive;
            }
            ProcessEvent::Exited {
                lost_calls, reason, ..
            } => {
                assert_eq!(lost_calls, 1, "only the hung call was held at the kill");
                assert!(
                    matches!(reason, ExitReason::CancelIgnored { .. }),
                    "{reason:?}"
                );
                break;
            }
            _ => {}
        }
    }
    assert!(retired, "the worker was retired as unresponsive first");
    let after = replacement(&pool, &before).await;
    let s: String = pool.call("echo", "fresh").await.unwrap();
    assert_eq!(s, "fresh");
    pool.stop().await;
    assert!(all_gone(&before).await && all_gone(&after).await);
}

/// `events()` starts with the workers live at that moment (the first ones were ready before
/// `build()` returned), then follows the pool to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_start_with_the_live_workers_and_end_after_stop() {
    use workcrew::process::ProcessEvent;
    let pool = pool(2).await;
    let pids = pool.worker_pids();
    let mut events = pool.events();
    let mut ready = Vec::new();
    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_secs(10), events.next()).await {
            Ok(Some(ProcessEvent::Ready { pid, functions, .. })) => {
                assert!(functions.iter().any(|f| f == "echo"), "{functions:?}");
                ready.push(pid);
            }
            other => panic!("expected Ready, got {other:?}"),
        }
    }
    assert_eq!(ready, pids);
    pool.stop().await;
    let rest: Vec<ProcessEvent> = tokio::time::timeout(Duration::from_secs(10), events.collect())
        .await
        .expect("the stream ends after stop");
    let exited: Vec<u32> = rest
        .iter()
        .filter_map(|e| match e {
            ProcessEvent::Exited {
                pid,
                expected: true,
                ..
            } => Some(*pid),
            _ => None,
        })
        .collect();
    assert_eq!(exited.len(), 2, "{rest:?}");
    assert!(pids.iter().all(|p| exited.contains(p)));
    assert_eq!(rest.last(), Some(&ProcessEvent::Stopped));
    assert!(all_gone(&pids).await);
}

/// `try_call_with` takes options like `call_with`: a full queue fails at once with
/// `QueueFull`, a fired token with `Cancelled` (the call never routed), a timeout applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_call_with_takes_options_and_fails_at_once_on_a_full_queue() {
    use workcrew::process::CallOptions;
    use workcrew::CancellationToken;
    let pool = ProcessPool::builder("python3")
        .arg(demo_worker())
        .env("DEMO_CONCURRENCY", "1")
        .workers(1)
        .queue_capacity(1)
        .build()
        .await
        .unwrap();
    let quick = CallOptions::new().timeout(Duration::from_millis(200));
    // A timeout applies: the call runs longer and fails with `TimedOut`.
    let err = pool
        .try_call_with::<_, String>("sleep", &5, &quick)
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    // One step at a time (two spawned calls may start in either order): the timed-out call
    // has ended, then the long call runs, then the next one waits in the queue. Long enough
    // that the queue is still full when checked, on a loaded machine too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let wait_for = |what: &'static str, ok: fn(&workcrew::process::ProcessPoolStats) -> bool| {
        let pool = pool.clone();
        async move {
            loop {
                let s = pool.stats();
                if ok(&s) {
                    return;
                }
                assert!(tokio::time::Instant::now() < deadline, "{what}: {s:?}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for("the timed-out call never ended", |s| s.in_flight == 0).await;
    let running = tokio::spawn(pool.call_owned::<_, String>("sleep", 5.0));
    wait_for("the worker never got busy", |s| s.busy == 1).await;
    let queued = tokio::spawn(pool.call_owned::<_, String>("echo", "queued"));
    wait_for("the next call was never queued", |s| {
        s.busy == 1 && s.queued == 1
    })
    .await;
    let full = pool
        .try_call_with::<_, String>("echo", "x", &CallOptions::new())
        .await;
    assert!(matches!(full, Err(CallError::QueueFull)), "{full:?}");
    let token = CancellationToken::new();
    token.cancel();
    let fired = pool
        .try_call_with::<_, String>("echo", "x", &CallOptions::new().token(token))
        .await;
    assert!(
        matches!(fired, Err(CallError::Cancelled { .. })),
        "{fired:?}"
    );
    assert_eq!(running.await.unwrap().unwrap(), "slept");
    assert_eq!(queued.await.unwrap().unwrap(), "queued");
    let pids = pool.worker_pids();
    pool.stop().await;
    assert!(all_gone(&pids).await);
}

/// The pool's handle, its call futures (borrowing and owning) and its errors can cross
/// threads; the owning future is `'static`, so it can be spawned.
#[test]
fn handles_futures_and_errors_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn spawnable<F: std::future::Future + Send + 'static>(_: F) {}
    fn send<F: std::future::Future + Send>(_: F) {}
    send_sync::<ProcessPool>();
    send_sync::<CallError>();
    send_sync::<workcrew::process::ExitReason>();
    send_sync::<workcrew::process::ProcessPoolStats>();
    // Never called: only the futures' types matter.
    fn check(pool: &ProcessPool) {
        spawnable(pool.call_owned::<_, u64>("f", 1u64));
        send(pool.call::<_, u64>("f", &1u64));
        send(pool.try_call_with::<_, u64>("f", &1u64, &workcrew::process::CallOptions::new()));
        send(pool.stop_with(Duration::ZERO));
    }
    let _ = check;
}
