//! The typed event stream.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::Stream;

use super::id::TaskId;
use super::output::OutcomeKind;
use super::report::RunningTask;

/// Something that happened in a pool, from [`TaskPool::events`](super::TaskPool::events).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolEvent {
    /// A task started running.
    TaskStarted {
        /// The task.
        id: TaskId,
        /// Its name, if it was given one.
        name: Option<String>,
    },
    /// A task reached its terminal outcome (also for queued tasks that were cancelled).
    TaskFinished {
        /// The task.
        id: TaskId,
        /// How it ended.
        outcome: OutcomeKind,
        /// How long it ran (zero if it never started).
        run_time: Duration,
    },
    /// A task's attempt failed and will be retried after `delay`.
    TaskRetried {
        /// The task.
        id: TaskId,
        /// The attempt that failed (1 = the first).
        attempt: u32,
        /// The backoff before the next attempt.
        delay: Duration,
    },
    /// Nothing is queued or running any more.
    Idle,
    /// [`pause`](super::TaskPool::pause) took effect.
    Paused,
    /// [`resume`](super::TaskPool::resume) took effect.
    Resumed,
    /// The pool stopped accepting work.
    Closed,
    /// The concurrency limit changed.
    ConcurrencyChanged {
        /// The old limit.
        from: usize,
        /// The new limit.
        to: usize,
    },
    /// Work was pending but no task finished within the stall timeout.
    Stalled {
        /// The task that has been running longest, if any.
        oldest: Option<RunningTask>,
    },
    /// The runtime limit was reached.
    RuntimeExceeded {
        /// Queued tasks cancelled.
        cancelled_queued: u64,
        /// Running tasks aborted.
        aborted_running: u64,
    },
    /// This subscriber fell behind and missed `missed` events.
    Lagged {
        /// How many events were skipped.
        missed: u64,
    },
}

/// The pool's event hub.
pub(crate) type EventHub = crate::common::Hub<PoolEvent>;

/// Events kept for a slow subscriber before it sees [`PoolEvent::Lagged`].
pub(crate) const CAPACITY: usize = 4096;

pub(crate) fn hub() -> EventHub {
    EventHub::new(CAPACITY, |missed| PoolEvent::Lagged { missed })
}

/// A stream of [`PoolEvent`]s; ends once the pool is closed and idle (after
/// its last `TaskFinished`, `Closed` and `Idle` events), or when it is dropped.
///
/// Events sent before the stream was made are not seen. A subscriber that falls
/// more than 4096 events behind gets [`PoolEvent::Lagged`] and continues.
pub struct EventStream(pub(crate) crate::common::Subscription<PoolEvent>);

impl Stream for EventStream {
    type Item = PoolEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PoolEvent>> {
        Pin::new(&mut self.0).poll_next(cx)
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}
