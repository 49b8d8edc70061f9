//! [`Dispatcher`]: the Go seed's manual style — dispatch jobs, receive
//! results, say done — without its bugs.
//!
//! # Implementation notes
//!
//! Jobs go through one bounded channel to `workers` tasks, results through
//! another to whoever calls [`Dispatcher::receive`]. The seed's bugs and what
//! rules them out here:
//!
//! - *dispatch racing done (send on a closed channel)*: `done` only drops the
//!   dispatcher's own sender; a dispatch holds a sender of its own for its
//!   whole call, and one that starts after `done` gets [`DispatchError::Done`].
//! - *dispatch ignoring the context*: cancellation closes the job channel, so a
//!   dispatch waiting for room returns [`DispatchError::Cancelled`] at once.
//! - *buffered jobs dropped on cancel*: cancellation moves every job still in
//!   the channel to the unstarted list ([`Dispatcher::take_unstarted`],
//!   [`DispatchReport::unstarted`]).
//! - *one error overwriting another*: the first error is kept; later ones go
//!   to [`DispatchReport::later_errors`].
//! - *workers leaking when the consumer stops reading*: workers hold no
//!   reference to the dispatcher itself; dropping the last handle aborts
//!   them, and [`finish`](Dispatcher::finish) discards unread results while
//!   it waits.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::channel::{channel, Channel, Receiver, Sender};
use super::error::{DispatchError, PipelineError};

/// The first error and every one after it.
type FirstAndLater<E> = (Option<PipelineError<E>>, Vec<PipelineError<E>>);

