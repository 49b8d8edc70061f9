//! The typed event stream of a run.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream, StreamExt};
use tokio::sync::broadcast;

use super::stats::StageStats;

/// Something that happened in a run, from [`PipelineStream::events`](super::PipelineStream::events).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PipelineEvent {
    /// A stage returned an error or panicked on an item.
    ItemFailed {
        /// The stage.
        stage: String,
        /// The item's index.
        index: u64,
        /// True if the stage panicked.
        panicked: bool,
    },
    /// The run is stopping early: its first error (failure, panic,
    /// cancellation, deadline) was recorded and every stage was told to stop.
    Stopping {
        /// The stage of the first error, if it was an item's failure or panic.
        stage: Option<String>,
        /// The item of the first error, if any.
        index: Option<u64>,
    },
    /// Every worker of a stage has ended.
    StageFinished {
        /// The stage's final statistics.
        stats: StageStats,
    },
    /// Every stage has ended. The last event of a run.
    Finished,
    /// This subscriber fell behind and missed `missed` events.
    Lagged {
        /// How many events were skipped.
        missed: u64,
    },
}

/// Sends events to subscribers; costs one relaxed load when there are none.
pub(crate) struct EventHub {
    tx: broadcast::Sender<Option<PipelineEvent>>,
    subscribers: Arc<AtomicUsize>,
}

impl EventHub {
    /// Events kept for a slow subscriber before it sees [`PipelineEvent::Lagged`].
    const CAPACITY: usize = 1024;

    pub(crate) fn new() -> Self {
        EventHub {
            tx: broadcast::channel(Self::CAPACITY).0,
            subscribers: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub(crate) fn active(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn send(&self, event: PipelineEvent) {
        if self.active() {
            // An error only means every receiver went away meanwhile.
            let _ = self.tx.send(Some(event));
        }
    }

    /// Sends [`PipelineEvent::Finished`] and ends every stream.
    pub(crate) fn finish(&self) {
        self.send(PipelineEvent::Finished);
        let _ = self.tx.send(None);
    }

    pub(crate) fn subscribe(&self, finished: bool) -> EventStream {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        let rx = self.tx.subscribe();
        let inner = futures::stream::unfold((rx, finished), |(mut rx, ended)| async move {
            if ended {
                return None;
            }
            match rx.recv().await {
                Ok(Some(event)) => Some((event, (rx, false))),
                Ok(None) | Err(broadcast::error::RecvError::Closed) => None,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    Some((PipelineEvent::Lagged { missed }, (rx, false)))
                }
            }
        })
        .boxed();
        EventStream {
            inner,
            subscribers: Arc::clone(&self.subscribers),
        }
    }
}

/// A stream of [`PipelineEvent`]s; ends after [`PipelineEvent::Finished`].
///
/// Events sent before the stream was made are not seen. A subscriber that
/// falls more than 1024 events behind gets [`PipelineEvent::Lagged`] and
/// continues.
pub struct EventStream {
    inner: BoxStream<'static, PipelineEvent>,
    subscribers: Arc<AtomicUsize>,
}

impl Stream for EventStream {
    type Item = PipelineEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PipelineEvent>> {
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
