//! Configuring a process pool.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::error::StartError;
use super::pool::ProcessPool;
use crate::protocol::DEFAULT_MAX_FRAME;

/// The pool's settings, as plain data.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) env_clear: bool,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) workers: usize,
    pub(crate) ready_timeout: Duration,
    pub(crate) stop_timeout: Duration,
    pub(crate) max_frame: usize,
    pub(crate) call_timeout: Option<Duration>,
    pub(crate) cancel_grace: Duration,
    pub(crate) max_restarts: usize,
    pub(crate) restart_window: Duration,
    pub(crate) heartbeat: Option<Duration>,
}

/// Configures a [`ProcessPool`]; made by [`ProcessPool::builder`].
#[must_use]
#[derive(Clone, Debug)]
pub struct ProcessPoolBuilder {
    config: Config,
}

impl ProcessPoolBuilder {
    pub(crate) fn new(program: impl Into<OsString>) -> Self {
        ProcessPoolBuilder {
            config: Config {
                program: program.into(),
                args: Vec::new(),
                env: Vec::new(),
                env_clear: false,
                cwd: None,
                workers: 2,
                ready_timeout: Duration::from_secs(10),
                stop_timeout: Duration::from_secs(5),
                max_frame: DEFAULT_MAX_FRAME,
                call_timeout: None,
                cancel_grace: Duration::from_secs(2),
                max_restarts: 5,
                restart_window: Duration::from_secs(60),
                heartbeat: Some(Duration::from_secs(5)),
            },
        }
    }

    /// Appends an argument for the worker program.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.config.args.push(arg.into());
        self
    }

    /// Sets an environment variable for the workers (the pool's own
    /// environment is inherited unless [`env_clear`](Self::env_clear)).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.config.env.push((key.into(), value.into()));
        self
    }

    /// Starts workers with an empty environment (plus [`env`](Self::env)).
    pub fn env_clear(mut self) -> Self {
        self.config.env_clear = true;
        self
    }

    /// The workers' working directory. Default: the pool's.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.cwd = Some(dir.into());
        self
    }

    /// Worker processes to start. Default: 2; 0 counts as 1.
    pub fn workers(mut self, n: usize) -> Self {
        self.config.workers = n.max(1);
        self
    }

    /// How long a worker may take to say `HELLO`. Default: 10 s.
    pub fn ready_timeout(mut self, d: Duration) -> Self {
        self.config.ready_timeout = d;
        self
    }

    /// How long a stopping worker may take to exit before it is killed. Default: 5 s.
    pub fn stop_timeout(mut self, d: Duration) -> Self {
        self.config.stop_timeout = d;
        self
    }

    /// A limit on every call: when it passes, the worker gets `CANCEL` and the
    /// call fails with [`CallError::TimedOut`](super::CallError::TimedOut); a
    /// worker that has not answered after [`cancel_grace`](Self::cancel_grace)
    /// is killed and replaced. Default: none.
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

    /// How long a cancelled call may take to end before its worker is killed. Default: 2 s.
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

    /// Starts the workers, all at once, and waits until each is ready.
    ///
    /// # Errors
    ///
    /// [`StartError`] if a worker cannot be started or misses its ready
    /// timeout; the workers already started are stopped and reaped.
    pub async fn build(self) -> Result<ProcessPool, StartError> {
        ProcessPool::start(self.config).await
    }
}
