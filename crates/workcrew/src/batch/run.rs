//! The engine of one [`run`](super::BatchJob::run): workers that claim, process
//! and finish ranges; a heartbeat that renews their leases; the stop path.
//!
//! # Implementation notes
//!
//! - **Workers.** `workers` tasks, each a loop of one store step (finish the
//!   previous range and claim the next, atomically), then the handler. A worker
//!   with nothing to claim waits for the earliest lease expiry or retry time the
//!   store reports, for another local worker to finish a range, or at most the
//!   poll interval, then looks again; it leaves when the source is exhausted and
//!   no range is open anywhere. So a run ends only when the whole job is done,
//!   parked, or stopped — ranges other processes hold are waited for until they
//!   finish or their lease expires (then reclaimed here).
//! - **Leases.** The heartbeat renews every range this process holds every third
//!   of the lease, in one store operation. A range the store no longer lists for
//!   this owner was taken over: its token is cancelled, its handler dropped, and
//!   nothing is reported for it ([`BatchEvent::FencedOut`]).
//! - **Stop.** `stop()` (or the job's token, or a failure) stops claiming at
//!   once; running handlers get the stop grace, then their tokens are cancelled
//!   and they are dropped (a process-pool call is cancelled, then killed by the
//!   pool); their ranges are released so another run takes them at once. Every
//!   wait here is bounded: store retries by `store_retry_for`, handlers by the
//!   grace after a stop, waits for other processes by their leases.
//! - **Failures** of the run (a store down past its retry time, a loader
//!   returning unsorted ids, the restart budget spent) are recorded once (the
//!   first wins) and stop the run; `run` returns that error after
//!   [`BatchEvent::BeforeStop`].
//! - **Clock.** Lease times are in the store's clock: the run reads it once and
//!   then adds tokio's monotonic time, so machines agree (up to one round trip)
//!   and tests can use tokio's paused clock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::builder::{Delivery, Handler, Source};
use super::error::BatchError;
use super::events::BatchEvent;
use super::id::{check_order, Id};
use super::job::JobInner;
use super::range::{Processed, Range, RangeCall};
use super::store::{
    Append, AppendReply, FailedId, Finish, FinishOutcome, JobSpec, Lease, Millis, Origin, Step,
    Store, StoreError, StoreProgress,
};
use crate::process::{CallError, CallOptions};
use crate::task::{TaskError, TaskPool};

/// What one run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunSummary {
    /// Ranges this run processed and recorded.
    pub ranges_done: u64,
    /// Ids in those ranges, less their failed ids.
    pub ids_done: u64,
    /// Ids the handler reported failed, plus the ids of ranges parked by this run.
    pub ids_failed: u64,
    /// Ranges this run parked as failed (no attempt left).
    pub ranges_failed: u64,
    /// Range attempts that failed and will be retried.
    pub attempts_failed: u64,
    /// Ranges given back unprocessed (worker died, or the run stopped).
    pub ranges_released: u64,
    /// Ranges this run lost to another process (its lease had expired).
    pub fenced_out: u64,
    /// Worker restarts.
    pub restarts: u64,
    /// How long the run took.
    pub elapsed: Duration,
    /// Whether `stop()` (or the job's token) ended it.
    pub stopped: bool,
    /// Whether the whole job is finished: every id done or parked as failed.
    pub complete: bool,
}

#[derive(Default)]
struct Counters {
    ranges_done: AtomicU64,
    ids_done: AtomicU64,
    ids_failed: AtomicU64,
    ranges_failed: AtomicU64,
    attempts_failed: AtomicU64,
    ranges_released: AtomicU64,
    fenced_out: AtomicU64,
    restarts: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The store's clock, read once and advanced by tokio's.
pub(crate) struct Clock {
    base_ms: Millis,
    base: Instant,
}

impl Clock {
    pub(crate) fn now(&self) -> Millis {
        let elapsed = self.base.elapsed().as_millis();
        self.base_ms
            .saturating_add(i64::try_from(elapsed).unwrap_or(i64::MAX))
    }

    /// The local instant of store time `at`.
    fn instant(&self, at: Millis) -> Instant {
        let delta = at.saturating_sub(self.base_ms);
        match u64::try_from(delta) {
            Ok(ms) => self.base + Duration::from_millis(ms),
            Err(_) => self.base,
        }
    }
}

/// How many ranges a worker claims per store step: as many as its handler gets
/// through in about [`Pace::TARGET`], so quick ranges share one round trip to
/// the store while slow ones are claimed one at a time. A crash reruns what a
/// worker held, so this also keeps the duplicates to about `TARGET` of work per
/// worker. One range until the first measurement.
struct Pace {
    /// Mean handler time per range (exponentially weighted), once measured.
    mean: Option<Duration>,
    /// The last batch asked for: the next is at most twice as large, so one
    /// quick range does not make a worker claim many slow ones.
    last: u32,
    max: u32,
}

impl Pace {
    const TARGET: Duration = Duration::from_millis(2);

