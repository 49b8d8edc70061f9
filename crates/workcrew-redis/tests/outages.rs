//! A Redis server that goes away under a running job: restarted without its data
//! (the run fails clearly within its store retry time; a rerun completes with
//! nothing lost), restarted with its data (the run rides it out), hung (each call
//! costs one timeout, then a transient error), or dropping our connection (the
//! store reconnects by itself).
//!
//! Each test starts its own `redis-server` on a free port, as its child process;
//! the shared server is never touched.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use support::server::RedisServer;
use workcrew::batch::{
    BatchError, BatchEvent, BatchJob, JobSpec, SourceSpec, Step, Store, StoreErrorKind,
};
use workcrew_redis::RedisStore;

const IDS: usize = 20_000;
const PASSWORD: &str = "outage-secret-6c1f";

/// How many times each id was processed (counted when its handler finished).
#[derive(Clone)]
struct Seen(Arc<Vec<AtomicU32>>);

impl Seen {
    fn new() -> Seen {
        Seen(Arc::new((0..IDS).map(|_| AtomicU32::new(0)).collect()))
    }

    fn total(&self) -> u64 {
        self.0
            .iter()
            .map(|n| u64::from(n.load(Ordering::Relaxed)))
            .sum()
    }

    /// (ids never processed, ids processed more than once).
    fn skipped_and_repeated(&self) -> (usize, usize) {
        let counts: Vec<u32> = self.0.iter().map(|n| n.load(Ordering::Relaxed)).collect();
        (
            counts.iter().filter(|n| **n == 0).count(),
            counts.iter().filter(|n| **n > 1).count(),
        )
    }
}

/// The job every test runs: `0..IDS` in ranges of 100, 2 workers, 10 ms per
/// range, counting each id when its range's handler finishes.
fn job(store: RedisStore, seen: &Seen, retry_for: Duration) -> BatchJob {
    let seen = seen.clone();
    BatchJob::builder(store, "outage")
        .span(0..IDS as i64)
        .range_size(100)
        .workers(2)
        .lease(Duration::from_secs(10))
        .store_retry_for(retry_for)
        .handler(move |range| {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                for id in range.iter() {
                    let id = id.as_int().expect("integer ids") as usize;
                    seen.0[id].fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, String>(())
            }
        })
        .build()
        .expect("job")
}

async fn connect(server: &RedisServer) -> RedisStore {
    RedisStore::builder(&server.url())
        .key_prefix("outage")
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect("connect to the test's own server")
}

