//! The statistics snapshot and the latency histograms behind it.

use std::time::Duration;

use hdrhistogram::Histogram;

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

/// Latency percentiles (1% precision).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Percentiles {
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest value seen.
    pub max: Duration,
    /// Number of values recorded.
    pub count: u64,
}

/// One latency histogram in nanoseconds, saturating at one day.
pub(crate) struct Latency(Histogram<u64>);

impl Latency {
    const MAX_NS: u64 = 86_400 * 1_000_000_000;

    pub(crate) fn new() -> Self {
        // Two significant figures: 1% precision in a few kilobytes.
        Latency(Histogram::new_with_bounds(1, Self::MAX_NS, 2).expect("valid histogram bounds"))
    }

    pub(crate) fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.0.saturating_record(ns.min(Self::MAX_NS));
    }

    pub(crate) fn add(&mut self, other: &Latency) {
        // Same bounds and precision on both sides, so this cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub(crate) fn percentiles(&self) -> Percentiles {
        if self.0.is_empty() {
            return Percentiles::default();
        }
        let at = |q| Duration::from_nanos(self.0.value_at_quantile(q));
        Percentiles {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: Duration::from_nanos(self.0.max()),
            count: self.0.len(),
        }
    }
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
