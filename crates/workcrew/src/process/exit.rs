//! Why and how a worker process ended: typed data on [`CallError::WorkerLost`] and on
//! [`ProcessEvent::Exited`], not text to parse.
//!
//! [`CallError::WorkerLost`]: super::CallError::WorkerLost
//! [`ProcessEvent::Exited`]: super::ProcessEvent::Exited

use std::fmt;
use std::os::unix::process::ExitStatusExt;

use super::events::RecycleReason;

/// How a worker process ended, as the system reports it.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProcessExit {
    /// It exited with this code.
    Code(i32),
    /// This signal ended it (9 is `SIGKILL`, which the pool sends when it kills a worker).
    Signal(i32),
    /// It could not be waited for, so how it ended is not known.
    Unknown,
}

impl ProcessExit {
    pub(crate) fn of(status: std::process::ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => ProcessExit::Code(code),
            (None, Some(signal)) => ProcessExit::Signal(signal),
            _ => ProcessExit::Unknown,
        }
    }
}

impl fmt::Display for ProcessExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessExit::Code(code) => write!(f, "exit code {code}"),
            ProcessExit::Signal(signal) => write!(f, "killed by signal {signal}"),
            ProcessExit::Unknown => f.write_str("exit status unknown"),
        }
    }
}

/// Why a worker left the pool.
///
/// The first variant is a worker that ended on its own; every other one names what the pool
/// did and why. The process's own exit status travels beside it as a [`ProcessExit`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// It ended without the pool asking: it exited, or a signal the pool did not send ended it
    /// (a crash, an abort, the system's memory or CPU limit, another process).
    Ended(ProcessExit),
    /// It broke the protocol (`docs/protocol.md`): a malformed or oversize frame, a message it
    /// must not send, an answer to a call it does not hold. The pool killed it.
    ProtocolViolation {
        /// What it sent, in words.
        what: String,
    },
    /// It left three heartbeat intervals of pings unanswered; the pool killed it as hung.
    HeartbeatMissed,
    /// A call it held was given up (timed out, cancelled by its token, its future dropped) and
    /// the worker did not answer the `CANCEL` within the cancel grace; the pool killed it
    /// (after its other calls, within one more grace).
    CancelIgnored {
        /// The first such call.
        call_id: u64,
    },
    /// The pool retired it (it exits once its calls are done, or is killed after the stop
    /// timeout).
    Recycled(RecycleReason),
    /// The pool stopped ([`stop`](super::ProcessPool::stop) and its variants, or its last
    /// handle was dropped).
    Stopped,
}

impl ExitReason {
    /// Whether the pool ended the worker (every reason but [`Ended`](Self::Ended)).
    pub fn by_pool(&self) -> bool {
        !matches!(self, ExitReason::Ended(_))
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Ended(exit) => write!(f, "it ended on its own ({exit})"),
            ExitReason::ProtocolViolation { what } => write!(f, "it broke the protocol: {what}"),
            ExitReason::HeartbeatMissed => f.write_str("it stopped answering heartbeats"),
            ExitReason::CancelIgnored { call_id } => {
                write!(f, "it did not answer the cancel of call {call_id} in time")
            }
            ExitReason::Recycled(reason) => write!(f, "it was recycled ({reason:?})"),
            ExitReason::Stopped => f.write_str("the pool stopped"),
        }
    }
}
