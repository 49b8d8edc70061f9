//! workcrew runs work on a bounded crew of workers.
//!
//! Today it offers the **task pool**: bounded, prioritised, rate-limited async
//! concurrency inside one process, with retries, timeouts, a runtime limit,
//! stall detection, drain/close/shutdown, statistics and events. The wire
//! [`protocol`] for worker processes and the Rust [`worker`] SDK are
//! implemented; the process pool itself,
//! durable batches and pipelines are planned (see the README).
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

pub mod protocol;
pub mod task;
pub mod worker;
