//! The Node.js worker's side of `docs/protocol.md`, driven over a raw socket pair by this
//! crate's protocol types (as `python_worker.rs` drives the Python one): what it announces,
//! ids and nonces beyond JavaScript's exact integers, each error kind it sends, `CALL_MANY`,
//! the cancel rule, `SHUTDOWN` and end of file, and every frame that breaks the channel (the
//! worker exits with 76 without reading further). `node_worker.rs` runs it under the pool.
//!
//! `node` (18 or newer) must be on `PATH`: without it these tests fail, they do not skip.
//! Every child is killed and reaped by its guard, also when a test fails.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio_util::codec::Framed;
use workcrew::protocol::{
    Encoding, ErrorBody, ErrorKind, FrameCodec, Hello, Message, Welcome, DEFAULT_MAX_FRAME,
};

mod support;
use support::node::{module, node, serve_js};

/// How long one exchange may take before the test fails instead of hanging.
const GUARD: Duration = Duration::from_secs(20);

/// The exit code of a worker whose channel broke (EX_PROTOCOL).
const EXIT_PROTOCOL: i32 = 76;

struct Worker {
    child: Option<Child>,
    chan: Option<Framed<UnixStream, FrameCodec>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `node serve.js [args] functions.js` with one end of a socket pair as its fd 0, and
/// reads its `HELLO` (not answered yet).
async fn spawn(args: &[&str], env: &[(&str, &str)]) -> (Worker, Hello) {
    spawn_module("functions.js", args, env).await
}

/// [`spawn`] serving the test module `name`.
async fn spawn_module(name: &str, args: &[&str], env: &[(&str, &str)]) -> (Worker, Hello) {
    let (ours, theirs) = StdUnixStream::pair().expect("socket pair");
    let child = Command::new(node())
        .arg(serve_js())
        .args(args)
        .arg(module(name))
        .envs(env.iter().copied())
        .env("WORKCREW_PROTOCOL", "1")
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    ours.set_nonblocking(true).expect("non-blocking");
    let chan = Framed::new(
        UnixStream::from_std(ours).expect("tokio stream"),
        FrameCodec::default(),
    );
    let mut w = Worker {
        child: Some(child),
        chan: Some(chan),
    };
    let hello = match w.recv().await {
        Some(Message::Hello(h)) => h,
        other => panic!("expected HELLO, got {other:?}"),
    };
    (w, hello)
}

/// A worker past its handshake, welcomed with `max_frame`.
async fn start_with(max_frame: usize) -> Worker {
    let (mut w, hello) = spawn(&[], &[("WORKCREW_NODE_CONCURRENCY", "8")]).await;
    let welcome = Welcome::negotiate(&hello, &[Encoding::Postcard, Encoding::Json], max_frame, 0)
        .expect("json is shared");
    w.send(Message::Welcome(welcome)).await;
    w
}

async fn start() -> Worker {
    start_with(DEFAULT_MAX_FRAME).await
}

impl Worker {
    fn chan(&mut self) -> &mut Framed<UnixStream, FrameCodec> {
        self.chan.as_mut().expect("the channel is open")
    }

    async fn send(&mut self, m: Message) {
        tokio::time::timeout(GUARD, self.chan().send(m.to_frame()))
            .await
            .expect("send hung")
            .expect("send");
    }

    /// Writes bytes as they are, frame or not.
    async fn send_raw(&mut self, bytes: &[u8]) {
        self.chan().get_mut().write_all(bytes).await.expect("write");
    }

    /// The next message, or `None` at end of file.
    async fn recv(&mut self) -> Option<Message> {
        let frame = tokio::time::timeout(GUARD, self.chan().next())
            .await
            .expect("the worker went silent")?;
        Some(Message::from_frame(frame.expect("a valid frame")).expect("a valid message"))
    }

    async fn call(&mut self, id: u64, function: &str, args: Value) {
        let payload = Encoding::Json.encode(&args).unwrap();
        self.send(Message::Call {
            id,
            function: function.into(),
            payload,
        })
        .await;
    }

    async fn call_many(&mut self, id: u64, function: &str, items: Value) {
        let payload = Encoding::Json.encode(&items).unwrap();
        self.send(Message::CallMany {
            id,
            function: function.into(),
            payload,
        })
        .await;
    }

