//! Integration tests for `Dispatcher`, the Go seed's manual style, with one regression test per
//! Go-seed bug listed in DESIGN.md (each names its bug).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep, timeout, Instant};
use tokio_util::sync::CancellationToken;
use workcrew::pipeline::{DispatchError, Dispatcher, Pipeline};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

#[tokio::test(start_paused = true)]
async fn dispatch_receive_done_round_trip() {
    let d = Dispatcher::builder()
        .workers(3)
        .buffer(2)
        .start(|n: u32| async move {
            sleep(ms(10)).await;
            Ok::<_, String>(n + 1)
        });
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
    while let Some(r) = d.receive().await {
        got.push(r);
    }
    producer.await.unwrap();
    got.sort_unstable();
    assert_eq!(got, (1..=9).collect::<Vec<_>>());
    assert_eq!(start.elapsed(), ms(30), "3 workers, 9 jobs of 10 ms");
    let report = d.finish().await;
    assert!(report.error.is_none());
    assert_eq!(report.completed, 9);
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

/// An issue-10 regression: the default (unbuffered) dispatcher ran 1 job at a time out of 4
/// workers. The peak in flight must be the worker count for every buffer size.
#[tokio::test(start_paused = true)]
async fn every_worker_runs_a_job_whatever_the_buffer() {
    for capacity in [0, 1, 8] {
        let live = Live::default();
        let probe = live.clone();
        let d = Dispatcher::builder()
            .workers(4)
            .buffer(capacity)
            .start(move |n: u32| {
                let live = probe.clone();
                async move {
                    let _inside = live.enter();
                    sleep(ms(10)).await;
                    Ok::<_, String>(n)
                }
            });
        let producer = {
            let d = d.clone();
            tokio::spawn(async move {
                for n in 0..40 {
                    d.dispatch(n).await.unwrap();
                }
                d.done();
            })
        };
        let start = Instant::now();
        let mut got = 0;
        while d.receive().await.is_some() {
            got += 1;
        }
        producer.await.unwrap();
        assert_eq!(got, 40);
        assert_eq!(live.max(), 4, "peak in flight, buffer {capacity}");
        assert_eq!(start.elapsed(), ms(100), "buffer {capacity}");
    }
}

/// Go seed bug: dispatch racing done — a send on a closed channel panicked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_dispatch_racing_done_is_an_error_not_a_panic() {
    for _ in 0..200 {
        let d = Dispatcher::builder()
            .workers(2)
            .buffer(1)
            .start(|n: u32| async move { Ok::<_, String>(n) });
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
        while d.receive().await.is_some() {
            received += 1;
        }
        closer.await.unwrap();
        let mut accepted = 0;
        for t in dispatchers {
            accepted += t.await.expect("no dispatch panicked");
        }
        // Every job that `dispatch` accepted was run and received.
        assert_eq!(received, accepted);
    }
    let d = Dispatcher::new(1, |n: u32| async move { Ok::<_, String>(n) });
    d.done();
    d.done(); // idempotent
    assert!(matches!(d.dispatch(1).await, Err(DispatchError::Done(1))));
}

/// Go seed bug: dispatch ignoring the context — blocked forever once cancelled.
#[tokio::test(start_paused = true)]
async fn regression_dispatch_honours_cancellation_while_waiting() {
    let token = CancellationToken::new();
    // One worker stuck on a job, rendezvous channel: the next dispatch must wait.
    let d = Dispatcher::builder()
        .workers(1)
        .cancel_token(token.clone())
        .start(|n: u32| async move {
            sleep(ms(10_000)).await;
            Ok::<_, String>(n)
        });
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
    assert!(d.receive().await.is_none());
    let report = d.finish().await;
    assert!(report.error.unwrap().is_cancelled());
}

