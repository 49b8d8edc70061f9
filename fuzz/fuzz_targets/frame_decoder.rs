//! `FrameCodec` as a `Decoder`, fed arbitrary bytes in two parts.
//!
//! Input layout: bytes 0..2 pick the maximum frame size (64..=65536), bytes 2..4 the point where
//! the wire is split, the rest is the wire. The codec decodes after the first part, then after the
//! rest is appended, then at end of file, as `Framed` would. What it yields must match a reference
//! reading of `docs/protocol.md` section 2 written here independently: the same frames, the same
//! error at the same place, the same bytes left over, however the input is split. Every frame
//! respects the maximum and re-encodes to exactly the bytes it was read from.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};
use workcrew::protocol::{Frame, FrameCodec, FrameError};

/// What the reference reading expects after the whole wire.
#[derive(Debug, PartialEq)]
enum End {
    /// Only an incomplete frame (possibly nothing) is left, starting at this offset.
    Partial(usize),
    /// `length` is above the maximum.
    TooLarge,
    /// `length` is below 9.
    TooShort,
    /// A complete frame has an unknown type.
    UnknownType(u8),
}

/// The spec, read literally: frames as (offset, wire length), then how the wire ends.
fn reference(wire: &[u8], max: usize) -> (Vec<(usize, usize)>, End) {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let rest = &wire[at..];
        if rest.len() < 4 {
            return (frames, End::Partial(at));
        }
        let length = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        if length > max {
            return (frames, End::TooLarge);
        }
        if length < 9 {
            return (frames, End::TooShort);
        }
        if rest.len() < 4 + length {
            return (frames, End::Partial(at));
        }
        if !(1..=11).contains(&rest[4]) {
            return (frames, End::UnknownType(rest[4]));
        }
        frames.push((at, 4 + length));
        at += 4 + length;
    }
}

fn end_of(e: &FrameError) -> End {
    match e {
        FrameError::TooLarge { .. } => End::TooLarge,
        FrameError::TooShort(_) => End::TooShort,
        FrameError::UnknownType(t) => End::UnknownType(*t),
        other => panic!("decoding a buffer cannot fail with {other:?}"),
    }
}

/// Decodes every complete frame in `buf`; `Err` stops decoding, as the channel is then closed.
fn drain(codec: &mut FrameCodec, buf: &mut BytesMut, out: &mut Vec<Frame>) -> Result<(), FrameError> {
    while let Some(frame) = codec.decode(buf)? {
        out.push(frame);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((head, wire)) = data.split_first_chunk::<4>() else {
        return;
    };
    let max = 64 + usize::from(u16::from_be_bytes([head[0], head[1]])) % (65536 - 64 + 1);
    let split = usize::from(u16::from_be_bytes([head[2], head[3]])) % (wire.len() + 1);

    let mut codec = FrameCodec::new(max);
    let mut buf = BytesMut::from(&wire[..split]);
    let mut frames = Vec::new();
    let mut result = drain(&mut codec, &mut buf, &mut frames);
    if result.is_ok() {
        buf.extend_from_slice(&wire[split..]);
        result = drain(&mut codec, &mut buf, &mut frames);
    }

    let (expected, end) = reference(wire, max);
    assert_eq!(frames.len(), expected.len(), "frames decoded (max {max}, split {split})");
    for (frame, &(at, len)) in frames.iter().zip(&expected) {
        assert!(9 + frame.body.len() <= max, "frame over the maximum of {max}");
        let mut again = BytesMut::new();
        codec
            .encode(frame.clone(), &mut again)
            .expect("a decoded frame re-encodes under the same maximum");
        assert_eq!(&again[..], &wire[at..at + len], "frame at offset {at} re-encodes differently");
    }
    match result {
        Ok(()) => {
            let End::Partial(at) = end else {
                panic!("the codec accepted a wire the spec refuses: {end:?}");
            };
            assert_eq!(&buf[..], &wire[at..], "bytes left over");
            // At end of file a partial frame is an error, nothing left over is not.
            let eof = codec.decode_eof(&mut buf);
            assert_eq!(eof.is_err(), at < wire.len(), "decode_eof with {} bytes left", wire.len() - at);
            assert!(matches!(eof, Ok(None) | Err(FrameError::Io(_))));
        }
        Err(e) => assert_eq!(end_of(&e), end, "the codec and the spec disagree on the error"),
    }
});
