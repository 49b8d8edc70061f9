//! Errors of the pool's operations: building, spawning, draining.

use std::fmt;
use std::time::Duration;

use super::report::{DrainReport, RunningTask};
use super::stats::PoolStats;

/// A pool configuration was rejected.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// `max_concurrency` was 0: such a pool could never run anything.
    #[error("max_concurrency must be at least 1 (a pool of 0 workers would never run a task)")]
    ZeroConcurrency,
    /// `queue_capacity` was 0.
    #[error("queue_capacity must be at least 1")]
    ZeroQueueCapacity,
    /// The rate limit cannot be met (0 starts, 0 burst or a zero interval).
    #[error("invalid rate limit: {0}")]
    InvalidRateLimit(String),
}

/// [`TaskPool::spawn`](super::TaskPool::spawn) could not accept the task.
///
/// The task (the future, or the closure for [`task_fn`](super::TaskPool::task_fn))
/// is given back, so nothing is lost.
#[non_exhaustive]
pub enum SpawnError<T> {
    /// The pool is closed and accepts no new work.
    Closed(T),
}

impl<T> SpawnError<T> {
    /// The task that was not accepted.
    pub fn into_inner(self) -> T {
        match self {
            SpawnError::Closed(t) => t,
        }
    }
}

impl<T> fmt::Debug for SpawnError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for SpawnError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::Closed(_) => f.write_str("task pool is closed"),
        }
    }
}

impl<T> std::error::Error for SpawnError<T> {}

/// [`TaskPool::try_spawn`](super::TaskPool::try_spawn) could not accept the task
/// right now. The task is given back.
#[non_exhaustive]
pub enum TrySpawnError<T> {
    /// The queue is at `queue_capacity`.
    Full(T),
    /// The pool is closed and accepts no new work.
    Closed(T),
}

impl<T> TrySpawnError<T> {
    /// The task that was not accepted.
    pub fn into_inner(self) -> T {
        match self {
            TrySpawnError::Full(t) | TrySpawnError::Closed(t) => t,
        }
    }

    /// True if the queue was full.
    pub fn is_full(&self) -> bool {
        matches!(self, TrySpawnError::Full(_))
    }

    /// True if the pool was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, TrySpawnError::Closed(_))
    }
}

impl<T> fmt::Debug for TrySpawnError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySpawnError::Full(_) => f.write_str("Full(..)"),
            TrySpawnError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for TrySpawnError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySpawnError::Full(_) => f.write_str("task pool queue is full"),
            TrySpawnError::Closed(_) => f.write_str("task pool is closed"),
        }
    }
}

impl<T> std::error::Error for TrySpawnError<T> {}

/// [`drain`](super::TaskPool::drain) or [`close`](super::TaskPool::close) ended
/// with something the caller must hear about.
#[non_exhaustive]
#[derive(Clone, Debug, thiserror::Error)]
pub enum DrainError {
    /// The pool's [`max_runtime`](super::TaskPoolBuilder::max_runtime) was reached:
    /// queued tasks were cancelled and running ones aborted.
    #[error(
        "task pool runtime limit of {limit:?} reached: {cancelled_queued} queued tasks cancelled, \
         {aborted_running} running tasks aborted"
    )]
    RuntimeExceeded {
        /// The configured limit.
        limit: Duration,
        /// Queued tasks cancelled at the limit.
        cancelled_queued: u64,
        /// Running tasks aborted at the limit.
        aborted_running: u64,
        /// Everything that ended in the period, including the cancelled tasks.
        report: DrainReport,
    },
    /// Work was pending but no task finished within
    /// [`stall_timeout`](super::TaskPoolBuilder::stall_timeout). The tasks keep
    /// running; the waiter is released so it can decide what to do.
    #[error(
        "task pool stalled: no task finished for {stall_timeout:?}{}",
        oldest_text(oldest)
    )]
    Stalled {
        /// The configured stall timeout.
        stall_timeout: Duration,
        /// The task that has been running longest, if any is running.
        oldest: Option<RunningTask>,
    },
    /// In [`DrainMode::HandOff`](super::DrainMode::HandOff), a newer `drain()`
    /// took over the wait.
    #[error("drain superseded by a newer drain ({} queued, {} running)", stats.queued, stats.running)]
    Superseded {
        /// The pool's statistics when this waiter was released.
        stats: Box<PoolStats>,
    },
}

fn oldest_text(oldest: &Option<RunningTask>) -> String {
    match oldest {
        Some(t) => format!("; oldest running task {t}"),
        None => "; no task is running (the queue is not being served)".to_owned(),
    }
}

impl DrainError {
    /// The report carried by the error, if any.
    pub fn report(&self) -> Option<&DrainReport> {
        match self {
            DrainError::RuntimeExceeded { report, .. } => Some(report),
            _ => None,
        }
    }
}
