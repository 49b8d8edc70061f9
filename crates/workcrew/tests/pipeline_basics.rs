//! Integration tests for `Pipeline`: stages, concurrency, buffers, ordering, sources, stats,
//! events and the Send/Sync contract.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::{sleep, Instant};
use workcrew::pipeline::{
    Collected, DispatchError, DispatchReceiver, DispatchReport, Dispatcher, EventStream, Pipeline,
    PipelineError, PipelineEvent, PipelineStats, PipelineStream, RunReport, StageStats,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Counts how many callers are inside at once.
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

#[tokio::test(start_paused = true)]
async fn every_item_passes_every_stage_once() {
    let out = Pipeline::from_iter(0..100u64)
        .stage("double", 3, |n| async move { Ok::<_, String>(n * 2) })
        .stage("inc", 2, |n| async move { Ok(n + 1) })
        .collect()
        .await
        .unwrap();
    let mut sorted = out.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..100).map(|n| n * 2 + 1).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn stage_concurrency_is_reached_but_never_exceeded() {
    let live = Live::default();
    let start = Instant::now();
    let probe = live.clone();
    let out = Pipeline::from_iter(0..20u32)
        .stage("slow", 3, move |n| {
            let live = probe.clone();
            async move {
                let _inside = live.enter();
                sleep(ms(10)).await;
                Ok::<_, String>(n)
            }
        })
        .collect()
        .await
        .unwrap();
    assert_eq!(out.len(), 20);
    assert_eq!(live.max(), 3);
    // 20 items of 10 ms, 3 at a time: 7 rounds.
    assert_eq!(start.elapsed(), ms(70));
}

/// An issue-10 regression: with a rendezvous input (capacity 0) a stage of 4 workers ran one
/// item at a time (a sender blocked on the full hand-over slot was not woken while idle workers
/// already waited). The peak in flight must be the worker count for every input capacity.
#[tokio::test(start_paused = true)]
async fn a_stage_runs_all_its_workers_whatever_its_input_capacity() {
    for capacity in [0, 1, 8] {
        let live = Live::default();
        let probe = live.clone();
        let start = Instant::now();
        let out = Pipeline::from_iter(0..40u32)
            .stage("slow", 4, move |n| {
                let live = probe.clone();
                async move {
                    let _inside = live.enter();
                    sleep(ms(10)).await;
                    Ok::<_, String>(n)
                }
            })
            .input_capacity(capacity)
            .output_capacity(capacity)
            .collect()
            .await
            .unwrap();
        assert_eq!(out.len(), 40);
        assert_eq!(live.max(), 4, "peak in flight, input capacity {capacity}");
        // 40 items of 10 ms, 4 at a time.
        assert_eq!(start.elapsed(), ms(100), "input capacity {capacity}");
    }
}

#[tokio::test(start_paused = true)]
async fn stages_overlap_in_time() {
    // Two stages of 10 ms, one worker each: a pipeline takes (items + 1) * 10 ms, not 2 * items.
    let start = Instant::now();
    Pipeline::from_iter(0..10u32)
        .stage("a", 1, |n| async move {
            sleep(ms(10)).await;
            Ok::<_, String>(n)
        })
        .stage("b", 1, |n| async move {
            sleep(ms(10)).await;
            Ok(n)
        })
        .collect()
        .await
        .unwrap();
    assert_eq!(start.elapsed(), ms(110));
}

#[tokio::test(start_paused = true)]
async fn ordered_output_follows_input_order() {
    // Later items finish first.
    let out = Pipeline::from_iter(0..30u64)
        .stage("jitter", 4, |n| async move {
            sleep(ms(30 - n)).await;
            Ok::<_, String>(n)
        })
        .stage("square", 2, |n| async move { Ok(n * n) })
        .ordered()
        .collect()
        .await
        .unwrap();
    assert_eq!(out, (0..30).map(|n| n * n).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn unordered_output_is_completion_order() {
    let out = Pipeline::from_iter([30u64, 10, 20])
        .stage("sleep", 3, |n| async move {
            sleep(ms(n)).await;
            Ok::<_, String>(n)
        })
        .collect()
        .await
        .unwrap();
    assert_eq!(out, [10, 20, 30]);
}

#[tokio::test(start_paused = true)]
async fn ordered_reordering_memory_is_bounded_by_the_window() {
    // Item 0 is slow; everything else is instant. The source may run at most
    // W = (4 + 2) + (1 + 1) + 1 = 9 items ahead of the caller.
    let produced = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&produced);
    let items = (0..1000u64).inspect(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let mut stream = Pipeline::from_iter(items)
        .stage("head-slow", 4, |n| async move {
            if n == 0 {
                sleep(ms(100)).await;
            }
            Ok::<_, String>(n)
        })
        .input_capacity(1)
        .stage("pass", 1, |n| async move { Ok(n) })
        .input_capacity(2)
        .output_capacity(0)
        .ordered()
        .run()
        .unwrap();
    sleep(ms(50)).await;
    let stats = stream.stats();
    assert!(
        stats.produced <= 9,
        "source ran {} items ahead with a window of 9",
        stats.produced
    );
    assert!(stats.reorder_buffered < 9);
    assert!(produced.load(Ordering::SeqCst) <= 10);
    let mut next = 0;
    while let Some(item) = stream.next().await {
        assert_eq!(item.unwrap(), next);
        next += 1;
    }
    assert_eq!(next, 1000);
}

#[tokio::test(start_paused = true)]
async fn rendezvous_buffer_hands_over_one_item_at_a_time() {
    // With buffer 0 after the source and one slow worker, the source is at most
    // one item (the one being handed over) ahead of the worker.
    let mut stream = Pipeline::from_iter(0..100u32)
        .stage("slow", 1, |n| async move {
            sleep(ms(10)).await;
            Ok::<_, String>(n)
        })
        .input_capacity(0)
        .output_capacity(0)
        .run()
        .unwrap();
    sleep(ms(55)).await;
    let stats = stream.stats();
    // Worker finished 5 items, holds one blocked on the rendezvous to the caller (or
    // is working on it), and one more waits in the slot.
    assert!(stats.produced <= 8, "produced {}", stats.produced);
    let mut n = 0;
    while let Some(item) = stream.next().await {
        item.unwrap();
        n += 1;
    }
    assert_eq!(n, 100);
}

#[tokio::test(start_paused = true)]
async fn from_stream_feeds_the_pipeline() {
    let source = futures::stream::iter(0..10u32).then(|n| async move {
        sleep(ms(1)).await;
        n
    });
    let out = Pipeline::from_stream(source)
        .stage("inc", 2, |n| async move { Ok::<_, String>(n + 1) })
        .ordered()
        .collect()
        .await
        .unwrap();
    assert_eq!(out, (1..=10).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_stage_runs_off_the_async_threads() {
    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::thread::ThreadId;

    let blocking_threads: Arc<Mutex<HashSet<ThreadId>>> = Arc::default();
    let async_threads: Arc<Mutex<HashSet<ThreadId>>> = Arc::default();
    let (b, a) = (Arc::clone(&blocking_threads), Arc::clone(&async_threads));
    let out = Pipeline::from_iter(0..50u64)
        .stage_blocking("cpu", 3, move |n| {
            b.lock().unwrap().insert(std::thread::current().id());
            std::thread::sleep(Duration::from_millis(1));
            Ok::<_, String>(n * 3)
        })
        .stage("async", 2, move |n| {
            a.lock().unwrap().insert(std::thread::current().id());
            async move { Ok(n + 1) }
        })
        .ordered()
        .collect()
        .await
        .unwrap();
    assert_eq!(out, (0..50).map(|n| n * 3 + 1).collect::<Vec<_>>());
    let (b, a) = (
        blocking_threads.lock().unwrap(),
        async_threads.lock().unwrap(),
    );
    assert!(
        !b.is_empty() && b.len() <= 3,
        "one thread per blocking worker"
    );
    assert!(
        b.is_disjoint(&a),
        "blocking calls ran on an async worker thread"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_stage_keeps_async_threads_free() {
    // Two blocking workers sleep (block) for 200 ms; meanwhile the async runtime's two
    // threads must still run a timer promptly.
    let stream = Pipeline::from_iter(0..2u32)
        .stage_blocking("block", 2, |n| {
            std::thread::sleep(Duration::from_millis(200));
            Ok::<_, String>(n)
        })
        .run()
        .unwrap();
    let start = std::time::Instant::now();
    tokio::time::sleep(ms(20)).await;
    assert!(start.elapsed() < ms(150), "a runtime thread was blocked");
    let report = stream.collect_all_for_test().await;
    assert_eq!(report.len(), 2);
}

trait CollectForTest<T> {
    async fn collect_all_for_test(self) -> Vec<T>;
}

impl<T, E: std::fmt::Debug> CollectForTest<T> for PipelineStream<T, E> {
    async fn collect_all_for_test(self) -> Vec<T> {
        let all = self.collect_all().await;
        assert!(all.error.is_none(), "{:?}", all.error);
        all.results.into_iter().map(Result::unwrap).collect()
    }
}

#[tokio::test(start_paused = true)]
async fn stats_count_items_busy_time_and_queue_depth() {
    let mut stream = Pipeline::from_iter(0..10u32)
        .stage("slow", 1, |n| async move {
            sleep(ms(10)).await;
            Ok::<_, String>(n)
        })
        .input_capacity(10)
        .stage("fast", 2, |n| async move { Ok(n) })
        .run()
        .unwrap();
    sleep(ms(25)).await;
    let mid = stream.stats();
    assert_eq!(mid.stages.len(), 2);
    assert_eq!(mid.stages[0].name, "slow");
    assert_eq!(mid.stages[0].concurrency, 1);
    assert!(mid.stages[0].queue_depth >= 6, "{:?}", mid.stages[0]);
    while let Some(item) = stream.next().await {
        item.unwrap();
    }
    let report = stream.shutdown().await;
    let stats: PipelineStats = report.stats;
    assert_eq!(stats.produced, 10);
    assert_eq!(stats.delivered, 10);
    let slow: &StageStats = &stats.stages[0];
    assert_eq!((slow.items_in, slow.items_out, slow.failed), (10, 10, 0));
    assert_eq!(slow.busy, ms(100));
    assert_eq!(slow.queue_depth, 0);
    assert_eq!(slow.workers, 0);
    assert_eq!(stats.stages[1].items_out, 10);
}

/// Issue 10: stats were published only when a worker went idle or every 64 items, so 10 s into
/// item 0 a stage showed nothing in and no busy time. Now they are live.
#[tokio::test(start_paused = true)]
async fn stats_are_live_while_a_worker_is_busy() {
    let mut stream = Pipeline::from_iter(0..3u32)
        .stage("slow", 2, |n| async move {
            sleep(ms(if n == 0 { 10_000 } else { 1_000 })).await;
            Ok::<_, String>(n)
        })
        .run()
        .unwrap();
    sleep(ms(500)).await;
    let s = &stream.stats().stages[0];
    assert_eq!((s.items_in, s.items_out), (2, 0), "{s:?}");
    assert_eq!(s.busy, ms(1_000), "two workers 500 ms into their items");
    sleep(ms(4_500)).await;
    let s = &stream.stats().stages[0];
    // Worker 2 finished items 1 and 2 (1 s each) and went idle; worker 1 is 5 s into item 0.
    assert_eq!((s.items_in, s.items_out), (3, 2), "{s:?}");
    assert_eq!(s.busy, ms(5_000 + 2_000));
    while let Some(item) = stream.next().await {
        item.unwrap();
    }
    let s = &stream.shutdown().await.stats.stages[0];
    assert_eq!((s.items_in, s.items_out), (3, 3));
    assert_eq!(s.busy, ms(12_000));
}

#[tokio::test(start_paused = true)]
async fn events_report_failures_stop_and_finish() {
    let stream = Pipeline::from_iter(0..10u32)
        .stage("a", 1, |n| async move {
            sleep(ms(1)).await;
            if n == 3 {
                Err("boom".to_owned())
            } else {
                Ok(n)
            }
        })
        .stage("b", 1, |n| async move { Ok(n) })
        .run()
        .unwrap();
    let events: EventStream = stream.events();
    let all = stream.collect_all().await;
    assert_eq!(all.error.unwrap().index(), Some(3));
    let events: Vec<PipelineEvent> = events.collect().await;
    assert!(events.contains(&PipelineEvent::ItemFailed {
        stage: "a".into(),
        index: 3,
        panicked: false
    }));
    assert!(events.contains(&PipelineEvent::Stopping {
        stage: Some("a".into()),
        index: Some(3)
    }));
    let finished: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            PipelineEvent::StageFinished { stats } => Some(stats.name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), 2);
    assert_eq!(events.last(), Some(&PipelineEvent::Finished));
}

#[tokio::test(start_paused = true)]
async fn an_empty_source_ends_at_once() {
    let out: Vec<u32> = Pipeline::from_iter(Vec::<u32>::new())
        .stage("x", 2, |n| async move { Ok::<_, String>(n) })
        .collect()
        .await
        .unwrap();
    assert!(out.is_empty());
}

#[test]
fn public_types_are_send_and_sync() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Pipeline<u32, String>>();
    send::<PipelineStream<u32, String>>();
    sync::<PipelineStream<u32, String>>();
    send::<PipelineError<String>>();
    sync::<PipelineError<String>>();
    send::<Collected<u32, String>>();
    send::<RunReport<String>>();
    send::<PipelineStats>();
    send::<EventStream>();
    send::<Dispatcher<u32, u32, String>>();
    sync::<Dispatcher<u32, u32, String>>();
    send::<DispatchError<u32>>();
    send::<DispatchReport<u32, String>>();
    send::<DispatchReceiver<u32>>();
    sync::<DispatchReceiver<u32>>();

    fn future_is_send<F: std::future::Future + Send>(_: F) {}
    future_is_send(
        Pipeline::from_iter(0..1u32)
            .stage("x", 1, |n| async move { Ok::<_, String>(n) })
            .collect(),
    );
    let _ = || async {
        let (d, mut results) =
            Dispatcher::new(1, |n: u32| async move { Ok::<_, String>(n) }).unwrap();
        future_is_send(d.dispatch(1));
        future_is_send(results.recv());
        future_is_send(d.finish());
    };
}
