//! Configuring a process pool: the worker command and the pool's settings.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::error::StartError;
use super::pool::ProcessPool;
use super::routing::Routing;
use crate::protocol::{Encoding, DEFAULT_MAX_FRAME, MIN_MAX_FRAME};

/// How to start a worker: program, arguments, environment and directory.
///
/// [`ProcessPool::builder`] takes one (or just a program name), and
/// [`ProcessPool::reload`] swaps it for a new generation of workers.
///
/// ```
/// use workcrew::process::WorkerCommand;
///
/// let cmd = WorkerCommand::new("python3")
///     .arg("workers/python/demo_worker.py")
///     .env("LOG_LEVEL", "debug")
///     .cwd(".");
/// assert_eq!(cmd.program(), "python3");
/// ```
#[must_use]
#[derive(Clone, Debug)]
pub struct WorkerCommand {
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) env_clear: bool,
    pub(crate) cwd: Option<PathBuf>,
}

impl WorkerCommand {
    /// Runs `program` (looked up in `PATH` like [`std::process::Command`]).
    pub fn new(program: impl Into<OsString>) -> Self {
        WorkerCommand {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            env_clear: false,
            cwd: None,
        }
    }

    /// The program.
    pub fn program(&self) -> &std::ffi::OsStr {
        &self.program
    }

    /// Appends an argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets an environment variable (the pool's own environment is inherited
    /// unless [`env_clear`](Self::env_clear)).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts workers with an empty environment (plus [`env`](Self::env)).
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self
    }

    /// The workers' working directory. Default: the pool's.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }
}

impl<S: Into<OsString>> From<S> for WorkerCommand {
    fn from(program: S) -> Self {
        WorkerCommand::new(program)
    }
}

/// Optional resource limits for each worker (Unix), applied with the
/// shell's `ulimit` before the worker program starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Address space, bytes.
    pub(crate) address_space: Option<u64>,
    /// CPU time, seconds.
    pub(crate) cpu_seconds: Option<u64>,
}

/// The pool's settings, as plain data.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) command: WorkerCommand,
    pub(crate) min_workers: usize,
    pub(crate) max_workers: usize,
    pub(crate) idle_timeout: Duration,
    pub(crate) routing: Routing,
    pub(crate) max_per_worker: Option<usize>,
    pub(crate) queue_capacity: usize,
    pub(crate) ready_timeout: Duration,
    pub(crate) stop_timeout: Duration,
    pub(crate) stop_signal: i32,
    pub(crate) max_frame: usize,
    pub(crate) call_timeout: Option<Duration>,
    pub(crate) cancel_grace: Duration,
    pub(crate) max_restarts: usize,
    pub(crate) restart_window: Duration,
    pub(crate) spawn_backoff: (Duration, Duration),
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) recycle_after_calls: Option<u64>,
    pub(crate) max_rss: Option<u64>,
    pub(crate) rss_check: Duration,
    pub(crate) max_age: Option<(Duration, Duration)>,
    pub(crate) limits: Limits,
    pub(crate) retries: HashMap<String, u32>,
    pub(crate) event_capacity: usize,
    /// Payload encodings offered to workers; the pool uses the first worker's choice.
    pub(crate) encodings: Vec<Encoding>,
}

/// Configures a [`ProcessPool`]; made by [`ProcessPool::builder`].
#[must_use]
#[derive(Clone, Debug)]
pub struct ProcessPoolBuilder {
    config: Config,
}

impl ProcessPoolBuilder {
    pub(crate) fn new(command: WorkerCommand) -> Self {
        ProcessPoolBuilder {
            config: Config {
                command,
                min_workers: 2,
                max_workers: 2,
                idle_timeout: Duration::from_secs(60),
                routing: Routing::FewestInFlight,
                max_per_worker: None,
                queue_capacity: 1 << 20,
                ready_timeout: Duration::from_secs(10),
                stop_timeout: Duration::from_secs(5),
                stop_signal: 15,
                max_frame: DEFAULT_MAX_FRAME,
                call_timeout: None,
                cancel_grace: Duration::from_secs(2),
                max_restarts: 5,
                restart_window: Duration::from_secs(60),
                spawn_backoff: (Duration::from_millis(100), Duration::from_secs(5)),
                heartbeat: Some(Duration::from_secs(5)),
                recycle_after_calls: None,
                max_rss: None,
                rss_check: Duration::from_secs(1),
                max_age: None,
                limits: Limits::default(),
                retries: HashMap::new(),
                event_capacity: 1024,
                encodings: vec![Encoding::Postcard, Encoding::Json],
            },
        }
    }

