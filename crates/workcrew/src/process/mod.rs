//! Call named functions in worker processes.
//!
//! A [`ProcessPool`] starts worker processes — any program that speaks
//! `docs/protocol.md`: a Rust program built with [`crate::worker`], the
//! Python reference worker in `workers/python/`, ... — and calls their
//! functions by name.
//!
//! ```no_run
//! use workcrew::process::ProcessPool;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = ProcessPool::builder("python3").arg("workers/python/demo_worker.py").workers(2).build().await?;
//! let echoed: String = pool.call("echo", "hi").await?;
//! assert_eq!(echoed, "hi");
//! pool.stop().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Routing and capacity
//!
//! Each call goes to a worker with room, picked by the pool's [`Routing`]
//! (fewest in flight by default; fill, round-robin, random,
//! power-of-two-choices). In-flight counts rise at routing time, so a burst
//! spreads. A worker never holds more calls than the concurrency it
//! announced (or [`max_per_worker`](ProcessPoolBuilder::max_per_worker)).
//! Calls with no room wait in a bounded pool queue; when it is full,
//! [`ProcessPool::call`] waits and [`ProcessPool::try_call`] fails with
//! [`CallError::QueueFull`].
//!
//! # Elasticity
//!
//! [`min`](ProcessPoolBuilder::min) workers start with the pool and are
//! kept; while calls wait, the pool grows to [`max`](ProcessPoolBuilder::max);
//! workers above `min` idle for [`idle_timeout`](ProcessPoolBuilder::idle_timeout)
//! are stopped (never one holding a call). Failed starts are retried with
//! backoff; a [restart budget](ProcessPoolBuilder::restart_budget) ends a
//! crash loop with [`CallError::CrashLoop`].
//!
//! # Timeouts, cancellation, crashes
//!
//! A call is given up when its timeout passes ([`CallError::TimedOut`]), its
//! [`CallOptions::token`] fires ([`CallError::Cancelled`]; a token already
//! fired refuses the call before it is routed) or its future is dropped. A
//! queued call is then withdrawn; a running one gets `CANCEL`, and every way
//! of giving up ends the same: a worker that has not answered after the
//! [cancel grace](ProcessPoolBuilder::cancel_grace) takes no new call,
//! finishes its other calls within one more grace, and is killed and replaced
//! (a runaway computation is stopped). A worker never holds more calls than
//! its concurrency, cancelled ones included.
//!
//! A worker that ends fails only the calls it held, with
//! [`CallError::WorkerLost`] saying why ([`ExitReason`]: it ended on its own,
//! or the pool killed it for a protocol violation, missed heartbeats or an
//! ignored cancel, or recycled or stopped it) and how ([`ProcessExit`]: exit
//! code or signal); it has left [`worker_pids`](ProcessPool::worker_pids) and
//! the stats before any of them fails. Calls routed to it but not yet sent go
//! to another worker; calls that allow [retries](CallOptions::retries) are
//! sent again. A worker that stops answering heartbeats is killed as hung.
//!
//! # Stopping
//!
//! [`ProcessPool::stop`] ends in bounded time: intake stops, calls drain for
//! up to the stop timeout, calls still queued fail, then each worker gets
//! `SHUTDOWN`, the stop signal and `SIGKILL`, one stop timeout apart; the
//! exact sequence is in [`ProcessPool::stop_with`], which takes its own grace,
//! and [`ProcessPool::stop_now`] does it without waiting.
//!
//! # Recycling and reload
//!
//! Workers are replaced after a number of calls, above a memory limit, after
//! an age (with jitter), or on [`ProcessPool::recycle`] /
//! [`ProcessPool::reload`] (a new command: the new generation starts before
//! the old one drains).
//!
//! # Batches
//!
//! [`ProcessPool::map`] sends items in chunks (`CALL_MANY`), results in order.
//!
//! # Observability
//!
//! [`ProcessPool::stats`] and [`ProcessPool::events`]; workers' stdout and
//! stderr go to `tracing`, tagged with the worker, a line at a time (a line
//! longer than 64 KiB is cut, so a worker's output cannot grow the pool's
//! memory).

mod builder;
mod call;
mod conn;
mod error;
mod events;
mod exit;
mod future;
mod payload;
mod pool;
mod routing;
mod spawn;
mod state;
mod stats;
mod supervisor;

pub use builder::{ProcessPoolBuilder, WorkerCommand};
pub use call::{CallOptions, Function};
pub use error::{CallError, StartError};
pub use events::{ProcessEvent, RecycleReason};
pub use exit::{ExitReason, ProcessExit};
pub use pool::ProcessPool;
pub use routing::Routing;
pub use stats::ProcessPoolStats;
