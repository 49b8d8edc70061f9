//! `workcrew-cli-test-worker`: a worker built with the Rust worker SDK, for the CLI's tests
//! and bench. JSON values in and out:
//!
//! - `echo`: returns its argument;
//! - `check`: fails (`asked to fail`) when its argument is an object with `"fail": true`,
//!   else returns it;
//! - `sleep`: sleeps `ms` milliseconds (a number, or an object's `ms` field), returns it;
//! - `flaky`: fails on the first call for an argument whose `flaky` field names a file
//!   that does not exist yet (and creates it), succeeds afterwards;
//! - `say`: prints its argument (a string) to stderr, returns it.

use std::time::Duration;

use serde_json::Value;
use workcrew::worker::{ServeError, Worker};

fn ms(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.get("ms").and_then(Value::as_u64))
        .unwrap_or(0)
}

fn main() -> Result<(), ServeError> {
    Worker::builder()
        .concurrency(1024)
        .async_function("echo", |v: Value| async move { Ok::<_, String>(v) })
        .function("check", |v: Value| {
            if v.get("fail").and_then(Value::as_bool) == Some(true) {
                Err("asked to fail".to_owned())
            } else {
                Ok(v)
            }
        })
        .async_function("sleep", |v: Value| async move {
            let ms = ms(&v);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, String>(Value::from(ms))
        })
        .function("flaky", |v: Value| {
            let path = v.get("flaky").and_then(Value::as_str).unwrap_or_default();
            if std::fs::metadata(path).is_ok() {
                Ok(v)
            } else {
                std::fs::write(path, b"seen").map_err(|e| e.to_string())?;
                Err(format!("first call for {path} fails"))
            }
        })
        .function("say", |v: String| {
            eprintln!("{v}");
            Ok::<_, String>(v)
        })
        .build()
        .run()
}