    fn new(max: u32) -> Self {
        Pace {
            mean: None,
            last: 1,
            max: max.max(1),
        }
    }

    fn record(&mut self, took: Duration) {
        self.mean = Some(match self.mean {
            None => took,
            Some(m) => (m * 7 + took) / 8,
        });
    }

    fn batch(&mut self) -> u32 {
        let fit = match self.mean {
            None => 1,
            Some(m) => {
                let n = Self::TARGET.as_nanos() / m.as_nanos().max(1);
                u32::try_from(n).unwrap_or(u32::MAX)
            }
        };
        self.last = fit.clamp(1, self.max).min(self.last.saturating_mul(2));
        self.last
    }
}

/// A range this process holds: running, or claimed ahead and waiting.
struct Held {
    fence: u64,
    token: CancellationToken,
    fenced: bool,
}

struct LoaderState {
    cursor: Option<Id>,
    exhausted: bool,
}

/// Why a handler did not produce a result.
enum Failure {
    /// Its own error.
    Error(String),
    /// Over the range timeout.
    Timeout(Duration),
    /// Its worker died (panic, process lost).
    WorkerDied(String),
    /// The run stopped it (grace over) or it was fenced out.
    Stopped,
    /// The run stopped before the handler started.
    NotStarted,
}

/// Everything one run shares between its workers, its heartbeat and the ranges.
pub(crate) struct RunCtx {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) job: String,
    pub(crate) clock: Clock,
    pub(crate) lease_ms: u64,
    inner: Arc<JobInner>,
    owner: String,
    /// Stop claiming.
    stop: CancellationToken,
    /// Cancel running handlers (the stop grace is over).
    hard: CancellationToken,
    held: Mutex<HashMap<u64, Held>>,
    /// Ranges (with their fence) that ended here and whose finish the store has not
    /// acknowledged yet: waiting in a worker's next step (behind ranges it claimed ahead) or
    /// in a step being retried. The store still lists them as this owner's, and no worker
    /// holds them: the heartbeat must not take them for claims whose reply was lost.
    unreported: Mutex<HashSet<(u64, u64)>>,
    loader: tokio::sync::Mutex<LoaderState>,
    failure: Mutex<Option<BatchError>>,
    /// Bumped whenever a local worker reports a finish: waiting workers look again.
    wake: tokio::sync::watch::Sender<u64>,
    restarts: Mutex<VecDeque<Instant>>,
    counters: Counters,
    task_pool: Option<TaskPool>,
}

/// A unique owner name for this run: host, pid, and a random part.
fn owner_name() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    let random = RandomState::new().build_hasher().finish();
    format!("{host}:{}:{random:016x}", std::process::id())
}

impl RunCtx {
    fn emit(&self, event: impl FnOnce() -> BatchEvent) {
        if self.inner.hub.active() {
            self.inner.hub.send(event());
        }
    }

