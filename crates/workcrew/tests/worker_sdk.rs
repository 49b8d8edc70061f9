//! The Rust worker SDK (`workcrew::worker`) served over a socket pair, with the test acting as
//! the pool through the protocol types: handshake and encoding negotiation, sync and async
//! functions, every error kind, panics that leave the worker serving, cancellation, heartbeats
//! answered while calls run, and shutdown after in-flight calls are answered.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;
use workcrew::protocol::{Encoding, ErrorKind, FrameCodec, Message, Welcome};
use workcrew::worker::{ServeError, Worker};

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
        ["add", "apanic", "block", "fail", "greet", "panic", "sleep"]
    );
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
