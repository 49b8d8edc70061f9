//! Two CLI processes sharing one job through Redis and through Postgres: every line done
//! once, by one of them. The servers are the ones `.ci/run` names (`REDIS_URL`,
//! `DATABASE_URL`, with the same defaults as the store crates' tests); a server that does
//! not answer fails the test, naming the URL.

mod support;

use std::collections::HashMap;

use support::{finish, read_records, Dir, TEST_WORKER};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A job name no other test or run uses.
fn unique_job(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("workcrew-cli-test-{test}-{}-{nanos}", std::process::id())
}

fn two_processes_share_one_job(store: &str, test: &str) {
    let d = Dir::new();
    let job = unique_job(test);
    let input: String = (0..600)
        .map(|i| format!("{{\"ms\": 5, \"i\": {i}}}\n"))
        .collect();
    d.write("in.jsonl", &input);
    let args = |out: &'static str| {
        vec![
            "run",
            "-q",
            "-j2",
            "--range-size",
            "20",
            "--store",
            store,
            "--job",
            &job,
            "-o",
            out,
            "in.jsonl",
            "--function",
            "sleep",
            "--",
            TEST_WORKER,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>()
    };
    let spawn = |out: &'static str| {
        let a = args(out);
        d.command(&a.iter().map(String::as_str).collect::<Vec<_>>())
            .spawn()
            .expect("start workcrew")
    };
    let a = spawn("a.jsonl");
    let b = spawn("b.jsonl");
    let (ra, rb) = (finish(a), finish(b));
    let reset = d.run(&["reset", "--store", store, "--job", &job]);
    assert_eq!(ra.code, Some(0), "first: {}", ra.stderr);
    assert_eq!(rb.code, Some(0), "second: {}", rb.stderr);
    assert_eq!(reset.code, Some(0), "{}", reset.stderr);

    let (ka, kb) = (
        read_records(&d.join("a.jsonl")),
        read_records(&d.join("b.jsonl")),
    );
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for r in ka.iter().chain(kb.iter()) {
        assert_eq!(r["status"], "ok");
        *seen.entry(r["line"].as_u64().unwrap()).or_default() += 1;
    }
    assert_eq!(seen.len(), 600, "every line done");
    assert!(seen.values().all(|&n| n == 1), "none done twice");
    assert!(
        !ka.is_empty() && !kb.is_empty(),
        "both processes took part ({} and {})",
        ka.len(),
        kb.len()
    );
}

#[test]
fn two_processes_share_a_job_through_redis() {
    two_processes_share_one_job(&redis_url(), "redis");
}

#[test]
fn two_processes_share_a_job_through_postgres() {
    two_processes_share_one_job(&database_url(), "postgres");
}

#[test]
fn status_reads_a_shared_store() {
    let d = Dir::new();
    let store = redis_url();
    let job = unique_job("status");
    d.write("in.txt", "1\n2\n");
    let run = d.run(&[
        "run",
        "-q",
        "--store",
        &store,
        "--job",
        &job,
        "in.txt",
        "-f",
        "echo",
        "--",
        TEST_WORKER,
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let status = d.run(&["status", "--store", &store, "--job", &job]);
    let reset = d.run(&["reset", "--store", &store, "--job", &job]);
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    assert!(status.stdout.contains("done     2"), "{}", status.stdout);
    assert_eq!(reset.code, Some(0));
}
