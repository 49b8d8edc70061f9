//! Submitting tasks: per-task options and the two kinds of task source.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use pin_project_lite::pin_project;
use tokio_util::sync::CancellationToken;

use super::core::Refused;
use super::error::{SpawnError, TrySpawnError};
use super::events::PoolEvent;
use super::job::{new_job, Extras, Header, TaskHandle};
use super::output::{Failure, TaskOutput};
use super::pool::TaskPool;
use super::retry::{run_with_retry, RetryPolicy, RetryPredicate};
use super::shared::Shared;

/// Options shared by both builders.
#[derive(Default)]
struct Options {
    priority: Option<i32>,
    extras: Option<Box<Extras>>,
}

impl Options {
    fn header(self, shared: &Shared) -> Header {
        shared.header(self.priority, self.extras.filter(|e| !e.is_empty()))
    }

    fn extras(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Box::default)
    }
}

/// Builds one task from a future; made by [`TaskPool::task`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use workcrew::task::TaskPool;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = TaskPool::builder().build().unwrap();
/// let handle = pool
///     .task(async { Ok::<_, std::io::Error>(7) })
///     .name("answer")
///     .priority(10)
///     .timeout(Duration::from_secs(5))
///     .spawn()
///     .await
///     .unwrap();
/// assert_eq!(handle.await.unwrap(), 7);
/// # }
/// ```
#[must_use = "a task builder does nothing until `spawn` or `try_spawn`"]
pub struct TaskBuilder<'a, F> {
    pool: &'a TaskPool,
    fut: F,
    options: Options,
}

/// Builds one task from a closure that makes its future, so that it can be
/// retried; made by [`TaskPool::task_fn`].
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
/// use workcrew::task::{RetryPolicy, TaskPool};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = TaskPool::builder().build().unwrap();
/// let calls = Arc::new(AtomicU32::new(0));
/// let c = calls.clone();
/// let handle = pool
///     .task_fn(move || {
///         let n = c.fetch_add(1, Ordering::SeqCst) + 1;
///         async move { if n < 3 { Err(format!("attempt {n} failed")) } else { Ok(n) } }
///     })
///     .retry(RetryPolicy::new(5).backoff(Duration::from_millis(1), Duration::from_millis(10)))
///     .spawn()
///     .await
///     .unwrap();
/// assert_eq!(handle.await.unwrap(), 3);
/// # }
/// ```
#[must_use = "a task builder does nothing until `spawn` or `try_spawn`"]
pub struct TaskFnBuilder<'a, M, O: TaskOutput> {
    pool: &'a TaskPool,
    make: M,
    options: Options,
    policy: RetryPolicy,
    retry_if: Option<RetryPredicate<O::Err>>,
    attempt_timeout: Option<Duration>,
}

macro_rules! option_setters {
    () => {
        /// Names the task in events, reports and stall errors.
        pub fn name(mut self, name: impl Into<String>) -> Self {
            self.options.extras().name = Some(Arc::from(name.into()));
            self
        }

        /// Higher runs first; FIFO within a priority. Default: the pool's
        /// [`default_priority`](super::TaskPoolBuilder::default_priority).
        pub fn priority(mut self, priority: i32) -> Self {
            self.options.priority = Some(priority);
            self
        }

        /// Ends the task as [`TaskError::TimedOut`](super::TaskError::TimedOut)
        /// if it runs longer, counted from its start.
        ///
        /// For a task made by [`task_fn`](super::TaskPool::task_fn) this is a
        /// deadline over all its attempts and the backoff between them: when it
        /// passes, the attempt in progress is dropped and no retry follows. To
        /// limit each attempt instead, use
        /// [`attempt_timeout`](super::TaskFnBuilder::attempt_timeout).
        ///
        /// Default: the pool's [`task_timeout`](super::TaskPoolBuilder::task_timeout).
        pub fn timeout(mut self, timeout: Duration) -> Self {
            self.options.extras().timeout = Some(timeout);
            self
        }

        /// Ends the task as cancelled ([`CancelReason::Token`](super::CancelReason::Token))
        /// when `token` fires.
        ///
        /// A queued task leaves the queue as soon as the token fires, also in a
        /// paused pool: its place is freed, it is counted as cancelled and its
        /// future is dropped without being polled. (While it is queued, a small
        /// watcher task waits on the token for it.) A running task stops at its
        /// next `.await`. While [`spawn`](Self::spawn) waits for queue room the
        /// task is not queued yet; a token that fired meanwhile ends it as soon
        /// as it is.
        pub fn cancel_token(mut self, token: CancellationToken) -> Self {
            self.options.extras().token = Some(token);
            self
        }
    };
}

