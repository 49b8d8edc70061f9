//! The Rust worker SDK (`workcrew::worker`) served over a socket pair, with the test acting as
//! the pool through the protocol types: handshake and encoding negotiation, sync and async
//! functions, every error kind, panics that leave the worker serving, cancellation, heartbeats
//! answered while calls run, shutdown after in-flight calls are answered, many pipelined calls,
//! frames larger than the read buffer or split across writes, results over the frame limit,
//! `CALL_MANY` chunks, and `CALL_FDS` (a TCP connection accepted by the test, served by the
//! worker), with descriptors out of step with the frames ending serving with an error.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;
use workcrew::protocol::{send_with_fds, Encoding, ErrorKind, FrameCodec, Message, Welcome};
use workcrew::worker::{CallContext, ServeError, Worker};

/// Set by the task `handover` hands its call's context to, once it sees the cancel.
static HANDED_OVER_SAW_CANCEL: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

const GUARD: Duration = Duration::from_secs(20);

struct Pool {
    chan: Framed<UnixStream, FrameCodec>,
    encoding: Encoding,
    worker: JoinHandle<Result<(), ServeError>>,
}

impl Pool {
    async fn send(&mut self, m: Message) {
        tokio::time::timeout(GUARD, self.chan.send(m.to_frame()))
            .await
            .expect("send hung")
            .expect("send");
    }

    async fn recv(&mut self) -> Option<Message> {
        let frame = tokio::time::timeout(GUARD, self.chan.next())
            .await
            .expect("worker went silent")?;
        Some(Message::from_frame(frame.expect("frame")).expect("message"))
    }

    async fn call<T: serde::Serialize>(&mut self, id: u64, function: &str, args: T) {
        let payload = self.encoding.encode(&args).unwrap();
        self.send(Message::Call {
            id,
            function: function.into(),
            payload,
        })
        .await;
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, payload: &Bytes) -> T {
        self.encoding.decode(payload).unwrap()
    }
}

/// Fails on negative numbers, panics on `i64::MIN`.
fn check(n: i64) -> Result<i64, String> {
    match n {
        i64::MIN => panic!("check boom"),
        n if n < 0 => Err(format!("negative: {n}")),
        n => Ok(n),
    }
}

/// A gate a sync function waits at until the test opens it; it knows whether someone is inside.
struct Gate {
    state: Mutex<(bool, usize)>,
    changed: Condvar,
}

static GATE: Gate = Gate {
    state: Mutex::new((false, 0)),
    changed: Condvar::new(),
};

impl Gate {
    /// Waits (on the caller's thread) until the gate is open.
    fn pass(&self) {
        let mut st = self.state.lock().unwrap();
        st.1 += 1;
        self.changed.notify_all();
        while !st.0 {
            st = self.changed.wait(st).unwrap();
        }
        st.1 -= 1;
        self.changed.notify_all();
    }

    fn inside(&self) -> usize {
        self.state.lock().unwrap().1
    }

    fn open(&self) {
        self.state.lock().unwrap().0 = true;
        self.changed.notify_all();
    }