    /// Appends an argument for the worker program.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.config.command = self.config.command.arg(arg);
        self
    }

    /// Sets an environment variable for the workers (the pool's own
    /// environment is inherited unless [`env_clear`](Self::env_clear)).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.config.command = self.config.command.env(key, value);
        self
    }

    /// Starts workers with an empty environment (plus [`env`](Self::env)).
    pub fn env_clear(mut self) -> Self {
        self.config.command = self.config.command.env_clear();
        self
    }

    /// The workers' working directory. Default: the pool's.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.command = self.config.command.cwd(dir);
        self
    }

    /// A fixed number of workers: sets both [`min`](Self::min) and
    /// [`max`](Self::max). Default: 2; 0 counts as 1.
    pub fn workers(mut self, n: usize) -> Self {
        self.config.min_workers = n.max(1);
        self.config.max_workers = n.max(1);
        self
    }

    /// Workers started with the pool and always kept (dead ones are
    /// replaced). Default: 2. May be 0: the first call then starts one.
    pub fn min(mut self, n: usize) -> Self {
        self.config.min_workers = n;
        self.config.max_workers = self.config.max_workers.max(n.max(1));
        self
    }

    /// The most workers the pool grows to while calls wait for one.
    /// Default: 2 (or [`min`](Self::min) if larger); 0 counts as 1.
    pub fn max(mut self, n: usize) -> Self {
        self.config.max_workers = n.max(1);
        self.config.min_workers = self.config.min_workers.min(n.max(1));
        self
    }

    /// Workers above [`min`](Self::min) that have held no call this long
    /// are stopped. A worker with calls in flight is never reaped.
    /// Default: 60 s.
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.config.idle_timeout = d;
        self
    }

    /// How a call picks among the workers with room. Default:
    /// [`Routing::FewestInFlight`].
    pub fn routing(mut self, routing: Routing) -> Self {
        self.config.routing = routing;
        self
    }

    /// At most `n` calls in flight on one worker (below the concurrency the
    /// worker announces, never above). Default: the worker's concurrency.
    pub fn max_per_worker(mut self, n: usize) -> Self {
        self.config.max_per_worker = Some(n.max(1));
        self
    }

    /// Calls that may wait for a worker with room. When the queue is full,
    /// [`ProcessPool::call`] waits for room and [`ProcessPool::try_call`]
    /// fails with [`CallError::QueueFull`](super::CallError::QueueFull).
    /// Default: 1,048,576.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.config.queue_capacity = n.max(1);
        self
    }

    /// How long a worker may take to say `HELLO`. Default: 10 s.
    pub fn ready_timeout(mut self, d: Duration) -> Self {
        self.config.ready_timeout = d;
        self
    }

    /// How long [`stop`](ProcessPool::stop) lets calls drain, and how long a
    /// stopping or retiring worker may take to exit after `SHUTDOWN`, and again
    /// after the [stop signal](Self::stop_signal), before it is killed (see
    /// [`stop_with`](ProcessPool::stop_with)). Default: 5 s.
    pub fn stop_timeout(mut self, d: Duration) -> Self {
        self.config.stop_timeout = d;
        self
    }

    /// The signal sent to a worker that has not exited within the stop
    /// timeout after `SHUTDOWN`; `SIGKILL` follows one stop timeout later.
    /// Default: 15 (`SIGTERM`).
    pub fn stop_signal(mut self, signal: i32) -> Self {
        self.config.stop_signal = signal;
        self
    }

    /// The maximum frame size, both ways (`docs/protocol.md`, section 2).
    /// Default: 16 MiB; at least 4 KiB (smaller values count as 4 KiB).
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.config.max_frame = bytes.max(MIN_MAX_FRAME);
        self
    }

    /// A limit on every call, waiting for a worker included: when it passes,
    /// the worker gets `CANCEL` and the call fails with
    /// [`CallError::TimedOut`](super::CallError::TimedOut); a worker that has
    /// not answered after [`cancel_grace`](Self::cancel_grace) is killed and
    /// replaced. Default: none.
    pub fn call_timeout(mut self, d: Duration) -> Self {
        self.config.call_timeout = Some(d);
        self
    }

    /// How often workers are pinged; one that leaves three pings in a row
    /// unanswered is killed as hung (its calls fail as lost) and replaced.
    /// `None` turns heartbeats off. Default: 5 s.
    pub fn heartbeat(mut self, every: Option<Duration>) -> Self {
        self.config.heartbeat = every.filter(|d| !d.is_zero());
        self
    }

    /// How long a given-up call (timed out, cancelled by its token, its future dropped) may
    /// take to be answered after its `CANCEL` before its worker takes no new call; the worker
    /// is killed once its other calls are answered, or one more grace later. Default: 2 s.
    pub fn cancel_grace(mut self, d: Duration) -> Self {
        self.config.cancel_grace = d;
        self
    }

    /// Workers that die are replaced, at most `max` times within `window`; past
    /// that the pool stops replacing them (a crash loop) and calls fail with
    /// [`CallError::CrashLoop`](super::CallError::CrashLoop) once none is left.
    /// Default: 5 within 60 s.
    pub fn restart_budget(mut self, max: usize, window: Duration) -> Self {
        self.config.max_restarts = max;
        self.config.restart_window = window;
        self
    }

    /// Delay between failed attempts to start a worker: `first`, doubling up
    /// to `max`. Default: 100 ms to 5 s.
    pub fn spawn_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.config.spawn_backoff = (first, max.max(first));
        self
    }

    /// Replace a worker after it has been sent `n` calls (it finishes them
    /// first). Default: never.
    pub fn recycle_after_calls(mut self, n: u64) -> Self {
        self.config.recycle_after_calls = Some(n.max(1));
        self
    }

    /// Replace a worker whose resident memory exceeds `bytes` (checked every
    /// second; Linux). Default: never.
    pub fn max_rss(mut self, bytes: u64) -> Self {
        self.config.max_rss = Some(bytes);
        self
    }

    /// Replace a worker once it is `age` old, plus a random share of
    /// `jitter` so a generation does not retire all at once. Default: never.
    pub fn max_age(mut self, age: Duration, jitter: Duration) -> Self {
        self.config.max_age = Some((age, jitter));
        self
    }

    /// Limits each worker's address space to `bytes` (Unix, `ulimit -v`).
    pub fn limit_address_space(mut self, bytes: u64) -> Self {
        self.config.limits.address_space = Some(bytes);
        self
    }

    /// Limits each worker's CPU time to `seconds` (Unix, `ulimit -t`); a
    /// worker past it is killed by the system and replaced.
    pub fn limit_cpu_time(mut self, seconds: u64) -> Self {
        self.config.limits.cpu_seconds = Some(seconds.max(1));
        self
    }

    /// Retries calls of `function` whose worker dies while holding them, up
    /// to `attempts` times (on another worker). Only for functions that are
    /// safe to run twice; per call, see [`CallOptions::retries`](super::CallOptions::retries).
    /// Default: no retries.
    pub fn retry_function(mut self, function: impl Into<String>, attempts: u32) -> Self {
        self.config.retries.insert(function.into(), attempts);
        self
    }

    #[cfg(test)]
    pub(crate) fn into_config(self) -> Config {
        self.config
    }

    /// The payload encoding of every call, instead of the one the first
    /// worker prefers among postcard and JSON. JSON suits arguments or results
    /// that postcard cannot carry (`serde_json::Value`, untagged enums,
    /// flattened structs); workers must accept it (all do, by the protocol).
    pub fn encoding(mut self, encoding: Encoding) -> Self {
        self.config.encodings = vec![encoding];
        self
    }

    /// Starts the `min` workers, all at once, and waits until each is ready.
    ///
    /// # Errors
    ///
    /// [`StartError`] if a worker cannot be started or misses its ready
    /// timeout; the workers already started are stopped and reaped.
    pub async fn build(self) -> Result<ProcessPool, StartError> {
        ProcessPool::start(self.config).await
    }
}
