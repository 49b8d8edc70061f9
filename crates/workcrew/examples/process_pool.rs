//! A process pool whose workers are this same program, started in worker mode.
//!
//! ```text
//! cargo run --release --example process_pool
//! ```
//!
//! The parent builds a pool of 2 to 4 workers, calls a function, uses a typed handle, maps a
//! function over 100,000 items (sent in chunks) and prints the pool's stats. Each worker is this
//! binary re-executed with `WORKCREW_PROTOCOL` set by the pool: `main` sees it and serves.

use std::time::Duration;

use workcrew::process::{CallOptions, ProcessPool};
use workcrew::worker::Worker;

/// The worker side: named functions, sync ones on blocking threads, async ones on the runtime.
fn serve() {
    let served = Worker::builder()
        .function("square", |x: u64| Ok::<_, String>(x * x))
        .function("slow_square", |x: u64| {
            std::thread::sleep(Duration::from_millis(200));
            Ok::<_, String>(x * x)
        })
        .async_function("greet", |name: String| async move {
            Ok::<_, String>(format!("hello, {name}, from worker {}", std::process::id()))
        })
        .concurrency(16)
        .build()
        .run();
    if let Err(e) = served {
        eprintln!("worker stopped: {e}");
        std::process::exit(1);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The pool sets this variable in every worker it starts (docs/protocol.md, section 1).
    // A worker runs its own single-threaded runtime (`Worker::run`), so decide before
    // starting the parent's.
    if std::env::var_os("WORKCREW_PROTOCOL").is_some() {
        serve();
        return Ok(());
    }
    tokio::runtime::Runtime::new()?.block_on(parent())
}

async fn parent() -> Result<(), Box<dyn std::error::Error>> {
    let pool = ProcessPool::builder(std::env::current_exe()?)
        .min(2)
        .max(4)
        .idle_timeout(Duration::from_secs(5))
        .call_timeout(Duration::from_secs(10))
        .build()
        .await?;

    let greeting: String = pool.call("greet", "crew").await?;
    println!("{greeting}");

    let square = pool.function::<u64, u64>("square");
    println!("7 squared is {}", square.call(&7).await?);

    let squares: Vec<u64> = pool.map("square", 0..100_000u64).await?;
    println!(
        "mapped {} items in order; the last is {}",
        squares.len(),
        squares[squares.len() - 1]
    );

    // A call that outlives its own timeout is cancelled; the pool goes on.
    let late = pool
        .call_with::<_, u64>(
            "slow_square",
            &3,
            &CallOptions::new().timeout(Duration::from_millis(50)),
        )
        .await;
    println!("a call with a 50 ms timeout: {late:?}");

    let stats = pool.stats();
    println!(
        "workers {}, completed {}, failed {}, call p50 {:?}",
        stats.workers, stats.completed, stats.failed, stats.latency.p50
    );
    pool.stop().await;
    Ok(())
}
