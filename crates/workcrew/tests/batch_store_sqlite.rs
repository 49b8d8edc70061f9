//! The store conformance suite against the SQLite store, plus what only SQLite
//! has: a file locked by another process, and data that survives reopening.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use workcrew::batch::{BatchJob, JobSpec, SourceSpec, SqliteStore, Step, Store, StoreErrorKind};

/// A fresh database file for one test, under Cargo's per-target temp dir.
fn fresh_path() -> std::path::PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("batch-sqlite");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let n = N.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{}-{n}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

workcrew::store_conformance_tests!(|| async { SqliteStore::open(fresh_path()).expect("open") });

fn span() -> JobSpec {
    JobSpec {
        name: "j".to_owned(),
        source: SourceSpec::Span {
            start: 0,
            end: 100,
            size: 10,
        },
    }
}

fn claim_one(now: i64) -> Step {
    Step {
        owner: "a".to_owned(),
        now,
        lease_ms: 1000,
        finish: Vec::new(),
        claim: 1,
        at_most_once: false,
    }
}

#[tokio::test]
async fn state_survives_reopening_the_file() {
    let path = fresh_path();
    {
        let store = SqliteStore::open(&path).unwrap();
        store.open(&span()).await.unwrap();
        let lease = store
            .step("j", claim_one(0))
            .await
            .unwrap()
            .claimed
            .remove(0);
        assert_eq!(lease.range, 0);
    }
    let store = SqliteStore::open(&path).unwrap();
    let info = store.open(&span()).await.unwrap();
    assert!(!info.created);
    let p = store.progress("j").await.unwrap();
    assert_eq!((p.ranges_claimed, p.ids_uncut), (1, Some(90)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_locked_by_another_process_is_a_bounded_wait_then_a_clear_error() {
    let path = fresh_path();
    let store = SqliteStore::builder(&path)
        .busy_timeout(Duration::from_millis(200))
        .open()
        .unwrap();
    store.open(&span()).await.unwrap();
    // Another process takes the file's write lock and keeps it.
    let mut holder = LockHolder::start(&path);
    let started = std::time::Instant::now();
    let err = store.step("j", claim_one(0)).await.unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.kind(), StoreErrorKind::Busy, "{err}");
    assert!(err.is_transient());
    assert!(err.to_string().contains("locked"), "{err}");
    assert!(
        waited >= Duration::from_millis(150),
        "waited only {waited:?}"
    );
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");

    // A job on it retries for its store retry time, then fails naming the file.
    let job = BatchJob::builder(store.clone(), "j")
        .span(0..100)
        .range_size(10)
        .store_retry_for(Duration::from_secs(2))
        .handler(|_range| async { Ok::<_, String>(()) })
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let err = job.run().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()) && text.contains("locked"),
        "{text}"
    );

    // Once the other process lets go, the same job runs to the end.
    holder.release();
    let summary = job.run().await.unwrap();
    assert!(summary.complete);
}

/// A Python process (its standard `sqlite3` module) holding a file's write lock.
struct LockHolder(std::process::Child);

impl LockHolder {
    fn start(path: &std::path::Path) -> Self {
        use std::io::{BufRead, BufReader};
        let script = "import sqlite3, sys\n\
            c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
            c.execute('BEGIN IMMEDIATE')\n\
            print('locked', flush=True)\n\
            sys.stdin.read()\n";
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 must be installed for this test");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked", "the other process took the lock");
        LockHolder(child)
    }

    /// Lets the lock go (end of input ends the script) and reaps the process.
    fn release(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_bad_table_prefix_is_refused() {
    let err = SqliteStore::builder(fresh_path())
        .table_prefix("x; DROP TABLE y")
        .open()
        .unwrap_err();
    assert!(err.to_string().contains("table prefix"), "{err}");
}

#[test]
fn a_file_that_is_not_a_database_is_a_clear_error() {
    let path = fresh_path();
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}
