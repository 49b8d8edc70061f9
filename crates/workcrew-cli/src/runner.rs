//! Running one job: the mode's attempt, retries with backoff, the rate pacer.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use workcrew::process::{CallError, CallOptions, ProcessPool};

use crate::exec::ExecRunner;
use crate::input::Job;

/// How one attempt ended.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// Success, with the result.
    Ok(Box<RawValue>),
    /// The job failed (retryable), with its error and any result it left (exec output).
    Failed {
        /// One line.
        error: String,
        /// E.g. an exec job's exit code and output.
        result: Option<Box<RawValue>>,
    },
    /// Nothing will work: an unknown function, a command that does not exist, no workers
    /// left. The run stops; the job is not recorded (it runs again once the cause is fixed).
    Fatal {
        /// What is wrong.
        message: String,
        /// A usage error (exit 2) rather than a failure of the run (exit 1).
        usage: bool,
    },
    /// Killed by a second Ctrl-C: in flight, not recorded.
    Killed,
}

/// What a job's attempts came to.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The last attempt.
    pub(crate) last: Attempt,
    /// Attempts made.
    pub(crate) attempts: u32,
    /// From the first attempt's start.
    pub(crate) duration: Duration,
}

/// Runs jobs in the chosen mode.
#[derive(Debug)]
pub(crate) enum Runner {
    /// One process per job.
    Exec(ExecRunner),
    /// A call per job.
    Worker {
        /// The workers.
        pool: ProcessPool,
        /// The function.
        function: String,
        /// Lines are text.
        text_lines: bool,
    },
}

impl Runner {
    async fn attempt(
        &self,
        job: &Job,
        timeout: Option<Duration>,
        kill: &CancellationToken,
    ) -> Attempt {
        match self {
            // Boxed: the exec future is large, and would make every job's future (moved
            // into the range's set of running jobs) as large.
            Runner::Exec(exec) => Box::pin(exec.attempt(job, timeout, kill)).await,
            Runner::Worker {
                pool,
                function,
                text_lines,
            } => {
                let args = job.json(*text_lines);
                let mut options = CallOptions::new().token(kill.clone());
                if let Some(t) = timeout {
                    options = options.timeout(t);
                }
                match pool
                    .call_with::<RawValue, Box<RawValue>>(function, &args, &options)
                    .await
                {
                    Ok(result) => Attempt::Ok(result),
                    Err(e) => call_error(e),
                }
            }
        }
    }
}

fn call_error(e: CallError) -> Attempt {
    match e {
        CallError::Cancelled { .. } => Attempt::Killed,
        e @ CallError::UnknownFunction(_) => Attempt::Fatal {
            message: format!("{e}: check --function and the worker command"),
            usage: true,
        },
        e @ (CallError::Stopped | CallError::NoWorkers | CallError::CrashLoop { .. }) => {
            Attempt::Fatal {
                message: e.to_string(),
                usage: false,
            }
        }
        CallError::Failed { message, data, .. } => Attempt::Failed {
            error: message,
            result: data.and_then(|d| serde_json::value::to_raw_value(&d).ok()),
        },
        e @ CallError::TimedOut { .. } => Attempt::Failed {
            error: format!("timed out ({e})"),
            result: None,
        },
        e => Attempt::Failed {
            error: e.to_string(),
            result: None,
        },
    }
}

/// Backoff before retry `n` (from 1): 100 ms doubling, at most 10 s.
pub(crate) fn backoff(n: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << n.saturating_sub(1).min(7)))
        .min(Duration::from_secs(10))
}

/// Runs `job`: its attempts with backoff between them. A stop (`stopping`) during a
/// backoff ends it as [`Attempt::Killed`]: it did not finish, so it is not recorded.
pub(crate) async fn run_job(
    runner: &Runner,
    job: &Job,
    timeout: Option<Duration>,
    retries: u32,
    kill: &CancellationToken,
    stopping: &CancellationToken,
) -> Outcome {
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let last = runner.attempt(job, timeout, kill).await;
        let again = matches!(last, Attempt::Failed { .. }) && attempts <= retries;
        if !again {
            return Outcome {
                last,
                attempts,
                duration: started.elapsed(),
            };
        }
        tokio::select! {
            () = tokio::time::sleep(backoff(attempts)) => {}
            () = stopping.cancelled() => {
                return Outcome { last: Attempt::Killed, attempts, duration: started.elapsed() };
            }
        }
    }
}

/// Spaces job starts evenly: at most `per_second` a second in this process.
#[derive(Debug)]
pub(crate) struct Pacer {
    every: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    pub(crate) fn new(per_second: f64) -> Pacer {
        Pacer {
            every: Duration::from_secs_f64(1.0 / per_second),
            next: Mutex::new(None),
        }
    }

    /// Waits for the next slot.
    ///
    /// # Cancel safety
    ///
    /// Cancelling wastes the slot taken (the rate errs low, never high).
    pub(crate) async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + self.every);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(30), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_spaces_starts() {
        let pacer = Pacer::new(10.0);
        let start = Instant::now();
        for _ in 0..5 {
            pacer.wait().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(400));
    }
}
