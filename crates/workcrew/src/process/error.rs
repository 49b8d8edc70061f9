//! Errors of starting a pool and of calls.

use std::time::Duration;

use super::exit::{ExitReason, ProcessExit};
use crate::protocol::PayloadError;

/// The pool could not start.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The worker program could not be started.
    #[error("cannot start worker program {program:?}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A worker did not say `HELLO` within the ready timeout (it was killed).
    #[error("worker pid {pid} not ready within {timeout:?}")]
    NotReady {
        /// Its process id.
        pid: u32,
        /// The ready timeout.
        timeout: Duration,
    },
    /// A worker broke the handshake (exited, or sent something else).
    #[error("worker pid {pid} failed the handshake: {reason}")]
    Handshake {
        /// Its process id.
        pid: u32,
        /// What went wrong.
        reason: String,
    },
}

/// A call did not return a value.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The function returned its own error.
    #[error("{function} failed: {message}")]
    Failed {
        /// The function.
        function: String,
        /// Its error message.
        message: String,
        /// Details it attached.
        data: Option<serde_json::Value>,
    },
    /// The function crashed (exception, panic); the worker went on.
    #[error("{function} panicked: {message}")]
    Panicked {
        /// The function.
        function: String,
        /// The panic message.
        message: String,
    },
    /// No worker serves this function.
    #[error("no worker serves a function named {0:?}")]
    UnknownFunction(String),
    /// The worker could not decode the arguments.
    #[error("{function} rejected its arguments: {message}")]
    BadArgs {
        /// The function.
        function: String,
        /// The worker's message.
        message: String,
    },
    /// The worker process ended while holding the call: why, and its exit status.
    #[error("worker pid {pid} was lost during call {call_id}: {reason} ({status})")]
    WorkerLost {
        /// Its process id.
        pid: u32,
        /// The call.
        call_id: u64,
        /// Why it ended: on its own, or killed or stopped by the pool (and why).
        reason: ExitReason,
        /// Its exit code or signal.
        status: ProcessExit,
    },
    /// The call carries file descriptors, but no worker serving the function
    /// accepts them (its `HELLO` did not say `fds: true`).
    #[error("no worker serving {0:?} accepts file descriptors")]
    NoFdPassing(String),
    /// The pool has no live worker and cannot start one.
    #[error("process pool has no live worker")]
    NoWorkers,
    /// The pool is stopping or stopped: it takes no new calls.
    #[error("process pool is stopped")]
    Stopped,
    /// The pool queue is full (from `try_call`; `call` waits for room instead).
    #[error("process pool queue is full")]
    QueueFull,
    /// The call was cancelled by its token (before it was sent, or while it ran: then its
    /// worker was told to stop it).
    #[error("call {call_id} to {function} was cancelled")]
    Cancelled {
        /// The function.
        function: String,
        /// The call.
        call_id: u64,
    },
    /// The arguments do not fit in one frame: the call was not sent.
    #[error("a call to {function} takes a frame of {size} bytes, above the maximum frame size of {max} bytes")]
    TooLarge {
        /// The function.
        function: String,
        /// The frame's `length`, as `docs/protocol.md` (section 2) counts it.
        size: usize,
        /// The maximum frame size.
        max: usize,
    },
    /// Item `index` of a [`map`](super::ProcessPool::map) failed.
    #[error("item {index} of a map failed")]
    Item {
        /// The item's position in the input.
        index: usize,
        /// Its error.
        #[source]
        source: Box<CallError>,
    },
    /// The call ran past the pool's call timeout; the worker was told to
    /// cancel it (and is killed if it does not).
    #[error("call {call_id} to {function} timed out after {timeout:?}")]
    TimedOut {
        /// The function.
        function: String,
        /// The call.
        call_id: u64,
        /// The limit.
        timeout: std::time::Duration,
    },
    /// Workers kept dying: the restart budget ran out and none is left.
    #[error("worker restart budget of {restarts} within {window:?} exhausted; no longer replacing workers")]
    CrashLoop {
        /// Restarts allowed (and made) within the window.
        restarts: usize,
        /// The budget's window.
        window: std::time::Duration,
    },
    /// The arguments could not be encoded, or the result decoded.
    #[error("payload of a call to {function}")]
    Payload {
        /// The function.
        function: String,
        /// The codec's error.
        #[source]
        source: PayloadError,
    },
    /// The worker reported another error kind (cancelled, too large, internal).
    #[error("{function}: {message}")]
    Worker {
        /// The function.
        function: String,
        /// The worker's message.
        message: String,
        /// Details it attached.
        data: Option<serde_json::Value>,
    },
}

impl CallError {
    /// True if the worker died with the call.
    pub fn is_worker_lost(&self) -> bool {
        matches!(self, CallError::WorkerLost { .. })
    }

    /// True if the call timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, CallError::TimedOut { .. })
    }

    /// True if the call was cancelled by its token.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, CallError::Cancelled { .. })
    }
}
