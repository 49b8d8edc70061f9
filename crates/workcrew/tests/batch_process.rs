//! A batch job whose handler is a function in a process pool's workers (a Python
//! worker): ranges travel as `RangeCall`s, failed ids come back, and a worker
//! process that dies gives its range back at once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::StreamExt;
use workcrew::batch::{BatchEvent, BatchJob, Id, SqliteStore};
use workcrew::process::ProcessPool;

mod support;
use support::processes::all_gone;

fn fresh(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("batch-process");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let n = N.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{}-{n}.{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

async fn pool(log: &PathBuf, crash_range: Option<u64>, always: bool) -> ProcessPool {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/batch_worker.py");
    let mut builder = ProcessPool::builder("python3")
        .arg(script)
        .env("BATCH_LOG", log)
        .workers(2);
    if let Some(r) = crash_range {
        builder = builder.env("CRASH_RANGE", r.to_string());
    }
    if always {
        builder = builder.env("CRASH_ALWAYS", "1");
    }
    builder
        .build()
        .await
        .expect("python3 must be installed to run the Python worker")
}

/// How often each id appears in the workers' log.
fn logged(log: &PathBuf) -> BTreeMap<i64, u32> {
    let mut out = BTreeMap::new();
    for id in std::fs::read_to_string(log)
        .unwrap_or_default()
        .split_whitespace()
    {
        *out.entry(id.parse().unwrap()).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_run_in_worker_processes_and_a_dead_worker_gives_its_range_back() {
    let log = fresh("log");
    let pool = pool(&log, Some(7), false).await;
    let job = BatchJob::builder(SqliteStore::open(fresh("db")).unwrap(), "in-workers")
        .span(0..2_000)
        .range_size(100)
        .process_handler(pool.clone(), "process_range")
        .workers(2)
        .lease(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut events = job.events();
    let started = std::time::Instant::now();
    let summary = job.run().await.unwrap();
    // The crashed range went back at once, not after the 60 s lease.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(summary.complete);
    assert_eq!((summary.restarts, summary.ranges_released), (1, 1));
    let failed: Vec<i64> = (0..2_000).filter(|i| i % 97 == 0).collect();
    assert_eq!(summary.ids_failed, failed.len() as u64);
    assert_eq!(summary.ids_done, 2_000 - failed.len() as u64);

    let seen = logged(&log);
    for id in 0..2_000 {
        let want = u32::from(id % 97 != 0);
        assert_eq!(seen.get(&id).copied().unwrap_or(0), want, "id {id}");
    }
    let ids: Vec<Id> = job
        .failed_ids(100)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(ids, failed.into_iter().map(Id::Int).collect::<Vec<_>>());

    let mut exited = None;
    while let Some(event) = events.next().await {
        match event {
            BatchEvent::WorkerExited {
                reason, restarted, ..
            } => exited = Some((reason, restarted)),
            BatchEvent::BeforeStop { .. } => break,
            _ => {}
        }
    }
    let (reason, restarted) = exited.expect("a worker exit was reported");
    assert!(restarted);
    assert!(reason.contains("lost"), "{reason}");
    let pids = pool.worker_pids();
    pool.stop().await;
    assert!(all_gone(&pids).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_that_kills_its_worker_every_time_is_parked_after_its_attempts() {
    let log = fresh("log");
    let pool = pool(&log, Some(3), true).await;
    let job = BatchJob::builder(SqliteStore::open(fresh("db")).unwrap(), "poison")
        .span(0..1_000)
        .range_size(100)
        .process_handler(pool.clone(), "process_range")
        .workers(2)
        .build()
        .unwrap();
    let summary = job.run().await.unwrap();
    assert!(summary.complete);
    assert_eq!(summary.ranges_failed, 1);
    assert_eq!(summary.restarts, 3, "3 attempts, each killed its worker");
    let parked = job.failed_ranges(10).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].range, 3);
    assert!(
        parked[0].error.contains("over the limit"),
        "{}",
        parked[0].error
    );
    let seen = logged(&log);
    assert!((300..400).all(|id| !seen.contains_key(&id)));
    let pids = pool.worker_pids();
    pool.stop().await;
    assert!(all_gone(&pids).await);
}
