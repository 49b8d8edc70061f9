//! The public pool handle: routing calls to workers, and the supervisor that
//! replaces workers that die.
//!
//! # Implementation notes
//!
//! The live workers are a list behind an `RwLock`: calls take the read lock
//! to route; the supervisor task (one per pool, holding it weakly) takes the
//! write lock to drop a dead worker and add its replacement. Each worker's
//! connection task reports its pid to the supervisor when it ends, whatever
//! the reason, so every death is seen exactly once.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use super::builder::{Config, ProcessPoolBuilder};
use super::error::{CallError, StartError};
use super::stats::{Counters, ProcessPoolStats};
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
    config: Config,
    workers: RwLock<Vec<Arc<WorkerHandle>>>,
    next_id: AtomicU64,
    stopping: AtomicBool,
    /// Set when the restart budget ran out.
    crash_loop: Mutex<Option<(usize, Duration)>>,
    exits: mpsc::UnboundedSender<u32>,
    /// Calls waiting for a worker below its concurrency wait here.
    slot_freed: Notify,
    counters: Counters,
}

impl ProcessPool {
    /// Starts configuring a pool of `program` workers.
    pub fn builder(program: impl Into<OsString>) -> ProcessPoolBuilder {
        ProcessPoolBuilder::new(program)
    }

