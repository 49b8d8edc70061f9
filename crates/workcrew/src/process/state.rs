//! The pool's shared state: live workers, the pool queue, and the rules that
//! move calls between them.
//!
//! # Implementation notes
//!
//! One mutex guards [`State`]. Every move of a call happens under it:
//!
//! - **Routing** (`submit`): the router picks a worker with room; its
//!   in-flight count goes up and the call joins that worker's outbox — or, if
//!   the worker held no other call, the caller writes it at once and it joins
//!   the connection's pending table (`conn::Direct`, its lock taken under this
//!   one), so a lone call needs no hand-over to the connection task. With
//!   no room anywhere the call joins the pool queue (bounded).
//! - **Exchange** (`exchange`, by a worker's connection task after each
//!   batch of answers and on every wake): the worker's in-flight count goes
//!   down by the answers it got; it takes its outbox and then pulls queued
//!   calls while it has room. So a queued call moves exactly when a slot
//!   frees, with no extra task and no polling.
//! - **Removal** (`remove`, when a connection ends): the worker leaves the
//!   list; calls still in its outbox (never written) go back to the front of
//!   the queue, so they are re-routed, not lost.
//!
//! Invariants, each kept by those three steps:
//! 1. `in_flight` of a worker = calls routed to it (outbox or written) and
//!    not yet answered; it never exceeds `limit`.
//! 2. A worker with `retiring` set gets no new call; it is told to shut down
//!    by its own connection task when its `in_flight` reaches 0, so a
//!    retiring worker never loses a call.
//! 3. A call is in exactly one place: the queue, one outbox, or one
//!    connection's pending table — or it has been answered.
//! 4. The queue is non-empty only while no live, non-retiring worker serving
//!    the front call has room (or a worker is about to pull: its wake is
//!    pending) — so queued calls never wait on a free slot.
//!
//! Cancelled calls (their caller dropped the answer's receiver) are skipped
//! when pulled or taken from an outbox, and counted as answered at once.
//!
//! # Every state of a call, every ending
//!
//! A call is in one of four states: **queued** (in the pool queue), **outbox** (routed to a
//! worker, whose in-flight count it raised, not yet written by its connection task; a call
//! routed to a worker that held nothing skips it, written by its caller),
//! **running** (written, not answered) or **answered** (the answer waits in the caller's
//! receiver, not yet read). Each ending meets each state in one way, and has a test (files in
//! `tests/`; `state::` is this module's own tests). "Ignored" means a worker that does not
//! answer the `CANCEL`: it gets no new call, finishes its others within one more cancel grace,
//! then is killed and replaced, and a fifth call is served.
//!
//! | ending | queued | outbox | running | answered |
//! |---|---|---|---|---|
//! | answer, error, panic | — (answered only once sent) | — | `process_pool_faults`: `typed_values_round_trip_in_postcard`, `a_function_error_is_failed_with_its_message`, `a_panic_is_panicked_with_its_message_and_the_same_worker_keeps_serving` | read as it came: every call test |
//! | timeout | withdrawn, never sent: `process_pool::stats_follow_queueing_outcomes_and_restarts` | never written, slot freed: `state::an_outbox_call_given_up_is_never_written_and_frees_its_slot` | `CANCEL`: `process_pool_faults::a_timed_out_async_call_is_cancelled_and_the_same_worker_keeps_serving`; ignored: `process_pool::a_timed_out_call_is_cancelled_and_a_worker_that_ignores_it_is_killed_and_replaced`, `process_pool_faults::a_hung_sync_call_times_out_and_its_worker_is_killed_and_replaced` | the answer stands: `process_pool_endings::an_answer_not_yet_read_stands_past_its_timeout_token_worker_s_death_and_stop_now` |
//! | token | withdrawn: `process_pool_behaviour::a_queued_call_withdrawn_by_its_token_or_by_dropping_it_never_reaches_the_worker`; already fired: never routed, `process_pool_endings::a_call_with_an_already_cancelled_token_is_never_routed` | as timeout | `CANCEL`: `process_pool_behaviour::a_running_call_is_cancelled_by_its_token_or_by_dropping_it_and_the_worker_stays`, `process_pool_faults::a_sync_call_that_sees_its_cancel_keeps_its_worker`; ignored: `process_pool_endings::calls_cancelled_by_token_on_a_worker_that_ignores_cancel_get_it_replaced` | the answer stands: as timeout |
//! | drop of the future | withdrawn: as token | as timeout | `CANCEL`: as token; ignored: `process_pool_endings::dropped_calls_on_a_worker_that_ignores_cancel_get_it_replaced_and_a_fifth_call_runs` | nothing is cancelled, no kill: `process_pool_endings::dropping_an_answered_call_before_reading_it_kills_nothing` |
//! | pool stop | served during the drain: `process_pool_behaviour::stop_settles_running_and_queued_calls_with_their_values`; still queued after it: `Stopped`, `process_pool_endings::stop_with_a_grace_fails_the_queued_call_and_loses_the_call_that_never_ends` | written before `SHUTDOWN`, nothing pulled after: `state::a_worker_told_to_shut_down_gets_its_outbox_then_shutdown_and_no_queued_call` | finishes: as queued; never ends: lost (stopped) within the bound, `process_pool_endings::stop_returns_in_bounded_time_with_a_call_that_is_never_answered` and `stop_with_a_grace_...` | the answer stands: as timeout |
//! | stop_now | `Stopped` at once: `process_pool_endings::stop_now_fails_queued_calls_and_kills_the_workers_at_once` | as pool stop | lost (stopped) at once: `stop_now_fails_...`; shortening a stop under way: `process_pool_endings::stop_now_shortens_a_stop_under_way` | the answer stands: as timeout |
//! | worker death | stays queued, runs on the replacement: `process_pool_behaviour::calls_queued_when_the_only_worker_crashes_run_on_its_replacement` | back to the front of the queue: `state::outbox_calls_of_a_worker_that_died_go_back_to_the_front_of_the_queue` | lost, after the worker left the pool: `process_pool_faults::a_crash_fails_only_its_call_with_the_exit_code_and_the_worker_is_replaced`, `process_pool_endings::a_lost_worker_is_out_of_the_pool_when_its_calls_fail`, `process_pool_chaos`; retried if allowed: `process_pool_behaviour::a_call_allowing_retries_is_sent_again_when_its_worker_dies_and_others_fail_as_lost` | the answer stands: as timeout |
//! | heartbeat miss | as worker death (the worker is killed) | as worker death | lost (heartbeat missed): `process_pool::a_worker_that_stops_answering_heartbeats_is_killed_and_replaced`, `process_pool_protocol::s3_7_pongs_with_the_wrong_nonce_do_not_count` | as worker death |
//! | recycle | taken by the replacement: `process_pool_endings::queued_calls_go_to_the_replacements_of_recycled_workers` | written: a retiring worker finishes what it was given (invariant 2), same test | finishes, then the worker exits: `process_pool_behaviour::reload_lets_calls_in_flight_finish_and_switches_to_the_new_command` | the answer stands |

