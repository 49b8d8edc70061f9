//! Call named functions in worker processes.
//!
//! **Early stage.** This version starts a fixed number of workers (any
//! program that speaks `docs/protocol.md`: a Rust program built with
//! [`crate::worker`], the Python reference worker, ...) and:
//! - routes each call to the live worker with the fewest calls in flight
//!   (counted at routing time, so a burst spreads);
//! - returns typed [`CallError`]s;
//! - fails only the calls a crashed worker held, naming its exit code or
//!   signal, and replaces the worker within a restart budget (a crash loop
//!   ends with [`CallError::CrashLoop`], not a spin);
//! - enforces a per-call timeout: `CANCEL` first, then, after a grace
//!   period, kill and replace; a dropped call future sends `CANCEL` too;
//! - pings workers and kills, fails as lost and replaces one that leaves
//!   three heartbeats unanswered;
//! - never sends a worker more calls than the concurrency it announced;
//! - forwards workers' stdout and stderr to `tracing`;
//! - stops gracefully (shutdown, stop timeout, kill, reap).
//!
//! - reports [`ProcessPoolStats`] (workers, busy, waiting calls, outcomes,
//!   restarts, call latency percentiles).
//!
//! Not yet: autoscaling and idle reaping, recycling, other routing strategies,
//! a bounded pool queue, fd passing, events.
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

mod builder;
mod error;
mod pool;
mod stats;
mod worker;

pub use builder::ProcessPoolBuilder;
pub use error::{CallError, StartError};
pub use pool::ProcessPool;
pub use stats::ProcessPoolStats;
