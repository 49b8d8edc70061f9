//! `--exec`: one process per job, its arguments from a template.
//!
//! Placeholders in an argument: `{}` the line (a JSON string's content without quotes, any
//! other JSON value as its text), `{.}` the same without its extension, `{/}` its basename,
//! `{#}` the line number, `{name}` a field of a JSON object line. An argument with no
//! placeholder is passed as it is; a command with none at all gets the line as an extra last
//! argument. With `--shell` the arguments are joined into one `sh -c` script and every
//! substituted value is single-quoted, so a value can never inject shell syntax.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::input::Job;
use crate::runner::Attempt;

/// One piece of an argument.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Whole,
    NoExt,
    Base,
    LineNo,
    Field(String),
}

/// A parsed command template.
#[derive(Debug)]
pub(crate) struct Template {
    args: Vec<Vec<Piece>>,
    shell: bool,
    text_lines: bool,
}

impl Template {
    /// Parses `command`.
    pub(crate) fn new(command: &[String], shell: bool, text_lines: bool) -> Template {
        let mut args: Vec<Vec<Piece>> = command.iter().map(|a| parse_arg(a, text_lines)).collect();
        let any = args.iter().flatten().any(|p| !matches!(p, Piece::Text(_)));
        if !any {
            args.push(vec![Piece::Whole]);
        }
        Template {
            args,
            shell,
            text_lines,
        }
    }

    /// The program and arguments for `job`.
    ///
    /// # Errors
    ///
    /// A `{field}` the line does not have.
    pub(crate) fn render(&self, job: &Job) -> Result<Vec<String>, String> {
        let value: Option<Value> = if self.text_lines {
            None
        } else {
            Some(serde_json::from_str(&job.text).map_err(|e| e.to_string())?)
        };
        let whole = match &value {
            None => job.text.to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        let mut out = Vec::with_capacity(self.args.len());
        for arg in &self.args {
            let mut s = String::new();
            for piece in arg {
                let sub = match piece {
                    Piece::Text(t) => {
                        s.push_str(t);
                        continue;
                    }
                    Piece::Whole => whole.clone(),
                    Piece::NoExt => strip_ext(&whole).to_owned(),
                    Piece::Base => basename(&whole).to_owned(),
                    Piece::LineNo => job.line.to_string(),
                    Piece::Field(name) => match value.as_ref().and_then(|v| v.get(name)) {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Null) | None => {
                            return Err(format!("line {} has no field {name:?}", job.line))
                        }
                        Some(other) => other.to_string(),
                    },
                };
                if self.shell {
                    s.push_str(&shell_quote(&sub));
                } else {
                    s.push_str(&sub);
                }
            }
            out.push(s);
        }
        if self.shell {
            Ok(vec!["sh".to_owned(), "-c".to_owned(), out.join(" ")])
        } else {
            Ok(out)
        }
    }

    /// The program (for the up-front check that it exists); `sh` with `--shell`.
    pub(crate) fn program(&self) -> Option<String> {
        if self.shell {
            return Some("sh".to_owned());
        }
        match self.args.first()?.as_slice() {
            [Piece::Text(t)] => Some(t.clone()),
            _ => None,
        }
    }
}

