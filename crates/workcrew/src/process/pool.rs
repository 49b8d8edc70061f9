//! The public pool handle: calls, recycling, stats, events, stop.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::builder::{Config, WorkerCommand};
use super::call::{CallOptions, Function};
use super::error::{CallError, StartError};
use super::events::{ProcessEvent, RecycleReason};
use super::future::{CallFuture, NO_OPTIONS};
use super::state::{Shared, State};
use super::stats::{Live, ProcessPoolStats};
use super::supervisor::{self, register, start_generation};
use crate::protocol::Encoding;

/// A pool of worker processes serving named functions.
///
/// Cloning is cheap; every clone is the same pool. When the last clone is
/// dropped, the workers are told to shut down (and killed after the stop
/// timeout).
#[derive(Clone)]
pub struct ProcessPool {
    pub(crate) inner: Arc<Shared>,
}

impl ProcessPool {
    /// Starts configuring a pool of workers started by `command` (a program
    /// name or a [`WorkerCommand`]).
    pub fn builder(command: impl Into<WorkerCommand>) -> super::ProcessPoolBuilder {
        super::ProcessPoolBuilder::new(command.into())
    }

    pub(crate) async fn start(config: Config) -> Result<ProcessPool, StartError> {
        let first = config.min_workers.max(1);
        let command = config.command.clone();
        let encodings = config.encodings.clone();
        // Started before the pool exists, so the payload encoding can be
        // settled with the first generation.
        let bootstrap = Arc::new(Shared::new(config, Encoding::Postcard));
        let started = start_generation(&bootstrap, &command, &encodings, first).await?;
        let encoding = started[0].1.encoding;
        if let Some((_, odd)) = started.iter().find(|(_, s)| s.encoding != encoding) {
            let pid = odd.pid;
            for (_, mut s) in started {
                super::spawn::reap(&mut s.child, true).await;
            }
            return Err(StartError::Handshake {
                pid,
                reason: "workers of one pool chose different payload encodings".to_owned(),
            });
        }
        let Ok(mut shared) = Arc::try_unwrap(bootstrap) else {
            unreachable!("nothing else holds the pool before it starts")
        };
        shared.encoding = encoding;
        let inner = Arc::new(shared);
        for (id, s) in started {
            register(&inner, s, id, 1, false);
        }
        tokio::spawn(supervisor::supervise(Arc::downgrade(&inner)));
        Ok(ProcessPool { inner })
    }