use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::channel::oneshot;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::builder::{Config, WorkerCommand};
use super::conn::Direct;
use super::error::CallError;
use super::events::{ProcessEvent, RecycleReason};
use super::exit::{ExitReason, ProcessExit};
use super::payload::Payload;
use super::routing::Router;
use super::stats::Counters;
use crate::common::{Hub, NameHasher};
use crate::protocol::{Encoding, ErrorBody};

/// How a call ended, as its caller learns it.
pub(crate) enum Reply {
    Value(Payload),
    Error(ErrorBody),
    /// The worker ended holding it: its pid, why, and its exit status.
    Lost {
        pid: u32,
        reason: ExitReason,
        status: ProcessExit,
    },
    /// The pool could not run it (no workers left, crash loop, stopped).
    Refused(CallError),
}

/// One call on its way through the pool.
pub(crate) struct Job {
    pub(crate) id: u64,
    pub(crate) function: Arc<str>,
    pub(crate) payload: Payload,
    /// `CALL_MANY`: the payload is a sequence of arguments.
    pub(crate) many: bool,
    /// Times it may be sent again if its worker dies holding it.
    pub(crate) retries_left: u32,
    /// Descriptors sent with it (`CALL_FDS`); only workers that accept them take it.
    pub(crate) fds: Vec<std::os::fd::OwnedFd>,
    pub(crate) started: Instant,
    pub(crate) reply: oneshot::Sender<Reply>,
}

