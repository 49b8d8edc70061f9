//! Typed events of a running batch job.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;

use super::run::RunSummary;
use super::store::Origin;
use crate::common::Subscription;

/// Something that happened in a batch job. Subscribe with
/// [`BatchJob::events`](super::BatchJob::events).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum BatchEvent {
    /// A range was claimed by this process.
    Claimed {
        /// The range's number.
        range: u64,
        /// Its ids, as text (`[100, 200)` or `[a .. z] (n ids)`).
        ids: String,
        /// The attempt, from 1.
        attempt: u32,
        /// Its fencing token.
        fence: u64,
        /// Where it came from.
        origin: Origin,
    },
    /// A range whose holder's lease expired was claimed again (after its
    /// `Claimed` event).
    Reclaimed {
        /// The range's number.
        range: u64,
        /// Who held it.
        previous_owner: String,
    },
    /// A range was processed and recorded.
    Done {
        /// The range's number.
        range: u64,
        /// Ids processed in this attempt.
        ids: u64,
        /// Of those, the ones the handler reported failed.
        failed_ids: u64,
    },
    /// A range's attempt failed.
    Failed {
        /// The range's number.
        range: u64,
        /// The attempt, from 1.
        attempt: u32,
        /// The error.
        error: String,
        /// When it runs again, or `None` when it is parked as failed (visible in
        /// progress, put back by `retry_failed`).
        retry_in: Option<Duration>,
    },
    /// A range was given back unprocessed, pending again at once (its worker
    /// died, or the job stopped).
    Released {
        /// The range's number.
        range: u64,
        /// Why.
        reason: String,
    },
    /// The store rejected this process's report on a range: another process holds
    /// it now (this one's lease expired). Its work on the range is discarded.
    FencedOut {
        /// The range's number.
        range: u64,
        /// The stale fencing token.
        fence: u64,
    },
    /// A worker exited: its handler panicked, or its worker process died.
    WorkerExited {
        /// The worker's index, from 0.
        worker: usize,
        /// Why.
        reason: String,
        /// Whether it was restarted (within the restart budget).
        restarted: bool,
    },
    /// A store or loader operation failed with a transient error and is retried.
    Retrying {
        /// What was being done.
        operation: &'static str,
        /// The retry, from 1.
        attempt: u32,
        /// The error.
        error: String,
    },
    /// The run is ending: every worker has stopped. Always the last event of a
    /// run, whatever ended it.
    BeforeStop {
        /// What the run did.
        summary: RunSummary,
        /// The error that ended the run, if one did.
        error: Option<String>,
    },
    /// This subscriber fell behind and missed this many events.
    Lagged {
        /// How many.
        missed: u64,
    },
}

/// The stream of a job's [`BatchEvent`]s; it ends when the job handle is dropped.
pub struct BatchEvents {
    pub(crate) inner: Subscription<BatchEvent>,
}

impl Stream for BatchEvents {
    type Item = BatchEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BatchEvent>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl std::fmt::Debug for BatchEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchEvents").finish_non_exhaustive()
    }
}
