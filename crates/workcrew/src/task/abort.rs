//! Cancel reasons as bits, and the per-worker abort signal.
//!
//! A running task can be stopped two ways: its own handle
//! ([`TaskHandle::abort`](super::TaskHandle::abort), recorded in the task's
//! completion) or the pool (shutdown, runtime limit), recorded in the
//! [`SlotAbort`] of the worker running it. The latter is allocated once per
//! worker, not per task, so running a task costs no extra allocation or
//! reference count for it.

use std::sync::atomic::{AtomicU8, Ordering};
use std::task::Waker;

use futures::task::AtomicWaker;

use super::output::CancelReason;

/// Encodes a reason as a non-zero number (0 means none).
pub(crate) fn encode(reason: CancelReason) -> u8 {
    match reason {
        CancelReason::Aborted => 1,
        CancelReason::Token => 2,
        CancelReason::Shutdown => 3,
        CancelReason::RuntimeLimit => 4,
    }
}

pub(crate) fn decode(code: u8) -> Option<CancelReason> {
    match code {
        0 => None,
        1 => Some(CancelReason::Aborted),
        2 => Some(CancelReason::Token),
        3 => Some(CancelReason::Shutdown),
        _ => Some(CancelReason::RuntimeLimit),
    }
}

/// The pool's request to stop whatever task a worker runs now.
#[derive(Default)]
pub(crate) struct SlotAbort {
    reason: AtomicU8,
    waker: AtomicWaker,
}

impl SlotAbort {
    /// Clears the signal for the next task; called under the pool lock as the
    /// task starts, so a later abort cannot be lost.
    pub(crate) fn reset(&self) {
        self.reason.store(0, Ordering::Release);
    }

    pub(crate) fn abort(&self, reason: CancelReason) {
        let _ =
            self.reason
                .compare_exchange(0, encode(reason), Ordering::AcqRel, Ordering::Acquire);
        self.waker.wake();
    }

    pub(crate) fn reason(&self) -> Option<CancelReason> {
        decode(self.reason.load(Ordering::Acquire))
    }

    pub(crate) fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }
}
