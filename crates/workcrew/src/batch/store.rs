//! The [`Store`] trait: everything a batch job keeps, behind one interface that
//! SQLite, Redis and Postgres implement.
//!
//! # The model every store implements
//!
//! A **job** (by name) has a source (a numeric span cut into ranges of a fixed
//! size, or a list of ids loaded by a user function), a **cursor** (how far
//! the source has been cut), a **fence counter**, and counters of what is done.
//! A **range** has a number (0, 1, 2, … in the order it was cut), its ids, a
//! state, and while claimed a lease: an owner, an expiry and a fencing token.
//!
//! ```text
//!            claim (cursor advances in the same step)
//!   (cut) ─────────────────────────────────────────────► claimed ──done──► (deleted; counted)
//!                                          ▲    │  │
//!        pending ──claim (ready_at ≤ now)──┘    │  └──failed, no retry left──► failed
//!           ▲                                   │                               │
//!           └──── failed with retry / released ─┘      retry_failed() ──────────┘
//!   claimed with expires ≤ now ──claim──► claimed (new owner, new fence)
//! ```
//!
//! Rules every store keeps, each one atomic (one transaction or one script):
//!
//! - **Claim** ([`Store::step`]): hand out pending ranges whose `ready_at` has
//!   come, then ranges whose lease expired (their previous holder is gone), then
//!   new ranges cut at the cursor, advancing it. Each claim sets the owner and
//!   the expiry, takes the next value of the job's fence counter as the range's
//!   fencing token, and counts an attempt. Expired ranges claimed under
//!   at-most-once are never handed out again: they are parked as failed.
//! - **Finish** (in the same [`Step`]): accepted only when the range is still
//!   claimed with the same fencing token; otherwise rejected (the caller was
//!   fenced out) and nothing changes. Done ranges are deleted and counted; their
//!   failed ids are recorded with their errors.
//! - **Checkpoint**, **renew**: the same fencing rule; both extend the lease.
//! - Times are the caller's `now` in milliseconds since the Unix epoch, in the
//!   store's time frame (see [`Store::now`]); stores never read a clock inside a
//!   step, so every rule can be tested at exact instants.

use std::error::Error as StdError;
use std::fmt;

use futures::future::BoxFuture;

use super::id::{Id, IdKind, Ids};

/// Milliseconds since the Unix epoch, in the store's time frame.
pub type Millis = i64;

/// A store of batch jobs: SQLite ([`SqliteStore`](super::SqliteStore)), Redis
/// (`workcrew-redis`), Postgres (`workcrew-postgres`), or your own.
///
/// Every method is one atomic step in the store (see the module docs for the
/// rules). A store must be safe to share between many processes on many
/// machines (SQLite: on one machine). Errors are [`StoreError`]s; the job
/// retries transient ones ([`StoreError::is_transient`]) with backoff for a
/// bounded time.
///
/// The conformance suite in `workcrew::batch::conformance` (feature
/// `conformance`) checks a store against these rules; every store of this
/// project runs it.
pub trait Store: Send + Sync + 'static {
    /// Where the store is, for messages: never a password.
    fn describe(&self) -> String;

    /// The store's clock, in milliseconds since the Unix epoch. Jobs on many
    /// machines use it so their leases agree.
    fn now(&self) -> BoxFuture<'_, Result<Millis, StoreError>>;

    /// Creates the job if it does not exist; checks that an existing one has the
    /// same source.
    ///
    /// # Errors
    ///
    /// [`StoreErrorKind::Conflict`] if the job exists with another source.
    fn open<'a>(&'a self, spec: &'a JobSpec) -> BoxFuture<'a, Result<JobInfo, StoreError>>;

    /// Finishes ranges and claims new ones, in one atomic step.
    fn step<'a>(&'a self, job: &'a str, step: Step)
        -> BoxFuture<'a, Result<StepReply, StoreError>>;

    /// Adds a range of loaded ids after the cursor and claims it, if the cursor
    /// is still `append.after` (a loader source); otherwise tells where it is.
    fn append<'a>(
        &'a self,
        job: &'a str,
        append: Append,
    ) -> BoxFuture<'a, Result<AppendReply, StoreError>>;

    /// Records that the first `done` ids of a claimed range are processed, and
    /// extends its lease. `false` if the caller was fenced out.
    fn checkpoint<'a>(
        &'a self,
        job: &'a str,
        checkpoint: Checkpoint,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Extends the lease of every range `owner` holds; returns those it still
    /// holds (range number, fencing token).
    fn renew<'a>(
        &'a self,
        job: &'a str,
        owner: &'a str,
        now: Millis,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<(u64, u64)>, StoreError>>;

    /// The job's counters and open ranges.
    fn progress<'a>(&'a self, job: &'a str) -> BoxFuture<'a, Result<StoreProgress, StoreError>>;

    /// Deletes the job: its cursor, ranges and failed ids.
    fn reset<'a>(&'a self, job: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Puts failed ranges back (attempts from zero), and makes new ranges of the
    /// failed ids (at most `chunk` ids each), forgetting those failures.
    fn retry_failed<'a>(
        &'a self,
        job: &'a str,
        now: Millis,
        chunk: u64,
    ) -> BoxFuture<'a, Result<Retried, StoreError>>;

    /// Up to `limit` parked ranges, lowest number first.
    fn failed_ranges<'a>(
        &'a self,
        job: &'a str,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<FailedRange>, StoreError>>;

    /// Up to `limit` failed ids, lowest first.
    fn failed_ids<'a>(
        &'a self,
        job: &'a str,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<FailedId>, StoreError>>;

    /// Asks the job-wide rate limit for `ids` ids (a GCRA kept in the store).
    /// Returns 0 when granted (and counted), or how many milliseconds to wait
    /// before asking again (nothing counted).
    fn acquire<'a>(
        &'a self,
        job: &'a str,
        rate: Rate,
        ids: u64,
        now: Millis,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;
}

