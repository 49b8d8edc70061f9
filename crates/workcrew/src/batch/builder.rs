//! Building a [`BatchJob`]: its source, handler and policies.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use super::error::BuildError;
use super::id::{Id, IdKind};
use super::job::BatchJob;
use super::range::{Processed, Range};
use super::run::RunSummary;
use super::store::{Rate, SourceSpec, Store};
use crate::process::ProcessPool;
use crate::task::{RetryPolicy, TaskPool};

/// What a job guarantees about running each id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// Every id is processed at least once, none is skipped; an id runs twice
    /// only when the process holding its range died (or lost its lease) while
    /// running it. Failed attempts are retried per the retry policy. Default.
    #[default]
    AtLeastOnce,
    /// No id is handed to a handler twice by the job: a range whose holder died
    /// is parked as failed instead of being run again, and a failed attempt is
    /// not retried. Such ranges run again only if you call
    /// [`retry_failed`](BatchJob::retry_failed).
    AtMostOnce,
}

/// The id types a loader can work in: `i64` and `String`.
pub trait LoaderId: Into<Id> + Send + Sync + 'static + sealed::Sealed {
    /// The kind the store records.
    const KIND: IdKind;

    /// Back from an [`Id`] of this kind.
    fn from_id(id: Id) -> Option<Self>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for i64 {}
    impl Sealed for String {}
}

impl LoaderId for i64 {
    const KIND: IdKind = IdKind::Int;

    fn from_id(id: Id) -> Option<Self> {
        id.as_int()
    }
}

impl LoaderId for String {
    const KIND: IdKind = IdKind::Str;

    fn from_id(id: Id) -> Option<Self> {
        match id {
            Id::Str(s) => Some(s),
            Id::Int(_) => None,
        }
    }
}

pub(crate) type HandlerFn =
    Arc<dyn Fn(Range) -> BoxFuture<'static, Result<Processed, String>> + Send + Sync>;
pub(crate) type LoaderFn =
    Arc<dyn Fn(Option<Id>) -> BoxFuture<'static, Result<Vec<Id>, String>> + Send + Sync>;
pub(crate) type StopHook = Arc<dyn Fn(RunSummary) -> BoxFuture<'static, ()> + Send + Sync>;

pub(crate) enum Handler {
    InProcess {
        f: HandlerFn,
        pool: Option<TaskPool>,
    },
    Process {
        pool: ProcessPool,
        function: Arc<str>,
    },
}

pub(crate) enum Source {
    Span { start: i64, end: i64, size: u64 },
    Loader { f: LoaderFn, kind: IdKind },
}

impl Source {
    pub(crate) fn spec(&self) -> SourceSpec {
        match self {
            Source::Span { start, end, size } => SourceSpec::Span {
                start: *start,
                end: *end,
                size: *size,
            },
            Source::Loader { kind, .. } => SourceSpec::Loader { kind: *kind },
        }
    }
}

/// A job's policies, validated.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) workers: usize,
    pub(crate) lease: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) delivery: Delivery,
    pub(crate) restart: bool,
    pub(crate) max_restarts: usize,
    pub(crate) restart_window: Duration,
    pub(crate) rate: Option<Rate>,
    pub(crate) store_retry_for: Duration,
    pub(crate) stop_grace: Duration,
    pub(crate) range_timeout: Option<Duration>,
    pub(crate) poll: Duration,
    pub(crate) retry_chunk: u64,
    pub(crate) max_claim: u32,
}

/// Builds a [`BatchJob`]; from [`BatchJob::builder`].
#[must_use = "a builder does nothing until build() is called"]
pub struct BatchJobBuilder {
    store: Arc<dyn Store>,
    name: String,
    span: Option<(i64, i64)>,
    range_size: u64,
    loader: Option<(LoaderFn, IdKind)>,
    handler: Option<Handler>,
    task_pool: Option<TaskPool>,
    /// Set by `restart_budget`; otherwise `workers × 5`.
    max_restarts: Option<usize>,
    config: Config,
    rate: Option<(f64, Option<u64>)>,
    token: Option<CancellationToken>,
    before_stop: Option<StopHook>,
}

impl BatchJobBuilder {
    pub(crate) fn new(store: Arc<dyn Store>, name: String) -> Self {
        let workers = std::thread::available_parallelism().map_or(2, usize::from);
        BatchJobBuilder {
            store,
            name,
            span: None,
            range_size: 100,
            loader: None,
            handler: None,
            task_pool: None,
            max_restarts: None,
            config: Config {
                workers,
                lease: Duration::from_secs(30),
                retry: RetryPolicy::new(3),
                delivery: Delivery::AtLeastOnce,
                restart: true,
                max_restarts: workers * 5,
                restart_window: Duration::from_secs(60),
                rate: None,
                store_retry_for: Duration::from_secs(30),
                stop_grace: Duration::from_secs(10),
                range_timeout: None,
                poll: Duration::from_secs(1),
                retry_chunk: 100,
                max_claim: 16,
            },
            rate: None,
            token: None,
            before_stop: None,
        }
    }