impl Job {
    /// Its caller has gone (dropped the call, or timed out).
    pub(crate) fn abandoned(&self) -> bool {
        self.reply.is_canceled()
    }
}

/// The pool's side of one worker, shared with its connection task.
pub(crate) struct WorkerHandle {
    /// The pool's number for it (1, 2, ...).
    pub(crate) id: u64,
    pub(crate) pid: u32,
    pub(crate) functions: HashSet<String, BuildHasherDefault<NameHasher>>,
    /// It accepts `CALL_MANY`.
    pub(crate) batch: bool,
    /// It accepts `CALL_FDS`.
    pub(crate) fds: bool,
    /// Its connection task waits here for outbox calls, cancels, shutdown.
    pub(crate) wake: Notify,
    /// Set when the worker must finish its calls and exit.
    pub(crate) shutdown: AtomicBool,
    /// Set when its connection task has ended: the process is reaped and every call it held
    /// has settled.
    pub(crate) finished: AtomicBool,
    /// Its calls written and not yet answered, and its channel's writing side (see
    /// [`Direct`]). Taken after the pool lock, never before it.
    pub(crate) direct: Mutex<Direct>,
}

#[cfg(test)]
impl WorkerHandle {
    /// A worker serving `echo`, with no process behind it, for tests of the pool state.
    pub(crate) fn stand_in(id: u64) -> Self {
        WorkerHandle {
            id,
            pid: 0,
            functions: ["echo".to_owned()].into_iter().collect(),
            batch: false,
            fds: false,
            wake: Notify::new(),
            shutdown: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            direct: Mutex::new(Direct::closed()),
        }
    }
}

/// A live worker, as routing sees it.
pub(crate) struct Entry {
    pub(crate) handle: Arc<WorkerHandle>,
    pub(crate) in_flight: usize,
    /// Calls it may hold at once: its concurrency, or `max_per_worker` if lower.
    pub(crate) limit: usize,
    /// Calls routed to it so far.
    pub(crate) sent: u64,
    pub(crate) retiring: Option<RecycleReason>,
    pub(crate) idle_since: Instant,
    /// When it retires by age, if it does.
    pub(crate) retire_at: Option<Instant>,
    pub(crate) generation: u64,
    /// Calls routed to it that its connection task has not taken yet.
    pub(crate) outbox: Vec<Job>,
    /// Calls given up by their callers, to cancel (`CANCEL`, then a kill if the worker does not
    /// answer within the cancel grace).
    pub(crate) cancels: Vec<u64>,
}

impl Entry {
    fn can_take(&self, job: &Job) -> Option<usize> {
        (self.retiring.is_none() && self.in_flight < self.limit && self.serves(job))
            .then_some(self.in_flight)
    }

    fn serves(&self, job: &Job) -> bool {
        self.handle.functions.contains(&*job.function) && (job.fds.is_empty() || self.handle.fds)
    }
}

