//! Stress over the channel hand-offs between stages: many fast items, small buffers, several
//! workers per stage, on a multi-thread runtime. A lost wake-up (a worker or the stream parked
//! while an item waits for it, or a sender whose parked batch was moved but never woken) hangs
//! the run, which the timeout turns into a failure.

use std::future::pending;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use workcrew::pipeline::Pipeline;

const LIMIT: Duration = Duration::from_secs(60);

/// 3 no-op stages with the given concurrency and buffers (source buffer first).
fn noop(items: u64, concurrency: usize, buffers: [usize; 4]) -> Pipeline<u64, ()> {
    Pipeline::from_iter(0..items)
        .stage("a", concurrency, |n| async move { Ok(n) })
        .input_capacity(buffers[0])
        .stage("b", concurrency, |n| async move {
            // Now and then an item that waits, so batches and single items mix.
            if n % 97 == 0 {
                tokio::task::yield_now().await;
            }
            Ok(n)
        })
        .input_capacity(buffers[1])
        .stage("c", concurrency, |n| async move { Ok(n + 1) })
        .input_capacity(buffers[2])
        .output_capacity(buffers[3])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_item_arrives_once_with_small_buffers() {
    const ITEMS: u64 = 20_000;
    for concurrency in [1, 2, 3] {
        for buffers in [[0, 0, 0, 0], [1, 1, 1, 1], [2, 0, 3, 1], [32, 1, 32, 0]] {
            let run = noop(ITEMS, concurrency, buffers).collect();
            let mut out = tokio::time::timeout(LIMIT, run)
                .await
                .unwrap_or_else(|_| panic!("hung: concurrency {concurrency}, buffers {buffers:?}"))
                .unwrap();
            out.sort_unstable();
            assert_eq!(out, (1..=ITEMS).collect::<Vec<_>>(), "buffers {buffers:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_runs_deliver_in_order_with_small_buffers() {
    const ITEMS: u64 = 20_000;
    for buffers in [[1, 1, 1, 1], [3, 0, 2, 1]] {
        let run = noop(ITEMS, 3, buffers).ordered().collect();
        let out = tokio::time::timeout(LIMIT, run)
            .await
            .expect("hung")
            .unwrap();
        assert_eq!(out, (1..=ITEMS).collect::<Vec<_>>(), "buffers {buffers:?}");
    }
}

/// The stream read from the caller's own thread (`block_on`), as in the benchmark.
#[test]
fn a_stream_read_outside_the_runtime_gets_everything() {
    const ITEMS: u64 = 50_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for _ in 0..3 {
        let n = rt.block_on(async {
            let mut stream = noop(ITEMS, 2, [32, 32, 32, 32]).run().unwrap();
            let mut n = 0;
            tokio::time::timeout(LIMIT, async {
                while let Some(item) = stream.next().await {
                    item.unwrap();
                    n += 1;
                }
            })
            .await
            .expect("hung");
            n
        });
        assert_eq!(n, ITEMS);
    }
}

/// Dropping the stream while every channel is full (senders blocked with parked
/// batches) ends every task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_full_channels_ends_every_task() {
    for buffers in [[1, 1, 1, 1], [32, 32, 32, 32]] {
        let mut stream = noop(u64::MAX, 2, buffers).run().unwrap();
        for _ in 0..100 {
            stream.next().await.unwrap().unwrap();
        }
        // Let every stage fill its output and block.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let report = tokio::time::timeout(LIMIT, stream.shutdown())
            .await
            .expect("shutdown hung");
        assert!(report.stats.stages.iter().all(|s| s.workers == 0));
    }
}

/// Every worker of a stage gets an item while the others hold theirs: each item waits at a
/// barrier of the stage's worker count, so the run goes on only if all 4 are in flight at once.
/// Issue 10: with a rendezvous input the blocked sender was not woken while workers already
/// waited, so this hung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_of_a_stage_gets_an_item_while_the_others_hold_theirs() {
    const WORKERS: usize = 4;
    for capacity in [0, 1, 8] {
        let barrier = Arc::new(tokio::sync::Barrier::new(WORKERS));
        let run = Pipeline::from_iter(0..2_000u64)
            .stage("held", WORKERS, move |n| {
                let barrier = Arc::clone(&barrier);
                async move {
                    barrier.wait().await;
                    Ok::<_, ()>(n)
                }
            })
            .input_capacity(capacity)
            .output_capacity(capacity)
            .collect();
        let out = tokio::time::timeout(LIMIT, run)
            .await
            .unwrap_or_else(|_| panic!("hung: input capacity {capacity}"))
            .unwrap();
        assert_eq!(out.len(), 2_000);
    }
}

/// One item that never finishes must not stop the others (issue 10: with a rendezvous input
/// every other item waited behind it).
#[tokio::test(start_paused = true)]
async fn an_item_that_never_finishes_holds_back_only_its_worker() {
    for capacity in [0, 1, 8] {
        let mut stream = Pipeline::from_iter(0..100u64)
            .stage("stuck", 4, |n| async move {
                if n == 0 {
                    pending::<()>().await;
                }
                Ok::<_, ()>(n)
            })
            .input_capacity(capacity)
            .output_capacity(capacity)
            .run()
            .unwrap();
        // The paused clock jumps to the limit at once if the run is stuck.
        let got = tokio::time::timeout(LIMIT, async {
            let mut got = Vec::new();
            while got.len() < 99 {
                got.push(stream.next().await.unwrap().unwrap());
            }
            got
        })
        .await
        .unwrap_or_else(|_| panic!("hung behind the stuck item: input capacity {capacity}"));
        assert!(!got.contains(&0));
        stream.shutdown().await;
    }
}

/// A worker that took a batch of quick items must not hold the rest of its batch back when one
/// of them turns out to wait: idle workers take them. (Issue 10 review: with item 50 stuck, the
/// items batched behind it in its worker never came out, and the barrier test above hung at
/// the end of its input.)
#[tokio::test(start_paused = true)]
async fn items_batched_behind_a_waiting_item_go_to_idle_workers() {
    for capacity in [1, 8, 32] {
        let mut stream = Pipeline::from_iter(0..200u64)
            .stage("mostly-quick", 2, |n| async move {
                if n == 50 {
                    pending::<()>().await;
                }
                Ok::<_, ()>(n)
            })
            .input_capacity(capacity)
            .run()
            .unwrap();
        let got = tokio::time::timeout(LIMIT, async {
            let mut got = Vec::new();
            while got.len() < 199 {
                got.push(stream.next().await.unwrap().unwrap());
            }
            got
        })
        .await
        .unwrap_or_else(|_| panic!("items held behind the stuck one: input capacity {capacity}"));
        assert!(!got.contains(&50));
        stream.shutdown().await;
    }
}
