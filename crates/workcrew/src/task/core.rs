//! The pool's scheduling state machine.
//!
//! # Implementation notes
//!
//! `Core` is plain data behind the pool's one mutex. It does no I/O and never
//! runs user code: callers lock, call one method, unlock, and only then poll,
//! drop or cancel user futures (a user `Drop` may call back into the pool).
//! Wake-ups of parked workers happen here, under the lock, through each
//! worker's own `Notify`, which stores a permit if the worker has not parked
//! yet — so no wake-up is lost.
//!
//! Invariants, checked by the exhaustive model test in `core/model.rs`:
//! - `running` = slots with a task; `running <= max_concurrency` except while
//!   workers above a lowered limit finish their current task.
//! - every worker is exactly one of: parked (in `idle`), about to look for work
//!   (woken or new), running a task.
//! - the queue is never left non-empty while the pool is not paused, the limit
//!   allows a worker, and no worker is awake to take it (no lost wake-up).
//! - every accepted job ends exactly once: `finish` or `finish_cancelled`, and
//!   `busy` is false exactly when nothing is queued, running or being cancelled.
//!   A job leaves the queue once: popped by a worker, or taken out for
//!   cancellation (`cancel_all`, or `take_queued` when its token fires or its
//!   handle aborts it), never both.
//! - a place freed by a cancellation wakes a spawner waiting for room at once,
//!   also on a paused pool (where no worker will free another): no spawner waits
//!   while the queue has room that only a cancellation made.
//! - an outcome published to drainers is taken by each of them or handed back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::abort::SlotAbort;
use super::drain_book::{DrainBook, DrainOutcome, Ticket};
use super::error::DrainError;
use super::id::TaskId;
use super::inbox::Inbox;
use super::output::OutcomeKind;
use super::queue::PriorityQueue;
use super::rate::Gcra;
use super::report::{DrainReport, FailureKind, RunningTask, TaskFailure};
use super::stats::Latencies;

#[cfg(test)]
mod model;

/// What the core needs to know of a queued job.
pub(crate) trait CoreJob {
    fn id(&self) -> TaskId;
    fn name(&self) -> Option<&Arc<str>>;
}

/// How a job ended, as the core records it.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) id: TaskId,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) kind: OutcomeKind,
    /// For failures: the error's text, the panic message or the timeout.
    pub(crate) message: Option<String>,
}

struct Running {
    id: TaskId,
    name: Option<Arc<str>>,
    started: Instant,
}

struct Slot {
    notify: Arc<Notify>,
    abort: Arc<SlotAbort>,
    /// Kept when the worker exits, so its figures stay in the stats.
    latencies: Arc<Mutex<Latencies>>,
    running: Option<Running>,
    live: bool,
}

/// Fixed settings the core consults.
pub(crate) struct CoreConfig {
    pub(crate) max_concurrency: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) default_priority: i32,
    pub(crate) max_reported_failures: usize,
    pub(crate) max_runtime: Option<Duration>,
    pub(crate) stall_timeout: Option<Duration>,
    pub(crate) rate: Option<Gcra>,
}

/// What a worker does next.
pub(crate) enum Next<J> {
    Run(J),
    /// Park until notified.
    Park,
    /// Nothing to do right now: look again after yielding once, without
    /// parking. Producers often push again within a microsecond; parking
    /// and being woken for it costs a thread wake-up on both sides.
    Spin,
    /// The rate limit allows the next start at this instant.
    WaitUntil(Instant),
    /// This worker is no longer needed; its slot is freed.
    Exit,
}

/// A worker to start: its slot, its wake-up handle and its abort signal.
pub(crate) struct NewWorker {
    pub(crate) slot: usize,
    pub(crate) notify: Arc<Notify>,
    pub(crate) abort: Arc<SlotAbort>,
    pub(crate) latencies: Arc<Mutex<Latencies>>,
}

/// Why a job cannot be queued now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    Full,
    Closed,
}

/// Things the caller must do after unlocking.
#[derive(Default)]
pub(crate) struct Effects {
    pub(crate) new_workers: Vec<NewWorker>,
    /// The pool went from idle to busy (wake the supervisor).
    pub(crate) became_busy: bool,
    /// The pool went idle (send the event).
    pub(crate) became_idle: bool,
    /// An outcome was published: wake drainers.
    pub(crate) wake_drainers: bool,
    /// The pool is closed and idle for good: end the event streams.
    pub(crate) ended: bool,
}

