//! The arguments validated once into plain configuration.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::cli::{RunArgs, SelectArgs, Strategy};
use crate::exit_codes::Exit;

/// What a job's lines are run through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One process per line.
    Exec {
        /// Through `sh -c`.
        shell: bool,
    },
    /// Calls to a function of persistent workers.
    Worker {
        /// The function.
        function: String,
    },
}

/// Where the journal lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StoreUrl {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A Redis server.
    Redis(String),
    /// A Postgres database.
    Postgres(String),
}

/// Which job, in which journal: what every subcommand needs.
#[derive(Clone, Debug)]
pub(crate) struct Selection {
    /// The input file; `None` for stdin.
    pub(crate) input: Option<PathBuf>,
    /// The command and its arguments.
    pub(crate) command: Vec<String>,
    /// Exec or worker mode.
    pub(crate) mode: Mode,
    /// Plain text lines instead of JSON.
    pub(crate) text_lines: bool,
    /// The journal.
    pub(crate) store: StoreUrl,
    /// An explicit job name.
    pub(crate) job: Option<String>,
}

/// A validated `run`.
#[derive(Clone, Debug)]
pub(crate) struct RunConfig {
    /// Which job.
    pub(crate) select: Selection,
    /// Jobs at once (exec), or workers (worker mode: `min..=max`).
    pub(crate) jobs: usize,
    /// Worker pool minimum (worker mode).
    pub(crate) min_workers: usize,
    /// Routing.
    pub(crate) strategy: Strategy,
    /// Per attempt.
    pub(crate) timeout: Option<Duration>,
    /// Attempts after the first.
    pub(crate) retries: u32,
    /// Job starts per second.
    pub(crate) rate: Option<f64>,
    /// Records in input order.
    pub(crate) ordered: bool,
    /// Records file; `None`: stdout.
    pub(crate) output: Option<PathBuf>,
    /// Exec output directory.
    pub(crate) results: Option<PathBuf>,
    /// Stop after this many failures.
    pub(crate) max_failures: Option<u64>,
    /// Lines per range; `None`: chosen from the input size.
    pub(crate) range_size: Option<u64>,
    /// Time in-flight jobs get after an interrupt.
    pub(crate) grace: Duration,
    /// The range lease.
    pub(crate) lease: Duration,
    /// No progress, no summary.
    pub(crate) quiet: bool,
}

impl Selection {
    /// Validates the selection arguments; `need_command` for `run` (and for naming the job
    /// when no `--job` is given).
    pub(crate) fn from_args(args: SelectArgs, need_command: bool) -> Result<Selection> {
        let input = args.input.filter(|p| p.as_os_str() != "-");
        if need_command && args.command.is_empty() {
            return Err(Exit::usage(
                "missing command: give it after `--`, e.g. `workcrew run jobs.jsonl --function f -- python3 worker.py`",
            ));
        }
        if !need_command && args.command.is_empty() && args.job.is_none() {
            return Err(Exit::usage(
                "which job? give the run's INPUT and `-- CMD` (with the same --exec/--function/--lines), or --job NAME",
            ));
        }
        let mode = if args.exec {
            Mode::Exec { shell: args.shell }
        } else {
            match args.function {
                Some(function) if !function.is_empty() => Mode::Worker { function },
                _ if args.job.is_some() && args.command.is_empty() => Mode::Worker {
                    function: String::new(),
                },
                _ => {
                    return Err(Exit::usage(
                        "missing --function NAME: the worker function each line is a call to (or --exec for one process per line)",
                    ))
                }
            }
        };
        let store = match (&args.journal, &args.store) {
            (Some(path), _) => StoreUrl::Sqlite(path.clone()),
            (None, Some(url)) => parse_store_url(url)?,
            (None, None) => StoreUrl::Sqlite(default_journal(input.as_deref())),
        };
        if let Some(job) = &args.job {
            if job.is_empty() {
                return Err(Exit::usage("--job: the name is empty"));
            }
        }
        Ok(Selection {
            input,
            command: args.command,
            mode,
            text_lines: args.lines,
            store,
            job: args.job,
        })
    }
}

