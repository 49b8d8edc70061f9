//! SIGKILL mid-run then rerun (no job lost, none done twice beyond those in flight);
//! Ctrl-C (SIGINT): in-flight jobs finish, exit 130, a rerun resumes; a second Ctrl-C kills
//! them at once.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use support::{eventually, finish, read_records, signal, wait_deadline, Dir, TEST_WORKER};

/// Per line, how many records the output file has.
fn counts(d: &Dir) -> HashMap<u64, usize> {
    let mut m = HashMap::new();
    for r in read_records(&d.join("out.jsonl")) {
        assert_eq!(r["status"], "ok", "{r}");
        *m.entry(r["line"].as_u64().unwrap()).or_default() += 1;
    }
    m
}

#[test]
fn sigkill_then_rerun_loses_nothing_exec() {
    let d = Dir::new();
    d.write("in.txt", &support::numbers(60));
    let args = [
        "run",
        "--exec",
        "--lines",
        "-j4",
        "-q",
        "--lease",
        "1s",
        "-o",
        "out.jsonl",
        "in.txt",
        "--",
        "sh",
        "-c",
        "sleep 0.1",
    ];
    let mut child = d.command(&args).spawn().unwrap();
    // Kill it once a few jobs are recorded, well before the end.
    assert!(eventually(Duration::from_secs(30), || counts(&d).len() >= 12));
    signal(&child, Signal::KILL);
    let status = wait_deadline(&mut child, Duration::from_secs(10)).expect("killed");
    assert_eq!(status.code(), None, "killed by a signal");
    let before = counts(&d);
    assert!(before.len() < 60, "it was killed mid-run");

    let run = d.run(&args);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let after = counts(&d);
    assert_eq!(after.len(), 60, "every line done");
    let twice: Vec<_> = after.iter().filter(|(_, &n)| n > 1).collect();
    // Only jobs in flight (at most -j = 4) or finished since the last checkpoint (the
    // jobs of the ranges in flight) may run twice; never one recorded in a finished range.
    assert!(twice.len() <= 12, "ran twice: {twice:?}");
    assert!(after.values().all(|&n| n <= 2));
}

#[test]
fn sigkill_then_rerun_loses_nothing_workers() {
    let d = Dir::new();
    let input: String = (0..400).map(|_| "{\"ms\": 20}\n").collect();
    d.write("in.jsonl", &input);
    let args = [
        "run",
        "-j2",
        "-q",
        "--lease",
        "1s",
        "-o",
        "out.jsonl",
        "in.jsonl",
        "--function",
        "sleep",
        "--",
        TEST_WORKER,
    ];
    let mut child = d.command(&args).spawn().unwrap();
    assert!(eventually(Duration::from_secs(30), || counts(&d).len() >= 50));
    signal(&child, Signal::KILL);
    wait_deadline(&mut child, Duration::from_secs(10)).expect("killed");
    let before = counts(&d).len();
    assert!(before < 400, "killed mid-run ({before} done)");

    // Not quiet this time: it says the killed run's lines come back after its lease.
    let loud: Vec<&str> = args.iter().copied().filter(|a| *a != "-q").collect();
    let run = d.run(&loud);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("claimed by another run"),
        "{}",
        run.stderr
    );
    let after = counts(&d);
    assert_eq!(after.len(), 400, "every line done");
    assert!(after.values().all(|&n| n <= 2));
}

