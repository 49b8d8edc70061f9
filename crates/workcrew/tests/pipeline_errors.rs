//! Integration tests for how a pipeline run ends early: first-error cancellation, later
//! errors, panics, continue-on-error, cancellation tokens, deadlines, and dropping the stream
//! (including the Go seed's "workers leak when the consumer stops reading").

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;
use workcrew::pipeline::{BuildError, Pipeline, PipelineError};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Counts live values; a clone is moved into each stage future and dropped with it.
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

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

#[tokio::test(start_paused = true)]
async fn first_error_stops_every_stage_and_names_stage_and_index() {
    let started_b = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&started_b);
    let start = Instant::now();
    let err = Pipeline::from_iter(0..1000u32)
        .stage("parse", 2, |n| async move {
            sleep(ms(1)).await;
            if n == 7 {
                Err(format!("bad item {n}"))
            } else {
                Ok(n)
            }
        })
        .stage("store", 2, move |n| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                sleep(ms(1000)).await;
                Ok(n)
            }
        })
        .collect()
        .await
        .unwrap_err();
    assert_eq!(err.stage(), Some("parse"));
    assert_eq!(err.index(), Some(7));
    assert!(err.is_failed());
    assert_eq!(
        err.to_string(),
        "stage `parse` failed on item 7: bad item 7"
    );
    assert_eq!(err.into_inner().as_deref(), Some("bad item 7"));
    // The slow stage was cancelled mid-item: nobody waited for its 1000 ms.
    assert!(start.elapsed() < ms(100), "took {:?}", start.elapsed());
    assert!(started_b.load(Ordering::SeqCst) < 20);
}

#[tokio::test(start_paused = true)]
async fn later_errors_never_overwrite_the_first_and_are_kept() {
    // Go seed bug: one error overwriting another. Four items fail at the same instant; the
    // first recorded is the run's error, and any other that was recorded goes to
    // `later_errors`, never in its place. (With blocking workers, which cannot be aborted,
    // all four are recorded: see the next test.)
    let mut stream = Pipeline::from_iter(0..4u32)
        .stage("fail", 4, |n| async move {
            sleep(ms(10)).await;
            Err::<u32, _>(format!("error {n}"))
        })
        .run()
        .unwrap();
    let first = stream.next().await.unwrap().unwrap_err();
    assert!(stream.next().await.is_none());
    let report = stream.shutdown().await;
    assert!(first.is_failed());
    // All four failed in the same instant; the run halts on the first, the others are
    // either aborted before they ran or recorded after it - never in its place.
    for later in &report.later_errors {
        assert!(later.index() != first.index());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_racing_in_blocking_workers_are_all_kept() {
    // Blocking workers cannot be aborted: all four finish their item and fail.
    // Exactly one is the first; the other three are later errors.
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let b = Arc::clone(&barrier);
    let stream = Pipeline::from_iter(0..4u32)
        .stage_blocking("fail", 4, move |n| {
            b.wait();
            Err::<u32, _>(format!("error {n}"))
        })
        .input_capacity(4)
        .run()
        .unwrap();
    let all = stream.collect_all().await;
    let first = all.error.expect("the run failed");
    let mut indices: Vec<u64> = all
        .report
        .later_errors
        .iter()
        .filter_map(PipelineError::index)
        .collect();
    indices.push(first.index().unwrap());
    indices.sort_unstable();
    assert_eq!(indices, [0, 1, 2, 3]);
    assert!(all.results.is_empty());
}

#[tokio::test(start_paused = true)]
async fn cancellation_after_the_first_error_does_not_replace_it() {
    let token = CancellationToken::new();
    let mut stream = Pipeline::from_iter(0..10u32)
        .stage("fail", 1, |n| async move {
            if n == 2 {
                Err("two".to_owned())
            } else {
                Ok(n)
            }
        })
        .cancel_token(token.clone())
        .run()
        .unwrap();
    let mut first = None;
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            first = Some(e);
        }
    }
    token.cancel();
    let first = first.unwrap();
    assert_eq!(first.index(), Some(2));
    let report = stream.shutdown().await;
    assert!(report
        .later_errors
        .iter()
        .all(|e| !e.is_failed() || e.index() != Some(2)));
}

#[tokio::test(start_paused = true)]
async fn a_panic_becomes_an_error_naming_the_stage() {
    let err = Pipeline::from_iter(0..10u32)
        .stage("ok", 2, |n| async move { Ok::<_, String>(n) })
        .stage("explode", 2, |n| async move {
            if n == 4 {
                panic!("kaboom on {n}");
            }
            Ok(n)
        })
        .collect()
        .await
        .unwrap_err();
    assert!(err.is_panic());
    assert_eq!(err.stage(), Some("explode"));
    assert_eq!(err.index(), Some(4));
    assert_eq!(
        err.to_string(),
        "stage `explode` panicked on item 4: kaboom on 4"
    );
}

