//! What only the Redis store has to get right, beyond the conformance suite: ids
//! exact over all of `i64` (Lua numbers are doubles), fencing across a reset,
//! unreadable keys, odd leases, and keys cleaned up.

mod support;

use std::time::Duration;

use workcrew::batch::{
    Append, AppendReply, FailedId, Finish, FinishOutcome, Id, IdKind, Ids, JobSpec, SourceSpec,
    Step, Store, StoreErrorKind,
};

const T0: i64 = 1_700_000_000_000;

fn span(name: &str, start: i64, end: i64, size: u64) -> JobSpec {
    JobSpec {
        name: name.to_owned(),
        source: SourceSpec::Span { start, end, size },
    }
}

fn step(owner: &str, now: i64, lease_ms: u64, claim: u32, finish: Vec<Finish>) -> Step {
    Step {
        owner: owner.to_owned(),
        now,
        lease_ms,
        finish,
        claim,
        at_most_once: false,
    }
}

fn done(range: u64, fence: u64, failed: Vec<FailedId>) -> Finish {
    Finish {
        range,
        fence,
        outcome: FinishOutcome::Done { failed },
    }
}

#[tokio::test]
async fn a_span_at_the_top_of_i64_is_cut_exactly() {
    let store = support::store().await;
    let start = i64::MAX - 250;
    store
        .open(&span("top", start, i64::MAX, 100))
        .await
        .unwrap();
    let reply = store
        .step("top", step("a", T0, 1000, 5, vec![]))
        .await
        .unwrap();
    let ids: Vec<Ids> = reply.claimed.iter().map(|l| l.ids.clone()).collect();
    assert_eq!(
        ids,
        vec![
            Ids::Span(start, start + 100),
            Ids::Span(start + 100, start + 200),
            Ids::Span(start + 200, i64::MAX),
        ]
    );
    let p = store.progress("top").await.unwrap();
    assert_eq!(
        (p.total, p.ids_uncut, p.ids_claimed),
        (Some(250), Some(0), 250)
    );
    let info = store
        .open(&span("top", start, i64::MAX, 100))
        .await
        .unwrap();
    assert_eq!(info.cursor, Some(Id::Int(i64::MAX)));
}