    /// Records the run's first failure and stops the run.
    fn fail(&self, err: BatchError) {
        let mut slot = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(err);
        }
        drop(slot);
        self.stop.cancel();
    }

    fn store_error(&self, operation: &'static str, source: StoreError) -> BatchError {
        BatchError::Store {
            store: self.store.describe(),
            operation,
            source,
        }
    }

    /// Runs a store operation, retrying transient errors with backoff for up to
    /// the job's `store_retry_for`.
    pub(crate) async fn retry<T, F, Fut>(
        &self,
        operation: &'static str,
        mut f: F,
    ) -> Result<T, BatchError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let deadline = Instant::now() + self.inner.config.store_retry_for;
        let mut delay = Duration::from_millis(50);
        let mut attempt = 0;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && Instant::now() + delay <= deadline => {
                    attempt += 1;
                    self.emit(|| BatchEvent::Retrying {
                        operation,
                        attempt,
                        error: e.to_string(),
                    });
                    tracing::warn!(job = %self.job, operation, attempt, error = %e, "store operation failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(self.store_error(operation, e)),
            }
        }
    }

    /// One store step: reports `finish` (each with the ids its range processed)
    /// and claims up to `claim` ranges.
    async fn step(
        &self,
        finish: Vec<(Finish, u64)>,
        claim: u32,
    ) -> Result<super::store::StepReply, BatchError> {
        let at_most_once = self.inner.config.delivery == Delivery::AtMostOnce;
        let reply = self
            .retry("claim", || {
                self.store.step(
                    &self.job,
                    Step {
                        owner: self.owner.clone(),
                        now: self.clock.now(),
                        lease_ms: self.lease_ms,
                        finish: finish.iter().map(|f| f.0.clone()).collect(),
                        claim,
                        at_most_once,
                    },
                )
            })
            .await;
        if !finish.is_empty() {
            // Answered (or failed for good, which ends the run): no longer waiting.
            let mut unreported = self.unreported.lock().unwrap_or_else(|e| e.into_inner());
            for (f, _) in &finish {
                unreported.remove(&(f.range, f.fence));
            }
        }
        let reply = reply?;
        for ((f, ids), accepted) in finish.iter().zip(&reply.finished) {
            if *accepted {
                self.count_finish(f, *ids);
            } else {
                add(&self.counters.fenced_out, 1);
                self.emit(|| BatchEvent::FencedOut {
                    range: f.range,
                    fence: f.fence,
                });
            }
        }
        if !finish.is_empty() {
            self.wake.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(reply)
    }

    fn count_finish(&self, f: &Finish, ids: u64) {
        let c = &self.counters;
        match &f.outcome {
            FinishOutcome::Done { failed } => {
                let failed = (failed.len() as u64).min(ids);
                add(&c.ranges_done, 1);
                add(&c.ids_done, ids - failed);
                add(&c.ids_failed, failed);
            }
            FinishOutcome::Failed { retry_at: None, .. } => {
                add(&c.ranges_failed, 1);
                add(&c.ids_failed, ids);
            }
            FinishOutcome::Failed { .. } => add(&c.attempts_failed, 1),
            FinishOutcome::Release => add(&c.ranges_released, 1),
        }
    }

    /// One worker: claim, process, finish, until the job is done or stopped.
    async fn worker(self: Arc<Self>, index: usize) {
        if let Err(e) = Arc::clone(&self).work(index).await {
            self.fail(e);
        }
    }

    async fn work(self: Arc<Self>, index: usize) -> Result<(), BatchError> {
        // Finished ranges not reported yet, and claimed ranges not started yet.
        let mut finish = Vec::new();
        let mut queue: VecDeque<Lease> = VecDeque::new();
        let mut pace = Pace::new(self.max_batch());
        let mut wake = self.wake.subscribe();
        loop {
            wake.borrow_and_update();
            if self.stop.is_cancelled() {
                // Ranges claimed ahead and not started go back at once.
                self.give_back(&mut queue, &mut finish, "the run stopped");
                if !finish.is_empty() {
                    self.step(std::mem::take(&mut finish), 0).await?;
                }
                return Ok(());
            }
            let mut lease = queue.pop_front();
            let mut status = None;
            let mut loader_done = false;
            if lease.is_none() {
                // Report what is done and claim the next batch in one step.
                let reply = self.step(std::mem::take(&mut finish), pace.batch()).await?;
                self.hold(&reply.claimed);
                queue.extend(reply.claimed);
                status = reply.status;
                lease = queue.pop_front();
                if lease.is_none() {
                    if let Source::Loader { .. } = self.inner.source {
                        lease = self.load().await?;
                        if let Some(l) = &lease {
                            self.hold(std::slice::from_ref(l));
                        }
                        loader_done = lease.is_none();
                    }
                }
            }
            if let Some(lease) = lease {
                let started = Instant::now();
                if let (Some(f), exit) = self.run_range(Arc::clone(&self), index, lease).await {
                    self.unreported(&f.0);
                    finish.push(f);
                    if exit {
                        // The worker exited and is not restarted: report, give back
                        // what it claimed ahead, then leave.
                        self.give_back(&mut queue, &mut finish, "its worker exited");
                        self.step(std::mem::take(&mut finish), 0).await?;
                        return Ok(());
                    }
                }
                pace.record(started.elapsed());
                continue;
            }
            let Some(status) = status else {
                continue;
            };
            let source_done = status.exhausted || loader_done;
            if source_done && status.open == 0 {
                return Ok(());
            }
            let poll = Instant::now() + self.inner.config.poll;
            let until = status
                .next_ready
                .map_or(poll, |at| self.clock.instant(at).min(poll));
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = wake.changed() => {}
                _ = self.stop.cancelled() => {}
            }
        }
    }

    /// The most ranges a worker claims in one step: one under at-most-once (a
    /// range claimed ahead whose holder died would be parked without having run).
    fn max_batch(&self) -> u32 {
        match self.inner.config.delivery {
            Delivery::AtMostOnce => 1,
            Delivery::AtLeastOnce => self.inner.config.max_claim,
        }
    }

    /// Registers claimed ranges as held by this process before they start, so
    /// the heartbeat notices when one is taken over.
    fn hold(&self, leases: &[Lease]) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for lease in leases {
            held.insert(
                lease.range,
                Held {
                    fence: lease.fence,
                    token: self.hard.child_token(),
                    fenced: false,
                },
            );
        }
    }

    /// Records that `f`'s range ended here and waits for its finish to reach the store.
    fn unreported(&self, f: &Finish) {
        self.unreported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((f.range, f.fence));
    }

    /// Turns the ranges a worker claimed ahead (not started) into releases.
    fn give_back(
        &self,
        queue: &mut VecDeque<Lease>,
        finish: &mut Vec<(Finish, u64)>,
        reason: &str,
    ) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mut unreported = self.unreported.lock().unwrap_or_else(|e| e.into_inner());
        for lease in queue.drain(..) {
            held.remove(&lease.range);
            unreported.insert((lease.range, lease.fence));
            self.emit(|| BatchEvent::Released {
                range: lease.range,
                reason: reason.to_owned(),
            });
            let size = lease.ids.len();
            finish.push((
                Finish {
                    range: lease.range,
                    fence: lease.fence,
                    outcome: FinishOutcome::Release,
                },
                size,
            ));
        }
    }

    /// Loads the next ids after the cursor and appends them as a claimed range;
    /// `None` when the loader has no more.
    async fn load(&self) -> Result<Option<Lease>, BatchError> {
        let Source::Loader { f, kind } = &self.inner.source else {
            return Ok(None);
        };
        let mut state = self.loader.lock().await;
        loop {
            if state.exhausted || self.stop.is_cancelled() {
                return Ok(None);
            }
            let after = state.cursor.clone();
            let ids = self.fetch(f, after.clone()).await?;
            if ids.is_empty() {
                state.exhausted = true;
                return Ok(None);
            }
            if let Err(error) = check_order(&ids, after.as_ref(), *kind) {
                return Err(BatchError::Unsorted { after, error });
            }
            let last = ids.last().cloned();
            let reply = self
                .retry("append", || {
                    self.store.append(
                        &self.job,
                        Append {
                            owner: self.owner.clone(),
                            now: self.clock.now(),
                            lease_ms: self.lease_ms,
                            after: after.clone(),
                            ids: ids.clone(),
                            at_most_once: self.inner.config.delivery == Delivery::AtMostOnce,
                        },
                    )
                })
                .await?;
            match reply {
                AppendReply::Claimed(lease) => {
                    state.cursor = last;
                    return Ok(Some(lease));
                }
                // Another process appended first: load again after its ids.
                AppendReply::CursorMoved(cursor) => state.cursor = cursor,
            }
        }
    }

    /// Calls the loader, retrying its errors with backoff for `store_retry_for`.
    async fn fetch(
        &self,
        f: &super::builder::LoaderFn,
        after: Option<Id>,
    ) -> Result<Vec<Id>, BatchError> {
        let deadline = Instant::now() + self.inner.config.store_retry_for;
        let mut delay = Duration::from_millis(50);
        let mut attempt = 0;
        loop {
            match f(after.clone()).await {
                Ok(ids) => return Ok(ids),
                Err(message) if Instant::now() + delay <= deadline => {
                    attempt += 1;
                    self.emit(|| BatchEvent::Retrying {
                        operation: "load",
                        attempt,
                        error: message.clone(),
                    });
                    tracing::warn!(job = %self.job, attempt, error = %message, "loader failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(message) => return Err(BatchError::Fetch { after, message }),
            }
        }
    }

    /// Runs one claimed range; returns its finish with the range's size (`None`
    /// when fenced out) and whether this worker exits without a restart.
    async fn run_range(
        &self,
        ctx: Arc<RunCtx>,
        worker: usize,
        lease: Lease,
    ) -> (Option<(Finish, u64)>, bool) {
        let config = &self.inner.config;
        let max = config.retry.max_attempts();
        self.emit(|| BatchEvent::Claimed {
            range: lease.range,
            ids: lease.ids.to_string(),
            attempt: lease.attempt,
            fence: lease.fence,
            origin: lease.origin.clone(),
        });
        if let Origin::Expired { previous_owner } = &lease.origin {
            self.emit(|| BatchEvent::Reclaimed {
                range: lease.range,
                previous_owner: previous_owner.clone(),
            });
        }
        let size = lease.ids.len();
        let finish = |outcome| {
            (
                Finish {
                    range: lease.range,
                    fence: lease.fence,
                    outcome,
                },
                size,
            )
        };
        let amo = config.delivery == Delivery::AtMostOnce;
        if lease.attempt > max {
            self.held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&lease.range);
            let error = format!(
                "attempt {} is over the limit of {max}: the range's earlier holders died or lost their leases",
                lease.attempt
            );
            self.emit(|| BatchEvent::Failed {
                range: lease.range,
                attempt: lease.attempt,
                error: error.clone(),
                retry_in: None,
            });
            return (
                Some(finish(FinishOutcome::Failed {
                    error,
                    retry_at: None,
                })),
                false,
            );
        }
        let ids = lease.ids.skip(lease.checkpoint);
        let len = ids.len();
        let token = {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            let h = held.entry(lease.range).or_insert_with(|| Held {
                fence: lease.fence,
                token: self.hard.child_token(),
                fenced: false,
            });
            h.token.clone()
        };
        let result = match self.rate_limit(len, &token).await {
            Ok(()) => {
                let range = Range {
                    number: lease.range,
                    fence: lease.fence,
                    attempt: lease.attempt,
                    ids,
                    offset: lease.checkpoint,
                    token: token.clone(),
                    ctx,
                };
                self.invoke(range, &token).await
            }
            Err(failure) => Err(failure),
        };
        let held = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&lease.range);
        if held.is_some_and(|h| h.fenced) {
            add(&self.counters.fenced_out, 1);
            self.emit(|| BatchEvent::FencedOut {
                range: lease.range,
                fence: lease.fence,
            });
            return (None, false);
        }
        let failed_attempt = |error: String| {
            let retry_at = (lease.attempt < max).then(|| {
                let delay = config
                    .retry
                    .jittered(lease.attempt, crate::task::random_unit());
                (
                    delay,
                    self.clock.now().saturating_add(delay.as_millis() as i64),
                )
            });
            self.emit(|| BatchEvent::Failed {
                range: lease.range,
                attempt: lease.attempt,
                error: error.clone(),
                retry_in: retry_at.map(|r| r.0),
            });
            finish(FinishOutcome::Failed {
                error,
                retry_at: retry_at.map(|r| r.1),
            })
        };
        match result {
            Ok(processed) => {
                let failed = processed.into_failed();
                let n = failed.len() as u64;
                self.emit(|| BatchEvent::Done {
                    range: lease.range,
                    ids: len,
                    failed_ids: n,
                });
                (Some(finish(FinishOutcome::Done { failed })), false)
            }
            Err(Failure::Error(error)) => (Some(failed_attempt(error)), false),
            Err(Failure::Timeout(after)) => (
                Some(failed_attempt(format!("range timed out after {after:?}"))),
                false,
            ),
            Err(Failure::Stopped) if amo => (
                Some(failed_attempt(
                    "stopped while running; at-most-once: not run again".to_owned(),
                )),
                false,
            ),
            Err(Failure::Stopped | Failure::NotStarted) => {
                self.emit(|| BatchEvent::Released {
                    range: lease.range,
                    reason: "the run stopped".to_owned(),
                });
                (Some(finish(FinishOutcome::Release)), false)
            }
            Err(Failure::WorkerDied(reason)) => {
                let restarted = self.worker_exited(worker, &reason);
                self.emit(|| BatchEvent::Released {
                    range: lease.range,
                    reason: reason.clone(),
                });
                let outcome = if amo {
                    FinishOutcome::Failed {
                        error: format!("{reason}; at-most-once: not run again"),
                        retry_at: None,
                    }
                } else {
                    FinishOutcome::Release
                };
                (Some(finish(outcome)), !restarted)
            }
        }
    }

    /// Counts a worker's exit against the restart budget; returns whether it is
    /// restarted. Spending the budget fails the run.
    fn worker_exited(&self, worker: usize, reason: &str) -> bool {
        let config = &self.inner.config;
        let restarted = if config.restart {
            let now = Instant::now();
            let mut log = self.restarts.lock().unwrap_or_else(|e| e.into_inner());
            while log
                .front()
                .is_some_and(|t| now.duration_since(*t) > config.restart_window)
            {
                log.pop_front();
            }
            log.push_back(now);
            let n = log.len();
            drop(log);
            if n > config.max_restarts {
                self.fail(BatchError::RestartBudget {
                    restarts: n,
                    window: config.restart_window,
                    last: reason.to_owned(),
                });
                false
            } else {
                add(&self.counters.restarts, 1);
                true
            }
        } else {
            false
        };
        tracing::warn!(job = %self.job, worker, reason, restarted, "batch worker exited");
        self.emit(|| BatchEvent::WorkerExited {
            worker,
            reason: reason.to_owned(),
            restarted,
        });
        restarted
    }

    /// Waits for the job-wide rate limit to allow `ids` ids.
    async fn rate_limit(&self, ids: u64, token: &CancellationToken) -> Result<(), Failure> {
        let Some(rate) = self.inner.config.rate else {
            return Ok(());
        };
        loop {
            let wait = self
                .retry("rate limit", || {
                    self.store.acquire(&self.job, rate, ids, self.clock.now())
                })
                .await
                .map_err(|e| {
                    let text = e.to_string();
                    self.fail(e);
                    Failure::Error(text)
                })?;
            if wait == 0 {
                return Ok(());
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                _ = token.cancelled() => return Err(Failure::NotStarted),
            }
        }
    }

    /// Runs the handler on `range`.
    async fn invoke(&self, range: Range, token: &CancellationToken) -> Result<Processed, Failure> {
        let timeout = self.inner.config.range_timeout;
        let sleep = crate::common::sleep_until_opt(timeout.map(|t| Instant::now() + t));
        tokio::pin!(sleep);
        match &self.inner.handler {
            Handler::InProcess { f, .. } => {
                let pool = self
                    .task_pool
                    .as_ref()
                    .expect("in-process runs have a task pool");
                // Boxed as `Send` here: rustc cannot prove the spawn future `Send`
                // for every lifetime when it is held inside this larger future.
                let spawn: futures::future::BoxFuture<'_, _> = Box::pin(pool.spawn(f(range)));
                let mut handle = match spawn.await {
                    Ok(handle) => handle,
                    Err(_) => return Err(Failure::Error("the task pool is closed".to_owned())),
                };
                let out = tokio::select! {
                    out = &mut handle => out,
                    _ = token.cancelled() => {
                        handle.abort();
                        return Err(Failure::Stopped);
                    }
                    _ = &mut sleep => {
                        handle.abort();
                        return Err(Failure::Timeout(timeout.unwrap_or_default()));
                    }
                };
                match out {
                    Ok(processed) => Ok(processed),
                    Err(TaskError::Failed(message)) => Err(Failure::Error(message)),
                    Err(TaskError::Panicked(p)) => Err(Failure::WorkerDied(format!(
                        "handler panicked: {}",
                        p.message().unwrap_or("<non-string payload>")
                    ))),
                    Err(TaskError::TimedOut) => Err(Failure::Timeout(timeout.unwrap_or_default())),
                    Err(_) => Err(Failure::Stopped),
                }
            }
            Handler::Process { pool, function } => {
                let call = RangeCall {
                    job: self.job.clone(),
                    range: range.number,
                    attempt: range.attempt,
                    ids: range.ids.clone(),
                };
                let mut options = CallOptions::new().token(token.clone());
                if let Some(t) = timeout {
                    options = options.timeout(t);
                }
                let out = pool
                    .call_with::<RangeCall, Vec<FailedId>>(function, &call, &options)
                    .await;
                match out {
                    Ok(failed) => Ok(failed.into()),
                    Err(e) if e.is_worker_lost() => Err(Failure::WorkerDied(e.to_string())),
                    Err(e) if e.is_timeout() => Err(Failure::Timeout(timeout.unwrap_or_default())),
                    Err(e) if e.is_cancelled() => Err(Failure::Stopped),
                    Err(CallError::Stopped) => {
                        self.fail(BatchError::Fetch {
                            after: None,
                            message: "the process pool was stopped".to_owned(),
                        });
                        Err(Failure::Stopped)
                    }
                    Err(e) => Err(Failure::Error(e.to_string())),
                }
            }
        }
    }

    /// Renews this process's leases every third of the lease until `done`;
    /// fences out the ranges the store no longer lists as ours.
    async fn heartbeat(self: Arc<Self>, done: CancellationToken) {
        let every = Duration::from_millis((self.lease_ms / 3).max(1));
        let mut suspects: Vec<(u64, u64)> = Vec::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = done.cancelled() => return,
            }
            let local: Vec<(u64, u64)> = self
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(range, h)| (*range, h.fence))
                .collect();
            if local.is_empty() {
                continue;
            }
            let renewed = self
                .retry("renew leases", || {
                    self.store
                        .renew(&self.job, &self.owner, self.clock.now(), self.lease_ms)
                })
                .await;
            let still: Vec<(u64, u64)> = match renewed {
                Ok(still) => still,
                Err(e) => {
                    self.fail(e);
                    return;
                }
            };
            let orphans: Vec<(u64, u64)> = {
                let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                for (range, fence) in &local {
                    if still.contains(&(*range, *fence)) {
                        continue;
                    }
                    if let Some(h) = held.get_mut(range) {
                        if h.fence == *fence {
                            h.fenced = true;
                            h.token.cancel();
                        }
                    }
                }
                // Ranges the store says this owner holds but no worker knows of: a
                // step that claimed them ran, but its reply was lost and the step
                // was retried. Seen twice in a row (so not a claim whose reply is
                // still on its way), they are given back. Ranges that ended here and
                // wait for their finish to be acknowledged are not such claims: giving
                // one back would run it again elsewhere and fence out its finish.
                let unreported = self.unreported.lock().unwrap_or_else(|e| e.into_inner());
                let unknown: Vec<(u64, u64)> = still
                    .iter()
                    .filter(|(range, fence)| held.get(range).is_none_or(|h| h.fence != *fence))
                    .filter(|key| !unreported.contains(key))
                    .copied()
                    .collect();
                drop(unreported);
                let orphans = unknown
                    .iter()
                    .filter(|r| suspects.contains(r))
                    .copied()
                    .collect();
                suspects = unknown;
                orphans
            };
            if !orphans.is_empty() {
                tracing::warn!(job = %self.job, ranges = orphans.len(), "giving back ranges claimed by a step whose reply was lost");
                let release = orphans
                    .iter()
                    .map(|(range, fence)| {
                        let finish = Finish {
                            range: *range,
                            fence: *fence,
                            outcome: FinishOutcome::Release,
                        };
                        (finish, 0)
                    })
                    .collect();
                if let Err(e) = self.step(release, 0).await {
                    self.fail(e);
                    return;
                }
            }
        }
    }
}