#[tokio::test(start_paused = true)]
async fn a_panic_calling_the_stage_function_is_caught_too() {
    let err = Pipeline::from_iter(0..3u32)
        .stage("eager", 1, |n| {
            assert!(n != 1, "refused {n}");
            async move { Ok::<_, String>(n) }
        })
        .collect()
        .await
        .unwrap_err();
    assert!(err.is_panic());
    assert_eq!((err.stage(), err.index()), (Some("eager"), Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_blocking_stage_becomes_an_error() {
    let err = Pipeline::from_iter(0..3u32)
        .stage_blocking("cpu", 2, |n| {
            if n == 2 {
                panic!("cpu panic");
            }
            Ok::<_, String>(n)
        })
        .collect()
        .await
        .unwrap_err();
    assert!(err.is_panic());
    assert_eq!((err.stage(), err.index()), (Some("cpu"), Some(2)));
}

#[tokio::test(start_paused = true)]
async fn continue_on_error_collects_failures_in_place() {
    let mut stream = Pipeline::from_iter(0..10u32)
        .stage("odd-fails", 3, |n| async move {
            sleep(ms(u64::from(10 - n))).await;
            if n % 2 == 1 {
                Err(format!("odd {n}"))
            } else {
                Ok(n)
            }
        })
        .stage("double", 2, |n| async move {
            if n == 4 {
                panic!("four");
            }
            Ok(n * 2)
        })
        .ordered()
        .continue_on_error()
        .run()
        .unwrap();
    let mut seen = Vec::new();
    while let Some(item) = stream.next().await {
        seen.push(item);
    }
    assert_eq!(
        seen.len(),
        10,
        "every item is delivered once, failed or not"
    );
    for (i, item) in seen.iter().enumerate() {
        let i = i as u32;
        match item {
            Ok(v) => assert_eq!(*v, i * 2),
            Err(e) if i % 2 == 1 => {
                assert_eq!(
                    (e.stage(), e.index()),
                    (Some("odd-fails"), Some(u64::from(i)))
                )
            }
            Err(e) => {
                assert_eq!(i, 4);
                assert!(e.is_panic());
                assert_eq!(e.stage(), Some("double"));
            }
        }
    }
    let report = stream.shutdown().await;
    assert_eq!(report.stats.stages[0].failed, 5);
    assert_eq!(report.stats.stages[1].failed, 1);
    // Failures pass through later stages without being processed.
    assert_eq!(report.stats.stages[1].items_in, 10);
}

/// Issue 10: `collect_all` in continue mode kept outputs and failures in two lists, losing each
/// failure's position. Ordered runs now give every item's result in input order.
#[tokio::test(start_paused = true)]
async fn collect_all_keeps_each_failure_in_its_place() {
    let all = Pipeline::from_iter(0..6u32)
        .stage("x", 2, |n| async move {
            // Later items finish first, so completion order is not input order.
            sleep(ms(u64::from(10 - n))).await;
            if n == 3 {
                Err("three")
            } else {
                Ok(n * 10)
            }
        })
        .continue_on_error()
        .ordered()
        .collect_all()
        .await;
    assert!(all.error.is_none());
    assert_eq!(all.results.len(), 6);
    for (i, result) in all.results.iter().enumerate() {
        match result {
            Ok(v) => assert_eq!(*v, i as u32 * 10),
            Err(e) => {
                assert_eq!(i, 3, "the failure is in its item's place");
                assert_eq!((e.stage(), e.index()), (Some("x"), Some(3)));
            }
        }
    }
    assert_eq!(
        all.outputs().copied().collect::<Vec<_>>(),
        [0, 10, 20, 40, 50]
    );
    assert_eq!(all.failures().count(), 1);
    // `collect` does not hide failures: it returns the first once the run is done.
    let err = Pipeline::from_iter(0..6u32)
        .stage("x", 2, |n| async move {
            if n == 3 {
                Err("three")
            } else {
                Ok(n)
            }
        })
        .continue_on_error()
        .collect()
        .await
        .unwrap_err();
    assert_eq!(err.index(), Some(3));
}

/// The Go seed's `Err`: a run's errors can be read while it goes on, in order, without taking
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_readable_without_consuming_them() {
    // Four blocking workers (which cannot be aborted) fail together: one first, three later.
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let b = Arc::clone(&barrier);
    let mut stream = Pipeline::from_iter(0..4u32)
        .stage_blocking("fail", 4, move |n| {
            b.wait();
            Err::<u32, _>(format!("error {n}"))
        })
        .input_capacity(4)
        .run()
        .unwrap();
    let errors = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let errors = stream.errors();
            if errors.len() == 4 {
                return errors;
            }
            sleep(ms(1)).await;
        }
    })
    .await
    .expect("every worker failed");
    // Reading took nothing: the same errors, in the same order.
    let again = stream.errors();
    assert_eq!(
        errors.iter().map(|e| e.index()).collect::<Vec<_>>(),
        again.iter().map(|e| e.index()).collect::<Vec<_>>()
    );
    // The stream still ends with the first of them.
    let mut last = None;
    while let Some(item) = stream.next().await {
        last = Some(item);
    }
    assert_eq!(last.unwrap().unwrap_err().index(), errors[0].index());
    let report = stream.shutdown().await;
    assert_eq!(report.later_errors.len(), 3);
}

