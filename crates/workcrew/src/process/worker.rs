//! One worker process: start, handshake, and the connection task that owns it.
//!
//! # Implementation notes
//!
//! The connection task owns the child and both directions of its channel.
//! Calls arrive on an unbounded queue (the pool bounds them by routing); the
//! task writes every call waiting at that moment before one flush, so a burst
//! costs one write. When the channel ends — exit, crash, or shutdown — the
//! task reaps the child and fails every call still pending with the exit
//! status, so no call is left hanging and no process outlives the pool.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::UnixStream;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::Framed;

use super::builder::Config;
use super::error::StartError;
use crate::protocol::{Encoding, ErrorBody, FrameCodec, Message, Welcome};

/// How a call ended, as the connection task reports it.
pub(crate) enum Reply {
    Value(Bytes),
    Error(ErrorBody),
    /// The worker died; its exit status.
    Lost(String),
}

pub(crate) enum Command {
    Call {
        id: u64,
        function: String,
        payload: Bytes,
        reply: oneshot::Sender<Reply>,
    },
    /// Stop call `id` (send `CANCEL`); with `kill_after`, kill the worker if
    /// the call is still unanswered that long after.
    Cancel {
        id: u64,
        kill_after: Option<Duration>,
    },
    Shutdown,
}

/// The pool's side of one worker.
pub(crate) struct WorkerHandle {
    pub(crate) pid: u32,
    pub(crate) functions: HashSet<String>,
    pub(crate) encoding: Encoding,
    /// Calls the worker runs at once (from its `HELLO`); never exceeded.
    pub(crate) concurrency: usize,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) alive: Arc<AtomicBool>,
    pub(crate) tx: mpsc::UnboundedSender<Command>,
    pub(crate) task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

/// Starts one worker and completes its handshake.
/// Starts one worker and completes its handshake. When it later ends, its pid
/// is sent on `exits`.
pub(crate) async fn start(
    config: &Config,
    exits: mpsc::UnboundedSender<u32>,
) -> Result<WorkerHandle, StartError> {
    let spawn_err = |source| StartError::Spawn {
        program: config.program.to_string_lossy().into_owned(),
        source,
    };
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(spawn_err)?;
    let mut cmd = tokio::process::Command::new(&config.program);
    cmd.args(&config.args);
    if config.env_clear {
        cmd.env_clear();
    }
    cmd.envs(config.env.iter().map(|(k, v)| (k, v)))
        .env("WORKCREW_PROTOCOL", "1")
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = &config.cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().map_err(spawn_err)?;
    let pid = child.id().unwrap_or(0);
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward(out, pid, "stdout"));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward(err, pid, "stderr"));
    }
    ours.set_nonblocking(true).map_err(spawn_err)?;
    let stream = UnixStream::from_std(ours).map_err(spawn_err)?;
    let mut chan = Framed::new(stream, FrameCodec::new(config.max_frame));

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
                return Err(StartError::Handshake {
                    pid,
                    reason: format!("expected HELLO, got {other:?} ({status})"),
                });
            }
        },
        Ok(other) => {
            let status = reap(&mut child, true).await;
            let what = match other {
                Some(Err(e)) => e.to_string(),
                _ => "channel closed".to_owned(),
            };
            return Err(StartError::Handshake {
                pid,
                reason: format!("{what} before HELLO ({status})"),
            });
        }
    };
    let Some(welcome) = Welcome::negotiate(
        &hello,
        &[Encoding::Postcard, Encoding::Json],
        config.max_frame,
        u64::try_from(config.heartbeat.map_or(0, |d| d.as_millis())).unwrap_or(u64::MAX),
    ) else {
        reap(&mut child, true).await;
        return Err(StartError::Handshake {
            pid,
            reason: "no shared protocol version or payload encoding".to_owned(),
        });
    };
    let encoding = welcome.encoding;
    if let Err(e) = chan.send(Message::Welcome(welcome).to_frame()).await {
        let status = reap(&mut child, true).await;
        return Err(StartError::Handshake {
            pid,
            reason: format!("cannot send WELCOME: {e} ({status})"),
        });
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let alive = Arc::new(AtomicBool::new(true));
    let stop_timeout = config.stop_timeout;
    let heartbeat = config.heartbeat;
    let alive_flag = Arc::clone(&alive);
    let task = tokio::spawn(async move {
        connection(chan, child, rx, alive_flag, stop_timeout, heartbeat).await;
        // Tells the pool's supervisor, which may start a replacement.
        let _ = exits.send(pid);
    });
    tracing::debug!(worker_pid = pid, functions = ?hello.functions, "worker ready");
    Ok(WorkerHandle {
        pid,
        functions: hello.functions.into_iter().collect(),
        encoding,
        concurrency: hello.concurrency.max(1) as usize,
        in_flight: AtomicUsize::new(0),
        alive,
        tx,
        task: std::sync::Mutex::new(Some(task)),
    })
}

/// Forwards a child's output to `tracing`, one line at a time, tagged with its pid.
async fn forward(pipe: impl AsyncRead + Unpin, pid: u32, stream: &'static str) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(worker_pid = pid, stream, "{line}");
    }
}

