//! Registered functions, type-erased: payload in, payload or error out.

use std::fmt::Display;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::protocol::{Encoding, ErrorBody, ErrorKind};

pub(crate) type CallResult = Result<Bytes, ErrorBody>;

/// One function a worker serves.
pub(crate) trait Handler: Send + Sync {
    fn call(&self, encoding: Encoding, payload: Bytes) -> BoxFuture<'static, CallResult>;
}

pub(crate) fn error(kind: ErrorKind, message: impl Into<String>) -> ErrorBody {
    ErrorBody {
        kind,
        message: message.into(),
        data: None,
    }
}

fn decode<A: DeserializeOwned>(encoding: Encoding, payload: &[u8]) -> Result<A, ErrorBody> {
    encoding
        .decode(payload)
        .map_err(|e| error(ErrorKind::BadArgs, e.to_string()))
}

fn encode<R: Serialize>(encoding: Encoding, value: &R) -> CallResult {
    encoding
        .encode(value)
        .map_err(|e| error(ErrorKind::Internal, format!("result not encodable: {e}")))
}

/// What a function returned, as the call's answer: its value, or its own error.
fn answer<R: Serialize, E: Display>(encoding: Encoding, returned: Result<R, E>) -> CallResult {
    match returned {
        Ok(value) => encode(encoding, &value),
        Err(e) => Err(error(ErrorKind::Failed, e.to_string())),
    }
}

fn panicked(payload: Box<dyn std::any::Any + Send>) -> ErrorBody {
    let msg = crate::task::panic_message(&*payload).unwrap_or("<non-string panic payload>");
    error(ErrorKind::Panicked, format!("function panicked: {msg}"))
}

/// A synchronous function, run on tokio's blocking threads. The marker ties
/// the argument, result and error types to the function.
pub(crate) struct SyncFn<F, A, R, E>(pub(crate) Arc<F>, pub(crate) PhantomData<fn(A) -> (R, E)>);

impl<F, A, R, E> Handler for SyncFn<F, A, R, E>
where
    F: Fn(A) -> Result<R, E> + Send + Sync + 'static,
    A: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    E: Display + Send + 'static,
{
    fn call(&self, encoding: Encoding, payload: Bytes) -> BoxFuture<'static, CallResult> {
        let f = Arc::clone(&self.0);
        async move {
            let args: A = decode(encoding, &payload)?;
            match tokio::task::spawn_blocking(move || f(args)).await {
                Ok(returned) => answer(encoding, returned),
                Err(join) => match join.try_into_panic() {
                    Ok(payload) => Err(panicked(payload)),
                    Err(_) => Err(error(ErrorKind::Cancelled, "call cancelled")),
                },
            }
        }
        .boxed()
    }
}

/// An async function, run on the worker's runtime.
pub(crate) struct AsyncFn<F, A, R, E, Fut>(pub(crate) Arc<F>, pub(crate) Marker<A, (R, E, Fut)>);

/// Ties a handler's type parameters to it; `fn` keeps it `Send + Sync`.
pub(crate) type Marker<A, R> = PhantomData<fn(A) -> R>;

impl<F, A, R, E, Fut> Handler for AsyncFn<F, A, R, E, Fut>
where
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    A: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    E: Display + Send + 'static,
{
    fn call(&self, encoding: Encoding, payload: Bytes) -> BoxFuture<'static, CallResult> {
        let f = Arc::clone(&self.0);
        async move {
            let args: A = decode(encoding, &payload)?;
            match AssertUnwindSafe(f(args)).catch_unwind().await {
                Ok(returned) => answer(encoding, returned),
                Err(payload) => Err(panicked(payload)),
            }
        }
        .boxed()
    }
}
