//! The Rust worker SDK: serve named functions to a process pool.
//!
//! A worker is an ordinary program. It registers functions — synchronous
//! ones run on tokio's blocking threads, async ones inside the serving task —
//! and serves them over the channel the pool gives it (`docs/protocol.md`).
//! Arguments and results are serde values; a function's `Err` comes back to
//! the caller as a `failed` error and a panic as `panicked`, and the worker
//! keeps serving either way.
//!
//! The usual `main` of a worker is [`Worker::run`], which serves on a
//! current-thread runtime of its own:
//!
//! ```no_run
//! use workcrew::worker::Worker;
//!
//! fn main() -> Result<(), workcrew::worker::ServeError> {
//!     Worker::builder()
//!         .function("add", |(a, b): (i64, i64)| Ok::<_, String>(a + b))
//!         .async_function("greet", |name: String| async move { Ok::<_, String>(format!("hello {name}")) })
//!         .concurrency(4)
//!         .build()
//!         .run()
//! }
//! ```
//!
//! # Sync or async
//!
//! An async function runs inside the serving task, on the thread that reads
//! the channel: it must not block (no `std::thread::sleep`, no long
//! computation) or heartbeats and every other call wait for it. A trivial
//! async function costs almost nothing: it is polled as soon as its `CALL` is
//! read and answered in the same write. A sync function may block or compute
//! for as long as it needs; each call costs a hop to a blocking thread.
//!
//! # Batches
//!
//! Every function also serves `CALL_MANY` chunks (what the pool's `map` sends):
//! the function runs on each item in order — a sync function's whole chunk on
//! one blocking thread, an async function's items one after another — and the
//! chunk is answered with all results, or with the error of its first failing
//! item.
//!
//! # File descriptors
//!
//! On Unix the pool can pass open file descriptors with a call (`CALL_FDS`),
//! e.g. a socket it accepted, for a function registered with
//! [`WorkerBuilder::function_with_fds`]. A `CALL_FDS` to any other function is
//! answered `bad_args` and its descriptors are closed.
//!
//! # Cancellation
//!
//! The pool cancels a call when its caller gives it up (a timeout, a token,
//! a dropped call future). The worker answers `cancelled` only once the
//! function has really ended (`docs/protocol.md`, section 3.6):
//!
//! - an **async** function's future is dropped at once, which ends it; the
//!   call is answered `cancelled` in the same pass;
//! - a **sync** function's thread cannot be stopped. The function sees the
//!   cancel through [`is_cancelled`] or its [`CallContext`] (which can also
//!   wait for it) and should return early; the call is answered `cancelled`
//!   once it has returned. A function that never looks keeps its slot: the
//!   pool sends the worker no more calls than its concurrency, and kills and
//!   replaces it if the call is not answered within the cancel grace. That is
//!   how a runaway computation is stopped.
//!
//! ```no_run
//! use workcrew::worker::Worker;
//!
//! fn main() -> Result<(), workcrew::worker::ServeError> {
//!     Worker::builder()
//!         .function("primes_below", |n: u64| {
//!             let mut found = Vec::new();
//!             for k in 2..n {
//!                 if k % 1024 == 0 && workcrew::worker::is_cancelled() {
//!                     return Err("cancelled".to_owned());
//!                 }
//!                 if (2..k).take_while(|d| d * d <= k).all(|d| k % d != 0) {
//!                     found.push(k);
//!                 }
//!             }
//!             Ok(found)
//!         })
//!         .build()
//!         .run()
//! }
//! ```
//!
//! # Shutdown
//!
//! After `SHUTDOWN` the worker finishes and answers the calls it holds (still
//! honouring cancels), then [`Worker::run`] returns `Ok`; so does end of file
//! on the channel. The usual `main` then exits with status 0, and with a
//! non-zero status (the error) if the channel broke.

mod cancel;
mod channel;
mod handler;
mod serve;

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::hash::BuildHasherDefault;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

use crate::common::NameHasher;
use crate::protocol::{Encoding, FrameError, MessageError};
use handler::Handler;

pub use cancel::{is_cancelled, CallContext};

/// A set of functions ready to serve.
pub struct Worker {
    functions: HashMap<String, Arc<dyn Handler>, BuildHasherDefault<NameHasher>>,
    /// Set by [`WorkerBuilder::concurrency`]; `None` announces the default for the functions.
    concurrency: Option<u32>,
    /// Whether any function is sync (runs on a blocking thread).
    has_sync: bool,
    encodings: Vec<Encoding>,
}

