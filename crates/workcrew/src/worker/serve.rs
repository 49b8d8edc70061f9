//! The serving loop: handshake, then calls, cancels, pings and shutdown.
//!
//! # Implementation notes
//!
//! Everything happens in one task, in passes. A pass reads once (as much as the socket
//! holds), handles every complete frame in the buffer, polls the calls that can make
//! progress, and writes every answer produced, in one `write` when the socket takes it. Then
//! the task sleeps until the socket or a call wakes it. Nothing is held back: a lone call is
//! one read, one poll, one write.
//!
//! - Between calls, the next one is waited for in the read itself when nothing else can need
//!   the thread: the last read through the runtime brought bytes, no call runs, nothing waits
//!   to be written, and the runtime has no task (`num_alive_tasks() == 0`: serving runs in
//!   `block_on`, as [`super::Worker::run`] does, and the functions spawned nothing that still
//!   runs). Then the loop blocks in `recvmsg` for up to [`super::channel::WAIT`] (10 ms)
//!   instead of going back to the runtime to wait in `epoll_wait`: a call that follows its
//!   predecessor's answer closely (one caller calling in a loop) costs two system calls in the
//!   worker (`recvmsg`, `send`) instead of three, and no pass through the runtime's park
//!   (about 2 us less per round trip on this project's machines, see the process pool
//!   bench). If nothing comes in that time, the loop waits through the runtime as before,
//!   until the next read brings bytes: an idle worker wakes once, 10 ms after its last call.
//!   10 ms rather than 1: a caller that pauses a few milliseconds between bursts (the bench's
//!   interleaved blocks) finds the worker still waiting in the read, not back in the runtime
//!   (p50 `call_p50/raw_p50` 1.42–1.66 against 1.55–1.94 with 1 ms, four alternating runs).
//!   The cost of being wrong: a task spawned onto this runtime from a thread of the program's
//!   own during a wait, or a future joined beside serving in the same `block_on`, starts up to
//!   10 ms late. (A task spawned by a function, even a sync one, cannot meet a wait: a call
//!   runs while it spawns, and the task then counts.)
//! - Calls are futures in one `FuturesUnordered`, polled by the serving task itself: no task
//!   is spawned per call. A new async call is polled as soon as its frame is read, with the
//!   serving task's waker: a trivial async function is answered then and there, without
//!   joining the set (no allocation, no pass through it); one that is not done joins it. Sync
//!   functions run on tokio's blocking threads; their join handles sit in the same set.
//! - `PING` is answered while the frame is handled, so heartbeats never wait for calls (as long
//!   as no async function blocks the thread, which the SDK docs forbid).
//! - `CALL_FDS` takes its descriptors from the channel's queue; descriptors that came with any
//!   other frame, or a `CALL_FDS` whose descriptors did not come, end serving with an error.
//! - `CANCEL` of an async call drops its future and answers `cancelled` at once. A sync call's
//!   thread cannot be stopped: `CANCEL` sets its flag (which the function sees through
//!   [`super::CallContext`]) and the call is answered `cancelled` only once the function has
//!   returned (`docs/protocol.md`, section 3.6), so the worker never runs more calls than its
//!   concurrency; one that never returns is left to the pool's cancel-grace kill.
//! - Around each poll of an async call, the call's context is the thread's current call, so
//!   its function can take it ([`super::CallContext::current`]).
//! - A panic while starting or polling a call becomes that call's `panicked` answer.
//! - After `SHUTDOWN` the loop goes on reading (`CANCEL` and `PING` may still come) until the
//!   calls it holds are answered and the send buffer is flushed; then serving returns. A call
//!   after `SHUTDOWN` is a protocol error. End of
//!   file stops reading; the running calls finish and are answered (a pool that closed only its
//!   sending side still reads them), then serving returns. A malformed frame ends serving at
//!   once.
//! - The worker does not count its calls: the pool never sends more than the announced
//!   concurrency.

use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::net::UnixStream;

use super::cancel::{within_call, Flag};
use super::channel::Channel;
use super::handler::{cancelled, error, panicked, CallResult, Handler, Started};
use super::{ServeError, Worker};
use crate::protocol::{
    parse_call, parse_call_fds, peek_frame, put_header, ErrorBody, ErrorKind, FrameRef, FrameType,
    Hello, Message, Peek, Welcome, DEFAULT_MAX_FRAME, HEADER_LEN, MIN_MAX_FRAME, PROTOCOL_VERSION,
};

