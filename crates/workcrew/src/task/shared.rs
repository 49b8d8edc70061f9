//! The state every handle, worker and the supervisor share.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};

use tokio::runtime::Handle;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::builder::{Config, DrainMode};
use super::core::{Cancellation, Core, CoreConfig, Effects, Finished, Refused};
use super::drain_book::DrainOutcome;
use super::error::DrainError;
use super::events::{EventHub, PoolEvent};
use super::id::TaskId;
use super::inbox::Inbox;
use super::job::{BoxJob, Extras, Header, Job};
use super::output::{CancelReason, Failure, OutcomeKind, TaskOutput};
use super::rate::Gcra;
use super::registry::{self, PoolKey};
use super::stats::PoolStats;
use super::watch::{watch_queued, TokenWatch};
use super::{supervisor, worker};
use crate::common::Latency;

/// A refused push: why, the job given back, and the wait for room if asked.
pub(crate) type PushRefused<'a, J> = (Refused, Box<J>, Option<RoomWait<'a>>);

/// What the pool mutex guards.
pub(crate) struct State {
    pub(crate) core: Core<BoxJob>,
}

pub(crate) struct Shared {
    pub(crate) config: Config,
    /// This pool's number in the registry (for handles' `abort`).
    key: PoolKey,
    state: Mutex<State>,
    /// The core's inbox, for pushes that skip the pool lock.
    inbox: Arc<Inbox<BoxJob>>,
    /// Drainers wait here for an outcome to be published.
    drained: Notify,
    supervisor_wake: Arc<Notify>,
    supervisor_started: AtomicBool,
    pub(crate) events: EventHub,
    next_id: AtomicU64,
    /// Origin of the jobs' enqueue timestamps.
    epoch: Instant,
    pub(crate) retried: AtomicU64,
    /// The runtime seen at build or first spawn, for spawns made outside one.
    runtime: Mutex<Option<Handle>>,
}

impl Shared {
    /// The pool's state, entered in the registry.
    pub(crate) fn start(config: Config) -> Arc<Self> {
        let shared = Arc::new(Shared::new(config));
        registry::enter(shared.key, &shared);
        shared
    }

