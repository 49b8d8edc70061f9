//! `workcrew`: run a file of jobs (JSON lines) through a crew of workers — persistent worker
//! processes speaking the workcrew protocol, or one process per job — with a journal that
//! makes a rerun resume, retries, timeouts, a progress bar, and a shared store for running
//! one job on many machines. See `workcrew --help`.

mod cli;
mod config;
mod exec;
mod exit_codes;
mod input;
mod journal;
mod output;
mod progress;
mod run;
mod runner;
mod status;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command};
use crate::config::{RunConfig, Selection};
use crate::exit_codes::{Exit, ExitCode};

fn main() -> std::process::ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "__worker") {
        return worker_trampoline();
    }
    // clap prints its own usage errors and exits 2 (ExitCode::Usage).
    let matches = Cli::command()
        .after_help(format!("{}\n\n{}", cli::EXAMPLES, exit_codes::HELP))
        .get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // Worker output reaches `tracing` at INFO (with the worker's id); warnings come from the
    // pool and the journal (a worker restarted, a store retried).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(if cli.verbose {
            tracing::Level::INFO
        } else {
            tracing::Level::WARN
        })
        .with_target(false)
        .without_time()
        .init();
    // --exec: one thread. Each job is a few wake-ups (its process's exit, its pipes' ends)
    // and nothing to compute; on one thread they cost no cross-thread hand-off, and the
    // children get the other cores (measured: 10,000 `true` jobs, -j2).
    let exec = matches!(&cli.command, Command::Run(a) | Command::RetryFailed(a) if a.select.exec);
    let mut builder = if exec {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("workcrew: error: cannot start the runtime: {e}");
            return ExitCode::Failures.into();
        }
    };
    let result = runtime.block_on(dispatch(cli.command));
    // Worker processes and children are reaped by their owners; do not wait for
    // blocking threads (a stdin read) beyond this.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => code.into(),
        Err(e) => {
            let code = e
                .downcast_ref::<Exit>()
                .map_or(ExitCode::Failures, |x| x.code);
            eprintln!("workcrew: error: {}", chain(&e));
            code.into()
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => run::run(RunConfig::from_args(args)?, false).await,
        Command::RetryFailed(args) => run::run(RunConfig::from_args(args)?, true).await,
        Command::Status(args) => {
            status::status(Selection::from_args(args.select, false)?, args.failures).await
        }
        Command::Reset(args) => status::reset(Selection::from_args(args, false)?).await,
        Command::Worker { .. } => unreachable!("handled before the runtime starts"),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "workcrew",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::Success)
        }
    }
}

/// The error and its causes, each cause left out when the text before already says it
/// (some errors repeat their source in their own message).
fn chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}

/// `workcrew __worker -- CMD ARGS`: becomes CMD in a process group of its own. `run` starts
/// its workers this way so that a Ctrl-C in the terminal (sent to the foreground process
/// group) reaches workcrew only: it lets the calls in flight finish, then stops the workers
/// itself. The channel the pool passed (the inherited descriptors) goes through the `exec`.
fn worker_trampoline() -> std::process::ExitCode {
    use std::os::unix::process::CommandExt;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(2).collect();
    let command = match args.first() {
        Some(dashes) if dashes == "--" => &args[1..],
        _ => &args[..],
    };
    let Some((program, rest)) = command.split_first() else {
        eprintln!("workcrew __worker: missing the command after --");
        return ExitCode::Usage.into();
    };
    if let Err(e) = rustix::process::setpgid(None, None) {
        eprintln!("workcrew __worker: cannot make a process group: {e}");
    }
    let e = std::process::Command::new(program).args(rest).exec();
    eprintln!(
        "workcrew __worker: cannot run {}: {e}",
        program.to_string_lossy()
    );
    std::process::ExitCode::from(127)
}