pub(crate) async fn serve_on(worker: Worker, stream: UnixStream) -> Result<(), ServeError> {
    let mut chan = Channel::new(stream).map_err(io_error)?;
    let mut functions: Vec<String> = worker.functions.keys().cloned().collect();
    functions.sort();
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        functions,
        concurrency: worker.announced_concurrency(),
        encodings: worker.encodings.clone(),
        pid: Some(std::process::id()),
        batch: true,
        fds: true,
    };
    put_message(chan.output(), &Message::Hello(hello));
    poll_fn(|cx| chan.poll_flush(cx)).await.map_err(io_error)?;
    let Some(welcome) = welcome(&mut chan).await? else {
        return Ok(()); // the pool went away before welcoming us
    };
    if welcome.max_frame < MIN_MAX_FRAME {
        return Err(ServeError::Unexpected(format!(
            "max_frame {} is below the protocol's minimum of {MIN_MAX_FRAME}",
            welcome.max_frame
        )));
    }
    if !worker.encodings.contains(&welcome.encoding) {
        return Err(ServeError::Unexpected(format!(
            "encoding {:?} was not offered",
            welcome.encoding
        )));
    }
    let mut serving = Serving {
        chan,
        worker,
        encoding: welcome.encoding,
        // The announced limit applies from now on, both ways.
        max_frame: welcome.max_frame,
        calls: FuturesUnordered::new(),
        reading: true,
        shutdown: false,
        runtime: tokio::runtime::Handle::current(),
        may_wait: false,
    };
    poll_fn(|cx| serving.poll(cx)).await
}

/// Reads the pool's first frame, which must be `WELCOME`; `None` at end of file.
async fn welcome(chan: &mut Channel) -> Result<Option<Welcome>, ServeError> {
    loop {
        match peek_frame(chan.unread(), DEFAULT_MAX_FRAME)? {
            Peek::Frame(frame) => {
                let (frame, len) = (frame.to_frame(), frame.wire_len());
                chan.consume(len);
                return match Message::from_frame(frame)? {
                    Message::Welcome(w) => Ok(Some(w)),
                    other => Err(ServeError::Unexpected(format!("{other:?}"))),
                };
            }
            Peek::Partial { needed } => chan.want(needed),
        }
        if poll_fn(|cx| chan.poll_fill(cx)).await.map_err(io_error)? == 0 {
            return Ok(None);
        }
    }
}

struct Serving {
    chan: Channel,
    worker: Worker,
    encoding: crate::protocol::Encoding,
    max_frame: usize,
    calls: FuturesUnordered<Running>,
    /// False after end of file.
    reading: bool,
    /// `SHUTDOWN` came: serving ends once the calls held are answered.
    shutdown: bool,
    /// The runtime serving runs on, to see that it has no task.
    runtime: tokio::runtime::Handle,
    /// A read through the runtime brought bytes since the last wait in a read timed out.
    may_wait: bool,
}