pub(crate) struct State {
    pub(crate) workers: Vec<Entry>,
    pub(crate) queue: VecDeque<Job>,
    pub(crate) router: Router,
    /// Workers being started.
    pub(crate) starting: usize,
    pub(crate) stopping: bool,
    /// Set when the restart budget ran out: (restarts, window).
    pub(crate) crash_loop: Option<(usize, Duration)>,
    pub(crate) command: WorkerCommand,
    pub(crate) generation: u64,
    pub(crate) next_worker: u64,
    /// Unplanned exits and failed starts, for the restart budget.
    pub(crate) crashes: VecDeque<Instant>,
    /// Workers that died and have not been replaced yet: the next starts that bring the pool
    /// back to `min` are counted as restarts.
    pub(crate) dead_unreplaced: usize,
    /// Connection tasks not yet ended (each owns a worker process until it is reaped).
    pub(crate) conns: usize,
    /// `stop` is past its drain: every worker, also one that becomes ready now, shuts down.
    pub(crate) shutdown_all: bool,
    /// The last function name called: calls to it share one name, so the
    /// connection tasks compare pointers, not strings.
    pub(crate) last_function: Option<Arc<str>>,
}

/// Everything the pool's handles, connection tasks and supervisor share.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) state: Mutex<State>,
    /// The payload encoding of every call (negotiated with the first worker).
    pub(crate) encoding: Encoding,
    pub(crate) next_call: AtomicU64,
    /// Notified when the queue gets room (for callers waiting on a full queue).
    pub(crate) room: Notify,
    /// Callers waiting on `room`.
    pub(crate) room_waiters: AtomicUsize,
    /// Notified when the pool may have settled: no queued call, none in flight.
    pub(crate) settled: Notify,
    /// Wakes the supervisor: a worker exited, calls queue, a worker retires.
    pub(crate) supervisor: Arc<Notify>,
    pub(crate) counters: Counters,
    pub(crate) events: Hub<ProcessEvent>,
    /// The stop grace in force, in nanoseconds (`u64::MAX`: not stopping). It only shrinks: a
    /// later `stop_now` shortens a `stop` under way.
    pub(crate) stop_grace: AtomicU64,
}

/// Why `submit` did not take a call.
pub(crate) enum Rejected {
    /// The queue is full; the call is given back.
    Full(Job),
    Failed(CallError),
}

impl Shared {
    /// A pool with no workers yet, calls encoded with `encoding`.
    pub(crate) fn new(config: Config, encoding: Encoding) -> Self {
        Shared {
            state: Mutex::new(State {
                workers: Vec::new(),
                queue: VecDeque::new(),
                router: Router::new(config.routing),
                starting: 0,
                stopping: false,
                crash_loop: None,
                command: config.command.clone(),
                generation: 1,
                next_worker: 0,
                crashes: VecDeque::new(),
                dead_unreplaced: 0,
                conns: 0,
                shutdown_all: false,
                last_function: None,
            }),
            events: Hub::new(config.event_capacity, ProcessEvent::Lagged),
            config,
            encoding,
            next_call: AtomicU64::new(1),
            room: Notify::new(),
            room_waiters: AtomicUsize::new(0),
            settled: Notify::new(),
            supervisor: Arc::new(Notify::new()),
            counters: Counters::new(),
            stop_grace: AtomicU64::new(u64::MAX),
        }
    }

