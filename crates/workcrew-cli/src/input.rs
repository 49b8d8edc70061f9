//! The job file: read whole, checked line by line before the journal is touched, and the
//! job's name derived from its content and the command.
//!
//! Job ids are the positions of the non-blank lines (0, 1, 2, …); each job keeps its line
//! number (from 1) for messages and output records. Blank lines are skipped.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::value::RawValue;

use crate::config::{Mode, Selection};
use crate::exit_codes::Exit;

/// One job: a non-blank input line.
#[derive(Debug)]
pub(crate) struct Job {
    /// Its line number, from 1.
    pub(crate) line: u64,
    /// The line's text (a valid JSON value unless `--lines`).
    pub(crate) text: Box<str>,
}

impl Job {
    /// The line as a JSON value: the raw text in JSON mode, a JSON string with `--lines`.
    pub(crate) fn json(&self, text_lines: bool) -> Box<RawValue> {
        if text_lines {
            let quoted = serde_json::to_string(&*self.text).expect("a string serializes");
            RawValue::from_string(quoted).expect("a JSON string is a JSON value")
        } else {
            RawValue::from_string(self.text.to_string()).expect("checked when the input was read")
        }
    }
}

/// The whole input.
#[derive(Debug)]
pub(crate) struct Input {
    /// The jobs, by id.
    pub(crate) jobs: Vec<Job>,
    /// FNV-1a of the content.
    pub(crate) content_hash: u64,
}

/// Reads `path` (or stdin) and checks every line.
///
/// # Errors
///
/// An unreadable file, or (a usage error) a line that is not UTF-8 or, without
/// `text_lines`, not one JSON value — naming the line.
pub(crate) fn read(path: Option<&Path>, text_lines: bool) -> Result<Input> {
    let mut bytes = Vec::new();
    let what = match path {
        Some(p) => {
            bytes = std::fs::read(p).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Exit::usage(format!("input file {} does not exist", p.display()))
                } else {
                    anyhow::Error::new(e).context(format!("cannot read {}", p.display()))
                }
            })?;
            p.display().to_string()
        }
        None => {
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("cannot read the jobs from stdin")?;
            "stdin".to_owned()
        }
    };
    parse(&bytes, text_lines, &what)
}

/// Splits and checks `bytes`; `what` names the input in messages.
pub(crate) fn parse(bytes: &[u8], text_lines: bool, what: &str) -> Result<Input> {
    let mut jobs = Vec::new();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = index as u64 + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw)
            .map_err(|e| Exit::usage(format!("{what}, line {line}: not UTF-8 ({e})")))?;
        if text.trim().is_empty() {
            continue;
        }
        let text = if text_lines {
            text
        } else {
            let value: &RawValue = serde_json::from_str(text).map_err(|e| {
                Exit::usage(format!(
                    "{what}, line {line}: not a JSON value ({e}); use --lines for plain text"
                ))
            })?;
            value.get()
        };
        jobs.push(Job {
            line,
            text: text.into(),
        });
    }
    Ok(Input {
        jobs,
        content_hash: fnv1a(FNV_OFFSET, bytes),
    })
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, 64 bits: stable across platforms and Rust versions (unlike `DefaultHasher`), so
/// every machine derives the same job name.
fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The job's name: `--job`, or `workcrew-<content hash>-<command hash>`, so rerunning the
/// same command on the same input resumes, and another command (or mode, or function) on it
/// is another job. The input's path is left out: machines sharing a job through a store may
/// keep the file in different places.
pub(crate) fn job_name(select: &Selection, content_hash: Option<u64>) -> String {
    if let Some(name) = &select.job {
        return name.clone();
    }
    let mut hash = FNV_OFFSET;
    let mode = match &select.mode {
        Mode::Exec { shell: false } => "exec".to_owned(),
        Mode::Exec { shell: true } => "shell".to_owned(),
        Mode::Worker { function } => format!("call:{function}"),
    };
    hash = fnv1a(hash, mode.as_bytes());
    hash = fnv1a(
        hash,
        if select.text_lines {
            b"\0lines"
        } else {
            b"\0json"
        },
    );
    for arg in &select.command {
        hash = fnv1a(hash, b"\0");
        hash = fnv1a(hash, arg.as_bytes());
    }
    format!(
        "workcrew-{:016x}-{:016x}",
        content_hash.unwrap_or_default(),
        hash
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_lines_are_skipped_and_numbers_kept() {
        let input = parse(b"1\n\n{\"a\": 2}\r\n  \n\"x\"", false, "t").unwrap();
        let lines: Vec<(u64, &str)> = input.jobs.iter().map(|j| (j.line, &*j.text)).collect();
        assert_eq!(lines, vec![(1, "1"), (3, "{\"a\": 2}"), (5, "\"x\"")]);
    }

    #[test]
    fn a_malformed_line_is_named() {
        let err = parse(b"1\n{oops\n", false, "jobs.jsonl").unwrap_err();
        let exit = err.downcast_ref::<Exit>().unwrap();
        assert_eq!(exit.code, crate::exit_codes::ExitCode::Usage);
        assert!(exit
            .message
            .starts_with("jobs.jsonl, line 2: not a JSON value"));
    }

    #[test]
    fn text_lines_become_json_strings() {
        let input = parse(b"a \"b\"\n", true, "t").unwrap();
        assert_eq!(input.jobs[0].json(true).get(), r#""a \"b\"""#);
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
