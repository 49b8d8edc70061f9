//! The typed event stream.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{BoxStream, Stream, StreamExt};
use tokio::sync::broadcast;

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

/// Sends events to whoever subscribed; costs one relaxed load when nobody did.
///
/// `None` on the channel ends every stream: sent once the pool is closed and
/// idle, after which no task event can follow.
pub(crate) struct EventHub {
    tx: broadcast::Sender<Option<PoolEvent>>,
    subscribers: Arc<AtomicUsize>,
    ended: AtomicBool,
}

impl EventHub {
    /// Events kept for a slow subscriber before it sees [`PoolEvent::Lagged`].
    const CAPACITY: usize = 4096;

    pub(crate) fn new() -> Self {
        EventHub {
            tx: broadcast::channel(Self::CAPACITY).0,
            subscribers: Arc::new(AtomicUsize::new(0)),
            ended: AtomicBool::new(false),
        }
    }

    /// Whether anyone listens; callers skip building per-task events when not.
    pub(crate) fn active(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn send(&self, event: PoolEvent) {
        if self.active() {
            // An error only means every receiver went away meanwhile.
            let _ = self.tx.send(Some(event));
        }
    }

    /// Ends every stream (the pool is closed and idle).
    pub(crate) fn end(&self) {
        if !self.ended.swap(true, Ordering::AcqRel) {
            let _ = self.tx.send(None);
        }
    }

    pub(crate) fn subscribe(&self) -> EventStream {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        let rx = self.tx.subscribe();
        let ended = self.ended.load(Ordering::Acquire);
        let inner = futures::stream::unfold((rx, ended), |(mut rx, ended)| async move {
            if ended {
                return None;
            }
            match rx.recv().await {
                Ok(Some(event)) => Some((event, (rx, false))),
                Ok(None) => None,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    Some((PoolEvent::Lagged { missed }, (rx, false)))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
        .boxed();
        EventStream {
            inner,
            subscribers: Arc::clone(&self.subscribers),
        }
    }
}

/// A stream of [`PoolEvent`]s; ends once the pool is closed and idle (after
/// its last `TaskFinished`, `Closed` and `Idle` events), or when it is dropped.
///
/// Events sent before the stream was made are not seen. A subscriber that falls
/// more than 4096 events behind gets [`PoolEvent::Lagged`] and continues.
pub struct EventStream {
    inner: BoxStream<'static, PoolEvent>,
    subscribers: Arc<AtomicUsize>,
}

impl Stream for EventStream {
    type Item = PoolEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PoolEvent>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}
