//! Per-call options, the typed function handle, and batched `map`.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesOrdered, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::error::CallError;
use super::pool::ProcessPool;

/// Options for one call ([`ProcessPool::call_with`]).
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) token: Option<CancellationToken>,
    pub(crate) retries: Option<u32>,
}

impl CallOptions {
    /// Default options: the pool's call timeout, no token, the function's retries.
    pub fn new() -> Self {
        Self::default()
    }

    /// A timeout for this call, replacing the pool's.
    #[must_use]
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Cancels the call when `token` fires: a queued call is withdrawn, a
    /// running one gets `CANCEL`; the call fails with
    /// [`CallError::Cancelled`].
    #[must_use]
    pub fn token(mut self, token: CancellationToken) -> Self {
        self.token = Some(token);
        self
    }

    /// Sends the call again, up to `n` times, if its worker dies while
    /// holding it (replacing the function's setting from
    /// [`retry_function`](super::ProcessPoolBuilder::retry_function)). Only
    /// for calls that are safe to run twice.
    #[must_use]
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = Some(n);
        self
    }
}

/// A typed handle for one function of a [`ProcessPool`]; made by
/// [`ProcessPool::function`]. Cheap to clone.
pub struct Function<A, R> {
    pool: ProcessPool,
    name: Arc<str>,
    types: PhantomData<fn(A) -> R>,
}

impl<A, R> Clone for Function<A, R> {
    fn clone(&self) -> Self {
        Function {
            pool: self.pool.clone(),
            name: Arc::clone(&self.name),
            types: PhantomData,
        }
    }
}

impl<A, R> std::fmt::Debug for Function<A, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function")
            .field("name", &self.name)
            .finish()
    }
}

impl<A, R> Function<A, R>
where
    A: Serialize,
    R: DeserializeOwned,
{
    pub(crate) fn new(pool: ProcessPool, name: Arc<str>) -> Self {
        Function {
            pool,
            name,
            types: PhantomData,
        }
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Calls it; see [`ProcessPool::call`].
    ///
    /// # Errors
    ///
    /// As [`ProcessPool::call`].
    ///
    /// # Cancel safety
    ///
    /// As [`ProcessPool::call`].
    pub async fn call(&self, args: &A) -> Result<R, CallError> {
        self.call_with(args, &CallOptions::default()).await
    }

    /// Calls it with options; see [`ProcessPool::call_with`].
    ///
    /// # Errors
    ///
    /// As [`ProcessPool::call_with`].
    ///
    /// # Cancel safety
    ///
    /// As [`ProcessPool::call`].
    pub async fn call_with(&self, args: &A, options: &CallOptions) -> Result<R, CallError> {
        let result = self
            .pool
            .call_raw(Arc::clone(&self.name), args, false, options, true)
            .await
            .and_then(|bytes| self.pool.decode(&self.name, &bytes));
        self.pool.inner.counters.record(&result);
        result
    }

    /// Calls it on every item; see [`ProcessPool::map`].
    ///
    /// # Errors
    ///
    /// As [`ProcessPool::map`].
    ///
    /// # Cancel safety
    ///
    /// As [`ProcessPool::map`].
    pub async fn map<I>(&self, items: I) -> Result<Vec<R>, CallError>
    where
        I: IntoIterator<Item = A>,
    {
        self.pool.map_named(Arc::clone(&self.name), items).await
    }
}

/// Items per `CALL_MANY` chunk in [`ProcessPool::map`].
const CHUNK: usize = 1024;

impl ProcessPool {
    /// Calls `function` on every item and returns the results in input
    /// order. Items travel in chunks (one `CALL_MANY` frame of up to 1024
    /// items each, to workers that accept them; one call per item
    /// otherwise), several chunks in flight at once, so trivial items cost
    /// little more than their encoding.
    ///
    /// ```no_run
    /// # async fn demo(pool: workcrew::process::ProcessPool) -> Result<(), workcrew::process::CallError> {
    /// let squares: Vec<u64> = pool.map("square", 0..10_000u64).await?;
    /// assert_eq!(squares[3], 9);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The first failing item, as [`CallError::Item`] with its index in the
    /// input and its own error; or an error of a whole chunk (its worker was
    /// lost, it timed out). The remaining chunks are withdrawn.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future withdraws queued chunks and cancels running ones.
    pub async fn map<A, R, I>(&self, function: &str, items: I) -> Result<Vec<R>, CallError>
    where
        A: Serialize,
        R: DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        self.map_named(Arc::from(function), items).await
    }

    pub(crate) async fn map_named<A, R, I>(
        &self,
        function: Arc<str>,
        items: I,
    ) -> Result<Vec<R>, CallError>
    where
        A: Serialize,
        R: DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        let (batch, capacity) = self.batch_support(&function);
        let chunk = if batch { CHUNK } else { 1 };
        // Enough chunks in flight to keep every worker slot busy, twice over.
        let window = (capacity * 2).max(2);
        let mut items = items.into_iter();
        let mut results: Vec<R> = Vec::with_capacity(items.size_hint().0);
        let options = CallOptions::default();
        let mut running = FuturesOrdered::new();
        let mut next_index = 0usize;
        loop {
            while running.len() < window {
                let part: Vec<A> = items.by_ref().take(chunk).collect();
                if part.is_empty() {
                    break;
                }
                let (start, len) = (next_index, part.len());
                next_index += len;
                let pool = self.clone();
                let name = Arc::clone(&function);
                let options = &options;
                running.push_back(async move {
                    let answer = if batch {
                        pool.call_raw(Arc::clone(&name), &part, true, options, true)
                            .await
                            .and_then(|b| pool.decode::<Vec<R>>(&name, &b))
                    } else {
                        pool.call_raw(Arc::clone(&name), &part[0], false, options, true)
                            .await
                            .and_then(|b| pool.decode::<R>(&name, &b))
                            .map(|r| vec![r])
                    };
                    (start, len, answer)
                });
            }
            let Some((start, len, answer)) = running.next().await else {
                break;
            };
            // Each chunk is one call in the pool's counts.
            self.inner.counters.record(&answer);
            match answer {
                Ok(part) if part.len() == len => results.extend(part),
                Ok(part) => {
                    return Err(CallError::Worker {
                        function: function.to_string(),
                        message: format!(
                            "answered {} results for a chunk of {len} items",
                            part.len()
                        ),
                        data: None,
                    })
                }
                Err(e) => return Err(item_error(start, batch, e)),
            }
        }
        Ok(results)
    }

    /// Whether every live worker serving `function` accepts `CALL_MANY`, and
    /// the total calls they may hold at once.
    fn batch_support(&self, function: &str) -> (bool, usize) {
        let st = self.inner.lock();
        let serving: Vec<_> = st
            .workers
            .iter()
            .filter(|w| w.handle.functions.contains(function))
            .collect();
        let batch = !serving.is_empty() && serving.iter().all(|w| w.handle.batch);
        let capacity = serving.iter().map(|w| w.limit).sum::<usize>().max(1);
        (batch, capacity)
    }
}

/// A chunk's error, with the failing item's index counted from the start
/// of the input. One-item calls name their item; chunk errors name it when
/// the worker did (`CALL_MANY` errors carry the index); errors of the whole
/// chunk (a lost worker, a timeout) stay as they are.
fn item_error(start: usize, batch: bool, e: CallError) -> CallError {
    match e {
        CallError::Item { index, source } => CallError::Item {
            index: start + index,
            source,
        },
        e if !batch => CallError::Item {
            index: start,
            source: Box::new(e),
        },
        e => e,
    }
}
