//! The source task: numbers the input items and feeds the first channel.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use tokio::sync::Semaphore;

use super::channel::Sender;
use super::run::{Env, RunShared};

/// Admits one item into an ordered run's window; false if the run stopped.
async fn admit(window: Option<&Semaphore>) -> bool {
    match window {
        None => true,
        Some(w) => match w.acquire().await {
            Ok(permit) => {
                // Given back by the output stream when this item is delivered.
                permit.forget();
                true
            }
            Err(_) => false,
        },
    }
}

/// Takes one permit of the window if one is free now.
fn try_admit(window: Option<&Semaphore>) -> bool {
    match window {
        None => true,
        Some(w) => match w.try_acquire() {
            Ok(permit) => {
                permit.forget();
                true
            }
            Err(_) => false,
        },
    }
}

/// Gives back a permit taken for an item that did not come.
fn unadmit(window: Option<&Semaphore>) {
    if let Some(w) = window {
        w.add_permits(1);
    }
}

/// Items the source moves into the first channel at once, at most (and at
/// most the channel's capacity, so it never holds more than a full channel's
/// worth of items back).
const BATCH: usize = 32;

/// How long the source keeps taking ready items before it hands them on: an
/// expensive stream (items that take long to produce) must not keep the first
/// stage waiting for a whole batch.
const BATCH_TIME: Duration = Duration::from_micros(10);

/// The source reads the clock for [`BATCH_TIME`] once per this many items.
const CLOCK_EVERY: usize = 16;

/// Feeds `stream` into the pipeline (also for `from_iter`, via
/// `futures::stream::iter`). Runs as a task on the runtime; producing an item
/// should be cheap (use a blocking stage for heavy work).
///
/// The first item of a batch is waited for; then the source takes more only
/// while the stream has them ready (and, ordered, while the window has room),
/// and moves the batch with one lock and one round of wake-ups.
pub(crate) async fn from_stream<S, T, E>(
    stream: S,
    tx: Sender<Env<T, E>>,
    window: Option<Arc<Semaphore>>,
    run: Arc<RunShared<E>>,
) where
    S: Stream<Item = T>,
{
    let mut stream = std::pin::pin!(stream);
    let window = window.as_deref();
    let limit = BATCH.min(tx.capacity().max(1));
    let mut batch = VecDeque::with_capacity(limit);
    let mut index = 0u64;
    loop {
        if !admit(window).await {
            return;
        }
        let Some(item) = stream.next().await else {
            return;
        };
        batch.push_back(Env {
            index,
            item: Ok(item),
        });
        index += 1;
        let started = Instant::now();
        let ended = std::future::poll_fn(|cx| {
            while batch.len() < limit
                // The clock every few items only: a read costs about as much as
                // moving a quick item through a stage (measured: ~8% of the
                // no-op benchmark when read per item).
                && (batch.len() % CLOCK_EVERY != 0 || started.elapsed() < BATCH_TIME)
                && try_admit(window)
            {
                match stream.as_mut().poll_next(cx) {
                    Poll::Ready(Some(item)) => {
                        batch.push_back(Env {
                            index,
                            item: Ok(item),
                        });
                        index += 1;
                    }
                    Poll::Ready(None) => {
                        unadmit(window);
                        return Poll::Ready(true);
                    }
                    Poll::Pending => {
                        unadmit(window);
                        break;
                    }
                }
            }
            Poll::Ready(false)
        })
        .await;
        run.produced.store(index, Ordering::Relaxed);
        if tx.send_all(&mut batch).await.is_err() || ended {
            return;
        }
        tokio::task::consume_budget().await;
    }
}