impl RunConfig {
    /// Validates `run`'s arguments.
    pub(crate) fn from_args(args: RunArgs) -> Result<RunConfig> {
        let select = Selection::from_args(args.select, true)?;
        let exec = matches!(select.mode, Mode::Exec { .. });
        let (jobs, min_workers) = match (args.jobs, args.min, args.max) {
            (Some(0), _, _) => return Err(Exit::usage("-j/--jobs must be at least 1")),
            (Some(n), _, _) => (n, n),
            (None, min, Some(max)) => {
                if exec {
                    return Err(Exit::usage(
                        "--min/--max size the worker pool; with --exec use -j N",
                    ));
                }
                let min = min.unwrap_or(1);
                if max == 0 || min > max {
                    return Err(Exit::usage(format!(
                        "--min {min} --max {max}: need 1 <= max and min <= max"
                    )));
                }
                (max, min)
            }
            (None, _, None) => {
                let n = std::thread::available_parallelism().map_or(2, |n| n.get());
                (n, n)
            }
        };
        if let Some(rate) = args.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(Exit::usage("--rate must be above 0"));
            }
        }
        if args.range_size == Some(0) {
            return Err(Exit::usage("--range-size must be at least 1"));
        }
        if args.max_failures == Some(0) {
            return Err(Exit::usage("--max-failures must be at least 1"));
        }
        if args.lease < Duration::from_secs(1) {
            return Err(Exit::usage("--lease must be at least 1s"));
        }
        if args.timeout == Some(Duration::ZERO) {
            return Err(Exit::usage("--timeout must be above 0"));
        }
        Ok(RunConfig {
            select,
            jobs,
            min_workers,
            strategy: args.strategy,
            timeout: args.timeout,
            retries: args.retries,
            rate: args.rate,
            ordered: args.ordered,
            output: args.output,
            results: args.results,
            max_failures: if args.fail_fast {
                Some(1)
            } else {
                args.max_failures
            },
            range_size: args.range_size,
            grace: args.grace,
            lease: args.lease,
            quiet: args.quiet,
        })
    }
}

/// `INPUT.workcrew.db` beside the input, or `./workcrew-journal.db` for stdin.
fn default_journal(input: Option<&std::path::Path>) -> PathBuf {
    match input {
        Some(path) => {
            let mut name = path.as_os_str().to_owned();
            name.push(".workcrew.db");
            PathBuf::from(name)
        }
        None => PathBuf::from("workcrew-journal.db"),
    }
}

fn parse_store_url(url: &str) -> Result<StoreUrl> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err(Exit::usage("--store sqlite:PATH: the path is empty"));
        }
        Ok(StoreUrl::Sqlite(PathBuf::from(path)))
    } else if url.starts_with("redis://") || url.starts_with("rediss://") {
        Ok(StoreUrl::Redis(url.to_owned()))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(StoreUrl::Postgres(url.to_owned()))
    } else {
        Err(Exit::usage(format!(
            "--store {}: expected sqlite:PATH, redis://... or postgres://...",
            workcrew::batch::redact_url(url)
        )))
    }
}

/// Parses `30s`, `500ms`, `2m`, `1h` or a number of seconds (`1.5`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 30s, 500ms, 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{s:?} is not a duration"))
}

/// Parses `50`, `50/s`, `600/m`, `3600/h` into jobs per second.
pub(crate) fn parse_rate(s: &str) -> Result<f64, String> {
    let (number, per) = s.split_once('/').unwrap_or((s, "s"));
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a rate (e.g. 50/s)"))?;
    let per_second = match per.trim() {
        "s" | "sec" => value,
        "m" | "min" => value / 60.0,
        "h" => value / 3600.0,
        other => return Err(format!("{s:?}: unknown period {other:?} (s, m, h)")),
    };
    if per_second.is_finite() && per_second > 0.0 {
        Ok(per_second)
    } else {
        Err(format!("{s:?}: the rate must be above 0"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3d").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("50"), Ok(50.0));
        assert_eq!(parse_rate("50/s"), Ok(50.0));
        assert_eq!(parse_rate("120/m"), Ok(2.0));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn journal_beside_the_input() {
        assert_eq!(
            default_journal(Some(std::path::Path::new("a/jobs.jsonl"))),
            PathBuf::from("a/jobs.jsonl.workcrew.db")
        );
        assert_eq!(default_journal(None), PathBuf::from("workcrew-journal.db"));
    }
}