    /// Waits (bounded) until `n` are inside.
    async fn wait_inside(&self, n: usize) {
        for _ in 0..2000 {
            if self.inside() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!(
            "{n} calls never waited at the gate (inside: {})",
            self.inside()
        );
    }
}

fn demo() -> Worker {
    Worker::builder()
        .function("add", |(a, b): (i64, i64)| Ok::<_, String>(a + b))
        .function("fail", |why: String| Err::<(), _>(why))
        .function("panic", |_: ()| -> Result<(), String> {
            panic!("sync boom")
        })
        .function("block", |ms: u64| {
            std::thread::sleep(Duration::from_millis(ms));
            Ok::<_, String>(ms)
        })
        .async_function("greet", |name: String| async move {
            Ok::<_, String>(format!("hello {name}"))
        })
        .async_function("apanic", |_: ()| async move {
            if true {
                panic!("async boom");
            }
            Ok::<(), String>(())
        })
        .async_function("sleep", |secs: u64| async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            Ok::<_, String>(secs)
        })
        .async_function("echo", |s: String| async move { Ok::<_, String>(s) })
        .async_function(
            "big",
            |n: usize| async move { Ok::<_, String>("x".repeat(n)) },
        )
        .function("check", check)
        .function("coop", |(): ()| {
            // Checks its cancel in a loop, as a long computation would.
            let until = std::time::Instant::now() + GUARD;
            while std::time::Instant::now() < until {
                if workcrew::worker::is_cancelled() {
                    return Err("noticed the cancel".to_owned());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        })
        .async_function("handover", |(): ()| async move {
            // Hands its context to a task of its own, then waits forever: only the task sees
            // the cancel, as the call's own future is dropped.
            let call = CallContext::current().expect("polled as a call");
            tokio::spawn(async move {
                call.cancelled().await;
                HANDED_OVER_SAW_CANCEL.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            std::future::pending::<Result<(), String>>().await
        })
        .function("slow_item", |ms: u64| {
            std::thread::sleep(Duration::from_millis(ms));
            Ok::<_, String>(ms)
        })
        .function("gate", |(): ()| {
            GATE.pass();
            Ok::<_, String>("opened")
        })
        .function_with_fds("greet_fd", |name: String, fds: Vec<OwnedFd>| {
            let n = fds.len();
            for fd in fds {
                let mut socket = std::net::TcpStream::from(fd);
                write!(socket, "hello {name}").map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(n)
        })
        .async_function_with_fds("agreet_fd", |name: String, fds: Vec<OwnedFd>| async move {
            let n = fds.len();
            for fd in fds {
                let mut socket = std::net::TcpStream::from(fd);
                write!(socket, "hi {name}").map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(n)
        })
        .async_function("acheck", |n: i64| async move { check(n) })
        .concurrency(4)
        .build()
}

async fn start(offered: &[Encoding]) -> Pool {
    let (ours, theirs) = UnixStream::pair().expect("socket pair");
    let worker = tokio::spawn(demo().serve_on(theirs));
    let mut chan = Framed::new(ours, FrameCodec::default());
    let frame = tokio::time::timeout(GUARD, chan.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Message::Hello(hello) = Message::from_frame(frame).unwrap() else {
        panic!("expected HELLO")
    };
    assert_eq!(hello.concurrency, 4);
    assert_eq!(hello.encodings, [Encoding::Postcard, Encoding::Json]);
    assert_eq!(
        hello.functions,
        [
            "acheck",
            "add",
            "agreet_fd",
            "apanic",
            "big",
            "block",
            "check",
            "coop",
            "echo",
            "fail",
            "gate",
            "greet",
            "greet_fd",
            "handover",
            "panic",
            "sleep",
            "slow_item"
        ]
    );
    assert!(hello.batch, "the SDK serves CALL_MANY");
    assert!(hello.fds, "the SDK accepts CALL_FDS");
    let welcome = Welcome::negotiate(&hello, offered, 1 << 20, 0).unwrap();
    let mut pool = Pool {
        chan,
        encoding: welcome.encoding,
        worker,
    };
    pool.send(Message::Welcome(welcome)).await;
    pool
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_and_async_functions_in_both_encodings() {
    for offered in [
        &[Encoding::Json][..],
        &[Encoding::Json, Encoding::Postcard][..],
    ] {
        let mut p = start(offered).await;
        assert_eq!(p.encoding, offered[offered.len() - 1]);
        p.call(1, "add", (40i64, 2i64)).await;
        p.call(2, "greet", "crew").await;
        let mut got = std::collections::BTreeMap::new();
        while got.len() < 2 {
            match p.recv().await {
                Some(Message::Result { id, payload }) => {
                    got.insert(id, payload);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(p.decode::<i64>(&got[&1]), 42);
        assert_eq!(p.decode::<String>(&got[&2]), "hello crew");
        p.send(Message::Shutdown).await;
        assert!(p.recv().await.is_none());
        p.worker.await.unwrap().expect("clean shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_panics_come_back_typed_and_the_worker_keeps_serving() {
    let mut p = start(&[Encoding::Json]).await;
    p.call(1, "fail", "disk full").await;
    p.call(2, "panic", ()).await;
    p.call(3, "apanic", ()).await;
    p.call(4, "nope", ()).await;
    p.call(5, "add", "not a pair").await;
    let mut errors = std::collections::BTreeMap::new();
    while errors.len() < 5 {
        match p.recv().await {
            Some(Message::Error { id, error }) => {
                errors.insert(id, error);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        (errors[&1].kind, errors[&1].message.as_str()),
        (ErrorKind::Failed, "disk full")
    );
    assert_eq!(errors[&2].kind, ErrorKind::Panicked);
    assert!(errors[&2].message.contains("sync boom"));
    assert_eq!(errors[&3].kind, ErrorKind::Panicked);
    assert!(errors[&3].message.contains("async boom"));
    assert_eq!(errors[&4].kind, ErrorKind::UnknownFunction);
    assert_eq!(errors[&5].kind, ErrorKind::BadArgs);
    p.call(6, "add", (1i64, 1i64)).await;
    assert!(matches!(
        p.recv().await,
        Some(Message::Result { id: 6, .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_heartbeat_and_shutdown_with_calls_in_flight() {
    let mut p = start(&[Encoding::Json]).await;
    p.call(1, "sleep", 3600u64).await;
    p.call(2, "block", 300u64).await;
    // Heartbeats are answered while both calls run.
    p.send(Message::Ping { nonce: 9 }).await;
    assert_eq!(p.recv().await, Some(Message::Pong { nonce: 9 }));
    p.send(Message::Cancel { id: 1 }).await;
    match p.recv().await {
        Some(Message::Error { id: 1, error }) => assert_eq!(error.kind, ErrorKind::Cancelled),
        other => panic!("expected the cancellation, got {other:?}"),
    }
    // Shutdown while `block` runs: it is still answered, then the channel closes.
    p.send(Message::Shutdown).await;
    assert!(matches!(
        p.recv().await,
        Some(Message::Result { id: 2, .. })
    ));
    assert!(p.recv().await.is_none());
    p.worker.await.unwrap().expect("clean shutdown");
}

/// A cancelled sync call is answered only once its function has returned: the SDK cannot stop
/// a blocking thread, so it must not pretend it did (the pool then kills a worker whose
/// function ignores the cancel, instead of sending it more calls than its concurrency).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_sync_call_is_answered_only_once_its_function_has_returned() {
    /// Opens the gate however the test ends: a blocking thread left waiting would hold up the
    /// runtime's shutdown for good.
    struct OpenOnDrop;
    impl Drop for OpenOnDrop {
        fn drop(&mut self) {
            GATE.open();
        }
    }
    let _open = OpenOnDrop;
    let mut p = start(&[Encoding::Json]).await;
    p.call(1, "gate", ()).await;
    GATE.wait_inside(1).await;
    p.send(Message::Cancel { id: 1 }).await;
    // Two heartbeats, one after the other is answered: nothing answers call 1 meanwhile, as its
    // function still runs.
    for nonce in [5, 6] {
        p.send(Message::Ping { nonce }).await;
        assert_eq!(p.recv().await, Some(Message::Pong { nonce }));
    }
    assert_eq!(GATE.inside(), 1, "the function still runs");
    GATE.open();
    match p.recv().await {
        Some(Message::Error { id: 1, error }) => assert_eq!(error.kind, ErrorKind::Cancelled),
        other => panic!("expected call 1 answered cancelled, got {other:?}"),
    }
    assert_eq!(GATE.inside(), 0);
    p.send(Message::Shutdown).await;
    assert!(p.recv().await.is_none());
    p.worker.await.unwrap().expect("clean shutdown");
}

/// A sync function that checks `is_cancelled()` returns early, and its call is answered
/// `cancelled`; outside a call there is nothing to cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_function_sees_its_cancel_and_returns_early() {
    assert!(!workcrew::worker::is_cancelled());
    assert!(CallContext::current().is_none());
    let mut p = start(&[Encoding::Json]).await;
    p.call(1, "coop", ()).await;
    p.send(Message::Ping { nonce: 1 }).await;
    assert_eq!(p.recv().await, Some(Message::Pong { nonce: 1 }));
    p.send(Message::Cancel { id: 1 }).await;
    match p.recv().await {
        Some(Message::Error { id: 1, error }) => assert_eq!(error.kind, ErrorKind::Cancelled),
        other => panic!("expected call 1 answered cancelled, got {other:?}"),
    }
    p.send(Message::Shutdown).await;
    assert!(p.recv().await.is_none());
    p.worker.await.unwrap().expect("clean shutdown");
}

/// An async call is dropped when cancelled (answered at once), and a task it handed its
/// `CallContext` to sees the cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_call_s_context_tells_the_work_it_handed_over() {
    let mut p = start(&[Encoding::Json]).await;
    p.call(1, "handover", ()).await;
    p.send(Message::Ping { nonce: 1 }).await;
    assert_eq!(p.recv().await, Some(Message::Pong { nonce: 1 }));
    assert!(!HANDED_OVER_SAW_CANCEL.load(std::sync::atomic::Ordering::SeqCst));
    p.send(Message::Cancel { id: 1 }).await;
    match p.recv().await {
        Some(Message::Error { id: 1, error }) => assert_eq!(error.kind, ErrorKind::Cancelled),
        other => panic!("expected call 1 answered cancelled, got {other:?}"),
    }
    for _ in 0..2000 {
        if HANDED_OVER_SAW_CANCEL.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(HANDED_OVER_SAW_CANCEL.load(std::sync::atomic::Ordering::SeqCst));
}

/// A cancelled `CALL_MANY` chunk of a sync function stops between items: it is answered
/// `cancelled` long before its items could have run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_sync_chunk_stops_between_items() {
    let mut p = start(&[Encoding::Json]).await;
    // 1000 items of 50 ms: 50 s if it ran them all, far past the receive guard.
    let payload = p.encoding.encode(&vec![50u64; 1000]).unwrap();
    p.send(Message::CallMany {
        id: 4,
        function: "slow_item".into(),
        payload,
    })
    .await;
    p.send(Message::Ping { nonce: 1 }).await;
    assert_eq!(p.recv().await, Some(Message::Pong { nonce: 1 }));
    p.send(Message::Cancel { id: 4 }).await;
    match p.recv().await {
        Some(Message::Error { id: 4, error }) => assert_eq!(error.kind, ErrorKind::Cancelled),
        other => panic!("expected the chunk answered cancelled, got {other:?}"),
    }
}

/// After `SHUTDOWN` the worker still reads: a `PING` is answered and a `CANCEL` honoured while
/// it finishes its calls; then serving ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_the_worker_still_answers_pings_and_honours_cancels() {
    let mut p = start(&[Encoding::Json]).await;
    p.call(1, "coop", ()).await;
    p.send(Message::Shutdown).await;
    p.send(Message::Ping { nonce: 3 }).await;
    assert_eq!(p.recv().await, Some(Message::Pong { nonce: 3 }));
    p.send(Message::Cancel { id: 1 }).await;
    match p.recv().await {
        Some(Message::Error { id: 1, error }) => assert_eq!(error.kind, ErrorKind::Cancelled),
        other => panic!("expected call 1 answered cancelled, got {other:?}"),
    }
    assert!(p.recv().await.is_none());
    p.worker.await.unwrap().expect("clean shutdown");
}

#[tokio::test]
async fn a_pool_that_sends_garbage_ends_serving_with_an_error() {
    use tokio::io::AsyncWriteExt;
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let worker = tokio::spawn(demo().serve_on(theirs));
    ours.write_all(b"this is not a frame at all").await.unwrap();
    let res = tokio::time::timeout(GUARD, worker)
        .await
        .expect("serve ended")
        .unwrap();
    assert!(matches!(res, Err(ServeError::Frame(_))), "got {res:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pipelined_calls_are_all_answered() {
    let mut p = start(&[Encoding::Postcard]).await;
    const N: u64 = 20_000;
    for id in 0..N {
        let payload = p.encoding.encode(&(id as i64, 1i64)).unwrap();
        let function = if id % 2 == 0 { "add" } else { "acheck" };
        let payload = if id % 2 == 0 {
            payload
        } else {
            p.encoding.encode(&(id as i64)).unwrap()
        };
        let call = Message::Call {
            id,
            function: function.into(),
            payload,
        };
        // Queued without flushing: the worker sees them in large reads.
        p.chan.feed(call.to_frame()).await.unwrap();
    }
    p.chan.flush().await.unwrap();
    let mut seen = vec![false; N as usize];
    for _ in 0..N {
        match p.recv().await {
            Some(Message::Result { id, payload }) => {
                let want = if id % 2 == 0 {
                    id as i64 + 1
                } else {
                    id as i64
                };
                assert_eq!(p.decode::<i64>(&payload), want);
                assert!(
                    !std::mem::replace(&mut seen[id as usize], true),
                    "{id} twice"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    p.send(Message::Shutdown).await;
    assert!(p.recv().await.is_none());
    p.worker.await.unwrap().expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_and_split_frames_and_results_over_the_limit() {
    use tokio::io::AsyncWriteExt;
    let mut p = start(&[Encoding::Json]).await;
    // Larger than the worker's 256 KiB read buffer, under the 1 MiB limit of this session.
    let long = "y".repeat(900 * 1024);
    p.call(1, "echo", &long).await;
    match p.recv().await {
        Some(Message::Result { id: 1, payload }) => assert_eq!(p.decode::<String>(&payload), long),
        other => panic!("unexpected {other:?}"),
    }
    // One frame written in three pieces, with pauses: the worker waits for the rest.
    let call = Message::Call {
        id: 2,
        function: "echo".into(),
        payload: Encoding::Json.encode("split").unwrap(),
    };
    let mut wire = bytes::BytesMut::new();
    tokio_util::codec::Encoder::encode(&mut FrameCodec::default(), call.to_frame(), &mut wire)
        .unwrap();
    for piece in [&wire[..2], &wire[2..15], &wire[15..]] {
        p.chan.get_mut().write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match p.recv().await {
        Some(Message::Result { id: 2, payload }) => {
            assert_eq!(p.decode::<String>(&payload), "split")
        }
        other => panic!("unexpected {other:?}"),
    }
    // A result over the frame limit is refused by the worker, which keeps serving.
    p.call(3, "big", 2usize << 20).await;
    match p.recv().await {
        Some(Message::Error { id: 3, error }) => assert_eq!(error.kind, ErrorKind::TooLarge),
        other => panic!("unexpected {other:?}"),
    }
    p.call(4, "add", (2i64, 2i64)).await;
    assert!(matches!(
        p.recv().await,
        Some(Message::Result { id: 4, .. })
    ));
}

impl Pool {
    async fn call_many<T: serde::Serialize>(&mut self, id: u64, function: &str, items: &[T]) {
        let payload = self.encoding.encode(items).unwrap();
        self.send(Message::CallMany {
            id,
            function: function.into(),
            payload,
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_many_answers_a_chunk_with_one_frame() {
    for offered in [&[Encoding::Json][..], &[Encoding::Postcard][..]] {
        let mut p = start(offered).await;
        let items: Vec<i64> = (0..1000).collect();
        p.call_many(1, "check", &items).await;
        p.call_many(2, "acheck", &items).await;
        p.call_many(3, "acheck", &[] as &[i64]).await;
        let mut got = std::collections::BTreeMap::new();
        while got.len() < 3 {
            match p.recv().await {
                Some(Message::Result { id, payload }) => {
                    got.insert(id, p.decode::<Vec<i64>>(&payload));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got[&1], items);
        assert_eq!(got[&2], items);
        assert!(got[&3].is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_item_fails_its_chunk_and_names_its_index() {
    let mut p = start(&[Encoding::Json]).await;
    p.call_many(1, "check", &[0i64, 1, -2, -3]).await;
    p.call_many(2, "acheck", &[0i64, 1, -2, -3]).await;
    p.call_many(3, "check", &[0i64, 1, i64::MIN]).await;
    p.call_many(4, "acheck", &[0i64, 1, i64::MIN]).await;
    p.send(Message::CallMany {
        id: 5,
        function: "check".into(),
        payload: Bytes::from_static(b"[0, 1, \"two\"]"),
    })
    .await;
    p.send(Message::CallMany {
        id: 6,
        function: "check".into(),
        payload: Bytes::from_static(b"7"),
    })
    .await;
    p.call_many(7, "nope", &[1i64]).await;
    let mut errors = std::collections::BTreeMap::new();
    while errors.len() < 7 {
        match p.recv().await {
            Some(Message::Error { id, error }) => {
                errors.insert(id, error);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    for id in [1, 2] {
        let e = &errors[&id];
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::Failed, "negative: -2")
        );
        assert_eq!(
            e.data,
            Some(serde_json::json!({"index": 2, "data": null})),
            "call {id}"
        );
    }
    for id in [3, 4] {
        let e = &errors[&id];
        assert_eq!(e.kind, ErrorKind::Panicked);
        assert!(e.message.contains("check boom"), "{}", e.message);
        assert_eq!(e.data.as_ref().unwrap()["index"], 2);
    }
    assert_eq!(errors[&5].kind, ErrorKind::BadArgs);
    assert_eq!(errors[&5].data.as_ref().unwrap()["index"], 2);
    // Not a sequence, or no such function: an error for the whole chunk, without an index.
    assert_eq!(
        (errors[&6].kind, &errors[&6].data),
        (ErrorKind::BadArgs, &None)
    );
    assert_eq!(errors[&7].kind, ErrorKind::UnknownFunction);
    // Still serving.
    p.call_many(8, "check", &[5i64]).await;
    match p.recv().await {
        Some(Message::Result { id: 8, payload }) => assert_eq!(p.decode::<Vec<i64>>(&payload), [5]),
        other => panic!("unexpected {other:?}"),
    }
}

impl Pool {
    /// Sends `message` with `fds` attached to its first byte, as a pool does for `CALL_FDS`.
    async fn send_with_fds(&mut self, message: Message, fds: &[BorrowedFd<'_>]) {
        use tokio::io::AsyncWriteExt;
        let mut wire = bytes::BytesMut::new();
        tokio_util::codec::Encoder::encode(
            &mut FrameCodec::default(),
            message.to_frame(),
            &mut wire,
        )
        .unwrap();
        let sent = send_with_fds(self.chan.get_ref(), &wire, fds)
            .await
            .unwrap();
        self.chan.get_mut().write_all(&wire[sent..]).await.unwrap();
    }

    async fn call_fds(&mut self, id: u64, function: &str, args: &str, fds: &[BorrowedFd<'_>]) {
        let call = Message::CallFds {
            id,
            descriptors: fds.len() as u8,
            function: function.into(),
            payload: self.encoding.encode(args).unwrap(),
        };
        self.send_with_fds(call, fds).await;
    }
}

/// A connected pair of TCP streams: (client, server side as accepted).
fn tcp_pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    client.set_read_timeout(Some(GUARD)).unwrap();
    (client, server)
}

fn read_all(mut client: std::net::TcpStream) -> String {
    let mut text = String::new();
    client.read_to_string(&mut text).unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_fds_hands_an_accepted_connection_to_the_worker() {
    let mut p = start(&[Encoding::Postcard]).await;
    let (client, server) = tcp_pair();
    let (client2, server2) = tcp_pair();
    let (client3, server3) = tcp_pair();
    p.call_fds(1, "greet_fd", "crew", &[server.as_fd(), server2.as_fd()])
        .await;
    // The worker has its own copies now: ours are closed, as a pool does after sending.
    drop((server, server2));
    match p.recv().await {
        Some(Message::Result { id: 1, payload }) => assert_eq!(p.decode::<usize>(&payload), 2),
        other => panic!("unexpected {other:?}"),
    }
    // The worker closed its copies too, so the clients read the greeting then end of file.
    assert_eq!(read_all(client), "hello crew");
    assert_eq!(read_all(client2), "hello crew");
    // An async function, and calls without descriptors around it on the same channel.
    p.call(2, "add", (1i64, 2i64)).await;
    p.call_fds(3, "agreet_fd", "async crew", &[server3.as_fd()])
        .await;
    drop(server3);
    p.call(4, "add", (3i64, 4i64)).await;
    let mut got = std::collections::BTreeMap::new();
    while got.len() < 3 {
        match p.recv().await {
            Some(Message::Result { id, payload }) => {
                got.insert(id, payload);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(p.decode::<usize>(&got[&3]), 1);
    assert_eq!(read_all(client3), "hi async crew");
    // A function that takes no descriptors: bad_args, and the descriptor is closed.
    let (client4, server4) = tcp_pair();
    p.call_fds(5, "echo", "x", &[server4.as_fd()]).await;
    drop(server4);
    match p.recv().await {
        Some(Message::Error { id: 5, error }) => assert_eq!(error.kind, ErrorKind::BadArgs),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(read_all(client4), "");
    // A plain CALL to a function that takes descriptors passes none.
    p.call(6, "greet_fd", "nobody").await;
    match p.recv().await {
        Some(Message::Result { id: 6, payload }) => assert_eq!(p.decode::<usize>(&payload), 0),
        other => panic!("unexpected {other:?}"),
    }
    p.send(Message::Shutdown).await;
    assert!(p.recv().await.is_none());
    p.worker.await.unwrap().expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptors_out_of_step_with_frames_end_serving_with_an_error() {
    let (_client, server) = tcp_pair();
    // More descriptors announced than sent; none sent at all; sent with a frame that is not
    // a CALL_FDS.
    let cases: [(u8, usize, bool); 3] = [(2, 1, true), (1, 0, true), (0, 1, false)];
    for (announced, attached, call_fds) in cases {
        let mut p = start(&[Encoding::Json]).await;
        let payload = p.encoding.encode("x").unwrap();
        let message = if call_fds {
            Message::CallFds {
                id: 1,
                descriptors: announced,
                function: "greet_fd".into(),
                payload,
            }
        } else {
            Message::Call {
                id: 1,
                function: "greet_fd".into(),
                payload,
            }
        };
        if attached == 0 {
            p.send(message).await;
        } else {
            p.send_with_fds(message, &vec![server.as_fd(); attached])
                .await;
        }
        let served = tokio::time::timeout(GUARD, &mut p.worker)
            .await
            .expect("serving ended instead of hanging")
            .expect("no panic");
        assert!(
            matches!(served, Err(ServeError::Descriptors(_))),
            "{announced} announced, {attached} attached: {served:?}"
        );
    }
}

/// Drives a worker with raw bytes: reads its HELLO, writes `bytes` (WELCOME and whatever
/// follows) in one write, closes our sending side, and returns what the worker said after
/// HELLO and how serving ended.
async fn raw_session(bytes: Vec<u8>) -> (Vec<Message>, Result<(), ServeError>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let worker = tokio::spawn(demo().serve_on(theirs));
    let mut chan = Framed::new(ours, FrameCodec::default());
    let hello = tokio::time::timeout(GUARD, chan.next()).await.unwrap();
    assert!(matches!(
        Message::from_frame(hello.unwrap().unwrap()),
        Ok(Message::Hello(_))
    ));
    let mut ours = chan.into_inner();
    tokio::io::AsyncWriteExt::write_all(&mut ours, &bytes)
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::shutdown(&mut ours).await.unwrap();
    let mut chan = Framed::new(ours, FrameCodec::default());
    let mut said = Vec::new();
    while let Some(Ok(frame)) = tokio::time::timeout(GUARD, chan.next()).await.unwrap() {
        said.push(Message::from_frame(frame).unwrap());
    }
    let ended = tokio::time::timeout(GUARD, worker).await.unwrap().unwrap();
    (said, ended)
}

fn wire(messages: &[Message]) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    for m in messages {
        tokio_util::codec::Encoder::encode(&mut FrameCodec::default(), m.to_frame(), &mut out)
            .unwrap();
    }
    out.to_vec()
}

/// Found by fuzzing: a pool announcing a tiny `max_frame` made the worker recurse forever
/// trying to fit an error into it. Below the protocol's minimum, the channel is broken.
#[tokio::test]
async fn a_max_frame_below_the_minimum_ends_serving_with_an_error() {
    let welcome = Welcome {
        max_frame: 53,
        encoding: Encoding::Json,
        ..Welcome::default()
    };
    let call = Message::Call {
        id: 1,
        function: String::new(),
        payload: Bytes::from_static(b"null"),
    };
    let (said, ended) = raw_session(wire(&[Message::Welcome(welcome), call])).await;
    assert!(said.is_empty(), "{said:?}");
    assert!(
        matches!(&ended, Err(ServeError::Unexpected(m)) if m.contains("minimum")),
        "{ended:?}"
    );
}

/// Found by fuzzing: calls that arrived in the same read as `WELCOME`, just before end of
/// file, were dropped unanswered.
#[tokio::test]
async fn calls_read_together_with_welcome_before_end_of_file_are_answered() {
    let welcome = Welcome {
        encoding: Encoding::Json,
        ..Welcome::default()
    };
    let call = Message::Call {
        id: 9,
        function: "add".into(),
        payload: Bytes::from_static(b"[2,3]"),
    };
    let (said, ended) = raw_session(wire(&[Message::Welcome(welcome), call])).await;
    assert_eq!(
        said,
        vec![Message::Result {
            id: 9,
            payload: Bytes::from_static(b"5")
        }]
    );
    assert!(ended.is_ok(), "{ended:?}");
}

/// The pool sends no call after `SHUTDOWN` (protocol 3.8): one that does breaks the channel.
#[tokio::test]
async fn a_call_after_shutdown_ends_serving_with_an_error() {
    let welcome = Welcome {
        encoding: Encoding::Json,
        ..Welcome::default()
    };
    let call = Message::Call {
        id: 3,
        function: "add".into(),
        payload: Bytes::from_static(b"[2,3]"),
    };
    let (said, ended) =
        raw_session(wire(&[Message::Welcome(welcome), Message::Shutdown, call])).await;
    assert!(said.is_empty(), "{said:?}");
    assert!(
        matches!(&ended, Err(ServeError::Unexpected(m)) if m.contains("after SHUTDOWN")),
        "{ended:?}"
    );
}

/// The concurrency a worker announces in `HELLO` when it sets none: its serving of one worker.
async fn announced(worker: Worker) -> u32 {
    let (ours, theirs) = UnixStream::pair().expect("socket pair");
    let serving = tokio::spawn(worker.serve_on(theirs));
    let mut chan = Framed::new(ours, FrameCodec::default());
    let frame = tokio::time::timeout(GUARD, chan.next())
        .await
        .expect("HELLO within the guard")
        .expect("a frame")
        .expect("a well-formed frame");
    let Message::Hello(hello) = Message::from_frame(frame).unwrap() else {
        panic!("expected HELLO")
    };
    drop(chan); // end of file before WELCOME: the worker stops serving
    let _ = tokio::time::timeout(GUARD, serving)
        .await
        .expect("the worker stops at end of file");
    hello.concurrency
}

/// Issue 13, item 4: a worker that sets no concurrency announces one that fits its functions —
/// deep for async functions only, one per core once a function is sync — and an explicit one
/// wins (0 counting as 1).
#[tokio::test]
async fn default_concurrency_fits_the_functions() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let async_only = Worker::builder()
        .async_function("echo", |x: u64| async move { Ok::<_, String>(x) })
        .build();
    assert_eq!(
        async_only.announced_concurrency(),
        workcrew::worker::DEFAULT_ASYNC_CONCURRENCY
    );
    assert_eq!(announced(async_only).await, 1024);

    let with_sync = Worker::builder()
        .async_function("echo", |x: u64| async move { Ok::<_, String>(x) })
        .function("square", |x: u64| Ok::<_, String>(x * x))
        .build();
    assert_eq!(announced(with_sync).await, cores);

    let explicit = Worker::builder()
        .async_function("echo", |x: u64| async move { Ok::<_, String>(x) })
        .concurrency(7)
        .build();
    assert_eq!(announced(explicit).await, 7);
    let zero = Worker::builder()
        .function("square", |x: u64| Ok::<_, String>(x * x))
        .concurrency(0)
        .build();
    assert_eq!(announced(zero).await, 1);
}
