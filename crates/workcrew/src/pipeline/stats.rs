//! Per-stage statistics: the live per-worker counters and the snapshot types.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// A snapshot of one stage, from [`PipelineStream::stats`](super::PipelineStream::stats).
///
/// Live: each worker publishes its counts as they change (an item counts as
/// in when the stage's function is called for it, and as out when its result
/// is done), and busy time includes the interval in progress, so a snapshot
/// taken while a worker is 10 s into one item shows that item in and 10 s
/// busy. The lag is bounded by the time one atomic store takes to become
/// visible to the reading thread (no batching); counts of different workers
/// are read one after the other, not at one instant.
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
    /// times the wall time), including the intervals still open. Waiting for
    /// room downstream counts as busy.
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

/// One worker's live counts, on a cache line of its own: only that worker
/// writes them (an uncontended store per item, no read-modify-write on a
/// line another worker writes), and a snapshot reads them all.
#[repr(align(128))]
#[derive(Default)]
struct Slot {
    items_in: AtomicU64,
    items_out: AtomicU64,
    failed: AtomicU64,
    /// Busy time: closed intervals, and the one in progress. Locked only when
    /// the worker starts or ends a busy interval, and by a snapshot.
    busy: Mutex<Busy>,
}

#[derive(Default)]
struct Busy {
    total: Duration,
    since: Option<Instant>,
}

impl Busy {
    fn now(&self) -> Duration {
        self.total + self.since.map_or(Duration::ZERO, |since| since.elapsed())
    }
}

/// Adds 1 to a counter that only the calling worker writes.
#[inline]
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// The shared counters of one stage.
pub(crate) struct StageShared {
    pub(crate) name: Arc<str>,
    pub(crate) concurrency: usize,
    pub(crate) buffer: usize,
    /// One per worker.
    slots: Box<[Slot]>,
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
            slots: (0..concurrency).map(|_| Slot::default()).collect(),
            workers: AtomicUsize::new(0),
            input,
        }
    }

    pub(crate) fn snapshot(&self) -> StageStats {
        let sum = |f: fn(&Slot) -> &AtomicU64| -> u64 {
            self.slots
                .iter()
                .map(|s| f(s).load(Ordering::Relaxed))
                .sum()
        };
        StageStats {
            name: self.name.to_string(),
            concurrency: self.concurrency,
            buffer: self.buffer,
            items_in: sum(|s| &s.items_in),
            items_out: sum(|s| &s.items_out),
            failed: sum(|s| &s.failed),
            busy: self.slots.iter().map(|s| lock(&s.busy).now()).sum(),
            queue_depth: self.input.depth(),
            workers: self.workers.load(Ordering::Relaxed),
        }
    }

    /// The counts of worker `index` (0-based, below `concurrency`).
    pub(crate) fn worker(&self, index: usize) -> WorkerStats<'_> {
        WorkerStats {
            slot: &self.slots[index],
            busy: false,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No user code runs under this lock, so a poisoned one is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One worker's handle on its [`Slot`]: counts are published as they happen,
/// and the clock is read only when the worker starts or ends a busy interval.
pub(crate) struct WorkerStats<'a> {
    slot: &'a Slot,
    /// A busy interval is open.
    busy: bool,
}

impl WorkerStats<'_> {
    /// The stage's function is about to be called for an item (or, in
    /// continue mode, a failure passes through).
    #[inline]
    pub(crate) fn took(&mut self) {
        if !self.busy {
            self.start_busy();
        }
        bump(&self.slot.items_in);
    }

    #[cold]
    fn start_busy(&mut self) {
        self.busy = true;
        lock(&self.slot.busy).since = Some(Instant::now());
    }

    #[inline]
    pub(crate) fn passed(&mut self) {
        bump(&self.slot.items_out);
    }

    #[inline]
    pub(crate) fn failed(&mut self) {
        bump(&self.slot.failed);
    }

    /// The worker is about to wait for input: closes the busy interval.
    pub(crate) fn idle(&mut self) {
        if self.busy {
            self.busy = false;
            let mut busy = lock(&self.slot.busy);
            if let Some(since) = busy.since.take() {
                busy.total += since.elapsed();
            }
        }
    }
}

impl Drop for WorkerStats<'_> {
    fn drop(&mut self) {
        // Also on abort: a cancelled worker's busy interval is closed.
        self.idle();
    }
}
