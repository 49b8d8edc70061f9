//! The store conformance suite against the SQLite store, plus what only SQLite
//! has: a file shared by processes, a lock held by another connection, and
//! data that survives reopening.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use workcrew::batch::{JobSpec, SourceSpec, SqliteStore, Step, Store, StoreErrorKind};

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
async fn a_lock_held_elsewhere_is_a_bounded_wait_then_a_busy_error() {
    let path = fresh_path();
    let store = SqliteStore::builder(&path)
        .busy_timeout(Duration::from_millis(200))
        .open()
        .unwrap();
    store.open(&span()).await.unwrap();
    // Another connection (as another process would) takes the write lock and keeps it.
    let holder = rusqlite_like_lock(&path);
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
    drop(holder);
    assert_eq!(
        store.step("j", claim_one(0)).await.unwrap().claimed.len(),
        1
    );
}

/// Holds `path`'s write lock through a second store connection until dropped.
fn rusqlite_like_lock(path: &std::path::Path) -> std::sync::mpsc::Sender<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let conn = sqlite_connection(&path);
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        ready_tx.send(()).unwrap();
        let _ = rx.recv();
        conn.execute_batch("ROLLBACK").unwrap();
    });
    ready_rx.recv().unwrap();
    tx
}

fn sqlite_connection(path: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
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
