//! The process pool's statistics snapshot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::task::{Latency, Percentiles};

/// A snapshot from [`ProcessPool::stats`](super::ProcessPool::stats).
///
/// Counts are cumulative since the pool started.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ProcessPoolStats {
    /// Live worker processes.
    pub workers: usize,
    /// Workers holding at least one call.
    pub busy: usize,
    /// Calls routed to a worker and not answered yet.
    pub in_flight: usize,
    /// Calls waiting for a worker with a free slot.
    pub queued: usize,
    /// Calls that returned a value.
    pub completed: u64,
    /// Calls that ended in an error: their own, a timeout, a lost worker, ... (not cancelled
    /// ones).
    pub failed: u64,
    /// Calls given up by their caller: cancelled by their token (also before they were sent),
    /// or their future dropped before the answer.
    pub cancelled: u64,
    /// Calls whose worker ended while holding them.
    pub lost: u64,
    /// Calls that timed out.
    pub timed_out: u64,
    /// Workers that ended without the pool asking, or that the pool killed for misbehaving
    /// (counted before the calls they held settle).
    pub crashed: u64,
    /// Workers started to replace one that ended unexpectedly (see `crashed`).
    pub restarts: u64,
    /// Workers started because calls waited for room (growth towards `max`).
    pub growth_starts: u64,
    /// Workers started to replace retired ones (recycled by calls, memory, age or an ignored
    /// cancel) and by [`recycle`](super::ProcessPool::recycle) / [`reload`](super::ProcessPool::reload).
    pub recycle_starts: u64,
    /// Calls sent again because their worker died (opt-in retries).
    pub retried: u64,
    /// Workers being started.
    pub starting: usize,
    /// Time from `call` to its answer, for calls a worker answered.
    pub latency: Percentiles,
}

/// What the pool state says at the moment of a snapshot.
pub(crate) struct Live {
    pub(crate) workers: usize,
    pub(crate) busy: usize,
    pub(crate) in_flight: usize,
    pub(crate) queued: usize,
    pub(crate) starting: usize,
}

/// The counters behind [`ProcessPoolStats`].
pub(crate) struct Counters {
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) crashed: AtomicU64,
    pub(crate) restarts: AtomicU64,
    pub(crate) growth_starts: AtomicU64,
    pub(crate) recycle_starts: AtomicU64,
    pub(crate) retried: AtomicU64,
    /// Starts since the supervisor last looked (they drive its backoff).
    pub(crate) spawn_failures: AtomicU64,
    pub(crate) spawn_successes: AtomicU64,
    pub(crate) latency: Mutex<Latency>,
}

impl Counters {
    pub(crate) fn new() -> Self {
        Counters {
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            crashed: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            growth_starts: AtomicU64::new(0),
            recycle_starts: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            spawn_failures: AtomicU64::new(0),
            spawn_successes: AtomicU64::new(0),
            latency: Mutex::new(Latency::new()),
        }
    }

    /// Counts a call's outcome (its latency is recorded by its connection).
    pub(crate) fn record<T>(&self, result: &Result<T, super::CallError>) {
        match result {
            Ok(_) => {
                self.completed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.is_cancelled() => {
                self.cancelled.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if e.is_worker_lost() {
                    self.lost.fetch_add(1, Ordering::Relaxed);
                }
                if e.is_timeout() {
                    self.timed_out.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Records call latencies, a batch under one lock.
    pub(crate) fn record_latencies(&self, samples: impl Iterator<Item = Duration>) {
        let mut latency = self
            .latency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for d in samples {
            latency.record(d);
        }
    }

    /// A dropped call future gave up its call.
    pub(crate) fn dropped(&self) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, live: Live) -> ProcessPoolStats {
        let Live {
            workers,
            busy,
            in_flight,
            queued,
            starting,
        } = live;
        ProcessPoolStats {
            workers,
            busy,
            in_flight,
            queued,
            starting,
            cancelled: self.cancelled.load(Ordering::Relaxed),
            crashed: self.crashed.load(Ordering::Relaxed),
            growth_starts: self.growth_starts.load(Ordering::Relaxed),
            recycle_starts: self.recycle_starts.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            latency: self
                .latency
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .percentiles(),
        }
    }
}
