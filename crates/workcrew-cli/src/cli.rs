//! The command line, as clap parses it. [`crate::config`] validates it once into
//! the configuration the commands use.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Run a file of jobs through a crew of workers: resumable, with retries,
/// timeouts and a progress bar, on one machine or many.
#[derive(Debug, Parser)]
#[command(name = "workcrew", version, arg_required_else_help = true)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,

    /// Also log the worker processes' stdout and stderr, and the pool's and journal's
    /// information messages (warnings are always shown), to stderr.
    #[arg(long, short = 'v', global = true)]
    pub(crate) verbose: bool,
}

/// The examples of `workcrew --help` (the exit codes follow them: [`crate::exit_codes::HELP`]).
pub(crate) const EXAMPLES: &str = "\
Examples:
  # Hash every file listed in jobs.jsonl with a persistent Python worker
  workcrew run jobs.jsonl --function sha256 -- python3 examples/cli/hash_worker.py
  # One process per line, like xargs -P4 (no shell; {} is the line)
  workcrew run --lines --exec -j4 files.txt -- gzip -k {}
  # How far a job got (the same arguments as its run; rerunning the run resumes it)
  workcrew status jobs.jsonl --function sha256 -- python3 examples/cli/hash_worker.py
  # Share one job between machines
  workcrew run --store redis://queue.internal:6379 jobs.jsonl --function f -- ./worker";

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run every job of INPUT (a file, or stdin) through CMD; resumes an earlier run of the
    /// same input and command.
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// Show a job's done / failed / pending counts, rate and ETA, and its failures.
    Status(StatusArgs),
    /// Put a job's failed lines back to pending, then run them: `workcrew retry-failed` takes
    /// the same arguments as `run` and runs only what failed.
    RetryFailed(RunArgs),
    /// Forget a job's journal: the next run starts over.
    Reset(SelectArgs),
    /// Internal: runs CMD in a process group of its own (how `run` starts its workers).
    #[command(name = "__worker", hide = true)]
    Worker {
        /// The worker command.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

const RUN_HELP: &str = "\
Modes:
  default   CMD is a persistent worker speaking the workcrew protocol (docs/protocol.md: the
            Rust worker SDK, workers/python, workers/node); each line is one call to
            --function NAME with the line's JSON value as its argument.
  --exec    one process per line. In CMD, {} is the line (a JSON string without quotes),
            {.} the line without extension, {/} its basename, {#} the line number and
            {field} a field of a JSON object line. Without any {..}, the line is appended
            as the last argument. No shell unless --shell.

Journal: a SQLite file next to INPUT (INPUT.workcrew.db; ./workcrew-journal.db for stdin),
--journal PATH, or --store sqlite:PATH | redis://HOST:PORT | postgres://... to share the job
between machines. The job is named after the input's content and the command line.

Output: one JSON record per line to stdout or --output FILE (appended):
  {\"line\":3,\"id\":2,\"status\":\"ok\",\"result\":...,\"attempts\":1,\"duration_ms\":12}

Exit codes: 0 all ok, 1 some jobs failed, 2 usage error, 130 interrupted.";

/// What names a job: where its journal is, and what identifies it there.
#[derive(Clone, Debug, Args)]
pub(crate) struct SelectArgs {
    /// The job file: one job a line (JSON, or text with --lines). Stdin when absent or `-`.
    pub(crate) input: Option<PathBuf>,

    /// The command: a persistent worker, or with --exec the program run for each line.
    #[arg(last = true, value_name = "CMD")]
    pub(crate) command: Vec<String>,

    /// One process per line instead of a persistent worker.
    #[arg(long)]
    pub(crate) exec: bool,

    /// With --exec: run CMD through `sh -c` (substituted values are quoted).
    #[arg(long, requires = "exec")]
    pub(crate) shell: bool,

    /// Plain text lines instead of JSON lines.
    #[arg(long)]
    pub(crate) lines: bool,

    /// The worker function each line is a call to (not with --exec).
    #[arg(long, short = 'f', value_name = "NAME", conflicts_with = "exec")]
    pub(crate) function: Option<String>,

    /// The SQLite journal file (default: INPUT.workcrew.db, or ./workcrew-journal.db for stdin).
    #[arg(long, value_name = "PATH", conflicts_with = "store")]
    pub(crate) journal: Option<PathBuf>,

    /// The journal's store: sqlite:PATH, redis://..., postgres://... .
    #[arg(long, value_name = "URL")]
    pub(crate) store: Option<String>,

    /// The job's name in the journal (default: derived from the input's content and the command).
    #[arg(long, value_name = "NAME")]
    pub(crate) job: Option<String>,
}

/// `workcrew status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Which job.
    #[command(flatten)]
    pub(crate) select: SelectArgs,

    /// How many failed lines to list.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub(crate) failures: u64,
}

/// `workcrew run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Which job.
    #[command(flatten)]
    pub(crate) select: SelectArgs,

    /// Jobs at once: processes with --exec, else worker processes.
    #[arg(long, short = 'j', value_name = "N")]
    pub(crate) jobs: Option<usize>,

    /// Worker processes kept running (worker mode; the pool grows to --max while calls wait).
    #[arg(long, value_name = "N", conflicts_with = "jobs", requires = "max")]
    pub(crate) min: Option<usize>,

    /// Most worker processes (worker mode).
    #[arg(long, value_name = "N", conflicts_with = "jobs")]
    pub(crate) max: Option<usize>,

    /// How calls pick a worker (worker mode).
    #[arg(long, value_enum, default_value_t = Strategy::FewestInFlight)]
    pub(crate) strategy: Strategy,

    /// Time limit of one attempt of a job (e.g. 30s, 500ms, 2m); past it the job's process
    /// is killed (or its call cancelled) and the attempt fails.
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
    pub(crate) timeout: Option<std::time::Duration>,

    /// Attempts after the first for a failing job, with exponential backoff.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub(crate) retries: u32,

    /// Start at most this many jobs per second, in this process (e.g. 50, 50/s, 600/m).
    #[arg(long, value_name = "N/s", value_parser = crate::config::parse_rate)]
    pub(crate) rate: Option<f64>,

    /// Write the output records in input order (one range of lines at a time: with few
    /// lines per range, give it room with --range-size).
    #[arg(long)]
    pub(crate) ordered: bool,

    /// Append the output records (JSON lines) to FILE instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,

    /// With --exec: write each job's stdout and stderr to DIR/N.out and DIR/N.err (N: its
    /// line number) instead of into its record.
    #[arg(long, value_name = "DIR", requires = "exec")]
    pub(crate) results: Option<PathBuf>,

    /// Stop at the first failed job (after its retries).
    #[arg(long, conflicts_with = "max_failures")]
    pub(crate) fail_fast: bool,

    /// Stop after N failed jobs.
    #[arg(long, value_name = "N")]
    pub(crate) max_failures: Option<u64>,

    /// Lines per range claimed from the journal (default: from the input size and -j).
    #[arg(long, value_name = "N")]
    pub(crate) range_size: Option<u64>,

    /// How long in-flight jobs may finish after Ctrl-C (a second Ctrl-C kills them at once).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = crate::config::parse_duration)]
    pub(crate) grace: std::time::Duration,

    /// How long a run's claim on a range lasts without renewal: after a crash (SIGKILL),
    /// the next run takes the ranges the crashed one held once this has passed.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = crate::config::parse_duration)]
    pub(crate) lease: std::time::Duration,

    /// No progress and no summary.
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
}

/// Routing strategies of the worker pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Strategy {
    /// The worker with the fewest calls in flight.
    FewestInFlight,
    /// Fill the first workers first.
    Fill,
    /// Each worker in turn.
    RoundRobin,
    /// A random worker.
    Random,
    /// The less busy of two random workers.
    PowerOfTwo,
}
