//! Integration tests for `Dispatcher`, the Go seed's manual style, with one regression test per
//! Go-seed bug listed in DESIGN.md (each names its bug).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::{sleep, timeout, Instant};
use tokio_util::sync::CancellationToken;
use workcrew::pipeline::{BuildError, DispatchError, DispatchReport, Dispatcher, Pipeline};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Counts how many jobs run at once.
#[derive(Clone, Default)]
struct Live {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
}

struct Inside(Arc<AtomicUsize>);

impl Live {
    fn enter(&self) -> Inside {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        Inside(Arc::clone(&self.now))
    }

    fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts live values; a clone is moved into each job future and dropped with it.
#[derive(Clone, Default)]
struct Alive(Arc<AtomicUsize>);

struct Token(Arc<AtomicUsize>);

impl Alive {
    fn token(&self) -> Token {
        self.0.fetch_add(1, Ordering::SeqCst);
        Token(Arc::clone(&self.0))
    }

    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Every accepted job is in exactly one place of the report.
fn assert_every_job_reported<J, E>(report: &DispatchReport<J, E>) {
    let listed = report.completed
        + report.failed.len() as u64
        + report.cancelled.len() as u64
        + report.undelivered.len() as u64
        + report.unstarted.len() as u64;
    assert_eq!(
        listed, report.accepted,
        "every accepted job is reported once"
    );
    let mut ids: Vec<u64> = report
        .failed
        .iter()
        .chain(&report.cancelled)
        .chain(&report.undelivered)
        .copied()
        .chain(report.unstarted.iter().map(|(id, _)| *id))
        .collect();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), before, "no job is in two places");
}

#[tokio::test(start_paused = true)]
async fn dispatch_receive_done_round_trip() {
    let (d, mut results) = Dispatcher::builder()
        .workers(3)
        .jobs_buffer(2)
        .results_buffer(2)
        .start(|n: u32| async move {
            sleep(ms(10)).await;
            Ok::<_, String>(n + 1)
        })
        .unwrap();
    let producer = {
        let d = d.clone();
        tokio::spawn(async move {
            for n in 0..9 {
                d.dispatch(n).await.unwrap();
            }
            d.done();
        })
    };
    let start = Instant::now();
    let mut got = Vec::new();
    while let Some(r) = results.next().await {
        got.push(r);
    }
    producer.await.unwrap();
    got.sort_unstable();
    assert_eq!(got, (1..=9).collect::<Vec<_>>());
    assert_eq!(start.elapsed(), ms(30), "3 workers, 9 jobs of 10 ms");
    let report = d.finish().await;
    assert!(report.error.is_none());
    assert_eq!((report.accepted, report.completed), (9, 9));
    assert_every_job_reported(&report);
}

/// An issue-10 regression: the default (unbuffered) dispatcher ran 1 job at a time out of 4
/// workers. The peak in flight must be the worker count for every buffer size.
#[tokio::test(start_paused = true)]
async fn every_worker_runs_a_job_whatever_the_buffer() {
    for capacity in [0, 1, 8] {
        let live = Live::default();
        let probe = live.clone();
        let (d, mut results) = Dispatcher::builder()
            .workers(4)
            .jobs_buffer(capacity)
            .results_buffer(capacity)
            .start(move |n: u32| {
                let live = probe.clone();
                async move {
                    let _inside = live.enter();
                    sleep(ms(10)).await;
                    Ok::<_, String>(n)
                }
            })
            .unwrap();
        let producer = tokio::spawn(async move {
            for n in 0..40 {
                d.dispatch(n).await.unwrap();
            }
            d.finish().await
        });
        let start = Instant::now();
        let mut got = 0;
        while results.next().await.is_some() {
            got += 1;
        }
        let report = producer.await.unwrap();
        assert_eq!(got, 40);
        assert_eq!(report.completed, 40);
        assert_eq!(live.max(), 4, "peak in flight, buffer {capacity}");
        assert_eq!(start.elapsed(), ms(100), "buffer {capacity}");
    }
}