    /// Calls `function` with `args` on a worker (chosen by the pool's
    /// [`Routing`](super::Routing)) and decodes its result. Waits while the
    /// pool queue is full.
    ///
    /// # Errors
    ///
    /// [`CallError`]: the function's own error, a panic, an unknown function,
    /// a timeout, a lost worker (naming its exit code or signal), a stopped
    /// pool, or a payload that does not encode or decode.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future withdraws a queued call, or sends `CANCEL` for a
    /// running one to its worker, which is killed and replaced if it does not
    /// answer within the [cancel grace](super::ProcessPoolBuilder::cancel_grace).
    pub fn call<'a, A, R>(
        &'a self,
        function: &'a str,
        args: &'a A,
    ) -> impl Future<Output = Result<R, CallError>> + 'a
    where
        A: Serialize + Sync + ?Sized,
        R: DeserializeOwned + 'a,
    {
        CallFuture::new(self, function, args, &NO_OPTIONS)
    }

    /// Like [`call`](Self::call) with per-call options: a timeout, a
    /// cancellation token, retries.
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call), plus [`CallError::Cancelled`] when the token fires.
    ///
    /// # Cancel safety
    ///
    /// As [`call`](Self::call).
    pub fn call_with<'a, A, R>(
        &'a self,
        function: &'a str,
        args: &'a A,
        options: &'a CallOptions,
    ) -> impl Future<Output = Result<R, CallError>> + 'a
    where
        A: Serialize + Sync + ?Sized,
        R: DeserializeOwned + 'a,
    {
        CallFuture::new(self, function, args, options)
    }

    /// Like [`call`](Self::call), but owning its function name and arguments: the future is
    /// `'static`, so the call can be spawned.
    ///
    /// ```no_run
    /// # async fn demo(pool: workcrew::process::ProcessPool) -> Result<(), Box<dyn std::error::Error>> {
    /// let sum = tokio::spawn(pool.call_owned::<_, i64>("add", (2, 3)));
    /// assert_eq!(sum.await??, 5);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call).
    ///
    /// # Cancel safety
    ///
    /// As [`call`](Self::call).
    pub fn call_owned<A, R>(
        &self,
        function: impl Into<String>,
        args: A,
    ) -> impl Future<Output = Result<R, CallError>> + Send + 'static
    where
        A: Serialize + Send + Sync + 'static,
        R: DeserializeOwned + Send + 'static,
    {
        self.call_owned_with(function, args, CallOptions::default())
    }

    /// Like [`call_with`](Self::call_with), owning its function name, arguments and options:
    /// the future is `'static`, so the call can be spawned.
    ///
    /// # Errors
    ///
    /// As [`call_with`](Self::call_with).
    ///
    /// # Cancel safety
    ///
    /// As [`call`](Self::call).
    pub fn call_owned_with<A, R>(
        &self,
        function: impl Into<String>,
        args: A,
        options: CallOptions,
    ) -> impl Future<Output = Result<R, CallError>> + Send + 'static
    where
        A: Serialize + Send + Sync + 'static,
        R: DeserializeOwned + Send + 'static,
    {
        let pool = self.clone();
        let function = function.into();
        async move { pool.call_with(&function, &args, &options).await }
    }

    /// Like [`call`](Self::call), but fails with [`CallError::QueueFull`] at
    /// once instead of waiting when the pool queue is full.
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call), plus [`CallError::QueueFull`].
    ///
    /// # Cancel safety
    ///
    /// As [`call`](Self::call).
    pub async fn try_call<A, R>(&self, function: &str, args: &A) -> Result<R, CallError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.try_call_with(function, args, &CallOptions::default())
            .await
    }

    /// Like [`call_with`](Self::call_with) (a timeout, a cancellation token, retries), but
    /// fails with [`CallError::QueueFull`] at once instead of waiting when the pool queue is
    /// full.
    ///
    /// # Errors
    ///
    /// As [`call_with`](Self::call_with), plus [`CallError::QueueFull`].
    ///
    /// # Cancel safety
    ///
    /// As [`call`](Self::call).
    pub async fn try_call_with<A, R>(
        &self,
        function: &str,
        args: &A,
        options: &CallOptions,
    ) -> Result<R, CallError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let result = match self.encode(function, args) {
            Ok(payload) => self
                .send_raw(
                    Arc::from(function),
                    payload,
                    false,
                    Vec::new(),
                    options,
                    false,
                )
                .await
                .and_then(|bytes| self.decode(function, &bytes)),
            Err(e) => Err(e),
        };
        self.inner.counters.record(&result);
        result
    }

    /// Like [`call`](Self::call), passing open file descriptors with the call
    /// (Unix; `CALL_FDS` in `docs/protocol.md`): a socket accepted here and
    /// served by a worker, a file, a pipe. The worker gets its own copies; the
    /// pool closes these once they are sent. Only workers that accept
    /// descriptors take the call.
    ///
    /// ```no_run
    /// # async fn demo(pool: workcrew::process::ProcessPool) -> Result<(), Box<dyn std::error::Error>> {
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let (conn, _) = listener.accept()?;
    /// let served: u64 = pool.call_with_fds("serve", &(), vec![conn.into()]).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call), plus [`CallError::NoFdPassing`] if no worker
    /// serving the function accepts descriptors.
    ///
    /// # Cancel safety
    ///
    /// As [`call`](Self::call); the descriptors of a withdrawn call are closed.
    pub async fn call_with_fds<A, R>(
        &self,
        function: &str,
        args: &A,
        fds: Vec<OwnedFd>,
    ) -> Result<R, CallError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let function: Arc<str> = Arc::from(function);
        let result = match self.encode(&function, args) {
            Ok(payload) => self
                .send_raw(
                    Arc::clone(&function),
                    payload,
                    false,
                    fds,
                    &CallOptions::default(),
                    true,
                )
                .await
                .and_then(|bytes| self.decode(&function, &bytes)),
            Err(e) => Err(e),
        };
        self.inner.counters.record(&result);
        result
    }

    /// A typed handle for one function: no name to repeat, types checked once.
    ///
    /// ```no_run
    /// # async fn demo(pool: workcrew::process::ProcessPool) -> Result<(), workcrew::process::CallError> {
    /// let square = pool.function::<u64, u64>("square");
    /// assert_eq!(square.call(&7).await?, 49);
    /// # Ok(())
    /// # }
    /// ```
    pub fn function<A, R>(&self, name: &str) -> Function<A, R>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        Function::new(self.clone(), Arc::from(name))
    }

    /// A snapshot of the pool's workers, queue, outcomes and latency.
    pub fn stats(&self) -> ProcessPoolStats {
        let st = self.inner.lock();
        let live = Live {
            workers: st.workers.len(),
            busy: st.workers.iter().filter(|w| w.in_flight > 0).count(),
            in_flight: st.workers.iter().map(|w| w.in_flight).sum(),
            queued: st.queue.iter().filter(|j| !j.abandoned()).count(),
            starting: st.starting,
        };
        drop(st);
        self.inner.counters.snapshot(live)
    }

    /// Events of the pool's workers (spawned, ready, exited, recycled, calls
    /// retried, stopped). The stream starts with a [`ProcessEvent::Ready`] for
    /// each worker live at the moment of the call (so the first workers, ready
    /// before `build()` returned, are seen too), then follows what happens. It
    /// ends after [`ProcessEvent::Stopped`]. Events are not kept for a
    /// subscriber that falls behind: it gets [`ProcessEvent::Lagged`] instead.
    pub fn events(&self) -> impl Stream<Item = ProcessEvent> + Send + Unpin + 'static {
        let st = self.inner.lock();
        let live: Vec<ProcessEvent> = st
            .workers
            .iter()
            .map(|w| {
                let mut functions: Vec<String> = w.handle.functions.iter().cloned().collect();
                functions.sort();
                ProcessEvent::Ready {
                    worker: w.handle.id,
                    pid: w.handle.pid,
                    functions,
                }
            })
            .collect();
        // Subscribed under the same lock as the list: no worker is missed or
        // announced twice.
        let later = self.inner.events.subscribe();
        drop(st);
        futures::StreamExt::chain(futures::stream::iter(live), later)
    }

    /// Process ids of the live workers, in start order.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.inner
            .lock()
            .workers
            .iter()
            .map(|w| w.handle.pid)
            .collect()
    }

    /// Replaces every worker with a new generation started by the same
    /// command. See [`reload`](Self::reload).
    ///
    /// # Errors
    ///
    /// As [`reload`](Self::reload).
    ///
    /// # Cancel safety
    ///
    /// As [`reload`](Self::reload).
    pub async fn recycle(&self) -> Result<(), StartError> {
        let command = self.inner.lock().command.clone();
        self.reload(command).await
    }

    /// Hot reload: starts a new generation of workers with `command` (new
    /// program, arguments, environment or directory), as many as are live now
    /// (at least `min`, at least one); once all are ready, new calls go to
    /// them, and the old workers finish the calls they hold and exit. No call
    /// is lost. Returns when the old generation has exited. Replacements
    /// started later use `command` too.
    ///
    /// # Errors
    ///
    /// [`StartError`] if a new worker fails to start: the new generation is
    /// discarded and the old one keeps serving, with its command.
    ///
    /// # Cancel safety
    ///
    /// If dropped before the new generation is ready, the workers started so
    /// far are killed and reaped and the old generation stays; after that,
    /// the reload completes on its own.
    pub async fn reload(&self, command: WorkerCommand) -> Result<(), StartError> {
        let inner = &self.inner;
        let n = {
            let st = inner.lock();
            st.workers
                .iter()
                .filter(|w| w.retiring.is_none())
                .count()
                .max(inner.config.min_workers)
                .max(1)
        };
        let started = start_generation(inner, &command, &[inner.encoding], n).await?;
        let generation = {
            let mut st = inner.lock();
            st.generation += 1;
            st.command = command;
            st.generation
        };
        inner
            .counters
            .recycle_starts
            .fetch_add(started.len() as u64, Ordering::Relaxed);
        for (id, s) in started {
            register(inner, s, id, generation, false);
        }
        let old: Vec<_> = {
            let mut st = inner.lock();
            st.workers
                .iter_mut()
                .filter(|w| w.generation < generation && w.retiring.is_none())
                .map(|w| {
                    w.retiring = Some(RecycleReason::Reload);
                    Arc::clone(&w.handle)
                })
                .collect()
        };
        for h in &old {
            inner.retired(h, RecycleReason::Reload);
        }
        // Wait for the old generation to finish its calls, exit and be reaped.
        self.wait_until(|st| {
            !st.workers.iter().any(|w| w.generation < generation)
                && old.iter().all(|h| h.finished.load(Ordering::Acquire))
        })
        .await;
        Ok(())
    }

    /// Stops the pool gracefully, in bounded time, with the stop timeout as the grace of
    /// each step: see [`stop_with`](Self::stop_with). Returns when every call has settled and
    /// every worker is reaped.
    ///
    /// # Cancel safety
    ///
    /// As [`stop_with`](Self::stop_with).
    pub async fn stop(&self) {
        self.stop_with(self.inner.config.stop_timeout).await;
    }

    /// Stops the pool at once: [`stop_with`](Self::stop_with) a grace of zero. Queued calls
    /// fail with [`CallError::Stopped`], every worker is killed, and the calls they held fail
    /// with [`CallError::WorkerLost`] (reason [`ExitReason::Stopped`](super::ExitReason::Stopped)). Returns when every
    /// worker is reaped.
    ///
    /// # Cancel safety
    ///
    /// As [`stop_with`](Self::stop_with).
    pub async fn stop_now(&self) {
        self.stop_with(Duration::ZERO).await;
    }

    /// Stops the pool, giving each step at most `grace`. The sequence, each step bounded:
    ///
    /// 1. **Intake stops**: new calls fail with [`CallError::Stopped`]; no worker is started.
    /// 2. **Drain**, up to `grace`: queued and running calls go on (workers still take queued
    ///    calls as slots free up).
    /// 3. Calls still **queued** fail with [`CallError::Stopped`].
    /// 4. Every worker gets **`SHUTDOWN`** (it finishes the calls it holds and exits) and has
    ///    `grace` to exit; then the **stop signal** ([`stop_signal`](super::ProcessPoolBuilder::stop_signal),
    ///    `SIGTERM` by default) and another `grace`; then **`SIGKILL`**. Calls a worker held when
    ///    it was killed fail with [`CallError::WorkerLost`], reason [`ExitReason::Stopped`](super::ExitReason::Stopped).
    /// 5. Returns once every worker is reaped and every call has settled; the event stream
    ///    ends with [`ProcessEvent::Stopped`].
    ///
    /// So it takes at most three times `grace` (the stop timeout, for [`stop`](Self::stop)),
    /// plus the ready timeout if a worker was being started (it is told to shut down as soon as
    /// it is ready). Calling it again, or [`stop_now`](Self::stop_now) while a stop is under
    /// way, shortens the grace of the steps still running; it waits the same way.
    ///
    /// # Cancel safety
    ///
    /// If dropped, the pool stays stopping (it takes no new calls), but the steps not reached
    /// are not taken until a stop is awaited again or the last handle is dropped.
    pub async fn stop_with(&self, grace: Duration) {
        let inner = &self.inner;
        let nanos = u64::try_from(grace.as_nanos()).unwrap_or(u64::MAX - 1);
        inner.stop_grace.fetch_min(nanos, Ordering::AcqRel);
        let handles: Vec<_> = {
            let mut st = inner.lock();
            st.stopping = true;
            st.workers.iter().map(|w| Arc::clone(&w.handle)).collect()
        };
        inner.supervisor.notify_one();
        // Workers already shutting down re-read the (maybe shorter) grace.
        for h in &handles {
            h.wake.notify_one();
        }
        // Drain: nothing queued, nothing in flight (or no worker left to run it).
        let drained = self.wait_until(|st| {
            (st.queue.is_empty() && st.workers.iter().all(|w| w.in_flight == 0))
                || (st.workers.is_empty() && st.starting == 0)
        });
        let _ = tokio::time::timeout(grace, drained).await;
        inner.fail_queue(|| CallError::Stopped);
        let handles: Vec<_> = {
            let mut st = inner.lock();
            st.shutdown_all = true;
            st.workers.iter().map(|w| Arc::clone(&w.handle)).collect()
        };
        for h in &handles {
            h.shutdown.store(true, Ordering::Release);
            h.wake.notify_one();
        }
        self.wait_until(|st| st.workers.is_empty() && st.starting == 0 && st.conns == 0)
            .await;
        // Calls sent back to the queue by workers that ended meanwhile: no worker is left.
        inner.fail_queue(|| CallError::Stopped);
        inner.events.send(ProcessEvent::Stopped);
        inner.events.end();
    }

    async fn wait_until(&self, done: impl Fn(&State) -> bool) {
        loop {
            let settled = self.inner.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if done(&self.inner.lock()) {
                return;
            }
            settled.await;
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