/// Runs the job once; the job handle's `run` wraps this with its guard and the
/// before-stop delivery.
pub(crate) async fn run(
    inner: &Arc<JobInner>,
    started: Instant,
) -> (RunSummary, Option<BatchError>) {
    let store = Arc::clone(&inner.store);
    let describe = |operation, source| BatchError::Store {
        store: store.describe(),
        operation,
        source,
    };
    // The clock and the job row, with the same bounded retry as every store call.
    let deadline = Instant::now() + inner.config.store_retry_for;
    let base_ms = loop {
        match store.now().await {
            Ok(ms) => break ms,
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => return (summary_at(started), Some(describe("read the clock", e))),
        }
    };
    let stop = inner.stop.child_token();
    let ctx = Arc::new(RunCtx {
        store: Arc::clone(&store),
        job: inner.name.clone(),
        clock: Clock {
            base_ms,
            base: Instant::now(),
        },
        lease_ms: u64::try_from(inner.config.lease.as_millis()).unwrap_or(u64::MAX),
        inner: Arc::clone(inner),
        owner: owner_name(),
        hard: CancellationToken::new(),
        stop,
        held: Mutex::new(HashMap::new()),
        unreported: Mutex::new(HashSet::new()),
        loader: tokio::sync::Mutex::new(LoaderState {
            cursor: None,
            exhausted: false,
        }),
        failure: Mutex::new(None),
        wake: tokio::sync::watch::channel(0).0,
        restarts: Mutex::new(VecDeque::new()),
        counters: Counters::default(),
        task_pool: match &inner.handler {
            Handler::InProcess {
                pool: Some(pool), ..
            } => Some(pool.clone()),
            Handler::InProcess { pool: None, .. } => Some(
                TaskPool::builder()
                    .max_concurrency(inner.config.workers)
                    .build()
                    .expect("workers is at least 1"),
            ),
            Handler::Process { .. } => None,
        },
    });
    let spec = JobSpec {
        name: inner.name.clone(),
        source: inner.source.spec(),
    };
    match ctx.retry("open the job", || store.open(&spec)).await {
        Ok(info) => ctx.loader.lock().await.cursor = info.cursor,
        Err(e) => return (ctx.summary(started), Some(e)),
    }

    // If this future is dropped, the guard stops the background tasks and gives
    // the held ranges back.
    let mut abandon = Abandon {
        ctx: Arc::clone(&ctx),
        tasks: Vec::new(),
        armed: true,
    };
    // The stop grace: once claiming stops, running handlers get this long.
    let grace = {
        let ctx = Arc::clone(&ctx);
        tokio::spawn(async move {
            ctx.stop.cancelled().await;
            tokio::time::sleep(ctx.inner.config.stop_grace).await;
            ctx.hard.cancel();
        })
    };
    let heartbeat_done = CancellationToken::new();
    let heartbeat = tokio::spawn(Arc::clone(&ctx).heartbeat(heartbeat_done.clone()));
    abandon.tasks.push(grace.abort_handle());
    abandon.tasks.push(heartbeat.abort_handle());
    let mut workers = tokio::task::JoinSet::new();
    for index in 0..inner.config.workers {
        workers.spawn(Arc::clone(&ctx).worker(index));
    }
    while let Some(joined) = workers.join_next().await {
        if let Err(e) = joined {
            if e.is_panic() {
                ctx.fail(BatchError::Fetch {
                    after: None,
                    message: format!("a batch worker panicked: {e}"),
                });
            }
        }
    }
    abandon.armed = false;
    heartbeat_done.cancel();
    let _ = heartbeat.await;
    grace.abort();
    if let Some(pool) = &ctx.task_pool {
        if !matches!(&inner.handler, Handler::InProcess { pool: Some(_), .. }) {
            pool.shutdown(Duration::ZERO).await;
        }
    }
    let mut summary = ctx.summary(started);
    summary.stopped = inner.stop.is_cancelled();
    let failure = ctx.failure.lock().unwrap_or_else(|e| e.into_inner()).take();
    if failure.is_none() {
        let loader_exhausted = ctx.loader.lock().await.exhausted;
        if let Ok(p) = ctx
            .retry("read progress", || store.progress(&inner.name))
            .await
        {
            summary.complete = is_complete(&p, &inner.source, loader_exhausted);
        }
    }
    (summary, failure)
}

