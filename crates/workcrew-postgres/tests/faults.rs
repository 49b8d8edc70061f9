//! The fault tests for the Postgres store (item 14): the store's connections
//! killed mid-job (`pg_terminate_backend`), and a server gone for longer than the job's
//! store retry time. Afterwards every id was processed at least once, none was skipped,
//! and duplicates stay within the ranges in flight at the fault.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use support::{admin, isolated, kill_backends, Mode, Proxy};
use workcrew::batch::{BatchEvent, BatchJob, Store};
use workcrew_postgres::PostgresStore;

const IDS: i64 = 20_000;
const RANGE: u64 = 100;
const WORKERS: usize = 2;

/// How often each id was handed to a handler.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<HashMap<i64, u32>>>);

impl Seen {
    fn add(&self, id: i64) {
        *self.0.lock().unwrap().entry(id).or_default() += 1;
    }

    /// (distinct ids seen, ids seen more than once); panics on an id outside the job.
    fn tally(&self) -> (usize, usize) {
        let seen = self.0.lock().unwrap();
        assert!(
            seen.keys().all(|id| (0..IDS).contains(id)),
            "only the job's ids"
        );
        (seen.len(), seen.values().filter(|n| **n > 1).count())
    }
}

/// The test's job: `IDS` ids in ranges of `RANGE`, `WORKERS` workers, a handler that
/// records every id and takes a few milliseconds per range.
fn job(store: PostgresStore, seen: &Seen, store_retry_for: Duration) -> BatchJob {
    let seen = seen.clone();
    BatchJob::builder(store, "faults")
        .span(0..IDS)
        .range_size(RANGE)
        .workers(WORKERS)
        .lease(Duration::from_secs(2))
        .store_retry_for(store_retry_for)
        .handler(move |range| {
            let seen = seen.clone();
            async move {
                range.iter().for_each(|id| seen.add(id.as_int().unwrap()));
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok::<_, String>(())
            }
        })
        .build()
        .unwrap()
}

/// Counts the job's store retries until its `BeforeStop`.
fn count_retries(job: &BatchJob) -> tokio::task::JoinHandle<usize> {
    let mut events = job.events();
    tokio::spawn(async move {
        let mut retries = 0;
        while let Some(event) = events.next().await {
            match event {
                BatchEvent::Retrying { .. } => retries += 1,
                BatchEvent::BeforeStop { .. } => break,
                _ => {}
            }
        }
        retries
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_mid_job_are_replaced_and_nothing_is_lost() {
    let store = isolated("faults_killed").await;
    let seen = Seen::default();
    let job = job(store.store.clone(), &seen, Duration::from_secs(30));
    let retries = count_retries(&job);
    let running = AtomicBool::new(true);
    let killer = async {
        let admin = admin().await;
        let mut kills = 0;
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(120)).await;
            if !running.load(Ordering::SeqCst) {
                break;
            }
            kills += kill_backends(&admin, store.application_name()).await;
        }
        kills
    };
    let run = async {
        let out = tokio::time::timeout(Duration::from_secs(300), job.run()).await;
        running.store(false, Ordering::SeqCst);
        out
    };
    let (out, kills) = tokio::join!(run, killer);
    let summary = out.expect("the run ends").expect("the job recovers");
    let retries = retries.await.unwrap();
    assert!(summary.complete, "{summary:?}");
    assert!(
        kills >= 3,
        "the store's connection was killed mid-job ({kills} times)"
    );
    let (distinct, twice) = seen.tally();
    let p = store.progress("faults").await.unwrap();
    println!(
        "killed connections: {kills} kills, {retries} retried store calls; ids processed \
         {distinct} of {IDS}, duplicates {twice}, skipped {}",
        IDS as usize - distinct
    );
    assert_eq!(distinct, IDS as usize, "no id skipped");
    assert_eq!(
        p.ids_done, IDS as u64,
        "the store counts every id done once"
    );
    assert_eq!((p.ranges_claimed, p.ranges_pending), (0, 0));
    // A kill can cost at most the ranges in flight at that moment.
    assert!(
        twice <= kills * WORKERS * RANGE as usize,
        "{twice} duplicates for {kills} kills"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_gone_past_the_retry_time_fails_the_run_clearly_and_a_rerun_loses_nothing() {
    let proxy = Proxy::start().await;
    let password = support::test_password();
    let store = support::isolated_with(
        PostgresStore::builder(&support::url_via(proxy.port(), &password))
            .schema(support::unique_name("faults_gone"))
            .call_timeout(Duration::from_secs(2))
            .connect_timeout(Duration::from_secs(2)),
    )
    .await;
    let seen = Seen::default();
    let first = job(store.store.clone(), &seen, Duration::from_secs(2));
    let retries = count_retries(&first);
    let outage = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        proxy.set(Mode::Down);
    };
    let started = tokio::time::Instant::now();
    let (out, ()) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(120), first.run()),
        outage
    );
    let err = out.expect("bounded").expect_err("the store stayed away");
    let took = started.elapsed();
    let text = err.to_string();
    assert!(err.is_store(), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{}", proxy.port())) && text.contains(":***@"),
        "names the store: {text}"
    );
    assert!(!text.contains(&password), "{text}");
    assert!(
        retries.await.unwrap() > 0,
        "transient errors were retried first"
    );
    // Store retry time (2 s) plus one more call's timeouts, with room for a loaded machine.
    assert!(took < Duration::from_secs(60), "failed after {took:?}");
    let (before, _) = seen.tally();
    assert!(before < IDS as usize, "the outage came mid-job");

    // The server is back: a rerun, once the dead run's leases expire, finishes the job.
    proxy.set(Mode::Up);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rerun = job(store.store.clone(), &seen, Duration::from_secs(30));
    let summary = tokio::time::timeout(Duration::from_secs(300), rerun.run())
        .await
        .expect("the rerun ends")
        .expect("the rerun succeeds");
    assert!(summary.complete, "{summary:?}");
    let (distinct, twice) = seen.tally();
    let p = store.progress("faults").await.unwrap();
    println!(
        "server gone: first run failed after {took:?} at {before} ids; after the rerun ids \
         processed {distinct} of {IDS}, duplicates {twice}, skipped {}",
        IDS as usize - distinct
    );
    assert_eq!(distinct, IDS as usize, "no id skipped");
    assert_eq!(p.ids_done, IDS as u64);
    assert!(
        twice <= WORKERS * RANGE as usize,
        "duplicates only in the ranges in flight at the outage: {twice}"
    );
}
