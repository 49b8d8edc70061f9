//! The typed event stream of a run.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::Stream;

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

/// A run's event hub.
pub(crate) type EventHub = crate::common::Hub<PipelineEvent>;

/// Events kept for a slow subscriber before it sees [`PipelineEvent::Lagged`].
const CAPACITY: usize = 1024;

pub(crate) fn hub() -> EventHub {
    EventHub::new(CAPACITY, |missed| PipelineEvent::Lagged { missed })
}

/// Sends [`PipelineEvent::Finished`] and ends every stream.
pub(crate) fn finish(hub: &EventHub) {
    hub.send(PipelineEvent::Finished);
    hub.end();
}

/// A stream of [`PipelineEvent`]s; ends after [`PipelineEvent::Finished`].
///
/// Events sent before the stream was made are not seen. A subscriber that
/// falls more than 1024 events behind gets [`PipelineEvent::Lagged`] and
/// continues.
pub struct EventStream(pub(crate) crate::common::Subscription<PipelineEvent>);

impl Stream for EventStream {
    type Item = PipelineEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PipelineEvent>> {
        Pin::new(&mut self.0).poll_next(cx)
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}