/// Jobs taken out for cancellation, and running jobs to abort.
pub(crate) struct Cancellation<J> {
    pub(crate) queued: Vec<J>,
    pub(crate) running: Vec<Arc<SlotAbort>>,
}

/// Counters since the pool was built.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Totals {
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) panicked: u64,
    pub(crate) cancelled: u64,
    pub(crate) timed_out: u64,
}

pub(crate) struct Core<J> {
    queue: PriorityQueue<J>,
    /// Default-priority jobs pushed without the pool lock (see `inbox`).
    inbox: Arc<Inbox<J>>,
    capacity: usize,
    /// Spawners registered on `room` and not yet woken.
    room_waiters: usize,
    room: Arc<Notify>,
    max_concurrency: usize,
    slots: Vec<Slot>,
    free_slots: Vec<usize>,
    /// Parked workers, by slot; the last one parked is woken first (warm cache).
    idle: Vec<usize>,
    workers: usize,
    running: usize,
    /// Jobs taken out of the queue to be cancelled, not yet accounted.
    cancelling: usize,
    paused: bool,
    closed: bool,
    busy: bool,
    busy_since: Option<Instant>,
    last_progress: Option<Instant>,
    stall_fired: bool,
    runtime_fired: bool,
    /// Set when the runtime limit fired; goes out with the next report.
    deadline_hit: Option<(u64, u64)>,
    totals: Totals,
    pending: DrainReport,
    max_reported_failures: usize,
    max_runtime: Option<Duration>,
    stall_timeout: Option<Duration>,
    rate: Option<Gcra>,
    drain: DrainBook,
}

impl<J: CoreJob> Core<J> {
    pub(crate) fn new(config: CoreConfig) -> Self {
        Core {
            queue: PriorityQueue::new(config.default_priority),
            inbox: Arc::new(Inbox::new(config.queue_capacity)),
            capacity: config.queue_capacity,
            room_waiters: 0,
            room: Arc::new(Notify::new()),
            max_concurrency: config.max_concurrency,
            slots: Vec::new(),
            free_slots: Vec::new(),
            idle: Vec::new(),
            workers: 0,
            running: 0,
            cancelling: 0,
            paused: false,
            closed: false,
            busy: false,
            busy_since: None,
            last_progress: None,
            stall_fired: false,
            runtime_fired: false,
            deadline_hit: None,
            totals: Totals::default(),
            pending: DrainReport::default(),
            max_reported_failures: config.max_reported_failures,
            max_runtime: config.max_runtime,
            stall_timeout: config.stall_timeout,
            rate: config.rate,
            drain: DrainBook::default(),
        }
    }

    // ---- intake ----

    /// The inbox producers push to without the pool lock while it is hot.
    pub(crate) fn inbox(&self) -> &Arc<Inbox<J>> {
        &self.inbox
    }

    /// Moves the inbox into the queue and stops fast pushes, so the queue is
    /// exact until [`refresh_hot`](Self::refresh_hot).
    fn fold_inbox(&mut self) {
        let queue = &mut self.queue;
        self.inbox.cool_and_take(|jobs| queue.absorb_default(jobs));
    }

    /// Moves the inbox into the queue, keeping fast pushes on.
    fn refill(&mut self) {
        let queue = &mut self.queue;
        self.inbox.refill(|jobs| {
            queue.absorb_default(jobs);
            queue.len()
        });
    }

    /// Lets producers skip the pool lock exactly when a push would need
    /// nothing but a place in the queue: busy, running, not closed, every
    /// allowed worker started and none parked.
    fn refresh_hot(&mut self) {
        let eligible = self.busy
            && !self.paused
            && !self.closed
            && self.idle.is_empty()
            && self.workers >= self.max_concurrency;
        if eligible && !self.inbox.is_hot() {
            self.inbox.note_core_len(self.queue.len());
            self.inbox.set_hot(true);
        } else if !eligible && self.inbox.is_hot() {
            self.inbox.set_hot(false);
        }
    }

    /// Whether a job can be queued now. Folds the inbox in, so the answer is
    /// exact and stays so while the caller holds the pool lock.
    pub(crate) fn admit(&mut self) -> Result<(), Refused> {
        self.fold_inbox();
        if self.closed {
            Err(Refused::Closed)
        } else if self.queue.len() >= self.capacity {
            Err(Refused::Full)
        } else {
            Ok(())
        }
    }