/// Waits (bounded) until at least `ids` ids were processed.
async fn wait_for_progress(seen: &Seen, ids: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.total() < ids {
        assert!(
            Instant::now() < deadline,
            "the job made no progress: {}",
            seen.total()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every event's text, until `BeforeStop`.
fn collect_events(job: &BatchJob) -> tokio::task::JoinHandle<Vec<String>> {
    let mut events = job.events();
    tokio::spawn(async move {
        let mut texts = Vec::new();
        while let Some(event) = events.next().await {
            let done = matches!(event, BatchEvent::BeforeStop { .. });
            texts.push(format!("{event:?}"));
            if done {
                break;
            }
        }
        texts
    })
}

/// The brief's server: no persistence (`--save "" --appendonly no`). Shut down
/// mid-job, it comes back empty: the run fails with a clear error within its
/// store retry time, and a rerun does the job again from the start, so every id
/// is processed at least once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_loses_the_data_fails_the_run_clearly_and_a_rerun_loses_nothing() {
    let mut server = RedisServer::start(&["--save", "", "--appendonly", "no"], Some(PASSWORD));
    let store = connect(&server).await;
    let seen = Seen::new();
    let retry_for = Duration::from_secs(8);
    let job = job(store.clone(), &seen, retry_for);
    let events = collect_events(&job);
    let run = tokio::spawn({
        let job = job.clone();
        async move { job.run().await }
    });
    wait_for_progress(&seen, 3_000).await;

    let shutdown = Instant::now();
    server.shutdown_nosave();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();

    let result = tokio::time::timeout(retry_for + Duration::from_secs(60), run)
        .await
        .expect("the run ends: no hang")
        .expect("run task");
    let failed_after = shutdown.elapsed();
    let err = result.expect_err("the job's data is gone: the run fails");
    assert!(
        failed_after < retry_for + Duration::from_secs(30),
        "failed within its store retry time: {failed_after:?}"
    );
    assert!(matches!(err, BatchError::Store { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("redis://:***@127.0.0.1:"),
        "names the store: {text}"
    );
    // Back with an empty dataset, the store says what happened.
    assert!(
        text.contains("no job \"outage\"")
            || text.contains("no answer")
            || text.contains("refused"),
        "{text}"
    );
    let events = events.await.expect("events");
    for text in std::iter::once(&err.to_string()).chain(&events) {
        assert!(!text.contains(PASSWORD), "a password leaked: {text}");
    }
    assert!(
        events.iter().any(|e| e.starts_with("Retrying")),
        "store errors were retried while the server was down: {events:?}"
    );

    // A rerun on the same store (it reconnected by itself) walks the job again.
    let summary = tokio::time::timeout(Duration::from_secs(120), job.run())
        .await
        .expect("the rerun ends")
        .expect("the rerun succeeds");
    assert!(summary.complete, "{summary:?}");
    let (skipped, _) = seen.skipped_and_repeated();
    assert_eq!(skipped, 0, "every id processed at least once");
}

/// A server that keeps its data (`--appendonly yes --appendfsync always`) shut
/// down mid-job and started again: the run retries through the outage and
/// completes; nothing is skipped, and only ranges in flight at the outage may run
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_keeps_the_data_is_ridden_out() {
    let mut server = RedisServer::start(
        &[
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ],
        Some(PASSWORD),
    );
    let store = connect(&server).await;
    let seen = Seen::new();
    let job = job(store, &seen, Duration::from_secs(30));
    let events = collect_events(&job);
    let run = tokio::spawn({
        let job = job.clone();
        async move { job.run().await }
    });
    wait_for_progress(&seen, 3_000).await;

    server.shutdown_nosave();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();

    let summary = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the run ends: no hang")
        .expect("run task")
        .expect("the run rides the outage out");
    assert!(summary.complete, "{summary:?}");
    let (skipped, repeated) = seen.skipped_and_repeated();
    assert_eq!(skipped, 0, "every id processed at least once");
    // Two workers each hold one range of 100 ids at a time.
    assert!(
        repeated <= 200,
        "duplicates only in ranges in flight: {repeated}"
    );
    let events = events.await.expect("events");
    assert!(
        events.iter().any(|e| e.starts_with("Retrying")),
        "store errors were retried while the server was down"
    );
    for text in &events {
        assert!(!text.contains(PASSWORD), "a password leaked: {text}");
    }
}

fn span_spec() -> JobSpec {
    JobSpec {
        name: "hung".to_owned(),
        source: SourceSpec::Span {
            start: 0,
            end: 1_000,
            size: 10,
        },
    }
}

fn claim_one(now: i64) -> Step {
    Step {
        owner: "a".to_owned(),
        now,
        lease_ms: 1_000,
        finish: Vec::new(),
        claim: 1,
        at_most_once: false,
    }
}

/// A hung server (SIGSTOP) costs each call its timeout, then a transient error;
/// once it runs again (SIGCONT) the same store serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_costs_one_timeout_then_a_transient_error() {
    let server = RedisServer::start(&["--save", "", "--appendonly", "no"], None);
    let store = RedisStore::builder(&server.url())
        .timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    store.open(&span_spec()).await.unwrap();
    let now = store.now().await.unwrap();

    server.signal("STOP");
    let started = Instant::now();
    let err = store.step("hung", claim_one(now)).await.unwrap_err();
    let waited = started.elapsed();
    server.signal("CONT");
    assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err}");
    assert!(err.is_transient());
    assert!(waited < Duration::from_secs(10), "bounded: {waited:?}");

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.step("hung", claim_one(now)).await {
            Ok(reply) => {
                assert_eq!(reply.claimed.len(), 1);
                break;
            }
            Err(e) => {
                assert!(e.is_transient(), "{e}");
                assert!(Instant::now() < deadline, "never served again: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The server drops every client connection (`CLIENT KILL`): the next call may
/// see it as a transient error, and the one after runs on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_replaced_on_the_next_call() {
    let server = RedisServer::start(&["--save", "", "--appendonly", "no"], None);
    let store = RedisStore::connect(&server.url()).await.unwrap();
    store.open(&span_spec()).await.unwrap();

    let client = redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_connection().unwrap();
    let killed: u64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
        .query(&mut admin)
        .unwrap();
    assert!(killed >= 1, "the store's connection was dropped");

    let mut errors = Vec::new();
    let mut served = false;
    for _ in 0..3 {
        match store.progress("hung").await {
            Ok(p) => {
                assert_eq!(p.total, Some(1_000));
                served = true;
                break;
            }
            Err(e) => {
                assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{e}");
                errors.push(e.to_string());
            }
        }
    }
    assert!(served, "reconnected by itself: {errors:?}");
    assert!(errors.len() <= 1, "one failed call at most: {errors:?}");
}

/// A server over its `maxmemory` refuses a whole step (the scripts declare flags,
/// so Redis checks memory before running one, not at each write): nothing of it
/// is applied, the error is transient, and the same step succeeds once memory is
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_out_of_memory_refuses_a_step_whole() {
    let server = RedisServer::start(&["--save", "", "--appendonly", "no"], None);
    let store = RedisStore::connect(&server.url()).await.unwrap();
    store.open(&span_spec()).await.unwrap();
    let now = store.now().await.unwrap();
    let lease = store
        .step("hung", claim_one(now))
        .await
        .unwrap()
        .claimed
        .remove(0);
    let before = store.progress("hung").await.unwrap();

    let client = redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_connection().unwrap();
    let _: i64 = redis::cmd("EVAL")
        .arg("for i = 1, 50000 do redis.call('SET', 'filler:' .. i, string.rep('x', 100)) end return 1")
        .arg(0)
        .query(&mut admin)
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory", "1mb"])
        .query(&mut admin)
        .unwrap();

    let finish_and_claim = Step {
        finish: vec![workcrew::batch::Finish {
            range: lease.range,
            fence: lease.fence,
            outcome: workcrew::batch::FinishOutcome::Done { failed: Vec::new() },
        }],
        ..claim_one(now + 1)
    };
    let err = store
        .step("hung", finish_and_claim.clone())
        .await
        .expect_err("over maxmemory");
    assert!(err.to_string().contains("OOM"), "{err}");
    assert!(err.is_transient(), "{err}");

    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory", "0"])
        .query(&mut admin)
        .unwrap();
    assert_eq!(
        store.progress("hung").await.unwrap(),
        before,
        "nothing of the refused step was applied"
    );
    let reply = store.step("hung", finish_and_claim).await.unwrap();
    assert_eq!(reply.finished, vec![true]);
    assert_eq!(reply.claimed.len(), 1);
}
