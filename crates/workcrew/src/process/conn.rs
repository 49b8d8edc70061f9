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
//! a burst costs one write. A call to a worker that holds nothing is written by its caller
//! instead ([`Direct`]), sparing the hand-over to this task on the path of a lone call. Answers
//! are matched by id in a table of pending calls.
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

use bytes::Buf;
use bytes::BytesMut;
use tokio::process::Child;
use tokio::time::Instant;

use super::events::{ProcessEvent, RecycleReason};
use super::exit::{ExitReason, ProcessExit};
use super::payload::Payload;
use super::spawn::reap;
use super::state::{Exchange, Job, Reply, Shared, WorkerHandle};
use crate::common::sleep_until_opt;
use crate::protocol::socket::{ReadHalf, WriteHalf};
use crate::protocol::{
    peek_frame, put_call_frame, put_header, FrameCodec, FrameType, Message, MessageError, Peek,
    HEADER_LEN,
};

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

/// The part of a connection its callers share with its task: the table of calls written and
/// not yet answered, the send buffer and the socket's writing half.
///
/// A call routed to a worker that holds no other call is written by its caller at once
/// ([`Direct::take`] under the pool lock, [`Direct::write_now`] after letting it go, this lock
/// held throughout), instead of joining the outbox and waking the connection task to write
/// it: one hand-over fewer between threads on the path of a lone call. Every other call goes
/// through the outbox as before, so a burst still costs one write per exchange. The
/// connection task takes this lock for each batch (answers read, calls and cancels written).
/// Lock order: the pool lock, then this one; nobody takes the pool lock while holding this
/// one.
pub(crate) struct Direct {
    /// Calls written (or about to be: in `wbuf`) and not yet answered.
    pending: Pending,
    /// Frames not yet written.
    wbuf: BytesMut,
    /// `None` while the connection task writes a call with descriptors, and once it ended.
    writer: Option<WriteHalf>,
    /// Callers may write: cleared when `SHUTDOWN` is queued (no call after it) and when the
    /// connection ends.
    open: bool,
}

impl Direct {
    pub(crate) fn new(writer: WriteHalf) -> Self {
        Direct {
            pending: Pending::default(),
            wbuf: BytesMut::with_capacity(64 * 1024),
            writer: Some(writer),
            open: true,
        }
    }

    /// A connection that takes no direct call (for tests of the pool state).
    #[cfg(test)]
    pub(crate) fn closed() -> Self {
        Direct {
            pending: Pending::default(),
            wbuf: BytesMut::new(),
            writer: None,
            open: false,
        }
    }

    /// Takes `job` to write now ([`write_now`](Self::write_now), before this lock is let go),
    /// if the connection takes direct calls and has nothing else to write; `Err` with the job
    /// if it must go through the outbox.
    pub(crate) fn take(&mut self, job: Job) -> Result<(), Job> {
        if !self.open || self.writer.is_none() || !self.wbuf.is_empty() || !job.fds.is_empty() {
            return Err(job);
        }
        put_call(&mut self.wbuf, &job);
        self.pending.insert(job.id, job);
        Ok(())
    }

    /// Writes what [`take`](Self::take) queued, as far as the socket takes it now: `true` if
    /// some is left for the connection task to write (wake it). A failed send leaves the frame
    /// for the connection task, whose own write or read then meets the broken channel and
    /// settles the call with the others.
    pub(crate) fn write_now(&mut self) -> bool {
        let Direct { wbuf, writer, .. } = self;
        if let Some(Ok(n)) = writer.as_mut().map(|w| w.try_write(wbuf)) {
            wbuf.advance(n);
        }
        !wbuf.is_empty()
    }
}

/// Why the loop ended.
#[derive(PartialEq, Eq)]
enum End {
    /// The worker closed the channel (exiting), the channel failed, or it outlived the grace
    /// after `SHUTDOWN`: it is reaped (stop signal, then `SIGKILL`, if it does not exit).
    Closed,
    /// It misbehaved or hung, or the pool stops at once: it is killed.
    Kill(ExitReason),
}

/// What the connection task owns of a started worker: the process and the reading side of
/// its channel (the writing side is in the worker's [`Direct`]).
pub(crate) struct Reading {
    pub(crate) child: Child,
    pub(crate) codec: FrameCodec,
    pub(crate) read_buf: BytesMut,
    pub(crate) reader: ReadHalf,
}

