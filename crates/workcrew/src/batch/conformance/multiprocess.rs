//! Several OS processes sharing one job through one store, as separate machines
//! would: one is SIGKILLed mid-range, or frozen (SIGSTOP) past its lease.
//!
//! A store crate runs these from a test target with `harness = false`, whose
//! `main` is both the parent and, when started with [`CHILD_FLAG`], a child:
//!
//! ```ignore
//! fn main() {
//!     let args: Vec<String> = std::env::args().collect();
//!     let rt = tokio::runtime::Runtime::new().unwrap();
//!     if args.get(1).map(String::as_str) == Some(CHILD_FLAG) {
//!         // args[2] is what `command` below passed: here, the store's URL.
//!         let code = rt.block_on(async {
//!             let store = MyStore::connect(&args[2]).await.unwrap();
//!             multiprocess::child(store, &args[3..]).await
//!         });
//!         std::process::exit(code);
//!     }
//!     let url = url_from_env();
//!     let command = || {
//!         let mut c = std::process::Command::new(std::env::current_exe().unwrap());
//!         c.arg(CHILD_FLAG).arg(&url);
//!         c
//!     };
//!     rt.block_on(async {
//!         let store = MyStore::connect(&url).await.unwrap();
//!         let report = multiprocess::kill_one_mid_range(&store, "mp-kill", command, Scenario::default()).await;
//!         println!("{report}");
//!     });
//! }
//! ```
//!
//! Each child runs the job over `0..ids` with a handler that logs `S <range>
//! <start> <end> <ms>` when it starts a range and `D …` when it has processed it,
//! one `write` per line to its own log file (so a killed process leaves whole
//! lines), and `F <range> 0 0 <ms>` when the job reports it fenced out (`<ms>`:
//! the time, in ms since the Unix epoch). The parent reads the logs and checks:
//! every id processed at least once (none skipped); duplicates only inside ranges
//! the killed (or frozen) process had started, or in a range that a process which
//! ran it was fenced out of; the store counts every id done exactly once. The
//! report also gives the longest pause between two lines of the other processes.
//!
//! A fault can stall the store for every process. With SQLite, a process frozen
//! while it holds the file's write lock — inside one of its short transactions,
//! as when the freeze lands just after it finished a range — stops every other
//! writer until it is thawed (SQLite has one writer at a time, and a stopped
//! process keeps its lock): the others wait in their busy timeout for the whole
//! freeze, their leases run out too, and on thawing the frozen process commits
//! first and takes their ranges over; each of them is then fenced out of its own
//! range. Seen in about 1 run in 20 under load, with the others' longest pause
//! equal to the freeze (4.5 s) and the frozen process not fenced at all; the
//! duplicates all lie in ranges the frozen process started. With
//! `WORKCREW_MP_KEEP_LOGS` set, the logs (and a file `freeze` with the times of
//! the stop and the thaw) are kept and their directory printed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::super::{BatchEvent, BatchJob, Store};

/// The first argument that makes a test binary act as a child.
pub const CHILD_FLAG: &str = "--workcrew-batch-child";

/// The shape of a multi-process run.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The job walks `0..ids`.
    pub ids: i64,
    /// Ids per range.
    pub range_size: u64,
    /// Processes sharing the job.
    pub processes: usize,
    /// Workers per process.
    pub workers: usize,
    /// The lease.
    pub lease: Duration,
    /// How long the handler takes per range.
    pub range_time: Duration,
    /// How long the whole run may take before the test fails.
    pub deadline: Duration,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            ids: 20_000,
            range_size: 100,
            processes: 3,
            workers: 2,
            lease: Duration::from_millis(1500),
            range_time: Duration::from_millis(20),
            deadline: Duration::from_secs(120),
        }
    }
}

