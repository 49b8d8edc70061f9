//! [`Pipeline`]: describing a run — source, stages, options — and starting it.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::channel::Receiver;
use super::error::{BuildError, PipelineError};
use super::ordered;
use super::run::{Env, Launch, RunShared};
use super::source;
use super::stage::{self, AsyncFn, BlockingFn, StageFn};
use super::stats::{PipelineStats, QueueDepth, StageShared};
use super::stream::{Collected, PipelineStream, RunReport};
use crate::wait::{cancelled_opt, sleep_until_opt};

/// The capacity of every channel (each stage's input, and the output to the
/// caller) unless [`Pipeline::input_capacity`] or
/// [`Pipeline::output_capacity`] says otherwise.
pub const DEFAULT_BUFFER: usize = 32;

/// Starts the source and every stage before it; returns the receiving end of
/// the last channel.
type Plan<T, E> = Box<dyn FnOnce(&mut Launch<E>) -> Receiver<Env<T, E>> + Send>;

/// One stage's settings, kept for the window and the stats.
struct StageSpec {
    name: Arc<str>,
    concurrency: usize,
}

/// A multi-stage processing run, described step by step and started with
/// [`run`](Pipeline::run) or [`collect`](Pipeline::collect).
///
/// `T` is the type of the items leaving the last stage added so far; `E` is
/// the error type every stage returns.
///
/// # Examples
///
/// ```
/// use workcrew::pipeline::Pipeline;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let lengths = Pipeline::from_iter(["a", "bb", "ccc"])
///     .stage("length", 2, |s: &str| async move { Ok::<_, String>(s.len()) })
///     .stage_blocking("square", 2, |n| Ok(n * n))
///     .ordered()
///     .collect()
///     .await
///     .unwrap();
/// assert_eq!(lengths, [1, 4, 9]);
/// # }
/// ```
#[must_use = "a pipeline does nothing until `run` or `collect`"]
pub struct Pipeline<T, E> {
    plan: Plan<T, E>,
    stages: Vec<StageSpec>,
    /// Capacity of the channel after the source (0) and after each stage
    /// (1..): entry `i` is stage `i + 1`'s input.
    capacities: Vec<usize>,
    /// The last channel's capacity, if set ([`Pipeline::output_capacity`]).
    output_capacity: Option<usize>,
    /// The first configuration error, reported by [`Pipeline::run`].
    invalid: Option<BuildError>,
    ordered: bool,
    continue_on_error: bool,
    cancel: Option<CancellationToken>,
    deadline: Option<Deadline>,
}

#[derive(Clone, Copy)]
enum Deadline {
    At(Instant),
    After(Duration),
}

impl<T, E> fmt::Debug for Pipeline<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stages: Vec<(&str, usize)> = self
            .stages
            .iter()
            .map(|s| (&*s.name, s.concurrency))
            .collect();
        f.debug_struct("Pipeline")
            .field("stages", &stages)
            .field("capacities", &self.capacities)
            .field("ordered", &self.ordered)
            .field("continue_on_error", &self.continue_on_error)
            .finish_non_exhaustive()
    }
}

