//! The store conformance suite: the rules of the [`Store`] trait, as tests that
//! every store runs (feature `conformance`).
//!
//! Each check takes a fresh, empty store (its own file, key prefix or schema)
//! and panics on the first broken rule. Times are explicit (`now` arguments), so
//! every lease and retry rule is checked at exact instants, with no sleeping.
//!
//! A store crate runs them all with one macro in a test file:
//!
//! ```ignore
//! workcrew::store_conformance_tests!(|| async { MyStore::connect(&url_from_env()).await.unwrap() });
//! ```
//!
//! The macro makes one `#[tokio::test]` per rule, so the crate needs `tokio` with
//! the `macros` and `rt-multi-thread` features among its dev-dependencies.

mod guarded;
pub mod multiprocess;

pub use guarded::Guarded;

use std::collections::BTreeSet;
use std::sync::Arc;

use super::id::{Id, IdKind, Ids};
use super::store::{
    Append, AppendReply, Checkpoint, FailedId, Finish, FinishOutcome, JobSpec, Lease, Millis,
    Origin, Rate, SourceSpec, Step, StepReply, Store, StoreErrorKind,
};

/// A fixed instant the checks count from.
pub const T0: Millis = 1_700_000_000_000;

const LEASE: u64 = 1_000;

fn span_job(name: &str, start: i64, end: i64, size: u64) -> JobSpec {
    JobSpec {
        name: name.to_owned(),
        source: SourceSpec::Span { start, end, size },
    }
}

fn loader_job(name: &str, kind: IdKind) -> JobSpec {
    JobSpec {
        name: name.to_owned(),
        source: SourceSpec::Loader { kind },
    }
}

fn step(owner: &str, now: Millis, claim: u32, finish: Vec<Finish>) -> Step {
    Step {
        owner: owner.to_owned(),
        now,
        lease_ms: LEASE,
        finish,
        claim,
        at_most_once: false,
    }
}

fn done(lease: &Lease) -> Finish {
    Finish {
        range: lease.range,
        fence: lease.fence,
        outcome: FinishOutcome::Done { failed: Vec::new() },
    }
}

fn outcome(lease: &Lease, outcome: FinishOutcome) -> Finish {
    Finish {
        range: lease.range,
        fence: lease.fence,
        outcome,
    }
}

async fn claim(store: &dyn Store, job: &str, owner: &str, now: Millis, n: u32) -> StepReply {
    store
        .step(job, step(owner, now, n, Vec::new()))
        .await
        .expect("claim")
}

async fn finish(store: &dyn Store, job: &str, owner: &str, now: Millis, f: Finish) -> bool {
    let reply = store
        .step(job, step(owner, now, 0, vec![f]))
        .await
        .expect("finish");
    assert_eq!(reply.finished.len(), 1, "one verdict per finish");
    reply.finished[0]
}

/// Opening creates a job once; opening again resumes it; another source is a
/// conflict.
pub async fn open_creates_then_resumes(store: &dyn Store) {
    let spec = span_job("j", 10, 20, 5);
    let info = store.open(&spec).await.expect("open");
    assert!(info.created, "first open creates the job");
    let info = store.open(&spec).await.expect("open again");
    assert!(!info.created, "second open finds it");
    let err = store
        .open(&span_job("j", 10, 30, 5))
        .await
        .expect_err("another source");
    assert_eq!(err.kind(), StoreErrorKind::Conflict, "{err}");
    let err = store
        .open(&loader_job("j", IdKind::Int))
        .await
        .expect_err("another source kind");
    assert_eq!(err.kind(), StoreErrorKind::Conflict, "{err}");
}

