//! The inbox: where spawns go without taking the pool lock while the pool is
//! busy.
//!
//! # Implementation notes
//!
//! With one lock for everything, a producer and the workers take it turn
//! about for every task, and the lock's cache line and the queue's bounce
//! between cores: measured, that tripled the cost of a no-op task. So while the
//! pool is *hot* — busy, not paused or closed, every allowed worker started and
//! none parked — a default-priority spawn only locks this inbox and appends.
//! Workers move the whole inbox into the queue's default lane at once (a
//! buffer swap) when that lane runs dry, so producer and workers meet once per
//! batch instead of once per task.
//!
//! A push needs the pool lock only to change the pool's state (go busy, wake or
//! start a worker, refuse when closed); in a hot pool none of that is needed,
//! which is what makes skipping it safe:
//! - `hot` is read by producers under the inbox lock and cleared by the core
//!   under the pool lock *before* the core takes the inbox lock to look inside.
//!   So once the core has cleared it and looked, no producer can add a job it
//!   did not see: a worker about to park, or the pool about to call itself
//!   idle, cannot miss a job.
//! - Set only when nothing but a push into the queue is needed (see
//!   `Core::refresh_hot`).
//! - `core_len` is an upper bound of the queue's length (it only shrinks
//!   between updates), so `jobs + core_len < capacity` keeps the bound.
//!
//! Lock order: pool lock, then inbox lock; producers take only the latter.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

pub(crate) struct Inbox<J> {
    hot: AtomicBool,
    /// `jobs.len()`, for counts read without the inbox lock.
    len: AtomicUsize,
    inner: Mutex<Inner<J>>,
}

pub(crate) struct Inner<J> {
    jobs: VecDeque<J>,
    /// At least the queue's length.
    core_len: usize,
    capacity: usize,
}

/// A producer's claim on one place in a hot inbox.
pub(crate) struct Claim<'a, J> {
    inbox: &'a Inbox<J>,
    inner: MutexGuard<'a, Inner<J>>,
}

impl<J> Claim<'_, J> {
    pub(crate) fn push(mut self, job: J) {
        self.inner.jobs.push_back(job);
        self.inbox
            .len
            .store(self.inner.jobs.len(), Ordering::Release);
    }
}

impl<J> Inbox<J> {
    pub(crate) fn new(capacity: usize) -> Self {
        Inbox {
            hot: AtomicBool::new(false),
            len: AtomicUsize::new(0),
            inner: Mutex::new(Inner {
                jobs: VecDeque::new(),
                core_len: 0,
                capacity,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<J>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for one job, if the pool is hot and the queue has room.
    pub(crate) fn claim(&self) -> Option<Claim<'_, J>> {
        if !self.hot.load(Ordering::Acquire) {
            return None; // cheap early out; the real check is under the lock
        }
        let inner = self.lock();
        let ok =
            self.hot.load(Ordering::Acquire) && inner.jobs.len() + inner.core_len < inner.capacity;
        ok.then_some(Claim { inbox: self, inner })
    }

    /// Jobs in the inbox (may be stale by the pushes in flight).
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    // ---- for the core, under the pool lock ----

    pub(crate) fn is_hot(&self) -> bool {
        self.hot.load(Ordering::Relaxed)
    }

    pub(crate) fn set_hot(&self, hot: bool) {
        self.hot.store(hot, Ordering::Release);
    }

    /// Stops fast pushes, waits out the ones in flight, and moves every job
    /// into `sink`. After this the inbox is empty and stays so until `set_hot`.
    pub(crate) fn cool_and_take(&self, sink: impl FnOnce(&mut VecDeque<J>)) {
        self.set_hot(false);
        self.take(sink);
    }

    /// Moves every job into `sink` (which must leave the deque empty).
    pub(crate) fn take(&self, sink: impl FnOnce(&mut VecDeque<J>)) {
        let mut inner = self.lock();
        if !inner.jobs.is_empty() {
            sink(&mut inner.jobs);
            debug_assert!(inner.jobs.is_empty());
            self.len.store(0, Ordering::Release);
        }
    }

    /// Records the queue's length after it grew; the exact inbox length.
    pub(crate) fn note_core_len(&self, core_len: usize) -> usize {
        let mut inner = self.lock();
        inner.core_len = core_len;
        inner.jobs.len()
    }

    /// Like `take`, also recording the queue's length afterwards.
    pub(crate) fn refill(&self, sink: impl FnOnce(&mut VecDeque<J>) -> usize) {
        let mut inner = self.lock();
        if !inner.jobs.is_empty() {
            let core_len = sink(&mut inner.jobs);
            inner.core_len = core_len;
            self.len.store(0, Ordering::Release);
        }
    }
}