impl Serving {
    /// One or more passes; `Ready` when serving is over.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ServeError>> {
        loop {
            let mut read_some = false;
            let mut eof = false;
            if self.reading {
                match self.chan.poll_fill(cx) {
                    Poll::Ready(Ok(0)) => eof = true,
                    Poll::Ready(Ok(_)) => {
                        read_some = true;
                        self.may_wait = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(io_error(e))),
                    Poll::Pending if self.idle() => match self.chan.fill_waiting() {
                        Ok(Some(0)) => eof = true,
                        Ok(Some(_)) => {
                            read_some = true;
                            #[cfg(test)]
                            tests::WAITED.with(|n| n.set(n.get() + 1));
                        }
                        Ok(None) => self.may_wait = false,
                        Err(e) => return Poll::Ready(Err(io_error(e))),
                    },
                    Poll::Pending => {}
                }
                // Frames read before the end of file are served first.
                if let Err(e) = self.handle_frames(cx) {
                    return Poll::Ready(Err(e));
                }
                if eof {
                    self.reading = false;
                }
            }
            while let Poll::Ready(Some((id, answer))) = self.calls.poll_next_unpin(cx) {
                put_answer(self.chan.output(), id, answer, self.max_frame);
            }
            if let Poll::Ready(Err(e)) = self.chan.poll_flush(cx) {
                return Poll::Ready(Err(io_error(e)));
            }
            if (!self.reading || self.shutdown) && self.calls.is_empty() && self.chan.flushed() {
                return Poll::Ready(Ok(()));
            }
            // The socket may hold more (the read filled the buffer): go round again. Otherwise
            // every source of progress has registered the waker.
            if !read_some {
                return Poll::Pending;
            }
        }
    }

    /// Whether the next call may be waited for in the read itself: only after a read through
    /// the runtime, with no call running, nothing left to write, and no task on the runtime
    /// (see the notes).
    fn idle(&self) -> bool {
        self.may_wait
            && !self.shutdown
            && self.calls.is_empty()
            && self.chan.flushed()
            && self.runtime.metrics().num_alive_tasks() == 0
    }

    /// Handles every complete frame in the receive buffer.
    fn handle_frames(&mut self, cx: &mut Context<'_>) -> Result<(), ServeError> {
        while self.reading {
            let (unread, at, output, fds) = self.chan.split();
            let frame = match peek_frame(unread, self.max_frame)? {
                Peek::Frame(frame) => frame,
                Peek::Partial { needed } => {
                    self.chan.want(needed);
                    return Ok(());
                }
            };
            let len = frame.wire_len();
            let (id, encoding, max_frame) = (frame.id, self.encoding, self.max_frame);
            let is_call = matches!(
                frame.kind,
                FrameType::Call | FrameType::CallMany | FrameType::CallFds
            );
            if is_call && self.shutdown {
                // The pool sends no call after `SHUTDOWN` (`docs/protocol.md`, 3.8).
                return Err(ServeError::Unexpected(format!(
                    "a {} frame (id {id}) after SHUTDOWN",
                    frame.kind
                )));
            }
            match frame.kind {
                FrameType::Call | FrameType::CallMany => {
                    let (name, payload) = parse_call(id, frame.body)?;
                    let many = frame.kind == FrameType::CallMany;
                    let begin = |h: &dyn Handler| {
                        if many {
                            h.call_many(encoding, payload)
                        } else {
                            h.call(encoding, payload, Vec::new())
                        }
                    };
                    start(
                        &self.worker,
                        &self.calls,
                        cx,
                        output,
                        max_frame,
                        id,
                        name,
                        begin,
                    );
                }
                FrameType::CallFds => {
                    let (count, name, payload) = parse_call_fds(id, frame.body)?;
                    let Some(taken) = fds.take(at, count.into()) else {
                        return Err(ServeError::Descriptors(format!(
                            "call {id} announces {count} file descriptors, which did not come with it"
                        )));
                    };
                    if self
                        .worker
                        .functions
                        .get(name)
                        .is_some_and(|h| !h.takes_fds())
                    {
                        // Dropping `taken` closes the descriptors.
                        let message = format!("function {name:?} takes no file descriptors");
                        put_error(output, id, &error(ErrorKind::BadArgs, message), max_frame);
                    } else {
                        let begin = |h: &dyn Handler| h.call(encoding, payload, taken);
                        start(
                            &self.worker,
                            &self.calls,
                            cx,
                            output,
                            max_frame,
                            id,
                            name,
                            begin,
                        );
                    }
                }
                FrameType::Cancel => {
                    // Not in flight (already answered, or never sent): ignored.
                    if let Some(call) = self.calls.iter_mut().find(|c| c.id == id) {
                        call.cancel();
                    }
                }
                FrameType::Ping => put_header(output, FrameType::Pong, id, 0),
                FrameType::Shutdown => self.shutdown = true,
                _ => return Err(unexpected(frame)),
            }
            let stray = fds.stray(at + len as u64);
            if stray > 0 {
                return Err(ServeError::Descriptors(format!(
                    "{stray} file descriptors came with a {} frame (id {id})",
                    frame.kind
                )));
            }
            self.chan.consume(len);
        }
        Ok(())
    }
}