/// Whether nothing is left of the job: nothing open, nothing uncut.
fn is_complete(p: &StoreProgress, source: &Source, loader_exhausted: bool) -> bool {
    let source_done = match source {
        Source::Span { .. } => p.ids_uncut == Some(0),
        Source::Loader { .. } => loader_exhausted,
    };
    source_done && p.ranges_claimed == 0 && p.ranges_pending == 0
}

fn summary_at(started: Instant) -> RunSummary {
    RunSummary {
        elapsed: started.elapsed(),
        ..RunSummary::default()
    }
}

impl RunCtx {
    fn summary(&self, started: Instant) -> RunSummary {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RunSummary {
            ranges_done: get(&c.ranges_done),
            ids_done: get(&c.ids_done),
            ids_failed: get(&c.ids_failed),
            ranges_failed: get(&c.ranges_failed),
            attempts_failed: get(&c.attempts_failed),
            ranges_released: get(&c.ranges_released),
            fenced_out: get(&c.fenced_out),
            restarts: get(&c.restarts),
            elapsed: started.elapsed(),
            stopped: false,
            complete: false,
        }
    }
}

/// Cleans up after a run whose future was dropped: aborts its background tasks,
/// cancels its handlers, and gives the ranges it held back to the store in a
/// background task (bounded by the store retry time).
struct Abandon {
    ctx: Arc<RunCtx>,
    tasks: Vec<tokio::task::AbortHandle>,
    armed: bool,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for task in &self.tasks {
            task.abort();
        }
        self.ctx.stop.cancel();
        self.ctx.hard.cancel();
        let rt = tokio::runtime::Handle::try_current();
        if let (Ok(rt), Handler::InProcess { pool: None, .. }, Some(pool)) =
            (&rt, &self.ctx.inner.handler, &self.ctx.task_pool)
        {
            // The job's own pool: drop the handlers still running on it.
            let pool = pool.clone();
            rt.spawn(async move { pool.shutdown(Duration::ZERO).await });
        }
        let held: Vec<(Finish, u64)> = self
            .ctx
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(range, h)| {
                (
                    Finish {
                        range,
                        fence: h.fence,
                        outcome: FinishOutcome::Release,
                    },
                    0,
                )
            })
            .collect();
        if held.is_empty() {
            return;
        }
        if let Ok(rt) = rt {
            let ctx = Arc::clone(&self.ctx);
            rt.spawn(async move {
                if let Err(e) = ctx.step(held, 0).await {
                    tracing::warn!(job = %ctx.job, error = %e, "could not give back the ranges of a dropped run; their leases will expire");
                }
            });
        }
    }
}