impl<'a, F> TaskBuilder<'a, F>
where
    F: Future + Send + 'static,
    F::Output: TaskOutput,
{
    pub(crate) fn new(pool: &'a TaskPool, fut: F) -> Self {
        TaskBuilder {
            pool,
            fut,
            options: Options::default(),
        }
    }

    option_setters!();

    /// Queues the task, waiting for room if the queue is full.
    ///
    /// # Errors
    ///
    /// [`SpawnError::Closed`] with the future, if the pool is closed (also when
    /// it closes while this call waits for room).
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future before it resolves drops the task unqueued.
    pub async fn spawn(self) -> Result<TaskHandle<F::Output>, SpawnError<F>> {
        submit(self.pool.shared(), self.options, self.fut, true)
            .await
            .map_err(|(_, fut)| SpawnError::Closed(fut))
    }

    /// Queues the task if there is room now.
    ///
    /// # Errors
    ///
    /// [`TrySpawnError::Full`] or [`TrySpawnError::Closed`], with the future.
    pub fn try_spawn(self) -> Result<TaskHandle<F::Output>, TrySpawnError<F>> {
        submit_now(self.pool.shared(), self.options, self.fut).map_err(try_error)
    }
}

impl<'a, M, Fut> TaskFnBuilder<'a, M, Fut::Output>
where
    M: FnMut() -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: TaskOutput,
{
    pub(crate) fn new(pool: &'a TaskPool, make: M) -> Self {
        TaskFnBuilder {
            pool,
            make,
            options: Options::default(),
            policy: RetryPolicy::new(1),
            retry_if: None,
            attempt_timeout: None,
        }
    }

    option_setters!();

    /// Retries failed attempts under `policy`. Default: one attempt.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Limits each attempt to `timeout`, from its start; the backoff between
    /// attempts is not counted. Default: none.
    ///
    /// An attempt that runs longer is dropped and counts as a failed attempt
    /// that is always retried while the [`retry`](Self::retry) policy has
    /// attempts left: [`retry_if`](Self::retry_if) is not asked, as it judges
    /// the task's own errors and a timeout is not one. If the last attempt
    /// times out, the task ends as [`TaskError::TimedOut`](super::TaskError::TimedOut)
    /// (a [`FailureKind::TimedOut`](super::FailureKind::TimedOut) failure in
    /// the [`DrainReport`](super::DrainReport), naming the attempt); if it
    /// fails with its own error, as [`TaskError::Failed`](super::TaskError::Failed).
    ///
    /// [`timeout`](Self::timeout) is the other limit: a deadline over all
    /// attempts and backoff together. Both may be set; whichever comes first
    /// applies.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use workcrew::task::{RetryPolicy, TaskPool};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = TaskPool::builder().build().unwrap();
    /// let mut attempts = 0;
    /// let handle = pool
    ///     .task_fn(move || {
    ///         attempts += 1;
    ///         let hang = attempts == 1; // the first attempt hangs
    ///         async move {
    ///             if hang {
    ///                 std::future::pending::<()>().await;
    ///             }
    ///             Ok::<_, String>("answered")
    ///         }
    ///     })
    ///     .retry(RetryPolicy::new(3).backoff(Duration::from_millis(1), Duration::from_millis(10)))
    ///     .attempt_timeout(Duration::from_millis(50)) // per attempt
    ///     .timeout(Duration::from_secs(5)) // over all attempts
    ///     .spawn()
    ///     .await
    ///     .unwrap();
    /// assert_eq!(handle.await.unwrap(), "answered");
    /// # }
    /// ```
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Retries only errors for which `pred` returns true. Default: all.
    /// Attempts cut by the [`attempt_timeout`](Self::attempt_timeout) are
    /// retried without asking.
    pub fn retry_if(
        mut self,
        pred: impl Fn(&<Fut::Output as TaskOutput>::Err) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.retry_if = Some(Arc::new(pred));
        self
    }

    /// Queues the task, waiting for room if the queue is full.
    ///
    /// # Errors
    ///
    /// [`SpawnError::Closed`] with the closure, if the pool is closed.
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future before it resolves drops the task unqueued.
    pub async fn spawn(self) -> Result<TaskHandle<Fut::Output>, SpawnError<M>> {
        let shared = Arc::clone(self.pool.shared());
        let (options, fut) = self.into_parts();
        submit(&shared, options, fut, true)
            .await
            .map_err(|(_, r)| SpawnError::Closed(r.into_make()))
    }

    /// Queues the task if there is room now.
    ///
    /// # Errors
    ///
    /// [`TrySpawnError::Full`] or [`TrySpawnError::Closed`], with the closure.
    pub fn try_spawn(self) -> Result<TaskHandle<Fut::Output>, TrySpawnError<M>> {
        let shared = Arc::clone(self.pool.shared());
        let (options, fut) = self.into_parts();
        submit_now(&shared, options, fut).map_err(|(why, r)| try_error((why, r.into_make())))
    }

    fn into_parts(self) -> (Options, Retried<M, Fut>) {
        let retried = Retried {
            make: Some(self.make),
            policy: self.policy,
            retry_if: self.retry_if,
            attempt_timeout: self.attempt_timeout,
            pool: Arc::downgrade(self.pool.shared()),
            running: None,
        };
        (self.options, retried)
    }
}

