//! The statistics snapshot and the latency histograms behind it.

use std::time::Duration;

use crate::common::{Latency, Percentiles};

/// A snapshot of the pool, from [`TaskPool::stats`](super::TaskPool::stats).
///
/// Counts are cumulative since the pool was built.
#[derive(Clone, Debug, Default)]
pub struct PoolStats {
    /// Tasks accepted and waiting to start.
    pub queued: usize,
    /// Tasks running now.
    pub running: usize,
    /// Worker tasks alive (at most `max_concurrency`; started on demand).
    pub workers: usize,
    /// The concurrency limit now in force.
    pub max_concurrency: usize,
    /// Whether the pool is paused.
    pub paused: bool,
    /// Whether the pool is closed to new work.
    pub closed: bool,
    /// Tasks that finished successfully.
    pub completed: u64,
    /// Tasks that returned their own error.
    pub failed: u64,
    /// Tasks that panicked.
    pub panicked: u64,
    /// Tasks that were cancelled.
    pub cancelled: u64,
    /// Tasks stopped by their timeout.
    pub timed_out: u64,
    /// Retry attempts made (not counting first attempts).
    pub retried: u64,
    /// Time from acceptance to start.
    pub wait_time: Percentiles,
    /// Time from start to end, for tasks that started.
    pub run_time: Percentiles,
}

/// One worker's wait- and run-time histograms. Each worker records into its
/// own, outside the pool lock; [`PoolStats`] merges them.
pub(crate) struct Latencies {
    pub(crate) wait: Latency,
    pub(crate) run: Latency,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            wait: Latency::new(),
            run: Latency::new(),
        }
    }
}

/// Latency samples a worker has not yet published to its [`Latencies`].
///
/// Publishing takes the slot's mutex; doing it for every task cost more than
/// the recording itself. Workers publish every [`SampleBuffer::BATCH`] tasks,
/// before they park or wait, when they yield their thread, and — under the
/// pool lock — when the pool goes idle, so a `stats()` after `drain()` sees
/// every task.
#[derive(Default)]
pub(crate) struct SampleBuffer {
    wait: Vec<u64>,
    run: Vec<u64>,
}

impl SampleBuffer {
    pub(crate) const BATCH: usize = 128;

    fn nanos(d: Duration) -> u64 {
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
    }

    pub(crate) fn wait(&mut self, d: Duration) {
        self.wait.push(Self::nanos(d));
    }

    pub(crate) fn run(&mut self, d: Duration) {
        self.run.push(Self::nanos(d));
    }

    pub(crate) fn is_full(&self) -> bool {
        self.wait.len() >= Self::BATCH || self.run.len() >= Self::BATCH
    }

    pub(crate) fn publish(&mut self, into: &std::sync::Mutex<Latencies>) {
        if self.wait.is_empty() && self.run.is_empty() {
            return;
        }
        let mut l = into
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for ns in self.wait.drain(..) {
            l.wait.record(Duration::from_nanos(ns));
        }
        for ns in self.run.drain(..) {
            l.run.record(Duration::from_nanos(ns));
        }
    }
}