/// Issue 10: concurrency 0 panicked; it is a configuration error now.
#[tokio::test]
async fn zero_concurrency_is_a_build_error() {
    let err = Pipeline::from_iter(0..1u32)
        .stage("x", 0, |n| async move { Ok::<_, String>(n) })
        .run()
        .unwrap_err();
    assert_eq!(err, BuildError::ZeroConcurrency { stage: "x".into() });
    assert_eq!(
        err.to_string(),
        "stage `x`: concurrency must be at least 1 (a stage of 0 workers never runs)"
    );
    let err = Pipeline::from_iter(0..1u32)
        .stage("ok", 1, |n| async move { Ok::<_, String>(n) })
        .stage_blocking("none", 0, Ok)
        .collect()
        .await
        .unwrap_err();
    assert!(err.is_invalid());
    assert_eq!(
        err.to_string(),
        "invalid pipeline: stage `none`: concurrency must be at least 1 (a stage of 0 workers never runs)"
    );
}

#[tokio::test(start_paused = true)]
async fn cancel_token_stops_the_run() {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        sleep(ms(35)).await;
        t.cancel();
    });
    let start = Instant::now();
    let mut stream = Pipeline::from_iter(0..1000u32)
        .stage("slow", 1, |n| async move {
            sleep(ms(10)).await;
            Ok::<_, String>(n)
        })
        .cancel_token(token)
        .run()
        .unwrap();
    let mut outputs = 0;
    let mut last = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(_) => outputs += 1,
            Err(e) => last = Some(e),
        }
    }
    assert!(last.unwrap().is_cancelled());
    assert_eq!(start.elapsed(), ms(35));
    assert_eq!(outputs, 3);
}

#[tokio::test(start_paused = true)]
async fn an_already_cancelled_token_stops_the_run_at_once() {
    let token = CancellationToken::new();
    token.cancel();
    let err = Pipeline::from_iter(0..10u32)
        .stage("x", 1, |n| async move { Ok::<_, String>(n) })
        .cancel_token(token)
        .collect()
        .await
        .unwrap_err();
    assert!(err.is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn timeout_stops_the_run_with_a_deadline_error() {
    let start = Instant::now();
    let err = Pipeline::from_iter(0..1000u32)
        .stage("slow", 2, |n| async move {
            sleep(ms(10)).await;
            Ok::<_, String>(n)
        })
        .timeout(ms(55))
        .collect()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(err.to_string(), "pipeline deadline of 55ms exceeded");
    assert_eq!(start.elapsed(), ms(55));

    let err = Pipeline::from_iter(0..1000u32)
        .stage("slow", 2, |n| async move {
            sleep(ms(10)).await;
            Ok::<_, String>(n)
        })
        .deadline(Instant::now() + ms(20))
        .collect()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
}

#[tokio::test(start_paused = true)]
async fn dropping_the_stream_stops_the_source_and_every_stage_task() {
    // Go seed bug: workers leaking when the consumer stops reading.
    let before = alive_tasks();
    let alive = Alive::default();
    let probe = alive.clone();
    let mut stream = Pipeline::from_iter(0..)
        .stage("a", 3, |n: u64| async move {
            sleep(ms(5)).await;
            Ok::<_, String>(n)
        })
        .stage("b", 2, move |n| {
            let token = probe.token();
            async move {
                let _token = token;
                sleep(ms(1000)).await;
                Ok(n)
            }
        })
        .run()
        .unwrap();
    // Read one item, then stop reading: everything upstream is now blocked on full channels
    // or sleeping in a stage.
    let _ = stream.next().await;
    sleep(ms(100)).await;
    assert!(alive_tasks() >= before + 6, "source + 5 workers running");
    assert!(alive.count() > 0);
    drop(stream);
    tokio::task::yield_now().await;
    sleep(ms(1)).await;
    assert_eq!(alive_tasks(), before, "every task of the run ended");
    assert_eq!(alive.count(), 0, "every in-flight stage future was dropped");
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_every_task() {
    let before = alive_tasks();
    let mut stream = Pipeline::from_iter(0..100u32)
        .stage("x", 4, |n| async move {
            sleep(ms(10)).await;
            Ok::<_, String>(n)
        })
        .timeout(ms(1000))
        .run()
        .unwrap();
    let _ = stream.next().await;
    let report = stream.shutdown().await;
    assert!(report.later_errors.is_empty());
    assert_eq!(alive_tasks(), before);
}

#[tokio::test(start_paused = true)]
async fn a_finished_run_leaves_no_task_behind() {
    let before = alive_tasks();
    let mut stream = Pipeline::from_iter(0..10u32)
        .stage("x", 4, |n| async move { Ok::<_, String>(n) })
        .cancel_token(CancellationToken::new())
        .run()
        .unwrap();
    while stream.next().await.is_some() {}
    // Not dropped yet: the watcher and workers must still have ended.
    tokio::task::yield_now().await;
    assert_eq!(alive_tasks(), before);
    drop(stream);
}
