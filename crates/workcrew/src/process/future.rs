//! The life of one call: checked, routed or queued, awaited, answered.
//!
//! # Implementation notes
//!
//! Thousands of calls may be in flight at once, each holding its future, so
//! the common path is a small hand-written future ([`CallFuture`]): on first
//! poll it encodes and submits the call (one lock), then waits on its answer's
//! receiver, and on its deadline too if it has one (a timeout of its own or the
//! pool's: one boxed `Sleep`). Everything rarer — a cancellation token, a full
//! queue — runs in a boxed `async` block instead, so it costs nothing to the
//! calls that do not use it. (Timed calls went that way too, at about 2,100
//! more instructions per call than untimed ones: a 100,000-call burst with the
//! pool's `call_timeout` set ran at 0.8M calls/s against 1.9M without.) A
//! future dropped while its call is out sends `CANCEL` (a queued call is
//! skipped instead, see `state`).
//!
//! The answer comes through a `futures::channel::oneshot`, not tokio's: tokio's
//! spends the task's cooperative budget (128 per poll), and thousands of calls
//! in one `FuturesUnordered` or `join_all` inside a task then completed 128 per
//! poll while the set re-polled the others, 20-40 times slower than the same
//! burst from `block_on` (test `answered_calls_all_complete_in_one_poll_of_the_callers_task`).
//! A call still goes pending at least once (its answer comes from another
//! process), so a task looping over calls yields all the same.

use std::future::Future;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::oneshot;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use super::call::CallOptions;
use super::error::CallError;
use super::payload::Payload;
use super::pool::ProcessPool;
use super::state::{Job, Rejected, Reply, Shared};
use crate::common::{cancelled_opt, sleep_until_opt};
use crate::protocol::ErrorKind;

/// The future of [`ProcessPool::call`] and [`ProcessPool::call_with`].
pub(crate) struct CallFuture<'a, A: ?Sized, R> {
    pool: &'a ProcessPool,
    function: &'a str,
    state: Step<'a, A>,
    result: PhantomData<fn() -> R>,
}

enum Step<'a, A: ?Sized> {
    Start {
        args: &'a A,
        options: &'a CallOptions,
    },
    /// Submitted; waiting for the answer, and for the deadline if it has a timeout (the
    /// timeout and its timer), whichever comes first (the answer when both are there).
    Waiting {
        id: u64,
        answer: oneshot::Receiver<Reply>,
        deadline: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
    },
    /// A token, or a full queue: the general path.
    Slow(Pin<Box<dyn Future<Output = Result<Payload, CallError>> + Send + 'a>>),
    Done,
}

impl<'a, A: ?Sized, R> CallFuture<'a, A, R> {
    pub(crate) fn new(
        pool: &'a ProcessPool,
        function: &'a str,
        args: &'a A,
        options: &'a CallOptions,
    ) -> Self {
        CallFuture {
            pool,
            function,
            state: Step::Start { args, options },
            result: PhantomData,
        }
    }

