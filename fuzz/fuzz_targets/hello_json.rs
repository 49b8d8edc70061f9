//! A HELLO body from a worker in any language, and the pool's negotiation on it.
//!
//! Input layout: byte 0 picks the encodings the pool offers (bit 0: JSON, bit 1: postcard,
//! bit 2: postcard listed first), the rest is the HELLO body. Run it with `hello.dict`.
//!
//! Checked: parsing never panics; a parsed `Hello` round-trips through its frame;
//! `Welcome::negotiate` never panics and follows `docs/protocol.md` 3.2: `None` exactly when the
//! worker's protocol is 0 or no encoding is shared, otherwise the lower protocol version and the
//! worker's most preferred encoding among those offered, with the limits passed through.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use workcrew::protocol::{Encoding, Frame, FrameType, Message, Welcome, PROTOCOL_VERSION};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let mut offered = Vec::new();
    if pick & 1 != 0 {
        offered.push(Encoding::Json);
    }
    if pick & 2 != 0 {
        offered.push(Encoding::Postcard);
    }
    if pick & 4 != 0 {
        offered.reverse();
    }

    let frame = Frame {
        kind: FrameType::Hello,
        id: 0,
        body: Bytes::copy_from_slice(body),
    };
    let Ok(Message::Hello(hello)) = Message::from_frame(frame) else {
        return;
    };
    let message = Message::Hello(hello.clone());
    assert_eq!(
        Message::from_frame(message.to_frame()).expect("a parsed HELLO parses back"),
        message
    );

    let (max_frame, heartbeat_ms) = (usize::from(pick), u64::from(pick) * 7);
    let welcome = Welcome::negotiate(&hello, &offered, max_frame, heartbeat_ms);
    let shared = hello.encodings.iter().find(|e| offered.contains(e));
    match (welcome, shared) {
        (None, shared) => assert!(hello.protocol == 0 || shared.is_none(), "refused {hello:?}"),
        (Some(_), None) => panic!("welcomed {hello:?} with no shared encoding"),
        (Some(w), Some(&preferred)) => {
            assert_ne!(hello.protocol, 0, "welcomed protocol 0");
            assert_eq!(w.protocol, hello.protocol.min(PROTOCOL_VERSION));
            assert_eq!(w.encoding, preferred);
            assert_eq!((w.max_frame, w.heartbeat_ms), (max_frame, heartbeat_ms));
        }
    }
});
