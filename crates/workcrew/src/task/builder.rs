//! Building a pool: its configuration and validation.

use std::time::Duration;

use super::error::BuildError;
use super::pool::TaskPool;
use super::rate::RateLimit;

/// How concurrent [`drain`](TaskPool::drain) calls behave.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DrainMode {
    /// Every drainer waits until the pool is idle and gets the report.
    #[default]
    All,
    /// Only the newest drainer waits: a new `drain()` releases older waiters at
    /// once with [`DrainError::Superseded`](super::DrainError::Superseded) and a
    /// stats snapshot.
    ///
    /// This is promise-pool's hand-off drain. It helps a server that shares one
    /// pool between requests and drains at the end of each: under a steady
    /// stream of requests the pool is rarely idle, so with [`DrainMode::All`]
    /// every request would wait for everyone else's work. With `HandOff` a
    /// request waits only until the next request takes over the waiting, and
    /// the last one waits for all of it.
    HandOff,
}

/// The pool's settings, as plain data.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Config {
    pub(crate) name: Option<String>,
    pub(crate) max_concurrency: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) default_priority: i32,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) max_runtime: Option<Duration>,
    pub(crate) stall_timeout: Option<Duration>,
    pub(crate) drain_mode: DrainMode,
    pub(crate) max_reported_failures: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: None,
            max_concurrency: 4,
            queue_capacity: 1024,
            default_priority: 0,
            rate_limit: None,
            task_timeout: None,
            max_runtime: None,
            stall_timeout: None,
            drain_mode: DrainMode::All,
            max_reported_failures: 1000,
        }
    }
}

/// Configures and builds a [`TaskPool`]; made by [`TaskPool::builder`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use workcrew::task::TaskPool;
///
/// let pool = TaskPool::builder()
///     .name("uploads")
///     .max_concurrency(8)
///     .queue_capacity(10_000)
///     .stall_timeout(Duration::from_secs(60))
///     .build()?;
/// # Ok::<(), workcrew::task::BuildError>(())
/// ```
#[must_use]
#[derive(Clone, Debug, Default)]
pub struct TaskPoolBuilder {
    config: Config,
}

impl TaskPoolBuilder {
    /// A name for logs and `Debug`. Default: none.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = Some(name.into());
        self
    }

    /// Tasks running at once. Default: 4. Must be at least 1.
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.config.max_concurrency = n;
        self
    }

    /// Tasks that may wait in the queue; when it is full,
    /// [`spawn`](TaskPool::spawn) waits and [`try_spawn`](TaskPool::try_spawn)
    /// gives the task back. Default: 1024. Must be at least 1.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.config.queue_capacity = n;
        self
    }

    /// The priority of tasks that set none (higher runs first). Default: 0.
    pub fn default_priority(mut self, priority: i32) -> Self {
        self.config.default_priority = priority;
        self
    }

    /// Limits how often tasks start. Default: no limit.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.config.rate_limit = Some(limit);
        self
    }

    /// The [`timeout`](super::TaskBuilder::timeout) of tasks that set none: a
    /// deadline from the task's start, over all its attempts for a retried
    /// task. Default: none.
    ///
    /// There is no pool-wide attempt timeout: like the retry policy it goes
    /// with, a limit per attempt is set per task
    /// ([`attempt_timeout`](super::TaskFnBuilder::attempt_timeout)), since only
    /// the task's author knows whether an attempt cut short may be repeated.
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.config.task_timeout = Some(timeout);
        self
    }

    /// A limit on each busy period (from the moment the idle pool accepts work
    /// until it is idle again). When reached, queued tasks are cancelled and
    /// running ones aborted, with [`CancelReason::RuntimeLimit`](super::CancelReason::RuntimeLimit),
    /// and `drain`/`close` return
    /// [`DrainError::RuntimeExceeded`](super::DrainError::RuntimeExceeded).
    /// The pool stays open. Default: none.
    ///
    /// Use it to fit background work inside a request's budget, e.g. the
    /// remaining time of a serverless invocation.
    pub fn max_runtime(mut self, limit: Duration) -> Self {
        self.config.max_runtime = Some(limit);
        self
    }

    /// When work is pending but no task has finished for this long, send
    /// [`PoolEvent::Stalled`](super::PoolEvent::Stalled) and release waiting
    /// drainers with [`DrainError::Stalled`](super::DrainError::Stalled), naming
    /// the oldest running task. Tasks are not touched. A paused pool with
    /// nothing running is not stalled. Default: none.
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.config.stall_timeout = Some(timeout);
        self
    }

    /// How concurrent drainers behave. Default: [`DrainMode::All`].
    pub fn drain_mode(mut self, mode: DrainMode) -> Self {
        self.config.drain_mode = mode;
        self
    }

    /// How many failures a [`DrainReport`](super::DrainReport) lists; more are
    /// counted in `failures_omitted`. Default: 1000.
    pub fn max_reported_failures(mut self, n: usize) -> Self {
        self.config.max_reported_failures = n;
        self
    }

    /// Builds the pool. No tokio runtime is needed yet: workers start on the
    /// runtime of the first `spawn`.
    ///
    /// # Errors
    ///
    /// [`BuildError`] if `max_concurrency` or `queue_capacity` is 0, or the rate
    /// limit is invalid.
    pub fn build(self) -> Result<TaskPool, BuildError> {
        let config = self.config;
        if config.max_concurrency == 0 {
            return Err(BuildError::ZeroConcurrency);
        }
        if config.queue_capacity == 0 {
            return Err(BuildError::ZeroQueueCapacity);
        }
        if let Some(limit) = &config.rate_limit {
            limit.validate()?;
        }
        Ok(TaskPool::from_config(config))
    }
}
