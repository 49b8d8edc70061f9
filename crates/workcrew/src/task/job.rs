//! A queued task: its future, its options, and the slot its handle reads.
//!
//! # Implementation notes
//!
//! A task costs two allocations: the boxed [`Job`] (the future itself plus its
//! options) that the queue and then a worker own, and the [`Completion`] shared
//! with the [`TaskHandle`]. The handle's side is a mutex-guarded result slot; the
//! abort side is lock-free: an atomic `phase` (started bit + cancel reason) and
//! an `AtomicWaker` for the worker that polls the task.
//!
//! Every accepted job delivers exactly one result: `Delivery` is a drop guard,
//! so a job dropped without finishing (its runtime shut down) still resolves
//! its handle as cancelled. A job that is cancelled before it finishes is
//! delivered by that guard too, *after* its future is dropped (the future is
//! the job's first field, so it drops first): whoever sees the handle resolve
//! also sees the future gone.
//!
//! A queued job leaves the queue as soon as it is cancelled: by its handle's
//! `abort` (which finds the pool through the [`registry`](super::registry)) or
//! by its token (through a [`watch`](super::watch)er, for tasks with a token).

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::sync::oneshot;
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::abort::{decode, encode, SlotAbort};
use super::core::{CoreJob, Finished};
use super::id::TaskId;
use super::output::{CancelReason, Failure, OutcomeKind, PanicPayload, TaskError, TaskOutput};
use super::registry::{self, PoolKey};
use super::watch::TokenWatch;
use crate::common::panic_message;

/// What the pool needs to know of a job. Kept small: a queued no-op task
/// costs this, a pointer to its completion and the queue entry.
pub(crate) struct Header {
    pub(crate) id: TaskId,
    pub(crate) priority: i32,
    /// When the job was queued, in nanoseconds since the pool's epoch (8
    /// bytes instead of an `Instant`'s 16: a queued task's size matters).
    pub(crate) enqueued_ns: u64,
    /// Options most tasks do not use, boxed so that they cost one pointer.
    pub(crate) extras: Option<Box<Extras>>,
}

impl Header {
    pub(crate) fn name(&self) -> Option<&Arc<str>> {
        self.extras.as_ref()?.name.as_ref()
    }
}

/// A task's rarely used options, and the timers they need while it runs.
#[derive(Default)]
pub(crate) struct Extras {
    pub(crate) name: Option<Arc<str>>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) token: Option<CancellationToken>,
    /// Held while the task is queued and has a token; dropping it tells the
    /// token's watcher that the task left the queue (see `watch`).
    in_queue: Option<oneshot::Sender<()>>,
    timer: Option<Pin<Box<Sleep>>>,
    cancelled: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl Extras {
    pub(crate) fn is_empty(&self) -> bool {
        self.name.is_none() && self.timeout.is_none() && self.token.is_none()
    }

    /// What the watcher of a queued task with a token waits on; `None` for a
    /// task without a token (it gets no watcher).
    pub(crate) fn watch(&mut self) -> Option<TokenWatch> {
        let token = self.token.clone()?;
        let (in_queue, left_queue) = oneshot::channel();
        self.in_queue = Some(in_queue);
        Some(TokenWatch { token, left_queue })
    }

    /// Polls the token and the timeout: `Some` when either ends the task.
    /// The timer starts on the first poll, i.e. when the task starts.
    fn poll_limits(&mut self, cx: &mut Context<'_>) -> Option<(OutcomeKind, Option<String>)> {
        // The task runs: it left the queue, its watcher can go.
        self.in_queue = None;
        if let Some(token) = &self.token {
            let cancelled = self
                .cancelled
                .get_or_insert_with(|| Box::pin(token.clone().cancelled_owned()));
            if cancelled.as_mut().poll(cx).is_ready() {
                return Some((OutcomeKind::Cancelled, None));
            }
        }
        if let Some(timeout) = self.timeout {
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
            if timer.as_mut().poll(cx).is_ready() {
                return Some((
                    OutcomeKind::TimedOut,
                    Some(format!("timed out after {timeout:?}")),
                ));
            }
        }
        None
    }
}

type TaskResult<T, E> = Result<T, TaskError<E>>;

// `phase` bits: three flags, then the cancel reason (see `abort::encode`).
const STARTED: u8 = 1;
const DETACHED: u8 = 2;
const DELIVERED: u8 = 4;
const REASON_SHIFT: u8 = 3;

fn reason_of(phase: u8) -> Option<CancelReason> {
    decode(phase >> REASON_SHIFT)
}

struct Slot<T, E> {
    result: Option<TaskResult<T, E>>,
    /// The handle's waker.
    waker: Option<Waker>,
    /// The waker of the worker running the task, for `abort`.
    run_waker: Option<Waker>,
}

