//! Output records: one JSON line per finished job, to stdout or `--output FILE`.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::value::RawValue;

/// One finished job, as written.
#[derive(Debug, Serialize)]
pub(crate) struct Record<'a> {
    /// Its line number, from 1.
    pub(crate) line: u64,
    /// Its job id (position among the non-blank lines, from 0).
    pub(crate) id: u64,
    /// `ok` or `failed`.
    pub(crate) status: &'static str,
    /// The result (a worker's return value; an exec job's exit code and output).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) result: Option<&'a RawValue>,
    /// The last attempt's error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<&'a str>,
    /// Attempts made.
    pub(crate) attempts: u32,
    /// From the first attempt's start to the end of the last.
    pub(crate) duration_ms: u64,
}

impl Record<'_> {
    /// The record as one line, newline included.
    pub(crate) fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("records serialize");
        line.push(b'\n');
        line
    }
}

/// Where records go; shared by every range handler.
pub(crate) struct Output {
    out: Mutex<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output").finish_non_exhaustive()
    }
}

impl Output {
    /// Appends to `path` (earlier runs' records stay), or writes to stdout.
    ///
    /// # Errors
    ///
    /// A file that cannot be opened.
    pub(crate) fn open(path: Option<&Path>) -> Result<Output> {
        let out: Box<dyn Write + Send> = match path {
            Some(p) => Box::new(std::io::BufWriter::with_capacity(
                1 << 16,
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("cannot open the output file {}", p.display()))?,
            )),
            None => Box::new(std::io::BufWriter::with_capacity(
                1 << 16,
                std::io::stdout(),
            )),
        };
        Ok(Output {
            out: Mutex::new(out),
        })
    }

    /// Writes lines (each ending in a newline).
    ///
    /// # Errors
    ///
    /// The write's error.
    pub(crate) fn write(&self, lines: &[u8]) -> std::io::Result<()> {
        self.out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(lines)
    }

    /// Flushes: called before the journal records the jobs as done, so a record is never
    /// missing for a job the journal says is done.
    ///
    /// # Errors
    ///
    /// The flush's error.
    pub(crate) fn flush(&self) -> std::io::Result<()> {
        self.out.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

/// `1.2s`, `340ms`, `2m05s`, `1h02m`.
pub(crate) fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_shape() {
        let result = RawValue::from_string("{\"x\":1}".to_owned()).unwrap();
        let r = Record {
            line: 3,
            id: 2,
            status: "ok",
            result: Some(&result),
            error: None,
            attempts: 1,
            duration_ms: 12,
        };
        assert_eq!(
            String::from_utf8(r.to_line()).unwrap(),
            "{\"line\":3,\"id\":2,\"status\":\"ok\",\"result\":{\"x\":1},\"attempts\":1,\"duration_ms\":12}\n"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(Duration::from_millis(340)), "340ms");
        assert_eq!(human_duration(Duration::from_millis(1250)), "1.2s");
        assert_eq!(human_duration(Duration::from_secs(125)), "2m05s");
        assert_eq!(human_duration(Duration::from_secs(3720)), "1h02m");
    }
}