/// State the workers share (never the handle itself, so dropping every
/// handle ends them).
struct Shared<J, E> {
    name: String,
    halted: AtomicBool,
    jobs: Arc<Channel<(u64, J)>>,
    results: Arc<dyn Fn() + Send + Sync>,
    errors: Mutex<FirstAndLater<E>>,
    unstarted: Mutex<Vec<J>>,
    completed: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No user code runs under these locks.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<J, E> Shared<J, E> {
    /// Cancels: closes both channels and keeps the jobs that never started.
    fn halt(&self) {
        self.halted.store(true, Ordering::Release);
        self.jobs.close();
        (self.results)();
        let left = self.jobs.drain();
        lock(&self.unstarted).extend(left.into_iter().map(|(_, job)| job));
    }

    fn fail(&self, err: PipelineError<E>) {
        {
            let mut errors = lock(&self.errors);
            if errors.0.is_none() && !self.halted.load(Ordering::Acquire) {
                errors.0 = Some(err);
            } else {
                errors.1.push(err);
            }
        }
        self.halt();
    }
}

struct Inner<J, R, E> {
    shared: Arc<Shared<J, E>>,
    /// `None` after [`Dispatcher::done`].
    jobs: Mutex<Option<Sender<(u64, J)>>>,
    next_index: AtomicU64,
    results: Receiver<R>,
    tasks: Mutex<JoinSet<()>>,
}

impl<J, R, E> Drop for Inner<J, R, E> {
    fn drop(&mut self) {
        // The last handle is gone: nobody can receive, so stop (the JoinSet
        // aborts the workers as it drops).
        self.shared.halt();
    }
}

/// A pool of workers fed by hand: [`dispatch`](Dispatcher::dispatch) jobs,
/// [`receive`](Dispatcher::receive) results, then [`done`](Dispatcher::done).
///
/// This is the Go seed's manual style; most code wants a
/// [`Pipeline`](super::Pipeline) instead. Handles are cheap clones of one
/// dispatcher, so a producer task and a consumer can each hold one.
///
/// A job whose function returns `Err` (or panics) cancels the dispatcher and
/// its error is kept as the first error; see [`finish`](Dispatcher::finish).
///
/// Dropping the last handle cancels the dispatcher and aborts its workers.
///
/// # Examples
///
/// ```
/// use workcrew::pipeline::Dispatcher;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let d = Dispatcher::new(4, |n: u64| async move { Ok::<_, String>(n * 2) });
/// let producer = {
///     let d = d.clone();
///     tokio::spawn(async move {
///         for n in 0..10 {
///             if d.dispatch(n).await.is_err() {
///                 break; // cancelled
///             }
///         }
///         d.done();
///     })
/// };
/// let mut total = 0;
/// while let Some(doubled) = d.receive().await {
///     total += doubled;
/// }
/// producer.await.unwrap();
/// let report = d.finish().await;
/// assert!(report.error.is_none());
/// assert_eq!(total, 90);
/// # }
/// ```
pub struct Dispatcher<J, R, E> {
    inner: Arc<Inner<J, R, E>>,
}

impl<J, R, E> Clone for Dispatcher<J, R, E> {
    fn clone(&self) -> Self {
        Dispatcher {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<J, R, E> fmt::Debug for Dispatcher<J, R, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("name", &self.inner.shared.name)
            .field(
                "cancelled",
                &self.inner.shared.halted.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

/// Configures a [`Dispatcher`]; made by [`Dispatcher::builder`].
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `start`"]
pub struct DispatcherBuilder {
    name: String,
    workers: usize,
    buffer: usize,
    token: Option<CancellationToken>,
}

/// How a dispatcher ended, from [`Dispatcher::finish`].
#[non_exhaustive]
#[derive(Debug)]
pub struct DispatchReport<J, E> {
    /// The first error: a job's failure or panic (the "stage" is the
    /// dispatcher's name, the index the job's dispatch number), or
    /// [`PipelineError::Cancelled`] if it was cancelled before any error.
    pub error: Option<PipelineError<E>>,
    /// Errors after the first, in order.
    pub later_errors: Vec<PipelineError<E>>,
    /// Jobs accepted by `dispatch` that never started because of the
    /// cancellation.
    pub unstarted: Vec<J>,
    /// Jobs that completed successfully.
    pub completed: u64,
}

impl DispatcherBuilder {
    /// Names the dispatcher in its errors. Default: `"dispatcher"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Worker count. Default: 1.
    ///
    /// # Panics
    ///
    /// If `workers` is 0 (they would never run a job).
    pub fn workers(mut self, workers: usize) -> Self {
        assert!(workers > 0, "a dispatcher needs at least 1 worker");
        self.workers = workers;
        self
    }

    /// Capacity of the job channel and of the result channel; 0 = rendezvous
    /// (a dispatch returns once a worker took the job). Default: 0, as the
    /// seed's unbuffered dispatcher.
    pub fn buffer(mut self, capacity: usize) -> Self {
        self.buffer = capacity;
        self
    }

    /// Cancels the dispatcher when `token` is cancelled.
    pub fn cancel_token(mut self, token: CancellationToken) -> Self {
        self.token = Some(token);
        self
    }

    /// Starts the workers, each running `f(job)` for one job at a time.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime.
    pub fn start<J, R, E, F, Fut>(self, f: F) -> Dispatcher<J, R, E>
    where
        J: Send + 'static,
        R: Send + 'static,
        E: Send + 'static,
        F: Fn(J) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        let (jobs_tx, jobs_rx) = channel::<(u64, J)>(self.buffer);
        let (results_tx, results_rx) = channel::<R>(self.buffer);
        let results_chan = Arc::clone(results_rx.channel());
        let shared = Arc::new(Shared {
            name: self.name,
            halted: AtomicBool::new(false),
            jobs: Arc::clone(jobs_tx.channel()),
            results: Arc::new(move || results_chan.close()),
            errors: Mutex::new((None, Vec::new())),
            unstarted: Mutex::new(Vec::new()),
            completed: AtomicU64::new(0),
        });
        let mut tasks = JoinSet::new();
        let f = Arc::new(f);
        for _ in 0..self.workers {
            tasks.spawn(work(
                Arc::clone(&shared),
                Arc::clone(&f),
                jobs_rx.clone(),
                results_tx.clone(),
            ));
        }
        if let Some(token) = self.token {
            let shared = Arc::clone(&shared);
            tasks.spawn(async move {
                token.cancelled().await;
                shared.fail(PipelineError::Cancelled);
            });
        }
        Dispatcher {
            inner: Arc::new(Inner {
                shared,
                jobs: Mutex::new(Some(jobs_tx)),
                next_index: AtomicU64::new(0),
                results: results_rx,
                tasks: Mutex::new(tasks),
            }),
        }
    }
}

async fn work<J, R, E, F, Fut>(
    shared: Arc<Shared<J, E>>,
    f: Arc<F>,
    jobs: Receiver<(u64, J)>,
    results: Sender<R>,
) where
    F: Fn(J) -> Fut,
    Fut: Future<Output = Result<R, E>>,
{
    while let Some((index, job)) = jobs.recv().await {
        let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| f(job))) {
            Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
            Err(payload) => Err(payload),
        };
        match outcome {
            Ok(Ok(result)) => {
                shared.completed.fetch_add(1, Ordering::Relaxed);
                if results.send(result).await.is_err() {
                    break;
                }
            }
            Ok(Err(error)) => shared.fail(PipelineError::Failed {
                stage: shared.name.clone(),
                index,
                error,
            }),
            Err(payload) => shared.fail(PipelineError::panicked(&shared.name, index, &*payload)),
        }
    }
}

impl Dispatcher<(), (), ()> {
    /// A builder with the defaults: 1 worker, rendezvous channels, no token.
    pub fn builder() -> DispatcherBuilder {
        DispatcherBuilder {
            name: "dispatcher".to_owned(),
            workers: 1,
            buffer: 0,
            token: None,
        }
    }
}

impl<J, R, E> Dispatcher<J, R, E>
where
    J: Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    /// Starts `workers` workers running `f`, with the builder's other defaults.
    ///
    /// # Panics
    ///
    /// If `workers` is 0, or if called outside a tokio runtime.
    pub fn new<F, Fut>(workers: usize, f: F) -> Self
    where
        F: Fn(J) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        Dispatcher::builder().workers(workers).start(f)
    }

