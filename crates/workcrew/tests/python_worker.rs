//! The reference Python worker (`workers/python/`), written from `docs/protocol.md` alone, driven
//! over a real socket pair by the protocol types of this crate: handshake, echo, every error
//! kind, cancel, heartbeats, output on stdout/stderr that must not disturb the channel, a crash,
//! a clean shutdown, `CALL_MANY` chunks, and `CALL_FDS` (a TCP connection accepted by the test,
//! served by the worker). Every child is killed and reaped by its guard, also on failure.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio_util::codec::Framed;
use workcrew::protocol::{send_with_fds, Encoding, ErrorKind, FrameCodec, Message, Welcome};

/// How long any single exchange may take before the test fails instead of hanging.
const GUARD: Duration = Duration::from_secs(20);

struct Worker {
    child: Option<Child>,
    chan: Framed<UnixStream, FrameCodec>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn demo_worker() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../workers/python/demo_worker.py")
}

/// Starts the demo worker with one end of a socket pair as its fd 0 and does the handshake.
async fn start() -> Worker {
    let (ours, theirs) = StdUnixStream::pair().expect("socket pair");
    let child = Command::new("python3")
        .arg(demo_worker())
        .env("WORKCREW_PROTOCOL", "1")
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed to run the reference worker");
    ours.set_nonblocking(true).expect("non-blocking");
    let chan = Framed::new(
        UnixStream::from_std(ours).expect("tokio stream"),
        FrameCodec::default(),
    );
    let mut w = Worker {
        child: Some(child),
        chan,
    };
    let hello = match w.recv().await {
        Some(Message::Hello(h)) => h,
        other => panic!("expected HELLO, got {other:?}"),
    };
    assert_eq!(hello.protocol, 1);
    assert_eq!(hello.concurrency, 4);
    assert_eq!(hello.encodings, [Encoding::Json]);
    assert!(hello.batch, "the reference worker serves CALL_MANY");
    assert!(hello.fds, "the reference worker accepts CALL_FDS");
    for f in [
        "echo", "fail", "check", "panic", "crash", "sleep", "spam", "pid",
    ] {
        assert!(hello.functions.iter().any(|g| g == f), "{f} announced");
    }
    let welcome = Welcome::negotiate(&hello, &[Encoding::Json, Encoding::Postcard], 1 << 20, 0)
        .expect("json is shared");
    w.send(Message::Welcome(welcome)).await;
    w
}

impl Worker {
    async fn send(&mut self, m: Message) {
        tokio::time::timeout(GUARD, self.chan.send(m.to_frame()))
            .await
            .expect("send hung")
            .expect("send");
    }

    /// The next message, or `None` at end of file.
    async fn recv(&mut self) -> Option<Message> {
        let frame = tokio::time::timeout(GUARD, self.chan.next())
            .await
            .expect("worker went silent")?;
        Some(Message::from_frame(frame.expect("valid frame")).expect("valid message"))
    }

