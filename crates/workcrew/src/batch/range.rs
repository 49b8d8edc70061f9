//! What a handler gets ([`Range`]) and gives back ([`Processed`]), and what a
//! worker process receives ([`RangeCall`]).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::error::BatchError;
use super::id::{Id, Ids, IdsIter};
use super::run::RunCtx;
use super::store::{Checkpoint, FailedId};

/// A range of ids claimed for a handler to process.
///
/// It holds a lease in the store, which the job renews while the handler runs.
/// If the job stops (past its grace) or another process took the range over
/// (this process lost its lease and was fenced out), the range's token is
/// cancelled: a long handler should watch [`cancelled`](Self::cancelled) or
/// [`is_cancelled`](Self::is_cancelled) and return early.
pub struct Range {
    pub(crate) number: u64,
    pub(crate) fence: u64,
    pub(crate) attempt: u32,
    /// The ids still to process: the range's ids after its last checkpoint.
    pub(crate) ids: Ids,
    /// How many of the range's ids a checkpoint recorded before this claim.
    pub(crate) offset: u64,
    pub(crate) token: CancellationToken,
    pub(crate) ctx: Arc<RunCtx>,
}

impl Range {
    /// The range's number in its job (0, 1, 2, … in the order ranges were cut).
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Which attempt at this range this is, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The ids to process, in order (after any checkpoint of an earlier attempt).
    pub fn ids(&self) -> &Ids {
        &self.ids
    }

    /// Iterates over [`ids`](Self::ids).
    pub fn iter(&self) -> IdsIter<'_> {
        self.ids.iter()
    }

    /// How many ids to process.
    pub fn len(&self) -> u64 {
        self.ids.len()
    }

    /// Whether there is nothing to process.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether the job wants this handler to stop (job stopping, or lease lost).
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Waits until the job wants this handler to stop.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }

    /// The cancellation token, to hand to other code.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Records in the store that the first `processed` ids of [`ids`](Self::ids)
    /// are done, and renews the lease. If the range runs again (this process
    /// dies), the next attempt starts after them.
    ///
    /// # Errors
    ///
    /// [`BatchError::FencedOut`] if another process holds the range now (this
    /// one's lease expired): stop working on it. A store error after the job's
    /// store retries.
    ///
    /// # Cancel safety
    ///
    /// Cancelling may leave the checkpoint recorded or not.
    pub async fn checkpoint(&self, processed: u64) -> Result<(), BatchError> {
        let done = self.offset + processed.min(self.ids.len());
        let ctx = &self.ctx;
        let now = ctx.clock.now();
        let held = ctx
            .retry("checkpoint", || {
                ctx.store.checkpoint(
                    &ctx.job,
                    Checkpoint {
                        range: self.number,
                        fence: self.fence,
                        done,
                        now,
                        lease_ms: ctx.lease_ms,
                    },
                )
            })
            .await?;
        if held {
            Ok(())
        } else {
            Err(BatchError::FencedOut {
                range: self.number,
                fence: self.fence,
            })
        }
    }
}

impl fmt::Debug for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Range")
            .field("number", &self.number)
            .field("attempt", &self.attempt)
            .field("ids", &self.ids.to_string())
            .finish_non_exhaustive()
    }
}

/// What a handler reports for a range it processed: which ids failed, if any.
///
/// A handler returns `Ok(())` when every id succeeded, or `Ok(processed)` naming
/// the ids that failed (each with its error): those are recorded in the store as
/// failed ids and retried by [`retry_failed`](super::BatchJob::retry_failed),
/// while the rest of the range counts as done. Returning `Err` fails the whole
/// range's attempt instead (retried per the job's retry policy).
///
/// # Examples
///
/// ```
/// use workcrew::batch::{Id, Processed};
///
/// let mut out = Processed::new();
/// out.fail(Id::from(42), "row is locked");
/// assert_eq!(out.failed().len(), 1);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Processed {
    failed: Vec<FailedId>,
}

impl Processed {
    /// Every id succeeded (so far).
    pub fn new() -> Self {
        Processed::default()
    }

    /// Records that `id` failed with `error`.
    pub fn fail(&mut self, id: impl Into<Id>, error: impl fmt::Display) {
        self.failed.push(FailedId::new(id, error));
    }

    /// The failed ids.
    pub fn failed(&self) -> &[FailedId] {
        &self.failed
    }

    pub(crate) fn into_failed(self) -> Vec<FailedId> {
        self.failed
    }
}

impl From<()> for Processed {
    fn from((): ()) -> Self {
        Processed::new()
    }
}

impl From<Vec<FailedId>> for Processed {
    fn from(failed: Vec<FailedId>) -> Self {
        Processed { failed }
    }
}

impl FromIterator<FailedId> for Processed {
    fn from_iter<I: IntoIterator<Item = FailedId>>(iter: I) -> Self {
        Processed {
            failed: iter.into_iter().collect(),
        }
    }
}

/// The argument a process-pool handler's function receives: one range.
///
/// In JSON: `{"job": "reindex", "range": 7, "attempt": 1, "ids": {"span": [700, 800]}}`
/// or `... "ids": {"list": [3, 9, 27]}`. The function returns the ids that
/// failed, `[]` when all succeeded: `[{"id": 703, "error": "row is locked"}]`
/// (a `Vec<FailedId>` in Rust). An error answer fails the whole range's attempt.
///
/// # Examples
///
/// A Rust worker's function:
///
/// ```
/// use workcrew::batch::{FailedId, RangeCall};
///
/// fn reindex(call: RangeCall) -> Result<Vec<FailedId>, String> {
///     let mut failed = Vec::new();
///     for id in call.ids.iter() {
///         if id.as_int() == Some(13) {
///             failed.push(FailedId::new(id, "unlucky"));
///         }
///     }
///     Ok(failed)
/// }
/// # let call = RangeCall { job: "j".into(), range: 0, attempt: 1, ids: workcrew::batch::Ids::Span(10, 20) };
/// # assert_eq!(reindex(call).unwrap().len(), 1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeCall {
    /// The job's name.
    pub job: String,
    /// The range's number.
    pub range: u64,
    /// The attempt, from 1.
    pub attempt: u32,
    /// The ids to process.
    pub ids: Ids,
}