    /// Hands `job` to the workers, waiting for room in the job channel (with
    /// a rendezvous channel: until a worker took it).
    ///
    /// # Errors
    ///
    /// Gives the job back in [`DispatchError::Done`] after
    /// [`done`](Dispatcher::done), and in [`DispatchError::Cancelled`] once the
    /// dispatcher is cancelled — also while this call waits for room.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before it returns, the job was either not
    /// accepted (and is dropped with the future) or accepted as if it had
    /// returned `Ok`.
    pub async fn dispatch(&self, job: J) -> Result<(), DispatchError<J>> {
        if self.is_cancelled() {
            return Err(DispatchError::Cancelled(job));
        }
        let Some(tx) = lock(&self.inner.jobs).clone() else {
            return Err(DispatchError::Done(job));
        };
        let index = self.inner.next_index.fetch_add(1, Ordering::Relaxed);
        match tx.send((index, job)).await {
            Ok(()) => Ok(()),
            Err((_, job)) => Err(DispatchError::Cancelled(job)),
        }
    }

    /// The next result; `None` once [`done`](Dispatcher::done) was called and
    /// every job has finished, or once the dispatcher is cancelled.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a result is taken only when the future returns it.
    pub async fn receive(&self) -> Option<R> {
        self.inner.results.recv().await
    }

    /// No more jobs: later dispatches get [`DispatchError::Done`]; the workers
    /// finish the jobs already accepted, then `receive` returns `None`.
    /// Idempotent.
    pub fn done(&self) {
        lock(&self.inner.jobs).take();
    }

    /// Cancels: dispatches fail, jobs not yet started are kept for
    /// [`take_unstarted`](Dispatcher::take_unstarted), `receive` returns
    /// `None`. Jobs in progress are abandoned at their next `.await`.
    pub fn cancel(&self) {
        self.inner.shared.fail(PipelineError::Cancelled);
        self.abort_workers();
    }

    fn abort_workers(&self) {
        lock(&self.inner.tasks).abort_all();
    }

    /// True once cancelled (by [`cancel`](Dispatcher::cancel), the token, or
    /// a job's error).
    pub fn is_cancelled(&self) -> bool {
        self.inner.shared.halted.load(Ordering::Acquire)
    }

    /// Takes the jobs that were accepted but never started because of a
    /// cancellation.
    pub fn take_unstarted(&self) -> Vec<J> {
        std::mem::take(&mut *lock(&self.inner.shared.unstarted))
    }

    /// Marks the dispatcher [`done`](Dispatcher::done), waits for every
    /// worker to end — discarding results nobody received, so an absent
    /// consumer cannot block it — and reports how it ended.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves the dispatcher done; nothing else is lost.
    pub async fn finish(&self) -> DispatchReport<J, E> {
        self.done();
        while self.inner.results.recv().await.is_some() {}
        // Results are closed: every worker has ended or been cancelled.
        self.abort_workers();
        let mut tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        while tasks.join_next().await.is_some() {}
        let (error, later_errors) = std::mem::take(&mut *lock(&self.inner.shared.errors));
        DispatchReport {
            error,
            later_errors,
            unstarted: self.take_unstarted(),
            completed: self.inner.shared.completed.load(Ordering::Relaxed),
        }
    }
}