/// What a job and its handle share.
///
/// `phase` is the lock-free part: a detached task (the common fire-and-forget
/// case) is delivered and dropped without touching the mutex at all.
pub(crate) struct Completion<T, E> {
    slot: Mutex<Slot<T, E>>,
    phase: AtomicU8,
    /// The pool's number, for the handle's `abort` (see `registry`). Kept here
    /// rather than in the handle: it fits in the padding after `phase`, while
    /// in the handle it would grow every `spawn`'s return value by a word.
    pool: PoolKey,
}

impl<T, E> Completion<T, E> {
    fn new(pool: PoolKey) -> Self {
        Completion {
            slot: Mutex::new(Slot {
                result: None,
                waker: None,
                run_waker: None,
            }),
            phase: AtomicU8::new(0),
            pool,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot<T, E>> {
        // Nothing panics while holding this lock; survive poisoning anyway.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Delivers the task's result once; later deliveries are ignored.
    fn deliver(&self, result: TaskResult<T, E>) {
        let phase = self.phase.load(Ordering::Acquire);
        if phase & DELIVERED != 0 {
            return;
        }
        if phase & DETACHED != 0 {
            // Nobody will read it. `fetch_or` picks one deliverer if two race.
            self.phase.fetch_or(DELIVERED, Ordering::AcqRel);
            return;
        }
        let mut slot = self.lock();
        // Deliverers with a live handle are serialised by the lock.
        if self.phase.fetch_or(DELIVERED, Ordering::AcqRel) & DELIVERED != 0 {
            return;
        }
        slot.result = Some(result);
        slot.run_waker = None;
        let waker = slot.waker.take();
        drop(slot);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Marks the task cancelled for `reason`; returns the phase before.
    fn request_cancel(&self, reason: CancelReason) -> u8 {
        let mut phase = self.phase.load(Ordering::Acquire);
        loop {
            if reason_of(phase).is_some() {
                return phase; // the first reason wins
            }
            match self.phase.compare_exchange_weak(
                phase,
                phase | (encode(reason) << REASON_SHIFT),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(before) => return before,
                Err(now) => phase = now,
            }
        }
    }

    fn cancel_reason(&self) -> Option<CancelReason> {
        reason_of(self.phase.load(Ordering::Acquire))
    }

    /// Remembers the running worker's waker so `abort` can wake it.
    fn register_run_waker(&self, waker: &Waker) {
        let mut slot = self.lock();
        match &slot.run_waker {
            Some(w) if w.will_wake(waker) => {}
            _ => slot.run_waker = Some(waker.clone()),
        }
    }

    /// Wakes the worker running the task, so it sees a cancellation.
    fn wake_runner(&self) {
        let waker = self.lock().run_waker.take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Delivers `Cancelled` if the job is dropped without finishing (a no-op after
/// a delivery: the first one wins): for the reason recorded by whoever
/// cancelled it, or `Shutdown` if nobody did (its runtime shut down).
struct Delivery<T, E> {
    completion: Arc<Completion<T, E>>,
}

impl<T, E> Delivery<T, E> {
    fn deliver(&mut self, result: TaskResult<T, E>) {
        self.completion.deliver(result);
    }
}

impl<T, E> Drop for Delivery<T, E> {
    fn drop(&mut self) {
        // One load on the common path: the job finished and delivered.
        let phase = self.completion.phase.load(Ordering::Acquire);
        if phase & DELIVERED != 0 {
            return;
        }
        let reason = reason_of(phase).unwrap_or(CancelReason::Shutdown);
        self.completion.deliver(Err(TaskError::Cancelled(reason)));
    }
}

pin_project! {
    /// A task in the queue or on a worker. `Fut` resolves to the task's value
    /// or how it failed.
    ///
    /// Fields drop in order: the future first, the delivery guard last.
    pub(crate) struct Job<Fut, O: TaskOutput> {
        #[pin]
        fut: Fut,
        header: Header,
        delivery: Delivery<O::Ok, O::Err>,
    }
}

/// Makes a job of the pool `pool` and the handle that reads its result.
pub(crate) fn new_job<Fut, O>(
    pool: PoolKey,
    header: Header,
    fut: Fut,
) -> (Box<Job<Fut, O>>, TaskHandle<O>)
where
    O: TaskOutput,
    Fut: Future<Output = Result<O::Ok, Failure<O::Err>>> + Send + 'static,
{
    let completion = Arc::new(Completion::new(pool));
    let handle = TaskHandle {
        id: header.id,
        completion: Arc::clone(&completion),
    };
    let job = Box::new(Job {
        header,
        delivery: Delivery { completion },
        fut,
    });
    (job, handle)
}

impl<Fut, O: TaskOutput> Job<Fut, O> {
    /// The future of a job that was never accepted.
    pub(crate) fn into_future(self) -> Fut {
        // Its handle is dropped unseen by the caller.
        self.fut
    }

    pub(crate) fn header(&self) -> &Header {
        &self.header
    }

    pub(crate) fn set_enqueued(&mut self, ns: u64) {
        self.header.enqueued_ns = ns;
    }

    /// What a watcher of this job's token waits on once it is queued; `None`
    /// without a token.
    pub(crate) fn watch(&mut self) -> Option<TokenWatch> {
        self.header.extras.as_mut()?.watch()
    }
}

/// A job with its types erased, as the queue holds it.
pub(crate) trait ErasedJob: Send {
    fn header(&self) -> &Header;
    /// Runs the job; resolves once with how it ended (the handle has its result).
    fn poll_run(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Finished>;
    /// Marks a job that will not run on (queued or running when it was
    /// cancelled) as cancelled for `reason`, unless it already was for another.
    /// The caller then drops the job, which drops its future and resolves its
    /// handle, in that order.
    fn cancel(self: Pin<&mut Self>, reason: CancelReason) -> Finished;
}

pub(crate) type BoxJob = Pin<Box<dyn ErasedJob>>;

impl CoreJob for BoxJob {
    fn id(&self) -> TaskId {
        self.header().id
    }

    fn name(&self) -> Option<&Arc<str>> {
        self.header().name()
    }
}

fn finished(header: &Header, kind: OutcomeKind, message: Option<String>) -> Finished {
    Finished {
        id: header.id,
        name: header.name().cloned(),
        kind,
        message,
    }
}

impl<Fut, O> ErasedJob for Job<Fut, O>
where
    O: TaskOutput,
    Fut: Future<Output = Result<O::Ok, Failure<O::Err>>> + Send,
{
    fn header(&self) -> &Header {
        &self.header
    }

    fn poll_run(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Finished> {
        let this = self.project();
        let completion = &this.delivery.completion;
        let phase = completion.phase.fetch_or(STARTED, Ordering::AcqRel);
        if let Some(reason) = reason_of(phase) {
            this.delivery.deliver(Err(TaskError::Cancelled(reason)));
            return Poll::Ready(finished(this.header, OutcomeKind::Cancelled, None));
        }
        if let Some(extras) = &mut this.header.extras {
            if let Some((kind, message)) = extras.poll_limits(cx) {
                this.delivery.deliver(Err(match kind {
                    OutcomeKind::TimedOut => TaskError::TimedOut,
                    _ => TaskError::Cancelled(CancelReason::Token),
                }));
                return Poll::Ready(finished(this.header, kind, message));
            }
        }

        match catch_unwind(AssertUnwindSafe(|| this.fut.poll(cx))) {
            Ok(Poll::Ready(Ok(value))) => {
                this.delivery.deliver(Ok(value));
                Poll::Ready(finished(this.header, OutcomeKind::Completed, None))
            }
            Ok(Poll::Ready(Err(Failure::Failed(err)))) => {
                let message = O::describe(&err);
                this.delivery.deliver(Err(TaskError::Failed(err)));
                Poll::Ready(finished(this.header, OutcomeKind::Failed, Some(message)))
            }
            Ok(Poll::Ready(Err(Failure::AttemptTimedOut { attempt, of, after }))) => {
                let message = format!("attempt {attempt} of {of} timed out after {after:?}");
                this.delivery.deliver(Err(TaskError::TimedOut));
                Poll::Ready(finished(this.header, OutcomeKind::TimedOut, Some(message)))
            }
            Err(payload) => {
                let message = panic_message(&*payload)
                    .unwrap_or("<non-string panic payload>")
                    .to_owned();
                this.delivery
                    .deliver(Err(TaskError::Panicked(PanicPayload::new(payload))));
                Poll::Ready(finished(this.header, OutcomeKind::Panicked, Some(message)))
            }
            Ok(Poll::Pending) => {
                // Register for abort, then look again so an abort that raced
                // the registration is not missed.
                completion.register_run_waker(cx.waker());
                if let Some(reason) = completion.cancel_reason() {
                    this.delivery.deliver(Err(TaskError::Cancelled(reason)));
                    return Poll::Ready(finished(this.header, OutcomeKind::Cancelled, None));
                }
                Poll::Pending
            }
        }
    }

    fn cancel(self: Pin<&mut Self>, reason: CancelReason) -> Finished {
        let this = self.project();
        // The reason recorded first wins (e.g. an earlier abort); the delivery
        // guard delivers it when the job is dropped.
        this.delivery.completion.request_cancel(reason);
        finished(this.header, OutcomeKind::Cancelled, None)
    }
}

/// Awaits a task's result; [`abort`](Self::abort) cancels it.
///
/// Resolves to `Ok(value)` or the [`TaskError`] that ended the task.
///
/// Dropping the handle *detaches* the task: it keeps running, and if it fails
/// the failure still reaches the next [`DrainReport`](super::DrainReport).
///
/// # Panics
///
/// Polling the handle again after it resolved panics.
pub struct TaskHandle<O: TaskOutput> {
    id: TaskId,
    completion: Arc<Completion<O::Ok, O::Err>>,
}

impl<O: TaskOutput> TaskHandle<O> {
    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Cancels the task; the handle resolves to
    /// [`TaskError::Cancelled`]`(`[`CancelReason::Aborted`]`)`, unless the task
    /// had already ended or been cancelled for another reason.
    ///
    /// A queued task leaves the queue before `abort` returns, also in a paused
    /// pool: its place is free for another spawn, it counts as cancelled in
    /// the stats and the next [`DrainReport`](super::DrainReport), a
    /// [`TaskFinished`](super::PoolEvent::TaskFinished) event is sent, and its
    /// future is dropped — on the calling thread, without ever being polled —
    /// before the handle resolves. A running task stops at its next wake-up
    /// (an `.await` point) and its future is dropped by its worker.
    ///
    /// # Examples
    ///
    /// ```
    /// use workcrew::task::{CancelReason, TaskError, TaskPool};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = TaskPool::builder().queue_capacity(1).build().unwrap();
    /// pool.pause();
    /// let queued = pool.spawn(async {}).await.unwrap();
    /// assert!(pool.try_spawn(async {}).is_err(), "the queue is full");
    ///
    /// queued.abort();
    /// assert!(pool.try_spawn(async {}).is_ok(), "its place is free again");
    /// assert!(matches!(queued.await, Err(TaskError::Cancelled(CancelReason::Aborted))));
    /// # }
    /// ```
    pub fn abort(&self) {
        let reason = CancelReason::Aborted;
        let before = self.completion.request_cancel(reason);
        if reason_of(before).is_some() || before & DELIVERED != 0 {
            return; // cancelled before (its canceller finishes the job) or ended
        }
        if before & STARTED == 0 {
            // Most likely still queued: take it out. Dropping the job drops the
            // future, then resolves this handle.
            if let Some(shared) = registry::find(self.completion.pool) {
                if shared.cancel_queued(self.id, None, reason) {
                    return;
                }
            }
            // A worker took it and has not polled it yet; it will see the
            // reason before polling. Resolve the handle now all the same.
            self.completion.deliver(Err(TaskError::Cancelled(reason)));
        }
        self.completion.wake_runner();
    }

    /// Whether the task has ended.
    pub fn is_finished(&self) -> bool {
        self.completion.phase.load(Ordering::Acquire) & DELIVERED != 0
    }
}

impl<O: TaskOutput> Future for TaskHandle<O> {
    type Output = Result<O::Ok, TaskError<O::Err>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.completion.lock();
        if let Some(result) = slot.result.take() {
            return Poll::Ready(result);
        }
        let phase = self.completion.phase.load(Ordering::Acquire);
        assert!(
            phase & DELIVERED == 0,
            "TaskHandle polled after it resolved"
        );
        match &slot.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => slot.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<O: TaskOutput> Drop for TaskHandle<O> {
    fn drop(&mut self) {
        let before = self.completion.phase.fetch_or(DETACHED, Ordering::AcqRel);
        if before & DELIVERED != 0 {
            // Free an unread result now rather than with the last reference.
            let result = self.completion.lock().result.take();
            drop(result);
        }
    }
}

/// Runs a job on a worker, stopping it if the pool aborts the worker's task.
pub(crate) fn poll_on_worker(
    job: Pin<&mut dyn ErasedJob>,
    abort: &SlotAbort,
    cx: &mut Context<'_>,
) -> Poll<Finished> {
    let mut job = job;
    if let Some(reason) = abort.reason() {
        return Poll::Ready(job.as_mut().cancel(reason));
    }
    if let Poll::Ready(f) = job.as_mut().poll_run(cx) {
        return Poll::Ready(f);
    }
    abort.register(cx.waker());
    match abort.reason() {
        Some(reason) => Poll::Ready(job.cancel(reason)),
        None => Poll::Pending,
    }
}

impl<O: TaskOutput> std::fmt::Debug for TaskHandle<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::mem::size_of;
    use std::sync::atomic::AtomicU8;
    use std::sync::Mutex;

    use super::{Completion, Slot, TaskHandle};

    /// The pool's number costs a task no memory: it sits in the padding after
    /// `phase`. And a handle stays two words.
    #[test]
    fn the_pool_number_fits_in_padding_and_the_handle_stays_small() {
        type Padded = (Mutex<Slot<(), Infallible>>, AtomicU8);
        assert_eq!(size_of::<Completion<(), Infallible>>(), size_of::<Padded>());
        assert_eq!(size_of::<TaskHandle<()>>(), 2 * size_of::<usize>());
    }
}
