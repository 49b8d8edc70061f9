//! The connection task: the one owner of a worker process and its channel.
//!
//! # Implementation notes
//!
//! One task per worker reads answers, writes calls and watches the timers
//! (heartbeats, cancel grace, stop timeout), all in one `select!` loop, so
//! reading never waits on writing (a worker blocked on a full channel while
//! we block on ours would deadlock).
//!
//! Calls reach it through the pool state, not a channel: after each batch of
//! answers, and whenever its `wake` is notified, the task makes one
//! [`exchange`](super::state::Shared::exchange) — one lock for the whole
//! batch — and encodes every call it got straight into its write buffer, so
//! a burst costs one write. Answers are matched by id in a table of pending
//! calls.
//!
//! When the channel ends — exit, crash, kill, or shutdown — the task reaps
//! the child (stop timeout, stop signal, stop timeout, `SIGKILL`), fails the
//! calls it held with the exit status (or sends them again if they allow a
//! retry), and gives the calls it never wrote back to the pool queue. No call
//! is left hanging and no process outlives the pool.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::process::Child;
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use super::events::{ProcessEvent, RecycleReason};
use super::spawn::{describe, reap, Started};
use super::state::{Exchange, Job, Reply, Shared, WorkerHandle};
use crate::common::sleep_until_opt;
use crate::protocol::{put_call_frame, put_header, FrameCodec, FrameType, Message};

/// What the connection needs from the pool's settings.
pub(crate) struct Settings {
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) stop_timeout: Duration,
    pub(crate) stop_signal: i32,
    pub(crate) cancel_grace: Duration,
}

/// Call ids are unique counters: hashing them is wasted work.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type Pending = HashMap<u64, Job, BuildHasherDefault<IdHasher>>;

/// Why the loop ended.
#[derive(PartialEq, Eq)]
enum End {
    /// The worker closed the channel (exiting) or we asked it to stop.
    Closed,
    /// It misbehaved or hung: kill it.
    Kill,
}

