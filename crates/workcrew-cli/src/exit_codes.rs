//! The process exit codes, in one place (documented in `workcrew --help`).

/// How `workcrew` exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExitCode {
    /// Every job succeeded (or the command did what was asked).
    Success,
    /// Some jobs failed, or the run itself failed (store or worker error).
    Failures,
    /// Bad arguments or bad input: nothing was run (the journal is untouched).
    Usage,
    /// Interrupted (Ctrl-C or SIGTERM): in-flight jobs finished or were given
    /// back, the journal is consistent, a rerun resumes.
    Interrupted,
}

impl ExitCode {
    /// The numeric code.
    pub(crate) fn code(self) -> u8 {
        match self {
            ExitCode::Success => 0,
            ExitCode::Failures => 1,
            ExitCode::Usage => 2,
            ExitCode::Interrupted => 130,
        }
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code.code())
    }
}

/// The exit codes as `--help` shows them.
pub(crate) const HELP: &str = "\
Exit codes:
  0    every job succeeded
  1    some jobs failed (see the output records, `workcrew status`), or the run failed
  2    usage error: bad arguments, a malformed input line, a missing command or function
  130  interrupted (Ctrl-C / SIGTERM); rerun the same command to resume";

/// An error that carries its exit code (anything else exits 1).
#[derive(Debug)]
pub(crate) struct Exit {
    pub(crate) code: ExitCode,
    pub(crate) message: String,
}

impl Exit {
    /// A usage error: bad arguments or input.
    pub(crate) fn usage(message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Exit {
            code: ExitCode::Usage,
            message: message.into(),
        })
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}