    /// The first poll: encode and submit, or hand over to the general path.
    fn start(&mut self, args: &A, options: &'a CallOptions) -> Option<Result<Payload, CallError>>
    where
        A: Serialize,
    {
        let pool = self.pool;
        let function = self.function;
        let payload = match pool.encode(function, args) {
            Ok(payload) => payload,
            Err(e) => return Some(Err(e)),
        };
        let name = shared_name(function);
        let timeout = options.timeout.or(pool.inner.config.call_timeout);
        if options.token.is_some() {
            self.state = Step::Slow(Box::pin(pool.send_raw(
                name,
                payload,
                false,
                Vec::new(),
                options,
                true,
            )));
            return None;
        }
        match pool.enqueue(&name, payload, false, Vec::new(), options) {
            Err(e) => Some(Err(e)),
            Ok(Enqueued::Taken(id, started, answer)) => {
                // The deadline counts from the call's start, as in `answer_or_give_up`.
                let deadline = timeout.map(|timeout| {
                    (
                        timeout,
                        Box::pin(tokio::time::sleep_until(started + timeout)),
                    )
                });
                self.state = Step::Waiting {
                    id,
                    answer,
                    deadline,
                };
                None
            }
            Ok(Enqueued::Full(job, answer)) => {
                self.state = Step::Slow(Box::pin(async move {
                    let (id, started) = (job.id, job.started);
                    pool.wait_for_room(job, options).await?;
                    pool.await_answer(&name, id, started, answer, false, options)
                        .await
                }));
                None
            }
        }
    }
}

impl<A, R> Future for CallFuture<'_, A, R>
where
    A: Serialize + Sync + ?Sized,
    R: DeserializeOwned,
{
    type Output = Result<R, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            let raw = match &mut this.state {
                Step::Start { args, options } => {
                    let (args, options) = (*args, *options);
                    this.start(args, options)
                }
                Step::Waiting {
                    id,
                    answer,
                    deadline,
                } => match Pin::new(answer).poll(cx) {
                    Poll::Ready(answer) => {
                        let id = *id;
                        // Answered: nothing to cancel on drop any more.
                        this.state = Step::Done;
                        Some(answer_of(answer, this.function, id, false))
                    }
                    Poll::Pending => match deadline {
                        Some((timeout, timer)) => match timer.as_mut().poll(cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(()) => {
                                let (id, timeout) = (*id, *timeout);
                                // Withdrawn if still queued (its receiver goes with the
                                // state), else told to cancel and its worker killed after
                                // the grace.
                                this.pool.inner.cancel(id);
                                this.state = Step::Done;
                                Some(Err(CallError::TimedOut {
                                    function: this.function.to_owned(),
                                    call_id: id,
                                    timeout,
                                }))
                            }
                        },
                        None => return Poll::Pending,
                    },
                },
                Step::Slow(f) => match f.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(raw) => Some(raw),
                },
                Step::Done => panic!("a call future was polled after it completed"),
            };
            if let Some(raw) = raw {
                this.state = Step::Done;
                let result = raw.and_then(|bytes| this.pool.decode(this.function, &bytes));
                this.pool.inner.counters.record(&result);
                return Poll::Ready(result);
            }
        }
    }
}

impl<A: ?Sized, R> Drop for CallFuture<'_, A, R> {
    /// A call given up before its answer: withdrawn if still queued, cancelled (then its
    /// worker killed after the cancel grace if it does not answer) if sent.
    fn drop(&mut self) {
        if let Step::Waiting { id, .. } = self.state {
            self.pool.inner.cancel(id);
            self.pool.inner.counters.dropped();
        }
    }
}