/// Go seed bug: jobs buffered at cancel were dropped silently.
#[tokio::test(start_paused = true)]
async fn regression_jobs_buffered_at_cancel_are_reported() {
    let started = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&started);
    let d = Dispatcher::builder()
        .workers(1)
        .buffer(5)
        .start(move |n: u32| {
            s.fetch_add(1, Ordering::SeqCst);
            async move {
                sleep(ms(1000)).await;
                Ok::<_, String>(n)
            }
        });
    for n in 0..6 {
        d.dispatch(n).await.unwrap();
    }
    sleep(ms(10)).await;
    assert_eq!(started.load(Ordering::SeqCst), 1);
    d.cancel();
    let report = d.finish().await;
    let mut unstarted = report.unstarted;
    unstarted.sort_unstable();
    assert_eq!(unstarted, [1, 2, 3, 4, 5], "the 5 buffered jobs come back");
    assert!(report.error.unwrap().is_cancelled());
}

/// Go seed bug: one error overwriting another.
#[tokio::test(start_paused = true)]
async fn regression_first_error_is_kept_and_later_ones_are_retrievable() {
    let d = Dispatcher::builder()
        .name("fetch")
        .workers(3)
        .buffer(3)
        .start(|n: u32| async move {
            sleep(ms(u64::from(n) * 10)).await;
            Err::<u32, _>(format!("job {n} failed"))
        });
    for n in 1..=3 {
        d.dispatch(n).await.unwrap();
    }
    // Job 1 fails first (10 ms); that cancels; the others are aborted or fail later.
    let report = d.finish().await;
    let first = report.error.unwrap();
    assert_eq!(first.stage(), Some("fetch"));
    assert_eq!(first.index(), Some(0), "dispatch number of job 1");
    assert_eq!(
        first.to_string(),
        "stage `fetch` failed on item 0: job 1 failed"
    );
    // The cancellation the error caused was not recorded over it.
    assert!(report
        .later_errors
        .iter()
        .all(|e| !e.is_failed() || e.index() != Some(0)));

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

/// Go seed bug: workers leaking when the consumer stops reading.
#[tokio::test(start_paused = true)]
async fn regression_workers_end_when_the_consumer_stops_reading() {
    let before = alive_tasks();
    let d = Dispatcher::builder()
        .workers(4)
        .start(|n: u32| async move { Ok::<_, String>(n) });
    let producer = {
        let d = d.clone();
        tokio::spawn(async move {
            for n in 0..100 {
                if d.dispatch(n).await.is_err() {
                    return;
                }
            }
            d.done();
        })
    };
    // Read two results, then stop reading. `finish` must not hang on the results nobody
    // reads, and must leave no worker behind.
    d.receive().await.unwrap();
    d.receive().await.unwrap();
    sleep(ms(10)).await;
    let report = timeout(ms(1000), d.finish())
        .await
        .expect("finish returned");
    assert!(report.error.is_none());
    producer.await.unwrap();
    drop(d);
    tokio::task::yield_now().await;
    assert_eq!(alive_tasks(), before);

    // And simply dropping every handle ends the workers too.
    let d = Dispatcher::new(4, |n: u32| async move { Ok::<_, String>(n) });
    let producer = {
        let d = d.clone();
        tokio::spawn(async move { while d.dispatch(1).await.is_ok() {} })
    };
    d.receive().await.unwrap();
    producer.abort();
    let _ = producer.await;
    drop(d);
    tokio::task::yield_now().await;
    assert_eq!(alive_tasks(), before);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_job_is_an_error_naming_the_dispatcher() {
    let d = Dispatcher::builder()
        .name("jobs")
        .start(|n: u32| async move {
            assert!(n != 2, "job two");
            Ok::<_, String>(n)
        });
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
    while d.receive().await.is_some() {}
    producer.await.unwrap();
    let err = d.finish().await.error.unwrap();
    assert!(err.is_panic());
    assert_eq!((err.stage(), err.index()), (Some("jobs"), Some(2)));
}
