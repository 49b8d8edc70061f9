//! [`DispatchReceiver`]: the consumer's end of a dispatcher.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tokio::task::JoinSet;

use super::super::channel::Receiver;
use super::shared::{lock, Shared, RECEIVER_GONE};

/// Results moved out of the channel per lock.
const BATCH: usize = 32;

/// The results of a [`Dispatcher`](super::Dispatcher)'s jobs, in completion
/// order; a [`Stream`] owned by the consumer (from
/// [`DispatcherBuilder::start`](super::DispatcherBuilder::start)).
///
/// The stream ends (`None`) once every worker has ended: after
/// [`done`](super::Dispatcher::done) (or dropping every dispatcher handle)
/// when the accepted jobs have run, or after a cancellation. Results that
/// had finished before a cancellation are still yielded first: none is
/// dropped.
///
/// Dropping the receiver before the end stops the dispatcher: running jobs
/// are cancelled, queued ones are kept as unstarted, and `dispatch` fails
/// with [`DispatchError::ReceiverGone`](super::DispatchError::ReceiverGone),
/// so a producer never waits for a consumer that is gone.
pub struct DispatchReceiver<R> {
    rx: Receiver<R>,
    waiter: Option<u64>,
    spins: u8,
    ready: VecDeque<R>,
    /// Every worker has ended (the channel said so).
    ended: bool,
    shared: Arc<dyn Stop<R>>,
    /// Owned with the dispatcher handles: the workers live while either does.
    _tasks: Arc<Mutex<JoinSet<()>>>,
}

/// What the receiver needs of the shared state, without its job and error types.
pub(super) trait Stop<R>: Send + Sync {
    fn receiver_gone(&self);
    fn take_late(&self) -> Option<R>;
}

impl<J: Send, R: Send, E: Send> Stop<R> for Shared<J, R, E> {
    fn receiver_gone(&self) {
        self.halt(RECEIVER_GONE);
    }

    fn take_late(&self) -> Option<R> {
        lock(&self.late).pop_front()
    }
}

impl<R> DispatchReceiver<R> {
    pub(super) fn new(
        rx: Receiver<R>,
        shared: Arc<dyn Stop<R>>,
        tasks: Arc<Mutex<JoinSet<()>>>,
    ) -> Self {
        DispatchReceiver {
            rx,
            waiter: None,
            spins: 0,
            ready: VecDeque::new(),
            ended: false,
            shared,
            _tasks: tasks,
        }
    }

    /// The next result; `None` at the end (see the type's docs).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a result is taken only when the future returns it.
    pub async fn recv(&mut self) -> Option<R> {
        self.next().await
    }
}

// Nothing in the receiver is pinned structurally: results are only moved in and out.
impl<R> Unpin for DispatchReceiver<R> {}

impl<R> Stream for DispatchReceiver<R> {
    type Item = R;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<R>> {
        let this = &mut *self;
        if let Some(r) = this.ready.pop_front() {
            return Poll::Ready(Some(r));
        }
        if !this.ended {
            match this.rx.poll_recv_many(
                cx,
                &mut this.waiter,
                &mut this.spins,
                &mut this.ready,
                BATCH,
            ) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(0) => this.ended = true,
                Poll::Ready(_) => return Poll::Ready(this.ready.pop_front()),
            }
        }
        // Every worker has ended (no result sender is left), so `late` is final.
        Poll::Ready(this.shared.take_late())
    }
}

impl<R> Drop for DispatchReceiver<R> {
    fn drop(&mut self) {
        self.rx.forget(&mut self.waiter);
        if !self.ended {
            self.shared.receiver_gone();
        }
    }
}

impl<R> fmt::Debug for DispatchReceiver<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DispatchReceiver")
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}
