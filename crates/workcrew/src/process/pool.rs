//! The public pool handle: calls, recycling, stats, events, stop.

use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use super::builder::{Config, WorkerCommand};
use super::call::{CallOptions, Function};
use super::error::{CallError, StartError};
use super::events::{ProcessEvent, RecycleReason};
use super::routing::Router;
use super::state::{Job, Rejected, Reply, Shared, State};
use super::stats::{Counters, ProcessPoolStats};
use super::supervisor::{self, register, start_generation};
use crate::events::Hub;
use crate::protocol::{Encoding, ErrorKind};

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
        let router = Router::new(config.routing);
        let event_capacity = config.event_capacity;
        // Started before the pool exists, so the payload encoding can be
        // settled with the first generation.
        let bootstrap = Arc::new(Shared {
            config,
            state: Mutex::new(State {
                workers: Vec::new(),
                queue: VecDeque::new(),
                router,
                starting: 0,
                stopping: false,
                crash_loop: None,
                command: command.clone(),
                generation: 1,
                next_worker: 0,
                crashes: VecDeque::new(),
            }),
            encoding: Encoding::Postcard,
            next_call: AtomicU64::new(1),
            room: Notify::new(),
            room_waiters: AtomicUsize::new(0),
            settled: Notify::new(),
            supervisor: Arc::new(Notify::new()),
            counters: Counters::new(),
            events: Hub::new(event_capacity, ProcessEvent::Lagged),
        });
        let started = start_generation(
            &bootstrap,
            &command,
            &[Encoding::Postcard, Encoding::Json],
            first,
        )
        .await?;
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
    /// running one to its worker.
    pub fn call<'a, A, R>(
        &'a self,
        function: &'a str,
        args: &'a A,
    ) -> impl Future<Output = Result<R, CallError>> + 'a
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + 'a,
    {
        // Not an `async fn` wrapping `call_with`: that would nest one future
        // in another, and every call in flight carries its future.
        self.call_with(function, args, &NO_OPTIONS)
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
    pub async fn call_with<A, R>(
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
                    true,
                )
                .await
                .and_then(|bytes| self.decode(function, &bytes)),
            Err(e) => Err(e),
        };
        self.inner.counters.record(&result);
        result
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
        let result = match self.encode(function, args) {
            Ok(payload) => self
                .send_raw(
                    Arc::from(function),
                    payload,
                    false,
                    Vec::new(),
                    &CallOptions::default(),
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

    pub(crate) fn decode<R: DeserializeOwned>(
        &self,
        function: &str,
        bytes: &[u8],
    ) -> Result<R, CallError> {
        self.inner
            .encoding
            .decode(bytes)
            .map_err(|source| CallError::Payload {
                function: function.to_owned(),
                source,
            })
    }

    pub(crate) fn encode<A: Serialize + ?Sized>(
        &self,
        function: &str,
        args: &A,
    ) -> Result<Bytes, CallError> {
        self.inner
            .encoding
            .encode(args)
            .map_err(|source| CallError::Payload {
                function: function.to_owned(),
                source,
            })
    }

    /// One call, up to its raw answer. `many`: a `CALL_MANY` of a sequence.
    /// `wait_for_room`: wait while the queue is full (else `QueueFull`).
    pub(crate) async fn call_raw<A: Serialize + ?Sized>(
        &self,
        function: Arc<str>,
        args: &A,
        many: bool,
        options: &CallOptions,
        wait_for_room: bool,
    ) -> Result<Bytes, CallError> {
        let payload = self.encode(&function, args)?;
        self.send_raw(function, payload, many, Vec::new(), options, wait_for_room)
            .await
    }

    /// Sends one encoded call and waits for its raw answer. The fast path —
    /// routed or queued at once, no deadline, no token — awaits only the
    /// answer, so a call's future stays small; the rest is boxed.
    pub(crate) async fn send_raw(
        &self,
        function: Arc<str>,
        payload: Bytes,
        many: bool,
        fds: Vec<OwnedFd>,
        options: &CallOptions,
        wait_for_room: bool,
    ) -> Result<Bytes, CallError> {
        let (id, started, answer) = match self.enqueue(&function, payload, many, fds, options)? {
            Enqueued::Taken(id, started, answer) => (id, started, answer),
            Enqueued::Full(..) if !wait_for_room => return Err(CallError::QueueFull),
            Enqueued::Full(job, answer) => {
                let (id, started) = (job.id, job.started);
                Box::pin(self.wait_for_room(job, options)).await?;
                (id, started, answer)
            }
        };
        let mut guard = CancelOnDrop {
            pool: &self.inner,
            id,
            armed: true,
        };
        let answer = if options.timeout.is_none()
            && self.inner.config.call_timeout.is_none()
            && options.token.is_none()
        {
            answer.await
        } else {
            let waited =
                Box::pin(self.answer_or_give_up(answer, &function, id, started, options)).await;
            if waited.is_err() {
                guard.armed = false;
            }
            waited?
        };
        guard.armed = false;
        answer_of(answer, &function, id, many)
    }

    /// Checks and submits a call (routed, queued, or given back when the
    /// queue is full, with the receiver of its answer).
    fn enqueue(
        &self,
        function: &Arc<str>,
        payload: Bytes,
        many: bool,
        fds: Vec<OwnedFd>,
        options: &CallOptions,
    ) -> Result<Enqueued, CallError> {
        let inner = &*self.inner;
        let size = 4 + 9 + 3 + function.len() + payload.len();
        if fds.len() > crate::protocol::MAX_FDS || (many && !fds.is_empty()) {
            return Err(CallError::Worker {
                function: function.to_string(),
                message: format!(
                    "a call carries 1 to {} file descriptors, got {}",
                    crate::protocol::MAX_FDS,
                    fds.len()
                ),
                data: None,
            });
        }
        if size - 4 > inner.config.max_frame {
            return Err(CallError::TooLarge {
                function: function.to_string(),
                size,
                max: inner.config.max_frame,
            });
        }
        let id = inner.next_call.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let retries_left = match options.retries {
            Some(n) => n,
            None if inner.config.retries.is_empty() => 0,
            None => inner.config.retries.get(&**function).copied().unwrap_or(0),
        };
        let (reply, answer) = oneshot::channel();
        let job = Job {
            id,
            function: Arc::clone(function),
            payload,
            many,
            retries_left,
            fds,
            started,
            reply,
        };
        match inner.submit(job) {
            Ok(()) => Ok(Enqueued::Taken(id, started, answer)),
            Err(Rejected::Failed(e)) => Err(e),
            Err(Rejected::Full(job)) => Ok(Enqueued::Full(job, answer)),
        }
    }

    /// Submits `job` again each time the queue has room, until it is taken.
    async fn wait_for_room(&self, mut job: Job, options: &CallOptions) -> Result<(), CallError> {
        let inner = &*self.inner;
        let id = job.id;
        let timeout = options.timeout.or(inner.config.call_timeout);
        let deadline = timeout.map(|d| job.started + d);
        let function = Arc::clone(&job.function);
        let _waiting = RoomWaiter::new(&inner.room_waiters);
        loop {
            let room = inner.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match inner.submit(job) {
                Ok(()) => return Ok(()),
                Err(Rejected::Failed(e)) => return Err(e),
                Err(Rejected::Full(back)) => job = back,
            }
            tokio::select! {
                biased;
                () = &mut room => {}
                () = sleep_until_opt(deadline) => return Err(CallError::TimedOut {
                    function: function.to_string(),
                    call_id: id,
                    timeout: timeout.unwrap_or_default(),
                }),
                () = cancelled_opt(options) => return Err(CallError::Cancelled {
                    function: function.to_string(),
                    call_id: id,
                }),
            }
        }
    }

    /// The answer, unless the deadline passes or the token fires first; then
    /// the worker is told to cancel (and is killed after the grace if it was
    /// a timeout).
    async fn answer_or_give_up(
        &self,
        answer: oneshot::Receiver<Reply>,
        function: &str,
        id: u64,
        started: Instant,
        options: &CallOptions,
    ) -> Result<Result<Reply, oneshot::error::RecvError>, CallError> {
        let inner = &*self.inner;
        let timeout = options.timeout.or(inner.config.call_timeout);
        // The deadline counts from the call's start, waiting included.
        let deadline = timeout.map(|d| started + d);
        tokio::select! {
            biased;
            answer = answer => Ok(answer),
            () = sleep_until_opt(deadline) => {
                inner.cancel(id, Some(inner.config.cancel_grace));
                Err(CallError::TimedOut {
                    function: function.to_owned(),
                    call_id: id,
                    timeout: timeout.unwrap_or_default(),
                })
            }
            () = cancelled_opt(options) => {
                inner.cancel(id, None);
                Err(CallError::Cancelled {
                    function: function.to_owned(),
                    call_id: id,
                })
            }
        }
    }

    /// A snapshot of the pool's workers, queue, outcomes and latency.
    pub fn stats(&self) -> ProcessPoolStats {
        let st = self.inner.lock();
        let live = st.workers.len();
        let busy = st.workers.iter().filter(|w| w.in_flight > 0).count();
        let queued = st.queue.iter().filter(|j| !j.abandoned()).count();
        let starting = st.starting;
        drop(st);
        self.inner.counters.snapshot(live, busy, queued, starting)
    }

    /// Events of the pool's workers (spawned, ready, exited, recycled, calls
    /// retried, stopped). The stream ends after [`ProcessEvent::Stopped`].
    /// Events are not kept for a subscriber that falls behind: it gets
    /// [`ProcessEvent::Lagged`] instead.
    pub fn events(&self) -> impl Stream<Item = ProcessEvent> + Send + Unpin + 'static {
        self.inner.events.subscribe()
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
            .restarts
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
        // Wait for the old generation to finish its calls and exit.
        loop {
            let settled = inner.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let gone = {
                let st = inner.lock();
                !st.workers.iter().any(|w| w.generation < generation)
            };
            if gone {
                return Ok(());
            }
            settled.await;
        }
    }

    /// Stops the pool gracefully: new calls fail with
    /// [`CallError::Stopped`]; queued and running calls finish; then each
    /// worker gets `SHUTDOWN`, and, if it has not exited within the stop
    /// timeout, the stop signal, then `SIGKILL` one stop timeout later.
    /// Returns when every call has settled and every worker is reaped. Calling
    /// it again waits the same way.
    ///
    /// # Cancel safety
    ///
    /// If dropped, the pool still stops (new calls are refused, workers exit
    /// when their calls are done).
    pub async fn stop(&self) {
        let inner = &self.inner;
        inner.lock().stopping = true;
        inner.supervisor.notify_one();
        // Drain: nothing queued, nothing in flight (or no worker left to run it).
        self.wait_until(|st| {
            (st.queue.is_empty() && st.workers.iter().all(|w| w.in_flight == 0))
                || (st.workers.is_empty() && st.starting == 0)
        })
        .await;
        let handles: Vec<_> = inner
            .lock()
            .workers
            .iter()
            .map(|w| Arc::clone(&w.handle))
            .collect();
        for h in &handles {
            h.shutdown.store(true, Ordering::Release);
            h.wake.notify_one();
        }
        self.wait_until(|st| st.workers.is_empty() && st.starting == 0)
            .await;
        // Calls left over if every worker died during the drain.
        inner.fail_queue(|| CallError::Stopped);
        for h in handles {
            let task = h
                .task
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(task) = task {
                let _ = task.await;
            }
        }
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

/// The options of a plain `call`.
static NO_OPTIONS: CallOptions = CallOptions {
    timeout: None,
    token: None,
    retries: None,
};

/// What `enqueue` did with a call.
enum Enqueued {
    /// Routed or queued: its id, start, and the receiver of its answer.
    Taken(u64, Instant, oneshot::Receiver<Reply>),
    /// The queue is full: the call, given back, and its answer's receiver.
    Full(Job, oneshot::Receiver<Reply>),
}

/// A call's result from its answer.
fn answer_of(
    answer: Result<Reply, oneshot::error::RecvError>,
    function: &str,
    id: u64,
    many: bool,
) -> Result<Bytes, CallError> {
    match answer {
        Ok(Reply::Value(bytes)) => Ok(bytes),
        Ok(Reply::Error(mut e)) => {
            let function = function.to_owned();
            // A `CALL_MANY` error names its failing item and carries the
            // item's own data inside (`docs/protocol.md`).
            let item = if many {
                let index = e
                    .data
                    .as_ref()
                    .and_then(|d| d.get("index"))
                    .and_then(serde_json::Value::as_u64);
                if index.is_some() {
                    e.data = e
                        .data
                        .take()
                        .and_then(|mut d| d.get_mut("data").map(serde_json::Value::take))
                        .filter(|d| !d.is_null());
                }
                index
            } else {
                None
            };
            let error = match e.kind {
                ErrorKind::Failed => CallError::Failed {
                    function,
                    message: e.message,
                    data: e.data,
                },
                ErrorKind::Panicked => CallError::Panicked {
                    function,
                    message: e.message,
                },
                ErrorKind::UnknownFunction => CallError::UnknownFunction(function),
                ErrorKind::BadArgs => CallError::BadArgs {
                    function,
                    message: e.message,
                },
                _ => CallError::Worker {
                    function,
                    message: e.message,
                    data: e.data,
                },
            };
            Err(match item {
                Some(index) => CallError::Item {
                    index: usize::try_from(index).unwrap_or(usize::MAX),
                    source: Box::new(error),
                },
                None => error,
            })
        }
        Ok(Reply::Lost { pid, exit }) => Err(CallError::WorkerLost {
            pid,
            call_id: id,
            exit,
        }),
        Ok(Reply::Refused(e)) => Err(e),
        Err(_) => Err(CallError::NoWorkers),
    }
}

/// Counts a caller waiting for room in the queue.
struct RoomWaiter<'a>(&'a AtomicUsize);

impl<'a> RoomWaiter<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        RoomWaiter(count)
    }
}

impl Drop for RoomWaiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Withdraws a call whose caller went away before its answer.
struct CancelOnDrop<'a> {
    pool: &'a Shared,
    id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.pool.cancel(self.id, None);
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn cancelled_opt(options: &CallOptions) {
    match &options.token {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}

impl std::fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessPool")
            .field("workers", &self.worker_pids())
            .finish_non_exhaustive()
    }
}