    fn new(config: Config) -> Self {
        let core = Core::new(CoreConfig {
            max_concurrency: config.max_concurrency,
            queue_capacity: config.queue_capacity,
            default_priority: config.default_priority,
            max_reported_failures: config.max_reported_failures,
            max_runtime: config.max_runtime,
            stall_timeout: config.stall_timeout,
            rate: config.rate_limit.map(Gcra::new),
        });
        Shared {
            key: PoolKey::new(),
            inbox: Arc::clone(core.inbox()),
            config,
            state: Mutex::new(State { core }),
            drained: Notify::new(),
            supervisor_wake: Arc::new(Notify::new()),
            supervisor_started: AtomicBool::new(false),
            events: super::events::hub(),
            next_id: AtomicU64::new(1),
            epoch: Instant::now(),
            retried: AtomicU64::new(0),
            runtime: Mutex::new(Handle::try_current().ok()),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // No user code runs under this lock; a poisoned lock only means one of
        // our own invariant checks failed, and the state is still the best we have.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn nanos_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    pub(crate) fn key(&self) -> PoolKey {
        self.key
    }

    pub(crate) fn next_id(&self) -> TaskId {
        TaskId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// A job header; `extras` are the task's rare options, if it set any.
    pub(crate) fn header(&self, priority: Option<i32>, extras: Option<Box<Extras>>) -> Header {
        let extras = match (extras, self.config.task_timeout) {
            (Some(mut e), Some(default)) => {
                e.timeout.get_or_insert(default);
                Some(e)
            }
            (None, Some(default)) => {
                let mut e = Box::<Extras>::default();
                e.timeout = Some(default);
                Some(e)
            }
            (extras, None) => extras,
        };
        Header {
            id: self.next_id(),
            priority: priority.unwrap_or(self.config.default_priority),
            enqueued_ns: 0,
            extras,
        }
    }

    /// Queues a job if the pool is open and has room; otherwise gives it back
    /// with the reason, and — if `wait` and the queue is full — registers the
    /// caller as waiting for room (see [`RoomWait`]). A job with a cancellation
    /// token gets its watcher once queued (see `watch`).
    pub(crate) fn push<Fut, O>(
        self: &Arc<Self>,
        mut job: Box<Job<Fut, O>>,
        wait: bool,
    ) -> Result<(), PushRefused<'_, Job<Fut, O>>>
    where
        O: TaskOutput,
        Fut: Future<Output = Result<O::Ok, Failure<O::Err>>> + Send + 'static,
    {
        let (id, priority) = (job.header().id, job.header().priority);
        // Taken out before the job is queued (and out of reach); started after.
        let watch = job.watch();
        let now = Instant::now();
        if priority == self.config.default_priority {
            // A hot pool needs nothing but a place in the queue: skip the lock.
            if let Some(claim) = self.inbox.claim() {
                job.set_enqueued(self.nanos_since_epoch(now));
                claim.push(Box::into_pin(job));
                if let Some(watch) = watch {
                    self.watch_token(watch, id, priority);
                }
                return Ok(());
            }
        }
        let fx = {
            let mut st = self.lock();
            if let Err(why) = st.core.admit() {
                let waiter = (wait && why == Refused::Full).then(|| {
                    let notify = st.core.wait_for_room();
                    RoomWait::new(self, notify)
                });
                return Err((why, job, waiter));
            }
            job.set_enqueued(self.nanos_since_epoch(now));
            let erased: BoxJob = Box::into_pin(job);
            match st.core.push(priority, erased, now) {
                Ok(fx) => fx,
                Err(_) => unreachable!("admitted under the same lock"),
            }
        };
        self.apply(fx);
        if let Some(watch) = watch {
            self.watch_token(watch, id, priority);
        }
        Ok(())
    }

    /// Carries out what the core asked for, outside the lock.
    pub(crate) fn apply(self: &Arc<Self>, fx: Effects) {
        if !fx.new_workers.is_empty() {
            let rt = self.runtime();
            for w in fx.new_workers {
                rt.spawn(worker::run(Arc::clone(self), w));
            }
        }
        if fx.became_busy && self.needs_supervisor() {
            if !self.supervisor_started.swap(true, Ordering::AcqRel) {
                self.runtime().spawn(supervisor::run(
                    Arc::downgrade(self),
                    Arc::clone(&self.supervisor_wake),
                ));
            }
            self.supervisor_wake.notify_one();
        }
        if fx.became_idle {
            self.events.send(PoolEvent::Idle);
            self.supervisor_wake.notify_one();
        }
        if fx.wake_drainers {
            self.drained.notify_waiters();
        }
        if fx.ended {
            self.events.end();
        }
    }

    fn needs_supervisor(&self) -> bool {
        self.config.max_runtime.is_some() || self.config.stall_timeout.is_some()
    }

    /// The runtime to start workers on: the caller's, else the one seen before.
    ///
    /// # Panics
    ///
    /// If there is neither.
    fn runtime(&self) -> Handle {
        let mut saved = self.runtime.lock().unwrap_or_else(PoisonError::into_inner);
        if let Ok(current) = Handle::try_current() {
            *saved = Some(current.clone());
            return current;
        }
        saved
            .clone()
            .expect("workcrew TaskPool: the first task must be spawned from inside a tokio runtime")
    }

    /// Stops intake (idempotent).
    pub(crate) fn close_intake(self: &Arc<Self>) {
        let (first, fx) = self.lock().core.close();
        if first {
            self.events.send(PoolEvent::Closed);
            self.supervisor_wake.notify_one();
        }
        self.apply(fx);
    }

    /// Waits for the next outcome a drainer must hear (see `drain_book`).
    ///
    /// Cancel safe: dropping the future withdraws the waiter and hands an
    /// unread report back.
    pub(crate) async fn wait_drained(self: &Arc<Self>) -> DrainOutcome {
        let handoff = self.config.drain_mode == DrainMode::HandOff;
        let ticket = match self.lock().core.begin_drain(handoff) {
            Ok(outcome) => return outcome,
            Err(ticket) => ticket,
        };
        if handoff {
            self.drained.notify_waiters(); // older waiters: look again
        }
        let mut guard = DrainGuard {
            shared: self,
            ticket: Some(ticket),
        };
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                if let Some(outcome) = st.core.poll_drain(ticket) {
                    guard.ticket = None;
                    return outcome;
                }
                if st.core.drain_superseded(ticket) {
                    st.core.abandon_drain(ticket);
                    guard.ticket = None;
                    let stats = Box::new(self.stats_of(&st));
                    return Err(DrainError::Superseded { stats });
                }
            }
            notified.await;
        }
    }

    /// Starts the watcher of a task with a token that was just queued (see
    /// `watch`).
    ///
    /// # Panics
    ///
    /// As [`runtime`](Self::runtime).
    pub(crate) fn watch_token(self: &Arc<Self>, watch: TokenWatch, id: TaskId, priority: i32) {
        let pool: Weak<Shared> = Arc::downgrade(self);
        self.runtime()
            .spawn(watch_queued(pool, watch, id, priority));
    }