/// What a job processes, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceSpec {
    /// The integers `start..end` in ranges of `size`.
    Span {
        /// First id.
        start: i64,
        /// One past the last id.
        end: i64,
        /// Ids per range.
        size: u64,
    },
    /// Ids loaded by a user function, of one kind.
    Loader {
        /// Integer or string ids.
        kind: IdKind,
    },
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::Span { start, end, size } => {
                write!(f, "ids [{start}, {end}) in ranges of {size}")
            }
            SourceSpec::Loader { kind } => write!(f, "loaded {} ids", kind.as_str()),
        }
    }
}

/// A job to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobSpec {
    /// The job's name: its identity in the store.
    pub name: String,
    /// Its source.
    pub source: SourceSpec,
}

/// What [`Store::open`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobInfo {
    /// Whether this call created the job.
    pub created: bool,
    /// For a loader source, the last id handed out; for a span, the next start.
    pub cursor: Option<Id>,
}

/// One atomic step of a job's worker: finish ranges, then claim some.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Who claims: unique per running job (process and run).
    pub owner: String,
    /// The store's time now.
    pub now: Millis,
    /// How long a claimed range is held without renewal.
    pub lease_ms: u64,
    /// Ranges this owner finished.
    pub finish: Vec<Finish>,
    /// How many ranges to claim (0: only finish).
    pub claim: u32,
    /// Claim under at-most-once: an expired lease parks the range as failed
    /// instead of handing it out again.
    pub at_most_once: bool,
}

/// A claimed range's end, as reported to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finish {
    /// The range's number.
    pub range: u64,
    /// The fencing token it was claimed with.
    pub fence: u64,
    /// What happened.
    pub outcome: FinishOutcome,
}

/// How a claimed range ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FinishOutcome {
    /// Processed; `failed` ids (with their errors) are recorded for
    /// [`retry_failed`](Store::retry_failed).
    Done {
        /// The ids the handler reported failed.
        failed: Vec<FailedId>,
    },
    /// The attempt failed: pending again from `retry_at`, or parked as failed
    /// when `None`.
    Failed {
        /// The error, one line.
        error: String,
        /// When it may be claimed again; `None` parks it.
        retry_at: Option<Millis>,
    },
    /// Given back unprocessed (its worker died, or the job stops): pending again
    /// at once.
    Release,
}

/// What a [`Step`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepReply {
    /// Per entry of [`Step::finish`], in order: accepted (`true`) or rejected
    /// because the caller's fencing token is stale (`false`).
    pub finished: Vec<bool>,
    /// The ranges claimed.
    pub claimed: Vec<Lease>,
    /// The job's state after the step, when fewer ranges than asked were
    /// claimed (otherwise `None`, to spare the store the count).
    pub status: Option<JobStatus>,
}