    /// How long a worker told to shut down may take at each step (to exit after `SHUTDOWN`,
    /// and again after the stop signal): the stop timeout, or a shorter stop grace in force.
    pub(crate) fn shutdown_grace(&self) -> Duration {
        let grace = self.stop_grace.load(Ordering::Acquire);
        self.config.stop_timeout.min(Duration::from_nanos(grace))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Routes `job` to a worker with room, or queues it.
    /// Routed or queued: `Ok`.
    pub(crate) fn submit(&self, mut job: Job) -> Result<(), Rejected> {
        let mut st = self.lock();
        if st.stopping {
            return Err(Rejected::Failed(CallError::Stopped));
        }
        match &st.last_function {
            Some(last) if Arc::ptr_eq(last, &job.function) => {}
            Some(last) if **last == *job.function => job.function = Arc::clone(last),
            _ => st.last_function = Some(Arc::clone(&job.function)),
        }
        let State {
            workers, router, ..
        } = &mut *st;
        if let Some(i) = router.pick(workers.len(), |i| workers[i].can_take(&job)) {
            let recycle_after = self.config.recycle_after_calls;
            let entry = &mut workers[i];
            entry.in_flight += 1;
            entry.sent += 1;
            let retired = recycle_after.is_some_and(|n| entry.sent >= n);
            if retired {
                entry.retiring = Some(RecycleReason::Calls);
            }
            let first = entry.outbox.is_empty();
            let handle = Arc::clone(&entry.handle);
            // A worker that held nothing: its caller writes the call (see `Direct`), once the
            // pool lock is let go — the write is a system call.
            let mut direct = None;
            if first && entry.in_flight == 1 {
                let mut d = handle.direct.lock().unwrap_or_else(PoisonError::into_inner);
                match d.take(job) {
                    Ok(()) => direct = Some(d),
                    Err(back) => entry.outbox.push(back),
                }
            } else {
                entry.outbox.push(job);
            }
            drop(st);
            let wake = match direct {
                Some(mut d) => d.write_now(),
                None => first,
            };
            if wake {
                handle.wake.notify_one();
            }
            if retired {
                self.retired(&handle, RecycleReason::Calls);
            }
            return Ok(());
        }
        // No room: can anybody ever take it?
        if !st.workers.is_empty() && !st.workers.iter().any(|w| w.serves(&job)) {
            let name = job.function.to_string();
            return Err(Rejected::Failed(
                if st
                    .workers
                    .iter()
                    .any(|w| w.handle.functions.contains(&*job.function))
                {
                    CallError::NoFdPassing(name)
                } else {
                    CallError::UnknownFunction(name)
                },
            ));
        }
        if st.workers.is_empty() && st.starting == 0 {
            if let Some((restarts, window)) = st.crash_loop {
                return Err(Rejected::Failed(CallError::CrashLoop { restarts, window }));
            }
        }
        if st.queue.len() >= self.config.queue_capacity {
            // Calls whose callers are gone do not count against the capacity.
            st.queue.retain(|j| !j.abandoned());
            if st.queue.len() >= self.config.queue_capacity {
                return Err(Rejected::Full(job));
            }
        }
        st.queue.push_back(job);
        let may_grow = st.workers.len() + st.starting < self.config.max_workers;
        drop(st);
        if may_grow {
            self.supervisor.notify_one();
        }
        Ok(())
    }

    /// Tells a retiring worker's connection task and the supervisor (which
    /// starts a replacement first if the pool would drop below `min`).
    pub(crate) fn retired(&self, handle: &WorkerHandle, reason: RecycleReason) {
        self.events.send(ProcessEvent::Recycled {
            worker: handle.id,
            pid: handle.pid,
            reason,
        });
        handle.wake.notify_one();
        self.supervisor.notify_one();
    }

    /// Retires worker `id` for `reason` (no new calls; a replacement starts
    /// if the pool drops below `min`).
    pub(crate) fn retire(&self, id: u64, reason: RecycleReason) {
        let handle = {
            let mut st = self.lock();
            let Some(entry) = st.workers.iter_mut().find(|w| w.handle.id == id) else {
                return;
            };
            if entry.retiring.is_some() {
                return;
            }
            entry.retiring = Some(reason);
            Arc::clone(&entry.handle)
        };
        self.retired(&handle, reason);
    }

    /// Call `id` was given up by its caller (timeout, token, dropped future): asks every
    /// worker holding calls to cancel it (only the one holding it acts: `CANCEL`, then a kill
    /// if no answer comes within the cancel grace).
    pub(crate) fn cancel(&self, id: u64) {
        // A call still queued or in an outbox needs nothing: its caller dropped the receiver,
        // so it is skipped when reached and does not count against a full queue.
        let mut st = self.lock();
        let mut wake = Vec::new();
        for w in &mut st.workers {
            if w.in_flight > 0 {
                w.cancels.push(id);
                wake.push(Arc::clone(&w.handle));
            }
        }
        drop(st);
        for h in wake {
            h.wake.notify_one();
        }
    }
}

/// What a connection task takes from the pool in one exchange.
#[derive(Default)]
pub(crate) struct Exchange {
    pub(crate) calls: Vec<Job>,
    pub(crate) cancels: Vec<u64>,
    /// The worker must finish and exit: it retired and holds nothing, or the
    /// pool stops.
    pub(crate) shutdown: bool,
}

impl Shared {
    /// A connection task's turn: `answered` calls of worker `id` ended; take
    /// its outbox and cancels, pull queued calls while it has room.
    /// `pull: false` takes nothing from the queue (the connection is ending).
    pub(crate) fn exchange(&self, id: u64, answered: usize, out: &mut Exchange, pull: bool) {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(entry) = st.workers.iter_mut().find(|w| w.handle.id == id) else {
            out.shutdown = true;
            return;
        };
        entry.in_flight -= answered.min(entry.in_flight);
        for job in entry.outbox.drain(..) {
            if job.abandoned() {
                entry.in_flight -= 1;
            } else {
                out.calls.push(job);
            }
        }
        out.cancels.append(&mut entry.cancels);
        let mut pulled = false;
        let mut retired = None;
        let mut known: Option<Arc<str>> = None;
        // A worker told to shut down takes no new call (no `CALL` after `SHUTDOWN`).
        let pull = pull && !entry.handle.shutdown.load(Ordering::Acquire);
        while pull && entry.retiring.is_none() && entry.in_flight < entry.limit {
            // The first queued call this worker serves (calls for functions it
            // lacks are left to the others), looking a bounded way ahead.
            // Consecutive calls mostly name one function: compare the name
            // with the last one served instead of hashing it again.
            let Some(pos) = st.queue.iter().take(64).position(|j| {
                if known
                    .as_ref()
                    .is_some_and(|k| Arc::ptr_eq(k, &j.function) || **k == *j.function)
                {
                    return j.fds.is_empty() || entry.handle.fds;
                }
                let ok = entry.serves(j);
                if ok {
                    known = Some(Arc::clone(&j.function));
                }
                ok
            }) else {
                break;
            };
            let Some(job) = st.queue.remove(pos) else {
                break;
            };
            pulled = true;
            if job.abandoned() {
                continue;
            }
            entry.in_flight += 1;
            entry.sent += 1;
            if self
                .config
                .recycle_after_calls
                .is_some_and(|n| entry.sent >= n)
            {
                entry.retiring = Some(RecycleReason::Calls);
                retired = Some(Arc::clone(&entry.handle));
            }
            out.calls.push(job);
        }
        // A worker going idle may be reaped later: the supervisor must know
        // when its idle timeout starts (only matters above `min`).
        let went_idle = entry.in_flight == 0 && (answered > 0 || pulled);
        if entry.in_flight == 0 {
            entry.idle_since = Instant::now();
        }
        // Stopping: the worker finishes what it holds, then exits (protocol
        // 3.8). Retiring: it exits once it holds nothing.
        if entry.handle.shutdown.load(Ordering::Acquire)
            || (entry.retiring.is_some() && entry.in_flight == 0)
        {
            out.shutdown = true;
        }
        let settled = st.queue.is_empty() && st.workers.iter().all(|w| w.in_flight == 0);
        let may_reap = went_idle && st.workers.len() > self.config.min_workers;
        let room = pulled && self.room_waiters.load(Ordering::Acquire) > 0;
        if let Some(h) = retired {
            self.retired(&h, RecycleReason::Calls);
        }
        if room {
            self.room.notify_waiters();
        }
        if settled {
            self.settled.notify_waiters();
        }
        if may_reap {
            self.supervisor.notify_one();
        }
    }