    /// Cancels the queued task `id` for `reason`: takes it out of the queue,
    /// drops it (its future, then its delivery resolves the handle), counts it
    /// and sends its event. False if it was not queued.
    pub(crate) fn cancel_queued(
        self: &Arc<Self>,
        id: TaskId,
        priority: Option<i32>,
        reason: CancelReason,
    ) -> bool {
        let Some(job) = self.lock().core.take_queued(id, priority) else {
            return false;
        };
        let cancellation = Cancellation {
            queued: vec![job],
            running: Vec::new(),
        };
        self.carry_out(cancellation, reason);
        true
    }

    /// Cancels every queued task and aborts every running one.
    pub(crate) fn cancel_all(self: &Arc<Self>, reason: CancelReason) -> (u64, u64) {
        let cancellation = self.lock().core.cancel_all();
        self.carry_out(cancellation, reason)
    }

    /// Ends jobs the core took out, outside the lock (their drop runs user code).
    pub(crate) fn carry_out(
        self: &Arc<Self>,
        c: Cancellation<BoxJob>,
        reason: CancelReason,
    ) -> (u64, u64) {
        let counts = (c.queued.len() as u64, c.running.len() as u64);
        for running in &c.running {
            running.abort(reason);
        }
        let mut done: Vec<Finished> = Vec::with_capacity(c.queued.len());
        for mut job in c.queued {
            done.push(job.as_mut().cancel(reason));
            // Drops the future, then resolves the handle.
            drop(job);
        }
        if self.events.active() {
            for f in &done {
                self.events.send(PoolEvent::TaskFinished {
                    id: f.id,
                    outcome: OutcomeKind::Cancelled,
                    run_time: std::time::Duration::ZERO,
                });
            }
        }
        let fx = self.lock().core.finish_cancelled(done);
        self.apply(fx);
        counts
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let st = self.lock();
        self.stats_of(&st)
    }

    fn stats_of(&self, st: &State) -> PoolStats {
        let core = &st.core;
        let totals = core.totals();
        let (mut wait, mut run) = (Latency::new(), Latency::new());
        for latencies in core.latencies() {
            let l = latencies.lock().unwrap_or_else(PoisonError::into_inner);
            wait.add(&l.wait);
            run.add(&l.run);
        }
        PoolStats {
            queued: core.queued(),
            running: core.running(),
            workers: core.workers(),
            max_concurrency: core.max_concurrency(),
            paused: core.is_paused(),
            closed: core.is_closed(),
            completed: totals.completed,
            failed: totals.failed,
            panicked: totals.panicked,
            cancelled: totals.cancelled,
            timed_out: totals.timed_out,
            retried: self.retried.load(Ordering::Relaxed),
            wait_time: wait.percentiles(),
            run_time: run.percentiles(),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        registry::leave(self.key);
    }
}

/// A spawner waiting for queue room.
///
/// Registered (and its `Notified` enabled) under the pool lock, so a wake-up
/// cannot fall between the full queue being seen and the wait. If the wait is
/// dropped, it withdraws under the lock; a wake-up it had already received is
/// passed on to the next waiter, so dropping a spawn never strands another.
pub(crate) struct RoomWait<'a> {
    shared: &'a Shared,
    notified: Pin<Box<OwnedNotified>>,
    done: bool,
}

impl<'a> RoomWait<'a> {
    fn new(shared: &'a Shared, notify: Arc<Notify>) -> Self {
        let mut notified = Box::pin(notify.notified_owned());
        notified.as_mut().enable();
        RoomWait {
            shared,
            notified,
            done: false,
        }
    }
}

impl Future for RoomWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let ready = self.notified.as_mut().poll(cx);
        if ready.is_ready() {
            self.done = true;
        }
        ready
    }
}

impl Drop for RoomWait<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut st = self.shared.lock();
        let mut cx = Context::from_waker(Waker::noop());
        let notified = self.notified.as_mut().poll(&mut cx).is_ready();
        st.core.leave_room_wait(notified);
    }
}

/// Withdraws a drainer whose future is dropped before it got its outcome.
struct DrainGuard<'a> {
    shared: &'a Shared,
    ticket: Option<super::drain_book::Ticket>,
}

impl Drop for DrainGuard<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.shared.lock().core.abandon_drain(ticket);
        }
    }
}
