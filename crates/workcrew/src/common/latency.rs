//! Latency histograms and the percentiles read from them.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Latency percentiles (1% precision), as the pools' statistics report them.
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