/// A span is cut in order at the cursor: numbers from 0, increasing fences, the
/// last range short, then the source is exhausted.
pub async fn span_is_cut_in_order(store: &dyn Store) {
    store.open(&span_job("j", 10, 22, 5)).await.unwrap();
    let reply = claim(store, "j", "a", T0, 2).await;
    let ids: Vec<Ids> = reply.claimed.iter().map(|l| l.ids.clone()).collect();
    assert_eq!(ids, vec![Ids::Span(10, 15), Ids::Span(15, 20)]);
    assert_eq!(reply.claimed[0].range, 0);
    assert_eq!(reply.claimed[1].range, 1);
    assert!(reply.claimed[0].fence < reply.claimed[1].fence);
    for l in &reply.claimed {
        assert_eq!(l.attempt, 1);
        assert_eq!(l.origin, Origin::New);
        assert_eq!(l.expires, T0 + LEASE as i64);
        assert_eq!(l.checkpoint, 0);
    }
    assert_eq!(reply.status, None, "all asked ranges claimed: no status");
    let reply = claim(store, "j", "a", T0, 5).await;
    assert_eq!(reply.claimed.len(), 1);
    assert_eq!(reply.claimed[0].ids, Ids::Span(20, 22));
    let status = reply.status.expect("status when fewer were claimed");
    assert!(status.exhausted);
    assert_eq!(status.open, 3);
    assert_eq!(status.next_ready, Some(T0 + LEASE as i64));
    let p = store.progress("j").await.unwrap();
    assert_eq!((p.total, p.ids_uncut), (Some(12), Some(0)));
    assert_eq!((p.ranges_claimed, p.ids_claimed), (3, 12));
}

/// Done ranges are counted and never handed out again; the job ends with no
/// open range.
pub async fn done_ranges_are_counted_and_gone(store: &dyn Store) {
    store.open(&span_job("j", 0, 10, 5)).await.unwrap();
    let leases = claim(store, "j", "a", T0, 2).await.claimed;
    let reply = store
        .step("j", step("a", T0 + 1, 1, leases.iter().map(done).collect()))
        .await
        .unwrap();
    assert_eq!(reply.finished, vec![true, true]);
    assert!(reply.claimed.is_empty());
    let status = reply.status.unwrap();
    assert!(status.exhausted);
    assert_eq!(status.open, 0);
    assert_eq!(status.next_ready, None);
    let p = store.progress("j").await.unwrap();
    assert_eq!((p.ids_done, p.ranges_done, p.ranges_claimed), (10, 2, 0));
    // Long after, nothing is reclaimed.
    let reply = claim(store, "j", "b", T0 + 10 * LEASE as i64, 1).await;
    assert!(reply.claimed.is_empty());
}

/// A report with a stale fencing token changes nothing.
pub async fn stale_fence_is_rejected(store: &dyn Store) {
    store.open(&span_job("j", 0, 10, 10)).await.unwrap();
    let lease = claim(store, "j", "a", T0, 1).await.claimed.remove(0);
    let mut stale = done(&lease);
    stale.fence += 1000;
    assert!(!finish(store, "j", "a", T0 + 1, stale).await, "wrong fence");
    let ok = store
        .checkpoint(
            "j",
            Checkpoint {
                range: lease.range,
                fence: lease.fence + 1000,
                done: 5,
                now: T0 + 1,
                lease_ms: LEASE,
            },
        )
        .await
        .unwrap();
    assert!(!ok, "stale checkpoint");
    let p = store.progress("j").await.unwrap();
    assert_eq!((p.ids_done, p.ranges_claimed), (0, 1));
    assert!(finish(store, "j", "a", T0 + 2, done(&lease)).await);
    assert!(
        !finish(store, "j", "a", T0 + 3, done(&lease)).await,
        "a range is finished once"
    );
    assert_eq!(store.progress("j").await.unwrap().ids_done, 10);
}

/// An expired lease is reclaimed before new ranges, without rewinding the
/// cursor; the old holder is fenced out.
pub async fn expired_lease_is_reclaimed_first(store: &dyn Store) {
    store.open(&span_job("j", 0, 100, 10)).await.unwrap();
    let a = claim(store, "j", "a", T0, 1).await.claimed.remove(0);
    assert_eq!(a.ids, Ids::Span(0, 10));
    // Before expiry: b gets a new range.
    let b1 = claim(store, "j", "b", T0 + LEASE as i64 - 1, 1)
        .await
        .claimed
        .remove(0);
    assert_eq!(b1.ids, Ids::Span(10, 20));
    // At expiry: b gets a's range back, before any new one.
    let b2 = claim(store, "j", "b", T0 + LEASE as i64, 1)
        .await
        .claimed
        .remove(0);
    assert_eq!(b2.range, a.range);
    assert_eq!(b2.ids, Ids::Span(0, 10));
    assert_eq!(b2.attempt, 2);
    assert!(b2.fence > b1.fence);
    assert_eq!(
        b2.origin,
        Origin::Expired {
            previous_owner: "a".to_owned()
        }
    );
    // The cursor did not rewind: the next new range is [20, 30).
    let b3 = claim(store, "j", "b", T0 + LEASE as i64, 1)
        .await
        .claimed
        .remove(0);
    assert_eq!(b3.ids, Ids::Span(20, 30));
    // a's late completion is rejected; b's accepted.
    assert!(!finish(store, "j", "a", T0 + 1500, done(&a)).await);
    assert!(finish(store, "j", "b", T0 + 1500, done(&b2)).await);
    assert_eq!(store.progress("j").await.unwrap().ids_done, 10);
}

