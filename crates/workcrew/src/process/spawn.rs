//! Starting one worker process: spawn, forward its output, handshake.

use std::process::Stdio;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::UnixStream;
use tokio::process::Child;
use tokio_util::codec::Framed;

use super::builder::{Config, Limits, WorkerCommand};
use super::error::StartError;
use super::exit::ProcessExit;
use crate::protocol::socket::{self, ReadHalf, WriteHalf};
use crate::protocol::{Encoding, FrameCodec, Hello, Message, Welcome};

/// A worker that completed its handshake.
pub(crate) struct Started {
    pub(crate) child: Child,
    pub(crate) pid: u32,
    /// The channel after the handshake: its codec, the bytes read past `WELCOME`, and the
    /// socket's halves (watched for readable events only, see [`crate::protocol::socket`]).
    pub(crate) codec: FrameCodec,
    pub(crate) read_buf: bytes::BytesMut,
    pub(crate) reader: ReadHalf,
    pub(crate) writer: WriteHalf,
    pub(crate) hello: Hello,
    pub(crate) encoding: Encoding,
}

/// Spawns `command` with the channel as its fd 0, forwards its stdout and
/// stderr to `tracing` (tagged with `worker`), and completes the handshake,
/// offering `encodings`. `spawned` is called with the pid as soon as the
/// process exists.
pub(crate) async fn start(
    config: &Config,
    command: &WorkerCommand,
    worker: u64,
    encodings: &[Encoding],
    spawned: impl FnOnce(u32),
) -> Result<Started, StartError> {
    let spawn_err = |source| StartError::Spawn {
        program: command.program.to_string_lossy().into_owned(),
        source,
    };
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(spawn_err)?;
    let mut cmd = limited(command, config.limits);
    if command.env_clear {
        cmd.env_clear();
    }
    cmd.envs(command.env.iter().map(|(k, v)| (k, v)))
        .env("WORKCREW_PROTOCOL", "1")
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = &command.cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().map_err(spawn_err)?;
    // The command still holds the child's end of the channel: drop it, so a
    // child that exits before `HELLO` closes the channel at once.
    drop(cmd);
    let pid = child.id().unwrap_or(0);
    spawned(pid);
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward(out, worker, pid, "stdout"));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward(err, worker, pid, "stderr"));
    }
    ours.set_nonblocking(true).map_err(spawn_err)?;
    let stream = UnixStream::from_std(ours).map_err(spawn_err)?;
    let mut chan = Framed::new(stream, FrameCodec::new(config.max_frame));

    let handshake_err = |reason: String| StartError::Handshake { pid, reason };
    let hello = match tokio::time::timeout(config.ready_timeout, chan.next()).await {
        Err(_) => {
            reap(&mut child, true).await;
            return Err(StartError::NotReady {
                pid,
                timeout: config.ready_timeout,
            });
        }
        Ok(Some(Ok(frame))) => match (frame.id, Message::from_frame(frame)) {
            (0, Ok(Message::Hello(h))) if h.concurrency > 0 => h,
            (0, Ok(Message::Hello(_))) => {
                let status = reap(&mut child, true).await;
                return Err(handshake_err(format!(
                    "HELLO announces concurrency 0 ({status})"
                )));
            }
            (id @ 1.., Ok(Message::Hello(_))) => {
                let status = reap(&mut child, true).await;
                return Err(handshake_err(format!(
                    "HELLO carries id {id}, not 0 ({status})"
                )));
            }
            (_, other) => {
                let status = reap(&mut child, true).await;
                return Err(handshake_err(format!(
                    "expected HELLO, got {other:?} ({status})"
                )));
            }
        },
        Ok(other) => {
            let status = reap(&mut child, true).await;
            let what = match other {
                Some(Err(e)) => e.to_string(),
                _ => "channel closed".to_owned(),
            };
            return Err(handshake_err(format!("{what} before HELLO ({status})")));
        }
    };
    let heartbeat_ms = config.heartbeat.map_or(0, |d| d.as_millis());
    let Some(welcome) = Welcome::negotiate(
        &hello,
        encodings,
        config.max_frame,
        u64::try_from(heartbeat_ms).unwrap_or(u64::MAX),
    ) else {
        reap(&mut child, true).await;
        return Err(handshake_err(format!(
            "no shared protocol version or payload encoding (pool offers {encodings:?}, worker accepts {:?})",
            hello.encodings
        )));
    };
    let encoding = welcome.encoding;
    if let Err(e) = chan.send(Message::Welcome(welcome).to_frame()).await {
        let status = reap(&mut child, true).await;
        return Err(handshake_err(format!(
            "cannot send WELCOME: {e} ({status})"
        )));
    }
    let parts = chan.into_parts();
    let halves = parts.io.into_std().and_then(socket::split);
    let (reader, writer) = match halves {
        Ok(halves) => halves,
        Err(e) => {
            let status = reap(&mut child, true).await;
            return Err(handshake_err(format!(
                "cannot watch the channel: {e} ({status})"
            )));
        }
    };
    Ok(Started {
        child,
        pid,
        codec: parts.codec,
        read_buf: parts.read_buf,
        reader,
        writer,
        hello,
        encoding,
    })
}

