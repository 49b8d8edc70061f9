//! Bounded concurrency for async work in one process.
//!
//! A [`TaskPool`] runs futures on at most `max_concurrency` long-lived worker
//! tasks, taking them from a bounded priority queue. Every task ends in exactly
//! one outcome — completed, failed, panicked, cancelled or timed out — and
//! failures of tasks nobody awaits are reported by the next
//! [`drain`](TaskPool::drain) or [`close`](TaskPool::close).
//!
//! ```
//! use workcrew::task::TaskPool;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool = TaskPool::builder().max_concurrency(4).build().unwrap();
//! for i in 0..10u32 {
//!     // Fire and forget: drop the handle.
//!     pool.spawn(async move {
//!         if i == 7 { Err(format!("item {i} failed")) } else { Ok(()) }
//!     })
//!     .await
//!     .unwrap();
//! }
//! let report = pool.close().await.unwrap();
//! assert_eq!((report.completed, report.failed), (9, 1));
//! assert_eq!(report.failures[0].message, "item 7 failed");
//! # }
//! ```
//!
//! # Submitting
//!
//! [`spawn`](TaskPool::spawn) waits for queue room (backpressure);
//! [`try_spawn`](TaskPool::try_spawn) never waits and gives the task back when
//! the queue is full or the pool closed. A task's output is `()` or a
//! `Result` (see [`TaskOutput`]), so the pool can tell failure from success.
//! [`task`](TaskPool::task) adds per-task options — name, priority, timeout,
//! cancellation token — and [`task_fn`](TaskPool::task_fn) takes a closure so
//! the task can be retried under a [`RetryPolicy`].
//!
//! # Capacity and scheduling
//!
//! Higher priorities start first, FIFO within a priority. The limit can be
//! changed at runtime with [`set_max_concurrency`](TaskPool::set_max_concurrency);
//! a [`RateLimit`] spaces starts; [`pause`](TaskPool::pause) holds them.
//!
//! # Results and cancellation
//!
//! A [`TaskHandle`] resolves to `Result<T, TaskError<E>>`.
//! [`abort`](TaskHandle::abort) cancels; dropping the handle detaches. A panic
//! in a task becomes [`TaskError::Panicked`] and the pool keeps running.
//!
//! A queued task that is aborted, or whose
//! [`cancel_token`](TaskBuilder::cancel_token) fires, leaves the queue at once,
//! also in a paused pool: its place is freed, it is counted as cancelled, and
//! its future is dropped without ever being polled. A running task stops at its
//! next `.await`.
//!
//! # Shutdown
//!
//! [`drain`](TaskPool::drain) waits for idle and keeps the pool open;
//! [`close`](TaskPool::close) stops intake and waits;
//! [`shutdown`](TaskPool::shutdown) cancels what remains after a grace period.
//! [`max_runtime`](TaskPoolBuilder::max_runtime) bounds a busy period and
//! [`stall_timeout`](TaskPoolBuilder::stall_timeout) reports a pool that stopped
//! making progress.
//!
//! # Observing
//!
//! [`stats`](TaskPool::stats) gives counts and wait/run percentiles;
//! [`events`](TaskPool::events) streams typed [`PoolEvent`]s.
//!
//! # A process-wide pool
//!
//! A pool is cheap to clone and can live in a `static`:
//!
//! ```
//! use std::sync::LazyLock;
//! use workcrew::task::TaskPool;
//!
//! static BACKGROUND: LazyLock<TaskPool> =
//!     LazyLock::new(|| TaskPool::builder().max_concurrency(8).build().expect("valid config"));
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! BACKGROUND.spawn(async { /* log, upload, ... */ }).await.unwrap();
//! BACKGROUND.drain().await.unwrap();
//! # }
//! ```

mod abort;
mod builder;
mod core;
mod drain_book;
mod error;
mod events;
mod id;
mod inbox;
mod job;
mod output;
mod pool;
mod queue;
mod rate;
mod registry;
mod report;
mod retry;
mod shared;
mod spawn;
mod stats;
mod supervisor;
mod watch;
mod worker;

pub use builder::{DrainMode, TaskPoolBuilder};
pub use error::{BuildError, DrainError, SpawnError, TrySpawnError};
pub use events::{EventStream, PoolEvent};
pub use id::TaskId;
pub use job::TaskHandle;
pub use output::{CancelReason, OutcomeKind, PanicPayload, TaskError, TaskOutput};
pub use pool::TaskPool;
pub use rate::RateLimit;
pub use report::{DrainReport, FailureKind, RunningTask, TaskFailure};
pub(crate) use retry::random_unit;
pub use retry::RetryPolicy;
pub use spawn::{TaskBuilder, TaskFnBuilder};
pub use stats::PoolStats;
// Shared with the other parts; kept here too so `workcrew::task::Percentiles` works.
pub use crate::common::Percentiles;
