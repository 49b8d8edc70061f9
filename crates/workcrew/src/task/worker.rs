//! A worker: a long-lived tokio task that runs queued jobs one at a time.
//!
//! # Implementation notes
//!
//! Reusing workers is what makes the pool cheaper than a task per job: a job
//! costs one queue push and one pop under the pool lock, and the worker
//! records the end of one job and takes the next under the *same* lock
//! acquisition. Jobs run inline in the worker's own `poll`, so their wake-ups
//! wake the worker directly. A worker that always finds work yields through
//! tokio's cooperative budget so it never starves its thread.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::abort::SlotAbort;
use super::core::{Effects, Finished, Next};
use super::events::PoolEvent;
use super::job::{poll_on_worker, BoxJob};
use super::shared::Shared;

pub(crate) async fn run(
    shared: Arc<Shared>,
    slot: usize,
    notify: Arc<Notify>,
    abort: Arc<SlotAbort>,
) {
    let mut guard = LostGuard {
        shared: &shared,
        slot,
        armed: true,
    };
    let mut finished: Option<Finished> = None;
    loop {
        let now = Instant::now();
        let (next, fx, event) = {
            let mut st = shared.lock();
            let mut fx = Effects::default();
            let mut event = None;
            if let Some(f) = finished.take() {
                let started = st.core.started_at(slot).unwrap_or(now);
                let run_time = now.saturating_duration_since(started);
                st.run_time.record(run_time);
                if shared.events.active() {
                    event = Some(PoolEvent::TaskFinished {
                        id: f.id,
                        outcome: f.kind,
                        run_time,
                    });
                }
                fx = st.core.finish(slot, f, now);
            }
            let next = st.core.next_for_worker(slot, now);
            if let Next::Run(job) = &next {
                let waited = shared
                    .nanos_since_epoch(now)
                    .saturating_sub(job.header().enqueued_ns);
                st.wait_time.record(std::time::Duration::from_nanos(waited));
            }
            (next, fx, event)
        };
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
                finished = Some(run_job(job, &abort).await);
            }
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
    // Yield now and then so a worker that always finds work shares its thread.
    tokio::task::consume_budget().await;
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