/// A released range is pending at once, for anyone.
pub async fn released_range_is_pending_at_once(store: &dyn Store) {
    store.open(&span_job("j", 0, 100, 10)).await.unwrap();
    let a = claim(store, "j", "a", T0, 1).await.claimed.remove(0);
    assert!(finish(store, "j", "a", T0 + 5, outcome(&a, FinishOutcome::Release)).await);
    let b = claim(store, "j", "b", T0 + 5, 1).await.claimed.remove(0);
    assert_eq!(b.range, a.range);
    assert_eq!(b.origin, Origin::Pending);
    assert_eq!(b.attempt, 2, "the released claim counted as an attempt");
}

/// A token is void once its range is given back (released, or failed with a
/// retry time): a late report with it is rejected and leaves the pending range
/// as it is, to be claimed again whole.
pub async fn a_token_is_void_once_its_range_is_given_back(store: &dyn Store) {
    store.open(&span_job("j", 0, 100, 10)).await.unwrap();
    let a = claim(store, "j", "a", T0, 1).await.claimed.remove(0);
    assert!(finish(store, "j", "a", T0 + 1, outcome(&a, FinishOutcome::Release)).await);
    assert!(
        !finish(store, "j", "a", T0 + 2, done(&a)).await,
        "a report after the release is stale"
    );
    let late_checkpoint = Checkpoint {
        range: a.range,
        fence: a.fence,
        done: 5,
        now: T0 + 2,
        lease_ms: LEASE,
    };
    assert!(!store.checkpoint("j", late_checkpoint).await.unwrap());
    let p = store.progress("j").await.unwrap();
    assert_eq!((p.ids_done, p.ranges_pending, p.ranges_claimed), (0, 1, 0));

    let b = claim(store, "j", "b", T0 + 3, 1).await.claimed.remove(0);
    assert_eq!(
        (b.range, b.checkpoint),
        (a.range, 0),
        "the same range, whole"
    );
    let retry = FinishOutcome::Failed {
        error: "flaky".to_owned(),
        retry_at: Some(T0 + 100),
    };
    assert!(finish(store, "j", "b", T0 + 4, outcome(&b, retry)).await);
    assert!(
        !finish(store, "j", "b", T0 + 5, done(&b)).await,
        "a report after the failed attempt is stale"
    );
    let c = claim(store, "j", "c", T0 + 100, 1).await.claimed.remove(0);
    assert_eq!((c.range, c.attempt), (a.range, 3));
    assert!(finish(store, "j", "c", T0 + 101, done(&c)).await);
    assert_eq!(store.progress("j").await.unwrap().ids_done, 10);
}

/// A failed attempt with a retry time is pending from then on; new ranges are
/// handed out meanwhile.
pub async fn failed_attempt_waits_for_its_retry_time(store: &dyn Store) {
    store.open(&span_job("j", 0, 100, 10)).await.unwrap();
    let a = claim(store, "j", "a", T0, 1).await.claimed.remove(0);
    let failed = FinishOutcome::Failed {
        error: "boom".to_owned(),
        retry_at: Some(T0 + 500),
    };
    assert!(finish(store, "j", "a", T0 + 10, outcome(&a, failed)).await);
    let early = claim(store, "j", "a", T0 + 499, 1).await.claimed.remove(0);
    assert_eq!(early.ids, Ids::Span(10, 20), "not before its retry time");
    let due = claim(store, "j", "a", T0 + 500, 1).await.claimed.remove(0);
    assert_eq!(due.range, a.range);
    assert_eq!(due.attempt, 2);
    assert_eq!(due.origin, Origin::Pending);
    let p = store.progress("j").await.unwrap();
    assert_eq!(
        (p.ranges_failed, p.ids_failed),
        (0, 0),
        "a retried attempt is not a failure"
    );
}

