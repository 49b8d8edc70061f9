//! Registered functions, type-erased: payload in, a future of the encoded answer out.
//!
//! # Implementation notes
//!
//! A handler decodes the arguments when the call starts, straight from the receive buffer
//! (the payload is borrowed from it, so nothing is copied or allocated for it), and returns a
//! future that owns everything it needs. Sync functions run on tokio's blocking threads and
//! encode their result there too, with their call's cancel [`Flag`] as the thread's current
//! call (see [`super::cancel`]); async functions run inside the serving task. The serving
//! loop catches panics around starting and polling every call, so a handler only catches them
//! itself where it must say which item of a `CALL_MANY` chunk panicked.

use std::fmt::Display;
use std::future::Future;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::cancel::{within_call, Flag};
use crate::protocol::{Encoding, ErrorBody, ErrorKind};

/// A call's answer: the encoded result, or the error to report.
pub(crate) type CallResult = Result<Vec<u8>, ErrorBody>;

/// A started call's answer.
pub(crate) type CallFuture = BoxFuture<'static, CallResult>;

/// A started call.
pub(crate) struct Started {
    pub(crate) fut: CallFuture,
    /// A sync call's cancel, which its function's thread sees: a cancel sets it, and the call
    /// is answered once the function returns. `None` for an async call (a cancel drops its
    /// future) or one that is over already.
    pub(crate) flag: Option<Arc<Flag>>,
}

/// One function a worker serves.
pub(crate) trait Handler: Send + Sync {
    /// Starts a call (`CALL`, or `CALL_FDS` with its descriptors).
    fn call(&self, encoding: Encoding, payload: &[u8], fds: Vec<OwnedFd>) -> Started;

    /// Starts a `CALL_MANY` chunk: the function on each item in order.
    fn call_many(&self, encoding: Encoding, payload: &[u8]) -> Started;

    /// Whether the function was registered to take file descriptors.
    fn takes_fds(&self) -> bool;
}

pub(crate) fn error(kind: ErrorKind, message: impl Into<String>) -> ErrorBody {
    ErrorBody {
        kind,
        message: message.into(),
        data: None,
    }
}

pub(crate) fn panicked(payload: Box<dyn std::any::Any + Send>) -> ErrorBody {
    let msg = crate::task::panic_message(&*payload).unwrap_or("<non-string panic payload>");
    error(ErrorKind::Panicked, format!("function panicked: {msg}"))
}

/// Item `index` of a chunk failed with `e`: the chunk's error, as the protocol shapes it.
fn at_item(index: usize, mut e: ErrorBody) -> ErrorBody {
    e.data = Some(serde_json::json!({ "index": index, "data": e.data.take() }));
    e
}

/// A call that is over before it started.
fn fail_now(e: ErrorBody) -> Started {
    unstoppable(futures::future::ready(Err(e)).boxed())
}

/// An async call (or one that is over): a cancel drops it.
fn unstoppable(fut: CallFuture) -> Started {
    Started { fut, flag: None }
}

/// The error of a call cancelled by the pool, once its function has ended.
pub(crate) fn cancelled(id: u64) -> ErrorBody {
    error(ErrorKind::Cancelled, format!("call {id} cancelled"))
}

fn decode<A: DeserializeOwned>(encoding: Encoding, payload: &[u8]) -> Result<A, ErrorBody> {
    encoding
        .decode(payload)
        .map_err(|e| error(ErrorKind::BadArgs, e.to_string()))
}

fn decode_items<A: DeserializeOwned>(
    encoding: Encoding,
    payload: &[u8],
) -> Result<Vec<A>, ErrorBody> {
    encoding.decode_seq(payload).map_err(|(at, e)| {
        let e = error(ErrorKind::BadArgs, e.to_string());
        match at {
            Some(index) => at_item(index, e),
            None => e,
        }
    })
}

fn encode<R: Serialize + ?Sized>(encoding: Encoding, value: &R) -> CallResult {
    encoding
        .encode_vec(value)
        .map_err(|e| error(ErrorKind::Internal, format!("result not encodable: {e}")))
}

/// What a function returned, as the call's answer: its value, or its own error.
fn answer<R: Serialize, E: Display>(encoding: Encoding, returned: Result<R, E>) -> CallResult {
    match returned {
        Ok(value) => encode(encoding, &value),
        Err(e) => Err(failed(e)),
    }
}

fn failed(e: impl Display) -> ErrorBody {
    error(ErrorKind::Failed, e.to_string())
}

/// A blocking task that did not return: it panicked, or the runtime is going away.
fn joined(e: tokio::task::JoinError) -> ErrorBody {
    match e.try_into_panic() {
        Ok(payload) => panicked(payload),
        Err(_) => error(
            ErrorKind::Cancelled,
            "call cancelled: the worker is stopping",
        ),
    }
}