    /// Processes the integers `start..end`, cut into ranges of
    /// [`range_size`](Self::range_size).
    pub fn span(mut self, ids: std::ops::Range<i64>) -> Self {
        self.span = Some((ids.start, ids.end));
        self
    }

    /// Ids per range of a span (and per range of retried failed ids). Default: 100.
    pub fn range_size(mut self, size: u64) -> Self {
        self.range_size = size;
        self
    }

    /// Loads the ids from a function, as the parallel-worker seed's
    /// `setLoadNextRange`: given the last id handed out so far (`None` at the
    /// start), it returns the next ids in strictly increasing order, all after it
    /// (e.g. `SELECT id … WHERE id > $1 ORDER BY id LIMIT 100`), or an empty list
    /// when there are no more. Each call's ids become one range.
    ///
    /// The job checks the order and fails with an error naming the range when it
    /// is wrong. A failing loader is retried with backoff for the store retry time,
    /// then the run fails. Ids are `i64` or `String`.
    pub fn load_with<F, Fut, I, E>(mut self, f: F) -> Self
    where
        F: Fn(Option<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<I>, E>> + Send + 'static,
        I: LoaderId,
        E: fmt::Display + Send + 'static,
    {
        let f: LoaderFn = Arc::new(move |after: Option<Id>| {
            let after = after.and_then(I::from_id);
            let fut = f(after);
            async move {
                fut.await
                    .map(|ids| ids.into_iter().map(Into::into).collect())
                    .map_err(|e| e.to_string())
            }
            .boxed()
        });
        self.loader = Some((f, I::KIND));
        self
    }

    /// Processes each range with an async function, in this process (on a
    /// [`TaskPool`]: a panic is caught and counts as a worker exit).
    ///
    /// It returns `Ok(())` when every id succeeded, `Ok(Processed)` naming failed
    /// ids, or `Err` to fail the range's attempt.
    pub fn handler<F, Fut, T, E>(mut self, f: F) -> Self
    where
        F: Fn(Range) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Into<Processed>,
        E: fmt::Display + Send + 'static,
    {
        let f: HandlerFn = Arc::new(move |range| {
            let fut = f(range);
            async move { fut.await.map(Into::into).map_err(|e| e.to_string()) }.boxed()
        });
        self.handler = Some(Handler::InProcess { f, pool: None });
        self
    }

    /// Runs the in-process handler's futures on `pool` (sharing its limits with
    /// other work) instead of a pool of the job's own with `workers` slots.
    pub fn task_pool(mut self, pool: TaskPool) -> Self {
        self.task_pool = Some(pool);
        self
    }

    /// Processes each range by calling `function` in `pool`'s worker processes:
    /// it receives a [`RangeCall`](super::RangeCall) and returns the failed ids
    /// (`[]` when all succeeded). A worker process that dies gives its range back
    /// at once, and counts against the restart budget.
    pub fn process_handler(mut self, pool: ProcessPool, function: impl Into<String>) -> Self {
        self.handler = Some(Handler::Process {
            pool,
            function: Arc::from(function.into()),
        });
        self
    }

    /// Ranges processed at once by this process. Default: the number of CPUs.
    pub fn workers(mut self, n: usize) -> Self {
        self.config.workers = n;
        self
    }

    /// How long a claimed range stays this process's without renewal. The job
    /// renews every third of it while the handler runs; a process that dies
    /// loses its ranges to others after it. Default: 30 s.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease;
        self
    }

