//! Walk 1,000,000 ids in durable ranges on the embedded SQLite store, with a
//! progress line. Kill it (Ctrl-C, or `kill -9`) and run it again: it resumes
//! where it stopped, and no id is skipped.
//!
//! ```text
//! cargo run --release --example batch              # run (or resume) the job
//! cargo run --release --example batch -- --reset   # start over
//! ```
//!
//! Each id gets a small CPU-bound "digest" (standing in for real work: re-encoding
//! a row, re-indexing a document); every 50,000th id fails and is recorded as a
//! failed id, to show partial failure. The job lives in
//! `workcrew-batch-example.db` in the working directory. After a `kill -9`, the
//! ranges the killed run held go to the rerun once their 5 s lease runs out.

use std::io::Write;
use std::time::{Duration, Instant};

use workcrew::batch::{BatchJob, Processed, SqliteStore};

const IDS: i64 = 1_000_000;
const DB: &str = "workcrew-batch-example.db";

/// Stands in for the real work on one id.
fn digest(id: i64) -> u64 {
    let mut x = id as u64;
    for _ in 0..1_500 {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
    }
    x
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = SqliteStore::open(DB)?;
    let job = BatchJob::builder(store, "example")
        .span(0..IDS)
        .range_size(1_000)
        .workers(4)
        // A killed run's ranges go to the next run when their lease runs out: keep
        // it short here so a rerun right after `kill -9` does not wait long.
        .lease(Duration::from_secs(5))
        .handler(|range| async move {
            let mut out = Processed::new();
            for id in range.iter() {
                let id = id.as_int().expect("a span has integer ids");
                if id % 50_000 == 49_999 {
                    out.fail(id, "digest mismatch (simulated)");
                } else {
                    std::hint::black_box(digest(id));
                }
            }
            Ok::<_, std::convert::Infallible>(out)
        })
        .build()?;

    if std::env::args().any(|a| a == "--reset") {
        job.reset().await?;
        println!("job reset: the next run starts over");
        return Ok(());
    }
    if let Ok(p) = job.progress().await {
        if p.is_finished() {
            println!(
                "the job is complete ({} ids done, {} failed); run with --reset to start over",
                p.ids_done, p.ids_failed
            );
            return Ok(());
        }
        println!(
            "resuming: {} of {IDS} ids already done, {} in ranges left by a stopped run",
            p.ids_done, p.ids_in_flight
        );
    }

    // Ctrl-C stops gracefully: running ranges finish, the rest waits for the next run.
    let stopper = job.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nstopping: finishing the ranges in flight…");
            stopper.stop();
        }
    });
    let progress = {
        let job = job.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if let Ok(p) = job.progress().await {
                    let total = p.total.unwrap_or(0).max(1);
                    let pct = 100.0 * (p.ids_done + p.ids_failed) as f64 / total as f64;
                    let rate = p.rate.map_or("-".into(), |r| format!("{r:.0} ids/s"));
                    let eta = p
                        .eta
                        .map_or("-".into(), |e| format!("{:.1} s", e.as_secs_f64()));
                    eprint!(
                        "\r{:>9} / {total} done ({pct:5.1}%), {} failed, {} in flight, {rate}, eta {eta}   ",
                        p.ids_done + p.ids_failed,
                        p.ids_failed,
                        p.ids_in_flight
                    );
                    let _ = std::io::stderr().flush();
                }
            }
        })
    };
    let started = Instant::now();
    let summary = job.run().await?;
    progress.abort();
    eprintln!();
    println!(
        "this run: {} ids in {} ranges in {:.2} s ({:.0} ids/s), {} failed ids",
        summary.ids_done + summary.ids_failed,
        summary.ranges_done,
        started.elapsed().as_secs_f64(),
        (summary.ids_done + summary.ids_failed) as f64 / started.elapsed().as_secs_f64(),
        summary.ids_failed
    );
    if summary.complete {
        let failed = job.failed_ids(5).await?;
        println!("job complete. first failed ids (retry them with BatchJob::retry_failed):");
        for f in failed {
            println!("  {}: {}", f.id, f.error);
        }
    } else {
        println!("stopped before the end: run again to resume");
    }
    Ok(())
}