    /// Worker `id`'s connection ended: it leaves the list; calls it never
    /// wrote, and those in `retry` (held, allowed another attempt), go back
    /// to the front of the queue. A `crashed` worker counts against the
    /// restart budget. Returns the entry if it was there.
    pub(crate) fn remove(&self, id: u64, retry: Vec<Job>, crashed: bool) -> Option<Entry> {
        let mut st = self.lock();
        if crashed {
            self.counters.crashed.fetch_add(1, Ordering::Relaxed);
        }
        if crashed && !st.stopping {
            st.crashes.push_back(Instant::now());
            st.dead_unreplaced += 1;
        }
        let pos = st.workers.iter().position(|w| w.handle.id == id);
        let mut entry = pos.map(|p| st.workers.remove(p));
        let mut back: Vec<Job> = retry;
        if let Some(e) = entry.as_mut() {
            back.append(&mut e.outbox);
        }
        for job in back.into_iter().rev() {
            if !job.abandoned() {
                st.queue.push_front(job);
            }
        }
        // Live workers with room pull the re-routed calls.
        let wake: Vec<_> = st
            .workers
            .iter()
            .filter(|w| w.retiring.is_none() && w.in_flight < w.limit)
            .map(|w| Arc::clone(&w.handle))
            .collect();
        drop(st);
        for h in wake {
            h.wake.notify_one();
        }
        // Waiters for "settled" also wait for workers to be gone.
        self.settled.notify_waiters();
        self.supervisor.notify_one();
        entry
    }

