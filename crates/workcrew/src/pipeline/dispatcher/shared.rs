//! The dispatcher's engine: the state its workers share, how it stops, and
//! the worker loop.
//!
//! # Implementation notes
//!
//! Every job accepted by `dispatch` (id = dispatch number) ends in exactly one
//! of the report's lists: completed (its result went to the result channel,
//! or to `late` if the dispatcher stopped while the worker waited for room),
//! failed (an error in `errors`), cancelled (running when the dispatcher
//! stopped), undelivered (finished after the consumer dropped its receiver)
//! or unstarted (still in the job channel when it stopped; given back).
//!
//! Stopping is one path, [`Shared::halt`]: close the job channel (a waiting
//! `dispatch` gets its job back at once; idle workers see `None`), move the
//! jobs still queued to `unstarted`, then cancel `stop`. Each worker races its
//! job against `stop`, preferring the job, so a job that finished is kept and
//! one still running is dropped (cancelled at its `.await`) and reported. A
//! worker waiting for room in the result channel when `stop` fires moves its
//! result to `late`, which the receiver yields after the channel: finished
//! results are never dropped and no worker waits for a consumer past a stop.
//!
//! The first error is kept; later ones (jobs failing while stopping,
//! `set_err` after the first) go to `later`, never over it.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use super::super::channel::{Channel, Receiver, Sender};
use super::super::error::PipelineError;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No user code runs under these locks, so a poisoned one is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why the dispatcher stopped early (`RUNNING` until it does).
pub(super) const RUNNING: u8 = 0;
/// Cancelled: the token, `cancel`, `set_err` or a job's error.
pub(super) const CANCELLED: u8 = 1;
/// The consumer dropped its receiver.
pub(super) const RECEIVER_GONE: u8 = 2;

/// What became of each job, by id.
pub(super) struct Book<J> {
    pub(super) failed: Vec<u64>,
    pub(super) cancelled: Vec<u64>,
    pub(super) undelivered: Vec<u64>,
    pub(super) unstarted: Vec<(u64, J)>,
}

/// The first error and every one after it.
pub(super) struct Errors<E> {
    pub(super) first: Option<PipelineError<E>>,
    pub(super) later: Vec<PipelineError<E>>,
}

/// State the workers share (never the handle itself, so dropping every
/// handle does not depend on the workers).
pub(super) struct Shared<J, R, E> {
    pub(super) name: String,
    /// [`RUNNING`], [`CANCELLED`] or [`RECEIVER_GONE`].
    pub(super) stopped: AtomicU8,
    /// Fired by [`Shared::halt`]: running jobs are dropped.
    pub(super) stop: CancellationToken,
    /// Fired when the last worker has ended.
    pub(super) finished: CancellationToken,
    pub(super) jobs: Arc<Channel<(u64, J)>>,
    /// Results a worker held when the dispatcher stopped; the receiver yields
    /// them after the channel's.
    pub(super) late: Mutex<VecDeque<R>>,
    pub(super) errors: Mutex<Errors<E>>,
    pub(super) book: Mutex<Book<J>>,
    pub(super) accepted: AtomicU64,
    pub(super) completed: AtomicU64,
    pub(super) live_workers: AtomicUsize,
}

impl<J, R, E> Shared<J, R, E> {
    pub(super) fn new(name: String, jobs: Arc<Channel<(u64, J)>>, workers: usize) -> Self {
        Shared {
            name,
            stopped: AtomicU8::new(RUNNING),
            stop: CancellationToken::new(),
            finished: CancellationToken::new(),
            jobs,
            late: Mutex::new(VecDeque::new()),
            errors: Mutex::new(Errors {
                first: None,
                later: Vec::new(),
            }),
            book: Mutex::new(Book {
                failed: Vec::new(),
                cancelled: Vec::new(),
                undelivered: Vec::new(),
                unstarted: Vec::new(),
            }),
            accepted: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            live_workers: AtomicUsize::new(workers),
        }
    }

    pub(super) fn stopped(&self) -> u8 {
        self.stopped.load(Ordering::Acquire)
    }

    /// Stops: no job is taken or accepted any more, queued jobs are kept as
    /// unstarted, running ones are cancelled. Idempotent; the first cause wins.
    pub(super) fn halt(&self, cause: u8) {
        if self
            .stopped
            .compare_exchange(RUNNING, cause, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        self.jobs.close();
        let left = self.jobs.drain();
        lock(&self.book).unstarted.extend(left);
        self.stop.cancel();
    }

    /// Records `err` (first one wins) and stops.
    pub(super) fn fail(&self, err: PipelineError<E>) {
        {
            let mut errors = lock(&self.errors);
            if errors.first.is_none() && self.stopped() == RUNNING {
                errors.first = Some(err);
            } else {
                errors.later.push(err);
            }
        }
        self.halt(CANCELLED);
    }
}

/// Counts live workers; the last one out fires `finished`. A guard so that it
/// also runs when the worker is aborted.
struct WorkerGuard<'a, J, R, E>(&'a Shared<J, R, E>);

impl<J, R, E> Drop for WorkerGuard<'_, J, R, E> {
    fn drop(&mut self) {
        if self.0.live_workers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.finished.cancel();
        }
    }
}

/// One worker: takes a job, runs it (racing the stop), hands the result on.
pub(super) async fn work<J, R, E, F, Fut>(
    shared: Arc<Shared<J, R, E>>,
    f: Arc<F>,
    jobs: Receiver<(u64, J)>,
    results: Sender<R>,
) where
    F: Fn(J) -> Fut,
    Fut: Future<Output = Result<R, E>>,
{
    let _guard = WorkerGuard(&shared);
    let mut stop = std::pin::pin!(shared.stop.cancelled());
    let mut out = VecDeque::with_capacity(1);
    // `None` once the job channel is closed (done and empty, or stopped).
    while let Some((id, job)) = jobs.recv().await {
        let run = async {
            match std::panic::catch_unwind(AssertUnwindSafe(|| f(job))) {
                Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
                Err(payload) => Err(payload),
            }
        };
        // The job first: one that has finished is kept even if the stop came too.
        let outcome = tokio::select! {
            biased;
            outcome = run => outcome,
            () = &mut stop => {
                lock(&shared.book).cancelled.push(id);
                return;
            }
        };
        let result = match outcome {
            Ok(Ok(result)) => result,
            Ok(Err(error)) => {
                lock(&shared.book).failed.push(id);
                shared.fail(PipelineError::Failed {
                    stage: shared.name.clone(),
                    index: id,
                    error,
                });
                continue;
            }
            Err(payload) => {
                lock(&shared.book).failed.push(id);
                shared.fail(PipelineError::panicked(&shared.name, id, &*payload));
                continue;
            }
        };
        out.push_back(result);
        let sent = tokio::select! {
            biased;
            sent = results.send_all(&mut out) => Some(sent.is_ok()),
            () = &mut stop => None,
        };
        match sent {
            Some(true) => {
                shared.completed.fetch_add(1, Ordering::Relaxed);
            }
            Some(false) => {
                // The receiver is gone: nobody can take this result.
                out.clear();
                lock(&shared.book).undelivered.push(id);
                return;
            }
            None => {
                // Stopped while waiting for room: the receiver gets it after
                // the channel's results (dropping `send_all` left it in `out`).
                lock(&shared.late).extend(out.drain(..));
                shared.completed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}