/// Kills (if asked) and reaps the child; describes how it ended.
async fn reap(child: &mut Child, kill: bool) -> String {
    if kill {
        let _ = child.start_kill();
    }
    match child.wait().await {
        Ok(status) => describe(status),
        Err(e) => format!("exit unknown: {e}"),
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "exit unknown".to_owned(),
    }
}

async fn connection(
    mut chan: Framed<UnixStream, FrameCodec>,
    mut child: Child,
    mut rx: mpsc::UnboundedReceiver<Command>,
    alive: Arc<AtomicBool>,
    stop_timeout: Duration,
    heartbeat: Option<Duration>,
) {
    let pid = child.id();
    // Heartbeats: a PING every interval; no PONG for three intervals means hung.
    let mut ping_every = heartbeat.map(|d| {
        let mut t = tokio::time::interval_at(Instant::now() + d, d);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut last_pong = Instant::now();
    let mut nonce = 0u64;
    let mut pending: HashMap<u64, oneshot::Sender<Reply>> = HashMap::new();
    // Cancelled calls whose worker is killed if they stay unanswered.
    let mut kill_at: Vec<(Instant, u64)> = Vec::new();
    let mut stopping = false;
    let mut kill = false;
    loop {
        kill_at.retain(|(_, id)| pending.contains_key(id));
        let next_kill = kill_at.iter().map(|(at, _)| *at).min();
        tokio::select! {
            cmd = rx.recv(), if !stopping => {
                // `None`: every pool handle is gone, so this worker stops too.
                let mut next = Some(cmd.unwrap_or(Command::Shutdown));
                let mut broken = false;
                // Write every command waiting now, then flush once.
                while let Some(cmd) = next.take() {
                    let frame = match cmd {
                        Command::Call { id, function, payload, reply } => {
                            pending.insert(id, reply);
                            Some(Message::Call { id, function, payload }.to_frame())
                        }
                        Command::Cancel { id, kill_after } => {
                            if pending.contains_key(&id) {
                                if let Some(grace) = kill_after {
                                    kill_at.push((Instant::now() + grace, id));
                                }
                                Some(Message::Cancel { id }.to_frame())
                            } else {
                                None // already answered
                            }
                        }
                        Command::Shutdown => {
                            stopping = true;
                            Some(Message::Shutdown.to_frame())
                        }
                    };
                    if let Some(frame) = frame {
                        if chan.feed(frame).await.is_err() {
                            broken = true;
                            break;
                        }
                    }
                    if !stopping {
                        next = rx.try_recv().ok();
                    }
                }
                if broken || chan.flush().await.is_err() {
                    break;
                }
            }
            frame = chan.next() => match frame.map(|f| f.map(Message::from_frame)) {
                Some(Ok(Ok(Message::Result { id, payload }))) => {
                    if let Some(reply) = pending.remove(&id) {
                        let _ = reply.send(Reply::Value(payload));
                    }
                }
                Some(Ok(Ok(Message::Error { id, error }))) => {
                    if let Some(reply) = pending.remove(&id) {
                        let _ = reply.send(Reply::Error(error));
                    }
                }
                Some(Ok(Ok(Message::Pong { .. }))) => last_pong = Instant::now(),
                Some(Ok(Ok(other))) => {
                    tracing::warn!(worker_pid = pid, message = ?other, "unexpected message; dropping the worker");
                    kill = true;
                    break;
                }
                Some(Ok(Err(e))) => {
                    tracing::warn!(worker_pid = pid, error = %e, "malformed message; dropping the worker");
                    kill = true;
                    break;
                }
                Some(Err(e)) => {
                    tracing::warn!(worker_pid = pid, error = %e, "broken channel; dropping the worker");
                    kill = true;
                    break;
                }
                None => break,
            },
            _ = sleep_until_opt(next_kill) => {
                let now = Instant::now();
                if kill_at.iter().any(|(at, id)| *at <= now && pending.contains_key(id)) {
                    tracing::warn!(worker_pid = pid, "a cancelled call was not answered in time; killing the worker");
                    kill = true;
                    break;
                }
            }
            _ = tick(&mut ping_every) => {
                let interval = heartbeat.unwrap_or_default();
                if last_pong.elapsed() > interval * 3 {
                    tracing::warn!(worker_pid = pid, "worker stopped answering heartbeats; killing it as hung");
                    kill = true;
                    break;
                }
                nonce += 1;
                if chan.send(Message::Ping { nonce }.to_frame()).await.is_err() {
                    break;
                }
            }
            _ = tokio::time::sleep(stop_timeout), if stopping => {
                tracing::warn!(worker_pid = pid, "worker did not stop in time; killing it");
                kill = true;
                break;
            }
        }
    }
    alive.store(false, Ordering::Release);
    // A worker that closed its channel is exiting; give it the stop timeout.
    let status = if kill {
        reap(&mut child, true).await
    } else {
        match tokio::time::timeout(stop_timeout, child.wait()).await {
            Ok(Ok(status)) => describe(status),
            _ => reap(&mut child, true).await,
        }
    };
    for (_, reply) in pending.drain() {
        let _ = reply.send(Reply::Lost(status.clone()));
    }
    // Calls that were queued but never written fail the same way.
    rx.close();
    while let Ok(cmd) = rx.try_recv() {
        if let Command::Call { reply, .. } = cmd {
            let _ = reply.send(Reply::Lost(status.clone()));
        }
    }
    tracing::debug!(worker_pid = pid, %status, "worker ended");
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
