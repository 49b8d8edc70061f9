//! The pool's shared state: live workers, the pool queue, and the rules that
//! move calls between them.
//!
//! # Implementation notes
//!
//! One mutex guards [`State`]. Every move of a call happens under it:
//!
//! - **Routing** (`submit`): the router picks a worker with room; its
//!   in-flight count goes up and the call joins that worker's outbox. With
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

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::builder::{Config, WorkerCommand};
use super::error::CallError;
use super::events::{ProcessEvent, RecycleReason};
use super::routing::Router;
use super::stats::Counters;
use crate::common::Hub;
use crate::protocol::{Encoding, ErrorBody};

/// How a call ended, as its caller learns it.
pub(crate) enum Reply {
    Value(bytes::Bytes),
    Error(ErrorBody),
    /// The worker died holding it: its pid and exit status.
    Lost {
        pid: u32,
        exit: String,
    },
    /// The pool could not run it (no workers left, crash loop, stopped).
    Refused(CallError),
}

/// One call on its way through the pool.
pub(crate) struct Job {
    pub(crate) id: u64,
    pub(crate) function: Arc<str>,
    pub(crate) payload: bytes::Bytes,
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
        self.reply.is_closed()
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
    pub(crate) task: Mutex<Option<JoinHandle<()>>>,
}

/// FNV-1a for function names: short keys, looked up on every routing, no
/// need for SipHash's flood resistance (the names come from the workers).
#[derive(Default)]
pub(crate) struct NameHasher(u64);

impl Hasher for NameHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
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
    /// Calls to cancel: id, and the grace after which an unanswered one
    /// gets the worker killed.
    pub(crate) cancels: Vec<(u64, Option<Duration>)>,
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
        }
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
            entry.outbox.push(job);
            let handle = Arc::clone(&entry.handle);
            drop(st);
            if first {
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

    /// Asks every worker to cancel call `id` (only the one holding it acts).
    pub(crate) fn cancel(&self, id: u64, kill_after: Option<Duration>) {
        // A call still queued needs nothing: its caller dropped the receiver,
        // so it is skipped when reached and does not count against a full queue.
        let mut st = self.lock();
        let mut wake = Vec::new();
        for w in &mut st.workers {
            if w.in_flight > 0 {
                w.cancels.push((id, kill_after));
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
    pub(crate) cancels: Vec<(u64, Option<Duration>)>,
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
        if crashed && !st.stopping {
            st.crashes.push_back(Instant::now());
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