/// A range with no retry left is parked with its error, counted, listed, and
/// put back by `retry_failed` with fresh attempts.
pub async fn parked_range_is_listed_and_retried(store: &dyn Store) {
    store.open(&span_job("j", 0, 20, 10)).await.unwrap();
    let a = claim(store, "j", "a", T0, 1).await.claimed.remove(0);
    let parked = FinishOutcome::Failed {
        error: "bad row".to_owned(),
        retry_at: None,
    };
    assert!(finish(store, "j", "a", T0 + 1, outcome(&a, parked)).await);
    let p = store.progress("j").await.unwrap();
    assert_eq!(
        (p.ranges_failed, p.ids_failed, p.ranges_pending),
        (1, 10, 0)
    );
    let failed = store.failed_ranges("j", 10).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].range, a.range);
    assert_eq!(failed[0].ids, Ids::Span(0, 10));
    assert_eq!(failed[0].error, "bad row");
    assert_eq!(failed[0].attempts, 1);
    // Parked: never claimed again by itself.
    let next = claim(store, "j", "a", T0 + 100_000, 5).await;
    assert_eq!(next.claimed.len(), 1);
    assert_eq!(next.claimed[0].ids, Ids::Span(10, 20));
    assert!(finish(store, "j", "a", T0 + 100_001, done(&next.claimed[0])).await);
    let status = claim(store, "j", "a", T0 + 100_002, 1)
        .await
        .status
        .unwrap();
    assert_eq!(
        (status.exhausted, status.open),
        (true, 0),
        "parked ranges are not open"
    );

    let retried = store.retry_failed("j", T0 + 200_000, 10).await.unwrap();
    assert_eq!((retried.ranges, retried.ids), (1, 0));
    let p = store.progress("j").await.unwrap();
    assert_eq!((p.ranges_failed, p.ids_failed, p.ranges_pending), (0, 0, 1));
    let again = claim(store, "j", "a", T0 + 200_000, 1)
        .await
        .claimed
        .remove(0);
    assert_eq!(again.range, a.range);
    assert_eq!(again.attempt, 1, "retry_failed gives fresh attempts");
    assert!(finish(store, "j", "a", T0 + 200_001, done(&again)).await);
    assert_eq!(store.progress("j").await.unwrap().ids_done, 20);
}

/// Failed ids are recorded with their errors, and `retry_failed` retries only
/// them, in new ranges.
pub async fn failed_ids_are_retried_alone(store: &dyn Store) {
    store.open(&span_job("j", 0, 10, 10)).await.unwrap();
    let a = claim(store, "j", "a", T0, 1).await.claimed.remove(0);
    let partial = FinishOutcome::Done {
        failed: vec![FailedId::new(7, "locked"), FailedId::new(3, "missing")],
    };
    assert!(finish(store, "j", "a", T0 + 1, outcome(&a, partial)).await);
    let p = store.progress("j").await.unwrap();
    assert_eq!((p.ids_done, p.ids_failed, p.ranges_done), (8, 2, 1));
    let ids = store.failed_ids("j", 10).await.unwrap();
    assert_eq!(
        ids,
        vec![FailedId::new(3, "missing"), FailedId::new(7, "locked")],
        "lowest first, with errors"
    );
    let retried = store.retry_failed("j", T0 + 10, 1).await.unwrap();
    assert_eq!((retried.ranges, retried.ids), (0, 2));
    assert!(store.failed_ids("j", 10).await.unwrap().is_empty());
    let reply = claim(store, "j", "b", T0 + 10, 5).await;
    let got: Vec<Ids> = reply.claimed.iter().map(|l| l.ids.clone()).collect();
    assert_eq!(
        got,
        vec![Ids::List(vec![Id::Int(3)]), Ids::List(vec![Id::Int(7)])],
        "chunks of at most 1, in id order"
    );
    for l in &reply.claimed {
        assert!(finish(store, "j", "b", T0 + 11, done(l)).await);
    }
    let p = store.progress("j").await.unwrap();
    assert_eq!((p.ids_done, p.ids_failed), (10, 0));
}

