//! Errors of batch jobs.

use std::time::Duration;

use super::id::{Id, OrderError};
use super::store::StoreError;

/// Why building a [`BatchJob`](super::BatchJob) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No source: call `span` or `load_with`.
    #[error("a batch job needs a source: span(start..end) or load_with(f)")]
    NoSource,
    /// Both a span and a loader.
    #[error("a batch job has one source: span(..) or load_with(..), not both")]
    TwoSources,
    /// No handler: call `handler` or `process_handler`.
    #[error("a batch job needs a handler: handler(f) or process_handler(pool, function)")]
    NoHandler,
    /// A setting out of its range.
    #[error("{0}")]
    Invalid(String),
}

/// Why a batch job's operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// A store operation failed, after retries for transient errors.
    #[error("store {store}: {operation} failed: {source}")]
    Store {
        /// The store, as [`Store::describe`](super::Store::describe) gives it
        /// (never with a password).
        store: String,
        /// What the job was doing.
        operation: &'static str,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The loader function kept failing.
    #[error("loading ids after {} failed: {message}", display_cursor(.after))]
    Fetch {
        /// The cursor it was called with.
        after: Option<Id>,
        /// Its last error.
        message: String,
    },
    /// The loader returned ids that are not sorted, or not after the cursor.
    #[error("the range loaded after {} is not sorted: {error}", display_cursor(.after))]
    Unsorted {
        /// The cursor the loader was called with.
        after: Option<Id>,
        /// What is wrong with it.
        error: OrderError,
    },
    /// Workers exited (panicked, or their process died) more often than the
    /// restart budget allows.
    #[error("{restarts} worker restarts within {window:?} exceed the budget; last: {last}")]
    RestartBudget {
        /// Restarts counted within the window.
        restarts: usize,
        /// The budget's window.
        window: Duration,
        /// Why the last worker exited.
        last: String,
    },
    /// This process no longer holds the range: another one claimed it after this
    /// one's lease expired.
    #[error("range {range} was taken over by another worker (fencing token {fence} is stale)")]
    FencedOut {
        /// The range.
        range: u64,
        /// The stale token.
        fence: u64,
    },
    /// `run` was called while this job handle was already running.
    #[error("this batch job is already running")]
    AlreadyRunning,
}

fn display_cursor(after: &Option<Id>) -> String {
    match after {
        Some(id) => id.to_string(),
        None => "the start".to_owned(),
    }
}

impl BatchError {
    /// Whether the store failed.
    pub fn is_store(&self) -> bool {
        matches!(self, BatchError::Store { .. })
    }
}