/// Starts call `id` of function `name`, or answers `unknown_function`. An async call is
/// polled at once, with serving's own waker: one that is done then is answered without
/// joining `calls`; one that is not joins `calls`, which polls it again with a waker of its own.
#[allow(clippy::too_many_arguments)]
fn start(
    worker: &Worker,
    calls: &FuturesUnordered<Running>,
    cx: &mut Context<'_>,
    output: &mut Vec<u8>,
    max_frame: usize,
    id: u64,
    name: &str,
    begin: impl FnOnce(&dyn Handler) -> Started,
) {
    let Some(handler) = worker.functions.get(name) else {
        let e = error(
            ErrorKind::UnknownFunction,
            format!("no function named {name:?}"),
        );
        return put_error(output, id, &e, max_frame);
    };
    // An async function called now may already take its context: keep the one it made.
    match catch_unwind(AssertUnwindSafe(|| within_call(None, || begin(&**handler)))) {
        Ok((started, made)) => {
            let mut call = Running {
                id,
                sync: started.flag.is_some(),
                flag: started.flag.or(made),
                fut: Some(started.fut),
                waker: None,
                cancelled: false,
            };
            if !call.sync {
                if let Poll::Ready((id, answer)) = Pin::new(&mut call).poll(cx) {
                    return put_answer(output, id, answer, max_frame);
                }
            }
            calls.push(call);
        }
        Err(payload) => put_error(output, id, &panicked(payload), max_frame),
    }
}

/// One call in flight: its future until it is answered or cancelled.
struct Running {
    id: u64,
    /// `None` once an async call is cancelled.
    fut: Option<crate::worker::handler::CallFuture>,
    /// The waker of the last poll that was `Pending`, to wake the call when it is cancelled.
    waker: Option<Waker>,
    /// The call's cancel, if made: always for a sync call, for an async one once its function
    /// asked for its context.
    flag: Option<Arc<Flag>>,
    /// It runs on a blocking thread, which a cancel cannot stop.
    sync: bool,
    /// A sync call was cancelled: it is answered `cancelled` when its function returns.
    cancelled: bool,
}

impl Running {
    /// Cancels the call: tells its function (the flag), and drops an async call's future so
    /// that it answers `cancelled` when next polled. A sync call answers once its function
    /// has returned.
    fn cancel(&mut self) {
        if let Some(flag) = &self.flag {
            flag.set();
        }
        if self.sync {
            self.cancelled = true;
        } else if self.fut.take().is_some() {
            if let Some(waker) = self.waker.take() {
                waker.wake();
            }
        }
    }
}

impl Future for Running {
    type Output = (u64, CallResult);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let id = this.id;
        let Some(fut) = this.fut.as_mut() else {
            return Poll::Ready((id, Err(cancelled(id))));
        };
        let polled = catch_unwind(AssertUnwindSafe(|| {
            if this.sync {
                // Its function runs on its own thread, which has the call's context.
                fut.as_mut().poll(cx)
            } else {
                let (polled, flag) = within_call(this.flag.take(), || fut.as_mut().poll(cx));
                this.flag = flag;
                polled
            }
        }));
        match polled {
            Ok(Poll::Ready(_)) if this.cancelled => Poll::Ready((id, Err(cancelled(id)))),
            Ok(Poll::Ready(answer)) => Poll::Ready((id, answer)),
            Ok(Poll::Pending) => {
                if !this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    this.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Err(payload) => Poll::Ready((id, Err(panicked(payload)))),
        }
    }
}

/// Appends the frame answering call `id`.
fn put_answer(out: &mut Vec<u8>, id: u64, answer: CallResult, max_frame: usize) {
    match answer {
        Ok(payload) if HEADER_LEN - 4 + payload.len() <= max_frame => {
            put_header(out, FrameType::Result, id, payload.len());
            out.extend_from_slice(&payload);
        }
        Ok(payload) => {
            let message = format!(
                "result of call {id} is {} bytes, over the maximum frame size of {max_frame} bytes",
                payload.len()
            );
            put_error(out, id, &error(ErrorKind::TooLarge, message), max_frame);
        }
        Err(e) => put_error(out, id, &e, max_frame),
    }
}

/// Appends an `ERROR` frame, serialising the body in place.
fn put_error(out: &mut Vec<u8>, id: u64, e: &ErrorBody, max_frame: usize) {
    let at = out.len();
    put_header(out, FrameType::Error, id, 0);
    serde_json::to_writer(&mut *out, e).expect("error bodies always serialise");
    let length = out.len() - at - 4;
    if length > max_frame {
        // Only a huge message or data can do this; keep the kind, drop the rest. This one is
        // far below the smallest `max_frame` a pool may announce (checked at `WELCOME`).
        out.truncate(at);
        put_header(out, FrameType::Error, id, 0);
        let short = error(e.kind, format!("error of call {id} too large to send"));
        serde_json::to_writer(&mut *out, &short).expect("error bodies always serialise");
    }
    let length = out.len() - at - 4;
    out[at..at + 4].copy_from_slice(&(length as u32).to_be_bytes());
}