pub(crate) async fn run(
    shared: Weak<Shared>,
    handle: Arc<WorkerHandle>,
    started: Reading,
    settings: Settings,
) {
    let Reading {
        mut child,
        codec,
        read_buf: mut rbuf,
        reader: rd,
    } = started;
    let pid = handle.pid;
    let direct = &handle.direct;
    let mut scratch = vec![0u8; 64 * 1024];
    let mut exchange = Exchange::default();

    let heartbeat = settings.heartbeat;
    let mut ping_every = heartbeat.map(|d| {
        let mut t = tokio::time::interval_at(Instant::now() + d, d);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut beat = Heartbeat {
        last_pong: Instant::now(),
        sent: 0,
    };
    // Given-up calls whose worker is killed if they stay unanswered past the cancel grace.
    let mut kill_at: Vec<(Instant, u64)> = Vec::new();
    // Set when such a call overstayed while the worker held others: it takes no
    // new calls, its other calls get one more grace to finish, then it is killed.
    let mut doomed: Option<(Instant, u64)> = None;
    // When `SHUTDOWN` was queued, and the deadline for the worker to exit after it (the
    // shutdown grace, which a `stop_now` may shorten: re-read on every turn).
    let mut shutdown_at: Option<Instant> = None;
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
                if shutdown_at.is_none() {
                    {
                        let mut d = lock(direct);
                        d.open = false;
                        put_empty(&mut d.wbuf, FrameType::Shutdown, 0);
                    }
                    shutdown_at = Some(Instant::now());
                    stop_by = shutdown_at.map(|at| at + settings.stop_timeout);
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
            let grace = pool.shutdown_grace();
            drop(pool);
            let mut broken = false;
            if exchange.calls.iter().any(|job| !job.fds.is_empty()) {
                // Descriptors ride on the frame's first byte: everything before it must be
                // written first (rare; written in place, the writer taken out meanwhile, so
                // no caller writes directly).
                let (writer, mut wbuf) = {
                    let mut d = lock(direct);
                    (d.writer.take(), std::mem::take(&mut d.wbuf))
                };
                if let Some(mut wr) = writer {
                    for mut job in exchange.calls.drain(..) {
                        if !job.fds.is_empty() && !broken {
                            let fds = std::mem::take(&mut job.fds);
                            broken = send_fds_call(&mut wr, &mut wbuf, &job, fds).await.is_err();
                        } else {
                            put_call(&mut wbuf, &job);
                        }
                        lock(direct).pending.insert(job.id, job);
                    }
                    let mut d = lock(direct);
                    d.writer = Some(wr);
                    // Nothing was queued meanwhile: callers write only with the writer in
                    // place, and this task was here.
                    debug_assert!(d.wbuf.is_empty());
                    d.wbuf = wbuf;
                } else {
                    broken = true;
                }
            }
            let now = Instant::now();
            {
                let mut d = lock(direct);
                for job in exchange.calls.drain(..) {
                    put_call(&mut d.wbuf, &job);
                    d.pending.insert(job.id, job);
                }
                if broken {
                    tracing::warn!(
                        worker = handle.id,
                        worker_pid = pid,
                        "cannot send file descriptors; dropping the worker"
                    );
                    break End::Closed;
                }
                for id in exchange.cancels.drain(..) {
                    if d.pending.contains_key(&id) && !kill_at.iter().any(|(_, k)| *k == id) {
                        put_empty(&mut d.wbuf, FrameType::Cancel, id);
                        kill_at.push((now + settings.cancel_grace, id));
                    }
                }
                // Last: calls routed here before the stop are written before `SHUTDOWN`, and none
                // after it (the exchange pulls nothing once the worker is told to shut down, and
                // callers write directly no more).
                if exchange.shutdown && shutdown_at.is_none() {
                    d.open = false;
                    put_empty(&mut d.wbuf, FrameType::Shutdown, 0);
                    shutdown_at = Some(now);
                }
            }
            exchange.shutdown = false;
            if let Some(at) = shutdown_at {
                stop_by = Some(at + grace);
            }
        }
        let (to_write, overdue_only) = {
            let d = lock(direct);
            kill_at.retain(|(_, id)| d.pending.contains_key(id));
            (
                !d.wbuf.is_empty() && d.writer.is_some(),
                only_overdue(&d.pending, &kill_at),
            )
        };
        if let Some((_, call_id)) = doomed {
            if overdue_only {
                tracing::warn!(
                    worker = handle.id,
                    worker_pid = pid,
                    "its other calls are done; killing the worker that ignored a cancel"
                );
                break End::Kill(ExitReason::CancelIgnored { call_id });
            }
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
            read = read_some(&rd, &mut scratch, &mut rbuf) => match read {
                Ok(0) => break End::Closed,
                Ok(_) => {
                    let taken = take_answers(&codec, &mut rbuf, &mut lock(direct).pending, &mut done, &mut beat);
                    if let Err(what) = taken {
                        tracing::warn!(worker = handle.id, worker_pid = pid, %what, "protocol violation; killing the worker");
                        break End::Kill(ExitReason::ProtocolViolation { what });
                    }
                    turn = !done.is_empty();
                }
                Err(e) => {
                    // Its exit (or the end of file it reads now) tells the rest.
                    tracing::warn!(worker = handle.id, worker_pid = pid, error = %e, "channel read failed; dropping the worker");
                    break End::Closed;
                }
            },
            wrote = std::future::poll_fn(|cx| lock(direct).poll_flush(cx)), if to_write => match wrote {
                Ok(()) => {}
                Err(_) => break End::Closed, // the worker is gone; its exit tells why
            },
            () = handle.wake.notified() => turn = true,
            () = sleep_until_opt(next_kill) => {
                let now = Instant::now();
                let (overdue, overdue_only) = {
                    let d = lock(direct);
                    let overdue = kill_at
                        .iter()
                        .find(|(at, id)| *at <= now && d.pending.contains_key(id))
                        .map(|(_, id)| *id);
                    (overdue, only_overdue(&d.pending, &kill_at))
                };
                if let Some(call_id) = overdue {
                    if overdue_only {
                        tracing::warn!(worker = handle.id, worker_pid = pid, call_id, "a cancelled call was not answered in time; killing the worker");
                        break End::Kill(ExitReason::CancelIgnored { call_id });
                    }
                    if doomed.is_none() {
                        // Other calls are running: let them finish first, so only
                        // the call that was given up fails.
                        tracing::warn!(worker = handle.id, worker_pid = pid, call_id, "a cancelled call was not answered in time; the worker finishes its other calls, then is killed");
                        doomed = Some((now + settings.cancel_grace, call_id));
                        if let Some(pool) = shared.upgrade() {
                            pool.retire(handle.id, RecycleReason::Unresponsive);
                        }
                    }
                }
            }
            () = sleep_until_opt(doomed.map(|(at, _)| at)) => {
                tracing::warn!(worker = handle.id, worker_pid = pid, "its other calls did not finish in time; killing the worker that ignored a cancel");
                let call_id = doomed.map_or(0, |(_, id)| id);
                break End::Kill(ExitReason::CancelIgnored { call_id });
            }
            // After `SHUTDOWN` a worker may stop reading (`docs/protocol.md`, 3.8): the
            // shutdown grace bounds it from then on, not the heartbeat.
            () = tick(&mut ping_every), if shutdown_at.is_none() => {
                let interval = heartbeat.unwrap_or_default();
                if beat.last_pong.elapsed() > interval * 3 {
                    tracing::warn!(worker = handle.id, worker_pid = pid, "worker stopped answering heartbeats; killing it as hung");
                    break End::Kill(ExitReason::HeartbeatMissed);
                }
                beat.sent += 1;
                put_empty(&mut lock(direct).wbuf, FrameType::Ping, beat.sent);
            }
            () = sleep_until_opt(stop_by) => {
                tracing::warn!(worker = handle.id, worker_pid = pid, "worker did not exit within the stop timeout");
                break End::Closed;
            }
        }
    };
    // No caller writes here any more; the socket closes with both halves.
    let mut pending = {
        let mut d = lock(direct);
        d.open = false;
        d.writer = None;
        d.wbuf = BytesMut::new();
        std::mem::take(&mut d.pending)
    };
    drop(rd);
    let pool = shared.upgrade();
    let told_to_stop = shutdown_at.is_some() || handle.shutdown.load(Ordering::Acquire);
    let expected = match &end {
        End::Closed => told_to_stop,
        End::Kill(reason) => *reason == ExitReason::Stopped,
    };
    // Calls it held: sent again if they allow another attempt, else lost.
    let mut retry = Vec::new();
    let mut lost = Vec::new();
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
            lost.push(job);
        }
    }
    // The worker leaves the pool first, before anything settles: whoever sees one of its
    // calls fail no longer finds it in the pool's workers or stats. Calls routed here but
    // never written, and the retries, go back to the pool queue now.
    let retired = pool
        .as_ref()
        .and_then(|p| p.remove(handle.id, retry, !expected))
        .and_then(|entry| entry.retiring);
    // Answers read before the end are answers.
    deliver(&mut done);
    let grace = || {
        shared
            .upgrade()
            .map_or(settings.stop_timeout, |p| p.shutdown_grace())
    };
    let status = finish(
        &mut child,
        &end,
        shutdown_at,
        grace,
        &handle.wake,
        settings.stop_signal,
    )
    .await;
    let reason = match end {
        End::Kill(reason) => reason,
        End::Closed if shutdown_at.is_none() => ExitReason::Ended(status),
        End::Closed => match retired {
            Some(why) if !handle.shutdown.load(Ordering::Acquire) => ExitReason::Recycled(why),
            _ => ExitReason::Stopped,
        },
    };
    if let Some(pool) = &pool {
        pool.events.send(ProcessEvent::Exited {
            worker: handle.id,
            pid,
            status,
            reason: reason.clone(),
            expected,
            lost_calls: lost.len(),
        });
    }
    for job in lost {
        let _ = job.reply.send(Reply::Lost {
            pid,
            reason: reason.clone(),
            status,
        });
    }
    tracing::debug!(worker = handle.id, worker_pid = pid, %status, %reason, "worker ended");
    if let Some(pool) = pool {
        pool.conn_ended(&handle);
    } else {
        handle.finished.store(true, Ordering::Release);
    }
}

