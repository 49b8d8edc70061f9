//! The public pool handle.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::builder::{Config, TaskPoolBuilder};
use super::error::{BuildError, DrainError, SpawnError, TrySpawnError};
use super::events::{EventStream, PoolEvent};
use super::job::TaskHandle;
use super::output::{CancelReason, TaskOutput};
use super::report::DrainReport;
use super::shared::Shared;
use super::spawn::{TaskBuilder, TaskFnBuilder};
use super::stats::PoolStats;

/// A bounded pool of async tasks. See the [module docs](super) for a guide.
///
/// Cloning is cheap and every clone is the same pool. When the last clone is
/// dropped the pool closes: tasks already accepted still run to their end
/// (their handles still resolve), and the workers then exit.
#[derive(Clone)]
pub struct TaskPool {
    inner: Arc<Owner>,
}

/// Closes the pool when the last user handle goes away; workers only hold
/// `Shared`, so they cannot keep an abandoned pool open.
struct Owner {
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.close_intake();
    }
}

impl TaskPool {
    /// Starts configuring a pool.
    pub fn builder() -> TaskPoolBuilder {
        TaskPoolBuilder::default()
    }

    pub(crate) fn from_config(config: Config) -> Self {
        TaskPool {
            inner: Arc::new(Owner {
                shared: Shared::start(config),
            }),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// Queues a future, waiting for room if the queue is full.
    ///
    /// The task starts when a worker is free, highest priority first. Await the
    /// returned handle for its result, or drop it to let the task run detached.
    ///
    /// # Errors
    ///
    /// [`SpawnError::Closed`] with the future, if the pool is closed.
    ///
    /// # Panics
    ///
    /// If no tokio runtime is running and the pool has never seen one.
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future before it resolves drops the task unqueued.
    ///
    /// # Examples
    ///
    /// ```
    /// use workcrew::task::TaskPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = TaskPool::builder().max_concurrency(2).build().unwrap();
    /// let handle = pool.spawn(async { Ok::<_, std::io::Error>(40 + 2) }).await.unwrap();
    /// assert_eq!(handle.await.unwrap(), 42);
    /// # }
    /// ```
    pub async fn spawn<F>(&self, fut: F) -> Result<TaskHandle<F::Output>, SpawnError<F>>
    where
        F: Future + Send + 'static,
        F::Output: TaskOutput,
    {
        TaskBuilder::new(self, fut).spawn().await
    }

    /// Queues a future if there is room now.
    ///
    /// # Errors
    ///
    /// [`TrySpawnError::Full`] or [`TrySpawnError::Closed`], with the future.
    ///
    /// # Panics
    ///
    /// If no tokio runtime is running and the pool has never seen one.
    pub fn try_spawn<F>(&self, fut: F) -> Result<TaskHandle<F::Output>, TrySpawnError<F>>
    where
        F: Future + Send + 'static,
        F::Output: TaskOutput,
    {
        TaskBuilder::new(self, fut).try_spawn()
    }

    /// A task with options (name, priority, timeout, cancellation token).
    pub fn task<F>(&self, fut: F) -> TaskBuilder<'_, F>
    where
        F: Future + Send + 'static,
        F::Output: TaskOutput,
    {
        TaskBuilder::new(self, fut)
    }

    /// A task made by a closure, which can be retried (a future runs only once,
    /// so each attempt calls `make` again).
    pub fn task_fn<M, Fut>(&self, make: M) -> TaskFnBuilder<'_, M, Fut::Output>
    where
        M: FnMut() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: TaskOutput,
    {
        TaskFnBuilder::new(self, make)
    }

    /// Waits until nothing is queued or running; the pool stays open.
    ///
    /// Returns what ended since the previous report was taken, including
    /// failures of detached tasks that ended before this call. Any number of
    /// concurrent drainers all resolve, with the same report (unless
    /// [`DrainMode::HandOff`](super::DrainMode::HandOff) is set). Tasks spawned
    /// while a drain waits are waited for too. A paused pool with queued tasks
    /// is not idle.
    ///
    /// # Errors
    ///
    /// - [`DrainError::RuntimeExceeded`] if the runtime limit cut the period short;
    /// - [`DrainError::Stalled`] if no task finished within the stall timeout;
    /// - [`DrainError::Superseded`] in hand-off mode, when a newer drain took over.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped drain takes nothing with it; its report goes to
    /// the next drain.
    pub async fn drain(&self) -> Result<DrainReport, DrainError> {
        self.shared().wait_drained().await
    }

    /// Stops accepting tasks, then waits like [`drain`](Self::drain).
    ///
    /// Spawns waiting for queue room fail with the task given back. Idempotent:
    /// later and concurrent calls wait too. Queued tasks still run; use
    /// [`shutdown`](Self::shutdown) to stop them.
    ///
    /// # Errors
    ///
    /// As [`drain`](Self::drain).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; the pool is closed from the first poll.
    pub async fn close(&self) -> Result<DrainReport, DrainError> {
        self.shared().close_intake();
        self.shared().wait_drained().await
    }

    /// Closes the pool and waits up to `grace` for its work to end; then
    /// cancels queued tasks and aborts running ones
    /// ([`CancelReason::Shutdown`]) and waits for them to stop.
    ///
    /// An aborted task stops at its next `.await`; one stuck in blocking code
    /// cannot be stopped and is waited for.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves the pool closed, with nothing cancelled.
    pub async fn shutdown(&self, grace: Duration) -> DrainReport {
        let shared = self.shared();
        shared.close_intake();
        let deadline = tokio::time::Instant::now() + grace;
        let mut report = DrainReport::default();
        let cap = shared.config.max_reported_failures;
        while let Ok(outcome) = tokio::time::timeout_at(deadline, shared.wait_drained()).await {
            if absorb(&mut report, outcome, cap) {
                return report;
            }
        }
        shared.cancel_all(CancelReason::Shutdown);
        loop {
            if absorb(&mut report, shared.wait_drained().await, cap) {
                return report;
            }
        }
    }

    /// Stops starting tasks; running ones go on. Spawning still queues.
    pub fn pause(&self) {
        let shared = self.shared();
        let (changed, fx) = shared
            .lock()
            .core
            .set_paused(true, tokio::time::Instant::now());
        if changed {
            shared.events.send(PoolEvent::Paused);
        }
        shared.apply(fx);
    }

    /// Starts tasks again after [`pause`](Self::pause).
    pub fn resume(&self) {
        let shared = self.shared();
        let (changed, fx) = shared
            .lock()
            .core
            .set_paused(false, tokio::time::Instant::now());
        if changed {
            shared.events.send(PoolEvent::Resumed);
        }
        shared.apply(fx);
    }

    /// Whether the pool is paused.
    pub fn is_paused(&self) -> bool {
        self.shared().lock().core.is_paused()
    }

    /// Whether the pool is closed to new tasks.
    pub fn is_closed(&self) -> bool {
        self.shared().lock().core.is_closed()
    }

    /// Changes the concurrency limit. Raising it starts queued tasks at once;
    /// lowering it lets running tasks finish (no task is interrupted).
    ///
    /// # Errors
    ///
    /// [`BuildError::ZeroConcurrency`] for 0.
    pub fn set_max_concurrency(&self, n: usize) -> Result<(), BuildError> {
        if n == 0 {
            return Err(BuildError::ZeroConcurrency);
        }
        let shared = self.shared();
        let (old, fx) = shared.lock().core.set_max_concurrency(n);
        if old != n {
            shared
                .events
                .send(PoolEvent::ConcurrencyChanged { from: old, to: n });
        }
        shared.apply(fx);
        Ok(())
    }

    /// The concurrency limit in force.
    pub fn max_concurrency(&self) -> usize {
        self.shared().lock().core.max_concurrency()
    }

    /// A snapshot of counts, queue depth and latency percentiles.
    pub fn stats(&self) -> PoolStats {
        self.shared().stats()
    }

    /// A stream of [`PoolEvent`]s from now on.
    ///
    /// Per-task events cost nothing while nobody subscribes.
    pub fn events(&self) -> EventStream {
        EventStream(self.shared().events.subscribe())
    }
}

/// Adds a drain outcome to `report`; true when the wait is over.
fn absorb(report: &mut DrainReport, outcome: Result<DrainReport, DrainError>, cap: usize) -> bool {
    match outcome {
        Ok(r) | Err(DrainError::RuntimeExceeded { report: r, .. }) => {
            report.absorb(r, cap);
            true
        }
        // Keep waiting: a stall or a newer drainer does not end a shutdown.
        Err(_) => false,
    }
}

impl fmt::Debug for TaskPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = self.stats();
        f.debug_struct("TaskPool")
            .field("name", &self.shared().config.name)
            .field("max_concurrency", &stats.max_concurrency)
            .field("queued", &stats.queued)
            .field("running", &stats.running)
            .field("closed", &stats.closed)
            .finish_non_exhaustive()
    }
}
