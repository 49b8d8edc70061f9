//! Stages: how an item is processed (the [`StageFn`] kinds) and the worker
//! loop every kind shares.
//!
//! # Implementation notes
//!
//! A stage is `concurrency` long-lived workers that share the stage's input
//! channel and output channel. What differs between kinds is only where the
//! worker loop runs and how one item is turned into a future:
//!
//! - async ([`AsyncFn`]): the loop is a tokio task; the user's future is
//!   awaited in it.
//! - blocking ([`BlockingFn`]): the loop runs on a `spawn_blocking` thread
//!   under `Handle::block_on`, and the user's function is called there, so
//!   CPU-bound or blocking work never occupies an async worker thread.
//!
//! A stage backed by a `ProcessPool` function
//! ([`Pipeline::stage_process`](super::Pipeline::stage_process)) is an async
//! stage whose future is the pool call.
//!
//! Per item a worker does: take (try first, then wait), call under
//! `catch_unwind`, pass on (try first, then wait). No allocation, no task
//! spawn, no clock read unless the worker goes idle.
//!
//! A worker takes a batch only while its items finish without waiting, and
//! the moment one of them has to wait it gives the rest of its batch back to
//! the input channel ([`Receiver::give_back`](super::channel::Receiver::give_back)),
//! so items never wait behind a slow (or stuck) one while a sibling worker is
//! idle: N workers have N items in flight whenever N are available.

use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::FutureExt;

use super::channel::{Receiver, Sender, TryRecvError};
use super::error::PipelineError;
use super::events::PipelineEvent;
use super::run::{Env, RunShared};
use super::stats::StageShared;

/// How one stage turns an input into an output.
pub(crate) trait StageFn<In, Out, E>: Send + Sync + 'static {
    type Fut: Future<Output = Result<Out, E>> + Send;

    fn call(&self, input: In) -> Self::Fut;
}

/// An async function stage.
pub(crate) struct AsyncFn<F, Fut>(pub(crate) F, pub(crate) PhantomData<fn() -> Fut>);

impl<In, Out, E, F, Fut> StageFn<In, Out, E> for AsyncFn<F, Fut>
where
    F: Fn(In) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Out, E>> + Send + 'static,
{
    type Fut = Fut;

    fn call(&self, input: In) -> Fut {
        (self.0)(input)
    }
}

/// A blocking function stage (called on the worker's blocking thread).
pub(crate) struct BlockingFn<F>(pub(crate) F);

impl<In, Out, E, F> StageFn<In, Out, E> for BlockingFn<F>
where
    F: Fn(In) -> Result<Out, E> + Send + Sync + 'static,
    Out: Send,
    E: Send,
{
    type Fut = std::future::Ready<Result<Out, E>>;

    fn call(&self, input: In) -> Self::Fut {
        std::future::ready((self.0)(input))
    }
}

/// Counts a stage's live workers; the last one out reports the stage finished.
/// A guard so that it also runs when the worker is aborted.
struct WorkerGuard<'a, E> {
    run: &'a RunShared<E>,
    stage: &'a StageShared,
}

impl<E> Drop for WorkerGuard<'_, E> {
    fn drop(&mut self) {
        if self.stage.workers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.run.stage_finished(self.stage);
        }
    }
}

/// Registers a worker about to be spawned (before it can run, so the stage
/// cannot look finished while workers are still being started).
pub(crate) fn add_worker(stage: &StageShared) {
    stage.workers.fetch_add(1, Ordering::AcqRel);
}

/// Items a worker takes from its input at once, at most (it takes its share:
/// the queue, parked batches included, divided by the stage's concurrency, or
/// more if the items are quick; see [`Pace`]). Above the default channel
/// capacity so that a worker can take a full queue and the batch parked
/// behind it at once.
const BATCH: usize = 64;

/// Work shorter than this is not worth sharing out: a sibling worker taking
/// half of it would cost a task wake-up (often a thread unpark, several µs)
/// to save less than that. (Measured on the no-op benchmark: taking the whole
/// queue instead of half with 2 workers per stage, ~1.5x the items/s. Slow
/// items, such as the Go workload's 30-60 µs, are still shared out.)
const SPLIT_BELOW: Duration = Duration::from_micros(10);

/// How long a worker's items take when none of them waits, measured per
/// batch (one clock read at each end), to size the next batch.
struct Pace {
    /// The current batch: when it started and its size.
    started: Option<(Instant, usize)>,
    /// Time per item of the last batch without waits.
    per_item: Option<Duration>,
}

impl Pace {
    fn new() -> Self {
        Pace {
            started: None,
            per_item: None,
        }
    }

    fn start(&mut self, items: usize) {
        self.started = Some((Instant::now(), items));
    }

    /// The batch is done; `waited` if one of its items had to wait (then its
    /// time says nothing about the work, and the next batch is one item).
    fn batch_done(&mut self, waited: bool) {
        let Some((at, items)) = self.started.take() else {
            return;
        };
        self.per_item = if waited {
            None
        } else {
            let items = u32::try_from(items).unwrap_or(u32::MAX).max(1);
            Some(at.elapsed() / items)
        };
    }

