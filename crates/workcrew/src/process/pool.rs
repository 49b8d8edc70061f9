//! The public pool handle: routing calls to workers.

use std::ffi::OsString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

use super::builder::{Config, ProcessPoolBuilder};
use super::error::{CallError, StartError};
use super::worker::{self, Command, Reply, WorkerHandle};
use crate::protocol::ErrorKind;

/// A pool of worker processes serving named functions.
///
/// Cloning is cheap; every clone is the same pool. When the last clone is
/// dropped, the workers are told to shut down (and killed after the stop
/// timeout).
#[derive(Clone)]
pub struct ProcessPool {
    inner: Arc<Inner>,
}

struct Inner {
    workers: Vec<WorkerHandle>,
    next_id: AtomicU64,
}

impl ProcessPool {
    /// Starts configuring a pool of `program` workers.
    pub fn builder(program: impl Into<OsString>) -> ProcessPoolBuilder {
        ProcessPoolBuilder::new(program)
    }

    pub(crate) async fn start(config: Config) -> Result<ProcessPool, StartError> {
        let started =
            futures::future::join_all((0..config.workers).map(|_| worker::start(&config))).await;
        let mut workers = Vec::with_capacity(started.len());
        let mut first_error = None;
        for w in started {
            match w {
                Ok(w) => workers.push(w),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let pool = ProcessPool {
            inner: Arc::new(Inner {
                workers,
                next_id: AtomicU64::new(1),
            }),
        };
        match first_error {
            None => Ok(pool),
            Some(e) => {
                pool.stop().await;
                Err(e)
            }
        }
    }

    /// Calls `function` with `args` on the worker with the fewest calls in
    /// flight, and decodes its result.
    ///
    /// # Errors
    ///
    /// [`CallError`]: the function's own error, a panic, an unknown function,
    /// a lost worker (naming its exit code or signal), or a payload that does
    /// not encode or decode.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the result; the worker still finishes the
    /// call. (Cancellation messages come with per-call timeouts.)
    pub async fn call<A, R>(&self, function: &str, args: &A) -> Result<R, CallError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let worker = self.route(function)?;
        let _slot = InFlight(worker);
        let payload_err = |source| CallError::Payload {
            function: function.to_owned(),
            source,
        };
        let payload = worker.encoding.encode(args).map_err(payload_err)?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        let lost = |exit: String| CallError::WorkerLost {
            pid: worker.pid,
            call_id: id,
            exit,
        };
        let cmd = Command::Call {
            id,
            function: function.to_owned(),
            payload,
            reply,
        };
        if worker.tx.send(cmd).is_err() {
            return Err(lost("exited".to_owned()));
        }
        match answer.await {
            Ok(Reply::Value(bytes)) => worker.encoding.decode(&bytes).map_err(payload_err),
            Ok(Reply::Error(e)) => Err(match e.kind {
                ErrorKind::Failed => CallError::Failed {
                    function: function.to_owned(),
                    message: e.message,
                    data: e.data,
                },
                ErrorKind::Panicked => CallError::Panicked {
                    function: function.to_owned(),
                    message: e.message,
                },
                ErrorKind::UnknownFunction => CallError::UnknownFunction(function.to_owned()),
                ErrorKind::BadArgs => CallError::BadArgs {
                    function: function.to_owned(),
                    message: e.message,
                },
                _ => CallError::Worker {
                    function: function.to_owned(),
                    message: e.message,
                },
            }),
            Ok(Reply::Lost(exit)) => Err(lost(exit)),
            Err(_) => Err(lost("connection ended".to_owned())),
        }
    }

    /// The live worker serving `function` with the fewest calls in flight;
    /// its count goes up now, so a burst spreads.
    fn route(&self, function: &str) -> Result<&WorkerHandle, CallError> {
        let mut any_alive = false;
        let mut best: Option<&WorkerHandle> = None;
        for w in &self.inner.workers {
            if !w.alive.load(Ordering::Acquire) {
                continue;
            }
            any_alive = true;
            if !w.functions.contains(function) {
                continue;
            }
            if best.is_none_or(|b| {
                w.in_flight.load(Ordering::Relaxed) < b.in_flight.load(Ordering::Relaxed)
            }) {
                best = Some(w);
            }
        }
        match best {
            Some(w) => {
                w.in_flight.fetch_add(1, Ordering::Relaxed);
                Ok(w)
            }
            None if any_alive => Err(CallError::UnknownFunction(function.to_owned())),
            None => Err(CallError::NoWorkers),
        }
    }

    /// Process ids of the live workers.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.inner
            .workers
            .iter()
            .filter(|w| w.alive.load(Ordering::Acquire))
            .map(|w| w.pid)
            .collect()
    }

    /// Stops every worker: no new calls are sent, calls in flight finish,
    /// then each worker gets `SHUTDOWN`, and is killed if it has not exited
    /// within the stop timeout. Returns when every worker process is reaped.
    ///
    /// # Cancel safety
    ///
    /// If dropped, the workers still stop (their connection tasks carry on).
    pub async fn stop(&self) {
        let mut tasks = Vec::new();
        for w in &self.inner.workers {
            let _ = w.tx.send(Command::Shutdown);
            if let Some(task) = w
                .task
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
            {
                tasks.push(task);
            }
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Counts a call against its worker until it ends.
struct InFlight<'a>(&'a WorkerHandle);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessPool")
            .field("workers", &self.worker_pids())
            .finish_non_exhaustive()
    }
}
