//! What `drain` and `close` hand back: counts and failures since the last report.

use std::fmt;
use std::time::Duration;

use super::id::TaskId;

/// What ended since the previous report was taken.
///
/// Failures of detached tasks (whose handle was dropped) are never lost: they are
/// counted here and listed in [`failures`](Self::failures) until a `drain()` or
/// `close()` takes them, even if they ended before that call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Tasks that finished successfully.
    pub completed: u64,
    /// Tasks that returned their own error.
    pub failed: u64,
    /// Tasks that panicked.
    pub panicked: u64,
    /// Tasks that were cancelled (abort, token, shutdown, runtime limit).
    pub cancelled: u64,
    /// Tasks stopped by their timeout.
    pub timed_out: u64,
    /// The failed, panicked and timed-out tasks, oldest first, at most
    /// [`max_reported_failures`](super::TaskPoolBuilder::max_reported_failures).
    pub failures: Vec<TaskFailure>,
    /// Failures beyond that cap (still counted above).
    pub failures_omitted: u64,
}

impl DrainReport {
    /// True when nothing failed, panicked or timed out.
    pub fn is_clean(&self) -> bool {
        self.failed == 0 && self.panicked == 0 && self.timed_out == 0
    }

    /// Every task counted in the report.
    pub fn total(&self) -> u64 {
        self.completed + self.failed + self.panicked + self.cancelled + self.timed_out
    }

    pub(crate) fn absorb(&mut self, other: DrainReport, cap: usize) {
        self.completed += other.completed;
        self.failed += other.failed;
        self.panicked += other.panicked;
        self.cancelled += other.cancelled;
        self.timed_out += other.timed_out;
        self.failures_omitted += other.failures_omitted;
        for f in other.failures {
            if self.failures.len() < cap {
                self.failures.push(f);
            } else {
                self.failures_omitted += 1;
            }
        }
    }
}

/// One task that failed, panicked or timed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskFailure {
    /// The task.
    pub id: TaskId,
    /// The name given with [`TaskBuilder::name`](super::TaskBuilder::name).
    pub name: Option<String>,
    /// How it ended.
    pub kind: FailureKind,
    /// Its error's `Display`, the panic message, or the timeout.
    pub message: String,
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {}", self.id)?;
        if let Some(name) = &self.name {
            write!(f, " ({name})")?;
        }
        let what = match self.kind {
            FailureKind::Failed => "failed",
            FailureKind::Panicked => "panicked",
            FailureKind::TimedOut => "timed out",
        };
        write!(f, " {what}: {}", self.message)
    }
}

/// How a reported task failed.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// Returned its own error.
    Failed,
    /// Panicked.
    Panicked,
    /// Stopped by its timeout.
    TimedOut,
}

/// A task that is running now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningTask {
    /// The task.
    pub id: TaskId,
    /// Its name, if it was given one.
    pub name: Option<String>,
    /// How long it has been running.
    pub running_for: Duration,
}

impl fmt::Display for RunningTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.id)?;
        if let Some(name) = &self.name {
            write!(f, " ({name})")?;
        }
        write!(f, " running for {:?}", self.running_for)
    }
}