/// Queues a task, waiting for room if `wait`; gives the source back (with the
/// reason) if it cannot be queued.
async fn submit<S>(
    shared: &Arc<Shared>,
    options: Options,
    source: S,
    wait: bool,
) -> Result<TaskHandle<S::Output>, (Refused, S::Source)>
where
    S: Source,
{
    let header = options.header(shared);
    let id = header.id;
    let (mut job, handle) = new_job::<_, S::Output>(shared.key(), header, source.into_split(id));
    loop {
        match shared.push(job, wait) {
            Ok(()) => return Ok(handle),
            Err((_, refused, Some(room))) => {
                job = refused;
                room.await;
            }
            Err((why, refused, None)) => return Err((why, S::give_back(refused.into_future()))),
        }
    }
}

/// [`submit`] without waiting.
fn submit_now<S: Source>(
    shared: &Arc<Shared>,
    options: Options,
    source: S,
) -> Result<TaskHandle<S::Output>, (Refused, S::Source)> {
    submit(shared, options, source, false)
        .now_or_never()
        .expect("a submit that does not wait never pends")
}

fn try_error<T>((why, source): (Refused, T)) -> TrySpawnError<T> {
    match why {
        Refused::Full => TrySpawnError::Full(source),
        Refused::Closed => TrySpawnError::Closed(source),
    }
}

/// A task source: turns into the future a job runs, and back if refused.
trait Source: Sized {
    type Output: TaskOutput;
    type Source;
    type Split: Future<Output = SplitResult<Self::Output>> + Send + 'static;
    fn into_split(self, id: super::id::TaskId) -> Self::Split;
    fn give_back(split: Self::Split) -> Self::Source;
}

impl<F> Source for F
where
    F: Future + Send + 'static,
    F::Output: TaskOutput,
{
    type Output = F::Output;
    type Source = F;
    type Split = Split<F>;

    fn into_split(self, _id: super::id::TaskId) -> Split<F> {
        Split { fut: self }
    }

    fn give_back(split: Split<F>) -> F {
        split.fut
    }
}

/// What a job's future resolves to: the task's value, or how it failed.
type SplitResult<O> = Result<<O as TaskOutput>::Ok, Failure<<O as TaskOutput>::Err>>;

pin_project! {
    /// A future whose output is split into `Result` by [`TaskOutput`].
    pub(crate) struct Split<F> {
        #[pin]
        fut: F,
    }
}

impl<F> Future for Split<F>
where
    F: Future,
    F::Output: TaskOutput,
{
    type Output = SplitResult<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project()
            .fut
            .poll(cx)
            .map(|out| out.into_result().map_err(Failure::Failed))
    }
}

/// The retry loop of a closure-made task, once started.
type RetryLoop<O> = Pin<Box<dyn Future<Output = SplitResult<O>> + Send>>;

/// A closure-made task with its retry loop, started on first poll so the
/// closure can be given back if the task is refused.
pub(crate) struct Retried<M, Fut: Future>
where
    Fut::Output: TaskOutput,
{
    make: Option<M>,
    policy: RetryPolicy,
    retry_if: Option<RetryPredicate<<Fut::Output as TaskOutput>::Err>>,
    attempt_timeout: Option<Duration>,
    pool: Weak<Shared>,
    running: Option<RetryLoop<Fut::Output>>,
    // `id` is given at start, see `Source::into_split`.
}

/// A retried task tagged with its id (for retry events).
pub(crate) struct RetriedWithId<M, Fut: Future>
where
    Fut::Output: TaskOutput,
{
    inner: Retried<M, Fut>,
    id: super::id::TaskId,
}

impl<M, Fut: Future> Retried<M, Fut>
where
    Fut::Output: TaskOutput,
{
    fn into_make(self) -> M {
        self.make.expect("a refused task was never started")
    }
}

impl<M, Fut> Source for Retried<M, Fut>
where
    M: FnMut() -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: TaskOutput,
{
    type Output = Fut::Output;
    type Source = Retried<M, Fut>;
    type Split = RetriedWithId<M, Fut>;

    fn into_split(self, id: super::id::TaskId) -> Self::Split {
        RetriedWithId { inner: self, id }
    }

    fn give_back(split: Self::Split) -> Self::Source {
        split.inner
    }
}

// All fields are `Unpin` (the user's futures live in a `Pin<Box<_>>`).
impl<M, Fut: Future> Unpin for RetriedWithId<M, Fut> where Fut::Output: TaskOutput {}

impl<M, Fut> Future for RetriedWithId<M, Fut>
where
    M: FnMut() -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: TaskOutput,
{
    type Output = SplitResult<Fut::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let id = this.id;
        let r = &mut this.inner;
        if r.running.is_none() {
            let make = r.make.take().expect("started once");
            let pool = r.pool.clone();
            let on_retry = Box::new(move |attempt: u32, delay: Duration| {
                if let Some(shared) = pool.upgrade() {
                    shared
                        .retried
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    shared
                        .events
                        .send(PoolEvent::TaskRetried { id, attempt, delay });
                }
            });
            r.running = Some(Box::pin(run_with_retry(
                make,
                r.policy.clone(),
                r.retry_if.take(),
                r.attempt_timeout,
                on_retry,
            )));
        }
        r.running.as_mut().expect("just set").as_mut().poll(cx)
    }
}
