//! [`Dispatcher`]: the Go seed's manual style — dispatch jobs, receive
//! results, say done — without its bugs.
//!
//! # Implementation notes
//!
//! Jobs go through one bounded channel to `workers` tasks, results through
//! another to the consumer's [`DispatchReceiver`]. The engine (shared state,
//! stopping, the worker loop) is in `shared`, with its invariants. The seed's
//! bugs and what rules them out here:
//!
//! - *dispatch racing done (send on a closed channel)*: `done` only drops the
//!   dispatcher's own sender; a dispatch holds a sender of its own for its
//!   whole call, and one that starts after `done` gets [`DispatchError::Done`].
//! - *dispatch ignoring the context*: a stop closes the job channel, so a
//!   dispatch waiting for room returns [`DispatchError::Cancelled`] at once.
//! - *buffered jobs dropped on cancel*: a stop moves every job still in the
//!   channel to [`DispatchReport::unstarted`]; running jobs are cancelled and
//!   listed, and results that had finished are still delivered.
//! - *one error overwriting another*: the first error is kept; later ones go
//!   to [`DispatchReport::later_errors`].
//! - *workers leaking when the consumer stops reading*: dropping the
//!   [`DispatchReceiver`] stops the workers, and `dispatch` then fails with
//!   [`DispatchError::ReceiverGone`].

mod receiver;
mod shared;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::channel::{channel, Sender};
use super::error::{BuildError, DispatchError, PipelineError};
pub use receiver::DispatchReceiver;
use shared::{lock, Shared, RECEIVER_GONE, RUNNING};

/// A pool of workers fed by hand: [`dispatch`](Dispatcher::dispatch) jobs,
/// read results from the [`DispatchReceiver`], then [`done`](Dispatcher::done).
///
/// This is the Go seed's manual style; most code wants a
/// [`Pipeline`](super::Pipeline) instead. Handles are cheap clones of one
/// dispatcher, so several producers can each hold one; the consumer owns the
/// receiver.
///
/// A job whose function returns `Err` (or panics) stops the dispatcher and
/// its error is kept as the first error; so does [`set_err`](Dispatcher::set_err).
/// [`err`](Dispatcher::err) reads the first error at any time;
/// [`finish`](Dispatcher::finish) reports how every job ended.
///
/// Dropping the last handle is [`done`](Dispatcher::done): the jobs already
/// accepted still run and their results still come.
///
/// # Examples
///
/// ```
/// use futures::StreamExt;
/// use workcrew::pipeline::Dispatcher;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (d, mut results) =
///     Dispatcher::new(4, |n: u64| async move { Ok::<_, String>(n * 2) }).unwrap();
/// let producer = tokio::spawn(async move {
///     for n in 0..10 {
///         if d.dispatch(n).await.is_err() {
///             break; // stopped
///         }
///     }
///     d.finish().await
/// });
/// let mut total = 0;
/// while let Some(doubled) = results.next().await {
///     total += doubled;
/// }
/// let report = producer.await.unwrap();
/// assert!(report.error.is_none());
/// assert_eq!((report.accepted, report.completed), (10, 10));
/// assert_eq!(total, 90);
/// # }
/// ```
pub struct Dispatcher<J, R, E> {
    inner: Arc<Inner<J, R, E>>,
}

struct Inner<J, R, E> {
    shared: Arc<Shared<J, R, E>>,
    /// `None` after [`Dispatcher::done`].
    jobs: Mutex<Option<Sender<(u64, J)>>>,
    next_id: AtomicU64,
    /// Shared with the receiver: the workers are owned by both.
    tasks: Arc<Mutex<JoinSet<()>>>,
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
            .field("stopped", &(self.inner.shared.stopped() != RUNNING))
            .finish_non_exhaustive()
    }
}

/// Configures a [`Dispatcher`]; made by [`Dispatcher::builder`].
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `start`"]
pub struct DispatcherBuilder {
    name: String,
    workers: usize,
    jobs_buffer: usize,
    results_buffer: usize,
    token: Option<CancellationToken>,
}

