//! Several processes share one job through one SQLite file: one is SIGKILLed
//! mid-range, then one is frozen past its lease; then the only process is
//! SIGKILLed and a new one resumes the job. Every id is processed at least
//! once, none skipped, duplicates only in the faulty process's ranges (or in
//! ranges a process was fenced out of), and its late work is fenced out.
//!
//! This binary is its own harness (`harness = false`): started with
//! `CHILD_FLAG` it is one of the job's processes.

use std::process::Command;
use std::time::Duration;

use workcrew::batch::conformance::multiprocess::{self, Scenario, CHILD_FLAG};
use workcrew::batch::SqliteStore;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if args.get(1).map(String::as_str) == Some(CHILD_FLAG) {
        let code = rt.block_on(async {
            let store = SqliteStore::open(&args[2]).expect("child opens the store");
            multiprocess::child(store, &args[3..]).await
        });
        std::process::exit(code);
    }
    // `cargo test` passes its own flags (e.g. a filter); this binary runs both
    // scenarios whatever they are, unless asked only to list.
    if args.iter().any(|a| a == "--list") {
        println!(
            "kill_one_mid_range: test\nfreeze_one_past_its_lease: test\nkill_all_then_rerun: test"
        );
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("batch-mp");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{}.db", std::process::id()));
    let command = || {
        let mut c = Command::new(std::env::current_exe().expect("own path"));
        c.arg(CHILD_FLAG).arg(&path);
        c
    };
    rt.block_on(async {
        let store = SqliteStore::open(&path).expect("open the store");
        let scenario = Scenario {
            lease: Duration::from_millis(1500),
            ..Scenario::default()
        };
        let report =
            multiprocess::kill_one_mid_range(&store, "mp-kill", command, scenario.clone()).await;
        println!("test kill_one_mid_range ... ok: {report}");
        let report =
            multiprocess::freeze_one_past_its_lease(&store, "mp-freeze", command, scenario.clone())
                .await;
        println!("test freeze_one_past_its_lease ... ok: {report}");
        let report = multiprocess::kill_all_then_rerun(&store, "mp-rerun", command, scenario).await;
        println!("test kill_all_then_rerun ... ok: {report}");
    });
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}
