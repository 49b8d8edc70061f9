//! Watching the cancellation token of a queued task.
//!
//! # Implementation notes
//!
//! A running task polls its own token (see `Extras::poll_limits`), but a queued
//! one is polled by nobody, and a paused pool may never dequeue it. So a task
//! spawned with a token gets a *watcher* once it is queued: a small tokio task
//! that waits for the token to fire or for the task to leave the queue,
//! whichever comes first. If the token fires first, the watcher takes the task
//! out of the queue (`Shared::cancel_queued`): its handle resolves as
//! `Cancelled(Token)`, its place is freed, and its future is dropped unpolled.
//!
//! The watcher learns that the task left the queue through a `oneshot` channel
//! whose sender sits in the task's options: the task drops it on its first poll
//! (a worker dequeued it), and it goes with the task in every other case
//! (cancelled, pool shut down). So a watcher never outlives its task's time in
//! the queue, and there is nothing to stop by hand.
//!
//! Cost: only tasks with a token pay — one tokio task and one channel
//! allocation each, while they are queued. A task without a token has no
//! watcher and its path is unchanged (no allocation, task or lock added).
//! Rejected: one watcher per pool polling every queued token; it would need a
//! shared set of token futures with its own lock, touched by every
//! token-bearing spawn and dequeue, for no saving in the common case of tasks
//! with no token at all.

use std::sync::Weak;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::id::TaskId;
use super::output::CancelReason;
use super::shared::Shared;

/// What a queued task's watcher waits on.
pub(crate) struct TokenWatch {
    pub(crate) token: CancellationToken,
    /// Resolves (with an error) when the task drops the sender: it left the queue.
    pub(crate) left_queue: oneshot::Receiver<()>,
}

/// The watcher of the queued task `id` (of `priority`, which says where to
/// look for it in the queue).
pub(crate) async fn watch_queued(pool: Weak<Shared>, watch: TokenWatch, id: TaskId, priority: i32) {
    let TokenWatch { token, left_queue } = watch;
    tokio::select! {
        // A task that already left is the running task's business: it polls
        // its token itself.
        biased;
        _ = left_queue => {}
        () = token.cancelled() => {
            if let Some(shared) = pool.upgrade() {
                shared.cancel_queued(id, Some(priority), CancelReason::Token);
            }
        }
    }
}
