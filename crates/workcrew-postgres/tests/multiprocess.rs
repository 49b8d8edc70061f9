//! Several OS processes share one job through one Postgres schema, as separate machines
//! would (item 14): one is SIGKILLed mid-range; one is frozen past its lease (its late
//! work is fenced out); then the only process is SIGKILLed and a new one resumes the job.
//! Every id is processed at least once, none skipped, duplicates only in the faulty
//! process's ranges, and the store counts every id done once.
//!
//! This binary is its own harness (`harness = false`): started with `CHILD_FLAG` it is
//! one of the job's processes. Children find the server in `DATABASE_URL` (inherited, so
//! no password shows on a command line) and get the schema as an argument.

mod support;

use std::process::Command;
use std::time::Duration;

use workcrew::batch::conformance::multiprocess::{self, Scenario, CHILD_FLAG};
use workcrew_postgres::PostgresStore;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if args.get(1).map(String::as_str) == Some(CHILD_FLAG) {
        let schema = args[2].clone();
        let code = rt.block_on(async {
            let store = PostgresStore::builder(&support::database_url())
                .schema(schema.as_str())
                .application_name(schema.as_str())
                .connect()
                .await
                .expect("child connects to the store");
            multiprocess::child(store, &args[3..]).await
        });
        std::process::exit(code);
    }
    // `cargo test` passes its own flags (e.g. a filter); this binary runs every scenario
    // whatever they are, unless asked only to list.
    if args.iter().any(|a| a == "--list") {
        println!(
            "kill_one_mid_range: test\nfreeze_one_past_its_lease: test\nkill_all_then_rerun: test"
        );
        return;
    }
    rt.block_on(async {
        let store = support::isolated("multiprocess").await;
        let schema = store.schema().to_owned();
        let command = || {
            let mut c = Command::new(std::env::current_exe().expect("own path"));
            c.arg(CHILD_FLAG).arg(&schema);
            c
        };
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
    println!("\ntest result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
}
