//! CLI figures, each baseline measured in the same run:
//!
//! ```text
//! crates/workcrew-cli/benches/cli.sh        # installs GNU parallel if missing, then:
//! cargo bench -p workcrew-cli --bench cli
//! ```
//!
//! - `exec_jobs_per_s`: 10,000 `true` jobs, `workcrew run --exec --lines -j2` with its journal
//!   (SQLite, in a temp dir) and its records to `/dev/null`; against `xargs -P2 -n1 true` and
//!   GNU `parallel -j2 true` on the same input (`xargs_jobs_per_s`, `parallel_jobs_per_s`;
//!   `ratio exec/xargs`, `ratio exec/parallel`). Median of 3 runs each, a fresh journal each
//!   time. Without `parallel` on `PATH` its figure is a `skip` line.
//! - `worker_jobs_per_s`: 1,000,000 trivial jobs (`echo` of a number) through 2 persistent
//!   workers (`workcrew-cli-test-worker`, the Rust SDK) with the journal on, records to
//!   `/dev/null`. Median of 3.
//!
//! Wall time of the whole command, start-up and journal included.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WORKCREW: &str = env!("CARGO_BIN_EXE_workcrew");
const TEST_WORKER: &str = env!("CARGO_BIN_EXE_workcrew-cli-test-worker");

/// Runs `command` to its end (a bench run; no deadline beyond the command's own end) and
/// returns its wall time; panics if it fails.
fn time(mut command: Command, what: &str) -> Duration {
    let start = Instant::now();
    let status = command
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let took = start.elapsed();
    assert!(status.success(), "{what}: {status}");
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

fn stdin_from(path: &Path) -> Stdio {
    Stdio::from(std::fs::File::open(path).expect("the input"))
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let dir = tempfile::tempdir().expect("a temp dir");
    let rounds = 3;

    // --exec: 10,000 `true`.
    let n_exec = 10_000u32;
    let input = dir.path().join("true.txt");
    let text: String = (0..n_exec).map(|i| format!("{i}\n")).collect();
    std::fs::write(&input, text).expect("write the input");
    let per_s = |d: Duration, n: u32| f64::from(n) / d.as_secs_f64();

    let workcrew_exec = median(
        (0..rounds)
            .map(|round| {
                let journal = dir.path().join(format!("exec-{round}.db"));
                let mut c = Command::new(WORKCREW);
                c.args([
                    "run",
                    "--exec",
                    "--lines",
                    "-j2",
                    "-q",
                    "-o",
                    "/dev/null",
                    "--journal",
                ])
                .arg(&journal)
                .arg(&input)
                .args(["--", "true"]);
                time(c, "workcrew --exec")
            })
            .collect(),
    );
    let xargs = median(
        (0..rounds)
            .map(|_| {
                let mut c = Command::new("xargs");
                c.args(["-P2", "-n1", "true"]).stdin(stdin_from(&input));
                time(c, "xargs")
            })
            .collect(),
    );
    let exec_rate = per_s(workcrew_exec, n_exec);
    let xargs_rate = per_s(xargs, n_exec);
    println!("figure exec_jobs_per_s {exec_rate:.0} jobs/s");
    println!("figure xargs_jobs_per_s {xargs_rate:.0} jobs/s");
    println!("ratio exec/xargs {:.2}", exec_rate / xargs_rate);
    if on_path("parallel") {
        let parallel = median(
            (0..rounds)
                .map(|_| {
                    let mut c = Command::new("parallel");
                    c.args(["-j2", "true"]).stdin(stdin_from(&input));
                    time(c, "parallel")
                })
                .collect(),
        );
        let parallel_rate = per_s(parallel, n_exec);
        println!("figure parallel_jobs_per_s {parallel_rate:.0} jobs/s");
        println!("ratio exec/parallel {:.2}", exec_rate / parallel_rate);
    } else {
        println!(
            "skip parallel_jobs_per_s: GNU parallel is not on PATH (benches/cli.sh installs it)"
        );
    }

    // Persistent workers: 1,000,000 echo calls with the journal on.
    let n_worker = 1_000_000u32;
    let input = dir.path().join("echo.jsonl");
    let text: String = (0..n_worker).map(|i| format!("{i}\n")).collect();
    std::fs::write(&input, text).expect("write the input");
    let worker = median(
        (0..rounds)
            .map(|round| {
                let journal = dir.path().join(format!("worker-{round}.db"));
                let mut c = Command::new(WORKCREW);
                c.args(["run", "-j2", "-q", "-o", "/dev/null", "--journal"])
                    .arg(&journal)
                    .arg(&input)
                    .args(["--function", "echo", "--", TEST_WORKER]);
                time(c, "workcrew worker mode")
            })
            .collect(),
    );
    println!(
        "figure worker_jobs_per_s {:.0} jobs/s",
        per_s(worker, n_worker)
    );
}