/// A claimed range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The range's number.
    pub range: u64,
    /// Its fencing token: larger than every token handed out before in this job.
    pub fence: u64,
    /// All its ids.
    pub ids: Ids,
    /// How many of them a checkpoint already recorded as processed.
    pub checkpoint: u64,
    /// This claim's attempt number, from 1.
    pub attempt: u32,
    /// When the lease runs out unless renewed.
    pub expires: Millis,
    /// Where the range came from.
    pub origin: Origin,
}

/// Where a claimed range came from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// Cut from the source now.
    New,
    /// Pending: after a failed attempt, a release, or `retry_failed`.
    Pending,
    /// Its previous holder's lease expired.
    Expired {
        /// The previous holder.
        previous_owner: String,
    },
}

/// The job's state, as of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobStatus {
    /// Nothing left to cut from the source (always `false` for a loader source:
    /// only the loader can tell).
    pub exhausted: bool,
    /// Ranges pending or claimed (by anyone).
    pub open: u64,
    /// The earliest time a pending range becomes ready or a lease expires, if
    /// any is open.
    pub next_ready: Option<Millis>,
}

/// A range of loaded ids to add after the cursor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Append {
    /// Who claims it.
    pub owner: String,
    /// The store's time now.
    pub now: Millis,
    /// Lease length.
    pub lease_ms: u64,
    /// The cursor the ids were loaded after (`None`: from the start).
    pub after: Option<Id>,
    /// The ids, strictly increasing, all after `after`; not empty.
    pub ids: Vec<Id>,
    /// Claim under at-most-once.
    pub at_most_once: bool,
}

/// What [`Store::append`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendReply {
    /// The range was added and is claimed.
    Claimed(Lease),
    /// Someone else moved the cursor first: here it is now.
    CursorMoved(Option<Id>),
}

/// A checkpoint inside a claimed range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The range's number.
    pub range: u64,
    /// Its fencing token.
    pub fence: u64,
    /// How many of its ids (from its first) are processed.
    pub done: u64,
    /// The store's time now.
    pub now: Millis,
    /// The lease is extended to `now + lease_ms`.
    pub lease_ms: u64,
}

/// An id that failed, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FailedId {
    /// The id.
    pub id: Id,
    /// The error, one line.
    pub error: String,
}

impl FailedId {
    /// `id` failed with `error`.
    pub fn new(id: impl Into<Id>, error: impl fmt::Display) -> Self {
        FailedId {
            id: id.into(),
            error: error.to_string(),
        }
    }
}

/// A range parked as failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedRange {
    /// Its number.
    pub range: u64,
    /// Its ids.
    pub ids: Ids,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's error.
    pub error: String,
}

/// What [`Store::retry_failed`] put back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retried {
    /// Parked ranges made pending again.
    pub ranges: u64,
    /// Failed ids put into new ranges.
    pub ids: u64,
}

/// A job's counters, as the store keeps them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreProgress {
    /// Ids processed (in done ranges, not counting their failed ids).
    pub ids_done: u64,
    /// Failed ids, plus the ids of parked ranges.
    pub ids_failed: u64,
    /// Done ranges.
    pub ranges_done: u64,
    /// Parked ranges.
    pub ranges_failed: u64,
    /// Claimed ranges.
    pub ranges_claimed: u64,
    /// Ids in claimed ranges.
    pub ids_claimed: u64,
    /// Pending ranges.
    pub ranges_pending: u64,
    /// Ids in pending ranges.
    pub ids_pending: u64,
    /// For a span source: ids not cut into ranges yet.
    pub ids_uncut: Option<u64>,
    /// For a span source: all its ids.
    pub total: Option<u64>,
}

/// A job-wide rate limit: `per_second` ids on average, bursts of up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Ids per second.
    pub per_second: f64,
    /// Ids that may go at once after a quiet spell.
    pub burst: u64,
}

impl Rate {
    /// Milliseconds of the limit's budget that `ids` ids use.
    pub fn cost_ms(&self, ids: u64) -> f64 {
        ids as f64 * 1000.0 / self.per_second
    }

