//! What a task produces: its output contract and the ways it can end.

use std::any::Any;
use std::convert::Infallible;
use std::fmt;
use std::time::Duration;

use crate::common::panic_message;

/// The output of a task the pool can judge as success or failure.
///
/// The pool must know whether a task failed even when nobody holds its
/// [`TaskHandle`](super::TaskHandle), so that fire-and-forget failures reach the
/// [`DrainReport`](super::DrainReport). This trait is how it knows:
/// `()` always succeeds and `Result<T, E>` fails with `Err(E)`.
///
/// Wrap other values in `Ok`: `pool.spawn(async { Ok::<_, MyError>(42) })`.
///
/// # Examples
///
/// ```
/// use workcrew::task::TaskOutput;
///
/// assert!(().into_result().is_ok());
/// assert_eq!(Err::<u8, &str>("boom").into_result(), Err("boom"));
/// assert_eq!(<Result<u8, &str> as TaskOutput>::describe(&"boom"), "boom");
/// ```
#[diagnostic::on_unimplemented(
    message = "a task's output must be `()` or `Result<T, E>` with `E: Display`",
    note = "wrap other values in `Ok`, e.g. `Ok::<_, std::convert::Infallible>(value)`"
)]
pub trait TaskOutput: Send + 'static {
    /// The value a successful task gives its handle.
    type Ok: Send + 'static;
    /// The error a failed task gives its handle.
    type Err: Send + 'static;

    /// Splits the output into success or failure.
    fn into_result(self) -> Result<Self::Ok, Self::Err>;

    /// Describes a failure for the [`DrainReport`](super::DrainReport).
    fn describe(err: &Self::Err) -> String;
}

impl TaskOutput for () {
    type Ok = ();
    type Err = Infallible;

    fn into_result(self) -> Result<(), Infallible> {
        Ok(())
    }

    fn describe(err: &Infallible) -> String {
        match *err {}
    }
}

impl<T, E> TaskOutput for Result<T, E>
where
    T: Send + 'static,
    E: fmt::Display + Send + 'static,
{
    type Ok = T;
    type Err = E;

    fn into_result(self) -> Result<T, E> {
        self
    }

    fn describe(err: &E) -> String {
        err.to_string()
    }
}

/// Why a task ended without finishing.
///
/// A task that panics or fails still *finished*; it gets [`TaskError::Panicked`]
/// or [`TaskError::Failed`]. This enum says what stopped one that did not.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CancelReason {
    /// [`TaskHandle::abort`](super::TaskHandle::abort) was called.
    Aborted,
    /// The task's [`CancellationToken`](tokio_util::sync::CancellationToken) fired.
    Token,
    /// [`TaskPool::shutdown`](super::TaskPool::shutdown) reached its deadline, or
    /// the runtime that ran the task shut down.
    Shutdown,
    /// The pool's [`max_runtime`](super::TaskPoolBuilder::max_runtime) was reached.
    RuntimeLimit,
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CancelReason::Aborted => "aborted by its handle",
            CancelReason::Token => "cancelled by its token",
            CancelReason::Shutdown => "cancelled by pool shutdown",
            CancelReason::RuntimeLimit => "cancelled by the pool's runtime limit",
        })
    }
}

/// The panic payload of a task that panicked.
///
/// The pool catches the panic, so the worker that ran the task carries on.
pub struct PanicPayload(Box<dyn Any + Send + 'static>);

impl PanicPayload {
    pub(crate) fn new(payload: Box<dyn Any + Send + 'static>) -> Self {
        PanicPayload(payload)
    }

    /// The panic message, when the payload is a string (as `panic!("...")` makes it).
    pub fn message(&self) -> Option<&str> {
        panic_message(&*self.0)
    }

    /// The raw payload, e.g. to resume the panic with [`std::panic::resume_unwind`].
    pub fn into_inner(self) -> Box<dyn Any + Send + 'static> {
        self.0
    }
}

impl fmt::Debug for PanicPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PanicPayload")
            .field(&self.message().unwrap_or("<non-string payload>"))
            .finish()
    }
}

/// How a task's future failed, as the pool sees it: with the task's own error,
/// or — for a retried task — with its last attempt cut by the attempt timeout.
pub(crate) enum Failure<E> {
    Failed(E),
    AttemptTimedOut {
        /// The attempt that timed out (1-based), and how many were allowed.
        attempt: u32,
        of: u32,
        after: Duration,
    },
}

/// How a task ended when it did not complete successfully.
///
/// Awaiting a [`TaskHandle`](super::TaskHandle) gives `Result<T, TaskError<E>>`;
/// every task ends in exactly one of these outcomes or in success.
#[non_exhaustive]
pub enum TaskError<E> {
    /// The task returned its own error.
    Failed(E),
    /// The task panicked; the pool kept running.
    Panicked(PanicPayload),
    /// The task was stopped before it finished.
    Cancelled(CancelReason),
    /// The task ran past its timeout and was stopped.
    TimedOut,
}

impl<E> TaskError<E> {
    /// True for [`TaskError::Failed`].
    pub fn is_failed(&self) -> bool {
        matches!(self, TaskError::Failed(_))
    }

    /// True for [`TaskError::Panicked`].
    pub fn is_panic(&self) -> bool {
        matches!(self, TaskError::Panicked(_))
    }

    /// True for [`TaskError::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        matches!(self, TaskError::Cancelled(_))
    }

    /// True for [`TaskError::TimedOut`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, TaskError::TimedOut)
    }

    /// The task's own error, if it failed.
    pub fn into_failed(self) -> Option<E> {
        match self {
            TaskError::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// The outcome this error stands for.
    pub fn kind(&self) -> OutcomeKind {
        match self {
            TaskError::Failed(_) => OutcomeKind::Failed,
            TaskError::Panicked(_) => OutcomeKind::Panicked,
            TaskError::Cancelled(_) => OutcomeKind::Cancelled,
            TaskError::TimedOut => OutcomeKind::TimedOut,
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for TaskError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
            TaskError::Panicked(p) => f.debug_tuple("Panicked").field(p).finish(),
            TaskError::Cancelled(r) => f.debug_tuple("Cancelled").field(r).finish(),
            TaskError::TimedOut => f.write_str("TimedOut"),
        }
    }
}

impl<E: fmt::Display> fmt::Display for TaskError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Failed(e) => write!(f, "task failed: {e}"),
            TaskError::Panicked(p) => match p.message() {
                Some(m) => write!(f, "task panicked: {m}"),
                None => f.write_str("task panicked"),
            },
            TaskError::Cancelled(r) => write!(f, "task {r}"),
            TaskError::TimedOut => f.write_str("task timed out"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for TaskError<E> {}

/// The terminal outcome of a task, without its value.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutcomeKind {
    /// Finished and succeeded.
    Completed,
    /// Finished with its own error.
    Failed,
    /// Panicked.
    Panicked,
    /// Stopped before it finished.
    Cancelled,
    /// Stopped by its timeout.
    TimedOut,
}
