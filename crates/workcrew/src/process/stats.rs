//! The process pool's statistics snapshot.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// Calls waiting for a worker with a free slot.
    pub queued: usize,
    /// Calls that returned a value.
    pub completed: u64,
    /// Calls that ended in any error (including timeouts and lost workers).
    pub failed: u64,
    /// Calls whose worker died while holding them.
    pub lost: u64,
    /// Calls that timed out.
    pub timed_out: u64,
    /// Workers started to replace dead ones.
    pub restarts: u64,
    /// Time from `call` to its answer, for answered calls.
    pub latency: Percentiles,
}

/// The counters behind [`ProcessPoolStats`].
pub(crate) struct Counters {
    pub(crate) queued: AtomicUsize,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) restarts: AtomicU64,
    pub(crate) latency: Mutex<Latency>,
}

impl Counters {
    pub(crate) fn new() -> Self {
        Counters {
            queued: AtomicUsize::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            latency: Mutex::new(Latency::new()),
        }
    }

    pub(crate) fn record<T>(&self, result: &Result<T, super::CallError>, took: Duration) {
        match result {
            Ok(_) => {
                self.completed.fetch_add(1, Ordering::Relaxed);
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
        self.latency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .record(took);
    }

    pub(crate) fn snapshot(&self, workers: usize, busy: usize) -> ProcessPoolStats {
        ProcessPoolStats {
            workers,
            busy,
            queued: self.queued.load(Ordering::Relaxed),
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
