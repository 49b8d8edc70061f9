//! A Postgres [`Store`](workcrew::batch::Store) for workcrew's durable batch jobs: several
//! processes on several machines share one job through one database.
//!
//! ```no_run
//! use workcrew::batch::BatchJob;
//! use workcrew_postgres::PostgresStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Run this program on as many machines as you like: they share the job.
//! let store = PostgresStore::connect("postgres://app@db.internal:5432/jobs").await?;
//! let job = BatchJob::builder(store, "reindex-users")
//!     .span(0..10_000_000)
//!     .range_size(500)
//!     .workers(4)
//!     .handler(|range| async move {
//!         for id in range.iter() {
//!             // reindex user `id` ...
//!             let _ = id;
//!         }
//!         Ok::<_, std::io::Error>(())
//!     })
//!     .build()?;
//! let summary = job.run().await?;
//! println!("{} ids done; job complete: {}", summary.ids_done, summary.complete);
//! # Ok(())
//! # }
//! ```
//!
//! # Connecting
//!
//! [`PostgresStore::connect`] takes a `postgres://user:password@host:port/database` URL
//! (or a `key=value` connection string); [`PostgresStore::builder`] sets the schema, the
//! connection's `application_name`, the [durability](#durability) and the timeouts. The
//! connection is plain TCP: TLS is not offered in this version. A store holds one
//! connection; the job's workers and heartbeat pipeline their statements on it.
//!
//! # Schema and migrations
//!
//! The store keeps its tables and functions in one schema (default `workcrew`; give
//! each independent set of jobs its own with [`schema`](PostgresStoreBuilder::schema)).
//! The first connection creates the schema and applies the store's migrations, recorded
//! in its `schema_version` table. It does so in one transaction under an advisory lock,
//! so processes starting at the same time are safe, and a process killed meanwhile leaves
//! nothing half done. A schema migrated by a newer version of this crate is refused.
//!
//! # Claims, leases and fencing
//!
//! Every operation of the [`Store`](workcrew::batch::Store) trait is one SQL statement —
//! most of them a call of a PL/pgSQL function (`src/sql/001_functions.sql`) — so it is
//! atomic without a client transaction and costs one round trip. A step finishes the
//! ranges a worker reports, then claims: pending ranges whose retry time has come and
//! ranges whose lease expired, with `FOR UPDATE SKIP LOCKED` (two claimers never get the
//! same range and never wait for each other), then new ranges cut at the cursor, under
//! the job row's lock (cutting and advancing the cursor are one step). Fencing tokens
//! come from a sequence, so each is larger than every one handed out before. A report
//! with a stale token changes nothing.
//!
//! # Ids
//!
//! Integer ids are `bigint`s and keep their numeric order; string ids are `text` with
//! `COLLATE "C"` and keep their byte order (Rust's order of `String`), whatever the
//! database's locale. A range of loaded ids is stored as a JSON array, which keeps each
//! id's kind: the string `"007"` stays a string.
//!
//! # Durability
//!
//! With [`Durability::Server`] (the default) the store leaves `synchronous_commit` as the
//! server has it — `on` unless configured otherwise: a step returns only after its commit
//! is flushed to the server's write-ahead log on disk, so nothing the job was told is
//! lost, even if the server or its machine crashes. The store never sets `fsync` or
//! anything else that weakens this.
//!
//! [`Durability::Async`] sets `synchronous_commit = off` on the store's connections only:
//! a step returns before its commit is on disk, and the server flushes it within
//! `3 × wal_writer_delay` (600 ms by default). If the **server** crashes, the last such
//! commits are lost and the job rolls back to an earlier consistent state (the log is
//! replayed in order, so no later commit survives an earlier lost one): ranges processed
//! since then run again — duplicates, never skips. A crash of the job's own processes
//! loses nothing under either setting. A range's fencing token can then be handed out a
//! second time (the sequence rolls back with the rest), to the same range cut again at
//! the same place: a late report from before the crash may then be accepted for it,
//! which records ids as done that were indeed processed — still no skip.
//!
//! # Failures and reconnecting
//!
//! Errors are [`StoreError`](workcrew::batch::StoreError)s whose kind tells the job what
//! to do: a refused, reset or killed connection (`pg_terminate_backend`), a server
//! shutting down, or no answer within the call timeout is
//! [`Unavailable`](workcrew::batch::StoreErrorKind::Unavailable); a lock conflict,
//! deadlock or statement timeout is [`Busy`](workcrew::batch::StoreErrorKind::Busy) —
//! both transient, retried by the job with backoff for a bounded time. A job that exists
//! with another source, or a missing job, is a
//! [`Conflict`](workcrew::batch::StoreErrorKind::Conflict); a reply the store cannot read
//! is [`Corrupt`](workcrew::batch::StoreErrorKind::Corrupt); anything else
//! (authentication, privileges) is `Other`, so a job fails at once with the server's
//! reason. After a lost connection the next call reconnects by itself.
//!
//! Every call is bounded: connecting by the [connect
//! timeout](PostgresStoreBuilder::connect_timeout), a statement by the [call
//! timeout](PostgresStoreBuilder::call_timeout), which is also the session's
//! `statement_timeout` so a statement whose caller gave up does not run on.
//!
//! Messages, log lines and [`describe`](workcrew::batch::Store::describe) name the store
//! by its URL without the password (and without query parameters, which may carry one).
//!
//! # Testing
//!
//! The crate's tests run against a real server at `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); each test works in its own schema and
//! drops it. They fail, naming the URL, when the server does not answer.

mod builder;
mod connection;
mod error;
mod migrate;
mod reply;
mod store;

pub use builder::{Durability, PostgresStoreBuilder};
pub use store::PostgresStore;