/// Appends a message built the general way (the handshake, not the hot path).
fn put_message(out: &mut Vec<u8>, m: &Message) {
    let frame = m.to_frame();
    put_header(out, frame.kind, frame.id, frame.body.len());
    out.extend_from_slice(&frame.body);
}

fn unexpected(frame: FrameRef<'_>) -> ServeError {
    match Message::from_frame(frame.to_frame()) {
        Ok(m) => ServeError::Unexpected(format!("{m:?}")),
        Err(e) => e.into(),
    }
}

fn io_error(e: std::io::Error) -> ServeError {
    ServeError::Frame(e.into())
}

#[cfg(test)]
mod tests {
    //! The wait for the next call in the read itself ([`Serving::idle`]): taken by a loop of
    //! lone calls, never while the runtime has a task, and it ends with the pool's end of
    //! file. The rest of serving is tested through the SDK's public API (`tests/worker_sdk.rs`)
    //! and the process pool's suites, whose workers all serve this way.

    use std::cell::Cell;
    use std::io::{Read, Write};
    use std::os::fd::OwnedFd;
    use std::time::Duration;

    use bytes::BytesMut;
    use tokio_util::codec::{Decoder, Encoder};

    use super::*;
    use crate::protocol::{Encoding, Frame, FrameCodec};

    thread_local! {
        /// Reads that waited in `recvmsg` and brought bytes, on this thread.
        pub(super) static WAITED: Cell<usize> = const { Cell::new(0) };
    }

    const GUARD: Duration = Duration::from_secs(10);

    /// The pool's end of a worker serving in `block_on` on a thread of its own, on a
    /// current-thread runtime (as [`Worker::run`] serves), after `before` ran on that runtime.
    struct Peer {
        sock: std::os::unix::net::UnixStream,
        codec: FrameCodec,
        buf: BytesMut,
        /// Serving's outcome and [`WAITED`] on its thread, when serving is over.
        serving: std::sync::mpsc::Receiver<(Result<(), ServeError>, usize)>,
    }

