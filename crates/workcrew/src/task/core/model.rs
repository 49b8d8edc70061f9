//! Exhaustive model check of the scheduling core.
//!
//! loom does not fit this design: the core is not a lock-free structure but a
//! plain state machine behind one mutex, and its interesting races are between
//! *operations* (push, a worker taking work, finish, close, pause, limit
//! changes, cancel-all, a queued task cancelled by its token or aborted by its
//! handle, a spawner waiting for room, drainers), each atomic under the lock. So this test
//! explores every interleaving of those operations for small pools — depth
//! first, replaying each path from a fresh core, pruning states already seen —
//! and checks the invariants listed in the core's module docs after every step
//! and at every terminal state.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Waker};

use futures::FutureExt;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Core, CoreConfig, CoreJob, Finished, Next, Refused};
use crate::task::drain_book::Ticket;
use crate::task::id::TaskId;
use crate::task::output::OutcomeKind;

struct TestJob(TaskId);

impl CoreJob for TestJob {
    fn id(&self) -> TaskId {
        self.0
    }
    fn name(&self) -> Option<&Arc<str>> {
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Op {
    Spawn,
    /// The awake worker in this slot looks for work.
    Look(usize),
    /// The same, allowed to spin instead of parking.
    LookSpin(usize),
    /// The worker in this slot finishes its task this way, then looks again.
    Finish(usize, Kind),
    Close,
    Pause,
    Resume,
    SetMax(usize),
    CancelAll,
    FinishCancelled,
    DrainBegin,
    DrainPoll,
    /// The handle of this task calls `abort` (once): it takes the task out of
    /// the queue if it is there (`take_queued` without a priority).
    Abort(u64),
    /// The token every task carries fires (once).
    TokenFires,
    /// This task's token watcher runs (after the token fired, while the task
    /// is queued or has just started): `take_queued` with the task's priority.
    Watcher(u64),
    /// A spawner finds the queue full and waits for room.
    WaitRoom,
}

/// The one spawner that may wait for room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Spawner {
    Idle,
    Waiting,
    Woken,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Ok,
    Err,
    Cancelled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Worker {
    Awake,
    Parked,
    Running(u64),
    Exited,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum TaskState {
    Queued,
    Running,
    Cancelling,
    Done,
    Rejected,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Drainer {
    None,
    Waiting(TicketKey),
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct TicketKey(u64);

struct Scenario {
    tasks: u64,
    max_concurrency: usize,
    capacity: usize,
    ops_allowed: &'static [Op],
    /// Handles may abort their tasks.
    aborts: bool,
    /// A spawner may find the queue full and wait for room.
    waits_for_room: bool,
}

/// One run of the model, driven by a sequence of operations.
struct Model {
    core: Core<TestJob>,
    now: Instant,
    workers: Vec<(Worker, Option<Arc<Notify>>)>,
    tasks: Vec<TaskState>,
    room: usize,
    used: Vec<Op>,
    cancelled_out: Vec<TestJob>,
    drainer: Drainer,
    ticket: Option<Ticket>,
    reported: u64,
    max_ever: usize,
    fast_pushes: usize,
    capacity: usize,
    spawner: Spawner,
    /// The waiting spawner's wake-up, enabled as `Shared::push` enables it.
    room_wait: Option<Pin<Box<OwnedNotified>>>,
}

impl Model {
    fn new(s: &Scenario) -> Self {
        Model {
            core: Core::new(CoreConfig {
                max_concurrency: s.max_concurrency,
                queue_capacity: s.capacity,
                default_priority: 0,
                max_reported_failures: 100,
                max_runtime: None,
                stall_timeout: None,
                rate: None,
            }),
            now: Instant::now(),
            workers: Vec::new(),
            tasks: Vec::new(),
            room: s.capacity,
            used: Vec::new(),
            cancelled_out: Vec::new(),
            drainer: Drainer::None,
            ticket: None,
            reported: 0,
            max_ever: s.max_concurrency,
            fast_pushes: 0,
            capacity: s.capacity,
            spawner: Spawner::Idle,
            room_wait: None,
        }
    }

    fn once(&self, op: Op) -> bool {
        !self.used.contains(&op)
    }

    fn enabled(&self, s: &Scenario) -> Vec<Op> {
        let mut ops = Vec::new();
        let more = (self.tasks.len() as u64) < s.tasks;
        if more && self.spawner != Spawner::Waiting && (self.room > 0 || self.core.is_closed()) {
            ops.push(Op::Spawn);
        }
        if more
            && s.waits_for_room
            && self.spawner == Spawner::Idle
            && self.room == 0
            && !self.core.is_closed()
        {
            ops.push(Op::WaitRoom);
        }
        let fired = self.used.contains(&Op::TokenFires);
        for (t, state) in self.tasks.iter().enumerate() {
            let t = t as u64;
            if !matches!(state, TaskState::Queued | TaskState::Running) {
                continue;
            }
            if s.aborts && self.once(Op::Abort(t)) {
                ops.push(Op::Abort(t));
            }
            if fired && self.once(Op::Watcher(t)) {
                ops.push(Op::Watcher(t));
            }
        }
        for (slot, (w, _)) in self.workers.iter().enumerate() {
            match w {
                Worker::Awake => {
                    ops.push(Op::Look(slot));
                    ops.push(Op::LookSpin(slot));
                }
                Worker::Running(_) => {
                    for kind in [Kind::Ok, Kind::Err, Kind::Cancelled] {
                        ops.push(Op::Finish(slot, kind));
                    }
                }
                _ => {}
            }
        }
        if !self.cancelled_out.is_empty() {
            ops.push(Op::FinishCancelled);
        }
        for &op in s.ops_allowed {
            let ok = match op {
                Op::Resume => self.used.contains(&Op::Pause) && self.once(op),
                Op::DrainPoll => matches!(self.drainer, Drainer::Waiting(_)),
                Op::DrainBegin => self.drainer == Drainer::None,
                _ => self.once(op),
            };
            if ok {
                ops.push(op);
            }
        }
        ops
    }

    fn add_workers(&mut self, new: Vec<super::NewWorker>) {
        for w in new {
            if w.slot >= self.workers.len() {
                self.workers.resize(w.slot + 1, (Worker::Exited, None));
            }
            assert_eq!(
                self.workers[w.slot].0,
                Worker::Exited,
                "slot reused while live"
            );
            self.workers[w.slot] = (Worker::Awake, Some(w.notify));
        }
    }

    fn look(&mut self, slot: usize) {
        self.look_with(slot, false);
    }

    /// Takes task `id` out of the queue for cancellation, as `abort` (no
    /// priority) or its token's watcher (its priority) does.
    fn take(&mut self, id: u64, priority: Option<i32>) {
        let state = self.tasks[id as usize];
        let path = &self.used;
        match self.core.take_queued(TaskId(id), priority) {
            Some(job) => {
                assert_eq!(job.0 .0, id, "took the wrong job, path {path:?}");
                assert_eq!(
                    state,
                    TaskState::Queued,
                    "took a job that was not queued, path {path:?}"
                );
                self.tasks[id as usize] = TaskState::Cancelling;
                self.room += 1;
                self.cancelled_out.push(job);
            }
            None => assert_ne!(
                state,
                TaskState::Queued,
                "a queued job was not found, path {path:?}"
            ),
        }
    }

    /// A look that may spin instead of parking.
    fn look_with(&mut self, slot: usize, may_spin: bool) {
        match self.core.next_for_worker(slot, self.now, may_spin) {
            Next::Run(job) => {
                let id = job.0 .0;
                assert_eq!(
                    self.tasks[id as usize],
                    TaskState::Queued,
                    "task {id} started twice"
                );
                self.tasks[id as usize] = TaskState::Running;
                self.workers[slot].0 = Worker::Running(id);
                self.room += 1;
            }
            Next::Park => self.workers[slot].0 = Worker::Parked,
            Next::Exit => self.workers[slot] = (Worker::Exited, None),
            Next::WaitUntil(_) => unreachable!("no rate limit in the model"),
            Next::Spin => {
                assert!(may_spin);
                // Still awake: it will look again.
            }
        }
    }

    fn apply(&mut self, op: Op) {
        self.used.push(op);
        match op {
            Op::Abort(id) => self.take(id, None),
            Op::TokenFires => {}
            Op::Watcher(id) => self.take(id, Some((id % 2) as i32)),
            Op::WaitRoom => {
                assert_eq!(self.core.admit(), Err(Refused::Full));
                let notify = self.core.wait_for_room();
                let mut wait = Box::pin(notify.notified_owned());
                wait.as_mut().enable();
                self.room_wait = Some(wait);
                self.spawner = Spawner::Waiting;
            }
            Op::Spawn => {
                self.spawner = Spawner::Idle;
                let id = self.tasks.len() as u64;
                // Default-priority tasks take the inbox when the pool is hot,
                // as `Shared::push` does.
                let inbox = Arc::clone(self.core.inbox());
                let claim = if id % 2 == 0 { inbox.claim() } else { None };
                if let Some(claim) = claim {
                    claim.push(TestJob(TaskId(id)));
                    assert!(self.room > 0);
                    self.room -= 1;
                    self.tasks.push(TaskState::Queued);
                    self.fast_pushes += 1;
                } else {
                    // Priorities alternate so ordering is exercised.
                    match self
                        .core
                        .push((id % 2) as i32, TestJob(TaskId(id)), self.now)
                    {
                        Ok(fx) => {
                            assert!(self.room > 0);
                            self.room -= 1;
                            self.tasks.push(TaskState::Queued);
                            self.add_workers(fx.new_workers);
                        }
                        Err((why, job)) => {
                            assert!(self.core.is_closed());
                            assert_eq!(
                                why,
                                Refused::Closed,
                                "the model only spawns when there is room"
                            );
                            assert_eq!(job.0 .0, id, "the refused job is given back");
                            self.tasks.push(TaskState::Rejected);
                        }
                    }
                }
            }
            Op::Look(slot) => self.look(slot),
            Op::LookSpin(slot) => self.look_with(slot, true),
            Op::Finish(slot, kind) => {
                let Worker::Running(id) = self.workers[slot].0 else {
                    unreachable!()
                };
                let kind = match kind {
                    Kind::Ok => OutcomeKind::Completed,
                    Kind::Err => OutcomeKind::Failed,
                    Kind::Cancelled => OutcomeKind::Cancelled,
                };
                let fx = self.core.finish(
                    slot,
                    Finished {
                        id: TaskId(id),
                        name: None,
                        kind,
                        message: Some("x".into()),
                    },
                    self.now,
                );
                self.tasks[id as usize] = TaskState::Done;
                self.add_workers(fx.new_workers);
                self.workers[slot].0 = Worker::Awake;
                self.look(slot); // the real worker does both under one lock
            }
            Op::Close => {
                let fx = self.core.close().1;
                self.add_workers(fx.new_workers);
            }
            Op::Pause => {
                let fx = self.core.set_paused(true, self.now).1;
                self.add_workers(fx.new_workers);
            }
            Op::Resume => {
                let fx = self.core.set_paused(false, self.now).1;
                self.add_workers(fx.new_workers);
            }
            Op::SetMax(n) => {
                self.max_ever = self.max_ever.max(n);
                let fx = self.core.set_max_concurrency(n).1;
                self.add_workers(fx.new_workers);
            }
            Op::CancelAll => {
                let c = self.core.cancel_all();
                for job in &c.queued {
                    self.tasks[job.0 .0 as usize] = TaskState::Cancelling;
                }
                self.room += c.queued.len();
                self.cancelled_out.extend(c.queued);
            }
            Op::FinishCancelled => {
                let done: Vec<Finished> = self
                    .cancelled_out
                    .drain(..)
                    .map(|j| Finished {
                        id: j.0,
                        name: None,
                        kind: OutcomeKind::Cancelled,
                        message: None,
                    })
                    .collect();
                for f in &done {
                    self.tasks[f.id.0 as usize] = TaskState::Done;
                }
                let fx = self.core.finish_cancelled(done);
                self.add_workers(fx.new_workers);
            }
            Op::DrainBegin => match self.core.begin_drain(false) {
                Ok(outcome) => {
                    self.reported += outcome.expect("no deadline in the model").total();
                    self.drainer = Drainer::Done;
                }
                Err(ticket) => {
                    self.ticket = Some(ticket);
                    self.drainer = Drainer::Waiting(TicketKey(self.core.drain_key(ticket)));
                }
            },
            Op::DrainPoll => {
                let ticket = self.ticket.expect("waiting");
                if let Some(outcome) = self.core.poll_drain(ticket) {
                    self.reported += outcome.expect("no deadline in the model").total();
                    self.drainer = Drainer::Done;
                }
            }
        }
        // A waiting spawner that was notified wakes up.
        if let Some(wait) = &mut self.room_wait {
            let mut cx = Context::from_waker(Waker::noop());
            if wait.as_mut().poll(&mut cx).is_ready() {
                self.room_wait = None;
                self.spawner = Spawner::Woken;
            }
        }
        // A parked worker whose Notify holds a permit is as good as awake.
        for (w, notify) in &mut self.workers {
            if *w == Worker::Parked && notify.as_ref().unwrap().notified().now_or_never().is_some()
            {
                *w = Worker::Awake;
            }
        }
        self.check();
    }

    fn count(&self, pred: impl Fn(&Worker) -> bool) -> usize {
        self.workers.iter().filter(|(w, _)| pred(w)).count()
    }

    fn check(&self) {
        let running = self.count(|w| matches!(w, Worker::Running(_)));
        let awake = self.count(|w| *w == Worker::Awake);
        let parked = self.count(|w| *w == Worker::Parked);
        let live = self.workers.len() - self.count(|w| *w == Worker::Exited);
        let path = &self.used;
        assert_eq!(self.core.running(), running, "running count, path {path:?}");
        assert_eq!(self.core.workers(), live, "worker count, path {path:?}");
        assert!(
            running <= self.max_ever,
            "concurrency exceeded, path {path:?}"
        );
        assert!(live <= self.max_ever, "too many workers, path {path:?}");
        let queued = self
            .tasks
            .iter()
            .filter(|t| **t == TaskState::Queued)
            .count();
        assert_eq!(self.core.queued(), queued, "queue length, path {path:?}");
        if queued > 0 && !self.core.is_paused() {
            // Someone is on the way to the queue, or every allowed worker is busy.
            let staffed =
                awake > 0 || (parked == 0 && live >= self.core.max_concurrency() && running > 0);
            assert!(
                staffed,
                "lost wake-up: {queued} queued, workers {:?}, path {path:?}",
                self.workers
            );
        }
        assert_eq!(
            self.room,
            self.capacity - queued,
            "room is freed as soon as a job leaves the queue, path {path:?}"
        );
        assert_eq!(
            self.tasks
                .iter()
                .filter(|t| **t == TaskState::Cancelling)
                .count(),
            self.cancelled_out.len(),
            "jobs being cancelled, path {path:?}"
        );
        if self.spawner == Spawner::Waiting {
            // Not woken: the queue must be full, or workers must still be
            // taking jobs from it (they wake spawners as they go). A place freed
            // by a cancellation in a paused pool must wake it.
            let draining = !self.core.is_paused() && queued > 0;
            assert!(
                !self.core.is_closed() && (self.room == 0 || draining),
                "a spawner waits for room that is there (lost wake-up), room {}, path {path:?}",
                self.room
            );
        }
        let in_flight = queued + running + self.cancelled_out.len();
        assert_eq!(
            self.core.is_idle(),
            in_flight == 0,
            "idle flag, path {path:?}"
        );
    }

    fn check_terminal(&mut self, s: &Scenario) {
        let path = self.used.clone();
        assert_ne!(
            self.spawner,
            Spawner::Waiting,
            "a spawner was left waiting for room, path {path:?}"
        );
        assert!(self.core.is_idle(), "stuck with work left, path {path:?}");
        assert!(
            self.tasks
                .iter()
                .all(|t| matches!(t, TaskState::Done | TaskState::Rejected)),
            "a task never ended, path {path:?}"
        );
        assert_eq!(self.tasks.len() as u64, s.tasks);
        let done = self.tasks.iter().filter(|t| **t == TaskState::Done).count() as u64;
        let totals = self.core.totals();
        let counted = totals.completed
            + totals.failed
            + totals.cancelled
            + totals.panicked
            + totals.timed_out;
        assert_eq!(
            counted, done,
            "each accepted task counted exactly once, path {path:?}"
        );
        if let Drainer::Waiting(_) = self.drainer {
            panic!("a drainer was left waiting on an idle pool, path {path:?}");
        }
        // Whatever no drain took is still pending: nothing is lost.
        let rest = match self.core.begin_drain(false) {
            Ok(outcome) => outcome.expect("no deadline in the model"),
            Err(_) => panic!("an idle pool gives its report at once, path {path:?}"),
        };
        assert_eq!(
            self.reported + rest.total(),
            done,
            "reports lost tasks, path {path:?}"
        );
        if self.core.is_closed() {
            assert_eq!(
                self.core.workers(),
                0,
                "workers outlived a closed, idle pool, path {path:?}"
            );
        }
    }

    /// What distinguishes states: the model's view plus the core's hidden
    /// parts that change behaviour (where queued jobs are, whether the inbox
    /// is hot, whether fast pushes happened on the way).
    #[allow(clippy::type_complexity)]
    fn key(
        &self,
    ) -> (
        Vec<Worker>,
        Vec<TaskState>,
        Vec<Op>,
        usize,
        Drainer,
        usize,
        (usize, bool, bool),
        Spawner,
    ) {
        let mut used = self.used.clone();
        used.retain(|op| {
            !matches!(
                op,
                Op::Spawn | Op::Look(_) | Op::LookSpin(_) | Op::Finish(..) | Op::DrainPoll
            )
        });
        used.sort_by_key(|op| format!("{op:?}"));
        (
            self.workers.iter().map(|(w, _)| *w).collect(),
            self.tasks.clone(),
            used,
            self.room,
            self.drainer,
            self.cancelled_out.len(),
            (
                self.core.inbox().len(),
                self.core.inbox().is_hot(),
                self.fast_pushes > 0,
            ),
            self.spawner,
        )
    }
}

/// Explores every interleaving; returns the number of distinct states and
/// how many terminal paths used the inbox.
fn explore(s: &Scenario) -> (usize, usize) {
    let mut seen = HashSet::new();
    let mut stack: Vec<Vec<Op>> = vec![Vec::new()];
    let mut terminals = 0;
    let mut fast = 0;
    while let Some(path) = stack.pop() {
        let mut m = Model::new(s);
        for &op in &path {
            m.apply(op);
        }
        if !seen.insert(m.key()) {
            continue;
        }
        let mut ops = m.enabled(s);
        // A waiting drainer polls last; if it is the only thing left, it must succeed.
        if ops.iter().all(|op| *op == Op::DrainPoll) {
            if !ops.is_empty() {
                let mut m2 = Model::new(s);
                for &op in &path {
                    m2.apply(op);
                }
                m2.apply(Op::DrainPoll);
                ops.clear();
                m = m2;
            }
            m.check_terminal(s);
            terminals += 1;
            fast += usize::from(m.fast_pushes > 0);
            continue;
        }
        for op in ops {
            let mut next = path.clone();
            next.push(op);
            stack.push(next);
        }
    }
    assert!(terminals > 0);
    (seen.len(), fast)
}

#[test]
fn model_basic_spawn_finish_drain() {
    let (states, _) = explore(&Scenario {
        tasks: 3,
        max_concurrency: 2,
        capacity: 2,
        ops_allowed: &[Op::DrainBegin, Op::DrainPoll],
        aborts: false,
        waits_for_room: false,
    });
    assert!(states > 100, "explored {states} states");
}

#[test]
fn model_close_pause_resume() {
    explore(&Scenario {
        tasks: 3,
        max_concurrency: 2,
        capacity: 2,
        ops_allowed: &[
            Op::Close,
            Op::Pause,
            Op::Resume,
            Op::DrainBegin,
            Op::DrainPoll,
        ],
        aborts: false,
        waits_for_room: false,
    });
}

#[test]
fn model_limit_changes() {
    explore(&Scenario {
        tasks: 3,
        max_concurrency: 2,
        capacity: 3,
        ops_allowed: &[
            Op::SetMax(1),
            Op::SetMax(3),
            Op::Pause,
            Op::Resume,
            Op::DrainBegin,
            Op::DrainPoll,
        ],
        aborts: false,
        waits_for_room: false,
    });
}

#[test]
fn model_inbox_with_one_worker() {
    // One worker makes the pool hot as soon as it runs, so pushes go through
    // the inbox while close, pause, cancel-all and drains interleave.
    let (_, fast) = explore(&Scenario {
        tasks: 4,
        max_concurrency: 1,
        capacity: 3,
        ops_allowed: &[
            Op::Close,
            Op::Pause,
            Op::Resume,
            Op::CancelAll,
            Op::FinishCancelled,
            Op::DrainBegin,
            Op::DrainPoll,
        ],
        aborts: false,
        waits_for_room: false,
    });
    assert!(fast > 0, "some paths pushed through the inbox");
}

#[test]
fn model_cancel_all_and_close() {
    explore(&Scenario {
        tasks: 3,
        max_concurrency: 1,
        capacity: 3,
        ops_allowed: &[Op::CancelAll, Op::Close, Op::DrainBegin, Op::DrainPoll],
        aborts: false,
        waits_for_room: false,
    });
}

#[test]
fn model_abort_queued_tasks() {
    // Handles abort their tasks while queued or running, in a pool that pauses
    // and resumes, while a spawner waits for room that an abort frees.
    explore(&Scenario {
        tasks: 3,
        max_concurrency: 1,
        capacity: 2,
        ops_allowed: &[Op::Pause, Op::Resume, Op::DrainBegin, Op::DrainPoll],
        aborts: true,
        waits_for_room: true,
    });
}

#[test]
fn model_token_cancels_queued_tasks() {
    // The token of every task fires; each task's watcher runs at any later
    // point while its task is queued or has just started.
    explore(&Scenario {
        tasks: 3,
        max_concurrency: 1,
        capacity: 2,
        ops_allowed: &[
            Op::TokenFires,
            Op::Pause,
            Op::Resume,
            Op::DrainBegin,
            Op::DrainPoll,
        ],
        aborts: false,
        waits_for_room: true,
    });
}

#[test]
fn model_queued_cancellations_with_inbox_close_and_cancel_all() {
    // Aborts, token watchers, cancel-all and close together, with pushes going
    // through the inbox (one worker makes the pool hot). Drains and waiting
    // spawners are left to the scenarios above, to keep this one small.
    let (_, fast) = explore(&Scenario {
        tasks: 3,
        max_concurrency: 1,
        capacity: 2,
        ops_allowed: &[
            Op::TokenFires,
            Op::Close,
            Op::CancelAll,
            Op::FinishCancelled,
        ],
        aborts: true,
        waits_for_room: false,
    });
    assert!(fast > 0, "some paths pushed through the inbox");
}