/// How every job of a dispatcher ended, from [`Dispatcher::finish`].
///
/// Each job accepted by `dispatch` has an id, its dispatch number (0-based,
/// in the order `dispatch` calls took their number), and is in exactly one
/// place: `completed` (counted), `failed`, `cancelled`, `undelivered` or
/// `unstarted`; so `accepted == completed + failed.len() + cancelled.len() +
/// undelivered.len() + unstarted.len()` once every `dispatch` call has
/// returned.
#[non_exhaustive]
#[derive(Debug)]
pub struct DispatchReport<J, E> {
    /// The first error: a job's failure or panic (the "stage" is the
    /// dispatcher's name, the index the job's id), an error recorded with
    /// [`set_err`](Dispatcher::set_err), or [`PipelineError::Cancelled`] if it
    /// was cancelled before any error.
    pub error: Option<PipelineError<E>>,
    /// Errors after the first, in order.
    pub later_errors: Vec<PipelineError<E>>,
    /// Jobs accepted by `dispatch`.
    pub accepted: u64,
    /// Jobs whose result was handed to the receiver (read or still waiting
    /// in it).
    pub completed: u64,
    /// Ids of the jobs that failed or panicked (their errors are `error` and
    /// `later_errors`).
    pub failed: Vec<u64>,
    /// Ids of the jobs that were running when the dispatcher stopped: an
    /// async job is dropped at its next `.await`; one that blocks its thread
    /// runs until it returns or yields, its result is discarded, and its
    /// worker then ends.
    pub cancelled: Vec<u64>,
    /// Ids of the jobs that finished after the consumer dropped its receiver
    /// (their results had nowhere to go).
    pub undelivered: Vec<u64>,
    /// Jobs accepted that never started because the dispatcher stopped, with
    /// their ids (not yet taken by [`take_unstarted`](Dispatcher::take_unstarted)).
    pub unstarted: Vec<(u64, J)>,
    /// True if the dispatcher stopped because the consumer dropped its
    /// receiver.
    pub receiver_dropped: bool,
}

impl DispatcherBuilder {
    /// Names the dispatcher in its errors. Default: `"dispatcher"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Worker count: jobs run at most this many at a time, and with this
    /// many jobs available this many run. Must be at least 1
    /// ([`start`](DispatcherBuilder::start) checks). Default: 1.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Capacity of the job channel; 0 = rendezvous (a dispatch returns once a
    /// worker took the job). Default: 0, as the seed's unbuffered dispatcher.
    pub fn jobs_buffer(mut self, capacity: usize) -> Self {
        self.jobs_buffer = capacity;
        self
    }

    /// Capacity of the result channel; 0 = rendezvous (a worker hands its
    /// result over only when the consumer takes it). Default: 0.
    pub fn results_buffer(mut self, capacity: usize) -> Self {
        self.results_buffer = capacity;
        self
    }

    /// Cancels the dispatcher when `token` is cancelled (as
    /// [`cancel`](Dispatcher::cancel) does).
    pub fn cancel_token(mut self, token: CancellationToken) -> Self {
        self.token = Some(token);
        self
    }

    /// Starts the workers, each running `f(job)` for one job at a time, and
    /// returns the dispatcher and the receiver of its results.
    ///
    /// # Errors
    ///
    /// [`BuildError::ZeroWorkers`] if `workers` is 0.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime.
    #[allow(clippy::type_complexity)] // a pair of the two ends, as `channel()` returns
    pub fn start<J, R, E, F, Fut>(
        self,
        f: F,
    ) -> Result<(Dispatcher<J, R, E>, DispatchReceiver<R>), BuildError>
    where
        J: Send + 'static,
        R: Send + 'static,
        E: Send + 'static,
        F: Fn(J) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        if self.workers == 0 {
            return Err(BuildError::ZeroWorkers { name: self.name });
        }
        let (jobs_tx, jobs_rx) = channel::<(u64, J)>(self.jobs_buffer);
        let (results_tx, results_rx) = channel::<R>(self.results_buffer);
        let shared = Arc::new(Shared::new(
            self.name,
            Arc::clone(jobs_tx.channel()),
            self.workers,
        ));
        let mut tasks = JoinSet::new();
        let f = Arc::new(f);
        for _ in 0..self.workers {
            tasks.spawn(shared::work(
                Arc::clone(&shared),
                Arc::clone(&f),
                jobs_rx.clone(),
                results_tx.clone(),
            ));
        }
        if let Some(token) = self.token {
            let shared = Arc::clone(&shared);
            tasks.spawn(async move {
                tokio::select! {
                    biased;
                    () = shared.finished.cancelled() => {}
                    () = shared.stop.cancelled() => {}
                    () = token.cancelled() => shared.fail(PipelineError::Cancelled),
                }
            });
        }
        let tasks = Arc::new(Mutex::new(tasks));
        let receiver = DispatchReceiver::new(
            results_rx,
            Arc::clone(&shared) as Arc<dyn receiver::Stop<R>>,
            Arc::clone(&tasks),
        );
        let dispatcher = Dispatcher {
            inner: Arc::new(Inner {
                shared,
                jobs: Mutex::new(Some(jobs_tx)),
                next_id: AtomicU64::new(0),
                tasks,
            }),
        };
        Ok((dispatcher, receiver))
    }
}

