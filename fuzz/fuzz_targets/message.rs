//! `Message::from_frame` on arbitrary frames, and the round trip of what it accepts.
//!
//! Input layout: byte 0 is the frame type (values outside 1..=11 are skipped: `FrameCodec`
//! refuses them before a `Frame` exists), bytes 1..9 the id, the rest the body. This covers every
//! body parser: the JSON of HELLO, WELCOME and ERROR, and the binary CALL, CALL_MANY and CALL_FDS
//! bodies.
//!
//! Checked: no panic; a parsed message keeps its frame type; `to_frame` then `from_frame` gives
//! an equal message (`Message: PartialEq`), also through `FrameCodec`'s encoder and decoder; the
//! binary-bodied messages re-frame to exactly the frame they were read from.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};
use workcrew::protocol::{Frame, FrameCodec, FrameType, Message};

fn frame_type(b: u8) -> Option<FrameType> {
    Some(match b {
        1 => FrameType::Hello,
        2 => FrameType::Welcome,
        3 => FrameType::Call,
        4 => FrameType::Result,
        5 => FrameType::Error,
        6 => FrameType::Cancel,
        7 => FrameType::Ping,
        8 => FrameType::Pong,
        9 => FrameType::Shutdown,
        10 => FrameType::CallMany,
        11 => FrameType::CallFds,
        _ => return None,
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let Some((id, body)) = rest.split_first_chunk::<8>() else {
        return;
    };
    let Some(kind) = frame_type(kind) else {
        return;
    };
    let frame = Frame {
        kind,
        id: u64::from_be_bytes(*id),
        body: Bytes::copy_from_slice(body),
    };
    let Ok(message) = Message::from_frame(frame.clone()) else {
        return;
    };

    let reframed = message.to_frame();
    assert_eq!(reframed.kind, frame.kind, "{message:?} changed frame type");
    match message {
        // The body is carried verbatim: the exact frame comes back.
        Message::Call { .. }
        | Message::CallMany { .. }
        | Message::CallFds { .. }
        | Message::Result { .. } => assert_eq!(reframed, frame, "{message:?} re-frames differently"),
        // No body; the id is kept (SHUTDOWN's is always 0).
        Message::Cancel { .. } | Message::Ping { .. } | Message::Pong { .. } => {
            assert_eq!(reframed.id, frame.id, "{message:?} lost its id");
        }
        _ => {}
    }
    let again = Message::from_frame(reframed.clone())
        .unwrap_or_else(|e| panic!("{message:?} does not parse back: {e}"));
    assert_eq!(again, message, "round trip through to_frame/from_frame");

    // And through the wire, under the default maximum (the body is far below it).
    let mut codec = FrameCodec::default();
    let mut wire = BytesMut::new();
    codec.encode(reframed.clone(), &mut wire).expect("encodes");
    let decoded = codec.decode(&mut wire).expect("decodes").expect("a whole frame");
    assert!(wire.is_empty());
    assert_eq!(decoded, reframed);
});