/// A checkpoint survives its holder: the next claim starts after it.
pub async fn checkpoint_survives_the_holder(store: &dyn Store) {
    store.open(&span_job("j", 0, 100, 100)).await.unwrap();
    let a = claim(store, "j", "a", T0, 1).await.claimed.remove(0);
    let ok = store
        .checkpoint(
            "j",
            Checkpoint {
                range: a.range,
                fence: a.fence,
                done: 40,
                now: T0 + 900,
                lease_ms: LEASE,
            },
        )
        .await
        .unwrap();
    assert!(ok);
    // The checkpoint renewed the lease: not reclaimable at T0 + LEASE.
    assert!(claim(store, "j", "b", T0 + LEASE as i64, 1)
        .await
        .claimed
        .is_empty());
    let b = claim(store, "j", "b", T0 + 900 + LEASE as i64, 1)
        .await
        .claimed
        .remove(0);
    assert_eq!(b.range, a.range);
    assert_eq!(b.checkpoint, 40);
    assert_eq!(b.ids.skip(b.checkpoint), Ids::Span(40, 100));
}

/// Renewing extends every lease the owner holds and lists them; it lists none
/// that another owner took over.
pub async fn renew_extends_only_held_leases(store: &dyn Store) {
    store.open(&span_job("j", 0, 100, 10)).await.unwrap();
    let leases = claim(store, "j", "a", T0, 2).await.claimed;
    let held = store.renew("j", "a", T0 + 900, LEASE).await.unwrap();
    let mut held: Vec<_> = held.into_iter().collect();
    held.sort();
    assert_eq!(
        held,
        leases
            .iter()
            .map(|l| (l.range, l.fence))
            .collect::<Vec<_>>()
    );
    // Renewed to T0 + 1900: nothing is reclaimable at T0 + 1500.
    let b = claim(store, "j", "b", T0 + 1500, 1).await.claimed.remove(0);
    assert_eq!(b.origin, Origin::New);
    // Not renewed again: b takes both at T0 + 1900, and a holds none.
    let taken = claim(store, "j", "b", T0 + 1900, 2).await.claimed;
    assert_eq!(taken.len(), 2);
    assert!(taken
        .iter()
        .all(|l| matches!(l.origin, Origin::Expired { .. })));
    assert!(store
        .renew("j", "a", T0 + 1901, LEASE)
        .await
        .unwrap()
        .is_empty());
}

/// Under at-most-once, an expired range is parked, never handed out again.
pub async fn at_most_once_never_reruns_an_expired_range(store: &dyn Store) {
    store.open(&span_job("j", 0, 20, 10)).await.unwrap();
    let mut s = step("a", T0, 1, Vec::new());
    s.at_most_once = true;
    let a = store.step("j", s).await.unwrap().claimed.remove(0);
    let mut s = step("b", T0 + 10 * LEASE as i64, 5, Vec::new());
    s.at_most_once = true;
    let reply = store.step("j", s).await.unwrap();
    assert_eq!(reply.claimed.len(), 1);
    assert_eq!(
        reply.claimed[0].ids,
        Ids::Span(10, 20),
        "only the new range"
    );
    let p = store.progress("j").await.unwrap();
    assert_eq!((p.ranges_failed, p.ids_failed), (1, 10));
    let failed = store.failed_ranges("j", 5).await.unwrap();
    assert_eq!(failed[0].range, a.range);
    assert!(!failed[0].error.is_empty(), "the parked range says why");
}

/// Loaded ranges are appended only at the cursor they were loaded after.
pub async fn append_moves_the_cursor_atomically(store: &dyn Store) {
    let info = store.open(&loader_job("j", IdKind::Int)).await.unwrap();
    assert_eq!(info.cursor, None);
    let append = |after: Option<i64>, ids: Vec<i64>| Append {
        owner: "a".to_owned(),
        now: T0,
        lease_ms: LEASE,
        after: after.map(Id::Int),
        ids: ids.into_iter().map(Id::Int).collect(),
        at_most_once: false,
    };
    let AppendReply::Claimed(first) = store
        .append("j", append(None, vec![2, 4, 8]))
        .await
        .unwrap()
    else {
        panic!("the first append at the start claims");
    };
    assert_eq!(
        first.ids,
        Ids::List(vec![Id::Int(2), Id::Int(4), Id::Int(8)])
    );
    assert_eq!(first.range, 0);
    // A second loader that also read from the start lost the race.
    let moved = store.append("j", append(None, vec![2, 4])).await.unwrap();
    assert_eq!(moved, AppendReply::CursorMoved(Some(Id::Int(8))));
    let AppendReply::Claimed(second) = store.append("j", append(Some(8), vec![9])).await.unwrap()
    else {
        panic!("an append at the cursor claims");
    };
    assert_eq!(second.range, 1);
    assert!(second.fence > first.fence);
    let err = store
        .append("j", append(Some(9), vec![9, 10]))
        .await
        .expect_err("ids not after the cursor");
    assert_eq!(err.kind(), StoreErrorKind::Conflict, "{err}");
    assert_eq!(
        store
            .open(&loader_job("j", IdKind::Int))
            .await
            .unwrap()
            .cursor,
        Some(Id::Int(9))
    );
    // The loader's ranges are reclaimed like any other.
    let status = claim(store, "j", "b", T0, 1).await.status.unwrap();
    assert!(
        !status.exhausted,
        "only the loader knows a loader source is exhausted"
    );
    assert_eq!(status.open, 2);
    let back = claim(store, "j", "b", T0 + LEASE as i64, 2).await.claimed;
    assert_eq!(back.len(), 2);
}

