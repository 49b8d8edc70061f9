//! `workcrew run` with persistent workers (the Rust SDK test worker, the Python worker),
//! and `status`, `retry-failed`, `reset` on the journal.

mod support;

use support::{lines_with, read_records, repo_root, Dir, TEST_WORKER};

#[test]
fn each_line_is_a_call_with_its_json_value() {
    let d = Dir::new();
    d.write("jobs.jsonl", "{\"a\": 1}\n[1, 2]\n\"s\"\n7\n");
    let run = d.run(&[
        "run",
        "-q",
        "-j2",
        "jobs.jsonl",
        "--function",
        "echo",
        "--",
        TEST_WORKER,
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let records = run.records();
    let result = |line: u64| records.iter().find(|r| r["line"] == line).unwrap()["result"].clone();
    assert_eq!(result(1), serde_json::json!({"a": 1}));
    assert_eq!(result(2), serde_json::json!([1, 2]));
    assert_eq!(result(3), serde_json::json!("s"));
    assert_eq!(result(4), serde_json::json!(7));
}

#[test]
fn text_lines_are_sent_as_strings() {
    let d = Dir::new();
    d.write("in.txt", "hello world\n{not json}\n");
    let run = d.run(&[
        "run",
        "-q",
        "--lines",
        "in.txt",
        "--function",
        "echo",
        "--",
        TEST_WORKER,
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let records = run.records();
    let r2 = records.iter().find(|r| r["line"] == 2).unwrap();
    assert_eq!(r2["result"], "{not json}");
}

#[test]
fn the_python_worker_serves_the_example() {
    let d = Dir::new();
    let root = repo_root();
    let files = root.join("examples/cli/files");
    let jobs: String = ["01.txt", "02.txt", "nope.txt"]
        .iter()
        .map(|f| format!("{{\"path\": {:?}, \"rounds\": 10}}\n", files.join(f)))
        .collect();
    d.write("jobs.jsonl", &jobs);
    let worker = root.join("examples/cli/hash_worker.py");
    let run = d.run(&[
        "run",
        "-q",
        "-j2",
        "jobs.jsonl",
        "--function",
        "sha256",
        "--",
        "python3",
        worker.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let records = run.records();
    assert_eq!(lines_with(&records, "ok"), [1, 2]);
    let r1 = records.iter().find(|r| r["line"] == 1).unwrap();
    assert_eq!(r1["result"]["sha256"].as_str().unwrap().len(), 64);
    let r3 = records.iter().find(|r| r["line"] == 3).unwrap();
    assert!(
        r3["error"].as_str().unwrap().starts_with("cannot read"),
        "{r3}"
    );
}

#[test]
fn unknown_function_is_a_usage_error() {
    let d = Dir::new();
    d.write("jobs.jsonl", "1\n2\n");
    let run = d.run(&[
        "run",
        "-q",
        "jobs.jsonl",
        "--function",
        "nope",
        "--",
        TEST_WORKER,
    ]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("no worker serves a function named \"nope\""),
        "{}",
        run.stderr
    );
    assert!(run.records().is_empty());
    // Nothing was recorded as done or failed: a run with the right function does it all.
    let run = d.run(&[
        "run",
        "-q",
        "jobs.jsonl",
        "--function",
        "echo",
        "--",
        TEST_WORKER,
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    let run = d.run(&["run", "-q", "jobs.jsonl", "--", TEST_WORKER]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("missing --function"), "{}", run.stderr);
}

#[test]
fn strategies_and_pool_sizes() {
    for args in [
        &["--strategy", "round-robin", "-j", "3"][..],
        &["--strategy", "fill", "--min", "1", "--max", "3"][..],
        &["--strategy", "power-of-two", "--max", "2"][..],
        &["--strategy", "random"][..],
    ] {
        let d = Dir::new();
        d.write("in.txt", &support::numbers(200));
        let mut a = vec!["run", "-q", "in.txt", "--function", "echo"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--", TEST_WORKER]);
        let run = d.run(&a);
        assert_eq!(run.code, Some(0), "{args:?}: {}", run.stderr);
        assert_eq!(lines_with(&run.records(), "ok").len(), 200, "{args:?}");
    }
    let d = Dir::new();
    d.write("in.txt", "1\n");
    let run = d.run(&[
        "run",
        "--min",
        "3",
        "--max",
        "2",
        "in.txt",
        "-f",
        "echo",
        "--",
        TEST_WORKER,
    ]);
    assert_eq!(run.code, Some(2));
}

#[test]
fn timeout_cancels_the_call() {
    let d = Dir::new();
    d.write("in.txt", "{\"ms\": 5000}\n{\"ms\": 1}\n");
    let run = d.run(&[
        "run",
        "-q",
        "--timeout",
        "300ms",
        "in.txt",
        "--function",
        "sleep",
        "--",
        TEST_WORKER,
    ]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let records = run.records();
    assert_eq!(lines_with(&records, "failed"), [1]);
    assert_eq!(lines_with(&records, "ok"), [2]);
}

#[test]
fn retries_call_again() {
    let d = Dir::new();
    let marker = d.join("seen");
    d.write("in.txt", &format!("{{\"flaky\": {:?}}}\n", marker));
    let run = d.run(&[
        "run",
        "-q",
        "--retries",
        "2",
        "in.txt",
        "--function",
        "flaky",
        "--",
        TEST_WORKER,
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.records()[0]["attempts"], 2);
}

#[test]
fn status_retry_failed_and_reset() {
    let d = Dir::new();
    let marker = d.join("seen");
    // Line 2 fails on its first call only; lines 1 and 3 succeed.
    d.write(
        "jobs.jsonl",
        &format!("1\n{{\"flaky\": {:?}}}\n3\n", marker),
    );
    let args = ["jobs.jsonl", "--function", "flaky", "--", TEST_WORKER];
    let with = |cmd: &[&str]| -> Vec<String> {
        cmd.iter()
            .chain(args.iter())
            .map(|s| (*s).to_owned())
            .collect()
    };
    let strs = |v: &[String]| v.iter().map(String::as_str).collect::<Vec<_>>().join(" ");
    let run_args = with(&["run", "-q", "-o", "out.jsonl"]);
    let run = d.run(&run_args.iter().map(String::as_str).collect::<Vec<_>>());
    // Lines 1 and 3 are numbers: `flaky` finds no marker path "", whose metadata fails,
    // and writing "" fails too: they fail. Line 2 fails on its first call.
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(
        lines_with(&read_records(&d.join("out.jsonl")), "failed"),
        [1, 2, 3]
    );

    let status_args = with(&["status"]);
    let status = d.run(&status_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(status.code, Some(1), "{}", strs(&status_args));
    assert!(status.stdout.contains("failed   3"), "{}", status.stdout);
    assert!(
        status.stdout.contains("line 2: first call for"),
        "{}",
        status.stdout
    );

    // retry-failed runs only the failed lines: line 2 now succeeds.
    let retry_args = with(&["retry-failed", "-q", "-o", "out.jsonl"]);
    let retry = d.run(&retry_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(retry.code, Some(1), "{}", retry.stderr);
    let records = read_records(&d.join("out.jsonl"));
    assert_eq!(
        records.len(),
        6,
        "three failed lines ran again, nothing else"
    );
    assert_eq!(lines_with(&records, "ok"), [2]);
    let status = d.run(&status_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(status.stdout.contains("done     1"), "{}", status.stdout);
    assert!(status.stdout.contains("failed   2"), "{}", status.stdout);

    let reset = d.run(
        &with(&["reset"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(reset.code, Some(0), "{}", reset.stderr);
    let status = d.run(&status_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(status.code, Some(0));
    assert!(
        status.stdout.contains("not in the journal"),
        "{}",
        status.stdout
    );
}

#[test]
fn another_command_is_another_job() {
    let d = Dir::new();
    d.write("in.txt", "1\n2\n");
    let run = d.run(&["run", "-q", "in.txt", "-f", "echo", "--", TEST_WORKER]);
    assert_eq!(run.records().len(), 2);
    // The same input through another function: a job of its own, run in full.
    let run = d.run(&["run", "-q", "in.txt", "-f", "check", "--", TEST_WORKER]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.records().len(), 2);
    // The first again: resumed, nothing to do.
    let run = d.run(&["run", "in.txt", "-f", "echo", "--", TEST_WORKER]);
    assert_eq!(run.code, Some(0));
    assert!(run.records().is_empty());
    assert!(run.stderr.contains("resuming job"), "{}", run.stderr);
}

#[test]
fn verbose_shows_worker_output() {
    let d = Dir::new();
    d.write("in.jsonl", "\"hello from the worker\"\n");
    let run = d.run(&["run", "-q", "in.jsonl", "-f", "say", "--", TEST_WORKER]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        !run.stderr.contains("hello from the worker"),
        "{}",
        run.stderr
    );
    let d = Dir::new();
    d.write("in.jsonl", "\"hello from the worker\"\n");
    let run = d.run(&[
        "run",
        "-v",
        "-q",
        "in.jsonl",
        "-f",
        "say",
        "--",
        TEST_WORKER,
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("hello from the worker"),
        "{}",
        run.stderr
    );
}

#[test]
fn status_of_a_running_job_shows_rate_and_eta() {
    let d = Dir::new();
    d.write("in.txt", &support::numbers(60));
    let args = ["--exec", "--lines", "in.txt", "--", "sh", "-c", "sleep 0.1"];
    let mut run_args = vec!["run", "-q", "-j2", "-o", "out.jsonl"];
    run_args.extend_from_slice(&args);
    let child = d.command(&run_args).spawn().unwrap();
    assert!(support::eventually(
        std::time::Duration::from_secs(30),
        || { read_records(&d.join("out.jsonl")).len() >= 4 }
    ));
    let mut status_args = vec!["status"];
    status_args.extend_from_slice(&args);
    let status = d.run(&status_args);
    let run = support::finish(child);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    assert!(status.stdout.contains("total    60"), "{}", status.stdout);
    assert!(status.stdout.contains("rate     "), "{}", status.stdout);
    assert!(status.stdout.contains("eta      "), "{}", status.stdout);
}

#[test]
fn the_node_worker_serves_a_module() {
    let d = Dir::new();
    d.write("double.js", "exports.double = (x) => x * 2;\n");
    d.write("in.jsonl", "1\n2\n3\n");
    let serve = repo_root().join("workers/node/serve.js");
    let module = d.join("double.js");
    let run = d.run(&[
        "run",
        "-q",
        "in.jsonl",
        "-f",
        "double",
        "--",
        "node",
        serve.to_str().unwrap(),
        module.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let mut results: Vec<i64> = run
        .records()
        .iter()
        .map(|r| r["result"].as_i64().unwrap())
        .collect();
    results.sort_unstable();
    assert_eq!(results, [2, 4, 6]);
}

#[test]
fn journal_path_and_sqlite_store_url() {
    let d = Dir::new();
    d.write("in.txt", "1\n2\n");
    let run = d.run(&[
        "run",
        "-q",
        "--journal",
        "elsewhere.db",
        "in.txt",
        "-f",
        "echo",
        "--",
        TEST_WORKER,
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(d.join("elsewhere.db").exists());
    assert!(!d.join("in.txt.workcrew.db").exists());
    // The same file as a store URL: the same job, already done.
    let run = d.run(&[
        "run",
        "-q",
        "--store",
        "sqlite:elsewhere.db",
        "in.txt",
        "-f",
        "echo",
        "--",
        TEST_WORKER,
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.records().is_empty(), "resumed: {}", run.stdout);
    let run = d.run(&[
        "run",
        "--store",
        "mysql://x",
        "in.txt",
        "-f",
        "echo",
        "--",
        TEST_WORKER,
    ]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("expected sqlite:PATH"),
        "{}",
        run.stderr
    );
}