fn lock(direct: &std::sync::Mutex<Direct>) -> std::sync::MutexGuard<'_, Direct> {
    direct
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Direct {
    /// Writes what is buffered, as far as the socket takes it now; `Ready(Ok)` once some was
    /// written (the loop comes back for the rest), `Pending` while the socket is full.
    fn poll_flush(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let Direct { wbuf, writer, .. } = self;
        let Some(writer) = writer.as_mut() else {
            return std::task::Poll::Ready(Ok(()));
        };
        if wbuf.is_empty() {
            return std::task::Poll::Ready(Ok(()));
        }
        let n = std::task::ready!(writer.poll_write(cx, wbuf))?;
        wbuf.advance(n);
        if wbuf.capacity() > 1 << 20 && wbuf.is_empty() {
            *wbuf = BytesMut::with_capacity(64 * 1024);
        }
        std::task::Poll::Ready(Ok(()))
    }
}

/// The heartbeat's state: when the worker last answered a `PING`, and the last nonce sent.
struct Heartbeat {
    last_pong: Instant,
    sent: u64,
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
/// to `done`. `Err` (what it did, in words) if the worker sent something it must not.
/// Frames are read in place; a value that fits is copied into its answer (see
/// [`Payload`]), a larger one is split off the buffer without a copy.
fn take_answers(
    codec: &FrameCodec,
    rbuf: &mut BytesMut,
    pending: &mut Pending,
    done: &mut Vec<(Job, Reply)>,
    beat: &mut Heartbeat,
) -> Result<(), String> {
    loop {
        let frame = match peek_frame(rbuf, codec.max_frame()) {
            Ok(Peek::Frame(frame)) => frame,
            Ok(Peek::Partial { needed }) => {
                // Reserve once for the whole frame rather than growing piecemeal.
                rbuf.reserve(needed - rbuf.len());
                return Ok(());
            }
            Err(e) => return Err(e.to_string()),
        };
        let (kind, id, wire_len) = (frame.kind, frame.id, frame.wire_len());
        let reply = match kind {
            FrameType::Result => Payload::inline(frame.body).map(Reply::Value),
            FrameType::Error => match serde_json::from_slice(frame.body) {
                Ok(error) => Some(Reply::Error(error)),
                Err(source) => {
                    let e = MessageError::Json { kind, source };
                    return Err(format!("a malformed {kind} frame: {e}"));
                }
            },
            FrameType::Pong => {
                // Only a PONG that answers a PING sent proves the worker alive (§3.7).
                if (1..=beat.sent).contains(&id) {
                    beat.last_pong = Instant::now();
                }
                rbuf.advance(wire_len);
                continue;
            }
            _ => return Err(format!("a {kind} frame, which a worker must not send")),
        };
        let reply = match reply {
            Some(reply) => {
                rbuf.advance(wire_len);
                reply
            }
            None => {
                rbuf.advance(HEADER_LEN);
                let body = rbuf.split_to(wire_len - HEADER_LEN).freeze();
                Reply::Value(Payload::Shared(body))
            }
        };
        // Exactly one answer per call (§3.3): an id not in flight here is one it never got,
        // or one already answered.
        let Some(job) = pending.remove(&id) else {
            return Err(format!(
                "a {kind} for call {id}, which it does not hold (unknown, or already answered)"
            ));
        };
        done.push((job, reply));
    }
}

/// Reads what the worker has sent into `into`. A read shorter than the
/// buffer means the socket is drained, so tokio is told to forget its
/// readiness at once: the next read waits for the worker instead of first
/// making a system call that would only say "nothing yet".
async fn read_some(
    stream: &ReadHalf,
    scratch: &mut [u8],
    into: &mut BytesMut,
) -> std::io::Result<usize> {
    let n = std::future::poll_fn(|cx| {
        stream.poll_read_with(cx, |fd| {
            let n = rustix::io::read(fd, &mut *scratch)?;
            Ok((n, n > 0 && n < scratch.len()))
        })
    })
    .await?;
    into.extend_from_slice(&scratch[..n]);
    Ok(n)
}

/// Reaps the child. A killed one is killed at once. One that closed its channel is exiting
/// (or outlived its grace after `SHUTDOWN`): it gets the shutdown grace from `shutdown_at` (or
/// from now), then the stop signal and one more grace, then `SIGKILL`. The grace is read
/// again whenever `wake` fires, so a `stop_now` shortens a wait under way.
async fn finish(
    child: &mut Child,
    end: &End,
    shutdown_at: Option<Instant>,
    grace: impl Fn() -> Duration,
    wake: &tokio::sync::Notify,
    stop_signal: i32,
) -> ProcessExit {
    if let End::Kill(_) = end {
        return reap(child, true).await;
    }
    let since = shutdown_at.unwrap_or_else(Instant::now);
    if let Some(status) = exit_within(child, since, &grace, wake).await {
        return status;
    }
    // The child is not reaped yet, so its pid is still ours to signal.
    let pid = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(i32::try_from(p).ok()?));
    if let (Some(pid), Some(signal)) = (pid, rustix::process::Signal::from_named_raw(stop_signal)) {
        let _ = rustix::process::kill_process(pid, signal);
    }
    if let Some(status) = exit_within(child, Instant::now(), &grace, wake).await {
        return status;
    }
    reap(child, true).await
}

/// The child's exit status if it exits within the grace counted from `since`.
async fn exit_within(
    child: &mut Child,
    since: Instant,
    grace: &impl Fn() -> Duration,
    wake: &tokio::sync::Notify,
) -> Option<ProcessExit> {
    loop {
        let deadline = since + grace();
        tokio::select! {
            status = child.wait() => {
                return Some(status.map_or(ProcessExit::Unknown, ProcessExit::of));
            }
            () = tokio::time::sleep_until(deadline) => return None,
            () = wake.notified() => {}
        }
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
    wr: &mut WriteHalf,
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
        payload: job.payload.to_bytes(),
    };
    let mut frame = BytesMut::new();
    tokio_util::codec::Encoder::encode(
        &mut FrameCodec::new(usize::MAX),
        message.to_frame(),
        &mut frame,
    )
    .map_err(std::io::Error::other)?;
    let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
    crate::protocol::fds::check_send(&frame, &borrowed)?;
    let sent = std::future::poll_fn(|cx| {
        wr.poll_send_with(cx, |fd| {
            crate::protocol::fds::sendmsg_fds(fd, &frame, &borrowed)
        })
    })
    .await?;
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