/// The concurrency a worker of async functions only announces unless told otherwise.
///
/// An async function runs inside the serving task and holding a call costs a few hundred bytes,
/// so a deep window lets one read and one write carry many calls; trivial calls run about 20x
/// faster than one at a time (`cargo bench -p workcrew --bench process_pool`).
pub const DEFAULT_ASYNC_CONCURRENCY: u32 = 1024;

impl Worker {
    /// The concurrency announced in `HELLO`: the one set with
    /// [`WorkerBuilder::concurrency`], else [`DEFAULT_ASYNC_CONCURRENCY`] when every function
    /// is async, else one call per core (the blocking threads that can run at once).
    pub fn announced_concurrency(&self) -> u32 {
        match self.concurrency {
            Some(n) => n,
            None if self.has_sync => std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
            None => DEFAULT_ASYNC_CONCURRENCY,
        }
    }
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
    /// File descriptors and frames were out of step: a `CALL_FDS` came without its
    /// descriptors, or descriptors came with another frame.
    #[error("file descriptors out of step with the frames: {0}")]
    Descriptors(String),
    /// [`Worker::run`] could not build its runtime.
    #[error("cannot start the worker's runtime")]
    Runtime(#[source] std::io::Error),
}

impl Worker {
    /// Starts registering functions.
    pub fn builder() -> WorkerBuilder {
        WorkerBuilder {
            worker: Worker {
                functions: HashMap::default(),
                concurrency: None,
                has_sync: false,
                encodings: vec![Encoding::Postcard, Encoding::Json],
            },
        }
    }

    /// Serves on the channel the pool passed as standard input, on a
    /// current-thread runtime of its own, until the pool sends `SHUTDOWN` or
    /// closes the channel. The usual `main` of a worker (see the [module
    /// docs](self)).
    ///
    /// One thread serves best: the loop reads, runs async calls and writes
    /// answers itself, and handing work between threads costs more than a
    /// trivial call. Sync functions still run on blocking threads. Serving ends
    /// once every call has been answered.
    ///
    /// Between calls, while no call runs and the runtime has no task, the loop
    /// waits up to 10 ms for the next call in the socket's read itself rather
    /// than in the runtime: a caller that calls in a loop saves a system call
    /// and a pass through the runtime per call. A task the functions spawn (it
    /// counts while it lives) keeps every wait in the runtime.
    ///
    /// # Errors
    ///
    /// [`ServeError`] if the runtime cannot be built, or the channel cannot be
    /// opened or breaks.
    pub fn run(self) -> Result<(), ServeError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(ServeError::Runtime)?;
        let served = runtime.block_on(self.serve());
        runtime.shutdown_background();
        served
    }

    /// Serves on the channel the pool passed as standard input, until the pool
    /// sends `SHUTDOWN` or closes the channel, on the caller's runtime. Prefer
    /// [`run`](Self::run) unless the program needs a runtime of its own.
    ///
    /// # Errors
    ///
    /// [`ServeError`] if the channel cannot be opened or breaks.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops serving: running async calls are dropped,
    /// answers not yet written are lost, and the pool sees the channel close.
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
    ///
    /// # Cancel safety
    ///
    /// As for [`serve`](Self::serve).
    pub async fn serve_on(self, stream: UnixStream) -> Result<(), ServeError> {
        serve::serve_on(self, stream).await
    }
}

