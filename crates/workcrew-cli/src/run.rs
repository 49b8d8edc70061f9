//! `workcrew run` (and `retry-failed`): the lines as a durable batch job.
//!
//! # Implementation notes
//!
//! - **The journal is a batch job.** Job ids are line positions `0..n`, cut into ranges
//!   claimed from the store under a lease. A range handler starts its lines' jobs (at most
//!   `permits` at once across all ranges, paced by `--rate`) and reports the failed ones as
//!   failed ids; the store marks the range done. Output records are flushed before that, so
//!   the journal never says done for a job whose record is missing.
//! - **Checkpoints.** Every second a handler records in the store the longest prefix of its
//!   range whose jobs all succeeded (a failed job ends the prefix: its failure is only kept
//!   when the range finishes). A SIGKILL therefore re-runs only the jobs after the last
//!   checkpoint of the ranges in flight — in practice the jobs in flight.
//! - **Stopping** (Ctrl-C, `--fail-fast`, `--max-failures`, a fatal error): `stopping` is
//!   cancelled; handlers start no more jobs, let the running ones finish, checkpoint, then
//!   wait to be dropped (they never return: a returned range counts as done or failed). When
//!   no handler has a job running — or after the grace, once `kill` has killed what was
//!   left — the batch job is stopped with no grace of its own: it drops the waiting
//!   handlers and gives their ranges back for the next run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use workcrew::batch::{BatchJob, Id, Processed, Range};
use workcrew::process::{ProcessPool, Routing, WorkerCommand};

use crate::cli::Strategy;
use crate::config::{Mode, RunConfig};
use crate::exec::{ExecRunner, Template};
use crate::exit_codes::{Exit, ExitCode};
use crate::input::{self, Input};
use crate::output::{human_duration, Output, Record};
use crate::progress::{Counters, Display, Totals};
use crate::runner::{run_job, Attempt, Pacer, Runner};

/// How often a handler checkpoints its range's done prefix.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Why the run stopped early; the first reason wins.
#[derive(Clone, Debug)]
enum StopReason {
    Interrupted,
    Failures(u64),
    Fatal { message: String, usage: bool },
    Output(String),
}

/// What every range handler shares.
struct Shared {
    input: Input,
    runner: Runner,
    timeout: Option<Duration>,
    retries: u32,
    ordered: bool,
    max_failures: Option<u64>,
    permits: Arc<Semaphore>,
    pacer: Option<Pacer>,
    output: Output,
    counters: Arc<Counters>,
    /// No new jobs.
    stopping: CancellationToken,
    /// Kill the jobs in flight.
    kill: CancellationToken,
    /// Handlers with jobs running.
    busy: AtomicUsize,
    reason: Mutex<Option<StopReason>>,
}

impl Shared {
    fn stop(&self, reason: StopReason) {
        let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some(reason);
        }
        drop(r);
        self.stopping.cancel();
    }

    fn reason(&self) -> Option<StopReason> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Counts a handler as busy until dropped.
struct Busy<'a>(&'a AtomicUsize);

impl<'a> Busy<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::AcqRel);
        Busy(n)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

const PENDING: u8 = 0;
const OK: u8 = 1;
const FAILED: u8 = 2;

