//! Starting one worker process: spawn, forward its output, handshake.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::UnixStream;
use tokio::process::Child;
use tokio_util::codec::Framed;

use super::builder::{Config, Limits, WorkerCommand};
use super::error::StartError;
use crate::protocol::{Encoding, FrameCodec, Hello, Message, Welcome};

/// A worker that completed its handshake.
pub(crate) struct Started {
    pub(crate) child: Child,
    pub(crate) pid: u32,
    pub(crate) chan: Framed<UnixStream, FrameCodec>,
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
        Ok(Some(Ok(frame))) => match Message::from_frame(frame) {
            Ok(Message::Hello(h)) => h,
            other => {
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
    Ok(Started {
        child,
        pid,
        chan,
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

/// Forwards a child's output to `tracing`, one line at a time.
async fn forward(pipe: impl AsyncRead + Unpin, worker: u64, pid: u32, stream: &'static str) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(worker, worker_pid = pid, stream, "{line}");
    }
}

/// Kills (if asked) and reaps the child; describes how it ended.
pub(crate) async fn reap(child: &mut Child, kill: bool) -> String {
    if kill {
        let _ = child.start_kill();
    }
    match child.wait().await {
        Ok(status) => describe(status),
        Err(e) => format!("exit unknown: {e}"),
    }
}

pub(crate) fn describe(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "exit unknown".to_owned(),
    }
}
