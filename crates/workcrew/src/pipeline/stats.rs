//! Per-stage statistics: shared counters, the per-worker batching of them, and
//! the snapshot types.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// A snapshot of one stage, from [`PipelineStream::stats`](super::PipelineStream::stats).
///
/// Workers publish their counts in batches (at least every 64 items and
/// whenever they wait for input), so a snapshot taken mid-run may lag by a few
/// items; once a stage has finished its counts are exact.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StageStats {
    /// The stage's name.
    pub name: String,
    /// Its worker count.
    pub concurrency: usize,
    /// The capacity of its output channel (0 = rendezvous).
    pub buffer: usize,
    /// Items its workers took from the input channel.
    pub items_in: u64,
    /// Items it passed on (results, and failures in continue mode).
    pub items_out: u64,
    /// Items on which it returned an error or panicked.
    pub failed: u64,
    /// Time its workers spent on items: every interval between taking an item
    /// and next waiting for input, summed over workers (so up to `concurrency`
    /// times the wall time). Waiting for room downstream counts as busy.
    pub busy: Duration,
    /// Items waiting in its input channel now.
    pub queue_depth: usize,
    /// Workers still running.
    pub workers: usize,
}

/// A snapshot of a whole run, from [`PipelineStream::stats`](super::PipelineStream::stats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PipelineStats {
    /// Items the source produced.
    pub produced: u64,
    /// Items (and in continue mode, failures) the caller received.
    pub delivered: u64,
    /// Items held by the reordering buffer of an [`ordered`](super::Pipeline::ordered) run.
    pub reorder_buffered: usize,
    /// One entry per stage, in pipeline order.
    pub stages: Vec<StageStats>,
}

/// Something whose queue length can be read (a stage's input channel).
pub(crate) trait QueueDepth: Send + Sync {
    fn depth(&self) -> usize;
}

impl<T: Send> QueueDepth for super::channel::Channel<T> {
    fn depth(&self) -> usize {
        self.len()
    }
}

/// The shared counters of one stage.
pub(crate) struct StageShared {
    pub(crate) name: Arc<str>,
    pub(crate) concurrency: usize,
    pub(crate) buffer: usize,
    pub(crate) items_in: AtomicU64,
    pub(crate) items_out: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) busy_ns: AtomicU64,
    pub(crate) workers: AtomicUsize,
    pub(crate) input: Arc<dyn QueueDepth>,
}

impl StageShared {
    pub(crate) fn new(
        name: Arc<str>,
        concurrency: usize,
        buffer: usize,
        input: Arc<dyn QueueDepth>,
    ) -> Self {
        StageShared {
            name,
            concurrency,
            buffer,
            items_in: AtomicU64::new(0),
            items_out: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            workers: AtomicUsize::new(0),
            input,
        }
    }

    pub(crate) fn snapshot(&self) -> StageStats {
        StageStats {
            name: self.name.to_string(),
            concurrency: self.concurrency,
            buffer: self.buffer,
            items_in: self.items_in.load(Ordering::Relaxed),
            items_out: self.items_out.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            busy: Duration::from_nanos(self.busy_ns.load(Ordering::Relaxed)),
            queue_depth: self.input.depth(),
            workers: self.workers.load(Ordering::Relaxed),
        }
    }
}

/// One worker's counts, published to [`StageShared`] in batches so that the
/// hot path touches no shared cache line and reads the clock only when the
/// worker goes idle or wakes.
pub(crate) struct LocalStats<'a> {
    shared: &'a StageShared,
    items_in: u64,
    items_out: u64,
    failed: u64,
    busy_since: Option<Instant>,
    busy: Duration,
}

impl<'a> LocalStats<'a> {
    /// Publish at least this often.
    const BATCH: u64 = 64;

    pub(crate) fn new(shared: &'a StageShared) -> Self {
        LocalStats {
            shared,
            items_in: 0,
            items_out: 0,
            failed: 0,
            busy_since: None,
            busy: Duration::ZERO,
        }
    }

    pub(crate) fn took(&mut self) {
        if self.busy_since.is_none() {
            self.busy_since = Some(Instant::now());
        }
        self.items_in += 1;
    }

    pub(crate) fn passed(&mut self) {
        self.items_out += 1;
        if self.items_out >= Self::BATCH {
            self.flush();
        }
    }

    pub(crate) fn failed(&mut self) {
        self.failed += 1;
    }

    /// The worker is about to wait for input: close the busy interval, publish.
    pub(crate) fn idle(&mut self) {
        if let Some(since) = self.busy_since.take() {
            self.busy += since.elapsed();
        }
        self.flush();
    }

    pub(crate) fn flush(&mut self) {
        let s = self.shared;
        if self.items_in > 0 {
            s.items_in.fetch_add(self.items_in, Ordering::Relaxed);
        }
        if self.items_out > 0 {
            s.items_out.fetch_add(self.items_out, Ordering::Relaxed);
        }
        if self.failed > 0 {
            s.failed.fetch_add(self.failed, Ordering::Relaxed);
        }
        if !self.busy.is_zero() {
            let ns = u64::try_from(self.busy.as_nanos()).unwrap_or(u64::MAX);
            s.busy_ns.fetch_add(ns, Ordering::Relaxed);
        }
        self.items_in = 0;
        self.items_out = 0;
        self.failed = 0;
        self.busy = Duration::ZERO;
    }
}

impl Drop for LocalStats<'_> {
    fn drop(&mut self) {
        // Also on abort: the counts of a cancelled worker are not lost.
        self.idle();
    }
}