    /// Attempts per range and the backoff between them. Default:
    /// `RetryPolicy::new(3)` (100 ms doubling, jittered). Every claim counts as an
    /// attempt, also one whose holder died.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.config.retry = policy;
        self
    }

    /// At least once (default) or at most once. See [`Delivery`].
    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.config.delivery = delivery;
        self
    }

    /// Whether a worker that exits (its handler panicked, its process died) is
    /// restarted. Default: `true`.
    pub fn restart_workers(mut self, restart: bool) -> Self {
        self.config.restart = restart;
        self
    }

    /// At most `max` worker restarts within `window`; one more fails the run (the
    /// seed's `maxAllowedWorkerRestartsCount`, as a rate like OTP's intensity and
    /// period). Default: `workers × 5` within 60 s.
    pub fn restart_budget(mut self, max: usize, window: Duration) -> Self {
        self.max_restarts = Some(max);
        self.config.restart_window = window;
        self
    }

    /// A job-wide limit of `ids_per_second`, kept in the store so every process
    /// working on the job shares it. Bursts default to one range's worth.
    pub fn rate_limit(mut self, ids_per_second: f64) -> Self {
        self.rate = Some((ids_per_second, self.rate.and_then(|r| r.1)));
        self
    }

    /// The rate limit's burst, in ids.
    pub fn rate_burst(mut self, ids: u64) -> Self {
        self.rate = self.rate.map(|(r, _)| (r, Some(ids)));
        self
    }

    /// How long a failing store (or loader) is retried, with backoff, before the
    /// run fails. Default: 30 s.
    pub fn store_retry_for(mut self, d: Duration) -> Self {
        self.config.store_retry_for = d;
        self
    }

    /// On [`stop`](BatchJob::stop), how long running handlers may go on before
    /// their ranges are cancelled and given back. Default: 10 s.
    pub fn stop_grace(mut self, d: Duration) -> Self {
        self.config.stop_grace = d;
        self
    }

    /// A time limit per range attempt; one that runs over fails its attempt (an
    /// in-process handler is dropped, a worker process is cancelled then killed).
    /// Default: none.
    pub fn range_timeout(mut self, d: Duration) -> Self {
        self.config.range_timeout = Some(d);
        self
    }

    /// How often a waiting worker looks again at ranges held by other processes.
    /// Default: 1 s (and never later than the earliest lease expiry).
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.config.poll = d;
        self
    }

    /// The most ranges a worker claims in one store step. A worker claims as many
    /// ranges as its handler gets through in about 2 ms (measured as it runs), up
    /// to this, so quick ranges share one round trip to the store; slow ranges are
    /// claimed one at a time. Ranges claimed ahead are leased and renewed like the
    /// running one, given back at once on stop, and run again after a crash. 1
    /// turns this off; at-most-once jobs always claim one. Default: 16.
    pub fn max_claim(mut self, n: u32) -> Self {
        self.config.max_claim = n.max(1);
        self
    }

    /// Stops the job when `token` is cancelled, as [`stop`](BatchJob::stop) does.
    pub fn cancel_token(mut self, token: CancellationToken) -> Self {
        self.token = Some(token);
        self
    }

    /// Runs `f` at the end of every run, after every worker stopped and before
    /// `run` returns, whatever ended it (the seed's `beforeStop`): close
    /// connections there. The [`BatchEvent::BeforeStop`](super::BatchEvent)
    /// event is sent just before it.
    pub fn before_stop<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(RunSummary) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.before_stop = Some(Arc::new(move |s| f(s).boxed()));
        self
    }

    /// Checks the settings and makes the job. Nothing touches the store until
    /// [`run`](BatchJob::run).
    ///
    /// # Errors
    ///
    /// No source or two, no handler, zero workers or range size, an empty lease,
    /// a rate that is not positive, an empty job name.
    pub fn build(self) -> Result<BatchJob, BuildError> {
        let invalid = |m: &str| Err(BuildError::Invalid(m.to_owned()));
        if self.name.is_empty() {
            return invalid("the job name must not be empty");
        }
        if self.config.workers == 0 {
            return invalid("workers must be at least 1");
        }
        if self.range_size == 0 {
            return invalid("range_size must be at least 1");
        }
        if self.config.lease < Duration::from_millis(10) {
            return invalid("the lease must be at least 10 ms");
        }
        let source = match (self.span, self.loader) {
            (Some(_), Some(_)) => return Err(BuildError::TwoSources),
            (None, None) => return Err(BuildError::NoSource),
            (Some((start, end)), None) => {
                if end < start {
                    return invalid("the span's end is before its start");
                }
                Source::Span {
                    start,
                    end,
                    size: self.range_size,
                }
            }
            (None, Some((f, kind))) => Source::Loader { f, kind },
        };
        let mut handler = self.handler.ok_or(BuildError::NoHandler)?;
        if let (Handler::InProcess { pool, .. }, Some(given)) = (&mut handler, self.task_pool) {
            *pool = Some(given);
        }
        let mut config = self.config;
        config.retry_chunk = self.range_size;
        config.max_restarts = self
            .max_restarts
            .unwrap_or(config.workers.saturating_mul(5));
        if let Some((per_second, burst)) = self.rate {
            if !(per_second.is_finite() && per_second > 0.0) {
                return invalid("the rate limit must be a positive number of ids per second");
            }
            config.rate = Some(Rate {
                per_second,
                burst: burst.unwrap_or(self.range_size).max(1),
            });
        }
        if config.delivery == Delivery::AtMostOnce {
            config.retry = RetryPolicy::new(1);
        }
        Ok(BatchJob::new(
            self.store,
            self.name,
            source,
            handler,
            config,
            self.token.unwrap_or_default(),
            self.before_stop,
        ))
    }
}

impl fmt::Debug for BatchJobBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchJobBuilder")
            .field("store", &self.store.describe())
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
