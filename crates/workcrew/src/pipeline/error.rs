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
    /// An error recorded by hand with
    /// [`Dispatcher::set_err`](super::Dispatcher::set_err) (a consumer that
    /// found a bad result, as the Go seed's `SetErr`).
    User {
        /// The dispatcher's name.
        stage: String,
        /// What was recorded.
        error: E,
    },
    /// The run's [`cancel_token`](super::Pipeline::cancel_token) was cancelled.
    Cancelled,
    /// The run's [`deadline`](super::Pipeline::deadline) passed.
    DeadlineExceeded {
        /// The time limit that was set.
        limit: Duration,
    },
    /// The pipeline's configuration was rejected, so it never ran (from
    /// [`collect`](super::Pipeline::collect) and
    /// [`collect_all`](super::Pipeline::collect_all);
    /// [`run`](super::Pipeline::run) returns the [`BuildError`] itself).
    Invalid(BuildError),
}

impl<E> PipelineError<E> {
    /// The stage the error happened in, if it is about one item (or the
    /// dispatcher an error was [set](super::Dispatcher::set_err) on).
    pub fn stage(&self) -> Option<&str> {
        match self {
            PipelineError::Failed { stage, .. }
            | PipelineError::Panicked { stage, .. }
            | PipelineError::User { stage, .. } => Some(stage),
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

    /// True for [`PipelineError::User`].
    pub fn is_user(&self) -> bool {
        matches!(self, PipelineError::User { .. })
    }

    /// True for [`PipelineError::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        matches!(self, PipelineError::Cancelled)
    }

    /// True for [`PipelineError::Invalid`].
    pub fn is_invalid(&self) -> bool {
        matches!(self, PipelineError::Invalid(_))
    }

    /// True for [`PipelineError::DeadlineExceeded`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, PipelineError::DeadlineExceeded { .. })
    }

    /// The stage's own error, for [`PipelineError::Failed`] (and the
    /// recorded one for [`PipelineError::User`]).
    pub fn into_inner(self) -> Option<E> {
        match self {
            PipelineError::Failed { error, .. } | PipelineError::User { error, .. } => Some(error),
            _ => None,
        }
    }

    pub(crate) fn panicked(stage: &str, index: u64, payload: &(dyn Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&'static str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned());
        PipelineError::Panicked {
            stage: stage.to_owned(),
            index,
            message,
        }
    }
}

impl<E: Clone> Clone for PipelineError<E> {
    fn clone(&self) -> Self {
        match self {
            PipelineError::Failed {
                stage,
                index,
                error,
            } => PipelineError::Failed {
                stage: stage.clone(),
                index: *index,
                error: error.clone(),
            },
            PipelineError::Panicked {
                stage,
                index,
                message,
            } => PipelineError::Panicked {
                stage: stage.clone(),
                index: *index,
                message: message.clone(),
            },
            PipelineError::User { stage, error } => PipelineError::User {
                stage: stage.clone(),
                error: error.clone(),
            },
            PipelineError::Cancelled => PipelineError::Cancelled,
            PipelineError::DeadlineExceeded { limit } => {
                PipelineError::DeadlineExceeded { limit: *limit }
            }
            PipelineError::Invalid(err) => PipelineError::Invalid(err.clone()),
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
            PipelineError::User { stage, error } => f
                .debug_struct("User")
                .field("stage", stage)
                .field("error", error)
                .finish(),
            PipelineError::Cancelled => f.write_str("Cancelled"),
            PipelineError::DeadlineExceeded { limit } => f
                .debug_struct("DeadlineExceeded")
                .field("limit", limit)
                .finish(),
            PipelineError::Invalid(err) => f.debug_tuple("Invalid").field(err).finish(),
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
            PipelineError::User { stage, error } => write!(f, "error set on `{stage}`: {error}"),
            PipelineError::Cancelled => f.write_str("pipeline cancelled"),
            PipelineError::DeadlineExceeded { limit } => {
                write!(f, "pipeline deadline of {limit:?} exceeded")
            }
            PipelineError::Invalid(err) => write!(f, "invalid pipeline: {err}"),
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
    /// [`set_err`](super::Dispatcher::set_err), or a job's error).
    Cancelled(J),
    /// The consumer dropped the [`DispatchReceiver`](super::DispatchReceiver):
    /// nobody reads results any more, so the dispatcher stopped.
    ReceiverGone(J),
}

impl<J> DispatchError<J> {
    /// The job that was not accepted.
    pub fn into_inner(self) -> J {
        match self {
            DispatchError::Done(j)
            | DispatchError::Cancelled(j)
            | DispatchError::ReceiverGone(j) => j,
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

    /// True if the consumer dropped its receiver.
    pub fn is_receiver_gone(&self) -> bool {
        matches!(self, DispatchError::ReceiverGone(_))
    }
}

impl<J> fmt::Debug for DispatchError<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DispatchError::Done(_) => f.write_str("Done(..)"),
            DispatchError::Cancelled(_) => f.write_str("Cancelled(..)"),
            DispatchError::ReceiverGone(_) => f.write_str("ReceiverGone(..)"),
        }
    }
}

impl<J> fmt::Display for DispatchError<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DispatchError::Done(_) => f.write_str("dispatcher is done: no more jobs accepted"),
            DispatchError::Cancelled(_) => f.write_str("dispatcher is cancelled"),
            DispatchError::ReceiverGone(_) => {
                f.write_str("receiver gone: the consumer dropped the dispatcher's receiver")
            }
        }
    }
}

impl<J> std::error::Error for DispatchError<J> {}

/// A pipeline or dispatcher configuration was rejected (by
/// [`Pipeline::run`](super::Pipeline::run) or
/// [`DispatcherBuilder::start`](super::DispatcherBuilder::start)).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A stage was given concurrency 0: it would never process anything.
    #[error("stage `{stage}`: concurrency must be at least 1 (a stage of 0 workers never runs)")]
    ZeroConcurrency {
        /// The stage's name.
        stage: String,
    },
    /// A dispatcher was given 0 workers: it would never run a job.
    #[error("dispatcher `{name}`: workers must be at least 1 (0 workers never run a job)")]
    ZeroWorkers {
        /// The dispatcher's name.
        name: String,
    },
}