    /// How many items together take less than [`SPLIT_BELOW`] (0 if unknown):
    /// the worker takes that many even if it is more than its share.
    fn whole(&self) -> usize {
        self.per_item.map_or(0, |d| {
            let n = SPLIT_BELOW.as_nanos() / d.as_nanos().max(1);
            usize::try_from(n).unwrap_or(usize::MAX)
        })
    }
}

/// Hands `output` on, waiting for room as needed; false if the next stage is gone.
async fn flush<T>(tx: &Sender<T>, output: &mut VecDeque<T>) -> bool {
    output.is_empty() || tx.send_all(output).await.is_ok()
}

/// Worker `index` of a stage: runs until its input ends, its output is gone,
/// or the run stops.
pub(crate) async fn work<In, Out, E, S>(
    run: Arc<RunShared<E>>,
    stage: Arc<StageShared>,
    index: usize,
    f: Arc<S>,
    rx: Receiver<Env<In, E>>,
    tx: Sender<Env<Out, E>>,
) where
    S: StageFn<In, Out, E>,
{
    let _guard = WorkerGuard {
        run: &run,
        stage: &stage,
    };
    let mut stats = stage.worker(index);
    // This worker's share of the input, and outputs not yet handed on: one
    // channel lock per batch instead of per item (see `flush`).
    let mut input: VecDeque<Env<In, E>> = VecDeque::new();
    let mut output: VecDeque<Env<Out, E>> = VecDeque::new();
    // Whether the last item's function had to wait (was not ready at once).
    let mut waited = true;
    let mut pace = Pace::new();
    loop {
        let env = match input.pop_front() {
            Some(env) => env,
            None => {
                pace.batch_done(waited);
                // Hand on what is done before looking for (or waiting for) more.
                if !flush(&tx, &mut output).await {
                    break;
                }
                // Cooperative scheduling: a worker whose input never runs dry and
                // whose output never fills would otherwise never yield its thread.
                // Once per batch, as a channel operation is (per item it was ~5%
                // of the no-op benchmark).
                tokio::task::consume_budget().await;
                // Batches only while items finish without waiting: a slow item
                // holding others back would cost more than the hand-offs saved.
                let max = if waited { 1 } else { BATCH };
                match rx.try_recv_share(&mut input, stage.concurrency, max, pace.whole()) {
                    Ok(n) => {
                        pace.start(n);
                        match input.pop_front() {
                            Some(env) => env,
                            None => continue,
                        }
                    }
                    Err(TryRecvError::Closed) => break,
                    Err(TryRecvError::Empty) => {
                        stats.idle();
                        let env = rx.recv().await;
                        pace.start(1);
                        match env {
                            Some(env) => env,
                            None => break,
                        }
                    }
                }
            }
        };
        if run.is_halted() {
            break;
        }
        waited = false;
        stats.took();
        let index = env.index;
        let item = match env.item {
            // Continue mode: a failure from upstream passes through unprocessed.
            Err(failure) => Err(failure),
            Ok(value) => {
                let called = std::panic::catch_unwind(AssertUnwindSafe(|| f.call(value)));
                let outcome = match called {
                    Ok(fut) => {
                        let mut fut = std::pin::pin!(AssertUnwindSafe(fut).catch_unwind());
                        let first =
                            std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
                        match first {
                            Poll::Ready(outcome) => outcome,
                            Poll::Pending => {
                                // This item waits: nothing else may wait behind it
                                // (forever, if it never finishes). The rest of the
                                // batch goes back to the channel for idle workers,
                                // and finished outputs go on.
                                waited = true;
                                if !input.is_empty() {
                                    rx.give_back(&mut input);
                                }
                                if !flush(&tx, &mut output).await {
                                    break;
                                }
                                fut.await
                            }
                        }
                    }
                    Err(payload) => Err(payload),
                };
                match outcome {
                    Ok(Ok(out)) => Ok(out),
                    Ok(Err(error)) => Err(PipelineError::Failed {
                        stage: stage.name.to_string(),
                        index,
                        error,
                    }),
                    Err(payload) => Err(PipelineError::panicked(&stage.name, index, &*payload)),
                }
                .map_err(|err| {
                    stats.failed();
                    run.events.send(PipelineEvent::ItemFailed {
                        stage: stage.name.to_string(),
                        index,
                        panicked: err.is_panic(),
                    });
                    Box::new(err)
                })
            }
        };
        let env = match item {
            Err(err) if !run.continue_on_error => {
                run.fail(*err);
                break;
            }
            item => Env { index, item },
        };
        output.push_back(env);
        stats.passed();
        if waited && !flush(&tx, &mut output).await {
            break;
        }
    }
    // Input ended: what this worker finished still goes on (unless the run stopped).
    if !run.is_halted() {
        flush(&tx, &mut output).await;
    }
}