/// The command to spawn: the program itself, or, with resource limits, a
/// shell that sets them with `ulimit` and then `exec`s the program (same
/// pid, so signals and reaping are unchanged).
fn limited(command: &WorkerCommand, limits: Limits) -> tokio::process::Command {
    if limits == Limits::default() {
        let mut cmd = tokio::process::Command::new(&command.program);
        cmd.args(&command.args);
        return cmd;
    }
    let mut script = String::new();
    if let Some(bytes) = limits.address_space {
        script.push_str(&format!("ulimit -v {} && ", (bytes / 1024).max(1)));
    }
    if let Some(secs) = limits.cpu_seconds {
        script.push_str(&format!("ulimit -t {secs} && "));
    }
    script.push_str("exec \"$0\" \"$@\"");
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(script)
        .arg(&command.program)
        .args(&command.args);
    cmd
}

/// The longest line of a worker's output forwarded whole: a longer one is cut there, with a
/// marker, and the rest of it is skipped. So a worker's output cannot grow the pool's memory.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// Forwards a child's output to `tracing`, one line at a time (lines cut at [`MAX_LINE`],
/// invalid UTF-8 replaced), until the pipe closes: the child is never blocked on a full pipe.
async fn forward(pipe: impl AsyncRead + Unpin, worker: u64, pid: u32, stream: &'static str) {
    let mut lines = Lines::new(BufReader::new(pipe));
    while let Some(line) = lines.next().await {
        match line {
            Line::Whole(text) => tracing::info!(worker, worker_pid = pid, stream, "{text}"),
            Line::Cut(text) => tracing::info!(
                worker,
                worker_pid = pid,
                stream,
                "{text} [line cut at {MAX_LINE} bytes]"
            ),
        }
    }
}

/// A forwarded line.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Whole(String),
    /// The first [`MAX_LINE`] bytes of a longer line.
    Cut(String),
}

/// Splits a stream into lines of at most [`MAX_LINE`] bytes, holding no more than that.
struct Lines<R> {
    reader: R,
    line: Vec<u8>,
    /// The current line was cut: skip to its end.
    skipping: bool,
}

impl<R: AsyncBufRead + Unpin> Lines<R> {
    fn new(reader: R) -> Self {
        Lines {
            reader,
            line: Vec::new(),
            skipping: false,
        }
    }

    /// The next line; `None` at end of file (or a read error: the pipe is gone).
    async fn next(&mut self) -> Option<Line> {
        loop {
            let Ok(buf) = self.reader.fill_buf().await else {
                return None;
            };
            if buf.is_empty() {
                self.skipping = false;
                if self.line.is_empty() {
                    return None;
                }
                return Some(Line::Whole(text(std::mem::take(&mut self.line))));
            }
            let newline = buf.iter().position(|&b| b == b'\n');
            let upto = newline.unwrap_or(buf.len());
            let used = newline.map_or(upto, |n| n + 1);
            let mut out = None;
            if self.skipping {
                self.skipping = newline.is_none();
            } else {
                let room = MAX_LINE - self.line.len();
                if upto > room {
                    self.line.extend_from_slice(&buf[..room]);
                    self.skipping = newline.is_none();
                    out = Some(Line::Cut(text(std::mem::take(&mut self.line))));
                } else {
                    self.line.extend_from_slice(&buf[..upto]);
                    if newline.is_some() {
                        out = Some(Line::Whole(text(std::mem::take(&mut self.line))));
                    }
                }
            }
            self.reader.consume(used);
            if out.is_some() {
                return out;
            }
        }
    }
}

/// A line's text: UTF-8, with invalid bytes replaced; a Windows line end dropped.
fn text(mut bytes: Vec<u8>) -> String {
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Kills (if asked) and reaps the child; says how it ended.
pub(crate) async fn reap(child: &mut Child, kill: bool) -> ProcessExit {
    if kill {
        let _ = child.start_kill();
    }
    child
        .wait()
        .await
        .map_or(ProcessExit::Unknown, ProcessExit::of)
}

#[cfg(test)]
mod tests {
    //! Forwarded lines: bounded, cut with the rest skipped, lossy UTF-8.

    use super::*;

    async fn lines(input: &[u8]) -> Vec<Line> {
        // A small buffer, so lines span many reads.
        let mut lines = Lines::new(BufReader::with_capacity(7, input));
        let mut out = Vec::new();
        while let Some(line) = lines.next().await {
            out.push(line);
        }
        out
    }

    #[tokio::test]
    async fn lines_are_split_at_newlines_and_the_last_one_needs_none() {
        assert_eq!(
            lines(b"one\r\ntwo\n\nlast").await,
            [
                Line::Whole("one".into()),
                Line::Whole("two".into()),
                Line::Whole(String::new()),
                Line::Whole("last".into()),
            ]
        );
        assert_eq!(lines(b"").await, []);
    }

    #[tokio::test]
    async fn a_line_longer_than_the_limit_is_cut_and_the_rest_of_it_skipped() {
        let mut input = vec![b'a'; MAX_LINE];
        input.extend_from_slice(b"\n");
        input.extend(std::iter::repeat_n(b'b', 3 * MAX_LINE + 5));
        input.extend_from_slice(b"\nafter\n");
        input.extend(std::iter::repeat_n(b'c', MAX_LINE + 1));
        let got = lines(&input).await;
        assert_eq!(got.len(), 4);
        assert_eq!(
            got[0],
            Line::Whole("a".repeat(MAX_LINE)),
            "exactly the limit is whole"
        );
        assert_eq!(got[1], Line::Cut("b".repeat(MAX_LINE)));
        assert_eq!(got[2], Line::Whole("after".into()));
        assert_eq!(got[3], Line::Cut("c".repeat(MAX_LINE)));
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced_not_the_end_of_forwarding() {
        assert_eq!(
            lines(b"caf\xe9\nnext\n").await,
            [
                Line::Whole("caf\u{fffd}".into()),
                Line::Whole("next".into())
            ]
        );
    }
}