/// Processes one range; see the module notes.
async fn process_range(shared: Arc<Shared>, range: Range) -> Result<Processed, String> {
    let busy = Busy::new(&shared.busy);
    let ids: Vec<u64> = range
        .iter()
        .map(|id| match id {
            Id::Int(i) if i >= 0 && (i as u64) < shared.input.jobs.len() as u64 => Ok(i as u64),
            other => Err(format!(
                "the journal holds id {other}, which this input does not have: was the input changed? (--job names a job explicitly)"
            )),
        })
        .collect::<Result<_, _>>()?;
    let n = ids.len();
    let mut status = vec![PENDING; n];
    let mut finished = 0usize;
    let mut prefix = 0usize;
    let mut checkpointed = 0usize;
    let mut next = 0usize;
    let mut processed = Processed::new();
    let mut held: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    let mut next_emit = 0usize;
    let mut running = FuturesUnordered::new();
    let mut tick = tokio::time::interval_at(Instant::now() + CHECKPOINT_EVERY, CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let sh = &*shared;
    loop {
        let may_start = next < n && !sh.stopping.is_cancelled();
        if finished == n || (!may_start && running.is_empty()) {
            break;
        }
        tokio::select! {
            Some((i, outcome)) = running.next(), if !running.is_empty() => {
                let i: usize = i;
                let outcome: crate::runner::Outcome = outcome;
                let job = &sh.input.jobs[ids[i] as usize];
                let (state, error, result) = match &outcome.last {
                    Attempt::Ok(result) => (OK, None, Some(&**result)),
                    Attempt::Failed { error, result } => (FAILED, Some(error.as_str()), result.as_deref()),
                    Attempt::Fatal { message, usage } => {
                        sh.stop(StopReason::Fatal { message: format!("line {}: {message}", job.line), usage: *usage });
                        continue;
                    }
                    Attempt::Killed => continue,
                };
                status[i] = state;
                finished += 1;
                let record = Record {
                    line: job.line,
                    id: ids[i],
                    status: if state == OK { "ok" } else { "failed" },
                    result,
                    error,
                    attempts: outcome.attempts,
                    duration_ms: outcome.duration.as_millis() as u64,
                }
                .to_line();
                if state == OK {
                    sh.counters.ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    processed.fail(Id::Int(ids[i] as i64), error.unwrap_or_default());
                    let failures = sh.counters.failed.fetch_add(1, Ordering::Relaxed) + 1;
                    if sh.max_failures.is_some_and(|max| failures >= max) {
                        sh.stop(StopReason::Failures(failures));
                    }
                }
                if sh.ordered {
                    held.insert(i, record);
                    while let Some(r) = held.remove(&next_emit) {
                        if let Err(e) = sh.output.write(&r) {
                            sh.stop(StopReason::Output(e.to_string()));
                        }
                        next_emit += 1;
                    }
                } else if let Err(e) = sh.output.write(&record) {
                    sh.stop(StopReason::Output(e.to_string()));
                }
                while prefix < n && status[prefix] == OK {
                    prefix += 1;
                }
            }
            permit = start_slot(sh), if may_start => {
                let i = next;
                next += 1;
                let job = &sh.input.jobs[ids[i] as usize];
                running.push(async move {
                    let _permit = permit;
                    (i, run_job(&sh.runner, job, sh.timeout, sh.retries, &sh.kill, &sh.stopping).await)
                });
            }
            () = sh.stopping.cancelled(), if may_start => {}
            _ = tick.tick() => {
                if prefix > checkpointed && sh.output.flush().is_ok() {
                    // A failed checkpoint costs only re-runs after a crash.
                    if range.checkpoint(prefix as u64).await.is_ok() {
                        checkpointed = prefix;
                    }
                }
            }
        }
    }
    let flushed = sh.output.flush();
    if finished == n {
        if let Err(e) = flushed {
            sh.stop(StopReason::Output(e.to_string()));
            return Err(format!("cannot write the output records: {e}"));
        }
        drop(busy);
        return Ok(processed);
    }
    // Stopped before the end: keep the certain prefix, then wait to be dropped, which
    // gives the range back (see the module notes).
    if prefix > checkpointed && flushed.is_ok() {
        let _ = range.checkpoint(prefix as u64).await;
    }
    drop(busy);
    std::future::pending().await
}

/// A permit to start one job (paced by `--rate`).
async fn start_slot(sh: &Shared) -> tokio::sync::OwnedSemaphorePermit {
    let permit = Arc::clone(&sh.permits)
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    if let Some(pacer) = &sh.pacer {
        pacer.wait().await;
    }
    permit
}

/// Runs `workcrew run` (with `retry_failed`: puts the job's failures back first).
pub(crate) async fn run(config: RunConfig, retry_failed: bool) -> Result<ExitCode> {
    let select = &config.select;
    let input = input::read(select.input.as_deref(), select.text_lines)?;
    let program = match &select.mode {
        Mode::Exec { shell } => Template::new(&select.command, *shell, select.text_lines)
            .program()
            .unwrap_or_else(|| select.command[0].clone()),
        Mode::Worker { .. } => select.command[0].clone(),
    };
    if !crate::exec::program_exists(&program) {
        return Err(Exit::usage(format!("command not found: {program}")));
    }
    if let Some(dir) = &config.results {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the results directory {}", dir.display()))?;
    }
    let n = input.jobs.len() as u64;
    let name = input::job_name(select, Some(input.content_hash));
    if n == 0 {
        if !config.quiet {
            eprintln!("workcrew: the input has no jobs; nothing to do");
        }
        return Ok(ExitCode::Success);
    }
    let output = Output::open(config.output.as_deref())?;
    let store = crate::journal::open(&select.store).await?;
    let journal = crate::journal::describe(&select.store);

    let runner = match &select.mode {
        Mode::Exec { shell } => Runner::Exec(ExecRunner {
            template: Template::new(&select.command, *shell, select.text_lines),
            results: config.results.clone(),
        }),
        Mode::Worker { function } => {
            // Through `workcrew __worker`, which puts the worker in its own process group.
            let exe = std::env::current_exe().context("cannot find the workcrew executable")?;
            let mut command = WorkerCommand::new(exe).arg("__worker").arg("--");
            for arg in &select.command {
                command = command.arg(arg);
            }
            let routing = match config.strategy {
                Strategy::FewestInFlight => Routing::FewestInFlight,
                Strategy::Fill => Routing::Fill { full: 16 },
                Strategy::RoundRobin => Routing::RoundRobin,
                Strategy::Random => Routing::Random,
                Strategy::PowerOfTwo => Routing::PowerOfTwoChoices,
            };
            let pool = ProcessPool::builder(command)
                .min(config.min_workers)
                .max(config.jobs)
                .routing(routing)
                // Lines are JSON values: JSON on the wire whatever the worker prefers.
                .encoding(workcrew::protocol::Encoding::Json)
                .build()
                .await
                .with_context(|| {
                    format!("cannot start the worker {:?}", select.command.join(" "))
                })?;
            Runner::Worker {
                pool,
                function: function.clone(),
                text_lines: select.text_lines,
            }
        }
    };
    let pool = match &runner {
        Runner::Worker { pool, .. } => Some(pool.clone()),
        Runner::Exec(_) => None,
    };
    let exec = matches!(select.mode, Mode::Exec { .. });
    // Exec: -j processes. Worker mode: enough calls in flight to keep every worker's
    // channel full (the pool queues what its workers cannot take yet).
    let permits = if exec { config.jobs } else { config.jobs * 512 };
    // The range size is part of the job in the journal, so it depends on the input alone:
    // a rerun with another -j, or another machine, resumes the same job. About 64 ranges.
    let range_size = config
        .range_size
        .unwrap_or_else(|| (n / 64).clamp(1, if exec { 1000 } else { 10_000 }));
    // Enough ranges at once to keep every slot busy while a range waits for its last job
    // (one range at a time for ordered output).
    let batch_workers = if config.ordered {
        1
    } else {
        (config.jobs as u64)
            .div_ceil(range_size)
            .saturating_add(1)
            .clamp(2, 64) as usize
    };
    let counters = Arc::new(Counters::default());
    let shared = Arc::new(Shared {
        input,
        runner,
        timeout: config.timeout,
        retries: config.retries,
        ordered: config.ordered,
        max_failures: config.max_failures,
        permits: Arc::new(Semaphore::new(permits)),
        pacer: config.rate.map(Pacer::new),
        output,
        counters: Arc::clone(&counters),
        stopping: CancellationToken::new(),
        kill: CancellationToken::new(),
        busy: AtomicUsize::new(0),
        reason: Mutex::new(None),
    });

    let handler_shared = Arc::clone(&shared);
    let job = BatchJob::builder(Arc::clone(&store), name.clone())
        .span(0..n as i64)
        .range_size(range_size)
        // Ordered output: one range at a time, its records in line order.
        .workers(batch_workers)
        .max_claim(1)
        .lease(config.lease)
        .stop_grace(Duration::ZERO)
        .handler(move |range| process_range(Arc::clone(&handler_shared), range))
        .build()
        .context("cannot set up the journal's batch job")?;

    let before = job.progress().await.ok();
    if retry_failed {
        let retried = job
            .retry_failed()
            .await
            .with_context(|| format!("cannot put the failures of job {name} back"))?;
        if !config.quiet {
            eprintln!(
                "workcrew: {} failed lines and {} failed ranges put back to run",
                retried.ids, retried.ranges
            );
        }
    }
    let before = if retry_failed {
        job.progress().await.ok()
    } else {
        before
    };
    let totals = Totals {
        total: n,
        done_before: before.as_ref().map_or(0, |p| p.ids_done),
        failed_before: before.as_ref().map_or(0, |p| p.ids_failed),
    };
    let finished_before = totals.done_before + totals.failed_before;
    if !config.quiet && finished_before > 0 {
        let rest = if finished_before >= n {
            "nothing left to run"
        } else {
            "running the rest"
        };
        eprintln!(
            "workcrew: resuming job {name}: {finished_before} of {n} lines already done ({} failed); {rest}",
            totals.failed_before
        );
    }
    let held = before.as_ref().map_or(0, |p| p.ids_in_flight);
    if !config.quiet && held > 0 {
        eprintln!(
            "workcrew: {held} lines are claimed by another run (or by a killed one: they come back when its lease expires)"
        );
    }
    let display = Display::start(Arc::clone(&counters), totals, config.quiet);
    let signals = tokio::spawn(watch_signals(
        Arc::clone(&shared),
        pool.clone(),
        config.grace,
    ));
    let controller = tokio::spawn(control(
        Arc::clone(&shared),
        job.clone(),
        pool.clone(),
        config.grace,
    ));
    let started = Instant::now();
    let result = job.run().await;
    signals.abort();
    controller.abort();
    display.finish().await;
    if let Some(pool) = &pool {
        pool.stop().await;
    }
    let _ = shared.output.flush();
    let after = job.progress().await.ok();
    let elapsed = started.elapsed();
    let ok = counters.ok.load(Ordering::Relaxed);
    let failed = counters.failed.load(Ordering::Relaxed);
    let reason = shared.reason();

    if !config.quiet {
        let rate = (ok + failed) as f64 / elapsed.as_secs_f64().max(1e-9);
        eprintln!(
            "workcrew: this run: {ok} ok, {failed} failed in {} ({rate:.0} jobs/s)",
            human_duration(elapsed)
        );
        if let Some(p) = &after {
            let pending = p.ids_pending + p.ids_in_flight;
            eprintln!(
                "workcrew: job {name}: {}/{n} done, {} failed, {pending} pending (journal {journal})",
                p.ids_done, p.ids_failed
            );
        }
    }
    if let Err(e) = result {
        if let Some(StopReason::Fatal { message, usage }) = &reason {
            eprintln!("workcrew: error: {message}");
            return Ok(if *usage {
                ExitCode::Usage
            } else {
                ExitCode::Failures
            });
        }
        return Err(anyhow::Error::new(e).context(format!("the run of job {name} failed")));
    }
    let code = match reason {
        Some(StopReason::Interrupted) => {
            if !config.quiet {
                eprintln!("workcrew: interrupted; run the same command again to resume");
            }
            ExitCode::Interrupted
        }
        Some(StopReason::Fatal { message, usage }) => {
            eprintln!("workcrew: error: {message}");
            if usage {
                ExitCode::Usage
            } else {
                ExitCode::Failures
            }
        }
        Some(StopReason::Output(e)) => {
            eprintln!("workcrew: error: cannot write the output records: {e}");
            ExitCode::Failures
        }
        Some(StopReason::Failures(k)) => {
            if !config.quiet {
                eprintln!("workcrew: stopped after {k} failed jobs");
            }
            ExitCode::Failures
        }
        None if after.as_ref().is_some_and(|p| p.ids_failed > 0) || failed > 0 => {
            if !config.quiet {
                eprintln!("workcrew: some jobs failed: see the output records, or `workcrew status`; `workcrew retry-failed` runs them again");
            }
            ExitCode::Failures
        }
        None => ExitCode::Success,
    };
    Ok(code)
}

/// First Ctrl-C (or SIGTERM): stop taking jobs. Second: kill the jobs in flight.
async fn watch_signals(shared: Arc<Shared>, pool: Option<ProcessPool>, grace: Duration) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    async fn next(int: &mut tokio::signal::unix::Signal, term: &mut tokio::signal::unix::Signal) {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
    next(&mut int, &mut term).await;
    eprintln!(
        "\nworkcrew: interrupted: no new jobs; jobs in flight get {} to finish (Ctrl-C again to kill them)",
        human_duration(grace)
    );
    shared.stop(StopReason::Interrupted);
    next(&mut int, &mut term).await;
    eprintln!("workcrew: killing the jobs in flight");
    shared.kill.cancel();
    if let Some(pool) = pool {
        pool.stop_now().await;
    }
}

/// Once stopping: waits until no handler has jobs running (killing them after the
/// grace), then stops the batch job, which gives the unfinished ranges back.
async fn control(shared: Arc<Shared>, job: BatchJob, pool: Option<ProcessPool>, grace: Duration) {
    shared.stopping.cancelled().await;
    let deadline = Instant::now() + grace;
    while shared.busy.load(Ordering::Acquire) > 0 {
        if Instant::now() >= deadline && !shared.kill.is_cancelled() {
            shared.kill.cancel();
            if let Some(pool) = &pool {
                pool.stop_now().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    job.stop();
}