/// What a multi-process run showed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Ids whose processing completed, counting repeats.
    pub processed: u64,
    /// Ids processed more than once (each counted once).
    pub duplicates: u64,
    /// Ids never processed.
    pub skipped: u64,
    /// Ids in the ranges the faulty process had started.
    pub faulty_started_ids: u64,
    /// Ranges the job reported fenced out, across all processes.
    pub fenced_out: u64,
    /// Ids processed more than once outside the faulty process's ranges, each in a range
    /// that one of the processes that ran it was fenced out of (its lease had run out too:
    /// the fault stalled the store for it); counted in `duplicates`.
    pub fenced_duplicates: u64,
    /// The longest time, in ms, between two consecutive lines of any process but the faulty
    /// one (each logs every range it starts and ends, about every `range_time`): how long
    /// the fault held the others up. Long when the faulty process was frozen holding the
    /// store's write lock (SQLite), see the module docs.
    pub others_longest_pause_ms: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ids processed {} (duplicates {}, skipped {}; the faulty process had started {} ids; fenced out {}; duplicates in other processes' fenced ranges {}; the others' longest pause {} ms)",
            self.processed,
            self.duplicates,
            self.skipped,
            self.faulty_started_ids,
            self.fenced_out,
            self.fenced_duplicates,
            self.others_longest_pause_ms
        )
    }
}

/// The child side: runs the job described by `args` (as the parent passes them)
/// on `store`; returns the process exit code.
pub async fn child(store: impl Store, args: &[String]) -> i32 {
    let get = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    let (job, log) = (get(0).to_owned(), PathBuf::from(get(1)));
    let num = |i: usize| get(i).parse::<u64>().expect("numeric child argument");
    let (ids, range_size, workers, lease_ms, range_ms) = (num(2), num(3), num(4), num(5), num(6));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("child log");
    let file = std::sync::Arc::new(std::sync::Mutex::new(file));
    let write = {
        let file = std::sync::Arc::clone(&file);
        move |line: String| {
            // One write per line: a killed process leaves only whole lines.
            let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
            f.write_all(line.as_bytes()).expect("child log write");
        }
    };
    let handler_write = write.clone();
    let job = BatchJob::builder(store, job)
        .span(0..i64::try_from(ids).unwrap_or(i64::MAX))
        .range_size(range_size)
        .workers(usize::try_from(workers).unwrap_or(1))
        .lease(Duration::from_millis(lease_ms))
        .poll_interval(Duration::from_millis(100))
        .handler(move |range| {
            let write = handler_write.clone();
            async move {
                let (start, end) = match range.ids() {
                    super::super::Ids::Span(s, e) => (*s, *e),
                    other => panic!("a span job got {other}"),
                };
                write(format!("S {} {start} {end} {}\n", range.number(), now_ms()));
                tokio::time::sleep(Duration::from_millis(range_ms)).await;
                write(format!("D {} {start} {end} {}\n", range.number(), now_ms()));
                Ok::<_, String>(())
            }
        })
        .build()
        .expect("child job");
    let mut events = job.events();
    let fence_write = write.clone();
    let watcher = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let BatchEvent::FencedOut { range, .. } = event {
                fence_write(format!("F {range} 0 0 {}\n", now_ms()));
            }
        }
    });
    let result = job.run().await;
    drop(job);
    let _ = watcher.await;
    match result {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("child: {e}");
            1
        }
    }
}

/// Several processes run the job; the first is SIGKILLed while it is in the
/// middle of a range. Panics if any id is skipped, if a duplicate lies outside
/// the ranges the killed process had started and no fence explains it (see the
/// module docs), or if the store does not count every id done once.
pub async fn kill_one_mid_range(
    store: &dyn Store,
    job: &str,
    command: impl Fn() -> Command,
    scenario: Scenario,
) -> Report {
    run_faulty(store, job, command, scenario, Fault::Kill).await
}

/// Several processes run the job; the first is frozen (SIGSTOP) in the middle of
/// a range for three leases, so the others take its ranges over, then let go
/// (SIGCONT). Its late work is fenced out; the same checks as
/// [`kill_one_mid_range`], plus: at least one range was fenced out.
pub async fn freeze_one_past_its_lease(
    store: &dyn Store,
    job: &str,
    command: impl Fn() -> Command,
    scenario: Scenario,
) -> Report {
    run_faulty(store, job, command, scenario, Fault::Freeze).await
}

