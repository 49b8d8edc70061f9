//! The broadcast behind every typed event stream of the crate (task pools,
//! process pools and pipelines): cheap when nobody listens, lag reported as an
//! event, and an end marker that finishes every stream.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream, StreamExt};
use tokio::sync::broadcast;

/// Sends events of type `E` to subscribers. `None` on the channel ends every
/// stream.
pub(crate) struct Hub<E> {
    tx: broadcast::Sender<Option<E>>,
    subscribers: Arc<AtomicUsize>,
    ended: AtomicBool,
    /// Makes the event that tells a slow subscriber how many it missed.
    lagged: fn(u64) -> E,
}

impl<E: Clone + Send + 'static> Hub<E> {
    pub(crate) fn new(capacity: usize, lagged: fn(u64) -> E) -> Self {
        Hub {
            tx: broadcast::channel(capacity).0,
            subscribers: Arc::new(AtomicUsize::new(0)),
            ended: AtomicBool::new(false),
            lagged,
        }
    }

    /// Whether anyone listens; callers skip building events when not.
    pub(crate) fn active(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn send(&self, event: E) {
        if self.active() {
            // An error only means every receiver went away meanwhile.
            let _ = self.tx.send(Some(event));
        }
    }

    /// Ends every stream, once; later subscribers get an empty stream.
    pub(crate) fn end(&self) {
        if !self.ended.swap(true, Ordering::AcqRel) {
            let _ = self.tx.send(None);
        }
    }

    pub(crate) fn subscribe(&self) -> Subscription<E> {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        let rx = self.tx.subscribe();
        let ended = self.ended.load(Ordering::Acquire);
        let lagged = self.lagged;
        let inner = futures::stream::unfold((rx, ended), move |(mut rx, ended)| async move {
            if ended {
                return None;
            }
            match rx.recv().await {
                Ok(Some(event)) => Some((event, (rx, false))),
                Ok(None) | Err(broadcast::error::RecvError::Closed) => None,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    Some((lagged(missed), (rx, false)))
                }
            }
        })
        .boxed();
        Subscription {
            inner,
            subscribers: Arc::clone(&self.subscribers),
        }
    }
}

/// One subscriber's stream; counts itself out of the hub when dropped.
pub(crate) struct Subscription<E> {
    inner: BoxStream<'static, E>,
    subscribers: Arc<AtomicUsize>,
}

impl<E> Stream for Subscription<E> {
    type Item = E;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<E>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl<E> Drop for Subscription<E> {
    fn drop(&mut self) {
        self.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}
