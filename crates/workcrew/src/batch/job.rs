//! The public handle of a batch job.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::builder::{BatchJobBuilder, Config, Handler, Source, StopHook};
use super::error::BatchError;
use super::events::{BatchEvent, BatchEvents};
use super::run::{self, RunSummary};
use super::store::{
    AppendReply, Checkpoint, FailedId, FailedRange, JobInfo, JobSpec, Millis, Rate, Retried, Step,
    StepReply, Store, StoreError, StoreProgress,
};
use crate::common::Hub;

/// A durable batch job: a space of ids processed in leased ranges, resumable
/// after any crash, shared by any number of processes through its store.
///
/// Built with [`BatchJob::builder`]. Cloning is cheap; clones share the job.
/// See the [module docs](super) for a guide.
#[derive(Clone)]
pub struct BatchJob {
    inner: Arc<JobInner>,
}

pub(crate) struct JobInner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) name: String,
    pub(crate) source: Source,
    pub(crate) handler: Handler,
    pub(crate) config: Config,
    pub(crate) hub: Hub<BatchEvent>,
    pub(crate) stop: CancellationToken,
    before_stop: Option<StopHook>,
    running: AtomicBool,
    /// `(when, ids done)` seen by `progress`, for the rate.
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl Drop for JobInner {
    fn drop(&mut self) {
        self.hub.end();
    }
}

/// A job's state, from its store: what is done, failed, in flight and left.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Progress {
    /// Ids processed (in done ranges, less their failed ids).
    pub ids_done: u64,
    /// Failed ids, plus the ids of ranges parked as failed.
    pub ids_failed: u64,
    /// Ids in ranges being processed now (by any process).
    pub ids_in_flight: u64,
    /// Ids not processed yet and not in flight (pending ranges, and for a span
    /// the ids not cut into ranges yet).
    pub ids_pending: u64,
    /// All ids of a span; `None` for a loader source.
    pub total: Option<u64>,
    /// Ranges done.
    pub ranges_done: u64,
    /// Ranges parked as failed.
    pub ranges_failed: u64,
    /// Ranges being processed.
    pub ranges_in_flight: u64,
    /// Ranges waiting (after a failed attempt, a release, or `retry_failed`).
    pub ranges_pending: u64,
    /// Ids done per second, job-wide, between the earliest and the latest of
    /// this handle's `progress` calls within the last minute; `None` until two
    /// calls are at least half a second apart.
    pub rate: Option<f64>,
    /// Time left at that rate; `None` without a rate or for a loader source.
    pub eta: Option<Duration>,
}

impl Progress {
    /// Whether nothing is in flight or pending (for a span: nothing left to cut).
    pub fn is_finished(&self) -> bool {
        self.ids_in_flight == 0 && self.ids_pending == 0 && self.total.is_some()
    }
}

impl BatchJob {
    /// Starts building a job named `name` in `store`. The name is the job's
    /// identity: running a job of the same name again resumes it.
    ///
    /// # Examples
    ///
    /// ```
    /// use workcrew::batch::{BatchJob, SqliteStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = SqliteStore::open(dir.path().join("jobs.db")).unwrap();
    /// let job = BatchJob::builder(store, "squares")
    ///     .span(0..1_000)
    ///     .range_size(100)
    ///     .handler(|range| async move {
    ///         for id in range.iter() {
    ///             let _ = id; // process it
    ///         }
    ///         Ok::<_, String>(())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// let summary = job.run().await.unwrap();
    /// assert_eq!(summary.ids_done, 1_000);
    /// assert!(summary.complete);
    /// # }
    /// ```
    pub fn builder(store: impl Store, name: impl Into<String>) -> BatchJobBuilder {
        let store: Arc<dyn Store> = Arc::new(store);
        BatchJobBuilder::new(store, name.into())
    }