/// The only process running the job is SIGKILLed mid-range (the whole program
/// dies); a new process then runs the same job again and completes it. Same
/// checks as [`kill_one_mid_range`]. `scenario.processes` is ignored (one, then
/// one more).
pub async fn kill_all_then_rerun(
    store: &dyn Store,
    job: &str,
    command: impl Fn() -> Command,
    scenario: Scenario,
) -> Report {
    let scenario = Scenario {
        processes: 1,
        ..scenario
    };
    run_faulty(store, job, command, scenario, Fault::KillThenRerun).await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    Kill,
    Freeze,
    KillThenRerun,
}

/// Kills every child it holds on drop, so a failing check leaves no process.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).expect("pid fits"))
        .expect("a child's pid is positive");
    rustix::process::kill_process(pid, sig).expect("signal a child we started");
}

async fn run_faulty(
    store: &dyn Store,
    job: &str,
    command: impl Fn() -> Command,
    s: Scenario,
    fault: Fault,
) -> Report {
    store.reset(job).await.expect("reset the job");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir =
        std::env::temp_dir().join(format!("workcrew-mp-{}-{job}-{stamp}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("log dir");
    let logs: Vec<PathBuf> = (0..s.processes)
        .map(|i| dir.join(format!("child-{i}.log")))
        .collect();
    let mut logs = logs;
    let start = |log: &Path| {
        let mut cmd = command();
        cmd.arg(job)
            .arg(log)
            .arg(s.ids.to_string())
            .arg(s.range_size.to_string())
            .arg(s.workers.to_string())
            .arg(s.lease.as_millis().to_string())
            .arg(s.range_time.as_millis().to_string())
            .stdin(Stdio::null());
        cmd.spawn().expect("start a child process")
    };
    let mut children = Children(logs.iter().map(|log| start(log)).collect());
    let deadline = Instant::now() + s.deadline;
    // Wait until the first child is in the middle of a range (and has done a few).
    loop {
        assert!(Instant::now() < deadline, "child 0 never started a range");
        let lines = read_log(&logs[0]);
        let done = lines.iter().filter(|l| l.0 == 'D').count();
        let open = open_ranges(&lines);
        if done >= 3 && !open.is_empty() {
            break;
        }
        if let Ok(Some(status)) = children.0[0].try_wait() {
            panic!("child 0 exited ({status}) before it could be faulted");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    match fault {
        Fault::Kill | Fault::KillThenRerun => {
            children.0[0].kill().expect("SIGKILL child 0");
            let status = children.0[0].wait().expect("reap child 0");
            assert!(!status.success(), "child 0 was killed");
            if fault == Fault::KillThenRerun {
                let log = dir.join("rerun.log");
                children.0.push(start(&log));
                logs.push(log);
            }
        }
        Fault::Freeze => {
            let stopped = now_ms();
            signal(&children.0[0], rustix::process::Signal::STOP);
            tokio::time::sleep(s.lease * 3).await;
            signal(&children.0[0], rustix::process::Signal::CONT);
            let _ = std::fs::write(dir.join("freeze"), format!("{stopped} {}\n", now_ms()));
        }
    }
    // The others (and a thawed child 0) finish the job.
    let first = usize::from(fault != Fault::Freeze);
    for (i, child) in children.0.iter_mut().enumerate().skip(first) {
        loop {
            if let Some(status) = child.try_wait().expect("poll a child") {
                assert!(status.success(), "child {i} failed: {status}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "child {i} did not finish within {:?}",
                s.deadline
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let report = check(store, job, &logs, &s).await;
    if std::env::var_os("WORKCREW_MP_KEEP_LOGS").is_some() {
        eprintln!("logs kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if fault == Fault::Freeze {
        assert!(
            report.fenced_out >= 1,
            "the frozen process's late work was fenced out: {report}"
        );
    }
    report
}

/// Milliseconds since the Unix epoch: the time stamp of a log line.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A log line: kind, range, first id, end id, time (ms since the epoch).
type Line = (char, u64, i64, i64, u64);

/// The longest gap between the times of consecutive `lines`.
fn longest_pause(lines: &[Line]) -> u64 {
    let mut times: Vec<u64> = lines.iter().map(|l| l.4).collect();
    times.sort_unstable();
    times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
}

fn read_log(path: &Path) -> Vec<Line> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut parts = l.split(' ');
            let kind = parts.next()?.chars().next()?;
            let range = parts.next()?.parse().ok()?;
            let start = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let end = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let time = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            Some((kind, range, start, end, time))
        })
        .collect()
}

/// Ranges started and not yet done, per a log.
fn open_ranges(lines: &[Line]) -> BTreeSet<u64> {
    let mut open = BTreeSet::new();
    for (kind, range, ..) in lines {
        match kind {
            'S' => {
                open.insert(*range);
            }
            'D' => {
                open.remove(range);
            }
            _ => {}
        }
    }
    open
}

async fn check(store: &dyn Store, job: &str, logs: &[PathBuf], s: &Scenario) -> Report {
    let mut count: BTreeMap<i64, u32> = BTreeMap::new();
    let mut report = Report::default();
    let lines: Vec<Vec<Line>> = logs.iter().map(|log| read_log(log)).collect();
    let faulty_ids: BTreeSet<i64> = lines[0]
        .iter()
        .filter(|l| l.0 == 'S')
        .flat_map(|l| l.2..l.3)
        .collect();
    report.faulty_started_ids = faulty_ids.len() as u64;
    report.others_longest_pause_ms = lines[1..]
        .iter()
        .map(|log| longest_pause(log))
        .max()
        .unwrap_or(0);
    // Who ran each id (log, range), and which ranges each log was fenced out of.
    let mut ran_by: BTreeMap<i64, Vec<(usize, u64)>> = BTreeMap::new();
    let mut fenced: BTreeSet<(usize, u64)> = BTreeSet::new();
    for (i, log) in lines.iter().enumerate() {
        for &(kind, range, start, end, _) in log {
            match kind {
                'D' => {
                    for id in start..end {
                        *count.entry(id).or_default() += 1;
                        ran_by.entry(id).or_default().push((i, range));
                        report.processed += 1;
                    }
                }
                'F' => {
                    report.fenced_out += 1;
                    fenced.insert((i, range));
                }
                _ => {}
            }
        }
    }
    let skipped: Vec<i64> = (0..s.ids).filter(|id| !count.contains_key(id)).collect();
    report.skipped = skipped.len() as u64;
    let dups: Vec<i64> = count
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    report.duplicates = dups.len() as u64;
    assert!(skipped.is_empty(), "ids skipped: {skipped:?} ({report})");
    // A duplicate outside the faulty process's ranges must be explained by fencing: one of
    // the processes that ran it was fenced out of that range (its lease ran out while the
    // fault stalled the store; its late work was refused). One that no fence explains is two
    // owners of one range at once.
    let (fenced_dups, stray): (Vec<&i64>, Vec<&i64>) = dups
        .iter()
        .filter(|id| !faulty_ids.contains(id))
        .partition(|id| ran_by[id].iter().any(|run| fenced.contains(run)));
    report.fenced_duplicates = fenced_dups.len() as u64;
    assert!(
        stray.is_empty(),
        "ids run twice outside the faulty process's ranges, with no fence: {stray:?} ({report})"
    );
    let p = store.progress(job).await.expect("progress");
    assert_eq!(
        (p.ids_done, p.ranges_claimed, p.ranges_pending, p.ids_uncut),
        (u64::try_from(s.ids).unwrap_or(0), 0, 0, Some(0)),
        "the store counts every id done once ({report})"
    );
    report
}
