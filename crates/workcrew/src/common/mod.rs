//! Pieces every part of the crate uses — the task pool, the process pool,
//! pipelines and the worker SDK — so that no part reaches into another's
//! internals: latency histograms and their percentiles, the text of a panic,
//! the typed event broadcast, waits on optional deadlines and tokens, and the hasher of
//! function names.
//!
//! Only [`Percentiles`] is public (re-exported at the crate root); the rest is
//! crate-private.

mod events;
mod latency;
mod names;
mod panic;
mod wait;

pub(crate) use events::{Hub, Subscription};
pub(crate) use latency::Latency;
pub use latency::Percentiles;
pub(crate) use names::NameHasher;
pub(crate) use panic::panic_message;
pub(crate) use wait::{cancelled_opt, sleep_until_opt};