/// A synchronous function, run on tokio's blocking threads. The marker ties
/// the argument, result and error types to the function.
pub(crate) struct SyncFn<F, A, R, E> {
    pub(crate) f: Arc<F>,
    pub(crate) takes_fds: bool,
    pub(crate) marker: Marker<A, (R, E)>,
}

/// Ties a handler's type parameters to it; `fn` keeps it `Send + Sync`.
pub(crate) type Marker<A, R> = PhantomData<fn(A) -> R>;

impl<F, A, R, E> Handler for SyncFn<F, A, R, E>
where
    F: Fn(A, Vec<OwnedFd>) -> Result<R, E> + Send + Sync + 'static,
    A: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    E: Display + Send + 'static,
{
    fn call(&self, encoding: Encoding, payload: &[u8], fds: Vec<OwnedFd>) -> Started {
        let args: A = match decode(encoding, payload) {
            Ok(args) => args,
            Err(e) => return fail_now(e),
        };
        let f = Arc::clone(&self.f);
        let flag = Arc::new(Flag::default());
        let theirs = Arc::clone(&flag);
        // The result is encoded on the blocking thread too: it may be large.
        let task = tokio::task::spawn_blocking(move || {
            within_call(Some(theirs), || answer(encoding, f(args, fds))).0
        });
        Started {
            fut: async move { task.await.unwrap_or_else(|e| Err(joined(e))) }.boxed(),
            flag: Some(flag),
        }
    }

    fn call_many(&self, encoding: Encoding, payload: &[u8]) -> Started {
        let items: Vec<A> = match decode_items(encoding, payload) {
            Ok(items) => items,
            Err(e) => return fail_now(e),
        };
        let f = Arc::clone(&self.f);
        let flag = Arc::new(Flag::default());
        let theirs = Arc::clone(&flag);
        // One blocking task for the whole chunk: a trivial item costs less than a thread hop.
        let task = tokio::task::spawn_blocking(move || {
            within_call(Some(Arc::clone(&theirs)), || {
                let mut results = Vec::with_capacity(items.len());
                for (index, item) in items.into_iter().enumerate() {
                    if theirs.is_set() {
                        // Cancelled: the items left are not started (the call is answered
                        // `cancelled` by the serving loop).
                        return Err(error(ErrorKind::Cancelled, "chunk cancelled"));
                    }
                    match std::panic::catch_unwind(AssertUnwindSafe(|| f(item, Vec::new()))) {
                        Ok(Ok(value)) => results.push(value),
                        Ok(Err(e)) => return Err(at_item(index, failed(e))),
                        Err(payload) => return Err(at_item(index, panicked(payload))),
                    }
                }
                encode(encoding, &results)
            })
            .0
        });
        Started {
            fut: async move { task.await.unwrap_or_else(|e| Err(joined(e))) }.boxed(),
            flag: Some(flag),
        }
    }

    fn takes_fds(&self) -> bool {
        self.takes_fds
    }
}

/// An async function, run inside the worker's serving task.
pub(crate) struct AsyncFn<F, A, R, E, Fut> {
    pub(crate) f: Arc<F>,
    pub(crate) takes_fds: bool,
    pub(crate) marker: Marker<A, (R, E, Fut)>,
}

impl<F, A, R, E, Fut> Handler for AsyncFn<F, A, R, E, Fut>
where
    F: Fn(A, Vec<OwnedFd>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    A: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    E: Display + Send + 'static,
{
    fn call(&self, encoding: Encoding, payload: &[u8], fds: Vec<OwnedFd>) -> Started {
        let args: A = match decode(encoding, payload) {
            Ok(args) => args,
            Err(e) => return fail_now(e),
        };
        // Called now, not in the future: the future then needs no handle on `f`.
        let fut = (self.f)(args, fds);
        unstoppable(async move { answer(encoding, fut.await) }.boxed())
    }

    fn call_many(&self, encoding: Encoding, payload: &[u8]) -> Started {
        let items: Vec<A> = match decode_items(encoding, payload) {
            Ok(items) => items,
            Err(e) => return fail_now(e),
        };
        let f = Arc::clone(&self.f);
        let fut = async move {
            let mut results = Vec::with_capacity(items.len());
            for (index, item) in items.into_iter().enumerate() {
                // Caught per item, so the error can name it; `f` runs inside the guard too.
                match AssertUnwindSafe(async { f(item, Vec::new()).await })
                    .catch_unwind()
                    .await
                {
                    Ok(Ok(value)) => results.push(value),
                    Ok(Err(e)) => return Err(at_item(index, failed(e))),
                    Err(payload) => return Err(at_item(index, panicked(payload))),
                }
            }
            encode(encoding, &results)
        }
        .boxed();
        unstoppable(fut)
    }

    fn takes_fds(&self) -> bool {
        self.takes_fds
    }
}