    /// A connection task ended: its worker is reaped and its calls settled.
    pub(crate) fn conn_ended(&self, handle: &WorkerHandle) {
        handle.finished.store(true, Ordering::Release);
        self.lock().conns -= 1;
        self.settled.notify_waiters();
    }

    /// Fails every queued call with `error` (no worker can ever take them).
    pub(crate) fn fail_queue(&self, error: impl Fn() -> CallError) {
        let jobs: Vec<Job> = self.lock().queue.drain(..).collect();
        for job in jobs {
            let _ = job.reply.send(Reply::Refused(error()));
        }
        self.settled.notify_waiters();
        self.room.notify_waiters();
    }
}

impl Drop for Shared {
    /// The last pool handle is gone: every worker finishes and exits.
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        for w in &st.workers {
            w.handle.shutdown.store(true, Ordering::Release);
            w.handle.wake.notify_one();
        }
        self.supervisor.notify_one();
    }
}

#[cfg(test)]
mod tests {
    //! Calls in a worker's outbox (routed, not yet written): a state its connection task
    //! leaves within one turn, so no test with a real process can hold a call there. Each
    //! ending, on a pool state with a stand-in worker.

    use super::*;
    use crate::process::builder::ProcessPoolBuilder;

    fn shared() -> Shared {
        let config = ProcessPoolBuilder::new(WorkerCommand::new("unused")).into_config();
        Shared::new(config, Encoding::Json)
    }

    /// A stand-in worker serving `echo`, with room for `limit` calls.
    fn add_worker(pool: &Shared, limit: usize) -> u64 {
        let mut st = pool.lock();
        st.next_worker += 1;
        let id = st.next_worker;
        st.workers.push(Entry {
            handle: Arc::new(WorkerHandle::stand_in(id)),
            in_flight: 0,
            limit,
            sent: 0,
            retiring: None,
            idle_since: Instant::now(),
            retire_at: None,
            generation: 1,
            outbox: Vec::new(),
            cancels: Vec::new(),
        });
        id
    }