impl WorkerBuilder {
    /// Registers a synchronous function, run on a blocking thread so it can
    /// take its time without stalling heartbeats. A long one should check
    /// [`is_cancelled`] now and then (see [Cancellation](self#cancellation)). A
    /// later registration under the same name replaces it.
    pub fn function<F, A, R, E>(self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(A) -> Result<R, E> + Send + Sync + 'static,
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: Display + Send + 'static,
    {
        self.sync_handler(name.into(), false, move |args, _fds: Vec<OwnedFd>| f(args))
    }

    /// Registers an async function, run inside the serving task: it must not
    /// block (see the [module docs](self)).
    pub fn async_function<F, Fut, A, R, E>(self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: Display + Send + 'static,
    {
        self.async_handler(name.into(), false, move |args, _fds: Vec<OwnedFd>| f(args))
    }

    /// Registers a synchronous function that takes file descriptors passed
    /// with the call (`CALL_FDS`, Unix only), e.g. a socket the pool accepted,
    /// run on a blocking thread. The descriptors are the function's: they are
    /// closed when it drops them. A plain `CALL` passes none.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::io::Write;
    /// use std::os::fd::OwnedFd;
    /// use workcrew::worker::Worker;
    ///
    /// fn main() -> Result<(), workcrew::worker::ServeError> {
    ///     Worker::builder()
    ///         .function_with_fds("greet", |name: String, fds: Vec<OwnedFd>| {
    ///             for fd in fds {
    ///                 let mut socket = std::net::TcpStream::from(fd);
    ///                 writeln!(socket, "hello {name}").map_err(|e| e.to_string())?;
    ///             }
    ///             Ok::<_, String>(())
    ///         })
    ///         .build()
    ///         .run()
    /// }
    /// ```
    pub fn function_with_fds<F, A, R, E>(self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(A, Vec<OwnedFd>) -> Result<R, E> + Send + Sync + 'static,
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: Display + Send + 'static,
    {
        self.sync_handler(name.into(), true, f)
    }

    /// Registers an async function that takes file descriptors passed with
    /// the call, as [`function_with_fds`](Self::function_with_fds) does for a
    /// sync one. It runs inside the serving task: it must not block.
    pub fn async_function_with_fds<F, Fut, A, R, E>(self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(A, Vec<OwnedFd>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: Display + Send + 'static,
    {
        self.async_handler(name.into(), true, f)
    }

    fn sync_handler<F, A, R, E>(mut self, name: String, takes_fds: bool, f: F) -> Self
    where
        F: Fn(A, Vec<OwnedFd>) -> Result<R, E> + Send + Sync + 'static,
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: Display + Send + 'static,
    {
        let handler = handler::SyncFn {
            f: Arc::new(f),
            takes_fds,
            marker: PhantomData,
        };
        self.worker.has_sync = true;
        self.worker.functions.insert(name, Arc::new(handler));
        self
    }

    fn async_handler<F, Fut, A, R, E>(mut self, name: String, takes_fds: bool, f: F) -> Self
    where
        F: Fn(A, Vec<OwnedFd>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: Display + Send + 'static,
    {
        let handler = handler::AsyncFn {
            f: Arc::new(f),
            takes_fds,
            marker: PhantomData,
        };
        self.worker.functions.insert(name, Arc::new(handler));
        self
    }

    /// Calls served at once (announced to the pool); 0 counts as 1.
    ///
    /// The default fits the functions, so a worker that sets nothing is near its tuned speed:
    ///
    /// - every function async: [`DEFAULT_ASYNC_CONCURRENCY`] (1,024). Async calls share the
    ///   serving task and cost little to hold, and a deep window lets the pool batch many calls
    ///   per read and write. Lower it when each call holds something scarce (a connection, much
    ///   memory);
    /// - any function sync: the number of cores (`std::thread::available_parallelism`), the
    ///   blocking threads that can run at once; more would only queue CPU work inside the
    ///   worker. Set 1 for a function that must run alone, or more for sync functions that
    ///   mostly wait (on disk, on a subprocess).
    ///
    /// [`Worker::announced_concurrency`] tells what will be announced.
    pub fn concurrency(mut self, n: u32) -> Self {
        self.worker.concurrency = Some(n.max(1));
        self
    }

    /// Payload encodings the worker accepts, preferred first (the pool picks
    /// the first one it also speaks). Default: postcard, then JSON. Postcard
    /// is compact and fast but not self-describing: functions taking or
    /// returning types such as `serde_json::Value`, untagged enums or
    /// flattened structs need JSON. An empty list keeps the default.
    ///
    /// ```
    /// use workcrew::protocol::Encoding;
    /// use workcrew::worker::Worker;
    ///
    /// let worker = Worker::builder()
    ///     .async_function("echo", |v: serde_json::Value| async move { Ok::<_, String>(v) })
    ///     .encodings([Encoding::Json])
    ///     .build();
    /// ```
    pub fn encodings(mut self, encodings: impl IntoIterator<Item = Encoding>) -> Self {
        let list: Vec<Encoding> = encodings.into_iter().collect();
        if !list.is_empty() {
            self.worker.encodings = list;
        }
        self
    }

    /// The worker, ready to serve.
    pub fn build(self) -> Worker {
        self.worker
    }
}