/// Go seed bug: dispatch racing done — a send on a closed channel panicked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_dispatch_racing_done_is_an_error_not_a_panic() {
    for _ in 0..200 {
        let (d, mut results) = Dispatcher::builder()
            .workers(2)
            .jobs_buffer(1)
            .results_buffer(1)
            .start(|n: u32| async move { Ok::<_, String>(n) })
            .unwrap();
        let dispatchers: Vec<_> = (0..4)
            .map(|i| {
                let d = d.clone();
                tokio::spawn(async move {
                    let mut accepted = 0u32;
                    for n in 0..50 {
                        match d.dispatch(i * 100 + n).await {
                            Ok(()) => accepted += 1,
                            Err(e) => {
                                assert!(e.is_done(), "{e}");
                                // The job is given back.
                                assert_eq!(e.into_inner(), i * 100 + n);
                            }
                        }
                    }
                    accepted
                })
            })
            .collect();
        let closer = {
            let d = d.clone();
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                d.done();
            })
        };
        let mut received = 0u32;
        while results.next().await.is_some() {
            received += 1;
        }
        closer.await.unwrap();
        let mut accepted = 0;
        for t in dispatchers {
            accepted += t.await.expect("no dispatch panicked");
        }
        // Every job that `dispatch` accepted was run and received.
        assert_eq!(received, accepted);
        let report = d.finish().await;
        assert_eq!(report.accepted, u64::from(accepted));
        assert_every_job_reported(&report);
    }
    let (d, _results) = Dispatcher::new(1, |n: u32| async move { Ok::<_, String>(n) }).unwrap();
    d.done();
    d.done(); // idempotent
    assert!(matches!(d.dispatch(1).await, Err(DispatchError::Done(1))));
}

/// Go seed bug: dispatch ignoring the context — blocked forever once cancelled.
#[tokio::test(start_paused = true)]
async fn regression_dispatch_honours_cancellation_while_waiting() {
    let token = CancellationToken::new();
    // One worker stuck on a job, rendezvous channel: the next dispatch must wait.
    let (d, mut results) = Dispatcher::builder()
        .workers(1)
        .cancel_token(token.clone())
        .start(|n: u32| async move {
            sleep(ms(10_000)).await;
            Ok::<_, String>(n)
        })
        .unwrap();
    d.dispatch(1).await.unwrap();
    let t = token.clone();
    tokio::spawn(async move {
        sleep(ms(50)).await;
        t.cancel();
    });
    let start = Instant::now();
    let blocked = timeout(ms(1000), d.dispatch(2))
        .await
        .expect("dispatch returned");
    assert!(matches!(blocked, Err(DispatchError::Cancelled(2))));
    assert_eq!(start.elapsed(), ms(50));
    // And a dispatch after cancellation fails at once.
    assert!(d.dispatch(3).await.unwrap_err().is_cancelled());
    assert!(results.next().await.is_none());
    let report = timeout(ms(1), d.finish()).await.expect("finish at once");
    assert!(report.error.as_ref().unwrap().is_cancelled());
    assert_eq!(report.cancelled, [0], "the running job was cancelled");
    assert_every_job_reported(&report);
}

/// Go seed bug: jobs buffered at cancel were dropped silently.
#[tokio::test(start_paused = true)]
async fn regression_jobs_buffered_at_cancel_are_reported() {
    let started = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&started);
    let (d, _results) = Dispatcher::builder()
        .workers(1)
        .jobs_buffer(5)
        .start(move |n: u32| {
            s.fetch_add(1, Ordering::SeqCst);
            async move {
                sleep(ms(1000)).await;
                Ok::<_, String>(n)
            }
        })
        .unwrap();
    for n in 0..6 {
        d.dispatch(n).await.unwrap();
    }
    sleep(ms(10)).await;
    assert_eq!(started.load(Ordering::SeqCst), 1);
    d.cancel();
    let report = d.finish().await;
    let mut unstarted = report.unstarted.clone();
    unstarted.sort_unstable();
    assert_eq!(
        unstarted,
        [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)],
        "the 5 buffered jobs come back with their ids"
    );
    assert_eq!(report.cancelled, [0]);
    assert!(report.error.as_ref().unwrap().is_cancelled());
    assert_every_job_reported(&report);
}