    pub(crate) async fn start(config: Config) -> Result<ProcessPool, StartError> {
        let (exits, exit_rx) = mpsc::unbounded_channel();
        let started = futures::future::join_all(
            (0..config.workers).map(|_| worker::start(&config, exits.clone())),
        )
        .await;
        let mut workers = Vec::with_capacity(started.len());
        let mut first_error = None;
        for w in started {
            match w {
                Ok(w) => workers.push(Arc::new(w)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let pool = ProcessPool {
            inner: Arc::new(Inner {
                config,
                workers: RwLock::new(workers),
                next_id: AtomicU64::new(1),
                stopping: AtomicBool::new(false),
                crash_loop: Mutex::new(None),
                exits,
                slot_freed: Notify::new(),
                counters: Counters::new(),
            }),
        };
        if let Some(e) = first_error {
            pool.stop().await;
            return Err(e);
        }
        tokio::spawn(supervise(Arc::downgrade(&pool.inner), exit_rx));
        Ok(pool)
    }

    /// Calls `function` with `args` on the worker with the fewest calls in
    /// flight, and decodes its result.
    ///
    /// # Errors
    ///
    /// [`CallError`]: the function's own error, a panic, an unknown function,
    /// a timeout, a lost worker (naming its exit code or signal), or a payload
    /// that does not encode or decode.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future sends `CANCEL` for the call to its worker.
    pub async fn call<A, R>(&self, function: &str, args: &A) -> Result<R, CallError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let started = Instant::now();
        let result = self.call_inner(function, args).await;
        self.inner.counters.record(&result, started.elapsed());
        result
    }

    async fn call_inner<A, R>(&self, function: &str, args: &A) -> Result<R, CallError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        // The timeout covers the whole call, waiting for a free worker included.
        let limit = self.inner.config.call_timeout;
        let deadline = limit.map(|d| Instant::now() + d);
        let worker = match deadline {
            None => self.route_wait(function).await?,
            Some(at) => match tokio::time::timeout_at(at, self.route_wait(function)).await {
                Ok(routed) => routed?,
                Err(_) => {
                    // Never sent: no call id was assigned yet.
                    return Err(CallError::TimedOut {
                        function: function.to_owned(),
                        call_id: 0,
                        timeout: limit.unwrap_or_default(),
                    });
                }
            },
        };
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
        let mut pending = PendingCall {
            worker: &worker,
            id,
            answered: false,
        };
        let answer = match (deadline, limit) {
            (Some(at), Some(limit)) => match tokio::time::timeout_at(at, answer).await {
                Ok(answer) => answer,
                Err(_) => {
                    pending.answered = true;
                    let _ = worker.tx.send(Command::Cancel {
                        id,
                        kill_after: Some(self.inner.config.cancel_grace),
                    });
                    return Err(CallError::TimedOut {
                        function: function.to_owned(),
                        call_id: id,
                        timeout: limit,
                    });
                }
            },
            _ => answer.await,
        };
        pending.answered = true;
        match answer {
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
    fn route(&self, function: &str) -> Result<Option<InFlight>, CallError> {
        let workers = self
            .inner
            .workers
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut any_alive = false;
        let mut serves = false;
        let mut best: Option<&Arc<WorkerHandle>> = None;
        for w in workers.iter() {
            if !w.alive.load(Ordering::Acquire) {
                continue;
            }
            any_alive = true;
            if !w.functions.contains(function) {
                continue;
            }
            serves = true;
            let load = w.in_flight.load(Ordering::Relaxed);
            if load >= w.concurrency {
                continue; // at the concurrency it announced
            }
            if best.is_none_or(|b| load < b.in_flight.load(Ordering::Relaxed)) {
                best = Some(w);
            }
        }
        match best {
            Some(w) => {
                w.in_flight.fetch_add(1, Ordering::Relaxed);
                Ok(Some(InFlight(Arc::clone(w), Arc::clone(&self.inner))))
            }
            None if serves => Ok(None),
            None if any_alive => Err(CallError::UnknownFunction(function.to_owned())),
            None => match *self
                .inner
                .crash_loop
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
            {
                Some((restarts, window)) => Err(CallError::CrashLoop { restarts, window }),
                None => Err(CallError::NoWorkers),
            },
        }
    }

    /// Like `route`, waiting while every worker serving `function` is at its
    /// concurrency (a slot frees when a call ends, a worker is replaced or dies).
    async fn route_wait(&self, function: &str) -> Result<InFlight, CallError> {
        let mut waiting: Option<WaitingGuard<'_>> = None;
        loop {
            let freed = self.inner.slot_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = self.route(function)? {
                return Ok(slot);
            }
            if waiting.is_none() {
                self.inner.counters.queued.fetch_add(1, Ordering::Relaxed);
                waiting = Some(WaitingGuard(&self.inner.counters));
            }
            freed.await;
        }
    }

    /// A snapshot of the pool's workers, waiting calls, outcomes and latency.
    pub fn stats(&self) -> ProcessPoolStats {
        let workers = self
            .inner
            .workers
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let live: Vec<_> = workers
            .iter()
            .filter(|w| w.alive.load(Ordering::Acquire))
            .collect();
        let busy = live
            .iter()
            .filter(|w| w.in_flight.load(Ordering::Relaxed) > 0)
            .count();
        self.inner.counters.snapshot(live.len(), busy)
    }

    /// Process ids of the live workers.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.inner
            .workers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|w| w.alive.load(Ordering::Acquire))
            .map(|w| w.pid)
            .collect()
    }

    /// Stops every worker: no new calls are sent, calls in flight finish,
    /// then each worker gets `SHUTDOWN`, and is killed if it has not exited
    /// within the stop timeout. Dead workers are no longer replaced. Returns
    /// when every worker process is reaped.
    ///
    /// # Cancel safety
    ///
    /// If dropped, the workers still stop (their connection tasks carry on).
    pub async fn stop(&self) {
        self.inner.stopping.store(true, Ordering::Release);
        let mut tasks = Vec::new();
        let workers: Vec<_> = self
            .inner
            .workers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for w in &workers {
            let _ = w.tx.send(Command::Shutdown);
            if let Some(task) = w.task.lock().unwrap_or_else(PoisonError::into_inner).take() {
                tasks.push(task);
            }
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Replaces workers that die, within the restart budget.
async fn supervise(pool: Weak<Inner>, mut exits: mpsc::UnboundedReceiver<u32>) {
    let mut restarts: VecDeque<Instant> = VecDeque::new();
    let mut failures = 0u32;
    while let Some(pid) = exits.recv().await {
        let Some(inner) = pool.upgrade() else { return };
        inner
            .workers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|w| w.pid != pid);
        // Waiting calls must look again: their worker may be gone (NoWorkers, CrashLoop).
        inner.slot_freed.notify_waiters();
        loop {
            if inner.stopping.load(Ordering::Acquire) {
                break;
            }
            let live = inner
                .workers
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .len();
            if live >= inner.config.workers {
                break;
            }
            let now = Instant::now();
            let window = inner.config.restart_window;
            while restarts
                .front()
                .is_some_and(|t| now.duration_since(*t) > window)
            {
                restarts.pop_front();
            }
            if restarts.len() >= inner.config.max_restarts {
                tracing::error!(
                    restarts = restarts.len(),
                    ?window,
                    "worker restart budget exhausted; not replacing workers"
                );
                *inner
                    .crash_loop
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some((restarts.len(), window));
                break;
            }
            restarts.push_back(now);
            match worker::start(&inner.config, inner.exits.clone()).await {
                Ok(w) => {
                    failures = 0;
                    inner.counters.restarts.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(worker_pid = w.pid, replaced = pid, "worker replaced");
                    inner
                        .workers
                        .write()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Arc::new(w));
                    inner.slot_freed.notify_waiters();
                }
                Err(e) => {
                    // Back off: 100 ms doubling to 5 s between failed starts.
                    failures += 1;
                    let delay =
                        Duration::from_millis(100) * 2u32.saturating_pow(failures.min(6) - 1);
                    tracing::warn!(error = %e, ?delay, "starting a replacement worker failed");
                    tokio::time::sleep(delay.min(Duration::from_secs(5))).await;
                }
            }
        }
    }
}

/// Counts a call as waiting for a slot until it has one (or gives up).
struct WaitingGuard<'a>(&'a Counters);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a call against its worker until it ends, then lets a waiting call in.
struct InFlight(Arc<WorkerHandle>, Arc<Inner>);

impl std::ops::Deref for InFlight {
    type Target = WorkerHandle;

    fn deref(&self) -> &WorkerHandle {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.1.slot_freed.notify_one();
    }
}

/// Sends `CANCEL` for a call whose caller went away before its answer.
struct PendingCall<'a> {
    worker: &'a WorkerHandle,
    id: u64,
    answered: bool,
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        if !self.answered {
            let _ = self.worker.tx.send(Command::Cancel {
                id: self.id,
                kill_after: None,
            });
        }
    }
}

impl std::fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessPool")
            .field("workers", &self.worker_pids())
            .finish_non_exhaustive()
    }
}
