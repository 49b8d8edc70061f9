//! Errors of a pipeline run and of a [`Dispatcher`](super::Dispatcher).

use std::any::Any;
use std::fmt;
use std::time::Duration;

/// Why a pipeline run, or one item of it, did not succeed.
///
/// In the default fail-fast mode the first of these ends the run; it is the
/// last item of the [`PipelineStream`](super::PipelineStream) and what
/// [`Pipeline::collect`](super::Pipeline::collect) returns. Errors that happen
/// after it (items failing while the run stops, a cancellation it raced with)
/// never replace it: they are kept in
/// [`RunReport::later_errors`](super::RunReport::later_errors) (also
/// [`PipelineStream::take_later_errors`](super::PipelineStream::take_later_errors)).
#[non_exhaustive]
pub enum PipelineError<E> {
    /// A stage returned its own error for an item.
    Failed {
        /// The stage's name.
        stage: String,
        /// The item's position in the input (0-based).
        index: u64,
        /// What the stage returned.
        error: E,
    },
    /// A stage panicked on an item.
    Panicked {
        /// The stage's name.
        stage: String,
        /// The item's position in the input (0-based).
        index: u64,
        /// The panic message, when the payload is a string (as `panic!` makes it).
        message: Option<String>,
    },
    /// The run's [`cancel_token`](super::Pipeline::cancel_token) was cancelled.
    Cancelled,
    /// The run's [`deadline`](super::Pipeline::deadline) passed.
    DeadlineExceeded {
        /// The time limit that was set.
        limit: Duration,
    },
}

impl<E> PipelineError<E> {
    /// The stage the error happened in, if it is about one item.
    pub fn stage(&self) -> Option<&str> {
        match self {
            PipelineError::Failed { stage, .. } | PipelineError::Panicked { stage, .. } => {
                Some(stage)
            }
            _ => None,
        }
    }

    /// The index of the item it is about, if any.
    pub fn index(&self) -> Option<u64> {
        match self {
            PipelineError::Failed { index, .. } | PipelineError::Panicked { index, .. } => {
                Some(*index)
            }
            _ => None,
        }
    }

    /// True for [`PipelineError::Failed`].
    pub fn is_failed(&self) -> bool {
        matches!(self, PipelineError::Failed { .. })
    }

    /// True for [`PipelineError::Panicked`].
    pub fn is_panic(&self) -> bool {
        matches!(self, PipelineError::Panicked { .. })
    }

    /// True for [`PipelineError::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        matches!(self, PipelineError::Cancelled)
    }

    /// True for [`PipelineError::DeadlineExceeded`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, PipelineError::DeadlineExceeded { .. })
    }

    /// The stage's own error, for [`PipelineError::Failed`].
    pub fn into_inner(self) -> Option<E> {
        match self {
            PipelineError::Failed { error, .. } => Some(error),
            _ => None,
        }
    }

    pub(crate) fn panicked(stage: &str, index: u64, payload: &(dyn Any + Send)) -> Self {
        let message = crate::common::panic_message(payload).map(str::to_owned);
        PipelineError::Panicked {
            stage: stage.to_owned(),
            index,
            message,
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for PipelineError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PipelineError::Failed {
                stage,
                index,
                error,
            } => f
                .debug_struct("Failed")
                .field("stage", stage)
                .field("index", index)
                .field("error", error)
                .finish(),
            PipelineError::Panicked {
                stage,
                index,
                message,
            } => f
                .debug_struct("Panicked")
                .field("stage", stage)
                .field("index", index)
                .field("message", message)
                .finish(),
            PipelineError::Cancelled => f.write_str("Cancelled"),
            PipelineError::DeadlineExceeded { limit } => f
                .debug_struct("DeadlineExceeded")
                .field("limit", limit)
                .finish(),
        }
    }
}

impl<E: fmt::Display> fmt::Display for PipelineError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PipelineError::Failed {
                stage,
                index,
                error,
            } => write!(f, "stage `{stage}` failed on item {index}: {error}"),
            PipelineError::Panicked {
                stage,
                index,
                message,
            } => match message {
                Some(m) => write!(f, "stage `{stage}` panicked on item {index}: {m}"),
                None => write!(f, "stage `{stage}` panicked on item {index}"),
            },
            PipelineError::Cancelled => f.write_str("pipeline cancelled"),
            PipelineError::DeadlineExceeded { limit } => {
                write!(f, "pipeline deadline of {limit:?} exceeded")
            }
        }
    }
}

// The stage's error is in the text, so `source()` stays `None` (it would print twice).
impl<E: fmt::Debug + fmt::Display> std::error::Error for PipelineError<E> {}

/// [`Dispatcher::dispatch`](super::Dispatcher::dispatch) did not accept the job;
/// the job is given back.
#[non_exhaustive]
pub enum DispatchError<J> {
    /// [`done`](super::Dispatcher::done) was called: no more jobs are accepted.
    Done(J),
    /// The dispatcher was cancelled (its token, [`cancel`](super::Dispatcher::cancel),
    /// or a job's error).
    Cancelled(J),
}

impl<J> DispatchError<J> {
    /// The job that was not accepted.
    pub fn into_inner(self) -> J {
        match self {
            DispatchError::Done(j) | DispatchError::Cancelled(j) => j,
        }
    }

    /// True if the dispatcher was already done.
    pub fn is_done(&self) -> bool {
        matches!(self, DispatchError::Done(_))
    }

    /// True if the dispatcher was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, DispatchError::Cancelled(_))
    }
}

impl<J> fmt::Debug for DispatchError<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DispatchError::Done(_) => f.write_str("Done(..)"),
            DispatchError::Cancelled(_) => f.write_str("Cancelled(..)"),
        }
    }
}

impl<J> fmt::Display for DispatchError<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DispatchError::Done(_) => f.write_str("dispatcher is done: no more jobs accepted"),
            DispatchError::Cancelled(_) => f.write_str("dispatcher is cancelled"),
        }
    }
}

impl<J> std::error::Error for DispatchError<J> {}
