//! A Redis [`Store`](workcrew::batch::Store) for workcrew's durable batch jobs:
//! many processes on many machines share one job through one Redis server.
//!
//! ```no_run
//! use workcrew::batch::BatchJob;
//! use workcrew_redis::RedisStore;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
//! let job = BatchJob::builder(store, "reindex-users")
//!     .span(0..1_000_000)
//!     .range_size(500)
//!     .workers(8)
//!     .handler(|range| async move {
//!         for id in range.iter() {
//!             // reindex user `id`
//!             let _ = id;
//!         }
//!         Ok::<_, std::io::Error>(())
//!     })
//!     .build()?;
//! // Run the same program on as many machines as you like: they share the job.
//! let summary = job.run().await?;
//! println!("{} ids done here; job complete: {}", summary.ids_done, summary.complete);
//! # Ok(())
//! # }
//! ```
//!
//! # Connecting
//!
//! The store needs Redis 7.0 or newer (or Valkey): its scripts declare flags.
//! [`RedisStore::connect`] takes a `redis://` URL;
//! [`RedisStore::builder`] also sets the key prefix and the per-call timeout.
//! One store holds one multiplexed connection that carries every call of every
//! worker, pipelined, and reconnects by itself after the connection breaks.
//! Cloning the store shares it.
//!
//! # Keys
//!
//! A job named `j` lives in eight keys `{prefix:j}:job`, `…:ranges`, `…:lists`,
//! `…:pending`, `…:claimed`, `…:parked`, `…:failed` and `…:errors` (prefix
//! default `workcrew`), and a ninth, `…:floor`, written by a reset: the job's
//! last fencing token, so the job made again starts above it. They share the
//! hash tag `{prefix:j}`, so they would stay on one slot of a Redis cluster (the
//! store itself talks to one server). Done ranges are deleted and counted: a job
//! holds only its open and parked ranges and its failed ids, whatever its size.
//! [`BatchJob::reset`](workcrew::batch::BatchJob::reset) deletes them all but
//! `floor` (one short string per job name).
//!
//! # Atomic steps
//!
//! Every operation — finishing ranges and claiming the next (cursor and all),
//! checkpoints, lease renewal, the rate limit — is one Lua script (kept in
//! `src/lua/`), which Redis runs alone: two workers never claim one range, and a
//! report with a stale fencing token changes nothing. Scripts are sent by hash
//! and loaded again if the server forgot them.
//!
//! # Time and leases
//!
//! Leases are in the server's clock ([`Store::now`](workcrew::batch::Store::now)
//! is Redis `TIME`), so machines whose clocks disagree still agree on who holds
//! what. Fencing tokens of a job start from the server's time when it is created,
//! and above the last token of the job before it when it was reset, so a job
//! created again (after a reset, or after the server lost its data) fences out
//! every holder of the one before.
//!
//! # Errors and outages
//!
//! A refused, broken or silent connection, or a server over its `maxmemory`
//! (which refuses a whole step: nothing of it is applied), is
//! [`Unavailable`](workcrew::batch::StoreErrorKind::Unavailable): a job retries it
//! with backoff for its store retry time, and the store reconnects on the next
//! call. Every call has a deadline ([`RedisStoreBuilder::timeout`]), so a dead
//! server never hangs a job. A job that is not in the server (reset, or lost) is a
//! [`Conflict`](workcrew::batch::StoreErrorKind::Conflict); data this version
//! cannot read is [`Corrupt`](workcrew::batch::StoreErrorKind::Corrupt). No
//! message, error or event holds the URL's password.
//!
//! # Durability
//!
//! The store is as durable as the server. With `appendonly yes` and
//! `appendfsync always`, nothing acknowledged is lost. With the default
//! `appendfsync everysec`, a server crash loses up to a second of steps: ranges
//! recorded done in that second run again (duplicates), none is skipped, since
//! the cursor rolls back with them. With no persistence (`save ""`,
//! `appendonly no`), a restart loses the job: running jobs fail with a clear
//! error (the job is gone), and running it again starts over.
//!
//! # Ids
//!
//! Integer ids are exact over all of `i64`; string ids keep their text (`"007"`
//! stays a string) and sort by their bytes, as [`Id`](workcrew::batch::Id) does.

mod codec;
mod error;
mod store;

pub use store::{RedisStore, RedisStoreBuilder};