    /// Submits a call to `echo`; its answer's receiver.
    fn submit(pool: &Shared) -> (u64, oneshot::Receiver<Reply>) {
        let (reply, answer) = oneshot::channel();
        let id = pool.next_call.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            id,
            function: Arc::from("echo"),
            payload: Payload::copy_from(b"1"),
            many: false,
            retries_left: 0,
            fds: Vec::new(),
            started: Instant::now(),
            reply,
        };
        assert!(pool.submit(job).is_ok());
        (id, answer)
    }

    fn in_flight(pool: &Shared, worker: u64) -> usize {
        let st = pool.lock();
        st.workers
            .iter()
            .find(|w| w.handle.id == worker)
            .map_or(0, |w| w.in_flight)
    }

    fn queued(pool: &Shared) -> Vec<u64> {
        pool.lock().queue.iter().map(|j| j.id).collect()
    }

    /// Drop, token, timeout: the caller gave the call up (its receiver is gone) while the call
    /// sat in the outbox. It is never written, and its slot is free at once.
    #[tokio::test]
    async fn an_outbox_call_given_up_is_never_written_and_frees_its_slot() {
        let pool = shared();
        let w = add_worker(&pool, 1);
        let (_, answer) = submit(&pool);
        assert_eq!(in_flight(&pool, w), 1);
        drop(answer);
        let mut out = Exchange::default();
        pool.exchange(w, 0, &mut out, true);
        assert!(out.calls.is_empty(), "the given-up call was handed out");
        assert_eq!(in_flight(&pool, w), 0);
    }

    /// Worker death: calls in its outbox were never written, so they go back to the front of
    /// the queue, in order, before the calls that were waiting there; none is answered.
    #[tokio::test]
    async fn outbox_calls_of_a_worker_that_died_go_back_to_the_front_of_the_queue() {
        let pool = shared();
        let w = add_worker(&pool, 2);
        let (a, mut answer_a) = submit(&pool);
        let (b, mut answer_b) = submit(&pool);
        let (c, _answer_c) = submit(&pool); // no room: queued
        assert_eq!(queued(&pool), [c]);
        let entry = pool.remove(w, Vec::new(), true).expect("it was there");
        assert!(entry.outbox.is_empty(), "the outbox was taken");
        assert_eq!(queued(&pool), [a, b, c]);
        // Not answered (nothing in the channel), and not dropped unanswered either.
        assert!(matches!(answer_a.try_recv(), Ok(None)) && matches!(answer_b.try_recv(), Ok(None)));
        assert_eq!(pool.counters.crashed.load(Ordering::Relaxed), 1);
        assert_eq!(pool.lock().dead_unreplaced, 1);
    }

    /// Stop (and stop_now, the same with no grace): a worker told to shut down is handed the
    /// calls already routed to it (written before `SHUTDOWN`), and no queued call after them.
    #[tokio::test]
    async fn a_worker_told_to_shut_down_gets_its_outbox_then_shutdown_and_no_queued_call() {
        let pool = shared();
        let w = add_worker(&pool, 1);
        let (a, _answer_a) = submit(&pool);
        let (b, _answer_b) = submit(&pool); // queued
        let handle = Arc::clone(&pool.lock().workers[0].handle);
        handle.shutdown.store(true, Ordering::Release);
        let mut out = Exchange::default();
        pool.exchange(w, 0, &mut out, true);
        assert_eq!(out.calls.iter().map(|j| j.id).collect::<Vec<_>>(), [a]);
        assert!(out.shutdown);
        // Its call answered: the slot is free, but the queued call stays for `stop` to fail.
        let mut out = Exchange::default();
        pool.exchange(w, 1, &mut out, true);
        assert!(out.calls.is_empty());
        assert_eq!(queued(&pool), [b]);
    }

    /// A cancel goes to the workers holding calls only (the one holding the call acts on it).
    #[tokio::test]
    async fn a_cancel_goes_to_the_workers_holding_calls() {
        let pool = shared();
        let busy = add_worker(&pool, 1);
        let idle = add_worker(&pool, 1);
        let (a, _answer) = submit(&pool);
        pool.cancel(a);
        let st = pool.lock();
        let cancels = |id: u64| {
            st.workers
                .iter()
                .find(|w| w.handle.id == id)
                .unwrap()
                .cancels
                .clone()
        };
        assert_eq!(cancels(busy), [a]);
        assert!(cancels(idle).is_empty());
    }
}
