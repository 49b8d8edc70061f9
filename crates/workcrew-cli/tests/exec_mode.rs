//! `workcrew run --exec`: one process per line, each option, the real binary in a temp dir.

mod support;

use std::time::{Duration, Instant};

use support::{lines_with, numbers, read_records, Dir};

#[test]
fn substitution_and_captured_output() {
    let d = Dir::new();
    d.write(
        "jobs.jsonl",
        "\"photos/a.jpg\"\n{\"name\": \"x\", \"n\": 3}\n",
    );
    // {} {.} {/} {#} for a string line; {name} {n} for the object line (missing in line 1).
    let run = d.run(&[
        "run",
        "--exec",
        "-j2",
        "-q",
        "jobs.jsonl",
        "--",
        "echo",
        "{#}",
        "{name}",
        "{n}",
    ]);
    assert_eq!(
        run.code,
        Some(1),
        "line 1 has no field name: {}",
        run.stderr
    );
    let records = run.records();
    let line1 = records.iter().find(|r| r["line"] == 1).unwrap();
    assert_eq!(line1["status"], "failed");
    assert_eq!(line1["error"], "line 1 has no field \"name\"");
    let line2 = records.iter().find(|r| r["line"] == 2).unwrap();
    assert_eq!(line2["status"], "ok");
    assert_eq!(line2["result"]["stdout"], "2 x 3\n");
    assert_eq!(line2["result"]["exit_code"], 0);
    assert_eq!(line2["attempts"], 1);
    assert!(line2["duration_ms"].is_u64());

    let d = Dir::new();
    d.write("files.txt", "photos/a.b.jpg\n");
    let run = d.run(&[
        "run",
        "--exec",
        "--lines",
        "-q",
        "files.txt",
        "--",
        "echo",
        "{}",
        "{.}",
        "{/}",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.records()[0]["result"]["stdout"],
        "photos/a.b.jpg photos/a.b a.b.jpg\n"
    );
}

#[test]
fn the_line_is_appended_without_placeholder_and_no_shell_by_default() {
    let d = Dir::new();
    d.write("in.txt", "a b; echo injected\n");
    let run = d.run(&["run", "--exec", "--lines", "-q", "in.txt", "--", "echo"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    // One argument, passed as it is: no shell ran the `;`.
    assert_eq!(run.records()[0]["result"]["stdout"], "a b; echo injected\n");
}

#[test]
fn shell_mode_quotes_values() {
    let d = Dir::new();
    d.write("in.txt", "it's here\n");
    let run = d.run(&[
        "run", "--exec", "--shell", "--lines", "-q", "in.txt", "--", "printf", "%s", "{}", "|",
        "wc", "-c",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.records()[0]["result"]["stdout"]
            .as_str()
            .unwrap()
            .trim(),
        "9"
    );
}

#[test]
fn results_dir_and_output_file() {
    let d = Dir::new();
    d.write("in.txt", "one\ntwo\n");
    let run = d.run(&[
        "run",
        "--exec",
        "--lines",
        "-q",
        "--results",
        "res",
        "--output",
        "out.jsonl",
        "in.txt",
        "--",
        "sh",
        "-c",
        "echo out:$0; echo err:$0 >&2",
        "{}",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "records go to the file");
    let records = read_records(&d.join("out.jsonl"));
    assert_eq!(lines_with(&records, "ok"), [1, 2]);
    assert_eq!(
        std::fs::read_to_string(d.join("res/2.out")).unwrap(),
        "out:two\n"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("res/2.err")).unwrap(),
        "err:two\n"
    );
    let r2 = records.iter().find(|r| r["line"] == 2).unwrap();
    assert!(r2["result"]["stdout_file"]
        .as_str()
        .unwrap()
        .ends_with("res/2.out"));
}

#[test]
fn jobs_run_in_parallel_up_to_j() {
    let d = Dir::new();
    d.write("in.txt", &numbers(8));
    let start = Instant::now();
    let run = d.run(&[
        "run",
        "--exec",
        "--lines",
        "-j4",
        "-q",
        "in.txt",
        "--",
        "sh",
        "-c",
        "sleep 0.5",
    ]);
    let took = start.elapsed();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        lines_with(&run.records(), "ok"),
        (1..=8).collect::<Vec<_>>()
    );
    // 8 half-second jobs, 4 at once: two rounds, not eight.
    assert!(took < Duration::from_millis(3500), "took {took:?}");
    assert!(
        took >= Duration::from_millis(1000),
        "took {took:?}: more than 4 at once?"
    );
}

#[test]
fn timeout_kills_the_process_and_fails_the_attempt() {
    let d = Dir::new();
    d.write("in.txt", "5\n0\n");
    let start = Instant::now();
    let run = d.run(&[
        "run",
        "--exec",
        "--lines",
        "-q",
        "--timeout",
        "300ms",
        "in.txt",
        "--",
        "sleep",
        "{}",
    ]);
    assert_eq!(run.code, Some(1));
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "the 5 s sleep was cut"
    );
    let records = run.records();
    assert_eq!(lines_with(&records, "failed"), [1]);
    assert_eq!(lines_with(&records, "ok"), [2]);
    let failed = records.iter().find(|r| r["line"] == 1).unwrap();
    assert!(
        failed["error"].as_str().unwrap().contains("timed out"),
        "{failed}"
    );
}

#[test]
fn retries_with_backoff_until_success() {
    let d = Dir::new();
    d.write("in.txt", "x\n");
    // Fails until its third attempt (counts attempts in a file).
    let run = d.run(&[
        "run",
        "--exec",
        "--lines",
        "-q",
        "--retries",
        "3",
        "in.txt",
        "--",
        "sh",
        "-c",
        "echo . >> attempts; test $(wc -l < attempts) -ge 3",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let r = &run.records()[0];
    assert_eq!(r["status"], "ok");
    assert_eq!(r["attempts"], 3);
    // Backoff 100 ms then 200 ms between the attempts.
    assert!(r["duration_ms"].as_u64().unwrap() >= 300, "{r}");

    let d = Dir::new();
    d.write("in.txt", "x\n");
    let run = d.run(&[
        "run",
        "--exec",
        "--lines",
        "-q",
        "--retries",
        "1",
        "in.txt",
        "--",
        "false",
    ]);
    assert_eq!(run.code, Some(1));
    assert_eq!(run.records()[0]["attempts"], 2);
}

#[test]
fn rate_limits_job_starts() {
    let d = Dir::new();
    d.write("in.txt", &numbers(6));
    let start = Instant::now();
    let run = d.run(&[
        "run", "--exec", "--lines", "-j4", "-q", "--rate", "10/s", "in.txt", "--", "true",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    // Six starts 100 ms apart: at least 500 ms.
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn ordered_output_follows_the_input() {
    let d = Dir::new();
    // Earlier lines sleep longer, so unordered output would come reversed.
    let input: String = (0..12).map(|i| format!("0.{}\n", 12 - i)).collect();
    d.write("in.txt", &input);
    let run = d.run(&[
        "run",
        "--exec",
        "--lines",
        "-j4",
        "-q",
        "--ordered",
        "--range-size",
        "12",
        "in.txt",
        "--",
        "sleep",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines: Vec<u64> = run
        .records()
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, (1..=12).collect::<Vec<_>>());
}

#[test]
fn fail_fast_stops_at_the_first_failure() {
    let d = Dir::new();
    d.write("in.txt", &numbers(50));
    let run = d.run(&[
        "run",
        "--exec",
        "--lines",
        "-j1",
        "-q",
        "--fail-fast",
        "in.txt",
        "--",
        "sh",
        "-c",
        "test $0 -ne 3",
        "{}",
    ]);
    assert_eq!(run.code, Some(1));
    let records = run.records();
    assert_eq!(lines_with(&records, "failed"), [3]);
    assert!(records.len() < 10, "stopped early, ran {}", records.len());
}

#[test]
fn max_failures_stops_after_n() {
    let d = Dir::new();
    d.write("in.txt", &numbers(60));
    let run = d.run(&[
        "run",
        "--exec",
        "--lines",
        "-j1",
        "-q",
        "--max-failures",
        "3",
        "in.txt",
        "--",
        "sh",
        "-c",
        "test $(( $0 % 2 )) -eq 0",
        "{}",
    ]);
    assert_eq!(run.code, Some(1));
    let records = run.records();
    assert_eq!(lines_with(&records, "failed"), [1, 3, 5]);
    assert!(records.len() < 20, "ran {}", records.len());
}

#[test]
fn stdin_input_and_its_journal_in_the_working_directory() {
    let d = Dir::new();
    let run = d.run_stdin(&["run", "--exec", "--lines", "-q", "--", "echo"], "a\nb\n");
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(lines_with(&run.records(), "ok"), [1, 2]);
    assert!(d.join("workcrew-journal.db").exists());
    // Again: resumed, nothing left to do.
    let again = d.run_stdin(&["run", "--exec", "--lines", "-q", "--", "echo"], "a\nb\n");
    assert_eq!(again.code, Some(0));
    assert!(again.records().is_empty(), "{}", again.stdout);
}

#[test]
fn bad_input_is_a_usage_error_naming_the_line_and_touches_no_journal() {
    let d = Dir::new();
    d.write("jobs.jsonl", "{\"a\": 1}\n\n{\"a\": 2\n");
    let run = d.run(&["run", "--exec", "jobs.jsonl", "--", "echo"]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("jobs.jsonl, line 3: not a JSON value"),
        "{}",
        run.stderr
    );
    assert!(!d.join("jobs.jsonl.workcrew.db").exists());

    let run = d.run(&["run", "--exec", "missing.jsonl", "--", "echo"]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("missing.jsonl does not exist"),
        "{}",
        run.stderr
    );
}

#[test]
fn missing_or_unknown_command_is_a_usage_error() {
    let d = Dir::new();
    d.write("in.txt", "a\n");
    let run = d.run(&["run", "--exec", "--lines", "in.txt"]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("missing command"), "{}", run.stderr);

    let run = d.run(&[
        "run",
        "--exec",
        "--lines",
        "in.txt",
        "--",
        "no-such-program-here",
    ]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr
            .contains("command not found: no-such-program-here"),
        "{}",
        run.stderr
    );
    assert!(!d.join("in.txt.workcrew.db").exists());

    let run = d.run(&[
        "run", "--exec", "--lines", "-j", "0", "in.txt", "--", "true",
    ]);
    assert_eq!(run.code, Some(2));
    let run = d.run(&["run", "--bogus-flag", "in.txt", "--", "true"]);
    assert_eq!(run.code, Some(2));
}