fn parse_arg(arg: &str, text_lines: bool) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let piece = after.find('}').and_then(|close| {
            let name = &after[..close];
            let piece = match name {
                "" => Piece::Whole,
                "." => Piece::NoExt,
                "/" => Piece::Base,
                "#" => Piece::LineNo,
                _ if !text_lines
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
                {
                    Piece::Field(name.to_owned())
                }
                _ => return None,
            };
            Some((piece, close))
        });
        match piece {
            Some((piece, close)) => {
                text.push_str(&rest[..open]);
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(piece);
                rest = &after[close + 1..];
            }
            None => {
                text.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    text.push_str(rest);
    if !text.is_empty() || pieces.is_empty() {
        pieces.push(Piece::Text(text));
    }
    pieces
}

fn basename(s: &str) -> &str {
    let trimmed = s.trim_end_matches('/');
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

fn strip_ext(s: &str) -> &str {
    let base_start = s.trim_end_matches('/').rfind('/').map_or(0, |i| i + 1);
    match s[base_start..].rfind('.') {
        Some(dot) if dot > 0 => &s[..base_start + dot],
        _ => s,
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Whether `program` can be run: a path that exists, or a name found on `PATH`.
pub(crate) fn program_exists(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Runs jobs as processes.
#[derive(Debug)]
pub(crate) struct ExecRunner {
    pub(crate) template: Template,
    pub(crate) results: Option<PathBuf>,
}

/// Most bytes of a job's stdout or stderr kept in its record.
const MAX_CAPTURE: usize = 1024 * 1024;

impl ExecRunner {
    /// One attempt at `job`: spawn, capture, wait (until `timeout`, or `kill`).
    pub(crate) async fn attempt(
        &self,
        job: &Job,
        timeout: Option<Duration>,
        kill: &CancellationToken,
    ) -> Attempt {
        let argv = match self.template.render(job) {
            Ok(argv) => argv,
            Err(e) => {
                return Attempt::Failed {
                    error: e,
                    result: None,
                }
            }
        };
        let mut command = tokio::process::Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .stdin(Stdio::null())
            // Its own process group: a Ctrl-C in the terminal goes to workcrew, which lets
            // the job finish within the grace instead of it dying with the signal.
            .process_group(0)
            .kill_on_drop(true);
        let files = match &self.results {
            Some(dir) => {
                let out = dir.join(format!("{}.out", job.line));
                let err = dir.join(format!("{}.err", job.line));
                match (std::fs::File::create(&out), std::fs::File::create(&err)) {
                    (Ok(o), Ok(e)) => {
                        command.stdout(o).stderr(e);
                        Some((out, err))
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        return Attempt::Failed {
                            error: format!("cannot create {}: {e}", out.display()),
                            result: None,
                        }
                    }
                }
            }
            None => {
                command.stdout(Stdio::piped()).stderr(Stdio::piped());
                None
            }
        };
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ) =>
            {
                return Attempt::Fatal {
                    message: format!("cannot run {:?}: {e}", argv[0]),
                    usage: true,
                }
            }
            Err(e) => {
                return Attempt::Failed {
                    error: format!("cannot start {:?}: {e}", argv[0]),
                    result: None,
                }
            }
        };
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let wait = async {
            // Both pipes drained while waiting: a full pipe would block the child.
            let (out, err, status) = tokio::join!(capture(stdout), capture(stderr), child.wait());
            (out, err, status)
        };
        let sleep = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        // On a timeout or a kill, `child` is dropped: kill_on_drop kills it, tokio reaps it.
        let (out, err, status) = tokio::select! {
            done = wait => done,
            () = sleep => {
                return Attempt::Failed {
                    error: format!("timed out after {}", crate::output::human_duration(timeout.unwrap_or_default())),
                    result: None,
                }
            }
            () = kill.cancelled() => return Attempt::Killed,
        };
        let status = match status {
            Ok(status) => status,
            Err(e) => {
                return Attempt::Failed {
                    error: format!("waiting for the process: {e}"),
                    result: None,
                }
            }
        };
        let mut result = serde_json::Map::new();
        result.insert("exit_code".to_owned(), status.code().into());
        match files {
            Some((o, e)) => {
                result.insert("stdout_file".to_owned(), o.display().to_string().into());
                result.insert("stderr_file".to_owned(), e.display().to_string().into());
            }
            None => {
                result.insert("stdout".to_owned(), out.into());
                result.insert("stderr".to_owned(), err.into());
            }
        }
        let result = serde_json::value::to_raw_value(&result).ok();
        if status.success() {
            Attempt::Ok(result.unwrap_or_else(null_raw))
        } else {
            use std::os::unix::process::ExitStatusExt;
            let error = match (status.code(), status.signal()) {
                (Some(code), _) => format!("exited with code {code}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                (None, None) => format!("ended with {status}"),
            };
            Attempt::Failed { error, result }
        }
    }
}

/// Reads a pipe to its end (keeping at most [`MAX_CAPTURE`] bytes).
async fn capture<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let mut kept = Vec::new();
    // On the heap: an array here would be part of every job's future, copied each time
    // the future moves.
    let mut buf = vec![0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_CAPTURE.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

pub(crate) fn null_raw() -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::from_string("null".to_owned()).expect("null is JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(line: u64, text: &str) -> Job {
        Job {
            line,
            text: text.into(),
        }
    }

    fn cmd(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn placeholders() {
        let t = Template::new(
            &cmd(&["conv", "{}", "{.}.png", "{/}", "n{#}"]),
            false,
            false,
        );
        let argv = t.render(&job(7, r#""dir/a.b.jpg""#)).unwrap();
        assert_eq!(
            argv,
            ["conv", "dir/a.b.jpg", "dir/a.b.png", "a.b.jpg", "n7"]
        );
    }

    #[test]
    fn fields_of_an_object() {
        let t = Template::new(&cmd(&["cp", "{src}", "{dst}", "{n}"]), false, false);
        let argv = t
            .render(&job(1, r#"{"src": "a", "dst": "b", "n": 3}"#))
            .unwrap();
        assert_eq!(argv, ["cp", "a", "b", "3"]);
        let err = t.render(&job(4, r#"{"src": "a"}"#)).unwrap_err();
        assert_eq!(err, "line 4 has no field \"dst\"");
    }

    #[test]
    fn no_placeholder_appends_the_line() {
        let t = Template::new(&cmd(&["echo", "x"]), false, true);
        assert_eq!(
            t.render(&job(1, "hello world")).unwrap(),
            ["echo", "x", "hello world"]
        );
    }

    #[test]
    fn braces_that_are_no_placeholder_stay() {
        let t = Template::new(&cmd(&["awk", "{ print $1 }", "{}"]), false, true);
        assert_eq!(
            t.render(&job(1, "f")).unwrap(),
            ["awk", "{ print $1 }", "f"]
        );
    }

    #[test]
    fn shell_values_are_quoted() {
        let t = Template::new(&cmd(&["echo", "{}", "|", "wc", "-c"]), true, true);
        assert_eq!(
            t.render(&job(1, "it's; rm -rf /")).unwrap(),
            ["sh", "-c", r"echo 'it'\''s; rm -rf /' | wc -c"]
        );
    }

    #[test]
    fn extensions() {
        assert_eq!(strip_ext("a/b.c/d"), "a/b.c/d");
        assert_eq!(strip_ext(".bashrc"), ".bashrc");
        assert_eq!(strip_ext("x.tar.gz"), "x.tar");
        assert_eq!(basename("a/b/c.txt"), "c.txt");
    }
}