    pub(crate) fn new(
        store: Arc<dyn Store>,
        name: String,
        source: Source,
        handler: Handler,
        config: Config,
        stop: CancellationToken,
        before_stop: Option<StopHook>,
    ) -> Self {
        BatchJob {
            inner: Arc::new(JobInner {
                store,
                name,
                source,
                handler,
                config,
                hub: Hub::new(1024, |missed| BatchEvent::Lagged { missed }),
                stop,
                before_stop,
                running: AtomicBool::new(false),
                samples: Mutex::new(VecDeque::new()),
            }),
        }
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Runs the job until every id is done or parked as failed, the job is
    /// stopped, or it fails. Resumes where earlier runs (of any process) left off;
    /// other processes may run the same job at the same time.
    ///
    /// Ends with [`BatchEvent::BeforeStop`] and the
    /// [`before_stop`](BatchJobBuilder::before_stop) hook, whatever ended it.
    ///
    /// # Errors
    ///
    /// A store that stays unavailable past the retry time, a loader that keeps
    /// failing or returns unsorted ids, the restart budget spent, a job of the
    /// same name with another source, or [`BatchError::AlreadyRunning`]. Ranges
    /// this process held are given back when it can reach the store (otherwise
    /// their leases expire), so a later run loses nothing.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the run: its workers are aborted and their
    /// ranges are given back by a background task (or, if that fails, taken over
    /// by others when their leases expire); the `BeforeStop` event is still sent
    /// and the hook still runs. Prefer [`stop`](Self::stop).
    pub async fn run(&self) -> Result<RunSummary, BatchError> {
        if self.inner.running.swap(true, Ordering::AcqRel) {
            return Err(BatchError::AlreadyRunning);
        }
        let mut guard = RunGuard {
            inner: Arc::clone(&self.inner),
            armed: true,
        };
        let started = Instant::now();
        let (summary, failure) = run::run(&self.inner, started).await;
        guard.armed = false;
        self.inner.hub.send(BatchEvent::BeforeStop {
            summary: summary.clone(),
            error: failure.as_ref().map(ToString::to_string),
        });
        if let Some(hook) = &self.inner.before_stop {
            hook(summary.clone()).await;
        }
        drop(guard);
        match failure {
            Some(e) => Err(e),
            None => Ok(summary),
        }
    }

    /// Stops the job: no new range is claimed; running handlers get the stop
    /// grace, then are cancelled and their ranges given back; `run` then returns
    /// with [`RunSummary::stopped`] set. A stopped job stays stopped: build the job
    /// again to run it later.
    pub fn stop(&self) {
        self.inner.stop.cancel();
    }

    /// The job's events; see [`BatchEvent`].
    pub fn events(&self) -> BatchEvents {
        BatchEvents {
            inner: self.inner.hub.subscribe(),
        }
    }

    /// The job's progress, read from the store (so it covers every process
    /// working on the job).
    ///
    /// # Errors
    ///
    /// The store's error, or a job that was never run.
    pub async fn progress(&self) -> Result<Progress, BatchError> {
        let p = self
            .store_op("read progress", |s, job| s.progress(job))
            .await?;
        Ok(self.progress_from(p))
    }

    fn progress_from(&self, p: StoreProgress) -> Progress {
        let now = Instant::now();
        let rate = {
            let mut samples = self.inner.samples.lock().unwrap_or_else(|e| e.into_inner());
            samples.push_back((now, p.ids_done + p.ids_failed));
            while samples.len() > 2
                && samples
                    .front()
                    .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(60))
            {
                samples.pop_front();
            }
            match (samples.front(), samples.back()) {
                (Some((t0, n0)), Some((t1, n1)))
                    if t1.duration_since(*t0) >= Duration::from_millis(500) =>
                {
                    Some(n1.saturating_sub(*n0) as f64 / t1.duration_since(*t0).as_secs_f64())
                }
                _ => None,
            }
        };
        let ids_pending = p.ids_pending + p.ids_uncut.unwrap_or(0);
        let left = ids_pending + p.ids_claimed;
        let eta = match (rate, p.total) {
            (Some(r), Some(_)) if r > 0.0 => Some(Duration::from_secs_f64(left as f64 / r)),
            (_, Some(_)) if left == 0 => Some(Duration::ZERO),
            _ => None,
        };
        Progress {
            ids_done: p.ids_done,
            ids_failed: p.ids_failed,
            ids_in_flight: p.ids_claimed,
            ids_pending,
            total: p.total,
            ranges_done: p.ranges_done,
            ranges_failed: p.ranges_failed,
            ranges_in_flight: p.ranges_claimed,
            ranges_pending: p.ranges_pending,
            rate,
            eta,
        }
    }

    /// Deletes the job from its store (cursor, ranges, failed ids): the next run
    /// starts over. Do not reset a job other processes are running.
    ///
    /// # Errors
    ///
    /// The store's error, or [`BatchError::AlreadyRunning`] if this handle is
    /// running.
    pub async fn reset(&self) -> Result<(), BatchError> {
        if self.inner.running.load(Ordering::Acquire) {
            return Err(BatchError::AlreadyRunning);
        }
        self.store_op("reset", |s, job| s.reset(job)).await
    }