impl Dispatcher<(), (), ()> {
    /// A builder with the defaults: 1 worker, rendezvous channels, no token.
    pub fn builder() -> DispatcherBuilder {
        DispatcherBuilder {
            name: "dispatcher".to_owned(),
            workers: 1,
            jobs_buffer: 0,
            results_buffer: 0,
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
    /// Starts `workers` workers running `f`, with the builder's other
    /// defaults; returns the dispatcher and the receiver of its results.
    ///
    /// # Errors
    ///
    /// [`BuildError::ZeroWorkers`] if `workers` is 0.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime.
    #[allow(clippy::type_complexity)] // as `start`
    pub fn new<F, Fut>(workers: usize, f: F) -> Result<(Self, DispatchReceiver<R>), BuildError>
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
    /// Gives the job back: in [`DispatchError::Done`] after
    /// [`done`](Dispatcher::done); in [`DispatchError::Cancelled`] once the
    /// dispatcher is cancelled, and in [`DispatchError::ReceiverGone`] once
    /// the consumer dropped its receiver — also, at once, while this call
    /// waits for room.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before it returns, the job was either not
    /// accepted (and is dropped with the future) or accepted as if it had
    /// returned `Ok`.
    pub async fn dispatch(&self, job: J) -> Result<(), DispatchError<J>> {
        let shared = &self.inner.shared;
        if shared.stopped() != RUNNING {
            return Err(self.stopped_error(job));
        }
        let Some(tx) = lock(&self.inner.jobs).clone() else {
            return Err(DispatchError::Done(job));
        };
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        match tx.send((id, job)).await {
            Ok(()) => {
                shared.accepted.fetch_add(1, Ordering::Release);
                Ok(())
            }
            // Only a stop closes the job channel (and workers outlive it).
            Err((_, job)) => Err(self.stopped_error(job)),
        }
    }

    /// The error for a dispatch after a stop, giving `job` back.
    fn stopped_error(&self, job: J) -> DispatchError<J> {
        match self.inner.shared.stopped() {
            RECEIVER_GONE => DispatchError::ReceiverGone(job),
            _ => DispatchError::Cancelled(job),
        }
    }

    /// No more jobs: later dispatches get [`DispatchError::Done`]; the workers
    /// finish the jobs already accepted, then the receiver ends. Idempotent.
    pub fn done(&self) {
        lock(&self.inner.jobs).take();
    }

    /// Cancels: dispatches fail (also those waiting), jobs not yet started
    /// are kept (see [`take_unstarted`](Dispatcher::take_unstarted)), running
    /// jobs are cancelled, and the receiver yields the results that had
    /// finished, then ends. Records [`PipelineError::Cancelled`] unless an
    /// error came first.
    pub fn cancel(&self) {
        self.inner.shared.fail(PipelineError::Cancelled);
    }

    /// Records a user error (as the Go seed's `SetErr`), as
    /// [`PipelineError::User`], and cancels the dispatcher as a failing job
    /// does. The first error wins: if one was recorded already, `error` is
    /// kept in [`DispatchReport::later_errors`] instead, never over it.
    pub fn set_err(&self, error: E) {
        self.inner.shared.fail(PipelineError::User {
            stage: self.inner.shared.name.clone(),
            error,
        });
    }

    /// The first error so far (a clone), without finishing or consuming
    /// anything; `None` while there is none.
    pub fn err(&self) -> Option<PipelineError<E>>
    where
        E: Clone,
    {
        lock(&self.inner.shared.errors).first.clone()
    }

    /// True once stopped early: by [`cancel`](Dispatcher::cancel), the
    /// token, [`set_err`](Dispatcher::set_err), a job's error, or the
    /// receiver being dropped.
    pub fn is_cancelled(&self) -> bool {
        self.inner.shared.stopped() != RUNNING
    }

    /// Takes the jobs (with their ids) that were accepted but never started
    /// because the dispatcher stopped.
    pub fn take_unstarted(&self) -> Vec<(u64, J)> {
        std::mem::take(&mut lock(&self.inner.shared.book).unstarted)
    }

    /// Marks the dispatcher [`done`](Dispatcher::done), waits for every
    /// worker to end, and reports how every job ended.
    ///
    /// The workers end once the accepted jobs have run and their results are
    /// in the result channel, so this waits for the consumer to read them
    /// (or to drop its receiver); after [`cancel`](Dispatcher::cancel) it
    /// returns as soon as the running jobs are dropped.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves the dispatcher done; nothing else is lost.
    pub async fn finish(&self) -> DispatchReport<J, E> {
        self.done();
        let shared = &self.inner.shared;
        shared.finished.cancelled().await;
        // Every worker has ended; the watcher ends on `finished` too.
        let mut tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        while tasks.join_next().await.is_some() {}
        let (error, later_errors) = {
            let mut errors = lock(&shared.errors);
            (errors.first.take(), std::mem::take(&mut errors.later))
        };
        let mut book = lock(&shared.book);
        DispatchReport {
            error,
            later_errors,
            accepted: shared.accepted.load(Ordering::Acquire),
            completed: shared.completed.load(Ordering::Acquire),
            failed: std::mem::take(&mut book.failed),
            cancelled: std::mem::take(&mut book.cancelled),
            undelivered: std::mem::take(&mut book.undelivered),
            unstarted: std::mem::take(&mut book.unstarted),
            receiver_dropped: shared.stopped() == RECEIVER_GONE,
        }
    }
}
