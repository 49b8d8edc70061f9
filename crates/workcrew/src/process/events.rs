//! What happens to a process pool's workers, as a stream of events.

use super::exit::{ExitReason, ProcessExit};

/// An event from [`ProcessPool::events`](super::ProcessPool::events).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessEvent {
    /// A worker process was started (not yet ready).
    Spawned {
        /// The pool's number for the worker (1, 2, ...).
        worker: u64,
        /// Its process id.
        pid: u32,
    },
    /// A worker completed its handshake and takes calls.
    Ready {
        /// The pool's number for the worker.
        worker: u64,
        /// Its process id.
        pid: u32,
        /// The functions it serves.
        functions: Vec<String>,
    },
    /// A worker could not be started.
    SpawnFailed {
        /// Why.
        error: String,
    },
    /// A worker was told to stop after its calls, and why.
    Recycled {
        /// The pool's number for the worker.
        worker: u64,
        /// Its process id.
        pid: u32,
        /// Why it is replaced.
        reason: RecycleReason,
    },
    /// A worker process ended (it has left the pool and been reaped).
    Exited {
        /// The pool's number for the worker.
        worker: u64,
        /// Its process id.
        pid: u32,
        /// Its exit code or signal.
        status: ProcessExit,
        /// Why it ended.
        reason: ExitReason,
        /// Whether the pool meant it to stop (recycled, idle, stopped). A worker the pool
        /// killed for misbehaving was not meant to stop: it counts against the restart budget.
        expected: bool,
        /// Calls it held that failed as lost.
        lost_calls: usize,
    },
    /// A call whose worker died was sent again (it allows retries).
    CallRetried {
        /// The call.
        call_id: u64,
        /// Its function.
        function: String,
        /// Retries left after this one.
        retries_left: u32,
    },
    /// The restart budget ran out: dead workers are no longer replaced.
    CrashLoop {
        /// Restarts within the window.
        restarts: usize,
    },
    /// `stop` finished: every call settled, every worker reaped. The last event.
    Stopped,
    /// This subscriber fell behind and missed this many events.
    Lagged(u64),
}

/// Why a worker was retired.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecycleReason {
    /// It was sent the configured number of calls.
    Calls,
    /// Its resident memory passed the limit.
    Memory,
    /// It reached its maximum age.
    Age,
    /// It was idle past the idle timeout, above the minimum workers.
    Idle,
    /// `recycle()` or `reload()` replaced its generation.
    Reload,
    /// A call it held ignored `CANCEL` past the grace period: it finishes its
    /// other calls (within one more grace), then is killed.
    Unresponsive,
}
