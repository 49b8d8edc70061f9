//! Helpers shared by the integration tests: the `TaskPool` ones here, the process pool's in
//! [`processes`], the Node.js worker's paths in [`node`].
//!
//! Every test crate uses a different subset of these, hence the `dead_code` allowance.
#![allow(dead_code)]

pub(crate) mod node;
pub(crate) mod processes;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;
use workcrew::task::{
    DrainError, DrainReport, EventStream, PoolEvent, TaskError, TaskHandle, TaskOutput, TaskPool,
    TaskPoolBuilder,
};

/// How long a single await may take before the test is declared hung.
///
/// On the paused clock this is virtual time: a pool that never wakes its waiter leaves the
/// runtime idle, the clock jumps straight to this deadline and the test fails at once instead
/// of hanging CI. It is far beyond any duration the tests use, so it never decides a result.
/// (On the multi-thread runtime it is real time: only a last resort against a hung CI run.)
const HANG_GUARD: Duration = Duration::from_secs(3600);

/// Builds a pool, failing the test on a configuration error.
pub(crate) fn build(builder: TaskPoolBuilder) -> TaskPool {
    builder.build().expect("valid pool configuration")
}

/// A pool with `n` workers and defaults for everything else.
pub(crate) fn pool(n: usize) -> TaskPool {
    build(TaskPool::builder().max_concurrency(n))
}

/// Awaits `fut`, failing the test (instead of hanging) if it does not finish within
/// [`HANG_GUARD`]. `what` names the operation in the failure message.
pub(crate) async fn guard<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(HANG_GUARD, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what} hung (did not finish within {HANG_GUARD:?})"),
    }
}

/// Spawns `fut` on `pool`, failing the test if the pool refuses it.
pub(crate) async fn spawn<F>(pool: &TaskPool, fut: F) -> TaskHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: TaskOutput,
{
    match guard("spawn", pool.spawn(fut)).await {
        Ok(handle) => handle,
        Err(_) => panic!("spawn was refused: pool closed"),
    }
}

/// Awaits a task handle, failing the test if it hangs.
pub(crate) async fn join<O: TaskOutput>(handle: TaskHandle<O>) -> Result<O::Ok, TaskError<O::Err>> {
    guard("task handle", handle).await
}

/// `drain()` that must succeed.
pub(crate) async fn drain_ok(pool: &TaskPool) -> DrainReport {
    expect_report("drain", guard("drain", pool.drain()).await)
}

/// `close()` that must succeed.
pub(crate) async fn close_ok(pool: &TaskPool) -> DrainReport {
    expect_report("close", guard("close", pool.close()).await)
}

/// Unwraps a drain/close result, naming the operation in the failure message.
pub(crate) fn expect_report(what: &str, res: Result<DrainReport, DrainError>) -> DrainReport {
    match res {
        Ok(report) => report,
        Err(e) => panic!("{what} failed: {e} ({e:?})"),
    }
}

/// A short description of a task result, for failure messages.
pub(crate) fn outcome<T, E>(res: &Result<T, TaskError<E>>) -> &'static str {
    match res {
        Ok(_) => "Ok",
        Err(TaskError::Failed(_)) => "Failed",
        Err(TaskError::Panicked(_)) => "Panicked",
        Err(TaskError::Cancelled(_)) => "Cancelled",
        Err(TaskError::TimedOut) => "TimedOut",
        Err(_) => "<unknown TaskError variant>",
    }
}

/// Lets every other ready task on a current-thread runtime run, without moving the paused
/// clock.
///
/// `yield_now` parks the runtime with a zero timeout, which never auto-advances time, so this
/// is safe inside tests that assert exact virtual timestamps. Enough rounds are done to let a
/// chain of wake-ups (spawn -> worker -> task -> handle) play out.
pub(crate) async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

/// Milliseconds of virtual time since `start`, for readable exact-time assertions.
pub(crate) fn ms_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).expect("test durations fit in u64")
}

