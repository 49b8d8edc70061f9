//! [`PipelineStream`]: the results of a running pipeline, and what a finished
//! run reports.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::channel::Receiver;
use super::error::PipelineError;
use super::events::EventStream;
use super::ordered::Reorder;
use super::run::{Env, RunShared};
use super::stats::{PipelineStats, StageShared};

/// Items moved from the last channel per lock.
const BATCH: usize = 128;

/// The results of a running pipeline, from [`Pipeline::run`](super::Pipeline::run).
///
/// Yields `Ok(output)` per item — in input order if the pipeline is
/// [`ordered`](super::Pipeline::ordered), else as items finish — and ends with
/// `None`. If the run fails it yields the first error as its last item (then
/// `None`); with [`continue_on_error`](super::Pipeline::continue_on_error)
/// each failed item yields its `Err` in its place and the stream goes on.
///
/// Dropping the stream stops the run: the source stops producing, every
/// channel is closed, every async stage task is aborted (an item in progress
/// is dropped at its next `.await`), and blocking stage workers return after
/// their current call. [`shutdown`](PipelineStream::shutdown) does the same
/// and waits for every task to have ended.
pub struct PipelineStream<T, E> {
    rx: Receiver<Env<T, E>>,
    waiter: Option<u64>,
    /// Empty looks since the last item (see `channel::RECV_SPINS`).
    spins: u8,
    ready: VecDeque<Env<T, E>>,
    reorder: Option<Reorder<Env<T, E>>>,
    window: Option<Arc<Semaphore>>,
    run: Arc<RunShared<E>>,
    tasks: JoinSet<()>,
    stages: Vec<Arc<StageShared>>,
    delivered: u64,
    done: bool,
}

/// How a run ended, beyond its first error: from
/// [`PipelineStream::shutdown`].
#[non_exhaustive]
#[derive(Debug)]
pub struct RunReport<E> {
    /// Errors recorded after the first one, in the order they happened: items
    /// that failed while the run was stopping, or a cancellation or deadline
    /// that came after the first error.
    pub later_errors: Vec<PipelineError<E>>,
    /// The final statistics.
    pub stats: PipelineStats,
}

/// Everything a finished run produced, from
/// [`Pipeline::collect_all`](super::Pipeline::collect_all) or
/// [`PipelineStream::collect_all`].
#[non_exhaustive]
#[derive(Debug)]
pub struct Collected<T, E> {
    /// Every delivered item's result, in delivery order — input order if the
    /// pipeline is [`ordered`](super::Pipeline::ordered). With
    /// [`continue_on_error`](super::Pipeline::continue_on_error) a failed or
    /// panicked item is its `Err` in its own place, so in an ordered run
    /// `results[i]` is item `i`'s result. (In fail-fast mode the failure that
    /// stopped the run is `error`, not here.)
    pub results: Vec<Result<T, PipelineError<E>>>,
    /// The error that ended the run early, if one did.
    pub error: Option<PipelineError<E>>,
    /// Errors after `error`, and the final statistics.
    pub report: RunReport<E>,
}

impl<T, E> Collected<T, E> {
    /// The successful outputs, in their order.
    pub fn outputs(&self) -> impl Iterator<Item = &T> {
        self.results.iter().filter_map(|r| r.as_ref().ok())
    }

    /// The failed items (continue mode), in their order.
    pub fn failures(&self) -> impl Iterator<Item = &PipelineError<E>> {
        self.results.iter().filter_map(|r| r.as_ref().err())
    }
}

impl<T, E> PipelineStream<T, E> {
    pub(crate) fn new(
        rx: Receiver<Env<T, E>>,
        run: Arc<RunShared<E>>,
        tasks: JoinSet<()>,
        stages: Vec<Arc<StageShared>>,
        window: Option<Arc<Semaphore>>,
        window_size: Option<usize>,
    ) -> Self {
        PipelineStream {
            rx,
            waiter: None,
            spins: 0,
            ready: VecDeque::with_capacity(BATCH),
            reorder: window_size.map(Reorder::new),
            window,
            run,
            tasks,
            stages,
            delivered: 0,
            done: false,
        }
    }