    /// Puts the job's failures back to work: ranges parked as failed become
    /// pending (with fresh attempts), and failed ids are gathered into new ranges
    /// (of `range_size` ids) — only those ids, not their whole ranges. The next
    /// run processes them.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn retry_failed(&self) -> Result<Retried, BatchError> {
        let chunk = self.inner.config.retry_chunk;
        let store = &self.inner.store;
        let now = store
            .now()
            .await
            .map_err(|e| self.store_error("read the clock", e))?;
        self.store_op("retry failed", |s, job| s.retry_failed(job, now, chunk))
            .await
    }

    /// Up to `limit` ranges parked as failed, with their last error.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn failed_ranges(&self, limit: u64) -> Result<Vec<FailedRange>, BatchError> {
        self.store_op("list failed ranges", |s, job| s.failed_ranges(job, limit))
            .await
    }

    /// Up to `limit` failed ids (reported by the handler), with their errors.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn failed_ids(&self, limit: u64) -> Result<Vec<FailedId>, BatchError> {
        self.store_op("list failed ids", |s, job| s.failed_ids(job, limit))
            .await
    }

    fn store_error(&self, operation: &'static str, source: StoreError) -> BatchError {
        BatchError::Store {
            store: self.inner.store.describe(),
            operation,
            source,
        }
    }

    async fn store_op<'a, T, F>(&'a self, operation: &'static str, f: F) -> Result<T, BatchError>
    where
        F: FnOnce(&'a dyn Store, &'a str) -> BoxFuture<'a, Result<T, StoreError>>,
    {
        f(&*self.inner.store, &self.inner.name)
            .await
            .map_err(|e| self.store_error(operation, e))
    }
}

impl std::fmt::Debug for BatchJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchJob")
            .field("name", &self.inner.name)
            .field("store", &self.inner.store.describe())
            .finish_non_exhaustive()
    }
}

/// Ends a run whose future was dropped: sends `BeforeStop` and runs the hook in
/// the background; always clears the running flag.
struct RunGuard {
    inner: Arc<JobInner>,
    armed: bool,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if self.armed {
            let summary = RunSummary::default();
            self.inner.hub.send(BatchEvent::BeforeStop {
                summary: summary.clone(),
                error: Some("the run was dropped before it finished".to_owned()),
            });
            if let (Some(hook), Ok(rt)) = (
                self.inner.before_stop.clone(),
                tokio::runtime::Handle::try_current(),
            ) {
                rt.spawn(hook(summary));
            }
        }
        self.inner.running.store(false, Ordering::Release);
    }
}

/// Any `Arc` of a store is a store, so a shared `Arc<dyn Store>` can be passed
/// where a store is expected.
impl<S: Store + ?Sized> Store for Arc<S> {
    fn describe(&self) -> String {
        (**self).describe()
    }

    fn now(&self) -> BoxFuture<'_, Result<Millis, StoreError>> {
        (**self).now()
    }

    fn open<'a>(&'a self, spec: &'a JobSpec) -> BoxFuture<'a, Result<JobInfo, StoreError>> {
        (**self).open(spec)
    }

    fn step<'a>(
        &'a self,
        job: &'a str,
        step: Step,
    ) -> BoxFuture<'a, Result<StepReply, StoreError>> {
        (**self).step(job, step)
    }

    fn append<'a>(
        &'a self,
        job: &'a str,
        append: super::store::Append,
    ) -> BoxFuture<'a, Result<AppendReply, StoreError>> {
        (**self).append(job, append)
    }

    fn checkpoint<'a>(
        &'a self,
        job: &'a str,
        checkpoint: Checkpoint,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).checkpoint(job, checkpoint)
    }

    fn renew<'a>(
        &'a self,
        job: &'a str,
        owner: &'a str,
        now: Millis,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<(u64, u64)>, StoreError>> {
        (**self).renew(job, owner, now, lease_ms)
    }

    fn progress<'a>(&'a self, job: &'a str) -> BoxFuture<'a, Result<StoreProgress, StoreError>> {
        (**self).progress(job)
    }

    fn reset<'a>(&'a self, job: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).reset(job)
    }

    fn retry_failed<'a>(
        &'a self,
        job: &'a str,
        now: Millis,
        chunk: u64,
    ) -> BoxFuture<'a, Result<Retried, StoreError>> {
        (**self).retry_failed(job, now, chunk)
    }

    fn failed_ranges<'a>(
        &'a self,
        job: &'a str,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<FailedRange>, StoreError>> {
        (**self).failed_ranges(job, limit)
    }

    fn failed_ids<'a>(
        &'a self,
        job: &'a str,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<FailedId>, StoreError>> {
        (**self).failed_ids(job, limit)
    }

    fn acquire<'a>(
        &'a self,
        job: &'a str,
        rate: Rate,
        ids: u64,
        now: Millis,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        (**self).acquire(job, rate, ids, now)
    }
}
