//! Several OS processes share one job through the shared Redis server (as
//! separate machines would): one is SIGKILLed mid-range, then one is frozen past
//! its lease, then the only one is SIGKILLed and a new one resumes the job. Every
//! id is processed at least once, none skipped, duplicates only in the faulty
//! process's ranges (or in ranges a process was fenced out of), and its late
//! work is fenced out.
//!
//! This binary is its own harness (`harness = false`): started with
//! `CHILD_FLAG` it is one of the job's processes. Its keys live under a prefix of
//! its own, deleted at the end (also when a check fails).

mod support;

use std::process::Command;
use std::time::Duration;

use workcrew::batch::conformance::multiprocess::{self, Scenario, CHILD_FLAG};
use workcrew::batch::redact_url;
use workcrew_redis::RedisStore;

async fn connect(url: &str, prefix: &str) -> RedisStore {
    RedisStore::builder(url)
        .key_prefix(prefix)
        .connect()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the redis server at {} (REDIS_URL) does not answer: {e}",
                redact_url(url)
            )
        })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if args.get(1).map(String::as_str) == Some(CHILD_FLAG) {
        // args: CHILD_FLAG url prefix, then the harness's own.
        let code = rt.block_on(async {
            let store = connect(&args[2], &args[3]).await;
            multiprocess::child(store, &args[4..]).await
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
    let url = support::url();
    let prefix = format!("workcrew-test:multiprocess:{}", std::process::id());
    let _cleanup = support::KeyPrefix {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    let command = || {
        let mut c = Command::new(std::env::current_exe().expect("own path"));
        c.arg(CHILD_FLAG).arg(&url).arg(&prefix);
        c
    };
    rt.block_on(async {
        let store = connect(&url, &prefix).await;
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
}