    /// A snapshot of the run's statistics.
    pub fn stats(&self) -> PipelineStats {
        PipelineStats {
            produced: self.run.produced.load(Ordering::Relaxed),
            delivered: self.delivered,
            reorder_buffered: self.reorder.as_ref().map_or(0, Reorder::len),
            stages: self.stages.iter().map(|s| s.snapshot()).collect(),
        }
    }

    /// Subscribes to the run's events. The stream ends after
    /// [`PipelineEvent::Finished`](super::PipelineEvent::Finished) (at once
    /// if every stage has already finished).
    pub fn events(&self) -> EventStream {
        EventStream(self.run.events.subscribe())
    }

    /// The run's errors so far, in the order they were recorded, without
    /// taking them: the first error (until the stream yields it as its last
    /// item), then the later ones (see [`RunReport::later_errors`]). Items
    /// failed in continue mode are results, not errors of the run: they come
    /// in the stream.
    pub fn errors(&self) -> Vec<PipelineError<E>>
    where
        E: Clone,
    {
        self.run.errors()
    }

    /// Errors recorded after the first one so far (see [`RunReport::later_errors`]);
    /// takes them out.
    pub fn take_later_errors(&mut self) -> Vec<PipelineError<E>> {
        self.run.take_later()
    }

    /// Stops the run if it is still going and waits until every task of it
    /// has ended (blocking stage workers included); returns the errors that
    /// came after the first and the final statistics.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the run without waiting for blocking workers.
    pub async fn shutdown(mut self) -> RunReport<E> {
        self.run.halt();
        while self.tasks.join_next().await.is_some() {}
        RunReport {
            later_errors: self.run.take_later(),
            stats: self.stats(),
        }
    }

    /// Consumes the whole stream; see [`Pipeline::collect_all`](super::Pipeline::collect_all).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the run; results not yet returned are lost.
    pub async fn collect_all(mut self) -> Collected<T, E> {
        let mut results = Vec::new();
        let mut error = None;
        while let Some(item) = self.next().await {
            match item {
                Err(err @ (PipelineError::Failed { .. } | PipelineError::Panicked { .. }))
                    if self.run.continue_on_error =>
                {
                    results.push(Err(err));
                }
                Ok(out) => results.push(Ok(out)),
                Err(err) => error = Some(err),
            }
        }
        Collected {
            results,
            error,
            report: self.shutdown().await,
        }
    }

    fn deliver(&mut self, env: Env<T, E>) -> Poll<Option<Result<T, PipelineError<E>>>> {
        self.delivered += 1;
        Poll::Ready(Some(env.item.map_err(|failure| *failure)))
    }
}

// Nothing in the stream is pinned structurally: items are only moved in and out.
impl<T, E> Unpin for PipelineStream<T, E> {}

impl<T, E> Stream for PipelineStream<T, E> {
    type Item = Result<T, PipelineError<E>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            if let Some(reorder) = &mut this.reorder {
                if let Some(env) = reorder.pop() {
                    if let Some(window) = &this.window {
                        window.add_permits(1);
                    }
                    return this.deliver(env);
                }
            } else if let Some(env) = this.ready.pop_front() {
                return this.deliver(env);
            }
            match this.rx.poll_recv_many(
                cx,
                &mut this.waiter,
                &mut this.spins,
                &mut this.ready,
                BATCH,
            ) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(0) => {
                    // Closed: every last-stage worker ended, or the run halted.
                    this.done = true;
                    let first = this.run.take_first();
                    // Ends the watcher and anything still running.
                    this.run.halt();
                    this.ready.clear();
                    return Poll::Ready(first.map(Err));
                }
                Poll::Ready(_) => {
                    if let Some(reorder) = &mut this.reorder {
                        for env in this.ready.drain(..) {
                            reorder.insert(env.index, env);
                        }
                    }
                }
            }
        }
    }
}

impl<T, E> Drop for PipelineStream<T, E> {
    fn drop(&mut self) {
        self.rx.forget(&mut self.waiter);
        // Closes the channels (blocking workers return) and aborts the tasks;
        // dropping the JoinSet aborts them too.
        self.run.halt();
    }
}

impl<T, E> fmt::Debug for PipelineStream<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineStream")
            .field("delivered", &self.delivered)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}
