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

use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::FutureExt;

use super::channel::{Receiver, Sender, TryRecvError, TrySendError};
use super::error::PipelineError;
use super::events::PipelineEvent;
use super::run::{Env, RunShared};
use super::stats::{LocalStats, StageShared};

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

/// One worker of a stage: runs until its input ends, its output is gone, or
/// the run stops.
pub(crate) async fn work<In, Out, E, S>(
    run: Arc<RunShared<E>>,
    stage: Arc<StageShared>,
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
    let mut stats = LocalStats::new(&stage);
    loop {
        let env = match rx.try_recv() {
            Ok(env) => env,
            Err(TryRecvError::Closed) => break,
            Err(TryRecvError::Empty) => {
                stats.idle();
                match rx.recv().await {
                    Some(env) => env,
                    None => break,
                }
            }
        };
        stats.took();
        let index = env.index;
        let item = match env.item {
            // Continue mode: a failure from upstream passes through unprocessed.
            Err(failure) => Err(failure),
            Ok(input) => {
                let called = std::panic::catch_unwind(AssertUnwindSafe(|| f.call(input)));
                let outcome = match called {
                    Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
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
        match tx.try_send(env) {
            Ok(()) => {}
            Err(TrySendError::Closed(_)) => break,
            Err(TrySendError::Full(env)) => {
                if tx.send(env).await.is_err() {
                    break;
                }
            }
        }
        stats.passed();
        // Cooperative scheduling: a worker whose input never runs dry and whose
        // output never fills would otherwise never yield its thread.
        tokio::task::consume_budget().await;
    }
}
