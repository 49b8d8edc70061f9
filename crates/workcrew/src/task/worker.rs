//! A worker: a long-lived tokio task that runs queued jobs one at a time.
//!
//! # Implementation notes
//!
//! Reusing workers is what makes the pool cheaper than a task per job: a job
//! costs one queue push and one pop under the pool lock, and the worker
//! records the end of one job and takes the next under the *same* lock
//! acquisition. Jobs run inline in the worker's own `poll`, so their wake-ups
//! wake the worker directly. Latencies go to the worker's own histograms,
//! outside the pool lock and in batches (see `SampleBuffer`). A worker that always finds work yields its thread
//! every [`YIELD_EVERY`] so it never starves the thread's other tasks.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::abort::SlotAbort;
use super::core::{Effects, Finished, NewWorker, Next};
use super::events::PoolEvent;
use super::job::{poll_on_worker, BoxJob};
use super::shared::Shared;
use super::stats::SampleBuffer;

/// A worker that always finds work yields its thread this often, so other
/// tasks on the thread are not starved. Time-based rather than tokio's per-poll
/// budget (`consume_budget`), whose forced yields cost a thread wake-up every
/// 128 tasks: 25% of the cost of a no-op task.
const YIELD_EVERY: Duration = Duration::from_micros(500);

/// Looks at an empty queue before parking. A producer pushing in a loop adds
/// a task every few hundred nanoseconds; a worker that parks at once is woken
/// for nearly every task, which measured 2-3x slower than spinning briefly.
const MAX_SPINS: u32 = 3;

pub(crate) async fn run(shared: Arc<Shared>, me: NewWorker) {
    let NewWorker {
        slot,
        notify,
        abort,
        latencies,
    } = me;
    // When this worker last gave its thread to other tasks.
    let mut last_yield = Instant::now();
    let mut guard = LostGuard {
        shared: &shared,
        slot,
        armed: true,
    };
    let mut finished: Option<Finished> = None;
    let mut samples = SampleBuffer::default();
    // Consecutive looks that found nothing (see `Next::Spin`).
    let mut spins = 0;
    loop {
        let now = Instant::now();
        let (next, fx, event) = {
            let mut st = shared.lock();
            let mut fx = Effects::default();
            let mut event = None;
            if let Some(f) = finished.take() {
                let started = st.core.started_at(slot).unwrap_or(now);
                let run_time = now.saturating_duration_since(started);
                samples.run(run_time);
                if shared.events.active() {
                    event = Some(PoolEvent::TaskFinished {
                        id: f.id,
                        outcome: f.kind,
                        run_time,
                    });
                }
                fx = st.core.finish(slot, f, now);
                if fx.became_idle {
                    // Before any drainer can wake: stats after drain are complete.
                    samples.publish(&latencies);
                }
            }
            let next = st.core.next_for_worker(slot, now, spins < MAX_SPINS);
            if let Next::Run(job) = &next {
                let ns = shared.nanos_since_epoch(now);
                samples.wait(Duration::from_nanos(
                    ns.saturating_sub(job.header().enqueued_ns),
                ));
            }
            (next, fx, event)
        };
        spins = if matches!(next, Next::Spin) {
            spins + 1
        } else {
            0
        };
        if samples.is_full() || !matches!(next, Next::Run(_) | Next::Spin) {
            samples.publish(&latencies);
        }
        if let Some(event) = event {
            shared.events.send(event);
        }
        shared.apply(fx);
        match next {
            Next::Run(job) => {
                if shared.events.active() {
                    let h = job.header();
                    shared.events.send(PoolEvent::TaskStarted {
                        id: h.id,
                        name: h.name().map(|n| n.to_string()),
                    });
                }
                if now.saturating_duration_since(last_yield) >= YIELD_EVERY {
                    samples.publish(&latencies);
                    tokio::task::yield_now().await;
                    last_yield = Instant::now();
                }
                finished = Some(run_job(job, &abort).await);
            }
            Next::Spin => tokio::task::yield_now().await,
            Next::Park => notify.notified().await,
            Next::WaitUntil(at) => {
                // Woken early by pause/close/limit changes too; either way,
                // look again.
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = notify.notified() => {}
                }
            }
            Next::Exit => {
                guard.armed = false;
                return;
            }
        }
    }
}

/// Runs one job to its end. The job (and so the user's future) is dropped here,
/// outside the pool lock.
async fn run_job(mut job: BoxJob, abort: &SlotAbort) -> Finished {
    std::future::poll_fn(|cx| poll_on_worker(job.as_mut(), abort, cx)).await
}

/// Accounts for a worker whose task is dropped mid-loop (its runtime shut down).
struct LostGuard<'a> {
    shared: &'a Arc<Shared>,
    slot: usize,
    armed: bool,
}

impl Drop for LostGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let fx = self
                .shared
                .lock()
                .core
                .worker_lost(self.slot, Instant::now());
            // Only the cheap parts: no workers are started from here.
            debug_assert!(fx.new_workers.is_empty());
            self.shared.apply(fx);
        }
    }
}
