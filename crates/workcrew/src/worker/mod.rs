//! The Rust worker SDK: serve named functions to a process pool.
//!
//! A worker is an ordinary program. It registers functions — synchronous
//! ones run on tokio's blocking threads, async ones on its runtime — and
//! serves them over the channel the pool gives it (`docs/protocol.md`).
//! Arguments and results are serde values; a function's `Err` comes back to
//! the caller as a `failed` error and a panic as `panicked`, and the worker
//! keeps serving either way.
//!
//! ```no_run
//! use workcrew::worker::Worker;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), workcrew::worker::ServeError> {
//!     Worker::builder()
//!         .function("add", |(a, b): (i64, i64)| Ok::<_, String>(a + b))
//!         .async_function("greet", |name: String| async move { Ok::<_, String>(format!("hello {name}")) })
//!         .concurrency(4)
//!         .build()
//!         .serve()
//!         .await
//! }
//! ```
//!
//! The process pool that starts such workers is not built yet (see the README).

mod handler;
mod serve;

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

use crate::protocol::{Encoding, FrameError, MessageError};
use handler::Handler;

/// A set of functions ready to serve.
pub struct Worker {
    functions: HashMap<String, Arc<dyn Handler>>,
    concurrency: u32,
    encodings: Vec<Encoding>,
}

/// Registers a worker's functions; made by [`Worker::builder`].
#[must_use]
pub struct WorkerBuilder {
    worker: Worker,
}

/// Serving stopped because the channel broke.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Reading or writing the channel failed, or a frame was malformed or oversize.
    #[error("worker channel failed")]
    Frame(#[from] FrameError),
    /// A frame held an invalid message.
    #[error("invalid message from the pool")]
    Message(#[from] MessageError),
    /// The pool sent a message out of order.
    #[error("unexpected message from the pool: {0}")]
    Unexpected(String),
    /// The channel (file descriptor 0) could not be opened.
    #[error("cannot open the worker channel on standard input")]
    Channel(#[from] std::io::Error),
}

impl Worker {
    /// Starts registering functions.
    pub fn builder() -> WorkerBuilder {
        WorkerBuilder {
            worker: Worker {
                functions: HashMap::new(),
                concurrency: 1,
                encodings: vec![Encoding::Postcard, Encoding::Json],
            },
        }
    }

    /// Serves on the channel the pool passed as standard input, until the pool
    /// sends `SHUTDOWN` or closes the channel.
    ///
    /// # Errors
    ///
    /// [`ServeError`] if the channel cannot be opened or breaks.
    pub async fn serve(self) -> Result<(), ServeError> {
        let fd = std::io::stdin().lock();
        let owned = std::os::fd::AsFd::as_fd(&fd).try_clone_to_owned()?;
        drop(fd);
        let std_stream = std::os::unix::net::UnixStream::from(owned);
        std_stream.set_nonblocking(true)?;
        self.serve_on(UnixStream::from_std(std_stream)?).await
    }

    /// Serves on `stream` (the worker's end of the channel).
    ///
    /// # Errors
    ///
    /// [`ServeError`] if the channel breaks or the pool misbehaves.
    pub async fn serve_on(self, stream: UnixStream) -> Result<(), ServeError> {
        serve::serve_on(self, stream).await
    }
}

impl WorkerBuilder {
    /// Registers a synchronous function, run on a blocking thread so it can
    /// take its time without stalling heartbeats.
    pub fn function<F, A, R, E>(mut self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(A) -> Result<R, E> + Send + Sync + 'static,
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: Display + Send + 'static,
    {
        self.worker.functions.insert(
            name.into(),
            Arc::new(handler::SyncFn(Arc::new(f), std::marker::PhantomData)),
        );
        self
    }

    /// Registers an async function.
    pub fn async_function<F, Fut, A, R, E>(mut self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: Display + Send + 'static,
    {
        self.worker.functions.insert(
            name.into(),
            Arc::new(handler::AsyncFn(Arc::new(f), std::marker::PhantomData)),
        );
        self
    }

    /// Calls served at once (announced to the pool). Default: 1; 0 counts as 1.
    pub fn concurrency(mut self, n: u32) -> Self {
        self.worker.concurrency = n.max(1);
        self
    }

    /// The worker, ready to serve.
    pub fn build(self) -> Worker {
        self.worker
    }
}