pub(crate) async fn run(
    shared: Weak<Shared>,
    handle: Arc<WorkerHandle>,
    started: Started,
    settings: Settings,
) {
    let Started {
        mut child, chan, ..
    } = started;
    let pid = handle.pid;
    let parts = chan.into_parts();
    let mut codec = parts.codec;
    let mut rbuf = parts.read_buf;
    let (rd, mut wr) = parts.io.into_split();
    let mut wbuf = BytesMut::with_capacity(64 * 1024);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut pending = Pending::default();
    let mut exchange = Exchange::default();

    let heartbeat = settings.heartbeat;
    let mut ping_every = heartbeat.map(|d| {
        let mut t = tokio::time::interval_at(Instant::now() + d, d);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut last_pong = Instant::now();
    let mut nonce = 0u64;
    // Cancelled calls whose worker is killed if they stay unanswered.
    let mut kill_at: Vec<(Instant, u64)> = Vec::new();
    // Set when such a call overstayed while the worker held others: it takes no
    // new calls, its other calls get one more grace to finish, then it is killed.
    let mut doomed: Option<Instant> = None;
    let mut stop_by: Option<Instant> = None;
    // Answers read but not yet delivered: they are delivered after the
    // exchange that counts them, so a caller never sees its answer while its
    // worker still counts the call as in flight.
    let mut done: Vec<(Job, Reply)> = Vec::new();
    let mut turn = true;

    let end = loop {
        if turn {
            turn = false;
            let Some(pool) = shared.upgrade() else {
                // Every pool handle is gone.
                if stop_by.is_none() {
                    put_empty(&mut wbuf, FrameType::Shutdown, 0);
                    stop_by = Some(Instant::now() + settings.stop_timeout);
                }
                deliver(&mut done);
                continue;
            };
            pool.exchange(handle.id, done.len(), &mut exchange, true);
            if !done.is_empty() {
                // One clock read for the batch: its answers arrived together.
                let now = Instant::now();
                pool.counters.record_latencies(
                    done.iter()
                        .map(|(job, _)| now.saturating_duration_since(job.started)),
                );
                deliver(&mut done);
            }
            drop(pool);
            let mut broken = false;
            for mut job in exchange.calls.drain(..) {
                if !job.fds.is_empty() && !broken {
                    // Descriptors ride on the frame's first byte: everything
                    // before it must be written first (rare; written in place).
                    let fds = std::mem::take(&mut job.fds);
                    broken = send_fds_call(&mut wr, &mut wbuf, &job, fds).await.is_err();
                } else {
                    put_call(&mut wbuf, &job);
                }
                pending.insert(job.id, job);
            }
            if broken {
                tracing::warn!(
                    worker = handle.id,
                    worker_pid = pid,
                    "cannot send file descriptors; dropping the worker"
                );
                break End::Kill;
            }
            for (id, kill_after) in exchange.cancels.drain(..) {
                if pending.contains_key(&id) {
                    put_empty(&mut wbuf, FrameType::Cancel, id);
                    if let Some(grace) = kill_after {
                        kill_at.push((Instant::now() + grace, id));
                    }
                }
            }
            if exchange.shutdown && stop_by.is_none() {
                put_empty(&mut wbuf, FrameType::Shutdown, 0);
                stop_by = Some(Instant::now() + settings.stop_timeout);
            }
            exchange.shutdown = false;
        }
        kill_at.retain(|(_, id)| pending.contains_key(id));
        if doomed.is_some() && only_overdue(&pending, &kill_at) {
            tracing::warn!(
                worker = handle.id,
                worker_pid = pid,
                "its other calls are done; killing the worker that ignored a cancel"
            );
            break End::Kill;
        }
        // Deadlines already passed (a doomed worker's overdue calls) do not
        // wake the loop again.
        let now = Instant::now();
        let next_kill = kill_at
            .iter()
            .map(|(at, _)| *at)
            .filter(|at| *at > now || doomed.is_none())
            .min();
        tokio::select! {
            read = read_some(rd.as_ref(), &mut scratch, &mut rbuf) => match read {
                Ok(0) => break End::Closed,
                Ok(_) => {
                    if take_answers(&mut codec, &mut rbuf, &mut pending, &mut done, &mut last_pong, &handle).is_err() {
                        break End::Kill;
                    }
                    turn = !done.is_empty();
                }
                Err(e) => {
                    tracing::warn!(worker = handle.id, worker_pid = pid, error = %e, "channel read failed; dropping the worker");
                    break End::Kill;
                }
            },
            wrote = wr.write(&wbuf), if !wbuf.is_empty() => match wrote {
                Ok(n) => {
                    let _ = wbuf.split_to(n);
                    if wbuf.capacity() > 1 << 20 && wbuf.is_empty() {
                        wbuf = BytesMut::with_capacity(64 * 1024);
                    }
                }
                Err(_) => break End::Closed, // the worker is gone; its exit tells why
            },
            () = handle.wake.notified() => turn = true,
            () = sleep_until_opt(next_kill) => {
                let now = Instant::now();
                if kill_at.iter().any(|(at, id)| *at <= now && pending.contains_key(id)) {
                    if only_overdue(&pending, &kill_at) {
                        tracing::warn!(worker = handle.id, worker_pid = pid, "a cancelled call was not answered in time; killing the worker");
                        break End::Kill;
                    }
                    if doomed.is_none() {
                        // Other calls are running: let them finish first, so only
                        // the call that timed out fails.
                        tracing::warn!(worker = handle.id, worker_pid = pid, "a cancelled call was not answered in time; the worker finishes its other calls, then is killed");
                        doomed = Some(now + settings.cancel_grace);
                        if let Some(pool) = shared.upgrade() {
                            pool.retire(handle.id, RecycleReason::Unresponsive);
                        }
                    }
                }
            }
            () = sleep_until_opt(doomed) => {
                tracing::warn!(worker = handle.id, worker_pid = pid, "its other calls did not finish in time; killing the worker that ignored a cancel");
                break End::Kill;
            }
            () = tick(&mut ping_every) => {
                let interval = heartbeat.unwrap_or_default();
                if last_pong.elapsed() > interval * 3 {
                    tracing::warn!(worker = handle.id, worker_pid = pid, "worker stopped answering heartbeats; killing it as hung");
                    break End::Kill;
                }
                nonce += 1;
                put_empty(&mut wbuf, FrameType::Ping, nonce);
            }
            () = sleep_until_opt(stop_by) => {
                tracing::warn!(worker = handle.id, worker_pid = pid, "worker did not exit within the stop timeout");
                break End::Closed;
            }
        }
    };
    drop((rd, wr));
    // Answers read before the end are answers; calls routed here but never
    // written go back to the pool queue.
    let mut retry = Vec::new();
    if let Some(pool) = shared.upgrade() {
        pool.exchange(handle.id, done.len(), &mut exchange, false);
        retry.append(&mut exchange.calls);
    }
    deliver(&mut done);
    let status = finish(&mut child, end, stop_by, &settings).await;
    let expected = stop_by.is_some() || handle.shutdown.load(Ordering::Acquire);
    let pool = shared.upgrade();
    // Calls it held: lost, unless they allow another attempt.
    let mut lost = 0;
    for (_, mut job) in pending.drain() {
        if job.retries_left > 0 && !job.abandoned() && pool.is_some() {
            job.retries_left -= 1;
            if let Some(p) = &pool {
                p.counters.retried.fetch_add(1, Ordering::Relaxed);
                p.events.send(ProcessEvent::CallRetried {
                    call_id: job.id,
                    function: job.function.to_string(),
                    retries_left: job.retries_left,
                });
            }
            retry.push(job);
        } else {
            lost += 1;
            let _ = job.reply.send(Reply::Lost {
                pid,
                exit: status.clone(),
            });
        }
    }
    if let Some(pool) = pool {
        // The event first: whoever waits for the worker to leave the pool
        // (`reload`, `stop`) then also sees it.
        pool.events.send(ProcessEvent::Exited {
            worker: handle.id,
            pid,
            status: status.clone(),
            expected,
            lost_calls: lost,
        });
        pool.remove(handle.id, retry, !expected);
    }
    tracing::debug!(worker = handle.id, worker_pid = pid, %status, "worker ended");
}

fn deliver(done: &mut Vec<(Job, Reply)>) {
    for (job, reply) in done.drain(..) {
        let _ = job.reply.send(reply);
    }
}

/// Whether every call still held is one whose cancel went unanswered past
/// its grace (so killing the worker fails no other call).
fn only_overdue(pending: &Pending, kill_at: &[(Instant, u64)]) -> bool {
    let now = Instant::now();
    pending
        .keys()
        .all(|id| kill_at.iter().any(|(at, k)| k == id && *at <= now))
}

/// Decodes every complete frame read so far: answers move from `pending`
/// to `done`. `Err` if the worker sent something it must not.
fn take_answers(
    codec: &mut FrameCodec,
    rbuf: &mut BytesMut,
    pending: &mut Pending,
    done: &mut Vec<(Job, Reply)>,
    last_pong: &mut Instant,
    handle: &WorkerHandle,
) -> Result<(), ()> {
    let (worker, pid) = (handle.id, handle.pid);
    loop {
        match codec.decode(rbuf) {
            Ok(Some(frame)) => match Message::from_frame(frame) {
                Ok(Message::Result { id, payload }) => {
                    if let Some(job) = pending.remove(&id) {
                        done.push((job, Reply::Value(payload)));
                    }
                }
                Ok(Message::Error { id, error }) => {
                    if let Some(job) = pending.remove(&id) {
                        done.push((job, Reply::Error(error)));
                    }
                }
                Ok(Message::Pong { .. }) => *last_pong = Instant::now(),
                Ok(other) => {
                    tracing::warn!(worker, worker_pid = pid, message = ?other, "unexpected message; dropping the worker");
                    return Err(());
                }
                Err(e) => {
                    tracing::warn!(worker, worker_pid = pid, error = %e, "malformed message; dropping the worker");
                    return Err(());
                }
            },
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::warn!(worker, worker_pid = pid, error = %e, "broken channel; dropping the worker");
                return Err(());
            }
        }
    }
}

/// Reads what the worker has sent into `into`. A read shorter than the
/// buffer means the socket is drained, so tokio is told to forget its
/// readiness at once: the next read waits for the worker instead of first
/// making a system call that would only say "nothing yet".
async fn read_some(
    stream: &tokio::net::UnixStream,
    scratch: &mut [u8],
    into: &mut BytesMut,
) -> std::io::Result<usize> {
    loop {
        stream.readable().await?;
        let mut got = None;
        let read = stream.try_io(tokio::io::Interest::READABLE, || {
            let n = rustix::io::read(stream, &mut *scratch)?;
            got = Some(n);
            if n > 0 && n < scratch.len() {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            Ok(())
        });
        match (read, got) {
            (_, Some(n)) => {
                into.extend_from_slice(&scratch[..n]);
                return Ok(n);
            }
            (Err(e), None) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            (Err(e), None) => return Err(e),
            (Ok(()), None) => unreachable!("a successful read records its count"),
        }
    }
}

/// Reaps the child. A worker that closed its channel is exiting: it gets the
/// stop timeout, then the stop signal and another stop timeout, then `SIGKILL`.
async fn finish(child: &mut Child, end: End, stop_by: Option<Instant>, s: &Settings) -> String {
    if end == End::Kill {
        return reap(child, true).await;
    }
    let first = stop_by.map_or(s.stop_timeout, |at| {
        at.saturating_duration_since(Instant::now())
    });
    if let Ok(Ok(status)) = tokio::time::timeout(first, child.wait()).await {
        return describe(status);
    }
    // The child is not reaped yet, so its pid is still ours to signal.
    let pid = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(i32::try_from(p).ok()?));
    if let (Some(pid), Some(signal)) = (pid, rustix::process::Signal::from_named_raw(s.stop_signal))
    {
        let _ = rustix::process::kill_process(pid, signal);
    }
    match tokio::time::timeout(s.stop_timeout, child.wait()).await {
        Ok(Ok(status)) => describe(status),
        _ => reap(child, true).await,
    }
}

/// Appends a `CALL` (or `CALL_MANY`) frame for `job` (`docs/protocol.md`, 3.3).
fn put_call(buf: &mut BytesMut, job: &Job) {
    let kind = if job.many {
        FrameType::CallMany
    } else {
        FrameType::Call
    };
    put_call_frame(buf, kind, job.id, &job.function, &job.payload);
}

/// Writes what is buffered, then a `CALL_FDS` frame for `job` with `fds`
/// attached to its first byte (`docs/protocol.md`, 3.10).
async fn send_fds_call(
    wr: &mut tokio::net::unix::OwnedWriteHalf,
    wbuf: &mut BytesMut,
    job: &Job,
    fds: Vec<std::os::fd::OwnedFd>,
) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    wr.write_all(wbuf).await?;
    wbuf.clear();
    let message = Message::CallFds {
        id: job.id,
        descriptors: fds.len() as u8,
        function: job.function.to_string(),
        payload: job.payload.clone(),
    };
    let mut frame = BytesMut::new();
    tokio_util::codec::Encoder::encode(
        &mut FrameCodec::new(usize::MAX),
        message.to_frame(),
        &mut frame,
    )
    .map_err(std::io::Error::other)?;
    let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
    let sent = crate::protocol::send_with_fds(wr.as_ref(), &frame, &borrowed).await?;
    wr.write_all(&frame[sent..]).await
    // `fds` closes here: the worker has its own copies.
}

/// Appends a frame with an empty body (`CANCEL`, `PING`, `SHUTDOWN`).
fn put_empty(buf: &mut BytesMut, kind: FrameType, id: u64) {
    put_header(buf, kind, id, 0);
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}