#[tokio::test]
async fn integer_ids_beyond_two_to_the_53_keep_every_bit_and_their_order() {
    let store = support::store().await;
    let loader = JobSpec {
        name: "big".to_owned(),
        source: SourceSpec::Loader { kind: IdKind::Int },
    };
    store.open(&loader).await.unwrap();
    // Doubles cannot tell 2^53 + 1 from 2^53; Redis must not be asked to.
    let big = 1i64 << 53;
    let ids: Vec<Id> = [i64::MIN, -big - 1, -1, 0, big, big + 1, big + 2, i64::MAX]
        .into_iter()
        .map(Id::Int)
        .collect();
    let AppendReply::Claimed(lease) = store
        .append(
            "big",
            Append {
                owner: "a".to_owned(),
                now: T0,
                lease_ms: 1000,
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
    // The failed ids come back lowest first: numerically, negatives first.
    let failed: Vec<FailedId> = ids
        .iter()
        .rev()
        .map(|id| FailedId::new(id.clone(), format!("failed {id}")))
        .collect();
    let reply = store
        .step(
            "big",
            step(
                "a",
                T0 + 1,
                1000,
                0,
                vec![done(lease.range, lease.fence, failed)],
            ),
        )
        .await
        .unwrap();
    assert_eq!(reply.finished, vec![true]);
    let listed = store.failed_ids("big", 100).await.unwrap();
    let expected: Vec<FailedId> = ids
        .iter()
        .map(|id| FailedId::new(id.clone(), format!("failed {id}")))
        .collect();
    assert_eq!(listed, expected);
    assert_eq!(
        store.open(&loader).await.unwrap().cursor,
        Some(Id::Int(i64::MAX))
    );
    // Retried in chunks of 3, in id order, every bit intact.
    store.retry_failed("big", T0 + 2, 3).await.unwrap();
    let reply = store
        .step("big", step("b", T0 + 2, 1000, 10, vec![]))
        .await
        .unwrap();
    let got: Vec<Id> = reply.claimed.iter().flat_map(|l| l.ids.iter()).collect();
    assert_eq!(got, ids);
}

#[tokio::test]
async fn a_holder_from_before_a_reset_is_fenced_out() {
    let store = support::store().await;
    store.open(&span("r", 0, 100, 10)).await.unwrap();
    let old = store
        .step("r", step("a", T0, 1000, 1, vec![]))
        .await
        .unwrap()
        .claimed
        .remove(0);
    store.reset("r").await.unwrap();
    store.open(&span("r", 0, 100, 10)).await.unwrap();
    let new = store
        .step("r", step("b", T0, 1000, 1, vec![]))
        .await
        .unwrap()
        .claimed
        .remove(0);
    assert_eq!(new.range, old.range, "the same range again");
    assert!(new.fence > old.fence, "{} > {}", new.fence, old.fence);
    let reply = store
        .step(
            "r",
            step(
                "a",
                T0 + 1,
                1000,
                0,
                vec![done(old.range, old.fence, vec![])],
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        reply.finished,
        vec![false],
        "the old holder's report is rejected"
    );
    assert_eq!(store.progress("r").await.unwrap().ids_done, 0);
}

/// Fencing tokens seeded from the clock alone (ms x 1024) would repeat when a job is made
/// again within the millisecond of its reset, or after it claimed over 1024 ranges per
/// millisecond: the reset keeps the job's last token and the new job starts above it.
#[tokio::test]
async fn a_job_made_again_at_once_hands_out_tokens_above_every_old_one() {
    let store = support::store().await;
    store.open(&span("f", 0, 3000, 1)).await.unwrap();
    let mut highest = 0;
    let mut claimed = 0;
    loop {
        let reply = store
            .step("f", step("a", T0, 60_000, 1000, vec![]))
            .await
            .unwrap();
        if reply.claimed.is_empty() {
            break;
        }
        claimed += reply.claimed.len();
        highest = reply
            .claimed
            .iter()
            .map(|l| l.fence)
            .max()
            .unwrap()
            .max(highest);
    }
    assert_eq!(claimed, 3000);
    for _ in 0..3 {
        store.reset("f").await.unwrap();
        store.open(&span("f", 0, 3000, 1)).await.unwrap();
        let lease = store
            .step("f", step("b", T0, 60_000, 1, vec![]))
            .await
            .unwrap()
            .claimed
            .remove(0);
        assert!(lease.fence > highest, "{} > {highest}", lease.fence);
        highest = lease.fence;
    }
}

#[tokio::test]
async fn a_lease_of_zero_never_hands_a_range_out_twice_in_one_step() {
    let store = support::store().await;
    store.open(&span("z", 0, 100, 10)).await.unwrap();
    // Two ranges claimed with a lease of 0 are expired at once.
    let first = store.step("z", step("a", T0, 0, 2, vec![])).await.unwrap();
    assert_eq!(first.claimed.len(), 2);
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        store.step("z", step("b", T0, 0, 5, vec![])),
    )
    .await
    .expect("the step ends")
    .unwrap();
    let mut ranges: Vec<u64> = reply.claimed.iter().map(|l| l.range).collect();
    assert_eq!(ranges.len(), 5);
    ranges.sort();
    ranges.dedup();
    assert_eq!(ranges.len(), 5, "no range twice: {:?}", reply.claimed);
}

#[tokio::test]
async fn appending_to_a_span_job_is_a_conflict() {
    let store = support::store().await;
    store.open(&span("s", 0, 10, 5)).await.unwrap();
    let err = store
        .append(
            "s",
            Append {
                owner: "a".to_owned(),
                now: T0,
                lease_ms: 1000,
                after: None,
                ids: vec![Id::Int(1)],
                at_most_once: false,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Conflict, "{err}");
}

#[tokio::test]
async fn an_unknown_job_is_a_conflict_naming_it_and_lists_no_failures() {
    let store = support::store().await;
    let err = store
        .step("ghost", step("a", T0, 1000, 1, vec![]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("no job \"ghost\""), "{err}");
    let err = store.renew("ghost", "a", T0, 1000).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Conflict, "{err}");
    // Listing failures is a question, not an operation on the job: nothing to list
    // (as SQLite answers).
    assert!(store.failed_ids("ghost", 10).await.unwrap().is_empty());
    assert!(store.failed_ranges("ghost", 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn unreadable_keys_are_corrupt() {
    let store = support::store().await;
    store.open(&span("c", 0, 100, 10)).await.unwrap();
    let lease = store
        .step("c", step("a", T0, 1000, 1, vec![]))
        .await
        .unwrap()
        .claimed
        .remove(0);
    let client = redis::Client::open(store.guard.url.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    // A range record someone overwrote.
    let ranges = format!("{{{}:c}}:ranges", store.guard.prefix);
    let _: () = redis::cmd("HSET")
        .arg(&ranges)
        .arg(format!("{:016}", lease.range))
        .arg("\u{1}not msgpack")
        .query(&mut conn)
        .unwrap();
    let err = store
        .step(
            "c",
            step(
                "a",
                T0,
                1000,
                0,
                vec![done(lease.range, lease.fence, vec![])],
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Corrupt, "{err}");
    // A job record someone overwrote.
    let job = format!("{{{}:c}}:job", store.guard.prefix);
    let _: () = redis::cmd("SET")
        .arg(&job)
        .arg("\u{1}not msgpack")
        .query(&mut conn)
        .unwrap();
    let err = store.progress("c").await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Corrupt, "{err}");
    // A job key of another type.
    let _: () = redis::cmd("DEL").arg(&job).query(&mut conn).unwrap();
    let _: () = redis::cmd("LPUSH")
        .arg(&job)
        .arg("x")
        .query(&mut conn)
        .unwrap();
    let err = store.progress("c").await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Corrupt, "{err}");
    // A reset still clears it, and the job starts afresh.
    store.reset("c").await.unwrap();
    store.open(&span("c", 0, 100, 10)).await.unwrap();
    assert_eq!(store.progress("c").await.unwrap().ids_done, 0);
}

#[tokio::test]
async fn a_test_store_leaves_no_key_behind() {
    let store = support::store().await;
    let (url, prefix) = (store.guard.url.clone(), store.guard.prefix.clone());
    store.open(&span("k", 0, 100, 10)).await.unwrap();
    let lease = store
        .step("k", step("a", T0, 1000, 2, vec![]))
        .await
        .unwrap()
        .claimed
        .remove(0);
    store
        .step(
            "k",
            step(
                "a",
                T0,
                1000,
                0,
                vec![done(lease.range, lease.fence, vec![FailedId::new(3, "x")])],
            ),
        )
        .await
        .unwrap();
    assert!(support::count_keys(&url, &prefix) >= 4);
    store.reset("k").await.unwrap();
    assert_eq!(
        support::count_keys(&url, &prefix),
        1,
        "reset deletes every key but the job's fence floor"
    );
    store.open(&span("k", 0, 100, 10)).await.unwrap();
    drop(store);
    assert_eq!(
        support::count_keys(&url, &prefix),
        0,
        "the test store cleans up"
    );
}