#[test]
fn sigint_lets_jobs_in_flight_finish_exits_130_and_resumes() {
    let d = Dir::new();
    d.write("in.txt", &support::numbers(40));
    let args = [
        "run",
        "--exec",
        "--lines",
        "-j2",
        "-o",
        "out.jsonl",
        "in.txt",
        "--",
        "sh",
        "-c",
        "sleep 0.4",
    ];
    let child = d.command(&args).spawn().unwrap();
    assert!(eventually(Duration::from_secs(30), || !counts(&d).is_empty()));
    // Mid-job: both slots busy.
    std::thread::sleep(Duration::from_millis(150));
    let at_signal = counts(&d).len();
    let sent = Instant::now();
    signal(&child, Signal::INT);
    let run = finish(child);
    assert_eq!(run.code, Some(130), "{}", run.stderr);
    assert!(run.stderr.contains("interrupted"), "{}", run.stderr);
    // The two jobs in flight finished (0.4 s each), nothing new started.
    assert!(sent.elapsed() < Duration::from_secs(5));
    let done = counts(&d).len();
    assert!(
        done > at_signal && done <= at_signal + 2,
        "{at_signal} then {done}"
    );

    let run = d.run(&args);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("resuming job"), "{}", run.stderr);
    let after = counts(&d);
    assert_eq!(after.len(), 40);
    assert!(after.values().all(|&n| n == 1), "none ran twice: {after:?}");
}

#[test]
fn a_second_sigint_kills_jobs_in_flight() {
    let d = Dir::new();
    d.write("in.txt", "1\n2\n3\n");
    let args = [
        "run",
        "--exec",
        "--lines",
        "-j2",
        "-o",
        "out.jsonl",
        "in.txt",
        "--",
        "sh",
        "-c",
        "echo started >> started; sleep 30",
    ];
    let child = d.command(&args).spawn().unwrap();
    let started = || {
        std::fs::read_to_string(d.join("started"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert!(eventually(Duration::from_secs(30), || started() == 2));
    let sent = Instant::now();
    signal(&child, Signal::INT);
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, Signal::INT);
    let run = finish(child);
    assert_eq!(run.code, Some(130), "{}", run.stderr);
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "killed, not waited for"
    );
    assert!(
        run.stderr.contains("killing the jobs in flight"),
        "{}",
        run.stderr
    );
    // Killed jobs are not recorded: they run again next time.
    assert!(counts(&d).is_empty());

    let status = d.run(&[
        "status",
        "--exec",
        "--lines",
        "in.txt",
        "--",
        "sh",
        "-c",
        "echo started >> started; sleep 30",
    ]);
    assert!(status.stdout.contains("done     0"), "{}", status.stdout);
    assert!(status.stdout.contains("pending  3"), "{}", status.stdout);
}

#[test]
fn the_grace_ends_with_a_kill() {
    let d = Dir::new();
    d.write("in.txt", "1\n");
    let args = [
        "run",
        "--exec",
        "--lines",
        "--grace",
        "500ms",
        "-o",
        "out.jsonl",
        "in.txt",
        "--",
        "sh",
        "-c",
        "echo started > started; sleep 30",
    ];
    let child = d.command(&args).spawn().unwrap();
    assert!(eventually(Duration::from_secs(30), || d
        .join("started")
        .exists()));
    let sent = Instant::now();
    signal(&child, Signal::INT);
    let run = finish(child);
    assert_eq!(run.code, Some(130), "{}", run.stderr);
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "{:?}",
        sent.elapsed()
    );
    assert!(counts(&d).is_empty());
}

#[test]
fn workers_are_not_in_workcrews_process_group() {
    // A terminal's Ctrl-C goes to the foreground process group: the workers must not be in
    // it, or they would die with the calls workcrew means to let finish.
    let d = Dir::new();
    d.write("in.jsonl", "{\"ms\": 800}\n{\"ms\": 800}\n");
    let args = [
        "run",
        "-j1",
        "-o",
        "out.jsonl",
        "in.jsonl",
        "--function",
        "sleep",
        "--",
        TEST_WORKER,
    ];
    let mut c = d.command(&args);
    // workcrew leads a group of its own here, like a shell job.
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    let child = c.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The whole group, as a terminal would.
    let group = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process_group(group, Signal::INT).expect("signal the group");
    let run = finish(child);
    assert_eq!(run.code, Some(130), "{}", run.stderr);
    // Both calls were in flight in the worker and finished: none failed.
    let records = read_records(&d.join("out.jsonl"));
    assert_eq!(records.len(), 2, "{}", run.stderr);
    assert!(records.iter().all(|r| r["status"] == "ok"), "{records:?}");
}