/// Issue 10: cancelling lost the results that had finished and were waiting to be read, and
/// left the running jobs running.
#[tokio::test(start_paused = true)]
async fn cancel_keeps_finished_results_and_stops_running_jobs() {
    let alive = Alive::default();
    let probe = alive.clone();
    let (d, mut results) = Dispatcher::builder()
        .workers(4)
        .jobs_buffer(4)
        .results_buffer(1)
        .start(move |n: u32| {
            let token = probe.token();
            async move {
                let _token = token;
                // Jobs 0 and 1 finish quickly; the others run for a long time.
                sleep(ms(if n < 2 { 1 } else { 100_000 })).await;
                Ok::<_, String>(n)
            }
        })
        .unwrap();
    for n in 0..8 {
        d.dispatch(n).await.unwrap();
    }
    sleep(ms(10)).await;
    // Two results are finished: one in the result channel (its worker went on to job 4), one
    // held by its worker waiting for room. Nobody has read anything yet.
    d.cancel();
    tokio::task::yield_now().await;
    assert_eq!(alive.count(), 0, "no job keeps running after cancel");
    let mut got = Vec::new();
    while let Some(r) = timeout(ms(1), results.next()).await.expect("no wait") {
        got.push(r);
    }
    got.sort_unstable();
    assert_eq!(got, [0, 1], "both finished results are received");
    let report = timeout(ms(1), d.finish()).await.expect("finish at once");
    assert_eq!(report.completed, 2);
    let mut cancelled = report.cancelled.clone();
    cancelled.sort_unstable();
    assert_eq!(cancelled, [2, 3, 4], "the running jobs were cancelled");
    let mut unstarted: Vec<u64> = report.unstarted.iter().map(|(id, _)| *id).collect();
    unstarted.sort_unstable();
    assert_eq!(unstarted, [5, 6, 7]);
    assert_every_job_reported(&report);
}

/// Go seed bug: one error overwriting another.
#[tokio::test(start_paused = true)]
async fn regression_first_error_is_kept_and_later_ones_are_retrievable() {
    let (d, _results) = Dispatcher::builder()
        .name("fetch")
        .workers(3)
        .jobs_buffer(3)
        .start(|n: u32| async move {
            sleep(ms(u64::from(n) * 10)).await;
            Err::<u32, _>(format!("job {n} failed"))
        })
        .unwrap();
    for n in 1..=3 {
        d.dispatch(n).await.unwrap();
    }
    // Job 1 fails first (10 ms); that cancels; the others are cancelled.
    let report = d.finish().await;
    let first = report.error.as_ref().unwrap();
    assert_eq!(first.stage(), Some("fetch"));
    assert_eq!(first.index(), Some(0), "dispatch number of job 1");
    assert_eq!(
        first.to_string(),
        "stage `fetch` failed on item 0: job 1 failed"
    );
    assert_eq!(report.failed, [0]);
    assert_every_job_reported(&report);

    // Pipeline: the first error wins, and a cancellation after it is only a later error.
    let token = CancellationToken::new();
    let t = token.clone();
    let all = Pipeline::from_iter(0..3u32)
        .stage_blocking("slow-fail", 3, move |n| {
            if n == 0 {
                return Err::<u32, _>(format!("first {n}"));
            }
            std::thread::sleep(Duration::from_millis(20));
            t.cancel();
            Err(format!("later {n}"))
        })
        .cancel_token(token)
        .collect_all();
    let all = tokio::task::spawn(all).await.unwrap();
    assert_eq!(all.error.unwrap().index(), Some(0));
}

/// The Go seed's `SetErr` and `Err`: the first error wins, later ones are kept, and reading it
/// consumes nothing.
#[tokio::test(start_paused = true)]
async fn set_err_keeps_the_first_error_and_err_reads_it_without_consuming() {
    let (d, mut results) = Dispatcher::builder()
        .name("stage-2")
        .workers(2)
        .start(|n: u32| async move { Ok::<_, String>(n) })
        .unwrap();
    assert!(d.err().is_none());
    d.dispatch(1).await.unwrap();
    assert_eq!(results.next().await, Some(1));
    d.set_err("bad result 1".to_owned());
    d.set_err("bad result 2".to_owned());
    for _ in 0..2 {
        let err = d.err().expect("an error was set");
        assert!(err.is_user());
        assert_eq!(err.stage(), Some("stage-2"));
        assert_eq!(err.to_string(), "error set on `stage-2`: bad result 1");
    }
    assert!(d.dispatch(2).await.unwrap_err().is_cancelled());
    assert!(results.next().await.is_none());
    let report = d.finish().await;
    assert_eq!(
        report.error.unwrap().into_inner().as_deref(),
        Some("bad result 1")
    );
    assert_eq!(report.later_errors.len(), 1);
    assert_eq!(
        report.later_errors[0].clone().into_inner().as_deref(),
        Some("bad result 2")
    );
}