    async fn call(&mut self, id: u64, function: &str, args: serde_json::Value) {
        let payload = Encoding::Json.encode(&args).unwrap();
        self.send(Message::Call {
            id,
            function: function.into(),
            payload,
        })
        .await;
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("child");
        // Bounded: poll for the exit instead of blocking forever.
        for _ in 0..2000 {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("worker did not exit");
    }
}

fn json(payload: &Bytes) -> serde_json::Value {
    Encoding::Json.decode(payload).unwrap()
}

#[tokio::test]
async fn handshake_echo_heartbeat_and_clean_shutdown() {
    let mut w = start().await;
    w.call(1, "echo", serde_json::json!({"a": [1, 2, 3]})).await;
    w.call(2, "echo", serde_json::json!("hi")).await;
    w.send(Message::Ping { nonce: 77 }).await;
    let mut results = std::collections::BTreeMap::new();
    let mut pong = false;
    while results.len() < 2 || !pong {
        match w.recv().await {
            Some(Message::Result { id, payload }) => {
                results.insert(id, json(&payload));
            }
            Some(Message::Pong { nonce: 77 }) => pong = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(results[&1], serde_json::json!({"a": [1, 2, 3]}));
    assert_eq!(results[&2], serde_json::json!("hi"));
    w.send(Message::Shutdown).await;
    assert!(
        w.recv().await.is_none(),
        "the worker closes the channel on shutdown"
    );
    assert!(w.wait_exit().success());
}

#[tokio::test]
async fn every_error_kind_and_the_worker_keeps_serving() {
    let mut w = start().await;
    w.call(1, "fail", serde_json::json!([1])).await;
    w.call(2, "panic", serde_json::json!(null)).await;
    w.call(3, "nope", serde_json::json!(null)).await;
    w.send(Message::Call {
        id: 4,
        function: "echo".into(),
        payload: Bytes::from_static(b"{not json"),
    })
    .await;
    let mut kinds = std::collections::BTreeMap::new();
    while kinds.len() < 4 {
        match w.recv().await {
            Some(Message::Error { id, error }) => {
                if id == 1 {
                    assert_eq!(error.message, "asked to fail");
                    assert_eq!(error.data, Some(serde_json::json!({"args": [1]})));
                }
                kinds.insert(id, error.kind);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(kinds[&1], ErrorKind::Failed);
    assert_eq!(kinds[&2], ErrorKind::Panicked);
    assert_eq!(kinds[&3], ErrorKind::UnknownFunction);
    assert_eq!(kinds[&4], ErrorKind::BadArgs);
    // Still serving.
    w.call(5, "echo", serde_json::json!(5)).await;
    assert_eq!(
        w.recv().await,
        Some(Message::Result {
            id: 5,
            payload: Bytes::from_static(b"5")
        })
    );
}

#[tokio::test]
async fn cancel_stops_a_running_call() {
    let mut w = start().await;
    w.call(1, "sleep", serde_json::json!(60)).await;
    w.call(2, "echo", serde_json::json!("still here")).await;
    assert!(
        matches!(w.recv().await, Some(Message::Result { id: 2, .. })),
        "other calls run meanwhile"
    );
    w.send(Message::Cancel { id: 1 }).await;
    w.send(Message::Cancel { id: 999 }).await; // not in flight: ignored
    match w.recv().await {
        Some(Message::Error { id: 1, error }) => assert_eq!(error.kind, ErrorKind::Cancelled),
        other => panic!("expected the cancelled error, got {other:?}"),
    }
}

/// A function that ignores its cancel (`hang`, a sleep) keeps its call unanswered until it
/// returns: the worker answers `cancelled` only once the function has ended (protocol 3.6).
#[tokio::test]
async fn a_cancelled_call_is_answered_only_once_its_function_has_ended() {
    let mut w = start().await;
    w.call(1, "hang", serde_json::json!(1.0)).await;
    w.send(Message::Cancel { id: 1 }).await;
    for nonce in [1, 2] {
        w.send(Message::Ping { nonce }).await;
        assert_eq!(
            w.recv().await,
            Some(Message::Pong { nonce }),
            "no answer yet"
        );
    }
    let started = std::time::Instant::now();
    match w.recv().await {
        Some(Message::Error { id: 1, error }) => assert_eq!(error.kind, ErrorKind::Cancelled),
        other => panic!("expected the cancelled error, got {other:?}"),
    }
    assert!(
        started.elapsed() > Duration::from_millis(300),
        "answered while the function still slept"
    );
}

/// `workcrew_worker.cancelled()` tells a function on its thread that its call was cancelled; a
/// cancelled chunk stops between items.
#[tokio::test]
async fn a_function_sees_its_cancel_through_the_module_and_a_chunk_stops_between_items() {
    let mut w = start().await;
    w.call(1, "coop", serde_json::json!(60)).await;
    w.send(Message::Ping { nonce: 1 }).await;
    assert_eq!(w.recv().await, Some(Message::Pong { nonce: 1 }));
    w.send(Message::Cancel { id: 1 }).await;
    match w.recv().await {
        Some(Message::Error { id: 1, error }) => assert_eq!(error.kind, ErrorKind::Cancelled),
        other => panic!("expected the cancelled error, got {other:?}"),
    }
    // 100 items of 0.2 s: 20 s if it ran them all.
    let payload = Encoding::Json.encode(&vec![0.2; 100]).unwrap();
    w.send(Message::CallMany {
        id: 2,
        function: "hang".into(),
        payload,
    })
    .await;
    w.send(Message::Ping { nonce: 2 }).await;
    assert_eq!(w.recv().await, Some(Message::Pong { nonce: 2 }));
    let started = std::time::Instant::now();
    w.send(Message::Cancel { id: 2 }).await;
    match w.recv().await {
        Some(Message::Error { id: 2, error }) => assert_eq!(error.kind, ErrorKind::Cancelled),
        other => panic!("expected the cancelled chunk, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn printing_does_not_disturb_the_channel() {
    let mut w = start().await;
    let mut stdout = w.child.as_mut().unwrap().stdout.take().unwrap();
    let mut stderr = w.child.as_mut().unwrap().stderr.take().unwrap();
    // Drain both pipes, as the pool does, so the child never blocks on a full pipe.
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).map(|_| s)
    });
    w.call(1, "spam", serde_json::json!(2000)).await;
    assert_eq!(
        w.recv().await,
        Some(Message::Result {
            id: 1,
            payload: Bytes::from_static(b"\"done\"")
        })
    );
    w.send(Message::Shutdown).await;
    assert!(w.wait_exit().success());
    let out = out.join().unwrap().unwrap();
    let err = err.join().unwrap().unwrap();
    assert_eq!(out.lines().count(), 2000);
    assert!(err.contains("noise on stderr 1999"));
}

#[tokio::test]
async fn a_crash_closes_the_channel_and_reports_its_exit_code() {
    let mut w = start().await;
    w.call(1, "crash", serde_json::json!(3)).await;
    assert!(w.recv().await.is_none(), "end of file, no answer");
    assert_eq!(w.wait_exit().code(), Some(3));
}

#[tokio::test]
async fn call_many_answers_a_chunk_or_names_the_failing_item() {
    let mut w = start().await;
    let many = |id, function: &str, items: serde_json::Value| Message::CallMany {
        id,
        function: function.into(),
        payload: Encoding::Json.encode(&items).unwrap(),
    };
    w.send(many(
        1,
        "echo",
        serde_json::json!([1, "two", {"three": 3}, null]),
    ))
    .await;
    match w.recv().await {
        Some(Message::Result { id: 1, payload }) => {
            assert_eq!(
                json(&payload),
                serde_json::json!([1, "two", {"three": 3}, null])
            )
        }
        other => panic!("unexpected {other:?}"),
    }
    w.send(many(2, "check", serde_json::json!([0, 1, -2, -3])))
        .await;
    match w.recv().await {
        Some(Message::Error { id: 2, error }) => {
            assert_eq!(
                (error.kind, error.message.as_str()),
                (ErrorKind::Failed, "negative: -2")
            );
            assert_eq!(
                error.data,
                Some(serde_json::json!({"index": 2, "data": {"value": -2}}))
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    w.send(many(3, "panic", serde_json::json!([0]))).await;
    w.send(many(4, "echo", serde_json::json!({"not": "a list"})))
        .await;
    w.send(many(5, "echo", serde_json::json!([]))).await;
    let mut answers = std::collections::BTreeMap::new();
    while answers.len() < 3 {
        match w.recv().await {
            Some(Message::Error { id, error }) => {
                answers.insert(id, Err((error.kind, error.data)));
            }
            Some(Message::Result { id, payload }) => {
                answers.insert(id, Ok(json(&payload)));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let Err((kind, Some(data))) = &answers[&3] else {
        panic!("chunk 3: {:?}", answers[&3])
    };
    assert_eq!(
        (*kind, &data["index"]),
        (ErrorKind::Panicked, &serde_json::json!(0))
    );
    // Not a list: an error for the whole chunk, without an index.
    assert_eq!(answers[&4], Err((ErrorKind::BadArgs, None)));
    assert_eq!(answers[&5], Ok(serde_json::json!([])));
}

#[tokio::test]
async fn call_fds_hands_an_accepted_connection_to_the_worker() {
    use tokio::io::AsyncWriteExt;
    let mut w = start().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut clients = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..2 {
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_read_timeout(Some(GUARD)).unwrap();
        clients.push(client);
        servers.push(listener.accept().unwrap().0);
    }
    // An ordinary call first, so the descriptors ride on a frame in the middle of the stream.
    w.call(1, "echo", serde_json::json!("before")).await;
    let call = Message::CallFds {
        id: 2,
        descriptors: 2,
        function: "greet_fd".into(),
        payload: Encoding::Json.encode("python").unwrap(),
    };
    let mut wire = bytes::BytesMut::new();
    tokio_util::codec::Encoder::encode(&mut FrameCodec::default(), call.to_frame(), &mut wire)
        .unwrap();
    let fds: Vec<_> = servers.iter().map(|s| s.as_fd()).collect();
    let sent = send_with_fds(w.chan.get_ref(), &wire, &fds).await.unwrap();
    w.chan.get_mut().write_all(&wire[sent..]).await.unwrap();
    drop(servers); // the worker has its own copies
    let mut results = std::collections::BTreeMap::new();
    while results.len() < 2 {
        match w.recv().await {
            Some(Message::Result { id, payload }) => {
                results.insert(id, json(&payload));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(results[&2], serde_json::json!(2));
    for mut client in clients {
        let mut text = String::new();
        client.read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello python");
    }
    // Still serving, and a CALL_FDS to a function that takes no descriptors is bad_args.
    let (_client, server) = {
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (client, listener.accept().unwrap().0)
    };
    let call = Message::CallFds {
        id: 3,
        descriptors: 1,
        function: "echo".into(),
        payload: Encoding::Json.encode("x").unwrap(),
    };
    let mut wire = bytes::BytesMut::new();
    tokio_util::codec::Encoder::encode(&mut FrameCodec::default(), call.to_frame(), &mut wire)
        .unwrap();
    let sent = send_with_fds(w.chan.get_ref(), &wire, &[server.as_fd()])
        .await
        .unwrap();
    w.chan.get_mut().write_all(&wire[sent..]).await.unwrap();
    match w.recv().await {
        Some(Message::Error { id: 3, error }) => assert_eq!(error.kind, ErrorKind::BadArgs),
        other => panic!("unexpected {other:?}"),
    }
    w.send(Message::Shutdown).await;
    assert!(w.wait_exit().success());
}