    /// The GCRA step, for stores that compute it in the client (SQLite) and as
    /// the reference for those that run it server-side: given the stored
    /// theoretical arrival time `tat` (ms; `None` at first), returns the new
    /// `tat` to store and 0, or `None` and the wait in milliseconds.
    ///
    /// A request larger than the burst is allowed once the bucket is empty, so
    /// no request waits forever.
    pub fn gcra(&self, tat: Option<f64>, ids: u64, now: Millis) -> (Option<f64>, u64) {
        let now = now as f64;
        let tat = tat.unwrap_or(now).max(now);
        let cost = self.cost_ms(ids);
        let tolerance = self.cost_ms(self.burst).max(cost);
        let new_tat = tat + cost;
        if new_tat - now <= tolerance {
            (Some(new_tat), 0)
        } else {
            (None, (new_tat - tolerance - now).ceil().max(1.0) as u64)
        }
    }
}

/// What went wrong in a store.
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

/// The kinds of [`StoreError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store cannot be reached (connection refused or lost): transient.
    Unavailable,
    /// The store is busy (locked by another process): transient.
    Busy,
    /// The job exists with a different source, or the request contradicts it.
    Conflict,
    /// The store holds data this version cannot read.
    Corrupt,
    /// Anything else.
    Other,
}

impl StoreError {
    /// A new error of `kind`; `message` is lowercase, one line, without a password.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying error (its text must not hold a password either).
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The kind.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// Whether retrying later may succeed (unavailable or busy).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            StoreErrorKind::Unavailable | StoreErrorKind::Busy
        )
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// Removes the password from a store URL, for messages:
/// `redis://:secret@host/0` becomes `redis://:***@host/0`.
///
/// # Examples
///
/// ```
/// use workcrew::batch::redact_url;
///
/// assert_eq!(redact_url("postgres://app:hunter2@db:5432/jobs"), "postgres://app:***@db:5432/jobs");
/// assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let redacted = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        None => userinfo.to_owned(),
    };
    format!("{}{}@{}", &url[..scheme_end + 3], redacted, &rest[at + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn urls_lose_their_password_only() {
        assert_eq!(redact_url("redis://:pw@h:1/2"), "redis://:***@h:1/2");
        assert_eq!(redact_url("redis://u@h"), "redis://u@h");
        assert_eq!(redact_url("sqlite:jobs.db"), "sqlite:jobs.db");
        assert_eq!(
            redact_url("postgres://a:b@c@h/db?x=@"),
            "postgres://a:***@h/db?x=@"
        );
    }

    #[test]
    fn gcra_grants_the_burst_then_spaces_requests() {
        let rate = Rate {
            per_second: 100.0,
            burst: 10,
        };
        let (tat, wait) = rate.gcra(None, 10, 0);
        assert_eq!((tat, wait), (Some(100.0), 0));
        // The bucket is full: 10 more ids need 100 ms of budget back.
        let (none, wait) = rate.gcra(tat, 10, 0);
        assert_eq!((none, wait), (None, 100));
        assert_eq!(rate.gcra(tat, 10, 100), (Some(200.0), 0));
        // A request larger than the burst goes once the bucket is empty.
        assert_eq!(rate.gcra(None, 50, 0), (Some(500.0), 0));
    }

    proptest! {
        /// Over any window, granted ids never exceed the burst plus the rate times
        /// the window (the GCRA bound), whatever the request sizes and times.
        #[test]
        fn gcra_never_exceeds_its_bound(
            per_second in 1.0f64..10_000.0,
            burst in 1u64..1000,
            reqs in proptest::collection::vec((1u64..100, 0i64..50), 1..200),
        ) {
            let rate = Rate { per_second, burst };
            let mut tat = None;
            let mut now = 0i64;
            let mut granted = 0u64;
            let mut biggest = 0u64;
            for (ids, dt) in reqs {
                now += dt;
                if let (Some(t), 0) = rate.gcra(tat, ids, now) {
                    tat = Some(t);
                    granted += ids;
                    biggest = biggest.max(ids);
                }
            }
            let bound = burst.max(biggest) as f64 + per_second * now as f64 / 1000.0;
            prop_assert!(granted as f64 <= bound + 1e-6, "{granted} > {bound}");
        }
    }
}