/// Go seed bug: workers leaking when the consumer stops reading; issue 10: the producer then
/// blocked until `finish`. Dropping the receiver stops the workers and fails `dispatch`.
#[tokio::test(start_paused = true)]
async fn dropping_the_receiver_stops_the_workers_and_fails_dispatch() {
    let before = alive_tasks();
    let (d, mut results) = Dispatcher::builder()
        .workers(4)
        .start(|n: u32| async move {
            sleep(ms(1)).await;
            Ok::<_, String>(n)
        })
        .unwrap();
    let producer = {
        let d = d.clone();
        tokio::spawn(async move {
            for n in 0.. {
                if let Err(e) = d.dispatch(n).await {
                    return e;
                }
            }
            unreachable!()
        })
    };
    // Read two results, then drop the receiver: the producer, blocked on the rendezvous, must
    // get an error at once, not wait for `finish`.
    results.next().await.unwrap();
    results.next().await.unwrap();
    drop(results);
    let err = timeout(ms(1), producer)
        .await
        .expect("dispatch failed at once")
        .unwrap();
    assert!(err.is_receiver_gone(), "{err}");
    assert_eq!(
        err.to_string(),
        "receiver gone: the consumer dropped the dispatcher's receiver"
    );
    let report = timeout(ms(1), d.finish()).await.expect("finish at once");
    assert!(report.receiver_dropped);
    assert!(report.error.is_none());
    assert_every_job_reported(&report);
    drop(d);
    tokio::task::yield_now().await;
    assert_eq!(alive_tasks(), before, "no worker left behind");

    // Dropping every handle and the receiver ends the workers too.
    let (d, mut results) = Dispatcher::new(4, |n: u32| async move { Ok::<_, String>(n) }).unwrap();
    let producer = {
        let d = d.clone();
        tokio::spawn(async move { while d.dispatch(1).await.is_ok() {} })
    };
    results.next().await.unwrap();
    producer.abort();
    let _ = producer.await;
    drop(d);
    drop(results);
    tokio::task::yield_now().await;
    assert_eq!(alive_tasks(), before);
}

/// Dropping every handle is `done`: the accepted jobs still run and their results still come.
#[tokio::test(start_paused = true)]
async fn dropping_the_last_handle_is_done() {
    let (d, results) = Dispatcher::builder()
        .workers(2)
        .jobs_buffer(4)
        .start(|n: u32| async move {
            sleep(ms(5)).await;
            Ok::<_, String>(n)
        })
        .unwrap();
    for n in 0..4 {
        d.dispatch(n).await.unwrap();
    }
    drop(d);
    let mut got: Vec<u32> = results.collect().await;
    got.sort_unstable();
    assert_eq!(got, [0, 1, 2, 3]);
}

/// Job and result buffers are set separately.
#[tokio::test(start_paused = true)]
async fn job_and_result_buffers_are_separate() {
    let (d, mut results) = Dispatcher::builder()
        .workers(1)
        .jobs_buffer(3)
        .results_buffer(2)
        .start(|n: u32| async move { Ok::<_, String>(n) })
        .unwrap();
    // Nobody reads: the worker finishes 2 results into the result buffer and holds a third;
    // 3 more jobs wait in the job buffer. So 6 dispatches return without a reader, the 7th waits.
    for n in 0..6 {
        timeout(ms(1), d.dispatch(n))
            .await
            .expect("room for it")
            .unwrap();
    }
    assert!(
        timeout(ms(100), d.dispatch(6)).await.is_err(),
        "both buffers full"
    );
    d.done();
    let got: Vec<u32> = results.by_ref().collect().await;
    assert_eq!(got, [0, 1, 2, 3, 4, 5]);
}

#[test]
fn zero_workers_is_a_build_error() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let err = Dispatcher::builder()
        .name("none")
        .workers(0)
        .start(|n: u32| async move { Ok::<_, String>(n) })
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::ZeroWorkers {
            name: "none".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "dispatcher `none`: workers must be at least 1 (0 workers never run a job)"
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_job_is_an_error_naming_the_dispatcher() {
    let (d, mut results) = Dispatcher::builder()
        .name("jobs")
        .start(|n: u32| async move {
            assert!(n != 2, "job two");
            Ok::<_, String>(n)
        })
        .unwrap();
    let producer = {
        let d = d.clone();
        tokio::spawn(async move {
            for n in 0..5 {
                if d.dispatch(n).await.is_err() {
                    break;
                }
            }
            d.done();
        })
    };
    while results.next().await.is_some() {}
    producer.await.unwrap();
    let report = d.finish().await;
    let err = report.error.as_ref().unwrap();
    assert!(err.is_panic());
    assert_eq!((err.stage(), err.index()), (Some("jobs"), Some(2)));
    assert_every_job_reported(&report);
}
