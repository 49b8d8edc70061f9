//! What the CLI tests share: the real binary run in a temp dir with a deadline, its output
//! records, and signals to the processes the tests started.
#![allow(dead_code, unreachable_pub)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `workcrew` binary.
pub const WORKCREW: &str = env!("CARGO_BIN_EXE_workcrew");
/// The Rust test worker (echo, check, sleep, flaky).
pub const TEST_WORKER: &str = env!("CARGO_BIN_EXE_workcrew-cli-test-worker");

/// How long any one CLI run may take before the test kills it and fails.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// A finished run.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The stdout lines parsed as JSON records.
    pub fn records(&self) -> Vec<Value> {
        parse_records(&self.stdout)
    }
}

pub fn parse_records(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("record {l:?}: {e}")))
        .collect()
}

/// Reads the records of an output file.
pub fn read_records(path: &Path) -> Vec<Value> {
    parse_records(&std::fs::read_to_string(path).unwrap_or_default())
}

/// A temp dir to run in.
pub struct Dir {
    pub dir: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        Dir {
            dir: tempfile::tempdir().expect("a temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.join(name);
        std::fs::write(&p, text).expect("write a file");
        p
    }

    /// `workcrew ARGS` in this dir.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(WORKCREW);
        c.args(args)
            .current_dir(self.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs `workcrew ARGS` to its end (killed and failed past [`DEADLINE`]).
    pub fn run(&self, args: &[&str]) -> Run {
        finish(self.command(args).spawn().expect("start workcrew"))
    }

    /// Runs with `stdin` as its input.
    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Run {
        let mut c = self.command(args);
        c.stdin(Stdio::piped());
        let mut child = c.spawn().expect("start workcrew");
        let mut input = child.stdin.take().expect("stdin");
        let text = stdin.to_owned();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let _ = input.write_all(text.as_bytes());
        });
        let run = finish(child);
        writer.join().expect("the stdin writer");
        run
    }
}

/// Drains a started run and waits for it, with the deadline.
pub fn finish(mut child: Child) -> Run {
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_deadline(&mut child, DEADLINE);
    let stdout = out_reader.join().expect("stdout reader");
    let stderr = err_reader.join().expect("stderr reader");
    let Some(status) = status else {
        panic!("workcrew did not finish within {DEADLINE:?}; stderr:\n{stderr}");
    };
    Run {
        code: status.code(),
        stdout,
        stderr,
    }
}

/// Waits for `child` up to `deadline`; past it kills and reaps it and returns `None`.
pub fn wait_deadline(child: &mut Child, deadline: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `signal` to a process this test started.
pub fn signal(child: &Child, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a pid");
    rustix::process::kill_process(pid, signal).expect("signal the child");
}

/// Polls `f` every 20 ms until it is true or `within` passed.
pub fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// The `line` fields of records with `status`.
pub fn lines_with(records: &[Value], status: &str) -> Vec<u64> {
    let mut v: Vec<u64> = records
        .iter()
        .filter(|r| r["status"] == status)
        .map(|r| r["line"].as_u64().expect("a line number"))
        .collect();
    v.sort_unstable();
    v
}

/// `1..=n` as lines of text.
pub fn numbers(n: u64) -> String {
    (1..=n).map(|i| format!("{i}\n")).collect()
}

/// The Python worker module serving the repository's `examples/cli/hash_worker.py`.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
