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
use super::error::PipelineError;
use super::ordered;
use super::run::{Env, Launch, RunShared};
use super::source;
use super::stage::{self, AsyncFn, BlockingFn, StageFn};
use super::stats::{QueueDepth, StageShared};
use super::stream::{Collected, PipelineStream};
use crate::common::{cancelled_opt, sleep_until_opt};

/// The channel capacity after the source and after each stage unless
/// [`Pipeline::buffer`] says otherwise.
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
    /// Output capacity of the source (0) and of each stage (1..).
    capacities: Vec<usize>,
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
            .field("buffers", &self.capacities)
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
    /// this stage. The stage's output channel holds [`DEFAULT_BUFFER`] items;
    /// change it with [`buffer`](Pipeline::buffer) right after this call.
    ///
    /// # Panics
    ///
    /// If `concurrency` is 0 (such a stage would never process anything).
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
    ///
    /// # Panics
    ///
    /// If `concurrency` is 0.
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
    /// item. Errors, panics and the buffer are as for [`stage`](Pipeline::stage).
    /// A call in progress cannot be interrupted: when the run stops, the
    /// worker finishes its current item, discards the result and returns.
    ///
    /// (Under tokio's paused test clock a running blocking task holds the
    /// clock still, so time-based tests should keep blocking stages out.)
    ///
    /// # Panics
    ///
    /// If `concurrency` is 0.
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
        assert!(
            concurrency > 0,
            "stage `{name}`: concurrency must be at least 1 (a stage of 0 workers never runs)"
        );
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
            for _ in 0..concurrency {
                stage::add_worker(&shared);
                let worker = stage::work(
                    Arc::clone(&launch.run),
                    Arc::clone(&shared),
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
            ordered: self.ordered,
            continue_on_error: self.continue_on_error,
            cancel: self.cancel,
            deadline: self.deadline,
        }
    }

    /// Sets the capacity of the channel after the last stage added (or after
    /// the source, before any stage). 0 makes it a rendezvous: a worker hands
    /// an item over only when a worker of the next stage (or the caller) takes
    /// it, as with a Go unbuffered channel. Default: [`DEFAULT_BUFFER`].
    pub fn buffer(mut self, capacity: usize) -> Self {
        if let Some(last) = self.capacities.last_mut() {
            *last = capacity;
        }
        self
    }

    /// Delivers results in input order.
    ///
    /// Reordering memory is bounded by a window of `W = Σ (concurrency +
    /// max(buffer, 1))` over the stages, plus `max(source buffer, 1)`: at most
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
    /// # Panics
    ///
    /// If called outside a tokio runtime.
    pub fn run(self) -> PipelineStream<T, E> {
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
        PipelineStream::new(rx, run, tasks, stages, semaphore, window)
    }

    /// Runs the pipeline to the end and returns every result (in input order
    /// if [`ordered`](Pipeline::ordered)).
    ///
    /// Every task of the run has ended when this returns.
    ///
    /// # Errors
    ///
    /// The run's first error: an item's failure or panic (with the stage name
    /// and the item's index), [`PipelineError::Cancelled`] or
    /// [`PipelineError::DeadlineExceeded`]. With
    /// [`continue_on_error`](Pipeline::continue_on_error) the run goes on to
    /// the end and the first failure is returned then; use
    /// [`collect_all`](Pipeline::collect_all) to get the outputs and every
    /// failure.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the run (see [`PipelineStream`]); results
    /// not yet returned are lost.
    pub async fn collect(self) -> Result<Vec<T>, PipelineError<E>> {
        let all = self.collect_all().await;
        match (all.error, all.failures.into_iter().next()) {
            (Some(err), _) | (None, Some(err)) => Err(err),
            (None, None) => Ok(all.outputs),
        }
    }

    /// Runs the pipeline to the end and returns the outputs, every failure
    /// and every error, and the final statistics.
    ///
    /// Every task of the run has ended when this returns.
    ///
    /// # Cancel safety
    ///
    /// As for [`collect`](Pipeline::collect).
    pub async fn collect_all(self) -> Collected<T, E> {
        self.run().collect_all().await
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