/// String ids keep their order and their text.
pub async fn string_ids_round_trip(store: &dyn Store) {
    store.open(&loader_job("s", IdKind::Str)).await.unwrap();
    let ids: Vec<Id> = ["a-10", "a-9", "b", "é-1", "007"]
        .iter()
        .map(|s| Id::from(*s))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let AppendReply::Claimed(lease) = store
        .append(
            "s",
            Append {
                owner: "a".to_owned(),
                now: T0,
                lease_ms: LEASE,
                after: None,
                ids: ids.clone(),
                at_most_once: false,
            },
        )
        .await
        .unwrap()
    else {
        panic!("claimed");
    };
    assert_eq!(lease.ids, Ids::List(ids.clone()));
    let partial = FinishOutcome::Done {
        failed: vec![FailedId::new("007", "zero-padded")],
    };
    assert!(finish(store, "s", "a", T0 + 1, outcome(&lease, partial)).await);
    assert_eq!(
        store.failed_ids("s", 5).await.unwrap(),
        vec![FailedId::new("007", "zero-padded")],
        "a string id that looks like a number stays a string"
    );
    assert_eq!(
        store
            .open(&loader_job("s", IdKind::Str))
            .await
            .unwrap()
            .cursor,
        ids.last().cloned()
    );
}

/// The rate limit follows the GCRA reference, shared by every caller.
pub async fn rate_limit_is_shared_gcra(store: &dyn Store) {
    store.open(&span_job("j", 0, 10, 10)).await.unwrap();
    let rate = Rate {
        per_second: 100.0,
        burst: 10,
    };
    // The burst is granted, then a second caller must wait 100 ms for 10 more.
    assert_eq!(store.acquire("j", rate, 10, T0).await.unwrap(), 0);
    assert_eq!(store.acquire("j", rate, 10, T0).await.unwrap(), 100);
    assert_eq!(store.acquire("j", rate, 5, T0 + 50).await.unwrap(), 0);
    assert_eq!(store.acquire("j", rate, 10, T0 + 50).await.unwrap(), 100);
    assert_eq!(store.acquire("j", rate, 10, T0 + 150).await.unwrap(), 0);
}

/// Reset forgets everything; jobs of other names are untouched.
pub async fn reset_forgets_only_its_job(store: &dyn Store) {
    store.open(&span_job("x", 0, 10, 5)).await.unwrap();
    store.open(&span_job("y", 0, 10, 5)).await.unwrap();
    let x = claim(store, "x", "a", T0, 1).await.claimed.remove(0);
    let y = claim(store, "y", "a", T0, 1).await.claimed.remove(0);
    assert!(finish(store, "x", "a", T0, done(&x)).await);
    assert!(finish(store, "y", "a", T0, done(&y)).await);
    store.reset("x").await.unwrap();
    let info = store.open(&span_job("x", 0, 20, 5)).await.unwrap();
    assert!(info.created, "a reset job is created anew, with any source");
    assert_eq!(store.progress("x").await.unwrap().ids_done, 0);
    assert_eq!(store.progress("y").await.unwrap().ids_done, 5);
    let next = claim(store, "y", "a", T0, 1).await.claimed.remove(0);
    assert_eq!(next.ids, Ids::Span(5, 10));
}