    /// Queues a job, or gives it back with the reason (see [`admit`](Self::admit)).
    pub(crate) fn push(
        &mut self,
        priority: i32,
        job: J,
        now: Instant,
    ) -> Result<Effects, (Refused, J)> {
        if let Err(why) = self.admit() {
            self.refresh_hot();
            return Err((why, job));
        }
        self.queue.push(priority, job);
        let mut fx = Effects::default();
        if !self.busy {
            self.busy = true;
            self.busy_since = Some(now);
            self.last_progress = Some(now);
            self.stall_fired = false;
            self.runtime_fired = false;
            fx.became_busy = true;
        }
        if !self.paused {
            if let Some(slot) = self.idle.pop() {
                self.slots[slot].notify.notify_one();
            } else if self.workers < self.max_concurrency {
                fx.new_workers.push(self.add_worker());
            }
        }
        self.refresh_hot();
        Ok(fx)
    }

    fn add_worker(&mut self) -> NewWorker {
        self.workers += 1;
        let slot = match self.free_slots.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(Slot {
                    notify: Arc::new(Notify::new()),
                    abort: Arc::new(SlotAbort::default()),
                    latencies: Arc::default(),
                    running: None,
                    live: false,
                });
                self.slots.len() - 1
            }
        };
        let s = &mut self.slots[slot];
        s.live = true;
        NewWorker {
            slot,
            notify: Arc::clone(&s.notify),
            abort: Arc::clone(&s.abort),
            latencies: Arc::clone(&s.latencies),
        }
    }

    /// Registers a spawner that found the queue full; it waits on the
    /// returned `Notify` (enabled before the lock is released).
    pub(crate) fn wait_for_room(&mut self) -> Arc<Notify> {
        self.room_waiters += 1;
        Arc::clone(&self.room)
    }

    /// A waiting spawner goes away; `notified` says whether it had been woken
    /// (its wake-up then passes to the next waiter).
    pub(crate) fn leave_room_wait(&mut self, notified: bool) {
        if notified {
            self.wake_spawners(1);
        } else {
            self.room_waiters -= 1;
        }
    }

    /// Wakes waiting spawners after workers took `freed` jobs. One at a time,
    /// and only once a batch of room is free: a spawner woken for a single
    /// place would go back to sleep after one push, costing a context switch
    /// per task when a fast producer feeds a full queue. Waiting for the batch
    /// is safe because workers keep taking jobs until the queue is empty.
    fn wake_spawners(&mut self, freed: usize) {
        if self.room_waiters == 0 {
            return;
        }
        let free = self.capacity.saturating_sub(self.queued());
        let batch = (self.capacity / 4).clamp(1, 1024);
        if free < batch && freed < batch && !self.queue.is_empty() {
            return;
        }
        self.wake_spawners_now(freed.max(1));
    }

    /// Wakes one waiting spawner per freed place, without waiting for a batch:
    /// for places freed by a cancellation, after which no worker may take a job
    /// again (the pool may be paused).
    fn wake_spawners_now(&mut self, freed: usize) {
        let n = freed.min(self.room_waiters);
        for _ in 0..n {
            self.room_waiters -= 1;
            self.room.notify_one();
        }
    }

    fn retire(&mut self, slot: usize) {
        self.workers -= 1;
        self.slots[slot].live = false;
        self.free_slots.push(slot);
    }

    /// Starts workers (up to the limit) for queued work, and wakes parked ones.
    fn staff(&mut self, fx: &mut Effects) {
        if self.paused {
            return;
        }
        for slot in self.idle.drain(..) {
            self.slots[slot].notify.notify_one();
        }
        let wanted = self
            .queued()
            .min(self.max_concurrency.saturating_sub(self.workers));
        for _ in 0..wanted {
            let w = self.add_worker();
            fx.new_workers.push(w);
        }
    }

    // ---- workers ----

    /// Called by the worker in `slot` when it is ready for work.
    ///
    /// With `may_spin`, an empty queue gives [`Next::Spin`] instead of
    /// parking; the worker is then still awake and must call again.
    pub(crate) fn next_for_worker(&mut self, slot: usize, now: Instant, may_spin: bool) -> Next<J> {
        debug_assert!(self.slots[slot].running.is_none());
        let next = self.next_job(slot, now, may_spin);
        if !matches!(next, Next::Park) {
            self.refresh_hot();
        }
        next
    }

    fn next_job(&mut self, slot: usize, now: Instant, may_spin: bool) -> Next<J> {
        if self.workers > self.max_concurrency {
            self.retire(slot);
            return Next::Exit;
        }
        if self.queue.default_lane_is_empty() && self.inbox.len() > 0 {
            self.refill();
        }
        if self.queue.is_empty() && may_spin && !self.closed && !self.paused {
            return Next::Spin;
        }
        if self.queue.is_empty() {
            // Before parking or exiting, make sure no fast push is missed.
            self.fold_inbox();
        }
        if self.queue.is_empty() {
            if self.closed {
                self.retire(slot);
                return Next::Exit;
            }
            self.idle.push(slot);
            return Next::Park;
        }
        if self.paused {
            self.idle.push(slot);
            return Next::Park;
        }
        if let Some(rate) = &mut self.rate {
            if let Err(at) = rate.try_acquire(now) {
                return Next::WaitUntil(at);
            }
        }
        let job = self.queue.pop().expect("queue is not empty");
        self.running += 1;
        let s = &mut self.slots[slot];
        s.abort.reset();
        s.running = Some(Running {
            id: job.id(),
            name: job.name().cloned(),
            started: now,
        });
        self.wake_spawners(1);
        Next::Run(job)
    }

    /// The worker in `slot` finished its job.
    pub(crate) fn finish(&mut self, slot: usize, finished: Finished, now: Instant) -> Effects {
        let was = self.slots[slot].running.take();
        debug_assert!(was.is_some(), "finish without a running job");
        self.running -= 1;
        self.record(finished);
        self.progress(now);
        let mut fx = Effects::default();
        self.check_idle(&mut fx);
        fx
    }

    /// When the job in `slot` started.
    pub(crate) fn started_at(&self, slot: usize) -> Option<Instant> {
        self.slots[slot].running.as_ref().map(|r| r.started)
    }

    /// A worker's task was dropped (its runtime shut down) without finishing:
    /// its job, if any, ended as cancelled by the job's own drop guard.
    pub(crate) fn worker_lost(&mut self, slot: usize, now: Instant) -> Effects {
        let mut fx = Effects::default();
        if !self.slots[slot].live {
            return fx; // it had already retired
        }
        self.idle.retain(|&s| s != slot);
        self.inbox.set_hot(false);
        if let Some(r) = self.slots[slot].running.take() {
            self.running -= 1;
            self.record(Finished {
                id: r.id,
                name: r.name,
                kind: OutcomeKind::Cancelled,
                message: None,
            });
            self.progress(now);
        }
        // No replacement is started here: this happens while a runtime shuts
        // down, where a new worker would be dropped at once. The next push
        // starts workers again (from whatever runtime it runs on).
        self.retire(slot);
        self.check_idle(&mut fx);
        fx
    }

    fn progress(&mut self, now: Instant) {
        self.last_progress = Some(now);
        self.stall_fired = false;
    }

    fn record(&mut self, f: Finished) {
        let (total, pending, failure) = match f.kind {
            OutcomeKind::Completed => (
                &mut self.totals.completed,
                &mut self.pending.completed,
                None,
            ),
            OutcomeKind::Failed => (
                &mut self.totals.failed,
                &mut self.pending.failed,
                Some(FailureKind::Failed),
            ),
            OutcomeKind::Panicked => (
                &mut self.totals.panicked,
                &mut self.pending.panicked,
                Some(FailureKind::Panicked),
            ),
            OutcomeKind::TimedOut => (
                &mut self.totals.timed_out,
                &mut self.pending.timed_out,
                Some(FailureKind::TimedOut),
            ),
            OutcomeKind::Cancelled => (
                &mut self.totals.cancelled,
                &mut self.pending.cancelled,
                None,
            ),
        };
        *total += 1;
        *pending += 1;
        if let Some(kind) = failure {
            if self.pending.failures.len() < self.max_reported_failures {
                self.pending.failures.push(TaskFailure {
                    id: f.id,
                    name: f.name.map(|n| n.to_string()),
                    kind,
                    message: f.message.unwrap_or_default(),
                });
            } else {
                self.pending.failures_omitted += 1;
            }
        }
    }

    fn check_idle(&mut self, fx: &mut Effects) {
        if self.busy && self.queue.is_empty() && self.running == 0 && self.cancelling == 0 {
            // Idle only if no fast push is in the inbox; none can arrive once
            // it is cold, and `push` (under this lock) is the way back to busy.
            self.fold_inbox();
            if !self.queue.is_empty() {
                return;
            }
            self.busy = false;
            self.busy_since = None;
            fx.became_idle = true;
            fx.ended = self.closed;
            if self.drain.has_waiters() {
                let outcome = self.take_outcome();
                let published = self.drain.publish(outcome);
                debug_assert!(published.is_ok());
                fx.wake_drainers = true;
            }
        }
    }

    /// The report since the last one, as a drain result.
    fn take_outcome(&mut self) -> DrainOutcome {
        let report = std::mem::take(&mut self.pending);
        match self.deadline_hit.take() {
            Some((cancelled_queued, aborted_running)) => Err(DrainError::RuntimeExceeded {
                limit: self.max_runtime.unwrap_or_default(),
                cancelled_queued,
                aborted_running,
                report,
            }),
            None => Ok(report),
        }
    }

    // ---- drainers ----

    pub(crate) fn is_idle(&self) -> bool {
        !self.busy
    }

    /// Starts a drain: `Ok(outcome)` at once if the pool is idle, else a ticket.
    pub(crate) fn begin_drain(&mut self, handoff: bool) -> Result<DrainOutcome, Ticket> {
        if !self.busy {
            return Ok(self.take_outcome());
        }
        Err(self.drain.register(handoff))
    }

    /// A stable key for a ticket, for the model test's state hashing.
    #[cfg(test)]
    pub(crate) fn drain_key(&self, ticket: Ticket) -> u64 {
        ticket.key()
    }

    pub(crate) fn poll_drain(&mut self, ticket: Ticket) -> Option<DrainOutcome> {
        self.drain.take(ticket)
    }

    pub(crate) fn drain_superseded(&self, ticket: Ticket) -> bool {
        self.drain.superseded(ticket)
    }

    /// A drainer leaves without its outcome; an unread report goes back into
    /// the pending one so its failures are not lost.
    pub(crate) fn abandon_drain(&mut self, ticket: Ticket) {
        if let Some(outcome) = self.drain.unregister(ticket) {
            let (report, deadline) = match outcome {
                Ok(report) => (report, None),
                Err(DrainError::RuntimeExceeded {
                    cancelled_queued,
                    aborted_running,
                    report,
                    ..
                }) => (report, Some((cancelled_queued, aborted_running))),
                Err(_) => return,
            };
            let newer = std::mem::replace(&mut self.pending, report);
            self.pending.absorb(newer, self.max_reported_failures);
            if self.deadline_hit.is_none() {
                self.deadline_hit = deadline;
            }
        }
    }

    // ---- control ----

    /// Stops intake. Returns true the first time.
    pub(crate) fn close(&mut self) -> (bool, Effects) {
        let mut fx = Effects::default();
        if self.closed {
            return (false, fx);
        }
        self.closed = true;
        self.fold_inbox();
        // Waiting spawners get their task back.
        self.room_waiters = 0;
        self.room.notify_waiters();
        // Parked workers with nothing to do exit; the rest keep going.
        for slot in self.idle.drain(..) {
            self.slots[slot].notify.notify_one();
        }
        self.check_idle(&mut fx);
        fx.ended = !self.busy;
        (true, fx)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Returns false if already in that state.
    pub(crate) fn set_paused(&mut self, paused: bool, now: Instant) -> (bool, Effects) {
        let mut fx = Effects::default();
        if self.paused == paused {
            return (false, fx);
        }
        self.paused = paused;
        self.refresh_hot();
        if !paused {
            // Time spent paused is not a stall.
            self.last_progress = self.last_progress.map(|_| now);
            self.stall_fired = false;
            self.staff(&mut fx);
            self.refresh_hot();
        }
        (true, fx)
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused
    }

    pub(crate) fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }

    /// Changes the limit; returns the old one.
    pub(crate) fn set_max_concurrency(&mut self, n: usize) -> (usize, Effects) {
        debug_assert!(n > 0);
        let old = std::mem::replace(&mut self.max_concurrency, n);
        let mut fx = Effects::default();
        if n < old {
            // Parked workers above the limit wake up and exit.
            for slot in self.idle.drain(..) {
                self.slots[slot].notify.notify_one();
            }
        } else {
            self.staff(&mut fx);
        }
        self.refresh_hot();
        (old, fx)
    }

    /// Takes every queued job out for cancellation and lists running jobs to abort.
    pub(crate) fn cancel_all(&mut self) -> Cancellation<J> {
        self.fold_inbox();
        let queued = self.queue.take_all();
        self.cancelling += queued.len();
        self.wake_spawners(queued.len());
        let running = self
            .slots
            .iter()
            .filter(|s| s.running.is_some())
            .map(|s| Arc::clone(&s.abort))
            .collect();
        Cancellation { queued, running }
    }

    /// Takes the queued job `id` out for cancellation — its token fired or its
    /// handle aborted it — looking in the lane of `priority` (every lane if
    /// `None`). `None` if it is not queued: a worker took it (and will see the
    /// cancellation when it polls it) or it already left.
    ///
    /// As with [`cancel_all`](Self::cancel_all), the job counts as being
    /// cancelled (the pool stays busy) until [`finish_cancelled`](Self::finish_cancelled);
    /// its place in the queue is free at once.
    pub(crate) fn take_queued(&mut self, id: TaskId, priority: Option<i32>) -> Option<J> {
        if priority.is_none_or(|p| p == self.queue.default_priority()) {
            // A default-priority job may still be in the inbox.
            self.fold_inbox();
        }
        let job = self.queue.remove(priority, |job| job.id() == id);
        if job.is_some() {
            self.cancelling += 1;
            self.wake_spawners_now(1);
        }
        self.refresh_hot();
        job
    }

    /// Accounts for jobs taken by [`cancel_all`](Self::cancel_all) or
    /// [`take_queued`](Self::take_queued).
    pub(crate) fn finish_cancelled(&mut self, done: Vec<Finished>) -> Effects {
        self.cancelling -= done.len();
        for f in done {
            self.record(f);
        }
        let mut fx = Effects::default();
        self.check_idle(&mut fx);
        fx
    }

    // ---- supervision (runtime limit, stall) ----

    /// The next instant the supervisor must look, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        if !self.busy {
            return None;
        }
        let runtime = match (self.max_runtime, self.busy_since) {
            (Some(limit), Some(since)) if !self.runtime_fired => Some(since + limit),
            _ => None,
        };
        let stall = match (self.stall_timeout, self.last_progress) {
            (Some(limit), Some(last)) if !self.stall_fired && !self.paused_and_still() => {
                Some(last + limit)
            }
            _ => None,
        };
        match (runtime, stall) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires the runtime limit if it is due: returns what to cancel.
    pub(crate) fn check_runtime(&mut self, now: Instant) -> Option<Cancellation<J>> {
        let (limit, since) = (self.max_runtime?, self.busy_since?);
        if !self.busy || self.runtime_fired || now < since + limit {
            return None;
        }
        self.runtime_fired = true;
        let cancel = self.cancel_all();
        let (queued, running) = (cancel.queued.len() as u64, self.running as u64);
        let (q0, r0) = self.deadline_hit.unwrap_or((0, 0));
        self.deadline_hit = Some((q0 + queued, r0 + running));
        Some(cancel)
    }

    /// Fires the stall timeout if it is due: returns the oldest running task
    /// and publishes the stall to waiting drainers.
    pub(crate) fn check_stall(&mut self, now: Instant) -> Option<(Option<RunningTask>, Effects)> {
        let (limit, last) = (self.stall_timeout?, self.last_progress?);
        if !self.busy || self.stall_fired || self.paused_and_still() || now < last + limit {
            return None;
        }
        self.stall_fired = true;
        let oldest = self.oldest_running(now);
        let mut fx = Effects::default();
        let stalled = Err(DrainError::Stalled {
            stall_timeout: limit,
            oldest: oldest.clone(),
        });
        if self.drain.publish(stalled).is_ok() {
            fx.wake_drainers = true;
        }
        Some((oldest, fx))
    }

    /// Paused with nothing running: waiting is intended, not a stall.
    fn paused_and_still(&self) -> bool {
        self.paused && self.running == 0
    }

    pub(crate) fn oldest_running(&self, now: Instant) -> Option<RunningTask> {
        self.slots
            .iter()
            .filter_map(|s| s.running.as_ref())
            .min_by_key(|r| (r.started, r.id))
            .map(|r| RunningTask {
                id: r.id,
                name: r.name.as_deref().map(str::to_owned),
                running_for: now.saturating_duration_since(r.started),
            })
    }

    // ---- observation ----

    /// Jobs waiting to start (the inbox may be a few pushes behind).
    pub(crate) fn queued(&self) -> usize {
        self.queue.len() + self.inbox.len()
    }

    pub(crate) fn running(&self) -> usize {
        self.running
    }

    pub(crate) fn workers(&self) -> usize {
        self.workers
    }

    /// Every worker slot's histograms, live or not.
    pub(crate) fn latencies(&self) -> impl Iterator<Item = &Arc<Mutex<Latencies>>> {
        self.slots.iter().map(|s| &s.latencies)
    }

    pub(crate) fn totals(&self) -> Totals {
        self.totals
    }
}
