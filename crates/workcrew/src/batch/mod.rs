//! Durable batch jobs: process a large id space in leased ranges, resumable
//! after any crash, on one machine or many.
//!
//! A [`BatchJob`] walks an id space — the integers of a span, or ids loaded by
//! your function in sorted order — cut into ranges. Workers claim ranges under a
//! lease from a [`Store`], run your handler on each, and record it done. The
//! store is the job's memory: [`SqliteStore`] (one file, nothing to install) by
//! default; Redis (`workcrew-redis`) or Postgres (`workcrew-postgres`) to share
//! one job between machines.
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use workcrew::batch::{BatchJob, SqliteStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("jobs.db");
//! let store = SqliteStore::open(path)?;
//! let sum = Arc::new(AtomicU64::new(0));
//! let total = Arc::clone(&sum);
//! let job = BatchJob::builder(store, "sum-ids")
//!     .span(0..10_000)
//!     .range_size(500)
//!     .workers(4)
//!     .handler(move |range| {
//!         let sum = Arc::clone(&sum);
//!         async move {
//!             for id in range.iter() {
//!                 sum.fetch_add(id.as_int().unwrap() as u64, Ordering::Relaxed);
//!             }
//!             Ok::<_, std::io::Error>(())
//!         }
//!     })
//!     .build()?;
//! let summary = job.run().await?;
//! assert!(summary.complete);
//! assert_eq!(total.load(Ordering::Relaxed), (0..10_000u64).sum::<u64>());
//! # Ok(())
//! # }
//! ```
//!
//! # Sources
//!
//! [`span(start..end)`](BatchJobBuilder::span) cuts the integers into ranges of
//! [`range_size`](BatchJobBuilder::range_size). [`load_with(f)`](BatchJobBuilder::load_with)
//! is the parallel-worker seed's form: `f(last_id)` returns the next ids (`i64`
//! or `String`), sorted, after `last_id`; each call's ids make one range. The job
//! checks the order and fails with an error naming the range when it is wrong.
//!
//! # Leases, fencing and reclaim
//!
//! Claiming a range and advancing the cursor is one atomic step in the store. A
//! claim is a lease: an owner, an expiry (renewed by a heartbeat while the
//! handler runs) and a fencing token. A range whose lease expired — its process
//! or machine is gone — is handed out again before any new range, without
//! rewinding the cursor; a worker seen dying in this process gives its range back
//! at once. A late report from a process whose lease expired carries a stale
//! token and is rejected ([`BatchEvent::FencedOut`]).
//!
//! # Guarantees
//!
//! [`Delivery::AtLeastOnce`] (default): every id is processed at least once and
//! none is skipped; an id runs twice only if the process holding its range died
//! (or lost its lease) mid-range. [`Delivery::AtMostOnce`]: such ranges are
//! parked as failed instead of run again. A range gets a number of attempts with
//! backoff ([`retry`](BatchJobBuilder::retry)); one with none left is parked as
//! failed with its last error, visible in [`progress`](BatchJob::progress) and
//! [`failed_ranges`](BatchJob::failed_ranges), until
//! [`retry_failed`](BatchJob::retry_failed) puts it back. A handler can also fail
//! single ids ([`Processed::fail`]): they are recorded with their errors and
//! retried alone.
//!
//! # Handlers
//!
//! [`handler`](BatchJobBuilder::handler): an async function in this process, run
//! on a [`TaskPool`](crate::task::TaskPool). [`process_handler`](BatchJobBuilder::process_handler):
//! a function in a [`ProcessPool`](crate::process::ProcessPool)'s workers, which
//! receives a [`RangeCall`]. A worker that exits (a panic, a dead process) is
//! restarted within a restart budget (N in a window); past it the run fails.
//!
//! # Resume, stop, failures
//!
//! Running a job of the same name again continues where it stopped — also
//! after the whole program was SIGKILLed. [`reset`](BatchJob::reset) starts over.
//! [`stop`](BatchJob::stop) ends a run gracefully. Store and loader errors are
//! retried with backoff for a bounded time, then the run fails with a clear
//! error; it never hangs. Every run ends with [`BatchEvent::BeforeStop`].
//!
//! # Rate limit
//!
//! [`rate_limit`](BatchJobBuilder::rate_limit) caps ids per second for the whole
//! job, in the store, so all processes together respect it.
//!
//! # Stores
//!
//! One [`Store`] trait; every store passes the same conformance suite
//! (`workcrew::batch::conformance`, behind the `conformance` feature).

mod builder;
#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod events;
mod id;
mod job;
mod range;
mod run;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;

pub use builder::{BatchJobBuilder, Delivery, LoaderId};
pub use error::{BatchError, BuildError};
pub use events::{BatchEvent, BatchEvents};
pub use id::{Id, IdKind, Ids, IdsIter, OrderError};
pub use job::{BatchJob, Progress};
pub use range::{Processed, Range, RangeCall};
pub use run::RunSummary;
#[cfg(feature = "sqlite")]
pub use sqlite::{Durability, SqliteStore, SqliteStoreBuilder};
pub use store::{
    redact_url, Append, AppendReply, Checkpoint, FailedId, FailedRange, Finish, FinishOutcome,
    JobInfo, JobSpec, JobStatus, Lease, Millis, Origin, Rate, Retried, SourceSpec, Step, StepReply,
    Store, StoreError, StoreErrorKind, StoreProgress,
};