/// A process that still holds a range from before a reset is fenced out of the
/// job created again: fencing tokens keep growing across resets.
pub async fn a_holder_from_before_a_reset_is_fenced_out(store: &dyn Store) {
    store.open(&span_job("j", 0, 10, 10)).await.unwrap();
    let old = claim(store, "j", "a", T0, 1).await.claimed.remove(0);
    store.reset("j").await.unwrap();
    store.open(&span_job("j", 0, 10, 10)).await.unwrap();
    let new = claim(store, "j", "b", T0, 1).await.claimed.remove(0);
    assert_eq!(new.range, old.range, "the same range number again");
    assert!(new.fence > old.fence, "tokens grow across a reset");
    assert!(
        !finish(store, "j", "a", T0 + 1, done(&old)).await,
        "the old holder is fenced out"
    );
    assert_eq!(store.progress("j").await.unwrap().ids_done, 0);
    assert!(finish(store, "j", "b", T0 + 1, done(&new)).await);
}

/// Progress counts pending, claimed and uncut ids.
pub async fn progress_counts_every_state(store: &dyn Store) {
    store.open(&span_job("j", 0, 100, 10)).await.unwrap();
    let leases = claim(store, "j", "a", T0, 3).await.claimed;
    assert!(finish(store, "j", "a", T0, done(&leases[0])).await);
    assert!(
        finish(
            store,
            "j",
            "a",
            T0,
            outcome(&leases[1], FinishOutcome::Release)
        )
        .await
    );
    let p = store.progress("j").await.unwrap();
    assert_eq!(p.ids_done, 10);
    assert_eq!((p.ranges_pending, p.ids_pending), (1, 10));
    assert_eq!((p.ranges_claimed, p.ids_claimed), (1, 10));
    assert_eq!(p.ids_uncut, Some(70));
    assert_eq!(p.total, Some(100));
}

/// Many concurrent claimers never get the same range twice, and together get
/// every range exactly once.
pub async fn concurrent_claims_are_disjoint(store: Arc<dyn Store>) {
    store.open(&span_job("j", 0, 10_000, 10)).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let owner = format!("w{worker}");
            let mut got = Vec::new();
            let mut finish = Vec::new();
            loop {
                let reply = store
                    .step("j", step(&owner, T0, 3, std::mem::take(&mut finish)))
                    .await
                    .expect("step");
                assert!(reply.finished.iter().all(|ok| *ok), "own ranges finish");
                if reply.claimed.is_empty() {
                    return got;
                }
                for l in reply.claimed {
                    finish.push(done(&l));
                    got.push(l.ids);
                }
            }
        });
    }
    let mut all = Vec::new();
    while let Some(got) = tasks.join_next().await {
        all.extend(got.expect("claimer"));
    }
    assert_eq!(all.len(), 1000, "every range exactly once");
    let mut ids: Vec<Id> = all.iter().flat_map(|r| r.iter()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10_000, "no range handed out twice");
    let p = store.progress("j").await.unwrap();
    assert_eq!((p.ids_done, p.ranges_claimed), (10_000, 0));
}

/// Makes one `#[tokio::test]` per conformance rule for a store: pass a closure
/// returning a future of a fresh, empty store.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@each $make;
            open_creates_then_resumes,
            span_is_cut_in_order,
            done_ranges_are_counted_and_gone,
            stale_fence_is_rejected,
            expired_lease_is_reclaimed_first,
            released_range_is_pending_at_once,
            a_token_is_void_once_its_range_is_given_back,
            failed_attempt_waits_for_its_retry_time,
            parked_range_is_listed_and_retried,
            failed_ids_are_retried_alone,
            checkpoint_survives_the_holder,
            renew_extends_only_held_leases,
            at_most_once_never_reruns_an_expired_range,
            append_moves_the_cursor_atomically,
            string_ids_round_trip,
            rate_limit_is_shared_gcra,
            reset_forgets_only_its_job,
            a_holder_from_before_a_reset_is_fenced_out,
            progress_counts_every_state
        );

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_claims_are_disjoint() {
            let store = ($make)().await;
            let store: ::std::sync::Arc<dyn $crate::batch::Store> = ::std::sync::Arc::new(store);
            $crate::batch::conformance::concurrent_claims_are_disjoint(store).await;
        }
    };
    (@each $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store = ($make)().await;
                $crate::batch::conformance::$name(&store).await;
            }
        )*
    };
}
