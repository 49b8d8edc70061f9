//! The source task: numbers the input items and feeds the first channel.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::Semaphore;

use super::channel::{Sender, TrySendError};
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

/// Sends one item; false once nobody will take items any more.
async fn feed<T, E>(tx: &Sender<Env<T, E>>, index: u64, item: T) -> bool {
    match tx.try_send(Env {
        index,
        item: Ok(item),
    }) {
        Ok(()) => true,
        Err(TrySendError::Closed(_)) => false,
        Err(TrySendError::Full(env)) => tx.send(env).await.is_ok(),
    }
}

/// Feeds `stream` into the pipeline (also for `from_iter`, via
/// `futures::stream::iter`). Runs as a task on the runtime; producing an item
/// should be cheap (use a blocking stage for heavy work).
pub(crate) async fn from_stream<S, T, E>(
    stream: S,
    tx: Sender<Env<T, E>>,
    window: Option<Arc<Semaphore>>,
    run: Arc<RunShared<E>>,
) where
    S: Stream<Item = T>,
{
    let mut stream = std::pin::pin!(stream);
    let mut index = 0u64;
    while let Some(item) = stream.next().await {
        if !admit(window.as_deref()).await || !feed(&tx, index, item).await {
            return;
        }
        index += 1;
        run.produced.store(index, Ordering::Relaxed);
        tokio::task::consume_budget().await;
    }
}