    /// Returns once call `id` (just sent) has started: a `PING` sent after it is answered
    /// while the worker reads the frames, and the calls read with it start right after.
    async fn started(&mut self, id: u64) {
        let nonce = 1_000_000 + id;
        self.send(Message::Ping { nonce }).await;
        assert_eq!(self.recv().await, Some(Message::Pong { nonce }));
    }

    /// The answers to `n` calls, by id.
    async fn answers(&mut self, n: usize) -> BTreeMap<u64, Result<Value, ErrorBody>> {
        let mut answers = BTreeMap::new();
        while answers.len() < n {
            match self.recv().await {
                Some(Message::Result { id, payload }) => {
                    assert!(
                        answers.insert(id, Ok(json_of(&payload))).is_none(),
                        "{id} twice"
                    );
                }
                Some(Message::Error { id, error }) => {
                    assert!(answers.insert(id, Err(error)).is_none(), "{id} twice");
                }
                other => panic!("expected an answer, got {other:?}"),
            }
        }
        answers
    }

    /// Waits (bounded) for the worker to exit; its status and what it wrote to stderr.
    fn wait_exit(&mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("child");
        for _ in 0..2000 {
            if let Some(status) = child.try_wait().expect("try_wait") {
                let mut stderr = String::new();
                child
                    .stderr
                    .take()
                    .expect("stderr")
                    .read_to_string(&mut stderr)
                    .expect("stderr");
                return (status, stderr);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the worker did not exit");
    }
}

fn json_of(payload: &Bytes) -> Value {
    Encoding::Json.decode(payload).unwrap()
}

/// A frame's header: `length`, `type`, `id`.
fn header(length: u32, kind: u8, id: u64) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u32(length);
    b.put_u8(kind);
    b.put_u64(id);
    b
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn hello_announces_json_batches_no_fds_the_pid_and_the_sorted_exports() {
    let (mut w, hello) = spawn(&[], &[]).await;
    assert_eq!(hello.protocol, 1);
    assert_eq!(hello.encodings, [Encoding::Json]);
    assert!(hello.batch, "CALL_MANY is served");
    assert!(!hello.fds, "Node cannot receive descriptors on fd 0");
    assert_eq!(hello.concurrency, 1, "the default");
    assert_eq!(hello.pid, Some(w.child.as_ref().unwrap().id()));
    let mut sorted = hello.functions.clone();
    sorted.sort();
    assert_eq!(hello.functions, sorted);
    for f in ["echo", "add", "wait", "square", "state"] {
        assert!(hello.functions.iter().any(|g| g == f), "{f}");
    }
    drop(w.chan.take());
    assert_eq!(
        w.wait_exit().0.code(),
        Some(0),
        "end of file before WELCOME"
    );

    let (_, hello) = spawn(&[], &[("WORKCREW_NODE_CONCURRENCY", "7")]).await;
    assert_eq!(hello.concurrency, 7);
    let (_, hello) = spawn(
        &["--concurrency", "5"],
        &[("WORKCREW_NODE_CONCURRENCY", "7")],
    )
    .await;
    assert_eq!(hello.concurrency, 5, "the flag wins");
    let (_, hello) = spawn(&["--concurrency=9"], &[]).await;
    assert_eq!(hello.concurrency, 9);
}

/// Unset, the concurrency fits the functions: 1024 when every one is declared `async`, 1 when
/// any is synchronous (`functions.js` above; `esm_functions.mjs` mixes both). A setting wins.
#[tokio::test]
async fn the_default_concurrency_is_high_only_when_every_function_is_async() {
    let (_, hello) = spawn_module("async_functions.js", &[], &[]).await;
    assert_eq!(hello.concurrency, 1024);
    let (_, hello) = spawn_module("esm_functions.mjs", &[], &[]).await;
    assert_eq!(
        hello.concurrency, 1,
        "a synchronous function among async ones"
    );
    let (_, hello) = spawn_module(
        "async_functions.js",
        &[],
        &[("WORKCREW_NODE_CONCURRENCY", "3")],
    )
    .await;
    assert_eq!(hello.concurrency, 3);
    let (_, hello) = spawn_module("async_functions.js", &["-c", "1"], &[]).await;
    assert_eq!(hello.concurrency, 1);
}

#[tokio::test]
async fn ids_and_nonces_beyond_2_pow_53_come_back_exactly() {
    let mut w = start().await;
    let ids = [u64::MAX, (1 << 53) + 1, 1 << 63, 7];
    for (i, id) in ids.iter().enumerate() {
        w.call(*id, "echo", json!(i)).await;
    }
    w.call_many((1 << 60) + 3, "square", json!([1, 2])).await;
    let nonce = 0xdead_beef_0000_0001;
    w.send(Message::Ping { nonce }).await;
    let mut answers = BTreeMap::new();
    let mut ponged = false;
    while answers.len() < ids.len() + 1 || !ponged {
        match w.recv().await {
            Some(Message::Result { id, payload }) => {
                answers.insert(id, json_of(&payload));
            }
            Some(Message::Pong { nonce: n }) => {
                assert_eq!(n, nonce);
                ponged = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(answers[id], json!(i), "call {id}");
    }
    assert_eq!(answers[&((1 << 60) + 3)], json!([1, 4]));
    // A cancel names its call by the same exact id.
    let big = (1 << 62) + 11;
    w.call(big, "wait", json!(60_000)).await;
    w.send(Message::Cancel { id: big }).await;
    let answer = w.answers(1).await;
    assert_eq!(
        answer[&big].as_ref().unwrap_err().kind,
        ErrorKind::Cancelled
    );
}

#[tokio::test]
async fn bad_args_unknown_functions_and_function_errors_and_the_worker_goes_on() {
    let mut w = start().await;
    w.send(Message::Call {
        id: 1,
        function: "echo".into(),
        payload: Bytes::from_static(b"{not json"),
    })
    .await;
    w.send(Message::Call {
        id: 2,
        function: "echo".into(),
        payload: Bytes::from_static(b"\"\xff\xfe\""),
    })
    .await;
    w.call(3, "nope", json!(null)).await;
    w.call(4, "fail", json!("why")).await;
    w.call(5, "throwString", json!(null)).await;
    let answers = w.answers(5).await;
    let kind = |id: u64| answers[&id].as_ref().unwrap_err().kind;
    assert_eq!(kind(1), ErrorKind::BadArgs);
    assert_eq!(kind(2), ErrorKind::BadArgs, "a payload that is not UTF-8");
    assert_eq!(kind(3), ErrorKind::UnknownFunction);
    let failed = answers[&4].as_ref().unwrap_err();
    assert_eq!(
        (failed.kind, failed.message.as_str(), &failed.data),
        (ErrorKind::Failed, "why", &Some(json!({"reason": "why"})))
    );
    assert_eq!(kind(5), ErrorKind::Failed);
    w.call(6, "echo", json!("still here")).await;
    assert_eq!(w.answers(1).await[&6], Ok(json!("still here")));
}

#[tokio::test]
async fn call_many_answers_the_chunk_in_order_or_names_the_first_failing_item() {
    let mut w = start().await;
    w.call_many(1, "square", json!([1, 2, 3])).await;
    w.call_many(2, "square", json!([1, 2, -3, -4])).await;
    w.call_many(3, "fail", json!(["first"])).await;
    w.call_many(4, "square", json!({"not": "a list"})).await;
    w.call_many(5, "square", json!([])).await;
    w.call_many(6, "greet", json!(["a", "b"])).await;
    w.call_many(7, "add", json!([[1, 2], [3, 4]])).await;
    let answers = w.answers(7).await;
    assert_eq!(answers[&1], Ok(json!([1, 4, 9])));
    let e = answers[&2].as_ref().unwrap_err();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::Failed, "negative: -3")
    );
    assert_eq!(e.data, Some(json!({"index": 2, "data": null})));
    let e = answers[&3].as_ref().unwrap_err();
    assert_eq!(
        e.data,
        Some(json!({"index": 0, "data": {"reason": "first"}})),
        "the item's own data inside"
    );
    let e = answers[&4].as_ref().unwrap_err();
    assert_eq!(
        (e.kind, &e.data),
        (ErrorKind::BadArgs, &None),
        "the whole chunk"
    );
    assert_eq!(answers[&5], Ok(json!([])));
    assert_eq!(answers[&6], Ok(json!(["hello a", "hello b"])));
    assert_eq!(
        answers[&7],
        Ok(json!([3, 7])),
        "each item is an argument list"
    );
}

/// The cancel rule: a call is answered once its function has ended, `cancelled` if it ended
/// with an error after the cancel, its value if it finished anyway, and not at all while a
/// function that ignores its signal runs on.
#[tokio::test]
async fn a_cancelled_call_is_answered_only_when_its_function_has_ended() {
    let mut w = start().await;
    // Cooperative: the signal fires, the function rejects, the answer is `cancelled`.
    w.call(1, "wait", json!(60_000)).await;
    w.started(1).await;
    w.send(Message::Cancel { id: 1 }).await;
    let e = w.answers(1).await.remove(&1).unwrap().unwrap_err();
    assert_eq!(e.kind, ErrorKind::Cancelled);
    // Synchronous: it cannot see the cancel and finishes; its value is the answer.
    w.call(2, "busy", json!(300)).await;
    w.started(2).await;
    w.send(Message::Cancel { id: 2 }).await;
    assert!(w.answers(1).await[&2].is_ok());
    // Not in flight: ignored.
    w.send(Message::Cancel { id: 999 }).await;
    // Ignores its signal: no answer while it runs, though the worker answers PING.
    w.call(3, "ignore", json!(null)).await;
    w.started(3).await;
    w.send(Message::Cancel { id: 3 }).await;
    for nonce in 10..13 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        w.send(Message::Ping { nonce }).await;
        assert_eq!(
            w.recv().await,
            Some(Message::Pong { nonce }),
            "and nothing else"
        );
    }
    // Still serving.
    w.call(4, "echo", json!(4)).await;
    assert_eq!(w.answers(1).await[&4], Ok(json!(4)));
}

/// A `CANCEL` read with its `CALL`, before the function started: the call is answered
/// `cancelled` and the function never runs.
#[tokio::test]
async fn a_call_cancelled_before_it_starts_never_runs() {
    let mut w = start().await;
    let mut both = BytesMut::new();
    let mut codec = FrameCodec::default();
    let call = Message::Call {
        id: 1,
        function: "recordId".into(),
        payload: Bytes::from_static(b"1"),
    };
    for m in [call, Message::Cancel { id: 1 }] {
        tokio_util::codec::Encoder::encode(&mut codec, m.to_frame(), &mut both).unwrap();
    }
    w.send_raw(&both).await; // one write: the worker reads both at once
    let e = w.answers(1).await.remove(&1).unwrap().unwrap_err();
    assert_eq!(e.kind, ErrorKind::Cancelled);
    w.call(2, "state", json!(null)).await;
    let state = w.answers(1).await.remove(&2).unwrap().unwrap();
    assert_eq!(state["ids"], 0, "recordId never ran: {state}");
}

#[tokio::test]
async fn shutdown_finishes_the_held_calls_answers_them_and_exits_0() {
    let mut w = start().await;
    w.call(1, "wait", json!(300)).await;
    w.call(2, "greet", json!("x")).await;
    w.send(Message::Shutdown).await;
    let answers = w.answers(2).await;
    assert_eq!(answers[&1], Ok(json!("waited")));
    assert_eq!(answers[&2], Ok(json!("hello x")));
    assert_eq!(w.recv().await, None, "then end of file");
    assert_eq!(w.wait_exit().0.code(), Some(0));
}

#[tokio::test]
async fn end_of_file_exits_0_even_with_calls_held() {
    let mut w = start().await;
    w.call(1, "ignore", json!(null)).await;
    w.send(Message::Ping { nonce: 1 }).await;
    assert_eq!(w.recv().await, Some(Message::Pong { nonce: 1 }));
    drop(w.chan.take());
    assert_eq!(w.wait_exit().0.code(), Some(0));
}

#[tokio::test]
async fn a_result_above_max_frame_is_too_large() {
    let mut w = start_with(4096).await;
    // `"` + 4085 bytes + `"` is a 4087-byte payload: with type and id, a frame length of
    // exactly 4096, which fits; one byte more does not.
    w.call(1, "repeat", json!(4085)).await;
    w.call(2, "repeat", json!(4086)).await;
    let answers = w.answers(2).await;
    assert_eq!(answers[&1].as_ref().unwrap().as_str().unwrap().len(), 4085);
    let e = answers[&2].as_ref().unwrap_err();
    assert_eq!(e.kind, ErrorKind::TooLarge, "{e:?}");
}

/// Sends `bytes` after the handshake (or instead of `WELCOME` when `welcome` is false); the
/// worker must exit with 76 and say why on stderr.
async fn breaks_the_channel(what: &str, welcome: bool, bytes: &[u8]) {
    let mut w = if welcome {
        start_with(4096).await
    } else {
        spawn(&[], &[]).await.0
    };
    w.send_raw(bytes).await;
    let (status, stderr) = w.wait_exit();
    assert_eq!(
        status.code(),
        Some(EXIT_PROTOCOL),
        "{what}: {status:?} {stderr}"
    );
    assert!(stderr.contains("protocol error"), "{what}: {stderr}");
}

#[tokio::test]
async fn frames_the_protocol_forbids_break_the_channel_and_the_worker_exits_76() {
    // A length below 9.
    breaks_the_channel("length 5", true, &[0, 0, 0, 5, 3, 0, 0, 0, 0]).await;
    // Above max_frame: the worker exits without waiting for the body, which never comes.
    breaks_the_channel("length 4097", true, &header(4097, 3, 1)).await;
    breaks_the_channel("unknown type", true, &header(9, 99, 0)).await;
    breaks_the_channel("a RESULT from the pool", true, &header(9, 4, 0)).await;
    // CALL_FDS to a worker that announced `fds: false`.
    let mut fds = header(9 + 1 + 2 + 4 + 1, 11, 1);
    fds.put_u8(1);
    fds.put_u16(4);
    fds.put_slice(b"echo1");
    breaks_the_channel("CALL_FDS", true, &fds).await;
    // A call body shorter than its name.
    let mut short = header(9 + 2 + 1, 3, 1);
    short.put_u16(10);
    short.put_u8(b'e');
    breaks_the_channel("short call body", true, &short).await;
    // Two calls in flight with one id.
    let call = Message::Call {
        id: 1,
        function: "ignore".into(),
        payload: Bytes::from_static(b"null"),
    };
    let mut twice = BytesMut::new();
    for _ in 0..2 {
        tokio_util::codec::Encoder::encode(&mut FrameCodec::default(), call.to_frame(), &mut twice)
            .unwrap();
    }
    breaks_the_channel("a repeated call id", true, &twice).await;
    // A second WELCOME.
    let mut again = BytesMut::new();
    tokio_util::codec::Encoder::encode(
        &mut FrameCodec::default(),
        Message::Welcome(Welcome::default()).to_frame(),
        &mut again,
    )
    .unwrap();
    breaks_the_channel("a second WELCOME", true, &again).await;
}

#[tokio::test]
async fn a_bad_welcome_breaks_the_channel_and_the_worker_exits_76() {
    let welcome = |w: Welcome| {
        let mut b = BytesMut::new();
        tokio_util::codec::Encoder::encode(
            &mut FrameCodec::default(),
            Message::Welcome(w).to_frame(),
            &mut b,
        )
        .unwrap();
        b
    };
    breaks_the_channel(
        "max_frame below 4096",
        false,
        &welcome(Welcome {
            max_frame: 1000,
            ..Welcome::default()
        }),
    )
    .await;
    breaks_the_channel(
        "an encoding it did not offer",
        false,
        &welcome(Welcome {
            encoding: Encoding::Postcard,
            ..Welcome::default()
        }),
    )
    .await;
    breaks_the_channel(
        "protocol 2",
        false,
        &welcome(Welcome {
            protocol: 2,
            ..Welcome::default()
        }),
    )
    .await;
    let mut ping_first = header(9, 7, 1);
    ping_first.put_slice(&welcome(Welcome::default()));
    breaks_the_channel("PING before WELCOME", false, &ping_first).await;
}