impl<T, E> Pipeline<T, E>
where
    T: Send + 'static,
    E: Send + 'static,
{
    fn with_plan(plan: Plan<T, E>) -> Self {
        Pipeline {
            plan,
            stages: Vec::new(),
            capacities: vec![DEFAULT_BUFFER],
            output_capacity: None,
            invalid: None,
            ordered: false,
            continue_on_error: false,
            cancel: None,
            deadline: None,
        }
    }

    /// A pipeline fed by an iterator; item `i` (0-based) has index `i`.
    ///
    /// The iterator runs on an async worker thread, one `next` per item as the
    /// first channel has room; keep it cheap.
    #[allow(clippy::should_implement_trait)] // the issue fixes this name; `FromIterator` would need eager collection (no `Send` bound on its iterator).
    pub fn from_iter<I>(iter: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        // An iterator is a stream whose items are always ready; the source
        // yields its thread between items either way.
        Self::from_stream(futures::stream::iter(iter))
    }

    /// A pipeline fed by a stream; the `i`-th item (0-based) has index `i`.
    pub fn from_stream<S>(stream: S) -> Self
    where
        S: Stream<Item = T> + Send + 'static,
    {
        Self::with_plan(Box::new(move |launch: &mut Launch<E>| {
            let (tx, rx) = launch.channel(launch.capacities[0]);
            let window = launch.window.clone();
            let run = Arc::clone(&launch.run);
            launch.spawn(source::from_stream(stream, tx, window, run));
            rx
        }))
    }

    /// Adds a stage of `concurrency` workers, each awaiting `f(item)` for one
    /// item at a time.
    ///
    /// `f` returns `Err` to fail the item: by default that stops the run (see
    /// [`continue_on_error`](Pipeline::continue_on_error)). A panic in `f` or
    /// its future is caught and becomes [`PipelineError::Panicked`] naming
    /// this stage. The stage's input channel holds [`DEFAULT_BUFFER`] items;
    /// change it with [`input_capacity`](Pipeline::input_capacity) right
    /// after this call.
    ///
    /// `concurrency` 0 is a configuration error, reported by
    /// [`run`](Pipeline::run) as [`BuildError::ZeroConcurrency`].
    pub fn stage<U, F, Fut>(
        self,
        name: impl Into<String>,
        concurrency: usize,
        f: F,
    ) -> Pipeline<U, E>
    where
        U: Send + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<U, E>> + Send + 'static,
    {
        self.add_stage(name.into(), concurrency, AsyncFn(f, PhantomData), false)
    }

    /// Adds a stage whose function runs in worker processes: each item is sent
    /// as the argument of `function` to `pool` (see [`crate::process`]), with
    /// up to `concurrency` calls in flight, and the decoded result moves on. A
    /// failed call is the stage's error, converted with `E::from`.
    /// `concurrency` and the input capacity are as for
    /// [`stage`](Pipeline::stage).
    pub fn stage_process<U>(
        self,
        name: impl Into<String>,
        concurrency: usize,
        pool: crate::process::ProcessPool,
        function: impl Into<String>,
    ) -> Pipeline<U, E>
    where
        T: serde::Serialize + Sync,
        U: serde::de::DeserializeOwned + Send + 'static,
        E: From<crate::process::CallError>,
    {
        let function: Arc<str> = Arc::from(function.into());
        self.stage(name, concurrency, move |item: T| {
            let (pool, function) = (pool.clone(), Arc::clone(&function));
            async move { pool.call::<T, U>(&function, &item).await.map_err(E::from) }
        })
    }

    /// Adds a stage of `concurrency` workers that call the blocking (or
    /// CPU-bound) `f(item)` off the async worker threads.
    ///
    /// Each worker is one long-lived thread of tokio's blocking pool (started
    /// with `spawn_blocking`) for the whole run, so there is no spawn per
    /// item. Errors, panics, `concurrency` and the input capacity are as for
    /// [`stage`](Pipeline::stage).
    /// A call in progress cannot be interrupted: when the run stops, the
    /// worker finishes its current item, discards the result and returns.
    ///
    /// (Under tokio's paused test clock a running blocking task holds the
    /// clock still, so time-based tests should keep blocking stages out.)
    pub fn stage_blocking<U, F>(
        self,
        name: impl Into<String>,
        concurrency: usize,
        f: F,
    ) -> Pipeline<U, E>
    where
        U: Send + 'static,
        F: Fn(T) -> Result<U, E> + Send + Sync + 'static,
    {
        self.add_stage(name.into(), concurrency, BlockingFn(f), true)
    }

    fn add_stage<U, S>(
        mut self,
        name: String,
        concurrency: usize,
        f: S,
        blocking: bool,
    ) -> Pipeline<U, E>
    where
        U: Send + 'static,
        S: StageFn<T, U, E>,
    {
        if concurrency == 0 && self.invalid.is_none() {
            self.invalid = Some(BuildError::ZeroConcurrency {
                stage: name.clone(),
            });
        }
        let name: Arc<str> = name.into();
        let position = self.stages.len() + 1;
        self.stages.push(StageSpec {
            name: Arc::clone(&name),
            concurrency,
        });
        self.capacities.push(DEFAULT_BUFFER);
        let upstream = self.plan;
        let f = Arc::new(f);
        let plan: Plan<U, E> = Box::new(move |launch: &mut Launch<E>| {
            let rx = upstream(launch);
            let (tx, out) = launch.channel(launch.capacities[position]);
            let input: Arc<dyn QueueDepth> = Arc::clone(rx.channel()) as _;
            let shared = Arc::new(StageShared::new(
                name,
                concurrency,
                launch.capacities[position],
                input,
            ));
            launch.stages.push(Arc::clone(&shared));
            for index in 0..concurrency {
                stage::add_worker(&shared);
                let worker = stage::work(
                    Arc::clone(&launch.run),
                    Arc::clone(&shared),
                    index,
                    Arc::clone(&f),
                    rx.clone(),
                    tx.clone(),
                );
                if blocking {
                    let handle = tokio::runtime::Handle::current();
                    launch.spawn_blocking(move || handle.block_on(worker));
                } else {
                    launch.spawn(worker);
                }
            }
            out
        });
        Pipeline {
            plan,
            stages: self.stages,
            capacities: self.capacities,
            output_capacity: self.output_capacity,
            invalid: self.invalid,
            ordered: self.ordered,
            continue_on_error: self.continue_on_error,
            cancel: self.cancel,
            deadline: self.deadline,
        }
    }

    /// Sets the capacity of the input channel of the stage added last: how
    /// many items wait for its workers (before any stage is added: of the
    /// channel the source feeds, which becomes the first stage's input). 0
    /// makes it a rendezvous: an item is handed over only when a worker of
    /// the stage takes it, as with a Go unbuffered channel; the stage still
    /// runs all its workers at once. Default: [`DEFAULT_BUFFER`].
    pub fn input_capacity(mut self, capacity: usize) -> Self {
        let input = self.stages.len().saturating_sub(1);
        self.capacities[input] = capacity;
        self
    }

    /// Sets the capacity of the channel from the last stage to the caller
    /// (whichever stage is last when the run starts); 0 = rendezvous.
    /// Default: [`DEFAULT_BUFFER`].
    pub fn output_capacity(mut self, capacity: usize) -> Self {
        self.output_capacity = Some(capacity);
        self
    }

    /// Delivers results in input order.
    ///
    /// Reordering memory is bounded by a window of `W = Σ (concurrency +
    /// max(capacity, 1))` over the stages' output channels, plus `max(first
    /// stage's input capacity, 1)`: at most
    /// `W` items are between the source and the caller at once, and the
    /// source waits when the window is full (an item that is slow holds back
    /// at most `W - 1` finished ones). Default: unordered, in completion order.
    pub fn ordered(mut self) -> Self {
        self.ordered = true;
        self
    }

    /// Keeps going when an item fails: its error (with stage and index) is
    /// delivered in its place, later stages skip it, and the other items
    /// continue. Default: the first failure stops the run.
    pub fn continue_on_error(mut self) -> Self {
        self.continue_on_error = true;
        self
    }

    /// Stops the run with [`PipelineError::Cancelled`] when `token` is
    /// cancelled (also if it already is when the run starts).
    pub fn cancel_token(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Stops the run with [`PipelineError::DeadlineExceeded`] at `deadline`.
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(Deadline::At(deadline));
        self
    }

    /// Stops the run with [`PipelineError::DeadlineExceeded`] once it has run
    /// for `limit` (counted from [`run`](Pipeline::run)).
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.deadline = Some(Deadline::After(limit));
        self
    }

    /// Starts every stage and returns the stream of results.
    ///
    /// See [`PipelineStream`] for what it yields and what dropping it does.
    ///
    /// # Errors
    ///
    /// [`BuildError::ZeroConcurrency`] if a stage was given concurrency 0
    /// (nothing is started then).
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime.
    pub fn run(mut self) -> Result<PipelineStream<T, E>, BuildError> {
        if let Some(err) = self.invalid {
            return Err(err);
        }
        if let (Some(capacity), Some(last)) = (self.output_capacity, self.capacities.last_mut()) {
            *last = capacity;
        }
        let run = Arc::new(RunShared::new(self.continue_on_error, self.stages.len()));
        let window = self.ordered.then(|| {
            let stages: Vec<(usize, usize)> = self
                .stages
                .iter()
                .zip(&self.capacities[1..])
                .map(|(s, &c)| (s.concurrency, c))
                .collect();
            ordered::window(self.capacities[0], &stages)
        });
        let mut launch = Launch {
            run: Arc::clone(&run),
            tasks: JoinSet::new(),
            capacities: self.capacities,
            window: window.map(|w| Arc::new(Semaphore::new(w))),
            stages: Vec::new(),
        };
        if self.cancel.is_some() || self.deadline.is_some() {
            let (limit, at) = match self.deadline {
                Some(Deadline::After(limit)) => (limit, Some(Instant::now() + limit)),
                Some(Deadline::At(at)) => (at.saturating_duration_since(Instant::now()), Some(at)),
                None => (Duration::ZERO, None),
            };
            launch.spawn(watch(Arc::clone(&run), self.cancel, at, limit));
        }
        let rx = (self.plan)(&mut launch);
        let Launch {
            tasks,
            window: semaphore,
            stages,
            ..
        } = launch;
        Ok(PipelineStream::new(
            rx, run, tasks, stages, semaphore, window,
        ))
    }

    /// Runs the pipeline to the end and returns every output (in input order
    /// if [`ordered`](Pipeline::ordered)).
    ///
    /// Every task of the run has ended when this returns.
    ///
    /// # Errors
    ///
    /// The run's first error: an item's failure or panic (with the stage name
    /// and the item's index), [`PipelineError::Cancelled`],
    /// [`PipelineError::DeadlineExceeded`], or [`PipelineError::Invalid`]
    /// for a configuration error. With
    /// [`continue_on_error`](Pipeline::continue_on_error) the run goes on to
    /// the end and the first failure is returned then; use
    /// [`collect_all`](Pipeline::collect_all) to get every result in its
    /// place.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the run (see [`PipelineStream`]); results
    /// not yet returned are lost.
    pub async fn collect(self) -> Result<Vec<T>, PipelineError<E>> {
        let all = self.collect_all().await;
        if let Some(err) = all.error {
            return Err(err);
        }
        all.results.into_iter().collect()
    }

    /// Runs the pipeline to the end and returns every item's result in its
    /// place, the error that ended the run early if one did, and the final
    /// statistics (see [`Collected`]).
    ///
    /// Every task of the run has ended when this returns. A configuration
    /// error is [`Collected::error`] ([`PipelineError::Invalid`]), with no
    /// results.
    ///
    /// # Cancel safety
    ///
    /// As for [`collect`](Pipeline::collect).
    pub async fn collect_all(self) -> Collected<T, E> {
        match self.run() {
            Ok(stream) => stream.collect_all().await,
            Err(err) => Collected {
                results: Vec::new(),
                error: Some(PipelineError::Invalid(err)),
                report: RunReport {
                    later_errors: Vec::new(),
                    stats: PipelineStats::default(),
                },
            },
        }
    }
}

/// Fails the run when the user's token fires or the deadline passes.
async fn watch<E>(
    run: Arc<RunShared<E>>,
    cancel: Option<CancellationToken>,
    deadline: Option<Instant>,
    limit: Duration,
) {
    let cancelled = cancelled_opt(cancel.as_ref());
    let expired = sleep_until_opt(deadline);
    tokio::select! {
        biased;
        () = run.stop.cancelled() => {}
        () = cancelled => run.fail(PipelineError::Cancelled),
        () = expired => run.fail(PipelineError::DeadlineExceeded { limit }),
    }
}
