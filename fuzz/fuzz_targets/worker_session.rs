//! A Rust worker (`Worker::serve_on`) serving whatever a pool might send after `WELCOME`.
//!
//! This is where decoded frames meet the worker's own parsers: its in-place frame reader
//! (`peek_frame` under the announced `max_frame`), call bodies, `CALL_MANY` sequences in both
//! encodings, `CANCEL`, `PING` and `SHUTDOWN`.
//!
//! Input layout: byte 0 bit 0 picks the encoding in `WELCOME` (JSON or postcard), bytes 1..4 its
//! `max_frame` (a big-endian `u24`, so 0..16 MiB), the rest is the wire after `WELCOME`. The
//! worker serves `echo` (`String`), `add` (`(i64, i64)`) and `fail` (`u32`, always an error).
//!
//! If the input holds a `SHUTDOWN`, the pool side stays open and the worker must end by itself;
//! otherwise the pool side closes once the worker has had a few turns, and at end of file the
//! worker may exit without handling what it has not yet handled (`docs/protocol.md` 1). After
//! `SHUTDOWN` the worker goes on reading: it answers `PING`s and takes `CANCEL`s, and a call
//! there is a protocol error (3.8).
//!
//! Checked: serving ends without a panic; when it ends well, the worker wrote its `HELLO`, then
//! only well-formed `RESULT`, `ERROR` and `PONG` frames within `max_frame`, at most one answer per
//! call and one `PONG` per `PING`; after a `SHUTDOWN`, exactly one of each, and no call came after
//! it (3.3–3.9).
#![no_main]

use std::io::Write;
use std::sync::OnceLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::runtime::Runtime;
use tokio_util::codec::{Decoder, Encoder};
use workcrew::protocol::{
    Encoding, Frame, FrameCodec, FrameType, Message, Welcome, DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};
use workcrew::worker::Worker;

/// Well below a Unix socket's send buffer, so the whole input is written before the worker
/// starts and the pool side never writes to a closed channel (no `SIGPIPE` to handle).
const MAX_INPUT: usize = 64 * 1024;

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fn worker() -> Worker {
    Worker::builder()
        .async_function("echo", |s: String| async move { Ok::<_, String>(s) })
        .async_function("add", |(a, b): (i64, i64)| async move {
            a.checked_add(b).ok_or_else(|| format!("{a} + {b} overflows"))
        })
        .async_function("fail", |n: u32| async move { Err::<(), _>(format!("failed {n}")) })
        .build()
}

/// What the pool sent: ids of the calls (before `SHUTDOWN`) and pings in the input, whether a
/// `SHUTDOWN` came, and whether a call came after it.
struct Sent {
    calls: Vec<u64>,
    pings: Vec<u64>,
    shutdown: bool,
    call_after_shutdown: bool,
}

fn sent(wire: &[u8], max_frame: usize) -> Sent {
    let (mut calls, mut pings, mut shutdown) = (Vec::new(), Vec::new(), false);
    let mut call_after_shutdown = false;
    let mut codec = FrameCodec::new(max_frame);
    let mut buf = BytesMut::from(wire);
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        match frame.kind {
            FrameType::Call | FrameType::CallMany | FrameType::CallFds if shutdown => {
                call_after_shutdown = true;
                break;
            }
            FrameType::Call | FrameType::CallMany | FrameType::CallFds => calls.push(frame.id),
            FrameType::Ping => pings.push(frame.id),
            FrameType::Shutdown => shutdown = true,
            _ => {}
        }
    }
    calls.sort_unstable();
    pings.sort_unstable();
    Sent { calls, pings, shutdown, call_after_shutdown }
}

/// Whether `part` is a sub-multiset of `all` (both sorted).
fn within(part: &[u64], all: &[u64]) -> bool {
    let mut all = all.iter();
    part.iter().all(|p| all.any(|a| a == p))
}

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    let Some((head, wire)) = data.split_first_chunk::<4>() else {
        return;
    };
    let encoding = if head[0] & 1 == 0 { Encoding::Json } else { Encoding::Postcard };
    let max_frame = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
    let welcome = Welcome { protocol: PROTOCOL_VERSION, encoding, max_frame, heartbeat_ms: 0 };

    let mut input = BytesMut::new();
    FrameCodec::default()
        .encode(Message::Welcome(welcome).to_frame(), &mut input)
        .expect("WELCOME encodes");
    input.extend_from_slice(wire);
    let (mut pool, chan) = std::os::unix::net::UnixStream::pair().expect("socket pair");
    pool.write_all(&input).expect("the input fits the socket buffer");
    let sent = sent(wire, max_frame);

    let (served, out) = runtime().block_on(async {
        pool.set_nonblocking(true).unwrap();
        chan.set_nonblocking(true).unwrap();
        let (mut rd, wr) = UnixStream::from_std(pool).unwrap().into_split();
        let chan = UnixStream::from_std(chan).unwrap();
        // With a SHUTDOWN the worker must end on its own: the write half stays open until the end
        // of this block. Without one, it is dropped (end of file) once the worker had a few turns.
        let (keep_open, close_later) = if sent.shutdown { (Some(wr), None) } else { (None, Some(wr)) };
        let close = async move {
            if let Some(wr) = close_later {
                for _ in 0..8 {
                    tokio::task::yield_now().await;
                }
                drop(wr);
            }
        };
        let mut out = Vec::new();
        let (served, read, ()) =
            tokio::join!(worker().serve_on(chan), rd.read_to_end(&mut out), close);
        read.expect("reading the worker's output");
        drop(keep_open);
        (served, out)
    });
    if served.is_err() {
        // The channel is broken; what the worker wrote before is not checked.
        return;
    }
    assert!(!sent.call_after_shutdown, "a call after SHUTDOWN was served");

    let mut out = BytesMut::from(&out[..]);
    let hello = FrameCodec::new(DEFAULT_MAX_FRAME)
        .decode(&mut out)
        .expect("HELLO is a valid frame")
        .expect("the worker says HELLO first");
    assert!(matches!(Message::from_frame(hello), Ok(Message::Hello(_))));
    let (mut answers, mut pongs) = (Vec::new(), Vec::new());
    let mut codec = FrameCodec::new(max_frame);
    while !out.is_empty() {
        let frame: Frame = codec
            .decode(&mut out)
            .unwrap_or_else(|e| panic!("the worker wrote a bad frame: {e}"))
            .expect("the worker wrote a partial frame");
        match Message::from_frame(frame.clone()) {
            Ok(Message::Result { id, .. } | Message::Error { id, .. }) => answers.push(id),
            Ok(Message::Pong { nonce }) => pongs.push(nonce),
            other => panic!("the worker sent {other:?} from {frame:?}"),
        }
    }
    answers.sort_unstable();
    pongs.sort_unstable();
    if sent.shutdown {
        assert_eq!(answers, sent.calls, "one answer per call before SHUTDOWN");
        assert_eq!(pongs, sent.pings, "one PONG per PING, before SHUTDOWN or after");
    } else {
        assert!(within(&answers, &sent.calls), "answers {answers:?} to calls {:?}", sent.calls);
        assert!(within(&pongs, &sent.pings), "PONGs {pongs:?} to PINGs {:?}", sent.pings);
    }
});
