//! workcrew runs work on a bounded crew of workers.
//!
//! Today it offers the **task pool**: bounded, prioritised, rate-limited async
//! concurrency inside one process, with retries, timeouts, a runtime limit,
//! stall detection, drain/close/shutdown, statistics and events. It also offers
//! **pipelines** ([`pipeline`]): multi-stage processing with per-stage
//! concurrency, bounded channels, ordered output and first-error cancellation.
//! The [`process`] pool calls named functions in worker processes that speak
//! the wire [`protocol`] (built with the Rust [`worker`] SDK, or in any other
//! language): routing strategies, growth between a minimum and a maximum,
//! timeouts that cancel then kill and replace, crash recovery, recycling and
//! hot reload, batched `map`, file-descriptor passing, stats and events.
//! [`batch`] jobs walk a large id space in leased ranges kept in a store
//! (embedded SQLite, or Redis and Postgres through their crates), resumable
//! after any crash, shared by any number of processes: every id processed at
//! least once, none skipped.
//!
//! ```
//! use workcrew::task::TaskPool;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool = TaskPool::builder().max_concurrency(8).build().unwrap();
//! let handle = pool.spawn(async { Ok::<_, String>("hello") }).await.unwrap();
//! assert_eq!(handle.await.unwrap(), "hello");
//! pool.close().await.unwrap();
//! # }
//! ```
//!
//! See [`task`] for the guide.

pub mod batch;
mod events;
pub mod pipeline;
pub mod process;
pub mod protocol;
pub mod task;
mod wait;
pub mod worker;

/// The cancellation token taken by every part of workcrew: a task's, a call's
/// ([`process::CallOptions::token`]) and a pipeline's. Re-exported from `tokio-util`, so a user
/// needs no extra dependency.
pub use tokio_util::sync::CancellationToken;