impl ProcessPool {
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
    ) -> Result<Payload, CallError> {
        Payload::encode(self.inner.encoding, args).map_err(|source| CallError::Payload {
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
    ) -> Result<Payload, CallError> {
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
        payload: Payload,
        many: bool,
        fds: Vec<OwnedFd>,
        options: &CallOptions,
        wait_for_room: bool,
    ) -> Result<Payload, CallError> {
        let (id, started, answer) = match self.enqueue(&function, payload, many, fds, options)? {
            Enqueued::Taken(id, started, answer) => (id, started, answer),
            Enqueued::Full(..) if !wait_for_room => return Err(CallError::QueueFull),
            Enqueued::Full(job, answer) => {
                let (id, started) = (job.id, job.started);
                Box::pin(self.wait_for_room(job, options)).await?;
                (id, started, answer)
            }
        };
        self.await_answer(&function, id, started, answer, many, options)
            .await
    }

    /// Waits for a submitted call's answer (within its deadline, unless its
    /// token fires); sends `CANCEL` if dropped first.
    pub(crate) async fn await_answer(
        &self,
        function: &str,
        id: u64,
        started: Instant,
        answer: oneshot::Receiver<Reply>,
        many: bool,
        options: &CallOptions,
    ) -> Result<Payload, CallError> {
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
                Box::pin(self.answer_or_give_up(answer, function, id, started, options)).await;
            if waited.is_err() {
                guard.armed = false;
            }
            waited?
        };
        guard.armed = false;
        answer_of(answer, function, id, many)
    }

    /// Checks and submits a call (routed, queued, or given back when the
    /// queue is full, with the receiver of its answer).
    pub(crate) fn enqueue(
        &self,
        function: &Arc<str>,
        payload: Payload,
        many: bool,
        fds: Vec<OwnedFd>,
        options: &CallOptions,
    ) -> Result<Enqueued, CallError> {
        let inner = &*self.inner;
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
        // The frame's `length` (`docs/protocol.md`, section 2): type and id, the name's length
        // and the name, the payload, and the descriptor count of a `CALL_FDS`.
        let length = 9 + 2 + function.len() + payload.len() + usize::from(!fds.is_empty());
        if length > inner.config.max_frame {
            return Err(CallError::TooLarge {
                function: function.to_string(),
                size: length,
                max: inner.config.max_frame,
            });
        }
        let id = inner.next_call.fetch_add(1, Ordering::Relaxed);
        if options.token.as_ref().is_some_and(|t| t.is_cancelled()) {
            // Given up before it started: never routed, so no worker sees it.
            return Err(CallError::Cancelled {
                function: function.to_string(),
                call_id: id,
            });
        }
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
    pub(crate) async fn wait_for_room(
        &self,
        mut job: Job,
        options: &CallOptions,
    ) -> Result<(), CallError> {
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
                () = cancelled_opt(options.token.as_ref()) => return Err(CallError::Cancelled {
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
    ) -> Result<Result<Reply, oneshot::Canceled>, CallError> {
        let inner = &*self.inner;
        let timeout = options.timeout.or(inner.config.call_timeout);
        // The deadline counts from the call's start, waiting included.
        let deadline = timeout.map(|d| started + d);
        tokio::select! {
            biased;
            answer = answer => Ok(answer),
            () = sleep_until_opt(deadline) => {
                inner.cancel(id);
                Err(CallError::TimedOut {
                    function: function.to_owned(),
                    call_id: id,
                    timeout: timeout.unwrap_or_default(),
                })
            }
            () = cancelled_opt(options.token.as_ref()) => {
                inner.cancel(id);
                Err(CallError::Cancelled {
                    function: function.to_owned(),
                    call_id: id,
                })
            }
        }
    }
}

thread_local! {
    /// The function name this thread called last: the next call to it shares the name.
    static LAST_NAME: std::cell::RefCell<Option<Arc<str>>> = const { std::cell::RefCell::new(None) };
}

/// `function` as the shared name a call holds: the one this thread called last if it is the
/// same (most calls in a row name one function), so a call allocates no name of its own.
fn shared_name(function: &str) -> Arc<str> {
    LAST_NAME.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some(name) if **name == *function => Arc::clone(name),
            _ => {
                let name: Arc<str> = Arc::from(function);
                *last = Some(Arc::clone(&name));
                name
            }
        }
    })
}

/// The options of a plain `call`.
pub(crate) static NO_OPTIONS: CallOptions = CallOptions {
    timeout: None,
    token: None,
    retries: None,
};

/// What `enqueue` did with a call.
pub(crate) enum Enqueued {
    /// Routed or queued: its id, start, and the receiver of its answer.
    Taken(u64, Instant, oneshot::Receiver<Reply>),
    /// The queue is full: the call, given back, and its answer's receiver.
    Full(Job, oneshot::Receiver<Reply>),
}

/// A call's result from its answer.
fn answer_of(
    answer: Result<Reply, oneshot::Canceled>,
    function: &str,
    id: u64,
    many: bool,
) -> Result<Payload, CallError> {
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
        Ok(Reply::Lost {
            pid,
            reason,
            status,
        }) => Err(CallError::WorkerLost {
            pid,
            call_id: id,
            reason,
            status,
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
            self.pool.cancel(self.id);
            self.pool.counters.dropped();
        }
    }
}