    impl Peer {
        fn start(before: impl FnOnce(&tokio::runtime::Runtime) + Send + 'static) -> Peer {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
            ours.set_read_timeout(Some(GUARD)).unwrap();
            let (done, serving) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                before(&rt);
                let worker = Worker::builder()
                    .async_function("echo", |x: u64| async move { Ok::<_, String>(x) })
                    .async_function_with_fds("count", |(): (), fds: Vec<OwnedFd>| async move {
                        Ok::<_, String>(fds.len() as u64)
                    })
                    .build();
                let served = rt.block_on(async move {
                    theirs.set_nonblocking(true).unwrap();
                    let stream = UnixStream::from_std(theirs).unwrap();
                    serve_on(worker, stream).await
                });
                let _ = done.send((served, WAITED.with(Cell::get)));
            });
            let mut peer = Peer {
                sock: ours,
                codec: FrameCodec::default(),
                buf: BytesMut::new(),
                serving,
            };
            let Message::Hello(hello) = Message::from_frame(peer.read()).unwrap() else {
                panic!("expected HELLO");
            };
            let welcome = Welcome::negotiate(&hello, &[Encoding::Postcard], 1 << 20, 0).unwrap();
            peer.send(Message::Welcome(welcome).to_frame());
            peer
        }

        fn send(&mut self, frame: Frame) {
            let mut wire = BytesMut::new();
            self.codec.encode(frame, &mut wire).unwrap();
            self.sock.write_all(&wire).unwrap();
        }

        /// The next frame; panics after [`GUARD`].
        fn read(&mut self) -> Frame {
            loop {
                if let Some(frame) = self.codec.decode(&mut self.buf).unwrap() {
                    return frame;
                }
                let mut chunk = [0u8; 4096];
                let n = self
                    .sock
                    .read(&mut chunk)
                    .expect("an answer within the guard");
                assert!(n > 0, "the worker closed the channel");
                self.buf.extend_from_slice(&chunk[..n]);
            }
        }

        /// Calls `echo(i)` for each `i` in `0..calls`, one at a time, checking each answer.
        fn echo_one_at_a_time(&mut self, calls: u64) {
            for i in 0..calls {
                let payload = Encoding::Postcard.encode(&i).unwrap();
                let function = "echo".into();
                self.send(
                    Message::Call {
                        id: i + 1,
                        function,
                        payload,
                    }
                    .to_frame(),
                );
                match Message::from_frame(self.read()).unwrap() {
                    Message::Result { id, payload } => {
                        assert_eq!(id, i + 1);
                        assert_eq!(Encoding::Postcard.decode::<u64>(&payload).unwrap(), i);
                    }
                    other => panic!("expected RESULT, got {other:?}"),
                }
            }
        }

        /// Calls `count` with `fds` attached (`CALL_FDS`); its answer.
        fn count_fds(&mut self, id: u64, fds: &[std::os::fd::BorrowedFd<'_>]) -> u64 {
            let frame = Message::CallFds {
                id,
                descriptors: fds.len() as u8,
                function: "count".into(),
                payload: Encoding::Postcard.encode(&()).unwrap(),
            }
            .to_frame();
            let mut wire = BytesMut::new();
            self.codec.encode(frame, &mut wire).unwrap();
            let sent = crate::protocol::fds::sendmsg_fds(&self.sock, &wire, fds).unwrap();
            self.sock.write_all(&wire[sent..]).unwrap();
            match Message::from_frame(self.read()).unwrap() {
                Message::Result {
                    id: answered,
                    payload,
                } => {
                    assert_eq!(answered, id);
                    Encoding::Postcard.decode(&payload).unwrap()
                }
                other => panic!("expected RESULT, got {other:?}"),
            }
        }

        /// Closes our end; serving's outcome and its waited reads. Panics if serving has not
        /// ended within [`GUARD`].
        fn close(self) -> (Result<(), ServeError>, usize) {
            drop(self.sock);
            self.serving
                .recv_timeout(GUARD)
                .expect("serving ends at end of file")
        }
    }

    /// One caller calling in a loop: the calls after the first are waited for in the read
    /// (most of them: one that comes later than the wait's 10 ms goes through the runtime).
    #[test]
    fn lone_calls_are_waited_for_in_the_read() {
        let mut peer = Peer::start(|_| {});
        peer.echo_one_at_a_time(50);
        let (served, waited) = peer.close();
        served.unwrap();
        assert!(waited >= 10, "only {waited} of 50 calls were waited for");
    }

    /// A task on the runtime (here one that never ends) may need the thread at any time: the
    /// loop never blocks it, every call goes through the runtime.
    #[test]
    fn a_runtime_with_a_task_is_never_blocked() {
        let mut peer = Peer::start(|rt| {
            rt.spawn(std::future::pending::<()>());
        });
        peer.echo_one_at_a_time(50);
        let (served, waited) = peer.close();
        served.unwrap();
        assert_eq!(waited, 0);
    }

    /// A `PING` that comes while the loop waits in the read is answered, and the end of file
    /// that comes while it waits ends serving.
    #[test]
    fn a_wait_serves_pings_and_ends_at_end_of_file() {
        let mut peer = Peer::start(|_| {});
        for nonce in 1..=20 {
            peer.echo_one_at_a_time(1);
            peer.send(Frame {
                kind: FrameType::Ping,
                id: nonce,
                body: bytes::Bytes::new(),
            });
            let pong = peer.read();
            assert_eq!((pong.kind, pong.id), (FrameType::Pong, nonce));
        }
        let (served, waited) = peer.close();
        served.unwrap();
        assert!(waited > 0, "no ping came during a wait");
    }

    /// Descriptors that come with a call read by a wait reach the call, every time.
    #[test]
    fn descriptors_that_come_during_a_wait_reach_their_call() {
        use std::os::fd::AsFd;
        let mut peer = Peer::start(|_| {});
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        // Only calls with descriptors: every read that waited brought one.
        for id in 1..=20 {
            assert_eq!(peer.count_fds(id, &[a.as_fd(), b.as_fd()]), 2);
        }
        let (served, waited) = peer.close();
        served.unwrap();
        assert!(waited > 0, "no call came during a wait");
    }
}