/// Shorthand for `Duration::from_millis`.
pub(crate) const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Counts how many tasks are inside a section at once and remembers the highest count seen.
#[derive(Clone, Default)]
pub(crate) struct Live {
    inner: Arc<LiveInner>,
}

#[derive(Default)]
struct LiveInner {
    now: AtomicUsize,
    max: AtomicUsize,
    entered: AtomicUsize,
}

impl Live {
    /// Enters the section; leaving happens when the guard drops (also on abort or panic).
    pub(crate) fn enter(&self) -> LiveGuard {
        let now = self.inner.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.inner.max.fetch_max(now, Ordering::SeqCst);
        self.inner.entered.fetch_add(1, Ordering::SeqCst);
        LiveGuard {
            inner: Arc::clone(&self.inner),
        }
    }

    /// How many are inside right now.
    pub(crate) fn now(&self) -> usize {
        self.inner.now.load(Ordering::SeqCst)
    }

    /// The highest number that were inside at once.
    pub(crate) fn max(&self) -> usize {
        self.inner.max.load(Ordering::SeqCst)
    }

    /// How many times the section was entered in total.
    pub(crate) fn entered(&self) -> usize {
        self.inner.entered.load(Ordering::SeqCst)
    }
}

/// Leaves a [`Live`] section on drop.
pub(crate) struct LiveGuard {
    inner: Arc<LiveInner>,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.inner.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A shared, ordered log that tasks append to.
#[derive(Clone)]
pub(crate) struct Log<T> {
    inner: Arc<Mutex<Vec<T>>>,
}

impl<T> Default for Log<T> {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
        }
    }
}

impl<T: Clone> Log<T> {
    /// Appends one entry.
    pub(crate) fn push(&self, value: T) {
        self.inner.lock().expect("log mutex poisoned").push(value);
    }

    /// A copy of everything logged so far.
    pub(crate) fn snapshot(&self) -> Vec<T> {
        self.inner.lock().expect("log mutex poisoned").clone()
    }
}

/// Sets a flag when dropped: proves that an aborted task's future was really dropped.
pub(crate) struct DropFlag(pub(crate) Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Wraps a value as a successful task output (`TaskOutput` is implemented for `()` and
/// `Result<T, E>`, not for bare values).
pub(crate) fn ok<T>(value: T) -> Result<T, String> {
    Ok(value)
}

/// Drops a task handle, detaching the task: it keeps running and its outcome is only seen in
/// stats and the next drain report.
pub(crate) fn detach<O: TaskOutput>(_handle: TaskHandle<O>) {}

/// The next event, failing the test if the stream ends or nothing arrives.
pub(crate) async fn next_event(events: &mut EventStream) -> PoolEvent {
    match guard("next event", events.next()).await {
        Some(event) => event,
        None => panic!("the event stream ended"),
    }
}

/// Events up to and including the first one for which `last` is true.
pub(crate) async fn events_until(
    events: &mut EventStream,
    last: impl Fn(&PoolEvent) -> bool,
) -> Vec<PoolEvent> {
    let mut seen = Vec::new();
    loop {
        let event = next_event(events).await;
        let done = last(&event);
        seen.push(event);
        if done {
            return seen;
        }
    }
}

/// A task body that panics with `msg` as a `&'static str` payload, like `panic!("literal")`.
///
/// A bare `async { panic!() }` has no output type (it relies on never-type fallback); this
/// gives it `()`.
pub(crate) async fn panicking(msg: &'static str) {
    std::panic::panic_any(msg)
}

/// A task body that sleeps for `d` from its first poll.
///
/// Unlike `tokio::time::sleep(d)`, whose deadline is fixed when it is created, this measures
/// from when the pool starts the task, which is what queueing tests need.
pub(crate) async fn nap(d: Duration) {
    tokio::time::sleep(d).await;
}
