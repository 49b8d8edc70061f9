//! Multi-stage processing with bounded channels.
//!
//! A [`Pipeline`] takes items from an iterator or a stream through a chain of
//! stages. Each stage has its own concurrency (its number of workers) and its
//! own output channel capacity, so memory is bounded by the channels between
//! stages, and a slow stage slows the ones before it instead of letting work
//! pile up.
//!
//! ```
//! use workcrew::pipeline::Pipeline;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let out = Pipeline::from_iter(1..=5u32)
//!     .stage("fetch", 4, |n| async move { Ok::<_, String>(n * 10) })
//!     .stage("parse", 2, |n| async move { Ok(n + 1) })
//!     .ordered()
//!     .collect()
//!     .await
//!     .unwrap();
//! assert_eq!(out, [11, 21, 31, 41, 51]);
//! # }
//! ```
//!
//! # Stages
//!
//! [`stage`](Pipeline::stage) adds an async function, run by `concurrency`
//! long-lived tasks; [`stage_blocking`](Pipeline::stage_blocking) adds a
//! blocking or CPU-bound function, run by `concurrency` threads of tokio's
//! blocking pool so it never holds an async worker thread; and
//! [`stage_process`](Pipeline::stage_process) sends each item to a function
//! of a [`ProcessPool`](crate::process::ProcessPool) (worker processes).
//!
//! Every channel holds [`DEFAULT_BUFFER`] items unless set:
//! [`input_capacity`](Pipeline::input_capacity), called right after a stage,
//! sets that stage's input channel, and
//! [`output_capacity`](Pipeline::output_capacity) the channel from the last
//! stage to the caller. 0 makes a channel a rendezvous, as a Go unbuffered
//! channel: an item is handed over only when a receiver takes it, and a stage
//! of N workers still has N items in flight when N are available.
//!
//! A stage of concurrency 0 is a configuration error:
//! [`run`](Pipeline::run) returns [`BuildError`].
//!
//! # Output
//!
//! [`run`](Pipeline::run) returns a [`PipelineStream`] of
//! `Result<T, PipelineError<E>>`; [`collect`](Pipeline::collect) gathers it.
//! Results come as items finish, or in input order with
//! [`ordered`](Pipeline::ordered), whose reordering memory is bounded by a
//! window (see there) with backpressure on the source.
//!
//! # Errors
//!
//! By default the first error — a stage's `Err` or panic, carrying the stage
//! name and the item's index, or a cancellation or deadline — stops every
//! stage and is the stream's last item. Errors after it never replace it;
//! they are kept in [`RunReport::later_errors`].
//! [`PipelineStream::errors`] reads them all, in order, without taking them.
//! [`continue_on_error`](Pipeline::continue_on_error) instead delivers each
//! failure in its item's place and keeps going; [`Collected::results`] keeps
//! that place (input order in an ordered run).
//!
//! # Cancellation
//!
//! [`cancel_token`](Pipeline::cancel_token), [`deadline`](Pipeline::deadline)
//! and [`timeout`](Pipeline::timeout) bound the whole run. Dropping the
//! [`PipelineStream`] stops the source and ends every stage task;
//! [`PipelineStream::shutdown`] also waits for them.
//!
//! # Observing
//!
//! [`PipelineStream::stats`] gives per-stage counts (items in and out,
//! failures, busy time, queue depth), live even while a worker is inside a
//! long item; [`PipelineStream::events`] streams [`PipelineEvent`]s.
//!
//! # By hand
//!
//! [`Dispatcher`] is the Go seed's manual style — `dispatch`, a
//! [`DispatchReceiver`] stream owned by the consumer, `done`, `set_err` and
//! `err` — with separate job and result buffers, cancellation that keeps
//! finished results and reports every job ([`DispatchReport`]), and a
//! producer that is told at once when the consumer is gone.
//!
//! # Implementation notes
//!
//! The channels between stages are hand-written (`channel.rs`): a bounded
//! MPMC queue with batch hand-off and a rendezvous mode. Its module docs give
//! the measured reason it is kept over flume, kanal and async-channel.

mod builder;
mod channel;
mod dispatcher;
mod error;
mod events;
mod ordered;
mod run;
mod source;
mod stage;
mod stats;
mod stream;

pub use builder::{Pipeline, DEFAULT_BUFFER};
pub use dispatcher::{DispatchReceiver, DispatchReport, Dispatcher, DispatcherBuilder};
pub use error::{BuildError, DispatchError, PipelineError};
pub use events::{EventStream, PipelineEvent};
pub use stats::{PipelineStats, StageStats};
pub use stream::{Collected, PipelineStream, RunReport};
